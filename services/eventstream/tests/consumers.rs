//! Consumers against a real nats-server (and the embedded SQL tail): ack, retry with
//! backoff, dead letters, replicas sharing one durable consumer, graceful shutdown.

mod common;

use async_trait::async_trait;
use certledger_eventlog::RecordedEvent;
use certledger_eventstream::consumer::{
    ConsumerSettings, EventSource, Filter, Handler, HandlerError, lane_of,
};
use certledger_eventstream::relay::{Relay, RelaySettings};
use certledger_testkit::{NatsServer, eventually};
use common::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(30);

fn spawn_consumer(
    source: &EventSource,
    settings: ConsumerSettings,
    handler: Arc<dyn Handler>,
    shutdown: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let source = source.clone();
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        if let Err(error) = source.run(settings, handler, shutdown).await {
            panic!("consumer failed: {error}");
        }
    })
}

/// Fails the `retry_index`-th event twice (retryable), the `poison_index`-th always.
struct Flaky {
    order: Vec<uuid::Uuid>,
    retry_index: usize,
    poison_index: usize,
    attempts: Mutex<HashMap<uuid::Uuid, u32>>,
    inner: Recorder,
}

#[async_trait]
impl Handler for Flaky {
    async fn handle(&self, event: &RecordedEvent) -> Result<(), HandlerError> {
        let attempt = {
            let mut attempts = self
                .attempts
                .lock()
                .map_err(|e| HandlerError::Poison(e.to_string()))?;
            let n = attempts.entry(event.event_id).or_insert(0);
            *n += 1;
            *n
        };
        if event.event_id == self.order[self.poison_index] {
            return Err(HandlerError::Poison("payload can never be handled".into()));
        }
        if event.event_id == self.order[self.retry_index] && attempt <= 2 {
            return Err(HandlerError::Retry(format!(
                "database busy (attempt {attempt})"
            )));
        }
        self.inner.handle(event).await
    }
}

async fn check_retry_and_dead_letter(
    source: EventSource,
    js: Option<async_nats::jetstream::Context>,
    ids: Vec<uuid::Uuid>,
) -> anyhow::Result<()> {
    let handler = Arc::new(Flaky {
        order: ids.clone(),
        retry_index: 1,
        poison_index: 3,
        attempts: Mutex::default(),
        inner: Recorder::default(),
    });
    let shutdown = CancellationToken::new();
    let task = spawn_consumer(
        &source,
        ConsumerSettings::new("issuance", Filter::All),
        handler.clone(),
        &shutdown,
    );
    eventually(DEADLINE, "every good event to be applied", || {
        let handler = handler.clone();
        async move { (handler.inner.applied_count() == 5).then_some(()) }
    })
    .await?;
    shutdown.cancel();
    task.await?;

    let mut expected: Vec<_> = ids.clone();
    expected.remove(3);
    let mut applied = handler.inner.applied_ids();
    applied.sort();
    expected.sort();
    assert_eq!(
        applied, expected,
        "every event but the poison one applied, once"
    );
    let attempts = handler
        .attempts
        .lock()
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .clone();
    assert_eq!(
        attempts[&ids[1]], 3,
        "the flaky event was retried until it succeeded"
    );
    assert_eq!(attempts[&ids[3]], 1, "a poison event is not retried");

    if let Some(js) = js {
        let mut dlq = js.get_stream("CERTLEDGER_DLQ").await?;
        assert_eq!(dlq.info().await?.state.messages, 1);
        let letter = dlq.get_raw_message(1).await?;
        assert_eq!(letter.subject.as_str(), "certledger.dlq.issuance");
        let header = |name: &str| letter.headers.get(name).map(|v| v.as_str().to_owned());
        assert_eq!(header("ce-id"), Some(ids[3].to_string()));
        assert!(
            header("certledger-dead-letter-reason").is_some_and(|r| r.contains("never be handled"))
        );
    }
    Ok(())
}

#[tokio::test]
async fn jetstream_consumer_acks_retries_with_backoff_and_dead_letters_poison() -> anyhow::Result<()>
{
    let nats = NatsServer::start().await?;
    let js = jetstream_for(&nats.url()).await?;
    let log = memory_log().await?;
    let ids = append_events(log.as_ref(), 6, 1).await?;
    Relay::new(log.clone(), js.clone(), RelaySettings::default())
        .publish_batch(0)
        .await?;
    let source = EventSource::JetStream {
        js: js.clone(),
        stream: "CERTLEDGER".into(),
    };
    check_retry_and_dead_letter(source, Some(js), ids).await
}

