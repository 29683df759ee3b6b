//! Atomic, durable file replacement with rollback.
//!
//! Each file is written to a temporary file in the same directory, fsynced, renamed over the
//! target path, and the directory is fsynced: a reader (or a crash) sees either the old or
//! the new contents, never a mix. [`apply`] first snapshots what every path held (contents,
//! mode, owner, or the symlink it was) so that [`AppliedChanges::restore`] can put it all
//! back. Snapshots and new contents are zeroed on drop (they may be private keys).
//!
//! These functions block: call them from `tokio::task::spawn_blocking`.

use std::fmt;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use uuid::Uuid;
use zeroize::Zeroizing;

/// Mode of certificate and chain files.
pub const CERTIFICATE_MODE: u32 = 0o644;
/// Mode of private key files.
pub const KEY_MODE: u32 = 0o600;

/// A file operation failed. The message names the path and the action; it never holds file
/// contents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct FilesError {
    /// The file concerned.
    pub path: PathBuf,
    /// What failed.
    pub message: String,
}

impl FilesError {
    fn io(path: &Path, action: &str, err: &io::Error) -> Self {
        Self {
            path: path.to_path_buf(),
            message: format!("{action}: {err}"),
        }
    }
}

/// One change to make: write new contents with a mode, or remove the file.
pub struct FileChange {
    path: PathBuf,
    content: Option<(Zeroizing<Vec<u8>>, u32)>,
}

impl FileChange {
    /// Replace `path` with `contents` and give it `mode`.
    pub fn write(path: impl Into<PathBuf>, contents: impl Into<Vec<u8>>, mode: u32) -> Self {
        Self {
            path: path.into(),
            content: Some((Zeroizing::new(contents.into()), mode)),
        }
    }

    /// Remove `path` (nothing happens if it does not exist).
    pub fn remove(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            content: None,
        }
    }

    /// The path concerned.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl fmt::Debug for FileChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("FileChange");
        d.field("path", &self.path);
        match &self.content {
            Some((bytes, mode)) => d
                .field("bytes", &bytes.len())
                .field("mode", &format_args!("{mode:o}")),
            None => d.field("remove", &true),
        };
        d.finish()
    }
}

