//! Consumers: the services' reactions to events and the read models, fed either by a
//! durable JetStream pull consumer (the reactions in distributed mode; replicas of a
//! service share one consumer and split the work) or by tailing the SQL log (the read
//! models always, everything in embedded mode; replicas take turns on the log's lease).
//! Handlers are the same in both.
//!
//! A handler must be idempotent: an event can be delivered more than once (after a
//! crash before the ack, a redelivery, a relay republish). A handler that decides from
//! the current state of the log (load, fold, decide) gets this for free: the second
//! delivery finds the effect already there and decides nothing.
//!
//! Results: `Ok` → ack (after the handler's own effect is committed); `Retry` → nak with
//! backoff (the same event is retried, at most `max_deliver` deliveries); `Poison` or
//! retries exhausted → the event is copied to the dead-letter subject
//! `certledger.dlq.<consumer>`, logged, and terminated.

use crate::checkpoint::{Checkpoint, sleep_until_some};
use crate::envelope;
use crate::leased::{Leased, while_leased};
use crate::pull::{Pull, PullError};
use crate::relay::{Backoff, delay_for_attempt};
use crate::setup::DEAD_LETTER_ROOT;
use crate::subject;
use async_nats::jetstream::{self, AckKind, consumer::pull};
use async_trait::async_trait;
use certledger_eventlog::{EventLog, RecordedEvent};
use futures::{FutureExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// A transient failure (database or network): retry later.
    #[error("retryable: {0}")]
    Retry(String),
    /// The event can never be handled; retrying will not help.
    #[error("poison: {0}")]
    Poison(String),
}

#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Handles one event; returns only after the handler's effect is committed.
    async fn handle(&self, event: &RecordedEvent) -> Result<(), HandlerError>;

    /// Handles several events at once — those available, in delivery order, for a
    /// consumer with [`ConsumerSettings::batched`] — e.g. in one transaction. After an
    /// error the consumer handles them again one by one with [`Handler::handle`] (which
    /// retries and dead-letters each on its own), so a partial effect must be idempotent.
    /// By default: one after the other.
    async fn handle_batch(&self, events: &[RecordedEvent]) -> Result<(), HandlerError> {
        for event in events {
            self.handle(event).await?;
        }
        Ok(())
    }
}

/// Which events a consumer receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    All,
    /// Every event of one aggregate kind (the stream id prefix, e.g. "certificate").
    Aggregate(String),
    /// Events of these types of one aggregate kind. NATS 2.9 gives a consumer one filter
    /// subject, so on JetStream each type of several has a durable consumer of its own,
    /// `<name>-<EventType>`: events of different types are then handled in either order,
    /// also those of one stream.
    EventTypes {
        aggregate: String,
        event_types: Vec<String>,
    },
}

impl Filter {
    /// The JetStream durable consumers for a consumer named `name`: their names and
    /// filter subjects.
    pub fn durables(&self, name: &str) -> Vec<(String, String)> {
        match self {
            Filter::All => vec![(name.to_owned(), subject::ALL.to_owned())],
            Filter::Aggregate(aggregate) => {
                vec![(name.to_owned(), subject::filter_aggregate(aggregate))]
            }
            Filter::EventTypes {
                aggregate,
                event_types,
            } => {
                let subject = |event_type: &str| subject::filter_event_type(aggregate, event_type);
                match event_types.as_slice() {
                    [one] => vec![(name.to_owned(), subject(one))],
                    several => several
                        .iter()
                        .map(|t| (format!("{name}-{}", subject::token(t)), subject(t)))
                        .collect(),
                }
            }
        }
    }

