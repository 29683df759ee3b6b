//! The issuer: advances one certificate as far as it can, from the application to the
//! signed certificate, one recorded step at a time. Every step is decided from the
//! certificate's current events (load → fold → decide → append), so running it twice —
//! a redelivered event, two replicas, a timer and an event at once — changes nothing
//! the second time.
//!
//! Steps, in order:
//! 1. generate the key pair when the application asks for it (private key to the key
//!    store under `cert-<certificate id>`, never into an event, log line or error;
//!    `KeyGenerated` records the key id and the SPKI SHA-256);
//! 2. start validation for the ordered method: APPROVAL waits for an operator; NONE
//!    passes at once if the issuer allows it (otherwise the order fails with a reason);
//!    HTTP-01 issues one challenge per name; DNS-01 is not offered yet (fails with a reason);
//! 3. HTTP-01: fetch each pending challenge; a failure is recorded with the time of the
//!    next attempt (exponential backoff) until the attempts run out, then the order fails;
//! 4. on `ValidationPassed`: prepare the certificate, record `IssuanceIntended` (serial
//!    and TBS hash) FIRST, only then release it and record `CertificateIssued`;
//!    With validation NONE (when the issuer allows it) steps 1, 2 and the intent of 4
//!    are taken at once: the key is generated and stored and the certificate prepared
//!    first, then `KeyGenerated`, `ValidationStarted`, `ValidationPassed` and
//!    `IssuanceIntended` are recorded in one append (the same events, in the same order,
//!    as the steps one by one), and `CertificateIssued` in a second one;
//! 5. a certificate found in Issuing whose intent is older than `stale_intent_after`
//!    (the process died between intent and record) has its intent abandoned
//!    (`IssuanceFailed` with a retry time; the serial stays known for revocation) and is
//!    issued again with a fresh serial.
//!
//! A certificate of another issuer id is left alone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use certledger_ca::{
    Authority, IssueError, IssueRequest, KeyStore, KeyStoreError, SubjectFields, SubjectPublicKey,
    generate_key,
};
use certledger_domain::certificate::{
    CertificateCommand, CertificateState, GeneratedKey, IntendIssuance, KeySource,
    RecordDomainValidated, RecordIssuanceFailed, RecordIssued, RecordKeyGenerated,
    RecordValidationFailed, StartValidation, Status, decide_all, evolve,
};
use certledger_domain::time::{from_timestamp, to_timestamp};
use certledger_domain::{DomainError, ErrorKind};
use certledger_proto::common::v1::{Failure, FailureCode, KeyAlgorithm, Subject, ValidationMethod};
use certledger_proto::events::v1::Challenge;
use certledger_runtime::{
    CallContext, CertificateRepository, Expect, RepositoryError, SharedClock, csr::inspect_csr_pem,
};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::http01::{Http01Checker, Http01Settings, Outcome};

/// When to look at a certificate again (`None`: only when a new event arrives).
pub type Wake = Option<DateTime<Utc>>;

/// Retry schedule of a step that fails for a while (HTTP-01 before the site is ready).
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Delay after the first failure.
    pub first_delay: Duration,
    /// Longest delay.
    pub max_delay: Duration,
    /// Attempts in all; the last failure closes the order.
    pub max_attempts: u32,
}

impl RetryPolicy {
    /// The delay after failed attempt `attempt` (1-based): doubling from `first_delay`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.first_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            first_delay: Duration::from_secs(5),
            max_delay: Duration::from_secs(300),
            max_attempts: 10,
        }
    }
}

/// The issuer's behaviour.
#[derive(Debug, Clone)]
pub struct IssuerSettings {
    /// The issuer id this service serves (orders name it in `spec.issuer`).
    pub issuer_id: String,
    /// Whether orders with validation method NONE are issued.
    pub allow_no_validation: bool,
    /// HTTP-01 fetching.
    pub http01: Http01Settings,
    /// HTTP-01 retries.
    pub validation_retry: RetryPolicy,
    /// After an abandoned intent, how long before signing again.
    pub reissue_delay: Duration,
    /// How old an intent must be before it counts as abandoned by a crashed signer.
    pub stale_intent_after: Duration,
    /// The actor recorded in event metadata.
    pub actor: String,
    /// The time validation and signing act on (certificates are valid from it).
    pub clock: SharedClock,
}

impl Default for IssuerSettings {
    fn default() -> Self {
        Self {
            issuer_id: "builtin".into(),
            allow_no_validation: false,
            http01: Http01Settings::default(),
            validation_retry: RetryPolicy::default(),
            reissue_delay: Duration::from_secs(1),
            stale_intent_after: Duration::from_secs(30),
            actor: "issuance".into(),
            clock: certledger_runtime::clock::system(),
        }
    }
}

/// Why advancing stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AdvanceError {
    /// Try again later (database, key store or signer trouble).
    #[error("transient: {0}")]
    Transient(String),
    /// Retrying will not help (corrupt data, a bug).
    #[error("permanent: {0}")]
    Permanent(String),
}

enum StepError {
    /// The decider refused our command: the certificate moved on; stop.
    Refused(DomainError),
    Failed(AdvanceError),
}

