//! `certledger.auth.v1.TokenService`: create (the secret shown once), list and revoke the
//! API tokens of the caller's tenant, issue client certificates (mutual TLS) from CSRs,
//! and who-am-I.

use std::sync::Arc;

use certledger_domain::access::{RevokeToken, TokenCommand, TokenRecord, granted};
use certledger_proto::auth::v1 as api;
use certledger_proto::auth::v1::token_service_server::{TokenService, TokenServiceServer};
use certledger_proto::common::v1::Role;
use tonic::server::NamedService;
use tonic::{Request, Response, Status};

use super::{Authenticator, ClientCertificateRequest};
use crate::context::CallContext;
use crate::convert::timestamp;
use crate::status;
use crate::tenant::{DEFAULT_TENANT, validate_tenant};

/// The full gRPC name of the service.
pub const TOKEN_SERVICE_NAME: &str = <TokenServiceServer<TokenApi> as NamedService>::NAME;

/// Most days a token or client certificate may be valid for.
const MAX_VALID_DAYS: u32 = 3650;

/// Days a client certificate is valid for when the request says 0.
const DEFAULT_CERTIFICATE_DAYS: u32 = 365;

/// The token service over an [`Authenticator`].
#[derive(Debug, Clone)]
pub struct TokenApi {
    auth: Arc<Authenticator>,
}

impl TokenApi {
    /// The service.
    pub fn new(auth: Arc<Authenticator>) -> Self {
        Self { auth }
    }

    /// The tonic server of this service.
    pub fn into_server(self) -> TokenServiceServer<Self> {
        TokenServiceServer::new(self)
    }
}

fn token(tenant: &str, record: &TokenRecord) -> api::Token {
    api::Token {
        token_id: record.token_id.clone(),
        tenant: tenant.to_owned(),
        name: record.name.clone(),
        roles: record.roles.iter().map(|r| *r as i32).collect(),
        created_at: Some(timestamp(record.created_at)),
        expires_at: record.expires_at.map(timestamp),
        revoked: record.revoked.is_some(),
        revoked_reason: record.revoked.clone().unwrap_or_default(),
        client_certificate: record
            .client_certificate
            .as_ref()
            .map(|c| api::ClientCertificate {
                serial: c.serial.clone(),
                sha256_fingerprint: c.sha256_fingerprint.clone(),
                subject: c.subject.clone(),
            }),
    }
}

/// The roles of a request, each named (`INVALID_ARGUMENT` naming `roles[i]` otherwise).
fn roles(raw: &[i32]) -> Result<Vec<Role>, Status> {
    raw.iter()
        .enumerate()
        .map(|(i, r)| {
            Role::try_from(*r)
                .ok()
                .filter(|r| *r != Role::Unspecified)
                .ok_or_else(|| {
                    status::invalid_argument(
                        &format!("roles[{i}]"),
                        format!("{r} is not a role: viewer, operator, security-officer or admin"),
                    )
                })
        })
        .collect()
}

fn tenant(ctx: &CallContext) -> &str {
    ctx.tenant().unwrap_or(DEFAULT_TENANT)
}

/// The tenant whose tokens a request manages: the caller's, or (`requested`) another one
/// when the caller is an admin of the platform tenant.
fn target_tenant(ctx: &CallContext, requested: &str) -> Result<String, Status> {
    let caller = tenant(ctx);
    match requested.trim() {
        "" => Ok(caller.to_owned()),
        other if other == caller => Ok(caller.to_owned()),
        _ if caller != DEFAULT_TENANT => Err(Status::permission_denied(format!(
            "another tenant's tokens are managed from within it, or by an admin of the platform tenant {DEFAULT_TENANT:?}"
        ))),
        other => {
            validate_tenant(other)
                .map_err(|why| status::invalid_argument("tenant", format!("{other:?} {why}")))?;
            Ok(other.to_owned())
        }
    }
}

