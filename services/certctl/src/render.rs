//! Human-readable and JSON renderings of certificates, their history, targets and
//! deployments.

use certledger_proto::common::v1::{
    CertificateStatus, DomainSlotKind, Failure, KeyAlgorithm, RevocationReason, ValidationMethod,
};
use certledger_proto::deployment::v1::Target;
use certledger_proto::deployment::v1::target::Kind;
use certledger_proto::events::v1::certificate_event::Event;
use certledger_proto::order::v1::{Certificate, Deployment, HistoryEntry};
use serde_json::{Value, json};

/// The canonical name of a gRPC status code (`INVALID_ARGUMENT`).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// `KEY_ALGORITHM_ECDSA_P256` → `ecdsa-p256`.
fn short(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix)
        .unwrap_or(name)
        .to_ascii_lowercase()
        .replace('_', "-")
}

/// A status as a word (`issued`).
pub fn status_name(status: i32) -> String {
    CertificateStatus::try_from(status)
        .map(|s| short(s.as_str_name(), "CERTIFICATE_STATUS_"))
        .unwrap_or_else(|_| format!("status {status}"))
}

fn key_name(alg: i32) -> String {
    KeyAlgorithm::try_from(alg)
        .map(|a| short(a.as_str_name(), "KEY_ALGORITHM_"))
        .unwrap_or_else(|_| format!("algorithm {alg}"))
}

fn method_name(method: i32) -> String {
    ValidationMethod::try_from(method)
        .map(|m| short(m.as_str_name(), "VALIDATION_METHOD_"))
        .unwrap_or_else(|_| format!("method {method}"))
}

fn slot_name(kind: i32, max: u32) -> String {
    match DomainSlotKind::try_from(kind) {
        Ok(DomainSlotKind::Multi) => format!("multi ({max} names)"),
        Ok(k) => short(k.as_str_name(), "DOMAIN_SLOT_KIND_"),
        Err(_) => format!("slots {kind}"),
    }
}

/// A revocation reason as words (`key-compromise`).
pub fn reason_name(reason: i32) -> String {
    RevocationReason::try_from(reason)
        .map(|r| short(r.as_str_name(), "REVOCATION_REASON_"))
        .unwrap_or_else(|_| format!("reason {reason}"))
}

/// A timestamp as RFC 3339 (UTC, seconds).
pub fn time(ts: Option<&prost_types::Timestamp>) -> String {
    ts.and_then(|t| {
        chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
    })
    .map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
    .unwrap_or_default()
}

fn failure_text(f: &Failure) -> String {
    let code = certledger_proto::common::v1::FailureCode::try_from(f.code)
        .map(|c| short(c.as_str_name(), "FAILURE_CODE_"))
        .unwrap_or_default();
    let mut out = format!("{code}: {}", f.reason);
    if f.attempt > 0 {
        out.push_str(&format!(" (attempt {})", f.attempt));
    }
    if f.next_retry_at.is_some() {
        out.push_str(&format!(", next try {}", time(f.next_retry_at.as_ref())));
    }
    out
}

/// The certificate as `key: value` lines.
pub fn certificate_text(c: &Certificate) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        ("certificate", c.certificate_id.clone()),
        ("status", status_name(c.status)),
        ("domains", c.domains.join(", ")),
    ];
    if let Some(spec) = &c.spec {
        rows.push(("issuer", spec.issuer.clone()));
        rows.push(("key", key_name(spec.key_algorithm)));
        rows.push(("validation", method_name(spec.validation_method)));
        if let Some(slots) = &spec.domain_slots {
            rows.push(("slots", slot_name(slots.kind, slots.max_names)));
        }
        rows.push((
            "validity",
            if spec.validity_days == 0 {
                "issuer default".into()
            } else {
                format!("{} days", spec.validity_days)
            },
        ));
        rows.push((
            "auto-renew",
            if spec.auto_renew { "on" } else { "off" }.into(),
        ));
    }
    rows.push(("ordered at", time(c.ordered_at.as_ref())));
    if !c.serial.is_empty() {
        rows.push(("serial", c.serial.clone()));
        rows.push(("not before", time(c.not_before.as_ref())));
        rows.push(("not after", time(c.not_after.as_ref())));
        rows.push(("sha-256", c.sha256_fingerprint.clone()));
    }
    for ch in &c.challenges {
        rows.push((
            "challenge",
            format!(
                "{} {} token {}",
                ch.domain,
                method_name(ch.method),
                ch.token
            ),
        ));
    }
    if let Some(f) = &c.last_failure {
        rows.push(("last failure", failure_text(f)));
    }
    for d in &c.deployments {
        rows.push((
            "deployment",
            format!("{} on {}: {}", d.deployment_id, d.target_id, d.state),
        ));
    }
    if c.revoked_at.is_some() {
        rows.push((
            "revoked",
            format!(
                "{} ({})",
                time(c.revoked_at.as_ref()),
                reason_name(c.revocation_reason)
            ),
        ));
    }
    if !c.predecessor_id.is_empty() {
        rows.push(("renews", c.predecessor_id.clone()));
    }
    if !c.successor_id.is_empty() {
        rows.push(("renewed by", c.successor_id.clone()));
    }
    rows.push(("version", c.version.to_string()));
    fields(&rows)
}

