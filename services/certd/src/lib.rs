//! `certd`: every certledger service in one process.
//!
//! * With no configuration: the event log in embedded SQLite (`<data-dir>/certledger.db`),
//!   the read models beside it (`<data-dir>/projections.db`), the built-in CA created at
//!   first start in `<data-dir>/ca` and `<data-dir>/keys`, consumers tailing the SQL log.
//! * With `--database-url postgres://…` and `--nats-url nats://…`: one replica of the
//!   distributed system (the CA directory must then be the same on every replica, e.g. a
//!   shared volume, or each replica runs with its own issuer id).
//!
//! The order and issuance services share one gRPC address (one router: both services,
//! the standard health service and server reflection); the projections dashboard, JSON
//! API and `/metrics` are served over HTTP on a second address.
//!
//! Every option of the issuance service is accepted too (see `certd --help`); the ones
//! below are certd's own or have a different default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use certledger_issuance::ca::open_ca;
use certledger_issuance::config::IssuanceConfig;
use certledger_issuance::{IssuanceParts, IssuanceSetup};
use certledger_order::{CertificateList, OrderParts, OrderSetup};
use certledger_projections::{
    HttpConfig, HttpServer, ProjectionStore, Projector, ProjectorConfig, StoreOptions,
};
use certledger_runtime::config::{Args, ConfigError, Flag, Parsed, parse};
use certledger_runtime::events::{open_log, open_source};
use certledger_runtime::server::{GrpcServer, RunningService, ServeError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

/// The default data directory (relative to the working directory).
pub const DEFAULT_DATA_DIR: &str = "./certledger-data";

/// The default gRPC address; certctl's default `--server` is this address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";

/// The default address of the dashboard, JSON API and `/metrics`.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:8080";

/// certd's own options; every other option of the issuance service is accepted too.
pub const OWN_FLAGS: &[Flag] = &[
    Flag::value(
        "data-dir",
        "CERTLEDGER_DATA_DIR",
        "directory of the embedded databases, the CA (ca/) and the key store (keys/)",
    )
    .default(DEFAULT_DATA_DIR),
    Flag::value(
        "database-url",
        "CERTLEDGER_DATABASE_URL",
        "event log and read models: postgres://user@host/db (default: SQLite files in the data directory)",
    ),
    Flag::value(
        "projections-pg-schema",
        "CERTLEDGER_PROJECTIONS_PG_SCHEMA",
        "PostgreSQL schema of the read models",
    )
    .default(certledger_projections::DEFAULT_PG_SCHEMA),
    Flag::value(
        "listen",
        "CERTLEDGER_LISTEN",
        "gRPC address of OrderService and IssuanceService, with health and reflection (port 0: any free port)",
    )
    .default(DEFAULT_LISTEN),
    Flag::value(
        "http-listen",
        "CERTLEDGER_HTTP_LISTEN",
        "address of the dashboard, JSON API and /metrics (port 0: any free port; \"off\": none)",
    )
    .default(DEFAULT_HTTP_LISTEN),
    Flag::switch(
        "allow-no-validation",
        "CERTLEDGER_ALLOW_NO_VALIDATION",
        "issue orders whose validation method is NONE (default: on with the embedded database, off otherwise)",
    ),
];

/// Every option certd accepts: [`OWN_FLAGS`], then the issuance service's others.
pub fn flags() -> Vec<Flag> {
    let mut flags = OWN_FLAGS.to_vec();
    for flag in certledger_issuance::config::FLAGS {
        if !flags.iter().any(|f| f.name == flag.name) {
            flags.push(*flag);
        }
    }
    flags
}

/// The validated configuration.
#[derive(Debug)]
pub struct CertdConfig {
    /// The data directory.
    pub data_dir: PathBuf,
    /// No `--database-url`: SQLite files in the data directory.
    pub embedded: bool,
    /// Validation method NONE is allowed because certd is embedded and nobody said
    /// otherwise (printed at start).
    pub no_validation_by_default: bool,
    /// The read models' database URL.
    pub projections_url: String,
    /// The read models' PostgreSQL schema.
    pub projections_pg_schema: String,
    /// The dashboard's address (`None`: no HTTP server).
    pub http_listen: Option<SocketAddr>,
    /// Everything the issuance service takes (event log, NATS, gRPC address, CA, …),
    /// shared with the order service.
    pub issuance: IssuanceConfig,
}

/// Parses `argv` (without the program name) with `env` as the environment.
pub fn configure(
    argv: Vec<String>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<CertdConfig>, ConfigError> {
    const ABOUT: &str = "every certledger service in one process (order, issuance, projections; embedded SQLite by default)";
    let flags = flags();
    let first = match parse("certd", ABOUT, &flags, argv.clone(), &env)? {
        Parsed::Help(text) => {
            print!("{text}");
            return Ok(None);
        }
        Parsed::Args(args) => args,
    };
    let data_dir = first.required("data-dir")?.to_owned();
    let embedded = first.value("database-url").is_none();
    let no_validation_by_default = embedded && first.value("allow-no-validation").is_none();
    let sqlite = |file: &str| format!("sqlite:{}", PathBuf::from(&data_dir).join(file).display());
    let log_url = sqlite("certledger.db");
    // The derived defaults go in as if they came from the environment, so that the
    // issuance service's validation (naming the key on error) sees them.
    let with_defaults = |key: &str| {
        env(key).filter(|v| !v.is_empty()).or_else(|| match key {
            "CERTLEDGER_DATABASE_URL" if embedded => Some(log_url.clone()),
            "CERTLEDGER_ALLOW_NO_VALIDATION" if no_validation_by_default => Some("true".into()),
            _ => None,
        })
    };
    let args = match parse("certd", ABOUT, &flags, argv, with_defaults)? {
        Parsed::Help(text) => {
            print!("{text}");
            return Ok(None);
        }
        Parsed::Args(args) => args,
    };
    let issuance = IssuanceConfig::from_args(&args)?;
    let http_listen = http_listen(&args)?;
    let projections_url = if embedded {
        sqlite("projections.db")
    } else {
        issuance.database_url.clone()
    };
    Ok(Some(CertdConfig {
        data_dir: PathBuf::from(&data_dir),
        embedded,
        no_validation_by_default,
        projections_url,
        projections_pg_schema: args.required("projections-pg-schema")?.to_owned(),
        http_listen,
        issuance,
    }))
}

fn http_listen(args: &Args) -> Result<Option<SocketAddr>, ConfigError> {
    match args.value("http-listen").map(str::trim) {
        None | Some("off" | "") => Ok(None),
        Some(_) => args.parsed::<SocketAddr>("http-listen"),
    }
}

/// A running certd.
#[derive(Debug)]
pub struct Certd {
    grpc: RunningService,
    http_addr: Option<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl Certd {
    /// The gRPC address (order, issuance, health, reflection).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.addr()
    }

    /// The dashboard's address, if served.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Waits until shutdown (the token given to [`start`]) and the drain are over.
    pub async fn wait(self) -> Result<(), ServeError> {
        let result = self.grpc.wait().await;
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

/// The gRPC services certd serves on its one address (health reports each).
pub const GRPC_SERVICES: &[&str] = &[
    certledger_order::SERVICE_NAME,
    certledger_issuance::SERVICE_NAME,
];

/// Starts everything in the background; stops when `shutdown` is cancelled.
pub async fn start(config: &CertdConfig, shutdown: CancellationToken) -> anyhow::Result<Certd> {
    let c = &config.issuance;
    let ca = open_ca(&c.ca, c.kek.clone()).context("opening the CA (--data-dir)")?;
    let log = open_log(&c.database_url, &c.pg_schema)
        .await
        .context("opening the event log (--database-url)")?;
    // One relay (with NATS) for the whole process; every consumer shares the source.
    let (source, relay) = open_source(
        log.clone(),
        c.nats_url.as_deref(),
        c.relay,
        shutdown.clone(),
    )
    .await
    .context("opening the event stream (--nats-url)")?;
    let grpc = GrpcServer::bind(c.listen, c.server.clone())
        .await
        .with_context(|| format!("listening on {} (--listen)", c.listen))?;

    let list = CertificateList::open(&c.database_url, &c.pg_schema)
        .await
        .context("opening the certificate list table")?;
    let OrderParts {
        server: order,
        tasks: mut grpc_tasks,
    } = certledger_order::build(
        OrderSetup {
            log: log.clone(),
            listen: c.listen,
            issuers: vec![c.issuer.issuer_id.clone()],
            server: c.server.clone(),
            list: Some((list, source.clone())),
            renewal: Default::default(),
            tasks: relay.into_iter().collect(),
        },
        shutdown.clone(),
    );
    let IssuanceParts {
        server: issuance,
        tasks: issuance_tasks,
        ..
    } = certledger_issuance::build(
        IssuanceSetup {
            log: log.clone(),
            source: source.clone(),
            authority: ca.authority,
            keys: ca.keys,
            settings: c.issuer.clone(),
            listen: c.listen,
            server: c.server.clone(),
            recover: c.recover,
            tasks: Vec::new(),
        },
        shutdown.clone(),
    );
    grpc_tasks.extend(issuance_tasks);
    let routes = Routes::new(order).add_service(issuance);

    // ---- deployment and revocation: add them here ------------------------------------
    // When `certledger-deployment` and `certledger-revocation` are services, build each
    // from `log`, `source.clone()` and `shutdown.clone()` like order and issuance above:
    // add its gRPC service to `routes`, its name to `GRPC_SERVICES`, its tasks to
    // `grpc_tasks`, and its HTTP endpoints (CRL, OCSP) beside the dashboard below.
    // ------------------------------------------------------------------------------------

    let grpc = RunningService::spawn(grpc, routes, GRPC_SERVICES, shutdown.clone(), grpc_tasks);

    let mut tasks = Vec::new();
    let store = ProjectionStore::connect_with(
        &config.projections_url,
        StoreOptions::new().pg_schema(config.projections_pg_schema.clone()),
    )
    .await
    .context("opening the read models (--database-url)")?;
    let projector = Projector::new(store.clone(), log.clone(), ProjectorConfig::default());
    {
        let projector: Arc<Projector> = projector.clone();
        let token = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(error) = projector.run(source, token).await {
                tracing::error!(%error, "projections stopped with an error");
            }
        }));
    }
    let mut http_addr = None;
    if let Some(addr) = config.http_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr} (--http-listen)"))?;
        http_addr = Some(listener.local_addr()?);
        let server = HttpServer::new(store, log, HttpConfig::default())
            .with_projector_stats(projector.stats());
        let token = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(error) = server.serve(listener, token.cancelled_owned()).await {
                tracing::error!(%error, "dashboard server failed");
            }
        }));
    }
    Ok(Certd {
        grpc,
        http_addr,
        tasks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(argv: &[&str], env: &[(&str, &str)]) -> Result<CertdConfig, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        configure(argv.iter().map(|s| (*s).to_owned()).collect(), |k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
        .map(|c| c.expect("not --help"))
    }

    #[test]
    fn no_configuration_is_embedded_in_the_data_directory() {
        let c = config(&[], &[]).unwrap();
        assert!(c.embedded);
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(
            c.issuance.database_url,
            format!("sqlite:{DEFAULT_DATA_DIR}/certledger.db")
        );
        assert_eq!(
            c.projections_url,
            format!("sqlite:{DEFAULT_DATA_DIR}/projections.db")
        );
        assert_eq!(c.issuance.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(
            c.http_listen.map(|a| a.to_string()).as_deref(),
            Some(DEFAULT_HTTP_LISTEN)
        );
        assert!(c.issuance.issuer.allow_no_validation && c.no_validation_by_default);
        assert!(c.issuance.nats_url.is_none());

        let c = config(
            &["--allow-no-validation=false"],
            &[("CERTLEDGER_DATA_DIR", "/d")],
        )
        .unwrap();
        assert!(!c.issuance.issuer.allow_no_validation);
        assert_eq!(c.issuance.database_url, "sqlite:/d/certledger.db");
        assert_eq!(c.issuance.ca.data_dir, PathBuf::from("/d"));
    }

    #[test]
    fn with_postgres_and_nats_it_is_a_replica() {
        let c = config(
            &[
                "--database-url",
                "postgres://u@h/db",
                "--nats-url",
                "nats://n:4222",
            ],
            &[],
        )
        .unwrap();
        assert!(!c.embedded);
        assert!(!c.issuance.issuer.allow_no_validation);
        assert_eq!(c.projections_url, "postgres://u@h/db");
        assert_eq!(c.issuance.nats_url.as_deref(), Some("nats://n:4222"));
    }

    #[test]
    fn errors_name_the_key() {
        let e = config(&["--http-listen", "nope"], &[]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--http-listen (CERTLEDGER_HTTP_LISTEN)"),
            "{e}"
        );
        let e = config(&["--database-url", "mysql://x"], &[]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--database-url (CERTLEDGER_DATABASE_URL)"),
            "{e}"
        );
        let e = config(&["--max-validity-days", "x"], &[]).unwrap_err();
        assert!(e.to_string().contains("--max-validity-days"), "{e}");
        assert!(
            config(&["--http-listen", "off"], &[])
                .unwrap()
                .http_listen
                .is_none()
        );
    }
}
