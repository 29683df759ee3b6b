//! Every legal and illegal move of the certificate decider, given/when/then.

mod common;

use certledger_domain::certificate::*;
use certledger_domain::time::to_timestamp;
use certledger_domain::{CertificateEvent as Event, ErrorKind, Rule};
use certledger_proto::common::v1::{
    CertificateStatus, DomainSlotKind, KeyAlgorithm, RevocationReason, Subject, ValidationMethod,
};
use certledger_proto::events::v1 as ev;
use certledger_proto::events::v1::application_submitted::KeySource as EventKeySource;
use common::*;

fn status_of(history: &[Event]) -> Status {
    fold(history).status
}

// ---------------------------------------------------------------------------
// Order and application
// ---------------------------------------------------------------------------

#[test]
fn placing_an_order_records_it() {
    given([])
        .when(place(http_spec(), None))
        .then([Event::CertificateOrdered(ev::CertificateOrdered {
            certificate_id: CERT.into(),
            tenant: TENANT.into(),
            spec: Some(http_spec()),
            predecessor_id: String::new(),
            idempotency_key: String::new(),
        })]);
}

#[test]
fn placing_an_order_with_its_application_records_both_normalised() {
    let app = Application {
        domains: vec!["WWW.Bücher.example.".into(), "api.example.com".into()],
        ip_addresses: vec!["2001:DB8::0:1".into()],
        subject: Subject {
            common_name: "www.bücher.example".into(),
            country: "de".into(),
            ..Default::default()
        },
        key_source: generate(),
    };
    let history = given([]).when(place(http_spec(), Some(app))).then_ok();
    assert_eq!(history.len(), 2);
    let Event::ApplicationSubmitted(submitted) = &history[1] else {
        panic!("second event must be the application: {history:?}");
    };
    assert_eq!(
        submitted.domains,
        vec!["www.xn--bcher-kva.example", "api.example.com"]
    );
    assert_eq!(submitted.ip_addresses, vec!["2001:db8::1"]);
    let subject = submitted.subject.clone().unwrap_or_default();
    assert_eq!(subject.common_name, "www.xn--bcher-kva.example");
    assert_eq!(subject.country, "DE");
    assert_eq!(
        submitted.key_source,
        Some(EventKeySource::GenerateKey(KeyAlgorithm::EcdsaP256 as i32))
    );
    assert_eq!(status_of(&history), Status::Applied);
}

#[test]
fn placing_an_order_twice_is_already_exists_unless_replayed_by_idempotency_key() {
    given(ordered())
        .when(place(http_spec(), None))
        .then_error(ErrorKind::AlreadyExists);

    let keyed = PlaceOrder {
        idempotency_key: Some("k-1".into()),
        ..place(http_spec(), None)
    };
    let history = given([]).when(keyed.clone()).then_ok();
    given(history.clone()).when(keyed.clone()).then_nothing();
    let e = given(history)
        .when(PlaceOrder {
            spec: spec(DomainSlotKind::Single, ValidationMethod::Http01),
            ..keyed
        })
        .then_error(ErrorKind::AlreadyExists);
    assert!(e.message().contains("different order"), "{e}");
}

#[test]
fn placing_an_order_checks_the_spec_and_the_application() {
    let mut bad = http_spec();
    bad.key_algorithm = 0;
    given([])
        .when(place(bad, None))
        .then_invalid("spec.key_algorithm");
    given([])
        .when(place(
            http_spec(),
            Some(application(
                &["a.example.com", "bad_name.example.com"],
                generate(),
            )),
        ))
        .then_invalid("application.domains[1]");
    given([])
        .when(PlaceOrder {
            certificate_id: "has.dot".into(),
            ..place(http_spec(), None)
        })
        .then_invalid("certificate_id");
    given([])
        .when(PlaceOrder {
            predecessor_id: Some(CERT.into()),
            ..place(http_spec(), None)
        })
        .then_invalid("predecessor_id");
}

#[test]
fn submitting_the_application_of_an_ordered_certificate() {
    let history = given(ordered())
        .when(SubmitApplication {
            application: application(&["www.example.com"], csr()),
        })
        .then([Event::ApplicationSubmitted(ev::ApplicationSubmitted {
            domains: vec!["www.example.com".into()],
            subject: Some(Subject::default()),
            key_source: Some(EventKeySource::CsrPem(CSR.into())),
            ip_addresses: vec![],
        })]);
    assert_eq!(status_of(&history), Status::Applied);
}

#[test]
fn the_application_is_submitted_once() {
    let e = given(applied())
        .when(SubmitApplication {
            application: application(&["www.example.com"], csr()),
        })
        .then_refused(Rule::ApplicationAlreadySubmitted);
    assert!(e.message().contains("www.example.com"), "{e}");
}

#[test]
fn an_application_to_a_cancelled_order_is_refused_with_a_reason() {
    let history = run(
        ordered(),
        CancelOrder {
            reason: "changed my mind".into(),
        },
    );
    let e = given(history)
        .when(SubmitApplication {
            application: application(&["www.example.com"], csr()),
        })
        .then_refused(Rule::Lifecycle);
    assert_eq!(
        e.message(),
        "certificate is cancelled; an application can only be submitted to an ordered certificate"
    );
}

