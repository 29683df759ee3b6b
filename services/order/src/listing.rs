//! ListCertificates and the scheduler's index: a small read table (`order_certificates`)
//! in the log's database, kept up to date by the order service's own consumer
//! ([`ListProjection`]), which takes the events at hand together, folds each certificate's
//! stream and upserts one row per certificate, all in one transaction (idempotent: a row is
//! never replaced by an older stream version). The fold comes from the repository's cache
//! when it is at least as new as the newest event (no query), and a row already written at
//! the fold's version is not written again. Each row carries the time the scheduler must
//! next look at the certificate (`due_at`, see
//! [`certledger_domain::certificate::RenewalPolicy::next_due`]).
//!
//! The table only finds the ids (tenant, status, names, newest first); the certificates
//! returned are loaded fresh from the log, and a status filter is checked again on the
//! fresh state, so a lagging table never returns a certificate in the wrong status.

use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use certledger_domain::certificate::CertificateState;
use certledger_eventlog::RecordedEvent;
use certledger_eventlog::sqlite::WriteGate;
use certledger_eventstream::consumer::{Handler, HandlerError};
use certledger_proto::common::v1::CertificateStatus;
use certledger_proto::order::v1 as api;
use certledger_runtime::repository::certificate_id_of;
use certledger_runtime::stream_cache::BoundedMap;
use certledger_runtime::{CertificateRepository, RepositoryError, convert, status};
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteSynchronous};
use tonic::Status as GrpcStatus;

use crate::renewal::RenewalSettings;

/// Default page size.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Largest page size.
pub const MAX_PAGE_SIZE: u32 = 1000;
/// Certificates whose last written row version the projection remembers (to skip
/// writing the same row again for each event of one fold).
const WRITTEN_CAPACITY: usize = 4096;

// The table of an earlier version, without the due column: its consumer is replaced by
// a new one (a new name replays the log from the start), so it is dropped.
const DROP_OLD: &str = "DROP TABLE IF EXISTS order_certificate_list";
const PG_TABLE: &str = "CREATE TABLE IF NOT EXISTS order_certificates (
    certificate_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    status INTEGER NOT NULL,
    names TEXT NOT NULL,
    ordered_position BIGINT NOT NULL,
    version BIGINT NOT NULL,
    due_at BIGINT
)";
const SQLITE_TABLE: &str = "CREATE TABLE IF NOT EXISTS order_certificates (
    certificate_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    status INTEGER NOT NULL,
    names TEXT NOT NULL,
    ordered_position INTEGER NOT NULL,
    version INTEGER NOT NULL,
    due_at INTEGER
)";
const INDEXES: [&str; 2] = [
    "CREATE INDEX IF NOT EXISTS order_certificates_tenant
        ON order_certificates (tenant, ordered_position)",
    "CREATE INDEX IF NOT EXISTS order_certificates_due
        ON order_certificates (due_at) WHERE due_at IS NOT NULL",
];

/// Rows per upsert statement (7 parameters each).
const UPSERT_CHUNK: usize = 64;

/// The upsert of `rows` rows. A row is replaced by the same or a newer stream version (the
/// same version computes the same row, except for a postponed due time, which may then be
/// computed again). PostgreSQL numbers its parameters; SQLite gets anonymous `?` ones:
/// sqlx looks up every parameter's name when binding, which SQLite answers for a numbered
/// one by a linear search, so a wide statement with `?NNN` parameters binds in quadratic
/// time.
fn upsert_sql(rows: usize, pg: bool) -> String {
    let mut sql = String::from(
        "INSERT INTO order_certificates
    (certificate_id, tenant, status, names, ordered_position, version, due_at) VALUES ",
    );
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for i in 1..=7 {
            let sep = if i > 1 { ", " } else { "" };
            if pg {
                let _ = write!(sql, "{sep}${}", row * 7 + i);
            } else {
                let _ = write!(sql, "{sep}?");
            }
        }
        sql.push(')');
    }
    sql.push_str(
        "
    ON CONFLICT (certificate_id) DO UPDATE
    SET status = excluded.status, names = excluded.names, version = excluded.version,
        due_at = excluded.due_at
    WHERE order_certificates.version <= excluded.version",
    );
    sql
}

