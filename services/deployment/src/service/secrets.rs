//! Webhook shared secrets: one file per secret in a directory of their own (`0700`), each
//! file `0600`, written atomically (temporary file, fsync, rename). Events only name the
//! secret by id; the secret itself never appears in an event, log line or error.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// Why a secret could not be stored or read. Never holds the secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The id is not `[A-Za-z0-9._-]{1,128}` (starting with a letter or digit).
    #[error("invalid secret id {0:?}")]
    InvalidId(String),
    /// No secret with this id.
    #[error("secret {0:?} not found")]
    NotFound(String),
    /// The file is readable by others.
    #[error("secret file {path} has insecure permissions {mode:o} (expected 600)")]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
    /// A file system error.
    #[error("secret store: cannot {op} {path}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// The directory of webhook secrets.
#[derive(Debug, Clone)]
pub struct SecretStore {
    dir: PathBuf,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SecretError + 'a {
    move |source| SecretError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn check_id(id: &str) -> Result<(), SecretError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && id.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(SecretError::InvalidId(id.chars().take(128).collect()))
    }
}

impl SecretStore {
    /// Opens (creating it `0700` when missing) the directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, SecretError> {
        let dir = dir.into();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io_err("create", &dir))?;
        Ok(Self { dir })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, id: &str) -> Result<PathBuf, SecretError> {
        check_id(id)?;
        Ok(self.dir.join(format!("{id}.secret")))
    }

    /// Stores (or replaces) a secret.
    pub fn put(&self, id: &str, secret: &[u8]) -> Result<(), SecretError> {
        let path = self.path(id)?;
        let tmp = self.dir.join(format!("{id}.secret.tmp"));
        let _ = fs::remove_file(&tmp);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        file.write_all(secret).map_err(io_err("write", &tmp))?;
        file.sync_all().map_err(io_err("fsync", &tmp))?;
        drop(file);
        fs::rename(&tmp, &path).map_err(io_err("rename", &path))?;
        if let Ok(dir) = fs::File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    /// Reads a secret.
    pub fn get(&self, id: &str) -> Result<Zeroizing<Vec<u8>>, SecretError> {
        let path = self.path(id)?;
        let mut file = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(SecretError::NotFound(id.to_owned()));
            }
            Err(e) => return Err(io_err("open", &path)(e)),
        };
        let mode = file
            .metadata()
            .map_err(io_err("stat", &path))?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(SecretError::InsecurePermissions { path, mode });
        }
        let mut bytes = Zeroizing::new(Vec::new());
        file.read_to_end(&mut bytes)
            .map_err(io_err("read", &path))?;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_private_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = SecretStore::open(dir.path().join("s")).unwrap();
        store.put("webhook-1", b"hunter2").unwrap();
        assert_eq!(store.get("webhook-1").unwrap().as_slice(), b"hunter2");
        let mode = fs::metadata(dir.path().join("s/webhook-1.secret"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        store.put("webhook-1", b"other").unwrap();
        assert_eq!(store.get("webhook-1").unwrap().as_slice(), b"other");
        assert!(matches!(store.get("nope"), Err(SecretError::NotFound(_))));
        assert!(matches!(
            store.put("../x", b"x"),
            Err(SecretError::InvalidId(_))
        ));
        let shown = format!("{:?}", store.get("webhook-1").map(|_| ()));
        assert!(!shown.contains("other"));
    }
}
