//! The decider: `decide(command, state) -> events or error`. Pure: no clock, no I/O.
//!
//! Commands that repeat something already recorded (the same renewal successor, a
//! second revoke, a validated name again, …) decide *no events* rather than failing, so
//! that event handlers replaying a message change nothing.

use std::collections::BTreeSet;

use certledger_proto::common::v1::{Failure, FailureCode, RevocationReason, ValidationMethod};
use certledger_proto::events::v1::application_submitted::KeySource as EventKeySource;
use certledger_proto::events::v1::certificate_event::Event;
use certledger_proto::events::v1::{
    ApplicationApproved, ApplicationRejected, ApplicationSubmitted, CertificateExpired,
    CertificateIssued, CertificateOrdered, CertificateRevoked, CertificateSuperseded,
    DeploymentDrifted, DeploymentFailed, DeploymentRemoved, DeploymentReplaced,
    DeploymentRequested, DeploymentRestored, DeploymentSucceeded, DomainValidated,
    ExpiryApproaching, IssuanceFailed, IssuanceIntended, KeyGenerated, OrderCancelled,
    PrivateKeyExported, RenewalFailed, RenewalStarted, RevocationRequested,
    RevokedCertificateServed, ValidationFailed, ValidationPassed, ValidationStarted,
};
use chrono::{DateTime, Utc};

use super::command::*;
use super::policy::validate_thresholds;
use super::state::{
    Application, CertificateState, Deployment, DeploymentState, KeySource, RenewalState, Status,
};
use crate::error::{DomainError, Rule};
use crate::names::validate_application;
use crate::spec::{MAX_VALIDITY_DAYS, validate_spec};
use crate::time::{day, days, days_before, from_timestamp, instant, to_timestamp};
use crate::validate;

/// The deployment steps a `DeploymentFailed` may name.
pub const DEPLOYMENT_STEPS: [&str; 4] = ["write", "reload", "verify", "webhook"];

/// Decides several commands in turn, each on the state the events of the ones before it
/// lead to: all their events, in order, or the first refusal. The events are exactly
/// those that deciding and appending the commands one after the other would record; a
/// service uses it to record steps it takes at once in one append.
pub fn decide_all(
    commands: &[CertificateCommand],
    state: &CertificateState,
) -> Result<Vec<Event>, DomainError> {
    if let [command] = commands {
        return decide(command, state);
    }
    let mut state = state.clone();
    let mut events = Vec::new();
    for command in commands {
        let decided = decide(command, &state)?;
        state = decided.iter().fold(state, super::evolve::evolve);
        events.extend(decided);
    }
    Ok(events)
}

/// Decides which events a command produces on a certificate, or why it is refused.
pub fn decide(
    command: &CertificateCommand,
    state: &CertificateState,
) -> Result<Vec<Event>, DomainError> {
    use CertificateCommand as C;
    if let C::PlaceOrder(c) = command {
        return place_order(c, state);
    }
    if !state.exists() {
        return Err(DomainError::not_found(
            "certificate does not exist; place an order first",
        ));
    }
    match command {
        C::PlaceOrder(_) => Ok(vec![]),
        C::SubmitApplication(c) => submit_application(c, state),
        C::RecordKeyGenerated(c) => record_key_generated(c, state),
        C::StartValidation(c) => start_validation(c, state),
        C::RecordDomainValidated(c) => record_domain_validated(c, state),
        C::RecordValidationFailed(c) => record_validation_failed(c, state),
        C::ApproveApplication(c) => approve(c, state),
        C::RejectApplication(c) => reject(c, state),
        C::IntendIssuance(c) => intend_issuance(c, state),
        C::RecordIssued(c) => record_issued(c, state),
        C::RecordIssuanceFailed(c) => record_issuance_failed(c, state),
        C::CancelOrder(c) => cancel(c, state),
        C::RequestDeployment(c) => request_deployment(c, state),
        C::RecordDeploymentSucceeded(c) => deployment_succeeded(c, state),
        C::RecordDeploymentFailed(c) => deployment_failed(c, state),
        C::RemoveDeployment(c) => remove_deployment(c, state),
        C::RecordDeploymentReplaced(c) => deployment_replaced(c, state),
        C::RecordDeploymentDrifted(c) => deployment_drifted(c, state),
        C::FlagRevokedServed(c) => revoked_served(c, state),
        C::RecordDeploymentRestored(c) => deployment_restored(c, state),
        C::StartRenewal(c) => start_renewal(c, state),
        C::RecordRenewalFailed(c) => renewal_failed(c, state),
        C::MarkSuperseded(c) => mark_superseded(c, state),
        C::CheckExpiry(c) => check_expiry(c, state),
        C::RequestRevocation(c) => request_revocation(c, state),
        C::RecordRevoked(c) => record_revoked(c, state),
        C::RecordPrivateKeyExported(c) => key_exported(c, state),
    }
}

// ---------------------------------------------------------------------------
// Order and application
// ---------------------------------------------------------------------------