const SELECT_PG: &str = "SELECT certificate_id, ordered_position FROM order_certificates
    WHERE tenant = $1 AND ($2 = 0 OR status = $2) AND ($3 = '' OR names LIKE $3 ESCAPE '\\')
      AND ordered_position < $4
    ORDER BY ordered_position DESC LIMIT $5";
const SELECT_SQLITE: &str = "SELECT certificate_id, ordered_position FROM order_certificates
    WHERE tenant = ?1 AND (?2 = 0 OR status = ?2) AND (?3 = '' OR names LIKE ?3 ESCAPE '\\')
      AND ordered_position < ?4
    ORDER BY ordered_position DESC LIMIT ?5";

const DUE_PG: &str = "SELECT certificate_id FROM order_certificates
    WHERE due_at IS NOT NULL AND due_at <= $1 ORDER BY due_at LIMIT $2";
const DUE_SQLITE: &str = "SELECT certificate_id FROM order_certificates
    WHERE due_at IS NOT NULL AND due_at <= ?1 ORDER BY due_at LIMIT ?2";

const POSTPONE_PG: &str =
    "UPDATE order_certificates SET due_at = $2 WHERE certificate_id = $1 AND version = $3";
const POSTPONE_SQLITE: &str =
    "UPDATE order_certificates SET due_at = ?2 WHERE certificate_id = ?1 AND version = ?3";

#[derive(Clone)]
enum Db {
    Pg(PgPool),
    /// With the log's write gate: the table is in the log's file.
    Sqlite(SqlitePool, WriteGate),
}

/// The certificate list read model.
#[derive(Clone)]
pub struct CertificateList {
    db: Db,
}

impl std::fmt::Debug for CertificateList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.db {
            Db::Pg(_) => "postgres",
            Db::Sqlite(..) => "sqlite",
        };
        f.debug_struct("CertificateList")
            .field("db", &kind)
            .finish()
    }
}

/// A row to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRow {
    /// The certificate.
    pub certificate_id: String,
    /// Its tenant.
    pub tenant: String,
    /// Its status.
    pub status: CertificateStatus,
    /// Its names, space-separated.
    pub names: String,
    /// Position of its first event (orders the list).
    pub ordered_position: u64,
    /// Stream version the row reflects.
    pub version: u64,
    /// When the scheduler must next look at it (expiry thresholds, expiry, auto-renewal).
    pub due_at: Option<DateTime<Utc>>,
}

