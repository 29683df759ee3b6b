//! End-entity issuance checked with the real `openssl` command.

mod common;

use std::collections::HashSet;
use std::net::IpAddr;

use certledger_ca::{
    Authority, IssuancePolicy, IssueError, IssueRequest, KeyAlgorithm, MemoryKeyStore,
    RequestError, SubjectFields, generate_key,
};
use common::*;
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, X509Certificate};

fn request_for(alg: KeyAlgorithm) -> (certledger_ca::GeneratedKey, IssueRequest) {
    let key = generate_key(alg).expect("generate");
    let mut request = IssueRequest::new(key.public_key.clone());
    request.dns_names = vec!["www.example.test".into(), "Example.test".into()];
    request.ip_addresses = vec![
        "192.0.2.10".parse().expect("ip"),
        "2001:db8::1".parse().expect("ip"),
    ];
    request.subject = SubjectFields {
        organization: Some("Example Org".into()),
        country: Some("DE".into()),
        ..SubjectFields::default()
    };
    (key, request)
}

#[test]
fn every_key_algorithm_issues_a_certificate_openssl_accepts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = keystore(dir.path());
    let ca = new_authority(dir.path(), &keys);
    let now = OffsetDateTime::now_utc();

    for alg in KeyAlgorithm::ALL {
        let (key, request) = request_for(alg);
        let issued = issue(&ca, &request, now);
        let files = write_pems(dir.path(), alg.as_str(), &ca, &issued);
        assert_verifies(&files, None);

        let text = x509_text(&files.leaf);
        for needle in [
            "DNS:www.example.test",
            "DNS:example.test",
            "IP Address:192.0.2.10",
            "IP Address:2001:DB8:0:0:0:0:0:1",
            "TLS Web Server Authentication",
            "CA:FALSE",
            "X509v3 Subject Key Identifier",
            "X509v3 Authority Key Identifier",
            "X509v3 CRL Distribution Points",
            &format!("URI:{CRL_URL}"),
            &format!("OCSP - URI:{OCSP_URL}"),
            &format!("CA Issuers - URI:{CA_ISSUERS_URL}"),
            "CN = www.example.test",
            "O = Example Org",
            "C = DE",
        ] {
            assert!(
                text.contains(needle),
                "{alg}: {needle:?} missing in\n{text}"
            );
        }
        assert!(
            text.contains("X509v3 Basic Constraints: critical"),
            "{alg}: basicConstraints not critical\n{text}"
        );
        // Key usage matches the key type.
        let ku_line = text
            .lines()
            .skip_while(|l| !l.contains("X509v3 Key Usage"))
            .nth(1)
            .unwrap_or_default()
            .trim()
            .to_string();
        if alg.public_key_kind().is_rsa() {
            assert_eq!(ku_line, "Digital Signature, Key Encipherment", "{alg}");
        } else {
            assert_eq!(ku_line, "Digital Signature", "{alg}");
        }
        assert!(text.contains("X509v3 Key Usage: critical"), "{alg}");
        // No clientAuth, not a CA.
        assert!(!text.contains("TLS Web Client Authentication"), "{alg}");

        // The certified key is the generated key: openssl derives the same public key from
        // the private key file and from the certificate.
        let key_path = dir.path().join(format!("{alg}-leaf.key"));
        std::fs::write(&key_path, key.private_key.expose_pkcs8_pem().as_bytes())
            .expect("write key");
        let from_key = run_ok(
            openssl()
                .arg("pkey")
                .arg("-in")
                .arg(&key_path)
                .arg("-pubout"),
        );
        let from_cert = run_ok(
            openssl()
                .arg("x509")
                .arg("-in")
                .arg(&files.leaf)
                .arg("-noout")
                .arg("-pubkey"),
        );
        assert_eq!(from_key, from_cert, "{alg}");
        assert_eq!(from_key, key.public_key.to_pem(), "{alg}");

        // Serial as openssl prints it.
        let serial_line = run_ok(
            openssl()
                .arg("x509")
                .arg("-in")
                .arg(&files.leaf)
                .arg("-noout")
                .arg("-serial"),
        );
        assert_eq!(
            serial_line.trim().to_lowercase(),
            format!("serial={}", issued.serial.to_hex())
        );
        // SHA-256 fingerprint as openssl computes it.
        let fp = run_ok(
            openssl()
                .arg("x509")
                .arg("-in")
                .arg(&files.leaf)
                .arg("-noout")
                .arg("-fingerprint")
                .arg("-sha256"),
        );
        let fp_hex: String = fp
            .trim()
            .rsplit('=')
            .next()
            .unwrap_or_default()
            .replace(':', "")
            .to_lowercase();
        assert_eq!(fp_hex, issued.sha256_fingerprint, "{alg}");
    }
}

