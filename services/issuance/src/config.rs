//! Configuration of the `certledger-issuance` binary: flags or environment variables,
//! validated at start (errors name the key; secrets are never printed).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use certledger_ca::{CertificateUrls, IssuancePolicy};
use certledger_runtime::config::{Args, ConfigError, Flag};
use certledger_runtime::server::{DEFAULT_MAX_REQUEST_BYTES, ServerOptions};

use crate::ca::{CaImport, CaSettings};
use crate::http01::Http01Settings;
use crate::issuer::{IssuerSettings, RetryPolicy};

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
    .default("127.0.0.1:50052"),
    Flag::value(
        "data-dir",
        "CERTLEDGER_DATA_DIR",
        "directory of the CA certificates (ca/) and the key store (keys/)",
    ),
    certledger_runtime::keystore::KEY_STORE_FLAG,
    certledger_runtime::keystore::KEK_FILE_FLAG,
    certledger_runtime::keystore::KEK_FLAG,
    Flag::value(
        "import-root-cert",
        "CERTLEDGER_IMPORT_ROOT_CERT",
        "at first start, import this root certificate (PEM) instead of creating a CA; with --import-intermediate-cert and --import-intermediate-key",
    ),
    Flag::value(
        "import-intermediate-cert",
        "CERTLEDGER_IMPORT_INTERMEDIATE_CERT",
        "the intermediate (issuing) certificate to import (PEM, signed by the root)",
    ),
    Flag::value(
        "import-intermediate-key",
        "CERTLEDGER_IMPORT_INTERMEDIATE_KEY",
        "the intermediate's private key to import (PEM); stored in the key store",
    ),
    Flag::value(
        "issuer-id",
        "CERTLEDGER_ISSUER_ID",
        "the issuer id orders name",
    )
    .default("builtin"),
    Flag::value(
        "revocation-base-url",
        "CERTLEDGER_REVOCATION_BASE_URL",
        "base URL of the revocation service: CRL <base>/crl/<issuer>.crl, OCSP <base>/ocsp",
    ),
    Flag::value(
        "crl-url",
        "CERTLEDGER_CRL_URL",
        "CRL distribution point URL (overrides the base URL)",
    ),
    Flag::value(
        "ocsp-url",
        "CERTLEDGER_OCSP_URL",
        "OCSP responder URL (overrides the base URL)",
    ),
    Flag::value(
        "default-validity-days",
        "CERTLEDGER_DEFAULT_VALIDITY_DAYS",
        "validity when the order asks for none",
    ),
    Flag::value(
        "max-validity-days",
        "CERTLEDGER_MAX_VALIDITY_DAYS",
        "longest validity this issuer grants",
    ),
    Flag::switch(
        "publicly-trusted-style",
        "CERTLEDGER_PUBLICLY_TRUSTED_STYLE",
        "cap validity by the CA/Browser Forum schedule of the issuance date",
    ),
    Flag::switch(
        "allow-no-validation",
        "CERTLEDGER_ALLOW_NO_VALIDATION",
        "issue orders whose validation method is NONE",
    ),
    Flag::value(
        "http01-port",
        "CERTLEDGER_HTTP01_PORT",
        "port HTTP-01 challenges are fetched from",
    )
    .default("80"),
    Flag::repeated(
        "http01-resolve",
        "CERTLEDGER_HTTP01_RESOLVE",
        "name=ip:port (or *=ip:port): fetch that name's challenges from this address",
    ),
    Flag::value(
        "http01-timeout",
        "CERTLEDGER_HTTP01_TIMEOUT",
        "timeout of one HTTP-01 fetch",
    )
    .default("10s"),
    Flag::value(
        "validation-retry-delay",
        "CERTLEDGER_VALIDATION_RETRY_DELAY",
        "delay after the first failed HTTP-01 attempt (doubling)",
    )
    .default("5s"),
    Flag::value(
        "validation-max-attempts",
        "CERTLEDGER_VALIDATION_MAX_ATTEMPTS",
        "HTTP-01 attempts before the order fails",
    )
    .default("10"),
    Flag::value(
        "stale-intent-after",
        "CERTLEDGER_STALE_INTENT_AFTER",
        "an issuance intent older than this without a certificate is abandoned and signed again",
    )
    .default("30s"),
    Flag::value(
        "recover",
        "CERTLEDGER_RECOVER",
        "scan the log at start for certificates on their way to issuance (true/false)",
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
pub struct IssuanceConfig {
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
    /// The CA.
    pub ca: CaSettings,
    /// An existing CA to import at first start, instead of creating one.
    pub import: Option<CaImport>,
    /// Issuer behaviour.
    pub issuer: IssuerSettings,
    /// Recovery scan at start.
    pub recover: bool,
    /// Server options.
    pub server: ServerOptions,
    /// Who may call (API tokens), and the bootstrap token.
    pub auth: certledger_runtime::auth::AuthSettings,
}

impl std::fmt::Debug for IssuanceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuanceConfig")
            .field("pg_schema", &self.pg_schema)
            .field("nats", &self.nats_url.is_some())
            .field("listen", &self.listen)
            .field("ca", &self.ca)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

fn url_ok(url: &str) -> bool {
    (url.starts_with("http://") || url.starts_with("https://"))
        && url.bytes().all(|b| b.is_ascii_graphic())
}

impl IssuanceConfig {
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
        let data_dir = PathBuf::from(args.required("data-dir")?);

        let keys = certledger_runtime::keystore::key_store_settings(args)?;

        let import = match (
            args.value("import-root-cert"),
            args.value("import-intermediate-cert"),
            args.value("import-intermediate-key"),
        ) {
            (None, None, None) => None,
            (Some(root), Some(intermediate), Some(key)) => Some(CaImport {
                root_cert: PathBuf::from(root),
                intermediate_cert: PathBuf::from(intermediate),
                intermediate_key: PathBuf::from(key),
            }),
            _ => {
                return Err(args.error(
                    "import-root-cert",
                    "importing a CA needs all three of --import-root-cert, --import-intermediate-cert and --import-intermediate-key",
                ));
            }
        };

        let issuer_id = args.required("issuer-id")?.to_owned();
        if issuer_id.len() > 64
            || !issuer_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(args.error(
                "issuer-id",
                "must be 1 to 64 characters of letters, digits, '-' and '_'",
            ));
        }

        let base = args
            .value("revocation-base-url")
            .map(|b| b.trim_end_matches('/').to_owned());
        if let Some(b) = &base
            && !url_ok(b)
        {
            return Err(args.error("revocation-base-url", "must be an http:// or https:// URL"));
        }
        let crl = args
            .value("crl-url")
            .map(str::to_owned)
            .or_else(|| base.as_ref().map(|b| format!("{b}/crl/{issuer_id}.crl")));
        let ocsp = args
            .value("ocsp-url")
            .map(str::to_owned)
            .or_else(|| base.as_ref().map(|b| format!("{b}/ocsp")));
        for (name, url) in [("crl-url", &crl), ("ocsp-url", &ocsp)] {
            if let Some(u) = url
                && !url_ok(u)
            {
                return Err(args.error(name, "must be an http:// or https:// URL"));
            }
        }
        let urls = CertificateUrls {
            crl_distribution_point: crl,
            ocsp,
            ca_issuers: None,
        };

        let publicly_trusted = args.switch("publicly-trusted-style")?;
        let mut policy = if publicly_trusted {
            IssuancePolicy::publicly_trusted()
        } else {
            IssuancePolicy::private_ca()
        };
        if let Some(days) = args.parsed::<u32>("max-validity-days")? {
            policy.max_validity_days = days;
            policy.default_validity_days = policy.default_validity_days.min(days);
        }
        if let Some(days) = args.parsed::<u32>("default-validity-days")? {
            policy.default_validity_days = days;
        }
        policy
            .validate()
            .map_err(|e| args.error("max-validity-days", e))?;

        let http01_port = args.parsed::<u16>("http01-port")?.unwrap_or(80);
        let mut http01 = Http01Settings {
            port: http01_port,
            resolve: HashMap::new(),
            timeout: args
                .duration("http01-timeout")?
                .unwrap_or(Duration::from_secs(10)),
        };
        for entry in args.values("http01-resolve") {
            let (name, addr) = http01
                .parse_override(entry)
                .map_err(|e| args.error("http01-resolve", e))?;
            http01.resolve.insert(name, addr);
        }
        let max_attempts = args.parsed::<u32>("validation-max-attempts")?.unwrap_or(10);
        if max_attempts == 0 {
            return Err(args.error("validation-max-attempts", "must be at least 1"));
        }
        let first_delay = args
            .duration("validation-retry-delay")?
            .unwrap_or(Duration::from_secs(5));
        let issuer = IssuerSettings {
            issuer_id,
            allow_no_validation: args.switch("allow-no-validation")?,
            http01,
            validation_retry: RetryPolicy {
                first_delay,
                max_delay: first_delay.max(Duration::from_secs(300)),
                max_attempts,
            },
            reissue_delay: Duration::from_secs(1),
            stale_intent_after: args
                .duration("stale-intent-after")?
                .unwrap_or(Duration::from_secs(30)),
            ..IssuerSettings::default()
        };
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
            ca: CaSettings {
                data_dir,
                policy,
                urls,
                keys,
            },
            import,
            issuer,
            recover: args.switch("recover")?,
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
