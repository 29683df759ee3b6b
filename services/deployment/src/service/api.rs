//! `certledger.deployment.v1.DeploymentService`.

use certledger_domain::DomainError;
use certledger_domain::target::{RegisterTarget, RemoveTarget, TargetCommand, TargetState};
use certledger_proto::deployment::v1 as api;
use certledger_proto::deployment::v1::deployment_service_server::{
    DeploymentService as DeploymentApi, DeploymentServiceServer,
};
use certledger_proto::events::v1::target_registered::Kind;
use certledger_proto::order::v1::Deployment as DeploymentProto;
use certledger_runtime::{CallContext, status};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::deployer::{Deployer, deployment_proto};

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct DeploymentService {
    deployer: Deployer,
}

impl DeploymentService {
    /// A service over a deployer.
    pub fn new(deployer: Deployer) -> Self {
        Self { deployer }
    }

    /// The tonic server of this service.
    pub fn into_server(self) -> DeploymentServiceServer<Self> {
        DeploymentServiceServer::new(self)
    }
}

/// The id under which a webhook target's secret is stored.
pub fn webhook_secret_id(target_id: &str) -> String {
    format!("webhook-{target_id}")
}

fn target_proto(state: &TargetState) -> api::Target {
    api::Target {
        target_id: state.target_id.clone(),
        name: state.name.clone(),
        kind: state.kind.clone().map(|k| match k {
            Kind::Nginx(n) => api::target::Kind::Nginx(n),
            Kind::File(f) => api::target::Kind::File(f),
            Kind::Webhook(w) => api::target::Kind::Webhook(w),
        }),
        removed: state.status == certledger_domain::target::TargetStatus::Removed,
    }
}

fn tenant(ctx: &CallContext) -> String {
    ctx.tenant()
        .unwrap_or(certledger_runtime::tenant::DEFAULT_TENANT)
        .to_owned()
}

fn require_id(field: &str, value: &str) -> Result<(), Status> {
    certledger_domain::validate::id(field, value).map_err(|e| status::from_domain(&e))
}

#[tonic::async_trait]
impl DeploymentApi for DeploymentService {
    async fn register_target(
        &self,
        request: Request<api::RegisterTargetRequest>,
    ) -> Result<Response<api::Target>, Status> {
        let ctx = CallContext::from_request(&request)?;
        let request = request.into_inner();
        let target_id = Uuid::now_v7().to_string();
        let mut kind = request.kind.map(|k| match k {
            api::register_target_request::Kind::Nginx(n) => Kind::Nginx(n),
            api::register_target_request::Kind::File(f) => Kind::File(f),
            api::register_target_request::Kind::Webhook(w) => Kind::Webhook(w),
        });
        let mut secret_to_store = None;
        match &mut kind {
            Some(Kind::Webhook(w)) => {
                if request.webhook_secret.trim().is_empty() {
                    return Err(status::invalid_argument(
                        "webhook_secret",
                        "is required for a webhook target: deliveries are signed with it (HMAC-SHA256)",
                    ));
                }
                if request.webhook_secret.len() < 16 {
                    return Err(status::invalid_argument(
                        "webhook_secret",
                        "must be at least 16 bytes long",
                    ));
                }
                // The secret is stored by the service; the event names it only.
                w.secret_id = webhook_secret_id(&target_id);
                secret_to_store = Some((w.secret_id.clone(), request.webhook_secret.clone()));
            }
            _ if !request.webhook_secret.is_empty() => {
                return Err(status::invalid_argument(
                    "webhook_secret",
                    "is only for webhook targets",
                ));
            }
            _ => {}
        }
        let command = TargetCommand::Register(RegisterTarget {
            target_id: target_id.clone(),
            tenant: tenant(&ctx),
            name: request.name,
            kind,
        });
        // Check everything before the secret is written.
        certledger_domain::target::decide_target(&command, &TargetState::default())
            .map_err(|e| status::from_domain(&e))?;
        if let Some((id, secret)) = secret_to_store {
            let secrets = self.deployer.secrets().clone();
            tokio::task::spawn_blocking(move || secrets.put(&id, secret.as_bytes()))
                .await
                .map_err(|e| status::internal("secret store", &e))?
                .map_err(|e| status::internal("secret store", &e))?;
        }
        let (state, _) = self
            .deployer
            .targets()
            .execute(&target_id, &ctx, &command)
            .await?;
        self.deployer.index().add_target(&target_id);
        tracing::info!(target_id, correlation_id = %ctx.correlation_id, "target registered");
        Ok(Response::new(target_proto(&state)))
    }

