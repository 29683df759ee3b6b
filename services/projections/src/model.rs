//! The read models and their rows, as stored and as served (JSON).

use chrono::{DateTime, Utc};
use serde::Serialize;

/// One read model: a set of tables fed by the log, with its own checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadModel {
    /// Table `inventory`: one row per certificate.
    Inventory,
    /// Table `expiry_calendar`: when each issued certificate expires and may be renewed.
    ExpiryCalendar,
    /// Tables `deployments` (per certificate and target) and `targets`.
    Deployments,
    /// Tables `revocations` (the compliance clock of each revocation) and
    /// `crl_publications` (which dates the CRL leg of that clock).
    Revocations,
}

impl ReadModel {
    /// Every read model.
    pub const ALL: [ReadModel; 4] = [
        ReadModel::Inventory,
        ReadModel::ExpiryCalendar,
        ReadModel::Deployments,
        ReadModel::Revocations,
    ];

    /// The name used in checkpoints, metrics and the rebuild command.
    pub fn name(self) -> &'static str {
        match self {
            ReadModel::Inventory => "inventory",
            ReadModel::ExpiryCalendar => "expiry_calendar",
            ReadModel::Deployments => "deployments",
            ReadModel::Revocations => "revocations",
        }
    }

    /// The read model named `name` (as [`ReadModel::name`]).
    pub fn parse(name: &str) -> Option<ReadModel> {
        ReadModel::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Its place in [`ReadModel::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// Its tables.
    pub fn tables(self) -> &'static [&'static str] {
        match self {
            ReadModel::Inventory => &["inventory"],
            ReadModel::ExpiryCalendar => &["expiry_calendar"],
            ReadModel::Deployments => &["deployments", "targets"],
            ReadModel::Revocations => &["revocations", "crl_publications"],
        }
    }

    /// Whether events of this kind of stream (`certificate`, `target`, `crl`) feed it.
    pub(crate) fn reads(self, kind: StreamKind) -> bool {
        match kind {
            StreamKind::Certificate => true,
            StreamKind::Target => self == ReadModel::Deployments,
            StreamKind::Crl => self == ReadModel::Revocations,
            StreamKind::Other => false,
        }
    }
}

impl std::fmt::Display for ReadModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The kind of a stream, from its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamKind {
    Certificate,
    Target,
    Crl,
    Other,
}

/// The stream id of a certificate.
pub fn certificate_stream(certificate_id: &str) -> String {
    format!("certificate-{certificate_id}")
}

/// (kind, id) of a stream id (`certificate-<id>`, `target-<id>`, `crl-<issuer>`).
pub(crate) fn stream_kind(stream_id: &str) -> (StreamKind, &str) {
    if let Some(id) = stream_id.strip_prefix("certificate-") {
        (StreamKind::Certificate, id)
    } else if let Some(id) = stream_id.strip_prefix("target-") {
        (StreamKind::Target, id)
    } else if let Some(id) = stream_id.strip_prefix("crl-") {
        (StreamKind::Crl, id)
    } else {
        (StreamKind::Other, stream_id)
    }
}

/// One certificate in the inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InventoryRow {
    /// Certificate id.
    pub certificate_id: String,
    /// Owning tenant.
    pub tenant: String,
    /// Lifecycle status (`ordered`, …, `issued`, `failed`, `revoked`, `expired`).
    pub status: String,
    /// DNS names then IP addresses, once the application is in.
    pub domains: Vec<String>,
    /// Issuer id from the specification.
    pub issuer: String,
    /// Key algorithm, e.g. `ecdsa_p256`.
    pub key_algorithm: String,
    /// Validation method, e.g. `http_01`.
    pub validation_method: String,
    /// Whether auto-renew is on.
    pub auto_renew: bool,
    /// Serial (lower-case hex) once issued.
    pub serial: Option<String>,
    /// Validity start once issued.
    pub not_before: Option<DateTime<Utc>>,
    /// Validity end once issued.
    pub not_after: Option<DateTime<Utc>>,
    /// SHA-256 fingerprint once issued.
    pub fingerprint: Option<String>,
    /// Deployments not closed (requested, succeeded, drifted, serving revoked/expired).
    pub deployment_count: i64,
    /// Their target ids.
    pub deployment_targets: Vec<String>,
    /// When the certificate entered its current status.
    pub status_since: DateTime<Utc>,
    /// When it was ordered.
    pub ordered_at: DateTime<Utc>,
    /// The last validation, approval, issuance or renewal failure.
    pub last_failure_reason: Option<String>,
    /// Its code, e.g. `ca_unavailable`.
    pub last_failure_code: Option<String>,
    /// When it happened.
    pub last_failure_at: Option<DateTime<Utc>>,
    /// When it is tried again (unset: not retried).
    pub next_retry_at: Option<DateTime<Utc>>,
    /// The certificate this one renews.
    pub predecessor_id: Option<String>,
    /// The successor (active renewal's or the superseding one).
    pub successor_id: Option<String>,
    /// The latest renewal's state: `active`, `failed`, `completed`.
    pub renewal_state: Option<String>,
    /// Number of `ValidationFailed` and `ApplicationRejected` events.
    pub validation_failures: i64,
    /// Number of `IssuanceFailed` events.
    pub issuance_failures: i64,
    /// Number of `DeploymentFailed` events.
    pub deployment_failures: i64,
    /// Number of `RenewalFailed` events.
    pub renewal_failures: i64,
    /// Stream version reflected.
    pub stream_version: i64,
    /// Log position of the last event reflected.
    pub updated_position: i64,
    /// When that event was recorded.
    pub updated_at: DateTime<Utc>,
}

/// One issued certificate in the expiry calendar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpiryRow {
    /// Certificate id.
    pub certificate_id: String,
    /// Owning tenant.
    pub tenant: String,
    /// `issued` or `expired`.
    pub status: String,
    /// Validity start.
    pub not_before: DateTime<Utc>,
    /// Validity end.
    pub not_after: DateTime<Utc>,
    /// When the renewal window opens (by the configured policy; 30 days before expiry by
    /// default).
    pub renewal_opens_at: DateTime<Utc>,
    /// Whether auto-renew is on.
    pub auto_renew: bool,
    /// The successor, once renewal started or completed.
    pub successor_id: Option<String>,
    /// Log position of the last event reflected.
    pub updated_position: i64,
}

/// The deployment of one certificate on one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeploymentRow {
    /// Certificate id.
    pub certificate_id: String,
    /// Target id.
    pub target_id: String,
    /// Owning tenant.
    pub tenant: String,
    /// The deployment's id.
    pub deployment_id: String,
    /// `requested`, `succeeded`, `failed`, `drifted`, `removed`, `replaced`,
    /// `serving_revoked`, `serving_expired`.
    pub state: String,
    /// When it entered that state.
    pub state_since: DateTime<Utc>,
    /// The predecessor it replaces on the target.
    pub replaces_certificate_id: Option<String>,
    /// The successor that replaced it.
    pub replaced_by: Option<String>,
    /// The failed step (`write`, `reload`, `verify`, `webhook`).
    pub failure_step: Option<String>,
    /// The failure's code.
    pub failure_code: Option<String>,
    /// The failure's reason.
    pub failure_reason: Option<String>,
    /// What the target was seen serving when drifted.
    pub observed_fingerprint: Option<String>,
    /// Log position of the last event reflected.
    pub updated_position: i64,
}

/// A deployment target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetRow {
    /// Target id.
    pub target_id: String,
    /// Owning tenant.
    pub tenant: String,
    /// Its name.
    pub name: String,
    /// `nginx`, `file`, `webhook`.
    pub kind: String,
    /// `registered` or `removed`.
    pub status: String,
    /// Why it was removed.
    pub removal_reason: Option<String>,
    /// When it was registered.
    pub registered_at: DateTime<Utc>,
    /// Log position of the last event reflected.
    pub updated_position: i64,
}

/// The revocation of one certificate: the compliance clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RevocationRow {
    /// Certificate id.
    pub certificate_id: String,
    /// Owning tenant.
    pub tenant: String,
    /// The serial revoked (once revoked).
    pub serial: Option<String>,
    /// RFC 5280 reason, e.g. `key_compromise`.
    pub reason: String,
    /// Who asked.
    pub requested_by: Option<String>,
    /// When revocation was asked for.
    pub requested_at: Option<DateTime<Utc>>,
    /// When the CA recorded it.
    pub revoked_at: Option<DateTime<Utc>>,
    /// When the first CRL listing it was signed (its thisUpdate): the first recorded
    /// CRL of the certificate's issuer whose `revocations_through` reaches
    /// `revoked_position`.
    pub crl_published_at: Option<DateTime<Utc>>,
    /// The issuer (`issuer_ca_id`) whose CRL lists it, once known.
    pub issuer: Option<String>,
    /// Log position of the `CertificateRevoked` event.
    pub revoked_position: Option<i64>,
    /// Log position of the last event reflected.
    pub updated_position: i64,
}

/// One recorded CRL (a `CrlPublished` event of stream `crl-<issuer>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CrlPublicationRow {
    /// The issuer id.
    pub issuer: String,
    /// The CRL number.
    pub crl_number: i64,
    /// thisUpdate: when it was signed.
    pub this_update: DateTime<Utc>,
    /// nextUpdate.
    pub next_update: Option<DateTime<Utc>>,
    /// Revoked certificates listed.
    pub entries: i64,
    /// Every revocation recorded at or before this log position is listed.
    pub revocations_through: i64,
    /// Log position of the event.
    pub position: i64,
}

/// A row of any read model (for dumps and the rebuild comparison).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "table", rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)] // dumps and comparisons only, never a hot path
pub enum AnyRow {
    /// `inventory`.
    Inventory(InventoryRow),
    /// `expiry_calendar`.
    ExpiryCalendar(ExpiryRow),
    /// `deployments`.
    Deployment(DeploymentRow),
    /// `targets`.
    Target(TargetRow),
    /// `revocations`.
    Revocation(RevocationRow),
    /// `crl_publications`.
    CrlPublication(CrlPublicationRow),
}

/// Microseconds since the epoch, as stored.
pub(crate) fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

/// A stored time (microseconds since the epoch); out of range reads as the epoch.
pub(crate) fn from_micros(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or(DateTime::UNIX_EPOCH)
}

/// Lower-case name of a protobuf enum value without its prefix:
/// `KEY_ALGORITHM_ECDSA_P256` → `ecdsa_p256`.
pub(crate) fn enum_name(full: &str, prefix: &str) -> String {
    full.strip_prefix(prefix)
        .unwrap_or(full)
        .to_ascii_lowercase()
}
