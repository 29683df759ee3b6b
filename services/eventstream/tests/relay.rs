//! The relay against a real nats-server: contract headers and subjects, a crash between
//! publish and checkpoint that loses nothing and stores nothing twice, the checkpoint's
//! saving, and relays on one log taking turns.

mod common;

use certledger_eventstream::envelope;
use certledger_eventstream::relay::{Relay, RelaySettings};
use certledger_testkit::{NatsServer, eventually};
use common::*;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn published_messages_follow_the_subscriber_contract() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let js = jetstream_for(&nats.url()).await?;
    let log = memory_log().await?;
    append_events(log.as_ref(), 3, 4).await?;
    let relay = Relay::new(log.clone(), js.clone(), RelaySettings::default());
    assert_eq!(relay.publish_batch(0).await?, Some(12));

    let logged = log.read_all(0, 100).await?;
    let consumer_stream = js.get_stream("CERTLEDGER").await?;
    for event in &logged {
        let message = consumer_stream.get_raw_message(event.position).await?;
        let (aggregate, id) = event.stream_id.split_once('-').unwrap_or_default();
        assert_eq!(
            message.subject.as_str(),
            format!("certledger.v1.acme.{aggregate}.{id}.OrderCancelled")
        );
        let headers = &message.headers;
        let header = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
        assert_eq!(header("Nats-Msg-Id"), Some(event.event_id.to_string()));
        assert_eq!(header("ce-id"), Some(event.event_id.to_string()));
        assert_eq!(header("ce-specversion").as_deref(), Some("1.0"));
        assert_eq!(
            header("ce-type").as_deref(),
            Some("certledger.events.v1.OrderCancelled")
        );
        assert_eq!(header("ce-source").as_deref(), Some("/certledger/acme"));
        assert_eq!(header("ce-subject"), Some(event.stream_id.clone()));
        assert!(header("ce-time").is_some_and(|t| t.ends_with('Z')));
        assert_eq!(
            header("content-type").as_deref(),
            Some("application/protobuf; messageType=certledger.events.v1.OrderCancelled")
        );
        assert_eq!(
            header("certledger-position"),
            Some(event.position.to_string())
        );
        // The envelope round-trips exactly, hashes included.
        let back = envelope::from_message(Some(&message.headers), &message.payload)?;
        assert_eq!(&back, event);
    }
    Ok(())
}

#[tokio::test]
async fn crash_between_publish_and_checkpoint_loses_nothing_and_duplicates_nothing()
-> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let js = jetstream_for(&nats.url()).await?;
    let log = memory_log().await?;
    let settings = RelaySettings {
        batch: 7,
        max_in_flight: 3,
        ..RelaySettings::default()
    };
    append_events(log.as_ref(), 2, 10).await?; // positions 1..=20

    // First life: publishes a batch (positions 1..=7), then "crashes" before saving
    // the checkpoint (the relay is dropped without reaching save_checkpoint).
    {
        let relay = Relay::new(log.clone(), js.clone(), settings.clone());
        assert_eq!(relay.publish_batch(0).await?, Some(7));
    }
    assert_eq!(log.load_checkpoint(&settings.checkpoint).await?, 0);
    append_events(log.as_ref(), 1, 5).await?; // positions 21..=25

    // Second life: resumes from the saved checkpoint (0) and runs until caught up.
    let relay = std::sync::Arc::new(Relay::new(log.clone(), js.clone(), settings.clone()));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let relay = relay.clone();
        let shutdown = shutdown.clone();
        async move { relay.run(shutdown).await }
    });
    eventually(DEADLINE, "the relay checkpoint to reach the head", || {
        let relay = relay.clone();
        async move { (relay.stats.checkpoint.load(Ordering::Relaxed) == 25).then_some(()) }
    })
    .await?;
    shutdown.cancel();
    task.await?;

    // JetStream stored every event exactly once...
    assert_eq!(stream_messages(&js).await?, 25);
    // ...because the 7 republished events were recognised as duplicates (dedupe by
    // Nats-Msg-Id), and only they were republished (the checkpoint was honoured).
    assert_eq!(relay.stats.duplicates.load(Ordering::Relaxed), 7);
    assert_eq!(relay.stats.published.load(Ordering::Relaxed), 18);
    assert_eq!(log.load_checkpoint(&settings.checkpoint).await?, 25);

    // Third life after a clean stop: the saved checkpoint means nothing is republished.
    let relay = std::sync::Arc::new(Relay::new(log.clone(), js.clone(), settings.clone()));
    append_events(log.as_ref(), 1, 1).await?; // position 26
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let relay = relay.clone();
        let shutdown = shutdown.clone();
        async move { relay.run(shutdown).await }
    });
    eventually(DEADLINE, "the relay to publish position 26", || {
        let relay = relay.clone();
        async move { (relay.stats.checkpoint.load(Ordering::Relaxed) == 26).then_some(()) }
    })
    .await?;
    shutdown.cancel();
    task.await?;
    assert_eq!(relay.stats.duplicates.load(Ordering::Relaxed), 0);
    assert_eq!(relay.stats.published.load(Ordering::Relaxed), 1);
    assert_eq!(stream_messages(&js).await?, 26);

    // Every event is in the stream once, in log order.
    let stream = js.get_stream("CERTLEDGER").await?;
    let logged = log.read_all(0, 100).await?;
    for (sequence, event) in (1u64..).zip(&logged) {
        let message = stream.get_raw_message(sequence).await?;
        assert_eq!(
            message.headers.get("ce-id").map(|v| v.as_str().to_owned()),
            Some(event.event_id.to_string())
        );
    }
    Ok(())
}

