//! The append-only event log: one API, two backends (PostgreSQL, SQLite).
//!
//! * `append` writes events to one or more streams in one transaction, with optimistic
//!   concurrency per stream (a stale expected version is a typed [`AppendError::Conflict`]).
//! * Events are append-only in the database itself: triggers reject UPDATE and DELETE.
//! * Every event carries the hash of its stream's previous event and its own hash over
//!   the envelope and payload (a per-stream hash chain); [`EventLog::verify`] walks it.
//! * Global positions are visible to readers in position order: a reader tailing
//!   `position > last_seen` never skips an event that committed late (see the module docs
//!   of [`postgres`] and [`sqlite`] for how each backend guarantees it).
//! * Appends from one handle are group-committed by default: everything pending shares
//!   one transaction, each caller gets its own answer ([`LogOptions::group_commit`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use certledger_eventlog::{EventLog, ExpectedVersion, Metadata, NewEvent};
//! let log = certledger_eventlog::connect("sqlite:certledger.db").await?;
//! let event = NewEvent::new("OrderPlaced", 1, vec![], Metadata::default());
//! log.append_one("certificate-1", ExpectedVersion::NoStream, vec![event]).await?;
//! # Ok(()) }
//! ```

mod append;
mod codec;
pub mod hash;
pub mod model;
mod options;
pub mod postgres;
mod shared;
pub mod sqlite;

use std::sync::Arc;

pub use append::{MAX_EVENT_TYPE_LEN, MAX_STREAM_ID_LEN};
pub use model::*;
pub use options::{DEFAULT_PG_SCHEMA, LogOptions};
pub use postgres::PgEventLog;
pub use shared::SharedReads;
pub use sqlite::SqliteEventLog;

/// Opens the event log at `url` with default options: `postgres://…` / `postgresql://…`
/// (schema [`DEFAULT_PG_SCHEMA`]) or `sqlite:…` (`sqlite::memory:` for a throwaway log).
pub async fn connect(url: &str) -> Result<Arc<dyn EventLog>, StorageError> {
    connect_with(url, LogOptions::default()).await
}

/// [`connect`] with options; the PostgreSQL schema comes from [`LogOptions::pg_schema`].
pub async fn connect_with(
    url: &str,
    options: LogOptions,
) -> Result<Arc<dyn EventLog>, StorageError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let schema = options.pg_schema.clone();
        Ok(Arc::new(
            PgEventLog::connect_with(url, &schema, options).await?,
        ))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteEventLog::connect_with(url, options).await?))
    } else {
        Err(StorageError::new(
            "connect event log",
            sqlx::Error::Configuration(
                "the URL must start with postgres://, postgresql:// or sqlite:".into(),
            ),
        ))
    }
}

/// Test-only hooks (feature `test-hooks`); not part of the stable API.
#[cfg(feature = "test-hooks")]
pub mod test_hooks {
    use std::sync::Arc;

    use futures::future::BoxFuture;

    /// What an append transaction has inserted when the hook runs (before commit).
    #[derive(Debug, Clone)]
    pub struct CommitInfo {
        /// The stream of each inserted row.
        pub stream_ids: Vec<String>,
        /// The position of each inserted row.
        pub positions: Vec<u64>,
    }

    /// Runs inside the append transaction between insert and commit.
    pub type BeforeCommitHook = Arc<dyn Fn(CommitInfo) -> BoxFuture<'static, ()> + Send + Sync>;
}
