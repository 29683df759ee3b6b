//! The order service: the customer's side of a certificate — orders (with idempotency
//! keys), applications (names and CSR checked), cancellation, and reading a certificate,
//! its history and its live events (`certledger.order.v1.OrderService`).
//!
//! In-process: [`start`] with an [`OrderSetup`] (tests, `certd`). As a binary:
//! `certledger-order --database-url … [--listen 127.0.0.1:0]` (see [`config`]).

pub mod application;
pub mod config;
pub mod listing;
pub mod service;

use std::net::SocketAddr;
use std::sync::Arc;

use certledger_eventlog::EventLog;
use certledger_eventstream::consumer::{ConsumerSettings, EventSource, Filter};
use certledger_proto::order::v1::order_service_server::OrderServiceServer;
use certledger_runtime::CertificateRepository;
use certledger_runtime::server::{GrpcServer, RunningService, ServerOptions};
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::service::Routes;

pub use listing::CertificateList;
pub use service::{OrderService, certificate_id_for_key};

/// Name of the order service's consumer (durable consumer / checkpoint).
pub const LIST_CONSUMER: &str = "order-certificate-list";

/// The full gRPC name of the service.
pub const SERVICE_NAME: &str = <OrderServiceServer<OrderService> as NamedService>::NAME;

/// Everything the order service runs on.
pub struct OrderSetup {
    /// The event log.
    pub log: Arc<dyn EventLog>,
    /// Where to listen (port 0: any free port).
    pub listen: SocketAddr,
    /// Issuer ids orders may name.
    pub issuers: Vec<String>,
    /// Server options (request size limit, drain timeout).
    pub server: ServerOptions,
    /// The ListCertificates read model and the events that keep it up to date; `None`
    /// answers ListCertificates with UNIMPLEMENTED.
    pub list: Option<(CertificateList, EventSource)>,
    /// Background tasks already started for this service (e.g. a relay), awaited on stop.
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// The order service's gRPC service and its background tasks (the list consumer and the
/// tasks given in the setup), for a caller that serves it on a server of its own (certd
/// serves several services on one address). `listen` and `server` of the setup are not
/// used.
pub struct OrderParts {
    /// The gRPC service.
    pub server: OrderServiceServer<OrderService>,
    /// Background tasks to await on stop.
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Builds the order service and starts its consumer, without a server (see [`start`]).
pub fn build(setup: OrderSetup, shutdown: CancellationToken) -> OrderParts {
    let OrderSetup {
        log,
        list,
        issuers,
        mut tasks,
        ..
    } = setup;
    let list_model = list.as_ref().map(|(model, _)| model.clone());
    if let Some((model, source)) = list {
        let handler = Arc::new(model.projection(CertificateRepository::new(log.clone())));
        tasks.push(certledger_runtime::events::spawn_consumer(
            source,
            ConsumerSettings::new(LIST_CONSUMER, Filter::Aggregate("certificate".into())),
            handler,
            shutdown.clone(),
        ));
    }
    let service = OrderService::new(log, issuers, list_model, shutdown);
    OrderParts {
        server: service.into_server(),
        tasks,
    }
}

/// Starts the order service in the background.
pub async fn start(
    setup: OrderSetup,
    shutdown: CancellationToken,
) -> std::io::Result<RunningService> {
    let grpc = GrpcServer::bind(setup.listen, setup.server.clone()).await?;
    let OrderParts { server, tasks } = build(setup, shutdown.clone());
    let routes = Routes::new(server);
    Ok(RunningService::spawn(
        grpc,
        routes,
        &[SERVICE_NAME],
        shutdown,
        tasks,
    ))
}
