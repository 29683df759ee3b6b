//! The order service over gRPC, in-process on a free port, against a fresh PostgreSQL
//! schema (or in-memory SQLite where that is all a test needs).

mod common;

use certledger_proto::common::v1::{
    CertificateStatus, DomainSlotKind, KeyAlgorithm, PageRequest, ValidationMethod,
};
use certledger_proto::order::v1::{
    CancelOrderRequest, GetCertificateRequest, GetHistoryRequest, ListCertificatesRequest,
    PlaceOrderRequest, RenewCertificateRequest, SubmitApplicationRequest, WatchCertificateRequest,
};
use certledger_testkit::eventually;
use common::*;
use futures::StreamExt;
use tonic::Code;

fn place(spec: certledger_proto::common::v1::CertificateSpec) -> PlaceOrderRequest {
    PlaceOrderRequest {
        spec: Some(spec),
        ..Default::default()
    }
}

#[track_caller]
fn assert_invalid(result: Result<impl std::fmt::Debug, tonic::Status>, field: &str) -> String {
    let status = result.expect_err("must be refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with(&format!("{field}: ")),
        "message must name {field}: {}",
        status.message()
    );
    status.message().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_then_application_then_history_and_watch() {
    let db = TestDb::postgres().await.expect("test database");
    let mut order = start_order(&db).await;
    let c = &mut order.client;

    let placed = c.place_order(place(multi(3))).await.unwrap().into_inner();
    assert!(!placed.replayed);
    let cert = placed.certificate.unwrap();
    assert_eq!(cert.status, CertificateStatus::Ordered as i32);
    assert_eq!(cert.version, 1);
    assert!(cert.ordered_at.is_some());
    let id = cert.certificate_id.clone();

    // Watch from the start: the history, then live events.
    let mut watch = c
        .watch_certificate(WatchCertificateRequest {
            certificate_id: id.clone(),
            after_version: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.event_type, "CertificateOrdered");
    assert_eq!(first.version, 1);

    let applied = c
        .submit_application(SubmitApplicationRequest {
            certificate_id: id.clone(),
            application: Some(generated(&["WWW.Example.com", "bücher.example"])),
            expected_version: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(applied.status, CertificateStatus::Applied as i32);
    assert_eq!(
        applied.domains,
        vec!["www.example.com", "xn--bcher-kva.example"]
    );
    let second = tokio::time::timeout(DEADLINE, watch.next())
        .await
        .expect("live event")
        .unwrap()
        .unwrap();
    assert_eq!(second.event_type, "ApplicationSubmitted");
    assert_eq!(second.version, 2);
    assert!(second.event.is_some());

    // A second application is a lifecycle violation.
    let again = c
        .submit_application(SubmitApplicationRequest {
            certificate_id: id.clone(),
            application: Some(generated(&["other.example"])),
            expected_version: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");

    // Stale expected version: ABORTED.
    let stale = c
        .cancel_order(CancelOrderRequest {
            certificate_id: id.clone(),
            reason: "changed my mind".into(),
            expected_version: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted, "{stale:?}");

    let cancelled = c
        .cancel_order(CancelOrderRequest {
            certificate_id: id.clone(),
            reason: "changed my mind".into(),
            expected_version: 2,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.status, CertificateStatus::Cancelled as i32);

    let history = c
        .get_history(GetHistoryRequest {
            certificate_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let types: Vec<&str> = history.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "CertificateOrdered",
            "ApplicationSubmitted",
            "OrderCancelled"
        ]
    );
    assert!(
        history
            .iter()
            .all(|e| e.actor == "anonymous" && !e.correlation_id.is_empty())
    );
    let third = tokio::time::timeout(DEADLINE, watch.next())
        .await
        .expect("live event")
        .unwrap()
        .unwrap();
    assert_eq!(third.event_type, "OrderCancelled");

    let renew = c
        .renew_certificate(RenewCertificateRequest {
            certificate_id: id.clone(),
            csr_pem: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(renew.code(), Code::FailedPrecondition);
    assert!(
        renew
            .message()
            .contains("only an issued certificate can be renewed"),
        "{}",
        renew.message()
    );

    drop(watch);
    order.service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_precise_errors() {
    let db = TestDb::postgres().await.expect("test database");
    let mut order = start_order(&db).await;
    let c = &mut order.client;
    let dir = tempfile::tempdir().unwrap();

    // Malformed CSR.
    let r = c
        .place_order(PlaceOrderRequest {
            spec: Some(multi(2)),
            application: Some(with_csr(
                &["a.example"],
                "-----BEGIN CERTIFICATE REQUEST-----\nnot base64!\n-----END CERTIFICATE REQUEST-----\n".into(),
            )),
            ..Default::default()
        })
        .await;
    assert_invalid(r, "application.csr_pem");

    // Not PEM at all.
    let r = c
        .place_order(PlaceOrderRequest {
            spec: Some(multi(2)),
            application: Some(with_csr(&["a.example"], "hello".into())),
            ..Default::default()
        })
        .await;
    assert_invalid(r, "application.csr_pem");

    // A CSR whose signature does not verify.
    let good = openssl_csr(dir.path(), "ec", &["a.example"]);
    let r = c
        .place_order(PlaceOrderRequest {
            spec: Some(multi(2)),
            application: Some(with_csr(&["a.example"], corrupt_signature(&good))),
            ..Default::default()
        })
        .await;
    let m = assert_invalid(r, "application.csr_pem");
    assert!(m.contains("signature"), "{m}");

    // Names of the CSR differ from the application's.
    let r = c
        .place_order(PlaceOrderRequest {
            spec: Some(multi(2)),
            application: Some(with_csr(&["a.example", "b.example"], good.clone())),
            ..Default::default()
        })
        .await;
    let m = assert_invalid(r, "application.csr_pem");
    assert!(m.contains("b.example"), "{m}");

    // RSA-1024.
    let weak = openssl_csr(dir.path(), "rsa:1024", &["a.example"]);
    let r = c
        .place_order(PlaceOrderRequest {
            spec: Some(multi(2)),
            application: Some(with_csr(&["a.example"], weak)),
            ..Default::default()
        })
        .await;
    let m = assert_invalid(r, "application.csr_pem");
    assert!(m.contains("1024") || m.contains("2048"), "{m}");

    // Too many names for the slots.
    let r = c
        .place_order(PlaceOrderRequest {
            spec: Some(multi(2)),
            application: Some(generated(&["a.example", "b.example", "c.example"])),
            ..Default::default()
        })
        .await;
    assert_invalid(r, "application.domains[2]");

    // Bad wildcards.
    let r = c
        .place_order(PlaceOrderRequest {
            spec: Some(multi(2)),
            application: Some(generated(&["a.*.example"])),
            ..Default::default()
        })
        .await;
    assert_invalid(r, "application.domains[0]");
    let r = c
        .place_order(PlaceOrderRequest {
            spec: Some(spec(DomainSlotKind::Single, 0, ValidationMethod::Approval)),
            application: Some(generated(&["*.example.com"])),
            ..Default::default()
        })
        .await;
    assert_invalid(r, "application.domains[0]");

    // Invalid IDN.
    let r = c
        .place_order(PlaceOrderRequest {
            spec: Some(multi(2)),
            application: Some(generated(&["xn--zz.example"])),
            ..Default::default()
        })
        .await;
    assert_invalid(r, "application.domains[0]");

    // Spec problems.
    let r = c.place_order(PlaceOrderRequest::default()).await;
    assert_invalid(r, "spec");
    let mut unknown_issuer = multi(2);
    unknown_issuer.issuer = "elsewhere".into();
    let r = c.place_order(place(unknown_issuer)).await;
    assert_invalid(r, "spec.issuer");
    let mut no_alg = multi(2);
    no_alg.key_algorithm = KeyAlgorithm::Unspecified as i32;
    assert_invalid(c.place_order(place(no_alg)).await, "spec.key_algorithm");
    let r = c
        .place_order(PlaceOrderRequest {
            spec: Some(multi(2)),
            application: Some(certledger_proto::order::v1::Application {
                domains: vec!["a.example".into()],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await;
    assert_invalid(r, "application.key_source");

    // Unknown and malformed certificate ids.
    let r = c
        .get_certificate(GetCertificateRequest {
            certificate_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(r.code(), Code::NotFound);
    assert_invalid(
        c.get_certificate(GetCertificateRequest {
            certificate_id: "a.b".into(),
        })
        .await,
        "certificate_id",
    );
    let r = c
        .cancel_order(CancelOrderRequest {
            certificate_id: uuid::Uuid::now_v7().to_string(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(r.code(), Code::NotFound);

    // Bad tenant metadata.
    let r = c
        .place_order(as_tenant("Not A Tenant", place(multi(1))))
        .await;
    assert_invalid(r, "x-certledger-tenant");

    // Oversized request: refused, and the server keeps serving.
    let huge = "A".repeat(2 * 1024 * 1024);
    let r = c
        .place_order(PlaceOrderRequest {
            spec: Some(multi(2)),
            application: Some(with_csr(&["a.example"], huge)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(r.code(), Code::ResourceExhausted, "{r:?}");
    assert!(c.place_order(place(multi(1))).await.is_ok());

    order.service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_certificate_does_not_exist() {
    let db = TestDb::postgres().await.expect("test database");
    let mut order = start_order(&db).await;
    let c = &mut order.client;
    let placed = c
        .place_order(as_tenant("acme", place(multi(2))))
        .await
        .unwrap()
        .into_inner()
        .certificate
        .unwrap();
    let id = placed.certificate_id;
    let missing = uuid::Uuid::now_v7().to_string();

    let theirs = c
        .get_certificate(as_tenant(
            "other",
            GetCertificateRequest {
                certificate_id: id.clone(),
            },
        ))
        .await
        .unwrap_err();
    let none = c
        .get_certificate(as_tenant(
            "other",
            GetCertificateRequest {
                certificate_id: missing.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(theirs.code(), Code::NotFound);
    // Same wording as a certificate that does not exist.
    assert_eq!(
        theirs.message().replace(&id, "ID"),
        none.message().replace(&missing, "ID")
    );

    let r = c
        .get_history(as_tenant(
            "other",
            GetHistoryRequest {
                certificate_id: id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(r.code(), Code::NotFound);
    let r = c
        .watch_certificate(as_tenant(
            "other",
            WatchCertificateRequest {
                certificate_id: id.clone(),
                after_version: 0,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(r.code(), Code::NotFound);
    let r = c
        .submit_application(as_tenant(
            "other",
            SubmitApplicationRequest {
                certificate_id: id.clone(),
                application: Some(generated(&["a.example"])),
                expected_version: 0,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(r.code(), Code::NotFound);
    let r = c
        .cancel_order(as_tenant(
            "other",
            CancelOrderRequest {
                certificate_id: id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(r.code(), Code::NotFound);
    // The default tenant is another tenant too.
    let r = c
        .get_certificate(GetCertificateRequest {
            certificate_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(r.code(), Code::NotFound);
    // Its owner sees it.
    assert!(
        c.get_certificate(as_tenant(
            "acme",
            GetCertificateRequest {
                certificate_id: id.clone(),
            }
        ))
        .await
        .is_ok()
    );
    order.service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_replays_and_conflicts() {
    let db = TestDb::postgres().await.expect("test database");
    let mut order = start_order(&db).await;
    let c = &mut order.client;
    let request = PlaceOrderRequest {
        spec: Some(multi(2)),
        application: Some(generated(&["a.example"])),
        idempotency_key: "order-7".into(),
    };
    let first = c.place_order(request.clone()).await.unwrap().into_inner();
    assert!(!first.replayed);
    let again = c.place_order(request.clone()).await.unwrap().into_inner();
    assert!(again.replayed);
    let first_id = first.certificate.unwrap().certificate_id;
    assert_eq!(again.certificate.as_ref().unwrap().certificate_id, first_id);
    assert_eq!(again.certificate.unwrap().version, 2);

    // A different request under the used key.
    let mut different = request.clone();
    different.application = Some(generated(&["b.example"]));
    let r = c.place_order(different).await.unwrap_err();
    assert_eq!(r.code(), Code::AlreadyExists, "{r:?}");
    assert!(r.message().contains("order-7"), "{}", r.message());

    // The same key in another tenant is another order.
    let other = c
        .place_order(as_tenant("acme", request.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(!other.replayed);
    assert_ne!(other.certificate.unwrap().certificate_id, first_id);

    // Concurrent replays: one order, every caller gets it.
    let mut handles = Vec::new();
    for _ in 0..8 {
        let mut client = c.clone();
        let mut r = request.clone();
        r.idempotency_key = "order-8".into();
        handles.push(tokio::spawn(async move {
            client.place_order(r).await.map(|r| r.into_inner())
        }));
    }
    let mut ids = std::collections::BTreeSet::new();
    let mut fresh = 0;
    for h in handles {
        let r = h.await.unwrap().unwrap();
        fresh += usize::from(!r.replayed);
        ids.insert(r.certificate.unwrap().certificate_id);
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(fresh, 1);
    order.service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_certificates_filters_and_pages() {
    for db in [
        TestDb::sqlite().await.expect("test database"),
        TestDb::postgres().await.expect("test database"),
    ] {
        let mut order = start_order(&db).await;
        let c = &mut order.client;
        let mut ids = Vec::new();
        for i in 0..5 {
            let cert = c
                .place_order(as_tenant(
                    "acme",
                    PlaceOrderRequest {
                        spec: Some(multi(2)),
                        application: (i % 2 == 0)
                            .then(|| generated(&[&format!("host{i}.shop.example")])),
                        ..Default::default()
                    },
                ))
                .await
                .unwrap()
                .into_inner()
                .certificate
                .unwrap();
            ids.push(cert.certificate_id);
        }
        c.place_order(as_tenant("other", place(multi(1))))
            .await
            .unwrap();

        let list = |status: CertificateStatus, domain: &str, token: &str, size: u32| {
            as_tenant(
                "acme",
                ListCertificatesRequest {
                    status: status as i32,
                    domain: domain.into(),
                    page: Some(PageRequest {
                        page_size: size,
                        page_token: token.into(),
                    }),
                },
            )
        };
        // The read table catches up.
        let mut client = c.clone();
        eventually(DEADLINE, "five certificates listed", || {
            let mut client = client.clone();
            let req = list(CertificateStatus::Unspecified, "", "", 0);
            async move {
                let r = client.list_certificates(req).await.ok()?.into_inner();
                (r.certificates.len() == 5).then_some(())
            }
        })
        .await
        .unwrap();

        let applied = client
            .list_certificates(list(CertificateStatus::Applied, "", "", 0))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(applied.certificates.len(), 3);
        let by_domain = client
            .list_certificates(list(CertificateStatus::Unspecified, "HOST2.shop", "", 0))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(by_domain.certificates.len(), 1);
        assert_eq!(by_domain.certificates[0].certificate_id, ids[2]);

        // Pages of two, newest first, no duplicates.
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let page = client
                .list_certificates(list(CertificateStatus::Unspecified, "", &token, 2))
                .await
                .unwrap()
                .into_inner();
            assert!(page.certificates.len() <= 2);
            seen.extend(page.certificates.into_iter().map(|c| c.certificate_id));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        let mut expected = ids.clone();
        expected.reverse();
        assert_eq!(seen, expected);

        let bad = client
            .list_certificates(list(CertificateStatus::Unspecified, "", "garbage", 0))
            .await;
        assert_invalid(bad, "page.page_token");
        let bad = client
            .list_certificates(list(CertificateStatus::Unspecified, "", "", 5000))
            .await;
        assert_invalid(bad, "page.page_size");
        order.service.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_are_served() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    let db = TestDb::sqlite().await.expect("test database");
    let order = start_order(&db).await;
    let channel = tonic::transport::Channel::from_shared(order.service.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone());
    for service in ["", certledger_order::SERVICE_NAME] {
        let status = eventually(DEADLINE, "SERVING", || {
            let mut health = health.clone();
            async move {
                let r = health
                    .check(HealthCheckRequest {
                        service: service.into(),
                    })
                    .await
                    .ok()?
                    .into_inner();
                (r.status == ServingStatus::Serving as i32).then_some(r.status)
            }
        })
        .await
        .unwrap();
        assert_eq!(status, ServingStatus::Serving as i32);
    }
    // Reflection lists the service.
    {
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        let mut reflection = ServerReflectionClient::new(channel.clone());
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = reflection
            .server_reflection_info(futures::stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        let response = responses.next().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("unexpected reflection response {response:?}");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert!(
            names.iter().any(|n| n == certledger_order::SERVICE_NAME),
            "{names:?}"
        );
        assert!(
            names.iter().any(|n| n == "grpc.health.v1.Health"),
            "{names:?}"
        );
    }
    // Watching health reports NOT_SERVING when shutdown begins.
    let mut watch = health
        .watch(HealthCheckRequest {
            service: certledger_order::SERVICE_NAME.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    let token = order.service.shutdown_token();
    token.cancel();
    let next = tokio::time::timeout(DEADLINE, watch.next())
        .await
        .expect("health update");
    let update = next.expect("an update before the stream ends").unwrap();
    assert_eq!(update.status, ServingStatus::NotServing as i32);
    // A health watch would hold the drain open until the drain timeout: leave.
    drop(watch);
    drop(health);
    drop(channel);
    order.service.wait().await.unwrap();
}
