//! A TLS server that reads its certificate from files and is reloaded by a command: nginx
//! first, and equally Apache httpd, HAProxy (with a combined file written elsewhere),
//! Postfix…
//!
//! Install: write the full chain and the key atomically → run the reload command → handshake
//! with the server until it serves the new certificate. Any failure restores the previous
//! files, runs the reload command again, and returns the step that failed with what was
//! observed (the reload command's stderr, the fingerprint served instead).
//!
//! The reload command is the check: `nginx -s reload` parses the whole configuration and
//! loads the certificate and key before signalling the master, so a broken file makes it
//! exit non-zero. For a server whose reload does not check (`systemctl reload` of a unit
//! without such an `ExecReload`), give a command that checks first, e.g.
//! `["sh", "-c", "nginx -t && systemctl reload nginx"]`.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use tracing::Instrument as _;

use crate::bundle::Bundle;
use crate::destination::{DeployError, Destination, Evidence, Installed, Removed, Step};
use crate::files::{CERTIFICATE_MODE, FileChange, KEY_MODE};
use crate::transaction;
use crate::verify::{VerifyOptions, wait_for_fingerprint};

/// Where and how to install on a command-reloaded server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NginxConfig {
    /// Receives the leaf followed by the chain (nginx's `ssl_certificate`).
    pub certificate_path: PathBuf,
    /// Receives the private key, mode 0600 (`ssl_certificate_key`). Left untouched when the
    /// bundle carries no key (the customer's own CSR: the key is already there).
    pub key_path: PathBuf,
    /// argv of the reload command, run without a shell, e.g. `["nginx", "-s", "reload"]`.
    pub reload_command: Vec<String>,
    /// `host:port` to handshake with to verify.
    pub verify_address: String,
    /// SNI name for that handshake (default: the host of `verify_address`).
    pub verify_server_name: Option<String>,
    /// Time allowed for the reload command.
    pub reload_timeout: Duration,
    /// How long and how often to handshake.
    pub verify: VerifyOptions,
}

impl NginxConfig {
    /// A configuration with the default timeouts (reload 30 s, verification 15 s).
    pub fn new(
        certificate_path: impl Into<PathBuf>,
        key_path: impl Into<PathBuf>,
        reload_command: Vec<String>,
        verify_address: impl Into<String>,
    ) -> Self {
        Self {
            certificate_path: certificate_path.into(),
            key_path: key_path.into(),
            reload_command,
            verify_address: verify_address.into(),
            verify_server_name: None,
            reload_timeout: Duration::from_secs(30),
            verify: VerifyOptions::default(),
        }
    }
}

/// A settings problem found before touching the target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    /// The setting.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// The [`Destination`] for nginx and other command-reloaded servers. Installs on one
/// instance are serialized.
#[derive(Debug)]
pub struct NginxDestination {
    config: NginxConfig,
    lock: tokio::sync::Mutex<()>,
}

impl NginxDestination {
    /// Checks the settings.
    pub fn new(config: NginxConfig) -> Result<Self, ConfigError> {
        if config.certificate_path.file_name().is_none() {
            return Err(ConfigError::new("certificate_path", "is not a file path"));
        }
        if config.key_path.file_name().is_none() {
            return Err(ConfigError::new("key_path", "is not a file path"));
        }
        if config.certificate_path == config.key_path {
            return Err(ConfigError::new(
                "key_path",
                "must differ from certificate_path",
            ));
        }
        if config.reload_command.first().is_none_or(|p| p.is_empty()) {
            return Err(ConfigError::new("reload_command", "is empty"));
        }
        if config.verify_address.trim().is_empty() || !config.verify_address.contains(':') {
            return Err(ConfigError::new(
                "verify_address",
                format!("{:?} is not host:port", config.verify_address),
            ));
        }
        Ok(Self {
            config,
            lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The settings.
    pub fn config(&self) -> &NginxConfig {
        &self.config
    }
}

#[async_trait]
impl Destination for NginxDestination {
    async fn install(&self, bundle: &Bundle) -> Result<Installed, DeployError> {
        let span = tracing::info_span!(
            "nginx_install",
            certificate_id = bundle.certificate_id(),
            fingerprint = bundle.fingerprint(),
            address = %self.config.verify_address,
        );
        self.install_inner(bundle).instrument(span).await
    }

    /// Deletes the certificate and key files if they still hold this certificate, and
    /// reloads. While the server's configuration still references them the reload fails:
    /// the files are then put back and the error (step `reload`) says why.
    async fn remove(&self, bundle: &Bundle) -> Result<Removed, DeployError> {
        let _serialized = self.lock.lock().await;
        let c = &self.config;
        transaction::remove_files(
            bundle,
            c.certificate_path.clone(),
            c.key_path.clone(),
            None,
            Some(&c.reload_command),
            c.reload_timeout,
        )
        .await
    }
}

impl NginxDestination {
    async fn install_inner(&self, bundle: &Bundle) -> Result<Installed, DeployError> {
        let _serialized = self.lock.lock().await;
        let c = &self.config;
        let mut changes = vec![FileChange::write(
            &c.certificate_path,
            bundle.full_chain_pem(),
            CERTIFICATE_MODE,
        )];
        if let Some(key) = bundle.private_key() {
            changes.push(FileChange::write(
                &c.key_path,
                key.expose_pem().as_bytes().to_vec(),
                KEY_MODE,
            ));
        }
        let applied = transaction::write(changes).await?;

        if let Err(err) = transaction::run_command(&c.reload_command, c.reload_timeout).await {
            tracing::warn!(error = %err, "reload failed; restoring the previous files");
            let note =
                transaction::rollback(applied, Some(&c.reload_command), c.reload_timeout).await;
            return Err(transaction::with_note(err, &note));
        }

        let server_name = c.verify_server_name.as_deref();
        match wait_for_fingerprint(
            &c.verify_address,
            server_name,
            bundle.fingerprint(),
            &c.verify,
        )
        .await
        {
            Ok(served) => {
                applied.commit();
                tracing::info!(attempts = served.attempts, "installed and verified");
                Ok(Installed {
                    verified_fingerprint: served.fingerprint,
                    evidence: Evidence::Handshake {
                        address: c.verify_address.clone(),
                        server_name: server_name.map(str::to_owned),
                        attempts: served.attempts,
                    },
                })
            }
            Err(failure) => {
                tracing::warn!(
                    observed = %failure.observed(),
                    "verification failed; restoring the previous files"
                );
                let err = DeployError::new(Step::Verify, failure.message(&c.verify_address))
                    .with_observed(failure.observed());
                let note =
                    transaction::rollback(applied, Some(&c.reload_command), c.reload_timeout).await;
                Err(transaction::with_note(err, &note))
            }
        }
    }
}
