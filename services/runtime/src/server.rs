//! A gRPC server the way every certledger service runs one:
//!
//! * the standard health service (`grpc.health.v1.Health`): every service, and the
//!   server as a whole (`""`), is `NOT_SERVING` until [`GrpcServer::serve`] runs (the
//!   caller does its start-up checks — database reachable, CA loaded — before that), then
//!   `SERVING`; on shutdown `NOT_SERVING` again before the drain begins;
//! * server reflection (`grpc.reflection.v1`) over certledger's descriptors and health's;
//! * authentication and the per-RPC policy ([`crate::auth`]) when configured, and TLS
//!   (mutual, with client certificates optional) when the authenticator holds TLS
//!   material ([`crate::tls`]);
//! * a request size limit: a request message larger than the limit is refused with
//!   `RESOURCE_EXHAUSTED` as soon as its length prefix arrives (nothing is buffered);
//! * graceful shutdown on a [`CancellationToken`] (see [`cancel_on_signals`] for
//!   SIGINT/SIGTERM): stop accepting, let running calls finish, and give up on the
//!   stragglers after the drain timeout.
//!
//! ```no_run
//! # async fn demo(routes: tonic::service::Routes) -> std::io::Result<()> {
//! use certledger_runtime::server::{GrpcServer, ServerOptions, cancel_on_signals};
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! cancel_on_signals(shutdown.clone());
//! let server = GrpcServer::bind("127.0.0.1:0".parse().unwrap(), ServerOptions::default()).await?;
//! println!("listening on {}", server.local_addr());
//! server.serve(routes, &["certledger.order.v1.OrderService"], shutdown).await.ok();
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::body::Body;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::auth::{AuthLayer, Authenticator};

/// Default limit of one request message: 1 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// Default time running calls get to finish after shutdown begins.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Server options.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Largest request message accepted, in bytes.
    pub max_request_bytes: usize,
    /// How long running calls may take to finish after shutdown begins.
    pub drain_timeout: Duration,
    /// Who may call (see [`crate::auth`]); `None`: everyone, as `anonymous` in the
    /// tenant the `x-certledger-tenant` header names. When it holds TLS material
    /// ([`Authenticator::server_tls`]) the server speaks TLS only.
    pub auth: Option<Arc<Authenticator>>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            auth: None,
        }
    }
}

/// Why serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The reflection service could not be built from the descriptors (a build bug).
    #[error("building the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The server task panicked.
    #[error("gRPC server task failed: {0}")]
    Task(String),
}

/// A bound, not yet serving, gRPC server.
pub struct GrpcServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    health: HealthReporter,
    health_service:
        tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>,
    options: ServerOptions,
}

impl std::fmt::Debug for GrpcServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcServer")
            .field("local_addr", &self.local_addr)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl GrpcServer {
    /// Binds `addr` (port 0 picks a free port; see [`GrpcServer::local_addr`]).
    pub async fn bind(addr: SocketAddr, options: ServerOptions) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let health = HealthReporter::new();
        let health_service = tonic_health::pb::health_server::HealthServer::new(
            tonic_health::server::HealthService::from_health_reporter(health.clone()),
        );
        Ok(Self {
            listener,
            local_addr,
            health,
            health_service,
            options,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Whether it serves TLS.
    pub fn tls(&self) -> bool {
        self.options
            .auth
            .as_ref()
            .is_some_and(|a| a.server_tls().is_some())
    }

    /// The health reporter (e.g. to report `NOT_SERVING` while a dependency is down).
    pub fn health(&self) -> HealthReporter {
        self.health.clone()
    }

    /// Serves `routes` (plus health and reflection) until `shutdown` is cancelled and the
    /// running calls have drained (or the drain timeout passed). `services` are the full
    /// names of the services in `routes`, whose health is reported.
    pub async fn serve(
        self,
        routes: Routes,
        services: &[&str],
        shutdown: CancellationToken,
    ) -> Result<(), ServeError> {
        let GrpcServer {
            listener,
            local_addr,
            health,
            health_service,
            options,
        } = self;
        let mut names: Vec<String> = services.iter().map(|s| (*s).to_owned()).collect();
        names.push(String::new());
        set_all(&health, &names, ServingStatus::NotServing).await;

        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(certledger_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let routes = routes.add_service(health_service).add_service(reflection);

        let limit = options.max_request_bytes;
        let limit_layer = tower::util::MapRequestLayer::new(move |request: http::Request<Body>| {
            request.map(|body| Body::new(LimitedBody::new(body, limit)))
        });
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let signal = {
            let shutdown = shutdown.clone();
            let health = health.clone();
            let names = names.clone();
            async move {
                shutdown.cancelled().await;
                set_all(&health, &names, ServingStatus::NotServing).await;
                tracing::info!(%local_addr, "shutting down: health is NOT_SERVING, draining running calls");
            }
        };
        let mut builder = Server::builder();
        if let Some(tls) = options.auth.as_ref().and_then(|a| a.server_tls()) {
            builder = builder.tls_config(tls.config())?;
        }
        let server = builder
            .layer(limit_layer)
            .layer(AuthLayer::new(options.auth.clone()))
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, signal);
        let mut task = tokio::spawn(server);
        if !shutdown.is_cancelled() {
            set_all(&health, &names, ServingStatus::Serving).await;
            tracing::info!(%local_addr, services = ?services, "serving");
        }
        let drain_timeout = options.drain_timeout;
        let result = tokio::select! {
            result = &mut task => result,
            _ = async { shutdown.cancelled().await; tokio::time::sleep(drain_timeout).await } => {
                tracing::warn!(?drain_timeout, "calls still running after the drain timeout; closing them");
                task.abort();
                task.await
            }
        };
        match result {
            Ok(served) => served.map_err(ServeError::from),
            Err(e) if e.is_cancelled() => Ok(()),
            Err(e) => Err(ServeError::Task(e.to_string())),
        }
    }
}

async fn set_all(health: &HealthReporter, names: &[String], status: ServingStatus) {
    for name in names {
        health.set_service_status(name, status).await;
    }
}

/// Cancels `token` on SIGINT or SIGTERM (spawns a task).
pub fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let signal = wait_for_signal().await;
        tracing::info!(signal, "shutdown requested");
        token.cancel();
    });
}