#[tonic::async_trait]
impl TokenService for TokenApi {
    async fn create_token(
        &self,
        request: Request<api::CreateTokenRequest>,
    ) -> Result<Response<api::CreateTokenResponse>, Status> {
        let ctx = CallContext::from_request(&request)?;
        let request = request.into_inner();
        let roles = roles(&request.roles)?;
        if request.valid_days > MAX_VALID_DAYS {
            return Err(status::invalid_argument(
                "valid_days",
                format!("at most {MAX_VALID_DAYS} days (0: no expiry)"),
            ));
        }
        let tenant = &target_tenant(&ctx, &request.tenant)?;
        let (record, secret) = self
            .auth
            .create(
                tenant,
                &request.name,
                roles,
                request.valid_days,
                &ctx.metadata(tenant),
            )
            .await?;
        tracing::info!(token_id = %record.token_id, tenant, actor = %ctx.actor, "API token created");
        Ok(Response::new(api::CreateTokenResponse {
            token: Some(token(tenant, &record)),
            secret: secret.expose(),
        }))
    }

    async fn list_tokens(
        &self,
        request: Request<api::ListTokensRequest>,
    ) -> Result<Response<api::ListTokensResponse>, Status> {
        let ctx = CallContext::from_request(&request)?;
        let tenant = &target_tenant(&ctx, &request.get_ref().tenant)?;
        let registry = self.auth.registry(tenant).await?;
        Ok(Response::new(api::ListTokensResponse {
            tokens: registry.tokens.values().map(|r| token(tenant, r)).collect(),
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<api::RevokeTokenRequest>,
    ) -> Result<Response<api::Token>, Status> {
        let ctx = CallContext::from_request(&request)?;
        let request = request.into_inner();
        let tenant = &target_tenant(&ctx, &request.tenant)?;
        let command = TokenCommand::Revoke(RevokeToken {
            token_id: request.token_id.clone(),
            reason: request.reason,
        });
        let registry = self
            .auth
            .execute(tenant, &ctx.metadata(tenant), &command)
            .await?;
        let record = registry
            .tokens
            .get(&request.token_id)
            .ok_or_else(|| Status::not_found(format!("token {} not found", request.token_id)))?;
        tracing::info!(token_id = %request.token_id, tenant, actor = %ctx.actor, "API token revoked");
        Ok(Response::new(token(tenant, record)))
    }

    async fn issue_client_certificate(
        &self,
        request: Request<api::IssueClientCertificateRequest>,
    ) -> Result<Response<api::IssueClientCertificateResponse>, Status> {
        let ctx = CallContext::from_request(&request)?;
        let request = request.into_inner();
        let roles = roles(&request.roles)?;
        let valid_days = match request.valid_days {
            0 => DEFAULT_CERTIFICATE_DAYS,
            days if days > MAX_VALID_DAYS => {
                return Err(status::invalid_argument(
                    "valid_days",
                    format!("at most {MAX_VALID_DAYS} days (0: {DEFAULT_CERTIFICATE_DAYS})"),
                ));
            }
            days => days,
        };
        if request.csr_pem.trim().is_empty() {
            return Err(status::invalid_argument(
                "csr_pem",
                "is required: a PEM PKCS#10 request for the key you generated (certctl tokens client-cert does it)",
            ));
        }
        let tenant = &target_tenant(&ctx, &request.tenant)?;
        let (record, signed) = self
            .auth
            .issue_client_certificate(
                tenant,
                ClientCertificateRequest {
                    name: &request.name,
                    roles,
                    valid_days,
                    csr_pem: &request.csr_pem,
                },
                &ctx.metadata(tenant),
            )
            .await?;
        tracing::info!(credential_id = %record.token_id, serial = %signed.serial, tenant, actor = %ctx.actor, "client certificate issued");
        Ok(Response::new(api::IssueClientCertificateResponse {
            token: Some(token(tenant, &record)),
            certificate_pem: signed.pem,
            ca_certificate_pem: self
                .auth
                .identity_ca()
                .map(|ca| ca.certificate_pem().to_owned())
                .unwrap_or_default(),
        }))
    }

    async fn who_am_i(
        &self,
        request: Request<api::WhoAmIRequest>,
    ) -> Result<Response<api::WhoAmIResponse>, Status> {
        let ctx = CallContext::from_request(&request)?;
        let roles = match super::principal(&request) {
            Some(p) => p.roles.clone(),
            None => [
                Role::Viewer,
                Role::Operator,
                Role::SecurityOfficer,
                Role::Admin,
            ]
            .into(),
        };
        Ok(Response::new(api::WhoAmIResponse {
            actor: ctx.actor.clone(),
            tenant: tenant(&ctx).to_owned(),
            roles: roles.iter().map(|r| *r as i32).collect(),
            permissions: granted(&roles)
                .iter()
                .map(|p| p.as_str().to_owned())
                .collect(),
        }))
    }
}