#[test]
fn ca_certificates_have_the_expected_extensions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = keystore(dir.path());
    let ca = new_authority(dir.path(), &keys);
    let root = dir.path().join("root.pem");
    let int = dir.path().join("int.pem");
    std::fs::write(&root, &ca.root().pem).expect("write");
    std::fs::write(&int, &ca.intermediate().pem).expect("write");

    let root_text = x509_text(&root);
    assert!(root_text.contains("CA:TRUE, pathlen:1"), "{root_text}");
    assert!(
        root_text.contains("Certificate Sign, CRL Sign"),
        "{root_text}"
    );
    assert!(
        root_text.contains("X509v3 Subject Key Identifier"),
        "{root_text}"
    );
    assert!(root_text.contains("CN = certledger Root CA"), "{root_text}");
    assert!(root_text.contains("NIST CURVE: P-384"), "{root_text}");
    let int_text = x509_text(&int);
    assert!(int_text.contains("CA:TRUE, pathlen:0"), "{int_text}");
    assert!(
        int_text.contains("Digital Signature, Certificate Sign, CRL Sign"),
        "{int_text}"
    );
    assert!(
        int_text.contains("X509v3 Authority Key Identifier"),
        "{int_text}"
    );
    assert!(int_text.contains("NIST CURVE: P-256"), "{int_text}");
    // Root ~10 years, intermediate ~5 years.
    let root_days = (ca.root().not_after - ca.root().not_before).whole_days();
    let int_days = (ca.intermediate().not_after - ca.intermediate().not_before).whole_days();
    assert!((3649..=3650).contains(&root_days), "{root_days}");
    assert!((1824..=1825).contains(&int_days), "{int_days}");

    // The intermediate verifies against the root, strictly.
    let out = run_ok(
        openssl()
            .arg("verify")
            .arg("-x509_strict")
            .arg("-CAfile")
            .arg(&root)
            .arg(&int),
    );
    assert!(out.contains(": OK"), "{out}");

    // Chain order: intermediate, then root.
    assert_eq!(
        ca.chain_pem(),
        format!("{}{}", ca.intermediate().pem, ca.root().pem)
    );
}

#[test]
fn recorded_tbs_hash_equals_the_released_certificates_tbs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = MemoryKeyStore::new();
    let ca = new_authority(dir.path(), &keys);
    let (_, request) = request_for(KeyAlgorithm::EcdsaP256);
    let now = OffsetDateTime::now_utc();

    let pending = ca.prepare(&request, now).expect("prepare");
    let intent = pending.intent().clone();
    // What the service would write into the event: serial and TBS hash.
    assert_eq!(intent.serial.to_hex().len(), 36);
    assert_eq!(intent.tbs_sha256.len(), 64);
    let issued = pending.release(&intent).expect("release");
    assert_eq!(issued.serial, intent.serial);
    assert_eq!(issued.tbs_sha256, intent.tbs_sha256);
    assert_eq!(issued.not_before, intent.not_before);
    assert_eq!(issued.not_after, intent.not_after);

    // Hash of the raw TBSCertificate of the released DER, via x509-parser ...
    let (_, cert) = X509Certificate::from_der(&issued.der).expect("parse");
    let tbs_hash = hex::encode(Sha256::digest(cert.tbs_certificate.as_ref()));
    assert_eq!(tbs_hash, intent.tbs_sha256);
    assert_eq!(
        hex::encode(cert.raw_serial()).trim_start_matches("00"),
        intent.serial.to_hex()
    );

    // ... and via openssl: extract the first element of the Certificate SEQUENCE.
    let der_path = dir.path().join("leaf.der");
    let tbs_path = dir.path().join("tbs.der");
    std::fs::write(&der_path, &issued.der).expect("write");
    run_ok(
        openssl()
            .arg("asn1parse")
            .arg("-inform")
            .arg("DER")
            .arg("-in")
            .arg(&der_path)
            .arg("-strparse")
            .arg("4")
            .arg("-noout")
            .arg("-out")
            .arg(&tbs_path),
    );
    let tbs = std::fs::read(&tbs_path).expect("read tbs");
    // -strparse writes the content of the element at offset 4; re-wrap it? No: for a
    // SEQUENCE, asn1parse -out writes the whole parsed element (header included).
    let openssl_tbs_hash = hex::encode(Sha256::digest(&tbs));
    assert_eq!(openssl_tbs_hash, intent.tbs_sha256);
}

