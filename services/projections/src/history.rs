//! A certificate's history straight from the log: its timeline (event type, time and key
//! facts of each event) and its state as of a time or log position (a fold of a prefix:
//! "time travel"). Private material (PEM, key authorizations) never appears in summaries.

use std::sync::Arc;

use certledger_domain::certificate::{CertificateState, fold};
use certledger_domain::time::from_timestamp;
use certledger_eventlog::{EventLog, RecordedEvent};
use certledger_proto::codec::EventCodec;
use certledger_proto::common::v1::{
    Failure, FailureCode, KeyAlgorithm, RevocationReason, ValidationMethod,
};
use certledger_proto::events::v1::application_submitted::KeySource;
use certledger_proto::events::v1::certificate_event::Event;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::ProjectionError;
use crate::model::{certificate_stream, enum_name};
use crate::view::{key_algorithm_name, revocation_reason_name};

/// One event of a certificate's history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryItem {
    /// Stream version.
    pub version: u64,
    /// Log position.
    pub position: u64,
    /// Event id.
    pub event_id: String,
    /// Event type, e.g. `CertificateIssued`.
    pub event_type: String,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
    /// Who did it.
    pub actor: String,
    /// Correlation id, if any.
    pub correlation_id: Option<String>,
    /// Key facts, for a person (empty when the event cannot be decoded).
    pub summary: String,
    /// The decoded event (for the query API's `HistoryEntry`); `None` when this build
    /// cannot read it.
    #[serde(skip)]
    pub event: Option<Event>,
}

/// Which prefix of a history to fold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// Events recorded at or before this time.
    Time(DateTime<Utc>),
    /// Events at or before this log position.
    Position(u64),
}

async fn read_certificate_stream(
    log: &Arc<dyn EventLog>,
    tenant: &str,
    certificate_id: &str,
) -> Result<Option<Vec<RecordedEvent>>, ProjectionError> {
    let events = log
        .read_stream(&certificate_stream(certificate_id), 0)
        .await?;
    let Some(first) = events.first() else {
        return Ok(None);
    };
    // The order names the tenant; the metadata carries it on every event.
    let owner = match Event::decode(&first.event_type, first.schema_version, &first.payload) {
        Ok(Event::CertificateOrdered(o)) if !o.tenant.is_empty() => o.tenant,
        _ => first.metadata.tenant.clone(),
    };
    if owner != tenant {
        return Ok(None);
    }
    Ok(Some(events))
}

/// The timeline of a certificate of `tenant`, oldest first; `None` if it does not exist
/// (or belongs to another tenant).
pub async fn history(
    log: &Arc<dyn EventLog>,
    tenant: &str,
    certificate_id: &str,
) -> Result<Option<Vec<HistoryItem>>, ProjectionError> {
    let Some(events) = read_certificate_stream(log, tenant, certificate_id).await? else {
        return Ok(None);
    };
    Ok(Some(
        events
            .into_iter()
            .map(|e| {
                let event = Event::decode(&e.event_type, e.schema_version, &e.payload).ok();
                HistoryItem {
                    version: e.stream_version,
                    position: e.position,
                    event_id: e.event_id.to_string(),
                    summary: event.as_ref().map(summarize).unwrap_or_default(),
                    event,
                    event_type: e.event_type,
                    recorded_at: e.recorded_at,
                    actor: e.metadata.actor,
                    correlation_id: e.metadata.correlation_id.map(|c| c.to_string()),
                }
            })
            .collect(),
    ))
}

