//! Reactions to certificate events (consumer [`CONSUMER`], `Filter::Aggregate("certificate")`):
//!
//! * `CertificateIssued` of a renewal successor (its order names a predecessor): the
//!   successor is deployed on every target where the predecessor is active or drifted,
//!   with `replaces_certificate_id`; once verified, the predecessor's deployment there is
//!   recorded `DeploymentReplaced`. The deployment id is derived from (successor, target),
//!   so a repeated event finds the deployment already there and changes nothing.
//! * `CertificateRevoked`: the domain turns every active deployment into
//!   `serving_revoked`; the reaction checks each such target (a TLS handshake on nginx
//!   targets) and records `RevokedCertificateServed` for every one still serving it, once
//!   per deployment (the drift probe records it too when it finds one later).

use async_trait::async_trait;
use certledger_domain::certificate::DeploymentState;
use certledger_eventlog::RecordedEvent;
use certledger_eventstream::consumer::{Handler, HandlerError};
use certledger_runtime::repository::certificate_id_of;
use certledger_runtime::{CallContext, RepositoryError};
use uuid::Uuid;

use super::deployer::{ACTOR, Deployer};

/// The consumer's name (durable consumer / checkpoint).
pub const CONSUMER: &str = "deployment-reactions";

/// Namespace of deployment ids derived from (successor, target).
pub const REPLACEMENT_NAMESPACE: Uuid = Uuid::from_bytes([
    0x2c, 0x8f, 0x41, 0x0a, 0x9d, 0x3b, 0x4e, 0x71, 0xa2, 0x55, 0x1e, 0x6c, 0x07, 0xd9, 0x83, 0xb4,
]);

/// The deployment id of a successor's replacing deployment on a target.
pub fn replacement_deployment_id(successor_id: &str, target_id: &str) -> String {
    Uuid::new_v5(
        &REPLACEMENT_NAMESPACE,
        format!("{successor_id}\n{target_id}").as_bytes(),
    )
    .to_string()
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct DeploymentReactions {
    deployer: Deployer,
}

impl DeploymentReactions {
    /// Reactions carried out by `deployer`.
    pub fn new(deployer: Deployer) -> Self {
        Self { deployer }
    }

    async fn on_issued(
        &self,
        certificate_id: &str,
        event: &RecordedEvent,
    ) -> Result<(), RepositoryError> {
        let successor = self
            .deployer
            .certificates()
            .load(certificate_id, None)
            .await?;
        let Some(predecessor_id) = successor.state.predecessor_id.clone() else {
            return Ok(());
        };
        let predecessor = self
            .deployer
            .certificates()
            .load(&predecessor_id, None)
            .await?;
        let ctx = CallContext::reaction(event, ACTOR);
        for (target_id, d) in &predecessor.state.deployments {
            if !(d.state.is_serving() || d.state == DeploymentState::Drifted) {
                continue;
            }
            let deployment_id = replacement_deployment_id(certificate_id, target_id);
            if let Some(existing) = successor.state.deployment(target_id)
                && existing.deployment_id == deployment_id
                && existing.state != DeploymentState::Requested
            {
                continue; // already done (the event is repeated)
            }
            match self
                .deployer
                .deploy(
                    &ctx,
                    certificate_id,
                    target_id,
                    Some(predecessor_id.clone()),
                    deployment_id,
                )
                .await
            {
                Ok(d) => tracing::info!(
                    successor_id = certificate_id,
                    predecessor_id,
                    target_id,
                    state = d.state.as_str(),
                    "renewal successor deployed in the predecessor's place"
                ),
                Err(e) if e.is_transient() => return Err(e),
                Err(error) => tracing::warn!(
                    successor_id = certificate_id,
                    predecessor_id,
                    target_id,
                    %error,
                    "the renewal successor cannot replace the predecessor on this target"
                ),
            }
        }
        Ok(())
    }

    async fn on_revoked(
        &self,
        certificate_id: &str,
        event: &RecordedEvent,
    ) -> Result<(), RepositoryError> {
        let ctx = CallContext::reaction(event, ACTOR);
        self.deployer.flag_revoked(&ctx, certificate_id).await
    }
}

#[async_trait]
impl Handler for DeploymentReactions {
    async fn handle(&self, event: &RecordedEvent) -> Result<(), HandlerError> {
        let Some(certificate_id) = certificate_id_of(&event.stream_id) else {
            return Ok(());
        };
        let result = match event.event_type.as_str() {
            "CertificateIssued" => self.on_issued(certificate_id, event).await,
            "CertificateRevoked" => self.on_revoked(certificate_id, event).await,
            _ => Ok(()),
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.is_transient() => Err(HandlerError::Retry(e.to_string())),
            Err(e) => {
                tracing::warn!(certificate_id, event_type = %event.event_type, error = %e, "reaction skipped");
                Ok(())
            }
        }
    }
}
