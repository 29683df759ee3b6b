//! Reading and writing read-model rows. The same SQL runs on PostgreSQL and SQLite.
//!
//! A batch's rows are gathered per table ([`Writes`]) and written with multi-row
//! statements: a few statements per table and batch instead of one per stream and row.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use certledger_eventlog::sqlite::{Blocking, rusqlite_error, with_rusqlite};
use sqlx::AssertSqlSafe;

use crate::error::ProjectionError;
use crate::model::{
    CrlPublicationRow, DeploymentRow, ExpiryRow, InventoryRow, ReadModel, RevocationRow, TargetRow,
    from_micros, micros,
};
use crate::store::{Connection, Db, RowExt, Tx, on, to_i64, to_u64};
use crate::view::{RowPolicy, StreamView};

pub(crate) const INVENTORY_COLUMNS: &str = "certificate_id, tenant, status, domains, issuer, key_algorithm, validation_method, auto_renew, \
     serial, not_before, not_after, fingerprint, deployment_count, deployment_targets, status_since, ordered_at, \
     last_failure_reason, last_failure_code, last_failure_at, next_retry_at, predecessor_id, successor_id, renewal_state, \
     validation_failures, issuance_failures, deployment_failures, renewal_failures, stream_version, updated_position, updated_at";

pub(crate) const EXPIRY_COLUMNS: &str = "certificate_id, tenant, status, not_before, not_after, renewal_opens_at, auto_renew, successor_id, updated_position";

pub(crate) const DEPLOYMENT_COLUMNS: &str = "certificate_id, target_id, tenant, deployment_id, state, state_since, replaces_certificate_id, replaced_by, \
     failure_step, failure_code, failure_reason, observed_fingerprint, updated_position";

pub(crate) const TARGET_COLUMNS: &str =
    "target_id, tenant, name, kind, status, removal_reason, registered_at, updated_position";

pub(crate) const REVOCATION_COLUMNS: &str = "certificate_id, tenant, serial, reason, requested_by, requested_at, revoked_at, crl_published_at, \
     issuer, revoked_position, updated_position";

pub(crate) const CRL_PUBLICATION_COLUMNS: &str =
    "issuer, crl_number, this_update, next_update, entries, revocations_through, position";

const INSERT_CRL_PUBLICATION: &str = "INSERT INTO crl_publications (issuer, crl_number, this_update, next_update, entries, revocations_through, position) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (issuer, crl_number) DO NOTHING";

/// The other side of the revocations' upsert: a newly recorded CRL dates the revocations
/// it is the first to list.
const DATE_REVOCATIONS: &str = "UPDATE revocations SET crl_published_at = $1 \
     WHERE issuer = $2 AND revoked_position IS NOT NULL AND revoked_position <= $3 \
     AND (crl_published_at IS NULL OR crl_published_at > $1)";

/// A statement over many rows: `head`, then `row` once per row, joined by `, `, then
/// `tail`. `row`'s parameters `$1…$width` are renumbered for each row.
struct Many {
    /// Names the statement in the cache of generated SQL and in errors.
    name: &'static str,
    head: &'static str,
    row: &'static str,
    width: usize,
    tail: &'static str,
}

const UPSERT_INVENTORY: Many = Many {
    name: "write inventory",
    head: "INSERT INTO inventory (certificate_id, tenant, status, domains, issuer, key_algorithm, validation_method, auto_renew, \
     serial, not_before, not_after, fingerprint, deployment_count, deployment_targets, status_since, ordered_at, \
     last_failure_reason, last_failure_code, last_failure_at, next_retry_at, predecessor_id, successor_id, renewal_state, \
     validation_failures, issuance_failures, deployment_failures, renewal_failures, stream_version, updated_position, updated_at) \
     VALUES ",
    row: "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30)",
    width: 30,
    tail: " ON CONFLICT (certificate_id) DO UPDATE SET tenant = excluded.tenant, status = excluded.status, domains = excluded.domains, \
     issuer = excluded.issuer, key_algorithm = excluded.key_algorithm, validation_method = excluded.validation_method, \
     auto_renew = excluded.auto_renew, serial = excluded.serial, not_before = excluded.not_before, not_after = excluded.not_after, \
     fingerprint = excluded.fingerprint, deployment_count = excluded.deployment_count, deployment_targets = excluded.deployment_targets, \
     status_since = excluded.status_since, ordered_at = excluded.ordered_at, last_failure_reason = excluded.last_failure_reason, \
     last_failure_code = excluded.last_failure_code, last_failure_at = excluded.last_failure_at, next_retry_at = excluded.next_retry_at, \
     predecessor_id = excluded.predecessor_id, successor_id = excluded.successor_id, renewal_state = excluded.renewal_state, \
     validation_failures = excluded.validation_failures, issuance_failures = excluded.issuance_failures, \
     deployment_failures = excluded.deployment_failures, renewal_failures = excluded.renewal_failures, \
     stream_version = excluded.stream_version, updated_position = excluded.updated_position, updated_at = excluded.updated_at",
};

