//! Property tests of the certificate decider and fold.
//!
//! Random command sequences are generated as abstract actions that are turned into
//! concrete commands against the current state (so that most of them are plausible and
//! the walk gets deep into the lifecycle, while wrong ids, serials, fingerprints and
//! moves still come up). Then:
//!
//! (a) replaying the accepted history — directly, split into prefix and suffix, or
//!     after a round trip through the event codec — always yields the same state;
//! (b) after every accepted command the state satisfies `invariants`.

mod common;

use std::collections::BTreeSet;

use certledger_domain::certificate::*;
use certledger_domain::{CertificateEvent as Event, DomainError};
use certledger_proto::codec::EventCodec;
use certledger_proto::common::v1::{
    CertificateSpec, DomainSlotKind, DomainSlots, KeyAlgorithm, RevocationReason, ValidationMethod,
};
use chrono::{DateTime, TimeDelta, Utc};
use common::{CSR, PEM, challenge, failure, hex64, t0};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

// ---------------------------------------------------------------------------
// The model: specifications with a fitting application each
// ---------------------------------------------------------------------------

fn slots(kind: DomainSlotKind, max_names: u32, allow_wildcards: bool) -> Option<DomainSlots> {
    Some(DomainSlots {
        kind: kind as i32,
        max_names,
        allow_wildcards,
    })
}

fn spec_for(pick: u8, auto_renew: bool) -> CertificateSpec {
    let (slots, method) = match pick % 5 {
        0 => (
            slots(DomainSlotKind::Multi, 3, false),
            ValidationMethod::Http01,
        ),
        1 => (
            slots(DomainSlotKind::Single, 0, false),
            ValidationMethod::Approval,
        ),
        2 => (
            slots(DomainSlotKind::Single, 0, false),
            ValidationMethod::None,
        ),
        3 => (
            slots(DomainSlotKind::Wildcard, 0, false),
            ValidationMethod::Dns01,
        ),
        _ => (
            slots(DomainSlotKind::Multi, 4, true),
            ValidationMethod::Dns01,
        ),
    };
    CertificateSpec {
        issuer: "builtin".into(),
        key_algorithm: KeyAlgorithm::EcdsaP384 as i32,
        validity_days: 90,
        domain_slots: slots,
        validation_method: method as i32,
        auto_renew,
    }
}

/// An application that fits the specification (or, with `bad`, one that does not).
fn application_for(spec: &CertificateSpec, generate: bool, bad: bool) -> Application {
    let kind = spec.domain_slots.map(|s| s.kind).unwrap_or_default();
    let method = spec.validation_method;
    let domains: &[&str] = if bad {
        &["a.example.com", "a.example.com"]
    } else if kind == DomainSlotKind::Wildcard as i32 {
        &["*.example.com", "example.com"]
    } else if kind == DomainSlotKind::Single as i32 {
        &["intranet.example.com"]
    } else if method == ValidationMethod::Dns01 as i32 {
        &["*.example.org", "www.example.com", "api.example.com"]
    } else {
        &["www.example.com", "api.example.com"]
    };
    let ip_addresses =
        if kind == DomainSlotKind::Multi as i32 && method == ValidationMethod::Http01 as i32 {
            vec!["192.0.2.7".to_owned()]
        } else {
            vec![]
        };
    Application {
        domains: domains.iter().map(|d| (*d).to_owned()).collect(),
        ip_addresses,
        subject: Default::default(),
        key_source: if generate {
            KeySource::Generate {
                algorithm: KeyAlgorithm::Unspecified,
            }
        } else {
            KeySource::Csr { pem: CSR.into() }
        },
    }
}

// ---------------------------------------------------------------------------
// Abstract actions
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Action {
    Place {
        spec: u8,
        app: bool,
        generate: bool,
        predecessor: bool,
    },
    Submit {
        generate: bool,
        bad: bool,
    },
    GenerateKey {
        good: bool,
    },
    StartValidation {
        complete: bool,
    },
    ValidateDomain {
        pick: u8,
    },
    FailValidation {
        pick: u8,
        retry: bool,
    },
    Approve,
    Reject {
        go: bool,
    },
    Intend {
        serial: u8,
        validity: u8,
    },
    Issue {
        matching: bool,
    },
    FailIssuance {
        retry: bool,
    },
    Cancel {
        go: bool,
    },
    Deploy {
        target: u8,
        deployment: u8,
        replaces: bool,
    },
    DeploySucceeded {
        target: u8,
        good: bool,
    },
    DeployFailed {
        target: u8,
    },
    Remove {
        target: u8,
    },
    Replace {
        target: u8,
        right: bool,
    },
    FlagServed {
        target: u8,
    },
    Drift {
        target: u8,
    },
    Restore {
        target: u8,
    },
    Renew {
        successor: u8,
        window: u8,
    },
    RenewalFailed {
        successor: u8,
    },
    Supersede {
        successor: u8,
    },
    CheckExpiry,
    RequestRevocation {
        reason: u8,
    },
    Revoke {
        reason: u8,
    },
    Export,
}

