//! SQLite backend (embedded default): a file in WAL mode, or in memory.
//!
//! # Positions become visible in order
//!
//! SQLite has a single writer: every append runs in a `BEGIN IMMEDIATE` transaction,
//! which takes the database's write lock before reading anything, and positions are
//! assigned inside it as `max(position) + 1` (`position` is the rowid, which SQLite
//! assigns so to a row inserted without one). Commits are therefore in position order,
//! and (WAL readers see a consistent snapshot as of a commit) a reader tailing
//! `position > last_seen` never skips an event. The same lock makes the expected-version
//! check exact; the unique (stream_id, stream_version) constraint is the backstop.
//!
//! Durability: `synchronous = FULL` (an acknowledged append survives power loss); group
//! commit amortizes the WAL sync over everything pending.
//!
//! `wait_for_new` is woken in-process by every handle on the same database file (a
//! process-wide registry keyed by the canonical path) and falls back to the poll interval
//! for writers in other processes.
//!
//! # Reads without a hand-off, appends in one
//!
//! Events are read and decoded with SQLite's own API on read-only connections this code
//! keeps beside sqlx's pool (in memory, on the pool's one connection), on
//! the task's thread, instead of crossing from sqlx's worker thread row by row. An
//! append's heads read and inserts run on one of sqlx's connections ([`with_rusqlite`]),
//! inside the transaction sqlx begins and commits.
//!
//! # One queue for the file's writers
//!
//! The same registry holds the file's [`WriteGate`]: the appends and checkpoints of every
//! handle, and the tables other crates keep in the log's file (the order service's list),
//! take it around their write transactions. Writers in this process then wait their turn
//! in order and start the moment the lock is free, instead of finding it taken and
//! sleeping in SQLite's busy handler (1, 2, 5, 10 … ms at a time), which under load
//! stalled the group commit for milliseconds per transaction. Writers in other processes
//! still meet the busy handler.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::config::DbConfig;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, Row, SqliteConnection};
use uuid::Uuid;

use crate::append::{
    self, Backend, GroupCommitter, Head, Notifier, Outcome, PlannedRow, TxFailure, batch_event_ids,
    batch_stream_ids,
};
use crate::codec::{self, ChainWalker, Migration, ctx, to_i64, to_u64};
use crate::model::{
    AppendError, AppendResult, EventLog, Lease, RecordedEvent, StorageError, StreamAppend,
    VerifyReport,
};
use crate::options::LogOptions;

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "events, append-only triggers, checkpoints",
    sql: include_str!("../migrations/sqlite/0001_events.sql"),
}];

macro_rules! event_columns {
    () => {
        "position, stream_id, stream_version, event_id, event_type, schema_version, payload, \
         tenant, correlation_id, causation_id, actor, trace_context, recorded_at, prev_hash, hash"
    };
}

/// Events per page of [`EventLog::verify`].
const VERIFY_PAGE: i64 = 2_000;

/// The event log on SQLite.
pub struct SqliteEventLog {
    core: Arc<SqliteCore>,
    writer: Option<GroupCommitter>,
}

struct SqliteCore {
    pool: SqlitePool,
    /// The log's reads, for a database file (`None` in memory: one connection holds it).
    readers: Option<Readers>,
    label: String,
    file: Arc<SharedFile>,
    poll_interval: Duration,
    #[cfg(feature = "test-hooks")]
    before_commit: Option<crate::test_hooks::BeforeCommitHook>,
}

/// What the handles on one database file in this process share.
#[derive(Default)]
struct SharedFile {
    notifier: Notifier,
    gate: tokio::sync::Mutex<()>,
}