const UPSERT_EXPIRY: Many = Many {
    name: "write expiry_calendar",
    head: "INSERT INTO expiry_calendar (certificate_id, tenant, status, not_before, not_after, renewal_opens_at, auto_renew, successor_id, updated_position) \
     VALUES ",
    row: "($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    width: 9,
    tail: " ON CONFLICT (certificate_id) DO UPDATE SET tenant = excluded.tenant, status = excluded.status, not_before = excluded.not_before, \
     not_after = excluded.not_after, renewal_opens_at = excluded.renewal_opens_at, auto_renew = excluded.auto_renew, \
     successor_id = excluded.successor_id, updated_position = excluded.updated_position",
};

const INSERT_DEPLOYMENTS: Many = Many {
    name: "write deployments",
    head: "INSERT INTO deployments (certificate_id, target_id, tenant, deployment_id, state, state_since, replaces_certificate_id, replaced_by, \
     failure_step, failure_code, failure_reason, observed_fingerprint, updated_position) \
     VALUES ",
    row: "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    width: 13,
    tail: "",
};

const UPSERT_TARGETS: Many = Many {
    name: "write targets",
    head: "INSERT INTO targets (target_id, tenant, name, kind, status, removal_reason, registered_at, updated_position) VALUES ",
    row: "($1, $2, $3, $4, $5, $6, $7, $8)",
    width: 8,
    tail: " ON CONFLICT (target_id) DO UPDATE SET tenant = excluded.tenant, name = excluded.name, kind = excluded.kind, \
     status = excluded.status, removal_reason = excluded.removal_reason, registered_at = excluded.registered_at, \
     updated_position = excluded.updated_position",
};

/// `crl_published_at` is the thisUpdate of the first recorded CRL of the issuer that
/// lists the revocation (NULL until there is one, or while not revoked).
const UPSERT_REVOCATIONS: Many = Many {
    name: "write revocations",
    head: "INSERT INTO revocations (certificate_id, tenant, serial, reason, requested_by, requested_at, revoked_at, crl_published_at, \
     issuer, revoked_position, updated_position) VALUES ",
    row: "($1, $2, $3, $4, $5, $6, $7, \
     (SELECT MIN(this_update) FROM crl_publications WHERE issuer = $8 AND revocations_through >= $9), $8, $9, $10)",
    width: 10,
    tail: " ON CONFLICT (certificate_id) DO UPDATE SET tenant = excluded.tenant, serial = excluded.serial, reason = excluded.reason, \
     requested_by = excluded.requested_by, requested_at = excluded.requested_at, revoked_at = excluded.revoked_at, \
     crl_published_at = excluded.crl_published_at, issuer = excluded.issuer, revoked_position = excluded.revoked_position, \
     updated_position = excluded.updated_position",
};

/// A statement over the rows of some streams, by key: `prefix IN (…)` on SQLite (a
/// [`Many`] of one-key rows), `prefix = ANY($1)` on PostgreSQL, with the keys bound as one
/// array: up to [`MAX_KEYS`] keys in one statement of one text, planned as an index
/// lookup.
struct Keys {
    sqlite: Many,
    postgres: &'static str,
}

macro_rules! keys {
    ($name:literal, $prefix:literal) => {
        Keys {
            sqlite: Many {
                name: $name,
                head: concat!($prefix, " IN ("),
                row: "$1",
                width: 1,
                tail: ")",
            },
            postgres: concat!($prefix, " = ANY($1)"),
        }
    };
}

/// The tables a batch writes rows to (CRL publications apart), in the order they are
/// written.
#[derive(Debug, Clone, Copy)]
enum Table {
    Inventory,
    ExpiryCalendar,
    Deployments,
    Targets,
    Revocations,
}

/// Each [`Table`]'s delete (the rows of some streams) and insert, in its order.
static TABLES: [(Keys, Many); 5] = [
    (
        keys!(
            "delete from inventory",
            "DELETE FROM inventory WHERE certificate_id"
        ),
        UPSERT_INVENTORY,
    ),
    (
        keys!(
            "delete from expiry_calendar",
            "DELETE FROM expiry_calendar WHERE certificate_id"
        ),
        UPSERT_EXPIRY,
    ),
    (
        keys!(
            "delete from deployments",
            "DELETE FROM deployments WHERE certificate_id"
        ),
        INSERT_DEPLOYMENTS,
    ),
    (
        keys!("delete from targets", "DELETE FROM targets WHERE target_id"),
        UPSERT_TARGETS,
    ),
    (
        keys!(
            "delete from revocations",
            "DELETE FROM revocations WHERE certificate_id"
        ),
        UPSERT_REVOCATIONS,
    ),
];

/// The columns of `projection_stream_versions` after `stream_id`, one per read model in
/// the order of [`ReadModel::ALL`] (NULL: the model reflects none of the stream's events).
const _: () = assert!(
    ReadModel::ALL.len() == 4,
    "projection_stream_versions has four model columns"
);

/// The versions every model reflects of the listed streams.
const STREAM_VERSIONS: Keys = keys!(
    "read stream versions",
    "SELECT stream_id, inventory, expiry_calendar, deployments, revocations \
     FROM projection_stream_versions WHERE stream_id"
);

