//! A key store in one SQLite database, `keys.sqlite` (`0600`) in the key directory (`0700`):
//! each key as the key files hold it (PEM, or AES-256-GCM with the key id bound, see
//! [`crate::keystore`]), in a table `private_keys (key_id, sealed)`.
//!
//! Why a database rather than a file per key: a key file costs an fsync of its own, and
//! those fsyncs were a quarter of the CPU of issuing with generated keys. Here concurrent
//! `put`s share one transaction — one fsync of the write-ahead log for all of them (a group
//! commit) — and SQLite keeps the crash recovery: a key is stored entirely or not at all.
//!
//! Processes on one host may share the directory (SQLite's locking). Not across hosts: a
//! volume shared by several machines needs the file store.
//!
//! Key files (`<key_id>.key`) already in the directory when it is opened stay readable, and
//! their ids stay taken, so a directory written by the file store keeps working; new keys
//! go to the database.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use zeroize::Zeroizing;

use crate::keys::PrivateKeyPkcs8;
use crate::keystore::{
    FileKeyStore, KEY_FILE_SUFFIX, KeyEncryptionKey, KeyStore, KeyStoreError, check_private,
    create_key_dir, io_err, seal, unseal, validate_key_id,
};

/// The database's file name in the key directory.
pub const DATABASE_FILE: &str = "keys.sqlite";
/// How long a statement waits for another process's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Read connections kept for reuse.
const IDLE_READERS: usize = 8;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS private_keys (
    key_id TEXT PRIMARY KEY NOT NULL,
    sealed BLOB NOT NULL
) WITHOUT ROWID";
const INSERT: &str =
    "INSERT INTO private_keys (key_id, sealed) VALUES (?1, ?2) ON CONFLICT (key_id) DO NOTHING";
const SELECT: &str = "SELECT sealed FROM private_keys WHERE key_id = ?1";

/// Private keys in `keys.sqlite`; see the module documentation.
pub struct SqliteKeyStore {
    path: PathBuf,
    kek: Option<KeyEncryptionKey>,
    /// Key files found in the directory at open.
    files: Option<FileKeyStore>,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    group: Mutex<Group>,
    committed: Condvar,
}

impl std::fmt::Debug for SqliteKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteKeyStore")
            .field("path", &self.path)
            .field("encrypts_at_rest", &self.kek.is_some())
            .field("key_files", &self.files.is_some())
            .finish_non_exhaustive()
    }
}

/// The `put`s waiting for a transaction.
#[derive(Default)]
struct Group {
    waiting: Vec<Put>,
    /// A transaction is being written by one of the callers.
    committing: bool,
}

