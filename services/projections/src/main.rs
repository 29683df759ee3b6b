//! `certledger-projections`: the query side as a process — the projector feeding the
//! read models, `CertificateQueryService` over gRPC, and the HTTP dashboard with
//! `/metrics`. Prints `listening on <grpc addr>` and `http on <addr>` on stdout once it
//! serves; logs go to stderr. Stops on SIGINT/SIGTERM.
//!
//! `certledger-projections rebuild [--model NAME]…` empties the read models (all, or
//! the named ones) and replays the log into them, with a progress line on stderr.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use certledger_projections::config::{FLAGS, ProjectionsConfig};
use certledger_projections::grpc::start;
use certledger_projections::{
    HttpConfig, HttpServer, Progress, ProjectionStore, Projector, ProjectorConfig, QueryService,
    StoreOptions,
};
use certledger_runtime::config::{Request, parse_request};
use certledger_runtime::events::{open_log, read_model_source, spawn_relay};
use certledger_runtime::server::cancel_on_signals;
use tokio_util::sync::CancellationToken;

const PROGRAM: &str = "certledger-projections";
const ABOUT: &str = "the query side: read models, CertificateQueryService (gRPC), dashboard and /metrics (HTTP); \
`certledger-projections rebuild [--model NAME]` replays the log into the read models";

#[tokio::main]
async fn main() -> ExitCode {
    let mut argv: Vec<String> = std::env::args().skip(1).collect();
    let rebuild = argv.first().is_some_and(|a| a == "rebuild");
    if rebuild {
        argv.remove(0);
    }
    let request = parse_request(PROGRAM, ABOUT, FLAGS, argv, |k| std::env::var(k).ok());
    let (args, check) = match request {
        Ok(Request::Help(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Ok(Request::Check(args)) => (args, true),
        Ok(Request::Run(args)) => (args, false),
        Err(e) => {
            eprintln!("{PROGRAM}: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let config = match ProjectionsConfig::from_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{PROGRAM}: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if check {
        print!("# {PROGRAM}: configuration valid\n{}", args.effective());
        return ExitCode::SUCCESS;
    }
    certledger_runtime::telemetry::init();
    let result = if rebuild {
        run_rebuild(config).await
    } else {
        run(config).await
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "{PROGRAM} failed");
            eprintln!("{PROGRAM}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn open(config: &ProjectionsConfig) -> anyhow::Result<std::sync::Arc<Projector>> {
    use anyhow::Context;
    let log = open_log(&config.database_url, &config.pg_schema)
        .await
        .context("opening the event log (--database-url)")?;
    let store = ProjectionStore::connect_with(
        &config.store_url,
        StoreOptions::new().pg_schema(config.store_schema.clone()),
    )
    .await
    .context("opening the read models (--store-url)")?;
    Ok(Projector::new(store, log, ProjectorConfig::default()))
}

fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

fn progress_line(p: &Progress) -> String {
    let pct = if p.head == 0 {
        100.0
    } else {
        (p.position as f64 / p.head as f64 * 100.0).min(100.0)
    };
    let left = match (p.finished, p.eta) {
        (true, _) => "done".to_owned(),
        (false, Some(eta)) => format!("{} left", format_duration(eta)),
        (false, None) => "time left unknown".to_owned(),
    };
    format!(
        "rebuild: {} events, position {}/{} ({pct:.1}%), {:.0} events/s, {} elapsed, {left}",
        p.events_done,
        p.position,
        p.head,
        p.rate_per_sec,
        format_duration(p.elapsed),
    )
}

async fn run_rebuild(config: ProjectionsConfig) -> anyhow::Result<()> {
    let projector = open(&config).await?;
    let names: Vec<&str> = config.models.iter().map(|m| m.name()).collect();
    eprintln!("rebuild: read models {}", names.join(", "));
    let mut stderr = std::io::stderr();
    let tty = std::io::IsTerminal::is_terminal(&stderr);
    let mut report = |p: &Progress| {
        let line = progress_line(p);
        // On a terminal one line redrawn in place; otherwise one line per report.
        let _ = if tty {
            write!(stderr, "\r\x1b[2K{line}")
        } else {
            writeln!(stderr, "{line}")
        };
        if tty && p.finished {
            let _ = writeln!(stderr);
        }
        let _ = stderr.flush();
    };
    let position = projector.rebuild(&config.models, &mut report).await?;
    eprintln!("rebuild: finished at log position {position}");
    projector.store().close().await;
    Ok(())
}

async fn run(mut config: ProjectionsConfig) -> anyhow::Result<()> {
    use anyhow::Context;
    let shutdown = CancellationToken::new();
    cancel_on_signals(shutdown.clone());
    let projector = open(&config).await?;
    let log = projector.log().clone();
    config.server.auth = config
        .auth
        .start(log.clone(), certledger_runtime::clock::system())
        .await
        .context("starting authentication")?;
    // NATS, if configured, is for the relay: the projector tails the log.
    let relay = spawn_relay(
        log.clone(),
        config.nats_url.as_deref(),
        config.relay,
        shutdown.clone(),
    )
    .await
    .context("opening the event stream (--nats-url)")?;
    let mut tasks = Vec::new();
    tasks.extend(relay);
    {
        let projector = projector.clone();
        let shutdown = shutdown.clone();
        let source = read_model_source(log.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = projector.run(source, shutdown.clone()).await {
                tracing::error!(error = %e, "the projector stopped; shutting down");
                eprintln!("{PROGRAM}: projector: {e}");
                shutdown.cancel();
            }
        }));
    }
    let http_listener = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("listening on {} (--http-listen)", config.http_listen))?;
    let http_addr = http_listener.local_addr()?;
    {
        let server = HttpServer::new(projector.store().clone(), log, HttpConfig::default())
            .with_auth(config.server.auth.clone())
            .with_projector_stats(projector.stats());
        let shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = server
                .serve(http_listener, shutdown.clone().cancelled_owned())
                .await
            {
                tracing::error!(error = %e, "the HTTP server failed; shutting down");
                shutdown.cancel();
            }
        }));
    }
    let service = QueryService::new(projector.clone(), shutdown.clone());
    let running = start(
        service,
        config.listen,
        config.server.clone(),
        shutdown,
        tasks,
    )
    .await
    .with_context(|| format!("listening on {} (--listen)", config.listen))?;
    println!("listening on {}", running.addr());
    println!("http on {http_addr}");
    let _ = std::io::stdout().flush();
    tracing::info!(grpc = %running.addr(), http = %http_addr, nats = config.nats_url.is_some(), "{PROGRAM} started");
    running.wait().await?;
    projector.store().close().await;
    tracing::info!("{PROGRAM} stopped");
    Ok(())
}
