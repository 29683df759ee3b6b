//! `certledger-bench`: the benchmark harness of issue #11.
//!
//! ```text
//! cargo run --release -p certledger-bench -- [SCENARIO...] [--quick] [--repeats N]
//!     [--backend sqlite|postgres|all] [--json PATH]
//! ```
//!
//! Scenarios (by name or number; default all, in this order): `append` (2), `revocation`
//! (5), `issuance` (1), `history` (4), `rebuild` (3), `footprint` (6). Everything is
//! started in-process: a PostgreSQL schema of its own on `CERTLEDGER_TEST_PG_URL`
//! (default `postgres://postgres@127.0.0.1:5432/test`, dropped afterwards), `nats-server`
//! on a free port, SQLite in temporary files. Progress goes to stderr, the table to stdout,
//! the JSON report to `--json` (default `target/bench/certledger-bench.json`).

mod append;
mod calibration;
mod counting;
mod footprint;
mod history;
mod issuance;
mod progress;
mod report;
mod revocation;
mod stack;

use std::path::PathBuf;

use anyhow::{Context, bail};
use serde_json::json;

use crate::report::Figures;

/// Where an event log (and read models) live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The scenarios, in the order they run.
pub const SCENARIOS: &[(&str, &str, &str)] = &[
    (
        "append",
        "2",
        "event log append: 1/8/64 writers of single events, batched",
    ),
    (
        "revocation",
        "5",
        "OCSP responses/s over HTTP; CRL of 100,000 entries",
    ),
    (
        "issuance",
        "1",
        "end-to-end issuance via gRPC until visible in the inventory",
    ),
    (
        "history",
        "4",
        "GetHistory latency with many certificates in the log",
    ),
    ("rebuild", "3", "replay a large log into every read model"),
    (
        "footprint",
        "6",
        "resident memory of certd idle and under issuance",
    ),
];

/// What the run was asked to do.
#[derive(Debug, Clone)]
pub struct Settings {
    pub scenarios: Vec<String>,
    pub quick: bool,
    pub repeats: usize,
    pub backends: Vec<Backend>,
    pub json: PathBuf,
    /// Scenarios 1 and 6: certificates per run and clients (defaults by `quick`).
    pub certificates: Option<usize>,
    pub concurrency: Option<usize>,
    /// Options added to certd's command line (`--certd-arg`).
    pub certd_args: Vec<String>,
}

impl Settings {
    /// Every (backend, repeat) to run, announcing each on stderr as `what on <backend>:
    /// repeat i/n`.
    pub fn runs<'a>(&'a self, what: &'a str) -> impl Iterator<Item = (Backend, usize)> + 'a {
        self.backends.iter().flat_map(move |&backend| {
            (1..=self.repeats).map(move |repeat| {
                progress::step(format!(
                    "{what} on {}: repeat {repeat}/{}",
                    backend.name(),
                    self.repeats
                ));
                (backend, repeat)
            })
        })
    }
}

const USAGE: &str = "usage: certledger-bench [SCENARIO...] [--quick] [--repeats N] \
[--backend sqlite|postgres|all] [--json PATH] [--certificates N] [--concurrency C] \
[--certd-arg ARG]...";

fn help() -> String {
    let mut text = format!("{USAGE}\n\nscenarios (default: all):\n");
    for (name, number, about) in SCENARIOS {
        text.push_str(&format!("  {name:<11} ({number})  {about}\n"));
    }
    text.push_str(
        "\n--quick         small sizes (seconds; what the smoke test runs)\n\
         --repeats N     runs per figure (default 3, with --quick 1)\n\
         --backend B     sqlite, postgres or all (default all)\n\
         --json PATH     the JSON report (default target/bench/certledger-bench.json)\n\
         --certificates N, --concurrency C\n\
         \x20               issuance and footprint: certificates per run, clients in flight\n\
         \x20               (default 2000 and 64; with --quick 10 and 4)\n\
         --certd-arg ARG one more option of the certd under test, after the bench's own\n\
         \x20               (repeatable; e.g. --certd-arg --key-store=files)\n\
         \nPostgreSQL: CERTLEDGER_TEST_PG_URL (default postgres://postgres@127.0.0.1:5432/test);\n\
         NATS: nats-server on PATH (or NATS_SERVER_BIN).\n",
    );
    text
}

