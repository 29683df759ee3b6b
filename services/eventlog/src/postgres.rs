//! PostgreSQL backend.
//!
//! Each log lives in its own schema (`connect(url, schema)`); every pooled connection has
//! `search_path` set to it, so the SQL below names tables without a schema.
//!
//! # Positions become visible in order
//!
//! `position` is an identity column: its value is taken from a sequence when the row is
//! inserted, not when the transaction commits. Two concurrent appends could therefore
//! commit out of order (position 8 visible, 7 still in flight), and a reader that tails
//! `position > 7`… would later miss 7 for good.
//!
//! Guard: every append transaction first takes `pg_advisory_xact_lock(lock_key)`, a
//! transaction-scoped advisory lock whose key is derived from the schema name (one lock
//! per log), and only then reads the stream heads and inserts (which allocates the
//! positions). PostgreSQL releases transaction-scoped locks at the very end of commit,
//! after the transaction has been marked committed in the proc array, i.e. after it is
//! visible to new snapshots (`CommitTransaction`: `RecordTransactionCommit`,
//! `ProcArrayEndTransaction`, then `ResourceOwnerRelease` drops the locks). Hence the next
//! appender allocates its positions only after all lower positions are visible, and any
//! snapshot that sees position `p` also sees every committed position below `p`.
//! The lock also makes the expected-version check exact (the heads are read under it);
//! the unique (stream_id, stream_version) constraint stays as a backstop and maps to
//! `AppendError::Conflict`.
//!
//! The cost is that appends to one log are serialized; throughput comes from group
//! commit (many callers' appends in one transaction, see `LogOptions::group_commit`),
//! not from concurrent transactions. The lock is held from the first statement of the
//! append to its commit; nothing slow (no network call, no user code) runs inside it.
//!
//! Readers are woken by `pg_notify(channel, last_position)` sent in the append
//! transaction (delivered at commit), received by a LISTEN task; `wait_for_new` falls back
//! to a poll interval when a notification is lost (e.g. while the LISTEN connection
//! reconnects).

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, PgConnection, Row};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::append::{
    self, Backend, GroupCommitter, Head, Notifier, Outcome, PlannedRow, TxFailure, batch_event_ids,
    batch_stream_ids,
};
use crate::codec::{self, ChainWalker, Migration, ctx, decode_event, to_i64, to_u64};
use crate::model::{
    AppendError, AppendResult, EventLog, Lease, RecordedEvent, StorageError, StreamAppend,
    VerifyReport,
};
use crate::options::LogOptions;

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "events, append-only triggers, checkpoints",
        sql: include_str!("../migrations/postgres/0001_events.sql"),
    },
    Migration {
        version: 2,
        description: "event rows inline up to 8 KB",
        sql: include_str!("../migrations/postgres/0002_inline_payloads.sql"),
    },
];

/// How often the holder of a lease checks the connection that holds it.
const LEASE_CHECK: Duration = Duration::from_secs(2);

macro_rules! event_columns {
    () => {
        "position, stream_id, stream_version, event_id::text, event_type, schema_version, payload, \
         tenant, correlation_id::text, causation_id::text, actor, trace_context, recorded_at, prev_hash, hash"
    };
}

/// The event log on PostgreSQL.
pub struct PgEventLog {
    core: Arc<PgCore>,
    writer: Option<GroupCommitter>,
    listener: JoinHandle<()>,
}

struct PgCore {
    pool: PgPool,
    /// For connections of their own (leases).
    connect_options: PgConnectOptions,
    schema: String,
    lock_key: i64,
    channel: String,
    notifier: Arc<Notifier>,
    poll_interval: Duration,
    #[cfg(feature = "test-hooks")]
    before_commit: Option<crate::test_hooks::BeforeCommitHook>,
}

/// A schema name we can put in SQL and in a connection option without quoting problems.
fn check_schema(schema: &str) -> Result<(), StorageError> {
    let mut chars = schema.chars();
    let ok = schema.len() <= 63
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !schema.starts_with("pg_");
    if ok {
        Ok(())
    } else {
        Err(StorageError::new(
            format!("connect event log: schema {schema:?}"),
            sqlx::Error::Configuration(
                "schema must match [a-z_][a-z0-9_]{0,62} and not start with pg_".into(),
            ),
        ))
    }
}

