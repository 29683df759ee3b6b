//! certledger's revocation service (`certledger-revocation`) and its core.
//!
//! The service ([`start`] in-process, or the binary): `RevocationService` over gRPC
//! ([`service`]), a serial → status read model kept current by certificate events
//! ([`model`]), CRLs re-signed after every revocation and on a schedule with their numbers
//! recorded in the log ([`publisher`]), and the HTTP endpoints for CRL and OCSP.
//! Configuration of the binary: [`config`].
//!
//! The core:
//!
//! * [`issuer`] — the issuing CA ([`IssuerSigner`]): its certificate, the hashes OCSP
//!   requests name it by, and its key, which signs CRLs and OCSP responses directly.
//! * [`crl`] — full v2 CRLs ([`build_crl`]) with CRL number, authorityKeyIdentifier and
//!   reason codes; `nextUpdate` 7 days after `thisUpdate` by default, never more than 10.
//! * [`ocsp`] — the RFC 6960 responder ([`Responder`]): parses requests defensively,
//!   answers good / revoked / unknown from a [`StatusSource`], echoes the nonce.
//! * [`status`] — the [`StatusSource`] trait and the in-memory read model
//!   [`MemoryStatusSource`].
//! * [`http`] — the HTTP endpoints (`/crl/<issuer>.crl`, `/ocsp`, `/healthz`) over swappable
//!   [`CrlHandle`] and [`OcspHandle`].
//! * [`reason`] — RFC 5280 revocation reasons.
//!
//! Private keys never appear in `Debug` output, errors or logs.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod crl;
mod der;
pub mod http;
pub mod issuer;
pub mod model;
pub mod ocsp;
pub mod publisher;
pub mod reason;
pub mod service;
pub mod status;

pub use crl::{
    CrlConfig, CrlError, DEFAULT_CRL_VALIDITY, MAX_CRL_VALIDITY, MIN_CRL_VALIDITY, RevokedEntry,
    SignedCrl, build_crl,
};
pub use http::{Clock, CrlHandle, HttpConfig, OcspHandle, PublishError, RevocationHttp};
pub use issuer::{CertIdHash, IssuerError, IssuerSigner, SignError};
pub use model::StatusModel;
pub use ocsp::{
    Answer, CertId, OcspConfig, OcspConfigError, OcspRequest, OcspRequestError, OcspResponse,
    OcspResponseStatus, Responder,
};
pub use publisher::{CrlPublisher, PublisherSettings};
pub use reason::{RevocationReason, UnknownReason};
pub use service::{RevocationHandler, RevocationService};
pub use status::{CertStatus, MemoryStatusSource, StatusSource, StatusUnavailable};

use std::net::SocketAddr;
use std::sync::Arc;

use certledger_eventlog::EventLog;
use certledger_eventstream::consumer::{ConsumerSettings, EventSource, Filter};
use certledger_proto::revocation::v1::revocation_service_server::RevocationServiceServer;
use certledger_runtime::server::{GrpcServer, RunningService, ServerOptions};
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::service::Routes;

/// The full gRPC name of the service.
pub const SERVICE_NAME: &str = <RevocationServiceServer<RevocationService> as NamedService>::NAME;

