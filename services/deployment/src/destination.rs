//! The one small interface every kind of target implements (after Netflix Lemur's
//! destination plugins): install a bundle, remove it.

use std::fmt;

use async_trait::async_trait;
use uuid::Uuid;

use crate::bundle::Bundle;

/// The step of a deployment that failed; [`Step::as_str`] is the `step` string of the
/// `DeploymentFailed` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// Writing (or removing) the files.
    Write,
    /// Running the reload (or post-install) command.
    Reload,
    /// Checking what the target serves.
    Verify,
    /// Delivering to a webhook receiver.
    Webhook,
}

impl Step {
    /// `"write"`, `"reload"`, `"verify"` or `"webhook"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Write => "write",
            Step::Reload => "reload",
            Step::Verify => "verify",
            Step::Webhook => "webhook",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed deployment: the step, what went wrong, and what was observed (the fingerprint
/// served instead, the reload command's stderr, the receiver's HTTP status). Never holds
/// key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{step} failed: {message}")]
pub struct DeployError {
    /// Which step failed.
    pub step: Step,
    /// What went wrong, for a person.
    pub message: String,
    /// What was observed, when something was.
    pub observed: Option<String>,
}

impl DeployError {
    /// An error at `step`.
    pub fn new(step: Step, message: impl Into<String>) -> Self {
        Self {
            step,
            message: message.into(),
            observed: None,
        }
    }

    /// The same error with what was observed.
    pub fn with_observed(mut self, observed: impl Into<String>) -> Self {
        self.observed = Some(observed.into());
        self
    }
}

/// How an installation was confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evidence {
    /// A TLS handshake with the server presented the certificate.
    Handshake {
        /// The address connected to.
        address: String,
        /// The SNI name sent (none for an IP address).
        server_name: Option<String>,
        /// Handshakes it took (the server reloads asynchronously).
        attempts: u32,
    },
    /// The files were written and the command (if any) succeeded.
    FilesWritten {
        /// Whether a command was run after writing.
        command_ran: bool,
    },
    /// The webhook receiver answered 2xx.
    Delivered {
        /// `X-Certledger-Delivery`, the same on every attempt.
        delivery_id: Uuid,
        /// Attempts it took.
        attempts: u32,
        /// The receiver's HTTP status.
        status: u16,
    },
}

/// A successful, verified installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// The fingerprint confirmed on the target (for `DeploymentSucceeded.verified_fingerprint`).
    pub verified_fingerprint: String,
    /// How it was confirmed.
    pub evidence: Evidence,
}

/// The result of a removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removed {
    /// The certificate's files were removed (and the command, if any, ran), or the receiver
    /// was told.
    Removed,
    /// The target no longer held this certificate (a successor was installed, or it was
    /// removed before): nothing was touched.
    NotPresent,
}

/// A kind of deployment target. One implementation per kind: [`crate::NginxDestination`]
/// (any server reloaded by a command), [`crate::FileDestination`],
/// [`crate::WebhookDestination`].
///
/// Implementations leave the target as it was when they fail (files restored, server
/// reloaded with them), and never put key material into errors or logs.
#[async_trait]
pub trait Destination: Send + Sync {
    /// Installs the bundle and confirms it is in place.
    async fn install(&self, bundle: &Bundle) -> Result<Installed, DeployError>;

    /// Takes the certificate off the target, if the target still holds it.
    async fn remove(&self, bundle: &Bundle) -> Result<Removed, DeployError>;
}