/// A stream's versions: NULL leaves a model's version as it is.
const SET_STREAM_VERSIONS: Many = Many {
    name: "save stream versions",
    head: "INSERT INTO projection_stream_versions \
     (stream_id, inventory, expiry_calendar, deployments, revocations) VALUES ",
    row: "($1, $2, $3, $4, $5)",
    width: 5,
    tail: " ON CONFLICT (stream_id) DO UPDATE SET \
     inventory = COALESCE(excluded.inventory, projection_stream_versions.inventory), \
     expiry_calendar = COALESCE(excluded.expiry_calendar, projection_stream_versions.expiry_calendar), \
     deployments = COALESCE(excluded.deployments, projection_stream_versions.deployments), \
     revocations = COALESCE(excluded.revocations, projection_stream_versions.revocations)",
};

/// Checkpoint rows exist from the migration on: this upsert only ever updates.
const SET_CHECKPOINTS: Many = Many {
    name: "save checkpoints",
    head: "INSERT INTO projection_checkpoints (model, position, rebuilding, updated_at) VALUES ",
    row: "($1, $2, $3, $4)",
    width: 4,
    tail: " ON CONFLICT (model) DO UPDATE SET position = excluded.position, \
     rebuilding = excluded.rebuilding, updated_at = excluded.updated_at",
};

/// Bound parameters per statement at most (SQLite's limit is 32,766, PostgreSQL's 65,535).
const MAX_PARAMETERS: usize = 32_000;
/// Rows per statement at most. Larger statements save no time: SQLite copies every page
/// a statement changes to its statement journal, which spills to a temporary file
/// beyond 64 KiB.
const MAX_ROWS: usize = 64;
/// Keys per statement at most on PostgreSQL: with a catch-up page's keys (a thousand and
/// more) in one array the planner scanned the whole table, and the rebuild's lookups
/// took five times as long as in statements of 64.
const MAX_KEYS: usize = 64;

/// The most rows of `m` per statement.
fn max_rows(m: &Many) -> usize {
    (MAX_PARAMETERS / m.width).clamp(1, MAX_ROWS)
}

/// How `total` rows are split into statements: as many full ones (`max` rows) as fit, then
/// the rest. PostgreSQL gets the rest in at most two statements, a multiple of eight rows
/// and fewer than eight, so that few distinct statements are ever prepared (at most 15
/// sizes below `max`, kept by sqlx's statement cache; powers of two took a statement per
/// bit of the rest, about three a batch). SQLite gets it one row per
/// statement: its statements are prepared on every batch (through SQLite's own API,
/// which keeps no cache across batches), preparing costs in proportion to a statement's
/// length, and a one-row statement is prepared once and stepped once per row.
fn chunk_sizes(total: usize, max: usize, sqlite: bool) -> impl Iterator<Item = usize> {
    let mut left = total;
    std::iter::from_fn(move || {
        let n = match left {
            0 => return None,
            l if l >= max => max,
            _ if sqlite => 1,
            l if l >= 8 => l & !7,
            l => l,
        };
        left -= n;
        Some(n)
    })
}

/// `sql` with every `$n` parameter replaced by what `replace(n, out)` writes.
fn rewrite_parameters(sql: &str, out: &mut String, mut replace: impl FnMut(usize, &mut String)) {
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let digits = rest[at + 1..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count();
        replace(rest[at + 1..at + 1 + digits].parse().unwrap_or(0), out);
        rest = &rest[at + 1 + digits..];
    }
    out.push_str(rest);
}

/// The SQL of `m` for `rows` rows.
fn many_sql(m: &Many, rows: usize) -> String {
    let mut sql = String::with_capacity(m.head.len() + rows * (m.row.len() + 16) + m.tail.len());
    sql.push_str(m.head);
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        let base = r * m.width;
        rewrite_parameters(m.row, &mut sql, |k, out| {
            let _ = write!(out, "${}", base + k);
        });
    }
    sql.push_str(m.tail);
    sql
}

/// A statement's SQL for one backend and number of rows.
#[derive(Clone)]
struct Sql {
    text: Arc<str>,
    /// SQLite with a parameter used twice: which value each `?` takes, in order (value
    /// number from 1, and whether it is the value's last use). `None`: each value once,
    /// in order.
    order: Option<Arc<[(usize, bool)]>>,
}

/// PostgreSQL's `$n` parameters as SQLite's anonymous `?` ones, and which value each
/// takes. sqlx binds SQLite's named parameters by looking each one's name up in a
/// list, which makes binding quadratic in the number of parameters; anonymous ones are
/// bound in order.
fn anonymous(sql: &str) -> (String, Vec<usize>) {
    let mut text = String::with_capacity(sql.len());
    let mut order = Vec::new();
    rewrite_parameters(sql, &mut text, |n, out| {
        order.push(n);
        out.push('?');
    });
    (text, order)
}

