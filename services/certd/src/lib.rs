//! `certd`: every certledger service in one process.
//!
//! * With no configuration: the event log in embedded SQLite (`<data-dir>/certledger.db`),
//!   the read models beside it (`<data-dir>/projections.db`), the built-in CA created at
//!   first start in `<data-dir>/ca` and `<data-dir>/keys`, consumers tailing the SQL log.
//! * With `--database-url postgres://…` and `--nats-url nats://…`: one replica of the
//!   distributed system (the CA directory must then be the same on every replica, e.g. a
//!   shared volume, or each replica runs with its own issuer id).
//!
//! The order, issuance, deployment, revocation and query services share one gRPC address
//! (one router: every service, the standard health service and server reflection); the
//! projections dashboard, JSON API and `/metrics` are served over HTTP on a second address,
//! and the revocation service's CRLs and OCSP responder on a third
//! (`--revocation-http-listen`; certificates issued by an embedded certd name it).
//!
//! With `--tls`, gRPC is served over TLS: at first start certd creates its identity CA
//! (`<data-dir>/tls/ca.pem`, key `ca-key.pem` mode 0600) and a server certificate for
//! localhost, 127.0.0.1 and the `--tls-name`s, and reuses them afterwards; client
//! certificates that CA issues (`TokenService.IssueClientCertificate`, `certctl tokens
//! client-cert`) authenticate like tokens. Without `--tls` it serves plaintext (the
//! default for the loopback laptop case).
//!
//! Deployment reads the keys of generated certificates from the issuance service's key
//! store (`<data-dir>/keys`, shared in the process) and keeps webhook secrets in
//! `--secrets-dir` (default `<data-dir>/deployment-secrets`).
//!
//! Every option of the issuance service is accepted too, and the order service's renewal
//! options ([`ORDER_FLAGS`]; see `certd --help`); the ones below are certd's own or have a
//! different default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use certledger_deployment::{DeployerSettings, DeploymentParts, DeploymentSetup, SecretStore};
use certledger_eventlog::EventLog;
use certledger_eventstream::consumer::EventSource;
use certledger_issuance::ca::open_ca;
use certledger_issuance::config::IssuanceConfig;
use certledger_issuance::{IssuanceParts, IssuanceSetup};
use certledger_order::{CertificateList, OrderParts, OrderSetup, RenewalSetup};
use certledger_projections::{
    HttpConfig, HttpServer, ProjectionStore, Projector, ProjectorConfig, QueryService, StoreOptions,
};
use certledger_proto::query::v1::certificate_query_service_server::CertificateQueryServiceServer;
use certledger_revocation::{
    IssuerSigner, OcspConfig, PublisherSettings, RevocationParts, RevocationSetup,
};
use certledger_runtime::auth::{AuthSettings, TOKEN_SERVICE_NAME, TokenApi};
use certledger_runtime::clock::SharedClock;
use certledger_runtime::config::{Args, ConfigError, Flag, Request, parse_request};
use certledger_runtime::events::{open_log, open_source, read_model_source};
use certledger_runtime::server::{GrpcServer, RunningService, ServeError};
use certledger_runtime::tls::{TlsSettings, files as tls_files, prepare_identity_dir};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

/// The file in the data directory that receives the first API token (every role); certctl
/// reads it from `./certledger-data` by default.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// The default data directory (relative to the working directory).
pub const DEFAULT_DATA_DIR: &str = "./certledger-data";

/// The default gRPC address; certctl's default `--server` is this address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";

/// The default address of the dashboard, JSON API and `/metrics`.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:8080";

/// The default address of the revocation service's CRLs and OCSP responder.
pub const DEFAULT_REVOCATION_HTTP_LISTEN: &str = "127.0.0.1:8081";

/// The webhook secrets directory of the deployment service, under the data directory.
pub const SECRETS_SUBDIR: &str = "deployment-secrets";