/// A certificate of `tenant` as it was at `at`: the fold of its events up to then.
/// `None` if it did not exist yet (or does not exist, or belongs to another tenant).
pub async fn certificate_at(
    log: &Arc<dyn EventLog>,
    tenant: &str,
    certificate_id: &str,
    at: At,
) -> Result<Option<CertificateState>, ProjectionError> {
    let Some(events) = read_certificate_stream(log, tenant, certificate_id).await? else {
        return Ok(None);
    };
    let prefix: Vec<Option<Event>> = events
        .iter()
        .take_while(|e| match at {
            At::Time(t) => e.recorded_at <= t,
            At::Position(p) => e.position <= p,
        })
        .map(|e| Event::decode(&e.event_type, e.schema_version, &e.payload).ok())
        .collect();
    if prefix.is_empty() {
        return Ok(None);
    }
    // Undecodable events count towards the version only, as `evolve_wrapped` does.
    let skipped = prefix.iter().filter(|e| e.is_none()).count() as u64;
    let mut state = fold(prefix.iter().flatten());
    state.version += skipped;
    Ok(Some(state))
}

fn instant(ts: Option<&prost_types::Timestamp>) -> String {
    ts.and_then(from_timestamp)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| "?".to_owned())
}

fn method(m: i32) -> String {
    ValidationMethod::try_from(m)
        .map(|m| enum_name(m.as_str_name(), "VALIDATION_METHOD_").replace('_', "-"))
        .unwrap_or_else(|_| format!("method {m}"))
}

fn failure(f: Option<&Failure>) -> String {
    let Some(f) = f else {
        return "no reason recorded".to_owned();
    };
    let code = FailureCode::try_from(f.code)
        .map(|c| enum_name(c.as_str_name(), "FAILURE_CODE_"))
        .unwrap_or_else(|_| format!("code {}", f.code));
    let mut s = format!("{} ({code}", f.reason);
    if f.attempt > 0 {
        s.push_str(&format!(", attempt {}", f.attempt));
    }
    s.push(')');
    match &f.next_retry_at {
        Some(t) => s.push_str(&format!("; retry at {}", instant(Some(t)))),
        None => s.push_str("; not retried"),
    }
    s
}

pub(crate) fn short(fingerprint: &str) -> &str {
    // By characters: a garbled fingerprint must not split a UTF-8 sequence.
    fingerprint
        .char_indices()
        .nth(16)
        .map_or(fingerprint, |(i, _)| &fingerprint[..i])
}

fn reason(r: i32) -> String {
    revocation_reason_name(RevocationReason::try_from(r).unwrap_or(RevocationReason::Unspecified))
}

