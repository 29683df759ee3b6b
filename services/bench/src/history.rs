//! Scenarios 4 (history read) and 3 (history rebuild), on a large generated log.
//!
//! The log is generated fast by appending domain events directly: one certificate is
//! ordered and issued for real (in-process services on SQLite); its events are the
//! template, copied for every generated certificate with a new certificate id and serial,
//! and appended many certificates per transaction.
//!
//! * history: `GetHistory` of the order service (gRPC, loopback) for random certificates
//!   of the log, one call at a time; p50/p99.
//! * rebuild: `Projector::rebuild` of every read model from position 0; events/s.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use certledger_domain::CertificateEvent;
use certledger_eventlog::{
    EventLog, ExpectedVersion, LogOptions, NewEvent, RecordedEvent, SharedReads, StreamAppend,
};
use certledger_order::OrderSetup;
use certledger_projections::{
    ProjectionStore, Projector, ProjectorConfig, ReadModel, StoreOptions,
};
use certledger_proto::codec::EventCodec;
use certledger_proto::order::v1::GetHistoryRequest;
use certledger_proto::order::v1::order_service_client::OrderServiceClient;
use certledger_runtime::repository::{certificate_stream, decode_event};
use tokio_util::sync::CancellationToken;

use crate::append::BenchLog;
use crate::issuance::{Completion, KeyMode, applications, drive};
use crate::progress::{Counter, step};
use crate::report::{Figure, percentile_ms};
use crate::stack::{Platform, Storage};
use crate::{Backend, Settings};

/// Certificates per append transaction while generating.
const CERTIFICATES_PER_APPEND: usize = 100;
/// Concurrent appenders while generating.
const GENERATORS: usize = 4;

/// The events of one certificate ordered and issued for real.
pub struct Template {
    events: Vec<(RecordedEvent, CertificateEvent)>,
}

impl Template {
    /// Orders one certificate on an in-process platform (SQLite, certd's defaults) and
    /// keeps its events.
    pub async fn record() -> anyhow::Result<Self> {
        step("recording a template certificate (order and issue one for real)");
        let storage = Storage::new(Backend::Sqlite, &[]).await?;
        let platform = Platform::start(&storage).await?;
        drive(
            &platform.order_url,
            applications(1, KeyMode::Generated)?,
            1,
            Completion::Polled,
            "template",
        )
        .await?;
        let mut events = Vec::new();
        let mut after = 0;
        loop {
            let page = platform
                .log
                .read_all(after, 1000)
                .await
                .context("reading the template")?;
            let Some(last) = page.last() else { break };
            after = last.position;
            for recorded in page {
                if !recorded.stream_id.starts_with("certificate-") {
                    continue;
                }
                if let Some(event) = decode_event(&recorded).context("decoding the template")? {
                    events.push((recorded, event));
                }
            }
        }
        platform.stop().await;
        if events.is_empty() {
            bail!("the template certificate has no events");
        }
        Ok(Self { events })
    }

    /// Events per certificate.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// The template's events for certificate `id` with serial `serial`.
    fn events_for(&self, id: &str, serial: &str) -> Vec<NewEvent> {
        self.events
            .iter()
            .map(|(recorded, event)| {
                let mut event = event.clone();
                match &mut event {
                    CertificateEvent::CertificateOrdered(e) => e.certificate_id = id.to_owned(),
                    CertificateEvent::IssuanceIntended(e) => e.serial = serial.to_owned(),
                    CertificateEvent::CertificateIssued(e) => e.serial = serial.to_owned(),
                    _ => {}
                }
                NewEvent::new(
                    event.event_type(),
                    recorded.schema_version,
                    event.encode_payload(),
                    recorded.metadata.clone(),
                )
            })
            .collect()
    }
}

