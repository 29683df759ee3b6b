//! Queries over the read models: what the HTTP API, the dashboard, `/metrics` and (later)
//! the gRPC `CertificateQueryService` serve. Every function takes the caller's tenant;
//! a certificate of another tenant is the same as one that does not exist.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use sqlx::AssertSqlSafe;

use crate::error::ProjectionError;
use crate::model::{
    AnyRow, DeploymentRow, ExpiryRow, InventoryRow, ReadModel, RevocationRow, TargetRow, micros,
};
use crate::rows::{
    CRL_PUBLICATION_COLUMNS, DEPLOYMENT_COLUMNS, EXPIRY_COLUMNS, INVENTORY_COLUMNS,
    REVOCATION_COLUMNS, TARGET_COLUMNS, crl_publication_from_row, deployment_from_row,
    expiry_from_row, inventory_from_row, revocation_from_row, target_from_row,
};
use crate::store::{Conn, ProjectionStore, RowExt, on};

/// The statuses a certificate can have in the inventory.
pub const STATUSES: [&str; 10] = [
    "ordered",
    "applied",
    "validating",
    "validated",
    "issuing",
    "issued",
    "failed",
    "cancelled",
    "revoked",
    "expired",
];

/// Filters of [`ProjectionStore::list_certificates`] (those of the query API's
/// `ListCertificates`). Unset fields do not filter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CertificateFilter {
    /// Exactly this status (one of [`STATUSES`]).
    pub status: Option<String>,
    /// Some name contains this (case-insensitive).
    pub domain_contains: Option<String>,
    /// Exactly this issuer.
    pub issuer: Option<String>,
    /// Has a deployment (of any state) on this target.
    pub target_id: Option<String>,
    /// Issued with not-after before this time.
    pub expiring_before: Option<DateTime<Utc>>,
    /// Only certificates in the needs-attention list.
    pub needs_attention: bool,
}

/// A page request: `page_size` 0 means 100, at most 1000; the token is opaque.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// Items per page.
    pub page_size: u32,
    /// From a previous page's `next_page_token`; empty for the first page.
    pub page_token: String,
}

/// Largest page.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// One page of results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page<T> {
    /// The items, ordered by id.
    pub items: Vec<T>,
    /// Token for the next page; empty on the last page.
    pub next_page_token: String,
}

/// What counts as needing attention, and how long things may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionPolicy {
    /// An issued certificate without auto-renew expiring within this needs attention.
    /// Default 30 days.
    pub expiring_within: TimeDelta,
    /// With auto-renew on, a certificate with less than this left and no successor
    /// issued needs attention. Default 7 days.
    pub auto_renew_grace: TimeDelta,
    /// Longer than this applied, validating, validated or issuing is stuck. Default 1 h.
    pub stuck_after: TimeDelta,
    /// A deployment requested longer ago than this and not verified is stuck.
    /// Default 30 min.
    pub deployment_stuck_after: TimeDelta,
    /// Failed orders are listed for this long after failing. Default 30 days.
    pub failed_visible_for: TimeDelta,
    /// A revocation must be carried out (and the CRL re-signed) within this.
    /// Default 24 h (CA/Browser Forum).
    pub revocation_deadline: TimeDelta,
}

impl Default for AttentionPolicy {
    fn default() -> Self {
        Self {
            expiring_within: TimeDelta::days(30),
            auto_renew_grace: TimeDelta::days(7),
            stuck_after: TimeDelta::hours(1),
            deployment_stuck_after: TimeDelta::minutes(30),
            failed_visible_for: TimeDelta::days(30),
            revocation_deadline: TimeDelta::hours(24),
        }
    }
}

/// Why something needs attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionKind {
    /// A target serves a revoked certificate.
    ServingRevoked,
    /// Revocation asked for and not carried out within the deadline.
    RevocationOverdue,
    /// Revoked, and no CRL listing it recorded within the deadline.
    CrlOverdue,
    /// A target serves an expired certificate.
    ServingExpired,
    /// Issued, auto-renew off, expiring soon (or past not-after).
    ExpiringWithoutAutoRenew,
    /// Auto-renew on, but little time left and no successor issued.
    RenewalOverdue,
    /// Validation or issuance failed for good.
    Failed,
    /// The latest renewal failed.
    RenewalFailed,
    /// A deployment failed.
    DeploymentFailed,
    /// A target no longer serves the certificate.
    Drifted,
    /// Applied, validating, validated or issuing for too long.
    Stuck,
    /// Validation or issuance failed and will be retried.
    Retrying,
    /// A deployment requested long ago is not verified.
    DeploymentStuck,
}

impl AttentionKind {
    /// Every kind.
    pub const ALL: [AttentionKind; 13] = [
        AttentionKind::ServingRevoked,
        AttentionKind::RevocationOverdue,
        AttentionKind::CrlOverdue,
        AttentionKind::ServingExpired,
        AttentionKind::ExpiringWithoutAutoRenew,
        AttentionKind::RenewalOverdue,
        AttentionKind::Failed,
        AttentionKind::RenewalFailed,
        AttentionKind::DeploymentFailed,
        AttentionKind::Drifted,
        AttentionKind::Stuck,
        AttentionKind::Retrying,
        AttentionKind::DeploymentStuck,
    ];

