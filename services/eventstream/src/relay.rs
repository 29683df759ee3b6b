//! The relay: publishes every committed event of the log to JetStream, in position order.
//!
//! Publication is pipelined: up to `max_in_flight` publishes await their acks at once.
//! The checkpoint (last position whose ack arrived, with every earlier one acked too) is
//! saved in the database at most every `checkpoint_interval` while events come, and when
//! the relay stops. A crash between publish and checkpoint makes the next run publish
//! those events again; JetStream drops the repeats because the
//! `Nats-Msg-Id` is the event id (at-least-once publication, exactly-once in the stream
//! within the duplicate window).

use crate::checkpoint::{Checkpoint, sleep_until_some};
use crate::envelope;
use crate::leased::{Leased, while_leased};
use crate::subject;
use async_nats::jetstream;
use certledger_eventlog::{EventLog, StorageError};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Name of the checkpoint in the log's database.
    pub checkpoint: String,
    /// Events read from the log per batch.
    pub batch: u32,
    /// Publishes awaiting their ack at once.
    pub max_in_flight: usize,
    /// How long published events may go without the checkpoint saying so (a save is a
    /// write transaction on the log's database; it took one per batch before).
    pub checkpoint_interval: Duration,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            checkpoint: "relay:CERTLEDGER".to_owned(),
            batch: 1000,
            max_in_flight: 512,
            checkpoint_interval: Duration::from_millis(200),
        }
    }
}

/// Counters for logs and /metrics.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Events JetStream stored for the first time.
    pub published: AtomicU64,
    /// Events JetStream recognised as already stored (republished after a crash).
    pub duplicates: AtomicU64,
    /// The saved checkpoint.
    pub checkpoint: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Log(#[from] StorageError),
    #[error("publishing event at position {position} to {subject}: {source}")]
    Publish {
        position: u64,
        subject: String,
        #[source]
        source: async_nats::Error,
    },
}

pub struct Relay {
    log: Arc<dyn EventLog>,
    js: jetstream::Context,
    settings: RelaySettings,
    pub stats: Arc<RelayStats>,
}

impl Relay {
    pub fn new(log: Arc<dyn EventLog>, js: jetstream::Context, settings: RelaySettings) -> Self {
        Self {
            log,
            js,
            settings,
            stats: Arc::default(),
        }
    }

    /// Publishes the next batch after `after` and waits for every ack. Returns the last
    /// position published (None when there was nothing to publish). Saves no checkpoint.
    pub async fn publish_batch(&self, after: u64) -> Result<Option<u64>, RelayError> {
        let events = self.log.read_all(after, self.settings.batch).await?;
        let mut acks = FuturesOrdered::new();
        let mut last = None;
        for event in &events {
            if acks.len() >= self.settings.max_in_flight
                && let Some(done) = acks.next().await
            {
                last = Some(self.settle(done)?);
            }
            let subject =
                subject::for_event(&event.metadata.tenant, &event.stream_id, &event.event_type);
            let position = event.position;
            let ack = self
                .js
                .send_publish(subject.clone(), envelope::to_message(event))
                .await
                .map_err(|e| RelayError::Publish {
                    position,
                    subject: subject.clone(),
                    source: e.into(),
                })?;
            acks.push_back(async move { (position, subject, ack.await) });
        }
        while let Some(done) = acks.next().await {
            last = Some(self.settle(done)?);
        }
        Ok(last)
    }

    fn settle(
        &self,
        (position, subject, ack): (
            u64,
            String,
            Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
        ),
    ) -> Result<u64, RelayError> {
        let ack = ack.map_err(|e| RelayError::Publish {
            position,
            subject,
            source: e.into(),
        })?;
        let counter = if ack.duplicate {
            &self.stats.duplicates
        } else {
            &self.stats.published
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(position)
    }

    /// Publishes from the saved checkpoint until `shutdown`, surviving NATS and database
    /// outages (logged, retried with backoff from the last checkpoint). Of the relays on one
    /// log (one in each replica of each service that runs one), the holder of the log's
    /// lease on the checkpoint publishes and the others wait to take over: each event is
    /// published once, not once per relay.
    pub async fn run(&self, shutdown: CancellationToken) {
        let mut backoff = Backoff::default();
        while !shutdown.is_cancelled() {
            let follow = self.follow(&shutdown, &mut backoff);
            let failed = match while_leased(
                self.log.as_ref(),
                &self.settings.checkpoint,
                &shutdown,
                follow,
            )
            .await
            {
                Leased::Done(followed) => followed.err(),
                Leased::Lost => {
                    tracing::warn!(
                        "relay: lost the lease on the log; publishing again once it is held"
                    );
                    None
                }
                Leased::Failed(error) => Some(error.into()),
                Leased::Shutdown => None,
            };
            if let Some(error) = failed {
                let delay = backoff.next();
                tracing::warn!(%error, retry_in = ?delay, "relay: publishing failed; resuming from the last checkpoint");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => {}
                }
            }
        }
        tracing::info!(
            checkpoint = self.stats.checkpoint.load(Ordering::Relaxed),
            "relay stopped"
        );
    }

    /// Publishes from the saved checkpoint until `shutdown` or a failure. The checkpoint
    /// is saved at most every [`RelaySettings::checkpoint_interval`] while events come,
    /// and when this returns: after a crash, what was published since is published again
    /// and JetStream drops the repeats (its duplicate window is an hour).
    async fn follow(
        &self,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
    ) -> Result<(), RelayError> {
        let name = &self.settings.checkpoint;
        let start = self.log.load_checkpoint(name).await?;
        self.stats.checkpoint.store(start, Ordering::Relaxed);
        let mut checkpoint = Checkpoint::new(
            self.log.as_ref(),
            name,
            self.settings.checkpoint_interval,
            start,
        );
        let mut after = start;
        let outcome = loop {
            if shutdown.is_cancelled() {
                break Ok(());
            }
            match self.publish_batch(after).await {
                Ok(Some(last)) => {
                    backoff.reset();
                    tracing::debug!(position = last, "relay: batch published");
                    after = last;
                    checkpoint.save_when_due(after).await;
                }
                Ok(None) => {
                    tokio::select! {
                        _ = self.log.wait_for_new(after) => {}
                        _ = sleep_until_some(checkpoint.due(after)) => checkpoint.save(after).await,
                        _ = shutdown.cancelled() => {}
                    }
                }
                Err(error) => break Err(error),
            }
            self.record(&checkpoint);
        };
        // Everything up to `after` was acknowledged, also when a later publish failed.
        checkpoint.save(after).await;
        self.record(&checkpoint);
        outcome
    }

    fn record(&self, checkpoint: &Checkpoint<'_>) {
        self.stats
            .checkpoint
            .store(checkpoint.saved(), Ordering::Relaxed);
    }
}

/// Exponential backoff from 100 ms to 10 s.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    failures: u32,
}

impl Backoff {
    pub(crate) fn next(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        delay_for_attempt(self.failures)
    }

    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }
}

/// 100 ms doubled per attempt (attempt 1 = 100 ms), at most 10 s.
pub(crate) fn delay_for_attempt(attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(7);
    Duration::from_millis(100u64 << exp).min(Duration::from_secs(10))
}