/// The identity CA and certd's own server certificate, under the data directory.
pub const TLS_SUBDIR: &str = "tls";

/// certd's own options; every other option of the issuance service is accepted too.
pub const OWN_FLAGS: &[Flag] = &[
    Flag::value(
        "data-dir",
        "CERTLEDGER_DATA_DIR",
        "directory of the embedded databases, the CA (ca/) and the key store (keys/)",
    )
    .default(DEFAULT_DATA_DIR),
    // One process: its keys are stored in one database, many in one transaction.
    certledger_runtime::keystore::KEY_STORE_FLAG.default("sqlite"),
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
        "gRPC address of every service (order, issuance, deployment, revocation, query), with health and reflection (port 0: any free port)",
    )
    .default(DEFAULT_LISTEN),
    Flag::value(
        "http-listen",
        "CERTLEDGER_HTTP_LISTEN",
        "address of the dashboard, JSON API and /metrics (port 0: any free port; \"off\": none)",
    )
    .default(DEFAULT_HTTP_LISTEN),
    Flag::value(
        "revocation-http-listen",
        "CERTLEDGER_REVOCATION_HTTP_LISTEN",
        "address of the CRLs (/crl/<issuer>.crl) and the OCSP responder (/ocsp); embedded, certificates name it unless --revocation-base-url says otherwise (port 0: any free port)",
    )
    .default(DEFAULT_REVOCATION_HTTP_LISTEN),
    Flag::value(
        "secrets-dir",
        "CERTLEDGER_DEPLOYMENT_SECRETS_DIR",
        "directory of the deployment service's webhook secrets (files 0600; default: <data-dir>/deployment-secrets); certificate keys are read from <data-dir>/keys",
    ),
    Flag::value(
        "drift-interval",
        "CERTLEDGER_DRIFT_INTERVAL",
        "how often active nginx deployments are probed for drift (e.g. 5m; 0 turns probing off)",
    )
    .default("5m"),
    Flag::switch(
        "tls",
        "CERTLEDGER_TLS",
        "serve gRPC over TLS with a server certificate from certd's identity CA (<data-dir>/tls/, created at first start) and accept client certificates that CA issues",
    ),
    Flag::repeated(
        "tls-name",
        "CERTLEDGER_TLS_NAME",
        "with --tls: a DNS name or IP address for certd's server certificate besides localhost and 127.0.0.1",
    ),
    certledger_runtime::tls::IDENTITY_CA_CERT_FLAG,
    certledger_runtime::tls::IDENTITY_CA_KEY_FLAG,
    Flag::switch(
        "allow-no-validation",
        "CERTLEDGER_ALLOW_NO_VALIDATION",
        "issue orders whose validation method is NONE (default: on with the embedded database, off otherwise)",
    ),
];

/// The order service's options certd accepts too: renewal windows, expiry thresholds
/// and the auto-renew scheduler.
pub const ORDER_FLAGS: &[&str] = &[
    "renewal-window",
    "expiry-thresholds",
    "renewal-retry",
    "reuse-csr",
    "scheduler",
];

