//! The read models' database: PostgreSQL (a schema of its own) or SQLite (a file), through
//! sqlx. One set of SQL runs on both (`$n` parameters, `INSERT … ON CONFLICT … DO UPDATE`,
//! `CAST(… AS BIGINT)`); where the two differ (row locks) the code says so.

use std::str::FromStr;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteRow, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Postgres, Row, Sqlite, Transaction};

use crate::error::ProjectionError;
use crate::model::ReadModel;

/// Either backend's value of something: a pool, a connection, a transaction.
pub(crate) enum Db<P, S> {
    Pg(P),
    Sqlite(S),
}

pub(crate) type Pool = Db<PgPool, SqlitePool>;
pub(crate) type Tx = Db<Transaction<'static, Postgres>, Transaction<'static, Sqlite>>;
pub(crate) type Conn = Db<PoolConnection<Postgres>, PoolConnection<Sqlite>>;
/// The connection of a [`Tx`] or [`Conn`], borrowed.
pub(crate) type Connection<'c> = Db<&'c mut sqlx::PgConnection, &'c mut sqlx::SqliteConnection>;

impl<P, S> Db<P, S>
where
    P: std::ops::DerefMut<Target = sqlx::PgConnection>,
    S: std::ops::DerefMut<Target = sqlx::SqliteConnection>,
{
    pub(crate) fn connection(&mut self) -> Connection<'_> {
        match self {
            Db::Pg(c) => Db::Pg(&mut **c),
            Db::Sqlite(c) => Db::Sqlite(&mut **c),
        }
    }
}

/// Runs `$body` with `$c` bound to the backend's connection (`&mut PgConnection` or
/// `&mut SqliteConnection`) of a `&mut Tx` or `&mut Conn`. The body is compiled once per
/// backend, so the same SQL and binds serve both.
macro_rules! on {
    ($x:expr, $c:ident => $body:expr) => {
        match $x {
            $crate::store::Db::Pg(inner) => {
                let $c: &mut sqlx::PgConnection = &mut **inner;
                $body
            }
            $crate::store::Db::Sqlite(inner) => {
                let $c: &mut sqlx::SqliteConnection = &mut **inner;
                $body
            }
        }
    };
}
pub(crate) use on;

/// Typed column access shared by both backends' rows.
pub(crate) trait RowExt {
    fn text(&self, col: &str) -> Result<String, sqlx::Error>;
    fn opt_text(&self, col: &str) -> Result<Option<String>, sqlx::Error>;
    fn int(&self, col: &str) -> Result<i64, sqlx::Error>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>, sqlx::Error>;
    fn flag(&self, col: &str) -> Result<bool, sqlx::Error>;
}

macro_rules! row_ext {
    ($row:ty) => {
        impl RowExt for $row {
            fn text(&self, col: &str) -> Result<String, sqlx::Error> {
                self.try_get(col)
            }
            fn opt_text(&self, col: &str) -> Result<Option<String>, sqlx::Error> {
                self.try_get(col)
            }
            fn int(&self, col: &str) -> Result<i64, sqlx::Error> {
                self.try_get(col)
            }
            fn opt_int(&self, col: &str) -> Result<Option<i64>, sqlx::Error> {
                self.try_get(col)
            }
            fn flag(&self, col: &str) -> Result<bool, sqlx::Error> {
                self.try_get(col)
            }
        }
    };
}
row_ext!(PgRow);
row_ext!(SqliteRow);

struct Migration {
    version: i64,
    description: &'static str,
    postgres: &'static str,
    sqlite: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "read models: inventory, expiry calendar, deployments, targets, revocations",
        postgres: include_str!("../migrations/postgres/0001_read_models.sql"),
        sqlite: include_str!("../migrations/sqlite/0001_read_models.sql"),
    },
    Migration {
        version: 2,
        description: "revocations: CRL publications and the revocation's issuer and position",
        postgres: include_str!("../migrations/postgres/0002_crl_publications.sql"),
        sqlite: include_str!("../migrations/sqlite/0002_crl_publications.sql"),
    },
    Migration {
        version: 3,
        description: "stream versions: one row per stream for all read models",
        postgres: include_str!("../migrations/postgres/0003_stream_versions.sql"),
        sqlite: include_str!("../migrations/sqlite/0003_stream_versions.sql"),
    },
];

