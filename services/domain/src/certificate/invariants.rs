//! Consistency rules every folded certificate state must satisfy. `decide` is written
//! so that no sequence of accepted commands breaks them; the property tests check it
//! after every step, and services may assert them after folding a stream.

use std::collections::BTreeSet;

use certledger_proto::common::v1::ValidationMethod;

use super::state::{CertificateState, DeploymentState, KeySource, RenewalState, Status};

/// Checks the state's invariants; the error says which one is broken.
pub fn invariants(state: &CertificateState) -> Result<(), String> {
    let s = state.status;
    let fail = |msg: String| Err(format!("{msg} (status {s}, version {})", state.version));

    if s == Status::Absent {
        if state.version != 0 || *state != CertificateState::default() {
            return fail("absent certificate has recorded facts".into());
        }
        return Ok(());
    }
    if state.certificate_id.is_empty() {
        return fail("certificate without an id".into());
    }

    // Application before anything past ordering (failed/cancelled may come earlier).
    let needs_application = matches!(
        s,
        Status::Applied
            | Status::Validating
            | Status::Validated
            | Status::Issuing
            | Status::Issued
            | Status::Revoked
            | Status::Expired
    );
    if needs_application && state.application.is_none() {
        return fail("past ordering without an application".into());
    }
    if let Some(app) = &state.application
        && app.domains.is_empty()
        && app.ip_addresses.is_empty()
    {
        return fail("application without names".into());
    }

    // Issuance.
    let issued_status = matches!(s, Status::Issued | Status::Revoked | Status::Expired);
    if issued_status != state.issued.is_some() {
        return fail(format!(
            "issued certificate recorded: {}, but status {s}",
            state.issued.is_some()
        ));
    }
    if s == Status::Issuing && state.intent.is_none() {
        return fail("issuing without an issuance intent".into());
    }
    if let Some(issued) = &state.issued {
        if state.application.is_none() {
            return fail("issued without an application".into());
        }
        let Some(intent) = &state.intent else {
            return fail("issued without an issuance intent".into());
        };
        if intent.serial != issued.serial
            || intent.not_before != issued.not_before
            || intent.not_after != issued.not_after
            || intent.issuer_ca_id != issued.issuer_ca_id
        {
            return fail(format!(
                "issued serial {} does not match the intent {}",
                issued.serial, intent.serial
            ));
        }
    }

    // Validation before signing.
    let past_validation = matches!(s, Status::Validated | Status::Issuing) || issued_status;
    if past_validation {
        let names: BTreeSet<&str> = state.names().into_iter().collect();
        match state.validation_method() {
            ValidationMethod::Http01 | ValidationMethod::Dns01 => {
                let validated: BTreeSet<&str> = state
                    .validation
                    .as_ref()
                    .map(|v| v.validated.iter().map(String::as_str).collect())
                    .unwrap_or_default();
                if !names.is_subset(&validated) {
                    return fail(format!(
                        "validated without every name validated: {names:?} vs {validated:?}"
                    ));
                }
            }
            ValidationMethod::Approval => {
                if state.approval.is_none() {
                    return fail("validated without an approval".into());
                }
            }
            ValidationMethod::None => {
                if state.validation.is_none() {
                    return fail("validated without a validation".into());
                }
            }
            ValidationMethod::Unspecified => {
                return fail("validated without a validation method".into());
            }
        }
    }
    if let Some(v) = &state.validation {
        let names = state.names();
        if let Some(extra) = v.validated.iter().find(|d| !names.contains(&d.as_str())) {
            return fail(format!("validated name {extra} is not in the application"));
        }
    }

    // Keys.
    if let Some(key) = &state.key {
        match state.application.as_ref().map(|a| &a.key_source) {
            Some(KeySource::Generate { algorithm }) if *algorithm == key.algorithm => {}
            _ => return fail("generated key without an application asking for it".into()),
        }
    }
    if let Some(app) = &state.application
        && matches!(app.key_source, KeySource::Generate { .. })
        && (state.issued.is_some() || s == Status::Issuing)
        && state.key.is_none()
    {
        return fail("signing a generated-key application without a generated key".into());
    }
    if !state.key_exports.is_empty() && (state.key.is_none() || state.issued.is_none()) {
        return fail("private key exported without a generated key and certificate".into());
    }

    // Renewal.
    let live_renewals = state
        .renewals
        .iter()
        .filter(|r| matches!(r.state, RenewalState::Active | RenewalState::Completed))
        .count();
    if live_renewals > 1 {
        return fail(format!(
            "{live_renewals} successors active or issued at once"
        ));
    }
    if !state.renewals.is_empty() && state.issued.is_none() {
        return fail("renewal of a certificate that was never issued".into());
    }
    match &state.superseded_by {
        Some(by) => {
            let completed = state
                .renewals
                .iter()
                .any(|r| r.successor_id == *by && r.state == RenewalState::Completed);
            if !completed {
                return fail(format!(
                    "superseded by {by} without that renewal completing"
                ));
            }
        }
        None => {
            if state
                .renewals
                .iter()
                .any(|r| r.state == RenewalState::Completed)
            {
                return fail("renewal completed but not superseded".into());
            }
        }
    }
    if state
        .renewals
        .iter()
        .any(|r| r.successor_id == state.certificate_id)
        || state.predecessor_id.as_deref() == Some(state.certificate_id.as_str())
    {
        return fail("certificate is its own successor or predecessor".into());
    }

    // Deployments.
    if !state.deployments.is_empty() && state.issued.is_none() {
        return fail("deployment of a certificate that was never issued".into());
    }
    for (target, d) in &state.deployments {
        if *target != d.target_id {
            return fail(format!(
                "deployment filed under {target} is for {}",
                d.target_id
            ));
        }
        let ok = match d.state {
            DeploymentState::Active => s == Status::Issued,
            DeploymentState::ServingRevoked => s == Status::Revoked,
            DeploymentState::ServingExpired => s == Status::Expired,
            DeploymentState::Replaced => d.replaced_by.is_some(),
            _ => true,
        };
        if !ok {
            return fail(format!(
                "deployment {} on {target} is {} on a {s} certificate",
                d.deployment_id,
                d.state.as_str()
            ));
        }
    }

    // Revocation and expiry.
    if (s == Status::Revoked) != state.revocation.is_some() {
        return fail("revocation recorded iff revoked is broken".into());
    }
    if let (Some(r), Some(issued)) = (&state.revocation, &state.issued)
        && r.serial != issued.serial
    {
        return fail(format!(
            "revoked serial {} is not the issued {}",
            r.serial, issued.serial
        ));
    }
    if state.revocation_request.is_some() && state.issued.is_none() {
        return fail("revocation requested for a certificate never issued".into());
    }
    if !state.announced_thresholds.is_empty() && state.issued.is_none() {
        return fail("expiry announced for a certificate never issued".into());
    }
    if s == Status::Cancelled && state.intent.is_some() {
        return fail("cancelled while signing".into());
    }
    Ok(())
}
