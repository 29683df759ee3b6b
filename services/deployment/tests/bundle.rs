//! Bundles built from certificates the real CA issued.

mod common;

use certledger_deployment::{Bundle, BundleError, PrivateKeyPem};
use common::TestCa;

#[test]
fn a_bundle_checks_its_parts() {
    let ca = TestCa::new();
    let a = ca.bundle("cert-a", &["a.example.test"], &[]);
    let b = ca.bundle("cert-b", &["b.example.test"], &[]);
    let key_a = a.private_key().expect("key").clone();
    let key_b = b.private_key().expect("key").clone();

    // Rebuilding from the parts gives the same bundle.
    let again = Bundle::new(
        "cert-a",
        a.certificate_pem(),
        a.chain_pem(),
        Some(key_a.clone()),
    )
    .expect("same parts");
    assert_eq!(again.fingerprint(), a.fingerprint());
    assert_eq!(again.full_chain_pem(), a.full_chain_pem());

    // The wrong key.
    assert_eq!(
        Bundle::new("cert-a", a.certificate_pem(), a.chain_pem(), Some(key_b)).err(),
        Some(BundleError::KeyMismatch)
    );
    // Two certificates where one belongs.
    assert!(matches!(
        Bundle::new("cert-a", &a.full_chain_pem(), "", None),
        Err(BundleError::Certificate(_))
    ));
    // A key pasted into the (public) chain.
    let err = Bundle::new(
        "cert-a",
        a.certificate_pem(),
        &format!("{}{}", a.chain_pem(), key_a.expose_pem()),
        None,
    )
    .expect_err("key in chain");
    assert!(matches!(err, BundleError::Chain(_)), "{err:?}");
    assert!(!err.to_string().contains(key_line(&key_a)));
    // Not a key at all.
    assert!(matches!(
        Bundle::new(
            "cert-a",
            a.certificate_pem(),
            "",
            Some(PrivateKeyPem::new(a.certificate_pem()))
        ),
        Err(BundleError::PrivateKey(_))
    ));

    // Debug output never shows the key.
    let shown = format!("{a:?} {key_a:?}");
    assert!(shown.contains(a.fingerprint()));
    assert!(!shown.contains(key_line(&key_a)), "{shown}");
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");
}

#[test]
fn certificates_are_reencoded_canonically() {
    let ca = TestCa::new();
    let a = ca.bundle("cert-a", &["a.example.test"], &[]);
    // CRLF line ends and text around the blocks (as pasted from a mail) are accepted and
    // normalized away.
    let messy = format!(
        "Subject: whatever\r\n{}\r\n",
        a.certificate_pem().replace('\n', "\r\n")
    );
    let b = Bundle::new("cert-a", &messy, a.chain_pem(), None).expect("messy PEM");
    assert_eq!(b.certificate_pem(), a.certificate_pem());
    assert_eq!(b.fingerprint(), a.fingerprint());
    assert!(b.private_key().is_none());
}

fn key_line(key: &PrivateKeyPem) -> &str {
    key.expose_pem()
        .lines()
        .find(|l| !l.starts_with("-----"))
        .expect("a base64 line")
}
