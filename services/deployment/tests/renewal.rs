//! Renewal end to end, on a clock the test moves: RenewCertificate inside and outside the
//! window; auto-renew of a certificate deployed to a real nginx (the successor is issued,
//! replaces it there — checked by a TLS handshake — and the predecessor is superseded,
//! then expires alone); two scheduler replicas with a restart in between starting exactly
//! one successor per certificate.

mod common;
mod stack;

use std::sync::Arc;
use std::time::Duration;

use certledger_domain::certificate::RenewalPolicy;
use certledger_order::{CertificateList, RenewalSettings, RenewalSetup, Renewer, Scheduler};
use certledger_proto::common::v1::{CertificateStatus, ValidationMethod};
use certledger_proto::order::v1::{Certificate, HistoryEntry, RenewCertificateRequest};
use certledger_runtime::CertificateRepository;
use certledger_runtime::clock::ManualClock;
use certledger_testkit::eventually;
use chrono::{DateTime, TimeDelta, Utc};
use common::{Nginx, SNI, TestCa};
use stack::*;
use tokio_util::sync::CancellationToken;
use tonic::Code;

fn renewal(clock: &Arc<ManualClock>, scheduler: bool) -> RenewalSetup {
    RenewalSetup {
        settings: RenewalSettings {
            default_policy: RenewalPolicy::default(),
            clock: clock.clone(),
            ..RenewalSettings::default()
        },
        scheduler_interval: scheduler.then_some(Duration::from_millis(50)),
    }
}

fn auto_renew() -> certledger_proto::common::v1::CertificateSpec {
    certledger_proto::common::v1::CertificateSpec {
        auto_renew: true,
        ..spec(ValidationMethod::None)
    }
}

fn not_after(cert: &Certificate) -> DateTime<Utc> {
    let ts = cert.not_after.as_ref().expect("not_after");
    DateTime::from_timestamp(ts.seconds, 0).expect("timestamp")
}

fn types(history: &[HistoryEntry]) -> Vec<&str> {
    history.iter().map(|e| e.event_type.as_str()).collect()
}

