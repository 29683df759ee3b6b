//! Where private keys live: the [`KeyStore`] trait, a file backend (one file per key, `0600`
//! files in a `0700` directory, atomic no-clobber writes, optional AES-256-GCM encryption at
//! rest with a key-encryption key from configuration) and an in-memory backend for tests.
//! A PKCS#11/HSM backend would be another implementation of the same trait.
//!
//! Errors never contain key material.
//!
//! File format (`<key_id>.key`):
//! * without a KEK: the PKCS#8 key as a `PRIVATE KEY` PEM block (usable by openssl);
//! * with a KEK: `b"CLKEYENC"`, a version byte `0x01`, a 12-byte random nonce, then the
//!   AES-256-GCM ciphertext of the PKCS#8 DER followed by the 16-byte tag. The associated data
//!   is `b"certledger-ca/keystore/v1\0"` followed by the key id, so a file renamed to another
//!   key id does not decrypt.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::Zeroizing;

use crate::keys::PrivateKeyPkcs8;

/// Magic bytes of an encrypted key file.
const MAGIC: &[u8; 8] = b"CLKEYENC";
const FORMAT_V1: u8 = 0x01;
const AAD_PREFIX: &[u8] = b"certledger-ca/keystore/v1\0";
pub(crate) const KEY_FILE_SUFFIX: &str = ".key";
const TMP_SUFFIX: &str = ".tmp";
/// Key files larger than this are not keys.
const MAX_KEY_FILE_LEN: u64 = 64 * 1024;
/// Longest key id.
pub const MAX_KEY_ID_LEN: usize = 128;

/// Errors of a key store. None of them carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// The key id is not usable as a file name.
    #[error("invalid key id {key_id:?}: {reason}")]
    InvalidKeyId {
        /// The id (truncated).
        key_id: String,
        /// Why.
        reason: &'static str,
    },
    /// No key with this id.
    #[error("key {key_id:?} not found in the key store")]
    NotFound {
        /// The id.
        key_id: String,
    },
    /// A different key is already stored under this id (keys are never replaced).
    #[error("key {key_id:?} already exists with different content; keys are never overwritten")]
    AlreadyExists {
        /// The id.
        key_id: String,
    },
    /// A file-system operation failed.
    #[error("key store: cannot {op} {path}: {source}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The key database failed (never with key material: values are bound, not quoted).
    #[error("key store: cannot {op} {path}: {reason}")]
    Database {
        /// What we were doing.
        op: &'static str,
        /// The database file.
        path: PathBuf,
        /// SQLite's message.
        reason: String,
    },
    /// The directory holds the SQLite store's database: the file store would not see its
    /// keys.
    #[error(
        "the key directory {dir} holds keys.sqlite, written by the sqlite key store: open it with that store (--key-store sqlite)"
    )]
    HoldsDatabase {
        /// The key directory.
        dir: PathBuf,
    },
    /// A key file readable by group or others.
    #[error("key file {path} has insecure permissions {mode:o} (expected 600)")]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is encrypted but the store has no key-encryption key.
    #[error("key {key_id:?} is encrypted at rest but no key-encryption key is configured")]
    MissingKeyEncryptionKey {
        /// The id.
        key_id: String,
    },
    /// Authentication failed: wrong key-encryption key, or the file was modified or renamed.
    #[error(
        "key {key_id:?} cannot be decrypted: wrong key-encryption key, or the file was modified or renamed"
    )]
    DecryptionFailed {
        /// The id.
        key_id: String,
    },
    /// Encryption failed (crypto library error).
    #[error("key {key_id:?} could not be encrypted")]
    EncryptionFailed {
        /// The id.
        key_id: String,
    },
    /// The file is neither a PEM private key nor an encrypted key of a known version.
    #[error("key file for {key_id:?} is corrupt: {reason}")]
    Corrupt {
        /// The id.
        key_id: String,
        /// Why.
        reason: &'static str,
    },
    /// The configured key-encryption key is unusable.
    #[error("invalid key-encryption key: {reason}")]
    InvalidKeyEncryptionKey {
        /// Why (never the value).
        reason: &'static str,
    },
}