    pub fn matches(&self, event: &RecordedEvent) -> bool {
        let (aggregate_of, _) = subject::split_stream_id(&event.stream_id);
        match self {
            Filter::All => true,
            Filter::Aggregate(aggregate) => aggregate_of == aggregate,
            Filter::EventTypes {
                aggregate,
                event_types,
            } => aggregate_of == aggregate && event_types.contains(&event.event_type),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// Durable consumer name (JetStream) or checkpoint name (SQL tail); one per service.
    pub name: String,
    pub filter: Filter,
    /// Deliveries before an event that keeps failing is dead-lettered.
    pub max_deliver: u32,
    /// How long JetStream waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// Messages pulled per request; small values spread work across replicas more evenly.
    pub batch: usize,
    /// Events of different streams handled at once (those of one stream always one
    /// after the other, in order). 1: one event at a time. Only for handlers whose
    /// effects on different streams are independent.
    pub concurrency: usize,
    /// Hand the events available (up to `batch`) to [`Handler::handle_batch`] at once
    /// (with `concurrency` 1 only).
    pub batched: bool,
    /// SQL tail: how long handled events may go without the checkpoint saying so. The
    /// checkpoint is a write transaction on the log's database; saving it after every
    /// batch cost each consumer a commit per append under load. Events handled since the
    /// last save are delivered again after a crash (handlers are idempotent); a clean
    /// shutdown saves it.
    pub checkpoint_interval: Duration,
    /// SQL tail: how long a consumer that has caught up waits, once told of new events,
    /// before it reads them, so that one read and one handling take the events of several
    /// commits. Zero reads at once. For handlers whose readers accept that much delay.
    pub linger: Duration,
}

impl ConsumerSettings {
    pub fn new(name: impl Into<String>, filter: Filter) -> Self {
        Self {
            name: name.into(),
            filter,
            max_deliver: 5,
            ack_wait: Duration::from_secs(30),
            batch: 64,
            concurrency: 1,
            batched: false,
            checkpoint_interval: Duration::from_millis(200),
            linger: Duration::ZERO,
        }
    }

    /// With the events available handed over together (see [`ConsumerSettings::batched`]).
    pub fn batched(mut self) -> Self {
        self.batched = true;
        self
    }

    /// With up to `n` streams' events handled at once (see [`ConsumerSettings::concurrency`]).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Lingering `d` before reading news (see [`ConsumerSettings::linger`]).
    pub fn linger(mut self, d: Duration) -> Self {
        self.linger = d;
        self
    }
}

/// The lane (0..lanes) of a stream: the same stream always gets the same lane. Streams
/// sharing a lane are handled one after the other.
pub fn lane_of(stream_key: &str, lanes: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    stream_key.hash(&mut hasher);
    usize::try_from(hasher.finish() % lanes.max(1) as u64).unwrap_or(0)
}

/// Where a service's consumer reads events from; chosen by configuration.
#[derive(Clone)]
#[allow(clippy::large_enum_variant)] // built once per service; never moved in a hot path
pub enum EventSource {
    /// A durable pull consumer on the JetStream stream.
    JetStream {
        js: jetstream::Context,
        stream: String,
    },
    /// Tails the SQL log (embedded mode, no NATS).
    SqlTail { log: Arc<dyn EventLog> },
}

#[derive(Debug, thiserror::Error)]
#[error("consumer {name}: {context}: {source}")]
pub struct ConsumerError {
    pub name: String,
    pub context: &'static str,
    #[source]
    pub source: async_nats::Error,
}

enum Outcome {
    Done,
    RetryIn(Duration),
    DeadLetter(String),
}

fn outcome(result: Result<(), HandlerError>, attempt: u32, max_deliver: u32) -> Outcome {
    match result {
        Ok(()) => Outcome::Done,
        Err(HandlerError::Retry(why)) if attempt >= max_deliver => {
            Outcome::DeadLetter(format!("gave up after {attempt} deliveries: {why}"))
        }
        Err(HandlerError::Retry(_)) => Outcome::RetryIn(delay_for_attempt(attempt)),
        Err(HandlerError::Poison(why)) => Outcome::DeadLetter(why),
    }
}

impl EventSource {
    /// Feeds `handler` until `shutdown`; the event in hand is finished first.
    pub async fn run(
        &self,
        settings: ConsumerSettings,
        handler: Arc<dyn Handler>,
        shutdown: CancellationToken,
    ) -> Result<(), ConsumerError> {
        match self {
            EventSource::JetStream { js, stream } => {
                run_jetstream(js, stream, &settings, handler.as_ref(), &shutdown).await
            }
            EventSource::SqlTail { log } => {
                run_sql_tail(log.as_ref(), &settings, handler.as_ref(), &shutdown).await;
                Ok(())
            }
        }
    }
}

/// How long a pull request waits on the server for messages (async-nats: 30 s).
const PULL_EXPIRES: Duration = Duration::from_secs(10);
/// How often the server says a waiting pull request is alive. Two missed end the messages,
/// which are then opened again: a pull request the server no longer holds (a restart, a
/// new leader) stops delivery for seconds, not for 30 s or more.
const PULL_HEARTBEAT: Duration = Duration::from_secs(2);

async fn run_jetstream(
    js: &jetstream::Context,
    stream: &str,
    settings: &ConsumerSettings,
    handler: &dyn Handler,
    shutdown: &CancellationToken,
) -> Result<(), ConsumerError> {
    let durables = settings.filter.durables(&settings.name);
    futures::future::join_all(durables.iter().map(|(name, filter)| {
        let durable = Durable {
            js,
            stream,
            settings,
            name,
            filter,
        };
        async move { durable.run(handler, shutdown).await }
    }))
    .await;
    Ok(())
}

/// One durable consumer of a consumer's settings (a filter of several event types has one
/// per type).
#[derive(Clone, Copy)]
struct Durable<'a> {
    js: &'a jetstream::Context,
    stream: &'a str,
    settings: &'a ConsumerSettings,
    name: &'a str,
    filter: &'a str,
}

impl Durable<'_> {
    /// Consumes until `shutdown`.
    async fn run(self, handler: &dyn Handler, shutdown: &CancellationToken) {
        tracing::info!(consumer = %self.name, filter = %self.filter, "consumer started");
        let mut backoff = Backoff::default();
        while !shutdown.is_cancelled() {
            // Returns when the message stream ends or fails; reopened after a backoff (the
            // server may be restarting, or the client failing over to another node).
            match consume(self, handler, shutdown).await {
                Ok(()) => backoff.reset(),
                Err(error) => {
                    let delay = backoff.next();
                    tracing::warn!(%error, retry_in = ?delay, "consumer interrupted; reopening");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.cancelled() => {}
                    }
                }
            }
        }
        tracing::info!(consumer = %self.name, "consumer stopped");
    }
}

