//! Configuration of the `certledger-deployment` binary: flags or environment variables,
//! validated at start (errors name the key).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use certledger_ca::KeyStoreSettings;
use certledger_runtime::config::{Args, ConfigError, Flag};
use certledger_runtime::server::{DEFAULT_MAX_REQUEST_BYTES, ServerOptions};

use crate::service::deployer::DeployerSettings;

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
        "NATS server; absent: the reactions tail the SQL log (embedded mode)",
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
    .default("127.0.0.1:50053"),
    Flag::value(
        "key-dir",
        "CERTLEDGER_KEY_DIR",
        "the issuance service's key store directory (<issuance data-dir>/keys): generated certificate keys are read from it",
    ),
    certledger_runtime::keystore::KEY_STORE_FLAG,
    certledger_runtime::keystore::KEK_FILE_FLAG,
    certledger_runtime::keystore::KEK_FLAG,
    Flag::value(
        "secrets-dir",
        "CERTLEDGER_DEPLOYMENT_SECRETS_DIR",
        "directory of webhook secrets (files 0600); default: deployment-secrets next to --key-dir",
    ),
    Flag::value(
        "drift-interval",
        "CERTLEDGER_DRIFT_INTERVAL",
        "how often active nginx deployments are probed for drift (e.g. 5m; 0 turns probing off)",
    )
    .default("5m"),
    Flag::value(
        "reactions",
        "CERTLEDGER_DEPLOYMENT_REACTIONS",
        "react to certificate events: renewal successors replace predecessors (true/false)",
    )
    .default("true"),
    Flag::value(
        "verify-deadline",
        "CERTLEDGER_VERIFY_DEADLINE",
        "how long after a reload the target must serve the new certificate",
    )
    .default("30s"),
    Flag::value(
        "reload-timeout",
        "CERTLEDGER_RELOAD_TIMEOUT",
        "how long a reload command may run",
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
];

/// The validated configuration.
#[derive(Clone)]
pub struct DeploymentConfig {
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
    /// The key store directory.
    pub key_dir: PathBuf,
    /// How the key store is opened (backend, key-encryption key).
    pub keys: KeyStoreSettings,
    /// The webhook secrets directory.
    pub secrets_dir: PathBuf,
    /// Drift probe interval (`None`: off).
    pub drift_interval: Option<Duration>,
    /// Run the reactions consumer.
    pub reactions: bool,
    /// Install timings.
    pub deployer: DeployerSettings,
    /// Server options.
    pub server: ServerOptions,
    /// Who may call (API tokens), and the bootstrap token.
    pub auth: certledger_runtime::auth::AuthSettings,
}

impl std::fmt::Debug for DeploymentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeploymentConfig")
            .field("listen", &self.listen)
            .field("pg_schema", &self.pg_schema)
            .field("nats_url", &self.nats_url)
            .field("key_dir", &self.key_dir)
            .field("keys", &self.keys)
            .field("secrets_dir", &self.secrets_dir)
            .field("drift_interval", &self.drift_interval)
            .finish_non_exhaustive()
    }
}

impl DeploymentConfig {
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
        let key_dir = PathBuf::from(args.required("key-dir")?);
        let keys = certledger_runtime::keystore::key_store_settings(args)?;
        let secrets_dir = match args.value("secrets-dir") {
            Some(dir) => PathBuf::from(dir),
            None => key_dir
                .parent()
                .map(|p| p.join("deployment-secrets"))
                .ok_or_else(|| {
                    args.error("secrets-dir", "is required when --key-dir has no parent")
                })?,
        };
        let drift_interval = args.duration("drift-interval")?.filter(|d| !d.is_zero());
        let reactions = args.switch("reactions")?;
        let defaults = DeployerSettings::default();
        let deployer = DeployerSettings {
            verify_deadline: args
                .duration("verify-deadline")?
                .unwrap_or(defaults.verify_deadline),
            reload_timeout: args
                .duration("reload-timeout")?
                .unwrap_or(defaults.reload_timeout),
            ..defaults
        };
        let max_request_bytes = args
            .parsed::<usize>("max-request-bytes")?
            .unwrap_or(DEFAULT_MAX_REQUEST_BYTES);
        if max_request_bytes < 1024 {
            return Err(args.error("max-request-bytes", "must be at least 1024"));
        }
        let drain_timeout = args
            .duration("drain-timeout")?
            .unwrap_or(Duration::from_secs(10));
        Ok(Self {
            database_url,
            pg_schema,
            nats_url,
            relay,
            listen,
            key_dir,
            keys,
            secrets_dir,
            drift_interval,
            reactions,
            deployer,
            auth: certledger_runtime::auth::AuthSettings::from_args(args)?,
            server: ServerOptions {
                max_request_bytes,
                drain_timeout,
                auth: None,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use certledger_runtime::config::{Parsed, parse};

    fn config(argv: &[&str]) -> Result<DeploymentConfig, ConfigError> {
        let argv: Vec<String> = argv.iter().map(|s| (*s).to_owned()).collect();
        match parse("certledger-deployment", "test", FLAGS, argv, |_| None)? {
            Parsed::Args(args) => DeploymentConfig::from_args(&args),
            Parsed::Help(_) => panic!("help"),
        }
    }

    #[test]
    fn flags_are_checked() {
        let c = config(&[
            "--database-url",
            "sqlite::memory:",
            "--key-dir",
            "/var/lib/certledger/keys",
        ])
        .unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:50053");
        assert_eq!(
            c.secrets_dir,
            PathBuf::from("/var/lib/certledger/deployment-secrets")
        );
        assert_eq!(c.drift_interval, Some(Duration::from_secs(300)));
        assert_eq!(c.keys.kind, certledger_ca::KeyStoreKind::Files);
        let e = config(&[
            "--database-url",
            "sqlite::memory:",
            "--key-dir",
            "/k",
            "--key-store",
            "redis",
        ])
        .unwrap_err();
        assert!(e.to_string().contains("key-store"), "{e}");
        assert!(e.to_string().contains("sqlite, files"), "{e}");
        let c = config(&[
            "--database-url",
            "sqlite::memory:",
            "--key-dir",
            "/k",
            "--drift-interval",
            "0",
        ])
        .unwrap();
        assert_eq!(c.drift_interval, None);
        let e = config(&["--database-url", "mysql://x", "--key-dir", "/k"]).unwrap_err();
        assert!(e.to_string().contains("database-url"), "{e}");
        let e = config(&["--database-url", "sqlite::memory:"]).unwrap_err();
        assert!(e.to_string().contains("key-dir"), "{e}");
        let e = config(&[
            "--database-url",
            "sqlite::memory:",
            "--key-dir",
            "/k",
            "--kek",
            "abc",
        ])
        .unwrap_err();
        assert!(e.to_string().contains("kek"), "{e}");
        assert!(!format!("{c:?}").contains("abc"));
    }
}