/// Every option certd accepts: [`OWN_FLAGS`], the issuance service's others, then the
/// order service's [`ORDER_FLAGS`].
pub fn flags() -> Vec<Flag> {
    let mut flags = OWN_FLAGS.to_vec();
    let order = certledger_order::config::FLAGS
        .iter()
        .filter(|f| ORDER_FLAGS.contains(&f.name));
    for flag in certledger_issuance::config::FLAGS.iter().chain(order) {
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
    /// The address of the CRLs and the OCSP responder.
    pub revocation_http_listen: SocketAddr,
    /// The deployment service's webhook secrets directory.
    pub secrets_dir: PathBuf,
    /// How often active nginx deployments are probed for drift (`None`: never).
    pub drift_interval: Option<Duration>,
    /// Authentication (API tokens; the first one written to `<data-dir>/admin.token`).
    pub auth: AuthSettings,
    /// Everything the issuance service takes (event log, NATS, gRPC address, CA, …),
    /// shared with the order service.
    pub issuance: IssuanceConfig,
    /// Renewal policies and the order service's expiry and auto-renew scheduler.
    pub renewal: RenewalSetup,
    /// With TLS and no identity CA given: the directory where certd keeps its own
    /// (created at first start) and the names of the server certificate it issues
    /// itself (empty when `--tls-cert` gives one).
    pub identity_dir: Option<(PathBuf, Vec<String>)>,
    /// The time authentication checks expiry against (the system clock; tests move it).
    pub auth_clock: SharedClock,
}

/// Parses `argv` (without the program name) with `env` as the environment.
pub fn configure(
    argv: Vec<String>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<CertdConfig>, ConfigError> {
    const ABOUT: &str = "every certledger service in one process (order, issuance, deployment, revocation, query and dashboard; embedded SQLite by default)";
    let flags = flags();
    let first = match parse_request("certd", ABOUT, &flags, argv.clone(), &env)? {
        Request::Help(text) => {
            print!("{text}");
            return Ok(None);
        }
        Request::Check(args) | Request::Run(args) => args,
    };
    let data_dir = first.required("data-dir")?.to_owned();
    let embedded = first.value("database-url").is_none();
    let no_validation_by_default = embedded && first.value("allow-no-validation").is_none();
    let sqlite = |file: &str| format!("sqlite:{}", PathBuf::from(&data_dir).join(file).display());
    let log_url = sqlite("certledger.db");
    // Embedded, certificates name the CRL and OCSP URLs this process serves (unless the
    // address is only known once bound, or names no host a client could reach).
    let revocation_base_url = first
        .parsed::<SocketAddr>("revocation-http-listen")
        .ok()
        .flatten()
        .filter(|addr| embedded && addr.port() != 0 && !addr.ip().is_unspecified())
        .map(|addr| format!("http://{addr}"));
    // The derived defaults go in as if they came from the environment, so that the
    // issuance service's validation (naming the key on error) sees them.
    let with_defaults = |key: &str| {
        env(key).filter(|v| !v.is_empty()).or_else(|| match key {
            "CERTLEDGER_DATABASE_URL" if embedded => Some(log_url.clone()),
            "CERTLEDGER_ALLOW_NO_VALIDATION" if no_validation_by_default => Some("true".into()),
            "CERTLEDGER_REVOCATION_BASE_URL" => revocation_base_url.clone(),
            _ => None,
        })
    };
    let (args, check) = match parse_request("certd", ABOUT, &flags, argv, with_defaults)? {
        Request::Help(text) => {
            print!("{text}");
            return Ok(None);
        }
        Request::Check(args) => (args, true),
        Request::Run(args) => (args, false),
    };
    let issuance = IssuanceConfig::from_args(&args)?;
    let http_listen = http_listen(&args)?;
    let revocation_http_listen = args
        .parsed::<SocketAddr>("revocation-http-listen")?
        .ok_or_else(|| args.error("revocation-http-listen", "is required"))?;
    let secrets_dir = args
        .value("secrets-dir")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(&data_dir).join(SECRETS_SUBDIR));
    let drift_interval = args.duration("drift-interval")?.filter(|d| !d.is_zero());
    // certd always keeps the certificate list, which the scheduler needs.
    let renewal = certledger_order::config::renewal_setup(&args, true)?;
    let projections_url = if embedded {
        sqlite("projections.db")
    } else {
        issuance.database_url.clone()
    };
    let mut auth = issuance.auth.clone();
    if auth.enabled && auth.bootstrap_token_file.is_none() {
        auth.bootstrap_token_file = Some(PathBuf::from(&data_dir).join(ADMIN_TOKEN_FILE));
    }
    let identity_dir = tls_setup(&args, &mut auth, &PathBuf::from(&data_dir))?;
    let config = CertdConfig {
        auth,
        data_dir: PathBuf::from(&data_dir),
        embedded,
        no_validation_by_default,
        projections_url,
        projections_pg_schema: args.required("projections-pg-schema")?.to_owned(),
        http_listen,
        revocation_http_listen,
        secrets_dir,
        drift_interval,
        issuance,
        renewal,
        identity_dir,
        auth_clock: certledger_runtime::clock::system(),
    };
    if check {
        // --check-config: everything above validated; say so and stop.
        print!("# certd: configuration valid\n{}", args.effective());
        return Ok(None);
    }
    Ok(Some(config))
}

/// Fills in the TLS of `auth` for `--tls` (certd's own identity CA and server
/// certificate in `<data-dir>/tls`) and the identity CA that signs client certificates
/// whenever TLS is on. Returns what [`start`] must prepare in the data directory.
fn tls_setup(
    args: &Args,
    auth: &mut AuthSettings,
    data_dir: &std::path::Path,
) -> Result<Option<(PathBuf, Vec<String>)>, ConfigError> {
    let asked = args.switch("tls")?;
    let names: Vec<String> = args
        .values("tls-name")
        .iter()
        .map(|n| n.trim().to_owned())
        .collect();
    if let Some(bad) = names
        .iter()
        .find(|n| n.parse::<std::net::IpAddr>().is_err() && !is_dns_name(n))
    {
        return Err(args.error(
            "tls-name",
            format!("{bad:?} is neither a DNS name nor an IP address"),
        ));
    }
    if !asked && auth.tls.is_none() {
        if !names.is_empty() {
            return Err(args.error("tls-name", "needs --tls"));
        }
        return Ok(None);
    }
    if !auth.enabled {
        return Err(args.error(
            "tls",
            "is served together with authentication; insecure-no-auth is set (development only, plaintext)",
        ));
    }
    let dir = data_dir.join(TLS_SUBDIR);
    let own_ca = auth.identity_ca.is_none();
    if own_ca {
        auth.identity_ca = Some((dir.join(tls_files::CA_CERT), dir.join(tls_files::CA_KEY)));
    }
    let mut generate = None;
    match &mut auth.tls {
        Some(tls) => {
            if !names.is_empty() {
                return Err(args.error(
                    "tls-name",
                    "names certd's own server certificate; --tls-cert gives another one",
                ));
            }
            if tls.client_ca.is_none() {
                tls.client_ca = auth.identity_ca.as_ref().map(|(cert, _)| cert.clone());
            }
            if own_ca {
                generate = Some((dir, Vec::new()));
            }
        }
        None => {
            auth.tls = Some(TlsSettings {
                cert: dir.join(tls_files::SERVER_CERT),
                key: dir.join(tls_files::SERVER_KEY),
                client_ca: auth.identity_ca.as_ref().map(|(cert, _)| cert.clone()),
            });
            if !own_ca {
                return Err(args.error(
                    "tls",
                    "issues certd's server certificate from its own identity CA; with --identity-ca-cert give the server's with --tls-cert and --tls-key",
                ));
            }
            generate = Some((dir, names));
        }
    }
    Ok(generate)
}

fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
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
    revocation_http_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Certd {
    /// The gRPC address (every service, health, reflection).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.addr()
    }

    /// `http://<grpc addr>`, or `https://` when it serves TLS.
    pub fn grpc_url(&self) -> String {
        self.grpc.url()
    }

    /// The dashboard's address, if served.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The address of the CRLs (`/crl/<issuer>.crl`) and the OCSP responder (`/ocsp`).
    pub fn revocation_http_addr(&self) -> SocketAddr {
        self.revocation_http_addr
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
    certledger_deployment::SERVICE_NAME,
    certledger_revocation::SERVICE_NAME,
    certledger_projections::SERVICE_NAME,
];

/// Starts everything in the background; stops when `shutdown` is cancelled.
pub async fn start(config: &CertdConfig, shutdown: CancellationToken) -> anyhow::Result<Certd> {
    let c = &config.issuance;
    let ca = open_ca(&c.ca).context("opening the CA (--data-dir)")?;
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
    if let Some((dir, names)) = &config.identity_dir {
        prepare_identity_dir(dir, names, config.auth_clock.now()).with_context(|| {
            format!(
                "preparing the identity CA and server certificate in {}",
                dir.display()
            )
        })?;
    }
    let mut server = c.server.clone();
    server.auth = config
        .auth
        .start(log.clone(), config.auth_clock.clone())
        .await
        .context("starting authentication")?;
    let grpc = GrpcServer::bind(c.listen, server.clone())
        .await
        .with_context(|| format!("listening on {} (--listen)", c.listen))?;

    let list = CertificateList::open(&c.database_url, &c.pg_schema)
        .await
        .context("opening the certificate list table")?;
    // One repository (one fold cache) for the order and issuance services.
    let repo = certledger_runtime::CertificateRepository::new(log.clone());
    let OrderParts {
        server: order,
        tasks: mut grpc_tasks,
    } = certledger_order::build(
        OrderSetup {
            repo: repo.clone(),
            listen: c.listen,
            issuers: vec![c.issuer.issuer_id.clone()],
            server: c.server.clone(),
            list: Some((list, read_model_source(log.clone()))),
            renewal: config.renewal.clone(),
            tasks: relay.into_iter().collect(),
        },
        shutdown.clone(),
    );
    let signer = IssuerSigner::from_authority(&ca.authority, ca.keys.as_ref())
        .context("opening the intermediate CA's key for CRLs and OCSP")?;
    let IssuanceParts {
        server: issuance,
        tasks: issuance_tasks,
        ..
    } = certledger_issuance::build(
        IssuanceSetup {
            repo,
            source: source.clone(),
            authority: ca.authority,
            keys: ca.keys.clone(),
            settings: c.issuer.clone(),
            listen: c.listen,
            server: c.server.clone(),
            recover: c.recover,
            tasks: Vec::new(),
        },
        shutdown.clone(),
    );
    grpc_tasks.extend(issuance_tasks);

    let secrets = SecretStore::open(&config.secrets_dir).with_context(|| {
        format!(
            "opening the webhook secrets directory {} (--secrets-dir)",
            config.secrets_dir.display()
        )
    })?;
    let DeploymentParts {
        server: deployment,
        tasks: deployment_tasks,
        ..
    } = certledger_deployment::build(
        DeploymentSetup {
            log: log.clone(),
            source: Some(source.clone()),
            keys: ca.keys,
            secrets,
            settings: DeployerSettings::default(),
            drift_interval: config.drift_interval,
            listen: c.listen,
            server: c.server.clone(),
            tasks: Vec::new(),
        },
        shutdown.clone(),
    )
    .await
    .context("reading the deployments from the event log")?;
    grpc_tasks.extend(deployment_tasks);

    let mut revocation = start_revocation(config, &log, &source, signer, shutdown.clone()).await?;
    grpc_tasks.append(&mut revocation.tasks);

    let store = ProjectionStore::connect_with(
        &config.projections_url,
        StoreOptions::new().pg_schema(config.projections_pg_schema.clone()),
    )
    .await
    .context("opening the read models (--database-url)")?;
    let projector = Projector::new(store.clone(), log.clone(), ProjectorConfig::default());
    let query = QueryService::new(projector.clone(), shutdown.clone());

    let routes = Routes::new(order)
        .add_service(issuance)
        .add_service(deployment)
        .add_service(revocation.server)
        .add_service(CertificateQueryServiceServer::new(query));
    let mut names = GRPC_SERVICES.to_vec();
    let routes = match server.auth.clone() {
        Some(auth) => {
            names.push(TOKEN_SERVICE_NAME);
            routes.add_service(TokenApi::new(auth).into_server())
        }
        None => routes,
    };
    let grpc = RunningService::spawn(grpc, routes, &names, shutdown.clone(), grpc_tasks);

    let mut tasks = Vec::new();
    {
        let projector: Arc<Projector> = projector.clone();
        let token = shutdown.clone();
        let source = read_model_source(log.clone());
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
            .with_auth(server.auth.clone())
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
        revocation_http_addr: revocation.http_addr,
        tasks,
    })
}

