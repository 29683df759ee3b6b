//! Given/when/then helpers and fixtures for the certificate decider.
#![allow(dead_code)]

use certledger_domain::certificate::*;
use certledger_domain::{CertificateEvent as Event, DomainError, ErrorKind, Rule};
use certledger_proto::common::v1::{
    CertificateSpec, DomainSlotKind, DomainSlots, Failure, FailureCode, KeyAlgorithm, Subject,
    ValidationMethod,
};
use certledger_proto::events::v1::Challenge;
use chrono::{DateTime, TimeDelta, Utc};

// ---------------------------------------------------------------------------
// given / when / then
// ---------------------------------------------------------------------------

/// A history to decide against.
pub struct Given {
    pub history: Vec<Event>,
}

/// Starts a scenario from a history.
pub fn given(history: impl IntoIterator<Item = Event>) -> Given {
    Given {
        history: history.into_iter().collect(),
    }
}

/// The outcome of deciding one command.
pub struct Then {
    pub history: Vec<Event>,
    pub state: CertificateState,
    pub result: Result<Vec<Event>, DomainError>,
}

impl Given {
    /// Decides a command against the folded history.
    pub fn when(self, command: impl Into<CertificateCommand>) -> Then {
        let state = fold(&self.history);
        invariants(&state).expect("the given history must be consistent");
        let result = decide(&command.into(), &state);
        Then {
            history: self.history,
            state,
            result,
        }
    }
}

impl Then {
    /// Asserts the command decided exactly these events; returns the history with them
    /// (after checking the new state's invariants).
    #[track_caller]
    pub fn then(self, expected: impl IntoIterator<Item = Event>) -> Vec<Event> {
        let expected: Vec<Event> = expected.into_iter().collect();
        match self.result {
            Ok(events) => {
                assert_eq!(events, expected, "decided events differ");
                let mut history = self.history;
                history.extend(events);
                let state = fold(&history);
                invariants(&state).expect("state after the events must be consistent");
                history
            }
            Err(e) => panic!("expected events, got error: {e:?}"),
        }
    }

    /// Asserts the command was accepted; returns the events (unchecked).
    #[track_caller]
    pub fn then_ok(self) -> Vec<Event> {
        match self.result {
            Ok(events) => {
                let mut history = self.history;
                history.extend(events.iter().cloned());
                invariants(&fold(&history)).expect("state after the events must be consistent");
                events
            }
            Err(e) => panic!("expected events, got error: {e:?}"),
        }
    }

    /// Asserts the command was accepted; returns the history with its events and the
    /// state folded from it.
    #[track_caller]
    pub fn then_state(self) -> (Vec<Event>, CertificateState) {
        let mut history = self.history.clone();
        history.extend(self.then_ok());
        let state = fold(&history);
        (history, state)
    }

    /// Asserts the command decided no events (an idempotent repeat).
    #[track_caller]
    pub fn then_nothing(self) {
        match self.result {
            Ok(events) => assert!(events.is_empty(), "expected no events, got {events:?}"),
            Err(e) => panic!("expected no events, got error: {e:?}"),
        }
    }

    /// Asserts an error of this kind; returns it.
    #[track_caller]
    pub fn then_error(self, kind: ErrorKind) -> DomainError {
        match self.result {
            Ok(events) => panic!("expected {kind:?}, got events {events:?}"),
            Err(e) => {
                assert_eq!(e.kind(), kind, "wrong error kind: {e:?}");
                e
            }
        }
    }

    /// Asserts `InvalidArgument` on this field; returns the error.
    #[track_caller]
    pub fn then_invalid(self, field: &str) -> DomainError {
        let e = self.then_error(ErrorKind::InvalidArgument);
        assert_eq!(e.field(), Some(field), "wrong field: {e:?}");
        e
    }

    /// Asserts `FailedPrecondition` under this rule; returns the error.
    #[track_caller]
    pub fn then_refused(self, rule: Rule) -> DomainError {
        let e = self.then_error(ErrorKind::FailedPrecondition);
        assert_eq!(e.rule(), Some(rule), "wrong rule: {e:?}");
        e
    }
}

/// Decides a command and appends its events; panics if refused.
#[track_caller]
pub fn run(mut history: Vec<Event>, command: impl Into<CertificateCommand>) -> Vec<Event> {
    let command = command.into();
    let events = decide(&command, &fold(&history))
        .unwrap_or_else(|e| panic!("{} refused: {e:?}", command.name()));
    history.extend(events);
    history
}

// ---------------------------------------------------------------------------
// fixtures
// ---------------------------------------------------------------------------

pub const CERT: &str = "cert-1";
pub const TENANT: &str = "acme";
pub const SERIAL: &str = "01a2b3c4d5e6f708192a3b4c5d6e7f8091";
pub const KEY_ID: &str = "key-1";
pub const TARGET: &str = "target-1";
pub const DEPLOYMENT: &str = "dep-1";
pub const SUCCESSOR: &str = "cert-2";
pub const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
pub const CSR: &str =
    "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n";

pub fn hex64(byte: u8) -> String {
    format!("{byte:02x}").repeat(32)
}

pub fn tbs() -> String {
    hex64(0x7b)
}

pub fn fingerprint() -> String {
    hex64(0xf1)
}

/// 2026-01-01T00:00:00Z.
pub fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .expect("valid")
        .to_utc()
}

pub fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("valid").to_utc()
}

pub fn days(n: i64) -> TimeDelta {
    TimeDelta::days(n)
}