/// The PostgreSQL schema used when none is given.
pub const DEFAULT_PG_SCHEMA: &str = "projections";

/// Options for [`ProjectionStore::connect_with`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pg_schema: String,
    max_connections: u32,
    sqlite_busy_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            pg_schema: DEFAULT_PG_SCHEMA.to_owned(),
            max_connections: 8,
            sqlite_busy_timeout: Duration::from_secs(30),
        }
    }
}

impl StoreOptions {
    /// Default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// PostgreSQL schema of the read models (default `projections`).
    pub fn pg_schema(mut self, schema: impl Into<String>) -> Self {
        self.pg_schema = schema.into();
        self
    }

    /// Pool size (default 8; in-memory SQLite always uses one connection).
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// How long a SQLite writer waits for another's write lock (default 30 s).
    pub fn sqlite_busy_timeout(mut self, d: Duration) -> Self {
        self.sqlite_busy_timeout = d;
        self
    }
}

/// Which database the read models are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL.
    Postgres,
    /// SQLite.
    Sqlite,
}

/// The read models' database. Cheap to clone (a pool handle).
#[derive(Clone)]
pub struct ProjectionStore {
    pool: Pool,
    label: String,
}

impl Clone for Pool {
    fn clone(&self) -> Self {
        match self {
            Db::Pg(p) => Db::Pg(p.clone()),
            Db::Sqlite(p) => Db::Sqlite(p.clone()),
        }
    }
}

impl std::fmt::Debug for ProjectionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionStore")
            .field("database", &self.label)
            .finish()
    }
}

fn check_schema(schema: &str) -> Result<(), ProjectionError> {
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
        Err(ProjectionError::invalid(
            "pg_schema",
            format!("{schema:?} must match [a-z_][a-z0-9_]{{0,62}} and not start with pg_"),
        ))
    }
}

impl ProjectionStore {
    /// Opens the read models at `postgres://…` (schema [`DEFAULT_PG_SCHEMA`]) or
    /// `sqlite:…`, creating tables as needed.
    pub async fn connect(url: &str) -> Result<Self, ProjectionError> {
        Self::connect_with(url, StoreOptions::default()).await
    }