/// The key facts of an event in one line.
pub fn summarize(event: &Event) -> String {
    match event {
        Event::CertificateOrdered(e) => {
            let spec = e.spec.clone().unwrap_or_default();
            let mut s = format!(
                "issuer {}, {}, {} days, auto-renew {}",
                spec.issuer,
                key_algorithm_name(
                    KeyAlgorithm::try_from(spec.key_algorithm).unwrap_or(KeyAlgorithm::Unspecified)
                ),
                spec.validity_days,
                if spec.auto_renew { "on" } else { "off" }
            );
            if !e.predecessor_id.is_empty() {
                s.push_str(&format!("; renews {}", e.predecessor_id));
            }
            s
        }
        Event::ApplicationSubmitted(e) => {
            let names: Vec<&str> = e
                .domains
                .iter()
                .chain(e.ip_addresses.iter())
                .map(String::as_str)
                .collect();
            let key = match &e.key_source {
                Some(KeySource::CsrPem(_)) => "customer's CSR".to_owned(),
                Some(KeySource::GenerateKey(a)) => format!(
                    "key generated ({})",
                    key_algorithm_name(
                        KeyAlgorithm::try_from(*a).unwrap_or(KeyAlgorithm::Unspecified)
                    )
                ),
                None => "key generated".to_owned(),
            };
            format!("{}; {key}", names.join(", "))
        }
        Event::KeyGenerated(e) => format!(
            "key {} ({}), public key sha256 {}",
            e.key_id,
            key_algorithm_name(
                KeyAlgorithm::try_from(e.algorithm).unwrap_or(KeyAlgorithm::Unspecified)
            ),
            short(&e.public_key_sha256)
        ),
        Event::ValidationStarted(e) => format!(
            "{}, {} challenge{}",
            method(e.method),
            e.challenges.len(),
            if e.challenges.len() == 1 { "" } else { "s" }
        ),
        Event::DomainValidated(e) => format!("{} ({})", e.domain, method(e.method)),
        Event::ValidationPassed(_) => "every name validated".to_owned(),
        Event::ValidationFailed(e) => format!("{}: {}", e.domain, failure(e.failure.as_ref())),
        Event::ApplicationApproved(e) => format!("approved by {}", e.approver),
        Event::ApplicationRejected(e) => format!("rejected by {}: {}", e.approver, e.reason),
        Event::IssuanceIntended(e) => format!(
            "CA {} signing serial {}, valid until {}",
            e.issuer_ca_id,
            e.serial,
            instant(e.not_after.as_ref())
        ),
        Event::CertificateIssued(e) => format!(
            "serial {}, valid {} to {}, sha256 {}",
            e.serial,
            instant(e.not_before.as_ref()),
            instant(e.not_after.as_ref()),
            short(&e.sha256_fingerprint)
        ),
        Event::IssuanceFailed(e) => failure(e.failure.as_ref()),
        Event::OrderCancelled(e) => format!("cancelled: {}", e.reason),
        Event::DeploymentRequested(e) => {
            let mut s = format!("to target {} (deployment {})", e.target_id, e.deployment_id);
            if !e.replaces_certificate_id.is_empty() {
                s.push_str(&format!(", replacing {}", e.replaces_certificate_id));
            }
            s
        }
        Event::DeploymentSucceeded(e) => format!(
            "target {} verified serving sha256 {}",
            e.target_id,
            short(&e.verified_fingerprint)
        ),
        Event::DeploymentFailed(e) => format!(
            "target {}, step {}: {}",
            e.target_id,
            e.step,
            failure(e.failure.as_ref())
        ),
        Event::DeploymentRemoved(e) => format!("removed from target {}", e.target_id),
        Event::DeploymentReplaced(e) => {
            format!("replaced on target {} by {}", e.target_id, e.successor_id)
        }
        Event::DeploymentDrifted(e) => format!(
            "target {} serves {} instead",
            e.target_id,
            if e.observed_fingerprint.is_empty() {
                "nothing".to_owned()
            } else {
                format!("sha256 {}", short(&e.observed_fingerprint))
            }
        ),
        Event::DeploymentRestored(e) => format!("target {} serves it again", e.target_id),
        Event::RevokedCertificateServed(e) => format!(
            "target {} still serves it after revocation ({})",
            e.target_id, e.observed
        ),
        Event::RenewalStarted(e) => format!(
            "successor {} ({}, by {})",
            e.successor_id, e.reason, e.trigger
        ),
        Event::RenewalFailed(e) => {
            format!(
                "successor {}: {}",
                e.successor_id,
                failure(e.failure.as_ref())
            )
        }
        Event::CertificateSuperseded(e) => format!("superseded by {}", e.successor_id),
        Event::ExpiryApproaching(e) => format!(
            "{} days left (expires {}){}",
            e.threshold_days,
            instant(e.not_after.as_ref()),
            if e.renewal_pending {
                "; renewal pending"
            } else {
                ""
            }
        ),
        Event::CertificateExpired(e) => format!("expired {}", instant(e.not_after.as_ref())),
        Event::RevocationRequested(e) => {
            let mut s = format!("reason {}, by {}", reason(e.reason), e.requested_by);
            if !e.comment.is_empty() {
                s.push_str(&format!(": {}", e.comment));
            }
            s
        }
        Event::CertificateRevoked(e) => format!(
            "serial {} revoked at {} ({})",
            e.serial,
            instant(e.revoked_at.as_ref()),
            reason(e.reason)
        ),
        Event::PrivateKeyExported(e) => format!("key {} exported as {}", e.key_id, e.format),
    }
}