/// [`many_sql`] for the backend, generated once per statement, backend and size (few
/// sizes: see [`chunk_sizes`]).
fn cached_sql(m: &Many, rows: usize, sqlite: bool) -> Sql {
    type Cache = HashMap<(&'static str, usize, bool), Sql>;
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    let mut cache = CACHE
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    cache
        .entry((m.name, rows, sqlite))
        .or_insert_with(|| {
            let sql = many_sql(m, rows);
            if !sqlite {
                return Sql {
                    text: Arc::from(sql),
                    order: None,
                };
            }
            let (text, order) = anonymous(&sql);
            let in_order = order.iter().enumerate().all(|(i, n)| *n == i + 1);
            Sql {
                text: Arc::from(text),
                order: (!in_order).then(|| {
                    order
                        .iter()
                        .enumerate()
                        .map(|(i, n)| (*n, !order[i + 1..].contains(n)))
                        .collect()
                }),
            }
        })
        .clone()
}

/// `values` (numbered from 1) in the order `sql` binds them.
fn arrange(sql: &Sql, values: Vec<Value>) -> Vec<Value> {
    let Some(order) = &sql.order else {
        return values;
    };
    let mut slots: Vec<Option<Value>> = values.into_iter().map(Some).collect();
    order
        .iter()
        .filter_map(|&(n, last)| {
            let slot = slots.get_mut(n.checked_sub(1)?)?;
            if last { slot.take() } else { slot.clone() }
        })
        .collect()
}

/// A value bound to a statement.
#[derive(Debug, Clone)]
enum Value {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    OptInt(Option<i64>),
    Flag(bool),
    Name(&'static str),
}

/// `$query` with every value of `$values` bound, in order.
macro_rules! bind_values {
    ($query:expr, $values:expr) => {{
        let mut q = $query;
        for v in $values {
            q = match v {
                Value::Text(s) => q.bind(s),
                Value::OptText(s) => q.bind(s),
                Value::Int(i) => q.bind(i),
                Value::OptInt(i) => q.bind(i),
                Value::Flag(b) => q.bind(b),
                Value::Name(s) => q.bind(s),
            };
        }
        q
    }};
}

/// Deletes the rows of the listed keys from each table of `deletes`, then runs each
/// statement `m` of `writes` over its values, `m.width` per row, in as few statements as
/// the limits allow. On SQLite all of them run in one hand-off to the connection
/// ([`with_rusqlite`]): through sqlx every statement is a round trip to its worker thread.
async fn execute_all(
    tx: &mut Tx,
    deletes: Vec<(&Keys, Vec<String>)>,
    writes: Vec<(&Many, Vec<Value>)>,
    what: &str,
) -> Result<(), ProjectionError> {
    let failed =
        |m: &Many, rows: usize| ProjectionError::db(format!("{what}: {} ({rows} rows)", m.name));
    match tx {
        Db::Pg(c) => {
            for (keys, ids) in deletes {
                for chunk in ids.chunks(MAX_KEYS) {
                    sqlx::query(keys.postgres)
                        .bind(chunk)
                        .execute(&mut **c)
                        .await
                        .map_err(failed(&keys.sqlite, ids.len()))?;
                }
            }
            for (m, values) in writes {
                let rows = values.len() / m.width;
                let mut values = values.into_iter();
                for n in chunk_sizes(rows, max_rows(m), false) {
                    let sql = cached_sql(m, n, false);
                    let chunk = values.by_ref().take(n * m.width);
                    bind_values!(sqlx::query(AssertSqlSafe(sql.text)), chunk)
                        .execute(&mut **c)
                        .await
                        .map_err(failed(m, rows))?;
                }
            }
            Ok(())
        }
        Db::Sqlite(c) => {
            let deletes = deletes
                .into_iter()
                .map(|(keys, ids)| (&keys.sqlite, ids.into_iter().map(Value::Text).collect()));
            let work: Vec<(&Many, Vec<Value>)> = deletes.chain(writes).collect();
            let rows = work.iter().map(|(m, values)| values.len() / m.width).sum();
            with_rusqlite(c, Blocking::for_rows(rows), |db| {
                for (m, values) in work {
                    let rows = values.len() / m.width;
                    sqlite_execute(db, m, values)
                        .map_err(rusqlite_error)
                        .map_err(failed(m, rows))?;
                }
                Ok(())
            })
            .await
            .map_err(ProjectionError::db(format!("{what}: take the connection")))?
        }
    }
}

/// [`execute_all`]'s work for one statement on SQLite.
fn sqlite_execute(db: &rusqlite::Connection, m: &Many, values: Vec<Value>) -> rusqlite::Result<()> {
    let rows = values.len() / m.width;
    let mut values = values.into_iter();
    let mut prepared = None;
    for n in chunk_sizes(rows, max_rows(m), true) {
        let sql = cached_sql(m, n, true);
        let chunk = arrange(&sql, values.by_ref().take(n * m.width).collect());
        reuse(&mut prepared, db, &sql.text)?.execute(rusqlite::params_from_iter(chunk))?;
    }
    Ok(())
}

/// The statement of `text` on `db`: the one in `slot` if it is of that text, else a new
/// one, kept there. A batch's statements of one size follow each other, so each size is
/// prepared once.
fn reuse<'s, 'c>(
    slot: &'s mut Option<(Arc<str>, rusqlite::Statement<'c>)>,
    db: &'c rusqlite::Connection,
    text: &Arc<str>,
) -> rusqlite::Result<&'s mut rusqlite::Statement<'c>> {
    let kept = match slot.take() {
        Some(kept) if kept.0 == *text => kept,
        _ => (text.clone(), db.prepare(text)?),
    };
    Ok(&mut slot.insert(kept).1)
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Value::Text(s) => s.to_sql(),
            Value::OptText(s) => s.to_sql(),
            Value::Int(i) => i.to_sql(),
            Value::OptInt(i) => i.to_sql(),
            Value::Flag(b) => b.to_sql(),
            Value::Name(s) => s.to_sql(),
        }
    }
}

