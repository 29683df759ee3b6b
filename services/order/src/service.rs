//! `certledger.order.v1.OrderService`.

use std::pin::Pin;
use std::sync::Arc;

use certledger_domain::DomainError;
use certledger_domain::certificate::{CancelOrder, PlaceOrder, Status, SubmitApplication};
use certledger_domain::spec::validate_spec;
use certledger_proto::order::v1 as api;
use certledger_proto::order::v1::order_service_server::{
    OrderService as OrderApi, OrderServiceServer,
};
use certledger_runtime::repository::not_found;
use certledger_runtime::{CallContext, CertificateRepository, Expect, convert, status};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status as GrpcStatus};
use uuid::Uuid;

use crate::application::check_application;
use crate::listing::CertificateList;
use crate::renewal::{Renewer, Trigger};

/// Namespace of the certificate ids derived from idempotency keys (UUID v5 over
/// `<tenant>\n<key>`): the same key of the same tenant always names the same stream.
pub const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_bytes([
    0x6b, 0x1d, 0x2f, 0x8e, 0x53, 0x0c, 0x4d, 0x2a, 0x9e, 0x61, 0x3f, 0x0d, 0xa4, 0x47, 0xc1, 0x5e,
]);

/// The certificate id for an idempotency key of a tenant.
pub fn certificate_id_for_key(tenant: &str, idempotency_key: &str) -> String {
    Uuid::new_v5(
        &IDEMPOTENCY_NAMESPACE,
        format!("{tenant}\n{idempotency_key}").as_bytes(),
    )
    .to_string()
}

/// The order service.
#[derive(Clone)]
pub struct OrderService {
    repo: CertificateRepository,
    issuers: Arc<Vec<String>>,
    list: Option<CertificateList>,
    renewer: Renewer,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for OrderService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderService")
            .field("issuers", &self.issuers)
            .finish_non_exhaustive()
    }
}

impl OrderService {
    /// A service over `repo`'s log, accepting orders for `issuers`. `list` serves
    /// ListCertificates (UNIMPLEMENTED without it); `renewer` starts renewals.
    /// `shutdown` ends watches.
    pub fn new(
        repo: CertificateRepository,
        issuers: Vec<String>,
        list: Option<CertificateList>,
        renewer: Renewer,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            repo,
            issuers: Arc::new(issuers),
            list,
            renewer,
            shutdown,
        }
    }

    /// The tonic server of this service.
    pub fn into_server(self) -> OrderServiceServer<Self> {
        OrderServiceServer::new(self)
    }

    fn check_issuer(&self, issuer: &str) -> Result<(), DomainError> {
        if self.issuers.iter().any(|i| i == issuer) {
            Ok(())
        } else {
            Err(DomainError::invalid(
                "spec.issuer",
                format!(
                    "{issuer:?} is not a configured issuer; choose one of: {}",
                    self.issuers.join(", ")
                ),
            ))
        }
    }
}

fn tenant_of(ctx: &CallContext) -> String {
    ctx.tenant()
        .unwrap_or(certledger_runtime::tenant::DEFAULT_TENANT)
        .to_owned()
}