/// Storage of private keys by id. Implementations must never put key material in errors or
/// logs. Keys are immutable: `put` of a different key under an existing id fails with
/// [`KeyStoreError::AlreadyExists`]; `put` of the identical key again succeeds (idempotent).
pub trait KeyStore: Send + Sync {
    /// Stores `secret` under `key_id` durably before returning.
    fn put(&self, key_id: &str, secret: &PrivateKeyPkcs8) -> Result<(), KeyStoreError>;
    /// Loads the key stored under `key_id`.
    fn get(&self, key_id: &str) -> Result<PrivateKeyPkcs8, KeyStoreError>;
}

/// Which [`KeyStore`] backend a service opens on its key directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStoreKind {
    /// [`SqliteKeyStore`](crate::SqliteKeyStore): one database, concurrent writes in one
    /// transaction; processes on one host only. certd's default.
    Sqlite,
    /// [`FileKeyStore`]: a file per key; also on a volume shared by several hosts.
    Files,
}

impl KeyStoreKind {
    /// The configuration names, in the order of the variants.
    pub const NAMES: [&'static str; 2] = ["sqlite", "files"];
}

impl std::str::FromStr for KeyStoreKind {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "sqlite" => Ok(Self::Sqlite),
            "files" => Ok(Self::Files),
            _ => Err(format!("expected one of: {}", Self::NAMES.join(", "))),
        }
    }
}

/// How to open a key store: its backend and the key-encryption key, if any.
#[derive(Debug, Clone)]
pub struct KeyStoreSettings {
    /// The backend.
    pub kind: KeyStoreKind,
    /// Encrypts new keys at rest (`Debug` redacts it).
    pub kek: Option<KeyEncryptionKey>,
}

/// The backend, without a key-encryption key.
impl From<KeyStoreKind> for KeyStoreSettings {
    fn from(kind: KeyStoreKind) -> Self {
        Self { kind, kek: None }
    }
}

impl KeyStoreSettings {
    /// Opens the store in `dir`, creating it if needed.
    pub fn open(&self, dir: &Path) -> Result<std::sync::Arc<dyn KeyStore>, KeyStoreError> {
        Ok(match self.kind {
            KeyStoreKind::Sqlite => {
                std::sync::Arc::new(crate::SqliteKeyStore::open(dir, self.kek.clone())?)
            }
            KeyStoreKind::Files => std::sync::Arc::new(FileKeyStore::open(dir, self.kek.clone())?),
        })
    }
}

/// Checks a key id: 1 to 128 characters of `A-Z a-z 0-9 . _ -`, not starting with `.` or `-`.
pub fn validate_key_id(key_id: &str) -> Result<(), KeyStoreError> {
    let invalid = |reason| KeyStoreError::InvalidKeyId {
        key_id: key_id.chars().take(MAX_KEY_ID_LEN).collect(),
        reason,
    };
    if key_id.is_empty() {
        return Err(invalid("empty"));
    }
    if key_id.len() > MAX_KEY_ID_LEN {
        return Err(invalid("longer than 128 characters"));
    }
    if !key_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(invalid(
            "only letters, digits, '.', '_' and '-' are allowed",
        ));
    }
    if key_id.starts_with('.') || key_id.starts_with('-') {
        return Err(invalid("must not start with '.' or '-'"));
    }
    Ok(())
}

/// A 32-byte AES-256-GCM key-encryption key from configuration. Zeroed on drop; `Debug` does
/// not print it.
#[derive(Clone)]
pub struct KeyEncryptionKey(Zeroizing<[u8; 32]>);

impl KeyEncryptionKey {
    /// Key length in bytes.
    pub const LEN: usize = 32;

