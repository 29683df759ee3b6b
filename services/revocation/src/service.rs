//! `certledger.revocation.v1.RevocationService` and the consumer handler.
//!
//! `RevokeCertificate` runs two commands through the certificate repository:
//! `RequestRevocation` (the audit of who asked, why) and `RecordRevoked` (the CA's record:
//! serial, time, reason). Both are idempotent, so revoking twice appends nothing the
//! second time. The revocation reaches the read model (OCSP) at once and the CRL publisher
//! is kicked; the consumer sees the same events later and changes nothing.
//!
//! If the process stops between the two appends, the consumer finds the
//! `RevocationRequested` without a `CertificateRevoked` and records the revocation (the
//! same happens for revocations requested by other services).

use std::sync::Arc;

use async_trait::async_trait;
use certledger_domain::CertificateEvent;
use certledger_domain::certificate::{CertificateCommand, RecordRevoked, RequestRevocation};
use certledger_eventlog::{EventLog, RecordedEvent};
use certledger_eventstream::consumer::{Handler, HandlerError};
use certledger_proto::common::v1::RevocationReason as ApiReason;
use certledger_proto::order::v1::Certificate;
use certledger_proto::revocation::v1 as api;
use certledger_proto::revocation::v1::revocation_service_server::{
    RevocationService as RevocationApi, RevocationServiceServer,
};
use certledger_runtime::repository::certificate_id_of;
use certledger_runtime::{
    CallContext, CertificateRepository, Expect, RepositoryError, convert, status,
};
use chrono::Utc;
use tonic::{Request, Response, Status};

use crate::http::CrlHandle;
use crate::model::{Applied, StatusModel};
use crate::publisher::CrlPublisher;

/// Name of the revocation service's consumer.
pub const CONSUMER: &str = "revocation";

/// Actor of what the service records on its own.
pub const ACTOR: &str = "revocation";

/// The revocation service (gRPC) and what it shares with the consumer.
#[derive(Clone)]
pub struct RevocationService {
    repo: CertificateRepository,
    model: Arc<StatusModel>,
    publisher: Arc<CrlPublisher>,
    crls: CrlHandle,
}

impl std::fmt::Debug for RevocationService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationService")
            .field("issuer", &self.model.issuer_id())
            .finish_non_exhaustive()
    }
}

/// Applies the events a command appended to the model; kicks the CRL publisher when a
/// serial was newly revoked.
fn apply_appended(
    model: &StatusModel,
    publisher: &CrlPublisher,
    certificate_id: &str,
    events: &[CertificateEvent],
) {
    let stream = certledger_runtime::repository::certificate_stream(certificate_id);
    let now = Utc::now();
    for event in events {
        if let Applied::Revoked(serial) = model.apply_decoded(&stream, now, event) {
            tracing::info!(certificate_id, serial = %serial.to_hex(), "revocation in the OCSP model; CRL re-signing");
            publisher.kick();
        }
    }
}

impl RevocationService {
    /// A service over `log`, answering from `model`, publishing with `publisher`.
    pub fn new(
        log: Arc<dyn EventLog>,
        model: Arc<StatusModel>,
        publisher: Arc<CrlPublisher>,
        crls: CrlHandle,
    ) -> Self {
        Self {
            repo: CertificateRepository::new(log),
            model,
            publisher,
            crls,
        }
    }

    /// The tonic server of this service.
    pub fn into_server(self) -> RevocationServiceServer<Self> {
        RevocationServiceServer::new(self)
    }
}

/// Records the revocation of a certificate whose revocation was requested (the reason
/// of the request). Idempotent.
pub async fn record_revocation(
    repo: &CertificateRepository,
    certificate_id: &str,
    ctx: &CallContext,
    fallback: ApiReason,
) -> Result<certledger_runtime::Executed, RepositoryError> {
    repo.execute_with(certificate_id, ctx, Expect::Any, |state| {
        let reason = state
            .revocation_request
            .as_ref()
            .map(|r| r.reason)
            .unwrap_or(fallback);
        Ok(CertificateCommand::RecordRevoked(RecordRevoked {
            reason,
            revoked_at: Utc::now(),
        }))
    })
    .await
}

