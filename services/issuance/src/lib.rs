//! The issuance service: the built-in CA (created at first start in the data directory,
//! reloaded afterwards), key generation, validation and signing, driven by certificate
//! events; and `certledger.issuance.v1.IssuanceService` (CA chain, approvals, export).
//!
//! In-process: [`start`] with an [`IssuanceSetup`]. As a binary:
//! `certledger-issuance --database-url … --data-dir … [--listen 127.0.0.1:0]` (see
//! [`config`]).

pub mod ca;
pub mod config;
pub mod http01;
pub mod issuer;
pub mod reactor;
pub mod service;

use std::net::SocketAddr;
use std::sync::Arc;

use certledger_ca::{Authority, KeyStore};
use certledger_eventstream::consumer::{ConsumerSettings, EventSource, Filter};
use certledger_proto::issuance::v1::issuance_service_server::IssuanceServiceServer;
use certledger_runtime::CertificateRepository;
use certledger_runtime::server::{GrpcServer, RunningService, ServerOptions};
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::service::Routes;

pub use issuer::{Issuer, IssuerSettings, RetryPolicy};
pub use reactor::{IssuanceHandler, Timers};
pub use service::IssuanceService;

/// The full gRPC name of the service.
pub const SERVICE_NAME: &str = <IssuanceServiceServer<IssuanceService> as NamedService>::NAME;

/// Everything the issuance service runs on.
pub struct IssuanceSetup {
    /// The event log, behind the repository (and its fold cache) the service uses; a
    /// process that runs several services can give them one.
    pub repo: CertificateRepository,
    /// Where certificate events come from (JetStream or the SQL tail).
    pub source: EventSource,
    /// The CA.
    pub authority: Arc<Authority>,
    /// The key store (generated certificate keys).
    pub keys: Arc<dyn KeyStore>,
    /// Issuer behaviour.
    pub settings: IssuerSettings,
    /// Where to listen (port 0: any free port).
    pub listen: SocketAddr,
    /// Server options.
    pub server: ServerOptions,
    /// Scan the log at start for certificates on their way to issuance.
    pub recover: bool,
    /// Background tasks already started for this service (e.g. a relay).
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Certificates the issuance consumer advances at once.
pub const CONSUMER_CONCURRENCY: usize = 32;

/// A started issuance service.
#[derive(Debug)]
pub struct StartedIssuance {
    /// The gRPC server and background tasks.
    pub service: RunningService,
    /// The issuer (for tests and tools).
    pub issuer: Arc<Issuer>,
}

/// The issuance service's gRPC service, its issuer and its background tasks (consumer,
/// timers, recovery scan and the tasks given in the setup), for a caller that serves it
/// on a server of its own (certd serves several services on one address). `listen` and
/// `server` of the setup are not used.
pub struct IssuanceParts {
    /// The gRPC service.
    pub server: IssuanceServiceServer<IssuanceService>,
    /// The issuer (for tests and tools).
    pub issuer: Arc<Issuer>,
    /// Background tasks to await on stop.
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Builds the issuance service and starts its consumer, timers and (optionally) the
/// recovery scan, without a server (see [`start`]).
pub fn build(setup: IssuanceSetup, shutdown: CancellationToken) -> IssuanceParts {
    let IssuanceSetup {
        repo,
        source,
        authority,
        keys,
        settings,
        recover,
        mut tasks,
        ..
    } = setup;
    let issuer_id = settings.issuer_id.clone();
    let issuer = Arc::new(Issuer::new(
        repo.clone(),
        authority.clone(),
        keys.clone(),
        settings,
    ));
    let (timers, timer_task) = Timers::spawn(issuer.clone(), shutdown.clone());
    tasks.push(timer_task);
    let handler = Arc::new(IssuanceHandler::new(issuer.clone(), timers.clone()));
    tasks.push(certledger_runtime::events::spawn_consumer(
        source,
        // The issuer locks per certificate: certificates advance side by side.
        ConsumerSettings::new(
            reactor::CONSUMER,
            Filter::EventTypes {
                aggregate: "certificate".into(),
                event_types: reactor::TRIGGERS.iter().map(|t| t.to_string()).collect(),
            },
        )
        .concurrency(CONSUMER_CONCURRENCY),
        handler,
        shutdown.clone(),
    ));
    if recover {
        let log = repo.log().clone();
        let token = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            reactor::recover(log, timers, token).await;
        }));
    }
    let service = IssuanceService::new(repo, authority, keys, issuer_id);
    IssuanceParts {
        server: service.into_server(),
        issuer,
        tasks,
    }
}

/// Starts the issuance service in the background: gRPC server, consumer, timers and
/// (optionally) the recovery scan.
pub async fn start(
    setup: IssuanceSetup,
    shutdown: CancellationToken,
) -> std::io::Result<StartedIssuance> {
    let grpc = GrpcServer::bind(setup.listen, setup.server.clone()).await?;
    let IssuanceParts {
        server,
        issuer,
        tasks,
    } = build(setup, shutdown.clone());
    let routes = Routes::new(server);
    let service = RunningService::spawn(grpc, routes, &[SERVICE_NAME], shutdown, tasks);
    Ok(StartedIssuance { service, issuer })
}
