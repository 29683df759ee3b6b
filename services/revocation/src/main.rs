//! `certledger-revocation`: the revocation service as a process. Prints
//! `listening on <grpc addr>` and `http on <http addr>` on stdout once it serves; logs go
//! to stderr. Stops on SIGINT/SIGTERM.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use certledger_ca::{Authority, AuthorityConfig};
use certledger_revocation::config::{FLAGS, RevocationConfig};
use certledger_revocation::{HttpConfig, IssuerSigner, RevocationSetup, start};
use certledger_runtime::config::service_main;
use certledger_runtime::events::{open_log, open_source};
use certledger_runtime::server::cancel_on_signals;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    service_main(
        "certledger-revocation",
        "the revocation service (RevocationService over gRPC; CRL and OCSP over HTTP)",
        FLAGS,
        RevocationConfig::from_args,
        run,
    )
    .await
}

/// Opens the issuance service's CA without ever creating one: the intermediate
/// certificate from `<data>/ca`, its key from `<data>/keys`.
fn open_signer(config: &RevocationConfig) -> anyhow::Result<IssuerSigner> {
    use anyhow::Context;
    let key_dir = config.data_dir.join("keys");
    let cert_dir = config.data_dir.join("ca");
    let keys = config
        .keys
        .open(&key_dir)
        .with_context(|| format!("key store at {}", key_dir.display()))?;
    let authority = Authority::load(
        &AuthorityConfig::new(&cert_dir),
        &*keys,
        time::OffsetDateTime::now_utc(),
    )
    .with_context(|| {
        format!(
            "CA at {} (start the issuance service once to create it)",
            cert_dir.display()
        )
    })?;
    IssuerSigner::from_authority(&authority, &*keys).context("the intermediate CA")
}

async fn run(mut config: RevocationConfig) -> anyhow::Result<()> {
    use anyhow::Context;
    let shutdown = CancellationToken::new();
    cancel_on_signals(shutdown.clone());
    let signer = open_signer(&config).context("opening the CA (--data-dir)")?;
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
        RevocationSetup {
            log,
            source,
            signer: Arc::new(signer),
            issuer_id: config.issuer_id.clone(),
            publisher: config.publisher,
            ocsp: config.ocsp,
            http: HttpConfig::default(),
            listen: config.listen,
            http_listen: config.http_listen,
            server: config.server.clone(),
            tasks: relay.into_iter().collect(),
        },
        shutdown,
    )
    .await
    .context("starting (--listen, --http-listen)")?;
    println!("listening on {}", started.service.addr());
    println!("http on {}", started.http_addr);
    let _ = std::io::stdout().flush();
    tracing::info!(grpc = %started.service.addr(), http = %started.http_addr, nats = config.nats_url.is_some(), issuer = %config.issuer_id, "certledger-revocation started");
    started.service.wait().await?;
    tracing::info!("certledger-revocation stopped");
    Ok(())
}