    /// From raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// From a slice, which must be exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyStoreError> {
        let array: [u8; 32] =
            bytes
                .try_into()
                .map_err(|_| KeyStoreError::InvalidKeyEncryptionKey {
                    reason: "must be exactly 32 bytes",
                })?;
        Ok(Self::from_bytes(array))
    }

    /// From 64 hexadecimal characters (surrounding whitespace ignored), as in a config file
    /// or environment variable.
    pub fn from_hex(text: &str) -> Result<Self, KeyStoreError> {
        let bytes = Zeroizing::new(hex::decode(text.trim()).map_err(|_| {
            KeyStoreError::InvalidKeyEncryptionKey {
                reason: "must be 64 hexadecimal characters",
            }
        })?);
        Self::from_slice(&bytes).map_err(|_| KeyStoreError::InvalidKeyEncryptionKey {
            reason: "must be 64 hexadecimal characters",
        })
    }

    /// A new random key (for tooling and tests).
    pub fn generate() -> Result<Self, KeyStoreError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(bytes.as_mut()).map_err(|_| {
            KeyStoreError::InvalidKeyEncryptionKey {
                reason: "the system random number generator failed",
            }
        })?;
        Ok(Self(bytes))
    }

    fn aead_key(&self) -> Result<LessSafeKey, ()> {
        UnboundKey::new(&AES_256_GCM, self.0.as_ref())
            .map(LessSafeKey::new)
            .map_err(|_| ())
    }
}

impl fmt::Debug for KeyEncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyEncryptionKey(<redacted>)")
    }
}

fn aad(key_id: &str) -> Vec<u8> {
    let mut aad = AAD_PREFIX.to_vec();
    aad.extend_from_slice(key_id.as_bytes());
    aad
}

fn encrypt(
    kek: &KeyEncryptionKey,
    key_id: &str,
    plaintext: &[u8],
) -> Result<Vec<u8>, KeyStoreError> {
    let failed = || KeyStoreError::EncryptionFailed {
        key_id: key_id.to_string(),
    };
    let key = kek.aead_key().map_err(|_| failed())?;
    let mut nonce_bytes = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce_bytes).map_err(|_| failed())?;
    let mut in_out = Zeroizing::new(plaintext.to_vec());
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce_bytes),
        Aad::from(aad(key_id)),
        &mut *in_out,
    )
    .map_err(|_| failed())?;
    let mut out = Vec::with_capacity(MAGIC.len() + 1 + NONCE_LEN + in_out.len());
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_V1);
    out.extend_from_slice(&nonce_bytes);
    out.extend_from_slice(&in_out);
    Ok(out)
}

fn decrypt(
    kek: &KeyEncryptionKey,
    key_id: &str,
    file: &[u8],
) -> Result<Zeroizing<Vec<u8>>, KeyStoreError> {
    let corrupt = |reason| KeyStoreError::Corrupt {
        key_id: key_id.to_string(),
        reason,
    };
    let body = file
        .strip_prefix(MAGIC.as_slice())
        .ok_or(corrupt("bad magic"))?;
    let (&version, body) = body.split_first().ok_or(corrupt("truncated"))?;
    if version != FORMAT_V1 {
        return Err(corrupt("unknown format version"));
    }
    if body.len() < NONCE_LEN + AES_256_GCM.tag_len() {
        return Err(corrupt("truncated"));
    }
    let (nonce_bytes, ciphertext) = body.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce_bytes).map_err(|_| corrupt("bad nonce"))?;
    let key = kek
        .aead_key()
        .map_err(|_| KeyStoreError::DecryptionFailed {
            key_id: key_id.to_string(),
        })?;
    let mut in_out = Zeroizing::new(ciphertext.to_vec());
    let plain_len = key
        .open_in_place(nonce, Aad::from(aad(key_id)), &mut in_out)
        .map_err(|_| KeyStoreError::DecryptionFailed {
            key_id: key_id.to_string(),
        })?
        .len();
    in_out.truncate(plain_len);
    Ok(in_out)
}

