//! The services of scenario 1, started in-process as certd configures them for
//! production: the order service and the issuance service (each on its own loopback gRPC
//! port, through their `start` APIs) and the projections' projector, on PostgreSQL + NATS
//! JetStream (a schema of its own, a `nats-server` on a free port with file storage) or
//! on embedded SQLite (consumers tailing the log). The projector is ours so that the
//! benchmark can subscribe to its inventory changes: "visible in the inventory" is the
//! moment the projector committed the row.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use certledger_certd::CertdConfig;
use certledger_eventlog::{EventLog, LogOptions, SharedReads};
use certledger_issuance::IssuanceSetup;
use certledger_issuance::ca::open_ca;
use certledger_order::{CertificateList, OrderSetup};
use certledger_projections::{ProjectionStore, Projector, ProjectorConfig, StoreOptions};
use certledger_runtime::events::{open_source, read_model_source};
use certledger_runtime::server::RunningService;
use certledger_testkit::NatsServer;
use certledger_testkit::db::TestDb;
use tokio_util::sync::CancellationToken;

use crate::Backend;
use crate::counting::{CountingLog, Counts};

/// Where the databases live: a PostgreSQL schema (+ NATS) or SQLite files, both removed
/// when dropped — the files only when the bench ends (see [`remove_spent_directories`]).
pub struct Storage {
    dir: Option<tempfile::TempDir>,
    pub pg: Option<TestDb>,
    pub nats: Option<NatsServer>,
    /// Added to certd's command line (`--certd-arg`).
    certd_args: Vec<String>,
}

/// The directories of the runs that ended, removed when the bench ends: removing a run's
/// thousands of key files made the next run's slow to create (ext4 without a journal
/// scans the inodes deleted in the last seconds for every new one), so that only the
/// first repeat measured a clean key store.
static SPENT: std::sync::Mutex<Vec<tempfile::TempDir>> = std::sync::Mutex::new(Vec::new());

impl Drop for Storage {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            SPENT.lock().unwrap_or_else(|e| e.into_inner()).push(dir);
        }
    }
}

/// Removes the directories of every run that ended.
pub fn remove_spent_directories() {
    SPENT.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

impl Storage {
    pub async fn new(backend: Backend, certd_args: &[String]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("creating a temporary directory")?;
        let (pg, nats) = match backend {
            Backend::Sqlite => (None, None),
            Backend::Postgres => (
                Some(TestDb::postgres().await?),
                Some(NatsServer::start().await?),
            ),
        };
        Ok(Self {
            dir: Some(dir),
            pg,
            nats,
            certd_args: certd_args.to_vec(),
        })
    }

    /// certd's command line for this storage (data directory, database, NATS, schemas,
    /// any free ports, no dashboard, validation NONE allowed, no authentication: the
    /// bench's clients hold no token, and it measures the pipeline, not token checks),
    /// then the `--certd-arg`s.
    pub fn certd_args(&self) -> Vec<String> {
        let data = self.dir.as_ref().map(|d| d.path().join("data"));
        let mut args: Vec<String> = [
            "--data-dir",
            &data.unwrap_or_default().display().to_string(),
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "off",
            "--allow-no-validation",
            "--insecure-no-auth",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        if let Some(db) = &self.pg {
            for (flag, value) in [
                ("--database-url", db.url.as_str()),
                ("--pg-schema", db.schema.as_str()),
                ("--projections-pg-schema", db.schema.as_str()),
            ] {
                args.extend([flag.to_owned(), value.to_owned()]);
            }
        }
        if let Some(nats) = &self.nats {
            args.extend(["--nats-url".to_owned(), nats.url()]);
        }
        args.extend(self.certd_args.iter().cloned());
        args
    }

    /// certd's configuration for this storage (its defaults for everything else).
    pub fn certd_config(&self) -> anyhow::Result<CertdConfig> {
        certledger_certd::configure(self.certd_args(), |_| None)
            .context("certd's configuration")?
            .context("certd printed its help")
    }
}

/// Order, issuance and the projector, running.
pub struct Platform {
    pub order_url: String,
    pub log: Arc<dyn EventLog>,
    pub projector: Arc<Projector>,
    /// Calls made to the event log by every service of the platform.
    pub counts: Arc<Counts>,
    shutdown: CancellationToken,
    services: Vec<RunningService>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Platform {
    pub async fn start(storage: &Storage) -> anyhow::Result<Self> {
        let config = storage.certd_config()?;
        let c = &config.issuance;
        let shutdown = CancellationToken::new();
        let ca = open_ca(&c.ca).context("opening the CA")?;
        // As `open_log` opens it, with the calls that reach the database counted.
        let log = certledger_eventlog::connect_with(
            &c.database_url,
            LogOptions::new().pg_schema(&c.pg_schema),
        )
        .await
        .context("opening the event log")?;
        let (log, counts) = CountingLog::wrap(log);
        let log = SharedReads::wrap(log);
        let (source, relay) = open_source(
            log.clone(),
            c.nats_url.as_deref(),
            c.relay,
            shutdown.clone(),
        )
        .await
        .context("opening the event stream")?;
        let list = CertificateList::open(&c.database_url, &c.pg_schema)
            .await
            .context("opening the certificate list table")?;
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        // One repository (one fold cache) for the order and issuance services, as in certd.
        let repo = certledger_runtime::CertificateRepository::new(log.clone());
        let order = certledger_order::start(
            OrderSetup {
                repo: repo.clone(),
                listen: loopback,
                issuers: vec![c.issuer.issuer_id.clone()],
                server: c.server.clone(),
                list: Some((list, read_model_source(log.clone()))),
                renewal: Default::default(),
                tasks: relay.into_iter().collect(),
            },
            shutdown.clone(),
        )
        .await
        .context("starting the order service")?;
        let issuance = certledger_issuance::start(
            IssuanceSetup {
                repo,
                source: source.clone(),
                authority: ca.authority,
                keys: ca.keys,
                settings: c.issuer.clone(),
                listen: loopback,
                server: c.server.clone(),
                recover: c.recover,
                tasks: Vec::new(),
            },
            shutdown.clone(),
        )
        .await
        .context("starting the issuance service")?;
        let store = ProjectionStore::connect_with(
            &config.projections_url,
            StoreOptions::new().pg_schema(config.projections_pg_schema.clone()),
        )
        .await
        .context("opening the read models")?;
        let projector = Projector::new(store, log.clone(), ProjectorConfig::default());
        let feeding = {
            let projector = projector.clone();
            let token = shutdown.clone();
            let source = read_model_source(log.clone());
            tokio::spawn(async move {
                if let Err(error) = projector.run(source, token).await {
                    eprintln!("[bench] projections stopped with an error: {error}");
                }
            })
        };
        Ok(Self {
            order_url: order.url(),
            log,
            projector,
            counts,
            shutdown,
            services: vec![order, issuance.service],
            tasks: vec![feeding],
        })
    }

    /// Stops everything and waits for the drain.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for service in self.services {
            if let Err(error) = service.wait().await {
                eprintln!("[bench] a service stopped with an error: {error}");
            }
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
