//! The issuance handler on its own: events delivered twice have one effect, and an intent
//! left behind by a crash between intent and record is abandoned and signed again.

mod common;

use std::sync::Arc;
use std::time::Duration;

use certledger_domain::certificate::{
    Application, ApproveApplication, IntendIssuance, KeySource, PlaceOrder, Status,
};
use certledger_eventstream::consumer::Handler;
use certledger_issuance::{IssuanceHandler, Issuer, Timers};
use certledger_proto::common::v1::{KeyAlgorithm, ValidationMethod};
use certledger_runtime::{CallContext, CertificateRepository, Expect};
use chrono::Utc;
use common::*;
use tokio_util::sync::CancellationToken;

fn order(id: &str, method: ValidationMethod, key_source: KeySource, names: &[&str]) -> PlaceOrder {
    PlaceOrder {
        certificate_id: id.into(),
        tenant: "default".into(),
        spec: spec(method, KeyAlgorithm::EcdsaP256, 3),
        application: Some(Application {
            domains: names.iter().map(|n| (*n).to_owned()).collect(),
            ip_addresses: vec![],
            subject: Default::default(),
            key_source,
        }),
        predecessor_id: None,
        idempotency_key: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_delivered_twice_has_one_effect() {
    let db = TestDb::postgres().await.expect("test database");
    let dir = tempfile::tempdir().unwrap();
    let ca = test_ca(dir.path());
    let repo = CertificateRepository::new(db.log.clone());
    let issuer = Arc::new(Issuer::new(
        repo.clone(),
        ca.authority.clone(),
        ca.keys.clone(),
        test_settings(None),
    ));
    let shutdown = CancellationToken::new();
    let (timers, _task) = Timers::spawn(issuer.clone(), shutdown.clone());
    let handler = IssuanceHandler::new(issuer.clone(), timers);

    let id = uuid::Uuid::now_v7().to_string();
    let ctx = CallContext::system("test");
    repo.execute(
        &id,
        &ctx,
        Expect::Any,
        order(
            &id,
            ValidationMethod::Approval,
            KeySource::Generate {
                algorithm: KeyAlgorithm::EcdsaP256,
            },
            &["twice.example.com"],
        )
        .into(),
    )
    .await
    .unwrap();

    // Deliver every event of the stream twice, in order, until nothing new appears;
    // approve once validation has started.
    let mut delivered = 0u64;
    let mut approved = false;
    for _ in 0..20 {
        let events = db
            .log
            .read_stream(&format!("certificate-{id}"), delivered)
            .await
            .unwrap();
        if events.is_empty() {
            let state = repo.load(&id, None).await.unwrap().state;
            if state.status == Status::Validating && !approved {
                repo.execute(
                    &id,
                    &ctx,
                    Expect::Any,
                    ApproveApplication {
                        approver: "operator".into(),
                        comment: String::new(),
                    }
                    .into(),
                )
                .await
                .unwrap();
                approved = true;
                continue;
            }
            break;
        }
        for event in &events {
            handler.handle(event).await.unwrap();
            handler.handle(event).await.unwrap();
            delivered = event.stream_version;
        }
    }
    let events = db
        .log
        .read_stream(&format!("certificate-{id}"), 0)
        .await
        .unwrap();
    let count = |t: &str| events.iter().filter(|e| e.event_type == t).count();
    assert_eq!(count("KeyGenerated"), 1);
    assert_eq!(count("ValidationStarted"), 1);
    assert_eq!(count("IssuanceIntended"), 1);
    assert_eq!(count("CertificateIssued"), 1);
    let state = repo.load(&id, None).await.unwrap().state;
    assert_eq!(state.status, Status::Issued);
    // Every reaction names its cause and the issuance service as actor.
    for e in events
        .iter()
        .filter(|e| e.event_type == "CertificateIssued")
    {
        assert_eq!(e.metadata.actor, "issuance");
        assert!(e.metadata.causation_id.is_some());
    }
    // Delivering everything once more changes nothing.
    for event in &events {
        handler.handle(event).await.unwrap();
    }
    let after = db
        .log
        .read_stream(&format!("certificate-{id}"), 0)
        .await
        .unwrap();
    assert_eq!(after.len(), events.len());
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intent_left_by_a_crash_is_abandoned_and_signed_again() {
    let db = TestDb::postgres().await.expect("test database");
    let dir = tempfile::tempdir().unwrap();
    let ca = test_ca(dir.path());
    let repo = CertificateRepository::new(db.log.clone());
    let mut settings = test_settings(None);
    settings.stale_intent_after = Duration::from_millis(300);
    let issuer = Issuer::new(
        repo.clone(),
        ca.authority.clone(),
        ca.keys.clone(),
        settings,
    );
    let ctx = CallContext::system("test");
    let id = uuid::Uuid::now_v7().to_string();
    let names = ["crash.example.com"];
    let csr = openssl_csr(dir.path(), "ec", &names);
    repo.execute(
        &id,
        &ctx,
        Expect::Any,
        order(
            &id,
            ValidationMethod::None,
            KeySource::Csr { pem: csr },
            &names,
        )
        .into(),
    )
    .await
    .unwrap();
    // Validation passes (NONE), then "a previous process" recorded an intent and died
    // before releasing the certificate.
    repo.execute(
        &id,
        &ctx,
        Expect::Any,
        certledger_domain::certificate::StartValidation { challenges: vec![] }.into(),
    )
    .await
    .unwrap();
    let lost_serial = "01aa55aa55aa55aa55aa55aa55aa55aa55aa55";
    let now = Utc::now();
    repo.execute(
        &id,
        &ctx,
        Expect::Any,
        IntendIssuance {
            issuer_ca_id: "builtin".into(),
            serial: lost_serial.into(),
            tbs_sha256: "ab".repeat(32),
            not_before: now,
            not_after: now + chrono::TimeDelta::days(30),
        }
        .into(),
    )
    .await
    .unwrap();
    assert_eq!(
        repo.load(&id, None).await.unwrap().state.status,
        Status::Issuing
    );
    // Too young to be abandoned: the issuer waits until it is stale.
    let wake = issuer.advance(&id, &ctx).await.unwrap();
    let Some(at) = wake else {
        panic!("a young intent must be waited for");
    };
    let wait = (at - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(50)).await;
    // Stale now: abandoned, then issued with a fresh serial.
    let wake = issuer.advance(&id, &ctx).await.unwrap();
    assert!(wake.is_none());
    let state = repo.load(&id, None).await.unwrap().state;
    assert_eq!(state.status, Status::Issued);
    let issued = state.issued.unwrap();
    assert_ne!(issued.serial, lost_serial);
    assert_eq!(state.abandoned_intents.len(), 1);
    assert_eq!(state.abandoned_intents[0].serial, lost_serial);
    let events = db
        .log
        .read_stream(&format!("certificate-{id}"), 0)
        .await
        .unwrap();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "CertificateOrdered",
            "ApplicationSubmitted",
            "ValidationStarted",
            "ValidationPassed",
            "IssuanceIntended",
            "IssuanceFailed",
            "IssuanceIntended",
            "CertificateIssued",
        ]
    );
}
