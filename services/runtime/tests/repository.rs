//! The repository against a real (in-memory SQLite) log: conflicts are decided again,
//! an expected version is honoured, tenants are isolated, unknown event types are
//! skipped but counted.

use std::sync::Arc;

use certledger_domain::certificate::{Application, KeySource};
use certledger_domain::certificate::{CancelOrder, PlaceOrder, Status, SubmitApplication};
use certledger_eventlog::{ExpectedVersion, Metadata, NewEvent};
use certledger_proto::common::v1::{
    CertificateSpec, DomainSlotKind, KeyAlgorithm, ValidationMethod,
};
use certledger_runtime::{CallContext, CertificateRepository, Expect, RepositoryError};

fn spec() -> CertificateSpec {
    CertificateSpec {
        validity_days: 0,
        ..certledger_testkit::certificate_spec(DomainSlotKind::Multi, 3, ValidationMethod::Approval)
    }
}

fn ctx(tenant: &str) -> CallContext {
    CallContext {
        tenant: Some(tenant.into()),
        ..CallContext::system("test")
    }
}

async fn place(repo: &CertificateRepository, id: &str, tenant: &str) {
    repo.execute(
        id,
        &ctx(tenant),
        Expect::Any,
        PlaceOrder {
            certificate_id: id.into(),
            tenant: tenant.into(),
            spec: spec(),
            application: None,
            predecessor_id: None,
            idempotency_key: None,
        }
        .into(),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commands_are_decided_again_not_lost() {
    let log = certledger_eventlog::connect("sqlite::memory:")
        .await
        .unwrap();
    let repo = CertificateRepository::new(log.clone()).with_max_attempts(20);
    place(&repo, "c1", "acme").await;
    // Eight concurrent cancels: exactly one records the cancellation, all succeed.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let repo = repo.clone();
        tasks.push(tokio::spawn(async move {
            repo.execute(
                "c1",
                &ctx("acme"),
                Expect::Any,
                CancelOrder {
                    reason: String::new(),
                }
                .into(),
            )
            .await
        }));
    }
    let mut changed = 0;
    for t in tasks {
        let executed = t.await.unwrap().unwrap();
        assert_eq!(executed.state.status, Status::Cancelled);
        changed += usize::from(executed.changed());
    }
    assert_eq!(changed, 1);
    let loaded = repo.load("c1", Some("acme")).await.unwrap();
    assert_eq!(loaded.state.version, 2);
    assert!(loaded.ordered_at.is_some());
}

#[tokio::test]
async fn expected_version_tenant_and_unknown_events() {
    let log = certledger_eventlog::connect("sqlite::memory:")
        .await
        .unwrap();
    let repo = CertificateRepository::new(Arc::clone(&log));
    place(&repo, "c2", "acme").await;
    let app = Application {
        domains: vec!["a.example".into()],
        ip_addresses: vec![],
        subject: Default::default(),
        key_source: KeySource::Generate {
            algorithm: KeyAlgorithm::Unspecified,
        },
    };
    let e = repo
        .execute(
            "c2",
            &ctx("acme"),
            Expect::Version(7),
            SubmitApplication {
                application: app.clone(),
            }
            .into(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, RepositoryError::VersionMismatch { actual: 1, .. }),
        "{e:?}"
    );

    // Another tenant: not found, exactly like a missing certificate.
    let other = repo.load("c2", Some("other")).await.unwrap_err();
    let missing = repo.load("c3", Some("other")).await.unwrap_err();
    assert_eq!(
        other.to_string().replace("c2", "X"),
        missing.to_string().replace("c3", "X")
    );
    let e = repo
        .execute(
            "c2",
            &ctx("other"),
            Expect::Any,
            CancelOrder {
                reason: String::new(),
            }
            .into(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string().replace("c2", "X"),
        missing.to_string().replace("c3", "X")
    );

    // An event type from a newer build counts towards the version only.
    log.append_one(
        "certificate-c2",
        ExpectedVersion::Exact(1),
        vec![NewEvent::new(
            "SomethingNew",
            1,
            vec![1, 2, 3],
            Metadata::default(),
        )],
    )
    .await
    .unwrap();
    let executed = repo
        .execute(
            "c2",
            &ctx("acme"),
            Expect::Version(2),
            SubmitApplication { application: app }.into(),
        )
        .await
        .unwrap();
    assert_eq!(executed.state.version, 3);
    assert_eq!(executed.state.status, Status::Applied);
}
