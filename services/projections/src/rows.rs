//! Reading and writing read-model rows. The same SQL runs on PostgreSQL and SQLite.

use std::collections::HashMap;

use sqlx::AssertSqlSafe;

use crate::error::ProjectionError;
use crate::model::{
    CrlPublicationRow, DeploymentRow, ExpiryRow, InventoryRow, ReadModel, RevocationRow, TargetRow,
    from_micros, micros,
};
use crate::store::{RowExt, Tx, on, to_i64, to_u64};
use crate::view::{RowPolicy, StreamView};

pub(crate) const INVENTORY_COLUMNS: &str = "certificate_id, tenant, status, domains, issuer, key_algorithm, validation_method, auto_renew, \
     serial, not_before, not_after, fingerprint, deployment_count, deployment_targets, status_since, ordered_at, \
     last_failure_reason, last_failure_code, last_failure_at, next_retry_at, predecessor_id, successor_id, renewal_state, \
     validation_failures, issuance_failures, deployment_failures, renewal_failures, stream_version, updated_position, updated_at";

const UPSERT_INVENTORY: &str = "INSERT INTO inventory (certificate_id, tenant, status, domains, issuer, key_algorithm, validation_method, auto_renew, \
     serial, not_before, not_after, fingerprint, deployment_count, deployment_targets, status_since, ordered_at, \
     last_failure_reason, last_failure_code, last_failure_at, next_retry_at, predecessor_id, successor_id, renewal_state, \
     validation_failures, issuance_failures, deployment_failures, renewal_failures, stream_version, updated_position, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30) \
     ON CONFLICT (certificate_id) DO UPDATE SET tenant = excluded.tenant, status = excluded.status, domains = excluded.domains, \
     issuer = excluded.issuer, key_algorithm = excluded.key_algorithm, validation_method = excluded.validation_method, \
     auto_renew = excluded.auto_renew, serial = excluded.serial, not_before = excluded.not_before, not_after = excluded.not_after, \
     fingerprint = excluded.fingerprint, deployment_count = excluded.deployment_count, deployment_targets = excluded.deployment_targets, \
     status_since = excluded.status_since, ordered_at = excluded.ordered_at, last_failure_reason = excluded.last_failure_reason, \
     last_failure_code = excluded.last_failure_code, last_failure_at = excluded.last_failure_at, next_retry_at = excluded.next_retry_at, \
     predecessor_id = excluded.predecessor_id, successor_id = excluded.successor_id, renewal_state = excluded.renewal_state, \
     validation_failures = excluded.validation_failures, issuance_failures = excluded.issuance_failures, \
     deployment_failures = excluded.deployment_failures, renewal_failures = excluded.renewal_failures, \
     stream_version = excluded.stream_version, updated_position = excluded.updated_position, updated_at = excluded.updated_at";

pub(crate) const EXPIRY_COLUMNS: &str = "certificate_id, tenant, status, not_before, not_after, renewal_opens_at, auto_renew, successor_id, updated_position";

const UPSERT_EXPIRY: &str = "INSERT INTO expiry_calendar (certificate_id, tenant, status, not_before, not_after, renewal_opens_at, auto_renew, successor_id, updated_position) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
     ON CONFLICT (certificate_id) DO UPDATE SET tenant = excluded.tenant, status = excluded.status, not_before = excluded.not_before, \
     not_after = excluded.not_after, renewal_opens_at = excluded.renewal_opens_at, auto_renew = excluded.auto_renew, \
     successor_id = excluded.successor_id, updated_position = excluded.updated_position";

pub(crate) const DEPLOYMENT_COLUMNS: &str = "certificate_id, target_id, tenant, deployment_id, state, state_since, replaces_certificate_id, replaced_by, \
     failure_step, failure_code, failure_reason, observed_fingerprint, updated_position";

const INSERT_DEPLOYMENT: &str = "INSERT INTO deployments (certificate_id, target_id, tenant, deployment_id, state, state_since, replaces_certificate_id, replaced_by, \
     failure_step, failure_code, failure_reason, observed_fingerprint, updated_position) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";

pub(crate) const TARGET_COLUMNS: &str =
    "target_id, tenant, name, kind, status, removal_reason, registered_at, updated_position";

const UPSERT_TARGET: &str = "INSERT INTO targets (target_id, tenant, name, kind, status, removal_reason, registered_at, updated_position) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT (target_id) DO UPDATE SET tenant = excluded.tenant, name = excluded.name, kind = excluded.kind, \
     status = excluded.status, removal_reason = excluded.removal_reason, registered_at = excluded.registered_at, \
     updated_position = excluded.updated_position";

