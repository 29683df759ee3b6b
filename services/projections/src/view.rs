//! A stream's view: the domain's fold ([`certledger_domain::evolve`]) plus what only the
//! log knows — when each change happened (`recorded_at`) and at which position. Every
//! read-model row is a pure function of the view of its stream at some version, so rows
//! written live, after a gap, or by a rebuild are the same.

use std::collections::BTreeMap;

use certledger_domain::certificate::{CertificateState, RenewalState, RenewalWindow, Status};
use certledger_domain::target::{TargetState, TargetStatus, evolve_target};
use certledger_domain::time::from_timestamp;
use certledger_eventlog::RecordedEvent;
use certledger_proto::codec::EventCodec;
use certledger_proto::common::v1::{
    Failure, FailureCode, KeyAlgorithm, RevocationReason, ValidationMethod,
};
use certledger_proto::events::v1::certificate_event::Event as CertEvent;
use certledger_proto::events::v1::crl_event::Event as CrlEvent;
use certledger_proto::events::v1::target_event::Event as TargetEvent;
use certledger_proto::events::v1::target_registered::Kind;
use chrono::{DateTime, Utc};

use crate::model::{
    CrlPublicationRow, DeploymentRow, ExpiryRow, InventoryRow, RevocationRow, StreamKind,
    TargetRow, enum_name, stream_kind,
};
use crate::store::to_i64;

/// An event decoded by the codec for its stream's kind.
#[derive(Debug, Clone)]
pub(crate) enum Decoded {
    Certificate(CertEvent),
    Target(TargetEvent),
    Crl(CrlEvent),
    /// Unknown type, newer schema, undecodable payload, or a stream kind we do not read:
    /// counts towards the stream version and changes nothing else.
    Skipped,
}

/// Decodes an event; never fails (problems are logged and the event is skipped).
pub(crate) fn decode(event: &RecordedEvent) -> (Decoded, bool) {
    let (kind, _) = stream_kind(&event.stream_id);
    let result = match kind {
        StreamKind::Certificate => {
            CertEvent::decode(&event.event_type, event.schema_version, &event.payload)
                .map(Decoded::Certificate)
        }
        StreamKind::Target => {
            TargetEvent::decode(&event.event_type, event.schema_version, &event.payload)
                .map(Decoded::Target)
        }
        StreamKind::Crl => {
            CrlEvent::decode(&event.event_type, event.schema_version, &event.payload)
                .map(Decoded::Crl)
        }
        StreamKind::Other => return (Decoded::Skipped, true),
    };
    match result {
        Ok(decoded) => (decoded, true),
        Err(error) => {
            tracing::warn!(
                position = event.position,
                stream = %event.stream_id,
                event_type = %event.event_type,
                schema_version = event.schema_version,
                %error,
                "skipping an event this build cannot read"
            );
            (Decoded::Skipped, false)
        }
    }
}

/// How many failure events a certificate has had.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FailureCounts {
    pub validation: i64,
    pub issuance: i64,
    pub deployment: i64,
    pub renewal: i64,
}

/// A certificate stream folded, with times.
#[derive(Debug, Clone, Default)]
pub(crate) struct CertificateView {
    /// The certificate id (from the stream id, which is what rows are keyed by).
    pub id: String,
    pub state: CertificateState,
    /// Stream version folded (also counts skipped events).
    pub version: u64,
    /// Position of the last event folded.
    pub position: u64,
    pub last_event_at: Option<DateTime<Utc>>,
    /// The tenant in the events' metadata (used if the order carries none).
    pub metadata_tenant: String,
    pub ordered_at: Option<DateTime<Utc>>,
    pub status_since: Option<DateTime<Utc>>,
    pub last_failure_at: Option<DateTime<Utc>>,
    pub deployment_since: BTreeMap<String, DateTime<Utc>>,
    pub revocation_requested_at: Option<DateTime<Utc>>,
    pub revocation_requested_by: Option<String>,
    pub revocation_requested_reason: Option<RevocationReason>,
    /// Position of the `CertificateRevoked` event.
    pub revoked_position: Option<u64>,
    pub failures: FailureCounts,
}

/// A target stream folded, with times.
#[derive(Debug, Clone, Default)]
pub(crate) struct TargetView {
    /// The target id (from the stream id).
    pub id: String,
    pub state: TargetState,
    pub version: u64,
    pub position: u64,
    pub metadata_tenant: String,
    pub registered_at: Option<DateTime<Utc>>,
}