#[test]
fn release_refuses_an_intent_that_is_not_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = MemoryKeyStore::new();
    let ca = new_authority(dir.path(), &keys);
    let (_, request) = request_for(KeyAlgorithm::Ed25519);
    let now = OffsetDateTime::now_utc();
    let a = ca.prepare(&request, now).expect("prepare a");
    let b = ca.prepare(&request, now).expect("prepare b");
    // Same request, same time, yet distinct serials and TBS hashes.
    assert_ne!(a.serial(), b.serial());
    assert_ne!(a.tbs_sha256(), b.tbs_sha256());
    let b_intent = b.intent().clone();
    let err = a.release(&b_intent).expect_err("mismatch");
    assert_eq!(err.recorded_serial, b_intent.serial);
    // The debug output of a pending certificate holds the intent only.
    assert!(format!("{b:?}").contains("PendingCertificate"));
}

#[test]
fn serials_are_distinct_random_and_prefixed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = MemoryKeyStore::new();
    let mut config = config(dir.path());
    config.serial_prefix = certledger_ca::SerialPrefix::new(0x5c).expect("prefix");
    let ca = Authority::open_or_create(&config, &keys, OffsetDateTime::now_utc()).expect("CA");
    // The same key certified again and again: rcgen's default would repeat the serial.
    let (_, request) = request_for(KeyAlgorithm::EcdsaP256);
    let now = OffsetDateTime::now_utc();
    let mut seen = HashSet::new();
    for i in 0..300 {
        let pending = ca.prepare(&request, now).expect("prepare");
        let serial = pending.serial().clone();
        let bytes = serial.as_bytes();
        assert_eq!(bytes.len(), 18);
        assert_eq!(bytes[0], 0x5c);
        assert!(seen.insert(serial.to_hex()), "repeated serial {serial}");
        if i % 50 == 0 {
            // The serial in the DER is that one (positive INTEGER of 18 octets).
            let intent = pending.intent().clone();
            let issued = pending.release(&intent).expect("release");
            let (_, cert) = X509Certificate::from_der(&issued.der).expect("parse");
            assert_eq!(cert.raw_serial(), serial.as_bytes());
        }
    }
    // The CA certificates follow the rule too.
    for hex in [&ca.root().serial_hex, &ca.intermediate().serial_hex] {
        assert_eq!(hex.len(), 36);
        assert!(hex.starts_with("5c"), "{hex}");
    }
}

#[test]
fn validity_is_capped_by_policy_with_an_injected_clock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = MemoryKeyStore::new();
    // A CA created in 2025 with a long-lived intermediate, so every boundary is inside it.
    let mut config = config(dir.path());
    config.bootstrap.root_validity_days = 20 * 365;
    config.bootstrap.intermediate_validity_days = 10 * 365;
    config.policy = IssuancePolicy::publicly_trusted();
    let created = time::macros::datetime!(2025-06-01 00:00 UTC);
    let ca = Authority::create(&config, &keys, created).expect("CA");
    let (_, mut request) = request_for(KeyAlgorithm::EcdsaP256);
    request.validity_days = Some(398);

    for (now, days) in [
        (time::macros::datetime!(2026-03-14 23:59:59 UTC), 398),
        (time::macros::datetime!(2026-03-15 00:00 UTC), 200),
        (time::macros::datetime!(2027-03-14 23:59:59 UTC), 200),
        (time::macros::datetime!(2027-03-15 00:00 UTC), 100),
        (time::macros::datetime!(2029-03-14 23:59:59 UTC), 100),
        (time::macros::datetime!(2029-03-15 00:00 UTC), 47),
    ] {
        let pending = ca.prepare(&request, now).expect("prepare");
        let intent = pending.intent().clone();
        assert_eq!(intent.validity_capped, days < 398, "at {now}");
        let issued = pending.release(&intent).expect("release");
        // Back-dated by exactly one hour, and the period (both ends inclusive) is `days`.
        assert_eq!(issued.not_before, now - Duration::hours(1), "at {now}");
        assert_eq!(
            issued.not_after - issued.not_before + Duration::SECOND,
            Duration::days(days),
            "at {now}"
        );
        // What is in the DER is what we report; openssl accepts it at issuance time.
        let (_, cert) = X509Certificate::from_der(&issued.der).expect("parse");
        assert_eq!(cert.validity().not_before.to_datetime(), issued.not_before);
        assert_eq!(cert.validity().not_after.to_datetime(), issued.not_after);
        let files = write_pems(
            dir.path(),
            &format!("t{}", now.unix_timestamp()),
            &ca,
            &issued,
        );
        assert_verifies(&files, Some(now));
    }

    // A private CA: default and max 365.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let mut private = common::config(dir2.path());
    private.bootstrap.intermediate_validity_days = 10 * 365;
    private.bootstrap.root_validity_days = 20 * 365;
    let ca = Authority::create(&private, &keys, created).expect("CA");
    let now = time::macros::datetime!(2030-01-01 00:00 UTC);
    request.validity_days = None;
    let pending = ca.prepare(&request, now).expect("prepare");
    assert_eq!(
        pending.not_after() - pending.not_before() + Duration::SECOND,
        Duration::days(365)
    );
    request.validity_days = Some(5000);
    let pending = ca.prepare(&request, now).expect("prepare");
    assert!(pending.intent().validity_capped);
    assert_eq!(
        pending.not_after() - pending.not_before() + Duration::SECOND,
        Duration::days(365)
    );
}