async fn consume(
    durable: Durable<'_>,
    handler: &dyn Handler,
    shutdown: &CancellationToken,
) -> Result<(), ConsumerError> {
    let Durable {
        js,
        stream,
        settings,
        name: durable,
        filter,
    } = durable;
    let err = |context: &'static str| {
        let name = durable.to_owned();
        move |e: async_nats::Error| ConsumerError {
            name,
            context,
            source: e,
        }
    };
    let consumer: jetstream::consumer::Consumer<pull::Config> = js
        .get_stream(stream)
        .await
        .map_err(|e| err("looking up the stream")(e.into()))?
        .get_or_create_consumer(
            durable,
            pull::Config {
                durable_name: Some(durable.to_owned()),
                filter_subject: filter.to_owned(),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: settings.ack_wait,
                // We count deliveries ourselves and dead-letter; the server never drops.
                max_deliver: -1,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| err("creating the durable consumer")(e.into()))?;
    let mut messages = std::pin::pin!(
        Pull::open(js, consumer, settings.batch, PULL_EXPIRES, PULL_HEARTBEAT)
            .await
            .map_err(|e| err("opening the message stream")(e.into()))?
            .into_stream()
    );
    let dead_letter_subject = format!("{DEAD_LETTER_ROOT}.{}", subject::token(&settings.name));
    let process = |message| handle_message(js, settings, handler, &dead_letter_subject, message);
    if settings.concurrency <= 1 {
        while let Some(message) = next_message(&mut messages, shutdown, &settings.name).await? {
            if !settings.batched {
                process(message).await;
                continue;
            }
            // The messages already here, up to a batch, handled together; a receiving
            // error after them ends the stream only once they are handled (dropped, they
            // would wait out the ack wait before their redelivery).
            let (batch, failed) = gather(message, &mut messages, settings.batch);
            let events: Result<Vec<RecordedEvent>, _> = batch
                .iter()
                .map(|m| envelope::from_message(m.headers.as_ref(), &m.payload))
                .collect();
            let handled = match events {
                Ok(events) => handler.handle_batch(&events).await.is_ok(),
                Err(_) => false,
            };
            for message in batch {
                if handled {
                    if let Err(error) = message.ack().await {
                        tracing::warn!(consumer = %settings.name, %error, "acknowledging failed");
                    }
                } else {
                    process(message).await;
                }
            }
            if let Some(error) = failed {
                return Err(err("receiving")(error.into()));
            }
        }
        return Ok(());
    }
    // Lanes: a stream's events go to one lane, handled in order; lanes run side by side.
    let lanes = settings.concurrency;
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..lanes)
        .map(|_| tokio::sync::mpsc::channel::<jetstream::Message>(4))
        .unzip();
    let process = &process;
    let workers = futures::future::join_all(receivers.into_iter().map(|mut rx| async move {
        while let Some(message) = rx.recv().await {
            process(message).await;
        }
    }));
    let dispatch = async move {
        let result = loop {
            let message = match next_message(&mut messages, shutdown, &settings.name).await {
                Ok(Some(message)) => message,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            };
            // certledger.v1.<tenant>.<aggregate>.<id>.<EventType>: the stream is all but
            // the last token.
            let key = message
                .subject
                .as_str()
                .rsplit_once('.')
                .map_or(message.subject.as_str(), |(stream, _)| stream);
            let lane = lane_of(key, lanes);
            if senders[lane].send(message).await.is_err() {
                break Ok(());
            }
        };
        drop(senders);
        result
    };
    let (result, _) = tokio::join!(dispatch, workers);
    result
}

