//! The scheduler's pure policy: when a certificate is next due, when auto-renew starts,
//! and what a failed renewal records (attempt, next retry, or none before expiry).

mod common;

use certledger_domain::certificate::*;
use certledger_domain::time::from_timestamp;
use certledger_proto::common::v1::FailureCode;
use common::*;

fn state(history: Vec<certledger_domain::CertificateEvent>) -> CertificateState {
    fold(&history)
}

fn policy() -> RenewalPolicy {
    RenewalPolicy::default()
}

#[test]
fn an_issued_certificate_is_next_due_at_its_first_threshold_or_window() {
    let s = state(issued());
    // 90-day certificate, auto-renew on: the 30-day threshold and the 30-day window
    // coincide.
    assert_eq!(policy().next_due(&s), Some(not_after() - days(30)));
    assert_eq!(policy().renewal_due(&s), Some(not_after() - days(30)));
    // A share-of-lifetime window opens earlier than the first threshold.
    let two_thirds = RenewalPolicy {
        window: RenewalWindow::ShareOfLifetime {
            numerator: 2,
            denominator: 3,
        },
        ..policy()
    };
    assert_eq!(two_thirds.next_due(&s), Some(not_before() + days(60)));
}

#[test]
fn announced_thresholds_and_started_renewals_move_the_due_time() {
    let h = run(
        issued(),
        CheckExpiry {
            now: not_after() - days(20),
            thresholds: DEFAULT_EXPIRY_THRESHOLDS.to_vec(),
        },
    );
    let h = run(h, start_renewal(SUCCESSOR, in_window()));
    let s = state(h);
    assert_eq!(policy().renewal_due(&s), None, "a renewal is active");
    assert_eq!(policy().next_due(&s), Some(not_after() - days(14)));
}

#[test]
fn without_auto_renew_only_expiry_is_due() {
    let s = state(issued_without_auto_renew());
    assert_eq!(policy().renewal_due(&s), None);
    assert_eq!(policy().next_due(&s), Some(not_after() - days(30)));
    let late = run(
        issued_without_auto_renew(),
        CheckExpiry {
            now: not_after() - days(1),
            thresholds: DEFAULT_EXPIRY_THRESHOLDS.to_vec(),
        },
    );
    assert_eq!(policy().next_due(&state(late)), Some(not_after()));
}

fn issued_without_auto_renew() -> Vec<certledger_domain::CertificateEvent> {
    let mut h = issued();
    if let Some(certledger_domain::CertificateEvent::CertificateOrdered(o)) = h.first_mut()
        && let Some(spec) = o.spec.as_mut()
    {
        spec.auto_renew = false;
    }
    h
}

#[test]
fn a_failed_renewal_is_retried_with_backoff_and_numbered() {
    let now = in_window();
    let h = run(issued(), start_renewal(SUCCESSOR, now));
    let s = state(h.clone());
    assert_eq!(renewal_attempt(&s), 1);
    let failure = policy().renewal_failure(&s, FailureCode::CaUnavailable, "CA down", now);
    assert_eq!(failure.attempt, 1);
    assert_eq!(failure.code, FailureCode::CaUnavailable as i32);
    let retry = failure.next_retry_at.as_ref().and_then(from_timestamp);
    assert_eq!(retry, Some(now + chrono::TimeDelta::minutes(10)));
    let h = run(
        h,
        RecordRenewalFailed {
            successor_id: SUCCESSOR.into(),
            failure,
        },
    );
    let s = state(h);
    assert_eq!(renewal_attempt(&s), 2);
    assert_eq!(policy().renewal_due(&s), retry);
    assert_eq!(
        policy()
            .renewal_failure(&s, FailureCode::CaUnavailable, "x", now)
            .attempt,
        2
    );
}

#[test]
fn a_renewal_that_cannot_be_retried_before_expiry_says_so() {
    let now = not_after() - chrono::TimeDelta::minutes(5);
    let h = run(issued(), start_renewal(SUCCESSOR, now));
    let s = state(h.clone());
    let failure = policy().renewal_failure(&s, FailureCode::ValidationMismatch, "wrong token", now);
    assert_eq!(failure.next_retry_at, None);
    assert!(
        failure.reason.starts_with(
            "wrong token; no retry before the certificate expires at 2026-04-02T00:00:00Z"
        ),
        "{}",
        failure.reason
    );
    let s = state(run(
        h,
        RecordRenewalFailed {
            successor_id: SUCCESSOR.into(),
            failure,
        },
    ));
    assert_eq!(policy().renewal_due(&s), None);
    // Expiry is still announced.
    assert_eq!(policy().next_due(&s), Some(not_after() - days(30)));
}

#[test]
fn a_certificate_that_is_not_live_is_never_due() {
    let expired = run(
        issued(),
        CheckExpiry {
            now: not_after(),
            thresholds: DEFAULT_EXPIRY_THRESHOLDS.to_vec(),
        },
    );
    assert_eq!(policy().next_due(&state(expired)), None);
    assert_eq!(policy().next_due(&state(applied())), None);
}
