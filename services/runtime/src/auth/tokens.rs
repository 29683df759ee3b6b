//! API tokens: the bearer credential `clt.<tenant>.<token id>.<secret>`; the tenant's
//! token registry (stream `tokens-<tenant>`, only the secret's SHA-256 recorded), read on
//! every call so that a revoked token stops working at once on every replica. Client
//! certificates (mutual TLS) are credentials of the same registry: the presented
//! certificate names its tenant and credential id (SAN URI), and its SHA-256 must be the
//! one recorded when the identity CA signed it.

use std::path::Path;
use std::sync::Arc;

use certledger_domain::access::{
    ClientCertificateInfo, CreateToken, RecordClientCertificate, TokenCommand, TokenRecord,
    TokenRefusal, TokenRegistry, decide_token, evolve_token,
};
use certledger_domain::time::instant;
use certledger_eventlog::{AppendError, EventLog, ExpectedVersion, Metadata};
use certledger_proto::codec::EventCodec;
use certledger_proto::common::v1::Role;
use certledger_proto::events::v1::token_event::Event as TokenEvent;
use chrono::TimeDelta;
use sha2::{Digest, Sha256};
use tonic::Status;

use super::Principal;
use crate::clock::SharedClock;
use crate::repository::{DEFAULT_MAX_ATTEMPTS, RepositoryError, encode_events};
use crate::tls::{ClientSubject, IdentityCa, ServerTls, SignedClientCertificate, peer_certificate};

/// A presented TLS client certificate chain (leaf first), as tonic hands it over.
pub type PeerCertificates = [rustls::pki_types::CertificateDer<'static>];

/// The first part of every token.
pub const TOKEN_PREFIX: &str = "clt";

/// The stream of a tenant's tokens.
fn stream(tenant: &str) -> String {
    format!("tokens-{tenant}")
}

/// A bearer token: tenant, id and secret. Its `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken {
    /// The tenant it acts within.
    pub tenant: String,
    /// Its id (recorded as the actor `token:<id>`).
    pub token_id: String,
    secret: String,
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerToken")
            .field("tenant", &self.tenant)
            .field("token_id", &self.token_id)
            .finish_non_exhaustive()
    }
}

impl BearerToken {
    /// A new token of `tenant`: a fresh id and 256 random bits of secret.
    pub fn generate(tenant: &str) -> Self {
        Self {
            tenant: tenant.to_owned(),
            token_id: uuid::Uuid::now_v7().simple().to_string(),
            secret: hex::encode(rand::random::<[u8; 32]>()),
        }
    }

    /// Parses `clt.<tenant>.<id>.<secret>`.
    pub fn parse(raw: &str) -> Option<Self> {
        let mut parts = raw.trim().split('.');
        let (prefix, tenant, token_id, secret) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let well_formed = prefix == TOKEN_PREFIX
            && parts.next().is_none()
            && crate::tenant::validate_tenant(tenant).is_ok()
            && certledger_domain::validate::id("token_id", token_id).is_ok()
            && !secret.is_empty()
            && secret.len() <= 128;
        well_formed.then(|| Self {
            tenant: tenant.to_owned(),
            token_id: token_id.to_owned(),
            secret: secret.to_owned(),
        })
    }

    /// The credential to send (and to show once).
    pub fn expose(&self) -> String {
        format!(
            "{TOKEN_PREFIX}.{}.{}.{}",
            self.tenant, self.token_id, self.secret
        )
    }

    /// Hex SHA-256 of the secret: what the registry records.
    pub fn secret_sha256(&self) -> String {
        hex::encode(Sha256::digest(self.secret.as_bytes()))
    }
}

fn unauthenticated(message: impl Into<String>) -> Status {
    Status::unauthenticated(message.into())
}

/// `UNAUTHENTICATED` for a credential (`what` `id`) the registry refuses; `unknown` is
/// the message when it does not know it.
fn refused(what: &str, id: &str, refusal: TokenRefusal, unknown: &str) -> Status {
    unauthenticated(match refusal {
        TokenRefusal::Unknown => unknown.to_owned(),
        TokenRefusal::Revoked(reason) if reason.is_empty() => format!("{what} {id} was revoked"),
        TokenRefusal::Revoked(reason) => format!("{what} {id} was revoked: {reason}"),
        TokenRefusal::Expired(at) => format!("{what} {id} expired at {}", instant(at)),
    })
}

