//! `certledger-order`: the order service as a process. Prints `listening on <addr>` on
//! stdout once it serves; logs go to stderr. Stops on SIGINT/SIGTERM.

use std::io::Write;
use std::process::ExitCode;

use certledger_order::config::{FLAGS, OrderConfig};
use certledger_order::{CertificateList, OrderSetup, start};
use certledger_runtime::config::service_main;
use certledger_runtime::events::{open_log, read_model_source, spawn_relay};
use certledger_runtime::server::cancel_on_signals;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    service_main(
        "certledger-order",
        "the order service (OrderService over gRPC)",
        FLAGS,
        OrderConfig::from_args,
        run,
    )
    .await
}

async fn run(mut config: OrderConfig) -> anyhow::Result<()> {
    use anyhow::Context;
    let shutdown = CancellationToken::new();
    cancel_on_signals(shutdown.clone());
    let log = open_log(&config.database_url, &config.pg_schema)
        .await
        .context("opening the event log (--database-url)")?;
    config.server.auth = config
        .auth
        .start(log.clone(), certledger_runtime::clock::system())
        .await
        .context("starting authentication")?;
    // NATS, if configured, carries this process's relay; the list tails the log either way.
    let relay = spawn_relay(
        log.clone(),
        config.nats_url.as_deref(),
        config.relay,
        shutdown.clone(),
    )
    .await
    .context("opening the event stream (--nats-url)")?;
    let tasks = relay.into_iter().collect();
    let list = if config.list {
        let model = CertificateList::open(&config.database_url, &config.pg_schema)
            .await
            .context("opening the certificate list table")?;
        Some((model, read_model_source(log.clone())))
    } else {
        None
    };
    let running = start(
        OrderSetup {
            repo: certledger_runtime::CertificateRepository::new(log),
            listen: config.listen,
            issuers: config.issuers.clone(),
            server: config.server.clone(),
            list,
            renewal: config.renewal.clone(),
            tasks,
        },
        shutdown,
    )
    .await
    .with_context(|| format!("listening on {} (--listen)", config.listen))?;
    println!("listening on {}", running.addr());
    let _ = std::io::stdout().flush();
    tracing::info!(addr = %running.addr(), nats = config.nats_url.is_some(), "certledger-order started");
    running.wait().await?;
    tracing::info!("certledger-order stopped");
    Ok(())
}