pub(crate) const REVOCATION_COLUMNS: &str = "certificate_id, tenant, serial, reason, requested_by, requested_at, revoked_at, crl_published_at, \
     issuer, revoked_position, updated_position";

/// `crl_published_at` is the thisUpdate of the first recorded CRL of the issuer that
/// lists the revocation (NULL until there is one, or while not revoked).
const UPSERT_REVOCATION: &str = "INSERT INTO revocations (certificate_id, tenant, serial, reason, requested_by, requested_at, revoked_at, crl_published_at, \
     issuer, revoked_position, updated_position) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, \
     (SELECT MIN(this_update) FROM crl_publications WHERE issuer = $8 AND revocations_through >= $9), $8, $9, $10) \
     ON CONFLICT (certificate_id) DO UPDATE SET tenant = excluded.tenant, serial = excluded.serial, reason = excluded.reason, \
     requested_by = excluded.requested_by, requested_at = excluded.requested_at, revoked_at = excluded.revoked_at, \
     crl_published_at = excluded.crl_published_at, issuer = excluded.issuer, revoked_position = excluded.revoked_position, \
     updated_position = excluded.updated_position";

pub(crate) const CRL_PUBLICATION_COLUMNS: &str =
    "issuer, crl_number, this_update, next_update, entries, revocations_through, position";

const INSERT_CRL_PUBLICATION: &str = "INSERT INTO crl_publications (issuer, crl_number, this_update, next_update, entries, revocations_through, position) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (issuer, crl_number) DO NOTHING";

/// The other side of `UPSERT_REVOCATION`: a newly recorded CRL dates the revocations it
/// is the first to list.
const DATE_REVOCATIONS: &str = "UPDATE revocations SET crl_published_at = $1 \
     WHERE issuer = $2 AND revoked_position IS NOT NULL AND revoked_position <= $3 \
     AND (crl_published_at IS NULL OR crl_published_at > $1)";

fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".to_owned())
}