/// The stream versions the read models reflect, by [`ReadModel::index`] (0: none), for
/// every stream in `stream_ids` one of them has seen.
pub(crate) async fn stream_versions(
    connection: Connection<'_>,
    stream_ids: &[&str],
    what: &str,
) -> Result<HashMap<String, [u64; 4]>, ProjectionError> {
    let failed = || {
        ProjectionError::db(format!(
            "{what}: read versions of {} streams",
            stream_ids.len()
        ))
    };
    let versions = |v: [Option<i64>; 4]| v.map(|v| v.map_or(0, to_u64));
    let mut found: HashMap<String, [u64; 4]> = HashMap::with_capacity(stream_ids.len());
    if stream_ids.is_empty() {
        return Ok(found);
    }
    match connection {
        Db::Pg(c) => {
            for chunk in stream_ids.chunks(MAX_KEYS) {
                let rows = sqlx::query(STREAM_VERSIONS.postgres)
                    .bind(chunk)
                    .fetch_all(&mut *c)
                    .await;
                let page = rows.and_then(|rows| {
                    rows.iter()
                        .map(|r| {
                            let v = [
                                r.opt_int("inventory")?,
                                r.opt_int("expiry_calendar")?,
                                r.opt_int("deployments")?,
                                r.opt_int("revocations")?,
                            ];
                            Ok((r.text("stream_id")?, versions(v)))
                        })
                        .collect::<Result<Vec<_>, sqlx::Error>>()
                });
                found.extend(page.map_err(failed())?);
            }
        }
        Db::Sqlite(c) => {
            let m = &STREAM_VERSIONS.sqlite;
            let mut ids = stream_ids.iter();
            let queries: Vec<(Sql, Vec<Value>)> = chunk_sizes(stream_ids.len(), max_rows(m), true)
                .map(|n| {
                    let values = ids.by_ref().take(n);
                    let values = values.map(|id| Value::Text((*id).to_owned())).collect();
                    (cached_sql(m, n, true), values)
                })
                .collect();
            let blocking = Blocking::for_rows(stream_ids.len());
            let read = with_rusqlite(c, blocking, |db| -> rusqlite::Result<()> {
                let mut prepared = None;
                for (sql, values) in queries {
                    let statement = reuse(&mut prepared, db, &sql.text)?;
                    let mut page = statement.query(rusqlite::params_from_iter(values))?;
                    while let Some(r) = page.next()? {
                        let v = [r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?];
                        found.insert(r.get(0)?, versions(v));
                    }
                }
                Ok(())
            });
            read.await
                .and_then(|read| read.map_err(rusqlite_error))
                .map_err(failed())?;
        }
    }
    Ok(found)
}

fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".to_owned())
}

