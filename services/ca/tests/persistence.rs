//! The CA survives restarts; the key store keeps keys private on disk; CAs can be imported.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use certledger_ca::{
    Authority, AuthorityError, AuthorityOrigin, FileKeyStore, INTERMEDIATE_CERT_FILE, IssueRequest,
    KeyAlgorithm, KeyEncryptionKey, KeyStore, KeyStoreError, PrivateKeyPkcs8, ROOT_CERT_FILE,
    generate_key,
};
use common::*;
use time::OffsetDateTime;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

fn leaf_request() -> IssueRequest {
    let key = generate_key(KeyAlgorithm::EcdsaP256).expect("key");
    let mut request = IssueRequest::new(key.public_key);
    request.dns_names = vec!["restart.example.test".into()];
    request
}

#[test]
fn persisted_authority_reloads_identically_and_still_signs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path());
    let now = OffsetDateTime::now_utc();

    let (root_pem, int_pem, root_key_id, int_key_id) = {
        let keys = keystore(dir.path());
        let ca = Authority::open_or_create(&config, &keys, now).expect("create");
        assert_eq!(ca.origin(), AuthorityOrigin::Created);
        (
            ca.root().pem.clone(),
            ca.intermediate().pem.clone(),
            ca.root().key_id.clone(),
            ca.intermediate().key_id.clone(),
        )
    };
    // On disk: the certificates and both keys, keys 0600 in a 0700 directory.
    assert_eq!(
        std::fs::read_to_string(config.cert_dir.join(ROOT_CERT_FILE)).expect("root"),
        root_pem
    );
    assert_eq!(
        std::fs::read_to_string(config.cert_dir.join(INTERMEDIATE_CERT_FILE)).expect("int"),
        int_pem
    );
    let key_dir = dir.path().join("keys");
    assert_eq!(mode(&key_dir), 0o700);
    for id in [&root_key_id, &int_key_id] {
        let path = key_dir.join(format!("{id}.key"));
        assert_eq!(mode(&path), 0o600, "{id}");
    }
    // No temporary files left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&key_dir)
        .expect("ls")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // "Restart": a new key store object and a new Authority from the same directories.
    let keys = keystore(dir.path());
    let ca = Authority::open_or_create(&config, &keys, now).expect("reload");
    assert_eq!(ca.origin(), AuthorityOrigin::Loaded);
    assert_eq!(ca.root().pem, root_pem);
    assert_eq!(ca.intermediate().pem, int_pem);
    assert_eq!(ca.intermediate().key_id, int_key_id);
    assert_eq!(ca.chain_pem(), format!("{int_pem}{root_pem}"));

    // It still signs, and openssl verifies against the original root.
    let issued = issue(&ca, &leaf_request(), now);
    let files = write_pems(dir.path(), "reloaded", &ca, &issued);
    std::fs::write(&files.root, &root_pem).expect("write original root");
    assert_verifies(&files, None);

    // create() refuses to replace an existing CA.
    assert!(matches!(
        Authority::create(&config, &keys, now),
        Err(AuthorityError::AlreadyInitialized { .. })
    ));
}

#[test]
fn every_ca_key_algorithm_bootstraps_and_reloads() {
    for (root_alg, int_alg) in [
        (KeyAlgorithm::Rsa4096, KeyAlgorithm::Rsa2048),
        (KeyAlgorithm::EcdsaP256, KeyAlgorithm::Ed25519),
        (KeyAlgorithm::Ed25519, KeyAlgorithm::EcdsaP384),
        (KeyAlgorithm::Rsa3072, KeyAlgorithm::EcdsaP256),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = config(dir.path());
        config.bootstrap.root_key_algorithm = root_alg;
        config.bootstrap.intermediate_key_algorithm = int_alg;
        let now = OffsetDateTime::now_utc();
        {
            let keys = keystore(dir.path());
            Authority::create(&config, &keys, now).expect("create");
        }
        let keys = keystore(dir.path());
        let ca = Authority::load(&config, &keys, now).expect("load");
        assert_eq!(ca.root().key_kind, root_alg.public_key_kind());
        assert_eq!(ca.intermediate().key_kind, int_alg.public_key_kind());
        let issued = issue(&ca, &leaf_request(), now);
        let files = write_pems(dir.path(), "algs", &ca, &issued);
        assert_verifies(&files, None);
    }
}