/// `first` and the items `messages` has ready after it, up to `max` in all, and the error
/// that stopped the gathering, if one did.
fn gather<M, E>(
    first: M,
    messages: &mut (impl futures::Stream<Item = Result<M, E>> + Unpin),
    max: usize,
) -> (Vec<M>, Option<E>) {
    let mut batch = vec![first];
    while batch.len() < max {
        match messages.next().now_or_never() {
            Some(Some(Ok(message))) => batch.push(message),
            Some(Some(Err(error))) => return (batch, Some(error)),
            Some(None) | None => break,
        }
    }
    (batch, None)
}

/// The next message, or `None` at shutdown.
async fn next_message(
    messages: &mut (impl futures::Stream<Item = Result<jetstream::Message, PullError>> + Unpin),
    shutdown: &CancellationToken,
    name: &str,
) -> Result<Option<jetstream::Message>, ConsumerError> {
    let failed = |source: async_nats::Error| ConsumerError {
        name: name.to_owned(),
        context: "receiving",
        source,
    };
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => Ok(None),
        next = messages.next() => match next {
            Some(Ok(message)) => Ok(Some(message)),
            Some(Err(error)) => Err(failed(error.into())),
            None => Err(failed("the message stream ended".into())),
        },
    }
}

/// Handles one JetStream message and acknowledges it: ack when handled, nak with a
/// backoff to retry, dead-letter (and terminate) when it can never be handled.
async fn handle_message(
    js: &jetstream::Context,
    settings: &ConsumerSettings,
    handler: &dyn Handler,
    dead_letter_subject: &str,
    message: jetstream::Message,
) {
    let attempt = message
        .info()
        .map(|info| u32::try_from(info.delivered).unwrap_or(u32::MAX))
        .unwrap_or(1);
    let result = match envelope::from_message(message.headers.as_ref(), &message.payload) {
        Ok(event) => handler.handle(&event).await,
        Err(error) => Err(HandlerError::Poison(error.to_string())),
    };
    let ack = match outcome(result, attempt, settings.max_deliver) {
        Outcome::Done => AckKind::Ack,
        Outcome::RetryIn(delay) => {
            tracing::warn!(consumer = %settings.name, subject = %message.subject, attempt, retry_in = ?delay, "handler failed; will retry");
            AckKind::Nak(Some(delay))
        }
        Outcome::DeadLetter(why) => {
            tracing::error!(consumer = %settings.name, subject = %message.subject, attempt, reason = %why, "dead-lettering event");
            // Keep the event's own Nats-Msg-Id out, so the DLQ copy is not deduped away.
            let mut headers = async_nats::HeaderMap::new();
            for (name, values) in message.headers.iter().flat_map(|h| h.iter()) {
                if !AsRef::<str>::as_ref(name).eq_ignore_ascii_case(envelope::H_MSG_ID) {
                    for value in values {
                        headers.append(name.clone(), value.clone());
                    }
                }
            }
            headers.insert("certledger-dead-letter-reason", why.as_str());
            headers.insert("certledger-original-subject", message.subject.as_str());
            let published = js
                .publish_with_headers(
                    dead_letter_subject.to_owned(),
                    headers,
                    message.payload.clone(),
                )
                .await;
            match published {
                Ok(ack) => match ack.await {
                    Ok(_) => AckKind::Term,
                    Err(error) => {
                        tracing::warn!(%error, "dead-letter publish not acknowledged; leaving the event for redelivery");
                        AckKind::Nak(Some(delay_for_attempt(attempt)))
                    }
                },
                Err(error) => {
                    tracing::warn!(%error, "dead-letter publish failed; leaving the event for redelivery");
                    AckKind::Nak(Some(delay_for_attempt(attempt)))
                }
            }
        }
    };
    if let Err(error) = message.ack_with(ack).await {
        // The event will be redelivered; the handler's idempotency absorbs it.
        tracing::warn!(consumer = %settings.name, %error, "acknowledging failed");
    }
}