fn parse_list(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

/// Streams per statement when reading or writing stream versions (far below either
/// database's limit on bound parameters).
const VERSIONS_PER_STATEMENT: usize = 300;

/// `($first, $first+1, …)` for `n` rows of `width` parameters each.
fn placeholders(rows: usize, width: usize, first: usize) -> String {
    (0..rows)
        .map(|r| {
            let cols: Vec<String> = (0..width)
                .map(|c| format!("${}", first + r * width + c))
                .collect();
            format!("({})", cols.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The stream versions a read model reflects, for every stream in `stream_ids` it has
/// seen (absent: none), in one statement per few hundred streams.
pub(crate) async fn stream_versions(
    tx: &mut Tx,
    model: ReadModel,
    stream_ids: &[&str],
    what: &str,
) -> Result<HashMap<String, u64>, ProjectionError> {
    let mut versions = HashMap::with_capacity(stream_ids.len());
    for chunk in stream_ids.chunks(VERSIONS_PER_STATEMENT) {
        let list: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "SELECT stream_id, version FROM projection_streams WHERE model = $1 AND stream_id IN ({})",
            list.join(", ")
        );
        let rows = on!(tx, c => {
            let mut q = sqlx::query(AssertSqlSafe(sql.clone())).bind(model.name());
            for id in chunk {
                q = q.bind(*id);
            }
            let rows = q.fetch_all(&mut *c).await;
            rows.and_then(|rows| {
                rows.iter()
                    .map(|r| Ok((r.text("stream_id")?, to_u64(r.int("version")?))))
                    .collect::<Result<Vec<_>, sqlx::Error>>()
            })
        })
        .map_err(ProjectionError::db(format!(
            "{what}: read {} versions of {} streams",
            model.name(),
            chunk.len()
        )))?;
        versions.extend(rows);
    }
    Ok(versions)
}

/// Records the stream versions a read model now reflects.
pub(crate) async fn set_stream_versions(
    tx: &mut Tx,
    model: ReadModel,
    versions: &[(&str, u64)],
    what: &str,
) -> Result<(), ProjectionError> {
    for chunk in versions.chunks(VERSIONS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO projection_streams (model, stream_id, version) VALUES {} \
             ON CONFLICT (model, stream_id) DO UPDATE SET version = excluded.version",
            placeholders(chunk.len(), 3, 1)
        );
        on!(tx, c => {
            let mut q = sqlx::query(AssertSqlSafe(sql.clone()));
            for (id, version) in chunk {
                q = q.bind(model.name()).bind(*id).bind(to_i64(*version));
            }
            q.execute(&mut *c).await.map(|r| r.rows_affected())
        })
        .map_err(ProjectionError::db(format!(
            "{what}: save {} versions of {} streams",
            model.name(),
            chunk.len()
        )))?;
    }
    Ok(())
}

/// Writes the rows of `model` for one stream from its view, which is newer than the
/// `reflected` version (the caller records the new version). At version 0 the model has
/// no rows of the stream, so there is nothing to delete.
pub(crate) async fn write_stream(
    tx: &mut Tx,
    model: ReadModel,
    stream_id: &str,
    view: &StreamView,
    reflected: u64,
    policy: &RowPolicy,
    what: &str,
) -> Result<(), ProjectionError> {
    let ctx = |table: &str| ProjectionError::db(format!("{what}: write {table} of {stream_id}"));
    match (model, view) {
        (ReadModel::Inventory, StreamView::Certificate(v)) => match v.inventory_row() {
            Some(r) => upsert_inventory(tx, &r).await.map_err(ctx("inventory"))?,
            None => delete_rows(
                tx,
                reflected,
                "DELETE FROM inventory WHERE certificate_id = $1",
                &v.id,
            )
            .await
            .map_err(ctx("inventory"))?,
        },
        (ReadModel::ExpiryCalendar, StreamView::Certificate(v)) => match v.expiry_row(policy) {
            Some(r) => upsert_expiry(tx, &r)
                .await
                .map_err(ctx("expiry_calendar"))?,
            None => delete_rows(
                tx,
                reflected,
                "DELETE FROM expiry_calendar WHERE certificate_id = $1",
                &v.id,
            )
            .await
            .map_err(ctx("expiry_calendar"))?,
        },
        (ReadModel::Deployments, StreamView::Certificate(v)) => {
            delete_rows(
                tx,
                reflected,
                "DELETE FROM deployments WHERE certificate_id = $1",
                &v.id,
            )
            .await
            .map_err(ctx("deployments"))?;
            for r in v.deployment_rows() {
                insert_deployment(tx, &r)
                    .await
                    .map_err(ctx("deployments"))?;
            }
        }
        (ReadModel::Deployments, StreamView::Target(v)) => match v.target_row() {
            Some(r) => upsert_target(tx, &r).await.map_err(ctx("targets"))?,
            None => delete_rows(
                tx,
                reflected,
                "DELETE FROM targets WHERE target_id = $1",
                &v.id,
            )
            .await
            .map_err(ctx("targets"))?,
        },
        (ReadModel::Revocations, StreamView::Certificate(v)) => match v.revocation_row() {
            Some(r) => upsert_revocation(tx, &r)
                .await
                .map_err(ctx("revocations"))?,
            None => delete_rows(
                tx,
                reflected,
                "DELETE FROM revocations WHERE certificate_id = $1",
                &v.id,
            )
            .await
            .map_err(ctx("revocations"))?,
        },
        (ReadModel::Revocations, StreamView::Crl(v)) => {
            // CRLs are only ever added: write those the model has not seen.
            for (_, p) in v.publications.iter().filter(|(at, _)| *at > reflected) {
                insert_crl_publication(tx, p)
                    .await
                    .map_err(ctx("crl_publications"))?;
            }
        }
        // Streams a model does not read: nothing to write.
        _ => {}
    }
    Ok(())
}

/// Deletes a stream's rows, unless the model has never written any (`reflected` 0).
async fn delete_rows(
    tx: &mut Tx,
    reflected: u64,
    sql: &'static str,
    id: &str,
) -> Result<(), sqlx::Error> {
    if reflected == 0 {
        return Ok(());
    }
    on!(tx, c => sqlx::query(sql).bind(id).execute(&mut *c).await.map(|r| r.rows_affected()))
        .map(|_| ())
}

async fn upsert_inventory(tx: &mut Tx, r: &InventoryRow) -> Result<(), sqlx::Error> {
    on!(tx, c => sqlx::query(UPSERT_INVENTORY)
        .bind(&r.certificate_id)
        .bind(&r.tenant)
        .bind(&r.status)
        .bind(json_list(&r.domains))
        .bind(&r.issuer)
        .bind(&r.key_algorithm)
        .bind(&r.validation_method)
        .bind(r.auto_renew)
        .bind(&r.serial)
        .bind(r.not_before.map(micros))
        .bind(r.not_after.map(micros))
        .bind(&r.fingerprint)
        .bind(r.deployment_count)
        .bind(json_list(&r.deployment_targets))
        .bind(micros(r.status_since))
        .bind(micros(r.ordered_at))
        .bind(&r.last_failure_reason)
        .bind(&r.last_failure_code)
        .bind(r.last_failure_at.map(micros))
        .bind(r.next_retry_at.map(micros))
        .bind(&r.predecessor_id)
        .bind(&r.successor_id)
        .bind(&r.renewal_state)
        .bind(r.validation_failures)
        .bind(r.issuance_failures)
        .bind(r.deployment_failures)
        .bind(r.renewal_failures)
        .bind(r.stream_version)
        .bind(r.updated_position)
        .bind(micros(r.updated_at))
        .execute(&mut *c)
        .await.map(|r| r.rows_affected()))
    .map(|_| ())
}

async fn upsert_expiry(tx: &mut Tx, r: &ExpiryRow) -> Result<(), sqlx::Error> {
    on!(tx, c => sqlx::query(UPSERT_EXPIRY)
        .bind(&r.certificate_id)
        .bind(&r.tenant)
        .bind(&r.status)
        .bind(micros(r.not_before))
        .bind(micros(r.not_after))
        .bind(micros(r.renewal_opens_at))
        .bind(r.auto_renew)
        .bind(&r.successor_id)
        .bind(r.updated_position)
        .execute(&mut *c)
        .await.map(|r| r.rows_affected()))
    .map(|_| ())
}

async fn insert_deployment(tx: &mut Tx, r: &DeploymentRow) -> Result<(), sqlx::Error> {
    on!(tx, c => sqlx::query(INSERT_DEPLOYMENT)
        .bind(&r.certificate_id)
        .bind(&r.target_id)
        .bind(&r.tenant)
        .bind(&r.deployment_id)
        .bind(&r.state)
        .bind(micros(r.state_since))
        .bind(&r.replaces_certificate_id)
        .bind(&r.replaced_by)
        .bind(&r.failure_step)
        .bind(&r.failure_code)
        .bind(&r.failure_reason)
        .bind(&r.observed_fingerprint)
        .bind(r.updated_position)
        .execute(&mut *c)
        .await.map(|r| r.rows_affected()))
    .map(|_| ())
}

async fn upsert_target(tx: &mut Tx, r: &TargetRow) -> Result<(), sqlx::Error> {
    on!(tx, c => sqlx::query(UPSERT_TARGET)
        .bind(&r.target_id)
        .bind(&r.tenant)
        .bind(&r.name)
        .bind(&r.kind)
        .bind(&r.status)
        .bind(&r.removal_reason)
        .bind(micros(r.registered_at))
        .bind(r.updated_position)
        .execute(&mut *c)
        .await.map(|r| r.rows_affected()))
    .map(|_| ())
}

async fn upsert_revocation(tx: &mut Tx, r: &RevocationRow) -> Result<(), sqlx::Error> {
    on!(tx, c => sqlx::query(UPSERT_REVOCATION)
        .bind(&r.certificate_id)
        .bind(&r.tenant)
        .bind(&r.serial)
        .bind(&r.reason)
        .bind(&r.requested_by)
        .bind(r.requested_at.map(micros))
        .bind(r.revoked_at.map(micros))
        .bind(&r.issuer)
        .bind(r.revoked_position)
        .bind(r.updated_position)
        .execute(&mut *c)
        .await.map(|r| r.rows_affected()))
    .map(|_| ())
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

/// Empties a read model's tables and its stream versions (for a rebuild).
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
    on!(tx, c => sqlx::query("DELETE FROM projection_streams WHERE model = $1")
        .bind(model.name())
        .execute(&mut *c)
        .await.map(|r| r.rows_affected()))
    .map_err(ProjectionError::db(format!(
        "{what}: clear stream versions of {}",
        model.name()
    )))?;
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
    on!(tx, c => sqlx::query(
        "UPDATE projection_checkpoints SET position = $2, rebuilding = $3, updated_at = $4 WHERE model = $1",
    )
    .bind(model.name())
    .bind(to_i64(position))
    .bind(rebuilding)
    .bind(crate::store::now_micros())
    .execute(&mut *c)
    .await.map(|r| r.rows_affected()))
    .map(|_| ())
    .map_err(ProjectionError::db(format!(
        "{what}: save checkpoint of {}",
        model.name()
    )))
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