/// Everything the revocation service runs on.
pub struct RevocationSetup {
    /// The event log.
    pub log: Arc<dyn EventLog>,
    /// Where certificate events come from (JetStream or the SQL tail).
    pub source: EventSource,
    /// The issuing CA (the intermediate and its key).
    pub signer: Arc<IssuerSigner>,
    /// The issuer id (`<issuer>` of `/crl/<issuer>.crl`; the `issuer_ca_id` of events).
    pub issuer_id: String,
    /// CRL validity and refresh.
    pub publisher: PublisherSettings,
    /// OCSP answers.
    pub ocsp: OcspConfig,
    /// HTTP limits and cache lifetimes.
    pub http: HttpConfig,
    /// gRPC listen address (port 0: any free port).
    pub listen: SocketAddr,
    /// HTTP (CRL, OCSP) listen address (port 0: any free port).
    pub http_listen: SocketAddr,
    /// gRPC server options.
    pub server: ServerOptions,
    /// Background tasks already started for this service (e.g. a relay).
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// A started revocation service.
#[derive(Debug)]
pub struct StartedRevocation {
    /// The gRPC server and background tasks (HTTP server, consumer, CRL publisher).
    pub service: RunningService,
    /// Where CRLs and OCSP are served.
    pub http_addr: SocketAddr,
    /// The read model.
    pub model: Arc<StatusModel>,
    /// The CRL publisher.
    pub publisher: Arc<CrlPublisher>,
    /// The CRLs being served.
    pub crls: CrlHandle,
}

impl StartedRevocation {
    /// `http://<http addr>`: the base URL certificates should name.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http_addr)
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listen address.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The OCSP configuration.
    #[error(transparent)]
    Ocsp(#[from] OcspConfigError),
    /// The CRL configuration.
    #[error(transparent)]
    Crl(#[from] CrlError),
    /// The CRL refresh interval.
    #[error("CRL refresh {refresh:?} must be more than zero and shorter than the CRL validity")]
    Refresh {
        /// The interval.
        refresh: std::time::Duration,
    },
}

/// The revocation service's parts without its gRPC server, for a caller that serves the
/// API on a server of its own (certd): the API, the HTTP server's address (already
/// serving), the read model, the CRL publisher and CRLs, and the background tasks.
pub struct RevocationParts {
    /// The gRPC service.
    pub server: RevocationServiceServer<RevocationService>,
    /// Where CRLs and OCSP are served.
    pub http_addr: SocketAddr,
    /// The read model.
    pub model: Arc<StatusModel>,
    /// The CRL publisher.
    pub publisher: Arc<CrlPublisher>,
    /// The CRLs being served.
    pub crls: CrlHandle,
    /// Background tasks (HTTP server, rebuild, consumer, CRL schedule) to await on stop.
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Starts the revocation service in the background: the gRPC and HTTP servers at once
/// (OCSP answers `tryLater` until the model is rebuilt), then the model rebuild from the
/// log, the first CRL, the consumer and the CRL schedule.
pub async fn start(
    setup: RevocationSetup,
    shutdown: CancellationToken,
) -> Result<StartedRevocation, StartError> {
    let (listen, options) = (setup.listen, setup.server.clone());
    let grpc = GrpcServer::bind(listen, options)
        .await
        .map_err(|source| StartError::Listen {
            addr: listen,
            source,
        })?;
    let issuer_id = setup.issuer_id.clone();
    let parts = build(setup, shutdown.clone()).await?;
    let routes = Routes::new(parts.server);
    let service = RunningService::spawn(grpc, routes, &[SERVICE_NAME], shutdown, parts.tasks);
    tracing::info!(grpc = %service.addr(), http = %parts.http_addr, issuer = %issuer_id, "revocation service started");
    Ok(StartedRevocation {
        service,
        http_addr: parts.http_addr,
        model: parts.model,
        publisher: parts.publisher,
        crls: parts.crls,
    })
}

/// Builds the revocation service and starts its HTTP server and background work, without
/// a gRPC server (see [`start`]); `listen` and `server` of the setup are not used.
pub async fn build(
    setup: RevocationSetup,
    shutdown: CancellationToken,
) -> Result<RevocationParts, StartError> {
    let RevocationSetup {
        log,
        source,
        signer,
        issuer_id,
        publisher,
        ocsp,
        http,
        http_listen,
        mut tasks,
        ..
    } = setup;
    publisher.crl.validate()?;
    if publisher.refresh.is_zero()
        || time::Duration::try_from(publisher.refresh).is_ok_and(|r| r >= publisher.crl.validity)
    {
        return Err(StartError::Refresh {
            refresh: publisher.refresh,
        });
    }
    let listener = tokio::net::TcpListener::bind(http_listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: http_listen,
            source,
        })?;
    let http_addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: http_listen,
        source,
    })?;

    let model = Arc::new(StatusModel::new(issuer_id.clone()));
    let crls = CrlHandle::new();
    let responder = Responder::new(signer.clone(), model.clone(), ocsp)?;
    let ocsp_handle = OcspHandle::with_responder(Arc::new(responder));
    let publisher = Arc::new(CrlPublisher::new(
        issuer_id.clone(),
        signer,
        publisher,
        log.clone(),
        model.clone(),
        crls.clone(),
    ));

    let server_http = RevocationHttp::new(crls.clone(), ocsp_handle, http);
    let token = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        if let Err(error) = server_http
            .serve(listener, async move { token.cancelled().await })
            .await
        {
            tracing::error!(%error, "revocation HTTP server failed");
        }
    }));

    let api_log = log.clone();
    let handler = Arc::new(RevocationHandler::new(
        log.clone(),
        model.clone(),
        publisher.clone(),
    ));
    {
        let model = model.clone();
        let publisher = publisher.clone();
        let token = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let position = model.rebuild(&log, &token).await;
            if token.is_cancelled() {
                return;
            }
            model.set_ready();
            let follow = {
                let publisher = publisher.clone();
                let model = model.clone();
                let token = token.clone();
                async move {
                    let kick = move |serial: &certledger_ca::SerialNumber| {
                        tracing::info!(serial = %serial.to_hex(), "revocation seen in the log; CRL re-signing");
                        publisher.kick();
                    };
                    model.follow(&log, position, &kick, &token).await;
                }
            };
            let settings =
                ConsumerSettings::new(service::CONSUMER, Filter::Aggregate("certificate".into()));
            let consumer = {
                let token = token.clone();
                async move {
                    if let Err(error) = source.run(settings, handler, token).await {
                        tracing::error!(consumer = service::CONSUMER, %error, "consumer stopped with an error");
                    }
                }
            };
            tokio::join!(publisher.run(token), consumer, follow);
        }));
    }

    let api = RevocationService::new(api_log, model.clone(), publisher.clone(), crls.clone());
    Ok(RevocationParts {
        server: api.into_server(),
        http_addr,
        model,
        publisher,
        crls,
        tasks,
    })
}