    /// [`ProjectionStore::connect`] with options.
    pub async fn connect_with(url: &str, options: StoreOptions) -> Result<Self, ProjectionError> {
        let store = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let schema = options.pg_schema.clone();
            check_schema(&schema)?;
            let what = format!("connect (PostgreSQL, schema {schema})");
            let connect = PgConnectOptions::from_str(url)
                .map_err(ProjectionError::db(format!("{what}: parse URL")))?
                .application_name("certledger-projections")
                // Every statement planned for the tables as they are now. A read model's
                // tables start empty; a plan cached then (a statement's generic plan,
                // after five executions) scanned them whole for each batch until the next
                // ANALYZE: quadratic in the rows written meanwhile.
                .options([
                    ("search_path", schema.as_str()),
                    ("plan_cache_mode", "force_custom_plan"),
                ]);
            // The schema must exist before a connection with that search_path uses it.
            let pool = PgPoolOptions::new()
                .max_connections(options.max_connections)
                .connect_with(connect)
                .await
                .map_err(ProjectionError::db(format!("{what}: open pool")))?;
            ProjectionStore {
                pool: Db::Pg(pool),
                label: format!("PostgreSQL schema {schema}"),
            }
        } else if url.starts_with("sqlite:") {
            let what = format!("connect (SQLite {url})");
            let in_memory = url.contains(":memory:") || url.contains("mode=memory");
            let mut connect = SqliteConnectOptions::from_str(url)
                .map_err(ProjectionError::db(format!("{what}: parse URL")))?
                .create_if_missing(true)
                .busy_timeout(options.sqlite_busy_timeout)
                .synchronous(SqliteSynchronous::Normal);
            if !in_memory {
                connect = connect.journal_mode(SqliteJournalMode::Wal);
            }
            let pool =
                certledger_eventlog::sqlite::pool_options(in_memory, options.max_connections)
                    .connect_with(connect)
                    .await
                    .map_err(ProjectionError::db(format!("{what}: open")))?;
            ProjectionStore {
                pool: Db::Sqlite(pool),
                label: format!("SQLite {url}"),
            }
        } else {
            return Err(ProjectionError::invalid(
                "url",
                "the read-model URL must start with postgres://, postgresql:// or sqlite:",
            ));
        };
        store.migrate(&options.pg_schema).await?;
        Ok(store)
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        match self.pool {
            Db::Pg(_) => Backend::Postgres,
            Db::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Closes the pool.
    pub async fn close(&self) {
        match &self.pool {
            Db::Pg(p) => p.close().await,
            Db::Sqlite(p) => p.close().await,
        }
    }

    async fn migrate(&self, schema: &str) -> Result<(), ProjectionError> {
        let what = format!("migrate {}", self.label);
        let mut tx = match &self.pool {
            Db::Pg(pool) => {
                let mut tx = pool
                    .begin()
                    .await
                    .map_err(ProjectionError::db(format!("{what}: begin")))?;
                // Replicas starting together migrate one after the other.
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext('certledger-projections/migrate/' || $1))")
                    .bind(schema)
                    .execute(&mut *tx)
                    .await
                    .map_err(ProjectionError::db(format!("{what}: lock")))?;
                // `schema` passed check_schema: safe to put in SQL.
                sqlx::raw_sql(AssertSqlSafe(format!(
                    "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
                )))
                .execute(&mut *tx)
                .await
                .map_err(ProjectionError::db(format!("{what}: create schema")))?;
                Db::Pg(tx)
            }
            Db::Sqlite(pool) => Db::Sqlite(
                pool.begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err(ProjectionError::db(format!("{what}: begin")))?,
            ),
        };
        on!(&mut tx, c => sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS projections_migrations (
                 version BIGINT PRIMARY KEY,
                 description TEXT NOT NULL,
                 applied_at BIGINT NOT NULL
             )",
        )
        .execute(&mut *c)
        .await.map(|r| r.rows_affected()))
        .map_err(ProjectionError::db(format!(
            "{what}: create migrations table"
        )))?;
        let applied: Vec<i64> = on!(&mut tx, c => {
            let rows = sqlx::query("SELECT version FROM projections_migrations ORDER BY version")
                .fetch_all(&mut *c)
                .await;
            rows.and_then(|rows| rows.iter().map(|r| r.int("version")).collect())
        })
        .map_err(ProjectionError::db(format!("{what}: read migrations")))?;
        if let Some(newer) = applied
            .iter()
            .find(|v| !MIGRATIONS.iter().any(|m| m.version == **v))
        {
            return Err(ProjectionError::Inconsistent(format!(
                "{what}: the database has migration {newer}, which this build does not know; run a newer build"
            )));
        }
        for m in MIGRATIONS {
            if applied.contains(&m.version) {
                continue;
            }
            tracing::info!(database = %self.label, version = m.version, description = m.description, "applying read-model migration");
            let sql = match &tx {
                Db::Pg(_) => m.postgres,
                Db::Sqlite(_) => m.sqlite,
            };
            on!(&mut tx, c => sqlx::raw_sql(sql).execute(&mut *c).await.map(|r| r.rows_affected()))
                .map_err(ProjectionError::db(format!(
                    "{what}: apply migration {}",
                    m.version
                )))?;
            on!(&mut tx, c => sqlx::query(
                "INSERT INTO projections_migrations (version, description, applied_at) VALUES ($1, $2, $3)",
            )
            .bind(m.version)
            .bind(m.description)
            .bind(now_micros())
            .execute(&mut *c)
            .await.map(|r| r.rows_affected()))
            .map_err(ProjectionError::db(format!("{what}: record migration {}", m.version)))?;
        }
        for model in ReadModel::ALL {
            on!(&mut tx, c => sqlx::query(
                "INSERT INTO projection_checkpoints (model, position, rebuilding, updated_at) VALUES ($1, 0, $2, $3)
                 ON CONFLICT (model) DO NOTHING",
            )
            .bind(model.name())
            .bind(false)
            .bind(now_micros())
            .execute(&mut *c)
            .await.map(|r| r.rows_affected()))
            .map_err(ProjectionError::db(format!("{what}: checkpoint row of {}", model.name())))?;
        }
        tx_commit(tx, &what).await
    }

    /// A write transaction. SQLite: `BEGIN IMMEDIATE` (takes the write lock first, so a
    /// read-then-write transaction never fails to upgrade). PostgreSQL: callers lock the
    /// checkpoint rows they change ([`lock_checkpoints`]).
    pub(crate) async fn begin_write(&self, what: &str) -> Result<Tx, ProjectionError> {
        match &self.pool {
            Db::Pg(p) => p
                .begin()
                .await
                .map(Db::Pg)
                .map_err(ProjectionError::db(format!("{what}: begin"))),
            Db::Sqlite(p) => p
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map(Db::Sqlite)
                .map_err(ProjectionError::db(format!("{what}: begin"))),
        }
    }

    /// A pooled connection for reads.
    pub(crate) async fn conn(&self, what: &str) -> Result<Conn, ProjectionError> {
        match &self.pool {
            Db::Pg(p) => p
                .acquire()
                .await
                .map(Db::Pg)
                .map_err(ProjectionError::db(format!("{what}: acquire connection"))),
            Db::Sqlite(p) => p
                .acquire()
                .await
                .map(Db::Sqlite)
                .map_err(ProjectionError::db(format!("{what}: acquire connection"))),
        }
    }

    /// The checkpoints of every read model.
    pub async fn checkpoints(&self) -> Result<Vec<Checkpoint>, ProjectionError> {
        let what = "read checkpoints";
        let mut conn = self.conn(what).await?;
        let rows = on!(&mut conn, c => {
            let rows = sqlx::query("SELECT model, position, rebuilding FROM projection_checkpoints ORDER BY model")
                .fetch_all(&mut *c)
                .await;
            rows.and_then(|rows| rows.iter().map(checkpoint_from_row).collect::<Result<Vec<_>, _>>())
        })
        .map_err(ProjectionError::db(what))?;
        Ok(rows.into_iter().flatten().collect())
    }
}

