//! Opening the event log and the event source from configuration, and running what
//! reacts to events: the same code for every service binary.
//!
//! * No NATS URL: consumers tail the SQL log (embedded mode).
//! * With a NATS URL: the JetStream streams are ensured, consumers are durable pull
//!   consumers, and (unless switched off) this process also runs a relay that publishes
//!   the log to JetStream. Several relays take turns on the log's lease (one publishes);
//!   after a takeover JetStream drops the repeats by event id.
//! * Read models (the projector's, the order service's certificate list) tail the log in
//!   either case: see [`read_model_source`]. The readers of one process (relay, read
//!   models, SQL-tail consumers) share their reads of the log: [`open_log`].

use std::sync::Arc;

use certledger_eventlog::{EventLog, LogOptions, SharedReads, StorageError};
use certledger_eventstream::consumer::{ConsumerSettings, EventSource, Handler};
use certledger_eventstream::relay::{Relay, RelaySettings};
use certledger_eventstream::setup::{STREAM, StreamSettings, ensure_streams};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Opens the event log at `url` (`postgres://…` in `pg_schema`, or `sqlite:…`), its
/// reads shared by the process's readers ([`SharedReads`]).
pub async fn open_log(url: &str, pg_schema: &str) -> Result<Arc<dyn EventLog>, StorageError> {
    let log =
        certledger_eventlog::connect_with(url, LogOptions::new().pg_schema(pg_schema)).await?;
    Ok(SharedReads::wrap(log))
}

/// Why the event source could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// NATS is unreachable.
    #[error("connecting to NATS: {0}")]
    Connect(String),
    /// The JetStream streams could not be set up.
    #[error(transparent)]
    Setup(#[from] certledger_eventstream::setup::SetupError),
}

/// The event source for `nats_url` (`None`: tail the SQL log; several servers
/// comma-separated). With NATS and `relay`,
/// also spawns a relay publishing the log until `shutdown`; its task is returned.
pub async fn open_source(
    log: Arc<dyn EventLog>,
    nats_url: Option<&str>,
    relay: bool,
    shutdown: CancellationToken,
) -> Result<(EventSource, Option<JoinHandle<()>>), SourceError> {
    let Some(url) = nats_url else {
        return Ok((EventSource::SqlTail { log }, None));
    };
    // A cluster is given as a comma-separated list; the client fails over between them.
    let servers: Vec<&str> = url
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let client = async_nats::connect(servers)
        .await
        .map_err(|e| SourceError::Connect(e.to_string()))?;
    let js = async_nats::jetstream::new(client);
    ensure_streams(&js, &StreamSettings::default()).await?;
    let relay_task = relay.then(|| {
        let relay = Relay::new(log, js.clone(), RelaySettings::default());
        tokio::spawn(async move { relay.run(shutdown).await })
    });
    Ok((
        EventSource::JetStream {
            js,
            stream: STREAM.to_owned(),
        },
        relay_task,
    ))
}

/// For a process whose consumers all tail the log: a relay publishing the log to the
/// NATS at `nats_url` until `shutdown`, or none (no URL, or `relay` off; NATS is then not
/// contacted at all).
pub async fn spawn_relay(
    log: Arc<dyn EventLog>,
    nats_url: Option<&str>,
    relay: bool,
    shutdown: CancellationToken,
) -> Result<Option<JoinHandle<()>>, SourceError> {
    match nats_url.filter(|_| relay) {
        Some(url) => Ok(open_source(log, Some(url), true, shutdown).await?.1),
        None => Ok(None),
    }
}

/// Where read models take their events from: the log itself, also when NATS carries
/// events between services. A read model needs every event of the log in order, which
/// the log gives a page at a time from one query; through JetStream each event is a
/// delivery and an ack per model (scenario 1 of BENCHMARKS.md: a fifth to a quarter of
/// the machine's CPU per certificate). Replicas take turns on the log's lease
/// ([`EventLog::lease`]): one keeps the model, the others stand by.
pub fn read_model_source(log: Arc<dyn EventLog>) -> EventSource {
    EventSource::SqlTail { log }
}

/// Runs a consumer until `shutdown` (spawns a task that logs a consumer failure).
pub fn spawn_consumer(
    source: EventSource,
    settings: ConsumerSettings,
    handler: Arc<dyn Handler>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let name = settings.name.clone();
        if let Err(error) = source.run(settings, handler, shutdown).await {
            tracing::error!(consumer = %name, %error, "consumer stopped with an error");
        }
    })
}