/// One per database file in this process (keyed by the canonical path), so that every
/// handle on the file wakes every other handle's readers and queues behind the same gate.
fn shared_file(path: &Path) -> Arc<SharedFile> {
    static REGISTRY: OnceLock<Mutex<HashMap<PathBuf, Weak<SharedFile>>>> = OnceLock::new();
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let registry = REGISTRY.get_or_init(Default::default);
    let mut map = match registry.lock() {
        Ok(m) => m,
        Err(poisoned) => poisoned.into_inner(),
    };
    if let Some(shared) = map.get(&canonical).and_then(Weak::upgrade) {
        return shared;
    }
    map.retain(|_, w| w.strong_count() > 0);
    let shared = Arc::new(SharedFile::default());
    map.insert(canonical, Arc::downgrade(&shared));
    shared
}

/// This process's queue for write transactions on one SQLite database file (module docs):
/// hold [`WriteGate::enter`]'s guard from before `BEGIN` until after `COMMIT`.
#[derive(Clone)]
pub struct WriteGate(Arc<SharedFile>);

impl WriteGate {
    /// The gate of the database file at `path` (existing: the path is canonicalized).
    pub fn for_file(path: &Path) -> Self {
        Self(shared_file(path))
    }

    /// A gate of its own, for a private (in-memory) database.
    pub fn private() -> Self {
        Self(Arc::default())
    }

    /// Waits for this process's other write transactions on the file to finish.
    pub async fn enter(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.0.gate.lock().await
    }
}

impl SqliteEventLog {
    /// Opens the log at a `sqlite:` URL: `sqlite:///var/lib/certledger/log.db`,
    /// `sqlite:log.db`, or `sqlite::memory:` (a fresh private in-memory database).
    /// Files are created if missing.
    pub async fn connect(url: &str) -> Result<Self, StorageError> {
        Self::connect_with(url, LogOptions::default()).await
    }

    /// [`SqliteEventLog::connect`] with options.
    pub async fn connect_with(url: &str, options: LogOptions) -> Result<Self, StorageError> {
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let connect_options = SqliteConnectOptions::from_str(url)
            .map_err(ctx(format!("connect event log (SQLite {url}): parse URL")))?;
        Self::open_options(connect_options, in_memory, url.to_owned(), options).await
    }

    /// Opens (creating if missing) the log in the database file at `path`.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StorageError> {
        Self::open_with(path, LogOptions::default()).await
    }

    /// [`SqliteEventLog::open`] with options.
    pub async fn open_with(
        path: impl AsRef<Path>,
        options: LogOptions,
    ) -> Result<Self, StorageError> {
        let path = path.as_ref();
        let connect_options = SqliteConnectOptions::new().filename(path);
        Self::open_options(connect_options, false, path.display().to_string(), options).await
    }

    /// A fresh, private in-memory log (gone when the handle is dropped).
    pub async fn in_memory() -> Result<Self, StorageError> {
        Self::connect("sqlite::memory:").await
    }

    async fn open_options(
        connect_options: SqliteConnectOptions,
        in_memory: bool,
        label: String,
        options: LogOptions,
    ) -> Result<Self, StorageError> {
        let what = format!("connect event log (SQLite {label})");
        let mut connect_options = connect_options
            .create_if_missing(true)
            .foreign_keys(true)
            .busy_timeout(options.sqlite_busy_timeout)
            .synchronous(SqliteSynchronous::Full);
        if !in_memory {
            connect_options = connect_options.journal_mode(SqliteJournalMode::Wal);
        }
        let pool_options = pool_options(in_memory, options.max_connections);
        let filename = connect_options.get_filename().to_owned();
        // Switching a new file to WAL needs a lock that SQLite does not wait for with the
        // busy timeout: several processes opening one file at once can get SQLITE_BUSY
        // here. Retry with backoff for as long as the busy timeout allows.
        let deadline = std::time::Instant::now() + options.sqlite_busy_timeout;
        let mut delay = Duration::from_millis(10);
        let pool = loop {
            match pool_options
                .clone()
                .connect_with(connect_options.clone())
                .await
            {
                Ok(pool) => break pool,
                Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(500));
                }
                Err(e) => return Err(ctx(format!("{what}: open"))(e)),
            }
        };
        migrate(&pool, &what).await?;
        let file = if in_memory {
            WriteGate::private()
        } else {
            WriteGate::for_file(&filename)
        }
        .0;
        let readers = if in_memory {
            None
        } else {
            Some(Readers::new(&filename, options.sqlite_busy_timeout))
        };
        let core = Arc::new(SqliteCore {
            pool,
            readers,
            label,
            file,
            poll_interval: options.poll_interval,
            #[cfg(feature = "test-hooks")]
            before_commit: options.before_commit.clone(),
        });
        let head = core.head_position().await?;
        core.file.notifier.advance(head);
        let writer = options
            .group_commit
            .then(|| GroupCommitter::spawn(core.clone(), options.max_batch_events));
        Ok(Self { core, writer })
    }

    /// The connection pool. For operations and tests; changing events through it is
    /// rejected by the database's triggers.
    pub fn pool(&self) -> &SqlitePool {
        &self.core.pool
    }

    /// Closes the pool after in-flight work; later calls fail.
    pub async fn close(&self) {
        if let Some(readers) = &self.core.readers {
            readers.close();
        }
        self.core.pool.close().await;
    }
}