#[test]
fn validity_never_exceeds_the_intermediate_and_expired_issuers_refuse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = MemoryKeyStore::new();
    let mut config = config(dir.path());
    config.bootstrap.intermediate_validity_days = 100;
    let created = time::macros::datetime!(2026-01-01 00:00 UTC);
    let ca = Authority::create(&config, &keys, created).expect("CA");
    let (_, request) = request_for(KeyAlgorithm::EcdsaP384);
    let now = created + Duration::days(50);
    let pending = ca.prepare(&request, now).expect("prepare");
    assert!(pending.intent().validity_capped);
    assert_eq!(pending.not_after(), ca.intermediate().not_after);

    let err = ca
        .prepare(&request, created + Duration::days(200))
        .expect_err("expired issuer");
    assert!(matches!(err, IssueError::IssuerNotValid { .. }), "{err}");
    assert_eq!(err.field(), None);
}

#[test]
fn invalid_requests_name_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = MemoryKeyStore::new();
    let ca = new_authority(dir.path(), &keys);
    let now = OffsetDateTime::now_utc();
    let key = generate_key(KeyAlgorithm::EcdsaP256).expect("key");

    let empty = IssueRequest::new(key.public_key.clone());
    let err = ca.prepare(&empty, now).expect_err("no names");
    assert_eq!(err, IssueError::Request(RequestError::NoNames));
    assert_eq!(err.field(), Some("dns_names"));

    let mut bad_name = IssueRequest::new(key.public_key.clone());
    bad_name.dns_names = vec!["exa mple.test".into()];
    assert_eq!(
        ca.prepare(&bad_name, now).expect_err("bad").field(),
        Some("dns_names")
    );

    let mut zero = IssueRequest::new(key.public_key.clone());
    zero.dns_names = vec!["a.test".into()];
    zero.validity_days = Some(0);
    assert_eq!(
        ca.prepare(&zero, now).expect_err("zero").field(),
        Some("validity_days")
    );

    let mut bad_cn = IssueRequest::new(key.public_key.clone());
    bad_cn.dns_names = vec!["a.test".into()];
    bad_cn.subject.common_name = Some("b.test".into());
    assert_eq!(
        ca.prepare(&bad_cn, now).expect_err("cn").field(),
        Some("subject.common_name")
    );

    let mut unspecified = IssueRequest::new(key.public_key.clone());
    unspecified.ip_addresses = vec![IpAddr::from([0, 0, 0, 0])];
    assert_eq!(
        ca.prepare(&unspecified, now).expect_err("ip").field(),
        Some("ip_addresses")
    );
}

#[test]
fn wildcard_and_ip_only_certificates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = MemoryKeyStore::new();
    let ca = new_authority(dir.path(), &keys);
    let now = OffsetDateTime::now_utc();
    let key = generate_key(KeyAlgorithm::Rsa2048).expect("key");

    let mut wildcard = IssueRequest::new(key.public_key.clone());
    wildcard.dns_names = vec!["*.apps.example.test".into(), "apps.example.test".into()];
    let issued = issue(&ca, &wildcard, now);
    let files = write_pems(dir.path(), "wildcard", &ca, &issued);
    assert_verifies(&files, None);
    let text = x509_text(&files.leaf);
    assert!(text.contains("DNS:*.apps.example.test"), "{text}");
    // openssl checks the wildcard matches a host name.
    let out = run_ok(
        openssl()
            .arg("verify")
            .arg("-CAfile")
            .arg(&files.root)
            .arg("-untrusted")
            .arg(&files.intermediate)
            .arg("-verify_hostname")
            .arg("shop.apps.example.test")
            .arg(&files.leaf),
    );
    assert!(out.contains(": OK"), "{out}");

    let mut ip_only = IssueRequest::new(key.public_key.clone());
    ip_only.ip_addresses = vec!["10.20.30.40".parse().expect("ip")];
    let issued = issue(&ca, &ip_only, now);
    let files = write_pems(dir.path(), "ip", &ca, &issued);
    let out = run_ok(
        openssl()
            .arg("verify")
            .arg("-CAfile")
            .arg(&files.root)
            .arg("-untrusted")
            .arg(&files.intermediate)
            .arg("-verify_ip")
            .arg("10.20.30.40")
            .arg(&files.leaf),
    );
    assert!(out.contains(": OK"), "{out}");
}

#[test]
fn authority_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Authority>();
    assert_send_sync::<certledger_ca::FileKeyStore>();
    assert_send_sync::<certledger_ca::PendingCertificate>();
}