/// Events read from the log at a time by a SQL-tail consumer.
const SQL_TAIL_PAGE: u32 = 256;
/// Events waiting per lane of a SQL-tail consumer with `concurrency` > 1.
const LANE_QUEUE: usize = 16;

/// Reads the log from the consumer's checkpoint, in position order, while it holds the
/// consumer's lease on the log: of several processes tailing one log with the same
/// consumer (replicas of a service), one reads, the others wait to take over. A lost lease
/// stops the reading where it is; it resumes from the checkpoint once the lease is held
/// again (handlers are idempotent).
async fn run_sql_tail(
    log: &dyn EventLog,
    settings: &ConsumerSettings,
    handler: &dyn Handler,
    shutdown: &CancellationToken,
) {
    let checkpoint_name = format!("consumer:{}", settings.name);
    let mut backoff = Backoff::default();
    while !shutdown.is_cancelled() {
        let tail = tail_from_checkpoint(log, &checkpoint_name, settings, handler, shutdown);
        match while_leased(log, &checkpoint_name, shutdown, tail).await {
            Leased::Done(()) | Leased::Shutdown => break,
            Leased::Lost => {
                backoff.reset();
                tracing::warn!(consumer = %settings.name, "lost the lease on the log; tailing again once it is held");
            }
            Leased::Failed(error) => {
                wait_or_shutdown(backoff.next(), shutdown, &settings.name, &error).await;
            }
        }
    }
}

async fn tail_from_checkpoint(
    log: &dyn EventLog,
    checkpoint_name: &str,
    settings: &ConsumerSettings,
    handler: &dyn Handler,
    shutdown: &CancellationToken,
) {
    tracing::info!(consumer = %settings.name, "consumer started (tailing the SQL log)");
    let mut backoff = Backoff::default();
    let start = loop {
        match log.load_checkpoint(checkpoint_name).await {
            Ok(position) => break position,
            Err(error) => {
                wait_or_shutdown(backoff.next(), shutdown, &settings.name, &error).await;
                if shutdown.is_cancelled() {
                    return;
                }
            }
        }
    };
    let mut checkpoint = Checkpoint::new(log, checkpoint_name, settings.checkpoint_interval, start);
    let tail = Tail {
        log,
        settings,
        handler,
        shutdown,
        at_head: std::sync::atomic::AtomicBool::new(false),
    };
    let done = if settings.concurrency <= 1 {
        tail.in_order(&mut checkpoint, start).await
    } else {
        tail.in_lanes(&mut checkpoint, start).await
    };
    checkpoint.save(done).await;
    tracing::info!(consumer = %settings.name, "consumer stopped");
}

struct Tail<'a> {
    log: &'a dyn EventLog,
    settings: &'a ConsumerSettings,
    handler: &'a dyn Handler,
    shutdown: &'a CancellationToken,
    /// The last page was short: it reached the log's head when it was read.
    at_head: std::sync::atomic::AtomicBool,
}