#[tonic::async_trait]
impl RevocationApi for RevocationService {
    async fn revoke_certificate(
        &self,
        request: Request<api::RevokeCertificateRequest>,
    ) -> Result<Response<Certificate>, Status> {
        let ctx = CallContext::from_request(&request)?;
        let request = request.into_inner();
        let id = request.certificate_id;
        let reason = ApiReason::try_from(request.reason).map_err(|_| {
            status::invalid_argument(
                "reason",
                format!("{} is not an RFC 5280 revocation reason", request.reason),
            )
        })?;
        let requested = self
            .repo
            .execute(
                &id,
                &ctx,
                Expect::Any,
                CertificateCommand::RequestRevocation(RequestRevocation {
                    reason,
                    requested_by: ctx.actor.clone(),
                    comment: request.comment,
                    now: Utc::now(),
                }),
            )
            .await?;
        let recorded = record_revocation(&self.repo, &id, &ctx, reason).await?;
        apply_appended(&self.model, &self.publisher, &id, &recorded.events);
        if recorded.changed() || requested.changed() {
            tracing::info!(certificate_id = %id, reason = reason.as_str_name(), actor = %ctx.actor, "certificate revoked");
        }
        Ok(Response::new(convert::certificate(
            &recorded.state,
            recorded.ordered_at,
        )))
    }

    async fn get_crl(
        &self,
        request: Request<api::GetCrlRequest>,
    ) -> Result<Response<api::GetCrlResponse>, Status> {
        let issuer = request.into_inner().issuer;
        let ours = self.model.issuer_id();
        if !issuer.is_empty() && issuer != ours {
            return Err(Status::not_found(format!(
                "issuer {:?} is not served here; this service serves {ours:?}",
                issuer.chars().take(64).collect::<String>()
            )));
        }
        let crl = self.crls.get(ours).ok_or_else(|| {
            Status::unavailable(
                "no CRL has been signed yet (the service is starting); retry shortly",
            )
        })?;
        Ok(Response::new(api::GetCrlResponse {
            crl_der: crl.der.clone(),
            crl_number: crl.crl_number,
        }))
    }
}

/// The consumer's handler: keeps the model current and completes requested revocations.
pub struct RevocationHandler {
    repo: CertificateRepository,
    model: Arc<StatusModel>,
    publisher: Arc<CrlPublisher>,
}

impl RevocationHandler {
    /// A handler over `log`.
    pub fn new(
        log: Arc<dyn EventLog>,
        model: Arc<StatusModel>,
        publisher: Arc<CrlPublisher>,
    ) -> Self {
        Self {
            repo: CertificateRepository::new(log),
            model,
            publisher,
        }
    }
}

#[async_trait]
impl Handler for RevocationHandler {
    async fn handle(&self, event: &RecordedEvent) -> Result<(), HandlerError> {
        let Some(id) = certificate_id_of(&event.stream_id) else {
            return Ok(());
        };
        match event.event_type.as_str() {
            "RevocationRequested" => {
                let ctx = CallContext::reaction(event, ACTOR);
                match record_revocation(&self.repo, id, &ctx, ApiReason::Unspecified).await {
                    Ok(executed) => {
                        apply_appended(&self.model, &self.publisher, id, &executed.events);
                        Ok(())
                    }
                    Err(e) if e.is_transient() => Err(HandlerError::Retry(e.to_string())),
                    Err(RepositoryError::Domain(e)) => {
                        tracing::warn!(certificate_id = id, error = %e, "requested revocation cannot be recorded");
                        Ok(())
                    }
                    Err(e) => Err(HandlerError::Poison(e.to_string())),
                }
            }
            _ => {
                if let Applied::Revoked(serial) = self.model.apply(event) {
                    tracing::info!(certificate_id = id, serial = %serial.to_hex(), "revocation seen; CRL re-signing");
                    self.publisher.kick();
                }
                Ok(())
            }
        }
    }
}