/// Appends `certificates` copies of the template; returns their ids.
pub async fn generate(
    log: &Arc<dyn EventLog>,
    template: &Arc<Template>,
    certificates: usize,
) -> anyhow::Result<Vec<String>> {
    let run = uuid::Uuid::now_v7().simple().to_string();
    let ids: Arc<Vec<String>> = Arc::new(
        (0..certificates)
            .map(|i| format!("{}-{i:08}", &run[..16]))
            .collect(),
    );
    let counter = Counter::start(
        "generating the log (events)",
        (certificates * template.len()) as u64,
    );
    let mut tasks = Vec::new();
    for g in 0..GENERATORS {
        let (log, template, ids, done) =
            (log.clone(), template.clone(), ids.clone(), counter.handle());
        tasks.push(tokio::spawn(async move {
            let chunks = ids
                .chunks(CERTIFICATES_PER_APPEND)
                .skip(g)
                .step_by(GENERATORS);
            for (c, chunk) in chunks.enumerate() {
                let appends: Vec<StreamAppend> = chunk
                    .iter()
                    .enumerate()
                    .map(|(k, id)| StreamAppend {
                        stream_id: certificate_stream(id),
                        expected: ExpectedVersion::NoStream,
                        events: template.events_for(id, &format!("01{g:02x}{c:08x}{k:04x}")),
                    })
                    .collect();
                let events: usize = appends.iter().map(|a| a.events.len()).sum();
                log.append(appends)
                    .await
                    .context("appending generated events")?;
                done.fetch_add(events as u64, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await.context("generator task")??;
    }
    Arc::try_unwrap(ids).map_err(|_| anyhow::anyhow!("generator ids still shared"))
}

fn history_sizes(quick: bool) -> (usize, usize) {
    // (certificates in the log, GetHistory calls)
    if quick { (200, 100) } else { (100_000, 2_000) }
}

fn rebuild_certificates(quick: bool, events_per_certificate: usize) -> usize {
    if quick {
        200
    } else {
        1_000_000usize.div_ceil(events_per_certificate.max(1))
    }
}

/// A generated log on `backend` with its template and ids.
async fn generated(
    backend: Backend,
    template: &Arc<Template>,
    certificates: usize,
) -> anyhow::Result<(BenchLog, Vec<String>, Duration)> {
    let db = BenchLog::open(backend, LogOptions::new().max_connections(8)).await?;
    step(format!(
        "generating {certificates} certificates x {} events on {}",
        template.len(),
        backend.name()
    ));
    let start = Instant::now();
    let ids = generate(&db.log, template, certificates).await?;
    let took = start.elapsed();
    step(format!(
        "  generated in {took:.1?} ({:.0} events/s)",
        (certificates * template.len()) as f64 / took.as_secs_f64()
    ));
    Ok((db, ids, took))
}

pub async fn run_history(settings: &Settings) -> anyhow::Result<Vec<Figure>> {
    let template = Arc::new(Template::record().await?);
    let (certificates, calls) = history_sizes(settings.quick);
    let mut figures = Vec::new();
    for &backend in &settings.backends {
        let (db, ids, _) = generated(backend, &template, certificates).await?;
        let shutdown = CancellationToken::new();
        let order = certledger_order::start(
            OrderSetup {
                repo: certledger_runtime::CertificateRepository::new(db.log.clone()),
                listen: ([127, 0, 0, 1], 0).into(),
                issuers: vec!["builtin".into()],
                server: Default::default(),
                list: None,
                renewal: Default::default(),
                tasks: Vec::new(),
            },
            shutdown.clone(),
        )
        .await
        .context("starting the order service")?;
        let mut client = OrderServiceClient::connect(order.url())
            .await
            .context("connecting to the order service")?;
        for repeat in 1..=settings.repeats {
            step(format!(
                "GetHistory on {}: repeat {repeat}/{}, {calls} calls",
                backend.name(),
                settings.repeats
            ));
            let counter = Counter::start("GetHistory calls", calls as u64);
            let mut latencies = Vec::with_capacity(calls);
            for i in 0..calls {
                // A spread of certificates over the whole log (a cheap, deterministic mix).
                let id = &ids[(i * 7919 + repeat * 104_729) % ids.len()];
                let start = Instant::now();
                let entries = client
                    .get_history(GetHistoryRequest {
                        certificate_id: id.clone(),
                    })
                    .await
                    .with_context(|| format!("GetHistory {id}"))?
                    .into_inner()
                    .entries;
                latencies.push(start.elapsed());
                if entries.len() != template.len() {
                    bail!(
                        "GetHistory {id}: {} entries, expected {}",
                        entries.len(),
                        template.len()
                    );
                }
                counter.add(1);
            }
            latencies.sort();
            let (p50, p99) = (
                percentile_ms(&latencies, 50.0),
                percentile_ms(&latencies, 99.0),
            );
            step(format!("  p50 {p50:.2} ms, p99 {p99:.2} ms"));
            let note = format!(
                "order service GetHistory over loopback gRPC, one call at a time; {certificates} certificates ({} events) in the log, {} events each",
                certificates * template.len(),
                template.len()
            );
            figures.push(
                Figure::new(
                    "history",
                    format!("{} GetHistory p50", backend.name()),
                    "ms",
                )
                .note(note.clone())
                .sample(p50),
            );
            figures.push(
                Figure::new(
                    "history",
                    format!("{} GetHistory p99", backend.name()),
                    "ms",
                )
                .target("< 5 (100,000 certificates)")
                .note(note)
                .sample(p99),
            );
        }
        shutdown.cancel();
        let _ = order.wait().await;
        drop(db);
    }
    Ok(figures)
}

pub async fn run_rebuild(settings: &Settings) -> anyhow::Result<Vec<Figure>> {
    let template = Arc::new(Template::record().await?);
    let certificates = rebuild_certificates(settings.quick, template.len());
    let events = certificates * template.len();
    let mut figures = Vec::new();
    for &backend in &settings.backends {
        let (db, _, _) = generated(backend, &template, certificates).await?;
        let store_url = match &db.pg_schema {
            Some(_) => db.url.clone(),
            None => db.sibling_sqlite("projections.db")?,
        };
        let store = ProjectionStore::connect_with(
            &store_url,
            StoreOptions::new().pg_schema(db.pg_schema.clone().unwrap_or_default()),
        )
        .await
        .context("opening the read models")?;
        // The log as the services open it (`open_log`): reads shared by the process's readers.
        let log = SharedReads::wrap(db.log.clone());
        let projector = Projector::new(store, log, ProjectorConfig::default());
        for repeat in 1..=settings.repeats {
            step(format!(
                "rebuild on {}: repeat {repeat}/{}, {events} events into every read model",
                backend.name(),
                settings.repeats
            ));
            let mut last_report = Instant::now();
            let mut report = |p: &certledger_projections::Progress| {
                if last_report.elapsed() >= Duration::from_secs(2) || p.finished {
                    last_report = Instant::now();
                    eprintln!(
                        "[bench]   rebuild: {}/{} events ({:.0}/s)",
                        p.events_done, p.head, p.rate_per_sec
                    );
                }
            };
            let start = Instant::now();
            projector
                .rebuild(&ReadModel::ALL, &mut report)
                .await
                .context("rebuilding the read models")?;
            let rate = events as f64 / start.elapsed().as_secs_f64();
            step(format!("  {rate:.0} events/s"));
            figures.push(
                Figure::new(
                    "rebuild",
                    format!("{} rebuild of every read model", backend.name()),
                    "events/s",
                )
                .target(">= 200000 (1,000,000 events)")
                .note(format!(
                    "{events} events ({certificates} certificates); log and read models in the same {}",
                    if db.pg_schema.is_some() { "PostgreSQL schema" } else { "directory (two SQLite files)" }
                ))
                .sample(rate),
            );
        }
        projector.store().close().await;
        drop(projector);
        drop(db);
    }
    Ok(figures)
}