impl Tail<'_> {
    /// The next page of events after `after`. With none, waits for new ones, saving the
    /// checkpoint at `done()` meanwhile when it is due (`moved`: `done()` moved on).
    /// `None` at shutdown.
    ///
    /// After a short page it waits before reading: the log's notice returns at once when
    /// an event after `after` is known to be committed, and otherwise saves a read that
    /// would find nothing (every consumer made one after each page).
    async fn next_page(
        &self,
        after: u64,
        checkpoint: &mut Checkpoint<'_>,
        done: impl Fn() -> u64,
        moved: &tokio::sync::Notify,
    ) -> Option<Vec<RecordedEvent>> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut backoff = Backoff::default();
        let mut wait_first = self.at_head.load(Relaxed);
        while !self.shutdown.is_cancelled() {
            if wait_first {
                wait_first = false;
                loop {
                    let due = checkpoint.due(done());
                    tokio::select! {
                        _ = self.log.wait_for_new(after) => break,
                        _ = sleep_until_some(due) => checkpoint.save(done()).await,
                        _ = moved.notified() => {}
                        _ = self.shutdown.cancelled() => break,
                    }
                }
                if !self.settings.linger.is_zero() {
                    tokio::select! {
                        _ = tokio::time::sleep(self.settings.linger) => {}
                        _ = self.shutdown.cancelled() => {}
                    }
                }
                // The appends just committed in this process are answered at the same
                // moment: let their tasks run first, so that a reaction finds their
                // streams' folds in the shared cache instead of reading the streams.
                tokio::task::yield_now().await;
                continue;
            }
            match self.log.read_all(after, SQL_TAIL_PAGE).await {
                Ok(events) if !events.is_empty() => {
                    self.at_head
                        .store(events.len() < SQL_TAIL_PAGE as usize, Relaxed);
                    return Some(events);
                }
                Ok(_) => {
                    backoff.reset();
                    wait_first = true;
                }
                Err(error) => {
                    let delay = backoff.next();
                    wait_or_shutdown(delay, self.shutdown, &self.settings.name, &error).await;
                }
            }
        }
        None
    }

    /// One event after the other (or the page's events at once to a batched handler);
    /// returns the position handled up to.
    async fn in_order(&self, checkpoint: &mut Checkpoint<'_>, start: u64) -> u64 {
        let settings = self.settings;
        let mut done = start;
        let never = tokio::sync::Notify::new();
        while let Some(events) = self.next_page(done, checkpoint, || done, &never).await {
            let batch: Vec<RecordedEvent> = if settings.batched {
                events
                    .iter()
                    .filter(|e| settings.filter.matches(e))
                    .cloned()
                    .collect()
            } else {
                Vec::new()
            };
            if !batch.is_empty() && self.handler.handle_batch(&batch).await.is_ok() {
                done = events.last().map_or(done, |e| e.position);
            } else {
                for event in &events {
                    if settings.filter.matches(event)
                        && !handle_with_retry(self.handler, event, settings, self.shutdown).await
                    {
                        return done;
                    }
                    done = event.position;
                    if self.shutdown.is_cancelled() {
                        return done;
                    }
                }
            }
            checkpoint.save_when_due(done).await;
        }
        done
    }

    /// Streams side by side in `concurrency` lanes, each stream's events in order in its
    /// lane; the log is read on while the lanes work (no batch waits for its slowest
    /// event). Returns the position below which every event is handled: the checkpoint
    /// never passes an event still in a lane.
    async fn in_lanes(&self, checkpoint: &mut Checkpoint<'_>, start: u64) -> u64 {
        let settings = self.settings;
        let progress = std::sync::Mutex::new(Progress {
            in_lanes: std::collections::BTreeSet::new(),
            read: start,
        });
        let progress = &progress;
        let moved = &tokio::sync::Notify::new();
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..settings.concurrency)
            .map(|_| tokio::sync::mpsc::channel::<RecordedEvent>(LANE_QUEUE))
            .unzip();
        let workers = futures::future::join_all(receivers.into_iter().map(|mut rx| async move {
            while let Some(event) = rx.recv().await {
                if self.shutdown.is_cancelled()
                    || !handle_with_retry(self.handler, &event, settings, self.shutdown).await
                {
                    return;
                }
                Progress::lock(progress).in_lanes.remove(&event.position);
                moved.notify_one();
            }
        }));
        let reader = async move {
            let mut after = start;
            let done = || Progress::lock(progress).done();
            while let Some(events) = self.next_page(after, checkpoint, done, moved).await {
                for event in events {
                    after = event.position;
                    if settings.filter.matches(&event) {
                        Progress::lock(progress).in_lanes.insert(event.position);
                        let lane = &senders[lane_of(&event.stream_id, senders.len())];
                        tokio::select! {
                            sent = lane.send(event) => if sent.is_err() { return },
                            _ = self.shutdown.cancelled() => return,
                        }
                    }
                    Progress::lock(progress).read = after;
                }
                checkpoint.save_when_due(done()).await;
            }
        };
        tokio::join!(reader, workers);
        Progress::lock(progress).done()
    }
}

