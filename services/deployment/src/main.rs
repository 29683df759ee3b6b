//! `certledger-deployment`: the deployment service as a process. Prints
//! `listening on <addr>` on stdout once it serves; logs go to stderr. Stops on
//! SIGINT/SIGTERM.

use std::io::Write;
use std::process::ExitCode;

use certledger_deployment::config::{DeploymentConfig, FLAGS};
use certledger_deployment::{DeploymentSetup, SecretStore, start};
use certledger_runtime::config::service_main;
use certledger_runtime::events::{open_log, open_source};
use certledger_runtime::server::cancel_on_signals;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    certledger_deployment::install_default_crypto_provider();
    service_main(
        "certledger-deployment",
        "the deployment service (DeploymentService over gRPC)",
        FLAGS,
        DeploymentConfig::from_args,
        run,
    )
    .await
}

async fn run(mut config: DeploymentConfig) -> anyhow::Result<()> {
    use anyhow::Context;
    let shutdown = CancellationToken::new();
    cancel_on_signals(shutdown.clone());
    let keys = config
        .keys
        .open(&config.key_dir)
        .context("opening the key store (--key-dir)")?;
    let secrets = SecretStore::open(&config.secrets_dir)
        .context("opening the webhook secrets directory (--secrets-dir)")?;
    let log = open_log(&config.database_url, &config.pg_schema)
        .await
        .context("opening the event log (--database-url)")?;
    config.server.auth = config
        .auth
        .start(log.clone(), certledger_runtime::clock::system())
        .await
        .context("starting authentication")?;
    let mut tasks = Vec::new();
    let source = if config.reactions {
        let (source, relay) = open_source(
            log.clone(),
            config.nats_url.as_deref(),
            config.relay,
            shutdown.clone(),
        )
        .await
        .context("opening the event stream (--nats-url)")?;
        tasks.extend(relay);
        Some(source)
    } else {
        None
    };
    let started = start(
        DeploymentSetup {
            log,
            source,
            keys,
            secrets,
            settings: config.deployer.clone(),
            drift_interval: config.drift_interval,
            listen: config.listen,
            server: config.server.clone(),
            tasks,
        },
        shutdown,
    )
    .await
    .with_context(|| format!("starting on {} (--listen)", config.listen))?;
    println!("listening on {}", started.service.addr());
    let _ = std::io::stdout().flush();
    tracing::info!(addr = %started.service.addr(), nats = config.nats_url.is_some(), drift = ?config.drift_interval, "certledger-deployment started");
    started.service.wait().await?;
    tracing::info!("certledger-deployment stopped");
    Ok(())
}
