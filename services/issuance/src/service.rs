//! `certledger.issuance.v1.IssuanceService`: the CA chain, operator approval and
//! rejection, and export of an issued certificate (with its generated private key only on
//! explicit request, recorded as `PrivateKeyExported`).

use std::sync::Arc;

use certledger_ca::{Authority, KeyStore, KeyStoreError};
use certledger_domain::certificate::{
    ApproveApplication, CertificateCommand, KeyExportFormat, RecordPrivateKeyExported,
    RejectApplication, decide,
};
use certledger_proto::issuance::v1 as api;
use certledger_proto::issuance::v1::issuance_service_server::{
    IssuanceService as IssuanceApi, IssuanceServiceServer,
};
use certledger_proto::order::v1::Certificate;
use certledger_runtime::auth::Permission;
use certledger_runtime::{CallContext, CertificateRepository, Expect, convert, status};
use tonic::{Request, Response, Status};

/// The issuance service.
#[derive(Clone)]
pub struct IssuanceService {
    repo: CertificateRepository,
    authority: Arc<Authority>,
    keys: Arc<dyn KeyStore>,
    issuer_id: String,
}

impl std::fmt::Debug for IssuanceService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuanceService")
            .field("issuer_id", &self.issuer_id)
            .finish_non_exhaustive()
    }
}

impl IssuanceService {
    /// A service for the CA `authority` under `issuer_id`.
    pub fn new(
        repo: CertificateRepository,
        authority: Arc<Authority>,
        keys: Arc<dyn KeyStore>,
        issuer_id: String,
    ) -> Self {
        Self {
            repo,
            authority,
            keys,
            issuer_id,
        }
    }

    /// The tonic server of this service.
    pub fn into_server(self) -> IssuanceServiceServer<Self> {
        IssuanceServiceServer::new(self)
    }

    async fn command(
        &self,
        ctx: &CallContext,
        certificate_id: &str,
        command: CertificateCommand,
    ) -> Result<Response<Certificate>, Status> {
        let executed = self
            .repo
            .execute(certificate_id, ctx, Expect::Any, command)
            .await?;
        Ok(Response::new(convert::certificate(
            &executed.state,
            executed.ordered_at,
        )))
    }
}

#[tonic::async_trait]
impl IssuanceApi for IssuanceService {
    async fn get_ca_chain(
        &self,
        request: Request<api::GetCaChainRequest>,
    ) -> Result<Response<api::GetCaChainResponse>, Status> {
        let issuer = request.into_inner().issuer;
        if !issuer.is_empty() && issuer != self.issuer_id {
            return Err(Status::not_found(format!(
                "issuer {:?} is not served here; this service serves {:?}",
                issuer.chars().take(64).collect::<String>(),
                self.issuer_id
            )));
        }
        Ok(Response::new(api::GetCaChainResponse {
            issuer: self.issuer_id.clone(),
            intermediate_pem: self.authority.intermediate().pem.clone(),
            root_pem: self.authority.root().pem.clone(),
            chain_pem: self.authority.chain_pem().to_owned(),
        }))
    }

    async fn approve_application(
        &self,
        request: Request<api::ApproveApplicationRequest>,
    ) -> Result<Response<Certificate>, Status> {
        let ctx = CallContext::from_request(&request)?;
        let request = request.into_inner();
        let command = ApproveApplication {
            approver: ctx.actor.clone(),
            comment: request.comment,
        };
        let response = self
            .command(&ctx, &request.certificate_id, command.into())
            .await?;
        tracing::info!(certificate_id = %request.certificate_id, approver = %ctx.actor, "application approved");
        Ok(response)
    }

    async fn reject_application(
        &self,
        request: Request<api::RejectApplicationRequest>,
    ) -> Result<Response<Certificate>, Status> {
        let ctx = CallContext::from_request(&request)?;
        let request = request.into_inner();
        let command = RejectApplication {
            approver: ctx.actor.clone(),
            reason: request.reason,
        };
        let response = self
            .command(&ctx, &request.certificate_id, command.into())
            .await?;
        tracing::info!(certificate_id = %request.certificate_id, approver = %ctx.actor, "application rejected");
        Ok(response)
    }