#[test]
fn the_application_must_fit_the_slots_subject_and_key_algorithm() {
    let single = run(
        vec![],
        place(spec(DomainSlotKind::Single, ValidationMethod::Http01), None),
    );
    given(single.clone())
        .when(SubmitApplication {
            application: application(&["a.example.com", "b.example.com"], csr()),
        })
        .then_invalid("application.domains[1]");
    given(single.clone())
        .when(SubmitApplication {
            application: Application {
                subject: Subject {
                    common_name: "other.example.com".into(),
                    ..Default::default()
                },
                ..application(&["a.example.com"], csr())
            },
        })
        .then_invalid("application.subject.common_name");
    given(single.clone())
        .when(SubmitApplication {
            application: application(
                &["a.example.com"],
                KeySource::Generate {
                    algorithm: KeyAlgorithm::Rsa2048,
                },
            ),
        })
        .then_invalid("application.generate_key");
    given(single.clone())
        .when(SubmitApplication {
            application: application(
                &["a.example.com"],
                KeySource::Csr {
                    pem: "not pem".into(),
                },
            ),
        })
        .then_invalid("application.csr_pem");
    given(single)
        .when(SubmitApplication {
            application: application(&[], csr()),
        })
        .then_invalid("application.domains");
}

#[test]
fn commands_on_a_missing_certificate_are_not_found() {
    given([])
        .when(CancelOrder {
            reason: String::new(),
        })
        .then_error(ErrorKind::NotFound);
    given([])
        .when(CheckExpiry {
            now: t0(),
            thresholds: DEFAULT_EXPIRY_THRESHOLDS.to_vec(),
        })
        .then_error(ErrorKind::NotFound);
}

// ---------------------------------------------------------------------------
// Key generation
// ---------------------------------------------------------------------------

fn key(id: &str) -> RecordKeyGenerated {
    RecordKeyGenerated {
        key_id: id.into(),
        algorithm: KeyAlgorithm::EcdsaP256,
        public_key_sha256: hex64(0x11),
    }
}

#[test]
fn a_generated_key_is_recorded_once() {
    let history = given(applied())
        .when(key(KEY_ID))
        .then([Event::KeyGenerated(ev::KeyGenerated {
            key_id: KEY_ID.into(),
            algorithm: KeyAlgorithm::EcdsaP256 as i32,
            public_key_sha256: hex64(0x11),
        })]);
    given(history.clone()).when(key(KEY_ID)).then_nothing();
    given(history)
        .when(key("key-2"))
        .then_refused(Rule::KeySource);
}