fn place_order(c: &PlaceOrder, state: &CertificateState) -> Result<Vec<Event>, DomainError> {
    validate::id("certificate_id", &c.certificate_id)?;
    validate::text("tenant", &c.tenant, true)?;
    validate_spec(&c.spec)?;
    let predecessor_id = c.predecessor_id.clone().unwrap_or_default();
    if !predecessor_id.is_empty() {
        validate::id("predecessor_id", &predecessor_id)?;
        if predecessor_id == c.certificate_id {
            return Err(DomainError::invalid(
                "predecessor_id",
                "a certificate cannot be its own predecessor",
            ));
        }
    }
    let idempotency_key = c.idempotency_key.clone().unwrap_or_default();
    if idempotency_key.len() > 128 {
        return Err(DomainError::invalid(
            "idempotency_key",
            format!(
                "is {} bytes long; at most 128 are allowed",
                idempotency_key.len()
            ),
        ));
    }
    validate::text("idempotency_key", &idempotency_key, false)?;
    let application = c
        .application
        .as_ref()
        .map(|a| validate_application(a, &c.spec))
        .transpose()?;

    if state.exists() {
        let same_key = !idempotency_key.is_empty()
            && state.idempotency_key.as_deref() == Some(idempotency_key.as_str());
        if same_key {
            let same_request = state.tenant == c.tenant
                && state.spec == c.spec
                && state.predecessor_id.clone().unwrap_or_default() == predecessor_id
                && (application.is_none() || application == state.application);
            if same_request {
                return Ok(vec![]);
            }
            return Err(DomainError::already_exists(format!(
                "idempotency key {idempotency_key:?} was already used for a different order (certificate {}); use a new key for a new order",
                state.certificate_id
            )));
        }
        return Err(DomainError::already_exists(format!(
            "certificate {} already exists",
            state.certificate_id
        )));
    }

    let mut events = vec![Event::CertificateOrdered(CertificateOrdered {
        certificate_id: c.certificate_id.clone(),
        tenant: c.tenant.clone(),
        spec: Some(c.spec.clone()),
        predecessor_id,
        idempotency_key,
    })];
    if let Some(app) = application {
        events.push(Event::ApplicationSubmitted(application_event(&app)));
    }
    Ok(events)
}

fn application_event(app: &Application) -> ApplicationSubmitted {
    ApplicationSubmitted {
        domains: app.domains.clone(),
        subject: Some(app.subject.clone()),
        key_source: Some(match &app.key_source {
            KeySource::Csr { pem } => EventKeySource::CsrPem(pem.clone()),
            KeySource::Generate { algorithm } => EventKeySource::GenerateKey(*algorithm as i32),
        }),
        ip_addresses: app.ip_addresses.clone(),
    }
}

