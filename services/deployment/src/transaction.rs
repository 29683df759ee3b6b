//! The write → command → (verify) → rollback sequence shared by the file-based destinations.

use std::path::PathBuf;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::bundle::{Bundle, first_certificate_fingerprint};
use crate::command::{self, CommandFailure};
use crate::destination::{DeployError, Removed, Step};
use crate::files::{self, AppliedChanges, FileChange};

/// Writes the changes on a blocking thread. A failure has restored what was written.
pub(crate) async fn write(changes: Vec<FileChange>) -> Result<AppliedChanges, DeployError> {
    tokio::task::spawn_blocking(move || files::apply(&changes))
        .await
        .map_err(|e| DeployError::new(Step::Write, format!("the file writer stopped: {e}")))?
        .map_err(|e| DeployError::new(Step::Write, e.to_string()))
}

/// Runs the command, turning a failure into a [`DeployError`] at [`Step::Reload`].
pub(crate) async fn run_command(argv: &[String], timeout: Duration) -> Result<(), DeployError> {
    match command::run(argv, timeout).await {
        Ok(output) => {
            tracing::debug!(
                command = %command::display_argv(argv),
                stderr = %output.stderr,
                stdout = %output.stdout,
                "command succeeded"
            );
            Ok(())
        }
        Err(CommandFailure { message, observed }) => {
            let mut err = DeployError::new(Step::Reload, message);
            err.observed = observed;
            Err(err)
        }
    }
}

/// Restores the previous files and runs the command again so the server picks them up.
/// Returns a note for the error message saying how that went.
pub(crate) async fn rollback(
    applied: AppliedChanges,
    argv: Option<&[String]>,
    timeout: Duration,
) -> String {
    let restored = tokio::task::spawn_blocking(move || applied.restore())
        .await
        .map_err(|e| format!("the file writer stopped: {e}"))
        .and_then(|r| r.map_err(|e| e.to_string()));
    if let Err(e) = restored {
        tracing::error!(error = %e, "restoring the previous files failed");
        return format!("restoring the previous files FAILED: {e}");
    }
    let Some(argv) = argv else {
        return "the previous files were restored".into();
    };
    match command::run(argv, timeout).await {
        Ok(_) => "the previous files were restored and the command ran again".into(),
        Err(f) => {
            tracing::error!(
                command = %command::display_argv(argv),
                error = %f.message,
                "the command failed again after restoring the previous files"
            );
            let mut note = format!(
                "the previous files were restored, but running the command again failed too: {}",
                f.message
            );
            if let Some(observed) = f.observed {
                note.push_str(&format!(" ({observed})"));
            }
            note
        }
    }
}

/// Appends the rollback note to an error's message.
pub(crate) fn with_note(mut err: DeployError, note: &str) -> DeployError {
    err.message = format!("{}; {note}", err.message);
    err
}

/// Removes the certificate's files if the certificate file still holds this bundle's
/// certificate (the key and chain files only if they hold this bundle's key / chain), then
/// runs the command; a failing command restores the files.
pub(crate) async fn remove_files(
    bundle: &Bundle,
    certificate_path: PathBuf,
    key_path: PathBuf,
    chain_path: Option<PathBuf>,
    argv: Option<&[String]>,
    timeout: Duration,
) -> Result<Removed, DeployError> {
    let fingerprint = bundle.fingerprint().to_string();
    let key = bundle
        .private_key()
        .map(|k| Zeroizing::new(k.expose_pem().as_bytes().to_vec()));
    let chain = bundle.chain_pem().as_bytes().to_vec();
    let changes = tokio::task::spawn_blocking(move || -> Result<Vec<FileChange>, DeployError> {
        let read = |p: &PathBuf| {
            files::read_if_exists(p).map_err(|e| DeployError::new(Step::Write, e.to_string()))
        };
        let holds_it = read(&certificate_path)?
            .as_deref()
            .and_then(first_certificate_fingerprint)
            .is_some_and(|fp| fp == fingerprint);
        if !holds_it {
            return Ok(Vec::new());
        }
        let mut changes = vec![FileChange::remove(&certificate_path)];
        let key_file = read(&key_path)?.map(Zeroizing::new);
        if key.is_some() && key_file.as_deref() == key.as_deref() {
            changes.push(FileChange::remove(&key_path));
        }
        if let Some(chain_path) = chain_path
            && read(&chain_path)?.as_deref() == Some(chain.as_slice())
        {
            changes.push(FileChange::remove(chain_path));
        }
        Ok(changes)
    })
    .await
    .map_err(|e| DeployError::new(Step::Write, format!("the file reader stopped: {e}")))??;

    if changes.is_empty() {
        return Ok(Removed::NotPresent);
    }
    let applied = write(changes).await?;
    if let Some(argv) = argv
        && let Err(err) = run_command(argv, timeout).await
    {
        let note = rollback(applied, Some(argv), timeout).await;
        return Err(with_note(err, &note));
    }
    applied.commit();
    Ok(Removed::Removed)
}