/// What a SQL-tail consumer with lanes has read and what is still in its lanes.
struct Progress {
    in_lanes: std::collections::BTreeSet<u64>,
    read: u64,
}

impl Progress {
    fn lock(this: &std::sync::Mutex<Self>) -> std::sync::MutexGuard<'_, Self> {
        // Each statement leaves it consistent: a panic elsewhere cannot corrupt it.
        this.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every event up to this position is handled.
    fn done(&self) -> u64 {
        self.in_lanes
            .first()
            .map_or(self.read, |first| first.saturating_sub(1))
    }
}

/// Handles one event of the SQL tail, retrying with backoff; dead-letters (skips) it when
/// it can never be handled. False when shutdown interrupted a retry.
async fn handle_with_retry(
    handler: &dyn Handler,
    event: &RecordedEvent,
    settings: &ConsumerSettings,
    shutdown: &CancellationToken,
) -> bool {
    let mut attempt = 1;
    loop {
        match outcome(handler.handle(event).await, attempt, settings.max_deliver) {
            Outcome::Done => return true,
            Outcome::RetryIn(delay) => {
                tracing::warn!(consumer = %settings.name, position = event.position, attempt, retry_in = ?delay, "handler failed; will retry");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return false,
                }
                attempt += 1;
            }
            Outcome::DeadLetter(why) => {
                tracing::error!(consumer = %settings.name, position = event.position, event_type = %event.event_type, stream = %event.stream_id, attempt, reason = %why, "dead-lettering event (skipped)");
                return true;
            }
        }
    }
}

async fn wait_or_shutdown(
    delay: Duration,
    shutdown: &CancellationToken,
    name: &str,
    error: &(dyn std::fmt::Display + Sync),
) {
    tracing::warn!(consumer = %name, %error, retry_in = ?delay, "reading the log failed");
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = shutdown.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::{Filter, gather};

    #[test]
    fn several_event_types_get_a_durable_consumer_each() {
        let types = |names: &[&str]| Filter::EventTypes {
            aggregate: "certificate".into(),
            event_types: names.iter().map(|n| n.to_string()).collect(),
        };
        assert_eq!(
            types(&["ApplicationSubmitted"]).durables("issuance"),
            [(
                "issuance".to_owned(),
                "certledger.v1.*.certificate.*.ApplicationSubmitted".to_owned()
            )]
        );
        assert_eq!(
            types(&["ApplicationSubmitted", "ApplicationApproved"]).durables("issuance"),
            [
                (
                    "issuance-ApplicationSubmitted".to_owned(),
                    "certledger.v1.*.certificate.*.ApplicationSubmitted".to_owned()
                ),
                (
                    "issuance-ApplicationApproved".to_owned(),
                    "certledger.v1.*.certificate.*.ApplicationApproved".to_owned()
                ),
            ]
        );
        assert_eq!(
            Filter::Aggregate("certificate".into()).durables("list"),
            [(
                "list".to_owned(),
                "certledger.v1.*.certificate.>".to_owned()
            )]
        );
    }

    #[test]
    fn gathering_keeps_what_came_before_an_error() {
        let mut ready = futures::stream::iter([Ok(2), Ok(3), Err("lost"), Ok(4)]);
        assert_eq!(gather(1, &mut ready, 64), (vec![1, 2, 3], Some("lost")));
        // The stream goes on after the error.
        assert_eq!(gather(5, &mut ready, 64), (vec![5, 4], None));
    }

    #[test]
    fn gathering_stops_at_the_batch_size_and_at_what_is_ready() {
        let mut ready = futures::stream::iter([Ok::<_, ()>(2), Ok(3), Ok(4)]);
        assert_eq!(gather(1, &mut ready, 2), (vec![1, 2], None));
        assert_eq!(gather(1, &mut ready, 64), (vec![1, 3, 4], None));
        let mut pending = futures::stream::pending::<Result<u8, ()>>();
        assert_eq!(gather(1, &mut pending, 64), (vec![1], None));
    }
}