#[tokio::test]
async fn sql_tail_consumer_retries_and_skips_poison_the_same_way() -> anyhow::Result<()> {
    let log = memory_log().await?;
    let ids = append_events(log.as_ref(), 6, 1).await?;
    check_retry_and_dead_letter(EventSource::SqlTail { log }, None, ids).await
}

#[tokio::test]
async fn sql_tail_consumer_resumes_from_its_checkpoint_in_log_order() -> anyhow::Result<()> {
    let log = memory_log().await?;
    let first = append_events(log.as_ref(), 3, 3).await?;
    let source = EventSource::SqlTail { log: log.clone() };
    let settings = ConsumerSettings::new("projections", Filter::Aggregate("certificate".into()));

    let recorder = Arc::new(Recorder::default());
    let shutdown = CancellationToken::new();
    let task = spawn_consumer(&source, settings.clone(), recorder.clone(), &shutdown);
    let want = first.len();
    eventually(DEADLINE, "the first events", || {
        let recorder = recorder.clone();
        async move { (recorder.applied_count() == want).then_some(()) }
    })
    .await?;
    shutdown.cancel();
    task.await?;
    assert_eq!(recorder.applied_ids(), first, "delivered in log order");

    // A restarted consumer continues after its checkpoint: the old events, which come
    // first in the log, would arrive before the new ones if it re-read them.
    let second = append_events(log.as_ref(), 2, 2).await?;
    let recorder = Arc::new(Recorder::default());
    let shutdown = CancellationToken::new();
    let task = spawn_consumer(&source, settings, recorder.clone(), &shutdown);
    let want = second.len();
    eventually(DEADLINE, "the new events", || {
        let recorder = recorder.clone();
        async move { (recorder.applied_count() >= want).then_some(()) }
    })
    .await?;
    shutdown.cancel();
    task.await?;
    assert_eq!(recorder.applied_ids(), second);
    Ok(())
}

/// Two replicas tailing one PostgreSQL log with the same consumer take turns on its lease:
/// the second waits (in the server) while the first reads, and takes over from the first's
/// checkpoint when it stops.
#[tokio::test]
async fn replicas_tailing_one_log_take_turns() -> anyhow::Result<()> {
    let db = certledger_testkit::db::TestDb::postgres().await?;
    let replica_b = Arc::new(certledger_eventlog::PgEventLog::connect(&db.url, &db.schema).await?);
    let settings = ConsumerSettings::new("list", Filter::Aggregate("certificate".into()));
    let first = append_events(db.log.as_ref(), 3, 1).await?;

    let (a, shutdown_a) = (Arc::new(Recorder::default()), CancellationToken::new());
    let task_a = spawn_consumer(
        &EventSource::SqlTail {
            log: db.log.clone(),
        },
        settings.clone(),
        a.clone(),
        &shutdown_a,
    );
    let want = first.len();
    eventually(DEADLINE, "a reads the first events", || {
        let a = a.clone();
        async move { (a.applied_count() == want).then_some(()) }
    })
    .await?;
    let (b, shutdown_b) = (Arc::new(Recorder::default()), CancellationToken::new());
    let task_b = spawn_consumer(
        &EventSource::SqlTail {
            log: replica_b.clone(),
        },
        settings,
        b.clone(),
        &shutdown_b,
    );
    eventually(DEADLINE, "b waits for the lease", || {
        lease_waited_for(&replica_b, "consumer:list")
    })
    .await?;
    let second = append_events(db.log.as_ref(), 2, 1).await?;
    let want = first.len() + second.len();
    eventually(DEADLINE, "a reads the new events", || {
        let a = a.clone();
        async move { (a.applied_count() == want).then_some(()) }
    })
    .await?;
    assert_eq!(b.applied_count(), 0, "b read while a held the lease");

    shutdown_a.cancel();
    task_a.await?;
    let third = append_events(db.log.as_ref(), 2, 1).await?;
    let want = third.len();
    eventually(DEADLINE, "b takes over", || {
        let b = b.clone();
        async move { (b.applied_count() >= want).then_some(()) }
    })
    .await?;
    shutdown_b.cancel();
    task_b.await?;
    assert_eq!(b.applied_ids(), third, "b resumes after a's checkpoint");
    Ok(())
}

/// Blocks on the first event it sees until the other replica has handled something.
struct Replica {
    name: &'static str,
    seen_by: Arc<Mutex<HashMap<uuid::Uuid, Vec<&'static str>>>>,
    other_handled: Arc<Notify>,
    i_handled: Arc<Notify>,
    first: Mutex<bool>,
}