fn parse(args: Vec<String>) -> anyhow::Result<Option<Settings>> {
    let mut scenarios = Vec::new();
    let mut quick = false;
    let mut repeats = None;
    let mut backends = vec![Backend::Sqlite, Backend::Postgres];
    let mut json = PathBuf::from("target/bench/certledger-bench.json");
    let (mut certificates, mut concurrency) = (None, None);
    let mut certd_args = Vec::new();
    let positive = |flag: &str, v: String| {
        v.parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .with_context(|| format!("{flag} {v:?}: a positive number"))
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| {
            args.next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "-h" | "--help" | "help" => {
                print!("{}", help());
                return Ok(None);
            }
            "--quick" => quick = true,
            "--repeats" => repeats = Some(positive("--repeats", value("--repeats")?)?),
            "--certificates" => {
                certificates = Some(positive("--certificates", value("--certificates")?)?)
            }
            "--concurrency" => {
                concurrency = Some(positive("--concurrency", value("--concurrency")?)?)
            }
            "--backend" => {
                backends = match value("--backend")?.as_str() {
                    "sqlite" => vec![Backend::Sqlite],
                    "postgres" | "pg" => vec![Backend::Postgres],
                    "all" => vec![Backend::Sqlite, Backend::Postgres],
                    other => bail!("--backend {other:?}: sqlite, postgres or all"),
                }
            }
            "--json" => json = PathBuf::from(value("--json")?),
            "--certd-arg" => certd_args.push(value("--certd-arg")?),
            flag if flag.starts_with('-') => bail!("unknown option {flag}\n{USAGE}"),
            name => {
                let Some((scenario, _, _)) = SCENARIOS
                    .iter()
                    .find(|(n, number, _)| *n == name || *number == name)
                else {
                    bail!("unknown scenario {name:?}\n{}", help());
                };
                if !scenarios.iter().any(|s| s == scenario) {
                    scenarios.push((*scenario).to_owned());
                }
            }
        }
    }
    if scenarios.is_empty() {
        scenarios = SCENARIOS.iter().map(|(n, _, _)| (*n).to_owned()).collect();
    }
    // Run in the documented order whatever order they were named in.
    scenarios.sort_by_key(|s| SCENARIOS.iter().position(|(n, _, _)| n == s));
    Ok(Some(Settings {
        scenarios,
        quick,
        repeats: repeats.unwrap_or(if quick { 1 } else { 3 }),
        backends,
        json,
        certificates,
        concurrency,
        certd_args,
    }))
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let load_before = report::load_average();
    let calibration = calibration::measure();
    progress::step(format!("this machine: {calibration}"));
    progress::step(format!(
        "scenarios {:?}, backends {:?}, repeats {}, quick {}; load average {:?}",
        settings.scenarios,
        settings
            .backends
            .iter()
            .map(|b| b.name())
            .collect::<Vec<_>>(),
        settings.repeats,
        settings.quick,
        load_before
    ));
    let mut figures = Figures::default();
    for scenario in &settings.scenarios {
        progress::step(format!("== {scenario}"));
        let found = match scenario.as_str() {
            "append" => append::run(&settings).await,
            "revocation" => revocation::run(&settings).await,
            "issuance" => issuance::run(&settings).await,
            "history" => history::run_history(&settings).await,
            "rebuild" => history::run_rebuild(&settings).await,
            "footprint" => footprint::run(&settings).await,
            other => bail!("no scenario {other}"),
        }
        .with_context(|| format!("scenario {scenario}"))?;
        figures.extend(found);
    }
    let load_after = report::load_average();
    print!("{}", report::table(figures.all()));
    let settings_json = json!({
        "scenarios": settings.scenarios,
        "quick": settings.quick,
        "repeats": settings.repeats,
        "backends": settings.backends.iter().map(|b| b.name()).collect::<Vec<_>>(),
        "issuance_certificates_and_concurrency": issuance::sizes(&settings),
        "postgres_url": certledger_testkit::db::pg_url(),
        "profile": if cfg!(debug_assertions) { "dev" } else { "release" },
        "command": std::env::args().collect::<Vec<_>>(),
    });
    let load = json!({ "loadavg_before": load_before, "loadavg_after": load_after });
    let document = report::report(figures.all(), settings_json, load, calibration);
    report::write_json(&settings.json, &document)?;
    progress::step(format!(
        "wrote {}; load average now {:?}",
        settings.json.display(),
        load_after
    ));
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The footprint scenario runs certd in a child process: this same binary.
    if args.first().map(String::as_str) == Some(footprint::CHILD_ARG) {
        return footprint::child_main(args[1..].to_vec());
    }
    // The services' own logs, when asked for (`RUST_LOG=warn`, say).
    if std::env::var_os("RUST_LOG").is_some() {
        certledger_runtime::telemetry::init();
    }
    let settings = match parse(args) {
        Ok(Some(settings)) => settings,
        Ok(None) => return std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("certledger-bench: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("certledger-bench: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(settings));
    stack::remove_spent_directories();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("certledger-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn scenarios_by_name_or_number_in_order() -> anyhow::Result<()> {
        let s = parse(args(&["5", "append", "--quick"]))?.context("not help")?;
        assert_eq!(s.scenarios, vec!["append", "revocation"]);
        assert!(s.quick);
        assert_eq!(s.repeats, 1);
        let s = parse(args(&[]))?.context("not help")?;
        assert_eq!(s.scenarios.len(), SCENARIOS.len());
        assert_eq!(s.repeats, 3);
        assert!(parse(args(&["nope"])).is_err());
        assert!(parse(args(&["--repeats", "0"])).is_err());
        Ok(())
    }
}
