//! When the expiry and renewal scheduler must next look at a certificate, and what a
//! renewal's failure means for the next attempt: pure functions of the state, the policy
//! and the time (the scheduler keeps the result in an index, so it never reads every
//! stream to find what is due).

use certledger_proto::common::v1::{Failure, FailureCode};
use chrono::{DateTime, TimeDelta, Utc};

use super::policy::{DEFAULT_EXPIRY_THRESHOLDS, RenewalWindow};
use super::state::{CertificateState, RenewalState, Status};
use crate::time::{days_before, instant, to_timestamp};

/// How long after a failed renewal the next one is started: `first`, doubling with each
/// attempt, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first failure.
    pub first: TimeDelta,
    /// The longest wait.
    pub max: TimeDelta,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            first: TimeDelta::minutes(10),
            max: TimeDelta::hours(12),
        }
    }
}

impl Backoff {
    /// The wait after failed attempt `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> TimeDelta {
        let doublings = attempt.saturating_sub(1).min(30);
        self.first
            .checked_mul(1 << doublings)
            .unwrap_or(self.max)
            .min(self.max)
    }
}

/// The scheduler's policy for one issuer: the renewal window, the expiry thresholds and
/// the backoff between renewal attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalPolicy {
    /// When renewal is allowed (and auto-renew starts).
    pub window: RenewalWindow,
    /// Expiry thresholds in days.
    pub thresholds: Vec<u32>,
    /// Wait between failed auto-renewals.
    pub backoff: Backoff,
}

impl Default for RenewalPolicy {
    fn default() -> Self {
        Self {
            window: RenewalWindow::default(),
            thresholds: DEFAULT_EXPIRY_THRESHOLDS.to_vec(),
            backoff: Backoff::default(),
        }
    }
}

/// The number of the renewal attempt a new renewal of `state` would be (1 for the
/// first; an active renewal keeps its number): failed renewals so far, plus one.
pub fn renewal_attempt(state: &CertificateState) -> u32 {
    let failed = state
        .renewals
        .iter()
        .filter(|r| r.state == RenewalState::Failed)
        .count();
    u32::try_from(failed).unwrap_or(u32::MAX).saturating_add(1)
}

impl RenewalPolicy {
    /// When auto-renew should start a renewal: when the window opens, or once a failed
    /// renewal's retry is due. `None` when auto-renew is off, the certificate is not live,
    /// a renewal is on its way or done, or the last failure is not retried.
    pub fn renewal_due(&self, state: &CertificateState) -> Option<DateTime<Utc>> {
        if !state.spec.auto_renew
            || state.status != Status::Issued
            || state.is_superseded()
            || state.active_renewal().is_some()
        {
            return None;
        }
        let issued = state.issued.as_ref()?;
        let opens = self.window.opens_at(issued.not_before, issued.not_after);
        match state.renewals.last() {
            None => Some(opens),
            Some(last) => {
                let retry = last.failure.as_ref()?.next_retry_at.as_ref()?;
                let retry = crate::time::from_timestamp(retry)?;
                Some(retry.max(opens))
            }
        }
    }

    /// The next time anything is due for `state`: an expiry threshold not yet announced,
    /// expiry itself, or an auto-renewal. `None` when nothing will ever be (the
    /// certificate is not live).
    pub fn next_due(&self, state: &CertificateState) -> Option<DateTime<Utc>> {
        if state.status != Status::Issued {
            return None;
        }
        let issued = state.issued.as_ref()?;
        let lowest_announced = state.announced_thresholds.first().copied();
        let threshold = self
            .thresholds
            .iter()
            .filter(|t| lowest_announced.is_none_or(|low| **t < low))
            .map(|t| days_before(issued.not_after, *t))
            .filter(|at| *at > issued.not_before)
            .min();
        [Some(issued.not_after), threshold, self.renewal_due(state)]
            .into_iter()
            .flatten()
            .min()
    }

    /// The failure to record on `predecessor` for its active renewal, whose successor
    /// failed with `code` and `reason` at `now`: the attempt number, and the next retry
    /// when auto-renew will try again before the certificate expires (otherwise none,
    /// and the reason says so, for the operator to act).
    pub fn renewal_failure(
        &self,
        predecessor: &CertificateState,
        code: FailureCode,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Failure {
        let attempt = renewal_attempt(predecessor);
        let not_after = predecessor.not_after();
        let next = now + self.backoff.delay(attempt);
        let (next_retry_at, reason) = if !predecessor.spec.auto_renew {
            (
                None,
                format!("{reason}; auto-renew is off: renew again by hand"),
            )
        } else if not_after.is_some_and(|end| next >= end) {
            (
                None,
                format!(
                    "{reason}; no retry before the certificate expires at {}: renew by hand or replace it",
                    not_after.map(instant).unwrap_or_default()
                ),
            )
        } else {
            (Some(to_timestamp(next)), reason.to_owned())
        };
        Failure {
            code: code as i32,
            reason,
            attempt,
            next_retry_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_max() {
        let b = Backoff::default();
        assert_eq!(b.delay(1), TimeDelta::minutes(10));
        assert_eq!(b.delay(2), TimeDelta::minutes(20));
        assert_eq!(b.delay(4), TimeDelta::minutes(80));
        assert_eq!(b.delay(10), TimeDelta::hours(12));
        assert_eq!(b.delay(u32::MAX), TimeDelta::hours(12));
    }
}
