//! certledger's deployment core: installing an issued certificate on a target and proving
//! it is in place.
//!
//! One small interface, [`Destination`] (install / remove a [`Bundle`]), with one
//! implementation per kind of target:
//!
//! * [`NginxDestination`] — nginx or any server that reads its certificate from files and is
//!   reloaded by a command: atomic writes → reload → TLS handshake until the new certificate
//!   is served; any failure restores the previous files and reloads again.
//! * [`FileDestination`] — plain files plus an optional command.
//! * [`WebhookDestination`] — a signed JSON POST with retries.
//!
//! A failure is a [`DeployError`] naming the [`Step`] (write, reload, verify, webhook) and
//! what was observed, ready for a `DeploymentFailed` event. [`served_fingerprint`] is the
//! probe also used for drift checks.
//!
//! Private keys never appear in `Debug` output, errors or logs.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bundle;
mod command;
pub mod destination;
pub mod file_target;
pub mod files;
pub mod nginx;
mod transaction;
pub mod verify;
pub mod webhook;

pub use bundle::{Bundle, BundleError, PrivateKeyPem, normalize_fingerprint, sha256_fingerprint};
pub use destination::{DeployError, Destination, Evidence, Installed, Removed, Step};
pub use file_target::{FileDestination, FileTargetConfig};
pub use files::FilesError;
pub use nginx::{ConfigError, NginxConfig, NginxDestination};
pub use verify::{
    ProbeError, Served, VerifyFailure, VerifyOptions, served_fingerprint, wait_for_fingerprint,
};
pub use webhook::{Delivered, WebhookConfig, WebhookDestination, WebhookEvent, WebhookSecret};

/// Makes aws-lc-rs the process-wide rustls provider (idempotent; returns whether this call
/// installed it).
///
/// This crate always passes its provider explicitly. But with this crate linked, rustls has
/// both its `ring` (through async-nats) and `aws_lc_rs` features on, and code that calls
/// `rustls::ClientConfig::builder()` without a provider — async-nats does for `tls://`
/// servers — panics unless a default was installed: binaries call this once at start-up.
pub fn install_default_crypto_provider() -> bool {
    rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .is_ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_provider_can_be_installed() {
        let _ = super::install_default_crypto_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
        assert!(
            !super::install_default_crypto_provider(),
            "already installed"
        );
        // What async-nats does for tls:// servers now works.
        let _ = rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
    }
}