/// `key: value` lines, the values aligned.
fn fields(rows: &[(&str, String)]) -> String {
    let mut out = String::new();
    for (k, v) in rows {
        out.push_str(&format!("{:<14}{v}\n", format!("{k}:")));
    }
    out
}

/// What to do next with a certificate, for a person.
pub fn next_step(c: &Certificate) -> String {
    let id = &c.certificate_id;
    let approval =
        c.spec.as_ref().map(|s| s.validation_method) == Some(ValidationMethod::Approval as i32);
    match CertificateStatus::try_from(c.status) {
        Ok(CertificateStatus::Ordered) => {
            format!("\nnext: certctl apply {id} --domain <name> --generate-key ecdsa-p256\n")
        }
        Ok(CertificateStatus::Applied | CertificateStatus::Validating) if approval => {
            format!("\nnext: certctl approve {id}   (or: certctl reject {id} --reason …)\n")
        }
        Ok(
            CertificateStatus::Applied
            | CertificateStatus::Validating
            | CertificateStatus::Validated
            | CertificateStatus::Issuing,
        ) => format!("\nnext: certctl watch {id}\n"),
        Ok(CertificateStatus::Issued) => {
            format!("\nnext: certctl export {id} --out ./{id} --include-private-key\n")
        }
        _ => String::new(),
    }
}

/// The certificate as a JSON value.
pub fn certificate_value(c: &Certificate) -> Value {
    let spec = c.spec.as_ref().map(|s| {
        json!({
            "issuer": s.issuer,
            "key_algorithm": key_name(s.key_algorithm),
            "validity_days": s.validity_days,
            "validation_method": method_name(s.validation_method),
            "domain_slots": s.domain_slots.as_ref().map(|d| json!({
                "kind": DomainSlotKind::try_from(d.kind).map(|k| short(k.as_str_name(), "DOMAIN_SLOT_KIND_")).unwrap_or_default(),
                "max_names": d.max_names,
                "allow_wildcards": d.allow_wildcards,
            })),
            "auto_renew": s.auto_renew,
        })
    });
    let opt_time = |t: Option<&prost_types::Timestamp>| {
        t.map(|_| Value::String(time(t))).unwrap_or(Value::Null)
    };
    json!({
        "certificate_id": c.certificate_id,
        "version": c.version,
        "status": status_name(c.status),
        "spec": spec,
        "domains": c.domains,
        "serial": c.serial,
        "not_before": opt_time(c.not_before.as_ref()),
        "not_after": opt_time(c.not_after.as_ref()),
        "sha256_fingerprint": c.sha256_fingerprint,
        "certificate_pem": c.certificate_pem,
        "chain_pem": c.chain_pem,
        "predecessor_id": c.predecessor_id,
        "successor_id": c.successor_id,
        "last_failure": c.last_failure.as_ref().map(|f| json!({
            "text": failure_text(f),
            "reason": f.reason,
            "attempt": f.attempt,
        })),
        "deployments": c.deployments.iter().map(|d| json!({
            "deployment_id": d.deployment_id,
            "target_id": d.target_id,
            "state": d.state,
        })).collect::<Vec<_>>(),
        "revoked_at": opt_time(c.revoked_at.as_ref()),
        "revocation_reason": c.revoked_at.as_ref().map(|_| reason_name(c.revocation_reason)),
        "challenges": c.challenges.iter().map(|ch| json!({
            "domain": ch.domain,
            "method": method_name(ch.method),
            "token": ch.token,
            "key_authorization": ch.key_authorization,
        })).collect::<Vec<_>>(),
        "ordered_at": opt_time(c.ordered_at.as_ref()),
    })
}

/// The certificate as one line of JSON.
pub fn certificate_json(c: &Certificate) -> String {
    certificate_value(c).to_string()
}

/// Certificates as a table.
pub fn certificate_table(list: &[Certificate]) -> String {
    if list.is_empty() {
        return "no certificates\n".into();
    }
    let rows = list.iter().map(|c| {
        [
            c.certificate_id.clone(),
            status_name(c.status),
            c.domains.join(","),
            time(c.not_after.as_ref()),
        ]
    });
    table(["CERTIFICATE", "STATUS", "DOMAINS", "NOT AFTER"], rows)
}

