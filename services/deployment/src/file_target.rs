//! Plain files, optionally followed by a command (for software that picks certificates up
//! from a directory, or is restarted by a script). There is no TLS check: the installation
//! is verified when the files are written and the command succeeded.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use tracing::Instrument as _;

use crate::bundle::Bundle;
use crate::destination::{DeployError, Destination, Evidence, Installed, Removed};
use crate::files::{CERTIFICATE_MODE, FileChange, KEY_MODE};
use crate::nginx::ConfigError;
use crate::transaction;

/// Where to write, and what to run after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileTargetConfig {
    /// With a `chain_path`: the leaf alone. Without: the leaf followed by the chain.
    pub certificate_path: PathBuf,
    /// The private key, mode 0600. Left untouched when the bundle carries no key.
    pub key_path: PathBuf,
    /// The chain alone (may be empty), when wanted in its own file.
    pub chain_path: Option<PathBuf>,
    /// argv run after writing, without a shell; its failure restores the files.
    pub command: Option<Vec<String>>,
    /// Time allowed for the command.
    pub command_timeout: Duration,
}

impl FileTargetConfig {
    /// Certificate and key files, no chain file, no command; 30 s for a command.
    pub fn new(certificate_path: impl Into<PathBuf>, key_path: impl Into<PathBuf>) -> Self {
        Self {
            certificate_path: certificate_path.into(),
            key_path: key_path.into(),
            chain_path: None,
            command: None,
            command_timeout: Duration::from_secs(30),
        }
    }
}

/// The [`Destination`] writing plain files. Installs on one instance are serialized.
#[derive(Debug)]
pub struct FileDestination {
    config: FileTargetConfig,
    lock: tokio::sync::Mutex<()>,
}

impl FileDestination {
    /// Checks the settings.
    pub fn new(config: FileTargetConfig) -> Result<Self, ConfigError> {
        let mut paths = vec![
            ("certificate_path", &config.certificate_path),
            ("key_path", &config.key_path),
        ];
        if let Some(chain) = &config.chain_path {
            paths.push(("chain_path", chain));
        }
        for (i, (field, path)) in paths.iter().enumerate() {
            if path.file_name().is_none() {
                return Err(ConfigError::new(field, "is not a file path"));
            }
            if paths[..i].iter().any(|(_, p)| p == path) {
                return Err(ConfigError::new(field, "is the same path as another file"));
            }
        }
        if let Some(cmd) = &config.command
            && cmd.first().is_none_or(|p| p.is_empty())
        {
            return Err(ConfigError::new("command", "is empty"));
        }
        Ok(Self {
            config,
            lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The settings.
    pub fn config(&self) -> &FileTargetConfig {
        &self.config
    }

    async fn install_inner(&self, bundle: &Bundle) -> Result<Installed, DeployError> {
        let _serialized = self.lock.lock().await;
        let c = &self.config;
        let mut changes = Vec::with_capacity(3);
        match &c.chain_path {
            Some(chain_path) => {
                changes.push(FileChange::write(
                    &c.certificate_path,
                    bundle.certificate_pem(),
                    CERTIFICATE_MODE,
                ));
                changes.push(FileChange::write(
                    chain_path,
                    bundle.chain_pem(),
                    CERTIFICATE_MODE,
                ));
            }
            None => changes.push(FileChange::write(
                &c.certificate_path,
                bundle.full_chain_pem(),
                CERTIFICATE_MODE,
            )),
        }
        if let Some(key) = bundle.private_key() {
            changes.push(FileChange::write(
                &c.key_path,
                key.expose_pem().as_bytes().to_vec(),
                KEY_MODE,
            ));
        }
        let applied = transaction::write(changes).await?;

        if let Some(argv) = &c.command
            && let Err(err) = transaction::run_command(argv, c.command_timeout).await
        {
            tracing::warn!(error = %err, "command failed; restoring the previous files");
            let note = transaction::rollback(applied, Some(argv), c.command_timeout).await;
            return Err(transaction::with_note(err, &note));
        }
        applied.commit();
        tracing::info!("files written");
        Ok(Installed {
            verified_fingerprint: bundle.fingerprint().to_string(),
            evidence: Evidence::FilesWritten {
                command_ran: c.command.is_some(),
            },
        })
    }
}

#[async_trait]
impl Destination for FileDestination {
    async fn install(&self, bundle: &Bundle) -> Result<Installed, DeployError> {
        let span = tracing::info_span!(
            "file_install",
            certificate_id = bundle.certificate_id(),
            fingerprint = bundle.fingerprint(),
            path = %self.config.certificate_path.display(),
        );
        self.install_inner(bundle).instrument(span).await
    }

    /// Deletes the files if they still hold this certificate, then runs the command.
    async fn remove(&self, bundle: &Bundle) -> Result<Removed, DeployError> {
        let _serialized = self.lock.lock().await;
        let c = &self.config;
        transaction::remove_files(
            bundle,
            c.certificate_path.clone(),
            c.key_path.clone(),
            c.chain_path.clone(),
            c.command.as_deref(),
            c.command_timeout,
        )
        .await
    }
}