/// How long the work given to [`with_rusqlite`] may block its thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocking {
    /// Indexed reads or writes of a few hundred rows at most (well under a millisecond):
    /// run as is, like any short computation of the task. Handing the runtime's other
    /// tasks to another thread would cost more.
    Brief,
    /// A large page of rows or a large batch of writes (milliseconds): run as blocking
    /// work ([`tokio::task::block_in_place`] on a multi-threaded runtime), so that the
    /// runtime's other tasks move to another thread meanwhile.
    Long,
}

impl Blocking {
    /// For work on `rows` rows: brief up to 256 (a quarter of a millisecond at most),
    /// long beyond. Consumers tailing the log read small pages, and the projector writes
    /// small live batches, many times a second.
    pub fn for_rows(rows: usize) -> Self {
        if rows <= 256 {
            Blocking::Brief
        } else {
            Blocking::Long
        }
    }
}

/// Runs `f` with SQLite's own API (rusqlite) on `conn`, inside whatever transaction is
/// open on it, while sqlx's worker thread leaves the connection alone. sqlx-sqlite hands
/// every row and every statement over to and from that thread, with a copy of every
/// value; a page of rows read (or many rows written) in `f` costs one hand-off. `f`
/// runs on this task's thread.
pub async fn with_rusqlite<T>(
    conn: &mut SqliteConnection,
    blocking: Blocking,
    f: impl FnOnce(&rusqlite::Connection) -> T,
) -> Result<T, sqlx::Error> {
    let mut handle = conn.lock_handle().await?;
    let raw = handle.as_raw_handle().as_ptr();
    let run = || {
        // SAFETY: `handle` keeps sqlx's worker thread off the connection until it is
        // dropped, after `db`; a `Connection` made by `from_handle` does not own the
        // database handle and never closes it.
        let db = unsafe { rusqlite::Connection::from_handle(raw) }.map_err(rusqlite_error)?;
        // Statements prepared here live for one call. Without the query planner's
        // stability guarantee, SQLite prepares a statement whose plan may depend on a bound
        // value (`LIMIT ?`, for one) a second time at its first step; with it, once.
        db.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
            .map_err(rusqlite_error)?;
        Ok(f(&db))
    };
    let result = run_blocking(blocking, run);
    drop(handle);
    result
}

