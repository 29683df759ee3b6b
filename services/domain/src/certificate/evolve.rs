//! The fold: `evolve(state, event) -> state`. Events are facts, so evolving never
//! fails: an event that does not fit the state (which `decide` never produces) still
//! counts towards the version and changes as little as it can.

use certledger_proto::common::v1::{
    Failure, FailureCode, KeyAlgorithm, RevocationReason, ValidationMethod,
};
use certledger_proto::events::v1::CertificateEvent;
use certledger_proto::events::v1::application_submitted::KeySource as EventKeySource;
use certledger_proto::events::v1::certificate_event::Event;

use super::state::{
    Application, Approval, CertificateState, Deployment, DeploymentFailure, DeploymentState,
    GeneratedKey, IssuanceIntent, IssuedCertificate, KeyExport, KeySource, Renewal, RenewalState,
    Revocation, RevocationRequest, Status, Validation,
};
use crate::time::from_event_timestamp;

/// Folds one event into the state. Pure and total.
pub fn evolve(mut state: CertificateState, event: &Event) -> CertificateState {
    state.version += 1;
    match event {
        Event::CertificateOrdered(e) => {
            if state.status == Status::Absent {
                state.status = Status::Ordered;
                state.certificate_id = e.certificate_id.clone();
                state.tenant = e.tenant.clone();
                state.spec = e.spec.clone().unwrap_or_default();
                state.predecessor_id = non_empty(&e.predecessor_id);
                state.idempotency_key = non_empty(&e.idempotency_key);
            }
        }
        Event::ApplicationSubmitted(e) => {
            let key_source = match &e.key_source {
                Some(EventKeySource::CsrPem(pem)) => KeySource::Csr { pem: pem.clone() },
                Some(EventKeySource::GenerateKey(algorithm)) => KeySource::Generate {
                    algorithm: KeyAlgorithm::try_from(*algorithm)
                        .unwrap_or(KeyAlgorithm::Unspecified),
                },
                None => KeySource::Generate {
                    algorithm: state.key_algorithm(),
                },
            };
            state.application = Some(Application {
                domains: e.domains.clone(),
                ip_addresses: e.ip_addresses.clone(),
                subject: e.subject.clone().unwrap_or_default(),
                key_source,
            });
            if state.status == Status::Ordered {
                state.status = Status::Applied;
            }
        }
        Event::KeyGenerated(e) => {
            state.key = Some(GeneratedKey {
                key_id: e.key_id.clone(),
                algorithm: KeyAlgorithm::try_from(e.algorithm).unwrap_or(KeyAlgorithm::Unspecified),
                public_key_sha256: e.public_key_sha256.clone(),
            });
        }
        Event::ValidationStarted(e) => {
            state.validation = Some(Validation {
                method: ValidationMethod::try_from(e.method)
                    .unwrap_or(ValidationMethod::Unspecified),
                challenges: e.challenges.clone(),
                validated: Default::default(),
            });
            if matches!(state.status, Status::Applied | Status::Validating) {
                state.status = Status::Validating;
            }
        }
        Event::DomainValidated(e) => {
            if let Some(v) = state.validation.as_mut() {
                v.validated.insert(e.domain.clone());
            }
        }
        Event::ValidationPassed(_) => {
            if matches!(state.status, Status::Applied | Status::Validating) {
                state.status = Status::Validated;
            }
        }
        Event::ValidationFailed(e) => {
            let failure = e.failure.clone().unwrap_or_default();
            let retried = failure.next_retry_at.is_some();
            state.last_failure = Some(failure);
            if !retried && state.status.is_before_issuance() {
                state.status = Status::Failed;
            }
        }
        Event::ApplicationApproved(e) => {
            state.approval = Some(Approval {
                approver: e.approver.clone(),
                comment: e.comment.clone(),
            });
        }
        Event::ApplicationRejected(e) => {
            state.last_failure = Some(Failure {
                code: FailureCode::RejectedByOperator as i32,
                reason: e.reason.clone(),
                attempt: 0,
                next_retry_at: None,
            });
            if state.status.is_before_issuance() {
                state.status = Status::Failed;
            }
        }
        Event::IssuanceIntended(e) => {
            if let Some(old) = state.intent.take() {
                state.abandoned_intents.push(old);
            }
            state.intent = Some(IssuanceIntent {
                issuer_ca_id: e.issuer_ca_id.clone(),
                serial: e.serial.clone(),
                tbs_sha256: e.tbs_sha256.clone(),
                not_before: from_event_timestamp(e.not_before.as_ref()),
                not_after: from_event_timestamp(e.not_after.as_ref()),
            });
            if state.status == Status::Validated {
                state.status = Status::Issuing;
            }
        }
        Event::CertificateIssued(e) => {
            state.issued = Some(IssuedCertificate {
                issuer_ca_id: e.issuer_ca_id.clone(),
                serial: e.serial.clone(),
                not_before: from_event_timestamp(e.not_before.as_ref()),
                not_after: from_event_timestamp(e.not_after.as_ref()),
                sha256_fingerprint: e.sha256_fingerprint.clone(),
                certificate_pem: e.certificate_pem.clone(),
                chain_pem: e.chain_pem.clone(),
            });
            if state.status == Status::Issuing {
                state.status = Status::Issued;
            }
        }
        Event::IssuanceFailed(e) => {
            let failure = e.failure.clone().unwrap_or_default();
            let retried = failure.next_retry_at.is_some();
            state.last_failure = Some(failure);
            if state.status == Status::Issuing
                && let Some(intent) = state.intent.take()
            {
                state.abandoned_intents.push(intent);
            }
            if state.status.is_before_issuance() {
                if !retried {
                    state.status = Status::Failed;
                } else if state.status == Status::Issuing {
                    state.status = Status::Validated;
                }
            }
        }
        Event::OrderCancelled(_) => {
            if state.status.is_before_issuance() {
                state.status = Status::Cancelled;
            }
        }
        Event::DeploymentRequested(e) => {
            state.deployments.insert(
                e.target_id.clone(),
                Deployment {
                    deployment_id: e.deployment_id.clone(),
                    target_id: e.target_id.clone(),
                    state: DeploymentState::Requested,
                    replaces_certificate_id: non_empty(&e.replaces_certificate_id),
                    replaced_by: None,
                    failure: None,
                    observed_fingerprint: None,
                    revoked_served_flagged: false,
                },
            );
        }
        Event::DeploymentSucceeded(e) => {
            let serving = serving_state(state.status);
            if let Some(d) = current_deployment(&mut state, &e.target_id, &e.deployment_id) {
                d.state = serving;
                d.failure = None;
                d.observed_fingerprint = None;
            }
        }
        Event::DeploymentFailed(e) => {
            if let Some(d) = current_deployment(&mut state, &e.target_id, &e.deployment_id) {
                d.state = DeploymentState::Failed;
                d.failure = Some(DeploymentFailure {
                    step: e.step.clone(),
                    failure: e.failure.clone().unwrap_or_default(),
                    observed: e.observed.clone(),
                });
            }
        }
        Event::DeploymentRemoved(e) => {
            if let Some(d) = current_deployment(&mut state, &e.target_id, &e.deployment_id) {
                d.state = DeploymentState::Removed;
            }
        }
        Event::DeploymentReplaced(e) => {
            if let Some(d) = current_deployment(&mut state, &e.target_id, &e.deployment_id) {
                d.state = DeploymentState::Replaced;
                d.replaced_by = non_empty(&e.successor_id);
            }
        }
        Event::DeploymentDrifted(e) => {
            if let Some(d) = current_deployment(&mut state, &e.target_id, &e.deployment_id) {
                d.state = DeploymentState::Drifted;
                d.observed_fingerprint = Some(e.observed_fingerprint.clone());
            }
        }
        Event::RevokedCertificateServed(e) => {
            if let Some(d) = current_deployment(&mut state, &e.target_id, &e.deployment_id) {
                d.revoked_served_flagged = true;
            }
        }
        Event::DeploymentRestored(e) => {
            let serving = serving_state(state.status);
            if let Some(d) = current_deployment(&mut state, &e.target_id, &e.deployment_id) {
                d.state = serving;
                d.observed_fingerprint = None;
            }
        }
        Event::RenewalStarted(e) => {
            state.renewals.push(Renewal {
                successor_id: e.successor_id.clone(),
                reason: e.reason.clone(),
                trigger: e.trigger.clone(),
                state: RenewalState::Active,
                failure: None,
            });
        }
        Event::RenewalFailed(e) => {
            if let Some(r) = state
                .renewals
                .iter_mut()
                .rev()
                .find(|r| r.successor_id == e.successor_id && r.state == RenewalState::Active)
            {
                r.state = RenewalState::Failed;
                r.failure = e.failure.clone();
            }
            if let Some(failure) = &e.failure {
                state.last_failure = Some(failure.clone());
            }
        }
        Event::CertificateSuperseded(e) => {
            match state
                .renewals
                .iter_mut()
                .rev()
                .find(|r| r.successor_id == e.successor_id)
            {
                Some(r) => r.state = RenewalState::Completed,
                None => state.renewals.push(Renewal {
                    successor_id: e.successor_id.clone(),
                    reason: String::new(),
                    trigger: String::new(),
                    state: RenewalState::Completed,
                    failure: None,
                }),
            }
            state.superseded_by = Some(e.successor_id.clone());
        }
        Event::ExpiryApproaching(e) => {
            state.announced_thresholds.insert(e.threshold_days);
        }
        Event::CertificateExpired(_) => {
            if state.status == Status::Issued {
                state.status = Status::Expired;
                for d in state.deployments.values_mut() {
                    if d.state == DeploymentState::Active {
                        d.state = DeploymentState::ServingExpired;
                    }
                }
            }
        }
        Event::RevocationRequested(e) => {
            state.revocation_request = Some(RevocationRequest {
                reason: RevocationReason::try_from(e.reason)
                    .unwrap_or(RevocationReason::Unspecified),
                requested_by: e.requested_by.clone(),
                comment: e.comment.clone(),
            });
        }
        Event::CertificateRevoked(e) => {
            if state.status == Status::Issued {
                state.status = Status::Revoked;
                state.revocation_request = None;
                state.revocation = Some(Revocation {
                    serial: e.serial.clone(),
                    reason: RevocationReason::try_from(e.reason)
                        .unwrap_or(RevocationReason::Unspecified),
                    revoked_at: from_event_timestamp(e.revoked_at.as_ref()),
                });
                for d in state.deployments.values_mut() {
                    if d.state == DeploymentState::Active {
                        d.state = DeploymentState::ServingRevoked;
                    }
                }
            }
        }
        Event::PrivateKeyExported(e) => {
            state.key_exports.push(KeyExport {
                key_id: e.key_id.clone(),
                format: e.format.clone(),
            });
        }
    }
    state
}

