//! The distributed set-up: the log relayed to NATS JetStream and the issuance consumer a
//! durable pull consumer (the same handler as in embedded mode).

mod common;

use certledger_proto::common::v1::{CertificateStatus, KeyAlgorithm, ValidationMethod};
use certledger_proto::order::v1::PlaceOrderRequest;
use certledger_testkit::NatsServer;
use common::*;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_are_issued_through_jetstream() {
    let nats = NatsServer::start().await.expect("nats-server");
    let db = TestDb::postgres().await.expect("test database");
    let relay_stop = CancellationToken::new();
    let (source, relay) = certledger_runtime::events::open_source(
        db.log.clone(),
        Some(&nats.url()),
        true,
        relay_stop.clone(),
    )
    .await
    .expect("JetStream");
    let mut stack = start_stack_with(
        &db,
        test_settings(None),
        source,
        relay.into_iter().collect(),
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let placed = stack
            .orders
            .place_order(PlaceOrderRequest {
                spec: Some(spec(ValidationMethod::None, KeyAlgorithm::EcdsaP256, 1)),
                application: Some(generated(&[&format!("js{i}.example.com")])),
                idempotency_key: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .certificate
            .unwrap();
        ids.push(placed.certificate_id);
    }
    for id in &ids {
        let issued = stack.wait_for(id, None, CertificateStatus::Issued).await;
        assert!(
            issued
                .certificate_pem
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
    }
    relay_stop.cancel();
    stack.stop().await;
}
