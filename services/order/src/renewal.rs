//! Renewal: a successor with the same specification is ordered and linked both ways in
//! one atomic append (`RenewalStarted` on the predecessor, `CertificateOrdered` naming
//! the predecessor on the successor), then taken through validation and issuance like
//! any order; when it is issued the predecessor is marked superseded, when it fails the
//! predecessor records why, with the attempt and the next retry.
//!
//! The successor's id is derived from the predecessor and the attempt number (through
//! the order idempotency key `renewal <predecessor> <attempt>`), so whoever starts the
//! same renewal — a client retrying, two scheduler replicas at once — starts one
//! successor, never two.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use certledger_domain::DomainError;
use certledger_domain::certificate::{
    Application, CertificateCommand, CertificateState, KeySource, MarkSuperseded, PlaceOrder,
    RecordRenewalFailed, RenewalPolicy, StartRenewal, Status, decide, renewal_attempt,
};
use certledger_domain::error::Rule;
use certledger_eventlog::RecordedEvent;
use certledger_eventstream::consumer::{Handler, HandlerError, lane_of};
use certledger_proto::common::v1::FailureCode;
use certledger_runtime::repository::{certificate_id_of, not_found};
use certledger_runtime::{
    CallContext, CertificateRepository, Executed, Expect, RepositoryError, SharedClock,
};

use crate::application::{CSR_FIELD, check_application};
use crate::service::certificate_id_for_key;

/// The actor of renewals the service starts or records on its own.
pub const ACTOR: &str = "order-renewal";

/// Event types of a successor that decide its renewal's outcome.
pub const OUTCOME_EVENTS: &[&str] = &[
    "CertificateIssued",
    "ValidationFailed",
    "IssuanceFailed",
    "ApplicationRejected",
    "OrderCancelled",
];

/// The renewal policies: per issuer, with a default.
#[derive(Debug, Clone)]
pub struct RenewalSettings {
    /// The policy of issuers not named in `per_issuer`.
    pub default_policy: RenewalPolicy,
    /// Policies by issuer id.
    pub per_issuer: BTreeMap<String, RenewalPolicy>,
    /// Whether a CSR-based certificate may be renewed with its old CSR (and key).
    pub reuse_csr: bool,
    /// The time renewals and expiry are decided at.
    pub clock: SharedClock,
}

impl Default for RenewalSettings {
    fn default() -> Self {
        Self {
            default_policy: RenewalPolicy::default(),
            per_issuer: BTreeMap::new(),
            reuse_csr: false,
            clock: certledger_runtime::clock::system(),
        }
    }
}

impl RenewalSettings {
    /// The policy of an issuer.
    pub fn policy(&self, issuer: &str) -> &RenewalPolicy {
        self.per_issuer.get(issuer).unwrap_or(&self.default_policy)
    }
}

/// Who starts a renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A client asked (RenewCertificate).
    Request,
    /// The scheduler: auto-renew is on and the renewal is due.
    AutoRenew,
}

/// A started (or replayed) renewal.
#[derive(Debug, Clone)]
pub struct Renewed {
    /// The predecessor after the command.
    pub predecessor: Executed,
    /// The successor after the command.
    pub successor: Executed,
}

impl Renewed {
    /// Whether this call started the renewal (false: it was already started).
    pub fn started(&self) -> bool {
        self.predecessor.changed()
    }
}

/// Starts renewals and records their outcomes. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Renewer {
    repo: CertificateRepository,
    settings: Arc<RenewalSettings>,
}

/// How many times a renewal is started again when a failure was recorded in between.
const MAX_RENEW_ATTEMPTS: u32 = 3;

impl Renewer {
    /// A renewer over `repo`.
    pub fn new(repo: CertificateRepository, settings: Arc<RenewalSettings>) -> Self {
        Self { repo, settings }
    }

    /// The settings.
    pub fn settings(&self) -> &RenewalSettings {
        &self.settings
    }

    /// The repository.
    pub fn repository(&self) -> &CertificateRepository {
        &self.repo
    }

