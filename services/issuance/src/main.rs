//! `certledger-issuance`: the issuance service as a process. Prints `listening on <addr>`
//! on stdout once it serves; logs go to stderr. Stops on SIGINT/SIGTERM.

use std::io::Write;
use std::process::ExitCode;

use certledger_issuance::ca::open_or_import_ca;
use certledger_issuance::config::{FLAGS, IssuanceConfig};
use certledger_issuance::{IssuanceSetup, start};
use certledger_runtime::config::service_main;
use certledger_runtime::events::{open_log, open_source};
use certledger_runtime::server::cancel_on_signals;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    service_main(
        "certledger-issuance",
        "the issuance service (built-in CA, validation, signing; IssuanceService over gRPC)",
        FLAGS,
        IssuanceConfig::from_args,
        run,
    )
    .await
}

async fn run(mut config: IssuanceConfig) -> anyhow::Result<()> {
    use anyhow::Context;
    let shutdown = CancellationToken::new();
    cancel_on_signals(shutdown.clone());
    let ca = open_or_import_ca(&config.ca, config.import.as_ref())
        .context("opening the CA (--data-dir, --import-*)")?;
    let log = open_log(&config.database_url, &config.pg_schema)
        .await
        .context("opening the event log (--database-url)")?;
    config.server.auth = config
        .auth
        .start(log.clone(), certledger_runtime::clock::system())
        .await
        .context("starting authentication")?;
    let (source, relay) = open_source(
        log.clone(),
        config.nats_url.as_deref(),
        config.relay,
        shutdown.clone(),
    )
    .await
    .context("opening the event stream (--nats-url)")?;
    let started = start(
        IssuanceSetup {
            repo: certledger_runtime::CertificateRepository::new(log),
            source,
            authority: ca.authority,
            keys: ca.keys,
            settings: config.issuer.clone(),
            listen: config.listen,
            server: config.server.clone(),
            recover: config.recover,
            tasks: relay.into_iter().collect(),
        },
        shutdown,
    )
    .await
    .with_context(|| format!("listening on {} (--listen)", config.listen))?;
    println!("listening on {}", started.service.addr());
    let _ = std::io::stdout().flush();
    tracing::info!(addr = %started.service.addr(), nats = config.nats_url.is_some(), issuer = %config.issuer.issuer_id, "certledger-issuance started");
    started.service.wait().await?;
    tracing::info!("certledger-issuance stopped");
    Ok(())
}
