//! The certificate aggregate's state: what [`super::evolve`] folds from its events.

use std::collections::{BTreeMap, BTreeSet};

use certledger_proto::common::v1::{
    CertificateSpec, CertificateStatus, Failure, KeyAlgorithm, RevocationReason, Subject,
    ValidationMethod,
};
use certledger_proto::events::v1::Challenge;
use chrono::{DateTime, Utc};

/// The lifecycle status of a certificate. Mirrors `common.v1.CertificateStatus`, with
/// [`Status::Absent`] (no event yet) in place of `UNSPECIFIED`. Variants are in
/// lifecycle order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Status {
    /// No event yet: the stream does not exist.
    #[default]
    Absent,
    /// Ordered, waiting for the application.
    Ordered,
    /// Application submitted, waiting for validation to start.
    Applied,
    /// Validation (or approval) in progress.
    Validating,
    /// Every name validated (or approved); waiting for the CA.
    Validated,
    /// The serial and to-be-signed hash are recorded; the CA is signing.
    Issuing,
    /// Issued and neither revoked nor expired.
    Issued,
    /// Validation or issuance failed for good; the order is closed.
    Failed,
    /// Cancelled before issuance.
    Cancelled,
    /// Revoked.
    Revoked,
    /// Past its not-after time.
    Expired,
}

impl Status {
    /// Lower-case name for messages, e.g. `"issued"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Absent => "absent",
            Status::Ordered => "ordered",
            Status::Applied => "applied",
            Status::Validating => "validating",
            Status::Validated => "validated",
            Status::Issuing => "issuing",
            Status::Issued => "issued",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            Status::Revoked => "revoked",
            Status::Expired => "expired",
        }
    }

    /// The protobuf status (`Absent` maps to `UNSPECIFIED`).
    pub fn to_proto(self) -> CertificateStatus {
        match self {
            Status::Absent => CertificateStatus::Unspecified,
            Status::Ordered => CertificateStatus::Ordered,
            Status::Applied => CertificateStatus::Applied,
            Status::Validating => CertificateStatus::Validating,
            Status::Validated => CertificateStatus::Validated,
            Status::Issuing => CertificateStatus::Issuing,
            Status::Issued => CertificateStatus::Issued,
            Status::Failed => CertificateStatus::Failed,
            Status::Cancelled => CertificateStatus::Cancelled,
            Status::Revoked => CertificateStatus::Revoked,
            Status::Expired => CertificateStatus::Expired,
        }
    }

    /// Whether the order is still before issuance (and so can be cancelled, except while
    /// the CA is signing).
    pub fn is_before_issuance(self) -> bool {
        matches!(
            self,
            Status::Ordered
                | Status::Applied
                | Status::Validating
                | Status::Validated
                | Status::Issuing
        )
    }

    /// Whether no further lifecycle move is possible (failed, cancelled, revoked, expired).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Status::Failed | Status::Cancelled | Status::Revoked | Status::Expired
        )
    }
}

impl From<Status> for CertificateStatus {
    fn from(status: Status) -> Self {
        status.to_proto()
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the certificate's key pair comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The customer's CSR (PEM); the customer holds the private key.
    Csr {
        /// The CSR in PEM.
        pem: String,
    },
    /// The system generates the key pair (see [`GeneratedKey`]).
    Generate {
        /// The key algorithm; in a command, `UNSPECIFIED` means the specification's.
        algorithm: KeyAlgorithm,
    },
}

/// An application: the names, the subject and the key source. In a command the names
/// are as the customer typed them; in the state they are normalised (A-labels, lower
/// case, canonical IP addresses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Application {
    /// DNS names (SANs).
    pub domains: Vec<String>,
    /// IP address SANs.
    pub ip_addresses: Vec<String>,
    /// Subject distinguished-name fields.
    pub subject: Subject,
    /// CSR or generated key.
    pub key_source: KeySource,
}

impl Application {
    /// Every name: DNS names then IP addresses.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.domains
            .iter()
            .chain(self.ip_addresses.iter())
            .map(String::as_str)
    }
}

/// The key pair the system generated (the private key stays in the key store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedKey {
    /// Id in the key store.
    pub key_id: String,
    /// Algorithm.
    pub algorithm: KeyAlgorithm,
    /// Hex SHA-256 of the DER SubjectPublicKeyInfo.
    pub public_key_sha256: String,
}

/// A validation in progress or done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validation {
    /// The method (the specification's).
    pub method: ValidationMethod,
    /// One challenge per name for HTTP-01/DNS-01; none for APPROVAL/NONE.
    pub challenges: Vec<Challenge>,
    /// The names validated so far.
    pub validated: BTreeSet<String>,
}