    /// The snake-case name (as in JSON and metrics).
    pub fn name(self) -> &'static str {
        match self {
            AttentionKind::ServingRevoked => "serving_revoked",
            AttentionKind::RevocationOverdue => "revocation_overdue",
            AttentionKind::CrlOverdue => "crl_overdue",
            AttentionKind::ServingExpired => "serving_expired",
            AttentionKind::ExpiringWithoutAutoRenew => "expiring_without_auto_renew",
            AttentionKind::RenewalOverdue => "renewal_overdue",
            AttentionKind::Failed => "failed",
            AttentionKind::RenewalFailed => "renewal_failed",
            AttentionKind::DeploymentFailed => "deployment_failed",
            AttentionKind::Drifted => "drifted",
            AttentionKind::Stuck => "stuck",
            AttentionKind::Retrying => "retrying",
            AttentionKind::DeploymentStuck => "deployment_stuck",
        }
    }

    /// A short label for people.
    pub fn label(self) -> &'static str {
        match self {
            AttentionKind::ServingRevoked => "Revoked but still deployed",
            AttentionKind::RevocationOverdue => "Revocation overdue",
            AttentionKind::CrlOverdue => "Revoked, not on a CRL",
            AttentionKind::ServingExpired => "Expired but still deployed",
            AttentionKind::ExpiringWithoutAutoRenew => "Expiring, auto-renew off",
            AttentionKind::RenewalOverdue => "Renewal overdue",
            AttentionKind::Failed => "Issuance failed",
            AttentionKind::RenewalFailed => "Renewal failed",
            AttentionKind::DeploymentFailed => "Deployment failed",
            AttentionKind::Drifted => "Deployment drifted",
            AttentionKind::Stuck => "Stuck",
            AttentionKind::Retrying => "Failing, retrying",
            AttentionKind::DeploymentStuck => "Deployment not verified",
        }
    }
}

/// How urgent an attention item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Act now.
    Critical,
    /// Act soon.
    Warning,
}

/// One thing that needs attention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttentionItem {
    /// Why.
    pub kind: AttentionKind,
    /// How urgent.
    pub severity: Severity,
    /// The certificate.
    pub certificate_id: String,
    /// The target, for deployment items.
    pub target_id: Option<String>,
    /// The certificate's names.
    pub domains: Vec<String>,
    /// The certificate's status.
    pub status: String,
    /// What is wrong, for a person.
    pub message: String,
    /// Since when (or, for expiry, the not-after time).
    pub since: DateTime<Utc>,
}

/// A certificate with everything the read models know about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CertificateDetail {
    /// The inventory row.
    pub certificate: InventoryRow,
    /// Its expiry calendar entry (issued certificates).
    pub expiry: Option<ExpiryRow>,
    /// Its deployments, by target.
    pub deployments: Vec<DeploymentRow>,
    /// Its revocation, if asked for.
    pub revocation: Option<RevocationStatus>,
    /// What about it needs attention.
    pub attention: Vec<AttentionItem>,
}

/// A revocation with its compliance clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RevocationStatus {
    /// The row.
    #[serde(flatten)]
    pub revocation: RevocationRow,
    /// Revocation must be recorded by then (requested at + deadline).
    pub revoke_deadline: Option<DateTime<Utc>>,
    /// Seconds from request to revoked.
    pub seconds_to_revoke: Option<i64>,
    /// `met`, `late`, `pending`, `overdue`, or `no_request` (revoked without a request).
    pub revoke_compliance: String,
    /// The CRL must be re-signed by then (revoked at + deadline).
    pub crl_deadline: Option<DateTime<Utc>>,
    /// `published`, `published_late`, `awaiting`, or `overdue` (past the deadline with
    /// no recorded CRL listing it).
    pub crl_compliance: String,
}

/// Counts of certificates by status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusCount {
    /// Status.
    pub status: String,
    /// Issuer.
    pub issuer: String,
    /// How many.
    pub count: i64,
}

fn encode_token(last_id: &str) -> String {
    hex::encode(last_id.as_bytes())
}

fn decode_token(token: &str) -> Result<Option<String>, ProjectionError> {
    if token.is_empty() {
        return Ok(None);
    }
    hex::decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .map(Some)
        .ok_or_else(|| {
            ProjectionError::invalid(
                "page_token",
                "is not a token this service issued; start again without one",
            )
        })
}