/// A CRL stream folded: every CRL recorded (a few per day and issuer).
#[derive(Debug, Clone, Default)]
pub(crate) struct CrlView {
    /// The issuer id (from the stream id).
    pub issuer: String,
    pub version: u64,
    /// The CRLs, each with the stream version of its event.
    pub publications: Vec<(u64, CrlPublicationRow)>,
}

/// The view of any stream.
#[derive(Debug, Clone)]
pub(crate) enum StreamView {
    Certificate(Box<CertificateView>),
    Target(Box<TargetView>),
    Crl(Box<CrlView>),
    Other { version: u64 },
}

impl StreamView {
    /// The view of a stream with no events.
    pub fn empty(stream_id: &str) -> StreamView {
        match stream_kind(stream_id) {
            (StreamKind::Certificate, id) => StreamView::Certificate(Box::new(CertificateView {
                id: id.to_owned(),
                ..CertificateView::default()
            })),
            (StreamKind::Target, id) => StreamView::Target(Box::new(TargetView {
                id: id.to_owned(),
                ..TargetView::default()
            })),
            (StreamKind::Crl, issuer) => StreamView::Crl(Box::new(CrlView {
                issuer: issuer.to_owned(),
                ..CrlView::default()
            })),
            (StreamKind::Other, _) => StreamView::Other { version: 0 },
        }
    }

    pub fn version(&self) -> u64 {
        match self {
            StreamView::Certificate(v) => v.version,
            StreamView::Target(v) => v.version,
            StreamView::Crl(v) => v.version,
            StreamView::Other { version } => *version,
        }
    }

    /// Folds the next event of the stream, in place.
    pub fn apply(&mut self, event: &RecordedEvent, decoded: &Decoded) {
        match self {
            StreamView::Certificate(v) => {
                let cert = match decoded {
                    Decoded::Certificate(e) => Some(e),
                    _ => None,
                };
                apply_certificate(v, event, cert);
            }
            StreamView::Target(v) => {
                if let Decoded::Target(e) = decoded {
                    let state = std::mem::take(&mut v.state);
                    let was_absent = !state.exists();
                    v.state = evolve_target(state, e);
                    if was_absent && v.state.exists() {
                        v.registered_at = Some(event.recorded_at);
                    }
                }
                v.version += 1;
                v.position = event.position;
                if v.metadata_tenant.is_empty() {
                    v.metadata_tenant = event.metadata.tenant.clone();
                }
            }
            StreamView::Crl(v) => {
                v.version += 1;
                if let Decoded::Crl(CrlEvent::CrlPublished(p)) = decoded {
                    let publication = CrlPublicationRow {
                        issuer: v.issuer.clone(),
                        crl_number: to_i64(p.crl_number),
                        this_update: p
                            .this_update
                            .as_ref()
                            .and_then(from_timestamp)
                            .unwrap_or(event.recorded_at),
                        next_update: p.next_update.as_ref().and_then(from_timestamp),
                        entries: to_i64(p.entries),
                        revocations_through: to_i64(p.revocations_through),
                        position: to_i64(event.position),
                    };
                    v.publications.push((v.version, publication));
                }
            }
            StreamView::Other { version } => *version += 1,
        }
    }
}