async fn renew(
    stack: &Stack,
    tenant: &str,
    id: &str,
) -> Result<(Certificate, Certificate), tonic::Status> {
    let response = stack
        .orders
        .clone()
        .renew_certificate(as_tenant(
            tenant,
            RenewCertificateRequest {
                certificate_id: id.into(),
                csr_pem: String::new(),
            },
        ))
        .await?
        .into_inner();
    Ok((
        response.predecessor.expect("predecessor"),
        response.successor.expect("successor"),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn renew_certificate_inside_and_outside_the_window() {
    let clock = ManualClock::new(Utc::now());
    let stack = start_stack_with(None, Some(renewal(&clock, false))).await;
    let id = stack
        .order_spec(
            "acme",
            &["renew.example.test"],
            spec(ValidationMethod::None),
        )
        .await;
    let cert = stack.wait_for(&id, "acme", CertificateStatus::Issued).await;
    let end = not_after(&cert);

    // Too early: FAILED_PRECONDITION with the date the window opens; nothing recorded.
    let early = renew(&stack, "acme", &id).await.expect_err("too early");
    assert_eq!(early.code(), Code::FailedPrecondition, "{early:?}");
    let opens = (end - TimeDelta::days(30)).format("%Y-%m-%d").to_string();
    assert!(
        early
            .message()
            .contains(&format!("renewal window opens on {opens}")),
        "{}",
        early.message()
    );
    let version = cert.version;
    assert_eq!(stack.certificate(&id, "acme").await.version, version);

    // Another tenant's certificate does not exist; neither does an unknown id.
    let other = renew(&stack, "globex", &id)
        .await
        .expect_err("other tenant");
    assert_eq!(other.code(), Code::NotFound);
    let unknown = renew(&stack, "acme", &uuid::Uuid::now_v7().to_string())
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);

    // Inside the window: a successor with the same specification, linked both ways.
    clock.set(end - TimeDelta::days(10));
    let (predecessor, successor) = renew(&stack, "acme", &id).await.expect("renew");
    assert_eq!(predecessor.successor_id, successor.certificate_id);
    assert_eq!(successor.predecessor_id, id);
    assert_eq!(successor.spec, cert.spec);
    assert_eq!(successor.domains, cert.domains);
    // Asking again (a client retrying) gives the same successor, and records nothing.
    let (again, same) = renew(&stack, "acme", &id).await.expect("renew again");
    assert_eq!(same.certificate_id, successor.certificate_id);
    assert_eq!(again.version, predecessor.version);

    // The successor is issued, and the predecessor superseded.
    let issued = stack
        .wait_for(&successor.certificate_id, "acme", CertificateStatus::Issued)
        .await;
    assert!(
        not_after(&issued) > end,
        "the successor outlives its predecessor"
    );
    eventually(DEADLINE, "predecessor superseded", || async {
        let h = stack.history_types(&id, "acme").await;
        h.iter().any(|t| t == "CertificateSuperseded").then_some(())
    })
    .await
    .expect("superseded");
    // A superseded certificate is not renewed again.
    let twice = renew(&stack, "acme", &id).await;
    let twice = twice.map(|(_, s)| s.certificate_id);
    assert_eq!(twice.ok(), Some(successor.certificate_id.clone()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auto_renewal_replaces_the_deployed_certificate_and_only_the_old_one_expires() {
    let clock = ManualClock::new(Utc::now());
    let stack = start_stack_with(None, Some(renewal(&clock, true))).await;
    let ca = TestCa::new();
    let nginx = Nginx::start(&ca.bundle("initial", &[SNI], &[])).await;
    let target = register_nginx(&stack, "acme", &nginx).await;
    let id = stack.order_spec("acme", &[SNI], auto_renew()).await;
    let old = stack.wait_for(&id, "acme", CertificateStatus::Issued).await;
    let d = deploy(&stack, "acme", &id, &target.target_id)
        .await
        .expect("deploy");
    assert_eq!(d.state, "succeeded");
    assert_eq!(served(&nginx).await, old.sha256_fingerprint);

    // Into the renewal window: the scheduler renews, the successor is issued and
    // replaces the old certificate on nginx.
    clock.set(not_after(&old) - TimeDelta::days(20));
    let successor_id = eventually(DEADLINE, "renewal started", || async {
        let c = stack.certificate(&id, "acme").await;
        (!c.successor_id.is_empty()).then_some(c.successor_id)
    })
    .await
    .expect("successor");
    let new = stack
        .wait_for(&successor_id, "acme", CertificateStatus::Issued)
        .await;
    wait_for_replacement(&stack, "acme", &target.target_id, &successor_id, &id).await;
    assert_eq!(served(&nginx).await, new.sha256_fingerprint);

    // Both histories show the chain.
    let old_history = stack.history(&id, "acme").await;
    let old_types = types(&old_history);
    for expected in [
        "ExpiryApproaching",
        "RenewalStarted",
        "CertificateSuperseded",
    ] {
        assert!(old_types.contains(&expected), "{old_types:?}");
    }
    let new_history = stack.history(&successor_id, "acme").await;
    assert_eq!(types(&new_history)[0], "CertificateOrdered");
    assert_eq!(new.predecessor_id, id);
    assert_eq!(
        stack.certificate(&id, "acme").await.successor_id,
        successor_id
    );

    // Past the old not-after: the old certificate expires, the new one does not.
    clock.set(not_after(&old) + TimeDelta::seconds(1));
    stack
        .wait_for(&id, "acme", CertificateStatus::Expired)
        .await;
    let old_types = stack.history_types(&id, "acme").await;
    assert_eq!(
        old_types
            .iter()
            .filter(|t| *t == "CertificateExpired")
            .count(),
        1
    );
    assert_eq!(
        old_types.iter().filter(|t| *t == "RenewalStarted").count(),
        1,
        "one renewal: {old_types:?}"
    );
    let new_types = stack.history_types(&successor_id, "acme").await;
    assert!(
        !new_types
            .iter()
            .any(|t| t == "CertificateExpired" || t == "RenewalStarted"),
        "{new_types:?}"
    );
    assert_eq!(
        stack.certificate(&successor_id, "acme").await.status,
        CertificateStatus::Issued as i32
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_scheduler_replicas_and_a_restart_start_one_successor_each() {
    const CERTIFICATES: usize = 8;
    let clock = ManualClock::new(Utc::now());
    // The service's own scheduler is off: the test runs the replicas.
    let stack = start_stack_with(None, Some(renewal(&clock, false))).await;
    let mut ids = Vec::new();
    for i in 0..CERTIFICATES {
        let name = format!("r{i}.example.test");
        ids.push(stack.order_spec("acme", &[&name], auto_renew()).await);
    }
    let mut end = None;
    for id in &ids {
        let c = stack.wait_for(id, "acme", CertificateStatus::Issued).await;
        end = Some(not_after(&c));
    }
    let end = end.expect("certificates");
    let list = CertificateList::open(&stack.db.url, &stack.db.schema)
        .await
        .expect("index");
    let renewer = Renewer::new(
        CertificateRepository::new(stack.db.log.clone()),
        Arc::new(RenewalSettings {
            clock: clock.clone(),
            ..RenewalSettings::default()
        }),
    );
    let replica = |token: CancellationToken| {
        let scheduler = Scheduler::new(list.clone(), renewer.clone(), Duration::from_millis(10));
        tokio::spawn(scheduler.run(token))
    };
    let (a, b) = (CancellationToken::new(), CancellationToken::new());
    let (task_a, task_b) = (replica(a.clone()), replica(b.clone()));
    // Every certificate enters its window at once.
    clock.set(end - TimeDelta::days(5));
    let started = |id: String| {
        let stack = &stack;
        async move {
            stack
                .history_types(&id, "acme")
                .await
                .iter()
                .filter(|t| *t == "RenewalStarted")
                .count()
        }
    };
    eventually(DEADLINE, "the first renewal", || async {
        for id in &ids {
            if started(id.clone()).await > 0 {
                return Some(());
            }
        }
        None
    })
    .await
    .expect("a renewal");
    // Replica A restarts while the others are on their way.
    a.cancel();
    task_a.await.expect("replica a stops");
    let a2 = CancellationToken::new();
    let task_a2 = replica(a2.clone());
    for id in &ids {
        let successor = eventually(DEADLINE, "renewal started", || async {
            let c = stack.certificate(id, "acme").await;
            (!c.successor_id.is_empty()).then_some(c.successor_id)
        })
        .await
        .expect("successor");
        stack
            .wait_for(&successor, "acme", CertificateStatus::Issued)
            .await;
    }
    // Let the replicas look again once everything is settled, then count.
    for id in &ids {
        eventually(DEADLINE, "superseded", || async {
            let h = stack.history_types(id, "acme").await;
            h.iter().any(|t| t == "CertificateSuperseded").then_some(())
        })
        .await
        .expect("superseded");
    }
    a2.cancel();
    b.cancel();
    task_a2.await.expect("replica a2 stops");
    task_b.await.expect("replica b stops");
    let mut successors = std::collections::BTreeSet::new();
    for id in &ids {
        assert_eq!(started(id.clone()).await, 1, "one renewal of {id}");
        successors.insert(stack.certificate(id, "acme").await.successor_id);
    }
    assert_eq!(successors.len(), CERTIFICATES, "distinct successors");
    // No other certificate names a predecessor: exactly one successor each.
    let all = stack.db.log.read_all(0, 100_000).await.expect("read log");
    let ordered_with_predecessor = all
        .iter()
        .filter(|e| e.event_type == "CertificateOrdered")
        .filter_map(|e| {
            certledger_runtime::repository::decode_event(e)
                .ok()
                .flatten()
        })
        .filter(|e| {
            matches!(e, certledger_domain::CertificateEvent::CertificateOrdered(o) if !o.predecessor_id.is_empty())
        })
        .count();
    assert_eq!(ordered_with_predecessor, CERTIFICATES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_renewal_records_why_and_when_it_is_retried() {
    use certledger_proto::common::v1::FailureCode;
    use certledger_proto::issuance::v1::issuance_service_client::IssuanceServiceClient;
    use certledger_proto::issuance::v1::{ApproveApplicationRequest, RejectApplicationRequest};

    let clock = ManualClock::new(Utc::now());
    let stack = start_stack_with(None, Some(renewal(&clock, true))).await;
    let issuance = IssuanceServiceClient::connect(stack.issuance.service.url())
        .await
        .expect("issuance client");
    let approval = certledger_proto::common::v1::CertificateSpec {
        auto_renew: true,
        ..spec(ValidationMethod::Approval)
    };
    let id = stack
        .order_spec("acme", &["retry.example.test"], approval)
        .await;
    let approve = |id: String| {
        let issuance = issuance.clone();
        async move {
            eventually(DEADLINE, "application awaiting approval", || {
                let mut issuance = issuance.clone();
                let id = id.clone();
                async move {
                    issuance
                        .approve_application(as_tenant(
                            "acme",
                            ApproveApplicationRequest {
                                certificate_id: id,
                                comment: "ok".into(),
                            },
                        ))
                        .await
                        .ok()
                }
            })
            .await
            .expect("approved");
        }
    };
    approve(id.clone()).await;
    let cert = stack.wait_for(&id, "acme", CertificateStatus::Issued).await;

    // Auto-renew starts a successor; the operator rejects it.
    let now = not_after(&cert) - TimeDelta::days(20);
    clock.set(now);
    let first = eventually(DEADLINE, "renewal started", || async {
        let c = stack.certificate(&id, "acme").await;
        (!c.successor_id.is_empty()).then_some(c.successor_id)
    })
    .await
    .expect("successor");
    eventually(DEADLINE, "rejected", || async {
        issuance
            .clone()
            .reject_application(as_tenant(
                "acme",
                RejectApplicationRequest {
                    certificate_id: first.clone(),
                    reason: "not this week".into(),
                },
            ))
            .await
            .ok()
    })
    .await
    .expect("reject");

    // The old certificate says why, which attempt it was, and when the next one is.
    let failure = eventually(DEADLINE, "renewal failure recorded", || async {
        stack.certificate(&id, "acme").await.last_failure
    })
    .await
    .expect("failure");
    assert_eq!(failure.code, FailureCode::RejectedByOperator as i32);
    assert_eq!(failure.attempt, 1);
    assert!(
        failure.reason.contains("not this week"),
        "{}",
        failure.reason
    );
    let retry = failure.next_retry_at.expect("a retry time");
    let retry = DateTime::from_timestamp(retry.seconds, 0).expect("timestamp");
    assert_eq!(retry - now, TimeDelta::minutes(10));
    assert!(
        stack.certificate(&id, "acme").await.successor_id.is_empty(),
        "no renewal is active"
    );

    // Not before the retry time; then a second attempt with a new successor.
    clock.set(retry + TimeDelta::seconds(1));
    let second = eventually(DEADLINE, "second renewal", || async {
        let c = stack.certificate(&id, "acme").await;
        (!c.successor_id.is_empty()).then_some(c.successor_id)
    })
    .await
    .expect("second successor");
    assert_ne!(second, first);
    approve(second.clone()).await;
    stack
        .wait_for(&second, "acme", CertificateStatus::Issued)
        .await;
    let history = stack.history(&id, "acme").await;
    let started: Vec<&str> = types(&history)
        .into_iter()
        .filter(|t| *t == "RenewalStarted" || *t == "RenewalFailed")
        .collect();
    assert_eq!(
        started,
        ["RenewalStarted", "RenewalFailed", "RenewalStarted"]
    );
}
