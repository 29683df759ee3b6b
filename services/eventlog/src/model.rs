//! The event envelope, the store trait and its errors. Backends implement [`EventLog`].

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Metadata carried by every event. Part of the hashed envelope.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// The tenant (account) the stream belongs to.
    pub tenant: String,
    /// Id shared by everything that happened because of one request.
    pub correlation_id: Option<Uuid>,
    /// The event (or request) that caused this one.
    pub causation_id: Option<Uuid>,
    /// Who did it: a token id, a certificate subject, or a service name.
    pub actor: String,
    /// W3C traceparent, when there is one.
    pub trace_context: Option<String>,
}

/// An event to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// UUID v7, chosen by the writer (so that retries of the same append dedupe).
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: u32,
    /// Protobuf bytes of the event message.
    pub payload: Vec<u8>,
    pub metadata: Metadata,
}

impl NewEvent {
    /// An event with a fresh UUID v7 id.
    pub fn new(
        event_type: impl Into<String>,
        schema_version: u32,
        payload: Vec<u8>,
        metadata: Metadata,
    ) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            event_type: event_type.into(),
            schema_version,
            payload,
            metadata,
        }
    }
}

/// A committed event, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// Global position in the whole log, starting at 1.
    pub position: u64,
    pub stream_id: String,
    /// Version within the stream, starting at 1.
    pub stream_version: u64,
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: u32,
    pub payload: Vec<u8>,
    pub metadata: Metadata,
    /// Microsecond precision (stored as microseconds since the epoch).
    pub recorded_at: DateTime<Utc>,
    /// Hash of the previous event in the same stream; all zero for version 1.
    pub prev_hash: [u8; 32],
    /// SHA-256 over prev_hash, envelope and payload (see `hash::event_hash`).
    pub hash: [u8; 32],
}

/// What the writer believes the stream's current version is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last version must be exactly this (0 = no stream).
    Exact(u64),
}

/// One stream's part of an append.
#[derive(Debug, Clone)]
pub struct StreamAppend {
    pub stream_id: String,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
}

/// Where one stream's part of an append landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendResult {
    pub stream_id: String,
    /// The stream's version after the append.
    pub version: u64,
    /// Global positions of the appended events, in order.
    pub positions: Vec<u64>,
    /// The `recorded_at` of the appended events (one time for the whole append).
    pub recorded_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error(
        "stream {stream_id} is at version {actual}, not the expected {expected:?}; reload and decide again"
    )]
    Conflict {
        stream_id: String,
        expected: ExpectedVersion,
        actual: u64,
    },
    #[error("event {event_id} already exists in the log")]
    DuplicateEvent { event_id: Uuid },
    #[error("invalid append: {0}")]
    Invalid(String),
    #[error("event log storage: {0}")]
    Storage(#[from] StorageError),
}

impl AppendError {
    /// True for [`AppendError::Conflict`]: reload the stream, decide again, retry.
    pub fn is_conflict(&self) -> bool {
        matches!(self, AppendError::Conflict { .. })
    }
}

/// A database failure, with what the log was doing when it happened
/// (operation and stream, e.g. `append to [certificate-1]: insert events`).
#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
pub struct StorageError {
    pub context: String,
    #[source]
    pub source: sqlx::Error,
}

impl StorageError {
    pub fn new(context: impl Into<String>, source: sqlx::Error) -> Self {
        Self {
            context: context.into(),
            source,
        }
    }
}

/// The first problem found by [`EventLog::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tamper {
    /// The stored hash does not match the event's contents.
    Altered {
        stream_id: String,
        version: u64,
        position: u64,
    },
    /// The event does not link to its predecessor's hash (an event before it was removed or altered).
    BrokenLink {
        stream_id: String,
        version: u64,
        position: u64,
    },
    /// A version is missing in the stream.
    Missing { stream_id: String, version: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub events_checked: u64,
    pub first_problem: Option<Tamper>,
}

