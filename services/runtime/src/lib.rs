//! certledger's thin shared service kit: one piece of code per idea, used by every service.
//!
//! * [`repository`] — load a certificate stream, fold, decide, append with the expected
//!   version, retry on conflict; event metadata from a [`context::CallContext`].
//! * [`status`] — the one mapping of domain and storage errors onto gRPC statuses.
//! * [`tenant`] — the caller's tenant (request metadata for now; authentication later).
//! * [`context`] — who is calling and why: tenant scope, correlation, causation, actor.
//! * [`convert`] — every proto ↔ domain conversion, in one file.
//! * [`server`] — a tonic server with health, reflection, a request size limit and
//!   graceful shutdown.
//! * [`events`] — the event source (JetStream or SQL tail), the relay, and the log from
//!   configuration.
//! * [`config`] — command-line flags with environment fallbacks, validated at start.
//! * [`telemetry`] — tracing set-up for the binaries.
//! * [`clock`] — the current time, injectable (tests move it).
//! * [`csr`] — CSR inspection that remembers the CSRs that passed.
//! * [`auth`] — API tokens, roles and the per-RPC policy, enforced in front of every service.

/// The allocator of every binary that links this kit (the services, `certd`, the bench):
/// jemalloc instead of glibc's malloc, which was 9 % of scenario 1's CPU samples (sixth
/// session). With jemalloc the bench issued 15 % more certificates per second at 10 % less
/// CPU per certificate, and `certd`'s resident memory stayed as it was (BENCHMARKS.md,
/// seventh session); mimalloc was as fast but held twice the memory under load.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

pub mod auth;
pub mod clock;
pub mod config;
pub mod context;
pub mod convert;
pub mod csr;
pub mod events;
pub mod keystore;
pub mod repository;
pub mod server;
pub mod status;
pub mod stream_cache;
pub mod telemetry;
pub mod tenant;
pub mod tls;

pub use clock::{Clock, SharedClock};
pub use context::CallContext;
pub use repository::{CertificateRepository, Executed, Expect, Loaded, RepositoryError};