    /// Renews `predecessor_id`: inside its issuer's renewal window, a successor with the
    /// same specification and application, or with `csr_pem` for a CSR-based one (which
    /// needs a new CSR unless reuse is configured; an auto-renewal without one orders the
    /// successor and leaves the application to the customer).
    pub async fn renew(
        &self,
        ctx: &CallContext,
        predecessor_id: &str,
        csr_pem: Option<&str>,
        trigger: Trigger,
    ) -> Result<Renewed, RepositoryError> {
        let mut tries = 0;
        loop {
            tries += 1;
            let current = self.repo.load(predecessor_id, ctx.tenant()).await?;
            let attempt = renewal_attempt(&current.state);
            let key = format!("renewal {predecessor_id} {attempt}");
            let successor_id = certificate_id_for_key(&current.state.tenant, &key);
            let stale = AtomicBool::new(false);
            let result = self
                .repo
                .execute_together(ctx, &[predecessor_id, &successor_id], |states| {
                    let predecessor = &states[0];
                    if !predecessor.exists() {
                        return Err(not_found(predecessor_id));
                    }
                    if renewal_attempt(predecessor) != attempt {
                        stale.store(true, Ordering::Relaxed);
                        return Err(DomainError::precondition(
                            Rule::RenewalInProgress,
                            "a renewal failed meanwhile; starting the next attempt",
                        ));
                    }
                    self.commands(predecessor, &successor_id, &key, csr_pem, trigger)
                })
                .await;
            match result {
                Err(RepositoryError::Domain(_))
                    if stale.load(Ordering::Relaxed) && tries < MAX_RENEW_ATTEMPTS =>
                {
                    continue;
                }
                Err(e) => return Err(e),
                Ok(mut executed) => {
                    let (Some(successor), Some(predecessor)) = (executed.pop(), executed.pop())
                    else {
                        return Err(RepositoryError::Append(
                            "a renewal appends to two certificates".to_owned(),
                        ));
                    };
                    if predecessor.changed() {
                        tracing::info!(
                            certificate_id = predecessor_id,
                            successor_id,
                            attempt,
                            ?trigger,
                            correlation_id = %ctx.correlation_id,
                            "renewal started"
                        );
                    }
                    return Ok(Renewed {
                        predecessor,
                        successor,
                    });
                }
            }
        }
    }

    fn commands(
        &self,
        predecessor: &CertificateState,
        successor_id: &str,
        key: &str,
        csr_pem: Option<&str>,
        trigger: Trigger,
    ) -> Result<Vec<CertificateCommand>, DomainError> {
        let policy = self.settings.policy(&predecessor.spec.issuer);
        let now = self.settings.clock.now();
        let attempt = renewal_attempt(predecessor);
        let (reason, by) = match trigger {
            Trigger::Request => ("requested".to_owned(), "request"),
            Trigger::AutoRenew if attempt == 1 => (
                format!(
                    "auto-renew: inside the renewal window ({})",
                    policy.window.describe()
                ),
                "auto-renew",
            ),
            Trigger::AutoRenew => (
                format!("auto-renew: attempt {attempt} after a failed renewal"),
                "auto-renew",
            ),
        };
        let start = StartRenewal {
            successor_id: successor_id.to_owned(),
            reason,
            trigger: by.to_owned(),
            window: policy.window,
            now,
        };
        // The window and lifecycle come first: a renewal refused for its timing is
        // refused before anything is said about its CSR.
        decide(&start.clone().into(), predecessor)?;
        let application = self.successor_application(predecessor, csr_pem, trigger)?;
        Ok(vec![
            start.into(),
            PlaceOrder {
                certificate_id: successor_id.to_owned(),
                tenant: predecessor.tenant.clone(),
                spec: predecessor.spec.clone(),
                application,
                predecessor_id: Some(predecessor.certificate_id.clone()),
                idempotency_key: Some(key.to_owned()),
            }
            .into(),
        ])
    }

    fn successor_application(
        &self,
        predecessor: &CertificateState,
        csr_pem: Option<&str>,
        trigger: Trigger,
    ) -> Result<Option<Application>, DomainError> {
        let Some(previous) = &predecessor.application else {
            return Ok(None);
        };
        let csr_pem = csr_pem.map(str::trim).filter(|pem| !pem.is_empty());
        match (&previous.key_source, csr_pem) {
            (KeySource::Generate { .. }, None) => Ok(Some(previous.clone())),
            (KeySource::Generate { .. }, Some(_)) => Err(DomainError::invalid(
                "csr_pem",
                "this certificate's key is generated by the CA, and so is its successor's; leave csr_pem empty",
            )),
            (KeySource::Csr { .. }, Some(pem)) => {
                let application = Application {
                    key_source: KeySource::Csr {
                        pem: pem.to_owned(),
                    },
                    ..previous.clone()
                };
                check_application(&application, &predecessor.spec).map_err(|e| {
                    match e.field() {
                        Some(CSR_FIELD) => DomainError::invalid("csr_pem", e.message().to_owned()),
                        _ => e,
                    }
                })?;
                Ok(Some(application))
            }
            (KeySource::Csr { .. }, None) if self.settings.reuse_csr => Ok(Some(previous.clone())),
            // The customer submits the new CSR to the successor (SubmitApplication).
            (KeySource::Csr { .. }, None) if trigger == Trigger::AutoRenew => Ok(None),
            (KeySource::Csr { .. }, None) => Err(DomainError::invalid(
                "csr_pem",
                "is required to renew a CSR-based certificate: a new CSR for the same names (the old key is not reused)",
            )),
        }
    }

