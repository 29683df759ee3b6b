//! Access control: who is calling ([`Principal`], from a bearer API token or a TLS client
//! certificate checked by the [`Authenticator`]), what each RPC needs ([`POLICY`]), and the tower layer that refuses
//! a call before it reaches a service ([`AuthLayer`]): no or bad credentials are
//! `UNAUTHENTICATED`, a missing permission is `PERMISSION_DENIED` naming it. Health and
//! reflection stay public. A service reads the caller from the request
//! ([`CallContext`](crate::CallContext) does), so the tenant comes from the credentials,
//! and the actor recorded in every event is the credential (`token:<id>`, or `cert:<id>`
//! for a client certificate).
//!
//! Without an authenticator (the explicit `--insecure-no-auth` mode, and in-process
//! tests) every call passes as [`ANONYMOUS`](crate::context::ANONYMOUS) in the tenant of
//! the `x-certledger-tenant` header.

mod layer;
mod service;
mod settings;
mod tokens;

use std::collections::BTreeSet;

pub use certledger_domain::access::{Permission, granted, role_name};
use certledger_proto::common::v1::Role;
use tonic::Status;

pub use layer::AuthLayer;
pub use service::{TOKEN_SERVICE_NAME, TokenApi};
pub use settings::{AuthSettings, BOOTSTRAP_TOKEN_FLAG, NO_AUTH_FLAG};
pub use tokens::{
    Authenticator, BearerToken, ClientCertificateRequest, PeerCertificates, TOKEN_PREFIX,
    bootstrap_token_file,
};

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Who acts, as recorded in events: `token:<id>` or `cert:<id>`.
    pub actor: String,
    /// The tenant the caller acts within.
    pub tenant: String,
    /// Its roles.
    pub roles: BTreeSet<Role>,
}

impl Principal {
    /// Whether the roles grant `permission`.
    pub fn allows(&self, permission: Permission) -> bool {
        granted(&self.roles).contains(&permission)
    }

    /// `PERMISSION_DENIED` naming the permission unless the roles grant it.
    pub fn require(&self, permission: Permission) -> Result<(), Status> {
        if self.allows(permission) {
            return Ok(());
        }
        let roles: Vec<&str> = self.roles.iter().map(|r| role_name(*r)).collect();
        Err(Status::permission_denied(format!(
            "permission {:?} is required; {} has the roles: {}",
            permission.as_str(),
            self.actor,
            if roles.is_empty() {
                "none".to_owned()
            } else {
                roles.join(", ")
            }
        )))
    }
}