fn action() -> impl Strategy<Value = Action> {
    use Action as A;
    let t = 0u8..3;
    prop_oneof![
        1 => (any::<u8>(), any::<bool>(), any::<bool>(), any::<bool>())
            .prop_map(|(spec, app, generate, predecessor)| A::Place { spec, app, generate, predecessor }),
        3 => (any::<bool>(), prop::bool::weighted(0.1)).prop_map(|(generate, bad)| A::Submit { generate, bad }),
        3 => prop::bool::weighted(0.9).prop_map(|good| A::GenerateKey { good }),
        4 => prop::bool::weighted(0.9).prop_map(|complete| A::StartValidation { complete }),
        8 => any::<u8>().prop_map(|pick| A::ValidateDomain { pick }),
        1 => (any::<u8>(), prop::bool::weighted(0.8)).prop_map(|(pick, retry)| A::FailValidation { pick, retry }),
        3 => Just(A::Approve),
        1 => prop::bool::weighted(0.2).prop_map(|go| A::Reject { go }),
        4 => (0u8..5, any::<u8>()).prop_map(|(serial, validity)| A::Intend { serial, validity }),
        4 => prop::bool::weighted(0.9).prop_map(|matching| A::Issue { matching }),
        1 => prop::bool::weighted(0.8).prop_map(|retry| A::FailIssuance { retry }),
        1 => prop::bool::weighted(0.2).prop_map(|go| A::Cancel { go }),
        4 => (t.clone(), 0u8..4, any::<bool>())
            .prop_map(|(target, deployment, replaces)| A::Deploy { target, deployment, replaces }),
        4 => (t.clone(), prop::bool::weighted(0.9)).prop_map(|(target, good)| A::DeploySucceeded { target, good }),
        1 => t.clone().prop_map(|target| A::DeployFailed { target }),
        1 => t.clone().prop_map(|target| A::Remove { target }),
        2 => (t.clone(), prop::bool::weighted(0.9)).prop_map(|(target, right)| A::Replace { target, right }),
        2 => t.clone().prop_map(|target| A::Drift { target }),
        2 => t.clone().prop_map(|target| A::FlagServed { target }),
        2 => t.prop_map(|target| A::Restore { target }),
        4 => (0u8..3, any::<u8>()).prop_map(|(successor, window)| A::Renew { successor, window }),
        1 => (0u8..3).prop_map(|successor| A::RenewalFailed { successor }),
        3 => (0u8..3).prop_map(|successor| A::Supersede { successor }),
        3 => Just(A::CheckExpiry),
        1 => any::<u8>().prop_map(|reason| A::RequestRevocation { reason }),
        1 => any::<u8>().prop_map(|reason| A::Revoke { reason }),
        1 => Just(A::Export),
    ]
}

/// Hours to move the clock before a step: mostly a little, sometimes weeks.
fn advance() -> impl Strategy<Value = i64> {
    prop_oneof![8 => 0i64..24, 1 => 0i64..(20 * 24)]
}

/// A walk: an order, then steps each with a clock advance.
fn walk() -> impl Strategy<Value = (Action, Vec<(i64, Action)>)> {
    (
        (any::<u8>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
            |(spec, app, generate, predecessor)| Action::Place {
                spec,
                app,
                generate,
                predecessor,
            },
        ),
        prop::collection::vec((advance(), action()), 0..120),
    )
}

const TARGETS: [&str; 3] = ["t-1", "t-2", "t-3"];
const SUCCESSORS: [&str; 3] = ["s-1", "s-2", "s-3"];
const SERIALS: [&str; 5] = ["01", "02ab", "7fee01", "0badc0de", "1122334455667788"];
const REASONS: [RevocationReason; 5] = [
    RevocationReason::KeyCompromise,
    RevocationReason::Superseded,
    RevocationReason::Unspecified,
    RevocationReason::CessationOfOperation,
    RevocationReason::CertificateHold,
];

