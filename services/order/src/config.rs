//! Configuration of the `certledger-order` binary: flags or environment variables,
//! validated at start (errors name the key).

use std::net::SocketAddr;

use certledger_runtime::config::{Args, ConfigError, Flag};
use certledger_runtime::server::{DEFAULT_MAX_REQUEST_BYTES, ServerOptions};

/// The binary's flags.
pub const FLAGS: &[Flag] = &[
    Flag::value(
        "database-url",
        "CERTLEDGER_DATABASE_URL",
        "event log: postgres://user@host/db or sqlite:path (sqlite::memory: for a throwaway log)",
    ),
    Flag::value(
        "pg-schema",
        "CERTLEDGER_PG_SCHEMA",
        "PostgreSQL schema of the event log",
    )
    .default("eventlog"),
    Flag::value(
        "nats-url",
        "CERTLEDGER_NATS_URL",
        "NATS server; absent: consumers tail the SQL log (embedded mode)",
    ),
    Flag::value(
        "relay",
        "CERTLEDGER_RELAY",
        "with NATS: also publish the log to JetStream from this process (true/false)",
    )
    .default("true"),
    Flag::value(
        "listen",
        "CERTLEDGER_LISTEN",
        "gRPC listen address (port 0: any free port)",
    )
    .default("127.0.0.1:50051"),
    Flag::repeated("issuer", "CERTLEDGER_ISSUERS", "issuer ids orders may name").default("builtin"),
    Flag::value(
        "list",
        "CERTLEDGER_ORDER_LIST",
        "maintain the ListCertificates read table (true/false)",
    )
    .default("true"),
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
];

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct OrderConfig {
    /// Event log URL.
    pub database_url: String,
    /// PostgreSQL schema.
    pub pg_schema: String,
    /// NATS URL, if any.
    pub nats_url: Option<String>,
    /// Run a relay (with NATS).
    pub relay: bool,
    /// Listen address.
    pub listen: SocketAddr,
    /// Allowed issuer ids.
    pub issuers: Vec<String>,
    /// Maintain the list read table.
    pub list: bool,
    /// Server options.
    pub server: ServerOptions,
}

impl OrderConfig {
    /// Validates parsed flags.
    pub fn from_args(args: &Args) -> Result<Self, ConfigError> {
        let database_url = args.required("database-url")?.to_owned();
        if !(database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://")
            || database_url.starts_with("sqlite:"))
        {
            return Err(args.error(
                "database-url",
                "must start with postgres://, postgresql:// or sqlite:",
            ));
        }
        let pg_schema = args.required("pg-schema")?.to_owned();
        let nats_url = args.value("nats-url").map(str::to_owned);
        if let Some(url) = &nats_url
            && !(url.starts_with("nats://") || url.starts_with("tls://") || url.contains(':'))
        {
            return Err(args.error(
                "nats-url",
                "must be a NATS URL such as nats://127.0.0.1:4222",
            ));
        }
        let relay = args.switch("relay")?;
        let listen = args
            .parsed::<SocketAddr>("listen")?
            .ok_or_else(|| args.error("listen", "is required"))?;
        let issuers: Vec<String> = args.values("issuer").to_vec();
        if issuers.is_empty() {
            return Err(args.error("issuer", "name at least one issuer, e.g. builtin"));
        }
        let list = args.switch("list")?;
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
            nats_url,
            relay,
            listen,
            issuers,
            list,
            server: ServerOptions {
                max_request_bytes,
                drain_timeout,
            },
        })
    }
}
