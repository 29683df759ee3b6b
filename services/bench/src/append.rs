//! Scenario 2, event log append: events/s for 1, 8 and 64 concurrent writers appending
//! one event per call, each to its own stream, and for batched appends (many events per
//! call); on PostgreSQL (a schema of its own, dropped afterwards) and SQLite (a temporary
//! file). One log handle per run, group commit on (the default), as in
//! `services/eventlog/examples/append_throughput.rs`.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use certledger_eventlog::{EventLog, ExpectedVersion, LogOptions, Metadata, NewEvent};

use crate::progress::{Counter, step};
use crate::report::Figure;
use crate::{Backend, Settings};

const SCENARIO: &str = "append";
/// Payload size of a benchmark event (about a real certificate event without PEM).
const PAYLOAD_BYTES: usize = 200;

/// One run shape: `writers` tasks, each making `calls` appends of `events_per_call`
/// events to its own stream.
struct Shape {
    label: String,
    writers: usize,
    calls: usize,
    events_per_call: usize,
    target: Option<&'static str>,
}

fn shapes(quick: bool) -> Vec<Shape> {
    let single = |writers: usize, events: usize, target| Shape {
        label: format!("single-event appends, {writers} writers"),
        writers,
        calls: (events / writers).max(1),
        events_per_call: 1,
        target,
    };
    let (small, large) = if quick { (40, 128) } else { (2_000, 25_600) };
    vec![
        single(1, small, None),
        single(8, small * 4, None),
        single(64, large, Some(">= 20000 (64 writers)")),
        Shape {
            label: "batched appends, 4 writers x 100 events per call".into(),
            writers: 4,
            calls: if quick { 2 } else { 100 },
            events_per_call: 100,
            target: None,
        },
    ]
}

/// An event log of `backend` that lives as long as the value.
pub struct BenchLog {
    pub log: Arc<dyn EventLog>,
    pub url: String,
    /// The PostgreSQL schema (`None`: SQLite).
    pub pg_schema: Option<String>,
    // Dropped last: the PostgreSQL schema (dropped with it) or the SQLite directory.
    _pg: Option<certledger_testkit::db::TestDb>,
    _dir: Option<tempfile::TempDir>,
}

impl BenchLog {
    /// A fresh log: its own PostgreSQL schema (dropped when this is dropped) or a SQLite
    /// file in a temporary directory.
    pub async fn open(backend: Backend, options: LogOptions) -> anyhow::Result<Self> {
        match backend {
            Backend::Postgres => {
                let db = certledger_testkit::db::TestDb::postgres().await?;
                let log = certledger_eventlog::connect_with(
                    &db.url,
                    options.pg_schema(db.schema.clone()),
                )
                .await
                .with_context(|| format!("opening the event log in schema {}", db.schema))?;
                Ok(Self {
                    log,
                    url: db.url.clone(),
                    pg_schema: Some(db.schema.clone()),
                    _pg: Some(db),
                    _dir: None,
                })
            }
            Backend::Sqlite => {
                let dir = tempfile::tempdir().context("creating a temporary directory")?;
                let url = format!("sqlite:{}", dir.path().join("events.db").display());
                let log = certledger_eventlog::connect_with(&url, options)
                    .await
                    .with_context(|| format!("opening {url}"))?;
                Ok(Self {
                    log,
                    url,
                    pg_schema: None,
                    _pg: None,
                    _dir: Some(dir),
                })
            }
        }
    }
}

impl BenchLog {
    /// `sqlite:` URL of another file beside a SQLite log.
    pub fn sibling_sqlite(&self, file: &str) -> anyhow::Result<String> {
        let dir = self
            ._dir
            .as_ref()
            .context("a PostgreSQL log has no directory")?;
        Ok(format!("sqlite:{}", dir.path().join(file).display()))
    }
}

async fn run_shape(log: &Arc<dyn EventLog>, shape: &Shape, tag: &str) -> anyhow::Result<f64> {
    let total = (shape.writers * shape.calls * shape.events_per_call) as u64;
    let counter = Counter::start(shape.label.clone(), total);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(shape.writers);
    for w in 0..shape.writers {
        let log = log.clone();
        let done = counter.handle();
        let (calls, per_call) = (shape.calls, shape.events_per_call);
        let stream = format!("certificate-bench-{tag}-{w}");
        tasks.push(tokio::spawn(async move {
            for call in 0..calls {
                let events = (0..per_call)
                    .map(|_| {
                        NewEvent::new(
                            "Benchmarked",
                            1,
                            vec![0u8; PAYLOAD_BYTES],
                            Metadata::default(),
                        )
                    })
                    .collect();
                let expected = match call {
                    0 => ExpectedVersion::NoStream,
                    _ => ExpectedVersion::Exact((call * per_call) as u64),
                };
                log.append_one(&stream, expected, events)
                    .await
                    .with_context(|| format!("appending to {stream}"))?;
                done.fetch_add(per_call as u64, std::sync::atomic::Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await.context("writer task")??;
    }
    let elapsed = start.elapsed();
    Ok(total as f64 / elapsed.as_secs_f64())
}

pub async fn run(settings: &Settings) -> anyhow::Result<Vec<Figure>> {
    let mut figures = Vec::new();
    for (backend, repeat) in settings.runs("append") {
        let db = BenchLog::open(backend, LogOptions::new().max_connections(16)).await?;
        for (i, shape) in shapes(settings.quick).iter().enumerate() {
            let rate = run_shape(&db.log, shape, &format!("{repeat}-{i}")).await?;
            step(format!("  {}: {rate:.0} events/s", shape.label));
            let mut figure = Figure::new(
                SCENARIO,
                format!("{} {}", backend.name(), shape.label),
                "events/s",
            )
            .note(format!(
                "{} events of {PAYLOAD_BYTES} bytes; group commit on; fresh log per repeat",
                shape.writers * shape.calls * shape.events_per_call
            ))
            .sample(rate);
            if let Some(target) = shape.target {
                figure = figure.target(target);
            }
            figures.push(figure);
        }
    }
    Ok(figures)
}