fn fingerprint_of(serial: &str) -> String {
    hex64(serial.len() as u8)
}

/// The concrete command for an action in the current state.
fn command(action: &Action, state: &CertificateState, now: DateTime<Utc>) -> CertificateCommand {
    use Action as A;
    let names: Vec<String> = state.names().into_iter().map(str::to_owned).collect();
    let name = |pick: u8| {
        if pick == 255 || names.is_empty() {
            "unknown.example.com".to_owned()
        } else {
            names[pick as usize % names.len()].clone()
        }
    };
    let target = |t: u8| TARGETS[t as usize % TARGETS.len()].to_owned();
    // Outcomes are mostly about targets with a deployment.
    let deployed: Vec<&String> = state.deployments.keys().collect();
    let deployed_target = |t: u8| {
        if deployed.is_empty() || t == 2 {
            target(t)
        } else {
            deployed[t as usize % deployed.len()].clone()
        }
    };
    let current_deployment = |t: u8| {
        state
            .deployment(&deployed_target(t))
            .map(|d| d.deployment_id.clone())
            .unwrap_or_else(|| "d-none".into())
    };
    match action {
        A::Place {
            spec,
            app,
            generate,
            predecessor,
        } => {
            let spec = spec_for(*spec, *generate);
            PlaceOrder {
                certificate_id: "c-1".into(),
                tenant: "acme".into(),
                application: app.then(|| application_for(&spec, *generate, false)),
                spec,
                predecessor_id: predecessor.then(|| "c-0".into()),
                idempotency_key: None,
            }
            .into()
        }
        A::Submit { generate, bad } => SubmitApplication {
            application: application_for(&state.spec, *generate, *bad),
        }
        .into(),
        A::GenerateKey { good } => RecordKeyGenerated {
            key_id: "k-1".into(),
            algorithm: if *good {
                state.key_algorithm()
            } else {
                KeyAlgorithm::Rsa2048
            },
            public_key_sha256: hex64(0x11),
        }
        .into(),
        A::StartValidation { complete } => {
            let method = state.validation_method();
            let mut challenges: Vec<_> = match method {
                ValidationMethod::Http01 | ValidationMethod::Dns01 => {
                    names.iter().map(|n| challenge(n, method)).collect()
                }
                _ => vec![],
            };
            if !complete {
                challenges.pop();
            }
            StartValidation { challenges }.into()
        }
        A::ValidateDomain { pick } => RecordDomainValidated {
            domain: name(*pick),
        }
        .into(),
        A::FailValidation { pick, retry } => RecordValidationFailed {
            domain: name(*pick),
            failure: failure("unreachable", retry.then(|| now + TimeDelta::hours(1))),
            observed: String::new(),
        }
        .into(),
        A::Approve => ApproveApplication {
            approver: "bob".into(),
            comment: String::new(),
        }
        .into(),
        A::Reject { go: false } | A::Cancel { go: false } => CheckExpiry {
            now,
            thresholds: DEFAULT_EXPIRY_THRESHOLDS.to_vec(),
        }
        .into(),
        A::Reject { go: true } => RejectApplication {
            approver: "bob".into(),
            reason: "no".into(),
        }
        .into(),
        A::Intend { serial, validity } => {
            let days = [10, 30, 60, 90, 120][*validity as usize % 5];
            IntendIssuance {
                issuer_ca_id: "ca-1".into(),
                serial: SERIALS[*serial as usize % SERIALS.len()].into(),
                tbs_sha256: hex64(0x7b),
                not_before: now,
                not_after: now + TimeDelta::days(days),
            }
            .into()
        }
        A::Issue { matching } => {
            let (serial, not_before, not_after) = match (&state.intent, matching) {
                (Some(i), true) => (i.serial.clone(), i.not_before, i.not_after),
                _ => ("0f".to_owned(), now, now + TimeDelta::days(30)),
            };
            RecordIssued {
                issuer_ca_id: "ca-1".into(),
                sha256_fingerprint: fingerprint_of(&serial),
                serial,
                not_before,
                not_after,
                certificate_pem: PEM.into(),
                chain_pem: String::new(),
            }
            .into()
        }
        A::FailIssuance { retry } => RecordIssuanceFailed {
            failure: failure("CA unavailable", retry.then(|| now + TimeDelta::hours(1))),
        }
        .into(),
        A::Cancel { go: true } => CancelOrder {
            reason: String::new(),
        }
        .into(),
        A::Deploy {
            target: t,
            deployment,
            replaces,
        } => RequestDeployment {
            deployment_id: format!("d-{deployment}"),
            target_id: target(*t),
            replaces_certificate_id: replaces.then(|| "c-0".into()),
            now,
        }
        .into(),
        A::DeploySucceeded { target: t, good } => RecordDeploymentSucceeded {
            deployment_id: current_deployment(*t),
            target_id: deployed_target(*t),
            verified_fingerprint: if *good {
                state
                    .issued
                    .as_ref()
                    .map(|i| i.sha256_fingerprint.clone())
                    .unwrap_or_else(|| hex64(0x99))
            } else {
                hex64(0x99)
            },
        }
        .into(),
        A::DeployFailed { target: t } => RecordDeploymentFailed {
            deployment_id: current_deployment(*t),
            target_id: deployed_target(*t),
            step: "reload".into(),
            failure: failure("reload failed", None),
            observed: String::new(),
        }
        .into(),
        A::Remove { target: t } => RemoveDeployment {
            deployment_id: current_deployment(*t),
            target_id: deployed_target(*t),
        }
        .into(),
        A::Replace { target: t, right } => RecordDeploymentReplaced {
            deployment_id: current_deployment(*t),
            target_id: deployed_target(*t),
            successor_id: match (state.successor_id(), right) {
                (Some(s), true) => s.to_owned(),
                _ => "s-9".into(),
            },
        }
        .into(),
        A::Drift { target: t } => RecordDeploymentDrifted {
            deployment_id: current_deployment(*t),
            target_id: deployed_target(*t),
            observed_fingerprint: hex64(0x99),
            observed: String::new(),
        }
        .into(),
        A::FlagServed { target: t } => FlagRevokedServed {
            deployment_id: current_deployment(*t),
            target_id: deployed_target(*t),
            observed: "TLS handshake served the revoked certificate".into(),
        }
        .into(),
        A::Restore { target: t } => RecordDeploymentRestored {
            deployment_id: current_deployment(*t),
            target_id: deployed_target(*t),
        }
        .into(),
        A::Renew { successor, window } => StartRenewal {
            successor_id: SUCCESSORS[*successor as usize % 3].into(),
            reason: "auto-renew".into(),
            trigger: "scheduler".into(),
            window: match window % 4 {
                0 => RenewalWindow::ShareOfLifetime {
                    numerator: 2,
                    denominator: 3,
                },
                1 => RenewalWindow::DaysBeforeExpiry(0),
                2 => RenewalWindow::DaysBeforeExpiry(7),
                _ => RenewalWindow::default(),
            },
            now,
        }
        .into(),
        A::RenewalFailed { successor } => RecordRenewalFailed {
            successor_id: SUCCESSORS[*successor as usize % 3].into(),
            failure: failure("successor failed", None),
        }
        .into(),
        A::Supersede { successor } => MarkSuperseded {
            successor_id: SUCCESSORS[*successor as usize % 3].into(),
        }
        .into(),
        A::CheckExpiry => CheckExpiry {
            now,
            thresholds: DEFAULT_EXPIRY_THRESHOLDS.to_vec(),
        }
        .into(),
        A::RequestRevocation { reason } => RequestRevocation {
            reason: REASONS[*reason as usize % REASONS.len()],
            requested_by: "alice".into(),
            comment: String::new(),
            now,
        }
        .into(),
        A::Revoke { reason } => RecordRevoked {
            reason: REASONS[*reason as usize % REASONS.len()],
            revoked_at: now,
        }
        .into(),
        A::Export => RecordPrivateKeyExported {
            format: KeyExportFormat::Pem,
        }
        .into(),
    }
}