fn domain(e: DomainError) -> GrpcStatus {
    status::from_domain(&e)
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<api::HistoryEntry, GrpcStatus>> + Send>>;

#[tonic::async_trait]
impl OrderApi for OrderService {
    async fn place_order(
        &self,
        request: Request<api::PlaceOrderRequest>,
    ) -> Result<Response<api::PlaceOrderResponse>, GrpcStatus> {
        let ctx = CallContext::from_request(&request)?;
        let tenant = tenant_of(&ctx);
        let request = request.into_inner();
        let spec = request.spec.ok_or_else(|| {
            status::invalid_argument(
                "spec",
                "is required: the issuer, key algorithm, validity, domain slots and validation method",
            )
        })?;
        validate_spec(&spec).map_err(domain)?;
        self.check_issuer(&spec.issuer).map_err(domain)?;
        let application = request
            .application
            .as_ref()
            .map(convert::application)
            .transpose()
            .map_err(domain)?;
        if let Some(app) = &application {
            check_application(app, &spec).map_err(domain)?;
        }
        let key = request.idempotency_key;
        let (certificate_id, expect) = if key.is_empty() {
            (Uuid::now_v7().to_string(), Expect::New)
        } else {
            (certificate_id_for_key(&tenant, &key), Expect::Any)
        };
        let command = PlaceOrder {
            certificate_id: certificate_id.clone(),
            tenant,
            spec,
            application,
            predecessor_id: None,
            idempotency_key: (!key.is_empty()).then_some(key),
        };
        let executed = self
            .repo
            .execute(&certificate_id, &ctx, expect, command.into())
            .await?;
        let replayed = !executed.changed();
        tracing::info!(
            certificate_id,
            replayed,
            correlation_id = %ctx.correlation_id,
            "order placed"
        );
        Ok(Response::new(api::PlaceOrderResponse {
            certificate: Some(convert::certificate(&executed.state, executed.ordered_at)),
            replayed,
        }))
    }

    async fn submit_application(
        &self,
        request: Request<api::SubmitApplicationRequest>,
    ) -> Result<Response<api::Certificate>, GrpcStatus> {
        let ctx = CallContext::from_request(&request)?;
        let request = request.into_inner();
        let raw = request.application.ok_or_else(|| {
            status::invalid_argument("application", "is required: the names and the key source")
        })?;
        let application = convert::application(&raw).map_err(domain)?;
        let id = request.certificate_id;
        let executed = self
            .repo
            .execute_with(
                &id,
                &ctx,
                Expect::from_request(request.expected_version),
                |state| {
                    if !state.exists() {
                        return Err(not_found(&id));
                    }
                    // Only an ordered certificate takes an application; otherwise let the
                    // decider say why, before looking at the CSR.
                    if state.status == Status::Ordered {
                        check_application(&application, &state.spec)?;
                    }
                    Ok(SubmitApplication {
                        application: application.clone(),
                    }
                    .into())
                },
            )
            .await?;
        tracing::info!(certificate_id = %id, correlation_id = %ctx.correlation_id, "application submitted");
        Ok(Response::new(convert::certificate(
            &executed.state,
            executed.ordered_at,
        )))
    }

    async fn cancel_order(
        &self,
        request: Request<api::CancelOrderRequest>,
    ) -> Result<Response<api::Certificate>, GrpcStatus> {
        let ctx = CallContext::from_request(&request)?;
        let request = request.into_inner();
        let executed = self
            .repo
            .execute(
                &request.certificate_id,
                &ctx,
                Expect::from_request(request.expected_version),
                CancelOrder {
                    reason: request.reason,
                }
                .into(),
            )
            .await?;
        if executed.changed() {
            tracing::info!(certificate_id = %request.certificate_id, "order cancelled");
        }
        Ok(Response::new(convert::certificate(
            &executed.state,
            executed.ordered_at,
        )))
    }

    async fn renew_certificate(
        &self,
        request: Request<api::RenewCertificateRequest>,
    ) -> Result<Response<api::RenewCertificateResponse>, GrpcStatus> {
        let ctx = CallContext::from_request(&request)?;
        let request = request.into_inner();
        let csr = Some(request.csr_pem.as_str()).filter(|pem| !pem.trim().is_empty());
        let renewed = self
            .renewer
            .renew(&ctx, &request.certificate_id, csr, Trigger::Request)
            .await?;
        Ok(Response::new(api::RenewCertificateResponse {
            predecessor: Some(convert::certificate(
                &renewed.predecessor.state,
                renewed.predecessor.ordered_at,
            )),
            successor: Some(convert::certificate(
                &renewed.successor.state,
                renewed.successor.ordered_at,
            )),
        }))
    }

    async fn get_certificate(
        &self,
        request: Request<api::GetCertificateRequest>,
    ) -> Result<Response<api::Certificate>, GrpcStatus> {
        let ctx = CallContext::from_request(&request)?;
        let id = request.into_inner().certificate_id;
        let loaded = self.repo.load(&id, ctx.tenant()).await?;
        Ok(Response::new(convert::certificate(
            &loaded.state,
            loaded.ordered_at,
        )))
    }

    async fn list_certificates(
        &self,
        request: Request<api::ListCertificatesRequest>,
    ) -> Result<Response<api::ListCertificatesResponse>, GrpcStatus> {
        let ctx = CallContext::from_request(&request)?;
        let Some(list) = &self.list else {
            return Err(GrpcStatus::unimplemented(
                "ListCertificates is not enabled on this server (no certificate list read model configured)",
            ));
        };
        let tenant = tenant_of(&ctx);
        let response = list.list(&self.repo, &tenant, request.into_inner()).await?;
        Ok(Response::new(response))
    }

    async fn get_history(
        &self,
        request: Request<api::GetHistoryRequest>,
    ) -> Result<Response<api::GetHistoryResponse>, GrpcStatus> {
        let ctx = CallContext::from_request(&request)?;
        let id = request.into_inner().certificate_id;
        let (_, events) = self.repo.load_with_events(&id, ctx.tenant()).await?;
        let entries = events
            .iter()
            .map(|e| convert::history_entry(&e.recorded, e.event.as_ref()))
            .collect();
        Ok(Response::new(api::GetHistoryResponse { entries }))
    }

    type WatchCertificateStream = WatchStream;

    async fn watch_certificate(
        &self,
        request: Request<api::WatchCertificateRequest>,
    ) -> Result<Response<Self::WatchCertificateStream>, GrpcStatus> {
        let ctx = CallContext::from_request(&request)?;
        let request = request.into_inner();
        let id = request.certificate_id;
        // Visibility is checked once, up front: the stream's tenant never changes.
        self.repo.load(&id, ctx.tenant()).await?;
        let (tx, rx) = mpsc::channel(64);
        let repo = self.repo.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(watch(repo, id, request.after_version, tx, shutdown));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Sends the history after `after_version`, then every new event, until the client
/// leaves or the server shuts down.
async fn watch(
    repo: CertificateRepository,
    certificate_id: String,
    after_version: u64,
    tx: mpsc::Sender<Result<api::HistoryEntry, GrpcStatus>>,
    shutdown: CancellationToken,
) {
    let log = repo.log().clone();
    let mut last = after_version;
    loop {
        // The head is read before the stream: anything committed later wakes the wait.
        let head = match log.head_position().await {
            Ok(head) => head,
            Err(e) => {
                let _ = tx.send(Err(status::unavailable("the event log", &e))).await;
                return;
            }
        };
        match repo.read_after(&certificate_id, last).await {
            Ok(events) => {
                for stored in events {
                    last = stored.recorded.stream_version;
                    let entry = convert::history_entry(&stored.recorded, stored.event.as_ref());
                    if tx.send(Ok(entry)).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                let _ = tx.send(Err(status::from_repository(e))).await;
                return;
            }
        }
        tokio::select! {
            _ = log.wait_for_new(head) => {}
            _ = tx.closed() => return,
            _ = shutdown.cancelled() => {
                let _ = tx
                    .send(Err(GrpcStatus::unavailable(
                        "the server is shutting down; watch again (from the last version you saw) on another replica",
                    )))
                    .await;
                return;
            }
        }
    }
}
