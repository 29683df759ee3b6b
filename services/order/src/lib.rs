//! The order service: the customer's side of a certificate — orders (with idempotency
//! keys), applications (names and CSR checked), cancellation, and reading a certificate,
//! its history and its live events (`certledger.order.v1.OrderService`).
//!
//! In-process: [`start`] with an [`OrderSetup`] (tests, `certd`). As a binary:
//! `certledger-order --database-url … [--listen 127.0.0.1:0]` (see [`config`]).

pub mod application;
pub mod config;
pub mod listing;
pub mod renewal;
pub mod scheduler;
pub mod service;

use std::net::SocketAddr;
use std::sync::Arc;

use certledger_eventlog::RecordedEvent;
use certledger_eventstream::consumer::{
    ConsumerSettings, EventSource, Filter, Handler, HandlerError,
};
use certledger_proto::order::v1::order_service_server::OrderServiceServer;
use certledger_runtime::CertificateRepository;
use certledger_runtime::auth::{TOKEN_SERVICE_NAME, TokenApi};
use certledger_runtime::server::{GrpcServer, RunningService, ServerOptions};
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::service::Routes;

pub use listing::CertificateList;
pub use renewal::{RenewalSettings, Renewer};
pub use scheduler::Scheduler;
pub use service::{OrderService, certificate_id_for_key};

/// Name of the consumer that keeps the certificate list and the scheduler's index and
/// records renewal outcomes (durable consumer / checkpoint). Until 2026-11-28 outcomes
/// had a consumer of their own, `order-renewal-outcomes`, which nothing reads any more.
pub const LIST_CONSUMER: &str = "order-certificates";
/// How long the list's consumer gathers the log's news before writing it.
const LIST_LINGER: std::time::Duration = std::time::Duration::from_millis(20);

/// Certificates whose renewal outcomes are recorded at once (they are independent).
pub const CONSUMER_CONCURRENCY: usize = 16;

/// Renewal policies, and whether this replica runs the expiry and auto-renew scheduler.
#[derive(Debug, Clone, Default)]
pub struct RenewalSetup {
    /// Windows, thresholds, backoff and the clock.
    pub settings: RenewalSettings,
    /// Run the scheduler, looking for due certificates this often (it needs the list
    /// read table); `None`: no scheduler on this replica.
    pub scheduler_interval: Option<std::time::Duration>,
}

/// The full gRPC name of the service.
pub const SERVICE_NAME: &str = <OrderServiceServer<OrderService> as NamedService>::NAME;

/// Everything the order service runs on.
pub struct OrderSetup {
    /// The event log, behind the repository (and its fold cache) the service uses; a
    /// process that runs several services can give them one.
    pub repo: CertificateRepository,
    /// Where to listen (port 0: any free port).
    pub listen: SocketAddr,
    /// Issuer ids orders may name.
    pub issuers: Vec<String>,
    /// Server options (request size limit, drain timeout).
    pub server: ServerOptions,
    /// The ListCertificates read model and the events that keep it up to date; `None`
    /// answers ListCertificates with UNIMPLEMENTED.
    pub list: Option<(CertificateList, EventSource)>,
    /// Renewal and the scheduler. Renewal outcomes are recorded (and the scheduler runs)
    /// only with `list`, whose event source they share.
    pub renewal: RenewalSetup,
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
        repo,
        list,
        issuers,
        renewal,
        mut tasks,
        ..
    } = setup;
    let settings = Arc::new(renewal.settings);
    let renewer = Renewer::new(repo.clone(), settings.clone());
    let list_model = list.as_ref().map(|(model, _)| model.clone());
    if let Some((model, source)) = list {
        // One consumer for the list and renewal outcomes: every certificate event is
        // delivered to the service once, not once per reaction.
        tasks.push(certledger_runtime::events::spawn_consumer(
            source,
            // The list's rows (and outcomes) may be 20 ms late: a transaction per 20 ms
            // rather than per commit of the log, whose file the list shares with it.
            ConsumerSettings::new(LIST_CONSUMER, Filter::Aggregate("certificate".into()))
                .batched()
                .linger(LIST_LINGER),
            Arc::new(CertificateEvents {
                list: model.projection(repo.clone(), settings),
                outcomes: renewer.outcomes(),
            }),
            shutdown.clone(),
        ));
        if let Some(interval) = renewal.scheduler_interval {
            let scheduler = Scheduler::new(model, renewer.clone(), interval);
            let token = shutdown.clone();
            tasks.push(tokio::spawn(scheduler.run(token)));
        }
    }
    // One repository (one fold cache) for the service, the list and renewals: the list
    // finds the certificates the service just ordered already folded.
    let service = OrderService::new(repo, issuers, list_model, renewer, shutdown);
    OrderParts {
        server: service.into_server(),
        tasks,
    }
}

/// Starts the order service in the background. With authentication it also serves the
/// token service (`certledger.auth.v1.TokenService`), where API tokens are managed.
pub async fn start(
    setup: OrderSetup,
    shutdown: CancellationToken,
) -> std::io::Result<RunningService> {
    let auth = setup.server.auth.clone();
    let grpc = GrpcServer::bind(setup.listen, setup.server.clone()).await?;
    let OrderParts { server, tasks } = build(setup, shutdown.clone());
    let routes = Routes::new(server);
    let (routes, names): (_, &[&str]) = match auth {
        Some(auth) => (
            routes.add_service(TokenApi::new(auth).into_server()),
            &[SERVICE_NAME, TOKEN_SERVICE_NAME],
        ),
        None => (routes, &[SERVICE_NAME]),
    };
    Ok(RunningService::spawn(grpc, routes, names, shutdown, tasks))
}

/// The order service's reactions to certificate events: the list's rows (a batch in one
/// transaction), then the renewal outcomes among the events.
struct CertificateEvents {
    list: listing::ListProjection,
    outcomes: renewal::RenewalOutcomes,
}

#[async_trait::async_trait]
impl Handler for CertificateEvents {
    async fn handle(&self, event: &RecordedEvent) -> Result<(), HandlerError> {
        self.list.handle(event).await?;
        self.outcomes.handle(event).await
    }

    async fn handle_batch(&self, events: &[RecordedEvent]) -> Result<(), HandlerError> {
        self.list.handle_batch(events).await?;
        self.outcomes.handle_all(events, CONSUMER_CONCURRENCY).await
    }
}