/// One walk's outcome: the accepted history and the state after each step.
struct Run {
    history: Vec<Event>,
    error: Option<String>,
}

/// Facts that, once recorded, stay: the read models rely on it to skip deleting rows
/// of a certificate without them (an issued certificate, its deployments, its
/// revocation).
fn never_taken_back(before: &CertificateState, after: &CertificateState) -> Result<(), String> {
    if before.issued.is_some() && after.issued.is_none() {
        return Err("the issued certificate was taken back".into());
    }
    if let Some(target) = before
        .deployments
        .keys()
        .find(|t| !after.deployments.contains_key(*t))
    {
        return Err(format!("the deployment to {target} was taken back"));
    }
    if before.revocation.is_some() && after.revocation.is_none() {
        return Err("the revocation was taken back".into());
    }
    Ok(())
}

/// Runs a walk, checking the invariants after every event of every accepted command.
fn run_walk(first: &Action, steps: &[(i64, Action)]) -> Run {
    let mut state = CertificateState::default();
    let mut history = Vec::new();
    let mut now = t0();
    let all = std::iter::once((0, first.clone())).chain(steps.iter().cloned());
    for (hours, action) in all {
        now += TimeDelta::hours(hours);
        let cmd = command(&action, &state, now);
        let result: Result<Vec<Event>, DomainError> = decide(&cmd, &state);
        if let Ok(events) = result {
            for event in events {
                let before = state.clone();
                state = evolve(state, &event);
                history.push(event);
                if let Err(broken) = invariants(&state).and(never_taken_back(&before, &state)) {
                    return Run {
                        history,
                        error: Some(format!("after {} ({action:?}): {broken}", cmd.name())),
                    };
                }
            }
        }
    }
    Run {
        history,
        error: None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// (b) No sequence of commands reaches an inconsistent state.
    #[test]
    fn no_command_sequence_breaks_the_invariants((first, steps) in walk()) {
        let run = run_walk(&first, &steps);
        prop_assert!(run.error.is_none(), "{}", run.error.unwrap_or_default());
    }

    /// (a) Replaying a legal history yields the same state every time: folding twice,
    /// folding a prefix then the suffix, and folding after a codec round trip.
    #[test]
    fn replaying_a_history_is_deterministic((first, steps) in walk(), split in any::<prop::sample::Index>()) {
        let run = run_walk(&first, &steps);
        prop_assume!(run.error.is_none());
        let history = run.history;
        let state = fold(&history);
        prop_assert_eq!(&fold(&history), &state);
        prop_assert_eq!(state.version, history.len() as u64);

        let k = split.index(history.len() + 1);
        let (prefix, suffix) = history.split_at(k);
        prop_assert_eq!(&fold_from(fold(prefix), suffix), &state);

        let decoded: Vec<Event> = history
            .iter()
            .map(|e| Event::decode(e.event_type(), 1, &e.encode_payload()))
            .collect::<Result<_, _>>()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&fold(&decoded), &state);
    }
}