/// The issued certificate's validity: 2026-01-02 to 2026-04-02 (90 days).
pub fn not_before() -> DateTime<Utc> {
    t0() + days(1)
}

pub fn not_after() -> DateTime<Utc> {
    not_before() + days(90)
}

pub fn spec(kind: DomainSlotKind, method: ValidationMethod) -> CertificateSpec {
    CertificateSpec {
        issuer: "builtin".into(),
        key_algorithm: KeyAlgorithm::EcdsaP256 as i32,
        validity_days: 90,
        domain_slots: Some(DomainSlots {
            kind: kind as i32,
            max_names: if kind == DomainSlotKind::Multi { 5 } else { 0 },
            allow_wildcards: false,
        }),
        validation_method: method as i32,
        auto_renew: true,
    }
}

/// MULTI (5 names), HTTP-01, ECDSA P-256, 90 days, auto-renew.
pub fn http_spec() -> CertificateSpec {
    spec(DomainSlotKind::Multi, ValidationMethod::Http01)
}

pub fn application(domains: &[&str], key_source: KeySource) -> Application {
    Application {
        domains: domains.iter().map(|d| (*d).to_owned()).collect(),
        ip_addresses: vec![],
        subject: Subject::default(),
        key_source,
    }
}

pub fn generate() -> KeySource {
    KeySource::Generate {
        algorithm: KeyAlgorithm::Unspecified,
    }
}

pub fn csr() -> KeySource {
    KeySource::Csr { pem: CSR.into() }
}

pub fn place(spec: CertificateSpec, application: Option<Application>) -> PlaceOrder {
    PlaceOrder {
        certificate_id: CERT.into(),
        tenant: TENANT.into(),
        spec,
        application,
        predecessor_id: None,
        idempotency_key: None,
    }
}

pub fn failure(reason: &str, retry_at: Option<DateTime<Utc>>) -> Failure {
    Failure {
        code: FailureCode::ValidationUnreachable as i32,
        reason: reason.into(),
        attempt: 1,
        next_retry_at: retry_at.map(certledger_domain::time::to_timestamp),
    }
}

pub fn challenge(domain: &str, method: ValidationMethod) -> Challenge {
    Challenge {
        domain: domain.into(),
        method: method as i32,
        token: format!(
            "token-{}-0123456789abcdef",
            domain.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
        ),
        key_authorization: "token.thumbprint".into(),
    }
}

pub fn intend() -> IntendIssuance {
    IntendIssuance {
        issuer_ca_id: "builtin-int-1".into(),
        serial: SERIAL.into(),
        tbs_sha256: tbs(),
        not_before: not_before(),
        not_after: not_after(),
    }
}

pub fn issued_cmd() -> RecordIssued {
    RecordIssued {
        issuer_ca_id: "builtin-int-1".into(),
        serial: SERIAL.into(),
        not_before: not_before(),
        not_after: not_after(),
        sha256_fingerprint: fingerprint(),
        certificate_pem: PEM.into(),
        chain_pem: PEM.into(),
    }
}

/// Ordered (HTTP-01, two names, generated key).
pub fn ordered() -> Vec<Event> {
    run(vec![], place(http_spec(), None))
}

/// Applied for www.example.com and api.example.com with a generated key.
pub fn applied() -> Vec<Event> {
    run(
        ordered(),
        SubmitApplication {
            application: application(&["www.example.com", "api.example.com"], generate()),
        },
    )
}

/// Applied and key generated.
pub fn keyed() -> Vec<Event> {
    run(
        applied(),
        RecordKeyGenerated {
            key_id: KEY_ID.into(),
            algorithm: KeyAlgorithm::EcdsaP256,
            public_key_sha256: hex64(0x11),
        },
    )
}

/// Validating with HTTP-01 challenges for both names.
pub fn validating() -> Vec<Event> {
    run(
        keyed(),
        StartValidation {
            challenges: vec![
                challenge("www.example.com", ValidationMethod::Http01),
                challenge("api.example.com", ValidationMethod::Http01),
            ],
        },
    )
}

/// Both names validated.
pub fn validated() -> Vec<Event> {
    let h = run(
        validating(),
        RecordDomainValidated {
            domain: "www.example.com".into(),
        },
    );
    run(
        h,
        RecordDomainValidated {
            domain: "api.example.com".into(),
        },
    )
}

/// Serial and TBS hash recorded.
pub fn issuing() -> Vec<Event> {
    run(validated(), intend())
}

/// Issued, valid 2026-01-02 to 2026-04-02.
pub fn issued() -> Vec<Event> {
    run(issuing(), issued_cmd())
}

pub fn request_deployment(now: DateTime<Utc>) -> RequestDeployment {
    RequestDeployment {
        deployment_id: DEPLOYMENT.into(),
        target_id: TARGET.into(),
        replaces_certificate_id: None,
        now,
    }
}

/// Issued and verified on TARGET.
pub fn deployed() -> Vec<Event> {
    let h = run(issued(), request_deployment(t0() + days(2)));
    run(
        h,
        RecordDeploymentSucceeded {
            deployment_id: DEPLOYMENT.into(),
            target_id: TARGET.into(),
            verified_fingerprint: fingerprint(),
        },
    )
}

pub fn start_renewal(successor: &str, now: DateTime<Utc>) -> StartRenewal {
    StartRenewal {
        successor_id: successor.into(),
        reason: "manual".into(),
        trigger: "alice".into(),
        window: RenewalWindow::default(),
        now,
    }
}

/// A moment inside the default renewal window (20 days before expiry).
pub fn in_window() -> DateTime<Utc> {
    not_after() - days(20)
}
