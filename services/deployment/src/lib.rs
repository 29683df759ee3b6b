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
//!
//! # The service
//!
//! [`service`] builds `certledger.deployment.v1.DeploymentService` on that core:
//!
//! * targets on their own streams (`target-<id>`, [`service::targets`]), tenant-scoped;
//!   webhook secrets in a `0600` secrets directory ([`service::secrets`]), never in events;
//! * [`service::deployer`]: `DeploymentRequested` → install → `DeploymentSucceeded` (with
//!   the verified fingerprint) or `DeploymentFailed` (step, failure code, observed); keys of
//!   generated certificates come from the issuance service's key store
//!   (`cert-<certificate id>`); a certificate issued from a CSR is installed without a key;
//! * [`service::index`]: which certificates went to which target (rebuilt from the log at
//!   start, then following it) — deployment states themselves are always folded from the
//!   certificate streams;
//! * [`service::reactions`]: renewal successors replace their predecessor on its targets;
//!   revocations are flagged;
//! * a periodic drift probe of every active nginx deployment.
//!
//! In-process: [`start`] with a [`DeploymentSetup`]. As a binary: `certledger-deployment
//! --database-url … --key-dir <issuance data-dir>/keys [--listen 127.0.0.1:50053]` (see
//! [`config`]).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bundle;
mod command;
pub mod config;
pub mod destination;
pub mod file_target;
pub mod files;
pub mod nginx;
pub mod service;
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

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use certledger_ca::KeyStore;
use certledger_eventlog::EventLog;
use certledger_eventstream::consumer::{ConsumerSettings, EventSource, Filter};
use certledger_proto::deployment::v1::deployment_service_server::DeploymentServiceServer;
use certledger_runtime::CertificateRepository;
use certledger_runtime::server::{GrpcServer, RunningService, ServerOptions};
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::service::Routes;

pub use service::api::DeploymentService;
pub use service::deployer::{Deployer, DeployerSettings, ProbeReport};
pub use service::index::DeploymentIndex;
pub use service::reactions::DeploymentReactions;
pub use service::secrets::SecretStore;
pub use service::targets::TargetRepository;

/// The full gRPC name of the service.
pub const SERVICE_NAME: &str = <DeploymentServiceServer<DeploymentService> as NamedService>::NAME;

/// Everything the deployment service runs on.
pub struct DeploymentSetup {
    /// The event log.
    pub log: Arc<dyn EventLog>,
    /// Where certificate events come from for the reactions; `None`: no reactions.
    pub source: Option<EventSource>,
    /// The key store holding generated certificate keys (the issuance service's).
    pub keys: Arc<dyn KeyStore>,
    /// Where webhook secrets are kept.
    pub secrets: SecretStore,
    /// Install and probe timings.
    pub settings: DeployerSettings,
    /// How often active nginx deployments are probed for drift; `None`: never.
    pub drift_interval: Option<Duration>,
    /// Where to listen (port 0: any free port).
    pub listen: SocketAddr,
    /// Server options.
    pub server: ServerOptions,
    /// Background tasks already started for this service (e.g. a relay).
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// A started deployment service.
#[derive(Debug)]
pub struct StartedDeployment {
    /// The gRPC server and background tasks.
    pub service: RunningService,
    /// The deployer (for tests and tools, e.g. a probe on demand).
    pub deployer: Deployer,
}

/// The deployment service's gRPC service, its deployer and its background tasks (read
/// table, reactions consumer, drift probe, resume pass and the tasks given in the setup),
/// for a caller that serves it on a server of its own (certd serves several services on
/// one address). `listen` and `server` of the setup are not used.
pub struct DeploymentParts {
    /// The gRPC service.
    pub server: DeploymentServiceServer<DeploymentService>,
    /// The deployer (for tests and tools, e.g. a probe on demand).
    pub deployer: Deployer,
    /// Background tasks to await on stop.
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Builds the deployment service without a server (see [`start`]): rebuilds the read
/// table from the log, then starts following it, the reactions consumer, the drift probe
/// and a one-off pass that finishes deployments left `requested` by a previous run.
pub async fn build(
    setup: DeploymentSetup,
    shutdown: CancellationToken,
) -> Result<DeploymentParts, certledger_eventlog::StorageError> {
    let DeploymentSetup {
        log,
        source,
        keys,
        secrets,
        settings,
        drift_interval,
        mut tasks,
        ..
    } = setup;
    let index = DeploymentIndex::new();
    index.catch_up(log.as_ref()).await?;
    tasks.push(tokio::spawn(
        index.clone().follow(log.clone(), shutdown.clone()),
    ));
    let deployer = Deployer::new(
        CertificateRepository::new(log.clone()),
        TargetRepository::new(log.clone()),
        keys,
        secrets,
        index,
        settings,
    );
    if let Some(source) = source {
        tasks.push(certledger_runtime::events::spawn_consumer(
            source,
            ConsumerSettings::new(
                service::reactions::CONSUMER,
                Filter::Aggregate("certificate".into()),
            ),
            Arc::new(DeploymentReactions::new(deployer.clone())),
            shutdown.clone(),
        ));
    }
    {
        let deployer = deployer.clone();
        let token = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            tokio::select! {
                _ = deployer.resume_requested() => {}
                _ = token.cancelled() => {}
            }
        }));
    }
    if let Some(interval) = drift_interval.filter(|i| !i.is_zero()) {
        let deployer = deployer.clone();
        let token = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = token.cancelled() => return,
                }
                let report = tokio::select! {
                    r = deployer.probe_all() => r,
                    _ = token.cancelled() => return,
                };
                tracing::debug!(?report, "drift probe");
            }
        }));
    }
    let server = DeploymentService::new(deployer.clone()).into_server();
    Ok(DeploymentParts {
        server,
        deployer,
        tasks,
    })
}

/// Starts the deployment service in the background: the gRPC server and everything
/// [`build`] starts.
pub async fn start(
    setup: DeploymentSetup,
    shutdown: CancellationToken,
) -> std::io::Result<StartedDeployment> {
    let grpc = GrpcServer::bind(setup.listen, setup.server.clone()).await?;
    let DeploymentParts {
        server,
        deployer,
        tasks,
    } = build(setup, shutdown.clone())
        .await
        .map_err(std::io::Error::other)?;
    let routes = Routes::new(server);
    let service = RunningService::spawn(grpc, routes, &[SERVICE_NAME], shutdown, tasks);
    Ok(StartedDeployment { service, deployer })
}

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