impl ListRow {
    /// The row of a folded certificate whose first event is at `ordered_position`, with
    /// the next due time under `settings`.
    pub fn of(state: &CertificateState, ordered_position: u64, settings: &RenewalSettings) -> Self {
        Self {
            certificate_id: state.certificate_id.clone(),
            tenant: state.tenant.clone(),
            status: state.status.to_proto(),
            names: state.names().join(" "),
            ordered_position,
            version: state.version,
            due_at: settings.policy(&state.spec.issuer).next_due(state),
        }
    }
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl CertificateList {
    /// Opens the table in the database at `url` (PostgreSQL: in `pg_schema`, which must
    /// exist — the event log creates it; SQLite: the same file as the log, or a private
    /// in-memory database for `sqlite::memory:`), creating it if needed.
    pub async fn open(url: &str, pg_schema: &str) -> Result<Self, sqlx::Error> {
        let db = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)?
                .application_name("certledger-order")
                .options([("search_path", pg_schema)]);
            let pool = PgPoolOptions::new()
                .max_connections(4)
                .connect_with(options)
                .await?;
            let mut attempt = 0;
            loop {
                attempt += 1;
                // Replicas starting at once may race on CREATE … IF NOT EXISTS.
                let created = async {
                    for statement in [DROP_OLD, PG_TABLE].iter().chain(&INDEXES) {
                        sqlx::query(*statement).execute(&pool).await?;
                    }
                    Ok::<_, sqlx::Error>(())
                }
                .await;
                match created {
                    Ok(_) => break,
                    Err(e) if attempt < 3 => {
                        tracing::debug!(error = %e, "creating the list table; retrying");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
            Db::Pg(pool)
        } else {
            let in_memory = url.contains(":memory:") || url.contains("mode=memory");
            let mut options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .busy_timeout(std::time::Duration::from_secs(30));
            if !in_memory {
                // The table is derived from the log: its commits need no fsync of their own.
                // The consumer's checkpoint, saved afterwards in the same file, is committed
                // with a full sync, and the WAL is written in order, so a durable checkpoint
                // means every row before it is durable too.
                options = options
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal);
            }
            let file = options.get_filename().to_owned();
            let pool = certledger_eventlog::sqlite::pool_options(in_memory, 4)
                .connect_with(options)
                .await?;
            // After connecting: the file exists, and its canonical path names the gate.
            let gate = if in_memory {
                WriteGate::private()
            } else {
                WriteGate::for_file(&file)
            };
            for statement in [DROP_OLD, SQLITE_TABLE].iter().chain(&INDEXES) {
                sqlx::query(*statement).execute(&pool).await?;
            }
            Db::Sqlite(pool, gate)
        };
        Ok(Self { db })
    }

    /// Stores a row unless a row of a newer version is there.
    pub async fn upsert(&self, row: &ListRow) -> Result<(), sqlx::Error> {
        self.upsert_all(std::slice::from_ref(row)).await
    }

    /// Stores rows in one transaction, each unless a row of a newer version is there (at
    /// most one row per certificate).
    pub async fn upsert_all(&self, rows: &[ListRow]) -> Result<(), sqlx::Error> {
        if rows.is_empty() {
            return Ok(());
        }
        // The rows' statements in one transaction (the pools' types differ).
        macro_rules! upsert_in {
            ($pool:expr, $pg:expr) => {{
                let mut tx = $pool.begin().await?;
                for chunk in rows.chunks(UPSERT_CHUNK) {
                    let mut query = sqlx::query(AssertSqlSafe(upsert_sql(chunk.len(), $pg)));
                    for row in chunk {
                        query = query
                            .bind(row.certificate_id.as_str())
                            .bind(row.tenant.as_str())
                            .bind(row.status as i32)
                            .bind(row.names.as_str())
                            .bind(i64_of(row.ordered_position))
                            .bind(i64_of(row.version))
                            .bind(row.due_at.map(|at| at.timestamp_micros()));
                    }
                    query.execute(&mut *tx).await?;
                }
                tx.commit().await
            }};
        }
        match &self.db {
            Db::Pg(pool) => upsert_in!(pool, true),
            Db::Sqlite(pool, gate) => {
                let _turn = gate.enter().await;
                upsert_in!(pool, false)
            }
        }
    }

    /// Up to `limit` certificates due at `now`, earliest first.
    pub async fn due(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<String>, sqlx::Error> {
        let now = now.timestamp_micros();
        let limit = i64::from(limit);
        match &self.db {
            Db::Pg(pool) => {
                sqlx::query_scalar(DUE_PG)
                    .bind(now)
                    .bind(limit)
                    .fetch_all(pool)
                    .await
            }
            Db::Sqlite(pool, _) => {
                sqlx::query_scalar(DUE_SQLITE)
                    .bind(now)
                    .bind(limit)
                    .fetch_all(pool)
                    .await
            }
        }
    }

    /// Moves a certificate's due time to `at`, if its row is still at `version`.
    pub async fn postpone(
        &self,
        certificate_id: &str,
        version: u64,
        at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let (at, version) = (at.timestamp_micros(), i64_of(version));
        match &self.db {
            Db::Pg(pool) => {
                sqlx::query(POSTPONE_PG)
                    .bind(certificate_id)
                    .bind(at)
                    .bind(version)
                    .execute(pool)
                    .await?;
            }
            Db::Sqlite(pool, gate) => {
                let _turn = gate.enter().await;
                sqlx::query(POSTPONE_SQLITE)
                    .bind(certificate_id)
                    .bind(at)
                    .bind(version)
                    .execute(pool)
                    .await?;
            }
        }
        Ok(())
    }

    async fn select(
        &self,
        tenant: &str,
        status: i32,
        pattern: &str,
        before: i64,
        limit: i64,
    ) -> Result<Vec<(String, i64)>, sqlx::Error> {
        match &self.db {
            Db::Pg(pool) => {
                sqlx::query_as(SELECT_PG)
                    .bind(tenant)
                    .bind(status)
                    .bind(pattern)
                    .bind(before)
                    .bind(limit)
                    .fetch_all(pool)
                    .await
            }
            Db::Sqlite(pool, _) => {
                sqlx::query_as(SELECT_SQLITE)
                    .bind(tenant)
                    .bind(status)
                    .bind(pattern)
                    .bind(before)
                    .bind(limit)
                    .fetch_all(pool)
                    .await
            }
        }
    }

    /// One page of a tenant's certificates, newest first.
    pub async fn list(
        &self,
        repo: &CertificateRepository,
        tenant: &str,
        request: api::ListCertificatesRequest,
    ) -> Result<api::ListCertificatesResponse, GrpcStatus> {
        let page = request.page.unwrap_or_default();
        let page_size = match page.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n > MAX_PAGE_SIZE => {
                return Err(status::invalid_argument(
                    "page.page_size",
                    format!("{n} is more than the {MAX_PAGE_SIZE} allowed"),
                ));
            }
            n => n,
        };
        let before = if page.page_token.is_empty() {
            i64::MAX
        } else {
            decode_token(&page.page_token).ok_or_else(|| {
                status::invalid_argument(
                    "page.page_token",
                    "is not a token from a previous ListCertificates response",
                )
            })?
        };
        let wanted = CertificateStatus::try_from(request.status).map_err(|_| {
            status::invalid_argument(
                "status",
                format!("{} is not a known certificate status", request.status),
            )
        })?;
        let domain = request.domain.trim().to_lowercase();
        if domain.len() > 253 {
            return Err(status::invalid_argument(
                "domain",
                "is longer than any domain name (253 characters)",
            ));
        }
        let pattern = if domain.is_empty() {
            String::new()
        } else {
            format!("%{}%", escape_like(&domain))
        };
        let rows = self
            .select(
                tenant,
                wanted as i32,
                &pattern,
                before,
                i64::from(page_size) + 1,
            )
            .await
            .map_err(|e| status::unavailable("the certificate list", &e))?;
        let more = rows.len() > page_size as usize;
        let rows = &rows[..rows.len().min(page_size as usize)];
        let mut certificates = Vec::with_capacity(rows.len());
        for (id, _) in rows {
            match repo.load(id, Some(tenant)).await {
                Ok(loaded) => {
                    if convert::status(wanted).is_some_and(|s| s != loaded.state.status) {
                        continue;
                    }
                    certificates.push(convert::certificate(&loaded.state, loaded.ordered_at));
                }
                Err(RepositoryError::Domain(_)) => continue,
                Err(e) => return Err(status::from_repository(e)),
            }
        }
        let next_page_token = match (more, rows.last()) {
            (true, Some((_, position))) => encode_token(*position),
            _ => String::new(),
        };
        Ok(api::ListCertificatesResponse {
            certificates,
            next_page_token,
        })
    }

    /// The consumer handler that keeps this table up to date.
    pub fn projection(
        &self,
        repo: CertificateRepository,
        settings: Arc<RenewalSettings>,
    ) -> ListProjection {
        ListProjection {
            list: self.clone(),
            repo,
            settings,
            written: std::sync::Mutex::new(BoundedMap::new(WRITTEN_CAPACITY)),
        }
    }
}

fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn encode_token(position: i64) -> String {
    format!("p{position:x}")
}

fn decode_token(token: &str) -> Option<i64> {
    let hex = token.strip_prefix('p')?;
    i64::from_str_radix(hex, 16).ok().filter(|p| *p > 0)
}

/// Keeps the list table up to date from certificate events.
pub struct ListProjection {
    list: CertificateList,
    repo: CertificateRepository,
    settings: Arc<RenewalSettings>,
    /// Certificate id → the stream version of the row last written by this process.
    written: std::sync::Mutex<BoundedMap<u64>>,
}

impl ListProjection {
    fn written(&self) -> std::sync::MutexGuard<'_, BoundedMap<u64>> {
        // Every statement leaves the map consistent: a panic elsewhere cannot corrupt it.
        self.written.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The row of a certificate's fold at least as new as `version`, unless this process
    /// already wrote that row (an earlier event of the stream found the newer fold).
    async fn row(&self, id: &str, version: u64) -> Result<Option<ListRow>, HandlerError> {
        let loaded = match self.repo.load_since(id, None, version).await {
            Ok(loaded) => loaded,
            // No such certificate (an empty stream).
            Err(RepositoryError::Domain(_)) => return Ok(None),
            Err(e) if e.is_transient() => return Err(HandlerError::Retry(e.to_string())),
            Err(e) => return Err(HandlerError::Poison(e.to_string())),
        };
        let Some(position) = loaded.first_position else {
            return Ok(None);
        };
        if self
            .written()
            .get(id)
            .is_some_and(|w| *w >= loaded.state.version)
        {
            return Ok(None);
        }
        Ok(Some(ListRow::of(&loaded.state, position, &self.settings)))
    }