/// One `put` in a group.
struct Put {
    key_id: String,
    sealed: Zeroizing<Vec<u8>>,
    secret: PrivateKeyPkcs8,
    outcome: Arc<Mutex<Option<Result<(), KeyStoreError>>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn db_err<'a>(op: &'static str, path: &'a Path) -> impl Fn(rusqlite::Error) -> KeyStoreError + 'a {
    move |e| KeyStoreError::Database {
        op,
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

impl SqliteKeyStore {
    /// Opens (creating if needed) the key directory (`0700`) and its database (`0600`,
    /// write-ahead log, `synchronous = FULL`). With `kek`, new keys are encrypted at rest.
    pub fn open(
        dir: impl Into<PathBuf>,
        kek: Option<KeyEncryptionKey>,
    ) -> Result<Self, KeyStoreError> {
        let dir = dir.into();
        create_key_dir(&dir)?;
        let path = dir.join(DATABASE_FILE);
        // Created here with 0600, so SQLite (which gives its -wal and -shm files the
        // database's mode) never creates it with the process's umask.
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err("create", &path))?;
        check_private(&path, &file.metadata().map_err(io_err("stat", &path))?)?;
        let writer = connect(&path)?;
        writer
            .pragma_update(None, "journal_mode", "WAL")
            .and_then(|()| writer.execute_batch(SCHEMA))
            .map_err(db_err("create the key table in", &path))?;
        let files = if holds_key_files(&dir)? {
            Some(FileKeyStore::open_files(dir.clone(), kek.clone())?)
        } else {
            None
        };
        Ok(Self {
            path,
            kek,
            files,
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
            group: Mutex::new(Group::default()),
            committed: Condvar::new(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes a group of `put`s in one transaction; each one's outcome.
    fn commit(&self, group: &[Put]) -> Result<Vec<Result<(), KeyStoreError>>, rusqlite::Error> {
        let mut db = lock(&self.writer);
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut outcomes = Vec::with_capacity(group.len());
        {
            let mut insert = tx.prepare_cached(INSERT)?;
            let mut select = tx.prepare_cached(SELECT)?;
            for put in group {
                if insert.execute((&put.key_id, &put.sealed[..]))? == 1 {
                    outcomes.push(Ok(()));
                    continue;
                }
                // Idempotent: the same key again is fine, a different one is not.
                let stored = Zeroizing::new(
                    select.query_row([&put.key_id], |row| row.get::<_, Vec<u8>>(0))?,
                );
                outcomes.push(unseal(self.kek.as_ref(), &put.key_id, &stored).and_then(
                    |existing| {
                        if existing.ct_eq(&put.secret) {
                            Ok(())
                        } else {
                            Err(KeyStoreError::AlreadyExists {
                                key_id: put.key_id.clone(),
                            })
                        }
                    },
                ));
            }
        }
        tx.commit()?;
        Ok(outcomes)
    }

    /// Runs `read` on an idle read connection (or a new one).
    fn read<T>(
        &self,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, KeyStoreError> {
        let idle = lock(&self.readers).pop();
        let db = match idle {
            Some(db) => db,
            None => connect(&self.path)?,
        };
        let result = read(&db).map_err(db_err("read", &self.path));
        let mut readers = lock(&self.readers);
        if readers.len() < IDLE_READERS {
            readers.push(db);
        }
        result
    }
}

fn connect(path: &Path) -> Result<Connection, KeyStoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let db = Connection::open_with_flags(path, flags).map_err(db_err("open", path))?;
    db.busy_timeout(BUSY_TIMEOUT)
        .and_then(|()| db.pragma_update(None, "synchronous", "FULL"))
        .map_err(db_err("configure", path))?;
    Ok(db)
}

/// Whether the directory holds a key file of the file store.
fn holds_key_files(dir: &Path) -> Result<bool, KeyStoreError> {
    let entries = fs::read_dir(dir).map_err(io_err("list", dir))?;
    Ok(entries.flatten().any(|entry| {
        entry
            .file_name()
            .to_string_lossy()
            .ends_with(KEY_FILE_SUFFIX)
    }))
}

impl KeyStore for SqliteKeyStore {
    /// Stores the key in the next transaction and returns once that is committed: the
    /// first caller to find no transaction under way writes every key waiting by then.
    fn put(&self, key_id: &str, secret: &PrivateKeyPkcs8) -> Result<(), KeyStoreError> {
        validate_key_id(key_id)?;
        if let Some(files) = &self.files {
            match files.get(key_id) {
                Ok(existing) if existing.ct_eq(secret) => return Ok(()),
                Ok(_) => {
                    return Err(KeyStoreError::AlreadyExists {
                        key_id: key_id.to_string(),
                    });
                }
                Err(KeyStoreError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let sealed = seal(self.kek.as_ref(), key_id, secret)?;
        let outcome = Arc::new(Mutex::new(None));
        let mut group = lock(&self.group);
        group.waiting.push(Put {
            key_id: key_id.to_string(),
            sealed,
            secret: secret.clone(),
            outcome: outcome.clone(),
        });
        loop {
            if let Some(outcome) = lock(&outcome).take() {
                return outcome;
            }
            if group.committing {
                group = self
                    .committed
                    .wait(group)
                    .unwrap_or_else(|p| p.into_inner());
                continue;
            }
            group.committing = true;
            let puts = std::mem::take(&mut group.waiting);
            drop(group);
            match self.commit(&puts) {
                Ok(outcomes) => {
                    for (put, result) in puts.iter().zip(outcomes) {
                        *lock(&put.outcome) = Some(result);
                    }
                    tracing::debug!(keys = puts.len(), "stored private keys");
                }
                Err(e) => {
                    let reason = e.to_string();
                    for put in &puts {
                        *lock(&put.outcome) = Some(Err(KeyStoreError::Database {
                            op: "store keys in",
                            path: self.path.clone(),
                            reason: reason.clone(),
                        }));
                    }
                }
            }
            group = lock(&self.group);
            group.committing = false;
            self.committed.notify_all();
        }
    }

    fn get(&self, key_id: &str) -> Result<PrivateKeyPkcs8, KeyStoreError> {
        validate_key_id(key_id)?;
        let stored = self.read(|db| {
            db.prepare_cached(SELECT)?
                .query_row([key_id], |row| row.get::<_, Vec<u8>>(0))
                .optional()
        })?;
        match (stored.map(Zeroizing::new), &self.files) {
            (Some(stored), _) => unseal(self.kek.as_ref(), key_id, &stored),
            (None, Some(files)) => files.get(key_id),
            (None, None) => Err(KeyStoreError::NotFound {
                key_id: key_id.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::keys::{KeyAlgorithm, generate_key};

    /// Frames in the write-ahead log (not reset while nothing checkpoints it): every
    /// commit adds the pages it changed.
    fn wal_frames(store: &SqliteKeyStore) -> i64 {
        lock(&store.writer)
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1))
            .expect("checkpoint")
    }

    #[test]
    fn puts_that_wait_for_a_commit_share_the_next_one() {
        const PUTS: usize = 16;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteKeyStore::open(dir.path(), None).expect("open");
        let keys: Vec<PrivateKeyPkcs8> = (0..PUTS)
            .map(|_| {
                generate_key(KeyAlgorithm::EcdsaP256)
                    .expect("key")
                    .private_key
            })
            .collect();
        std::thread::scope(|scope| {
            // The first put to lead a commit waits for the writer connection, held here,
            // while the others queue behind it.
            let writer = lock(&store.writer);
            let puts: Vec<_> = keys
                .iter()
                .enumerate()
                .map(|(i, key)| {
                    let store = &store;
                    scope.spawn(move || store.put(&format!("k{i}"), key))
                })
                .collect();
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let group = lock(&store.group);
                if group.committing && group.waiting.len() == PUTS - 1 {
                    break;
                }
                drop(group);
                assert!(Instant::now() < deadline, "the puts never queued");
                std::thread::yield_now();
            }
            drop(writer);
            for put in puts {
                put.join().expect("put thread").expect("put");
            }
        });
        for (i, key) in keys.iter().enumerate() {
            assert!(store.get(&format!("k{i}")).expect("get").ct_eq(key));
        }
        // The log holds the table's creation and two commits (the leader's key, then the
        // fifteen that queued), a few pages each; a commit per key would add at least one
        // frame per key.
        let frames = wal_frames(&store);
        assert!(frames < 8, "{frames} WAL frames for {PUTS} keys");
    }
}