    async fn export_certificate(
        &self,
        request: Request<api::ExportCertificateRequest>,
    ) -> Result<Response<api::ExportCertificateResponse>, Status> {
        let ctx = CallContext::from_request(&request)?;
        let request = request.into_inner();
        let id = request.certificate_id;
        let loaded = self.repo.load(&id, ctx.tenant()).await?;
        if request.include_private_key {
            ctx.require(Permission::ExportKey)?;
        }
        let state = loaded.state;
        let Some(issued) = &state.issued else {
            return Err(Status::failed_precondition(format!(
                "certificate {id} is {}; it can be exported once it is issued",
                state.status
            )));
        };
        let mut response = api::ExportCertificateResponse {
            certificate_pem: issued.certificate_pem.clone(),
            chain_pem: issued.chain_pem.clone(),
            ..Default::default()
        };
        if !request.include_private_key {
            return Ok(Response::new(response));
        }
        let format = match api::KeyFormat::try_from(request.key_format) {
            Ok(api::KeyFormat::Unspecified | api::KeyFormat::Pem) => KeyExportFormat::Pem,
            Ok(api::KeyFormat::Pkcs12) => {
                if request.password.chars().count() < MIN_PKCS12_PASSWORD {
                    return Err(status::invalid_argument(
                        "password",
                        format!(
                            "a PKCS#12 export needs a password of at least {MIN_PKCS12_PASSWORD} characters"
                        ),
                    ));
                }
                KeyExportFormat::Pkcs12
            }
            Err(_) => {
                return Err(status::invalid_argument(
                    "key_format",
                    format!("{} is not a known key format", request.key_format),
                ));
            }
        };
        let command: CertificateCommand = RecordPrivateKeyExported { format }.into();
        // The decider says why there is no key to export (a CSR, no key yet) before the
        // key store is touched.
        decide(&command, &state).map_err(|e| status::from_domain(&e))?;
        let Some(key) = &state.key else {
            return Err(Status::failed_precondition(
                "no key pair was generated for this certificate",
            ));
        };
        let keys = self.keys.clone();
        let key_id = key.key_id.clone();
        let secret = tokio::task::spawn_blocking(move || keys.get(&key_id))
            .await
            .map_err(|e| status::internal("key store task", &e))?
            .map_err(|e| match e {
                KeyStoreError::NotFound { .. } => Status::failed_precondition(format!(
                    "the generated key {} is missing from the key store",
                    key.key_id
                )),
                e => status::internal("key store", &e),
            })?;
        // Recorded (audit) before the key leaves the service.
        self.repo.execute(&id, &ctx, Expect::Any, command).await?;
        tracing::info!(certificate_id = %id, key_id = %key.key_id, actor = %ctx.actor, "private key exported");
        match format {
            KeyExportFormat::Pkcs12 => {
                let (certificate_pem, chain_pem) =
                    (response.certificate_pem.clone(), response.chain_pem.clone());
                let password = request.password;
                let alias = id.clone();
                response.pkcs12 = tokio::task::spawn_blocking(move || {
                    pkcs12(
                        &alias,
                        secret.expose_pkcs8_der(),
                        &certificate_pem,
                        &chain_pem,
                        &password,
                    )
                })
                .await
                .map_err(|e| status::internal("PKCS#12 task", &e))?
                .map_err(|e| status::internal("building the PKCS#12 archive", &e))?;
            }
            KeyExportFormat::Pem => {
                response.private_key_pem = secret.expose_pkcs8_pem().to_string();
            }
        }
        Ok(Response::new(response))
    }
}

/// Shortest password accepted for a PKCS#12 export.
const MIN_PKCS12_PASSWORD: usize = 8;

/// Why a PKCS#12 archive could not be built (never includes key material).
#[derive(Debug, thiserror::Error)]
enum Pkcs12Error {
    #[error("certificate PEM: {0}")]
    Pem(#[from] pem::PemError),
    #[error("{0}")]
    Archive(#[from] p12_keystore::error::Error),
}

/// A PKCS#12 archive (PBES2 with AES-256-CBC and PBKDF2-HMAC-SHA256, HMAC-SHA256 MAC,
/// as OpenSSL 3 writes by default) holding the key and the certificate with its chain.
fn pkcs12(
    alias: &str,
    pkcs8_der: &[u8],
    certificate_pem: &str,
    chain_pem: &str,
    password: &str,
) -> Result<Vec<u8>, Pkcs12Error> {
    use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKey, PrivateKeyChain};
    let mut certs = Vec::new();
    for block in pem::parse_many(certificate_pem)?
        .into_iter()
        .chain(pem::parse_many(chain_pem)?)
    {
        certs.push(Certificate::from_der(block.contents())?);
    }
    use sha2::Digest;
    let local_key_id = sha2::Sha256::digest(pkcs8_der).to_vec();
    let chain = PrivateKeyChain::new(local_key_id, PrivateKey::from_der(pkcs8_der)?, certs);
    let mut store = KeyStore::new();
    store.add_entry(alias, KeyStoreEntry::PrivateKeyChain(chain));
    Ok(store.writer(password).write()?)
}
