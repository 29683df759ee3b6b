//! One read of the log for every reader in a process.
//!
//! A process that runs several readers near the log's head — certd's relay, projector
//! and order list, or the order binary's relay and list — would otherwise read each new
//! event once per reader: the same rows fetched, sent and decoded three times.
//! [`SharedReads`] keeps the events it last read in a window and answers a reader from it
//! when the window covers the reader's position; only a reader past the window's end
//! reads the log, one at a time, and what it reads (a page that reached the log's head)
//! extends the window for the others.
//!
//! Why the window is complete: `read_all` never returns an event while an earlier
//! position may still commit ([`EventLog::read_all`]), so once a read has returned events
//! up to position `p`, every event at or below `p` is known, and a page after `from` that
//! ends at `to` holds every event in `(from, to]`. A reader behind the window's start
//! (catching up, or rebuilding) reads the log itself and leaves the window alone.
//!
//! A process with one reader (a relay-only service) would copy every event into the
//! window for no one: events are kept only once a read has come from behind the end of
//! the last one, the sign of a second reader.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use crate::model::{
    AppendError, AppendResult, EventLog, Lease, RecordedEvent, StorageError, StreamAppend,
    VerifyReport,
};

/// Events kept for readers that are a little behind: a few pages of each reader...
pub const DEFAULT_WINDOW: usize = 4096;
/// ...and at most this many bytes of them (payloads and strings), however large they are.
pub const WINDOW_BYTES: usize = 8 << 20;

/// An event log whose `read_all` is shared by the process's readers (module docs); every
/// other call goes to the log it wraps.
pub struct SharedReads {
    inner: Arc<dyn EventLog>,
    window: Mutex<Window>,
    /// Held while reading the log for the window: one read at a time, the others then
    /// find its events in the window.
    reading: tokio::sync::Mutex<()>,
    capacity: usize,
    log_reads: AtomicU64,
}

/// Every event with a position in `(from, to]`, in position order.
#[derive(Default)]
struct Window {
    from: u64,
    to: u64,
    events: VecDeque<RecordedEvent>,
    bytes: usize,
    /// A second reader has shown itself: events are kept from then on.
    shared: bool,
}

/// What an event holds on the heap, roughly.
fn size_of(event: &RecordedEvent) -> usize {
    let m = &event.metadata;
    event.payload.len()
        + event.stream_id.len()
        + event.event_type.len()
        + m.tenant.len()
        + m.actor.len()
        + m.trace_context.as_ref().map_or(0, String::len)
}

enum Served {
    Events(Vec<RecordedEvent>),
    /// The reader is before the window's start.
    Behind,
    /// The reader is at (or past) the window's end.
    AtEnd,
}

impl Window {
    fn serve(&mut self, after: u64, limit: u32) -> Served {
        if after < self.from {
            self.shared = true;
            return Served::Behind;
        }
        if after >= self.to {
            return Served::AtEnd;
        }
        let start = self.events.partition_point(|e| e.position <= after);
        Served::Events(
            self.events
                .range(start..)
                .take(limit as usize)
                .cloned()
                .collect(),
        )
    }

    /// Adds `events`, read after `after` at the window's end (or after it: the window
    /// then starts again there), and keeps the last `capacity`.
    fn extend(&mut self, after: u64, events: &[RecordedEvent], capacity: usize) {
        if after < self.to {
            return;
        }
        if after > self.to {
            self.events.clear();
            self.bytes = 0;
            self.from = after;
            self.to = after;
        }
        let Some(last) = events.last() else {
            return;
        };
        if !self.shared {
            self.from = last.position;
            self.to = last.position;
            return;
        }
        for event in events {
            self.bytes += size_of(event);
            self.events.push_back(event.clone());
        }
        self.to = last.position;
        while self.events.len() > capacity || self.bytes > WINDOW_BYTES {
            let Some(dropped) = self.events.pop_front() else {
                break;
            };
            self.bytes = self.bytes.saturating_sub(size_of(&dropped));
            self.from = dropped.position;
        }
    }
}

impl SharedReads {
    /// `inner`, its reads shared through a window of [`DEFAULT_WINDOW`] events.
    pub fn wrap(inner: Arc<dyn EventLog>) -> Arc<dyn EventLog> {
        Arc::new(Self::new(inner, DEFAULT_WINDOW))
    }

    /// `inner`, its reads shared through a window of `capacity` events.
    pub fn new(inner: Arc<dyn EventLog>, capacity: usize) -> Self {
        Self {
            inner,
            window: Mutex::new(Window::default()),
            reading: tokio::sync::Mutex::new(()),
            capacity: capacity.max(1),
            log_reads: AtomicU64::new(0),
        }
    }

    /// How many `read_all`s went to the log itself.
    pub fn reads_from_log(&self) -> u64 {
        self.log_reads.load(Ordering::Relaxed)
    }

    async fn read_log(&self, after: u64, limit: u32) -> Result<Vec<RecordedEvent>, StorageError> {
        self.log_reads.fetch_add(1, Ordering::Relaxed);
        self.inner.read_all(after, limit).await
    }

    fn window(&self) -> MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl EventLog for SharedReads {
    async fn append(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>, AppendError> {
        self.inner.append(appends).await
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        after_version: u64,
    ) -> Result<Vec<RecordedEvent>, StorageError> {
        self.inner.read_stream(stream_id, after_version).await
    }

    async fn read_all(
        &self,
        after_position: u64,
        limit: u32,
    ) -> Result<Vec<RecordedEvent>, StorageError> {
        let served = self.window().serve(after_position, limit);
        match served {
            Served::Events(events) => return Ok(events),
            Served::Behind => return self.read_log(after_position, limit).await,
            Served::AtEnd => {}
        }
        let _turn = self.reading.lock().await;
        // The read of the reader before us may have brought what we are after.
        let served = self.window().serve(after_position, limit);
        if let Served::Events(events) = served {
            return Ok(events);
        }
        let events = self.read_log(after_position, limit).await?;
        // A full page: the reader is catching up (a rebuild, a backlog after a restart),
        // far from the others; keeping its pages would only cost copies.
        if events.len() < limit as usize {
            self.window().extend(after_position, &events, self.capacity);
        }
        Ok(events)
    }

    async fn head_position(&self) -> Result<u64, StorageError> {
        self.inner.head_position().await
    }

    async fn wait_for_new(&self, after_position: u64) {
        self.inner.wait_for_new(after_position).await
    }

    async fn load_checkpoint(&self, name: &str) -> Result<u64, StorageError> {
        self.inner.load_checkpoint(name).await
    }

    async fn save_checkpoint(&self, name: &str, position: u64) -> Result<(), StorageError> {
        self.inner.save_checkpoint(name, position).await
    }

    async fn lease(&self, name: &str) -> Result<Lease, StorageError> {
        self.inner.lease(name).await
    }

    async fn verify(&self, stream_id: Option<&str>) -> Result<VerifyReport, StorageError> {
        self.inner.verify(stream_id).await
    }
}