/// A stable 64-bit key for `purpose` of this log (advisory locks, channel name).
fn log_key(purpose: &str, schema: &str) -> i64 {
    let digest = Sha256::digest(format!("certledger-eventlog/{purpose}/{schema}").as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(b)
}

impl PgEventLog {
    /// Connects to PostgreSQL at `url` (`postgres://user@host:port/db`), creating the
    /// schema and applying migrations if needed. Every log handle on the same database
    /// and schema (also in other processes) is the same log.
    pub async fn connect(url: &str, schema: &str) -> Result<Self, StorageError> {
        Self::connect_with(url, schema, LogOptions::default()).await
    }

    /// [`PgEventLog::connect`] with options (pool size, poll interval, group commit).
    pub async fn connect_with(
        url: &str,
        schema: &str,
        options: LogOptions,
    ) -> Result<Self, StorageError> {
        check_schema(schema)?;
        let what = format!("connect event log (PostgreSQL, schema {schema})");
        let connect_options = PgConnectOptions::from_str(url)
            .map_err(ctx(format!("{what}: parse URL")))?
            .application_name("certledger-eventlog")
            .options([("search_path", schema)]);
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .connect_with(connect_options.clone())
            .await
            .map_err(ctx(format!("{what}: open pool")))?;
        migrate(&pool, schema).await?;

        let channel = format!("certledger_eventlog_{:016x}", log_key("notify", schema));
        // LISTEN on a connection of its own, before reading the head, so that no commit
        // after the head read goes unnoticed.
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_with(connect_options.clone())
            .await
            .map_err(ctx(format!("{what}: open LISTEN connection")))?;
        let mut listener = PgListener::connect_with(&listen_pool)
            .await
            .map_err(ctx(format!("{what}: open LISTEN connection")))?;
        listener.ignore_pool_close_event(true);
        listener
            .listen(&channel)
            .await
            .map_err(ctx(format!("{what}: LISTEN {channel}")))?;
        let notifier = Arc::new(Notifier::new());
        let listener = tokio::spawn(listen_loop(listener, notifier.clone(), schema.to_owned()));

        let core = Arc::new(PgCore {
            pool,
            connect_options,
            schema: schema.to_owned(),
            lock_key: log_key("append", schema),
            channel,
            notifier,
            poll_interval: options.poll_interval,
            #[cfg(feature = "test-hooks")]
            before_commit: options.before_commit.clone(),
        });
        let head = core.head_position().await;
        let head = match head {
            Ok(h) => h,
            Err(e) => {
                listener.abort();
                return Err(e);
            }
        };
        core.notifier.advance(head);
        let writer = options
            .group_commit
            .then(|| GroupCommitter::spawn(core.clone(), options.max_batch_events));
        Ok(Self {
            core,
            writer,
            listener,
        })
    }

    /// The connection pool (search_path = the log's schema). For operations and tests;
    /// writing to the events table through it is rejected by the database.
    pub fn pool(&self) -> &PgPool {
        &self.core.pool
    }

    /// The schema holding this log.
    pub fn schema(&self) -> &str {
        &self.core.schema
    }

    /// The key of the transaction-scoped advisory lock every append to this log takes
    /// (`pg_advisory_xact_lock(key)`; in `pg_locks`: `classid << 32 | objid`, objsubid 1).
    pub fn append_lock_key(&self) -> i64 {
        self.core.lock_key
    }

    /// The key of the session-level advisory lock that holds the lease on the reader
    /// `name` ([`EventLog::lease`]).
    pub fn lease_key(&self, name: &str) -> i64 {
        log_key(&format!("lease/{name}"), &self.core.schema)
    }

    /// Closes the pool after in-flight work; later calls fail.
    pub async fn close(&self) {
        self.listener.abort();
        self.core.pool.close().await;
    }
}

impl Drop for PgEventLog {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

async fn listen_loop(mut listener: PgListener, notifier: Arc<Notifier>, schema: String) {
    loop {
        match listener.try_recv().await {
            Ok(Some(n)) => match n.payload().parse::<u64>() {
                Ok(p) => notifier.advance(p),
                Err(_) => notifier.wake(),
            },
            Ok(None) => {
                // Connection lost; notifications may have been missed. PgListener
                // reconnects and re-LISTENs; let waiters re-read meanwhile.
                tracing::warn!(schema, "event log LISTEN connection lost; reconnecting");
                notifier.wake();
            }
            Err(sqlx::Error::PoolClosed) => return,
            Err(e) => {
                tracing::warn!(schema, error = %e, "event log LISTEN failed; retrying in 1 s");
                notifier.wake();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn migrate(pool: &PgPool, schema: &str) -> Result<(), StorageError> {
    let what = format!("migrate event log (PostgreSQL, schema {schema})");
    let mut tx = pool.begin().await.map_err(ctx(format!("{what}: begin")))?;
    // Concurrent connects (replicas starting together) migrate one after the other.
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(log_key("migrate", schema))
        .execute(&mut *tx)
        .await
        .map_err(ctx(format!("{what}: lock")))?;
    // `schema` passed check_schema: [a-z_][a-z0-9_]*, safe to interpolate.
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
    )))
    .execute(&mut *tx)
    .await
    .map_err(ctx(format!("{what}: create schema")))?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS eventlog_migrations (
             version BIGINT PRIMARY KEY,
             description TEXT NOT NULL,
             checksum BYTEA NOT NULL,
             applied_at BIGINT NOT NULL
         )",
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
            schema,
            version = m.version,
            description = m.description,
            "applying event log migration"
        );
        sqlx::raw_sql(m.sql)
            .execute(&mut *tx)
            .await
            .map_err(ctx(format!("{what}: apply migration {}", m.version)))?;
        sqlx::query("INSERT INTO eventlog_migrations (version, description, checksum, applied_at) VALUES ($1, $2, $3, $4)")
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

impl PgCore {
    /// The heads of `stream_ids` and which of `ids` already exist, in one round trip.
    async fn read_heads_and_ids(
        conn: &mut PgConnection,
        stream_ids: &[String],
        ids: &[Uuid],
    ) -> Result<(HashMap<String, Head>, HashSet<Uuid>), sqlx::Error> {
        let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        let rows: Vec<append::HeadOrIdRow> = sqlx::query_as(
            "SELECT s.id, e.stream_version, e.hash
             FROM unnest($1::text[]) AS s(id)
             CROSS JOIN LATERAL (
                 SELECT stream_version, hash FROM events
                 WHERE stream_id = s.id ORDER BY stream_version DESC LIMIT 1
             ) AS e
             UNION ALL
             SELECT event_id::text, NULL, NULL FROM events WHERE event_id = ANY($2::text[]::uuid[])",
        )
        .bind(stream_ids)
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?;
        append::heads_and_ids(rows)
    }

    /// Inserts `rows` and queues `pg_notify(channel, last position)` (delivered at
    /// commit) in one statement; returns the positions in `rows` order.
    async fn insert(
        conn: &mut PgConnection,
        rows: &[PlannedRow],
        channel: &str,
    ) -> Result<Vec<u64>, sqlx::Error> {
        let n = rows.len();
        let mut stream_ids = Vec::with_capacity(n);
        let mut versions = Vec::with_capacity(n);
        let mut event_ids = Vec::with_capacity(n);
        let mut types = Vec::with_capacity(n);
        let mut schema_versions = Vec::with_capacity(n);
        let mut payloads: Vec<&[u8]> = Vec::with_capacity(n);
        let mut tenants = Vec::with_capacity(n);
        let mut correlations = Vec::with_capacity(n);
        let mut causations = Vec::with_capacity(n);
        let mut actors = Vec::with_capacity(n);
        let mut traces = Vec::with_capacity(n);
        let mut recorded = Vec::with_capacity(n);
        let mut prevs: Vec<&[u8]> = Vec::with_capacity(n);
        let mut hashes: Vec<&[u8]> = Vec::with_capacity(n);
        for r in rows {
            let e = &r.event;
            stream_ids.push(r.stream_id.as_str());
            versions.push(to_i64(r.stream_version));
            event_ids.push(e.event_id.to_string());
            types.push(e.event_type.as_str());
            schema_versions.push(i64::from(e.schema_version));
            payloads.push(&e.payload);
            tenants.push(e.metadata.tenant.as_str());
            correlations.push(e.metadata.correlation_id.map(|u| u.to_string()));
            causations.push(e.metadata.causation_id.map(|u| u.to_string()));
            actors.push(e.metadata.actor.as_str());
            traces.push(e.metadata.trace_context.as_deref());
            recorded.push(r.recorded_at);
            prevs.push(&r.prev_hash);
            hashes.push(&r.hash);
        }
        // Rows are inserted in ordinality order, so the identity values (positions)
        // follow it; the check below makes sure instead of assuming.
        let returned = sqlx::query(
            "WITH ins AS (
                 INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version, payload,
                                     tenant, correlation_id, causation_id, actor, trace_context, recorded_at,
                                     prev_hash, hash)
                 SELECT u.stream_id, u.stream_version, u.event_id::uuid, u.event_type, u.schema_version,
                        u.payload, u.tenant, u.correlation_id::uuid, u.causation_id::uuid, u.actor,
                        u.trace_context, u.recorded_at, u.prev_hash, u.hash
                 FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[], $5::int8[], $6::bytea[],
                             $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::int8[],
                             $13::bytea[], $14::bytea[])
                      WITH ORDINALITY AS u(stream_id, stream_version, event_id, event_type, schema_version,
                                           payload, tenant, correlation_id, causation_id, actor, trace_context,
                                           recorded_at, prev_hash, hash, ord)
                 ORDER BY u.ord
                 RETURNING position, event_id
             )
             SELECT ins.position, ins.event_id::text
             FROM ins CROSS JOIN (SELECT pg_notify($15, (SELECT max(position) FROM ins)::text)) AS notified",
        )
        .bind(&stream_ids)
        .bind(&versions)
        .bind(&event_ids)
        .bind(&types)
        .bind(&schema_versions)
        .bind(&payloads)
        .bind(&tenants)
        .bind(&correlations)
        .bind(&causations)
        .bind(&actors)
        .bind(&traces)
        .bind(&recorded)
        .bind(&prevs)
        .bind(&hashes)
        .bind(channel)
        .fetch_all(&mut *conn)
        .await?;
        let mut by_id = HashMap::with_capacity(n);
        for r in &returned {
            let position: i64 = r.try_get(0)?;
            let id: String = r.try_get(1)?;
            by_id.insert(id, to_u64(position, "position")?);
        }
        let mut positions = Vec::with_capacity(n);
        for id in &event_ids {
            let p = by_id.get(id).copied().ok_or_else(|| {
                sqlx::Error::protocol(format!("insert returned no position for event {id}"))
            })?;
            if positions.last().is_some_and(|last| *last >= p) {
                return Err(sqlx::Error::protocol(
                    "positions were not assigned in append order",
                ));
            }
            positions.push(p);
        }
        Ok(positions)
    }

    async fn head_position(&self) -> Result<u64, StorageError> {
        let head: i64 = sqlx::query_scalar("SELECT coalesce(max(position), 0)::int8 FROM events")
            .fetch_one(&self.pool)
            .await
            .map_err(ctx(format!("head position (schema {})", self.schema)))?;
        to_u64(head, "position").map_err(ctx("head position"))
    }
}