/// What a path held before a change.
enum Previous {
    Absent,
    File {
        contents: Zeroizing<Vec<u8>>,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Symlink(PathBuf),
}

struct Snapshot {
    path: PathBuf,
    previous: Previous,
}

/// Changes that were applied, with what the paths held before. Call
/// [`AppliedChanges::restore`] to undo them, or [`AppliedChanges::commit`] (or drop it) to
/// keep them; the snapshots are zeroed either way.
pub struct AppliedChanges {
    snapshots: Vec<Snapshot>,
}

impl fmt::Debug for AppliedChanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppliedChanges")
            .field(
                "paths",
                &self.snapshots.iter().map(|s| &s.path).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl AppliedChanges {
    /// Keeps the changes and forgets the previous contents.
    pub fn commit(self) {}

    /// The paths changed, in order.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.snapshots.iter().map(|s| s.path.as_path())
    }

    /// Puts every path back as it was (in reverse order). Tries all of them; the first
    /// failure is returned.
    pub fn restore(self) -> Result<(), FilesError> {
        restore_snapshots(&self.snapshots)
    }
}

fn restore_snapshots(snapshots: &[Snapshot]) -> Result<(), FilesError> {
    let mut first_error = None;
    for snapshot in snapshots.iter().rev() {
        if let Err(e) = restore_one(snapshot) {
            tracing::error!(error = %e, "restoring a file failed");
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn restore_one(snapshot: &Snapshot) -> Result<(), FilesError> {
    let path = &snapshot.path;
    match &snapshot.previous {
        Previous::Absent => remove_durable(path),
        Previous::File {
            contents,
            mode,
            uid,
            gid,
        } => write_atomic_owned(path, contents, *mode, Some((*uid, *gid))),
        Previous::Symlink(target) => symlink_atomic(path, target),
    }
}

/// Applies `changes` in order, after snapshotting every path. If one fails, the ones already
/// applied are restored and the error is returned (mentioning a failed restore too).
pub fn apply(changes: &[FileChange]) -> Result<AppliedChanges, FilesError> {
    for (i, change) in changes.iter().enumerate() {
        if changes[..i].iter().any(|c| c.path == change.path) {
            return Err(FilesError {
                path: change.path.clone(),
                message: "the same path is given twice".into(),
            });
        }
    }
    let mut snapshots = Vec::with_capacity(changes.len());
    for change in changes {
        snapshots.push(Snapshot {
            path: change.path.clone(),
            previous: read_previous(&change.path)?,
        });
    }
    for (i, change) in changes.iter().enumerate() {
        let result = match &change.content {
            Some((contents, mode)) => {
                let owner = match &snapshots[i].previous {
                    Previous::File { uid, gid, .. } => Some((*uid, *gid)),
                    _ => None,
                };
                write_atomic_owned(&change.path, contents, *mode, owner)
            }
            None => remove_durable(&change.path),
        };
        if let Err(mut e) = result {
            if let Err(restore) = restore_snapshots(&snapshots[..i]) {
                e.message.push_str(&format!(
                    "; restoring the files written before failed: {restore}"
                ));
            }
            return Err(e);
        }
    }
    Ok(AppliedChanges { snapshots })
}

fn read_previous(path: &Path) -> Result<Previous, FilesError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Previous::Absent),
        Err(e) => return Err(FilesError::io(path, "cannot inspect", &e)),
    };
    if meta.file_type().is_symlink() {
        let target = fs::read_link(path).map_err(|e| FilesError::io(path, "cannot read", &e))?;
        return Ok(Previous::Symlink(target));
    }
    if !meta.is_file() {
        return Err(FilesError {
            path: path.to_path_buf(),
            message: "exists and is not a regular file".into(),
        });
    }
    let contents =
        Zeroizing::new(fs::read(path).map_err(|e| FilesError::io(path, "cannot read", &e))?);
    Ok(Previous::File {
        contents,
        mode: meta.permissions().mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
    })
}

/// Replaces `path` with `contents` atomically and durably, with `mode` (not reduced by the
/// umask). The directory must exist.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), FilesError> {
    write_atomic_owned(path, contents, mode, None)
}

fn parent_dir(path: &Path) -> Result<&Path, FilesError> {
    if path.file_name().is_none() {
        return Err(FilesError {
            path: path.to_path_buf(),
            message: "is not a file path".into(),
        });
    }
    Ok(match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    })
}

fn temp_path(path: &Path, dir: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.join(format!(
        ".{name}.certledger-{}.tmp",
        Uuid::now_v7().simple()
    ))
}