fn apply_certificate(v: &mut CertificateView, event: &RecordedEvent, decoded: Option<&CertEvent>) {
    let at = event.recorded_at;
    v.version += 1;
    v.position = event.position;
    v.last_event_at = Some(at);
    if v.metadata_tenant.is_empty() {
        v.metadata_tenant = event.metadata.tenant.clone();
    }
    let Some(e) = decoded else {
        // Only the version moves, as the domain's `evolve_wrapped` does for an empty
        // wrapper.
        v.state.version += 1;
        return;
    };
    let before_status = v.state.status;
    let before_deployments: BTreeMap<String, (String, &'static str)> = v
        .state
        .deployments
        .iter()
        .map(|(t, d)| (t.clone(), (d.deployment_id.clone(), d.state.as_str())))
        .collect();
    let state = std::mem::take(&mut v.state);
    v.state = certledger_domain::evolve(state, e);

    if v.state.status != before_status {
        v.status_since = Some(at);
    }
    match e {
        CertEvent::CertificateOrdered(_) if v.ordered_at.is_none() => v.ordered_at = Some(at),
        CertEvent::ValidationFailed(_) | CertEvent::ApplicationRejected(_) => {
            v.failures.validation += 1;
            v.last_failure_at = Some(at);
        }
        CertEvent::IssuanceFailed(_) => {
            v.failures.issuance += 1;
            v.last_failure_at = Some(at);
        }
        CertEvent::DeploymentFailed(_) => v.failures.deployment += 1,
        CertEvent::RenewalFailed(r) => {
            v.failures.renewal += 1;
            if r.failure.is_some() {
                v.last_failure_at = Some(at);
            }
        }
        CertEvent::CertificateRevoked(_) if v.revoked_position.is_none() => {
            v.revoked_position = Some(event.position);
        }
        CertEvent::RevocationRequested(r) if v.revocation_requested_at.is_none() => {
            v.revocation_requested_at = Some(at);
            v.revocation_requested_by = Some(r.requested_by.clone());
            v.revocation_requested_reason =
                Some(RevocationReason::try_from(r.reason).unwrap_or(RevocationReason::Unspecified));
        }
        _ => {}
    }
    for (target, d) in &v.state.deployments {
        let changed = before_deployments
            .get(target)
            .is_none_or(|(id, state)| *id != d.deployment_id || *state != d.state.as_str());
        if changed {
            v.deployment_since.insert(target.clone(), at);
        }
    }
}

/// Turns views into rows: the one place that decides what a row says.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowPolicy {
    pub renewal_window: RenewalWindow,
}

fn failure_code(f: &Failure) -> String {
    FailureCode::try_from(f.code)
        .map(|c| enum_name(c.as_str_name(), "FAILURE_CODE_"))
        .unwrap_or_else(|_| format!("code_{}", f.code))
}

pub(crate) fn revocation_reason_name(r: RevocationReason) -> String {
    enum_name(r.as_str_name(), "REVOCATION_REASON_")
}

pub(crate) fn key_algorithm_name(a: KeyAlgorithm) -> String {
    enum_name(a.as_str_name(), "KEY_ALGORITHM_")
}

fn tenant_of(state_tenant: &str, metadata_tenant: &str) -> String {
    if state_tenant.is_empty() {
        metadata_tenant.to_owned()
    } else {
        state_tenant.to_owned()
    }
}

fn epoch_or(at: Option<DateTime<Utc>>) -> DateTime<Utc> {
    at.unwrap_or(DateTime::UNIX_EPOCH)
}

impl CertificateView {
    fn tenant(&self) -> String {
        tenant_of(&self.state.tenant, &self.metadata_tenant)
    }

    pub fn inventory_row(&self) -> Option<InventoryRow> {
        let s = &self.state;
        if !s.exists() {
            return None;
        }
        let open: Vec<String> = s
            .deployments
            .values()
            .filter(|d| !d.state.is_closed())
            .map(|d| d.target_id.clone())
            .collect();
        let failure = s.last_failure.as_ref();
        Some(InventoryRow {
            certificate_id: self.id.clone(),
            tenant: self.tenant(),
            status: s.status.as_str().to_owned(),
            domains: s.names().into_iter().map(str::to_owned).collect(),
            issuer: s.spec.issuer.clone(),
            key_algorithm: key_algorithm_name(s.key_algorithm()),
            validation_method: enum_name(
                ValidationMethod::try_from(s.spec.validation_method)
                    .unwrap_or(ValidationMethod::Unspecified)
                    .as_str_name(),
                "VALIDATION_METHOD_",
            ),
            auto_renew: s.spec.auto_renew,
            serial: s.issued.as_ref().map(|c| c.serial.clone()),
            not_before: s.issued.as_ref().map(|c| c.not_before),
            not_after: s.issued.as_ref().map(|c| c.not_after),
            fingerprint: s.issued.as_ref().map(|c| c.sha256_fingerprint.clone()),
            deployment_count: to_i64(open.len() as u64),
            deployment_targets: open,
            status_since: epoch_or(self.status_since.or(self.last_event_at)),
            ordered_at: epoch_or(self.ordered_at),
            last_failure_reason: failure.map(|f| f.reason.clone()),
            last_failure_code: failure.map(failure_code),
            last_failure_at: failure.and(self.last_failure_at),
            next_retry_at: failure
                .and_then(|f| f.next_retry_at.as_ref())
                .and_then(from_timestamp),
            predecessor_id: s.predecessor_id.clone(),
            successor_id: s.successor_id().map(str::to_owned),
            renewal_state: s.renewals.last().map(|r| {
                match r.state {
                    RenewalState::Active => "active",
                    RenewalState::Failed => "failed",
                    RenewalState::Completed => "completed",
                }
                .to_owned()
            }),
            validation_failures: self.failures.validation,
            issuance_failures: self.failures.issuance,
            deployment_failures: self.failures.deployment,
            renewal_failures: self.failures.renewal,
            stream_version: to_i64(self.version),
            updated_position: to_i64(self.position),
            updated_at: epoch_or(self.last_event_at),
        })
    }