/// Folds a whole history from the empty state.
pub fn fold<'a>(events: impl IntoIterator<Item = &'a Event>) -> CertificateState {
    fold_from(CertificateState::default(), events)
}

/// Folds more events into a state.
pub fn fold_from<'a>(
    state: CertificateState,
    events: impl IntoIterator<Item = &'a Event>,
) -> CertificateState {
    events.into_iter().fold(state, evolve)
}

/// Folds one stored `CertificateEvent` wrapper; an empty wrapper (an event type unknown
/// to this build) only counts towards the version.
pub fn evolve_wrapped(state: CertificateState, event: &CertificateEvent) -> CertificateState {
    match &event.event {
        Some(e) => evolve(state, e),
        None => CertificateState {
            version: state.version + 1,
            ..state
        },
    }
}

/// The state a deployment serving this certificate is in, given the certificate's
/// status: never "active" on a revoked or expired certificate.
fn serving_state(status: Status) -> DeploymentState {
    match status {
        Status::Revoked => DeploymentState::ServingRevoked,
        Status::Expired => DeploymentState::ServingExpired,
        _ => DeploymentState::Active,
    }
}

fn current_deployment<'s>(
    state: &'s mut CertificateState,
    target_id: &str,
    deployment_id: &str,
) -> Option<&'s mut Deployment> {
    state
        .deployments
        .get_mut(target_id)
        .filter(|d| d.deployment_id == deployment_id)
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}