    /// Records on the predecessor what became of the successor `successor`: superseded
    /// once it is issued; a failed renewal (with the attempt and the next retry) once it
    /// failed for good or was cancelled. Anything else, or no predecessor: nothing.
    pub async fn record_outcome(
        &self,
        ctx: &CallContext,
        successor: &CertificateState,
    ) -> Result<Option<Executed>, RepositoryError> {
        let Some(predecessor_id) = &successor.predecessor_id else {
            return Ok(None);
        };
        let successor_id = successor.certificate_id.clone();
        let (code, reason) = match successor.status {
            Status::Issued | Status::Revoked | Status::Expired => {
                let executed = self
                    .repo
                    .execute(
                        predecessor_id,
                        ctx,
                        Expect::Any,
                        MarkSuperseded { successor_id }.into(),
                    )
                    .await?;
                return Ok(Some(executed));
            }
            Status::Failed => {
                let failure = successor.last_failure.clone().unwrap_or_default();
                let code = FailureCode::try_from(failure.code).unwrap_or(FailureCode::Internal);
                (
                    code,
                    format!("successor {successor_id} failed: {}", failure.reason),
                )
            }
            Status::Cancelled => (
                FailureCode::Cancelled,
                format!("successor {successor_id} was cancelled"),
            ),
            _ => return Ok(None),
        };
        let executed = self
            .repo
            .execute_with(predecessor_id, ctx, Expect::Any, |predecessor| {
                let failure = self
                    .settings
                    .policy(&predecessor.spec.issuer)
                    .renewal_failure(predecessor, code, &reason, self.settings.clock.now());
                Ok(RecordRenewalFailed {
                    successor_id: successor_id.clone(),
                    failure,
                }
                .into())
            })
            .await?;
        if executed.changed() {
            tracing::warn!(
                certificate_id = %predecessor_id,
                successor_id = %successor.certificate_id,
                reason,
                "renewal failed"
            );
        }
        Ok(Some(executed))
    }

    /// The consumer handler that records outcomes as successors' events arrive.
    pub fn outcomes(&self) -> RenewalOutcomes {
        RenewalOutcomes {
            renewer: self.clone(),
        }
    }
}

/// Records renewal outcomes from successors' events (see [`Renewer::record_outcome`]).
pub struct RenewalOutcomes {
    renewer: Renewer,
}

impl RenewalOutcomes {
    /// The outcomes among `events`, in `lanes` side by side: a certificate's events in
    /// one lane ([`lane_of`]), in their order.
    pub async fn handle_all(
        &self,
        events: &[RecordedEvent],
        lanes: usize,
    ) -> Result<(), HandlerError> {
        let lanes = lanes.max(1);
        // Indices, not references: a closure over borrowed events is not `Send` enough.
        let mut lane_events: Vec<Vec<usize>> = vec![Vec::new(); lanes];
        for (i, event) in events.iter().enumerate() {
            if OUTCOME_EVENTS.contains(&event.event_type.as_str()) {
                lane_events[lane_of(&event.stream_id, lanes)].push(i);
            }
        }
        futures::future::try_join_all(lane_events.into_iter().filter(|l| !l.is_empty()).map(
            |lane| async move {
                for i in lane {
                    self.handle(&events[i]).await?;
                }
                Ok::<(), HandlerError>(())
            },
        ))
        .await
        .map(|_| ())
    }
}

#[async_trait]
impl Handler for RenewalOutcomes {
    async fn handle(&self, event: &RecordedEvent) -> Result<(), HandlerError> {
        if !OUTCOME_EVENTS.contains(&event.event_type.as_str()) {
            return Ok(());
        }
        let Some(id) = certificate_id_of(&event.stream_id) else {
            return Ok(());
        };
        // At least as new as the outcome event: from the cache when it holds that.
        let successor = match self
            .renewer
            .repo
            .load_since(id, None, event.stream_version)
            .await
        {
            Ok(loaded) => loaded.state,
            Err(RepositoryError::Domain(_)) => return Ok(()),
            Err(e) if e.is_transient() => return Err(HandlerError::Retry(e.to_string())),
            Err(e) => return Err(HandlerError::Poison(e.to_string())),
        };
        let ctx = CallContext::reaction(event, ACTOR);
        match self.renewer.record_outcome(&ctx, &successor).await {
            Ok(_) => Ok(()),
            // The predecessor moved on (revoked, renewed by hand meanwhile): nothing to record.
            Err(RepositoryError::Domain(e)) => {
                tracing::info!(successor_id = id, reason = %e, "renewal outcome not recorded");
                Ok(())
            }
            Err(e) if e.is_transient() => Err(HandlerError::Retry(e.to_string())),
            Err(e) => Err(HandlerError::Poison(e.to_string())),
        }
    }
}
