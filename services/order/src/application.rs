//! Checks of an application that need more than the decider: a CSR must parse, carry a
//! valid self-signature and a key of an allowed type and strength (RSA ≥ 2048 bits,
//! ECDSA P-256/P-384, Ed25519), and name exactly the application's names.
//!
//! Every error is `INVALID_ARGUMENT` naming `application.csr_pem`.

use std::collections::BTreeSet;
use std::net::IpAddr;

use certledger_domain::DomainError;
use certledger_domain::certificate::{Application, KeySource};
use certledger_domain::names::validate_application;
use certledger_proto::common::v1::CertificateSpec;
use certledger_runtime::csr::inspect_csr_pem;

/// The field every CSR error names.
pub const CSR_FIELD: &str = "application.csr_pem";

/// Checks `application` against `spec` (names, subject, key source) and, for a CSR, the
/// CSR itself and that its names are the application's.
pub fn check_application(
    application: &Application,
    spec: &CertificateSpec,
) -> Result<(), DomainError> {
    let normalized = validate_application(application, spec)?;
    if let KeySource::Csr { pem } = &normalized.key_source {
        check_csr(pem, &normalized)?;
    }
    Ok(())
}

fn check_csr(pem: &str, application: &Application) -> Result<(), DomainError> {
    let csr = inspect_csr_pem(pem).map_err(|e| {
        let message = e.to_string();
        let message = message
            .strip_prefix("csr_pem: ")
            .or_else(|| message.strip_prefix("csr_pem "))
            .unwrap_or(&message)
            .to_owned();
        DomainError::invalid(CSR_FIELD, message)
    })?;
    let csr_dns: BTreeSet<String> = csr
        .dns_names
        .iter()
        .map(|n| n.to_ascii_lowercase())
        .collect();
    let csr_ips: BTreeSet<IpAddr> = csr.ip_addresses.iter().copied().collect();
    let app_dns: BTreeSet<String> = application.domains.iter().cloned().collect();
    let app_ips: BTreeSet<IpAddr> = application
        .ip_addresses
        .iter()
        .filter_map(|ip| ip.parse().ok())
        .collect();
    if csr_dns != app_dns || csr_ips != app_ips {
        let list = |dns: &BTreeSet<String>, ips: &BTreeSet<IpAddr>| {
            let mut names: Vec<String> = dns.iter().cloned().collect();
            names.extend(ips.iter().map(IpAddr::to_string));
            if names.is_empty() {
                "no names".to_owned()
            } else {
                names.join(", ")
            }
        };
        let missing: Vec<String> = app_dns
            .difference(&csr_dns)
            .cloned()
            .chain(app_ips.difference(&csr_ips).map(IpAddr::to_string))
            .collect();
        let extra: Vec<String> = csr_dns
            .difference(&app_dns)
            .cloned()
            .chain(csr_ips.difference(&app_ips).map(IpAddr::to_string))
            .collect();
        let mut why = Vec::new();
        if !missing.is_empty() {
            why.push(format!("missing from the CSR: {}", missing.join(", ")));
        }
        if !extra.is_empty() {
            why.push(format!("not in the application: {}", extra.join(", ")));
        }
        return Err(DomainError::invalid(
            CSR_FIELD,
            format!(
                "the CSR's names ({}) must equal the application's names ({}); {}",
                list(&csr_dns, &csr_ips),
                list(&app_dns, &app_ips),
                why.join("; ")
            ),
        ));
    }
    Ok(())
}