impl From<RepositoryError> for StepError {
    fn from(e: RepositoryError) -> Self {
        match e {
            RepositoryError::Domain(d) => StepError::Refused(d),
            e if e.is_transient() => StepError::Failed(AdvanceError::Transient(e.to_string())),
            e => StepError::Failed(AdvanceError::Permanent(e.to_string())),
        }
    }
}

fn transient(e: impl std::fmt::Display) -> StepError {
    StepError::Failed(AdvanceError::Transient(e.to_string()))
}

fn permanent(e: impl std::fmt::Display) -> StepError {
    StepError::Failed(AdvanceError::Permanent(e.to_string()))
}

#[derive(Debug)]
enum Step {
    Idle,
    WaitUntil(DateTime<Utc>),
    Fail(Failure),
    GenerateKey(KeyAlgorithm),
    /// Validation NONE, allowed: (generate the key,) validate and record the intent in
    /// one append.
    IssueAtOnce(Option<KeyAlgorithm>),
    StartValidation(Vec<Challenge>),
    CheckHttp01,
    Issue,
    AbandonIntent {
        serial: String,
    },
}

/// Upper bound of steps in one `advance` (a certificate needs at most about six).
const MAX_STEPS: usize = 16;

/// What preparing a certificate came to.
enum Prepared {
    /// Signed in memory, not released: record the intent, then release it.
    Ready(Box<certledger_ca::PendingCertificate>, IntendIssuance),
    /// Record this instead (the order fails with a reason).
    Fail(Box<CertificateCommand>),
    /// Nothing to sign yet.
    Nothing,
}

/// What obtaining the generated key came to.
enum KeyStep {
    /// Stored; record this. The key's public half comes along, so that signing right
    /// after does not read the key back from the store.
    Generated(RecordKeyGenerated, SubjectPublicKey),
    /// Record this instead (the order fails with a reason).
    Failed(Box<CertificateCommand>),
}

/// Advances certificates. Shared by the event handler, the timers and the gRPC service.
pub struct Issuer {
    repo: CertificateRepository,
    authority: Arc<Authority>,
    keys: Arc<dyn KeyStore>,
    settings: IssuerSettings,
    http01: Http01Checker,
    locks: Locks,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The key store id of a certificate's generated key.
pub fn key_id_for(certificate_id: &str) -> String {
    format!("cert-{certificate_id}")
}

fn failure(code: FailureCode, reason: impl Into<String>) -> Failure {
    Failure {
        code: code as i32,
        reason: reason.into(),
        attempt: 1,
        next_retry_at: None,
    }
}

fn chrono_of(t: time::OffsetDateTime) -> DateTime<Utc> {
    DateTime::from_timestamp(t.unix_timestamp(), t.nanosecond()).unwrap_or(DateTime::UNIX_EPOCH)
}

fn ca_algorithm(algorithm: KeyAlgorithm) -> Option<certledger_ca::KeyAlgorithm> {
    use certledger_ca::KeyAlgorithm as Ca;
    Some(match algorithm {
        KeyAlgorithm::EcdsaP256 => Ca::EcdsaP256,
        KeyAlgorithm::EcdsaP384 => Ca::EcdsaP384,
        KeyAlgorithm::Rsa2048 => Ca::Rsa2048,
        KeyAlgorithm::Rsa3072 => Ca::Rsa3072,
        KeyAlgorithm::Rsa4096 => Ca::Rsa4096,
        KeyAlgorithm::Ed25519 => Ca::Ed25519,
        KeyAlgorithm::Unspecified => return None,
    })
}

fn subject_fields(subject: &Subject) -> SubjectFields {
    let some = |s: &str| {
        let t = s.trim();
        (!t.is_empty()).then(|| t.to_owned())
    };
    SubjectFields {
        common_name: some(&subject.common_name),
        organization: some(&subject.organization),
        organizational_unit: some(&subject.organizational_unit),
        country: some(&subject.country),
        state_or_province: some(&subject.state),
        locality: some(&subject.locality),
    }
}

fn retry_at(f: Option<&Failure>) -> Option<DateTime<Utc>> {
    f.and_then(|f| f.next_retry_at.as_ref())
        .and_then(from_timestamp)
}

fn is_validation_failure(f: &Failure) -> bool {
    f.code == FailureCode::ValidationUnreachable as i32
        || f.code == FailureCode::ValidationMismatch as i32
}

fn random_token() -> Result<String, StepError> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| transient("the random number generator failed"))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