#[test]
fn load_without_a_ca_or_without_its_key_fails_precisely() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path());
    let now = OffsetDateTime::now_utc();
    let keys = keystore(dir.path());
    assert!(matches!(
        Authority::load(&config, &keys, now),
        Err(AuthorityError::NotInitialized { .. })
    ));
    Authority::create(&config, &keys, now).expect("create");
    // Another (empty) key store: the intermediate key is missing.
    let other = FileKeyStore::open(dir.path().join("other-keys"), None).expect("store");
    assert!(matches!(
        Authority::load(&config, &other, now),
        Err(AuthorityError::KeyStore(KeyStoreError::NotFound { .. }))
    ));
}

#[test]
fn encrypted_key_store_round_trips_without_plaintext_on_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kek = KeyEncryptionKey::generate().expect("kek");
    let store = FileKeyStore::open(dir.path().join("keys"), Some(kek.clone())).expect("store");
    assert!(store.encrypts_at_rest());

    for alg in KeyAlgorithm::ALL {
        let key = generate_key(alg).expect("key");
        let id = format!("leaf-{alg}");
        store.put(&id, &key.private_key).expect("put");
        let path = store.key_path(&id).expect("path");
        assert_eq!(mode(&path), 0o600);

        let on_disk = std::fs::read(&path).expect("read");
        let der = key.private_key.expose_pkcs8_der();
        assert!(
            !on_disk.windows(der.len()).any(|w| w == der),
            "{alg}: plaintext PKCS#8 DER in the key file"
        );
        // Nor any 16-byte piece of it, nor its PEM body.
        assert!(
            !der.windows(16)
                .any(|piece| on_disk.windows(16).any(|w| w == piece)),
            "{alg}: a fragment of the key is in the file"
        );
        assert!(!String::from_utf8_lossy(&on_disk).contains("PRIVATE KEY"));

        // Round trip through a fresh store with the same KEK.
        let reopened =
            FileKeyStore::open(dir.path().join("keys"), Some(kek.clone())).expect("reopen");
        let loaded = reopened.get(&id).expect("get");
        assert!(loaded.ct_eq(&key.private_key), "{alg}");
        assert_eq!(loaded.algorithm().expect("alg"), alg);
    }

    // Without the KEK, or with a wrong one: precise errors without key material.
    let key = generate_key(KeyAlgorithm::EcdsaP256).expect("key");
    store.put("probe", &key.private_key).expect("put");
    let no_kek = FileKeyStore::open(dir.path().join("keys"), None).expect("store");
    let err = no_kek.get("probe").expect_err("no kek");
    assert!(
        matches!(err, KeyStoreError::MissingKeyEncryptionKey { .. }),
        "{err}"
    );
    let wrong = FileKeyStore::open(
        dir.path().join("keys"),
        Some(KeyEncryptionKey::generate().expect("kek")),
    )
    .expect("store");
    let err = wrong.get("probe").expect_err("wrong kek");
    assert!(
        matches!(err, KeyStoreError::DecryptionFailed { .. }),
        "{err}"
    );
    assert_no_key_material(&err.to_string(), &key.private_key);
    assert_no_key_material(&format!("{err:?}"), &key.private_key);

    // A key file copied to another id does not decrypt (the id is authenticated).
    std::fs::copy(
        store.key_path("probe").expect("path"),
        store.key_path("copied").expect("path"),
    )
    .expect("copy");
    std::fs::set_permissions(
        store.key_path("copied").expect("path"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    assert!(matches!(
        store.get("copied"),
        Err(KeyStoreError::DecryptionFailed { .. })
    ));
}

fn assert_no_key_material(text: &str, key: &PrivateKeyPkcs8) {
    let der = key.expose_pkcs8_der();
    assert!(!text.contains(&hex::encode(der)), "{text}");
    let pem = key.expose_pkcs8_pem();
    for line in pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!text.contains(line), "{text}");
    }
}