fn parse_list(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

/// The rows one table gets from a batch.
#[derive(Debug, Default)]
struct TableWrites {
    /// Keys of the streams whose rows are deleted first.
    deletes: Vec<String>,
    /// The rows then inserted (or upserted), `width` values each.
    rows: Vec<Value>,
}

/// What a batch writes to the read models: rows gathered per table from the views of the
/// streams it touched ([`Writes::add`]), then written with a few multi-row statements per
/// table ([`Writes::flush`]). Every key belongs to one stream, and a batch adds each
/// stream once per model, so deleting first and inserting after gives the same rows as
/// writing stream after stream.
#[derive(Debug, Default)]
pub(crate) struct Writes {
    tables: [TableWrites; TABLES.len()],
    crl_publications: Vec<CrlPublicationRow>,
    /// (stream id, a version per model or NULL) of each stream written.
    versions: Vec<Value>,
    /// Streams written, counted once per model.
    written: u64,
    /// (model, position, rebuilding, updated at) of each checkpoint moved.
    checkpoints: Vec<Value>,
}

impl Writes {
    /// Rows of `model` for one stream from its view, which is newer than the `reflected`
    /// version. At version 0 the model has no rows of the stream, so there is nothing to
    /// delete. [`Writes::versions`] then records the view's version.
    pub fn add(&mut self, model: ReadModel, view: &StreamView, reflected: u64, policy: &RowPolicy) {
        match (model, view) {
            (ReadModel::Inventory, StreamView::Certificate(v)) => match v.inventory_row() {
                Some(r) => self.row(Table::Inventory, inventory_values(r)),
                None => self.delete(Table::Inventory, reflected, &v.id),
            },
            // A certificate's rows below come from facts that are never taken back (the
            // domain's property tests check it): without the fact now, the model never
            // had a row of it, and there is nothing to delete.
            (ReadModel::ExpiryCalendar, StreamView::Certificate(v)) => match v.expiry_row(policy) {
                Some(r) => self.row(Table::ExpiryCalendar, expiry_values(r)),
                // Issued: a row until revoked.
                None if v.state.issued.is_some() => {
                    self.delete(Table::ExpiryCalendar, reflected, &v.id)
                }
                None => {}
            },
            (ReadModel::Deployments, StreamView::Certificate(v)) => {
                // Deployments are only ever added to a certificate.
                let rows = v.deployment_rows();
                if !rows.is_empty() {
                    self.delete(Table::Deployments, reflected, &v.id);
                }
                for r in rows {
                    self.row(Table::Deployments, deployment_values(r));
                }
            }
            (ReadModel::Deployments, StreamView::Target(v)) => match v.target_row() {
                Some(r) => self.row(Table::Targets, target_values(r)),
                None => self.delete(Table::Targets, reflected, &v.id),
            },
            // A revocation, and its request, are for good: a certificate without either
            // never had a row.
            (ReadModel::Revocations, StreamView::Certificate(v)) => {
                if let Some(r) = v.revocation_row() {
                    self.row(Table::Revocations, revocation_values(r));
                }
            }
            (ReadModel::Revocations, StreamView::Crl(v)) => {
                // CRLs are only ever added: write those the model has not seen.
                self.crl_publications.extend(
                    v.publications
                        .iter()
                        .filter(|(at, _)| *at > reflected)
                        .map(|(_, p)| p.clone()),
                );
            }
            // Streams a model does not read: no rows.
            _ => {}
        }
    }

    /// The versions of one stream the models it was added to now reflect, by
    /// [`ReadModel::index`] (`None`: not added, unchanged).
    pub fn versions(&mut self, stream_id: &str, versions: [Option<u64>; 4]) {
        let written = versions.iter().flatten().count() as u64;
        if written == 0 {
            return;
        }
        self.written += written;
        self.versions.push(Value::Text(stream_id.to_owned()));
        self.versions
            .extend(versions.map(|v| Value::OptInt(v.map(to_i64))));
    }

    fn row<const N: usize>(&mut self, table: Table, values: [Value; N]) {
        self.tables[table as usize].rows.extend(values);
    }

    /// Deletes a stream's rows, unless the model has never written any (`reflected` 0).
    fn delete(&mut self, table: Table, reflected: u64, id: &str) {
        if reflected > 0 {
            self.tables[table as usize].deletes.push(id.to_owned());
        }
    }

    /// Streams written (one per model and stream).
    pub fn streams(&self) -> u64 {
        self.written
    }

    /// Moves `model`'s checkpoint to `position` with the rows.
    pub fn checkpoint(&mut self, model: ReadModel, position: u64, rebuilding: bool) {
        self.checkpoints
            .extend(checkpoint_values(model, position, rebuilding));
    }

    /// Writes everything gathered, the stream versions and the checkpoints.
    pub async fn flush(self, tx: &mut Tx, what: &str) -> Result<(), ProjectionError> {
        let mut deletes: Vec<(&Keys, Vec<String>)> = Vec::new();
        let mut writes: Vec<(&Many, Vec<Value>)> = Vec::new();
        for ((delete, insert), w) in TABLES.iter().zip(self.tables) {
            deletes.push((delete, w.deletes));
            writes.push((insert, w.rows));
        }
        writes.push((&SET_STREAM_VERSIONS, self.versions));
        writes.push((&SET_CHECKPOINTS, self.checkpoints));
        deletes.retain(|(_, ids)| !ids.is_empty());
        writes.retain(|(_, values)| !values.is_empty());
        execute_all(tx, deletes, writes, what).await?;
        for p in &self.crl_publications {
            insert_crl_publication(tx, p)
                .await
                .map_err(ProjectionError::db(format!(
                    "{what}: write crl_publications of {}",
                    p.issuer
                )))?;
        }
        Ok(())
    }
}

fn checkpoint_values(model: ReadModel, position: u64, rebuilding: bool) -> [Value; 4] {
    [
        Value::Name(model.name()),
        Value::Int(to_i64(position)),
        Value::Flag(rebuilding),
        Value::Int(crate::store::now_micros()),
    ]
}

fn inventory_values(r: InventoryRow) -> [Value; 30] {
    [
        Value::Text(r.certificate_id),
        Value::Text(r.tenant),
        Value::Text(r.status),
        Value::Text(json_list(&r.domains)),
        Value::Text(r.issuer),
        Value::Text(r.key_algorithm),
        Value::Text(r.validation_method),
        Value::Flag(r.auto_renew),
        Value::OptText(r.serial),
        Value::OptInt(r.not_before.map(micros)),
        Value::OptInt(r.not_after.map(micros)),
        Value::OptText(r.fingerprint),
        Value::Int(r.deployment_count),
        Value::Text(json_list(&r.deployment_targets)),
        Value::Int(micros(r.status_since)),
        Value::Int(micros(r.ordered_at)),
        Value::OptText(r.last_failure_reason),
        Value::OptText(r.last_failure_code),
        Value::OptInt(r.last_failure_at.map(micros)),
        Value::OptInt(r.next_retry_at.map(micros)),
        Value::OptText(r.predecessor_id),
        Value::OptText(r.successor_id),
        Value::OptText(r.renewal_state),
        Value::Int(r.validation_failures),
        Value::Int(r.issuance_failures),
        Value::Int(r.deployment_failures),
        Value::Int(r.renewal_failures),
        Value::Int(r.stream_version),
        Value::Int(r.updated_position),
        Value::Int(micros(r.updated_at)),
    ]
}

fn expiry_values(r: ExpiryRow) -> [Value; 9] {
    [
        Value::Text(r.certificate_id),
        Value::Text(r.tenant),
        Value::Text(r.status),
        Value::Int(micros(r.not_before)),
        Value::Int(micros(r.not_after)),
        Value::Int(micros(r.renewal_opens_at)),
        Value::Flag(r.auto_renew),
        Value::OptText(r.successor_id),
        Value::Int(r.updated_position),
    ]
}

fn deployment_values(r: DeploymentRow) -> [Value; 13] {
    [
        Value::Text(r.certificate_id),
        Value::Text(r.target_id),
        Value::Text(r.tenant),
        Value::Text(r.deployment_id),
        Value::Text(r.state),
        Value::Int(micros(r.state_since)),
        Value::OptText(r.replaces_certificate_id),
        Value::OptText(r.replaced_by),
        Value::OptText(r.failure_step),
        Value::OptText(r.failure_code),
        Value::OptText(r.failure_reason),
        Value::OptText(r.observed_fingerprint),
        Value::Int(r.updated_position),
    ]
}

fn target_values(r: TargetRow) -> [Value; 8] {
    [
        Value::Text(r.target_id),
        Value::Text(r.tenant),
        Value::Text(r.name),
        Value::Text(r.kind),
        Value::Text(r.status),
        Value::OptText(r.removal_reason),
        Value::Int(micros(r.registered_at)),
        Value::Int(r.updated_position),
    ]
}

/// `crl_published_at` is not bound: the statement computes it.
fn revocation_values(r: RevocationRow) -> [Value; 10] {
    [
        Value::Text(r.certificate_id),
        Value::Text(r.tenant),
        Value::OptText(r.serial),
        Value::Text(r.reason),
        Value::OptText(r.requested_by),
        Value::OptInt(r.requested_at.map(micros)),
        Value::OptInt(r.revoked_at.map(micros)),
        Value::OptText(r.issuer),
        Value::OptInt(r.revoked_position),
        Value::Int(r.updated_position),
    ]
}

async fn insert_crl_publication(tx: &mut Tx, p: &CrlPublicationRow) -> Result<(), sqlx::Error> {
    on!(tx, c => sqlx::query(INSERT_CRL_PUBLICATION)
        .bind(&p.issuer)
        .bind(p.crl_number)
        .bind(micros(p.this_update))
        .bind(p.next_update.map(micros))
        .bind(p.entries)
        .bind(p.revocations_through)
        .bind(p.position)
        .execute(&mut *c)
        .await.map(|r| r.rows_affected()))?;
    on!(tx, c => sqlx::query(DATE_REVOCATIONS)
        .bind(micros(p.this_update))
        .bind(&p.issuer)
        .bind(p.revocations_through)
        .execute(&mut *c)
        .await.map(|r| r.rows_affected()))
    .map(|_| ())
}

/// Empties a read model's tables (for a rebuild, with [`clear_stream_versions`]).
pub(crate) async fn clear_model(
    tx: &mut Tx,
    model: ReadModel,
    what: &str,
) -> Result<(), ProjectionError> {
    for table in model.tables() {
        let sql: &'static str = match *table {
            "inventory" => "DELETE FROM inventory",
            "expiry_calendar" => "DELETE FROM expiry_calendar",
            "deployments" => "DELETE FROM deployments",
            "targets" => "DELETE FROM targets",
            "crl_publications" => "DELETE FROM crl_publications",
            _ => "DELETE FROM revocations",
        };
        on!(tx, c => sqlx::query(sql).execute(&mut *c).await.map(|r| r.rows_affected()))
            .map_err(ProjectionError::db(format!("{what}: clear {table}")))?;
    }
    Ok(())
}