/// Checks bearer tokens and client certificates against the tenants' registries, and
/// changes them; holds the server's TLS material and the identity CA, if any.
pub struct Authenticator {
    log: Arc<dyn EventLog>,
    clock: SharedClock,
    tls: Option<ServerTls>,
    identity_ca: Option<IdentityCa>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").finish_non_exhaustive()
    }
}

impl Authenticator {
    /// An authenticator over the registries in `log` (plaintext, no identity CA).
    pub fn new(log: Arc<dyn EventLog>, clock: SharedClock) -> Arc<Self> {
        Self::with_tls(log, clock, None, None)
    }

    /// An authenticator whose server serves `tls` (if any) and which issues client
    /// certificates with `identity_ca` (if any).
    pub fn with_tls(
        log: Arc<dyn EventLog>,
        clock: SharedClock,
        tls: Option<ServerTls>,
        identity_ca: Option<IdentityCa>,
    ) -> Arc<Self> {
        Arc::new(Self {
            log,
            clock,
            tls,
            identity_ca,
        })
    }

    /// The TLS the server serves, if any.
    pub fn server_tls(&self) -> Option<&ServerTls> {
        self.tls.as_ref()
    }

    /// The identity CA, if this server issues client certificates.
    pub fn identity_ca(&self) -> Option<&IdentityCa> {
        self.identity_ca.as_ref()
    }

    /// The caller of a request with these headers: `UNAUTHENTICATED` without a valid
    /// `authorization: Bearer <token>`.
    pub async fn authenticate(&self, headers: &http::HeaderMap) -> Result<Principal, Status> {
        self.authenticate_peer(headers, None).await
    }