/// Creates the key directory (and its parents) if needed and gives it mode `0700`.
/// A directory that already has that mode is left alone, so a read-only mount opens.
pub(crate) fn create_key_dir(dir: &Path) -> Result<(), KeyStoreError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err("create directory", dir))?;
    let mode = fs::metadata(dir)
        .map_err(io_err("stat", dir))?
        .permissions()
        .mode();
    if mode & 0o777 == 0o700 {
        return Ok(());
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(io_err("set permissions of", dir))
}

/// Refuses a file of keys that group or others may read or write.
pub(crate) fn check_private(path: &Path, meta: &fs::Metadata) -> Result<(), KeyStoreError> {
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyStoreError::InsecurePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// A key as stored: encrypted with `kek` when there is one, otherwise its PKCS#8 PEM.
pub(crate) fn seal(
    kek: Option<&KeyEncryptionKey>,
    key_id: &str,
    secret: &PrivateKeyPkcs8,
) -> Result<Zeroizing<Vec<u8>>, KeyStoreError> {
    match kek {
        Some(kek) => encrypt(kek, key_id, secret.expose_pkcs8_der()).map(Zeroizing::new),
        None => {
            let pem = secret.expose_pkcs8_pem();
            Ok(Zeroizing::new(pem.as_bytes().to_vec()))
        }
    }
}

/// The key in stored bytes written by [`seal`].
pub(crate) fn unseal(
    kek: Option<&KeyEncryptionKey>,
    key_id: &str,
    bytes: &[u8],
) -> Result<PrivateKeyPkcs8, KeyStoreError> {
    if bytes.starts_with(MAGIC) {
        let kek = kek.ok_or_else(|| KeyStoreError::MissingKeyEncryptionKey {
            key_id: key_id.to_string(),
        })?;
        let der = decrypt(kek, key_id, bytes)?;
        return Ok(PrivateKeyPkcs8::from_pkcs8_der(der.to_vec()));
    }
    let corrupt = |reason| KeyStoreError::Corrupt {
        key_id: key_id.to_string(),
        reason,
    };
    let text =
        std::str::from_utf8(bytes).map_err(|_| corrupt("neither PEM nor an encrypted key"))?;
    let block = pem::parse(text).map_err(|_| corrupt("neither PEM nor an encrypted key"))?;
    if block.tag() != "PRIVATE KEY" {
        return Err(corrupt("PEM block is not a PKCS#8 PRIVATE KEY"));
    }
    if kek.is_some() {
        tracing::warn!(
            key_id,
            "key stored in plaintext although a key-encryption key is configured"
        );
    }
    Ok(PrivateKeyPkcs8::from_pkcs8_der(block.into_contents()))
}

/// One file per key in a directory.
#[derive(Debug)]
pub struct FileKeyStore {
    dir: PathBuf,
    kek: Option<KeyEncryptionKey>,
    /// The directory, kept open for its fsyncs.
    dir_handle: File,
    dir_sync: DirSync,
}

/// The key directory's fsyncs, shared by concurrent `put`s: a name is durable once an
/// fsync of the directory has started after it was linked, so one fsync serves every key
/// linked before it began (a group commit), instead of one per key.
#[derive(Debug, Default)]
struct DirSync {
    state: Mutex<DirSyncState>,
    finished: Condvar,
}

#[derive(Debug, Default)]
struct DirSyncState {
    /// Names linked so far.
    linked: u64,
    /// Names made durable by a finished fsync.
    synced: u64,
    /// An fsync is under way.
    running: bool,
}

impl DirSync {
    fn lock(&self) -> MutexGuard<'_, DirSyncState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Returns once a name linked before this call is durable: after an fsync that began
    /// after the call, run by this thread or by another one. An fsync's failure is the
    /// error of the thread that ran it; those waiting on it try again themselves.
    fn after_link(&self, fsync: impl Fn() -> io::Result<()>) -> io::Result<()> {
        let mut state = self.lock();
        state.linked += 1;
        let mine = state.linked;
        loop {
            if state.synced >= mine {
                return Ok(());
            }
            if !state.running {
                state.running = true;
                let covers = state.linked;
                drop(state);
                let result = fsync();
                state = self.lock();
                state.running = false;
                if result.is_ok() {
                    state.synced = state.synced.max(covers);
                }
                self.finished.notify_all();
                return result;
            }
            state = self.finished.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }
}

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> KeyStoreError + 'a {
    move |source| KeyStoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl FileKeyStore {
    /// Opens (creating if needed) the key directory with mode `0700` and removes temporary
    /// files left by an interrupted write. With `kek`, new keys are encrypted at rest.
    /// A directory that holds the SQLite store's database is refused: its keys would be
    /// missing.
    pub fn open(
        dir: impl Into<PathBuf>,
        kek: Option<KeyEncryptionKey>,
    ) -> Result<Self, KeyStoreError> {
        let dir = dir.into();
        if dir.join(crate::keydb::DATABASE_FILE).exists() {
            return Err(KeyStoreError::HoldsDatabase { dir });
        }
        Self::open_files(dir, kek)
    }

    /// [`FileKeyStore::open`] without the check for a database (for the SQLite store's
    /// own reads of key files beside it).
    pub(crate) fn open_files(
        dir: PathBuf,
        kek: Option<KeyEncryptionKey>,
    ) -> Result<Self, KeyStoreError> {
        create_key_dir(&dir)?;
        let dir_handle = File::open(&dir).map_err(io_err("open", &dir))?;
        let entries = fs::read_dir(&dir).map_err(io_err("list", &dir))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.ends_with(TMP_SUFFIX) {
                let path = entry.path();
                if let Err(e) = fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove stale temporary key file");
                }
            }
        }
        Ok(Self {
            dir,
            kek,
            dir_handle,
            dir_sync: DirSync::default(),
        })
    }

    /// The key directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// True if new keys are encrypted at rest.
    pub fn encrypts_at_rest(&self) -> bool {
        self.kek.is_some()
    }

    /// The file a key is (or would be) stored in.
    pub fn key_path(&self, key_id: &str) -> Result<PathBuf, KeyStoreError> {
        validate_key_id(key_id)?;
        Ok(self.dir.join(format!("{key_id}{KEY_FILE_SUFFIX}")))
    }

    /// Makes the names linked so far durable (see [`DirSync`]).
    fn sync_dir(&self) -> Result<(), KeyStoreError> {
        self.dir_sync
            .after_link(|| self.dir_handle.sync_all())
            .map_err(io_err("sync directory", &self.dir))
    }
}