/// Forgets the stream versions `models` reflect (for a rebuild, with [`clear_model`]).
pub(crate) async fn clear_stream_versions(
    tx: &mut Tx,
    models: &[ReadModel],
    what: &str,
) -> Result<(), ProjectionError> {
    let mut statements: Vec<&'static str> = Vec::new();
    if ReadModel::ALL.iter().all(|m| models.contains(m)) {
        statements.push("DELETE FROM projection_stream_versions");
    } else {
        statements.extend(models.iter().map(|m| match m {
            ReadModel::Inventory => "UPDATE projection_stream_versions SET inventory = NULL",
            ReadModel::ExpiryCalendar => {
                "UPDATE projection_stream_versions SET expiry_calendar = NULL"
            }
            ReadModel::Deployments => "UPDATE projection_stream_versions SET deployments = NULL",
            ReadModel::Revocations => "UPDATE projection_stream_versions SET revocations = NULL",
        }));
        // Rows no model reflects any more.
        statements.push(
            "DELETE FROM projection_stream_versions WHERE inventory IS NULL \
             AND expiry_calendar IS NULL AND deployments IS NULL AND revocations IS NULL",
        );
    }
    for sql in statements {
        on!(tx, c => sqlx::query(sql).execute(&mut *c).await.map(|r| r.rows_affected())).map_err(
            ProjectionError::db(format!("{what}: clear stream versions")),
        )?;
    }
    Ok(())
}

/// Sets a checkpoint (the caller holds its lock).
pub(crate) async fn set_checkpoint(
    tx: &mut Tx,
    model: ReadModel,
    position: u64,
    rebuilding: bool,
    what: &str,
) -> Result<(), ProjectionError> {
    let values = checkpoint_values(model, position, rebuilding).into();
    execute_all(tx, Vec::new(), vec![(&SET_CHECKPOINTS, values)], what).await
}