#[async_trait]
impl Handler for Replica {
    async fn handle(&self, event: &RecordedEvent) -> Result<(), HandlerError> {
        let first = std::mem::replace(
            &mut *self
                .first
                .lock()
                .map_err(|e| HandlerError::Poison(e.to_string()))?,
            false,
        );
        if first && self.name == "a" {
            // Hold this event until replica b proves it gets work too.
            self.other_handled.notified().await;
        }
        self.seen_by
            .lock()
            .map_err(|e| HandlerError::Poison(e.to_string()))?
            .entry(event.event_id)
            .or_default()
            .push(self.name);
        self.i_handled.notify_one();
        Ok(())
    }
}

#[tokio::test]
async fn replicas_share_one_durable_consumer_and_split_the_work() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let js = jetstream_for(&nats.url()).await?;
    let log = memory_log().await?;
    let ids = append_events(log.as_ref(), 40, 1).await?;
    Relay::new(log.clone(), js.clone(), RelaySettings::default())
        .publish_batch(0)
        .await?;
    let source = EventSource::JetStream {
        js: js.clone(),
        stream: "CERTLEDGER".into(),
    };
    let mut settings = ConsumerSettings::new(
        "deployment",
        Filter::EventTypes {
            aggregate: "certificate".into(),
            event_types: vec!["OrderCancelled".into()],
        },
    );
    settings.batch = 1;
    let seen_by = Arc::new(Mutex::new(HashMap::new()));
    let a_handled = Arc::new(Notify::new());
    let b_handled = Arc::new(Notify::new());
    let a = Arc::new(Replica {
        name: "a",
        seen_by: seen_by.clone(),
        other_handled: b_handled.clone(),
        i_handled: a_handled.clone(),
        first: Mutex::new(true),
    });
    let b = Arc::new(Replica {
        name: "b",
        seen_by: seen_by.clone(),
        other_handled: a_handled,
        i_handled: b_handled,
        first: Mutex::new(true),
    });
    let shutdown = CancellationToken::new();
    let ta = spawn_consumer(&source, settings.clone(), a, &shutdown);
    let tb = spawn_consumer(&source, settings, b, &shutdown);
    eventually(DEADLINE, "all events handled", || {
        let seen_by = seen_by.clone();
        async move { (seen_by.lock().ok()?.len() == 40).then_some(()) }
    })
    .await?;
    shutdown.cancel();
    ta.await?;
    tb.await?;
    let seen = seen_by.lock().map_err(|e| anyhow::anyhow!("{e}"))?.clone();
    for id in &ids {
        assert_eq!(
            seen[id].len(),
            1,
            "event {id} handled by exactly one replica: {:?}",
            seen[id]
        );
    }
    let by_a = seen.values().filter(|r| r[0] == "a").count();
    let by_b = seen.values().filter(|r| r[0] == "b").count();
    assert!(by_a >= 1 && by_b >= 1, "work split: a={by_a} b={by_b}");
    Ok(())
}

/// Signals when it starts handling, then waits to be released.
struct Slow {
    started: Arc<Notify>,
    release: Arc<Notify>,
    finished: Mutex<Vec<uuid::Uuid>>,
}

#[async_trait]
impl Handler for Slow {
    async fn handle(&self, event: &RecordedEvent) -> Result<(), HandlerError> {
        self.started.notify_one();
        self.release.notified().await;
        self.finished
            .lock()
            .map_err(|e| HandlerError::Poison(e.to_string()))?
            .push(event.event_id);
        Ok(())
    }
}

#[tokio::test]
async fn graceful_shutdown_finishes_and_acks_the_event_in_hand() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let js = jetstream_for(&nats.url()).await?;
    let log = memory_log().await?;
    let ids = append_events(log.as_ref(), 3, 1).await?;
    Relay::new(log.clone(), js.clone(), RelaySettings::default())
        .publish_batch(0)
        .await?;
    let source = EventSource::JetStream {
        js: js.clone(),
        stream: "CERTLEDGER".into(),
    };
    let handler = Arc::new(Slow {
        started: Arc::new(Notify::new()),
        release: Arc::new(Notify::new()),
        finished: Mutex::default(),
    });
    let shutdown = CancellationToken::new();
    let task = spawn_consumer(
        &source,
        ConsumerSettings::new("revocation", Filter::All),
        handler.clone(),
        &shutdown,
    );
    handler.started.notified().await;
    shutdown.cancel();
    handler.release.notify_one();
    tokio::time::timeout(DEADLINE, task).await??;

    assert_eq!(
        *handler
            .finished
            .lock()
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        vec![ids[0]]
    );
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = js
        .get_stream("CERTLEDGER")
        .await?
        .get_consumer("revocation")
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let info = consumer.info().await?;
    assert_eq!(
        info.ack_floor.stream_sequence, 1,
        "the event in hand was acked before stopping"
    );
    Ok(())
}

