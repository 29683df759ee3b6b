//! Configuration of the `certledger-revocation` binary: flags or environment variables,
//! validated at start (errors name the key; secrets are never printed).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use certledger_ca::KeyStoreSettings;
use certledger_runtime::config::{Args, ConfigError, Flag};
use certledger_runtime::server::{DEFAULT_MAX_REQUEST_BYTES, ServerOptions};

use crate::crl::{CrlConfig, MAX_CRL_VALIDITY, MIN_CRL_VALIDITY};
use crate::ocsp::OcspConfig;
use crate::publisher::PublisherSettings;

/// The binary's flags.
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
        "nats-url",
        "CERTLEDGER_NATS_URL",
        "NATS server; absent: the consumer tails the SQL log (embedded mode)",
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
    .default("127.0.0.1:50054"),
    Flag::value(
        "http-listen",
        "CERTLEDGER_HTTP_LISTEN",
        "HTTP listen address of /crl/<issuer>.crl and /ocsp (the revocation base URL certificates name)",
    )
    .default("127.0.0.1:8080"),
    Flag::value(
        "data-dir",
        "CERTLEDGER_DATA_DIR",
        "the issuance service's data directory: CA certificates (ca/) and key store (keys/); only read",
    ),
    certledger_runtime::keystore::KEY_STORE_FLAG,
    certledger_runtime::keystore::KEK_FILE_FLAG,
    certledger_runtime::keystore::KEK_FLAG,
    Flag::value(
        "issuer-id",
        "CERTLEDGER_ISSUER_ID",
        "the issuer id (CRL path /crl/<issuer>.crl)",
    )
    .default("builtin"),
    Flag::value(
        "crl-validity",
        "CERTLEDGER_CRL_VALIDITY",
        "nextUpdate - thisUpdate of CRLs (1m to 240h)",
    )
    .default("168h"),
    Flag::value(
        "crl-refresh",
        "CERTLEDGER_CRL_REFRESH",
        "a new CRL is signed this long after the last one (shorter than --crl-validity)",
    )
    .default("24h"),
    Flag::value(
        "ocsp-validity",
        "CERTLEDGER_OCSP_VALIDITY",
        "nextUpdate - thisUpdate of OCSP answers (1m to 240h)",
    )
    .default("12h"),
    Flag::value(
        "max-request-bytes",
        "CERTLEDGER_MAX_REQUEST_BYTES",
        "largest gRPC request message accepted",
    )
    .default("1048576"),
    Flag::value(
        "drain-timeout",
        "CERTLEDGER_DRAIN_TIMEOUT",
        "time running calls get at shutdown",
    )
    .default("10s"),
    certledger_runtime::auth::NO_AUTH_FLAG,
    certledger_runtime::auth::BOOTSTRAP_TOKEN_FLAG,
    certledger_runtime::tls::TLS_CERT_FLAG,
    certledger_runtime::tls::TLS_KEY_FLAG,
    certledger_runtime::tls::TLS_CLIENT_CA_FLAG,
];

/// The validated configuration.
pub struct RevocationConfig {
    /// Event log URL.
    pub database_url: String,
    /// PostgreSQL schema.
    pub pg_schema: String,
    /// NATS URL, if any.
    pub nats_url: Option<String>,
    /// Run a relay (with NATS).
    pub relay: bool,
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// HTTP listen address.
    pub http_listen: SocketAddr,
    /// The CA's data directory.
    pub data_dir: PathBuf,
    /// How the key store is opened (backend, key-encryption key).
    pub keys: KeyStoreSettings,
    /// The issuer id.
    pub issuer_id: String,
    /// CRL validity and refresh.
    pub publisher: PublisherSettings,
    /// OCSP answers.
    pub ocsp: OcspConfig,
    /// Server options.
    pub server: ServerOptions,
    /// Who may call (API tokens), and the bootstrap token.
    pub auth: certledger_runtime::auth::AuthSettings,
}

impl std::fmt::Debug for RevocationConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationConfig")
            .field("pg_schema", &self.pg_schema)
            .field("nats", &self.nats_url.is_some())
            .field("listen", &self.listen)
            .field("http_listen", &self.http_listen)
            .field("data_dir", &self.data_dir)
            .field("keys", &self.keys)
            .field("issuer_id", &self.issuer_id)
            .field("publisher", &self.publisher)
            .finish_non_exhaustive()
    }
}