// --- decoding rows -------------------------------------------------------------------

pub(crate) fn inventory_from_row<R: RowExt>(r: &R) -> Result<InventoryRow, sqlx::Error> {
    Ok(InventoryRow {
        certificate_id: r.text("certificate_id")?,
        tenant: r.text("tenant")?,
        status: r.text("status")?,
        domains: parse_list(&r.text("domains")?),
        issuer: r.text("issuer")?,
        key_algorithm: r.text("key_algorithm")?,
        validation_method: r.text("validation_method")?,
        auto_renew: r.flag("auto_renew")?,
        serial: r.opt_text("serial")?,
        not_before: r.opt_int("not_before")?.map(from_micros),
        not_after: r.opt_int("not_after")?.map(from_micros),
        fingerprint: r.opt_text("fingerprint")?,
        deployment_count: r.int("deployment_count")?,
        deployment_targets: parse_list(&r.text("deployment_targets")?),
        status_since: from_micros(r.int("status_since")?),
        ordered_at: from_micros(r.int("ordered_at")?),
        last_failure_reason: r.opt_text("last_failure_reason")?,
        last_failure_code: r.opt_text("last_failure_code")?,
        last_failure_at: r.opt_int("last_failure_at")?.map(from_micros),
        next_retry_at: r.opt_int("next_retry_at")?.map(from_micros),
        predecessor_id: r.opt_text("predecessor_id")?,
        successor_id: r.opt_text("successor_id")?,
        renewal_state: r.opt_text("renewal_state")?,
        validation_failures: r.int("validation_failures")?,
        issuance_failures: r.int("issuance_failures")?,
        deployment_failures: r.int("deployment_failures")?,
        renewal_failures: r.int("renewal_failures")?,
        stream_version: r.int("stream_version")?,
        updated_position: r.int("updated_position")?,
        updated_at: from_micros(r.int("updated_at")?),
    })
}

pub(crate) fn expiry_from_row<R: RowExt>(r: &R) -> Result<ExpiryRow, sqlx::Error> {
    Ok(ExpiryRow {
        certificate_id: r.text("certificate_id")?,
        tenant: r.text("tenant")?,
        status: r.text("status")?,
        not_before: from_micros(r.int("not_before")?),
        not_after: from_micros(r.int("not_after")?),
        renewal_opens_at: from_micros(r.int("renewal_opens_at")?),
        auto_renew: r.flag("auto_renew")?,
        successor_id: r.opt_text("successor_id")?,
        updated_position: r.int("updated_position")?,
    })
}

pub(crate) fn deployment_from_row<R: RowExt>(r: &R) -> Result<DeploymentRow, sqlx::Error> {
    Ok(DeploymentRow {
        certificate_id: r.text("certificate_id")?,
        target_id: r.text("target_id")?,
        tenant: r.text("tenant")?,
        deployment_id: r.text("deployment_id")?,
        state: r.text("state")?,
        state_since: from_micros(r.int("state_since")?),
        replaces_certificate_id: r.opt_text("replaces_certificate_id")?,
        replaced_by: r.opt_text("replaced_by")?,
        failure_step: r.opt_text("failure_step")?,
        failure_code: r.opt_text("failure_code")?,
        failure_reason: r.opt_text("failure_reason")?,
        observed_fingerprint: r.opt_text("observed_fingerprint")?,
        updated_position: r.int("updated_position")?,
    })
}

pub(crate) fn target_from_row<R: RowExt>(r: &R) -> Result<TargetRow, sqlx::Error> {
    Ok(TargetRow {
        target_id: r.text("target_id")?,
        tenant: r.text("tenant")?,
        name: r.text("name")?,
        kind: r.text("kind")?,
        status: r.text("status")?,
        removal_reason: r.opt_text("removal_reason")?,
        registered_at: from_micros(r.int("registered_at")?),
        updated_position: r.int("updated_position")?,
    })
}

pub(crate) fn revocation_from_row<R: RowExt>(r: &R) -> Result<RevocationRow, sqlx::Error> {
    Ok(RevocationRow {
        certificate_id: r.text("certificate_id")?,
        tenant: r.text("tenant")?,
        serial: r.opt_text("serial")?,
        reason: r.text("reason")?,
        requested_by: r.opt_text("requested_by")?,
        requested_at: r.opt_int("requested_at")?.map(from_micros),
        revoked_at: r.opt_int("revoked_at")?.map(from_micros),
        crl_published_at: r.opt_int("crl_published_at")?.map(from_micros),
        issuer: r.opt_text("issuer")?,
        revoked_position: r.opt_int("revoked_position")?,
        updated_position: r.int("updated_position")?,
    })
}

pub(crate) fn crl_publication_from_row<R: RowExt>(r: &R) -> Result<CrlPublicationRow, sqlx::Error> {
    Ok(CrlPublicationRow {
        issuer: r.text("issuer")?,
        crl_number: r.int("crl_number")?,
        this_update: from_micros(r.int("this_update")?),
        next_update: r.opt_int("next_update")?.map(from_micros),
        entries: r.int("entries")?,
        revocations_through: r.int("revocations_through")?,
        position: r.int("position")?,
    })
}