    /// The caller of a request with these headers and TLS client certificate:
    /// `UNAUTHENTICATED` without a valid `authorization: Bearer <token>` or client
    /// certificate. A bearer token, when sent, is what counts.
    pub async fn authenticate_peer(
        &self,
        headers: &http::HeaderMap,
        peer: Option<&PeerCertificates>,
    ) -> Result<Principal, Status> {
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            if let Some(leaf) = peer.and_then(<[_]>::first) {
                return self.authenticate_certificate(leaf).await;
            }
            return Err(unauthenticated(
                if self.tls.as_ref().is_some_and(ServerTls::mutual) {
                    "no credentials: send `authorization: Bearer <token>` (certctl: --token-file or CERTLEDGER_TOKEN) or present a client certificate (certctl: --cert and --key)"
                } else {
                    "no credentials: send `authorization: Bearer <token>` (certctl: --token-file or CERTLEDGER_TOKEN)"
                },
            ));
        };
        let raw = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or_else(|| unauthenticated("the authorization header must be `Bearer <token>`"))?;
        let token = BearerToken::parse(raw).ok_or_else(|| {
            unauthenticated(format!(
                "the bearer token is malformed; expected {TOKEN_PREFIX}.<tenant>.<id>.<secret>"
            ))
        })?;
        let registry = self.registry(&token.tenant).await.map_err(Status::from)?;
        let record = registry
            .check(&token.token_id, &token.secret_sha256(), self.clock.now())
            .map_err(|refusal| {
                refused(
                    "token",
                    &token.token_id,
                    refusal,
                    "the token is not known, or its secret is wrong",
                )
            })?;
        Ok(Principal {
            actor: format!("token:{}", record.token_id),
            tenant: token.tenant,
            roles: record.roles.clone(),
        })
    }

    /// The caller presenting client certificate `leaf` (its chain to the client CA and its
    /// validity period were checked by the TLS handshake): the credential its SAN URI
    /// names, if the registry holds this very certificate (SHA-256), unrevoked and
    /// unexpired by this server's clock.
    async fn authenticate_certificate(&self, leaf: &[u8]) -> Result<Principal, Status> {
        let peer = peer_certificate(leaf).map_err(unauthenticated)?;
        let id = &peer.credential_id;
        crate::tenant::validate_tenant(&peer.tenant).map_err(|why| {
            unauthenticated(format!(
                "client certificate {id} names the tenant {:?}, which {why}",
                peer.tenant
            ))
        })?;
        let now = self.clock.now();
        let unknown = format!(
            "client certificate {id} is not a credential of tenant {}: unknown, or not the certificate issued under that id",
            peer.tenant
        );
        if now >= peer.not_after {
            let expired = TokenRefusal::Expired(peer.not_after);
            return Err(refused("client certificate", id, expired, &unknown));
        }
        let registry = self.registry(&peer.tenant).await.map_err(Status::from)?;
        let record = registry
            .check_certificate(id, &peer.sha256_fingerprint, now)
            .map_err(|refusal| refused("client certificate", id, refusal, &unknown))?;
        Ok(Principal {
            actor: format!("cert:{}", record.token_id),
            tenant: peer.tenant,
            roles: record.roles.clone(),
        })
    }

    /// Signs a client certificate for the key of `csr_pem` with the identity CA and
    /// records it in `tenant`'s registry: the credential, and the certificate. The
    /// certificate is signed before it is recorded; one whose record fails is never
    /// handed out, and would be refused anyway (the registry does not know it).
    pub async fn issue_client_certificate(
        &self,
        tenant: &str,
        request: ClientCertificateRequest<'_>,
        metadata: &Metadata,
    ) -> Result<(TokenRecord, SignedClientCertificate), Status> {
        let Some(ca) = &self.identity_ca else {
            return Err(Status::failed_precondition(
                "this server has no identity CA to sign client certificates: start certd with --tls, or give the service --identity-ca-cert and --identity-ca-key",
            ));
        };
        let credential_id = uuid::Uuid::now_v7().simple().to_string();
        let now = self.clock.now();
        let not_after = now + TimeDelta::days(i64::from(request.valid_days));
        let signed = ca
            .sign_client(
                request.csr_pem,
                ClientSubject {
                    tenant,
                    credential_id: &credential_id,
                    name: request.name,
                },
                now,
                not_after,
            )
            .map_err(|e| crate::status::invalid_argument("csr_pem", e.to_string()))?;
        let command = TokenCommand::RecordClientCertificate(RecordClientCertificate {
            token_id: credential_id.clone(),
            name: request.name.to_owned(),
            roles: request.roles,
            certificate: ClientCertificateInfo {
                serial: signed.serial.clone(),
                sha256_fingerprint: signed.sha256_fingerprint.clone(),
                subject: signed.subject.clone(),
            },
            now,
            not_after: signed.not_after,
        });
        let registry = self.execute(tenant, metadata, &command).await?;
        let record = registry
            .tokens
            .get(&credential_id)
            .cloned()
            .ok_or_else(|| {
                Status::internal("the issued client certificate is not in the registry")
            })?;
        Ok((record, signed))
    }

    /// The tokens of `tenant`, folded from its stream.
    pub async fn registry(&self, tenant: &str) -> Result<TokenRegistry, RepositoryError> {
        let stream_id = stream(tenant);
        let recorded = self.log.read_stream(&stream_id, 0).await?;
        let mut registry = TokenRegistry::default();
        for event in &recorded {
            let decoded =
                TokenEvent::decode(&event.event_type, event.schema_version, &event.payload)
                    .map_err(|e| RepositoryError::Corrupt {
                        stream_id: stream_id.clone(),
                        version: event.stream_version,
                        event_type: event.event_type.clone(),
                        reason: e.to_string(),
                    })?;
            registry = evolve_token(registry, &decoded);
        }
        Ok(registry)
    }

    /// Carries out a command on `tenant`'s tokens (decided again on a conflict).
    pub async fn execute(
        &self,
        tenant: &str,
        metadata: &Metadata,
        command: &TokenCommand,
    ) -> Result<TokenRegistry, RepositoryError> {
        let stream_id = stream(tenant);
        for _ in 0..DEFAULT_MAX_ATTEMPTS {
            let registry = self.registry(tenant).await?;
            let decided = decide_token(command, &registry)?;
            if decided.is_empty() {
                return Ok(registry);
            }
            let expected = match registry.version {
                0 => ExpectedVersion::NoStream,
                v => ExpectedVersion::Exact(v),
            };
            match self
                .log
                .append_one(&stream_id, expected, encode_events(&decided, metadata))
                .await
            {
                Ok(_) => return Ok(decided.iter().fold(registry, evolve_token)),
                Err(AppendError::Conflict { .. }) => continue,
                Err(AppendError::Storage(e)) => return Err(RepositoryError::Storage(e)),
                Err(e) => return Err(RepositoryError::Append(e.to_string())),
            }
        }
        Err(RepositoryError::Contended {
            certificate_id: stream_id,
            attempts: DEFAULT_MAX_ATTEMPTS,
        })
    }

    /// Creates a token in `tenant`: its record, and the credential (shown once).
    pub async fn create(
        &self,
        tenant: &str,
        name: &str,
        roles: Vec<Role>,
        valid_days: u32,
        metadata: &Metadata,
    ) -> Result<(TokenRecord, BearerToken), RepositoryError> {
        let token = BearerToken::generate(tenant);
        let now = self.clock.now();
        let command = TokenCommand::Create(CreateToken {
            token_id: token.token_id.clone(),
            name: name.to_owned(),
            roles,
            secret_sha256: token.secret_sha256(),
            now,
            expires_at: (valid_days > 0).then(|| now + TimeDelta::days(i64::from(valid_days))),
        });
        let registry = self.execute(tenant, metadata, &command).await?;
        let record = registry
            .tokens
            .get(&token.token_id)
            .cloned()
            .ok_or_else(|| {
                RepositoryError::Append("the created token is not in the registry".into())
            })?;
        Ok((record, token))
    }
}