impl FileKeyStore {
    /// Writes the key as an unnamed file (`O_TMPFILE`, `0600`), fsyncs it and links it to
    /// its final name, so the name appears with the whole key or not at all. `None` when the
    /// filesystem has no unnamed files (or `/proc` is missing); otherwise whether it linked
    /// (`false`: the name exists).
    ///
    /// Unlike a temporary name, nothing is deleted afterwards: on ext4 without a journal
    /// every deleted inode is skipped by the next creations for a while
    /// (`recently_deleted`), and deleting a temporary file per key made creating one cost
    /// a scan of all the keys stored in the last seconds.
    fn link_unnamed(&self, path: &Path, contents: &[u8]) -> Result<Option<bool>, KeyStoreError> {
        use rustix::fs::{AtFlags, CWD, Mode, OFlags};
        use rustix::io::Errno;
        let flags = OFlags::WRONLY | OFlags::TMPFILE | OFlags::CLOEXEC;
        let fd = match rustix::fs::open(&self.dir, flags, Mode::from_raw_mode(0o600)) {
            Ok(fd) => fd,
            // No O_TMPFILE here (EISDIR: a kernel that reads it as O_DIRECTORY).
            Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL) => return Ok(None),
            Err(e) => return Err(io_err("create a file in", &self.dir)(e.into())),
        };
        let mut file = File::from(fd);
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .and_then(|()| file.write_all(contents))
            .and_then(|()| file.sync_all())
            .map_err(io_err("write", path))?;
        let unnamed = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file));
        match rustix::fs::linkat(CWD, &unnamed, CWD, path, AtFlags::SYMLINK_FOLLOW) {
            Ok(()) => Ok(Some(true)),
            Err(Errno::EXIST) => Ok(Some(false)),
            Err(Errno::NOENT) if !Path::new("/proc/self/fd").exists() => Ok(None),
            Err(e) => Err(io_err("link", path)(e.into())),
        }
    }

    /// Without unnamed files: writes a temporary file (`0600`, `O_EXCL`), fsyncs it, links
    /// it to its final name and removes the temporary name; whether it linked.
    fn link_from_temporary(
        &self,
        key_id: &str,
        path: &Path,
        contents: &[u8],
    ) -> Result<bool, KeyStoreError> {
        let mut suffix = [0u8; 8];
        aws_lc_rs::rand::fill(&mut suffix).map_err(|_| KeyStoreError::Io {
            op: "choose a temporary name for",
            path: path.to_path_buf(),
            source: io::Error::other("the system random number generator failed"),
        })?;
        let tmp = self
            .dir
            .join(format!(".{key_id}.{}{TMP_SUFFIX}", hex::encode(suffix)));
        let write = || -> Result<(), KeyStoreError> {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io_err("create", &tmp))?;
            file.set_permissions(fs::Permissions::from_mode(0o600))
                .map_err(io_err("set permissions of", &tmp))?;
            file.write_all(contents).map_err(io_err("write", &tmp))?;
            file.sync_all().map_err(io_err("sync", &tmp))?;
            Ok(())
        };
        let linked = write().and_then(|()| match fs::hard_link(&tmp, path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(io_err("link", path)(e)),
        });
        if let Err(e) = fs::remove_file(&tmp)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %tmp.display(), error = %e, "cannot remove temporary key file");
        }
        linked
    }
}

