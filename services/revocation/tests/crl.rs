//! CRLs checked with the real `openssl` command.

mod common;

use certledger_ca::SerialNumber;
use certledger_revocation::{CrlConfig, CrlError, RevocationReason, RevokedEntry, build_crl};
use common::*;
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

/// openssl prints serials in upper-case hex without separators in CRLs.
fn upper(serial: &SerialNumber) -> String {
    serial.to_hex().to_uppercase()
}

#[test]
fn crl_verifies_with_openssl_and_revokes_exactly_the_listed_certificate() {
    let ca = TestCa::new("CRL test");
    let (good, good_pem) = ca.issue("good");
    let (revoked, revoked_pem) = ca.issue("revoked");
    let (superseded, _) = ca.issue("superseded");
    let now = OffsetDateTime::now_utc();
    let revoked_at = now - Duration::minutes(5);
    let entries = vec![
        RevokedEntry {
            serial: revoked.serial.clone(),
            revoked_at,
            reason: RevocationReason::KeyCompromise,
        },
        RevokedEntry {
            serial: superseded.serial.clone(),
            revoked_at,
            reason: RevocationReason::Unspecified,
        },
    ];
    let crl = build_crl(&ca.signer, &CrlConfig::default(), 42, now, &entries).expect("crl");
    assert_eq!(crl.entries, 2);
    assert_eq!(crl.crl_number, 42);
    assert_eq!(crl.next_update - crl.this_update, Duration::days(7));
    assert_eq!(crl.this_update.nanosecond(), 0);
    assert!(crl.pem.starts_with("-----BEGIN X509 CRL-----\n"));

    let der_path = ca.path("intermediate.crl");
    let pem_path = ca.path("intermediate.crl.pem");
    write(&der_path, &crl.der);
    write(&pem_path, &crl.pem);

    // The signature verifies against the issuing CA (DER and PEM forms).
    let out = run_ok(
        openssl()
            .args(["crl", "-inform", "DER", "-noout", "-in"])
            .arg(&der_path)
            .arg("-CAfile")
            .arg(&ca.chain_pem),
    );
    assert!(out.contains("verify OK"), "{out}");
    let out = run_ok(
        openssl()
            .args(["crl", "-noout", "-in"])
            .arg(&pem_path)
            .arg("-CAfile")
            .arg(&ca.chain_pem),
    );
    assert!(out.contains("verify OK"), "{out}");

    // Its contents as openssl reads them.
    let text = run_ok(
        openssl()
            .args(["crl", "-inform", "DER", "-noout", "-text", "-in"])
            .arg(&der_path),
    );
    assert!(text.contains("Version 2 (0x1)"), "{text}");
    assert!(
        text.contains(&format!("Serial Number: {}", upper(&revoked.serial))),
        "{text}"
    );
    assert!(
        text.contains(&format!("Serial Number: {}", upper(&superseded.serial))),
        "{text}"
    );
    assert!(!text.contains(&upper(&good.serial)), "{text}");
    assert!(text.contains("Key Compromise"), "{text}");
    assert_eq!(
        text.matches("X509v3 CRL Reason Code").count(),
        1,
        "unspecified is omitted: {text}"
    );
    let crl_number = text
        .split("X509v3 CRL Number:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("CRL number");
    assert_eq!(crl_number, "42");
    // The AKI is the intermediate's SKI.
    let (_, int_cert) =
        x509_parser::certificate::X509Certificate::from_der(&ca.authority.intermediate().der)
            .expect("intermediate");
    let ski = int_cert
        .iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => {
                Some(hex::encode_upper(k.0))
            }
            _ => None,
        })
        .expect("SKI");
    let aki_text = text
        .split("X509v3 Authority Key Identifier:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("AKI")
        .trim_start_matches("keyid:")
        .replace(':', "");
    assert_eq!(aki_text, ski);

    // x509-parser agrees on the structure.
    let (rest, parsed) = CertificateRevocationList::from_der(&crl.der).expect("parse CRL");
    assert!(rest.is_empty());
    assert_eq!(
        parsed.crl_number().map(|n| n.to_string()),
        Some("42".into())
    );
    assert_eq!(parsed.iter_revoked_certificates().count(), 2);
    assert_eq!(parsed.issuer().as_raw(), int_cert.subject().as_raw());

    // openssl verify with CRL checking: the good leaf passes, the revoked one fails.
    let verify = |leaf: &std::path::Path| {
        run(openssl()
            .args(["verify", "-crl_check", "-CRLfile"])
            .arg(&pem_path)
            .arg("-CAfile")
            .arg(&ca.root_pem)
            .arg("-untrusted")
            .arg(&ca.intermediate_pem)
            .arg(leaf))
    };
    let (ok, stdout, stderr) = verify(&good_pem);
    assert!(ok && stdout.contains(": OK"), "good leaf: {stdout}{stderr}");
    let (ok, stdout, stderr) = verify(&revoked_pem);
    assert!(!ok, "revoked leaf verified: {stdout}{stderr}");
    assert!(
        format!("{stdout}{stderr}").contains("certificate revoked"),
        "{stdout}{stderr}"
    );
}

