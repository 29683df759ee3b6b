//! Connection options shared by both backends.

use std::fmt;
use std::time::Duration;

/// Options for [`crate::connect_with`], [`crate::PgEventLog::connect_with`] and
/// [`crate::SqliteEventLog::connect_with`]. Build with the methods; `Default` is sensible.
#[derive(Clone)]
pub struct LogOptions {
    pub(crate) pg_schema: String,
    pub(crate) max_connections: u32,
    pub(crate) poll_interval: Duration,
    pub(crate) group_commit: bool,
    pub(crate) max_batch_events: usize,
    pub(crate) sqlite_busy_timeout: Duration,
    #[cfg(feature = "test-hooks")]
    pub(crate) before_commit: Option<crate::test_hooks::BeforeCommitHook>,
}

/// The PostgreSQL schema used by [`crate::connect`] when none is given.
pub const DEFAULT_PG_SCHEMA: &str = "eventlog";

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            pg_schema: DEFAULT_PG_SCHEMA.to_owned(),
            max_connections: 8,
            poll_interval: Duration::from_millis(500),
            group_commit: true,
            max_batch_events: 2_000,
            sqlite_busy_timeout: Duration::from_secs(30),
            #[cfg(feature = "test-hooks")]
            before_commit: None,
        }
    }
}

impl LogOptions {
    pub fn new() -> Self {
        Self::default()
    }

    /// PostgreSQL schema holding the log's tables (used by [`crate::connect_with`]; the
    /// `PgEventLog` constructors take the schema as an argument). Default `eventlog`.
    pub fn pg_schema(mut self, schema: impl Into<String>) -> Self {
        self.pg_schema = schema.into();
        self
    }

    /// Size of the connection pool (PostgreSQL: plus one connection for LISTEN).
    /// Default 8. In-memory SQLite always uses exactly one connection.
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Longest time [`crate::EventLog::wait_for_new`] waits without a notification
    /// (the fallback when a notification is lost or another process wrote). Default 500 ms.
    pub fn poll_interval(mut self, d: Duration) -> Self {
        self.poll_interval = d;
        self
    }

    /// Group commit (default on): appends from this handle are queued to one writer task
    /// that commits everything pending in one transaction, answering each caller
    /// separately (a conflict or duplicate fails only its own caller). Off: every append
    /// is its own transaction; since appends to one log are serialized (see the
    /// `postgres` module docs), that costs a commit per append and is far slower under
    /// concurrent load. Measure with `examples/append_throughput.rs`.
    pub fn group_commit(mut self, on: bool) -> Self {
        self.group_commit = on;
        self
    }

    /// Upper bound on the events one group commit gathers (default 2,000). A single
    /// append larger than this is still committed whole.
    pub fn max_batch_events(mut self, n: usize) -> Self {
        self.max_batch_events = n.max(1);
        self
    }

    /// How long a SQLite writer waits for another process's write lock. Default 30 s.
    pub fn sqlite_busy_timeout(mut self, d: Duration) -> Self {
        self.sqlite_busy_timeout = d;
        self
    }

    /// Test-only: runs `hook` in every append transaction after the insert and before
    /// the commit (to hold a transaction open and provoke out-of-order commits).
    #[cfg(feature = "test-hooks")]
    pub fn before_commit_hook(mut self, hook: crate::test_hooks::BeforeCommitHook) -> Self {
        self.before_commit = Some(hook);
        self
    }
}

impl fmt::Debug for LogOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("LogOptions");
        d.field("pg_schema", &self.pg_schema)
            .field("max_connections", &self.max_connections)
            .field("poll_interval", &self.poll_interval)
            .field("group_commit", &self.group_commit)
            .field("max_batch_events", &self.max_batch_events)
            .field("sqlite_busy_timeout", &self.sqlite_busy_timeout);
        #[cfg(feature = "test-hooks")]
        d.field("before_commit", &self.before_commit.is_some());
        d.finish()
    }
}
