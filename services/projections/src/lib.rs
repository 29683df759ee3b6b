//! certledger's query side: read models fed by the event log, their rebuild, and the
//! HTTP surface (dashboard, JSON, `/metrics`, health).
//!
//! * [`ProjectionStore`]: the read models' database (PostgreSQL schema or SQLite file),
//!   with the queries the API serves ([`query`]).
//! * [`Projector`]: feeds the read models — live as an event-stream handler
//!   ([`Projector::run`] with an `EventSource`), catching up at start, and
//!   [`Projector::rebuild`] from position 0.
//! * [`history`]: a certificate's timeline and its state as of a time or position,
//!   straight from the log.
//! * [`HttpServer`]: `/`, `/certificates/<id>`, `/api/…`, `/metrics`, `/healthz`,
//!   `/readyz`.
//! * [`QueryService`] ([`grpc`]): `CertificateQueryService` over gRPC — list with
//!   filters and page tokens, get, history, time travel (`GetCertificateAt`) and
//!   `WatchChanges` (live from [`Projector::subscribe`]; after a past position the log's
//!   changes since then are replayed first). Served by [`grpc::start`] with health and
//!   reflection.
//! * The `certledger-projections` binary ([`config`] lists its flags) runs the projector,
//!   the gRPC service and the HTTP server; `certledger-projections rebuild [--model
//!   NAME]` replays the log into the read models with a progress line on stderr.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use certledger_eventstream::consumer::EventSource;
//! use certledger_projections::{HttpConfig, HttpServer, ProjectionStore, Projector, ProjectorConfig};
//! use tokio_util::sync::CancellationToken;
//!
//! let log = certledger_eventlog::connect("sqlite:certledger.db").await?;
//! let store = ProjectionStore::connect("sqlite:projections.db").await?;
//! let projector = Projector::new(store.clone(), log.clone(), ProjectorConfig::default());
//! let shutdown = CancellationToken::new();
//! let feeding = tokio::spawn(projector.clone().run(EventSource::SqlTail { log: log.clone() }, shutdown.clone()));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! HttpServer::new(store, log, HttpConfig::default())
//!     .with_projector_stats(projector.stats())
//!     .serve(listener, shutdown.clone().cancelled_owned())
//!     .await?;
//! feeding.await??;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod config;
mod error;
pub mod grpc;
pub mod history;
mod html;
mod http;
pub mod metrics;
mod model;
mod projector;
pub mod query;
mod rows;
mod store;
mod view;

pub use error::ProjectionError;
pub use grpc::{QueryService, SERVICE_NAME};
pub use html::esc;
pub use http::{DEFAULT_TENANT, HttpConfig, HttpServer, TENANT_HEADER, validate_tenant};
pub use model::{
    AnyRow, DeploymentRow, ExpiryRow, InventoryRow, ReadModel, RevocationRow, TargetRow,
    certificate_stream,
};
pub use projector::{InventoryChange, Progress, Projector, ProjectorConfig, ProjectorStats};
pub use store::{Backend, Checkpoint, DEFAULT_PG_SCHEMA, ProjectionStore, StoreOptions};