/// An operator's approval (validation method APPROVAL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// Who approved.
    pub approver: String,
    /// Their comment.
    pub comment: String,
}

/// What the CA is about to sign, recorded before signing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuanceIntent {
    /// The issuing CA.
    pub issuer_ca_id: String,
    /// Lower-case hex serial.
    pub serial: String,
    /// Hex SHA-256 of the DER TBSCertificate.
    pub tbs_sha256: String,
    /// Validity start.
    pub not_before: DateTime<Utc>,
    /// Validity end.
    pub not_after: DateTime<Utc>,
}

/// The signed certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// The issuing CA.
    pub issuer_ca_id: String,
    /// Lower-case hex serial.
    pub serial: String,
    /// Validity start.
    pub not_before: DateTime<Utc>,
    /// Validity end.
    pub not_after: DateTime<Utc>,
    /// Hex SHA-256 of the DER certificate.
    pub sha256_fingerprint: String,
    /// The certificate (PEM).
    pub certificate_pem: String,
    /// Intermediate(s) then root (PEM).
    pub chain_pem: String,
}

/// Where a renewal stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewalState {
    /// The successor is on its way.
    Active,
    /// The renewal failed; another may be started.
    Failed,
    /// The successor is issued and this certificate is superseded.
    Completed,
}

/// One renewal of this certificate: the successor ordered for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewal {
    /// The successor certificate's id.
    pub successor_id: String,
    /// Why it was started.
    pub reason: String,
    /// Who or what started it.
    pub trigger: String,
    /// Where it stands.
    pub state: RenewalState,
    /// Why it failed, if it did.
    pub failure: Option<Failure>,
}

/// Where a deployment on one target stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeploymentState {
    /// Asked for; not yet verified.
    Requested,
    /// Verified: the target serves this certificate.
    Active,
    /// The installation failed.
    Failed,
    /// The target no longer serves this certificate (seen serving something else).
    Drifted,
    /// Removed from the target.
    Removed,
    /// The successor serves on the target in its place.
    Replaced,
    /// The target serves this certificate although it is revoked.
    ServingRevoked,
    /// The target serves this certificate although it is expired.
    ServingExpired,
}

impl DeploymentState {
    /// The state's name in `order.v1.Deployment.state`: "requested", "succeeded",
    /// "failed", "drifted", "removed", "replaced", "serving_revoked", "serving_expired".
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentState::Requested => "requested",
            DeploymentState::Active => "succeeded",
            DeploymentState::Failed => "failed",
            DeploymentState::Drifted => "drifted",
            DeploymentState::Removed => "removed",
            DeploymentState::Replaced => "replaced",
            DeploymentState::ServingRevoked => "serving_revoked",
            DeploymentState::ServingExpired => "serving_expired",
        }
    }

    /// Whether the target is (believed to be) serving this certificate.
    pub fn is_serving(self) -> bool {
        matches!(
            self,
            DeploymentState::Active
                | DeploymentState::ServingRevoked
                | DeploymentState::ServingExpired
        )
    }

    /// Whether the deployment is over (a new one may be requested on the target).
    pub fn is_closed(self) -> bool {
        matches!(
            self,
            DeploymentState::Failed | DeploymentState::Removed | DeploymentState::Replaced
        )
    }
}

/// Why a deployment failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentFailure {
    /// "write", "reload", "verify" or "webhook".
    pub step: String,
    /// What failed.
    pub failure: Failure,
    /// What was observed.
    pub observed: String,
}

/// The current deployment of this certificate on one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    /// The deployment's id.
    pub deployment_id: String,
    /// The target's id.
    pub target_id: String,
    /// Where it stands.
    pub state: DeploymentState,
    /// The predecessor this deployment replaces on the target, if any.
    pub replaces_certificate_id: Option<String>,
    /// The successor that replaced it, once replaced.
    pub replaced_by: Option<String>,
    /// The last failure, if it failed.
    pub failure: Option<DeploymentFailure>,
    /// The fingerprint last seen served, when drifted.
    pub observed_fingerprint: Option<String>,
    /// Whether the target was flagged as still serving this certificate after its
    /// revocation (RevokedCertificateServed).
    pub revoked_served_flagged: bool,
}

/// A revocation asked for, not yet carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationRequest {
    /// RFC 5280 reason.
    pub reason: RevocationReason,
    /// Who asked.
    pub requested_by: String,
    /// Their comment.
    pub comment: String,
}

