//! Carrying out deployments: the one place that turns a (certificate, target) pair into
//! `DeploymentRequested` → destination install → `DeploymentSucceeded` /
//! `DeploymentFailed`, used by the gRPC API, the renewal reaction and the drift probe.
//!
//! Work on one target is serialised in this process (a lock per target), so an install,
//! a removal and a probe never interleave on the same files.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use certledger_ca::KeyStore;
use certledger_domain::certificate::{
    CertificateCommand, CertificateState, Deployment, DeploymentState, FlagRevokedServed,
    RecordDeploymentDrifted, RecordDeploymentFailed, RecordDeploymentReplaced,
    RecordDeploymentRestored, RecordDeploymentSucceeded, RemoveDeployment, RequestDeployment,
};
use certledger_domain::target::{TargetState, ensure_deployable};
use certledger_domain::{DomainError, Rule};
use certledger_proto::common::v1::{Failure, FailureCode};
use certledger_proto::events::v1::target_registered::Kind;
use certledger_runtime::{CallContext, CertificateRepository, Expect, RepositoryError};

use super::index::DeploymentIndex;
use super::secrets::SecretStore;
use super::targets::{TargetRepository, target_not_found};
use crate::{
    Bundle, DeployError, Destination, FileDestination, FileTargetConfig, NginxConfig,
    NginxDestination, PrivateKeyPem, Step, VerifyOptions, WebhookConfig, WebhookDestination,
    WebhookSecret, served_fingerprint,
};

/// The service name in event metadata.
pub const ACTOR: &str = "deployment";

/// Timings of installs and probes.
#[derive(Debug, Clone)]
pub struct DeployerSettings {
    /// How long a reload may run.
    pub reload_timeout: Duration,
    /// How long after the reload the handshake must show the new certificate.
    pub verify_deadline: Duration,
    /// One drift probe handshake's timeout.
    pub probe_timeout: Duration,
    /// First delay between webhook attempts (doubling).
    pub webhook_base_delay: Duration,
    /// Longest delay between webhook attempts.
    pub webhook_max_delay: Duration,
}

impl Default for DeployerSettings {
    fn default() -> Self {
        Self {
            reload_timeout: Duration::from_secs(30),
            verify_deadline: Duration::from_secs(30),
            probe_timeout: Duration::from_secs(10),
            webhook_base_delay: Duration::from_secs(1),
            webhook_max_delay: Duration::from_secs(60),
        }
    }
}

/// What a drift probe did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeReport {
    /// Deployments probed.
    pub probed: usize,
    /// `DeploymentDrifted` recorded.
    pub drifted: usize,
    /// `DeploymentRestored` recorded.
    pub restored: usize,
}

/// See the module docs. Cheap to clone.
#[derive(Clone)]
pub struct Deployer {
    certificates: CertificateRepository,
    targets: TargetRepository,
    keys: Arc<dyn KeyStore>,
    secrets: SecretStore,
    index: DeploymentIndex,
    settings: Arc<DeployerSettings>,
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl std::fmt::Debug for Deployer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployer")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The proto form of a deployment.
pub fn deployment_proto(d: &Deployment) -> certledger_proto::order::v1::Deployment {
    certledger_proto::order::v1::Deployment {
        deployment_id: d.deployment_id.clone(),
        target_id: d.target_id.clone(),
        state: d.state.as_str().to_owned(),
    }
}

fn failure_code(step: Step) -> FailureCode {
    match step {
        Step::Write => FailureCode::DeployWrite,
        Step::Reload => FailureCode::DeployReload,
        Step::Verify => FailureCode::DeployVerify,
        Step::Webhook => FailureCode::Webhook,
    }
}

/// Clips free text for an event (the domain limits text fields).
fn clip(text: &str) -> String {
    const MAX: usize = 1000;
    if text.chars().count() <= MAX {
        text.to_owned()
    } else {
        let mut s: String = text.chars().take(MAX).collect();
        s.push('…');
        s
    }
}

fn missing_deployment(certificate_id: &str, target_id: &str) -> RepositoryError {
    RepositoryError::Append(format!(
        "deployment of {certificate_id} on {target_id} vanished after it was requested"
    ))
}

impl Deployer {
    /// A deployer.
    pub fn new(
        certificates: CertificateRepository,
        targets: TargetRepository,
        keys: Arc<dyn KeyStore>,
        secrets: SecretStore,
        index: DeploymentIndex,
        settings: DeployerSettings,
    ) -> Self {
        Self {
            certificates,
            targets,
            keys,
            secrets,
            index,
            settings: Arc::new(settings),
            locks: Arc::default(),
        }
    }