#[test]
fn no_key_is_generated_for_a_csr_or_with_another_algorithm() {
    let csr_applied = run(
        ordered(),
        SubmitApplication {
            application: application(&["www.example.com"], csr()),
        },
    );
    given(csr_applied)
        .when(key(KEY_ID))
        .then_refused(Rule::KeySource);
    given(applied())
        .when(RecordKeyGenerated {
            algorithm: KeyAlgorithm::Rsa4096,
            ..key(KEY_ID)
        })
        .then_invalid("algorithm");
    given(ordered())
        .when(key(KEY_ID))
        .then_refused(Rule::Lifecycle);
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

#[test]
fn validation_starts_with_one_challenge_per_name() {
    let challenges = vec![
        challenge("www.example.com", ValidationMethod::Http01),
        challenge("api.example.com", ValidationMethod::Http01),
    ];
    let history = given(keyed())
        .when(StartValidation {
            challenges: challenges.clone(),
        })
        .then([Event::ValidationStarted(ev::ValidationStarted {
            method: ValidationMethod::Http01 as i32,
            challenges,
        })]);
    assert_eq!(status_of(&history), Status::Validating);
}

#[test]
fn challenges_must_cover_exactly_the_names_with_the_ordered_method() {
    given(keyed())
        .when(StartValidation {
            challenges: vec![challenge("www.example.com", ValidationMethod::Http01)],
        })
        .then_invalid("challenges");
    given(keyed())
        .when(StartValidation {
            challenges: vec![
                challenge("www.example.com", ValidationMethod::Http01),
                challenge("evil.example.com", ValidationMethod::Http01),
            ],
        })
        .then_invalid("challenges[1].domain");
    given(keyed())
        .when(StartValidation {
            challenges: vec![
                challenge("www.example.com", ValidationMethod::Dns01),
                challenge("api.example.com", ValidationMethod::Http01),
            ],
        })
        .then_invalid("challenges[0].method");
    let mut short = challenge("www.example.com", ValidationMethod::Http01);
    short.token = "abc".into();
    given(keyed())
        .when(StartValidation {
            challenges: vec![
                short,
                challenge("api.example.com", ValidationMethod::Http01),
            ],
        })
        .then_invalid("challenges[0].token");
    given(ordered())
        .when(StartValidation { challenges: vec![] })
        .then_refused(Rule::Lifecycle);
}

#[test]
fn validation_method_none_passes_at_once() {
    let history = run(
        vec![],
        place(
            spec(DomainSlotKind::Single, ValidationMethod::None),
            Some(application(&["www.example.com"], csr())),
        ),
    );
    let history = given(history)
        .when(StartValidation { challenges: vec![] })
        .then([
            Event::ValidationStarted(ev::ValidationStarted {
                method: ValidationMethod::None as i32,
                challenges: vec![],
            }),
            Event::ValidationPassed(ev::ValidationPassed {}),
        ]);
    assert_eq!(status_of(&history), Status::Validated);
}

#[test]
fn the_last_validated_name_passes_validation() {
    let history = given(validating())
        .when(RecordDomainValidated {
            domain: "www.example.com".into(),
        })
        .then([Event::DomainValidated(ev::DomainValidated {
            domain: "www.example.com".into(),
            method: ValidationMethod::Http01 as i32,
        })]);
    assert_eq!(status_of(&history), Status::Validating);
    // Replaying the same result changes nothing.
    given(history.clone())
        .when(RecordDomainValidated {
            domain: "www.example.com".into(),
        })
        .then_nothing();
    let history = given(history)
        .when(RecordDomainValidated {
            domain: "api.example.com".into(),
        })
        .then([
            Event::DomainValidated(ev::DomainValidated {
                domain: "api.example.com".into(),
                method: ValidationMethod::Http01 as i32,
            }),
            Event::ValidationPassed(ev::ValidationPassed {}),
        ]);
    assert_eq!(status_of(&history), Status::Validated);
}

#[test]
fn only_the_applications_names_are_validated_and_only_while_validating() {
    given(validating())
        .when(RecordDomainValidated {
            domain: "other.example.com".into(),
        })
        .then_refused(Rule::UnknownName);
    given(keyed())
        .when(RecordDomainValidated {
            domain: "www.example.com".into(),
        })
        .then_refused(Rule::Lifecycle);
}

#[test]
fn a_retried_validation_failure_keeps_validating_a_final_one_fails_the_order() {
    let retry = RecordValidationFailed {
        domain: "www.example.com".into(),
        failure: failure("connection refused", Some(t0() + days(1))),
        observed: "".into(),
    };
    let (history, state) = given(validating()).when(retry).then_state();
    assert_eq!(state.status, Status::Validating);

    let final_failure = RecordValidationFailed {
        domain: "www.example.com".into(),
        failure: failure("served the wrong key authorization", None),
        observed: "hello".into(),
    };
    let (history, state) = given(history).when(final_failure).then_state();
    assert_eq!(state.status, Status::Failed);
    let e = given(history)
        .when(CancelOrder {
            reason: String::new(),
        })
        .then_refused(Rule::Lifecycle);
    assert!(
        e.message()
            .starts_with("certificate is failed (served the wrong key authorization)"),
        "{e}"
    );
}

#[test]
fn a_validation_failure_needs_a_reason() {
    given(validating())
        .when(RecordValidationFailed {
            domain: "www.example.com".into(),
            failure: failure("", None),
            observed: "".into(),
        })
        .then_invalid("failure.reason");
}

fn approval_applied() -> Vec<Event> {
    let history = run(
        vec![],
        place(
            spec(DomainSlotKind::Single, ValidationMethod::Approval),
            Some(application(&["intranet.example.com"], csr())),
        ),
    );
    run(history, StartValidation { challenges: vec![] })
}

#[test]
fn an_operator_approves_an_approval_application() {
    let approve = ApproveApplication {
        approver: "bob".into(),
        comment: "ok".into(),
    };
    let history = given(approval_applied()).when(approve.clone()).then([
        Event::ApplicationApproved(ev::ApplicationApproved {
            approver: "bob".into(),
            comment: "ok".into(),
        }),
        Event::ValidationPassed(ev::ValidationPassed {}),
    ]);
    assert_eq!(status_of(&history), Status::Validated);
    given(history).when(approve).then_nothing();
}

#[test]
fn an_operator_rejects_an_approval_application_with_a_reason() {
    let reject = RejectApplication {
        approver: "bob".into(),
        reason: "unknown host".into(),
    };
    let (_, state) = given(approval_applied()).when(reject).then_state();
    assert_eq!(state.status, Status::Failed);
    assert_eq!(
        state.last_failure.map(|f| f.reason),
        Some("unknown host".to_owned())
    );
    given(approval_applied())
        .when(RejectApplication {
            approver: "bob".into(),
            reason: " ".into(),
        })
        .then_invalid("reason");
}

#[test]
fn approval_is_only_for_the_approval_method() {
    given(validating())
        .when(ApproveApplication {
            approver: "bob".into(),
            comment: String::new(),
        })
        .then_refused(Rule::ValidationMethod);
    given(approval_applied())
        .when(RecordDomainValidated {
            domain: "intranet.example.com".into(),
        })
        .then_refused(Rule::ValidationMethod);
}

// ---------------------------------------------------------------------------
// Issuance
// ---------------------------------------------------------------------------

#[test]
fn the_intent_is_recorded_before_signing() {
    let history = given(validated())
        .when(intend())
        .then([Event::IssuanceIntended(ev::IssuanceIntended {
            issuer_ca_id: "builtin-int-1".into(),
            serial: SERIAL.into(),
            tbs_sha256: tbs(),
            not_before: Some(to_timestamp(not_before())),
            not_after: Some(to_timestamp(not_after())),
        })]);
    assert_eq!(status_of(&history), Status::Issuing);
    given(history.clone()).when(intend()).then_nothing();
    given(history)
        .when(IntendIssuance {
            serial: "02".into(),
            ..intend()
        })
        .then_refused(Rule::IssuanceIntent);
}

#[test]
fn no_signing_before_validation_or_without_the_generated_key() {
    let e = given(validating())
        .when(intend())
        .then_refused(Rule::Lifecycle);
    assert_eq!(
        e.message(),
        "certificate is validating; the CA may only sign once validation has passed"
    );
    // Validated without the generated key.
    let mut history = run(
        applied(),
        StartValidation {
            challenges: vec![
                challenge("www.example.com", ValidationMethod::Http01),
                challenge("api.example.com", ValidationMethod::Http01),
            ],
        },
    );
    for d in ["www.example.com", "api.example.com"] {
        history = run(history, RecordDomainValidated { domain: d.into() });
    }
    given(history).when(intend()).then_refused(Rule::KeySource);
}

#[test]
fn the_intent_is_checked() {
    given(validated())
        .when(IntendIssuance {
            serial: "00ff".into(),
            ..intend()
        })
        .then_invalid("serial");
    given(validated())
        .when(IntendIssuance {
            tbs_sha256: "abc".into(),
            ..intend()
        })
        .then_invalid("tbs_sha256");
    given(validated())
        .when(IntendIssuance {
            not_after: not_before(),
            ..intend()
        })
        .then_invalid("not_after");
    given(validated())
        .when(IntendIssuance {
            not_after: not_before() + days(200),
            ..intend()
        })
        .then_invalid("not_after");
}

#[test]
fn the_signed_certificate_is_recorded_against_its_intent() {
    let history = given(issuing())
        .when(issued_cmd())
        .then([Event::CertificateIssued(ev::CertificateIssued {
            issuer_ca_id: "builtin-int-1".into(),
            serial: SERIAL.into(),
            not_before: Some(to_timestamp(not_before())),
            not_after: Some(to_timestamp(not_after())),
            sha256_fingerprint: fingerprint(),
            certificate_pem: PEM.into(),
            chain_pem: PEM.into(),
        })]);
    let state = fold(&history);
    assert_eq!(state.status, Status::Issued);
    assert_eq!(state.status.to_proto(), CertificateStatus::Issued);
    given(history).when(issued_cmd()).then_nothing();

    given(issuing())
        .when(RecordIssued {
            serial: "02".into(),
            ..issued_cmd()
        })
        .then_refused(Rule::IssuanceIntent);
    given(issuing())
        .when(RecordIssued {
            not_after: not_after() + days(1),
            ..issued_cmd()
        })
        .then_refused(Rule::IssuanceIntent);
    given(validated())
        .when(issued_cmd())
        .then_refused(Rule::Lifecycle);
    given(issuing())
        .when(RecordIssued {
            certificate_pem: "garbage".into(),
            ..issued_cmd()
        })
        .then_invalid("certificate_pem");
}

#[test]
fn a_retried_issuance_failure_abandons_the_intent_and_needs_a_fresh_serial() {
    let (history, state) = given(issuing())
        .when(RecordIssuanceFailed {
            failure: failure("CA unavailable", Some(t0() + days(1))),
        })
        .then_state();
    assert_eq!(state.status, Status::Validated);
    assert_eq!(state.intent, None);
    assert_eq!(state.abandoned_intents.len(), 1);
    given(history.clone()).when(intend()).then_invalid("serial");
    given(history)
        .when(IntendIssuance {
            serial: "02ab".into(),
            ..intend()
        })
        .then_ok();
}

#[test]
fn a_final_issuance_failure_fails_the_order() {
    let (_, state) = given(issuing())
        .when(RecordIssuanceFailed {
            failure: failure("policy forbids the name", None),
        })
        .then_state();
    assert_eq!(state.status, Status::Failed);
    given(issued())
        .when(RecordIssuanceFailed {
            failure: failure("late", None),
        })
        .then_refused(Rule::Lifecycle);
}

// ---------------------------------------------------------------------------
// Cancellation
// ---------------------------------------------------------------------------

#[test]
fn an_order_is_cancelled_before_issuance() {
    for history in [ordered(), applied(), validating(), validated()] {
        let history = given(history)
            .when(CancelOrder {
                reason: "not needed".into(),
            })
            .then([Event::OrderCancelled(ev::OrderCancelled {
                reason: "not needed".into(),
            })]);
        assert_eq!(status_of(&history), Status::Cancelled);
        given(history)
            .when(CancelOrder {
                reason: String::new(),
            })
            .then_nothing();
    }
}

#[test]
fn an_order_is_not_cancelled_while_signing_or_once_issued() {
    let e = given(issuing())
        .when(CancelOrder {
            reason: String::new(),
        })
        .then_refused(Rule::Lifecycle);
    assert!(e.message().contains(SERIAL), "{e}");
    let e = given(issued())
        .when(CancelOrder {
            reason: String::new(),
        })
        .then_refused(Rule::Lifecycle);
    assert_eq!(
        e.message(),
        "certificate is issued; an order can only be cancelled before it is issued; revoke the certificate instead"
    );
}

// ---------------------------------------------------------------------------
// Deployment
// ---------------------------------------------------------------------------

#[test]
fn an_issued_certificate_is_deployed_and_verified() {
    let history = given(issued())
        .when(request_deployment(t0() + days(2)))
        .then([Event::DeploymentRequested(ev::DeploymentRequested {
            deployment_id: DEPLOYMENT.into(),
            target_id: TARGET.into(),
            replaces_certificate_id: String::new(),
        })]);
    given(history.clone())
        .when(request_deployment(t0() + days(2)))
        .then_nothing();
    let history = given(history)
        .when(RecordDeploymentSucceeded {
            deployment_id: DEPLOYMENT.into(),
            target_id: TARGET.into(),
            verified_fingerprint: fingerprint(),
        })
        .then([Event::DeploymentSucceeded(ev::DeploymentSucceeded {
            deployment_id: DEPLOYMENT.into(),
            target_id: TARGET.into(),
            verified_fingerprint: fingerprint(),
        })]);
    let state = fold(&history);
    assert_eq!(
        state.deployment(TARGET).map(|d| d.state),
        Some(DeploymentState::Active)
    );
    assert_eq!(DeploymentState::Active.as_str(), "succeeded");
}

#[test]
fn an_unissued_or_expired_certificate_is_not_deployed() {
    let e = given(validated())
        .when(request_deployment(t0()))
        .then_refused(Rule::Lifecycle);
    assert_eq!(
        e.message(),
        "certificate is validated; only an issued certificate can be deployed"
    );
    let e = given(issued())
        .when(request_deployment(not_after()))
        .then_refused(Rule::Expired);
    assert!(
        e.message().starts_with("certificate expired on 2026-04-02"),
        "{e}"
    );
    given(issued())
        .when(RequestDeployment {
            replaces_certificate_id: Some("cert-0".into()),
            ..request_deployment(t0() + days(2))
        })
        .then_invalid("replaces_certificate_id");
}

#[test]
fn a_deployment_is_verified_against_the_certificates_fingerprint() {
    let history = run(issued(), request_deployment(t0() + days(2)));
    let e = given(history.clone())
        .when(RecordDeploymentSucceeded {
            deployment_id: DEPLOYMENT.into(),
            target_id: TARGET.into(),
            verified_fingerprint: hex64(0x99),
        })
        .then_refused(Rule::FingerprintMismatch);
    assert!(e.message().contains("step \"verify\""), "{e}");
    given(history)
        .when(RecordDeploymentSucceeded {
            deployment_id: "dep-other".into(),
            target_id: TARGET.into(),
            verified_fingerprint: fingerprint(),
        })
        .then_refused(Rule::UnknownDeployment);
}

#[test]
fn a_failed_deployment_names_its_step_and_can_be_requested_again() {
    let history = run(issued(), request_deployment(t0() + days(2)));
    given(history.clone())
        .when(RecordDeploymentFailed {
            deployment_id: DEPLOYMENT.into(),
            target_id: TARGET.into(),
            step: "copy".into(),
            failure: failure("disk full", None),
            observed: String::new(),
        })
        .then_invalid("step");
    let (history, state) = given(history)
        .when(RecordDeploymentFailed {
            deployment_id: DEPLOYMENT.into(),
            target_id: TARGET.into(),
            step: "reload".into(),
            failure: failure("nginx: config test failed", None),
            observed: String::new(),
        })
        .then_state();
    assert_eq!(
        state.deployment(TARGET).map(|d| d.state),
        Some(DeploymentState::Failed)
    );
    given(history.clone())
        .when(request_deployment(t0() + days(3)))
        .then_invalid("deployment_id");
    given(history)
        .when(RequestDeployment {
            deployment_id: "dep-2".into(),
            ..request_deployment(t0() + days(3))
        })
        .then_ok();
    given(deployed())
        .when(RecordDeploymentFailed {
            deployment_id: DEPLOYMENT.into(),
            target_id: TARGET.into(),
            step: "verify".into(),
            failure: failure("x", None),
            observed: String::new(),
        })
        .then_refused(Rule::DeploymentState);
}

#[test]
fn drift_is_recorded_and_restored() {
    let drift = RecordDeploymentDrifted {
        deployment_id: DEPLOYMENT.into(),
        target_id: TARGET.into(),
        observed_fingerprint: hex64(0x99),
        observed: "served another certificate".into(),
    };
    let (history, state) = given(deployed()).when(drift.clone()).then_state();
    assert_eq!(
        state.deployment(TARGET).map(|d| d.state),
        Some(DeploymentState::Drifted)
    );
    given(history.clone()).when(drift.clone()).then_nothing();
    let restored = given(history)
        .when(RecordDeploymentRestored {
            deployment_id: DEPLOYMENT.into(),
            target_id: TARGET.into(),
        })
        .then([Event::DeploymentRestored(ev::DeploymentRestored {
            deployment_id: DEPLOYMENT.into(),
            target_id: TARGET.into(),
        })]);
    assert_eq!(
        fold(&restored).deployment(TARGET).map(|d| d.state),
        Some(DeploymentState::Active)
    );
    given(deployed())
        .when(RecordDeploymentDrifted {
            observed_fingerprint: fingerprint(),
            ..drift
        })
        .then_refused(Rule::FingerprintMismatch);
}

#[test]
fn a_deployment_is_removed_once() {
    let remove = RemoveDeployment {
        deployment_id: DEPLOYMENT.into(),
        target_id: TARGET.into(),
    };
    let history = given(deployed())
        .when(remove.clone())
        .then([Event::DeploymentRemoved(ev::DeploymentRemoved {
            deployment_id: DEPLOYMENT.into(),
            target_id: TARGET.into(),
        })]);
    given(history).when(remove.clone()).then_nothing();
    given(issued())
        .when(remove)
        .then_refused(Rule::UnknownDeployment);
}

#[test]
fn a_deployment_is_replaced_only_by_the_successor() {
    let replace = RecordDeploymentReplaced {
        deployment_id: DEPLOYMENT.into(),
        target_id: TARGET.into(),
        successor_id: SUCCESSOR.into(),
    };
    given(deployed())
        .when(replace.clone())
        .then_refused(Rule::UnknownSuccessor);
    let history = run(deployed(), start_renewal(SUCCESSOR, in_window()));
    let history = run(
        history,
        MarkSuperseded {
            successor_id: SUCCESSOR.into(),
        },
    );
    given(history.clone())
        .when(RecordDeploymentReplaced {
            successor_id: "cert-9".into(),
            ..replace.clone()
        })
        .then_refused(Rule::UnknownSuccessor);
    let (history, state) = given(history).when(replace.clone()).then_state();
    let d = state
        .deployment(TARGET)
        .cloned()
        .unwrap_or_else(|| panic!("deployment"));
    assert_eq!(d.state, DeploymentState::Replaced);
    assert_eq!(d.replaced_by.as_deref(), Some(SUCCESSOR));
    given(history.clone()).when(replace).then_nothing();
    given(history)
        .when(RemoveDeployment {
            deployment_id: DEPLOYMENT.into(),
            target_id: TARGET.into(),
        })
        .then_refused(Rule::DeploymentState);
}

#[test]
fn a_successor_deployment_names_the_predecessor_it_replaces() {
    let successor = run(
        vec![],
        PlaceOrder {
            predecessor_id: Some("cert-0".into()),
            ..place(http_spec(), None)
        },
    );
    let state = fold(&successor);
    assert_eq!(state.predecessor_id.as_deref(), Some("cert-0"));
    // The same life as the fixture, ordered as a successor.
    let mut history = issued();
    history[0] = successor[0].clone();
    given(history)
        .when(RequestDeployment {
            replaces_certificate_id: Some("cert-0".into()),
            ..request_deployment(t0() + days(2))
        })
        .then([Event::DeploymentRequested(ev::DeploymentRequested {
            deployment_id: DEPLOYMENT.into(),
            target_id: TARGET.into(),
            replaces_certificate_id: "cert-0".into(),
        })]);
}

// ---------------------------------------------------------------------------
// Renewal
// ---------------------------------------------------------------------------

#[test]
fn renewal_outside_the_window_names_the_opening_date() {
    let e = given(issued())
        .when(start_renewal(SUCCESSOR, t0() + days(10)))
        .then_refused(Rule::RenewalWindow);
    assert!(
        e.message()
            .starts_with("renewal window opens on 2026-03-03 (30 days before expiry; the certificate expires on 2026-04-02)"),
        "{e}"
    );
    let e = given(issued())
        .when(StartRenewal {
            window: RenewalWindow::ShareOfLifetime {
                numerator: 2,
                denominator: 3,
            },
            ..start_renewal(SUCCESSOR, t0() + days(10))
        })
        .then_refused(Rule::RenewalWindow);
    assert!(
        e.message()
            .starts_with("renewal window opens on 2026-03-03 (once 2/3 of the lifetime has passed"),
        "{e}"
    );
    given(issued())
        .when(start_renewal(SUCCESSOR, not_after()))
        .then_refused(Rule::Expired);
    given(issued())
        .when(StartRenewal {
            window: RenewalWindow::DaysBeforeExpiry(0),
            ..start_renewal(SUCCESSOR, in_window())
        })
        .then_invalid("window");
}

#[test]
fn renewal_inside_the_window_orders_one_successor() {
    let history = given(issued())
        .when(start_renewal(SUCCESSOR, in_window()))
        .then([Event::RenewalStarted(ev::RenewalStarted {
            successor_id: SUCCESSOR.into(),
            reason: "manual".into(),
            trigger: "alice".into(),
        })]);
    assert_eq!(fold(&history).successor_id(), Some(SUCCESSOR));
    given(history.clone())
        .when(start_renewal(SUCCESSOR, in_window()))
        .then_nothing();
    let e = given(history)
        .when(start_renewal("cert-3", in_window()))
        .then_refused(Rule::RenewalInProgress);
    assert!(e.message().contains(SUCCESSOR), "{e}");
}

#[test]
fn a_failed_renewal_allows_another_with_a_new_successor() {
    let history = run(issued(), start_renewal(SUCCESSOR, in_window()));
    let fail = RecordRenewalFailed {
        successor_id: SUCCESSOR.into(),
        failure: failure("validation failed", None),
    };
    let (history, state) = given(history).when(fail.clone()).then_state();
    assert!(state.active_renewal().is_none());
    assert_eq!(state.successor_id(), None);
    given(history.clone()).when(fail).then_nothing();
    given(history.clone())
        .when(start_renewal(SUCCESSOR, in_window()))
        .then_invalid("successor_id");
    given(history)
        .when(start_renewal("cert-3", in_window()))
        .then_ok();
}

#[test]
fn the_successors_issuance_supersedes_the_certificate() {
    let history = run(issued(), start_renewal(SUCCESSOR, in_window()));
    let supersede = MarkSuperseded {
        successor_id: SUCCESSOR.into(),
    };
    given(history.clone())
        .when(MarkSuperseded {
            successor_id: "cert-9".into(),
        })
        .then_refused(Rule::UnknownSuccessor);
    let history = given(history)
        .when(supersede.clone())
        .then([Event::CertificateSuperseded(ev::CertificateSuperseded {
            successor_id: SUCCESSOR.into(),
        })]);
    let state = fold(&history);
    assert!(state.is_superseded());
    assert_eq!(state.status, Status::Issued, "superseded stays valid");
    given(history.clone()).when(supersede).then_nothing();
    given(history.clone())
        .when(start_renewal("cert-3", in_window()))
        .then_refused(Rule::Superseded);
    given(history)
        .when(RecordRenewalFailed {
            successor_id: SUCCESSOR.into(),
            failure: failure("late", None),
        })
        .then_refused(Rule::Superseded);
    given(issued())
        .when(MarkSuperseded {
            successor_id: SUCCESSOR.into(),
        })
        .then_refused(Rule::UnknownSuccessor);
}

#[test]
fn unissued_revoked_or_expired_certificates_are_not_renewed() {
    given(validated())
        .when(start_renewal(SUCCESSOR, in_window()))
        .then_refused(Rule::Lifecycle);
    let revoked = run(
        issued(),
        RecordRevoked {
            reason: RevocationReason::KeyCompromise,
            revoked_at: t0() + days(5),
        },
    );
    let e = given(revoked)
        .when(start_renewal(SUCCESSOR, in_window()))
        .then_refused(Rule::Lifecycle);
    assert!(
        e.message()
            .starts_with("certificate is revoked (REVOCATION_REASON_KEY_COMPROMISE on 2026-01-06)"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------
// Expiry
// ---------------------------------------------------------------------------

fn check(now: chrono::DateTime<chrono::Utc>) -> CheckExpiry {
    CheckExpiry {
        now,
        thresholds: DEFAULT_EXPIRY_THRESHOLDS.to_vec(),
    }
}

fn approaching(days: u32, pending: bool) -> Event {
    Event::ExpiryApproaching(ev::ExpiryApproaching {
        threshold_days: days,
        not_after: Some(to_timestamp(not_after())),
        renewal_pending: pending,
    })
}

#[test]
fn expiry_thresholds_are_announced_once_each() {
    given(issued()).when(check(not_after() - days(31))).then([]);
    let history = given(issued())
        .when(check(not_after() - days(29)))
        .then([approaching(30, true)]);
    given(history.clone())
        .when(check(not_after() - days(28)))
        .then_nothing();
    // Several thresholds crossed at once (the checker was down): each once, largest first.
    let history = given(history)
        .when(check(not_after() - days(6)))
        .then([approaching(14, true), approaching(7, true)]);
    let history = given(history)
        .when(check(not_after() - chrono::TimeDelta::hours(12)))
        .then([approaching(1, true)]);
    let history = given(history)
        .when(check(not_after()))
        .then([Event::CertificateExpired(ev::CertificateExpired {
            not_after: Some(to_timestamp(not_after())),
        })]);
    let state = fold(&history);
    assert_eq!(state.status, Status::Expired);
    assert_eq!(
        state
            .announced_thresholds
            .iter()
            .copied()
            .collect::<Vec<_>>(),
        vec![1, 7, 14, 30]
    );
    given(history)
        .when(check(not_after() + days(1)))
        .then_nothing();
}

#[test]
fn thresholds_longer_than_the_lifetime_are_not_announced() {
    // A 10-day certificate: 30 and 14 days say nothing about it.
    let short = IntendIssuance {
        not_after: not_before() + days(10),
        ..intend()
    };
    let history = run(validated(), short);
    let history = run(
        history,
        RecordIssued {
            not_after: not_before() + days(10),
            ..issued_cmd()
        },
    );
    let events = given(history).when(check(not_before() + days(9))).then_ok();
    let thresholds: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            Event::ExpiryApproaching(a) => Some(a.threshold_days),
            _ => None,
        })
        .collect();
    assert_eq!(thresholds, vec![7, 1]);
}

#[test]
fn renewal_pending_is_off_once_superseded_or_without_auto_renew() {
    let history = run(issued(), start_renewal(SUCCESSOR, in_window()));
    let history = run(
        history,
        MarkSuperseded {
            successor_id: SUCCESSOR.into(),
        },
    );
    given(history)
        .when(check(not_after() - days(10)))
        .then([approaching(30, false), approaching(14, false)]);
}

#[test]
fn nothing_is_announced_for_certificates_not_live() {
    given(validated()).when(check(not_after())).then_nothing();
    let revoked = run(
        issued(),
        RecordRevoked {
            reason: RevocationReason::Unspecified,
            revoked_at: t0() + days(5),
        },
    );
    given(revoked).when(check(not_after())).then_nothing();
    given(issued())
        .when(CheckExpiry {
            now: t0(),
            thresholds: vec![30, 0],
        })
        .then_invalid("thresholds[1]");
}

#[test]
fn expiry_flags_deployments_still_serving() {
    let (_, state) = given(deployed()).when(check(not_after())).then_state();
    assert_eq!(
        state.deployment(TARGET).map(|d| d.state),
        Some(DeploymentState::ServingExpired)
    );
}

// ---------------------------------------------------------------------------
// Revocation
// ---------------------------------------------------------------------------

fn request_revocation(now: chrono::DateTime<chrono::Utc>) -> RequestRevocation {
    RequestRevocation {
        reason: RevocationReason::KeyCompromise,
        requested_by: "alice".into(),
        comment: "laptop stolen".into(),
        now,
    }
}

#[test]
fn revocation_is_requested_then_recorded_and_flags_deployments() {
    let history = given(deployed())
        .when(request_revocation(t0() + days(5)))
        .then([Event::RevocationRequested(ev::RevocationRequested {
            reason: RevocationReason::KeyCompromise as i32,
            requested_by: "alice".into(),
            comment: "laptop stolen".into(),
        })]);
    given(history.clone())
        .when(request_revocation(t0() + days(5)))
        .then_nothing();
    let revoked_at = t0() + days(5);
    let history = given(history)
        .when(RecordRevoked {
            reason: RevocationReason::KeyCompromise,
            revoked_at,
        })
        .then([Event::CertificateRevoked(ev::CertificateRevoked {
            serial: SERIAL.into(),
            reason: RevocationReason::KeyCompromise as i32,
            revoked_at: Some(to_timestamp(revoked_at)),
        })]);
    let state = fold(&history);
    assert_eq!(state.status, Status::Revoked);
    assert_eq!(
        state.deployment(TARGET).map(|d| d.state),
        Some(DeploymentState::ServingRevoked)
    );
    // Idempotent: revoking again decides nothing.
    given(history.clone())
        .when(request_revocation(t0() + days(6)))
        .then_nothing();
    given(history.clone())
        .when(RecordRevoked {
            reason: RevocationReason::KeyCompromise,
            revoked_at,
        })
        .then_nothing();
    given(history)
        .when(request_deployment(t0() + days(6)))
        .then_refused(Rule::Lifecycle);
}

#[test]
fn a_target_still_serving_a_revoked_certificate_is_flagged_once() {
    let flag = || FlagRevokedServed {
        deployment_id: DEPLOYMENT.into(),
        target_id: TARGET.into(),
        observed: "TLS handshake on 127.0.0.1:8443 served the revoked certificate".into(),
    };
    // Not revoked: nothing to flag.
    given(deployed()).when(flag()).then_refused(Rule::Lifecycle);
    let revoked = run(
        deployed(),
        RecordRevoked {
            reason: RevocationReason::KeyCompromise,
            revoked_at: t0() + days(5),
        },
    );
    let history = given(revoked)
        .when(flag())
        .then([Event::RevokedCertificateServed(
            ev::RevokedCertificateServed {
                deployment_id: DEPLOYMENT.into(),
                target_id: TARGET.into(),
                observed: "TLS handshake on 127.0.0.1:8443 served the revoked certificate".into(),
            },
        )]);
    let state = fold(&history);
    assert!(
        state
            .deployment(TARGET)
            .is_some_and(|d| d.revoked_served_flagged)
    );
    // Once per deployment.
    given(history.clone()).when(flag()).then_nothing();
    // A target that no longer serves it is not flagged.
    let removed = run(
        history,
        RemoveDeployment {
            deployment_id: DEPLOYMENT.into(),
            target_id: TARGET.into(),
        },
    );
    given(removed)
        .when(flag())
        .then_refused(Rule::DeploymentState);
}

#[test]
fn a_deployment_verified_after_revocation_is_serving_revoked_never_active() {
    let history = run(issued(), request_deployment(t0() + days(2)));
    let history = run(
        history,
        RecordRevoked {
            reason: RevocationReason::Superseded,
            revoked_at: t0() + days(3),
        },
    );
    let (_, state) = given(history)
        .when(RecordDeploymentSucceeded {
            deployment_id: DEPLOYMENT.into(),
            target_id: TARGET.into(),
            verified_fingerprint: fingerprint(),
        })
        .then_state();
    assert_eq!(
        state.deployment(TARGET).map(|d| d.state),
        Some(DeploymentState::ServingRevoked)
    );
}

#[test]
fn only_issued_unexpired_certificates_are_revoked() {
    let cancelled = run(
        ordered(),
        CancelOrder {
            reason: String::new(),
        },
    );
    let e = given(cancelled)
        .when(request_revocation(t0()))
        .then_refused(Rule::Lifecycle);
    assert_eq!(
        e.message(),
        "certificate is cancelled; only an issued certificate can be revoked"
    );
    let e = given(validated())
        .when(request_revocation(t0()))
        .then_refused(Rule::Lifecycle);
    assert!(e.message().contains("cancel the order instead"), "{e}");
    given(issued())
        .when(request_revocation(not_after()))
        .then_refused(Rule::Expired);
    let expired = run(issued(), check(not_after()));
    let e = given(expired)
        .when(request_revocation(not_after()))
        .then_refused(Rule::Lifecycle);
    assert!(
        e.message()
            .starts_with("certificate is expired (on 2026-04-02)"),
        "{e}"
    );
}

#[test]
fn revocation_reasons_follow_the_baseline_requirements() {
    for reason in [
        RevocationReason::CertificateHold,
        RevocationReason::RemoveFromCrl,
        RevocationReason::CaCompromise,
        RevocationReason::AaCompromise,
    ] {
        given(issued())
            .when(RequestRevocation {
                reason,
                ..request_revocation(t0() + days(2))
            })
            .then_invalid("reason");
    }
    given(issued())
        .when(RequestRevocation {
            requested_by: String::new(),
            ..request_revocation(t0() + days(2))
        })
        .then_invalid("requested_by");
}

// ---------------------------------------------------------------------------
// Key export
// ---------------------------------------------------------------------------

#[test]
fn exporting_the_generated_key_is_audited() {
    given(issued())
        .when(RecordPrivateKeyExported {
            format: KeyExportFormat::Pkcs12,
        })
        .then([Event::PrivateKeyExported(ev::PrivateKeyExported {
            key_id: KEY_ID.into(),
            format: "pkcs12".into(),
        })]);
    given(keyed())
        .when(RecordPrivateKeyExported {
            format: KeyExportFormat::Pem,
        })
        .then_refused(Rule::Lifecycle);
    let csr_applied = run(
        ordered(),
        SubmitApplication {
            application: application(&["www.example.com"], csr()),
        },
    );
    let e = given(csr_applied)
        .when(RecordPrivateKeyExported {
            format: KeyExportFormat::Pem,
        })
        .then_refused(Rule::KeySource);
    assert!(e.message().contains("own CSR"), "{e}");
}

// ---------------------------------------------------------------------------
// Fold
// ---------------------------------------------------------------------------

#[test]
fn the_fold_counts_versions_and_reads_stored_wrappers() {
    let history = deployed();
    let state = fold(&history);
    assert_eq!(state.version, history.len() as u64);
    let wrapped: Vec<ev::CertificateEvent> = history
        .iter()
        .cloned()
        .map(ev::CertificateEvent::from)
        .collect();
    let from_wrapped = wrapped
        .iter()
        .fold(CertificateState::default(), evolve_wrapped);
    assert_eq!(from_wrapped, state);
    let unknown = evolve_wrapped(state.clone(), &ev::CertificateEvent { event: None });
    assert_eq!(unknown.version, state.version + 1);
    assert_eq!(unknown.status, state.status);
}