#[test]
fn plaintext_key_store_writes_pkcs8_pem_with_0600() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FileKeyStore::open(dir.path().join("keys"), None).expect("store");
    let key = generate_key(KeyAlgorithm::Rsa2048).expect("key");
    store.put("plain", &key.private_key).expect("put");
    let path = store.key_path("plain").expect("path");
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir.path().join("keys")), 0o700);
    // openssl reads it as is.
    let out = run_ok(
        openssl()
            .arg("pkey")
            .arg("-in")
            .arg(&path)
            .arg("-noout")
            .arg("-text"),
    );
    assert!(out.contains("Private-Key: (2048 bit"), "{out}");

    // Idempotent put; a different key under the same id is refused.
    store
        .put("plain", &key.private_key)
        .expect("same key again");
    let other = generate_key(KeyAlgorithm::Rsa2048).expect("key");
    let err = store
        .put("plain", &other.private_key)
        .expect_err("different key");
    assert!(matches!(err, KeyStoreError::AlreadyExists { .. }), "{err}");
    assert!(store.get("plain").expect("get").ct_eq(&key.private_key));

    // A key file readable by others is refused.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    assert!(matches!(
        store.get("plain"),
        Err(KeyStoreError::InsecurePermissions { mode: 0o644, .. })
    ));
    // Path traversal in ids is impossible.
    assert!(matches!(
        store.get("../keys/plain"),
        Err(KeyStoreError::InvalidKeyId { .. })
    ));
    assert!(matches!(
        store.get("missing"),
        Err(KeyStoreError::NotFound { .. })
    ));
    // An existing directory with loose permissions is tightened.
    std::fs::set_permissions(
        dir.path().join("keys"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    FileKeyStore::open(dir.path().join("keys"), None).expect("reopen");
    assert_eq!(mode(&dir.path().join("keys")), 0o700);
}

#[test]
fn encrypted_authority_reloads_and_signs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path());
    let kek_hex = "4f1c2a9b8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3";
    let now = OffsetDateTime::now_utc();
    let root_pem = {
        let keys = FileKeyStore::open(
            dir.path().join("keys"),
            Some(KeyEncryptionKey::from_hex(kek_hex).expect("kek")),
        )
        .expect("store");
        Authority::open_or_create(&config, &keys, now)
            .expect("create")
            .root()
            .pem
            .clone()
    };
    let keys = FileKeyStore::open(
        dir.path().join("keys"),
        Some(KeyEncryptionKey::from_hex(kek_hex).expect("kek")),
    )
    .expect("store");
    let ca = Authority::open_or_create(&config, &keys, now).expect("reload");
    assert_eq!(ca.root().pem, root_pem);
    let issued = issue(&ca, &leaf_request(), now);
    let files = write_pems(dir.path(), "enc", &ca, &issued);
    assert_verifies(&files, None);
    // Without the KEK the CA does not start, and says why.
    let plain = FileKeyStore::open(dir.path().join("keys"), None).expect("store");
    let err = Authority::load(&config, &plain, now).expect_err("no kek");
    assert!(
        matches!(
            err,
            AuthorityError::KeyStore(KeyStoreError::MissingKeyEncryptionKey { .. })
        ),
        "{err}"
    );
}