    async fn list_targets(
        &self,
        request: Request<api::ListTargetsRequest>,
    ) -> Result<Response<api::ListTargetsResponse>, Status> {
        let ctx = CallContext::from_request(&request)?;
        let mut targets = Vec::new();
        for id in self.deployer.index().targets() {
            let state = self.deployer.targets().read(&id).await?;
            if super::targets::target_visible(&state, ctx.tenant()) {
                targets.push(target_proto(&state));
            }
        }
        Ok(Response::new(api::ListTargetsResponse { targets }))
    }

    async fn remove_target(
        &self,
        request: Request<api::RemoveTargetRequest>,
    ) -> Result<Response<api::Target>, Status> {
        let ctx = CallContext::from_request(&request)?;
        let id = request.into_inner().target_id;
        require_id("target_id", &id)?;
        self.deployer.targets().load(&id, ctx.tenant()).await?;
        let (state, _) = self
            .deployer
            .targets()
            .execute(
                &id,
                &ctx,
                &TargetCommand::Remove(RemoveTarget {
                    reason: String::new(),
                }),
            )
            .await?;
        Ok(Response::new(target_proto(&state)))
    }

    async fn deploy(
        &self,
        request: Request<api::DeployRequest>,
    ) -> Result<Response<DeploymentProto>, Status> {
        let ctx = CallContext::from_request(&request)?;
        let request = request.into_inner();
        require_id("certificate_id", &request.certificate_id)?;
        require_id("target_id", &request.target_id)?;
        let deployment = self
            .deployer
            .deploy(
                &ctx,
                &request.certificate_id,
                &request.target_id,
                None,
                Uuid::now_v7().to_string(),
            )
            .await?;
        Ok(Response::new(deployment_proto(&deployment)))
    }

    async fn undeploy(
        &self,
        request: Request<api::UndeployRequest>,
    ) -> Result<Response<DeploymentProto>, Status> {
        let ctx = CallContext::from_request(&request)?;
        let request = request.into_inner();
        require_id("certificate_id", &request.certificate_id)?;
        require_id("target_id", &request.target_id)?;
        let deployment = self
            .deployer
            .undeploy(&ctx, &request.certificate_id, &request.target_id)
            .await?;
        Ok(Response::new(deployment_proto(&deployment)))
    }

    async fn list_deployments(
        &self,
        request: Request<api::ListDeploymentsRequest>,
    ) -> Result<Response<api::ListDeploymentsResponse>, Status> {
        let ctx = CallContext::from_request(&request)?;
        let request = request.into_inner();
        let view = |certificate_id: &str, d: &certledger_domain::certificate::Deployment| {
            api::DeploymentView {
                certificate_id: certificate_id.to_owned(),
                deployment: Some(deployment_proto(d)),
            }
        };
        let mut deployments = Vec::new();
        match (
            request.certificate_id.is_empty(),
            request.target_id.is_empty(),
        ) {
            (false, true) => {
                let loaded = self
                    .deployer
                    .certificates()
                    .load(&request.certificate_id, ctx.tenant())
                    .await?;
                for d in loaded.state.deployments.values() {
                    deployments.push(view(&request.certificate_id, d));
                }
            }
            (true, false) => {
                self.deployer
                    .targets()
                    .load(&request.target_id, ctx.tenant())
                    .await?;
                for certificate_id in self.deployer.index().certificates_on(&request.target_id) {
                    let Ok(loaded) = self
                        .deployer
                        .certificates()
                        .load(&certificate_id, ctx.tenant())
                        .await
                    else {
                        continue;
                    };
                    if let Some(d) = loaded.state.deployment(&request.target_id) {
                        deployments.push(view(&certificate_id, d));
                    }
                }
            }
            _ => {
                return Err(status::from_domain(&DomainError::invalid(
                    "certificate_id",
                    "give exactly one of certificate_id and target_id",
                )));
            }
        }
        Ok(Response::new(api::ListDeploymentsResponse { deployments }))
    }
}