#[async_trait]
impl Backend for PgCore {
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
        // The ordering guard (module docs): serialize appenders to this log before any
        // position is allocated; released only after our commit is visible. Sent with
        // BEGIN in one round trip (simple query; the key is an integer we made).
        let begin = format!("BEGIN; SELECT pg_advisory_xact_lock({})", self.lock_key);
        let mut tx = self
            .pool
            .begin_with(AssertSqlSafe(begin))
            .await
            .map_err(storage("begin and take the append lock"))?;
        // A statement after the lock: its snapshot includes every earlier append.
        let (heads, existing) =
            Self::read_heads_and_ids(&mut tx, &batch_stream_ids(batch), &batch_event_ids(batch))
                .await
                .map_err(storage("read stream heads and event ids"))?;
        let plan = append::plan(batch, &heads, &existing, chrono::Utc::now());
        if plan.rows.is_empty() {
            tx.rollback().await.map_err(storage("roll back"))?;
            return Ok(plan.finish(&[]));
        }
        let positions = match Self::insert(&mut tx, &plan.rows, &self.channel).await {
            Ok(p) => p,
            Err(e)
                if e.as_database_error()
                    .is_some_and(|d| d.is_unique_violation()) =>
            {
                return Err(TxFailure::Unique { heads, source: e });
            }
            Err(e) => return Err(storage("insert events")(e)),
        };
        let last = positions.last().copied().unwrap_or_default();
        #[cfg(feature = "test-hooks")]
        if let Some(hook) = &self.before_commit {
            hook(crate::test_hooks::CommitInfo {
                stream_ids: plan.rows.iter().map(|r| r.stream_id.clone()).collect(),
                positions: positions.clone(),
            })
            .await;
        }
        tx.commit().await.map_err(storage("commit"))?;
        self.notifier.advance(last);
        Ok(plan.finish(&positions))
    }

    async fn current_heads_and_ids(
        &self,
        batch: &[&[StreamAppend]],
    ) -> Result<(HashMap<String, Head>, HashSet<Uuid>), sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        Self::read_heads_and_ids(&mut conn, &batch_stream_ids(batch), &batch_event_ids(batch)).await
    }
}