/// The walks reach every event type, so the properties cover the whole lifecycle.
#[test]
fn walks_reach_every_event_type() {
    let mut runner = TestRunner::deterministic();
    let strategy = walk();
    let mut seen = BTreeSet::new();
    let mut statuses = BTreeSet::new();
    for _ in 0..3000 {
        let Ok(tree) = strategy.new_tree(&mut runner) else {
            continue;
        };
        let (first, steps) = tree.current();
        let run = run_walk(&first, &steps);
        assert!(run.error.is_none(), "{:?}", run.error);
        statuses.insert(format!("{:?}", fold(&run.history).status));
        for e in &run.history {
            seen.insert(e.event_type());
        }
    }
    let all = [
        "CertificateOrdered",
        "ApplicationSubmitted",
        "KeyGenerated",
        "ValidationStarted",
        "DomainValidated",
        "ValidationPassed",
        "ValidationFailed",
        "ApplicationApproved",
        "ApplicationRejected",
        "IssuanceIntended",
        "CertificateIssued",
        "IssuanceFailed",
        "OrderCancelled",
        "DeploymentRequested",
        "DeploymentSucceeded",
        "DeploymentFailed",
        "DeploymentRemoved",
        "DeploymentReplaced",
        "DeploymentDrifted",
        "DeploymentRestored",
        "RenewalStarted",
        "RenewalFailed",
        "CertificateSuperseded",
        "ExpiryApproaching",
        "CertificateExpired",
        "RevocationRequested",
        "CertificateRevoked",
        "PrivateKeyExported",
        "RevokedCertificateServed",
    ];
    let missing: Vec<_> = all.iter().filter(|t| !seen.contains(*t)).collect();
    assert!(missing.is_empty(), "never reached: {missing:?}");
    for status in ["Issued", "Revoked", "Expired", "Cancelled", "Failed"] {
        assert!(
            statuses.contains(status),
            "never ended {status}: {statuses:?}"
        );
    }
}