    /// The certificate repository.
    pub fn certificates(&self) -> &CertificateRepository {
        &self.certificates
    }

    /// The target repository.
    pub fn targets(&self) -> &TargetRepository {
        &self.targets
    }

    /// The read table.
    pub fn index(&self) -> &DeploymentIndex {
        &self.index
    }

    /// The secret store.
    pub fn secrets(&self) -> &SecretStore {
        &self.secrets
    }

    fn lock_for(&self, target_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        match self.locks.lock() {
            Ok(mut locks) => locks.entry(target_id.to_owned()).or_default().clone(),
            Err(_) => Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Deploys a certificate on a target (both visible to the caller): requests it,
    /// installs, records the outcome, and returns the deployment as recorded. A deployment
    /// already requested or active on that target is returned as it is (nothing is
    /// installed twice); a requested one left over (e.g. by a crash) is installed now.
    pub async fn deploy(
        &self,
        ctx: &CallContext,
        certificate_id: &str,
        target_id: &str,
        replaces: Option<String>,
        deployment_id: String,
    ) -> Result<Deployment, RepositoryError> {
        let target = self.targets.load(target_id, ctx.tenant()).await?;
        let loaded = self.certificates.load(certificate_id, ctx.tenant()).await?;
        if loaded.state.tenant != target.tenant {
            return Err(target_not_found(target_id).into());
        }
        ensure_deployable(&target)?;
        let lock = self.lock_for(target_id);
        let _guard = lock.lock().await;
        let executed = self
            .certificates
            .execute(
                certificate_id,
                ctx,
                Expect::Any,
                RequestDeployment {
                    deployment_id,
                    target_id: target_id.to_owned(),
                    replaces_certificate_id: replaces.clone(),
                    now: chrono::Utc::now(),
                }
                .into(),
            )
            .await?;
        self.index.add_deployment(certificate_id, target_id);
        let deployment = executed
            .state
            .deployment(target_id)
            .cloned()
            .ok_or_else(|| missing_deployment(certificate_id, target_id))?;
        if deployment.state != DeploymentState::Requested {
            return Ok(deployment);
        }
        let outcome = self.install(&executed.state, &target).await;
        let command: CertificateCommand = match &outcome {
            Ok(fingerprint) => RecordDeploymentSucceeded {
                deployment_id: deployment.deployment_id.clone(),
                target_id: target_id.to_owned(),
                verified_fingerprint: fingerprint.clone(),
            }
            .into(),
            Err(e) => {
                tracing::warn!(
                    certificate_id,
                    target_id,
                    deployment_id = %deployment.deployment_id,
                    step = %e.step,
                    error = %e.message,
                    "deployment failed"
                );
                RecordDeploymentFailed {
                    deployment_id: deployment.deployment_id.clone(),
                    target_id: target_id.to_owned(),
                    step: e.step.as_str().to_owned(),
                    failure: Failure {
                        code: failure_code(e.step) as i32,
                        reason: clip(&e.message),
                        attempt: 1,
                        next_retry_at: None,
                    },
                    observed: clip(e.observed.as_deref().unwrap_or_default()),
                }
                .into()
            }
        };
        let recorded = self
            .certificates
            .execute(certificate_id, ctx, Expect::Any, command)
            .await?;
        if outcome.is_ok() {
            tracing::info!(
                certificate_id,
                target_id,
                deployment_id = %deployment.deployment_id,
                "deployment verified"
            );
            self.displace_others(ctx, certificate_id, target_id, replaces.as_deref())
                .await;
        }
        recorded
            .state
            .deployment(target_id)
            .cloned()
            .ok_or_else(|| missing_deployment(certificate_id, target_id))
    }

    /// After `certificate_id` was verified on `target_id`, the certificates that were
    /// served there before are no longer: the predecessor is recorded as replaced, any
    /// other as removed.
    async fn displace_others(
        &self,
        ctx: &CallContext,
        certificate_id: &str,
        target_id: &str,
        replaces: Option<&str>,
    ) {
        for other in self.index.certificates_on(target_id) {
            if other == certificate_id {
                continue;
            }
            let state = match self.certificates.load(&other, None).await {
                Ok(l) => l.state,
                Err(error) => {
                    tracing::warn!(certificate_id = %other, target_id, %error, "cannot load a displaced certificate");
                    continue;
                }
            };
            let Some(d) = state.deployment(target_id) else {
                continue;
            };
            if !(d.state.is_serving() || d.state == DeploymentState::Drifted) {
                continue;
            }
            let replaced = if replaces == Some(other.as_str())
                || state.successor_id() == Some(certificate_id)
            {
                self.certificates
                    .execute(
                        &other,
                        ctx,
                        Expect::Any,
                        RecordDeploymentReplaced {
                            deployment_id: d.deployment_id.clone(),
                            target_id: target_id.to_owned(),
                            successor_id: certificate_id.to_owned(),
                        }
                        .into(),
                    )
                    .await
                    .is_ok()
            } else {
                false
            };
            if !replaced {
                let removed = self
                    .certificates
                    .execute(
                        &other,
                        ctx,
                        Expect::Any,
                        RemoveDeployment {
                            deployment_id: d.deployment_id.clone(),
                            target_id: target_id.to_owned(),
                        }
                        .into(),
                    )
                    .await;
                if let Err(error) = removed {
                    tracing::warn!(certificate_id = %other, target_id, %error, "cannot record the displaced deployment as removed");
                }
            }
        }
    }

    /// The bundle of an issued certificate (with its key when the key store holds it and
    /// `with_key`).
    async fn bundle(
        &self,
        state: &CertificateState,
        with_key: bool,
    ) -> Result<Bundle, DeployError> {
        let Some(issued) = &state.issued else {
            return Err(DeployError::new(
                Step::Write,
                "the certificate is not issued",
            ));
        };
        let key = match (&state.key, with_key) {
            (Some(generated), true) => {
                let keys = self.keys.clone();
                let key_id = generated.key_id.clone();
                let loaded = tokio::task::spawn_blocking(move || keys.get(&key_id))
                    .await
                    .map_err(|_| {
                        DeployError::new(Step::Write, "loading the private key panicked")
                    })?;
                match loaded {
                    Ok(pkcs8) => Some(PrivateKeyPem::new(pkcs8.expose_pkcs8_pem().as_str())),
                    Err(error) => {
                        // The error names the key id only, never key material.
                        return Err(DeployError::new(
                            Step::Write,
                            format!(
                                "the certificate's private key is not available from the key store: {error}"
                            ),
                        ));
                    }
                }
            }
            _ => None,
        };
        Bundle::new(
            state.certificate_id.clone(),
            &issued.certificate_pem,
            &issued.chain_pem,
            key,
        )
        .map_err(|e| DeployError::new(Step::Write, format!("bundle: {e}")))
    }

    fn destination(&self, target: &TargetState) -> Result<Box<dyn Destination>, DeployError> {
        let config_error =
            |e: crate::ConfigError| DeployError::new(Step::Write, format!("target settings: {e}"));
        match &target.kind {
            Some(Kind::Nginx(n)) => {
                let mut config = NginxConfig::new(
                    &n.certificate_path,
                    &n.key_path,
                    n.reload_command.clone(),
                    n.verify_address.clone(),
                );
                config.verify_server_name =
                    (!n.verify_server_name.is_empty()).then(|| n.verify_server_name.clone());
                config.reload_timeout = self.settings.reload_timeout;
                config.verify = VerifyOptions {
                    deadline: self.settings.verify_deadline,
                    ..VerifyOptions::default()
                };
                Ok(Box::new(
                    NginxDestination::new(config).map_err(config_error)?,
                ))
            }
            Some(Kind::File(f)) => {
                let mut config = FileTargetConfig::new(&f.certificate_path, &f.key_path);
                config.chain_path = (!f.chain_path.is_empty()).then(|| f.chain_path.clone().into());
                config.command = (!f.command.is_empty()).then(|| f.command.clone());
                config.command_timeout = self.settings.reload_timeout;
                Ok(Box::new(
                    FileDestination::new(config).map_err(config_error)?,
                ))
            }
            Some(Kind::Webhook(w)) => {
                let secret = self.secrets.get(&w.secret_id).map_err(|e| {
                    DeployError::new(Step::Webhook, format!("the webhook secret: {e}"))
                })?;
                let mut config =
                    WebhookConfig::new(w.url.clone(), WebhookSecret::new(secret.to_vec()));
                if w.max_attempts > 0 {
                    config.max_attempts = w.max_attempts;
                }
                config.base_delay = self.settings.webhook_base_delay;
                config.max_delay = self.settings.webhook_max_delay;
                Ok(Box::new(
                    WebhookDestination::new(config).map_err(config_error)?,
                ))
            }
            None => Err(DeployError::new(Step::Write, "the target has no settings")),
        }
    }

    fn needs_key(target: &TargetState) -> bool {
        matches!(target.kind, Some(Kind::Nginx(_) | Kind::File(_)))
    }

    /// Installs the certificate; the verified fingerprint, or what failed.
    async fn install(
        &self,
        state: &CertificateState,
        target: &TargetState,
    ) -> Result<String, DeployError> {
        let bundle = self.bundle(state, Self::needs_key(target)).await?;
        let destination = self.destination(target)?;
        let installed = destination.install(&bundle).await?;
        Ok(installed.verified_fingerprint)
    }

    /// Takes a certificate off a target and records `DeploymentRemoved`.
    pub async fn undeploy(
        &self,
        ctx: &CallContext,
        certificate_id: &str,
        target_id: &str,
    ) -> Result<Deployment, RepositoryError> {
        let target = self.targets.load(target_id, ctx.tenant()).await?;
        let loaded = self.certificates.load(certificate_id, ctx.tenant()).await?;
        let Some(d) = loaded.state.deployment(target_id).cloned() else {
            return Err(DomainError::precondition(
                Rule::UnknownDeployment,
                format!("certificate {certificate_id} has no deployment on target {target_id}"),
            )
            .into());
        };
        let lock = self.lock_for(target_id);
        let _guard = lock.lock().await;
        if matches!(
            d.state,
            DeploymentState::Active
                | DeploymentState::Drifted
                | DeploymentState::ServingRevoked
                | DeploymentState::ServingExpired
        ) && target.status == certledger_domain::target::TargetStatus::Registered
        {
            let removed = async {
                let bundle = self.bundle(&loaded.state, false).await?;
                self.destination(&target)?.remove(&bundle).await
            }
            .await;
            if let Err(e) = removed {
                return Err(DomainError::precondition(
                    Rule::DeploymentState,
                    format!(
                        "removing the certificate from target {target_id} failed at step {}: {}; the deployment is unchanged",
                        e.step, e.message
                    ),
                )
                .into());
            }
        }
        let executed = self
            .certificates
            .execute(
                certificate_id,
                ctx,
                Expect::Any,
                RemoveDeployment {
                    deployment_id: d.deployment_id.clone(),
                    target_id: target_id.to_owned(),
                }
                .into(),
            )
            .await?;
        executed
            .state
            .deployment(target_id)
            .cloned()
            .ok_or_else(|| missing_deployment(certificate_id, target_id))
    }

    /// Carries out deployments left `requested` (the process stopped between the request
    /// and the outcome): installs each again and records the outcome. Returns how many
    /// were resumed.
    pub async fn resume_requested(&self) -> usize {
        let ctx = CallContext::system(ACTOR);
        let mut resumed = 0;
        for (certificate_id, target_id) in self.index.pairs() {
            let Ok(loaded) = self.certificates.load(&certificate_id, None).await else {
                continue;
            };
            let Some(d) = loaded.state.deployment(&target_id).cloned() else {
                continue;
            };
            if d.state != DeploymentState::Requested {
                continue;
            }
            match self
                .deploy(
                    &ctx,
                    &certificate_id,
                    &target_id,
                    d.replaces_certificate_id.clone(),
                    d.deployment_id.clone(),
                )
                .await
            {
                Ok(done) => {
                    resumed += 1;
                    tracing::info!(
                        certificate_id,
                        target_id,
                        state = done.state.as_str(),
                        "interrupted deployment resumed"
                    );
                }
                Err(error) => {
                    tracing::warn!(certificate_id, target_id, %error, "interrupted deployment could not be resumed");
                }
            }
        }
        resumed
    }

    /// Probes every verified or drifted deployment on an nginx target once: records
    /// `DeploymentDrifted` when the target serves something else (or nothing), and
    /// `DeploymentRestored` when a drifted one is served again.
    pub async fn probe_all(&self) -> ProbeReport {
        let mut report = ProbeReport::default();
        let ctx = CallContext::system(ACTOR);
        for (certificate_id, target_id) in self.index.pairs() {
            match self.probe(&ctx, &certificate_id, &target_id).await {
                Ok(Some(outcome)) => {
                    report.probed += 1;
                    match outcome {
                        Probed::Drifted => report.drifted += 1,
                        Probed::Restored => report.restored += 1,
                        Probed::Unchanged => {}
                    }
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(certificate_id, target_id, %error, "drift probe failed");
                }
            }
        }
        report
    }

    async fn probe(
        &self,
        ctx: &CallContext,
        certificate_id: &str,
        target_id: &str,
    ) -> Result<Option<Probed>, RepositoryError> {
        let loaded = self.certificates.load(certificate_id, None).await?;
        let Some(d) = loaded.state.deployment(target_id) else {
            return Ok(None);
        };
        if !(d.state.is_serving() || d.state == DeploymentState::Drifted) {
            return Ok(None);
        }
        let target = self.targets.read(target_id).await?;
        if target.status != certledger_domain::target::TargetStatus::Registered {
            return Ok(None);
        }
        let Some(Kind::Nginx(n)) = &target.kind else {
            return Ok(None);
        };
        let Some(expected) = loaded
            .state
            .issued
            .as_ref()
            .map(|i| i.sha256_fingerprint.clone())
        else {
            return Ok(None);
        };
        let lock = self.lock_for(target_id);
        let _guard = lock.lock().await;
        // Read again under the lock: a deployment may have just replaced this one.
        let loaded = self.certificates.load(certificate_id, None).await?;
        let Some(d) = loaded.state.deployment(target_id).cloned() else {
            return Ok(None);
        };
        let sni = (!n.verify_server_name.is_empty()).then_some(n.verify_server_name.as_str());
        let served = served_fingerprint(&n.verify_address, sni, self.settings.probe_timeout).await;
        let (fingerprint, observed) = match served {
            Ok(fp) => (fp.clone(), format!("{} served {fp}", n.verify_address)),
            Err(e) => (String::new(), clip(&e.to_string())),
        };
        if fingerprint == expected {
            if d.state == DeploymentState::ServingRevoked && !d.revoked_served_flagged {
                self.flag_revoked_served(ctx, certificate_id, &d, observed)
                    .await?;
                return Ok(Some(Probed::Unchanged));
            }
            if d.state == DeploymentState::Drifted {
                self.certificates
                    .execute(
                        certificate_id,
                        ctx,
                        Expect::Any,
                        RecordDeploymentRestored {
                            deployment_id: d.deployment_id.clone(),
                            target_id: target_id.to_owned(),
                        }
                        .into(),
                    )
                    .await?;
                tracing::info!(certificate_id, target_id, "deployment restored");
                return Ok(Some(Probed::Restored));
            }
            return Ok(Some(Probed::Unchanged));
        }
        if d.state.is_serving() {
            self.certificates
                .execute(
                    certificate_id,
                    ctx,
                    Expect::Any,
                    RecordDeploymentDrifted {
                        deployment_id: d.deployment_id.clone(),
                        target_id: target_id.to_owned(),
                        observed_fingerprint: fingerprint,
                        observed,
                    }
                    .into(),
                )
                .await?;
            tracing::warn!(certificate_id, target_id, "deployment drifted");
            return Ok(Some(Probed::Drifted));
        }
        Ok(Some(Probed::Unchanged))
    }
}

impl Deployer {
    /// After a revocation: records `RevokedCertificateServed` for every target that still
    /// serves the certificate — checked by a TLS handshake on nginx targets; file and
    /// webhook targets still hold it until something replaces it.
    pub async fn flag_revoked(
        &self,
        ctx: &CallContext,
        certificate_id: &str,
    ) -> Result<(), RepositoryError> {
        let loaded = self.certificates.load(certificate_id, None).await?;
        for (target_id, d) in &loaded.state.deployments {
            if d.state != DeploymentState::ServingRevoked || d.revoked_served_flagged {
                continue;
            }
            let target = self.targets.read(target_id).await?;
            match &target.kind {
                Some(Kind::Nginx(_)) => {
                    self.probe(ctx, certificate_id, target_id).await?;
                }
                Some(Kind::File(_)) => {
                    let observed =
                        "file target: the revoked certificate's files are still installed";
                    self.flag_revoked_served(ctx, certificate_id, d, observed.into())
                        .await?;
                }
                Some(Kind::Webhook(_)) => {
                    let observed = "webhook target: the receiver was given this certificate and no replacement";
                    self.flag_revoked_served(ctx, certificate_id, d, observed.into())
                        .await?;
                }
                None => {}
            }
        }
        Ok(())
    }

    async fn flag_revoked_served(
        &self,
        ctx: &CallContext,
        certificate_id: &str,
        d: &Deployment,
        observed: String,
    ) -> Result<(), RepositoryError> {
        self.certificates
            .execute(
                certificate_id,
                ctx,
                Expect::Any,
                FlagRevokedServed {
                    deployment_id: d.deployment_id.clone(),
                    target_id: d.target_id.clone(),
                    observed,
                }
                .into(),
            )
            .await?;
        tracing::warn!(
            certificate_id,
            target_id = %d.target_id,
            "target still serves a revoked certificate; deploy a replacement"
        );
        Ok(())
    }
}

enum Probed {
    Drifted,
    Restored,
    Unchanged,
}