    pub fn expiry_row(&self, policy: &RowPolicy) -> Option<ExpiryRow> {
        let s = &self.state;
        let issued = s.issued.as_ref()?;
        if !matches!(s.status, Status::Issued | Status::Expired) {
            return None;
        }
        Some(ExpiryRow {
            certificate_id: self.id.clone(),
            tenant: self.tenant(),
            status: s.status.as_str().to_owned(),
            not_before: issued.not_before,
            not_after: issued.not_after,
            renewal_opens_at: policy
                .renewal_window
                .opens_at(issued.not_before, issued.not_after),
            auto_renew: s.spec.auto_renew,
            successor_id: s.successor_id().map(str::to_owned),
            updated_position: to_i64(self.position),
        })
    }

    pub fn deployment_rows(&self) -> Vec<DeploymentRow> {
        let s = &self.state;
        if !s.exists() {
            return vec![];
        }
        s.deployments
            .values()
            .map(|d| DeploymentRow {
                certificate_id: self.id.clone(),
                target_id: d.target_id.clone(),
                tenant: self.tenant(),
                deployment_id: d.deployment_id.clone(),
                state: d.state.as_str().to_owned(),
                state_since: epoch_or(self.deployment_since.get(&d.target_id).copied()),
                replaces_certificate_id: d.replaces_certificate_id.clone(),
                replaced_by: d.replaced_by.clone(),
                failure_step: d.failure.as_ref().map(|f| f.step.clone()),
                failure_code: d.failure.as_ref().map(|f| failure_code(&f.failure)),
                failure_reason: d.failure.as_ref().map(|f| f.failure.reason.clone()),
                observed_fingerprint: d.observed_fingerprint.clone(),
                updated_position: to_i64(self.position),
            })
            .collect()
    }

    pub fn revocation_row(&self) -> Option<RevocationRow> {
        let s = &self.state;
        if !s.exists() || (self.revocation_requested_at.is_none() && s.revocation.is_none()) {
            return None;
        }
        let reason = s
            .revocation
            .as_ref()
            .map(|r| r.reason)
            .or(self.revocation_requested_reason)
            .unwrap_or(RevocationReason::Unspecified);
        Some(RevocationRow {
            certificate_id: self.id.clone(),
            tenant: self.tenant(),
            serial: s.revocation.as_ref().map(|r| r.serial.clone()),
            reason: revocation_reason_name(reason),
            requested_by: self.revocation_requested_by.clone(),
            requested_at: self.revocation_requested_at,
            revoked_at: s.revocation.as_ref().map(|r| r.revoked_at),
            // Dated by the CRL's side when the row is written.
            crl_published_at: None,
            issuer: s
                .issued
                .as_ref()
                .map(|c| c.issuer_ca_id.clone())
                .or_else(|| s.intent.as_ref().map(|i| i.issuer_ca_id.clone())),
            revoked_position: self.revoked_position.map(to_i64),
            updated_position: to_i64(self.position),
        })
    }
}

impl TargetView {
    pub fn target_row(&self) -> Option<TargetRow> {
        let s = &self.state;
        if !s.exists() {
            return None;
        }
        Some(TargetRow {
            target_id: self.id.clone(),
            tenant: tenant_of(&s.tenant, &self.metadata_tenant),
            name: s.name.clone(),
            kind: match &s.kind {
                Some(Kind::Nginx(_)) => "nginx",
                Some(Kind::File(_)) => "file",
                Some(Kind::Webhook(_)) => "webhook",
                None => "unknown",
            }
            .to_owned(),
            status: match s.status {
                TargetStatus::Absent => "absent",
                TargetStatus::Registered => "registered",
                TargetStatus::Removed => "removed",
            }
            .to_owned(),
            removal_reason: s.removal_reason.clone(),
            registered_at: epoch_or(self.registered_at),
            updated_position: to_i64(self.position),
        })
    }
}