#[async_trait]
impl EventLog for PgEventLog {
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
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE stream_id = $1 AND stream_version > $2 ORDER BY stream_version"
        ))
        .bind(stream_id)
        .bind(to_i64(after_version))
        .fetch_all(&self.core.pool)
        .await
        .map_err(ctx(what()))?;
        rows.iter()
            .map(decode_event)
            .collect::<Result<_, _>>()
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
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE position > $1 ORDER BY position LIMIT $2"
        ))
        .bind(to_i64(after_position))
        .bind(i64::from(limit))
        .fetch_all(&self.core.pool)
        .await
        .map_err(ctx(what()))?;
        rows.iter()
            .map(decode_event)
            .collect::<Result<_, _>>()
            .map_err(ctx(what()))
    }

    async fn head_position(&self) -> Result<u64, StorageError> {
        self.core.head_position().await
    }

    async fn wait_for_new(&self, after_position: u64) {
        self.core
            .notifier
            .wait(after_position, self.core.poll_interval)
            .await;
    }

    async fn load_checkpoint(&self, name: &str) -> Result<u64, StorageError> {
        let what = || format!("load checkpoint {name}");
        let position: Option<i64> =
            sqlx::query_scalar("SELECT position FROM checkpoints WHERE name = $1")
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
        sqlx::query(
            "INSERT INTO checkpoints (name, position, updated_at) VALUES ($1, $2, $3)
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

    /// A session-level advisory lock (key [`PgEventLog::lease_key`]) taken on a connection
    /// of the lease's own, waited for in the server; a task checks that connection every
    /// [`LEASE_CHECK`] and reports the lease lost when it fails. A holder that dies or loses
    /// its connection releases the lock with its session.
    async fn lease(&self, name: &str) -> Result<Lease, StorageError> {
        let what = || format!("lease {name}");
        // Named, so that an operator sees in pg_stat_activity who holds or waits for one.
        // The server probes the idle connection: a holder whose host vanished without
        // closing it (power loss, a partition) loses the lock in about 25 s instead of
        // the operating system's two hours.
        let options = self
            .core
            .connect_options
            .clone()
            .application_name("certledger-lease")
            .options([
                ("tcp_keepalives_idle", "10"),
                ("tcp_keepalives_interval", "5"),
                ("tcp_keepalives_count", "3"),
            ]);
        let mut connection = <PgConnection as sqlx::Connection>::connect_with(&options)
            .await
            .map_err(ctx(what()))?;
        // A waiter whose future is dropped closes its socket; from PostgreSQL 14 the
        // server also ends its wait then, instead of taking the lock first.
        let _ = sqlx::query("SET client_connection_check_interval = '2s'")
            .execute(&mut connection)
            .await;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(self.lease_key(name))
            .execute(&mut connection)
            .await
            .map_err(ctx(what()))?;
        let (lost, on_lost) = tokio::sync::watch::channel(false);
        let name = name.to_owned();
        let keeper = tokio::spawn(async move {
            loop {
                tokio::time::sleep(LEASE_CHECK).await;
                if let Err(error) = sqlx::query("SELECT 1").execute(&mut connection).await {
                    tracing::warn!(lease = %name, %error, "the connection holding a lease failed");
                    let _ = lost.send(true);
                    return;
                }
            }
        });
        Ok(Lease::kept(on_lost, keeper))
    }

    async fn verify(&self, stream_id: Option<&str>) -> Result<VerifyReport, StorageError> {
        let what = match stream_id {
            Some(s) => format!("verify stream {s}"),
            None => format!("verify log (schema {})", self.core.schema),
        };
        let mut walker = ChainWalker::default();
        let query = match stream_id {
            Some(s) => sqlx::query(concat!(
                "SELECT ",
                event_columns!(),
                " FROM events WHERE stream_id = $1 ORDER BY stream_version"
            ))
            .bind(s),
            None => sqlx::query(concat!(
                "SELECT ",
                event_columns!(),
                " FROM events ORDER BY stream_id, stream_version"
            )),
        };
        let mut rows = query.fetch(&self.core.pool);
        while let Some(row) = rows.try_next().await.map_err(ctx(what.clone()))? {
            let event = decode_event(&row).map_err(ctx(what.clone()))?;
            if let Some(problem) = walker.check(&event) {
                return Ok(walker.report(Some(problem)));
            }
        }
        Ok(walker.report(None))
    }
}