async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            // Without signal handlers, fall back to Ctrl-C only.
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// A request body that refuses a gRPC message whose declared length exceeds the limit,
/// before any of it is buffered, with `RESOURCE_EXHAUSTED`.
struct LimitedBody {
    inner: Body,
    limit: usize,
    scan: FrameScan,
    failed: bool,
}

impl LimitedBody {
    fn new(inner: Body, limit: usize) -> Self {
        Self {
            inner,
            limit,
            scan: FrameScan::default(),
            failed: false,
        }
    }
}

/// Walks the gRPC length-prefixed messages of a body (1 flag byte, 4 length bytes, the
/// message), across data frames of any size.
#[derive(Debug, Default)]
struct FrameScan {
    header: [u8; 5],
    have: usize,
    remaining: u64,
}

impl FrameScan {
    /// Feeds bytes; returns the declared length of the first message over `limit`.
    fn feed(&mut self, mut data: &[u8], limit: usize) -> Result<(), u64> {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                self.remaining -= n as u64;
                data = &data[n..];
                continue;
            }
            let n = (5 - self.have).min(data.len());
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have == 5 {
                self.have = 0;
                let len = u64::from(u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]));
                if len > limit as u64 {
                    return Err(len);
                }
                self.remaining = len;
            }
        }
        Ok(())
    }
}

impl http_body::Body for LimitedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref()
                    && let Err(len) = this.scan.feed(data, this.limit)
                {
                    this.failed = true;
                    return Poll::Ready(Some(Err(Status::resource_exhausted(format!(
                        "request message is {len} bytes; at most {} are accepted",
                        this.limit
                    )))));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: u32) -> Vec<u8> {
        let mut m = vec![0u8];
        m.extend_from_slice(&len.to_be_bytes());
        m.extend(std::iter::repeat_n(7u8, len as usize));
        m
    }

    #[test]
    fn frame_scan_finds_oversized_messages_across_chunks() {
        let mut data = message(10);
        data.extend(message(3));
        for chunk in [1, 2, 3, 5, 7, 100] {
            let mut scan = FrameScan::default();
            for piece in data.chunks(chunk) {
                assert_eq!(scan.feed(piece, 10), Ok(()));
            }
        }
        let mut scan = FrameScan::default();
        let big = message(11);
        let r: Result<(), u64> = big.chunks(2).try_for_each(|p| scan.feed(p, 10));
        assert_eq!(r, Err(11));
    }
}

/// A service started in the background: its gRPC server and the tasks beside it
/// (consumers, relay). Stop it with [`RunningService::stop`], or cancel its token and
/// [`RunningService::wait`].
#[derive(Debug)]
pub struct RunningService {
    addr: SocketAddr,
    tls: bool,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<Result<(), ServeError>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningService {
    /// Serves `routes` on `server` in a background task; `tasks` are awaited on stop.
    pub fn spawn(
        server: GrpcServer,
        routes: Routes,
        services: &[&str],
        shutdown: CancellationToken,
        tasks: Vec<tokio::task::JoinHandle<()>>,
    ) -> Self {
        let addr = server.local_addr();
        let tls = server.tls();
        let names: Vec<String> = services.iter().map(|s| (*s).to_owned()).collect();
        let token = shutdown.clone();
        let server = tokio::spawn(async move {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            server.serve(routes, &names, token).await
        });
        Self {
            addr,
            tls,
            shutdown,
            server,
            tasks,
        }
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`, or `https://<addr>` over TLS, for clients.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The token that stops the service.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Cancels the token and waits for everything to stop.
    pub async fn stop(self) -> Result<(), ServeError> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits until the server has stopped (after the token was cancelled, or on a
    /// server error, which also cancels the token), then for the other tasks.
    pub async fn wait(self) -> Result<(), ServeError> {
        let result = match self.server.await {
            Ok(r) => r,
            Err(e) => Err(ServeError::Task(e.to_string())),
        };
        self.shutdown.cancel();
        for task in self.tasks {
            if let Err(e) = task.await
                && !e.is_cancelled()
            {
                tracing::warn!(error = %e, "background task failed");
            }
        }
        result
    }
}
