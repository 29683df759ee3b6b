//! Scenario 6, footprint: resident memory of certd (order, issuance and projections in
//! one process, `certledger_certd::start` as the `certd` binary runs it) idle and under
//! the load of scenario 1. certd runs in a child process — this same binary with the
//! hidden first argument [`CHILD_ARG`] — so that its memory is its own; VmRSS and the
//! peak VmHWM come from `/proc/<pid>/status`.

use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

use crate::issuance::{Completion, KeyMode, applications, drive, sizes};
use crate::progress::step;
use crate::report::Figure;
use crate::stack::Storage;
use crate::{Backend, Settings};

/// First argument that makes the binary run certd for the parent.
pub const CHILD_ARG: &str = "__certd";
/// The line the child prints once certd serves, followed by its gRPC address.
const READY: &str = "certd-ready";
/// How long certd sits idle before the idle sample.
const SETTLE: Duration = Duration::from_secs(3);

/// The child: certd with `args` until stdin closes.
pub fn child_main(args: Vec<String>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("certd child: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(child(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("certd child: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn child(args: Vec<String>) -> anyhow::Result<()> {
    let config = certledger_certd::configure(args, |_| None)
        .context("certd's configuration")?
        .context("certd printed its help")?;
    let shutdown = CancellationToken::new();
    let certd = certledger_certd::start(&config, shutdown.clone())
        .await
        .context("starting certd")?;
    println!("{READY} http://{}", certd.grpc_addr());
    // The parent closes stdin to stop us.
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink)
    })
    .await;
    shutdown.cancel();
    certd.wait().await.context("certd stopped with an error")?;
    Ok(())
}

/// (VmRSS, VmHWM) of `pid` in MB.
fn memory_mb(pid: u32) -> anyhow::Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kb = |key: &str| {
        crate::report::proc_kb(&status, key).with_context(|| format!("{key} in /proc/{pid}/status"))
    };
    Ok((kb("VmRSS:")? / 1024.0, kb("VmHWM:")? / 1024.0))
}

struct Sample {
    idle_mb: f64,
    load_peak_mb: f64,
    load_end_mb: f64,
    rate: f64,
}

async fn measure(backend: Backend, settings: &Settings) -> anyhow::Result<Sample> {
    let storage = Storage::new(backend, &settings.certd_args).await?;
    let exe = std::env::current_exe().context("locating this binary")?;
    let mut child = tokio::process::Command::new(exe)
        .arg(CHILD_ARG)
        .args(storage.certd_args())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting the certd child")?;
    let pid = child.id().context("the child's pid")?;
    let stdout = child.stdout.take().context("the child's stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let url = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(url) = line.strip_prefix(READY) {
                return anyhow::Ok(url.trim().to_owned());
            }
        }
        bail!("certd exited before it was ready")
    })
    .await
    .context("certd did not start within 60 s")??;

    tokio::time::sleep(SETTLE).await;
    let (idle_mb, _) = memory_mb(pid)?;
    step(format!(
        "  certd (pid {pid}) idle: {idle_mb:.1} MB resident"
    ));
    let (n, concurrency) = sizes(settings);
    let load = drive(
        &url,
        applications(n, KeyMode::Generated)?,
        concurrency,
        Completion::Polled,
        "issued (certd child)",
    )
    .await?;
    let (load_end_mb, load_peak_mb) = memory_mb(pid)?;
    step(format!(
        "  under load ({:.0} certificates/s): peak {load_peak_mb:.1} MB, {load_end_mb:.1} MB at the end",
        load.rate()
    ));
    drop(child.stdin.take());
    match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
        Ok(status) => {
            let status = status.context("waiting for certd")?;
            if !status.success() {
                bail!("certd exited with {status}");
            }
        }
        Err(_) => {
            let _ = child.kill().await;
            bail!("certd did not stop within 30 s of its stdin closing");
        }
    }
    drop(storage);
    Ok(Sample {
        idle_mb,
        load_peak_mb,
        load_end_mb,
        rate: load.rate(),
    })
}

pub async fn run(settings: &Settings) -> anyhow::Result<Vec<Figure>> {
    let (n, concurrency) = sizes(settings);
    let mut figures = Vec::new();
    for (backend, _) in settings.runs("footprint of certd") {
        let s = measure(backend, settings).await?;
        let note = format!(
            "certd in a child process; load: {n} certificates at concurrency {concurrency} (GetCertificate polled), {:.0} certificates/s",
            s.rate
        );
        let name = |what: &str| format!("{} certd {what}", backend.name());
        figures.push(
            Figure::new("footprint", name("RSS idle"), "MB")
                .target("< 50")
                .note(format!("after {SETTLE:?} idle; {note}"))
                .sample(s.idle_mb),
        );
        figures.push(
            Figure::new("footprint", name("peak RSS under load"), "MB")
                .target("< 300")
                .note(format!("VmHWM; {note}"))
                .sample(s.load_peak_mb),
        );
        figures.push(
            Figure::new("footprint", name("RSS after load"), "MB")
                .note(note)
                .sample(s.load_end_mb),
        );
    }
    Ok(figures)
}
