//! What drives the [`Issuer`]: certificate events (the consumer [`IssuanceHandler`]),
//! timers for steps that wait for time (an HTTP-01 retry, a stale intent), and a recovery
//! scan at start that finds every certificate still on its way to issuance (so that a
//! timer lost in a restart is found again).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use certledger_eventlog::{EventLog, RecordedEvent};
use certledger_eventstream::consumer::{Handler, HandlerError};
use certledger_runtime::CallContext;
use certledger_runtime::repository::certificate_id_of;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::issuer::{AdvanceError, Issuer};

/// Name of the issuance service's consumer.
pub const CONSUMER: &str = "issuance";

/// The events the issuer reacts to: those recorded by others (the order service's
/// applications, an approval given through the issuance API) that can move a certificate
/// towards issuance. The issuer's own steps are not among them: each reaction advances
/// its certificate as far as it can go, so the delivery of a step it recorded itself
/// found nothing left to do (it cost every certificate five deliveries and acks through
/// JetStream). A reaction cut short is taken up again by the redelivery of its trigger,
/// which is acknowledged only when the reaction returns, and by the recovery scan at
/// start. Every other type is ignored without touching the log.
pub const TRIGGERS: &[&str] = &["ApplicationSubmitted", "ApplicationApproved"];

/// Delay before retrying after a transient error in a timer.
const TIMER_RETRY: Duration = Duration::from_secs(5);

/// Schedules certificates to be advanced at a time.
#[derive(Debug, Clone)]
pub struct Timers {
    tx: mpsc::UnboundedSender<(String, DateTime<Utc>)>,
}

impl Timers {
    /// Advance `certificate_id` at `at` (the earliest of several requests wins).
    pub fn schedule(&self, certificate_id: &str, at: DateTime<Utc>) {
        let _ = self.tx.send((certificate_id.to_owned(), at));
    }

    /// Starts the timer task.
    pub fn spawn(issuer: Arc<Issuer>, shutdown: CancellationToken) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run_timers(issuer, rx, shutdown));
        (Self { tx }, task)
    }
}

async fn run_timers(
    issuer: Arc<Issuer>,
    mut rx: mpsc::UnboundedReceiver<(String, DateTime<Utc>)>,
    shutdown: CancellationToken,
) {
    let actor = issuer.settings().actor.clone();
    let clock = issuer.settings().clock.clone();
    let mut due: BTreeSet<(DateTime<Utc>, String)> = BTreeSet::new();
    let mut by_id: HashMap<String, DateTime<Utc>> = HashMap::new();
    let insert = |due: &mut BTreeSet<(DateTime<Utc>, String)>,
                  by_id: &mut HashMap<String, DateTime<Utc>>,
                  id: String,
                  at: DateTime<Utc>| {
        match by_id.get(&id) {
            Some(existing) if *existing <= at => {}
            Some(existing) => {
                due.remove(&(*existing, id.clone()));
                due.insert((at, id.clone()));
                by_id.insert(id, at);
            }
            None => {
                due.insert((at, id.clone()));
                by_id.insert(id, at);
            }
        }
    };
    loop {
        let wait = due
            .first()
            .map(|(at, _)| (*at - clock.now()).to_std().unwrap_or(Duration::ZERO))
            .unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            _ = shutdown.cancelled() => break,
            message = rx.recv() => match message {
                Some((id, at)) => insert(&mut due, &mut by_id, id, at),
                None => break,
            },
            _ = tokio::time::sleep(wait) => {
                let now = clock.now();
                let ready: Vec<(DateTime<Utc>, String)> =
                    due.iter().take_while(|(at, _)| *at <= now).cloned().collect();
                for entry in ready {
                    due.remove(&entry);
                    by_id.remove(&entry.1);
                    if shutdown.is_cancelled() {
                        break;
                    }
                    let id = entry.1;
                    let ctx = CallContext::system(&actor);
                    match issuer.advance(&id, &ctx).await {
                        Ok(Some(at)) => insert(&mut due, &mut by_id, id, at),
                        Ok(None) => {}
                        Err(AdvanceError::Transient(why)) => {
                            tracing::warn!(certificate_id = %id, reason = %why, retry_in = ?TIMER_RETRY, "advancing failed; retrying");
                            let at = clock.now() + chrono::TimeDelta::from_std(TIMER_RETRY).unwrap_or_default();
                            insert(&mut due, &mut by_id, id, at);
                        }
                        Err(AdvanceError::Permanent(why)) => {
                            tracing::error!(certificate_id = %id, reason = %why, "advancing failed for good");
                        }
                    }
                }
            }
        }
    }
    tracing::debug!(pending = due.len(), "issuance timers stopped");
}

/// The consumer's handler: certificate events in, the issuer advances the certificate.
pub struct IssuanceHandler {
    issuer: Arc<Issuer>,
    timers: Timers,
}

impl IssuanceHandler {
    /// A handler advancing with `issuer` and scheduling waits on `timers`.
    pub fn new(issuer: Arc<Issuer>, timers: Timers) -> Self {
        Self { issuer, timers }
    }
}

#[async_trait]
impl Handler for IssuanceHandler {
    async fn handle(&self, event: &RecordedEvent) -> Result<(), HandlerError> {
        if !TRIGGERS.contains(&event.event_type.as_str()) {
            return Ok(());
        }
        let Some(id) = certificate_id_of(&event.stream_id) else {
            return Ok(());
        };
        let ctx = CallContext::reaction(event, &self.issuer.settings().actor);
        // At least as new as this event: the fold of the issuer's own last step (cached)
        // usually is, and then no query is needed to find that nothing is left to do.
        match self
            .issuer
            .advance_since(id, &ctx, Some(event.stream_version))
            .await
        {
            Ok(Some(at)) => {
                self.timers.schedule(id, at);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(AdvanceError::Transient(why)) => Err(HandlerError::Retry(why)),
            Err(AdvanceError::Permanent(why)) => Err(HandlerError::Poison(why)),
        }
    }
}

/// Scans the log once and schedules every certificate that has an application and is
/// not issued, cancelled or rejected yet (the issuer decides what, if anything, is left
/// to do). Returns how many were scheduled.
pub async fn recover(log: Arc<dyn EventLog>, timers: Timers, shutdown: CancellationToken) -> usize {
    let mut pending: HashSet<String> = HashSet::new();
    let mut after = 0;
    loop {
        if shutdown.is_cancelled() {
            return 0;
        }
        let page = match log.read_all(after, 1000).await {
            Ok(page) => page,
            Err(error) => {
                tracing::warn!(%error, "recovery scan: reading the log failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(TIMER_RETRY) => continue,
                    _ = shutdown.cancelled() => return 0,
                }
            }
        };
        let Some(last) = page.last() else {
            break;
        };
        after = last.position;
        for event in &page {
            let Some(id) = certificate_id_of(&event.stream_id) else {
                continue;
            };
            match event.event_type.as_str() {
                "ApplicationSubmitted" => {
                    pending.insert(id.to_owned());
                }
                "CertificateIssued" | "OrderCancelled" | "ApplicationRejected" => {
                    pending.remove(id);
                }
                _ => {}
            }
        }
    }
    // Due at once, whatever the issuer's clock says.
    for id in &pending {
        timers.schedule(id, DateTime::UNIX_EPOCH);
    }
    tracing::info!(
        certificates = pending.len(),
        "recovery scan: certificates on their way to issuance scheduled"
    );
    pending.len()
}
