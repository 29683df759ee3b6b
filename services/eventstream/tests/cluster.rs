//! A three-node JetStream cluster with a three-replica stream: one node is killed while
//! events flow; consumers still get every event, none lost, none applied twice, and the
//! stream stores each event once.

mod common;

use async_nats::jetstream;
use certledger_eventstream::consumer::{ConsumerSettings, EventSource, Filter};
use certledger_eventstream::relay::{Relay, RelaySettings};
use certledger_eventstream::setup::{StreamSettings, ensure_streams};
use certledger_testkit::{NatsCluster, eventually};
use common::*;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_node_loses_and_duplicates_nothing() -> anyhow::Result<()> {
    let mut cluster = NatsCluster::start(3).await?;
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(cluster.urls())
        .await?;
    let js = jetstream::new(client.clone());
    let settings = StreamSettings {
        replicas: 3,
        ..StreamSettings::default()
    };
    // The cluster elects its JetStream meta leader after start; wait for it.
    eventually(
        DEADLINE,
        "the cluster to accept a three-replica stream",
        || {
            let js = js.clone();
            let settings = settings.clone();
            async move { ensure_streams(&js, &settings).await.ok() }
        },
    )
    .await?;

    let log = memory_log().await?;
    let shutdown = CancellationToken::new();
    let relay = Arc::new(Relay::new(
        log.clone(),
        js.clone(),
        RelaySettings::default(),
    ));
    let relay_task = tokio::spawn({
        let (relay, shutdown) = (relay.clone(), shutdown.clone());
        async move { relay.run(shutdown).await }
    });
    let recorder = Arc::new(Recorder::default());
    let mut consumer_settings = ConsumerSettings::new("projections", Filter::All);
    consumer_settings.ack_wait = Duration::from_secs(2);
    let consumer_task = tokio::spawn({
        let source = EventSource::JetStream {
            js: js.clone(),
            stream: settings.name.clone(),
        };
        let (recorder, shutdown) = (recorder.clone(), shutdown.clone());
        async move { source.run(consumer_settings, recorder, shutdown).await }
    });

    let mut ids = append_events(log.as_ref(), 10, 10).await?;
    eventually(DEADLINE, "the first events to be consumed", || {
        let recorder = recorder.clone();
        async move { (recorder.applied_count() >= 50).then_some(()) }
    })
    .await?;
    // Kill the node the relay's and consumer's connection is on, while events keep
    // coming: publishes in flight fail, the relay republishes from its checkpoint, and
    // JetStream's dedupe and the consumer's idempotency must absorb the repeats.
    let appender = tokio::spawn({
        let log = log.clone();
        async move {
            let mut ids = Vec::new();
            for _ in 0..20 {
                ids.extend(append_events(log.as_ref(), 10, 1).await?);
            }
            anyhow::Ok(ids)
        }
    });
    let connected = client.server_info().port;
    let victim = cluster
        .nodes
        .iter()
        .position(|node| node.port == connected)
        .unwrap_or(0);
    cluster.nodes[victim].kill();
    ids.extend(appender.await??);

    eventually(DEADLINE, "every event to be consumed", || {
        let recorder = recorder.clone();
        async move { (recorder.applied_count() >= 300).then_some(()) }
    })
    .await?;
    let applied = recorder.applied_ids();
    assert_eq!(applied.len(), 300, "no event applied twice");
    let applied: HashSet<_> = applied.into_iter().collect();
    let logged: HashSet<_> = ids.into_iter().collect();
    assert_eq!(applied, logged, "no event lost");

    // The two surviving replicas hold each event exactly once (dedupe by event id).
    let stored = eventually(
        DEADLINE,
        "the stream to answer from the surviving nodes",
        || {
            let js = js.clone();
            async move {
                let mut stream = js.get_stream("CERTLEDGER").await.ok()?;
                Some(stream.info().await.ok()?.state.messages)
            }
        },
    )
    .await?;
    assert_eq!(stored, 300);

    shutdown.cancel();
    relay_task.await?;
    consumer_task.await??;
    Ok(())
}