fn write_atomic_owned(
    path: &Path,
    contents: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<(), FilesError> {
    let dir = parent_dir(path)?;
    let tmp = temp_path(path, dir);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| FilesError::io(path, "cannot create a temporary file beside it", &e))?;
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(|e| FilesError::io(path, "cannot set the mode", &e))?;
        if let Some((uid, gid)) = owner {
            keep_owner(&file, path, uid, gid);
        }
        file.write_all(contents)
            .map_err(|e| FilesError::io(path, "cannot write", &e))?;
        file.sync_all()
            .map_err(|e| FilesError::io(path, "cannot fsync", &e))?;
        drop(file);
        fs::rename(&tmp, path)
            .map_err(|e| FilesError::io(path, "cannot rename the temporary file over it", &e))?;
        sync_dir(dir, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Gives the new file the previous file's owner, so that a server running as another user
/// can still read it. Only root can give files away; otherwise it keeps ours (logged).
fn keep_owner(file: &File, path: &Path, uid: u32, gid: u32) {
    let Ok(meta) = file.metadata() else { return };
    if meta.uid() == uid && meta.gid() == gid {
        return;
    }
    if let Err(e) = std::os::unix::fs::fchown(file, Some(uid), Some(gid)) {
        tracing::warn!(
            path = %path.display(), uid, gid, error = %e,
            "cannot keep the previous owner of the file"
        );
    }
}

fn symlink_atomic(path: &Path, target: &Path) -> Result<(), FilesError> {
    let dir = parent_dir(path)?;
    let tmp = temp_path(path, dir);
    let result = std::os::unix::fs::symlink(target, &tmp)
        .map_err(|e| FilesError::io(path, "cannot create the symlink", &e))
        .and_then(|()| {
            fs::rename(&tmp, path)
                .map_err(|e| FilesError::io(path, "cannot rename the symlink over it", &e))
        })
        .and_then(|()| sync_dir(dir, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn remove_durable(path: &Path) -> Result<(), FilesError> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(parent_dir(path)?, path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FilesError::io(path, "cannot remove", &e)),
    }
}

fn sync_dir(dir: &Path, path: &Path) -> Result<(), FilesError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| FilesError::io(path, "cannot fsync the directory", &e))
}

/// What `path` holds now, or `None` when it does not exist.
pub fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, FilesError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FilesError::io(path, "cannot read", &e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap()
    }

    #[test]
    fn writes_restores_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let fresh = dir.path().join("new.pem");
        fs::write(&cert, b"old cert").unwrap();
        fs::set_permissions(&cert, Permissions::from_mode(0o640)).unwrap();

        let applied = apply(&[
            FileChange::write(&cert, b"new cert".to_vec(), CERTIFICATE_MODE),
            FileChange::write(&key, b"new key".to_vec(), KEY_MODE),
            FileChange::write(&fresh, b"fresh".to_vec(), CERTIFICATE_MODE),
        ])
        .unwrap();
        assert_eq!(fs::read(&cert).unwrap(), b"new cert");
        assert_eq!(mode(&cert), 0o644);
        assert_eq!(fs::read(&key).unwrap(), b"new key");
        assert_eq!(mode(&key), 0o600);

        applied.restore().unwrap();
        assert_eq!(fs::read(&cert).unwrap(), b"old cert");
        assert_eq!(mode(&cert), 0o640);
        assert!(!key.exists());
        assert!(!fresh.exists());
        // No temporary files left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);

        let applied = apply(&[FileChange::remove(&cert)]).unwrap();
        assert!(!cert.exists());
        applied.restore().unwrap();
        assert_eq!(fs::read(&cert).unwrap(), b"old cert");
    }

    #[test]
    fn a_failed_write_restores_the_earlier_ones() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        fs::write(&cert, b"old").unwrap();
        let missing_dir = dir.path().join("missing").join("key.pem");
        let err = apply(&[
            FileChange::write(&cert, b"new".to_vec(), CERTIFICATE_MODE),
            FileChange::write(&missing_dir, b"key".to_vec(), KEY_MODE),
        ])
        .unwrap_err();
        assert_eq!(err.path, missing_dir);
        assert_eq!(fs::read(&cert).unwrap(), b"old");
    }

    #[test]
    fn symlinks_are_restored_as_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.pem");
        let link = dir.path().join("link.pem");
        fs::write(&real, b"real").unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let applied = apply(&[FileChange::write(&link, b"new".to_vec(), 0o644)]).unwrap();
        assert!(
            !fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        applied.restore().unwrap();
        assert_eq!(fs::read_link(&link).unwrap(), real);
        assert_eq!(fs::read(&real).unwrap(), b"real");
    }

    #[test]
    fn same_path_twice_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a");
        assert!(
            apply(&[
                FileChange::write(&p, b"1".to_vec(), 0o644),
                FileChange::remove(&p)
            ])
            .is_err()
        );
        assert!(!p.exists());
    }
}
