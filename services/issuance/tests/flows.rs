//! From an order to a certificate that openssl accepts: order and issuance in-process,
//! for each validation method, with generated keys and with CSRs made by `openssl req`.

mod common;

use certledger_proto::common::v1::{
    CertificateStatus, FailureCode, KeyAlgorithm, ValidationMethod,
};
use certledger_proto::issuance::v1::{
    ApproveApplicationRequest, ExportCertificateRequest, GetCaChainRequest, KeyFormat,
    RejectApplicationRequest,
};
use certledger_proto::order::v1::{GetHistoryRequest, PlaceOrderRequest};
use certledger_testkit::eventually;
use common::*;
use tonic::Code;

async fn chain(stack: &mut Stack) -> (String, String) {
    let chain = stack
        .ca
        .get_ca_chain(GetCaChainRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(chain.issuer, "builtin");
    assert_eq!(
        chain.chain_pem,
        format!("{}{}", chain.intermediate_pem, chain.root_pem)
    );
    (chain.root_pem, chain.intermediate_pem)
}

async fn history_types(stack: &mut Stack, id: &str, tenant: &str) -> Vec<String> {
    stack
        .orders
        .get_history(as_tenant(
            tenant,
            GetHistoryRequest {
                certificate_id: id.into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .entries
        .into_iter()
        .map(|e| e.event_type)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_with_a_generated_key_and_with_a_csr_then_export() {
    let db = TestDb::postgres().await.expect("test database");
    let mut stack = start_stack(&db, test_settings(None)).await;
    let names = ["www.example.com", "api.example.com"];
    let placed = stack
        .orders
        .place_order(as_tenant(
            "acme",
            PlaceOrderRequest {
                spec: Some(spec(ValidationMethod::Approval, KeyAlgorithm::EcdsaP256, 5)),
                application: Some(generated(&names)),
                idempotency_key: "approval-1".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .certificate
        .unwrap();
    let id = placed.certificate_id;

    // The key is generated and validation waits for the operator.
    stack
        .wait_for(&id, Some("acme"), CertificateStatus::Validating)
        .await;
    let orders = stack.orders.clone();
    eventually(DEADLINE, "KeyGenerated", || {
        let mut orders = orders.clone();
        let id = id.clone();
        async move {
            let h = orders
                .get_history(as_tenant("acme", GetHistoryRequest { certificate_id: id }))
                .await
                .ok()?
                .into_inner();
            h.entries
                .iter()
                .any(|e| e.event_type == "KeyGenerated")
                .then_some(())
        }
    })
    .await
    .unwrap();

    // Another tenant cannot approve it (it does not exist for them).
    let r = stack
        .ca
        .approve_application(as_tenant(
            "other",
            ApproveApplicationRequest {
                certificate_id: id.clone(),
                comment: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(r.code(), Code::NotFound);

    stack
        .ca
        .approve_application(as_tenant(
            "acme",
            ApproveApplicationRequest {
                certificate_id: id.clone(),
                comment: "looks right".into(),
            },
        ))
        .await
        .unwrap();
    let issued = stack
        .wait_for(&id, Some("acme"), CertificateStatus::Issued)
        .await;
    let (root, intermediate) = chain(&mut stack).await;
    let dir = tempfile::tempdir().unwrap();
    openssl_checks(dir.path(), &issued, &root, &intermediate, &names);
    assert_eq!(issued.chain_pem, format!("{intermediate}{root}"));

    // An approval order with an openssl CSR, approved as soon as it exists.
    let csr_names = ["intranet.example.com"];
    let csr = openssl_csr(dir.path(), "rsa:2048", &csr_names);
    let csr_id = stack
        .orders
        .place_order(as_tenant(
            "acme",
            PlaceOrderRequest {
                spec: Some(spec(ValidationMethod::Approval, KeyAlgorithm::Rsa2048, 1)),
                application: Some(with_csr(&csr_names, csr)),
                idempotency_key: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .certificate
        .unwrap()
        .certificate_id;
    stack
        .ca
        .approve_application(as_tenant(
            "acme",
            ApproveApplicationRequest {
                certificate_id: csr_id.clone(),
                comment: String::new(),
            },
        ))
        .await
        .unwrap();
    let csr_issued = stack
        .wait_for(&csr_id, Some("acme"), CertificateStatus::Issued)
        .await;
    openssl_checks(dir.path(), &csr_issued, &root, &intermediate, &csr_names);

    // Export without the key: certificate and chain only.
    let plain = stack
        .ca
        .export_certificate(as_tenant(
            "acme",
            ExportCertificateRequest {
                certificate_id: id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(plain.certificate_pem, issued.certificate_pem);
    assert!(plain.private_key_pem.is_empty());

    // PKCS#12 needs a real password...
    let r = stack
        .ca
        .export_certificate(as_tenant(
            "acme",
            ExportCertificateRequest {
                certificate_id: id.clone(),
                include_private_key: true,
                key_format: KeyFormat::Pkcs12 as i32,
                password: "pw".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(r.code(), Code::InvalidArgument);
    assert!(r.message().contains("password"), "{}", r.message());

    // ...and then holds the key and the chain, as openssl reads them.
    let p12 = stack
        .ca
        .export_certificate(as_tenant(
            "acme",
            ExportCertificateRequest {
                certificate_id: id.clone(),
                include_private_key: true,
                key_format: KeyFormat::Pkcs12 as i32,
                password: "correct horse battery".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(p12.private_key_pem.is_empty());
    std::fs::write(dir.path().join("export.p12"), &p12.pkcs12).unwrap();
    let opened = certledger_testkit::openssl::run(
        &[
            "pkcs12",
            "-in",
            "export.p12",
            "-passin",
            "pass:correct horse battery",
            "-nodes",
        ],
        dir.path(),
    )
    .unwrap();
    assert_eq!(
        opened.matches("BEGIN CERTIFICATE").count(),
        3,
        "leaf, intermediate, root"
    );
    let key_start = opened.find("-----BEGIN PRIVATE KEY-----").unwrap();
    let key_end =
        opened.find("-----END PRIVATE KEY-----").unwrap() + "-----END PRIVATE KEY-----".len();
    assert!(same_public_key(
        dir.path(),
        &issued.certificate_pem,
        &opened[key_start..key_end]
    ));
    assert!(
        certledger_testkit::openssl::run(
            &[
                "pkcs12",
                "-in",
                "export.p12",
                "-passin",
                "pass:wrong password",
                "-nodes"
            ],
            dir.path(),
        )
        .is_err(),
        "a wrong password does not open it"
    );

    // With the key, as PKCS#8 PEM: it matches the certificate and the export is recorded.
    let with_key = stack
        .ca
        .export_certificate(as_tenant(
            "acme",
            ExportCertificateRequest {
                certificate_id: id.clone(),
                include_private_key: true,
                key_format: KeyFormat::Pem as i32,
                password: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        with_key
            .private_key_pem
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    assert!(same_public_key(
        dir.path(),
        &issued.certificate_pem,
        &with_key.private_key_pem
    ));
    let types = history_types(&mut stack, &id, "acme").await;
    assert_eq!(
        types,
        [
            "CertificateOrdered",
            "ApplicationSubmitted",
            "KeyGenerated",
            "ValidationStarted",
            "ApplicationApproved",
            "ValidationPassed",
            "IssuanceIntended",
            "CertificateIssued",
            "PrivateKeyExported",
            "PrivateKeyExported",
        ]
    );
    // The private key never reached the log.
    let history = stack
        .orders
        .get_history(as_tenant(
            "acme",
            GetHistoryRequest {
                certificate_id: id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!format!("{history:?}").contains("PRIVATE KEY"));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_with_an_openssl_csr_on_sqlite() {
    let db = TestDb::sqlite().await.expect("test database");
    let mut stack = start_stack(&db, test_settings(None)).await;
    let dir = tempfile::tempdir().unwrap();
    let names = ["shop.example.net", "www.shop.example.net"];
    let csr = openssl_csr(dir.path(), "rsa:2048", &names);
    let placed = stack
        .orders
        .place_order(PlaceOrderRequest {
            spec: Some(spec(ValidationMethod::None, KeyAlgorithm::Rsa2048, 2)),
            application: Some(with_csr(&names, csr)),
            idempotency_key: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .certificate
        .unwrap();
    let id = placed.certificate_id;
    let issued = stack.wait_for(&id, None, CertificateStatus::Issued).await;
    let (root, intermediate) = chain(&mut stack).await;
    openssl_checks(dir.path(), &issued, &root, &intermediate, &names);
    // The certificate is for the CSR's key.
    let csr_key = std::fs::read_to_string(dir.path().join("csr.key")).unwrap();
    assert!(same_public_key(
        dir.path(),
        &issued.certificate_pem,
        &csr_key
    ));

    // No key to export: the customer holds it.
    let r = stack
        .ca
        .export_certificate(ExportCertificateRequest {
            certificate_id: id.clone(),
            include_private_key: true,
            key_format: KeyFormat::Pem as i32,
            password: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(r.code(), Code::FailedPrecondition, "{r:?}");
    assert!(r.message().contains("CSR"), "{}", r.message());
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http01_with_a_generated_key_and_with_a_csr() {
    let db = TestDb::postgres().await.expect("test database");
    let server = ChallengeServer::start().await.unwrap();
    let mut stack = start_stack(&db, test_settings(Some(server.addr))).await;
    let names = ["a.example.org", "b.example.org"];
    let placed = stack
        .orders
        .place_order(PlaceOrderRequest {
            spec: Some(spec(ValidationMethod::Http01, KeyAlgorithm::EcdsaP384, 2)),
            application: Some(generated(&names)),
            idempotency_key: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .certificate
        .unwrap();
    let id = placed.certificate_id;
    // A second order brings its own CSR (made by openssl).
    let dir = tempfile::tempdir().unwrap();
    let csr_names = ["csr.example.org"];
    let csr = openssl_csr(dir.path(), "ec", &csr_names);
    let csr_id = stack
        .orders
        .place_order(PlaceOrderRequest {
            spec: Some(spec(ValidationMethod::Http01, KeyAlgorithm::EcdsaP256, 1)),
            application: Some(with_csr(&csr_names, csr)),
            idempotency_key: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .certificate
        .unwrap()
        .certificate_id;
    let validating = stack
        .wait_for(&id, None, CertificateStatus::Validating)
        .await;
    assert_eq!(validating.challenges.len(), 2);
    let csr_validating = stack
        .wait_for(&csr_id, None, CertificateStatus::Validating)
        .await;
    // The site answers only now: the issuer's retries find it.
    for challenge in validating
        .challenges
        .iter()
        .chain(csr_validating.challenges.iter())
    {
        assert_eq!(challenge.method, ValidationMethod::Http01 as i32);
        assert!(challenge.key_authorization.starts_with(&challenge.token));
        server.serve(&challenge.token, &challenge.key_authorization);
    }
    let issued = stack.wait_for(&id, None, CertificateStatus::Issued).await;
    let (root, intermediate) = chain(&mut stack).await;
    let csr_issued = stack
        .wait_for(&csr_id, None, CertificateStatus::Issued)
        .await;
    openssl_checks(dir.path(), &csr_issued, &root, &intermediate, &csr_names);
    let csr_key = std::fs::read_to_string(dir.path().join("csr.key")).unwrap();
    assert!(same_public_key(
        dir.path(),
        &csr_issued.certificate_pem,
        &csr_key
    ));
    let text = openssl_checks(dir.path(), &issued, &root, &intermediate, &names);
    assert!(
        text.contains("secp384r1") || text.contains("P-384"),
        "{text}"
    );
    let types = history_types(&mut stack, &id, "default").await;
    assert_eq!(types.iter().filter(|t| *t == "DomainValidated").count(), 2);
    assert_eq!(
        types.iter().filter(|t| *t == "CertificateIssued").count(),
        1
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http01_wrong_answer_fails_after_the_last_attempt() {
    let db = TestDb::postgres().await.expect("test database");
    let server = ChallengeServer::start().await.unwrap();
    let mut settings = test_settings(Some(server.addr));
    settings.validation_retry.max_attempts = 2;
    let stack = start_stack(&db, settings).await;
    let mut orders = stack.orders.clone();
    let placed = orders
        .place_order(PlaceOrderRequest {
            spec: Some(spec(ValidationMethod::Http01, KeyAlgorithm::EcdsaP256, 1)),
            application: Some(generated(&["c.example.org"])),
            idempotency_key: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .certificate
        .unwrap();
    let id = placed.certificate_id;
    let validating = stack
        .wait_for(&id, None, CertificateStatus::Validating)
        .await;
    server.serve(&validating.challenges[0].token, "something else");
    let failed = stack.wait_for(&id, None, CertificateStatus::Failed).await;
    let failure = failed.last_failure.unwrap();
    assert!(
        failure.code == FailureCode::ValidationMismatch as i32
            || failure.code == FailureCode::ValidationUnreachable as i32
    );
    assert!(failure.next_retry_at.is_none());
    assert!(
        failure.reason.contains("no attempts left"),
        "{}",
        failure.reason
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_is_refused_where_the_issuer_does_not_allow_it_and_rejection_fails_the_order() {
    let db = TestDb::postgres().await.expect("test database");
    let mut settings = test_settings(None);
    settings.allow_no_validation = false;
    let mut stack = start_stack(&db, settings).await;
    let placed = stack
        .orders
        .place_order(PlaceOrderRequest {
            spec: Some(spec(ValidationMethod::None, KeyAlgorithm::Ed25519, 1)),
            application: Some(generated(&["d.example.org"])),
            idempotency_key: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .certificate
        .unwrap();
    let failed = stack
        .wait_for(&placed.certificate_id, None, CertificateStatus::Failed)
        .await;
    let failure = failed.last_failure.unwrap();
    assert_eq!(failure.code, FailureCode::PolicyViolation as i32);
    assert!(failure.reason.contains("NONE"), "{}", failure.reason);

    // Rejection by an operator.
    let placed = stack
        .orders
        .place_order(PlaceOrderRequest {
            spec: Some(spec(ValidationMethod::Approval, KeyAlgorithm::EcdsaP256, 1)),
            application: Some(generated(&["e.example.org"])),
            idempotency_key: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .certificate
        .unwrap();
    let id = placed.certificate_id;
    let r = stack
        .ca
        .reject_application(RejectApplicationRequest {
            certificate_id: id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(r.code(), Code::InvalidArgument);
    assert!(r.message().starts_with("reason: "), "{}", r.message());
    stack
        .ca
        .reject_application(RejectApplicationRequest {
            certificate_id: id.clone(),
            reason: "not our domain".into(),
        })
        .await
        .unwrap();
    let failed = stack.wait_for(&id, None, CertificateStatus::Failed).await;
    assert_eq!(
        failed.last_failure.unwrap().code,
        FailureCode::RejectedByOperator as i32
    );
    // Approving a rejected application is a lifecycle violation.
    let r = stack
        .ca
        .approve_application(ApproveApplicationRequest {
            certificate_id: id.clone(),
            comment: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(r.code(), Code::FailedPrecondition);
    // Unknown certificates and issuers.
    let r = stack
        .ca
        .export_certificate(ExportCertificateRequest {
            certificate_id: uuid::Uuid::now_v7().to_string(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(r.code(), Code::NotFound);
    let r = stack
        .ca
        .get_ca_chain(GetCaChainRequest {
            issuer: "elsewhere".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(r.code(), Code::NotFound);
    stack.stop().await;
}