/// Runs `f` on the task's thread: as is when `blocking` is brief, as blocking work
/// ([`tokio::task::block_in_place`]) when it is long on a multi-threaded runtime.
fn run_blocking<T>(blocking: Blocking, f: impl FnOnce() -> T) -> T {
    let multi_threaded = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if blocking == Blocking::Long && multi_threaded {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

/// Connections of SQLite's own API that only read the log's file, beside sqlx's pool.
///
/// Reading through sqlx's connections crossed threads four times per read: sqlx's worker
/// thread had to be woken to hand the connection over and again to take it back (see
/// [`with_rusqlite`]). These connections are this code's own: a read runs on the task's
/// thread with no hand-off, and its prepared statements stay cached between reads (sqlx
/// finalizes nothing it does not know of before closing its connections). They are
/// opened read-only; in WAL mode each read sees every transaction committed before it
/// began, whichever connection committed it.
struct Readers {
    path: PathBuf,
    busy_timeout: Duration,
    /// Idle connections; `None` once the log is closed.
    idle: Mutex<Option<Vec<rusqlite::Connection>>>,
}

/// Idle reader connections kept for the next reads.
const IDLE_READERS: usize = 4;

impl Readers {
    fn new(path: &Path, busy_timeout: Duration) -> Self {
        Self {
            path: std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned()),
            busy_timeout,
            idle: Mutex::new(Some(Vec::new())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Vec<rusqlite::Connection>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on an idle reader connection, or on a new one when none is idle.
    fn with<T>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> Result<T, sqlx::Error>,
    ) -> Result<T, sqlx::Error> {
        let idle = match self.lock().as_mut() {
            Some(idle) => idle.pop(),
            None => return Err(sqlx::Error::PoolClosed),
        };
        let db = match idle {
            Some(db) => db,
            None => self.open().map_err(rusqlite_error)?,
        };
        let result = f(&db);
        if let Some(idle) = self.lock().as_mut()
            && idle.len() < IDLE_READERS
        {
            idle.push(db);
        }
        result
    }

    fn open(&self) -> Result<rusqlite::Connection, rusqlite::Error> {
        use rusqlite::OpenFlags;
        let db = rusqlite::Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        db.busy_timeout(self.busy_timeout)?;
        // See `with_rusqlite`: one preparation per statement.
        db.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
        Ok(db)
    }

    fn close(&self) {
        self.lock().take();
    }
}

/// sqlx's pool for a SQLite database: for `:memory:` exactly one connection, kept for
/// ever (the database lives as long as a connection to it); for a file at most
/// `max_connections`. No ping before a connection is handed out: a connection to a local
/// file does not go stale, and sqlx's ping is a round trip to the connection's worker
/// thread on every acquire.
pub fn pool_options(in_memory: bool, max_connections: u32) -> SqlitePoolOptions {
    let options = SqlitePoolOptions::new().test_before_acquire(false);
    if in_memory {
        options
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
    } else {
        options.max_connections(max_connections)
    }
}

/// A rusqlite error as sqlx's, for callers that handle sqlx's.
pub fn rusqlite_error(e: rusqlite::Error) -> sqlx::Error {
    sqlx::Error::AnyDriverError(Box::new(e))
}

fn read_events(
    db: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<RecordedEvent>, sqlx::Error> {
    let mut statement = db.prepare_cached(sql).map_err(rusqlite_error)?;
    let mut rows = statement.query(params).map_err(rusqlite_error)?;
    let mut events = Vec::new();
    while let Some(row) = rows.next().map_err(rusqlite_error)? {
        events.push(decode_row(row)?);
    }
    Ok(events)
}

/// [`decode_event`] for a row read through SQLite's own API (same columns).
fn decode_row(row: &rusqlite::Row<'_>) -> Result<RecordedEvent, sqlx::Error> {
    use rusqlite::types::FromSqlError;
    let value = |i: usize| row.get_ref(i).map_err(rusqlite_error);
    let bad =
        |i: usize| move |e: FromSqlError| sqlx::Error::decode(format!("event column {i}: {e}"));
    let int = |i: usize| value(i)?.as_i64().map_err(bad(i));
    let text = |i: usize| value(i)?.as_str().map_err(bad(i));
    let opt_text = |i: usize| value(i)?.as_str_or_null().map_err(bad(i));
    let blob = |i: usize| value(i)?.as_blob().map_err(bad(i));
    let uuid = |i: usize, column: &str| -> Result<Option<Uuid>, sqlx::Error> {
        opt_text(i)?
            .map(|s| codec::parse_uuid(s, column))
            .transpose()
    };
    let schema_version = int(5)?;
    Ok(RecordedEvent {
        position: to_u64(int(0)?, "position")?,
        stream_id: text(1)?.to_owned(),
        stream_version: to_u64(int(2)?, "stream_version")?,
        event_id: codec::parse_uuid(text(3)?, "event_id")?,
        event_type: text(4)?.to_owned(),
        schema_version: u32::try_from(schema_version).map_err(|_| {
            sqlx::Error::decode(format!("schema_version {schema_version} out of range"))
        })?,
        payload: blob(6)?.to_vec(),
        metadata: crate::model::Metadata {
            tenant: text(7)?.to_owned(),
            correlation_id: uuid(8, "correlation_id")?,
            causation_id: uuid(9, "causation_id")?,
            actor: text(10)?.to_owned(),
            trace_context: opt_text(11)?.map(str::to_owned),
        },
        recorded_at: codec::micros_to_time(int(12)?)?,
        prev_hash: codec::to_hash(blob(13)?, "prev_hash")?,
        hash: codec::to_hash(blob(14)?, "hash")?,
    })
}

/// A unique or primary-key constraint refused a row.
fn is_unique_violation(e: &rusqlite::Error) -> bool {
    use rusqlite::ffi::{SQLITE_CONSTRAINT_PRIMARYKEY, SQLITE_CONSTRAINT_UNIQUE};
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == SQLITE_CONSTRAINT_UNIQUE || f.extended_code == SQLITE_CONSTRAINT_PRIMARYKEY)
}

/// SQLITE_BUSY ("database is locked"), also as an extended code.
fn is_busy(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(e) => e
            .code()
            .and_then(|code| code.parse::<i32>().ok())
            .is_some_and(|code| code & 0xff == 5),
        _ => false,
    }
}

async fn migrate(pool: &SqlitePool, what: &str) -> Result<(), StorageError> {
    let what = format!("{what}: migrate");
    // IMMEDIATE: concurrent openers of one file migrate one after the other.
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(ctx(format!("{what}: begin")))?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS eventlog_migrations (
             version INTEGER PRIMARY KEY,
             description TEXT NOT NULL,
             checksum BLOB NOT NULL,
             applied_at INTEGER NOT NULL
         ) STRICT",
    )
    .execute(&mut *tx)
    .await
    .map_err(ctx(format!("{what}: create migrations table")))?;
    let applied: Vec<(i64, Vec<u8>)> =
        sqlx::query("SELECT version, checksum FROM eventlog_migrations ORDER BY version")
            .fetch_all(&mut *tx)
            .await
            .map_err(ctx(format!("{what}: read migrations")))?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(ctx(format!("{what}: read migrations")))?;
    codec::check_applied(&applied, MIGRATIONS, &what)?;
    for m in MIGRATIONS {
        if applied.iter().any(|(v, _)| *v == m.version) {
            continue;
        }
        tracing::info!(
            version = m.version,
            description = m.description,
            "applying event log migration"
        );
        sqlx::raw_sql(m.sql)
            .execute(&mut *tx)
            .await
            .map_err(ctx(format!("{what}: apply migration {}", m.version)))?;
        sqlx::query("INSERT INTO eventlog_migrations (version, description, checksum, applied_at) VALUES (?1, ?2, ?3, ?4)")
            .bind(m.version)
            .bind(m.description)
            .bind(m.checksum())
            .bind(codec::now_micros())
            .execute(&mut *tx)
            .await
            .map_err(ctx(format!("{what}: record migration {}", m.version)))?;
    }
    tx.commit().await.map_err(ctx(format!("{what}: commit")))
}

impl SqliteCore {
    /// The heads of `stream_ids` and which of `ids` already exist, in one statement
    /// (the lists travel as JSON arrays, so the statement is the same for every batch).
    fn read_heads_and_ids(
        db: &rusqlite::Connection,
        stream_ids: &[String],
        ids: &[Uuid],
    ) -> Result<(HashMap<String, Head>, HashSet<Uuid>), sqlx::Error> {
        let json =
            |v: &[String]| serde_json::to_string(v).map_err(|e| sqlx::Error::Encode(Box::new(e)));
        let params = (
            json(stream_ids)?,
            json(&ids.iter().map(Uuid::to_string).collect::<Vec<_>>())?,
        );
        let mut statement = db
            .prepare(
                "SELECT s.value, e.stream_version, e.hash
                 FROM json_each(?1) AS s
                 JOIN events AS e ON e.stream_id = s.value
                     AND e.stream_version = (SELECT max(stream_version) FROM events WHERE stream_id = s.value)
                 UNION ALL
                 SELECT event_id, NULL, NULL FROM events WHERE event_id IN (SELECT value FROM json_each(?2))",
            )
            .map_err(rusqlite_error)?;
        let rows = statement
            .query_map(params, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .and_then(|rows| rows.collect::<Result<Vec<append::HeadOrIdRow>, _>>())
            .map_err(rusqlite_error)?;
        append::heads_and_ids(rows)
    }

    /// Inserts `rows` with one prepared statement, stepped once per row; returns the
    /// positions in `rows` order. The positions are left to SQLite: `position` is the
    /// rowid, and a row inserted without one gets the largest rowid in the table plus one
    /// (the write lock is ours).
    fn insert(db: &rusqlite::Connection, rows: &[PlannedRow]) -> rusqlite::Result<Vec<u64>> {
        let mut statement = db.prepare(
            "INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version, \
             payload, tenant, correlation_id, causation_id, actor, trace_context, recorded_at, \
             prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        )?;
        let mut positions = Vec::with_capacity(rows.len());
        for r in rows {
            let e = &r.event;
            statement.execute(rusqlite::params![
                r.stream_id,
                to_i64(r.stream_version),
                e.event_id.to_string(),
                e.event_type,
                i64::from(e.schema_version),
                e.payload,
                e.metadata.tenant,
                e.metadata.correlation_id.map(|u| u.to_string()),
                e.metadata.causation_id.map(|u| u.to_string()),
                e.metadata.actor,
                e.metadata.trace_context,
                r.recorded_at,
                &r.prev_hash[..],
                &r.hash[..],
            ])?;
            let rowid = db.last_insert_rowid();
            let position = u64::try_from(rowid)
                .map_err(|_| rusqlite::Error::IntegralValueOutOfRange(0, rowid))?;
            positions.push(position);
        }
        Ok(positions)
    }

    /// Runs an event query through SQLite's own API and decodes every row there: on a
    /// reader connection ([`Readers`]), or in memory through [`with_rusqlite`] on the
    /// pool's one connection.
    async fn query_events<P: rusqlite::Params>(
        &self,
        sql: &'static str,
        blocking: Blocking,
        params: P,
    ) -> Result<Vec<RecordedEvent>, sqlx::Error> {
        if let Some(readers) = &self.readers {
            return run_blocking(blocking, || readers.with(|db| read_events(db, sql, params)));
        }
        let mut conn = self.pool.acquire().await?;
        with_rusqlite(&mut conn, blocking, |db| read_events(db, sql, params)).await?
    }

    async fn head_position(&self) -> Result<u64, StorageError> {
        let head: i64 = sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM events")
            .fetch_one(&self.pool)
            .await
            .map_err(ctx(format!("head position (SQLite {})", self.label)))?;
        to_u64(head, "position").map_err(ctx("head position"))
    }
}

#[async_trait]
impl Backend for SqliteCore {
    async fn try_append(
        &self,
        batch: &[&[StreamAppend]],
        what: &str,
    ) -> Result<Vec<Outcome>, TxFailure> {
        let storage = |step: &str| {
            let context = format!("{what}: {step}");
            move |e: sqlx::Error| {
                TxFailure::Append(AppendError::Storage(StorageError::new(context, e)))
            }
        };
        // The connection first: taking it from the pool is a round trip to its worker
        // thread, which need not hold up the file's other writers.
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(storage("take a connection"))?;
        // This process's writers of the file queue here (module docs).
        let _turn = self.file.gate.lock().await;
        // The ordering guard (module docs): the write lock, taken before any read.
        let mut tx = conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(storage("begin"))?;
        let events = batch
            .iter()
            .flat_map(|r| r.iter())
            .map(|sa| sa.events.len());
        let planned = with_rusqlite(&mut tx, Blocking::for_rows(events.sum()), |db| {
            let (heads, existing) =
                Self::read_heads_and_ids(db, &batch_stream_ids(batch), &batch_event_ids(batch))
                    .map_err(storage("read stream heads and event ids"))?;
            let plan = append::plan(batch, &heads, &existing, chrono::Utc::now());
            if plan.rows.is_empty() {
                return Ok((plan, Vec::new()));
            }
            match Self::insert(db, &plan.rows) {
                Ok(positions) => Ok((plan, positions)),
                Err(e) if is_unique_violation(&e) => Err(TxFailure::Unique {
                    heads,
                    source: rusqlite_error(e),
                }),
                Err(e) => Err(storage("insert events")(rusqlite_error(e))),
            }
        });
        let (plan, positions) = planned.await.map_err(storage("take the connection"))??;
        if plan.rows.is_empty() {
            tx.rollback().await.map_err(storage("roll back"))?;
            return Ok(plan.finish(&[]));
        }
        #[cfg(feature = "test-hooks")]
        if let Some(hook) = &self.before_commit {
            hook(crate::test_hooks::CommitInfo {
                stream_ids: plan.rows.iter().map(|r| r.stream_id.clone()).collect(),
                positions: positions.clone(),
            })
            .await;
        }
        tx.commit().await.map_err(storage("commit"))?;
        self.file
            .notifier
            .advance(positions.last().copied().unwrap_or_default());
        Ok(plan.finish(&positions))
    }

    async fn current_heads_and_ids(
        &self,
        batch: &[&[StreamAppend]],
    ) -> Result<(HashMap<String, Head>, HashSet<Uuid>), sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        with_rusqlite(&mut conn, Blocking::Brief, |db| {
            Self::read_heads_and_ids(db, &batch_stream_ids(batch), &batch_event_ids(batch))
        })
        .await?
    }
}

#[async_trait]
impl EventLog for SqliteEventLog {
    async fn append(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>, AppendError> {
        match &self.writer {
            Some(writer) => writer.append(appends).await,
            None => append::append_batch(&*self.core, std::slice::from_ref(&appends))
                .await
                .pop()
                .unwrap_or_else(|| Err(AppendError::Invalid("append produced no outcome".into()))),
        }
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        after_version: u64,
    ) -> Result<Vec<RecordedEvent>, StorageError> {
        let what = || format!("read stream {stream_id}");
        let sql = concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE stream_id = ?1 AND stream_version > ?2 ORDER BY stream_version"
        );
        self.core
            .query_events(
                sql,
                Blocking::Brief,
                (stream_id.to_owned(), to_i64(after_version)),
            )
            .await
            .map_err(ctx(what()))
    }

    async fn read_all(
        &self,
        after_position: u64,
        limit: u32,
    ) -> Result<Vec<RecordedEvent>, StorageError> {
        let what = || format!("read log after position {after_position}");
        if limit == 0 {
            return Ok(Vec::new());
        }
        let sql = concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE position > ?1 ORDER BY position LIMIT ?2"
        );
        self.core
            .query_events(
                sql,
                Blocking::for_rows(usize::try_from(limit).unwrap_or(usize::MAX)),
                (to_i64(after_position), i64::from(limit)),
            )
            .await
            .map_err(ctx(what()))
    }

    async fn head_position(&self) -> Result<u64, StorageError> {
        self.core.head_position().await
    }

    async fn wait_for_new(&self, after_position: u64) {
        self.core
            .file
            .notifier
            .wait(after_position, self.core.poll_interval)
            .await;
    }

    async fn load_checkpoint(&self, name: &str) -> Result<u64, StorageError> {
        let what = || format!("load checkpoint {name}");
        let position: Option<i64> =
            sqlx::query_scalar("SELECT position FROM checkpoints WHERE name = ?1")
                .bind(name)
                .fetch_optional(&self.core.pool)
                .await
                .map_err(ctx(what()))?;
        position.map_or(Ok(0), |p| to_u64(p, "position").map_err(ctx(what())))
    }

    async fn save_checkpoint(&self, name: &str, position: u64) -> Result<(), StorageError> {
        let what = format!("save checkpoint {name} at {position}");
        let position = i64::try_from(position).map_err(|_| {
            StorageError::new(what.clone(), sqlx::Error::protocol("position out of range"))
        })?;
        let _turn = self.core.file.gate.lock().await;
        sqlx::query(
            "INSERT INTO checkpoints (name, position, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(position)
        .bind(codec::now_micros())
        .execute(&self.core.pool)
        .await
        .map_err(ctx(what))?;
        Ok(())
    }

    /// Granted at once: replicas of a service share a log on PostgreSQL, not on one
    /// SQLite file (the embedded mode runs each consumer once, in one process).
    async fn lease(&self, _name: &str) -> Result<Lease, StorageError> {
        Ok(Lease::sole())
    }

    async fn verify(&self, stream_id: Option<&str>) -> Result<VerifyReport, StorageError> {
        let what = match stream_id {
            Some(s) => format!("verify stream {s}"),
            None => format!("verify log (SQLite {})", self.core.label),
        };
        // Page by page in (stream_id, stream_version) order, each page after the last
        // event of the one before; one stream's pages, or every stream's.
        let sql = concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE (?1 IS NULL OR stream_id = ?1) AND (stream_id, stream_version) > (?2, ?3) \
             ORDER BY stream_id, stream_version LIMIT ?4"
        );
        let mut walker = ChainWalker::default();
        let mut after = (String::new(), 0i64);
        loop {
            let params = (stream_id.map(str::to_owned), after.0, after.1, VERIFY_PAGE);
            let page = self
                .core
                .query_events(sql, Blocking::Long, params)
                .await
                .map_err(ctx(what.clone()))?;
            let Some(last) = page.last() else {
                return Ok(walker.report(None));
            };
            after = (last.stream_id.clone(), to_i64(last.stream_version));
            for event in &page {
                if let Some(problem) = walker.check(event) {
                    return Ok(walker.report(Some(problem)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_and_primary_key_refusals_are_unique_violations() {
        let db = rusqlite::Connection::open_in_memory().expect("open");
        db.execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT UNIQUE, n INTEGER CHECK (n > 0));
             INSERT INTO t VALUES (1, 'a', 1);",
        )
        .expect("schema");
        let insert = |sql: &str| db.execute(sql, []).expect_err("refused");
        assert!(is_unique_violation(&insert(
            "INSERT INTO t VALUES (2, 'a', 1)"
        )));
        assert!(is_unique_violation(&insert(
            "INSERT INTO t VALUES (1, 'b', 1)"
        )));
        assert!(!is_unique_violation(&insert(
            "INSERT INTO t VALUES (3, 'c', 0)"
        )));
    }

    #[test]
    fn one_write_gate_per_file_however_its_path_is_spelled() {
        let dir = std::env::temp_dir().join(format!("certledger-gate-{}", Uuid::now_v7()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (a, b) = (dir.join("a.db"), dir.join("b.db"));
        for file in [&a, &b] {
            std::fs::write(file, b"").expect("file");
        }
        let gate = WriteGate::for_file(&a);
        let same = WriteGate::for_file(&dir.join(".").join("a.db"));
        assert!(Arc::ptr_eq(&gate.0, &same.0));
        assert!(!Arc::ptr_eq(&gate.0, &WriteGate::for_file(&b).0));
        assert!(!Arc::ptr_eq(&gate.0, &WriteGate::private().0));
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