/// Method path prefixes that need no credentials.
pub const PUBLIC: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// The permission every certledger RPC needs. An RPC missing here is refused (and the
/// policy test, which walks every RPC that reflection shows, fails).
pub const POLICY: &[(&str, Permission)] = &[
    (
        "/certledger.order.v1.OrderService/PlaceOrder",
        Permission::Order,
    ),
    (
        "/certledger.order.v1.OrderService/SubmitApplication",
        Permission::Order,
    ),
    (
        "/certledger.order.v1.OrderService/CancelOrder",
        Permission::Order,
    ),
    (
        "/certledger.order.v1.OrderService/RenewCertificate",
        Permission::Renew,
    ),
    (
        "/certledger.order.v1.OrderService/GetCertificate",
        Permission::Read,
    ),
    (
        "/certledger.order.v1.OrderService/ListCertificates",
        Permission::Read,
    ),
    (
        "/certledger.order.v1.OrderService/GetHistory",
        Permission::Read,
    ),
    (
        "/certledger.order.v1.OrderService/WatchCertificate",
        Permission::Read,
    ),
    (
        "/certledger.issuance.v1.IssuanceService/GetCaChain",
        Permission::Read,
    ),
    (
        "/certledger.issuance.v1.IssuanceService/ApproveApplication",
        Permission::Approve,
    ),
    (
        "/certledger.issuance.v1.IssuanceService/RejectApplication",
        Permission::Approve,
    ),
    // Exporting the private key also needs ExportKey (checked by the service).
    (
        "/certledger.issuance.v1.IssuanceService/ExportCertificate",
        Permission::Read,
    ),
    (
        "/certledger.deployment.v1.DeploymentService/RegisterTarget",
        Permission::ManageTargets,
    ),
    (
        "/certledger.deployment.v1.DeploymentService/ListTargets",
        Permission::Read,
    ),
    (
        "/certledger.deployment.v1.DeploymentService/RemoveTarget",
        Permission::ManageTargets,
    ),
    (
        "/certledger.deployment.v1.DeploymentService/Deploy",
        Permission::Deploy,
    ),
    (
        "/certledger.deployment.v1.DeploymentService/Undeploy",
        Permission::Deploy,
    ),
    (
        "/certledger.deployment.v1.DeploymentService/ListDeployments",
        Permission::Read,
    ),
    (
        "/certledger.revocation.v1.RevocationService/RevokeCertificate",
        Permission::Revoke,
    ),
    (
        "/certledger.revocation.v1.RevocationService/GetCrl",
        Permission::Read,
    ),
    (
        "/certledger.query.v1.CertificateQueryService/ListCertificates",
        Permission::Read,
    ),
    (
        "/certledger.query.v1.CertificateQueryService/GetCertificate",
        Permission::Read,
    ),
    (
        "/certledger.query.v1.CertificateQueryService/GetHistory",
        Permission::Read,
    ),
    (
        "/certledger.query.v1.CertificateQueryService/GetCertificateAt",
        Permission::Read,
    ),
    (
        "/certledger.query.v1.CertificateQueryService/WatchChanges",
        Permission::Read,
    ),
    (
        "/certledger.auth.v1.TokenService/CreateToken",
        Permission::ManageTokens,
    ),
    (
        "/certledger.auth.v1.TokenService/ListTokens",
        Permission::ManageTokens,
    ),
    (
        "/certledger.auth.v1.TokenService/RevokeToken",
        Permission::ManageTokens,
    ),
    (
        "/certledger.auth.v1.TokenService/IssueClientCertificate",
        Permission::ManageTokens,
    ),
    ("/certledger.auth.v1.TokenService/WhoAmI", Permission::Read),
];

/// Whether a method path needs no credentials.
pub fn is_public(path: &str) -> bool {
    PUBLIC.iter().any(|prefix| path.starts_with(prefix))
}

/// The permission a method path needs, if the policy names it.
pub fn method_permission(path: &str) -> Option<Permission> {
    POLICY
        .iter()
        .find(|(method, _)| *method == path)
        .map(|(_, permission)| *permission)
}

/// The caller of a request, when the server authenticates.
pub fn principal<T>(request: &tonic::Request<T>) -> Option<&Principal> {
    request.extensions().get::<Principal>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// Every RPC in certledger's descriptors (what reflection serves) has a policy, and
    /// the policy names no RPC that does not exist.
    #[test]
    fn every_rpc_has_a_policy() {
        let set = prost_types::FileDescriptorSet::decode(certledger_proto::FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
        let mut methods = BTreeSet::new();
        for file in &set.file {
            let package = file.package();
            for service in &file.service {
                for method in &service.method {
                    methods.insert(format!("/{package}.{}/{}", service.name(), method.name()));
                }
            }
        }
        let missing: Vec<&String> = methods
            .iter()
            .filter(|m| method_permission(m).is_none())
            .collect();
        assert!(missing.is_empty(), "RPCs without a policy: {missing:?}");
        let stale: Vec<&str> = POLICY
            .iter()
            .map(|(m, _)| *m)
            .filter(|m| !methods.contains(*m))
            .collect();
        assert!(stale.is_empty(), "policies of no RPC: {stale:?}");
    }

    #[test]
    fn denials_name_the_permission() {
        let viewer = Principal {
            actor: "token:t1".into(),
            tenant: "acme".into(),
            roles: BTreeSet::from([Role::Viewer]),
        };
        assert!(viewer.require(Permission::Read).is_ok());
        let denied = viewer.require(Permission::Revoke).unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert!(
            denied.message().contains("\"revoke\""),
            "{}",
            denied.message()
        );
        assert!(is_public("/grpc.health.v1.Health/Check"));
        assert!(!is_public("/certledger.order.v1.OrderService/PlaceOrder"));
    }
}