impl KeyStore for FileKeyStore {
    /// Writes the key to a file that gets its final name only once complete and fsynced —
    /// by `link(2)`, so an existing key is never replaced — then fsyncs the directory.
    fn put(&self, key_id: &str, secret: &PrivateKeyPkcs8) -> Result<(), KeyStoreError> {
        let path = self.key_path(key_id)?;
        let contents = seal(self.kek.as_ref(), key_id, secret)?;
        let linked = match self.link_unnamed(&path, &contents)? {
            Some(linked) => linked,
            None => self.link_from_temporary(key_id, &path, &contents)?,
        };
        if linked {
            self.sync_dir()?;
            tracing::info!(key_id, encrypted = self.kek.is_some(), "stored private key");
            Ok(())
        } else {
            // Idempotent: the same key again is fine, a different one is not.
            let existing = self.get(key_id)?;
            if existing.ct_eq(secret) {
                Ok(())
            } else {
                Err(KeyStoreError::AlreadyExists {
                    key_id: key_id.to_string(),
                })
            }
        }
    }

    fn get(&self, key_id: &str) -> Result<PrivateKeyPkcs8, KeyStoreError> {
        let path = self.key_path(key_id)?;
        // Refuse a symlink planted in place of a key file (the directory is 0700, so this
        // is defence in depth).
        match fs::symlink_metadata(&path) {
            Ok(m) if !m.file_type().is_file() => {
                return Err(KeyStoreError::Corrupt {
                    key_id: key_id.to_string(),
                    reason: "not a regular file",
                });
            }
            _ => {}
        }
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(KeyStoreError::NotFound {
                    key_id: key_id.to_string(),
                });
            }
            Err(e) => return Err(io_err("open", &path)(e)),
        };
        let meta = file.metadata().map_err(io_err("stat", &path))?;
        check_private(&path, &meta)?;
        if meta.len() > MAX_KEY_FILE_LEN {
            return Err(KeyStoreError::Corrupt {
                key_id: key_id.to_string(),
                reason: "file too large",
            });
        }
        let mut bytes = Zeroizing::new(Vec::with_capacity(meta.len() as usize));
        file.take(MAX_KEY_FILE_LEN)
            .read_to_end(&mut bytes)
            .map_err(io_err("read", &path))?;
        unseal(self.kek.as_ref(), key_id, &bytes)
    }
}