/// Rows under a header, in columns as wide as their widest cell.
pub fn table<const N: usize>(
    header: [&str; N],
    rows: impl IntoIterator<Item = [String; N]>,
) -> String {
    let rows: Vec<[String; N]> = std::iter::once(header.map(str::to_owned))
        .chain(rows)
        .collect();
    let mut widths = [0; N];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i == N - 1 {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The kind of a target and where it installs (`file`, `/srv/tls/cert.pem`).
fn target_kind(t: &Target) -> (&'static str, String) {
    match &t.kind {
        Some(Kind::Nginx(n)) => (
            "nginx",
            format!("{} (verified at {})", n.certificate_path, n.verify_address),
        ),
        Some(Kind::File(f)) => ("file", f.certificate_path.clone()),
        Some(Kind::Webhook(w)) => ("webhook", w.url.clone()),
        None => ("", String::new()),
    }
}

fn target_state(t: &Target) -> &'static str {
    if t.removed { "removed" } else { "active" }
}

/// Targets as a table.
pub fn target_table(list: &[Target]) -> String {
    if list.is_empty() {
        return "no targets (add one: certctl targets add NAME --kind file --cert-path … --key-path …)\n".into();
    }
    let rows = list.iter().map(|t| {
        let (kind, place) = target_kind(t);
        [
            t.target_id.clone(),
            t.name.clone(),
            kind.to_owned(),
            target_state(t).to_owned(),
            place,
        ]
    });
    table(["TARGET", "NAME", "KIND", "STATE", "WHERE"], rows)
}

/// A target as `key: value` lines.
pub fn target_text(t: &Target) -> String {
    let (kind, place) = target_kind(t);
    fields(&[
        ("target", t.target_id.clone()),
        ("name", t.name.clone()),
        ("kind", kind.to_owned()),
        ("where", place),
        ("state", target_state(t).to_owned()),
    ])
}

/// A target as a JSON value.
pub fn target_value(t: &Target) -> Value {
    let settings = match &t.kind {
        Some(Kind::Nginx(n)) => json!({
            "certificate_path": n.certificate_path,
            "key_path": n.key_path,
            "reload_command": n.reload_command,
            "verify_address": n.verify_address,
            "verify_server_name": n.verify_server_name,
        }),
        Some(Kind::File(f)) => json!({
            "certificate_path": f.certificate_path,
            "key_path": f.key_path,
            "chain_path": f.chain_path,
            "command": f.command,
        }),
        Some(Kind::Webhook(w)) => json!({
            "url": w.url,
            "max_attempts": w.max_attempts,
        }),
        None => Value::Null,
    };
    json!({
        "target_id": t.target_id,
        "name": t.name,
        "kind": target_kind(t).0,
        "removed": t.removed,
        "settings": settings,
    })
}

/// A deployment of a certificate as `key: value` lines.
pub fn deployment_text(certificate_id: &str, d: &Deployment) -> String {
    fields(&[
        ("deployment", d.deployment_id.clone()),
        ("certificate", certificate_id.to_owned()),
        ("target", d.target_id.clone()),
        ("state", d.state.clone()),
    ])
}

/// A deployment of a certificate as a JSON value.
pub fn deployment_value(certificate_id: &str, d: &Deployment) -> Value {
    json!({
        "deployment_id": d.deployment_id,
        "certificate_id": certificate_id,
        "target_id": d.target_id,
        "state": d.state,
    })
}

/// What an event says, in a few words.
pub fn event_summary(event: Option<&Event>) -> String {
    let Some(event) = event else {
        return String::new();
    };
    match event {
        Event::CertificateOrdered(e) => {
            let spec = e.spec.as_ref();
            let mut s = format!(
                "ordered from {} ({}, validation {})",
                spec.map(|s| s.issuer.as_str()).unwrap_or(""),
                spec.map(|s| key_name(s.key_algorithm)).unwrap_or_default(),
                spec.map(|s| method_name(s.validation_method))
                    .unwrap_or_default()
            );
            if !e.predecessor_id.is_empty() {
                s.push_str(&format!(", renewing {}", e.predecessor_id));
            }
            s
        }
        Event::ApplicationSubmitted(e) => {
            let key = match &e.key_source {
                Some(certledger_proto::events::v1::application_submitted::KeySource::CsrPem(_)) => {
                    "with a CSR".to_owned()
                }
                Some(
                    certledger_proto::events::v1::application_submitted::KeySource::GenerateKey(
                        alg,
                    ),
                ) => format!("key to generate: {}", key_name(*alg)),
                None => String::new(),
            };
            format!("application for {} ({key})", e.domains.join(", "))
        }
        Event::KeyGenerated(e) => format!(
            "{} key generated (public key sha-256 {})",
            key_name(e.algorithm),
            e.public_key_sha256
        ),
        Event::ValidationStarted(e) if e.challenges.is_empty() => {
            format!("validation started ({})", method_name(e.method))
        }
        Event::ValidationStarted(e) => format!(
            "validation started ({}) for {}",
            method_name(e.method),
            e.challenges
                .iter()
                .map(|c| c.domain.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Event::DomainValidated(e) => {
            format!("{} validated ({})", e.domain, method_name(e.method))
        }
        Event::ValidationPassed(_) => "every domain validated".into(),
        Event::ValidationFailed(e) => format!(
            "validation of {} failed: {}",
            e.domain,
            e.failure.as_ref().map(failure_text).unwrap_or_default()
        ),
        Event::ApplicationApproved(e) => {
            let mut s = format!("approved by {}", e.approver);
            if !e.comment.is_empty() {
                s.push_str(&format!(": {}", e.comment));
            }
            s
        }
        Event::ApplicationRejected(e) => format!("rejected by {}: {}", e.approver, e.reason),
        Event::IssuanceIntended(e) => {
            format!("CA {} is signing serial {}", e.issuer_ca_id, e.serial)
        }
        Event::CertificateIssued(e) => format!(
            "issued: serial {}, valid {} to {}",
            e.serial,
            time(e.not_before.as_ref()),
            time(e.not_after.as_ref())
        ),
        Event::IssuanceFailed(e) => format!(
            "issuance failed: {}",
            e.failure.as_ref().map(failure_text).unwrap_or_default()
        ),
        Event::OrderCancelled(e) => format!("cancelled: {}", e.reason),
        Event::DeploymentRequested(e) => format!("deployment to {} requested", e.target_id),
        Event::DeploymentSucceeded(e) => format!("deployed to {} and verified", e.target_id),
        Event::DeploymentFailed(e) => format!(
            "deployment to {} failed at {}: {}",
            e.target_id,
            e.step,
            e.failure.as_ref().map(failure_text).unwrap_or_default()
        ),
        Event::DeploymentRemoved(e) => format!("removed from {}", e.target_id),
        Event::DeploymentReplaced(e) => {
            format!("replaced on {} by {}", e.target_id, e.successor_id)
        }
        Event::DeploymentDrifted(e) => {
            format!("{} serves something else: {}", e.target_id, e.observed)
        }
        Event::DeploymentRestored(e) => format!("{} serves it again", e.target_id),
        Event::RenewalStarted(e) => format!(
            "renewal started ({}): successor {}",
            e.reason, e.successor_id
        ),
        Event::RenewalFailed(e) => format!(
            "renewal failed: {}",
            e.failure.as_ref().map(failure_text).unwrap_or_default()
        ),
        Event::CertificateSuperseded(e) => format!("superseded by {}", e.successor_id),
        Event::ExpiryApproaching(e) => format!(
            "expires in {} days or less ({})",
            e.threshold_days,
            time(e.not_after.as_ref())
        ),
        Event::CertificateExpired(e) => format!("expired at {}", time(e.not_after.as_ref())),
        Event::RevocationRequested(e) => format!(
            "revocation requested by {} ({})",
            e.requested_by,
            reason_name(e.reason)
        ),
        Event::CertificateRevoked(e) => format!(
            "revoked ({}) at {}",
            reason_name(e.reason),
            time(e.revoked_at.as_ref())
        ),
        Event::PrivateKeyExported(e) => format!("private key exported ({})", e.format),
        // Events newer than this client: the type in the line says what happened.
        #[allow(unreachable_patterns)]
        _ => String::new(),
    }
}

/// One line of a timeline.
pub fn history_line(e: &HistoryEntry) -> String {
    let summary = event_summary(e.event.as_ref().and_then(|ev| ev.event.as_ref()));
    format!(
        "#{:<3} {}  {:<24} {:<10} {summary}",
        e.version,
        time(e.recorded_at.as_ref()),
        e.event_type,
        e.actor
    )
}

/// One history entry as JSON.
pub fn history_value(e: &HistoryEntry) -> Value {
    json!({
        "version": e.version,
        "position": e.position,
        "event_id": e.event_id,
        "event_type": e.event_type,
        "recorded_at": time(e.recorded_at.as_ref()),
        "actor": e.actor,
        "correlation_id": e.correlation_id,
        "summary": event_summary(e.event.as_ref().and_then(|ev| ev.event.as_ref())),
    })
}