/// Builds the revocation service on certd's log and event source: its HTTP server
/// (CRLs, OCSP) serves at once; its API goes on certd's router.
async fn start_revocation(
    config: &CertdConfig,
    log: &Arc<dyn EventLog>,
    source: &EventSource,
    signer: IssuerSigner,
    shutdown: CancellationToken,
) -> anyhow::Result<RevocationParts> {
    let c = &config.issuance;
    let addr = config.revocation_http_listen;
    certledger_revocation::build(
        RevocationSetup {
            log: log.clone(),
            source: source.clone(),
            signer: Arc::new(signer),
            issuer_id: c.issuer.issuer_id.clone(),
            publisher: PublisherSettings::default(),
            ocsp: OcspConfig::default(),
            http: certledger_revocation::HttpConfig::default(),
            listen: addr,
            http_listen: addr,
            server: c.server.clone(),
            tasks: Vec::new(),
        },
        shutdown,
    )
    .await
    .with_context(|| {
        format!("starting the revocation service on {addr} (--revocation-http-listen)")
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
        assert_eq!(c.issuance.ca.keys.kind, certledger_ca::KeyStoreKind::Sqlite);
        assert_eq!(
            c.revocation_http_listen.to_string(),
            DEFAULT_REVOCATION_HTTP_LISTEN
        );
        // Certificates name the CRL and OCSP this certd serves.
        assert_eq!(
            c.issuance.ca.urls.crl_distribution_point.as_deref(),
            Some("http://127.0.0.1:8081/crl/builtin.crl")
        );
        assert_eq!(
            c.issuance.ca.urls.ocsp.as_deref(),
            Some("http://127.0.0.1:8081/ocsp")
        );
        assert_eq!(
            c.secrets_dir,
            PathBuf::from(DEFAULT_DATA_DIR).join(SECRETS_SUBDIR)
        );
        assert!(c.drift_interval.is_some());
        assert!(c.renewal.scheduler_interval.is_some());

        let c = config(
            &["--allow-no-validation=false"],
            &[("CERTLEDGER_DATA_DIR", "/d")],
        )
        .unwrap();
        assert!(!c.issuance.issuer.allow_no_validation);
        assert_eq!(c.issuance.database_url, "sqlite:/d/certledger.db");
        assert_eq!(c.issuance.ca.data_dir, PathBuf::from("/d"));
        assert_eq!(c.secrets_dir, PathBuf::from("/d/deployment-secrets"));

        // An address known only once bound is named by no certificate; an explicit base
        // URL wins.
        let c = config(&["--revocation-http-listen", "127.0.0.1:0"], &[]).unwrap();
        assert!(c.issuance.ca.urls.crl_distribution_point.is_none());
        let c = config(
            &["--revocation-base-url", "https://crl.example.test"],
            &[("CERTLEDGER_DRIFT_INTERVAL", "0")],
        )
        .unwrap();
        assert_eq!(
            c.issuance.ca.urls.ocsp.as_deref(),
            Some("https://crl.example.test/ocsp")
        );
        assert!(c.drift_interval.is_none());
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
        // A replica's certificates name only the URLs the operator gives.
        assert!(c.issuance.ca.urls.crl_distribution_point.is_none());
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
        let e = config(&["--scheduler", "soon"], &[]).unwrap_err();
        assert!(e.to_string().contains("--scheduler"), "{e}");
        let e = config(&["--revocation-http-listen", "nope"], &[]).unwrap_err();
        assert!(e.to_string().contains("--revocation-http-listen"), "{e}");
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
