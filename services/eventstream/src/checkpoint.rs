//! A reader's checkpoint in the log (a SQL-tail consumer's, the relay's), saved at most
//! once per interval while the reader moves on, and when it stops: a save is a write
//! transaction on the log's database, and after a crash the reader only repeats what it
//! did since the last one (consumers are idempotent; JetStream drops the relay's repeats).

use std::time::Duration;

use certledger_eventlog::EventLog;
use tokio::time::Instant;

pub(crate) struct Checkpoint<'a> {
    log: &'a dyn EventLog,
    name: &'a str,
    interval: Duration,
    /// The position stored, and when.
    saved: u64,
    saved_at: Instant,
}

impl<'a> Checkpoint<'a> {
    /// The checkpoint `name`, stored at `saved`.
    pub(crate) fn new(
        log: &'a dyn EventLog,
        name: &'a str,
        interval: Duration,
        saved: u64,
    ) -> Self {
        Self {
            log,
            name,
            interval,
            saved,
            saved_at: Instant::now(),
        }
    }

    /// The position stored.
    pub(crate) fn saved(&self) -> u64 {
        self.saved
    }

    /// When to save `position`, if it is not what is stored.
    pub(crate) fn due(&self, position: u64) -> Option<Instant> {
        (self.saved != position).then_some(self.saved_at + self.interval)
    }

    pub(crate) async fn save_when_due(&mut self, position: u64) {
        if self.due(position).is_some_and(|at| at <= Instant::now()) {
            self.save(position).await;
        }
    }

    pub(crate) async fn save(&mut self, position: u64) {
        if self.saved == position {
            return;
        }
        self.saved_at = Instant::now();
        match self.log.save_checkpoint(self.name, position).await {
            Ok(()) => self.saved = position,
            // Not saved: the reader repeats a little more after a restart.
            Err(error) => {
                tracing::warn!(checkpoint = %self.name, position, %error, "saving the checkpoint failed");
            }
        }
    }
}

/// Waits until `deadline`, or forever without one.
pub(crate) async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