/// The checkpoint is a write to the log's database: a running relay saves it at most once
/// per interval, not after every batch, and saves it when it stops.
#[tokio::test]
async fn the_checkpoint_is_saved_per_interval_and_at_the_stop() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let js = jetstream_for(&nats.url()).await?;
    let log = memory_log().await?;
    let settings = RelaySettings {
        batch: 4,
        checkpoint_interval: Duration::from_secs(3600),
        ..RelaySettings::default()
    };
    append_events(log.as_ref(), 3, 4).await?; // positions 1..=12, three batches
    let relay = std::sync::Arc::new(Relay::new(log.clone(), js.clone(), settings.clone()));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let (relay, shutdown) = (relay.clone(), shutdown.clone());
        async move { relay.run(shutdown).await }
    });
    eventually(DEADLINE, "every event published", || {
        let relay = relay.clone();
        async move { (relay.stats.published.load(Ordering::Relaxed) == 12).then_some(()) }
    })
    .await?;
    assert_eq!(
        log.load_checkpoint(&settings.checkpoint).await?,
        0,
        "saved before its interval"
    );
    shutdown.cancel();
    task.await?;
    assert_eq!(log.load_checkpoint(&settings.checkpoint).await?, 12);
    assert_eq!(relay.stats.checkpoint.load(Ordering::Relaxed), 12);
    Ok(())
}

/// Relays on one PostgreSQL log (one per replica of each service that runs one) take
/// turns on the log's lease: while one publishes, another waits in the server and
/// publishes nothing; when the first stops, the second goes on from its checkpoint.
#[tokio::test]
async fn relays_on_one_log_take_turns() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let js = jetstream_for(&nats.url()).await?;
    let db = certledger_testkit::db::TestDb::postgres().await?;
    let second_log =
        std::sync::Arc::new(certledger_eventlog::PgEventLog::connect(&db.url, &db.schema).await?);
    let settings = RelaySettings::default();
    let start = |log: std::sync::Arc<dyn certledger_eventlog::EventLog>| {
        let relay = std::sync::Arc::new(Relay::new(log, js.clone(), settings.clone()));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let (relay, shutdown) = (relay.clone(), shutdown.clone());
            async move { relay.run(shutdown).await }
        });
        (relay, shutdown, task)
    };
    let published = |relay: &std::sync::Arc<Relay>, n: u64| {
        let relay = relay.clone();
        move || {
            let relay = relay.clone();
            async move { (relay.stats.published.load(Ordering::Relaxed) == n).then_some(()) }
        }
    };

    append_events(db.log.as_ref(), 2, 3).await?; // positions 1..=6
    let (a, stop_a, task_a) = start(db.log.clone());
    eventually(DEADLINE, "a publishes", published(&a, 6)).await?;
    let (b, stop_b, task_b) = start(second_log.clone());
    eventually(DEADLINE, "b waits for the lease", || {
        lease_waited_for(&second_log, &settings.checkpoint)
    })
    .await?;
    append_events(db.log.as_ref(), 1, 2).await?; // positions 7..=8
    eventually(DEADLINE, "a publishes the new events", published(&a, 8)).await?;

    stop_a.cancel();
    task_a.await?;
    append_events(db.log.as_ref(), 1, 2).await?; // positions 9..=10
    eventually(DEADLINE, "b takes over", published(&b, 2)).await?;
    stop_b.cancel();
    task_b.await?;
    assert_eq!(
        b.stats.duplicates.load(Ordering::Relaxed),
        0,
        "b published again what a had"
    );
    assert_eq!(stream_messages(&js).await?, 10);
    Ok(())
}