/// The right to run a named reader of a log (a consumer tailing it) with no one else on
/// the same log running it, from [`EventLog::lease`]. Dropping it gives the right up.
pub struct Lease {
    /// Becomes true (or closes) when the right can no longer be vouched for; `None`: a
    /// lease that cannot be lost.
    lost: Option<tokio::sync::watch::Receiver<bool>>,
    /// Keeps the right (e.g. the connection holding a lock); stopped on drop.
    keeper: Option<tokio::task::JoinHandle<()>>,
}

impl Lease {
    /// A lease no one else can contest: the log is used by this process alone.
    pub fn sole() -> Self {
        Self {
            lost: None,
            keeper: None,
        }
    }

    /// A lease kept by `keeper`, which sends `true` on (or drops) `lost` when it fails.
    pub fn kept(
        lost: tokio::sync::watch::Receiver<bool>,
        keeper: tokio::task::JoinHandle<()>,
    ) -> Self {
        Self {
            lost: Some(lost),
            keeper: Some(keeper),
        }
    }

    /// Resolves when the lease is lost: another holder may run the reader from then on.
    pub async fn lost(&mut self) {
        match &mut self.lost {
            // An error: the keeper is gone, which loses the lease too.
            Some(lost) => {
                let _ = lost.wait_for(|lost| *lost).await;
            }
            None => std::future::pending().await,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(keeper) = &self.keeper {
            keeper.abort();
        }
    }
}

/// The event log. Both backends implement it and pass the same test suite.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Appends to several streams in one transaction; all or nothing.
    ///
    /// Results are in the order of `appends`. A stream may appear only once per call, and
    /// every stream part must carry at least one event (otherwise [`AppendError::Invalid`]).
    async fn append(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>, AppendError>;

    /// Appends to one stream: a convenience over [`EventLog::append`].
    async fn append_one(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, AppendError> {
        let mut results = self
            .append(vec![StreamAppend {
                stream_id: stream_id.to_owned(),
                expected,
                events,
            }])
            .await?;
        results.pop().ok_or_else(|| {
            AppendError::Invalid(format!("append to {stream_id} returned no result"))
        })
    }

    /// Events of one stream with version > `after_version`, in version order.
    async fn read_stream(
        &self,
        stream_id: &str,
        after_version: u64,
    ) -> Result<Vec<RecordedEvent>, StorageError>;

    /// Up to `limit` events of the whole log with position > `after_position`, in
    /// position order. Never returns an event while an earlier position may still commit.
    async fn read_all(
        &self,
        after_position: u64,
        limit: u32,
    ) -> Result<Vec<RecordedEvent>, StorageError>;

    /// The highest position visible to `read_all`.
    async fn head_position(&self) -> Result<u64, StorageError>;

    /// Resolves when new events may have been committed (or after a short timeout);
    /// tailing readers wait on it between polls. Returns at once when an event after
    /// `after_position` is already known to be committed, so a notification that arrived
    /// between the reader's last `read_all` and this call is not lost. Spurious wake-ups
    /// are allowed: always re-read with `read_all`.
    async fn wait_for_new(&self, after_position: u64);

    /// The saved position of a named reader (relay, consumer, projection); 0 if none.
    async fn load_checkpoint(&self, name: &str) -> Result<u64, StorageError>;

    /// Saves a named reader's position (upsert; checkpoints are not part of the log).
    async fn save_checkpoint(&self, name: &str, position: u64) -> Result<(), StorageError>;

    /// Waits until this caller alone, among every process using this log, may run the
    /// reader `name`, and returns that right. Replicas of a service that tail the log
    /// with one consumer name take turns instead of doing the same work side by side: one
    /// holds the lease, the others wait for it. Waiting is cancelled by dropping the future.
    async fn lease(&self, name: &str) -> Result<Lease, StorageError>;

    /// Walks the hash chain of one stream (`Some`) or of every stream (`None`).
    async fn verify(&self, stream_id: Option<&str>) -> Result<VerifyReport, StorageError>;
}
