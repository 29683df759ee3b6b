//! Shared setup for the event stream tests: a log with events in it and a real NATS.
#![allow(dead_code)]

use async_nats::jetstream;
use certledger_eventlog::{EventLog, ExpectedVersion, Metadata, NewEvent, RecordedEvent};
use certledger_eventstream::consumer::{Handler, HandlerError};
use certledger_eventstream::setup::{StreamSettings, ensure_streams};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub async fn memory_log() -> anyhow::Result<Arc<dyn EventLog>> {
    Ok(certledger_eventlog::connect("sqlite::memory:").await?)
}

/// Appends `per_stream` events to each of `streams` certificate streams of tenant `acme`,
/// interleaved across streams; returns the appended event ids in append order.
pub async fn append_events(
    log: &dyn EventLog,
    streams: usize,
    per_stream: usize,
) -> anyhow::Result<Vec<uuid::Uuid>> {
    let names: Vec<String> = (0..streams).map(|_| certificate_stream()).collect();
    append_to(log, &names, per_stream).await
}

/// A new certificate stream id.
pub fn certificate_stream() -> String {
    format!("certificate-{}", uuid::Uuid::now_v7())
}

/// [`append_events`] to the streams `names`.
pub async fn append_to(
    log: &dyn EventLog,
    names: &[String],
    per_stream: usize,
) -> anyhow::Result<Vec<uuid::Uuid>> {
    let mut ids = Vec::new();
    let mut versions = HashMap::new();
    for round in 0..per_stream {
        for stream in names {
            let version = versions.entry(stream.clone()).or_insert(0u64);
            let metadata = Metadata {
                tenant: "acme".into(),
                actor: "test".into(),
                correlation_id: Some(uuid::Uuid::now_v7()),
                ..Metadata::default()
            };
            let event = NewEvent::new(
                "OrderCancelled",
                1,
                format!("payload {round}").into_bytes(),
                metadata,
            );
            ids.push(event.event_id);
            log.append_one(stream, ExpectedVersion::Exact(*version), vec![event])
                .await?;
            *version += 1;
        }
    }
    Ok(ids)
}

pub async fn jetstream_for(url: &str) -> anyhow::Result<jetstream::Context> {
    let client = async_nats::connect(url).await?;
    let js = jetstream::new(client);
    ensure_streams(&js, &StreamSettings::default()).await?;
    Ok(js)
}

pub async fn stream_messages(js: &jetstream::Context) -> anyhow::Result<u64> {
    let mut stream = js.get_stream("CERTLEDGER").await?;
    Ok(stream.info().await?.state.messages)
}

/// An idempotent effect: records each event id once, and how often it was delivered.
#[derive(Default)]
pub struct Recorder {
    pub deliveries: Mutex<HashMap<uuid::Uuid, u32>>,
    pub applied: Mutex<Vec<RecordedEvent>>,
}

impl Recorder {
    pub fn applied_ids(&self) -> Vec<uuid::Uuid> {
        self.applied
            .lock()
            .map(|a| a.iter().map(|e| e.event_id).collect())
            .unwrap_or_default()
    }

    pub fn applied_count(&self) -> usize {
        self.applied.lock().map(|a| a.len()).unwrap_or(0)
    }
}

#[async_trait::async_trait]
impl Handler for Recorder {
    async fn handle(&self, event: &RecordedEvent) -> Result<(), HandlerError> {
        let first = {
            let mut deliveries = self
                .deliveries
                .lock()
                .map_err(|e| HandlerError::Poison(e.to_string()))?;
            let count = deliveries.entry(event.event_id).or_insert(0);
            *count += 1;
            *count == 1
        };
        if first {
            self.applied
                .lock()
                .map_err(|e| HandlerError::Poison(e.to_string()))?
                .push(event.clone());
        }
        Ok(())
    }
}

/// Someone waits (in PostgreSQL) for the lease on the reader `name` of `log`'s log.
pub async fn lease_waited_for(log: &certledger_eventlog::PgEventLog, name: &str) -> Option<()> {
    let waiting: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
           AND objsubid = 1 AND ((classid::int8 << 32) | objid::int8) = $1",
    )
    .bind(log.lease_key(name))
    .fetch_one(log.pool())
    .await
    .ok()?;
    (waiting > 0).then_some(())
}