fn like_pattern(s: &str) -> String {
    let mut out = String::from("%");
    for c in s.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// A bound value of a dynamically built query.
enum Arg {
    Text(String),
    Int(i64),
}

async fn fetch_inventory(
    conn: &mut Conn,
    sql: String,
    args: Vec<Arg>,
    what: &str,
) -> Result<Vec<InventoryRow>, ProjectionError> {
    on!(conn, c => {
        let mut q = sqlx::query(AssertSqlSafe(sql.clone()));
        for a in &args {
            q = match a {
                Arg::Text(t) => q.bind(t.clone()),
                Arg::Int(i) => q.bind(*i),
            };
        }
        let rows = q.fetch_all(&mut *c).await;
        rows.and_then(|rows| rows.iter().map(inventory_from_row).collect::<Result<Vec<_>, _>>())
    })
    .map_err(ProjectionError::db(what.to_owned()))
}

macro_rules! fetch_rows {
    ($conn:expr, $what:expr, $decode:ident, $sql:expr $(, $arg:expr)* $(,)?) => {
        on!($conn, c => {
            let rows = sqlx::query($sql)$(.bind($arg))*.fetch_all(&mut *c).await;
            rows.and_then(|rows| rows.iter().map(|r| $decode(r)).collect::<Result<Vec<_>, _>>())
        })
        .map_err(ProjectionError::db($what))
    };
}

impl ProjectionStore {
    /// Certificates of `tenant` matching `filter`, ordered by id, one page at a time.
    pub async fn list_certificates(
        &self,
        tenant: &str,
        filter: &CertificateFilter,
        page: &PageRequest,
        now: DateTime<Utc>,
        policy: &AttentionPolicy,
    ) -> Result<Page<InventoryRow>, ProjectionError> {
        let size = match page.page_size {
            0 => 100,
            n if n > MAX_PAGE_SIZE => {
                return Err(ProjectionError::invalid(
                    "page_size",
                    format!("{n} is more than the {MAX_PAGE_SIZE} allowed"),
                ));
            }
            n => n,
        };
        let after = decode_token(&page.page_token)?;
        let mut sql = format!("SELECT {INVENTORY_COLUMNS} FROM inventory WHERE tenant = $1");
        let mut args = vec![Arg::Text(tenant.to_owned())];
        let mut push = |cond: &str, arg: Arg, sql: &mut String| {
            args.push(arg);
            sql.push_str(&cond.replace("$?", &format!("${}", args.len())));
        };
        if let Some(status) = filter.status.as_deref().filter(|s| !s.is_empty()) {
            if !STATUSES.contains(&status) {
                return Err(ProjectionError::invalid(
                    "status",
                    format!(
                        "{status:?} is not a status; use one of {}",
                        STATUSES.join(", ")
                    ),
                ));
            }
            push(" AND status = $?", Arg::Text(status.to_owned()), &mut sql);
        }
        if let Some(d) = filter.domain_contains.as_deref().filter(|s| !s.is_empty()) {
            push(
                " AND domains LIKE $? ESCAPE '\\'",
                Arg::Text(like_pattern(d)),
                &mut sql,
            );
        }
        if let Some(issuer) = filter.issuer.as_deref().filter(|s| !s.is_empty()) {
            push(" AND issuer = $?", Arg::Text(issuer.to_owned()), &mut sql);
        }
        if let Some(target) = filter.target_id.as_deref().filter(|s| !s.is_empty()) {
            push(
                " AND certificate_id IN (SELECT certificate_id FROM deployments WHERE target_id = $?)",
                Arg::Text(target.to_owned()),
                &mut sql,
            );
        }
        if let Some(before) = filter.expiring_before {
            push(
                " AND not_after IS NOT NULL AND not_after < $?",
                Arg::Int(micros(before)),
                &mut sql,
            );
        }
        if let Some(after) = &after {
            push(
                " AND certificate_id > $?",
                Arg::Text(after.clone()),
                &mut sql,
            );
        }
        sql.push_str(" ORDER BY certificate_id");
        let attention: Option<HashSet<String>> = if filter.needs_attention {
            Some(
                self.attention(tenant, now, policy)
                    .await?
                    .into_iter()
                    .map(|a| a.certificate_id)
                    .collect(),
            )
        } else {
            sql.push_str(&format!(" LIMIT {}", size + 1));
            None
        };
        let what = format!("list certificates of tenant {tenant}");
        let mut conn = self.conn(&what).await?;
        let mut rows = fetch_inventory(&mut conn, sql, args, &what).await?;
        if let Some(ids) = attention {
            rows.retain(|r| ids.contains(&r.certificate_id));
        }
        let more = rows.len() > size as usize;
        rows.truncate(size as usize);
        let next_page_token = match (more, rows.last()) {
            (true, Some(last)) => encode_token(&last.certificate_id),
            _ => String::new(),
        };
        Ok(Page {
            items: rows,
            next_page_token,
        })
    }

    /// One certificate's inventory row.
    pub async fn certificate(
        &self,
        tenant: &str,
        certificate_id: &str,
    ) -> Result<Option<InventoryRow>, ProjectionError> {
        let what = format!("read certificate {certificate_id}");
        let mut conn = self.conn(&what).await?;
        let rows = fetch_inventory(
            &mut conn,
            format!(
                "SELECT {INVENTORY_COLUMNS} FROM inventory WHERE tenant = $1 AND certificate_id = $2"
            ),
            vec![
                Arg::Text(tenant.to_owned()),
                Arg::Text(certificate_id.to_owned()),
            ],
            &what,
        )
        .await?;
        Ok(rows.into_iter().next())
    }

    /// Everything the read models know about one certificate.
    pub async fn certificate_detail(
        &self,
        tenant: &str,
        certificate_id: &str,
        now: DateTime<Utc>,
        policy: &AttentionPolicy,
    ) -> Result<Option<CertificateDetail>, ProjectionError> {
        let Some(certificate) = self.certificate(tenant, certificate_id).await? else {
            return Ok(None);
        };
        let what = format!("read certificate {certificate_id}");
        let mut conn = self.conn(&what).await?;
        let expiry = fetch_rows!(
            &mut conn,
            what.clone(),
            expiry_from_row,
            AssertSqlSafe(format!(
                "SELECT {EXPIRY_COLUMNS} FROM expiry_calendar WHERE tenant = $1 AND certificate_id = $2"
            )),
            tenant,
            certificate_id
        )?
        .into_iter()
        .next();
        let deployments = fetch_rows!(
            &mut conn,
            what.clone(),
            deployment_from_row,
            AssertSqlSafe(format!(
                "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE tenant = $1 AND certificate_id = $2 ORDER BY target_id"
            )),
            tenant,
            certificate_id
        )?;
        let revocation = fetch_rows!(
            &mut conn,
            what.clone(),
            revocation_from_row,
            AssertSqlSafe(format!(
                "SELECT {REVOCATION_COLUMNS} FROM revocations WHERE tenant = $1 AND certificate_id = $2"
            )),
            tenant,
            certificate_id
        )?
        .into_iter()
        .next();
        drop(conn);
        let mut attention = classify_certificate(&certificate, now, policy);
        for d in &deployments {
            attention.extend(classify_deployment(
                d,
                &certificate.domains,
                &certificate.status,
                now,
                policy,
            ));
        }
        if let Some(r) = &revocation {
            attention.extend(classify_revocation(
                r,
                &certificate.domains,
                &certificate.status,
                now,
                policy,
            ));
        }
        sort_attention(&mut attention);
        Ok(Some(CertificateDetail {
            revocation: revocation.map(|r| revocation_status(r, now, policy)),
            certificate,
            expiry,
            deployments,
            attention,
        }))
    }

    /// What needs attention in `tenant`, most urgent first.
    pub async fn attention(
        &self,
        tenant: &str,
        now: DateTime<Utc>,
        policy: &AttentionPolicy,
    ) -> Result<Vec<AttentionItem>, ProjectionError> {
        self.attention_for(Some(tenant), now, policy).await
    }

    /// What needs attention in every tenant (for `/metrics`).
    pub async fn attention_all_tenants(
        &self,
        now: DateTime<Utc>,
        policy: &AttentionPolicy,
    ) -> Result<Vec<AttentionItem>, ProjectionError> {
        self.attention_for(None, now, policy).await
    }

    async fn attention_for(
        &self,
        tenant: Option<&str>,
        now: DateTime<Utc>,
        policy: &AttentionPolicy,
    ) -> Result<Vec<AttentionItem>, ProjectionError> {
        let what = format!(
            "needs-attention list of {}",
            tenant.map_or("every tenant".to_owned(), |t| format!("tenant {t}"))
        );
        let tenant_cond = tenant_condition(tenant, "tenant");
        let d_tenant_cond = tenant_condition(tenant, "d.tenant");
        let r_tenant_cond = tenant_condition(tenant, "r.tenant");
        let tenant_arg = tenant.unwrap_or("").to_owned();
        let mut conn = self.conn(&what).await?;
        let horizon = now
            .checked_add_signed(policy.expiring_within.max(policy.auto_renew_grace))
            .unwrap_or(now);
        let certificates = fetch_inventory(
            &mut conn,
            format!(
                "SELECT {INVENTORY_COLUMNS} FROM inventory WHERE {tenant_cond} AND (\
                   (status = 'failed' AND status_since >= $2) \
                   OR (status IN ('applied', 'validating', 'validated', 'issuing') AND (status_since < $3 OR next_retry_at IS NOT NULL)) \
                   OR (status = 'issued' AND (renewal_state = 'failed' OR (not_after IS NOT NULL AND not_after < $4))))"
            ),
            vec![
                Arg::Text(tenant_arg.clone()),
                Arg::Int(micros(now - policy.failed_visible_for)),
                Arg::Int(micros(now - policy.stuck_after)),
                Arg::Int(micros(horizon)),
            ],
            &what,
        )
        .await?;
        let mut items: Vec<AttentionItem> = certificates
            .iter()
            .flat_map(|c| classify_certificate(c, now, policy))
            .collect();

        let deployment_rows = on!(&mut conn, c => {
            let rows = sqlx::query(AssertSqlSafe(format!(
                "SELECT d.certificate_id, d.target_id, d.tenant, d.deployment_id, d.state, d.state_since, \
                 d.replaces_certificate_id, d.replaced_by, d.failure_step, d.failure_code, d.failure_reason, \
                 d.observed_fingerprint, d.updated_position, i.domains AS cert_domains, i.status AS cert_status \
                 FROM deployments d LEFT JOIN inventory i ON i.certificate_id = d.certificate_id \
                 WHERE {d_tenant_cond} AND (d.state IN ('failed', 'drifted', 'serving_revoked', 'serving_expired') \
                   OR (d.state = 'requested' AND d.state_since < $2)) \
                 ORDER BY d.certificate_id, d.target_id"
            )))
            .bind(tenant_arg.clone())
            .bind(micros(now - policy.deployment_stuck_after))
            .fetch_all(&mut *c)
            .await;
            rows.and_then(|rows| {
                rows.iter()
                    .map(|r| {
                        Ok((
                            deployment_from_row(r)?,
                            r.opt_text("cert_domains")?.unwrap_or_default(),
                            r.opt_text("cert_status")?.unwrap_or_default(),
                        ))
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()
            })
        })
        .map_err(ProjectionError::db(format!("{what}: deployments")))?;
        for (d, domains, status) in &deployment_rows {
            let domains: Vec<String> = serde_json::from_str(domains).unwrap_or_default();
            items.extend(classify_deployment(d, &domains, status, now, policy));
        }

        let revocation_rows = on!(&mut conn, c => {
            let rows = sqlx::query(AssertSqlSafe(format!(
                "SELECT r.certificate_id, r.tenant, r.serial, r.reason, r.requested_by, r.requested_at, r.revoked_at, \
                 r.crl_published_at, r.issuer, r.revoked_position, r.updated_position, i.domains AS cert_domains, i.status AS cert_status \
                 FROM revocations r LEFT JOIN inventory i ON i.certificate_id = r.certificate_id \
                 WHERE {r_tenant_cond} AND ((r.revoked_at IS NULL AND r.requested_at < $2) \
                 OR (r.crl_published_at IS NULL AND r.revoked_at < $2)) \
                 ORDER BY r.certificate_id"
            )))
            .bind(tenant_arg.clone())
            .bind(micros(now - policy.revocation_deadline))
            .fetch_all(&mut *c)
            .await;
            rows.and_then(|rows| {
                rows.iter()
                    .map(|r| {
                        Ok((
                            revocation_from_row(r)?,
                            r.opt_text("cert_domains")?.unwrap_or_default(),
                            r.opt_text("cert_status")?.unwrap_or_default(),
                        ))
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()
            })
        })
        .map_err(ProjectionError::db(format!("{what}: revocations")))?;
        for (r, domains, status) in &revocation_rows {
            let domains: Vec<String> = serde_json::from_str(domains).unwrap_or_default();
            items.extend(classify_revocation(r, &domains, status, now, policy));
        }
        sort_attention(&mut items);
        Ok(items)
    }

    /// Issued certificates of `tenant` expiring before `until`, soonest first.
    pub async fn expiry_calendar(
        &self,
        tenant: &str,
        until: DateTime<Utc>,
    ) -> Result<Vec<ExpiryRow>, ProjectionError> {
        let what = format!("expiry calendar of tenant {tenant}");
        let mut conn = self.conn(&what).await?;
        fetch_rows!(
            &mut conn,
            what,
            expiry_from_row,
            AssertSqlSafe(format!(
                "SELECT {EXPIRY_COLUMNS} FROM expiry_calendar WHERE tenant = $1 AND not_after < $2 ORDER BY not_after, certificate_id"
            )),
            tenant,
            micros(until)
        )
    }

    /// Deployments of `tenant`, optionally on one target.
    pub async fn deployments(
        &self,
        tenant: &str,
        target_id: Option<&str>,
    ) -> Result<Vec<DeploymentRow>, ProjectionError> {
        let what = format!("deployments of tenant {tenant}");
        let mut conn = self.conn(&what).await?;
        match target_id {
            Some(target) => fetch_rows!(
                &mut conn,
                what,
                deployment_from_row,
                AssertSqlSafe(format!(
                    "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE tenant = $1 AND target_id = $2 ORDER BY target_id, certificate_id"
                )),
                tenant,
                target
            ),
            None => fetch_rows!(
                &mut conn,
                what,
                deployment_from_row,
                AssertSqlSafe(format!(
                    "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE tenant = $1 ORDER BY target_id, certificate_id"
                )),
                tenant
            ),
        }
    }

    /// Deployment targets of `tenant`.
    pub async fn targets(&self, tenant: &str) -> Result<Vec<TargetRow>, ProjectionError> {
        let what = format!("targets of tenant {tenant}");
        let mut conn = self.conn(&what).await?;
        fetch_rows!(
            &mut conn,
            what,
            target_from_row,
            AssertSqlSafe(format!(
                "SELECT {TARGET_COLUMNS} FROM targets WHERE tenant = $1 ORDER BY target_id"
            )),
            tenant
        )
    }

    /// Revocations of `tenant` with their compliance clocks, latest request first.
    pub async fn revocations(
        &self,
        tenant: &str,
        now: DateTime<Utc>,
        policy: &AttentionPolicy,
    ) -> Result<Vec<RevocationStatus>, ProjectionError> {
        let what = format!("revocations of tenant {tenant}");
        let mut conn = self.conn(&what).await?;
        let rows = fetch_rows!(
            &mut conn,
            what,
            revocation_from_row,
            AssertSqlSafe(format!(
                "SELECT {REVOCATION_COLUMNS} FROM revocations WHERE tenant = $1 ORDER BY requested_at DESC, certificate_id"
            )),
            tenant
        )?;
        Ok(rows
            .into_iter()
            .map(|r| revocation_status(r, now, policy))
            .collect())
    }

    /// Certificates by status and issuer; `None` counts every tenant.
    pub async fn status_counts(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<StatusCount>, ProjectionError> {
        let what = "count certificates by status";
        let mut conn = self.conn(what).await?;
        let cond = tenant_condition(tenant, "tenant");
        let arg = tenant.unwrap_or("").to_owned();
        on!(&mut conn, c => {
            let rows = sqlx::query(AssertSqlSafe(format!(
                "SELECT status, issuer, COUNT(*) AS n FROM inventory WHERE {cond} GROUP BY status, issuer ORDER BY status, issuer"
            )))
            .bind(arg.clone())
            .fetch_all(&mut *c)
            .await;
            rows.and_then(|rows| {
                rows.iter()
                    .map(|r| {
                        Ok(StatusCount {
                            status: r.text("status")?,
                            issuer: r.text("issuer")?,
                            count: r.int("n")?,
                        })
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()
            })
        })
        .map_err(ProjectionError::db(what))
    }

    /// Every row of a read model (all tenants), in key order: for the rebuild
    /// comparison and for debugging.
    pub async fn dump(&self, model: ReadModel) -> Result<Vec<AnyRow>, ProjectionError> {
        let what = format!("dump {}", model.name());
        let mut conn = self.conn(&what).await?;
        Ok(match model {
            ReadModel::Inventory => fetch_inventory(
                &mut conn,
                format!("SELECT {INVENTORY_COLUMNS} FROM inventory ORDER BY certificate_id"),
                vec![],
                &what,
            )
            .await?
            .into_iter()
            .map(AnyRow::Inventory)
            .collect(),
            ReadModel::ExpiryCalendar => fetch_rows!(
                &mut conn,
                what,
                expiry_from_row,
                AssertSqlSafe(format!(
                    "SELECT {EXPIRY_COLUMNS} FROM expiry_calendar ORDER BY certificate_id"
                ))
            )?
            .into_iter()
            .map(AnyRow::ExpiryCalendar)
            .collect(),
            ReadModel::Deployments => {
                let mut rows: Vec<AnyRow> = fetch_rows!(
                    &mut conn,
                    what.clone(),
                    deployment_from_row,
                    AssertSqlSafe(format!(
                        "SELECT {DEPLOYMENT_COLUMNS} FROM deployments ORDER BY certificate_id, target_id"
                    ))
                )?
                .into_iter()
                .map(AnyRow::Deployment)
                .collect();
                rows.extend(
                    fetch_rows!(
                        &mut conn,
                        what,
                        target_from_row,
                        AssertSqlSafe(format!(
                            "SELECT {TARGET_COLUMNS} FROM targets ORDER BY target_id"
                        ))
                    )?
                    .into_iter()
                    .map(AnyRow::Target),
                );
                rows
            }
            ReadModel::Revocations => {
                let mut rows: Vec<AnyRow> = fetch_rows!(
                    &mut conn,
                    what.clone(),
                    revocation_from_row,
                    AssertSqlSafe(format!(
                        "SELECT {REVOCATION_COLUMNS} FROM revocations ORDER BY certificate_id"
                    ))
                )?
                .into_iter()
                .map(AnyRow::Revocation)
                .collect();
                rows.extend(
                    fetch_rows!(
                        &mut conn,
                        what,
                        crl_publication_from_row,
                        AssertSqlSafe(format!(
                            "SELECT {CRL_PUBLICATION_COLUMNS} FROM crl_publications ORDER BY issuer, crl_number"
                        ))
                    )?
                    .into_iter()
                    .map(AnyRow::CrlPublication),
                );
                rows
            }
        })
    }

    /// For `/metrics`: every issued (or expired) certificate's expiry, with the labels
    /// of its inventory row: (row, issuer, first name).
    pub async fn expirations_all_tenants(
        &self,
    ) -> Result<Vec<(ExpiryRow, String, String)>, ProjectionError> {
        let what = "expirations for metrics";
        let mut conn = self.conn(what).await?;
        on!(&mut conn, c => {
            let rows = sqlx::query(
                "SELECT e.certificate_id, e.tenant, e.status, e.not_before, e.not_after, e.renewal_opens_at, \
                 e.auto_renew, e.successor_id, e.updated_position, i.issuer AS cert_issuer, i.domains AS cert_domains \
                 FROM expiry_calendar e LEFT JOIN inventory i ON i.certificate_id = e.certificate_id \
                 ORDER BY e.certificate_id",
            )
            .fetch_all(&mut *c)
            .await;
            rows.and_then(|rows| {
                rows.iter()
                    .map(|r| {
                        let domains: Vec<String> =
                            serde_json::from_str(&r.opt_text("cert_domains")?.unwrap_or_default())
                                .unwrap_or_default();
                        Ok((
                            expiry_from_row(r)?,
                            r.opt_text("cert_issuer")?.unwrap_or_default(),
                            domains.into_iter().next().unwrap_or_default(),
                        ))
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()
            })
        })
        .map_err(ProjectionError::db(what))
    }

    /// For `/metrics`: failure events by kind and issuer, summed over certificates.
    pub async fn failure_totals(&self) -> Result<BTreeMap<(String, String), i64>, ProjectionError> {
        let what = "failure totals for metrics";
        let mut conn = self.conn(what).await?;
        let rows = on!(&mut conn, c => {
            let rows = sqlx::query(
                "SELECT issuer, CAST(SUM(validation_failures) AS BIGINT) AS v, CAST(SUM(issuance_failures) AS BIGINT) AS i, \
                 CAST(SUM(deployment_failures) AS BIGINT) AS d, CAST(SUM(renewal_failures) AS BIGINT) AS r \
                 FROM inventory GROUP BY issuer ORDER BY issuer",
            )
            .fetch_all(&mut *c)
            .await;
            rows.and_then(|rows| {
                rows.iter()
                    .map(|r| {
                        Ok((
                            r.text("issuer")?,
                            [
                                ("validation", r.opt_int("v")?.unwrap_or(0)),
                                ("issuance", r.opt_int("i")?.unwrap_or(0)),
                                ("deployment", r.opt_int("d")?.unwrap_or(0)),
                                ("renewal", r.opt_int("r")?.unwrap_or(0)),
                            ],
                        ))
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()
            })
        })
        .map_err(ProjectionError::db(what))?;
        let mut out = BTreeMap::new();
        for (issuer, kinds) in rows {
            for (kind, n) in kinds {
                out.insert((kind.to_owned(), issuer.clone()), n);
            }
        }
        Ok(out)
    }
}

/// `column = $1` for one tenant; for every tenant `$1 = ''` (bind the empty string).
fn tenant_condition(tenant: Option<&str>, column: &str) -> String {
    match tenant {
        Some(_) => format!("{column} = $1"),
        None => "$1 = ''".to_owned(),
    }
}

fn sort_attention(items: &mut [AttentionItem]) {
    items.sort_by(|a, b| {
        (a.severity, a.kind, a.since, &a.certificate_id, &a.target_id).cmp(&(
            b.severity,
            b.kind,
            b.since,
            &b.certificate_id,
            &b.target_id,
        ))
    });
}

fn day(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d").to_string()
}

/// "3 days", "5 h", "12 min".
pub fn human_duration(d: TimeDelta) -> String {
    let secs = d.num_seconds().abs();
    if secs >= 2 * 86_400 {
        format!("{} days", secs / 86_400)
    } else if secs >= 3_600 {
        format!("{} h", secs / 3_600)
    } else if secs >= 60 {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}

/// The attention items of one certificate's inventory row.
pub fn classify_certificate(
    c: &InventoryRow,
    now: DateTime<Utc>,
    policy: &AttentionPolicy,
) -> Vec<AttentionItem> {
    let item = |kind: AttentionKind, severity: Severity, message: String, since| AttentionItem {
        kind,
        severity,
        certificate_id: c.certificate_id.clone(),
        target_id: None,
        domains: c.domains.clone(),
        status: c.status.clone(),
        message,
        since,
    };
    let failure = || match (&c.last_failure_reason, &c.last_failure_code) {
        (Some(reason), Some(code)) => format!("{reason} ({code})"),
        (Some(reason), None) => reason.clone(),
        _ => "no reason recorded".to_owned(),
    };
    let mut out = Vec::new();
    match c.status.as_str() {
        "failed" if c.status_since >= now - policy.failed_visible_for => out.push(item(
            AttentionKind::Failed,
            Severity::Warning,
            format!("failed: {}", failure()),
            c.status_since,
        )),
        "applied" | "validating" | "validated" | "issuing" => {
            // A retry that is due or just happened; one long past that left the
            // certificate where it was shows up as stuck instead (the failure record stays
            // in the history after a later success, so it alone proves nothing).
            let pending_retry = c
                .next_retry_at
                .filter(|at| c.last_failure_reason.is_some() && *at > now - policy.stuck_after);
            if let Some(retry) = pending_retry {
                out.push(item(
                    AttentionKind::Retrying,
                    Severity::Warning,
                    format!(
                        "{}; next attempt at {}",
                        failure(),
                        retry.format("%Y-%m-%d %H:%M UTC")
                    ),
                    c.last_failure_at.unwrap_or(c.status_since),
                ));
            } else if c.status_since < now - policy.stuck_after {
                out.push(item(
                    AttentionKind::Stuck,
                    Severity::Warning,
                    format!("{} for {}", c.status, human_duration(now - c.status_since)),
                    c.status_since,
                ));
            }
        }
        "issued" => {
            if c.renewal_state.as_deref() == Some("failed") {
                out.push(item(
                    AttentionKind::RenewalFailed,
                    Severity::Warning,
                    format!("renewal failed: {}", failure()),
                    c.last_failure_at.unwrap_or(c.updated_at),
                ));
            }
            let renewed = c.successor_id.is_some() && c.renewal_state.as_deref() != Some("failed");
            if let Some(not_after) = c.not_after {
                let left = not_after - now;
                let when = if left > TimeDelta::zero() {
                    format!("expires {} (in {})", day(not_after), human_duration(left))
                } else {
                    format!("expired {} ({} ago)", day(not_after), human_duration(left))
                };
                if !c.auto_renew && !renewed && left < policy.expiring_within {
                    let severity = if left < policy.auto_renew_grace {
                        Severity::Critical
                    } else {
                        Severity::Warning
                    };
                    out.push(item(
                        AttentionKind::ExpiringWithoutAutoRenew,
                        severity,
                        format!("{when}; auto-renew is off"),
                        not_after,
                    ));
                } else if c.auto_renew
                    && c.renewal_state.as_deref() != Some("completed")
                    && left < policy.auto_renew_grace
                {
                    out.push(item(
                        AttentionKind::RenewalOverdue,
                        Severity::Critical,
                        format!("{when}; auto-renew is on but no successor is issued"),
                        not_after,
                    ));
                }
            }
        }
        _ => {}
    }
    out
}

fn classify_deployment(
    d: &DeploymentRow,
    domains: &[String],
    cert_status: &str,
    now: DateTime<Utc>,
    policy: &AttentionPolicy,
) -> Option<AttentionItem> {
    let (kind, severity, message) = match d.state.as_str() {
        "serving_revoked" => (
            AttentionKind::ServingRevoked,
            Severity::Critical,
            format!(
                "target {} still serves this certificate although it is revoked",
                d.target_id
            ),
        ),
        "serving_expired" => (
            AttentionKind::ServingExpired,
            Severity::Critical,
            format!(
                "target {} still serves this certificate although it has expired",
                d.target_id
            ),
        ),
        "failed" if cert_status == "issued" => (
            AttentionKind::DeploymentFailed,
            Severity::Warning,
            format!(
                "deployment to target {} failed at step {}: {}",
                d.target_id,
                d.failure_step.as_deref().unwrap_or("?"),
                d.failure_reason.as_deref().unwrap_or("no reason recorded")
            ),
        ),
        "drifted" => (
            AttentionKind::Drifted,
            Severity::Warning,
            format!(
                "target {} no longer serves this certificate{}",
                d.target_id,
                d.observed_fingerprint
                    .as_deref()
                    .filter(|f| !f.is_empty())
                    .map(|f| format!(" (serves {})", crate::history::short(f)))
                    .unwrap_or_default()
            ),
        ),
        "requested" if d.state_since < now - policy.deployment_stuck_after => (
            AttentionKind::DeploymentStuck,
            Severity::Warning,
            format!(
                "deployment to target {} requested {} ago and not verified",
                d.target_id,
                human_duration(now - d.state_since)
            ),
        ),
        _ => return None,
    };
    Some(AttentionItem {
        kind,
        severity,
        certificate_id: d.certificate_id.clone(),
        target_id: Some(d.target_id.clone()),
        domains: domains.to_vec(),
        status: cert_status.to_owned(),
        message,
        since: d.state_since,
    })
}

fn classify_revocation(
    r: &RevocationRow,
    domains: &[String],
    cert_status: &str,
    now: DateTime<Utc>,
    policy: &AttentionPolicy,
) -> Option<AttentionItem> {
    let deadline = policy.revocation_deadline;
    let (kind, since, message) = match (r.requested_at, r.revoked_at, r.crl_published_at) {
        (Some(requested), None, _) if now - requested > deadline => (
            AttentionKind::RevocationOverdue,
            requested,
            format!(
                "revocation ({}) requested {} ago and not carried out; the deadline is {}",
                r.reason,
                human_duration(now - requested),
                human_duration(deadline)
            ),
        ),
        (_, Some(revoked), None) if now - revoked > deadline => (
            AttentionKind::CrlOverdue,
            revoked,
            format!(
                "revoked ({}) {} ago and no CRL listing it is recorded; the deadline is {}",
                r.reason,
                human_duration(now - revoked),
                human_duration(deadline)
            ),
        ),
        _ => return None,
    };
    Some(AttentionItem {
        kind,
        severity: Severity::Critical,
        certificate_id: r.certificate_id.clone(),
        target_id: None,
        domains: domains.to_vec(),
        status: cert_status.to_owned(),
        message,
        since,
    })
}

/// A revocation's compliance clock.
pub fn revocation_status(
    r: RevocationRow,
    now: DateTime<Utc>,
    policy: &AttentionPolicy,
) -> RevocationStatus {
    let deadline = policy.revocation_deadline;
    let revoke_deadline = r.requested_at.map(|at| at + deadline);
    let seconds_to_revoke = match (r.requested_at, r.revoked_at) {
        (Some(req), Some(rev)) => Some((rev - req).num_seconds()),
        _ => None,
    };
    let revoke_compliance = match (r.requested_at, r.revoked_at) {
        (Some(req), Some(rev)) if rev - req <= deadline => "met",
        (Some(_), Some(_)) => "late",
        (Some(req), None) if now - req <= deadline => "pending",
        (Some(_), None) => "overdue",
        (None, _) => "no_request",
    }
    .to_owned();
    let crl_deadline = r.revoked_at.map(|at| at + deadline);
    let crl_compliance = match (r.revoked_at, r.crl_published_at) {
        (Some(rev), Some(crl)) if crl - rev <= deadline => "published",
        (Some(_), Some(_)) => "published_late",
        (Some(rev), None) if now - rev <= deadline => "awaiting",
        (Some(_), None) => "overdue",
        (None, _) => "awaiting",
    }
    .to_owned();
    RevocationStatus {
        revocation: r,
        revoke_deadline,
        seconds_to_revoke,
        revoke_compliance,
        crl_deadline,
        crl_compliance,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(status: &str, now: DateTime<Utc>) -> InventoryRow {
        InventoryRow {
            certificate_id: "c".into(),
            tenant: "t".into(),
            status: status.into(),
            domains: vec!["a.example".into()],
            issuer: "builtin".into(),
            key_algorithm: "ecdsa_p256".into(),
            validation_method: "http_01".into(),
            auto_renew: true,
            serial: None,
            not_before: None,
            not_after: None,
            fingerprint: None,
            deployment_count: 0,
            deployment_targets: vec![],
            status_since: now - TimeDelta::minutes(5),
            ordered_at: now - TimeDelta::minutes(10),
            last_failure_reason: None,
            last_failure_code: None,
            last_failure_at: None,
            next_retry_at: None,
            predecessor_id: None,
            successor_id: None,
            renewal_state: None,
            validation_failures: 0,
            issuance_failures: 0,
            deployment_failures: 0,
            renewal_failures: 0,
            stream_version: 1,
            updated_position: 1,
            updated_at: now,
        }
    }

    fn kinds(c: &InventoryRow, now: DateTime<Utc>) -> Vec<AttentionKind> {
        classify_certificate(c, now, &AttentionPolicy::default())
            .into_iter()
            .map(|a| a.kind)
            .collect()
    }

    #[test]
    fn in_progress_retrying_and_stuck() {
        let now = Utc::now();
        let mut c = row("validating", now);
        assert!(
            kinds(&c, now).is_empty(),
            "five minutes of validation is fine"
        );
        c.status_since = now - TimeDelta::hours(2);
        assert_eq!(kinds(&c, now), [AttentionKind::Stuck]);
        c.last_failure_reason = Some("unreachable".into());
        c.next_retry_at = Some(now + TimeDelta::minutes(10));
        assert_eq!(kinds(&c, now), [AttentionKind::Retrying]);
        // A retry long past that left it where it was: stuck, not retrying.
        c.next_retry_at = Some(now - TimeDelta::hours(1) - TimeDelta::minutes(1));
        assert_eq!(kinds(&c, now), [AttentionKind::Stuck]);
        // An old failure on an order that has since moved on is no news.
        c.status = "issuing".into();
        c.status_since = now - TimeDelta::minutes(1);
        assert!(kinds(&c, now).is_empty());
    }

    #[test]
    fn expiry_and_renewal() {
        let now = Utc::now();
        let mut c = row("issued", now);
        c.not_after = Some(now + TimeDelta::days(20));
        assert!(kinds(&c, now).is_empty(), "auto-renew on, 20 days left");
        c.not_after = Some(now + TimeDelta::days(3));
        assert_eq!(kinds(&c, now), [AttentionKind::RenewalOverdue]);
        c.renewal_state = Some("completed".into());
        c.successor_id = Some("c2".into());
        assert!(kinds(&c, now).is_empty(), "renewed");
        c.auto_renew = false;
        c.renewal_state = Some("failed".into());
        let items = classify_certificate(&c, now, &AttentionPolicy::default());
        let got: Vec<(AttentionKind, Severity)> =
            items.iter().map(|a| (a.kind, a.severity)).collect();
        assert_eq!(
            got,
            [
                (AttentionKind::RenewalFailed, Severity::Warning),
                (AttentionKind::ExpiringWithoutAutoRenew, Severity::Critical)
            ]
        );
        c.not_after = Some(now - TimeDelta::days(1));
        assert!(
            classify_certificate(&c, now, &AttentionPolicy::default())
                .iter()
                .any(|a| a.message.starts_with("expired "))
        );
    }

    #[test]
    fn revocation_clock() {
        let now = Utc::now();
        let policy = AttentionPolicy::default();
        let r = |requested: Option<i64>, revoked: Option<i64>| RevocationRow {
            certificate_id: "c".into(),
            tenant: "t".into(),
            serial: None,
            reason: "key_compromise".into(),
            requested_by: None,
            requested_at: requested.map(|h| now - TimeDelta::hours(h)),
            revoked_at: revoked.map(|h| now - TimeDelta::hours(h)),
            crl_published_at: None,
            issuer: None,
            revoked_position: None,
            updated_position: 1,
        };
        let status = |row| revocation_status(row, now, &policy);
        assert_eq!(status(r(Some(2), None)).revoke_compliance, "pending");
        assert_eq!(status(r(Some(30), None)).revoke_compliance, "overdue");
        assert_eq!(status(r(Some(30), Some(1))).revoke_compliance, "late");
        let met = status(r(Some(30), Some(29)));
        assert_eq!(
            (met.revoke_compliance.as_str(), met.seconds_to_revoke),
            ("met", Some(3600))
        );
        assert_eq!(met.crl_compliance, "overdue");
        let on_crl = |hours_after_revoked: i64| RevocationRow {
            crl_published_at: Some(now - TimeDelta::hours(29 - hours_after_revoked)),
            ..r(Some(30), Some(29))
        };
        assert_eq!(status(on_crl(1)).crl_compliance, "published");
        assert_eq!(status(on_crl(25)).crl_compliance, "published_late");
        assert_eq!(status(r(Some(3), Some(2))).crl_compliance, "awaiting");
        let crl_overdue = classify_revocation(&r(Some(30), Some(29)), &[], "revoked", now, &policy);
        assert_eq!(crl_overdue.map(|a| a.kind), Some(AttentionKind::CrlOverdue));
        assert!(classify_revocation(&on_crl(1), &[], "revoked", now, &policy).is_none());
        assert!(classify_revocation(&r(Some(3), Some(2)), &[], "revoked", now, &policy).is_none());
        assert_eq!(status(r(None, Some(1))).revoke_compliance, "no_request");
        assert!(classify_revocation(&r(Some(30), None), &[], "issued", now, &policy).is_some());
        assert!(classify_revocation(&r(Some(2), None), &[], "issued", now, &policy).is_none());
    }
}
