//! The JetStream streams, created or updated idempotently at start with explicit settings.
//!
//! | setting | value | why |
//! |---|---|---|
//! | storage | file | survives a server restart |
//! | replicas | 1 (3 in a cluster) | configurable; 3 tolerates one node lost |
//! | retention | limits, with no limit on count, bytes or age | old events are never dropped by limits |
//! | discard | new | if an operator does set a limit, publishing fails loudly instead of silently dropping history |
//! | duplicate window | 1 hour | covers a relay restart between publish and checkpoint; repeats after that are absorbed by idempotent consumers |
//! | deny delete / purge | on | the transport follows the log's append-only rule |
//!
//! The SQL log stays the source of truth: a lost stream is rebuilt by re-running the relay
//! from position 0.

use async_nats::jetstream::{self, stream};
use std::time::Duration;

/// Name of the stream that carries the log.
pub const STREAM: &str = "CERTLEDGER";
/// Dead letters are published on `certledger.dlq.<consumer>`.
pub const DEAD_LETTER_ROOT: &str = "certledger.dlq";

#[derive(Debug, Clone)]
pub struct StreamSettings {
    pub name: String,
    pub replicas: usize,
    pub duplicate_window: Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            name: STREAM.to_owned(),
            replicas: 1,
            duplicate_window: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("setting up JetStream stream {stream}: {source}")]
pub struct SetupError {
    pub stream: String,
    #[source]
    pub source: async_nats::Error,
}

fn config(name: &str, subjects: Vec<String>, settings: &StreamSettings) -> stream::Config {
    stream::Config {
        name: name.to_owned(),
        description: Some("certledger event log (see docs/events.md)".to_owned()),
        subjects,
        storage: stream::StorageType::File,
        num_replicas: settings.replicas,
        retention: stream::RetentionPolicy::Limits,
        max_messages: -1,
        max_bytes: -1,
        max_age: Duration::ZERO,
        max_messages_per_subject: -1,
        discard: stream::DiscardPolicy::New,
        duplicate_window: settings.duplicate_window,
        deny_delete: true,
        deny_purge: true,
        ..Default::default()
    }
}

/// Creates or updates the event stream and its dead-letter stream (`<name>_DLQ`).
pub async fn ensure_streams(
    js: &jetstream::Context,
    settings: &StreamSettings,
) -> Result<(), SetupError> {
    let streams = [
        (settings.name.clone(), vec![crate::subject::ALL.to_owned()]),
        (
            format!("{}_DLQ", settings.name),
            vec![format!("{DEAD_LETTER_ROOT}.>")],
        ),
    ];
    for (name, subjects) in streams {
        js.create_or_update_stream(config(&name, subjects, settings))
            .await
            .map_err(|e| SetupError {
                stream: name.clone(),
                source: e.into(),
            })?;
    }
    Ok(())
}