/// Where one read model stands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Checkpoint {
    /// The read model.
    pub model: ReadModel,
    /// Every event up to this log position is reflected.
    pub position: u64,
    /// A rebuild is replaying the log into it.
    pub rebuilding: bool,
}

fn checkpoint_from_row<R: RowExt>(row: &R) -> Result<Option<Checkpoint>, sqlx::Error> {
    let name = row.text("model")?;
    Ok(ReadModel::parse(&name).map(|model| Checkpoint {
        model,
        position: to_u64(row.int("position").unwrap_or(0)),
        rebuilding: row.flag("rebuilding").unwrap_or(false),
    }))
}

/// Locks the checkpoint rows of `models` (PostgreSQL: `FOR UPDATE`, in model order so
/// concurrent writers never deadlock; SQLite: the transaction already
/// holds the write lock, so one query reads every model's) and returns them.
pub(crate) async fn lock_checkpoints(
    tx: &mut Tx,
    models: &[ReadModel],
    what: &str,
) -> Result<Vec<Checkpoint>, ProjectionError> {
    let mut sorted = models.to_vec();
    sorted.sort();
    sorted.dedup();
    let names: Vec<&str> = sorted.iter().map(|m| m.name()).collect();
    let failed = || ProjectionError::db(format!("{what}: lock the checkpoints of {names:?}"));
    let mut found = Vec::with_capacity(sorted.len());
    match tx {
        Db::Pg(t) => {
            // One statement: the rows are locked in the order of the sort (LockRows runs
            // above it), which is that of `names`.
            let rows = sqlx::query(
                "SELECT model, position, rebuilding FROM projection_checkpoints
                 WHERE model = ANY($1) ORDER BY array_position($1, model) FOR UPDATE",
            )
            .bind(&names)
            .fetch_all(&mut **t)
            .await
            .map_err(failed())?;
            for row in &rows {
                found.extend(checkpoint_from_row(row).map_err(failed())?);
            }
        }
        Db::Sqlite(t) => {
            // One row per model: read them all at once.
            let rows =
                sqlx::query("SELECT model, position, rebuilding FROM projection_checkpoints")
                    .fetch_all(&mut **t)
                    .await
                    .map_err(failed())?;
            for row in &rows {
                found.extend(checkpoint_from_row(row).map_err(failed())?);
            }
        }
    }
    Ok(sorted
        .into_iter()
        .map(|model| {
            found
                .iter()
                .find(|c| c.model == model)
                .cloned()
                .unwrap_or(Checkpoint {
                    model,
                    position: 0,
                    rebuilding: false,
                })
        })
        .collect())
}