    async fn store(&self, rows: &[ListRow]) -> Result<(), HandlerError> {
        self.list
            .upsert_all(rows)
            .await
            .map_err(|e| HandlerError::Retry(format!("updating the certificate list: {e}")))?;
        let mut written = self.written();
        for row in rows {
            written.insert(&row.certificate_id, row.version);
        }
        Ok(())
    }
}

/// Folds read from the log at once for a batch (most come from the repository's cache).
const BATCH_LOADS: usize = 16;

#[async_trait]
impl Handler for ListProjection {
    async fn handle(&self, event: &RecordedEvent) -> Result<(), HandlerError> {
        self.handle_batch(std::slice::from_ref(event)).await
    }

    /// One row per certificate of the batch, at its newest fold, all in one transaction.
    async fn handle_batch(&self, events: &[RecordedEvent]) -> Result<(), HandlerError> {
        let mut newest: Vec<(&str, u64)> = Vec::new();
        let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for event in events {
            let Some(id) = certificate_id_of(&event.stream_id) else {
                continue;
            };
            match index.entry(id) {
                std::collections::hash_map::Entry::Occupied(i) => {
                    let newest = &mut newest[*i.get()].1;
                    *newest = (*newest).max(event.stream_version);
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(newest.len());
                    newest.push((id, event.stream_version));
                }
            }
        }
        let loads: Vec<_> = newest
            .into_iter()
            .map(|(id, version)| self.row(id, version))
            .collect();
        let rows: Vec<Option<ListRow>> = futures::stream::iter(loads)
            .buffered(BATCH_LOADS)
            .try_collect()
            .await?;
        let rows: Vec<ListRow> = rows.into_iter().flatten().collect();
        self.store(&rows).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_like_patterns() {
        assert_eq!(decode_token(&encode_token(42)), Some(42));
        assert_eq!(decode_token("x"), None);
        assert_eq!(decode_token("p-1"), None);
        assert_eq!(escape_like("a_b%c\\"), "a\\_b\\%c\\\\");
    }
}