fn time_duration(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

impl RevocationConfig {
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
        let relay = args.switch("relay")?;
        let listen = args
            .parsed::<SocketAddr>("listen")?
            .ok_or_else(|| args.error("listen", "is required"))?;
        let http_listen = args
            .parsed::<SocketAddr>("http-listen")?
            .ok_or_else(|| args.error("http-listen", "is required"))?;
        let data_dir = PathBuf::from(args.required("data-dir")?);
        let keys = certledger_runtime::keystore::key_store_settings(args)?;
        let issuer_id = args.required("issuer-id")?.to_owned();
        if issuer_id.is_empty()
            || issuer_id.len() > 64
            || !issuer_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(args.error(
                "issuer-id",
                "must be 1 to 64 characters of letters, digits, '-' and '_'",
            ));
        }
        let validity = args
            .duration("crl-validity")?
            .unwrap_or(Duration::from_secs(7 * 86400));
        let crl = CrlConfig {
            validity: time_duration(validity),
        };
        crl.validate().map_err(|_| {
            args.error(
                "crl-validity",
                format!(
                    "must be between {MIN_CRL_VALIDITY} and {MAX_CRL_VALIDITY} (CA/Browser Forum: at most 10 days)"
                ),
            )
        })?;
        let refresh = args
            .duration("crl-refresh")?
            .unwrap_or(Duration::from_secs(86400));
        if refresh.is_zero() || refresh >= validity {
            return Err(args.error(
                "crl-refresh",
                "must be more than zero and shorter than --crl-validity",
            ));
        }
        let ocsp = OcspConfig {
            validity: time_duration(
                args.duration("ocsp-validity")?
                    .unwrap_or(Duration::from_secs(12 * 3600)),
            ),
            ..OcspConfig::default()
        };
        ocsp.validate()
            .map_err(|e| args.error("ocsp-validity", e))?;
        let max_request_bytes = args
            .parsed::<usize>("max-request-bytes")?
            .unwrap_or(DEFAULT_MAX_REQUEST_BYTES);
        if max_request_bytes < 1024 {
            return Err(args.error("max-request-bytes", "must be at least 1024"));
        }
        Ok(Self {
            database_url,
            pg_schema,
            nats_url,
            relay,
            listen,
            http_listen,
            data_dir,
            keys,
            issuer_id,
            publisher: PublisherSettings { crl, refresh },
            ocsp,
            auth: certledger_runtime::auth::AuthSettings::from_args(args)?,
            server: ServerOptions {
                max_request_bytes,
                drain_timeout: args
                    .duration("drain-timeout")?
                    .unwrap_or(Duration::from_secs(10)),
                auth: None,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use certledger_runtime::config::{Parsed, parse};

    fn config(argv: &[&str]) -> Result<RevocationConfig, ConfigError> {
        let argv = argv.iter().map(|a| (*a).to_owned());
        match parse("certledger-revocation", "test", FLAGS, argv, |_| None)? {
            Parsed::Args(args) => RevocationConfig::from_args(&args),
            Parsed::Help(_) => panic!("help"),
        }
    }

    const BASE: &[&str] = &["--database-url", "sqlite::memory:", "--data-dir", "/tmp/x"];

    #[test]
    fn defaults() {
        let c = config(BASE).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:50054");
        assert_eq!(c.http_listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.issuer_id, "builtin");
        assert_eq!(c.publisher.crl.validity, time::Duration::days(7));
        assert_eq!(c.publisher.refresh, Duration::from_secs(86400));
        assert_eq!(c.ocsp.validity, time::Duration::hours(12));
        assert!(c.keys.kek.is_none());
    }

    #[test]
    fn bad_values_name_the_flag() {
        let with = |extra: &[&str]| {
            let mut argv = BASE.to_vec();
            argv.extend_from_slice(extra);
            config(&argv)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(with(&["--crl-validity", "241h"]).contains("crl-validity"));
        assert!(with(&["--crl-refresh", "168h"]).contains("crl-refresh"));
        assert!(with(&["--crl-validity", "2h", "--crl-refresh", "3h"]).contains("crl-refresh"));
        assert!(with(&["--issuer-id", "a/b"]).contains("issuer-id"));
        assert!(with(&["--ocsp-validity", "10s"]).contains("ocsp-validity"));
        assert!(with(&["--database-url", "mysql://x"]).contains("database-url"));
        let c = config(&[
            "--database-url",
            "sqlite::memory:",
            "--data-dir",
            "/d",
            "--crl-validity",
            "1h",
            "--crl-refresh",
            "10m",
        ])
        .unwrap();
        assert_eq!(c.publisher.crl.validity, time::Duration::hours(1));
        assert_eq!(c.publisher.refresh, Duration::from_secs(600));
        let missing = config(&["--database-url", "sqlite::memory:"])
            .err()
            .unwrap();
        assert!(missing.to_string().contains("data-dir"), "{missing}");
    }
}