#[test]
fn empty_crl_and_configured_validity() {
    let ca = TestCa::new("Empty CRL");
    let (_, leaf) = ca.issue("leaf");
    let now = OffsetDateTime::now_utc();
    let config = CrlConfig {
        validity: Duration::days(10),
    };
    let crl = build_crl(&ca.signer, &config, 0, now, &[]).expect("crl");
    assert_eq!(crl.entries, 0);
    assert_eq!(crl.next_update - crl.this_update, Duration::days(10));
    let path = ca.path("empty.crl.pem");
    write(&path, &crl.pem);
    let text = run_ok(
        openssl()
            .args(["crl", "-noout", "-text", "-in"])
            .arg(&path)
            .arg("-CAfile")
            .arg(&ca.chain_pem),
    );
    assert!(text.contains("verify OK"), "{text}");
    assert!(text.contains("No Revoked Certificates"), "{text}");
    let out = run_ok(
        openssl()
            .args(["verify", "-crl_check", "-CRLfile"])
            .arg(&path)
            .arg("-CAfile")
            .arg(&ca.root_pem)
            .arg("-untrusted")
            .arg(&ca.intermediate_pem)
            .arg(&leaf),
    );
    assert!(out.contains(": OK"), "{out}");
}

#[test]
fn bad_inputs_are_refused() {
    let ca = TestCa::new("Bad CRL");
    let now = OffsetDateTime::now_utc();
    let serial = SerialNumber::from_hex("01ab").expect("serial");
    let entry = |reason| RevokedEntry {
        serial: serial.clone(),
        revoked_at: now,
        reason,
    };
    assert!(matches!(
        build_crl(
            &ca.signer,
            &CrlConfig::default(),
            1,
            now,
            &[
                entry(RevocationReason::Superseded),
                entry(RevocationReason::KeyCompromise)
            ]
        ),
        Err(CrlError::DuplicateSerial { .. })
    ));
    assert!(matches!(
        build_crl(
            &ca.signer,
            &CrlConfig::default(),
            1,
            now,
            &[entry(RevocationReason::RemoveFromCrl)]
        ),
        Err(CrlError::ReasonNotAllowed { .. })
    ));
    assert!(matches!(
        build_crl(
            &ca.signer,
            &CrlConfig {
                validity: Duration::days(11)
            },
            1,
            now,
            &[]
        ),
        Err(CrlError::InvalidValidity { .. })
    ));
    assert!(matches!(
        build_crl(
            &ca.signer,
            &CrlConfig::default(),
            1,
            time::macros::datetime!(1900-01-01 0:00 UTC),
            &[]
        ),
        Err(CrlError::TimeOutOfRange { .. })
    ));
}

#[test]
fn a_key_that_is_not_the_certificates_is_refused() {
    let ca = TestCa::new("Mismatch");
    let other = certledger_ca::generate_key(certledger_ca::KeyAlgorithm::EcdsaP256).expect("key");
    let err = certledger_revocation::IssuerSigner::new(
        &ca.authority.intermediate().der,
        &other.private_key,
    )
    .expect_err("mismatch");
    assert!(matches!(
        err,
        certledger_revocation::IssuerError::KeyMismatch
    ));
    // A leaf is not a CA.
    let (leaf, _) = ca.issue("leaf");
    let err =
        certledger_revocation::IssuerSigner::new(&leaf.der, &other.private_key).expect_err("leaf");
    assert!(err.to_string().contains("CA:TRUE"), "{err}");
}