fn submit_application(
    c: &SubmitApplication,
    state: &CertificateState,
) -> Result<Vec<Event>, DomainError> {
    if state.status != Status::Ordered {
        if let Some(app) = &state.application {
            return Err(DomainError::precondition(
                Rule::ApplicationAlreadySubmitted,
                format!(
                    "the application was already submitted (names: {}); to change it, cancel this order and place a new one",
                    app.names().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        return Err(lifecycle(
            state,
            "an application can only be submitted to an ordered certificate",
        ));
    }
    let app = validate_application(&c.application, &state.spec)?;
    Ok(vec![Event::ApplicationSubmitted(application_event(&app))])
}

fn record_key_generated(
    c: &RecordKeyGenerated,
    state: &CertificateState,
) -> Result<Vec<Event>, DomainError> {
    let Some(app) = &state.application else {
        return Err(lifecycle(
            state,
            "a key pair is generated only after the application is submitted",
        ));
    };
    let KeySource::Generate { algorithm } = app.key_source else {
        return Err(DomainError::precondition(
            Rule::KeySource,
            "the application brings its own CSR; no key pair is generated for it",
        ));
    };
    key_id("key_id", &c.key_id)?;
    validate::sha256_hex("public_key_sha256", &c.public_key_sha256)?;
    if let Some(key) = &state.key {
        if key.key_id == c.key_id
            && key.algorithm == c.algorithm
            && key.public_key_sha256 == c.public_key_sha256
        {
            return Ok(vec![]);
        }
        return Err(DomainError::precondition(
            Rule::KeySource,
            format!(
                "a key pair was already generated for this certificate (key id {}); it is not replaced",
                key.key_id
            ),
        ));
    }
    if !matches!(
        state.status,
        Status::Applied | Status::Validating | Status::Validated
    ) {
        return Err(lifecycle(
            state,
            "a key pair can only be recorded between the application and issuance",
        ));
    }
    if c.algorithm != algorithm {
        return Err(DomainError::invalid(
            "algorithm",
            format!(
                "the application asked for {}, not {}",
                algorithm.as_str_name(),
                c.algorithm.as_str_name()
            ),
        ));
    }
    Ok(vec![Event::KeyGenerated(KeyGenerated {
        key_id: c.key_id.clone(),
        algorithm: c.algorithm as i32,
        public_key_sha256: c.public_key_sha256.clone(),
    })])
}

// ---------------------------------------------------------------------------
// Validation and approval
// ---------------------------------------------------------------------------

fn start_validation(
    c: &StartValidation,
    state: &CertificateState,
) -> Result<Vec<Event>, DomainError> {
    let method = state.validation_method();
    let challenge_method = matches!(method, ValidationMethod::Http01 | ValidationMethod::Dns01);
    match state.status {
        Status::Applied => {}
        Status::Validating if challenge_method => {}
        Status::Validating if c.challenges.is_empty() => return Ok(vec![]),
        Status::Validating => {
            return Err(DomainError::invalid(
                "challenges",
                format!("{} validation uses no challenges", method_name(method)),
            ));
        }
        _ => {
            return Err(lifecycle(
                state,
                "validation starts after the application is submitted and before it passes",
            ));
        }
    }
    let names = state.names();
    if challenge_method {
        let mut covered = BTreeSet::new();
        for (i, ch) in c.challenges.iter().enumerate() {
            let field = |f: &str| format!("challenges[{i}].{f}");
            if !names.contains(&ch.domain.as_str()) {
                return Err(DomainError::invalid(
                    field("domain"),
                    format!(
                        "{:?} is not one of the application's names ({})",
                        validate::clip(&ch.domain),
                        names.join(", ")
                    ),
                ));
            }
            if !covered.insert(ch.domain.as_str()) {
                return Err(DomainError::invalid(
                    field("domain"),
                    format!(
                        "{} has more than one challenge; give exactly one per name",
                        ch.domain
                    ),
                ));
            }
            if ch.method != method as i32 {
                return Err(DomainError::invalid(
                    field("method"),
                    format!(
                        "must be {}, the ordered validation method",
                        method_name(method)
                    ),
                ));
            }
            challenge_token(&field("token"), &ch.token)?;
            validate::text(&field("key_authorization"), &ch.key_authorization, true)?;
        }
        if let Some(missing) = names.iter().find(|n| !covered.contains(*n)) {
            return Err(DomainError::invalid(
                "challenges",
                format!("no challenge for {missing}; give exactly one challenge per name"),
            ));
        }
    } else if !c.challenges.is_empty() {
        return Err(DomainError::invalid(
            "challenges",
            format!("{} validation uses no challenges", method_name(method)),
        ));
    }
    let mut events = vec![Event::ValidationStarted(ValidationStarted {
        method: method as i32,
        challenges: c.challenges.clone(),
    })];
    if method == ValidationMethod::None {
        events.push(Event::ValidationPassed(ValidationPassed {}));
    }
    Ok(events)
}

fn record_domain_validated(
    c: &RecordDomainValidated,
    state: &CertificateState,
) -> Result<Vec<Event>, DomainError> {
    let method = state.validation_method();
    let already = state
        .validation
        .as_ref()
        .is_some_and(|v| v.validated.contains(&c.domain));
    if already {
        return Ok(vec![]);
    }
    if state.status != Status::Validating {
        return Err(lifecycle(
            state,
            "names are validated only while validation is in progress",
        ));
    }
    if !matches!(method, ValidationMethod::Http01 | ValidationMethod::Dns01) {
        return Err(DomainError::precondition(
            Rule::ValidationMethod,
            format!(
                "the validation method is {}; there are no per-name challenges to record",
                method_name(method)
            ),
        ));
    }
    let names = state.names();
    if !names.contains(&c.domain.as_str()) {
        return Err(DomainError::precondition(
            Rule::UnknownName,
            format!(
                "{:?} is not one of the application's names ({})",
                validate::clip(&c.domain),
                names.join(", ")
            ),
        ));
    }
    let mut events = vec![Event::DomainValidated(DomainValidated {
        domain: c.domain.clone(),
        method: method as i32,
    })];
    let validated = state
        .validation
        .as_ref()
        .map(|v| v.validated.clone())
        .unwrap_or_default();
    let all = names
        .iter()
        .all(|n| *n == c.domain || validated.contains(*n));
    if all {
        events.push(Event::ValidationPassed(ValidationPassed {}));
    }
    Ok(events)
}

fn record_validation_failed(
    c: &RecordValidationFailed,
    state: &CertificateState,
) -> Result<Vec<Event>, DomainError> {
    if state.status != Status::Validating {
        return Err(lifecycle(
            state,
            "a validation failure can only be recorded while validation is in progress",
        ));
    }
    let method = state.validation_method();
    if !matches!(method, ValidationMethod::Http01 | ValidationMethod::Dns01) {
        return Err(DomainError::precondition(
            Rule::ValidationMethod,
            format!(
                "the validation method is {}; reject the application instead",
                method_name(method)
            ),
        ));
    }
    let names = state.names();
    if !names.contains(&c.domain.as_str()) {
        return Err(DomainError::precondition(
            Rule::UnknownName,
            format!(
                "{:?} is not one of the application's names ({})",
                validate::clip(&c.domain),
                names.join(", ")
            ),
        ));
    }
    failure("failure", &c.failure)?;
    validate::text("observed", &c.observed, false)?;
    Ok(vec![Event::ValidationFailed(ValidationFailed {
        domain: c.domain.clone(),
        failure: Some(c.failure.clone()),
        observed: c.observed.clone(),
    })])
}

fn approval_allowed(state: &CertificateState, action: &str) -> Result<(), DomainError> {
    let method = state.validation_method();
    if method != ValidationMethod::Approval {
        return Err(DomainError::precondition(
            Rule::ValidationMethod,
            format!(
                "the validation method is {}; only applications ordered with APPROVAL are {action} by an operator",
                method_name(method)
            ),
        ));
    }
    if !matches!(state.status, Status::Applied | Status::Validating) {
        return Err(lifecycle(
            state,
            &format!("an application can only be {action} while it waits for approval"),
        ));
    }
    Ok(())
}

fn approve(c: &ApproveApplication, state: &CertificateState) -> Result<Vec<Event>, DomainError> {
    validate::text("approver", &c.approver, true)?;
    validate::text("comment", &c.comment, false)?;
    if state.approval.is_some() {
        return Ok(vec![]);
    }
    approval_allowed(state, "approved")?;
    Ok(vec![
        Event::ApplicationApproved(ApplicationApproved {
            approver: c.approver.clone(),
            comment: c.comment.clone(),
        }),
        Event::ValidationPassed(ValidationPassed {}),
    ])
}

fn reject(c: &RejectApplication, state: &CertificateState) -> Result<Vec<Event>, DomainError> {
    validate::text("approver", &c.approver, true)?;
    validate::text("reason", &c.reason, true)?;
    approval_allowed(state, "rejected")?;
    Ok(vec![Event::ApplicationRejected(ApplicationRejected {
        approver: c.approver.clone(),
        reason: c.reason.clone(),
    })])
}

// ---------------------------------------------------------------------------
// Issuance
// ---------------------------------------------------------------------------

fn intend_issuance(
    c: &IntendIssuance,
    state: &CertificateState,
) -> Result<Vec<Event>, DomainError> {
    key_id("issuer_ca_id", &c.issuer_ca_id)?;
    validate::serial_hex("serial", &c.serial)?;
    validate::sha256_hex("tbs_sha256", &c.tbs_sha256)?;
    if let Some(intent) = &state.intent
        && matches!(state.status, Status::Issuing | Status::Issued)
    {
        if intent.serial == c.serial && intent.tbs_sha256 == c.tbs_sha256 {
            return Ok(vec![]);
        }
        if state.status == Status::Issuing {
            return Err(DomainError::precondition(
                Rule::IssuanceIntent,
                format!(
                    "the CA is already signing serial {}; record that issuance (or its failure) before another",
                    intent.serial
                ),
            ));
        }
    }
    if state.status != Status::Validated {
        return Err(lifecycle(
            state,
            "the CA may only sign once validation has passed",
        ));
    }
    if let Some(app) = &state.application
        && matches!(app.key_source, KeySource::Generate { .. })
        && state.key.is_none()
    {
        return Err(DomainError::precondition(
            Rule::KeySource,
            "the key pair is not generated yet; record the generated key before signing",
        ));
    }
    if state.abandoned_intents.iter().any(|i| i.serial == c.serial) {
        return Err(DomainError::invalid(
            "serial",
            format!(
                "serial {} was already used for an earlier signing attempt; every attempt needs a fresh serial",
                c.serial
            ),
        ));
    }
    if c.not_after <= c.not_before {
        return Err(DomainError::invalid(
            "not_after",
            format!(
                "{} is not after not_before ({})",
                instant(c.not_after),
                instant(c.not_before)
            ),
        ));
    }
    let max_days = match state.spec.validity_days {
        0 => MAX_VALIDITY_DAYS,
        d => d,
    };
    // One day of slack for a back-dated not_before.
    if c.not_after - c.not_before > days(max_days) + days(1) {
        return Err(DomainError::invalid(
            "not_after",
            format!(
                "the validity from {} to {} is longer than the {max_days} days allowed",
                day(c.not_before),
                day(c.not_after)
            ),
        ));
    }
    Ok(vec![Event::IssuanceIntended(IssuanceIntended {
        issuer_ca_id: c.issuer_ca_id.clone(),
        serial: c.serial.clone(),
        tbs_sha256: c.tbs_sha256.clone(),
        not_before: Some(to_timestamp(c.not_before)),
        not_after: Some(to_timestamp(c.not_after)),
    })])
}

fn record_issued(c: &RecordIssued, state: &CertificateState) -> Result<Vec<Event>, DomainError> {
    validate::serial_hex("serial", &c.serial)?;
    validate::sha256_hex("sha256_fingerprint", &c.sha256_fingerprint)?;
    validate::pem("certificate_pem", &c.certificate_pem, &["CERTIFICATE"])?;
    if !c.chain_pem.trim().is_empty() {
        validate::pem("chain_pem", &c.chain_pem, &["CERTIFICATE"])?;
    }
    if let Some(issued) = &state.issued {
        if issued.serial == c.serial && issued.sha256_fingerprint == c.sha256_fingerprint {
            return Ok(vec![]);
        }
        return Err(lifecycle(
            state,
            &format!(
                "it was already issued with serial {}; a certificate is issued once",
                issued.serial
            ),
        ));
    }
    let Some(intent) = state
        .intent
        .as_ref()
        .filter(|_| state.status == Status::Issuing)
    else {
        return Err(lifecycle(
            state,
            "an issued certificate can only be recorded after its issuance intent (serial and TBS hash)",
        ));
    };
    let mismatch = if intent.serial != c.serial {
        Some(format!("serial {} (intended: {})", c.serial, intent.serial))
    } else if intent.issuer_ca_id != c.issuer_ca_id {
        Some(format!(
            "issuer CA {} (intended: {})",
            c.issuer_ca_id, intent.issuer_ca_id
        ))
    } else if intent.not_before != c.not_before || intent.not_after != c.not_after {
        Some(format!(
            "validity {} to {} (intended: {} to {})",
            instant(c.not_before),
            instant(c.not_after),
            instant(intent.not_before),
            instant(intent.not_after)
        ))
    } else {
        None
    };
    if let Some(what) = mismatch {
        return Err(DomainError::precondition(
            Rule::IssuanceIntent,
            format!("the signed certificate does not match the recorded intent: {what}"),
        ));
    }
    Ok(vec![Event::CertificateIssued(CertificateIssued {
        issuer_ca_id: c.issuer_ca_id.clone(),
        serial: c.serial.clone(),
        not_before: Some(to_timestamp(c.not_before)),
        not_after: Some(to_timestamp(c.not_after)),
        sha256_fingerprint: c.sha256_fingerprint.clone(),
        certificate_pem: c.certificate_pem.clone(),
        chain_pem: c.chain_pem.clone(),
    })])
}

fn record_issuance_failed(
    c: &RecordIssuanceFailed,
    state: &CertificateState,
) -> Result<Vec<Event>, DomainError> {
    if !matches!(
        state.status,
        Status::Applied | Status::Validating | Status::Validated | Status::Issuing
    ) {
        return Err(lifecycle(
            state,
            "an issuance failure can only be recorded between the application and issuance",
        ));
    }
    failure("failure", &c.failure)?;
    Ok(vec![Event::IssuanceFailed(IssuanceFailed {
        failure: Some(c.failure.clone()),
    })])
}

fn cancel(c: &CancelOrder, state: &CertificateState) -> Result<Vec<Event>, DomainError> {
    validate::text("reason", &c.reason, false)?;
    match state.status {
        Status::Ordered | Status::Applied | Status::Validating | Status::Validated => {
            Ok(vec![Event::OrderCancelled(OrderCancelled {
                reason: c.reason.clone(),
            })])
        }
        Status::Cancelled => Ok(vec![]),
        Status::Issuing => Err(DomainError::precondition(
            Rule::Lifecycle,
            format!(
                "the CA is signing serial {}; an order cannot be cancelled while it is signed — wait for the result and revoke the certificate if it is not wanted",
                state
                    .intent
                    .as_ref()
                    .map(|i| i.serial.as_str())
                    .unwrap_or("?")
            ),
        )),
        Status::Issued => Err(lifecycle(
            state,
            "an order can only be cancelled before it is issued; revoke the certificate instead",
        )),
        _ => Err(lifecycle(
            state,
            "an order can only be cancelled before it is issued",
        )),
    }
}

// ---------------------------------------------------------------------------
// Deployment
// ---------------------------------------------------------------------------

fn request_deployment(
    c: &RequestDeployment,
    state: &CertificateState,
) -> Result<Vec<Event>, DomainError> {
    validate::id("deployment_id", &c.deployment_id)?;
    validate::id("target_id", &c.target_id)?;
    let replaces = c.replaces_certificate_id.clone().unwrap_or_default();
    if !replaces.is_empty() && state.predecessor_id.as_deref() != Some(replaces.as_str()) {
        return Err(DomainError::invalid(
            "replaces_certificate_id",
            match &state.predecessor_id {
                Some(p) => format!("{replaces} is not this certificate's predecessor ({p})"),
                None => format!(
                    "this certificate renews no certificate, so it cannot replace {replaces}"
                ),
            },
        ));
    }
    if state.status != Status::Issued {
        return Err(lifecycle(
            state,
            "only an issued certificate can be deployed",
        ));
    }
    ensure_unexpired(
        state,
        c.now,
        "deploy its successor or a new certificate instead",
    )?;
    if let Some(d) = state.deployment(&c.target_id) {
        match d.state {
            DeploymentState::Requested | DeploymentState::Active => return Ok(vec![]),
            _ if d.deployment_id == c.deployment_id => {
                return Err(DomainError::invalid(
                    "deployment_id",
                    format!(
                        "{} was already used on target {}; use a new deployment id",
                        c.deployment_id, c.target_id
                    ),
                ));
            }
            _ => {}
        }
    }
    Ok(vec![Event::DeploymentRequested(DeploymentRequested {
        deployment_id: c.deployment_id.clone(),
        target_id: c.target_id.clone(),
        replaces_certificate_id: replaces,
    })])
}

/// The current deployment with this id on this target.
fn deployment<'s>(
    state: &'s CertificateState,
    deployment_id: &str,
    target_id: &str,
) -> Result<&'s Deployment, DomainError> {
    validate::id("deployment_id", deployment_id)?;
    validate::id("target_id", target_id)?;
    match state.deployment(target_id) {
        Some(d) if d.deployment_id == deployment_id => Ok(d),
        Some(d) => Err(DomainError::precondition(
            Rule::UnknownDeployment,
            format!(
                "deployment {deployment_id} is not the current deployment on target {target_id} (that is {}, {})",
                d.deployment_id,
                d.state.as_str()
            ),
        )),
        None => Err(DomainError::precondition(
            Rule::UnknownDeployment,
            format!("this certificate has no deployment on target {target_id}"),
        )),
    }
}

fn deployment_state_error(d: &Deployment, what: &str) -> DomainError {
    DomainError::precondition(
        Rule::DeploymentState,
        format!(
            "deployment {} on target {} is {}; {what}",
            d.deployment_id,
            d.target_id,
            d.state.as_str()
        ),
    )
}

fn issued_fingerprint(state: &CertificateState) -> &str {
    state
        .issued
        .as_ref()
        .map(|i| i.sha256_fingerprint.as_str())
        .unwrap_or_default()
}

fn deployment_succeeded(
    c: &RecordDeploymentSucceeded,
    state: &CertificateState,
) -> Result<Vec<Event>, DomainError> {
    let d = deployment(state, &c.deployment_id, &c.target_id)?;
    validate::sha256_hex("verified_fingerprint", &c.verified_fingerprint)?;
    if d.state.is_serving() {
        return Ok(vec![]);
    }
    if d.state != DeploymentState::Requested {
        return Err(deployment_state_error(
            d,
            "only a requested deployment can succeed; request a new deployment",
        ));
    }
    let expected = issued_fingerprint(state);
    if c.verified_fingerprint != expected {
        return Err(DomainError::precondition(
            Rule::FingerprintMismatch,
            format!(
                "target {} serves the certificate with fingerprint {}, not this one ({expected}); record the deployment as failed at step \"verify\"",
                c.target_id, c.verified_fingerprint
            ),
        ));
    }
    Ok(vec![Event::DeploymentSucceeded(DeploymentSucceeded {
        deployment_id: c.deployment_id.clone(),
        target_id: c.target_id.clone(),
        verified_fingerprint: c.verified_fingerprint.clone(),
    })])
}

fn deployment_failed(
    c: &RecordDeploymentFailed,
    state: &CertificateState,
) -> Result<Vec<Event>, DomainError> {
    let d = deployment(state, &c.deployment_id, &c.target_id)?;
    if !DEPLOYMENT_STEPS.contains(&c.step.as_str()) {
        return Err(DomainError::invalid(
            "step",
            format!(
                "{:?} is not a deployment step; use one of {}",
                validate::clip(&c.step),
                DEPLOYMENT_STEPS.join(", ")
            ),
        ));
    }
    failure("failure", &c.failure)?;
    validate::text("observed", &c.observed, false)?;
    if !matches!(
        d.state,
        DeploymentState::Requested | DeploymentState::Failed
    ) {
        let hint = if d.state.is_serving() {
            "it was verified; record drift if the target stopped serving it"
        } else {
            "only a requested deployment can fail"
        };
        return Err(deployment_state_error(d, hint));
    }
    Ok(vec![Event::DeploymentFailed(DeploymentFailed {
        deployment_id: c.deployment_id.clone(),
        target_id: c.target_id.clone(),
        step: c.step.clone(),
        failure: Some(c.failure.clone()),
        observed: c.observed.clone(),
    })])
}

fn remove_deployment(
    c: &RemoveDeployment,
    state: &CertificateState,
) -> Result<Vec<Event>, DomainError> {
    let d = deployment(state, &c.deployment_id, &c.target_id)?;
    match d.state {
        DeploymentState::Removed => Ok(vec![]),
        DeploymentState::Replaced => Err(deployment_state_error(
            d,
            &format!(
                "the successor {} serves there now; undeploy that one instead",
                d.replaced_by.as_deref().unwrap_or("?")
            ),
        )),
        _ => Ok(vec![Event::DeploymentRemoved(DeploymentRemoved {
            deployment_id: c.deployment_id.clone(),
            target_id: c.target_id.clone(),
        })]),
    }
}

fn deployment_replaced(
    c: &RecordDeploymentReplaced,
    state: &CertificateState,
) -> Result<Vec<Event>, DomainError> {
    let d = deployment(state, &c.deployment_id, &c.target_id)?;
    validate::id("successor_id", &c.successor_id)?;
    match state.successor_id() {
        Some(s) if s == c.successor_id => {}
        Some(s) => {
            return Err(DomainError::precondition(
                Rule::UnknownSuccessor,
                format!(
                    "{} is not this certificate's successor ({s})",
                    c.successor_id
                ),
            ));
        }
        None => {
            return Err(DomainError::precondition(
                Rule::UnknownSuccessor,
                format!(
                    "this certificate has no successor, so {} cannot replace it; remove the deployment instead",
                    c.successor_id
                ),
            ));
        }
    }
    match d.state {
        DeploymentState::Replaced => Ok(vec![]),
        DeploymentState::Removed => Err(deployment_state_error(
            d,
            "a removed deployment cannot be replaced",
        )),
        _ => Ok(vec![Event::DeploymentReplaced(DeploymentReplaced {
            deployment_id: c.deployment_id.clone(),
            target_id: c.target_id.clone(),
            successor_id: c.successor_id.clone(),
        })]),
    }
}

fn deployment_drifted(
    c: &RecordDeploymentDrifted,
    state: &CertificateState,
) -> Result<Vec<Event>, DomainError> {
    let d = deployment(state, &c.deployment_id, &c.target_id)?;
    if !c.observed_fingerprint.is_empty() {
        validate::sha256_hex("observed_fingerprint", &c.observed_fingerprint)?;
    }
    validate::text("observed", &c.observed, false)?;
    if c.observed_fingerprint == issued_fingerprint(state) {
        return Err(DomainError::precondition(
            Rule::FingerprintMismatch,
            format!(
                "target {} serves this certificate ({}); that is not drift",
                c.target_id, c.observed_fingerprint
            ),
        ));
    }
    match d.state {
        DeploymentState::Drifted => Ok(vec![]),
        s if s.is_serving() => Ok(vec![Event::DeploymentDrifted(DeploymentDrifted {
            deployment_id: c.deployment_id.clone(),
            target_id: c.target_id.clone(),
            observed_fingerprint: c.observed_fingerprint.clone(),
            observed: c.observed.clone(),
        })]),
        _ => Err(deployment_state_error(
            d,
            "only a verified deployment can drift",
        )),
    }
}

fn revoked_served(
    c: &FlagRevokedServed,
    state: &CertificateState,
) -> Result<Vec<Event>, DomainError> {
    let d = deployment(state, &c.deployment_id, &c.target_id)?;
    validate::text("observed", &c.observed, true)?;
    if state.status != Status::Revoked {
        return Err(DomainError::precondition(
            Rule::Lifecycle,
            format!(
                "certificate is {}; only a revoked certificate is flagged as still served",
                state.status
            ),
        ));
    }
    match d.state {
        DeploymentState::ServingRevoked if d.revoked_served_flagged => Ok(vec![]),
        DeploymentState::ServingRevoked => Ok(vec![Event::RevokedCertificateServed(
            RevokedCertificateServed {
                deployment_id: c.deployment_id.clone(),
                target_id: c.target_id.clone(),
                observed: c.observed.clone(),
            },
        )]),
        _ => Err(deployment_state_error(
            d,
            "only a deployment that was serving at revocation can still serve it",
        )),
    }
}

fn deployment_restored(
    c: &RecordDeploymentRestored,
    state: &CertificateState,
) -> Result<Vec<Event>, DomainError> {
    let d = deployment(state, &c.deployment_id, &c.target_id)?;
    match d.state {
        DeploymentState::Drifted => Ok(vec![Event::DeploymentRestored(DeploymentRestored {
            deployment_id: c.deployment_id.clone(),
            target_id: c.target_id.clone(),
        })]),
        s if s.is_serving() => Ok(vec![]),
        _ => Err(deployment_state_error(
            d,
            "only a drifted deployment can be restored",
        )),
    }
}

// ---------------------------------------------------------------------------
// Renewal
// ---------------------------------------------------------------------------

fn start_renewal(c: &StartRenewal, state: &CertificateState) -> Result<Vec<Event>, DomainError> {
    c.window.validate("window")?;
    validate::id("successor_id", &c.successor_id)?;
    validate::text("reason", &c.reason, true)?;
    validate::text("trigger", &c.trigger, true)?;
    if c.successor_id == state.certificate_id
        || state.predecessor_id.as_deref() == Some(c.successor_id.as_str())
    {
        return Err(DomainError::invalid(
            "successor_id",
            "the successor must be a new certificate, not this one or its predecessor",
        ));
    }
    if let Some(by) = &state.superseded_by {
        if *by == c.successor_id {
            return Ok(vec![]);
        }
        return Err(DomainError::precondition(
            Rule::Superseded,
            format!("certificate is already superseded by {by}; renew {by} instead"),
        ));
    }
    if let Some(active) = state.active_renewal() {
        if active.successor_id == c.successor_id {
            return Ok(vec![]);
        }
        return Err(DomainError::precondition(
            Rule::RenewalInProgress,
            format!(
                "a renewal is already in progress (successor {}); wait for it, or record it as failed before starting another",
                active.successor_id
            ),
        ));
    }
    if state
        .renewals
        .iter()
        .any(|r| r.successor_id == c.successor_id)
    {
        return Err(DomainError::invalid(
            "successor_id",
            format!(
                "{} was the successor of a failed renewal; use a new id",
                c.successor_id
            ),
        ));
    }
    if state.status != Status::Issued {
        let hint = match state.status {
            Status::Revoked => "a revoked certificate is not renewed; place a new order instead",
            Status::Expired => {
                "an expired certificate is not renewed; place a new order with the same specification"
            }
            _ => "only an issued certificate can be renewed",
        };
        return Err(lifecycle(state, hint));
    }
    let Some(issued) = &state.issued else {
        return Err(lifecycle(
            state,
            "only an issued certificate can be renewed",
        ));
    };
    ensure_unexpired(
        state,
        c.now,
        "place a new order with the same specification instead",
    )?;
    let opens = c.window.opens_at(issued.not_before, issued.not_after);
    if c.now < opens {
        return Err(DomainError::precondition(
            Rule::RenewalWindow,
            c.window.too_early(opens, issued.not_after),
        ));
    }
    Ok(vec![Event::RenewalStarted(RenewalStarted {
        successor_id: c.successor_id.clone(),
        reason: c.reason.clone(),
        trigger: c.trigger.clone(),
    })])
}

fn renewal_failed(
    c: &RecordRenewalFailed,
    state: &CertificateState,
) -> Result<Vec<Event>, DomainError> {
    validate::id("successor_id", &c.successor_id)?;
    failure("failure", &c.failure)?;
    let renewal = state
        .renewals
        .iter()
        .rev()
        .find(|r| r.successor_id == c.successor_id);
    match renewal.map(|r| r.state) {
        Some(RenewalState::Active) => Ok(vec![Event::RenewalFailed(RenewalFailed {
            successor_id: c.successor_id.clone(),
            failure: Some(c.failure.clone()),
        })]),
        Some(RenewalState::Failed) => Ok(vec![]),
        Some(RenewalState::Completed) => Err(DomainError::precondition(
            Rule::Superseded,
            format!(
                "successor {} is already issued and supersedes this certificate; it cannot fail any more",
                c.successor_id
            ),
        )),
        None => Err(DomainError::precondition(
            Rule::UnknownSuccessor,
            format!(
                "{} is not a renewal successor of this certificate",
                c.successor_id
            ),
        )),
    }
}

fn mark_superseded(
    c: &MarkSuperseded,
    state: &CertificateState,
) -> Result<Vec<Event>, DomainError> {
    validate::id("successor_id", &c.successor_id)?;
    if let Some(by) = &state.superseded_by {
        if *by == c.successor_id {
            return Ok(vec![]);
        }
        return Err(DomainError::precondition(
            Rule::Superseded,
            format!("certificate is already superseded by {by}"),
        ));
    }
    match state.active_renewal() {
        Some(r) if r.successor_id == c.successor_id => {}
        Some(r) => {
            return Err(DomainError::precondition(
                Rule::UnknownSuccessor,
                format!(
                    "{} is not the active renewal's successor ({})",
                    c.successor_id, r.successor_id
                ),
            ));
        }
        None => {
            return Err(DomainError::precondition(
                Rule::UnknownSuccessor,
                format!(
                    "{} is not an active renewal successor of this certificate; start a renewal first",
                    c.successor_id
                ),
            ));
        }
    }
    Ok(vec![Event::CertificateSuperseded(CertificateSuperseded {
        successor_id: c.successor_id.clone(),
    })])
}

// ---------------------------------------------------------------------------
// Expiry
// ---------------------------------------------------------------------------

fn check_expiry(c: &CheckExpiry, state: &CertificateState) -> Result<Vec<Event>, DomainError> {
    validate_thresholds("thresholds", &c.thresholds)?;
    let Some(issued) = state
        .issued
        .as_ref()
        .filter(|_| state.status == Status::Issued)
    else {
        // Nothing to announce for a certificate that is not (or no longer) live.
        return Ok(vec![]);
    };
    let not_after = Some(to_timestamp(issued.not_after));
    if c.now >= issued.not_after {
        return Ok(vec![Event::CertificateExpired(CertificateExpired {
            not_after,
        })]);
    }
    // A threshold at or above one already announced was crossed before: not new.
    let lowest_announced = state.announced_thresholds.first().copied();
    let crossed: BTreeSet<u32> = c
        .thresholds
        .iter()
        .copied()
        .filter(|t| {
            let crossing = days_before(issued.not_after, *t);
            // A threshold longer than the whole lifetime says nothing: skip it.
            crossing > issued.not_before && c.now >= crossing
        })
        .filter(|t| lowest_announced.is_none_or(|low| *t < low))
        .collect();
    let renewal_pending = state.spec.auto_renew && !state.is_superseded();
    Ok(crossed
        .into_iter()
        .rev()
        .map(|threshold_days| {
            Event::ExpiryApproaching(ExpiryApproaching {
                threshold_days,
                not_after,
                renewal_pending,
            })
        })
        .collect())
}

// ---------------------------------------------------------------------------
// Revocation and key export
// ---------------------------------------------------------------------------

/// The RFC 5280 reasons allowed for a subscriber certificate (CA/Browser Forum Baseline
/// Requirements 7.2.2): no caCompromise/aACompromise (CA certificates), no
/// certificateHold, no removeFromCRL (delta CRLs only).
pub fn revocation_reason_allowed(reason: RevocationReason) -> bool {
    matches!(
        reason,
        RevocationReason::Unspecified
            | RevocationReason::KeyCompromise
            | RevocationReason::AffiliationChanged
            | RevocationReason::Superseded
            | RevocationReason::CessationOfOperation
            | RevocationReason::PrivilegeWithdrawn
    )
}

fn revocation_reason(reason: RevocationReason) -> Result<(), DomainError> {
    if revocation_reason_allowed(reason) {
        Ok(())
    } else {
        Err(DomainError::invalid(
            "reason",
            format!(
                "{} is not allowed for a subscriber certificate; use UNSPECIFIED, KEY_COMPROMISE, AFFILIATION_CHANGED, SUPERSEDED, CESSATION_OF_OPERATION or PRIVILEGE_WITHDRAWN",
                reason.as_str_name()
            ),
        ))
    }
}

fn revocable(state: &CertificateState, at: DateTime<Utc>) -> Result<(), DomainError> {
    match state.status {
        Status::Issued => ensure_unexpired(
            state,
            at,
            "expired certificates are not revoked (they drop out of CRLs)",
        ),
        Status::Issuing => Err(lifecycle(
            state,
            "the CA is signing; wait for the issuance to be recorded, then revoke",
        )),
        s if s.is_before_issuance() => Err(lifecycle(
            state,
            "it is not issued yet; cancel the order instead",
        )),
        Status::Expired => Err(lifecycle(
            state,
            "expired certificates are not revoked (they drop out of CRLs)",
        )),
        _ => Err(lifecycle(
            state,
            "only an issued certificate can be revoked",
        )),
    }
}

fn request_revocation(
    c: &RequestRevocation,
    state: &CertificateState,
) -> Result<Vec<Event>, DomainError> {
    revocation_reason(c.reason)?;
    validate::text("requested_by", &c.requested_by, true)?;
    validate::text("comment", &c.comment, false)?;
    if state.status == Status::Revoked
        || (state.status == Status::Issued && state.revocation_request.is_some())
    {
        return Ok(vec![]);
    }
    revocable(state, c.now)?;
    Ok(vec![Event::RevocationRequested(RevocationRequested {
        reason: c.reason as i32,
        requested_by: c.requested_by.clone(),
        comment: c.comment.clone(),
    })])
}

fn record_revoked(c: &RecordRevoked, state: &CertificateState) -> Result<Vec<Event>, DomainError> {
    revocation_reason(c.reason)?;
    if state.status == Status::Revoked {
        return Ok(vec![]);
    }
    revocable(state, c.revoked_at)?;
    let serial = state
        .issued
        .as_ref()
        .map(|i| i.serial.clone())
        .unwrap_or_default();
    Ok(vec![Event::CertificateRevoked(CertificateRevoked {
        serial,
        reason: c.reason as i32,
        revoked_at: Some(to_timestamp(c.revoked_at)),
    })])
}

fn key_exported(
    c: &RecordPrivateKeyExported,
    state: &CertificateState,
) -> Result<Vec<Event>, DomainError> {
    let Some(key) = &state.key else {
        let message = match state.application.as_ref().map(|a| &a.key_source) {
            Some(KeySource::Csr { .. }) => {
                "the application brought its own CSR; this system never held the private key"
            }
            _ => "no key pair has been generated for this certificate",
        };
        return Err(DomainError::precondition(Rule::KeySource, message));
    };
    if state.issued.is_none() {
        return Err(lifecycle(
            state,
            "the private key can be exported once the certificate is issued",
        ));
    }
    Ok(vec![Event::PrivateKeyExported(PrivateKeyExported {
        key_id: key.key_id.clone(),
        format: c.format.as_str().to_owned(),
    })])
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// "certificate is <status>; <rule>" with the status described for a person.
fn lifecycle(state: &CertificateState, rule: &str) -> DomainError {
    DomainError::precondition(
        Rule::Lifecycle,
        format!("certificate is {}; {rule}", describe_status(state)),
    )
}

fn describe_status(state: &CertificateState) -> String {
    match state.status {
        Status::Failed => match &state.last_failure {
            Some(f) if !f.reason.is_empty() => format!("failed ({})", f.reason),
            _ => "failed".to_owned(),
        },
        Status::Revoked => match &state.revocation {
            Some(r) => format!(
                "revoked ({} on {})",
                r.reason.as_str_name(),
                day(r.revoked_at)
            ),
            None => "revoked".to_owned(),
        },
        Status::Expired => match state.not_after() {
            Some(at) => format!("expired (on {})", day(at)),
            None => "expired".to_owned(),
        },
        s => s.as_str().to_owned(),
    }
}

fn ensure_unexpired(
    state: &CertificateState,
    now: DateTime<Utc>,
    hint: &str,
) -> Result<(), DomainError> {
    match state.not_after() {
        Some(end) if now >= end => Err(DomainError::precondition(
            Rule::Expired,
            format!(
                "certificate expired on {} ({}); {hint}",
                day(end),
                instant(end)
            ),
        )),
        _ => Ok(()),
    }
}

fn method_name(method: ValidationMethod) -> &'static str {
    match method {
        ValidationMethod::Unspecified => "UNSPECIFIED",
        ValidationMethod::Approval => "APPROVAL",
        ValidationMethod::Http01 => "HTTP-01",
        ValidationMethod::Dns01 => "DNS-01",
        ValidationMethod::None => "NONE",
    }
}

/// A key-store or CA id: 1 to 256 printable characters without whitespace.
fn key_id(field: &str, value: &str) -> Result<(), DomainError> {
    if value.is_empty() {
        return Err(DomainError::invalid(field, "is required"));
    }
    if value.len() > 256 || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(DomainError::invalid(
            field,
            format!(
                "{:?} is not an id (at most 256 characters, no whitespace)",
                validate::clip(value)
            ),
        ));
    }
    Ok(())
}

/// An ACME-style token: 16 to 256 base64url characters.
fn challenge_token(field: &str, token: &str) -> Result<(), DomainError> {
    let ok = (16..=256).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(DomainError::invalid(
            field,
            "must be 16 to 256 base64url characters (A-Z, a-z, 0-9, '-', '_')",
        ))
    }
}

fn failure(field: &str, f: &Failure) -> Result<(), DomainError> {
    validate::text(&format!("{field}.reason"), &f.reason, true)?;
    if FailureCode::try_from(f.code).is_err() {
        return Err(DomainError::invalid(
            format!("{field}.code"),
            format!("{} is not a known failure code", f.code),
        ));
    }
    if let Some(at) = &f.next_retry_at
        && from_timestamp(at).is_none()
    {
        return Err(DomainError::invalid(
            format!("{field}.next_retry_at"),
            "is not a valid timestamp",
        ));
    }
    Ok(())
}