impl Issuer {
    /// An issuer signing with `authority`, keeping generated keys in `keys`.
    pub fn new(
        repo: CertificateRepository,
        authority: Arc<Authority>,
        keys: Arc<dyn KeyStore>,
        settings: IssuerSettings,
    ) -> Self {
        let http01 = Http01Checker::new(settings.http01.clone());
        Self {
            repo,
            authority,
            keys,
            settings,
            http01,
            locks: Locks::default(),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &IssuerSettings {
        &self.settings
    }

    /// Advances a certificate as far as it can now, from its events as they are in the
    /// log. Returns when to look again, if a step waits for time rather than for an event.
    pub async fn advance(
        &self,
        certificate_id: &str,
        ctx: &CallContext,
    ) -> Result<Wake, AdvanceError> {
        self.advance_since(certificate_id, ctx, None).await
    }

    /// Like [`Issuer::advance`], for the event at stream version `seen` (`None`: read the
    /// log): the certificate is taken from the repository's cache without a query when
    /// the cache holds it at that version or newer. Deciding on a fold that is older than
    /// the log is safe: the append then conflicts and the step is decided again.
    pub async fn advance_since(
        &self,
        certificate_id: &str,
        ctx: &CallContext,
        seen: Option<u64>,
    ) -> Result<Wake, AdvanceError> {
        let _guard = self.locks.lock(certificate_id).await;
        let mut seen = seen;
        for _ in 0..MAX_STEPS {
            let loaded = match seen {
                Some(version) => self.repo.load_since(certificate_id, None, version).await,
                None => self.repo.load(certificate_id, None).await,
            };
            let state = match loaded {
                Ok(loaded) => loaded.state,
                Err(RepositoryError::Domain(_)) => return Ok(None),
                Err(e) if e.is_transient() => return Err(AdvanceError::Transient(e.to_string())),
                Err(e) => return Err(AdvanceError::Permanent(e.to_string())),
            };
            // A step that records something leaves the fold with it in the cache; one
            // that records nothing makes the next round read the log.
            seen = Some(state.version + 1);
            let now = self.settings.clock.now();
            let intended_at = match state.status {
                Status::Issuing => self.intended_at(certificate_id).await?,
                _ => None,
            };
            let step = self.next_step(&state, intended_at, now);
            tracing::debug!(certificate_id, status = %state.status, ?step, "next step");
            let result = match step {
                Step::Idle => return Ok(None),
                Step::WaitUntil(at) => return Ok(Some(at)),
                Step::Fail(f) => {
                    tracing::warn!(certificate_id, reason = %f.reason, "issuance failed");
                    self.record(
                        certificate_id,
                        ctx,
                        RecordIssuanceFailed { failure: f }.into(),
                    )
                    .await
                }
                Step::GenerateKey(algorithm) => {
                    self.generate_key(certificate_id, ctx, algorithm).await
                }
                Step::IssueAtOnce(generate) => {
                    self.issue_at_once(certificate_id, ctx, &state, generate)
                        .await
                }
                Step::StartValidation(challenges) => {
                    self.record(certificate_id, ctx, StartValidation { challenges }.into())
                        .await
                }
                Step::CheckHttp01 => {
                    match self.check_http01(certificate_id, ctx, &state, now).await {
                        Ok(Some(wake)) => return Ok(wake),
                        Ok(None) => Ok(()),
                        Err(e) => Err(e),
                    }
                }
                Step::Issue => self.issue(certificate_id, ctx, &state).await,
                Step::AbandonIntent { serial } => {
                    let attempt = state
                        .abandoned_intents
                        .len()
                        .saturating_add(1)
                        .try_into()
                        .unwrap_or(u32::MAX);
                    let retry = now
                        + chrono::TimeDelta::from_std(self.settings.reissue_delay)
                            .unwrap_or_default();
                    tracing::warn!(certificate_id, %serial, "abandoning an interrupted issuance; signing again with a fresh serial");
                    self.record(
                        certificate_id,
                        ctx,
                        RecordIssuanceFailed {
                            failure: Failure {
                                code: FailureCode::CaUnavailable as i32,
                                reason: format!(
                                    "signing serial {serial} was interrupted before the certificate was recorded; that serial is abandoned (it stays known for revocation) and the certificate is signed again with a fresh serial"
                                ),
                                attempt,
                                next_retry_at: Some(to_timestamp(retry)),
                            },
                        }
                        .into(),
                    )
                    .await
                }
            };
            match result {
                Ok(()) => {}
                Err(StepError::Refused(e)) => {
                    tracing::warn!(certificate_id, error = %e, "the certificate moved on; step not recorded");
                    return Ok(None);
                }
                Err(StepError::Failed(e)) => return Err(e),
            }
        }
        Ok(None)
    }

    /// When the certificate's last issuance intent was recorded.
    async fn intended_at(
        &self,
        certificate_id: &str,
    ) -> Result<Option<DateTime<Utc>>, AdvanceError> {
        match self.repo.read(certificate_id).await {
            Ok(events) => Ok(events
                .iter()
                .rev()
                .find(|e| e.recorded.event_type == "IssuanceIntended")
                .map(|e| e.recorded.recorded_at)),
            Err(e) if e.is_transient() => Err(AdvanceError::Transient(e.to_string())),
            Err(e) => Err(AdvanceError::Permanent(e.to_string())),
        }
    }

    /// Whether validation passes the moment it starts (method NONE, allowed) and nothing
    /// makes the certificate wait: then the steps up to the intent are taken at once.
    fn passes_at_once(&self, state: &CertificateState, now: DateTime<Utc>) -> bool {
        state.status == Status::Applied
            && state.validation_method() == ValidationMethod::None
            && self.settings.allow_no_validation
            && retry_at(state.last_failure.as_ref()).is_none_or(|at| at <= now)
    }

    fn next_step(
        &self,
        state: &CertificateState,
        intended_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Step {
        if !state.exists() || state.spec.issuer != self.settings.issuer_id {
            return Step::Idle;
        }
        let Some(app) = &state.application else {
            return Step::Idle;
        };
        let signing_ahead = matches!(
            state.status,
            Status::Applied | Status::Validating | Status::Validated
        );
        if let KeySource::Generate { algorithm } = app.key_source
            && state.key.is_none()
            && signing_ahead
        {
            if self.passes_at_once(state, now) {
                return Step::IssueAtOnce(Some(algorithm));
            }
            return Step::GenerateKey(algorithm);
        }
        match state.status {
            Status::Applied if self.passes_at_once(state, now) => Step::IssueAtOnce(None),
            Status::Applied => self.start_validation(state),
            Status::Validating => match state.validation_method() {
                ValidationMethod::Http01 => Step::CheckHttp01,
                _ => Step::Idle,
            },
            Status::Validated => match retry_at(state.last_failure.as_ref()) {
                Some(at) if at > now => Step::WaitUntil(at),
                _ => Step::Issue,
            },
            Status::Issuing => {
                let intended_at = intended_at.unwrap_or(now);
                let stale_at = intended_at
                    + chrono::TimeDelta::from_std(self.settings.stale_intent_after)
                        .unwrap_or_default();
                if now >= stale_at {
                    Step::AbandonIntent {
                        serial: state
                            .intent
                            .as_ref()
                            .map(|i| i.serial.clone())
                            .unwrap_or_default(),
                    }
                } else {
                    Step::WaitUntil(stale_at)
                }
            }
            _ => Step::Idle,
        }
    }

    fn start_validation(&self, state: &CertificateState) -> Step {
        let issuer = &self.settings.issuer_id;
        match state.validation_method() {
            ValidationMethod::Approval => Step::StartValidation(vec![]),
            ValidationMethod::None if self.settings.allow_no_validation => {
                Step::StartValidation(vec![])
            }
            ValidationMethod::None => Step::Fail(failure(
                FailureCode::PolicyViolation,
                format!(
                    "issuer {issuer:?} does not allow validation method NONE; order again with APPROVAL or HTTP_01 (or have the operator allow NONE on this issuer)"
                ),
            )),
            ValidationMethod::Http01 => {
                let thumbprint = URL_SAFE_NO_PAD.encode(Sha256::digest(format!(
                    "certledger-account:{}",
                    state.tenant
                )));
                let mut challenges = Vec::new();
                for name in state.names() {
                    let token = match random_token() {
                        Ok(t) => t,
                        Err(_) => {
                            return Step::Fail(failure(
                                FailureCode::Internal,
                                "no random challenge token could be drawn",
                            ));
                        }
                    };
                    challenges.push(Challenge {
                        domain: name.to_owned(),
                        method: ValidationMethod::Http01 as i32,
                        key_authorization: format!("{token}.{thumbprint}"),
                        token,
                    });
                }
                Step::StartValidation(challenges)
            }
            ValidationMethod::Dns01 => Step::Fail(failure(
                FailureCode::PolicyViolation,
                format!(
                    "issuer {issuer:?} does not offer DNS-01 validation yet; order again with HTTP_01 or APPROVAL"
                ),
            )),
            ValidationMethod::Unspecified => Step::Fail(failure(
                FailureCode::PolicyViolation,
                "the order names no validation method",
            )),
        }
    }

    async fn record(
        &self,
        certificate_id: &str,
        ctx: &CallContext,
        command: CertificateCommand,
    ) -> Result<(), StepError> {
        self.record_all(certificate_id, ctx, vec![command]).await
    }

    async fn generate_key(
        &self,
        certificate_id: &str,
        ctx: &CallContext,
        algorithm: KeyAlgorithm,
    ) -> Result<(), StepError> {
        let command = match self.obtain_key(certificate_id, algorithm).await? {
            KeyStep::Generated(generated, _) => generated.into(),
            KeyStep::Failed(command) => *command,
        };
        self.record(certificate_id, ctx, command).await
    }

    /// Generates the certificate's key pair and stores it (or finds the one an earlier
    /// attempt stored); what to record.
    async fn obtain_key(
        &self,
        certificate_id: &str,
        algorithm: KeyAlgorithm,
    ) -> Result<KeyStep, StepError> {
        let Some(ca_alg) = ca_algorithm(algorithm) else {
            return Ok(KeyStep::Failed(Box::new(
                RecordIssuanceFailed {
                    failure: failure(
                        FailureCode::KeyGeneration,
                        "the application names no key algorithm to generate",
                    ),
                }
                .into(),
            )));
        };
        let key_id = key_id_for(certificate_id);
        let keys = self.keys.clone();
        let id = key_id.clone();
        // A key stored by an attempt that died before recording it is reused: the store
        // refuses the new one, and the stored one is read. (Reading first would cost
        // every key a read for the rare retry.)
        let generated =
            tokio::task::spawn_blocking(move || -> Result<SubjectPublicKey, KeyOutcome> {
                let key = generate_key(ca_alg).map_err(|e| KeyOutcome::Failed(e.to_string()))?;
                match keys.put(&id, &key.private_key) {
                    Ok(()) => Ok(key.public_key),
                    Err(KeyStoreError::AlreadyExists { .. }) => {
                        let existing = keys
                            .get(&id)
                            .map_err(|e| KeyOutcome::Transient(e.to_string()))?;
                        public_of(&existing, ca_alg)
                    }
                    Err(e) => Err(KeyOutcome::Transient(e.to_string())),
                }
            })
            .await
            .map_err(|e| permanent(format!("key generation task: {e}")))?;
        let public_key = match generated {
            Ok(public_key) => public_key,
            Err(KeyOutcome::Transient(why)) => return Err(transient(format!("key store: {why}"))),
            Err(KeyOutcome::Failed(why)) => {
                return Ok(KeyStep::Failed(Box::new(
                    RecordIssuanceFailed {
                        failure: failure(
                            FailureCode::KeyGeneration,
                            format!("generating the {} key pair failed: {why}", ca_alg),
                        ),
                    }
                    .into(),
                )));
            }
        };
        tracing::info!(certificate_id, %key_id, algorithm = %ca_alg, "key pair generated and stored");
        Ok(KeyStep::Generated(
            RecordKeyGenerated {
                key_id,
                algorithm,
                public_key_sha256: public_key.spki_sha256_hex(),
            },
            public_key,
        ))
    }

    /// Validation NONE: generates the key (`generate`), starts validation (which passes at
    /// once) and prepares the certificate, then records all of it with the intent in one
    /// append, and releases the certificate as [`Issuer::issue`] does. What cannot be
    /// taken at once (a refusal, a failure to record) is recorded on its own, and the
    /// next round goes on one step at a time.
    async fn issue_at_once(
        &self,
        certificate_id: &str,
        ctx: &CallContext,
        state: &CertificateState,
        generate: Option<KeyAlgorithm>,
    ) -> Result<(), StepError> {
        let mut commands: Vec<CertificateCommand> = Vec::with_capacity(3);
        let mut generated_key = None;
        if let Some(algorithm) = generate {
            match self.obtain_key(certificate_id, algorithm).await? {
                KeyStep::Generated(generated, public_key) => {
                    commands.push(generated.into());
                    generated_key = Some(public_key);
                }
                KeyStep::Failed(command) => {
                    return self.record(certificate_id, ctx, *command).await;
                }
            }
        }
        commands.push(StartValidation { challenges: vec![] }.into());
        // The state these steps lead to: the decider and the fold, no I/O.
        let ahead = match decide_all(&commands, state) {
            Ok(events) => events.iter().fold(state.clone(), evolve),
            Err(_) => return self.record_all(certificate_id, ctx, commands).await,
        };
        if ahead.status != Status::Validated {
            return self.record_all(certificate_id, ctx, commands).await;
        }
        let (pending, intend) = match self.prepare(certificate_id, &ahead, generated_key).await? {
            Prepared::Ready(pending, intend) => (pending, intend),
            Prepared::Fail(command) => {
                commands.push(*command);
                return self.record_all(certificate_id, ctx, commands).await;
            }
            Prepared::Nothing => return self.record_all(certificate_id, ctx, commands).await,
        };
        self.intend_and_release(certificate_id, ctx, commands, *pending, intend)
            .await
    }

    /// Records `before` and the intent in one append, then releases the certificate and
    /// records it. When the append is refused: with steps before the intent, those alone
    /// are recorded (the next round issues, or records why not, on its own); without,
    /// an intent that does not fit the order fails it.
    async fn intend_and_release(
        &self,
        certificate_id: &str,
        ctx: &CallContext,
        before: Vec<CertificateCommand>,
        pending: certledger_ca::PendingCertificate,
        intend: IntendIssuance,
    ) -> Result<(), StepError> {
        let mut commands = before.clone();
        commands.push(intend.clone().into());
        // 1. The intent is durable before anything signed leaves the CA.
        match self
            .repo
            .execute_all(certificate_id, ctx, Expect::Any, commands)
            .await
        {
            Ok(executed) if executed.changed() => {
                tracing::debug!(
                    certificate_id,
                    events = ?executed.events.iter().map(certledger_proto::codec::EventCodec::event_type).collect::<Vec<_>>(),
                    "recorded up to the intent"
                );
            }
            Ok(_) => return Ok(()),
            Err(RepositoryError::Domain(e)) if !before.is_empty() => {
                tracing::debug!(certificate_id, error = %e, "steps not recorded at once; one at a time");
                return self.record_all(certificate_id, ctx, before).await;
            }
            Err(RepositoryError::Domain(e)) if e.kind() == ErrorKind::InvalidArgument => {
                let command = RecordIssuanceFailed {
                    failure: failure(
                        FailureCode::PolicyViolation,
                        format!("the prepared certificate does not fit the order: {e}"),
                    ),
                }
                .into();
                return self.record(certificate_id, ctx, command).await;
            }
            Err(e) => return Err(e.into()),
        }
        self.release(certificate_id, ctx, pending, intend).await
    }

    /// Records several commands in one append (see [`CertificateRepository::execute_all`]);
    /// a refusal of any records nothing.
    async fn record_all(
        &self,
        certificate_id: &str,
        ctx: &CallContext,
        commands: Vec<CertificateCommand>,
    ) -> Result<(), StepError> {
        let names: Vec<&str> = commands.iter().map(CertificateCommand::name).collect();
        let executed = self
            .repo
            .execute_all(certificate_id, ctx, Expect::Any, commands)
            .await?;
        if executed.changed() {
            tracing::info!(
                certificate_id,
                commands = ?names,
                events = ?executed.events.iter().map(certledger_proto::codec::EventCodec::event_type).collect::<Vec<_>>(),
                "recorded"
            );
        }
        Ok(())
    }

    /// Checks the pending HTTP-01 challenges. `Ok(Some(wake))` stops advancing.
    async fn check_http01(
        &self,
        certificate_id: &str,
        ctx: &CallContext,
        state: &CertificateState,
        now: DateTime<Utc>,
    ) -> Result<Option<Wake>, StepError> {
        let Some(validation) = &state.validation else {
            return Ok(Some(None));
        };
        if let Some(at) = retry_at(state.last_failure.as_ref())
            && at > now
        {
            return Ok(Some(Some(at)));
        }
        let policy = &self.settings.validation_retry;
        let attempt = state
            .last_failure
            .as_ref()
            .filter(|f| is_validation_failure(f))
            .map(|f| f.attempt)
            .unwrap_or(0)
            .saturating_add(1);
        let pending: Vec<&Challenge> = validation
            .challenges
            .iter()
            .filter(|c| !validation.validated.contains(&c.domain))
            .collect();
        for challenge in pending {
            let outcome = self
                .http01
                .check(
                    &challenge.domain,
                    &challenge.token,
                    &challenge.key_authorization,
                )
                .await;
            let (code, reason, observed) = match outcome {
                Outcome::Valid => {
                    self.record(
                        certificate_id,
                        ctx,
                        RecordDomainValidated {
                            domain: challenge.domain.clone(),
                        }
                        .into(),
                    )
                    .await?;
                    continue;
                }
                Outcome::Mismatch { reason, observed } => {
                    (FailureCode::ValidationMismatch, reason, observed)
                }
                Outcome::Unreachable { reason } => {
                    (FailureCode::ValidationUnreachable, reason, String::new())
                }
            };
            let next = (attempt < policy.max_attempts).then(|| {
                self.settings.clock.now()
                    + chrono::TimeDelta::from_std(policy.delay(attempt)).unwrap_or_default()
            });
            let reason = match next {
                Some(at) => format!(
                    "{reason} (attempt {attempt} of {}; next attempt at {})",
                    policy.max_attempts,
                    certledger_domain::time::instant(at)
                ),
                None => format!(
                    "{reason} (attempt {attempt} of {}; no attempts left: the order has failed)",
                    policy.max_attempts
                ),
            };
            self.record(
                certificate_id,
                ctx,
                RecordValidationFailed {
                    domain: challenge.domain.clone(),
                    failure: Failure {
                        code: code as i32,
                        reason: clip(&reason, 1000),
                        attempt,
                        next_retry_at: next.map(to_timestamp),
                    },
                    observed: clip(&observed, 1000),
                }
                .into(),
            )
            .await?;
            return Ok(Some(next));
        }
        Ok(None)
    }

    async fn issue(
        &self,
        certificate_id: &str,
        ctx: &CallContext,
        state: &CertificateState,
    ) -> Result<(), StepError> {
        let (pending, intend) = match self.prepare(certificate_id, state, None).await? {
            Prepared::Ready(pending, intend) => (pending, intend),
            Prepared::Fail(command) => return self.record(certificate_id, ctx, *command).await,
            Prepared::Nothing => return Ok(()),
        };
        self.intend_and_release(certificate_id, ctx, vec![], *pending, intend)
            .await
    }

    /// The public half of the generated key recorded for a certificate, read from the key
    /// store; `Err` with the reason to fail the order when it is missing or another key.
    async fn stored_public_key(
        &self,
        key: &GeneratedKey,
    ) -> Result<Result<SubjectPublicKey, String>, StepError> {
        let keys = self.keys.clone();
        let key_id = key.key_id.clone();
        let loaded = tokio::task::spawn_blocking(move || keys.get(&key_id))
            .await
            .map_err(|e| permanent(format!("key store task: {e}")))?;
        let secret = match loaded {
            Ok(secret) => secret,
            Err(KeyStoreError::NotFound { .. }) => {
                return Ok(Err(format!(
                    "the generated key {} is missing from the key store; order again",
                    key.key_id
                )));
            }
            Err(e) => return Err(transient(format!("key store: {e}"))),
        };
        let public = secret.public_key().map_err(permanent)?;
        if public.spki_sha256_hex() != key.public_key_sha256 {
            return Ok(Err(format!(
                "the key stored under {} is not the key recorded for this certificate",
                key.key_id
            )));
        }
        Ok(Ok(public))
    }

    /// Prepares (signs in memory, without releasing) the certificate of a Validated
    /// `state`: the key's public half, the names, the subject, the validity. `generated` is
    /// the public half of the key this call stored for `state` (recorded in it), if any;
    /// without it a generated key is read from the store.
    async fn prepare(
        &self,
        certificate_id: &str,
        state: &CertificateState,
        generated: Option<SubjectPublicKey>,
    ) -> Result<Prepared, StepError> {
        let fail = |code: FailureCode, reason: String| -> Prepared {
            Prepared::Fail(Box::new(
                RecordIssuanceFailed {
                    failure: failure(code, reason),
                }
                .into(),
            ))
        };
        let Some(app) = &state.application else {
            return Ok(Prepared::Nothing);
        };
        let public_key = match &app.key_source {
            KeySource::Csr { pem } => match inspect_csr_pem(pem) {
                Ok(csr) => csr.public_key,
                Err(e) => {
                    return Ok(fail(
                        FailureCode::PolicyViolation,
                        format!("the CSR does not pass the CA's checks: {e}"),
                    ));
                }
            },
            KeySource::Generate { .. } => {
                let Some(key) = &state.key else {
                    return Ok(Prepared::Nothing);
                };
                match generated {
                    Some(public) => public,
                    None => match self.stored_public_key(key).await? {
                        Ok(public) => public,
                        Err(reason) => return Ok(fail(FailureCode::Internal, reason)),
                    },
                }
            }
        };
        let mut ip_addresses = Vec::with_capacity(app.ip_addresses.len());
        for ip in &app.ip_addresses {
            match ip.parse() {
                Ok(ip) => ip_addresses.push(ip),
                Err(_) => {
                    return Ok(fail(
                        FailureCode::PolicyViolation,
                        format!("{ip:?} is not an IP address"),
                    ));
                }
            }
        }
        let request = IssueRequest {
            public_key,
            dns_names: app.domains.clone(),
            ip_addresses,
            subject: subject_fields(&app.subject),
            validity_days: (state.spec.validity_days > 0).then_some(state.spec.validity_days),
        };
        let authority = self.authority.clone();
        let now = offset_time(self.settings.clock.now());
        let prepared = tokio::task::spawn_blocking(move || authority.prepare(&request, now))
            .await
            .map_err(|e| permanent(format!("signing task: {e}")))?;
        let pending = match prepared {
            Ok(p) => p,
            Err(e @ IssueError::Request(_)) => {
                return Ok(fail(
                    FailureCode::PolicyViolation,
                    format!("the CA refused the request: {e}"),
                ));
            }
            Err(e @ IssueError::IssuerNotValid { .. }) => {
                return Ok(fail(FailureCode::CaUnavailable, e.to_string()));
            }
            Err(e @ IssueError::SelfCheck { .. }) => {
                return Ok(fail(FailureCode::Internal, e.to_string()));
            }
            Err(e) => return Err(transient(e)),
        };
        let intent = pending.intent();
        tracing::debug!(certificate_id, serial = %intent.serial.to_hex(), "certificate prepared");
        let intend = IntendIssuance {
            issuer_ca_id: self.settings.issuer_id.clone(),
            serial: intent.serial.to_hex(),
            tbs_sha256: intent.tbs_sha256.clone(),
            not_before: chrono_of(intent.not_before),
            not_after: chrono_of(intent.not_after),
        };
        Ok(Prepared::Ready(Box::new(pending), intend))
    }

    /// Releases a prepared certificate whose intent is recorded, and records it.
    async fn release(
        &self,
        certificate_id: &str,
        ctx: &CallContext,
        pending: certledger_ca::PendingCertificate,
        intend: IntendIssuance,
    ) -> Result<(), StepError> {
        let intent = pending.intent().clone();
        let IntendIssuance {
            issuer_ca_id,
            serial,
            not_before,
            not_after,
            ..
        } = intend;
        tracing::info!(certificate_id, %serial, tbs_sha256 = %intent.tbs_sha256, "issuance intent recorded");
        // 2. Only now is the certificate released.
        let issued = pending.release(&intent).map_err(permanent)?;
        let command: CertificateCommand = RecordIssued {
            issuer_ca_id,
            serial: serial.clone(),
            not_before,
            not_after,
            sha256_fingerprint: issued.sha256_fingerprint.clone(),
            certificate_pem: issued.pem.clone(),
            chain_pem: issued.chain_pem.clone(),
        }
        .into();
        // The signed certificate exists only in memory now: try hard to record it.
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match self
                .repo
                .execute(certificate_id, ctx, Expect::Any, command.clone())
                .await
            {
                Ok(_) => {
                    tracing::info!(certificate_id, %serial, fingerprint = %issued.sha256_fingerprint, "certificate issued");
                    return Ok(());
                }
                Err(e) if e.is_transient() && attempt < 6 => {
                    let delay = Duration::from_millis(200u64 << attempt);
                    tracing::warn!(certificate_id, %serial, error = %e, ?delay, "recording the issued certificate failed; retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

enum KeyOutcome {
    Transient(String),
    Failed(String),
}

fn public_of(
    key: &certledger_ca::PrivateKeyPkcs8,
    algorithm: certledger_ca::KeyAlgorithm,
) -> Result<SubjectPublicKey, KeyOutcome> {
    let public = key
        .public_key()
        .map_err(|e| KeyOutcome::Failed(e.to_string()))?;
    if public.kind().key_algorithm() != Some(algorithm) {
        return Err(KeyOutcome::Failed(format!(
            "a key of another algorithm is already stored for this certificate (expected {algorithm})"
        )));
    }
    Ok(public)
}

fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}

/// One async lock per certificate id, so that one process never runs two steps of the
/// same certificate at once (other processes are kept apart by optimistic concurrency).
#[derive(Default)]
struct Locks {
    map: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

struct LockGuard<'a> {
    locks: &'a Locks,
    id: String,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Locks {
    async fn lock(&self, id: &str) -> LockGuard<'_> {
        let mutex = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(id.to_owned()).or_default().clone()
        };
        let guard = mutex.lock_owned().await;
        LockGuard {
            locks: self,
            id: id.to_owned(),
            _guard: guard,
        }
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.locks.map.lock().unwrap_or_else(|e| e.into_inner());
        // Only the map and this guard hold it: nobody waits, forget it.
        if map.get(&self.id).is_some_and(|m| Arc::strong_count(m) <= 2) {
            map.remove(&self.id);
        }
    }
}

/// A chrono instant as the `time` crate's (the CA's time type).
fn offset_time(at: DateTime<Utc>) -> time::OffsetDateTime {
    i128::from(at.timestamp_micros())
        .checked_mul(1000)
        .and_then(|nanos| time::OffsetDateTime::from_unix_timestamp_nanos(nanos).ok())
        .unwrap_or_else(time::OffsetDateTime::now_utc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use certledger_ca::{CertificateUrls, IssuancePolicy};
    use certledger_domain::certificate::{Application, PlaceOrder};
    use certledger_proto::common::v1::{CertificateSpec, DomainSlotKind};

    use crate::ca::{CaSettings, open_ca};

    /// An issuer on a new CA and an in-memory log, with a certificate `id` ordered
    /// (validation NONE, a P-256 key to generate) and not yet advanced.
    async fn ordered(
        dir: &std::path::Path,
        id: &str,
    ) -> (
        Issuer,
        CertificateRepository,
        Arc<dyn certledger_eventlog::EventLog>,
        Arc<dyn KeyStore>,
    ) {
        let ca = open_ca(&CaSettings {
            data_dir: dir.to_path_buf(),
            policy: IssuancePolicy::default(),
            urls: CertificateUrls::default(),
            keys: certledger_ca::KeyStoreKind::Sqlite.into(),
        })
        .unwrap();
        let log = certledger_eventlog::connect("sqlite::memory:")
            .await
            .unwrap();
        let repo = CertificateRepository::new(log.clone());
        let issuer = Issuer::new(
            repo.clone(),
            ca.authority,
            ca.keys.clone(),
            IssuerSettings {
                allow_no_validation: true,
                ..IssuerSettings::default()
            },
        );
        repo.execute(
            id,
            &CallContext::system("test"),
            Expect::Any,
            PlaceOrder {
                certificate_id: id.into(),
                tenant: "acme".into(),
                spec: CertificateSpec {
                    validity_days: 30,
                    ..certledger_testkit::certificate_spec(
                        DomainSlotKind::Multi,
                        1,
                        ValidationMethod::None,
                    )
                },
                application: Some(Application {
                    domains: vec!["once.example.com".into()],
                    ip_addresses: vec![],
                    subject: Subject::default(),
                    key_source: KeySource::Generate {
                        algorithm: KeyAlgorithm::EcdsaP256,
                    },
                }),
                predecessor_id: None,
                idempotency_key: None,
            }
            .into(),
        )
        .await
        .unwrap();
        (issuer, repo, log, ca.keys)
    }

    #[tokio::test]
    async fn validation_none_records_key_validation_and_intent_in_one_append() {
        let dir = tempfile::tempdir().unwrap();
        let id = "c1";
        let (issuer, repo, log, _) = ordered(dir.path(), id).await;
        let ctx = CallContext::system("test");
        assert_eq!(issuer.advance(id, &ctx).await.unwrap(), None);
        let events = log.read_stream("certificate-c1", 0).await.unwrap();
        let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        // The events of the steps one by one, in their order.
        assert_eq!(
            types,
            [
                "CertificateOrdered",
                "ApplicationSubmitted",
                "KeyGenerated",
                "ValidationStarted",
                "ValidationPassed",
                "IssuanceIntended",
                "CertificateIssued",
            ]
        );
        // Three appends: an append's events share its commit time, and these appends
        // ran one after the other.
        let at = |i: usize| events[i].recorded_at;
        assert!((3..=5).all(|i| at(i) == at(2)), "{events:#?}");
        assert!(at(6) > at(5) && at(2) > at(1));
        let state = repo.load(id, None).await.unwrap().state;
        assert_eq!(state.status, Status::Issued);
        let (intent, issued) = (state.intent.unwrap(), state.issued.unwrap());
        assert_eq!(intent.serial, issued.serial);
        // Every event again changes nothing.
        for event in &events {
            let ctx = CallContext::reaction(event, "issuance");
            let wake = issuer
                .advance_since(id, &ctx, Some(event.stream_version))
                .await
                .unwrap();
            assert_eq!(wake, None);
        }
        assert_eq!(log.read_stream("certificate-c1", 0).await.unwrap().len(), 7);
    }

    #[tokio::test]
    async fn a_key_stored_by_an_attempt_that_died_is_the_one_certified() {
        let dir = tempfile::tempdir().unwrap();
        let id = "c2";
        let (issuer, repo, _, keys) = ordered(dir.path(), id).await;
        // An earlier attempt stored the key, then died before recording it.
        let earlier = certledger_ca::generate_key(certledger_ca::KeyAlgorithm::EcdsaP256).unwrap();
        keys.put(&key_id_for(id), &earlier.private_key).unwrap();
        let ctx = CallContext::system("test");
        assert_eq!(issuer.advance(id, &ctx).await.unwrap(), None);
        let state = repo.load(id, None).await.unwrap().state;
        assert_eq!(state.status, Status::Issued);
        assert_eq!(
            state.key.unwrap().public_key_sha256,
            earlier.public_key.spki_sha256_hex()
        );
        assert!(
            keys.get(&key_id_for(id))
                .unwrap()
                .ct_eq(&earlier.private_key)
        );
    }
}