/// What a client certificate is asked for with.
#[derive(Debug, Clone)]
pub struct ClientCertificateRequest<'a> {
    /// What it is for (its common name).
    pub name: &'a str,
    /// Its roles.
    pub roles: Vec<Role>,
    /// Days it is valid for.
    pub valid_days: u32,
    /// The caller's PKCS#10 request (PEM).
    pub csr_pem: &'a str,
}

/// Creates an all-roles token for `tenant` and writes it to `path` (mode 0600) unless
/// the file exists: the first credential of a new installation. Returns whether it was
/// created. The token is never logged.
pub async fn bootstrap_token_file(
    auth: &Authenticator,
    path: &Path,
    tenant: &str,
) -> anyhow::Result<bool> {
    use anyhow::Context;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if path.exists() {
        return Ok(false);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let metadata = Metadata {
        tenant: tenant.to_owned(),
        actor: "bootstrap".into(),
        ..Metadata::default()
    };
    let (_, token) = auth
        .create(
            tenant,
            "bootstrap (all roles)",
            vec![
                Role::Viewer,
                Role::Operator,
                Role::SecurityOfficer,
                Role::Admin,
            ],
            0,
            &metadata,
        )
        .await
        .context("creating the bootstrap token")?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing the bootstrap token to {}", path.display()))?;
    writeln!(file, "{}", token.expose())
        .with_context(|| format!("writing the bootstrap token to {}", path.display()))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_and_hide_their_secret() {
        let token = BearerToken::generate("acme");
        let raw = token.expose();
        assert!(raw.starts_with("clt.acme."));
        let parsed = BearerToken::parse(&raw).expect("parses");
        assert_eq!(parsed, token);
        assert!(!format!("{token:?}").contains(&token.secret));
        assert_eq!(token.secret_sha256().len(), 64);
        for bad in [
            "",
            "clt.acme.id",
            "xyz.acme.id.secret",
            "clt.ACME.id.secret",
            "clt.acme.i d.secret",
            "clt.acme.id.secret.extra",
        ] {
            assert!(BearerToken::parse(bad).is_none(), "{bad}");
        }
    }
}
