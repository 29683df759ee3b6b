//! The expiry and auto-renew scheduler: finds certificates whose due time has come in the
//! index ([`CertificateList::due`]; never by reading every stream), announces crossed
//! expiry thresholds and expiry, and starts due auto-renewals.
//!
//! Any number of replicas may run: each step is a command decided on the certificate's
//! fresh state and appended at the version it was decided on, so two replicas doing the
//! same step at once append it once (the loser decides again and finds nothing to do),
//! and a renewal's successor id is derived from the attempt, so it is ordered once.

use std::time::Duration;

use anyhow::Context;
use certledger_domain::certificate::CheckExpiry;
use certledger_proto::codec::EventCodec;
use certledger_runtime::{CallContext, Expect};
use chrono::TimeDelta;
use tokio_util::sync::CancellationToken;

use crate::listing::{CertificateList, ListRow};
use crate::renewal::{Renewer, Trigger};

/// The actor of the scheduler's commands.
pub const ACTOR: &str = "order-scheduler";

/// Certificates looked at per query.
const BATCH: u32 = 100;

/// When a due certificate could not be handled (or its step was refused), when it is
/// looked at again (in the scheduler's clock).
const POSTPONE: TimeDelta = TimeDelta::minutes(5);

/// The scheduler.
#[derive(Debug, Clone)]
pub struct Scheduler {
    list: CertificateList,
    renewer: Renewer,
    interval: Duration,
}

impl Scheduler {
    /// A scheduler over the index `list`, looking every `interval` (real time).
    pub fn new(list: CertificateList, renewer: Renewer, interval: Duration) -> Self {
        Self {
            list,
            renewer,
            interval,
        }
    }

    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(interval = ?self.interval, "expiry and renewal scheduler started");
        while !shutdown.is_cancelled() {
            // A full batch that made progress: more may be due at once. A batch whose
            // steps all failed waits like any other (their rows may lag the log, so
            // postponing them can miss; looking again at once would spin).
            let (looked, done) = self.run_once().await;
            if looked >= BATCH as usize && done > 0 {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    /// Handles the certificates due now (one batch); returns how many it looked at and
    /// how many of their steps succeeded.
    pub async fn run_once(&self) -> (usize, usize) {
        let now = self.renewer.settings().clock.now();
        let due = match self.list.due(now, BATCH).await {
            Ok(due) => due,
            Err(error) => {
                tracing::warn!(%error, "reading the due certificates failed; trying again");
                return (0, 0);
            }
        };
        let mut done = 0;
        for id in &due {
            if let Err(error) = self.step(id).await {
                tracing::warn!(certificate_id = %id, error = format!("{error:#}"), "scheduled step failed; postponed");
                if let Err(error) = self.postpone_current(id).await {
                    tracing::warn!(certificate_id = %id, error = format!("{error:#}"), "postponing failed");
                }
            } else {
                done += 1;
            }
        }
        (due.len(), done)
    }

    /// One certificate's due step: expiry announcements, then an auto-renewal if due;
    /// then its index row from the state it is left in.
    async fn step(&self, certificate_id: &str) -> anyhow::Result<()> {
        let settings = self.renewer.settings();
        let repo = self.renewer.repository();
        let now = settings.clock.now();
        let ctx = CallContext::system(ACTOR);
        let executed = repo
            .execute_with(certificate_id, &ctx, Expect::Any, |state| {
                Ok(CheckExpiry {
                    now,
                    thresholds: settings.policy(&state.spec.issuer).thresholds.clone(),
                }
                .into())
            })
            .await
            .context("announcing expiry")?;
        for event in &executed.events {
            tracing::info!(
                certificate_id,
                event = event.event_type(),
                "expiry announced"
            );
        }
        let state = &executed.state;
        let policy = settings.policy(&state.spec.issuer);
        if policy.renewal_due(state).is_some_and(|at| at <= now) {
            self.renewer
                .renew(&ctx, certificate_id, None, Trigger::AutoRenew)
                .await
                .context("auto-renewing")?;
        }
        self.refresh(certificate_id).await
    }

    /// Rewrites the index row from the fresh state; a row still due now is postponed.
    async fn refresh(&self, certificate_id: &str) -> anyhow::Result<()> {
        let settings = self.renewer.settings();
        let events = self
            .renewer
            .repository()
            .read(certificate_id)
            .await
            .context("reading the certificate")?;
        let Some(first) = events.first() else {
            return Ok(());
        };
        let loaded = certledger_runtime::repository::fold_stored(&events);
        let mut row = ListRow::of(&loaded.state, first.recorded.position, settings);
        let now = settings.clock.now();
        if row.due_at.is_some_and(|at| at <= now) {
            tracing::warn!(
                certificate_id,
                "still due after its step (a step refused?); looked at again later"
            );
            row.due_at = Some(now + POSTPONE);
        }
        self.list
            .upsert(&row)
            .await
            .context("updating the scheduler's index")
    }

    async fn postpone_current(&self, certificate_id: &str) -> anyhow::Result<()> {
        let loaded = self
            .renewer
            .repository()
            .load(certificate_id, None)
            .await
            .context("loading the certificate")?;
        let at = self.renewer.settings().clock.now() + POSTPONE;
        self.list
            .postpone(certificate_id, loaded.state.version, at)
            .await
            .context("postponing in the scheduler's index")
    }
}
