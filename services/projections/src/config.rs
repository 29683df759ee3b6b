//! Configuration of the `certledger-projections` binary: flags or environment
//! variables, validated at start (errors name the key).

use std::net::SocketAddr;

use certledger_runtime::config::{Args, ConfigError, Flag};
use certledger_runtime::server::{DEFAULT_MAX_REQUEST_BYTES, ServerOptions};

use crate::model::ReadModel;

/// The binary's flags (both modes; `rebuild` ignores the listen addresses and NATS).
pub const FLAGS: &[Flag] = &[
    Flag::value(
        "database-url",
        "CERTLEDGER_DATABASE_URL",
        "event log: postgres://user@host/db or sqlite:path",
    ),
    Flag::value(
        "pg-schema",
        "CERTLEDGER_PG_SCHEMA",
        "PostgreSQL schema of the event log",
    )
    .default("eventlog"),
    Flag::value(
        "store-url",
        "CERTLEDGER_PROJECTIONS_STORE_URL",
        "read-model database: postgres://… or sqlite:path (default: the event log's database)",
    ),
    Flag::value(
        "store-schema",
        "CERTLEDGER_PROJECTIONS_STORE_SCHEMA",
        "PostgreSQL schema of the read models",
    )
    .default(crate::store::DEFAULT_PG_SCHEMA),
    Flag::value(
        "nats-url",
        "CERTLEDGER_NATS_URL",
        "NATS server, where this process relays the log (--relay); the projector tails the log either way",
    ),
    Flag::value(
        "relay",
        "CERTLEDGER_RELAY",
        "with NATS: also publish the log to JetStream from this process (true/false)",
    )
    .default("false"),
    Flag::value(
        "listen",
        "CERTLEDGER_LISTEN",
        "gRPC listen address of CertificateQueryService (port 0: any free port)",
    )
    .default("127.0.0.1:50055"),
    Flag::value(
        "http-listen",
        "CERTLEDGER_HTTP_LISTEN",
        "HTTP listen address of the dashboard, JSON API, /metrics, /healthz, /readyz",
    )
    .default("127.0.0.1:8081"),
    Flag::repeated(
        "model",
        "CERTLEDGER_PROJECTIONS_MODELS",
        "rebuild mode: the read model(s) to rebuild (default: all)",
    ),
    Flag::value(
        "max-request-bytes",
        "CERTLEDGER_MAX_REQUEST_BYTES",
        "largest request message accepted",
    )
    .default("1048576"),
    Flag::value(
        "drain-timeout",
        "CERTLEDGER_DRAIN_TIMEOUT",
        "time running calls get at shutdown (e.g. 10s)",
    )
    .default("10s"),
    certledger_runtime::auth::NO_AUTH_FLAG,
    certledger_runtime::auth::BOOTSTRAP_TOKEN_FLAG,
    certledger_runtime::tls::TLS_CERT_FLAG,
    certledger_runtime::tls::TLS_KEY_FLAG,
    certledger_runtime::tls::TLS_CLIENT_CA_FLAG,
];

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct ProjectionsConfig {
    /// Event log URL.
    pub database_url: String,
    /// Event log PostgreSQL schema.
    pub pg_schema: String,
    /// Read-model store URL.
    pub store_url: String,
    /// Read-model PostgreSQL schema.
    pub store_schema: String,
    /// NATS URL, if any.
    pub nats_url: Option<String>,
    /// Run a relay (with NATS).
    pub relay: bool,
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// HTTP listen address.
    pub http_listen: SocketAddr,
    /// Models to rebuild (rebuild mode); all when empty on the command line.
    pub models: Vec<ReadModel>,
    /// gRPC server options.
    pub server: ServerOptions,
    /// Who may call (API tokens), and the bootstrap token.
    pub auth: certledger_runtime::auth::AuthSettings,
}

fn check_db_url(args: &Args, key: &str, url: &str) -> Result<(), ConfigError> {
    if url.starts_with("postgres://")
        || url.starts_with("postgresql://")
        || url.starts_with("sqlite:")
    {
        Ok(())
    } else {
        Err(args.error(key, "must start with postgres://, postgresql:// or sqlite:"))
    }
}

impl ProjectionsConfig {
    /// Validates parsed flags.
    pub fn from_args(args: &Args) -> Result<Self, ConfigError> {
        let database_url = args.required("database-url")?.to_owned();
        check_db_url(args, "database-url", &database_url)?;
        let pg_schema = args.required("pg-schema")?.to_owned();
        let store_url = args
            .value("store-url")
            .map(str::to_owned)
            .unwrap_or_else(|| database_url.clone());
        check_db_url(args, "store-url", &store_url)?;
        let store_schema = args.required("store-schema")?.to_owned();
        let nats_url = args.value("nats-url").map(str::to_owned);
        let relay = args.switch("relay")?;
        let listen = args
            .parsed::<SocketAddr>("listen")?
            .ok_or_else(|| args.error("listen", "is required"))?;
        let http_listen = args
            .parsed::<SocketAddr>("http-listen")?
            .ok_or_else(|| args.error("http-listen", "is required"))?;
        let mut models = Vec::new();
        for name in args.values("model") {
            let model = ReadModel::parse(name).ok_or_else(|| {
                let known: Vec<&str> = ReadModel::ALL.iter().map(|m| m.name()).collect();
                args.error(
                    "model",
                    format!("{name:?} is not a read model; one of {}", known.join(", ")),
                )
            })?;
            if !models.contains(&model) {
                models.push(model);
            }
        }
        if models.is_empty() {
            models = ReadModel::ALL.to_vec();
        }
        let max_request_bytes = args
            .parsed::<usize>("max-request-bytes")?
            .unwrap_or(DEFAULT_MAX_REQUEST_BYTES);
        if max_request_bytes < 1024 {
            return Err(args.error("max-request-bytes", "must be at least 1024"));
        }
        let drain_timeout = args
            .duration("drain-timeout")?
            .unwrap_or(std::time::Duration::from_secs(10));
        Ok(Self {
            database_url,
            pg_schema,
            store_url,
            store_schema,
            nats_url,
            relay,
            listen,
            http_listen,
            models,
            auth: certledger_runtime::auth::AuthSettings::from_args(args)?,
            server: ServerOptions {
                max_request_bytes,
                drain_timeout,
                auth: None,
            },
        })
    }
}