/// Holds the first event it sees until an event of another stream has been handled (only
/// possible when streams are handled side by side); records the order of each stream.
#[derive(Default)]
struct Gate {
    first: Mutex<Option<String>>,
    other_handled: Notify,
    order: Mutex<Vec<(String, Vec<u8>)>>,
}

#[async_trait]
impl Handler for Gate {
    async fn handle(&self, event: &RecordedEvent) -> Result<(), HandlerError> {
        let (hold, other_stream) = {
            let mut first = self
                .first
                .lock()
                .map_err(|e| HandlerError::Poison(e.to_string()))?;
            match first.as_ref() {
                None => {
                    *first = Some(event.stream_id.clone());
                    (true, false)
                }
                Some(stream) => (false, *stream != event.stream_id),
            }
        };
        if hold {
            self.other_handled.notified().await;
        }
        self.order
            .lock()
            .map_err(|e| HandlerError::Poison(e.to_string()))?
            .push((event.stream_id.clone(), event.payload.clone()));
        if other_stream {
            // Recorded before the held event can be: it is released only now.
            self.other_handled.notify_one();
        }
        Ok(())
    }
}

async fn check_streams_side_by_side_in_order(source: EventSource) -> anyhow::Result<()> {
    let log_events = 6 * 3;
    let gate = Arc::new(Gate::default());
    let shutdown = CancellationToken::new();
    let settings =
        ConsumerSettings::new("parallel", Filter::Aggregate("certificate".into())).concurrency(4);
    let task = spawn_consumer(&source, settings, gate.clone(), &shutdown);
    let order = eventually(DEADLINE, "every event handled", || {
        let gate = gate.clone();
        async move {
            let order = gate.order.lock().ok()?.clone();
            (order.len() == log_events).then_some(order)
        }
    })
    .await?;
    shutdown.cancel();
    task.await?;
    // The first event finished only after another stream's: handled side by side.
    let first = gate
        .first
        .lock()
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .clone();
    assert_ne!(order.first().map(|(s, _)| s.clone()), first);
    // Each stream's events in their order.
    let mut per_stream: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    for (stream, payload) in order {
        per_stream.entry(stream).or_default().push(payload);
    }
    assert_eq!(per_stream.len(), 6);
    for payloads in per_stream.values() {
        let expected: Vec<Vec<u8>> = (0..3)
            .map(|round| format!("payload {round}").into_bytes())
            .collect();
        assert_eq!(*payloads, expected);
    }
    Ok(())
}

#[tokio::test]
async fn sql_tail_consumer_handles_streams_side_by_side_each_in_order() -> anyhow::Result<()> {
    let log = memory_log().await?;
    append_events(log.as_ref(), 6, 3).await?;
    check_streams_side_by_side_in_order(EventSource::SqlTail { log }).await
}

#[tokio::test]
async fn jetstream_consumer_handles_streams_side_by_side_each_in_order() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let js = jetstream_for(&nats.url()).await?;
    let log = memory_log().await?;
    append_events(log.as_ref(), 6, 3).await?;
    Relay::new(log.clone(), js.clone(), RelaySettings::default())
        .publish_batch(0)
        .await?;
    check_streams_side_by_side_in_order(EventSource::JetStream {
        js,
        stream: "CERTLEDGER".into(),
    })
    .await
}

/// Records the sizes of the batches it gets; with `refuse_batches`, fails every batch
/// (so the consumer falls back to handling the events one by one).
#[derive(Default)]
struct Batches {
    refuse_batches: bool,
    sizes: Mutex<Vec<usize>>,
    inner: Recorder,
}

#[async_trait]
impl Handler for Batches {
    async fn handle(&self, event: &RecordedEvent) -> Result<(), HandlerError> {
        self.inner.handle(event).await
    }

    async fn handle_batch(&self, events: &[RecordedEvent]) -> Result<(), HandlerError> {
        self.sizes
            .lock()
            .map_err(|e| HandlerError::Poison(e.to_string()))?
            .push(events.len());
        if self.refuse_batches {
            return Err(HandlerError::Retry("batch refused".into()));
        }
        for event in events {
            self.inner.handle(event).await?;
        }
        Ok(())
    }
}