pub(crate) async fn tx_commit(tx: Tx, what: &str) -> Result<(), ProjectionError> {
    match tx {
        Db::Pg(t) => t.commit().await,
        Db::Sqlite(t) => t.commit().await,
    }
    .map_err(ProjectionError::db(format!("{what}: commit")))
}

/// Microseconds since the Unix epoch, now.
pub(crate) fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::stream_versions;

    /// A database of migration 2 keeps the versions its models reflect, merged into one
    /// row per stream by migration 3.
    #[tokio::test]
    async fn stream_versions_survive_the_migration_to_one_row_per_stream() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite:{}", dir.path().join("rm.db").display());
        let old =
            SqlitePool::connect_with(SqliteConnectOptions::from_str(&url)?.create_if_missing(true))
                .await?;
        let mut setup = String::from(
            "CREATE TABLE projections_migrations (version BIGINT PRIMARY KEY, \
             description TEXT NOT NULL, applied_at BIGINT NOT NULL);",
        );
        for m in &MIGRATIONS[..2] {
            setup.push_str(m.sqlite);
            setup.push_str(&format!(
                "; INSERT INTO projections_migrations VALUES ({}, 'old', 0);",
                m.version
            ));
        }
        setup.push_str(
            "INSERT INTO projection_streams (model, stream_id, version) VALUES \
             ('inventory', 'certificate-a', 7), ('revocations', 'certificate-a', 5), \
             ('deployments', 'target-t', 2);",
        );
        sqlx::raw_sql(AssertSqlSafe(setup)).execute(&old).await?;
        old.close().await;

        let store = ProjectionStore::connect(&url).await?;
        let mut conn = store.conn("test").await?;
        let found = stream_versions(
            conn.connection(),
            &["certificate-a", "target-t", "certificate-b"],
            "test",
        )
        .await?;
        assert_eq!(found.get("certificate-a"), Some(&[7, 0, 0, 5]));
        assert_eq!(found.get("target-t"), Some(&[0, 0, 2, 0]));
        assert_eq!(found.get("certificate-b"), None);
        drop(conn);
        store.close().await;
        Ok(())
    }
}
