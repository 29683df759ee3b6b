//! CSRs made by the real `openssl req`: inspected, issued, or rejected with a precise error.

mod common;

use std::path::Path;

use certledger_ca::{
    CsrError, IssueRequest, KeyError, MemoryKeyStore, PublicKeyKind, inspect_csr_pem,
};
use common::*;
use time::OffsetDateTime;

/// `openssl req -new -newkey <newkey> [-pkeyopt ...] -nodes -subj <subj> [-addext ...]`.
fn openssl_csr(
    dir: &Path,
    name: &str,
    newkey: &[&str],
    subj: &str,
    addext: Option<&str>,
) -> String {
    let csr_path = dir.join(format!("{name}.csr"));
    let key_path = dir.join(format!("{name}.key"));
    let mut cmd = openssl();
    cmd.arg("req").arg("-new").args(newkey).arg("-nodes");
    cmd.arg("-keyout").arg(&key_path).arg("-out").arg(&csr_path);
    cmd.arg("-subj").arg(subj);
    if let Some(ext) = addext {
        cmd.arg("-addext").arg(ext);
    }
    run_ok(&mut cmd);
    std::fs::read_to_string(&csr_path).expect("read csr")
}

#[test]
fn openssl_p256_csr_is_inspected_and_issued() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csr_pem = openssl_csr(
        dir.path(),
        "p256",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=shop.example.test/O=Shop",
        Some("subjectAltName=DNS:shop.example.test,DNS:WWW.shop.example.test,IP:198.51.100.7"),
    );
    let csr = inspect_csr_pem(&csr_pem).expect("inspect");
    assert_eq!(csr.key_kind(), PublicKeyKind::EcdsaP256);
    assert_eq!(
        csr.dns_names,
        vec!["shop.example.test", "www.shop.example.test"]
    );
    assert_eq!(
        csr.ip_addresses,
        vec!["198.51.100.7".parse::<std::net::IpAddr>().expect("ip")]
    );
    assert_eq!(
        csr.subject.common_name.as_deref(),
        Some("shop.example.test")
    );
    assert_eq!(csr.subject.organization.as_deref(), Some("Shop"));

    // SPKI fingerprint equals openssl's: sha256 over the DER public key.
    let pub_der = run(openssl()
        .arg("req")
        .arg("-in")
        .arg(dir.path().join("p256.csr"))
        .arg("-noout")
        .arg("-pubkey"));
    let pub_pem = String::from_utf8_lossy(&pub_der.stdout).into_owned();
    assert_eq!(pub_pem, csr.public_key.to_pem());

    let keys = MemoryKeyStore::new();
    let ca = new_authority(dir.path(), &keys);
    let issued = issue(
        &ca,
        &IssueRequest::from_csr(&csr),
        OffsetDateTime::now_utc(),
    );
    let files = write_pems(dir.path(), "p256", &ca, &issued);
    assert_verifies(&files, None);
    let text = x509_text(&files.leaf);
    assert!(text.contains("DNS:shop.example.test"), "{text}");
    assert!(text.contains("DNS:www.shop.example.test"), "{text}");
    assert!(text.contains("IP Address:198.51.100.7"), "{text}");
    // The certificate is for the CSR's key: it matches openssl's private key.
    let from_key = run_ok(
        openssl()
            .arg("pkey")
            .arg("-in")
            .arg(dir.path().join("p256.key"))
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
    assert_eq!(from_key, from_cert);
}

#[test]
fn openssl_rsa_p384_and_ed25519_csrs_are_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = MemoryKeyStore::new();
    let ca = new_authority(dir.path(), &keys);
    for (name, newkey, kind) in [
        (
            "rsa3072",
            vec!["-newkey", "rsa:3072"],
            PublicKeyKind::Rsa { bits: 3072 },
        ),
        (
            "p384",
            vec!["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
            PublicKeyKind::EcdsaP384,
        ),
        (
            "ed25519",
            vec!["-newkey", "ed25519"],
            PublicKeyKind::Ed25519,
        ),
    ] {
        let csr_pem = openssl_csr(
            dir.path(),
            name,
            &newkey,
            &format!("/CN={name}.example.test"),
            None,
        );
        let csr = inspect_csr_pem(&csr_pem).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(csr.key_kind(), kind, "{name}");
        // No subjectAltName: the common name is the name.
        assert_eq!(csr.dns_names, vec![format!("{name}.example.test")]);
        let issued = issue(
            &ca,
            &IssueRequest::from_csr(&csr),
            OffsetDateTime::now_utc(),
        );
        let files = write_pems(dir.path(), name, &ca, &issued);
        assert_verifies(&files, None);
    }
}

