//! An [`EventLog`] that counts the calls made through it: the deterministic measure of
//! scenario 1 (queries per certificate), beside the wall-clock figures that the shared
//! machine makes noisy. Every service of the platform gets the same counting handle, so
//! the counts are the whole pipeline's (commands, reactions, projector, event source).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use certledger_eventlog::{
    AppendError, AppendResult, EventLog, Lease, RecordedEvent, StorageError, StreamAppend,
    VerifyReport,
};

/// Calls counted so far.
#[derive(Debug, Default)]
pub struct Counts {
    /// `append` calls (one transaction each, however many streams and events).
    pub appends: AtomicU64,
    /// Events appended.
    pub events_appended: AtomicU64,
    /// Appends refused because the stream moved on (optimistic concurrency).
    pub conflicts: AtomicU64,
    /// `read_stream` calls (a certificate's events, for a fold).
    pub stream_reads: AtomicU64,
    /// Events returned by `read_stream`.
    pub stream_events_read: AtomicU64,
    /// `read_all` calls (tailing consumers, the relay, the projector's catch-up).
    pub log_reads: AtomicU64,
    /// `load_checkpoint`, `save_checkpoint` and `head_position` calls.
    pub bookkeeping: AtomicU64,
}

/// A snapshot of [`Counts`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    pub appends: u64,
    pub events_appended: u64,
    pub conflicts: u64,
    pub stream_reads: u64,
    pub stream_events_read: u64,
    pub log_reads: u64,
    pub bookkeeping: u64,
}

impl Snapshot {
    /// Every call that is a query of the log's database.
    pub fn queries(&self) -> u64 {
        self.appends + self.stream_reads + self.log_reads + self.bookkeeping
    }

    /// What was counted since `earlier`.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot {
            appends: self.appends - earlier.appends,
            events_appended: self.events_appended - earlier.events_appended,
            conflicts: self.conflicts - earlier.conflicts,
            stream_reads: self.stream_reads - earlier.stream_reads,
            stream_events_read: self.stream_events_read - earlier.stream_events_read,
            log_reads: self.log_reads - earlier.log_reads,
            bookkeeping: self.bookkeeping - earlier.bookkeeping,
        }
    }
}

impl Counts {
    pub fn snapshot(&self) -> Snapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Snapshot {
            appends: get(&self.appends),
            events_appended: get(&self.events_appended),
            conflicts: get(&self.conflicts),
            stream_reads: get(&self.stream_reads),
            stream_events_read: get(&self.stream_events_read),
            log_reads: get(&self.log_reads),
            bookkeeping: get(&self.bookkeeping),
        }
    }
}

/// The wrapper.
pub struct CountingLog {
    inner: Arc<dyn EventLog>,
    counts: Arc<Counts>,
}

impl CountingLog {
    /// `inner`, counted into the returned [`Counts`].
    pub fn wrap(inner: Arc<dyn EventLog>) -> (Arc<dyn EventLog>, Arc<Counts>) {
        let counts = Arc::new(Counts::default());
        let log = Arc::new(Self {
            inner,
            counts: counts.clone(),
        });
        (log, counts)
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

#[async_trait]
impl EventLog for CountingLog {
    async fn append(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>, AppendError> {
        let events: usize = appends.iter().map(|a| a.events.len()).sum();
        Self::add(&self.counts.appends, 1);
        let result = self.inner.append(appends).await;
        match &result {
            Ok(_) => Self::add(&self.counts.events_appended, events as u64),
            Err(AppendError::Conflict { .. }) => Self::add(&self.counts.conflicts, 1),
            Err(_) => {}
        }
        result
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        after_version: u64,
    ) -> Result<Vec<RecordedEvent>, StorageError> {
        Self::add(&self.counts.stream_reads, 1);
        let events = self.inner.read_stream(stream_id, after_version).await?;
        Self::add(&self.counts.stream_events_read, events.len() as u64);
        Ok(events)
    }

    async fn read_all(
        &self,
        after_position: u64,
        limit: u32,
    ) -> Result<Vec<RecordedEvent>, StorageError> {
        Self::add(&self.counts.log_reads, 1);
        self.inner.read_all(after_position, limit).await
    }

    async fn head_position(&self) -> Result<u64, StorageError> {
        Self::add(&self.counts.bookkeeping, 1);
        self.inner.head_position().await
    }

    async fn wait_for_new(&self, after_position: u64) {
        self.inner.wait_for_new(after_position).await
    }

    async fn load_checkpoint(&self, name: &str) -> Result<u64, StorageError> {
        Self::add(&self.counts.bookkeeping, 1);
        self.inner.load_checkpoint(name).await
    }

    async fn save_checkpoint(&self, name: &str, position: u64) -> Result<(), StorageError> {
        Self::add(&self.counts.bookkeeping, 1);
        self.inner.save_checkpoint(name, position).await
    }

    async fn lease(&self, name: &str) -> Result<Lease, StorageError> {
        self.inner.lease(name).await
    }

    async fn verify(&self, stream_id: Option<&str>) -> Result<VerifyReport, StorageError> {
        self.inner.verify(stream_id).await
    }
}
