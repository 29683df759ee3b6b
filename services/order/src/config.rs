//! Configuration of the `certledger-order` binary: flags or environment variables,
//! validated at start (errors name the key).

use std::net::SocketAddr;

use certledger_domain::certificate::{Backoff, RenewalPolicy, RenewalWindow, validate_thresholds};
use certledger_runtime::config::{Args, ConfigError, Flag};
use certledger_runtime::server::{DEFAULT_MAX_REQUEST_BYTES, ServerOptions};
use chrono::TimeDelta;

use crate::RenewalSetup;
use crate::renewal::RenewalSettings;

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
        "NATS server, where this process relays the log (--relay); the certificate list tails the log either way",
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
    Flag::repeated(
        "renewal-window",
        "CERTLEDGER_RENEWAL_WINDOWS",
        "when renewal opens: DAYSd before expiry (e.g. 30d) or a share of the lifetime (e.g. 2/3); ISSUER=… for one issuer",
    )
    .default("30d"),
    Flag::value(
        "expiry-thresholds",
        "CERTLEDGER_EXPIRY_THRESHOLDS",
        "days before expiry at which ExpiryApproaching is announced (comma-separated)",
    )
    .default("30,14,7,1"),
    Flag::value(
        "renewal-retry",
        "CERTLEDGER_RENEWAL_RETRY",
        "wait after a failed auto-renewal, doubling with each attempt up to 12h or the first wait, whichever is longer (e.g. 10m)",
    )
    .default("10m"),
    Flag::value(
        "reuse-csr",
        "CERTLEDGER_REUSE_CSR",
        "renew CSR-based certificates with their old CSR, i.e. the same key (true/false)",
    )
    .default("false"),
    Flag::value(
        "scheduler",
        "CERTLEDGER_SCHEDULER",
        "how often this replica looks for expiry and auto-renewals that are due (e.g. 30s), or off",
    )
    .default("30s"),
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
    certledger_runtime::tls::IDENTITY_CA_CERT_FLAG,
    certledger_runtime::tls::IDENTITY_CA_KEY_FLAG,
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
    /// Who may call (API tokens), and the bootstrap token.
    pub auth: certledger_runtime::auth::AuthSettings,
    /// Renewal policies and the scheduler.
    pub renewal: RenewalSetup,
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
        let renewal = renewal_setup(args, list)?;
        Ok(Self {
            database_url,
            pg_schema,
            nats_url,
            relay,
            listen,
            issuers,
            list,
            renewal,
            auth: certledger_runtime::auth::AuthSettings::from_args(args)?,
            server: ServerOptions {
                max_request_bytes,
                drain_timeout,
                auth: None,
            },
        })
    }
}

/// The renewal flags (`list`: whether the index the scheduler needs is kept).
pub fn renewal_setup(args: &Args, list: bool) -> Result<RenewalSetup, ConfigError> {
    let raw = args.required("expiry-thresholds")?;
    let thresholds = raw
        .split(',')
        .map(|t| t.trim().parse::<u32>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| {
            args.error(
                "expiry-thresholds",
                format!("{raw:?} is not a comma-separated list of days, e.g. 30,14,7,1"),
            )
        })?;
    validate_thresholds("expiry-thresholds", &thresholds)
        .map_err(|e| args.error("expiry-thresholds", e.message()))?;
    let first = args
        .duration("renewal-retry")?
        .and_then(|d| TimeDelta::from_std(d).ok())
        .filter(|d| *d > TimeDelta::zero())
        .ok_or_else(|| args.error("renewal-retry", "must be a positive duration, e.g. 10m"))?;
    let backoff = Backoff {
        first,
        max: first.max(TimeDelta::hours(12)),
    };
    let policy = |window| RenewalPolicy {
        window,
        thresholds: thresholds.clone(),
        backoff,
    };
    let mut settings = RenewalSettings {
        default_policy: policy(RenewalWindow::default()),
        reuse_csr: args.switch("reuse-csr")?,
        ..RenewalSettings::default()
    };
    for raw in args.values("renewal-window") {
        let (issuer, window) = match raw.split_once('=') {
            Some((issuer, window)) => (Some(issuer.trim()), window),
            None => (None, raw.as_str()),
        };
        let window = parse_window(window).ok_or_else(|| {
            args.error(
                "renewal-window",
                format!("{raw:?}: expected DAYSd (e.g. 30d) or a share such as 2/3, optionally after ISSUER="),
            )
        })?;
        window
            .validate("renewal-window")
            .map_err(|e| args.error("renewal-window", format!("{raw:?}: {}", e.message())))?;
        match issuer {
            Some("") => {
                return Err(args.error("renewal-window", format!("{raw:?}: the issuer is empty")));
            }
            Some(issuer) => {
                settings
                    .per_issuer
                    .insert(issuer.to_owned(), policy(window));
            }
            None => settings.default_policy = policy(window),
        }
    }
    let raw = args.required("scheduler")?;
    let scheduler_interval = if raw == "off" {
        None
    } else {
        let interval = args
            .duration("scheduler")?
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                args.error("scheduler", "must be a positive duration (e.g. 30s) or off")
            })?;
        if !list {
            return Err(args.error(
                "scheduler",
                "needs the certificate index: set list to true, or the scheduler to off",
            ));
        }
        Some(interval)
    };
    Ok(RenewalSetup {
        settings,
        scheduler_interval,
    })
}

/// `30d` (days before expiry) or `2/3` (share of the lifetime).
fn parse_window(raw: &str) -> Option<RenewalWindow> {
    let raw = raw.trim();
    if let Some(days) = raw.strip_suffix('d') {
        return days.parse().ok().map(RenewalWindow::DaysBeforeExpiry);
    }
    let (numerator, denominator) = raw.split_once('/')?;
    Some(RenewalWindow::ShareOfLifetime {
        numerator: numerator.trim().parse().ok()?,
        denominator: denominator.trim().parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse() {
        assert_eq!(
            parse_window("30d"),
            Some(RenewalWindow::DaysBeforeExpiry(30))
        );
        assert_eq!(
            parse_window("2/3"),
            Some(RenewalWindow::ShareOfLifetime {
                numerator: 2,
                denominator: 3
            })
        );
        assert_eq!(parse_window("thirty"), None);
        assert_eq!(parse_window("2/"), None);
    }
}