async fn check_batches(source: EventSource, ids: Vec<uuid::Uuid>) -> anyhow::Result<()> {
    for refuse_batches in [false, true] {
        let handler = Arc::new(Batches {
            refuse_batches,
            ..Batches::default()
        });
        let shutdown = CancellationToken::new();
        let name = if refuse_batches {
            "refusing"
        } else {
            "batched"
        };
        let settings =
            ConsumerSettings::new(name, Filter::Aggregate("certificate".into())).batched();
        let task = spawn_consumer(&source, settings, handler.clone(), &shutdown);
        let want = ids.len();
        eventually(DEADLINE, "every event", || {
            let handler = handler.clone();
            async move { (handler.inner.applied_count() == want).then_some(()) }
        })
        .await?;
        shutdown.cancel();
        task.await?;
        assert_eq!(handler.inner.applied_ids(), ids, "in order, each once");
        let sizes = handler
            .sizes
            .lock()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .clone();
        assert!(
            sizes.iter().any(|n| *n > 1),
            "events that were there together came together: {sizes:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn sql_tail_consumer_hands_over_batches_and_falls_back_to_single_events() -> anyhow::Result<()>
{
    let log = memory_log().await?;
    let ids = append_events(log.as_ref(), 4, 3).await?;
    check_batches(EventSource::SqlTail { log }, ids).await
}

#[tokio::test]
async fn jetstream_consumer_hands_over_batches_and_falls_back_to_single_events()
-> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let js = jetstream_for(&nats.url()).await?;
    let log = memory_log().await?;
    let ids = append_events(log.as_ref(), 4, 3).await?;
    Relay::new(log.clone(), js.clone(), RelaySettings::default())
        .publish_batch(0)
        .await?;
    check_batches(
        EventSource::JetStream {
            js,
            stream: "CERTLEDGER".into(),
        },
        ids,
    )
    .await
}

/// Holds one event until released; records every event it finishes.
struct HoldOne {
    held: uuid::Uuid,
    release: Notify,
    inner: Recorder,
}

#[async_trait]
impl Handler for HoldOne {
    async fn handle(&self, event: &RecordedEvent) -> Result<(), HandlerError> {
        if event.event_id == self.held {
            self.release.notified().await;
        }
        self.inner.handle(event).await
    }
}

#[tokio::test]
async fn sql_tail_lanes_read_on_but_the_checkpoint_never_passes_an_unfinished_event()
-> anyhow::Result<()> {
    let log = memory_log().await?;
    // Three streams in three different lanes (streams sharing a lane wait for each other).
    let lanes = 4;
    let mut names: Vec<String> = Vec::new();
    while names.len() < 3 {
        let name = certificate_stream();
        if names
            .iter()
            .all(|n| lane_of(n, lanes) != lane_of(&name, lanes))
        {
            names.push(name);
        }
    }
    // Positions 1 – 3: the first event of each stream; 4 – 6: their second.
    let ids = append_to(log.as_ref(), &names, 2).await?;
    let handler = Arc::new(HoldOne {
        held: ids[1],
        release: Notify::new(),
        inner: Recorder::default(),
    });
    let mut settings =
        ConsumerSettings::new("held", Filter::Aggregate("certificate".into())).concurrency(lanes);
    settings.checkpoint_interval = Duration::ZERO;
    let source = EventSource::SqlTail { log: log.clone() };
    let shutdown = CancellationToken::new();
    let task = spawn_consumer(&source, settings, handler.clone(), &shutdown);

    // The other streams go on past the held event (nothing waits for it but its lane); the
    // held stream's second event waits behind it.
    let others = vec![ids[0], ids[2], ids[3], ids[5]];
    eventually(DEADLINE, "the other streams' events", || {
        let handler = handler.clone();
        async move { (handler.inner.applied_count() == 4).then_some(()) }
    })
    .await?;
    let mut handled = handler.inner.applied_ids();
    handled.sort();
    let mut expected = others;
    expected.sort();
    assert_eq!(handled, expected);
    // The checkpoint stops before the held event (position 2), though 3 – 6 are read.
    eventually(DEADLINE, "the checkpoint below the held event", || {
        let log = log.clone();
        async move { (log.load_checkpoint("consumer:held").await.ok()? == 1).then_some(()) }
    })
    .await?;
    assert_eq!(handler.inner.applied_count(), 4, "still held");

    handler.release.notify_one();
    eventually(DEADLINE, "the checkpoint past every event", || {
        let log = log.clone();
        async move { (log.load_checkpoint("consumer:held").await.ok()? == 6).then_some(()) }
    })
    .await?;
    assert_eq!(
        handler
            .inner
            .applied_ids()
            .iter()
            .filter(|id| **id == ids[4])
            .count(),
        1,
        "the held stream's second event, after the first"
    );
    shutdown.cancel();
    task.await?;
    Ok(())
}