#[test]
fn rsa_1024_csr_is_rejected_as_too_weak() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csr_pem = openssl_csr(
        dir.path(),
        "rsa1024",
        &["-newkey", "rsa:1024"],
        "/CN=weak.example.test",
        Some("subjectAltName=DNS:weak.example.test"),
    );
    let err = inspect_csr_pem(&csr_pem).expect_err("weak key");
    assert_eq!(err, CsrError::Key(KeyError::RsaKeyTooSmall { bits: 1024 }));
    assert_eq!(err.field(), "csr_pem");
    assert!(err.to_string().contains("1024"), "{err}");
    assert!(err.to_string().contains("at least 2048"), "{err}");
}

#[test]
fn p521_csr_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csr_pem = openssl_csr(
        dir.path(),
        "p521",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-521"],
        "/CN=p521.example.test",
        None,
    );
    let err = inspect_csr_pem(&csr_pem).expect_err("p521");
    assert_eq!(
        err,
        CsrError::Key(KeyError::UnsupportedCurve {
            curve: "P-521".into()
        })
    );
}

#[test]
fn csr_with_altered_signature_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csr_pem = openssl_csr(
        dir.path(),
        "alter",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=alter.example.test",
        Some("subjectAltName=DNS:alter.example.test"),
    );
    let der = pem::parse(&csr_pem).expect("pem").into_contents();
    // The signature is the last element: an ECDSA signature ends with the S integer's bytes.
    let mut altered = der.clone();
    let last = altered.len() - 1;
    altered[last] ^= 0x55;
    let altered_pem = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", altered));
    assert_eq!(inspect_csr_pem(&altered_pem), Err(CsrError::BadSignature));

    // openssl agrees it does not verify.
    let altered_path = dir.path().join("altered.csr");
    std::fs::write(&altered_path, &altered_pem).expect("write");
    let out = run(openssl()
        .arg("req")
        .arg("-in")
        .arg(&altered_path)
        .arg("-verify")
        .arg("-noout"));
    assert!(
        !out.status.success() || String::from_utf8_lossy(&out.stderr).contains("failure"),
        "openssl accepted the altered CSR"
    );

    // A name changed after signing.
    let mut renamed = der.clone();
    let pos = renamed
        .windows(5)
        .rposition(|w| w == b"alter")
        .expect("name");
    renamed[pos] = b'x';
    assert_eq!(
        certledger_ca::inspect_csr_der(&renamed),
        Err(CsrError::BadSignature)
    );
}

#[test]
fn csr_with_email_san_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csr_pem = openssl_csr(
        dir.path(),
        "email",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=mail.example.test",
        Some("subjectAltName=DNS:mail.example.test,email:admin@example.test"),
    );
    assert_eq!(
        inspect_csr_pem(&csr_pem),
        Err(CsrError::UnsupportedSubjectAltName { kind: "e-mail" })
    );
}

#[test]
fn garbage_is_rejected_with_precise_errors() {
    type Check = fn(&CsrError) -> bool;
    let cases: Vec<(String, Check)> = vec![
        ("".into(), |e| matches!(e, CsrError::MalformedPem { .. })),
        ("not a csr".into(), |e| {
            matches!(e, CsrError::MalformedPem { .. })
        }),
        (
            "-----BEGIN CERTIFICATE REQUEST-----\n!!!!\n-----END CERTIFICATE REQUEST-----\n".into(),
            |e| matches!(e, CsrError::MalformedPem { .. }),
        ),
        (
            "-----BEGIN CERTIFICATE REQUEST-----\nAAECAwQF\n-----END CERTIFICATE REQUEST-----\n"
                .into(),
            |e| matches!(e, CsrError::MalformedDer { .. }),
        ),
        (
            "-----BEGIN PRIVATE KEY-----\nAAECAwQF\n-----END PRIVATE KEY-----\n".into(),
            |e| matches!(e, CsrError::WrongPemLabel { .. }),
        ),
    ];
    for (input, expected) in cases {
        let err = inspect_csr_pem(&input).expect_err("garbage accepted");
        assert!(expected(&err), "{input:?} gave {err:?}");
        assert_eq!(err.field(), "csr_pem");
    }
    // Truncated real CSR.
    let dir = tempfile::tempdir().expect("tempdir");
    let csr_pem = openssl_csr(
        dir.path(),
        "trunc",
        &["-newkey", "rsa:2048"],
        "/CN=trunc.example.test",
        None,
    );
    let der = pem::parse(&csr_pem).expect("pem").into_contents();
    for cut in [1, 10, der.len() / 2, der.len() - 1] {
        let truncated = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der[..cut].to_vec()));
        assert!(
            matches!(
                inspect_csr_pem(&truncated),
                Err(CsrError::MalformedDer { .. })
            ),
            "cut at {cut}"
        );
    }
}
