//! Every proto ↔ domain conversion of the services, in one file, so that the domain
//! never sees API types and the API never sees domain types.

use certledger_domain::certificate::{Application, CertificateState, KeySource, Status};
use certledger_domain::time::to_timestamp;
use certledger_domain::{CertificateEvent, DomainError};
use certledger_eventlog::RecordedEvent;
use certledger_proto::common::v1::{CertificateStatus, KeyAlgorithm};
use certledger_proto::events::v1::CertificateEvent as CertificateEventMessage;
use certledger_proto::order::v1 as api;
use chrono::{DateTime, Utc};
use prost_types::Timestamp;

/// A domain instant as a protobuf timestamp.
pub fn timestamp(at: DateTime<Utc>) -> Timestamp {
    to_timestamp(at)
}

/// The API view of a certificate. `domains` lists every name: DNS names, then IP
/// addresses. `challenges` are the ones still pending while validating. `serial` is the
/// issued serial, or the intended one while the CA is signing.
pub fn certificate(
    state: &CertificateState,
    ordered_at: Option<DateTime<Utc>>,
) -> api::Certificate {
    let issued = state.issued.as_ref();
    let challenges = match (&state.validation, state.status) {
        (Some(v), Status::Validating) => v
            .challenges
            .iter()
            .filter(|c| !v.validated.contains(&c.domain))
            .cloned()
            .collect(),
        _ => vec![],
    };
    let serial = issued
        .map(|i| i.serial.clone())
        .or_else(|| {
            state
                .intent
                .as_ref()
                .filter(|_| state.status == Status::Issuing)
                .map(|i| i.serial.clone())
        })
        .unwrap_or_default();
    api::Certificate {
        certificate_id: state.certificate_id.clone(),
        version: state.version,
        status: state.status.to_proto() as i32,
        spec: state.exists().then(|| state.spec.clone()),
        domains: state.names().into_iter().map(str::to_owned).collect(),
        serial,
        not_before: issued.map(|i| timestamp(i.not_before)),
        not_after: issued.map(|i| timestamp(i.not_after)),
        sha256_fingerprint: issued
            .map(|i| i.sha256_fingerprint.clone())
            .unwrap_or_default(),
        certificate_pem: issued
            .map(|i| i.certificate_pem.clone())
            .unwrap_or_default(),
        chain_pem: issued.map(|i| i.chain_pem.clone()).unwrap_or_default(),
        predecessor_id: state.predecessor_id.clone().unwrap_or_default(),
        successor_id: state.successor_id().unwrap_or_default().to_owned(),
        last_failure: state.last_failure.clone(),
        deployments: state
            .deployments
            .values()
            .map(|d| api::Deployment {
                deployment_id: d.deployment_id.clone(),
                target_id: d.target_id.clone(),
                state: d.state.as_str().to_owned(),
            })
            .collect(),
        revocation_reason: state
            .revocation
            .as_ref()
            .map(|r| r.reason as i32)
            .unwrap_or_default(),
        revoked_at: state.revocation.as_ref().map(|r| timestamp(r.revoked_at)),
        challenges,
        ordered_at: ordered_at.map(timestamp),
    }
}

/// One history entry: the envelope and the typed event (`event` unset for an event type
/// this build does not know).
pub fn history_entry(
    recorded: &RecordedEvent,
    event: Option<&CertificateEvent>,
) -> api::HistoryEntry {
    api::HistoryEntry {
        version: recorded.stream_version,
        position: recorded.position,
        event_id: recorded.event_id.to_string(),
        event_type: recorded.event_type.clone(),
        recorded_at: Some(timestamp(recorded.recorded_at)),
        actor: recorded.metadata.actor.clone(),
        correlation_id: recorded
            .metadata
            .correlation_id
            .map(|c| c.to_string())
            .unwrap_or_default(),
        event: event.map(|e| CertificateEventMessage::from(e.clone())),
    }
}

/// The domain application of an API application (names as typed; the decider checks and
/// normalises them). Errors name fields as `application.<field>`.
pub fn application(app: &api::Application) -> Result<Application, DomainError> {
    use api::application::KeySource as Api;
    let key_source = match &app.key_source {
        Some(Api::CsrPem(pem)) => KeySource::Csr { pem: pem.clone() },
        Some(Api::GenerateKey(algorithm)) => KeySource::Generate {
            algorithm: KeyAlgorithm::try_from(*algorithm).map_err(|_| {
                DomainError::invalid(
                    "application.generate_key",
                    format!("{algorithm} is not a known key algorithm"),
                )
            })?,
        },
        None => {
            return Err(DomainError::invalid(
                "application.key_source",
                "is required: give csr_pem (your own CSR) or generate_key (the system generates the key pair)",
            ));
        }
    };
    Ok(Application {
        domains: app.domains.clone(),
        ip_addresses: app.ip_addresses.clone(),
        subject: app.subject.clone().unwrap_or_default(),
        key_source,
    })
}

/// The domain status of an API status (`UNSPECIFIED` → `None`, meaning "any").
pub fn status(status: CertificateStatus) -> Option<Status> {
    Some(match status {
        CertificateStatus::Unspecified => return None,
        CertificateStatus::Ordered => Status::Ordered,
        CertificateStatus::Applied => Status::Applied,
        CertificateStatus::Validating => Status::Validating,
        CertificateStatus::Validated => Status::Validated,
        CertificateStatus::Issuing => Status::Issuing,
        CertificateStatus::Issued => Status::Issued,
        CertificateStatus::Failed => Status::Failed,
        CertificateStatus::Cancelled => Status::Cancelled,
        CertificateStatus::Revoked => Status::Revoked,
        CertificateStatus::Expired => Status::Expired,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_needs_a_key_source() {
        let app = api::Application {
            domains: vec!["example.com".into()],
            ..Default::default()
        };
        let e = application(&app).unwrap_err();
        assert_eq!(e.field(), Some("application.key_source"));
        let app = api::Application {
            key_source: Some(api::application::KeySource::GenerateKey(99)),
            ..app
        };
        assert_eq!(
            application(&app).unwrap_err().field(),
            Some("application.generate_key")
        );
    }

    #[test]
    fn statuses_round_trip() {
        for s in [
            Status::Ordered,
            Status::Applied,
            Status::Validating,
            Status::Validated,
            Status::Issuing,
            Status::Issued,
            Status::Failed,
            Status::Cancelled,
            Status::Revoked,
            Status::Expired,
        ] {
            assert_eq!(status(s.to_proto()), Some(s));
        }
        assert_eq!(status(CertificateStatus::Unspecified), None);
    }
}