/// A CA made entirely with openssl (SEC1 EC key for the intermediate), imported, used.
#[test]
fn ca_made_by_openssl_is_imported_and_used() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let ext = d.join("ext.cnf");
    std::fs::write(
        &ext,
        "[root]\nbasicConstraints=critical,CA:TRUE,pathlen:1\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n\
         [int]\nbasicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,digitalSignature,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
    )
    .expect("ext");
    // Root: P-384 key, self-signed with the root extensions.
    run_ok(
        openssl()
            .args([
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-384",
                "-out",
            ])
            .arg(d.join("root.key")),
    );
    run_ok(
        openssl()
            .args(["req", "-new", "-key"])
            .arg(d.join("root.key"))
            .args(["-subj", "/O=Imported/CN=Imported Root", "-out"])
            .arg(d.join("root.csr")),
    );
    run_ok(
        openssl()
            .args(["x509", "-req", "-in"])
            .arg(d.join("root.csr"))
            .arg("-signkey")
            .arg(d.join("root.key"))
            .args(["-days", "3650", "-sha384", "-out"])
            .arg(d.join("root.pem"))
            .arg("-extfile")
            .arg(&ext)
            .args(["-extensions", "root"]),
    );
    let root_text = x509_text(&d.join("root.pem"));
    assert!(root_text.contains("CA:TRUE"), "{root_text}");
    // Intermediate: a SEC1 "EC PRIVATE KEY", as `openssl ecparam -genkey` writes it.
    run_ok(
        openssl()
            .args([
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
            ])
            .arg(d.join("int.key")),
    );
    assert!(
        std::fs::read_to_string(d.join("int.key"))
            .expect("key")
            .contains("BEGIN EC PRIVATE KEY")
    );
    run_ok(
        openssl()
            .args(["req", "-new", "-key"])
            .arg(d.join("int.key"))
            .args(["-subj", "/O=Imported/CN=Imported Intermediate", "-out"])
            .arg(d.join("int.csr")),
    );
    run_ok(
        openssl()
            .args(["x509", "-req", "-in"])
            .arg(d.join("int.csr"))
            .arg("-CA")
            .arg(d.join("root.pem"))
            .arg("-CAkey")
            .arg(d.join("root.key"))
            .args(["-CAcreateserial", "-days", "1825", "-sha384", "-out"])
            .arg(d.join("int.pem"))
            .arg("-extfile")
            .arg(&ext)
            .args(["-extensions", "int"]),
    );

    let config = config(d);
    let keys = keystore(d);
    let now = OffsetDateTime::now_utc();

    // A wrong key (not the intermediate's) is refused.
    run_ok(
        openssl()
            .args([
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
            ])
            .arg(d.join("wrong.key")),
    );
    let err = Authority::import_files(
        &config,
        &keys,
        &d.join("root.pem"),
        &d.join("int.pem"),
        &d.join("wrong.key"),
        now,
    )
    .expect_err("mismatched key");
    assert!(matches!(err, AuthorityError::KeyMismatch { .. }), "{err}");
    // The intermediate given as root is refused (not self-signed).
    let err = Authority::import_files(
        &config,
        &keys,
        &d.join("int.pem"),
        &d.join("int.pem"),
        &d.join("int.key"),
        now,
    )
    .expect_err("not a root");
    assert!(
        matches!(err, AuthorityError::InvalidCertificate { .. }),
        "{err}"
    );

    let ca = Authority::import_files(
        &config,
        &keys,
        &d.join("root.pem"),
        &d.join("int.pem"),
        &d.join("int.key"),
        now,
    )
    .expect("import");
    assert_eq!(ca.origin(), AuthorityOrigin::Imported);
    assert!(ca.intermediate().subject.contains("Imported Intermediate"));
    let issued = issue(&ca, &leaf_request(), now);
    let files = write_pems(d, "imported", &ca, &issued);
    std::fs::copy(d.join("root.pem"), &files.root).expect("copy root");
    assert_verifies(&files, None);

    // The import persisted: a restart loads the same CA, the key now PKCS#8 in the store.
    let keys = keystore(d);
    let reloaded = Authority::open_or_create(&config, &keys, now).expect("reload");
    assert_eq!(reloaded.origin(), AuthorityOrigin::Loaded);
    assert_eq!(reloaded.intermediate().der, ca.intermediate().der);
    let stored = keys.get(&reloaded.intermediate().key_id).expect("key");
    assert_eq!(stored.algorithm().expect("alg"), KeyAlgorithm::EcdsaP256);
    let issued = issue(&reloaded, &leaf_request(), now);
    let files = write_pems(d, "imported2", &reloaded, &issued);
    assert_verifies(&files, None);
    // A second import is refused.
    assert!(matches!(
        Authority::import_files(
            &config,
            &keys,
            &d.join("root.pem"),
            &d.join("int.pem"),
            &d.join("int.key"),
            now,
        ),
        Err(AuthorityError::AlreadyInitialized { .. })
    ));
}

#[test]
fn interrupted_bootstrap_is_retried_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path());
    let keys = keystore(dir.path());
    let now = OffsetDateTime::now_utc();
    let first = Authority::create(&config, &keys, now).expect("create");
    // Simulate a crash before root.pem was written: keys and intermediate.pem exist.
    std::fs::remove_file(config.cert_dir.join(ROOT_CERT_FILE)).expect("rm root");
    let second = Authority::open_or_create(&config, &keys, now).expect("retry");
    assert_eq!(second.origin(), AuthorityOrigin::Created);
    assert_ne!(second.root().der, first.root().der);
    assert_ne!(second.intermediate().key_id, first.intermediate().key_id);
    let keys = keystore(dir.path());
    let third = Authority::open_or_create(&config, &keys, now).expect("load");
    assert_eq!(third.root().der, second.root().der);
    assert_eq!(third.intermediate().der, second.intermediate().der);
}