/// The revocation the CA recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The serial revoked.
    pub serial: String,
    /// RFC 5280 reason.
    pub reason: RevocationReason,
    /// When.
    pub revoked_at: DateTime<Utc>,
}

/// One export of the generated private key (audit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyExport {
    /// Key store id.
    pub key_id: String,
    /// "pem" or "pkcs12".
    pub format: String,
}

/// A certificate as folded from its events. `CertificateState::default()` is the state
/// of a stream with no events.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CertificateState {
    /// Number of events folded (the stream version).
    pub version: u64,
    /// Lifecycle status.
    pub status: Status,
    /// The certificate's id.
    pub certificate_id: String,
    /// The owning tenant.
    pub tenant: String,
    /// The specification ordered (default while [`Status::Absent`]).
    pub spec: CertificateSpec,
    /// The client's idempotency key of the order, if one was given.
    pub idempotency_key: Option<String>,
    /// The certificate this one renews, if it is a renewal successor.
    pub predecessor_id: Option<String>,
    /// The application (normalised), once submitted.
    pub application: Option<Application>,
    /// The generated key pair, when the system generated it.
    pub key: Option<GeneratedKey>,
    /// The current validation.
    pub validation: Option<Validation>,
    /// The operator's approval (APPROVAL method).
    pub approval: Option<Approval>,
    /// The current issuance intent (serial and TBS hash recorded before signing).
    pub intent: Option<IssuanceIntent>,
    /// Intents whose issuance then failed. Their serials may have been signed, so the
    /// revocation side must still know them.
    pub abandoned_intents: Vec<IssuanceIntent>,
    /// The signed certificate.
    pub issued: Option<IssuedCertificate>,
    /// Renewals of this certificate, oldest first; at most one is active or completed.
    pub renewals: Vec<Renewal>,
    /// The successor that superseded this certificate.
    pub superseded_by: Option<String>,
    /// Deployments, by target id (the latest deployment on each target).
    pub deployments: BTreeMap<String, Deployment>,
    /// Expiry thresholds (days) already announced.
    pub announced_thresholds: BTreeSet<u32>,
    /// A revocation asked for and not yet recorded.
    pub revocation_request: Option<RevocationRequest>,
    /// The recorded revocation.
    pub revocation: Option<Revocation>,
    /// The last validation, approval, issuance or renewal failure.
    pub last_failure: Option<Failure>,
    /// Exports of the generated private key (audit trail).
    pub key_exports: Vec<KeyExport>,
}

impl CertificateState {
    /// Whether the certificate exists (its stream has an order).
    pub fn exists(&self) -> bool {
        self.status != Status::Absent
    }

    /// The specification's validation method.
    pub fn validation_method(&self) -> ValidationMethod {
        ValidationMethod::try_from(self.spec.validation_method)
            .unwrap_or(ValidationMethod::Unspecified)
    }

    /// The specification's key algorithm.
    pub fn key_algorithm(&self) -> KeyAlgorithm {
        KeyAlgorithm::try_from(self.spec.key_algorithm).unwrap_or(KeyAlgorithm::Unspecified)
    }

    /// The application's names (DNS names, then IP addresses); empty before the
    /// application.
    pub fn names(&self) -> Vec<&str> {
        self.application
            .as_ref()
            .map(|a| a.names().collect())
            .unwrap_or_default()
    }

    /// The end of validity, once issued.
    pub fn not_after(&self) -> Option<DateTime<Utc>> {
        self.issued.as_ref().map(|c| c.not_after)
    }

    /// The renewal whose successor is on its way, if any.
    pub fn active_renewal(&self) -> Option<&Renewal> {
        self.renewals
            .iter()
            .find(|r| r.state == RenewalState::Active)
    }

    /// The successor's id: the active renewal's or, once superseded, the superseding
    /// one's.
    pub fn successor_id(&self) -> Option<&str> {
        self.superseded_by
            .as_deref()
            .or_else(|| self.active_renewal().map(|r| r.successor_id.as_str()))
    }

    /// Whether a successor has been issued in this certificate's place.
    pub fn is_superseded(&self) -> bool {
        self.superseded_by.is_some()
    }

    /// The current deployment on a target.
    pub fn deployment(&self, target_id: &str) -> Option<&Deployment> {
        self.deployments.get(target_id)
    }

    /// Whether the certificate is issued, not revoked, and `at` is before its not-after.
    pub fn is_valid_at(&self, at: DateTime<Utc>) -> bool {
        self.status == Status::Issued && self.not_after().is_some_and(|end| at < end)
    }
}
