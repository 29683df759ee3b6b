//! An existing CA (root, intermediate and its key as PEM files) is imported at first start
//! instead of creating one, and never replaced afterwards.

use certledger_ca::{CertificateUrls, IssuancePolicy, KeyStoreKind};
use certledger_issuance::ca::{CaImport, CaSettings, open_or_import_ca};
use std::path::Path;

fn settings(dir: &Path) -> CaSettings {
    CaSettings {
        data_dir: dir.to_path_buf(),
        policy: IssuancePolicy::default(),
        urls: CertificateUrls {
            crl_distribution_point: Some("http://crl.example.test/crl/builtin.crl".into()),
            ocsp: Some("http://ocsp.example.test/ocsp".into()),
            ca_issuers: None,
        },
        // Key files: the test hands a CA's key over as its PEM file.
        keys: KeyStoreKind::Files.into(),
    }
}

#[test]
fn an_existing_ca_is_imported_at_first_start_and_kept_afterwards() -> anyhow::Result<()> {
    // An "existing" CA: made elsewhere, handed over as three PEM files.
    let elsewhere = tempfile::tempdir()?;
    let original = open_or_import_ca(&settings(elsewhere.path()), None)?;
    let intermediate = original.authority.intermediate();
    let import = CaImport {
        root_cert: elsewhere.path().join("ca/root.pem"),
        intermediate_cert: elsewhere.path().join("ca/intermediate.pem"),
        intermediate_key: elsewhere
            .path()
            .join(format!("keys/{}.key", intermediate.key_id)),
    };

    let here = tempfile::tempdir()?;
    let imported = open_or_import_ca(&settings(here.path()), Some(&import))?;
    assert_eq!(
        imported.authority.chain_pem(),
        original.authority.chain_pem()
    );
    assert_eq!(
        imported.authority.intermediate().spki_sha256,
        intermediate.spki_sha256,
        "the imported key is the intermediate's"
    );

    // Restarted with other import files: the CA in the data directory stays.
    let other = tempfile::tempdir()?;
    let _ = open_or_import_ca(&settings(other.path()), None)?;
    let other_import = CaImport {
        root_cert: other.path().join("ca/root.pem"),
        intermediate_cert: other.path().join("ca/intermediate.pem"),
        intermediate_key: import.intermediate_key.clone(),
    };
    let reopened = open_or_import_ca(&settings(here.path()), Some(&other_import))?;
    assert_eq!(
        reopened.authority.chain_pem(),
        original.authority.chain_pem()
    );

    // An intermediate with somebody else's key is refused, and nothing is created.
    let refused = tempfile::tempdir()?;
    let error = open_or_import_ca(&settings(refused.path()), Some(&other_import))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(!error.is_empty(), "a key that does not match is refused");
    assert!(!refused.path().join("ca/root.pem").exists());
    Ok(())
}