/// Keys in memory, for tests and ephemeral setups.
#[derive(Default)]
pub struct MemoryKeyStore {
    keys: Mutex<HashMap<String, PrivateKeyPkcs8>>,
}

impl MemoryKeyStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl fmt::Debug for MemoryKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.keys.lock().map(|k| k.len()).unwrap_or(0);
        f.debug_struct("MemoryKeyStore")
            .field("keys", &count)
            .finish()
    }
}

impl KeyStore for MemoryKeyStore {
    fn put(&self, key_id: &str, secret: &PrivateKeyPkcs8) -> Result<(), KeyStoreError> {
        validate_key_id(key_id)?;
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        match keys.get(key_id) {
            Some(existing) if existing.ct_eq(secret) => Ok(()),
            Some(_) => Err(KeyStoreError::AlreadyExists {
                key_id: key_id.to_string(),
            }),
            None => {
                keys.insert(key_id.to_string(), secret.clone());
                Ok(())
            }
        }
    }

    fn get(&self, key_id: &str) -> Result<PrivateKeyPkcs8, KeyStoreError> {
        validate_key_id(key_id)?;
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.get(key_id)
            .cloned()
            .ok_or_else(|| KeyStoreError::NotFound {
                key_id: key_id.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_are_checked() {
        for ok in ["ca-root-0123abcd", "k1", "a.b_c-d", "A9"] {
            assert!(validate_key_id(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".hidden",
            "-x",
            "../etc/passwd",
            "a/b",
            "a b",
            "ä",
            &"x".repeat(129),
        ] {
            assert!(validate_key_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn kek_parsing_never_echoes_the_value() {
        let secret_hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let kek = KeyEncryptionKey::from_hex(secret_hex).expect("kek");
        assert!(!format!("{kek:?}").contains("0011"));
        let err = KeyEncryptionKey::from_hex(&secret_hex[..62]).expect_err("short");
        assert!(!err.to_string().contains("0011"));
        assert!(KeyEncryptionKey::from_slice(&[0u8; 31]).is_err());
    }

    #[test]
    fn encryption_binds_the_key_id() {
        let kek = KeyEncryptionKey::generate().expect("kek");
        let sealed = encrypt(&kek, "a", b"secret pkcs8").expect("seal");
        assert_eq!(
            &*decrypt(&kek, "a", &sealed).expect("open"),
            b"secret pkcs8"
        );
        assert!(matches!(
            decrypt(&kek, "b", &sealed),
            Err(KeyStoreError::DecryptionFailed { .. })
        ));
        let other = KeyEncryptionKey::generate().expect("kek");
        assert!(matches!(
            decrypt(&other, "a", &sealed),
            Err(KeyStoreError::DecryptionFailed { .. })
        ));
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(matches!(
            decrypt(&kek, "a", &tampered),
            Err(KeyStoreError::DecryptionFailed { .. })
        ));
        assert!(matches!(
            decrypt(&kek, "a", &sealed[..20]),
            Err(KeyStoreError::Corrupt { .. })
        ));
        // Two encryptions of the same key use different nonces.
        assert_ne!(sealed, encrypt(&kek, "a", b"secret pkcs8").expect("seal"));
    }

    #[test]
    fn memory_store_is_immutable_per_id() {
        let store = MemoryKeyStore::new();
        let a = PrivateKeyPkcs8::from_pkcs8_der(vec![1, 2, 3]);
        let b = PrivateKeyPkcs8::from_pkcs8_der(vec![4, 5, 6]);
        store.put("k", &a).expect("put");
        store.put("k", &a).expect("idempotent put");
        assert!(matches!(
            store.put("k", &b),
            Err(KeyStoreError::AlreadyExists { .. })
        ));
        assert!(store.get("k").expect("get").ct_eq(&a));
        assert!(matches!(
            store.get("missing"),
            Err(KeyStoreError::NotFound { .. })
        ));
    }

    /// Waits up to 10 s for `condition` on the directory-sync state.
    fn wait_for(sync: &DirSync, condition: impl Fn(&DirSyncState) -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !condition(&sync.lock()) {
            assert!(
                std::time::Instant::now() < deadline,
                "condition not reached"
            );
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_directory_fsync_serves_only_names_linked_before_it_began() {
        use std::sync::atomic::{AtomicU32, Ordering};
        use std::sync::mpsc;
        let sync = DirSync::default();
        let fsyncs = AtomicU32::new(0);
        let (release, released) = mpsc::channel::<()>();
        let released = Mutex::new(released);
        std::thread::scope(|scope| {
            // The first put's fsync runs until released.
            let first = scope.spawn(|| {
                sync.after_link(|| {
                    fsyncs.fetch_add(1, Ordering::SeqCst);
                    released
                        .lock()
                        .map_err(|_| io::Error::other("poisoned"))?
                        .recv()
                        .map_err(io::Error::other)
                })
            });
            wait_for(&sync, |s| s.running);
            // Two names linked while it runs: it must not count for them.
            let later: Vec<_> = (0..2)
                .map(|_| {
                    scope.spawn(|| {
                        sync.after_link(|| {
                            fsyncs.fetch_add(1, Ordering::SeqCst);
                            Ok(())
                        })
                    })
                })
                .collect();
            wait_for(&sync, |s| s.linked == 3);
            release.send(()).expect("release");
            first.join().expect("first").expect("first fsync");
            for put in later {
                put.join().expect("later").expect("later fsync");
            }
        });
        // One fsync for the first name, one shared by the two linked during it.
        assert_eq!(fsyncs.load(Ordering::SeqCst), 2);
        assert_eq!(sync.lock().synced, 3);
        // A failed fsync is its caller's error and makes nothing durable.
        let failed = sync.after_link(|| Err(io::Error::other("disk gone")));
        assert!(failed.is_err());
        assert_eq!(sync.lock().synced, 3);
        sync.after_link(|| Ok(())).expect("next fsync");
        assert_eq!(sync.lock().synced, 5);
    }

    #[test]
    fn both_ways_of_writing_a_key_file_leave_only_complete_0600_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileKeyStore::open(dir.path().join("keys"), None).expect("store");
        let a = PrivateKeyPkcs8::from_pkcs8_der(vec![1, 2, 3]);
        let b = PrivateKeyPkcs8::from_pkcs8_der(vec![4, 5, 6]);
        let contents = |key| seal(None, "unused", key).expect("encode");
        let unnamed = store.key_path("unnamed").expect("path");
        let temporary = store.key_path("temporary").expect("path");
        // This machine's filesystem has unnamed files; elsewhere the fallback is used.
        assert_eq!(
            store
                .link_unnamed(&unnamed, &contents(&a))
                .expect("unnamed"),
            Some(true)
        );
        assert_eq!(
            store.link_unnamed(&unnamed, &contents(&b)).expect("again"),
            Some(false),
            "an existing name is never replaced"
        );
        assert!(
            store
                .link_from_temporary("temporary", &temporary, &contents(&a))
                .expect("temporary")
        );
        assert!(
            !store
                .link_from_temporary("temporary", &temporary, &contents(&b))
                .expect("again")
        );
        let mut names: Vec<String> = fs::read_dir(store.dir())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["temporary.key", "unnamed.key"]);
        for (id, path) in [("unnamed", &unnamed), ("temporary", &temporary)] {
            let mode = fs::metadata(path).expect("stat").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{id}");
            assert!(store.get(id).expect("get").ct_eq(&a), "{id}");
        }
        // Through the trait: the same key again is fine, another one is not.
        store.put("unnamed", &a).expect("idempotent put");
        assert!(matches!(
            store.put("unnamed", &b),
            Err(KeyStoreError::AlreadyExists { .. })
        ));
    }
}
