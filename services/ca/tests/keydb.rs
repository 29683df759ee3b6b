//! The SQLite key store: keys survive reopening, stay private on disk, are never replaced,
//! concurrent writers share transactions without losing or mixing keys, and a directory
//! written by the file store keeps its keys.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use certledger_ca::keydb::DATABASE_FILE;
use certledger_ca::{
    FileKeyStore, KeyAlgorithm, KeyEncryptionKey, KeyStore, KeyStoreError, PrivateKeyPkcs8,
    SqliteKeyStore, generate_key,
};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

fn key() -> PrivateKeyPkcs8 {
    generate_key(KeyAlgorithm::EcdsaP256)
        .expect("key")
        .private_key
}

/// Every byte SQLite wrote: the database and its write-ahead log.
fn database_bytes(dir: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(dir.join(DATABASE_FILE)).expect("database");
    if let Ok(wal) = std::fs::read(dir.join(format!("{DATABASE_FILE}-wal"))) {
        bytes.extend_from_slice(&wal);
    }
    bytes
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn keys_survive_reopening_in_a_private_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys_dir = dir.path().join("keys");
    let a = key();
    {
        let store = SqliteKeyStore::open(&keys_dir, None).expect("open");
        store.put("a", &a).expect("put");
        assert!(store.get("a").expect("get").ct_eq(&a));
    }
    let store = SqliteKeyStore::open(&keys_dir, None).expect("reopen");
    assert!(store.get("a").expect("get after reopening").ct_eq(&a));
    assert_eq!(mode(&keys_dir), 0o700);
    for entry in std::fs::read_dir(&keys_dir).expect("list") {
        let path = entry.expect("entry").path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
        assert!(
            !path.to_string_lossy().ends_with(".key"),
            "no key file: {}",
            path.display()
        );
    }
    // Without a key-encryption key the key is stored as the file store's PEM.
    assert!(contains(
        &database_bytes(&keys_dir),
        a.expose_pkcs8_pem().as_bytes()
    ));
}

#[test]
fn with_a_kek_no_key_is_readable_on_disk_or_without_that_kek() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kek = KeyEncryptionKey::generate().expect("kek");
    let a = key();
    let store = SqliteKeyStore::open(dir.path(), Some(kek.clone())).expect("open");
    store.put("a", &a).expect("put");
    assert!(store.get("a").expect("get").ct_eq(&a));
    let on_disk = database_bytes(dir.path());
    assert!(!contains(&on_disk, a.expose_pkcs8_der()));
    assert!(!contains(&on_disk, a.expose_pkcs8_pem().as_bytes()));

    let without = SqliteKeyStore::open(dir.path(), None).expect("open without kek");
    assert!(matches!(
        without.get("a"),
        Err(KeyStoreError::MissingKeyEncryptionKey { .. })
    ));
    let other = KeyEncryptionKey::generate().expect("kek");
    let wrong = SqliteKeyStore::open(dir.path(), Some(other)).expect("open with another kek");
    let err = wrong.get("a").expect_err("wrong kek");
    assert!(
        matches!(err, KeyStoreError::DecryptionFailed { .. }),
        "{err}"
    );
    // Nor can a wrong key-encryption key accept a different key under a taken id.
    assert!(matches!(
        wrong.put("a", &key()),
        Err(KeyStoreError::DecryptionFailed { .. })
    ));
    assert!(store.get("a").expect("still there").ct_eq(&a));
}

#[test]
fn a_taken_id_keeps_its_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteKeyStore::open(dir.path(), None).expect("open");
    let a = key();
    store.put("k", &a).expect("put");
    store.put("k", &a).expect("the same key again");
    let err = store.put("k", &key()).expect_err("another key");
    assert!(matches!(err, KeyStoreError::AlreadyExists { .. }), "{err}");
    assert!(err.to_string().contains("\"k\""), "{err}");
    assert!(store.get("k").expect("get").ct_eq(&a));

    assert!(matches!(
        store.get("missing"),
        Err(KeyStoreError::NotFound { .. })
    ));
    for bad in ["", "../x", "a/b", ".hidden"] {
        assert!(matches!(
            store.put(bad, &a),
            Err(KeyStoreError::InvalidKeyId { .. })
        ));
        assert!(matches!(
            store.get(bad),
            Err(KeyStoreError::InvalidKeyId { .. })
        ));
    }
}

#[test]
fn concurrent_writers_each_get_their_own_key_back() {
    const THREADS: usize = 16;
    const PER_THREAD: usize = 25;
    let dir = tempfile::tempdir().expect("tempdir");
    let kek = KeyEncryptionKey::generate().expect("kek");
    let store = Arc::new(SqliteKeyStore::open(dir.path(), Some(kek.clone())).expect("open"));
    let written: Vec<Vec<(String, PrivateKeyPkcs8)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let store = store.clone();
                scope.spawn(move || {
                    (0..PER_THREAD)
                        .map(|i| {
                            let id = format!("t{t}-k{i}");
                            let secret = key();
                            store.put(&id, &secret).expect("put");
                            // Two writers of one id: the first key stays.
                            if i == 0 {
                                store.put("shared", &secret).ok();
                            }
                            (id, secret)
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("writer"))
            .collect()
    });
    // Another handle on the directory, as another process would open it.
    let other = SqliteKeyStore::open(dir.path(), Some(kek)).expect("second handle");
    for (id, secret) in written.iter().flatten() {
        assert!(store.get(id).expect("get").ct_eq(secret), "{id}");
        assert!(
            other.get(id).expect("get from the other").ct_eq(secret),
            "{id}"
        );
    }
    let shared = other.get("shared").expect("shared");
    let owners = written
        .iter()
        .filter(|keys| keys[0].1.ct_eq(&shared))
        .count();
    assert_eq!(owners, 1, "the shared id holds exactly one writer's key");
}

#[test]
fn a_directory_of_key_files_keeps_its_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kek = KeyEncryptionKey::generate().expect("kek");
    let old = key();
    FileKeyStore::open(dir.path(), Some(kek.clone()))
        .expect("file store")
        .put("old", &old)
        .expect("put");

    let store = SqliteKeyStore::open(dir.path(), Some(kek)).expect("open");
    assert!(store.get("old").expect("the file's key").ct_eq(&old));
    store.put("old", &old).expect("the same key again");
    assert!(matches!(
        store.put("old", &key()),
        Err(KeyStoreError::AlreadyExists { .. })
    ));
    let new = key();
    store.put("new", &new).expect("put");
    assert!(store.get("new").expect("get").ct_eq(&new));
    assert!(
        !dir.path().join("new.key").exists(),
        "new keys go to the database"
    );
    // The file store would not see the database's keys, so it refuses the directory.
    let err = FileKeyStore::open(dir.path(), None).expect_err("a database beside the files");
    assert!(matches!(err, KeyStoreError::HoldsDatabase { .. }), "{err}");
}

#[test]
fn a_database_readable_by_others_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(SqliteKeyStore::open(dir.path(), None).expect("open"));
    let path = dir.path().join(DATABASE_FILE);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = SqliteKeyStore::open(dir.path(), None).expect_err("insecure");
    assert!(
        matches!(err, KeyStoreError::InsecurePermissions { mode: 0o644, .. }),
        "{err}"
    );
}
