//! `CertificateQueryService` over gRPC: a thin layer over the read-model queries
//! ([`crate::query`]) and the log's history ([`crate::history`]). The caller's tenant
//! comes from the request metadata; another tenant's certificate is `NOT_FOUND`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use certledger_domain::certificate::{CertificateState, evolve};
use certledger_eventlog::EventLog;
use certledger_proto::codec::EventCodec;
use certledger_proto::common::v1::CertificateStatus;
use certledger_proto::events::v1::CertificateEvent as CertificateEventMessage;
use certledger_proto::events::v1::certificate_event::Event as CertificateEvent;
use certledger_proto::order::v1 as order_api;
use certledger_proto::query::v1 as api;
use certledger_proto::query::v1::certificate_query_service_server::{
    CertificateQueryService, CertificateQueryServiceServer,
};
use certledger_runtime::convert;
use certledger_runtime::server::{GrpcServer, RunningService, ServerOptions};
use certledger_runtime::status;
use certledger_runtime::tenant::tenant_of;
use chrono::Utc;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::{Request, Response, Status};

use crate::error::ProjectionError;
use crate::history::{self, At};
use crate::model::InventoryRow;
use crate::projector::{InventoryChange, Projector};
use crate::query::{AttentionPolicy, CertificateFilter, PageRequest, STATUSES};
use crate::store::ProjectionStore;

/// The gRPC service name (for health).
pub const SERVICE_NAME: &str = <CertificateQueryServiceServer<QueryService> as NamedService>::NAME;

/// The query service: read models, the log, and the projector's change feed.
#[derive(Clone)]
pub struct QueryService {
    store: ProjectionStore,
    log: Arc<dyn EventLog>,
    projector: Arc<Projector>,
    policy: AttentionPolicy,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for QueryService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryService").finish_non_exhaustive()
    }
}

impl QueryService {
    /// A service over `projector`'s store and log; streams end when `shutdown` fires.
    pub fn new(projector: Arc<Projector>, shutdown: CancellationToken) -> Self {
        Self {
            store: projector.store().clone(),
            log: projector.log().clone(),
            projector,
            policy: AttentionPolicy::default(),
            shutdown,
        }
    }

    /// The attention policy used by the `needs_attention` filter.
    pub fn with_policy(mut self, policy: AttentionPolicy) -> Self {
        self.policy = policy;
        self
    }
}

/// Binds `listen` and serves the query service (with health and reflection) until
/// `shutdown`; `tasks` (projector, HTTP) are awaited on stop.
pub async fn start(
    service: QueryService,
    listen: SocketAddr,
    options: ServerOptions,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
) -> std::io::Result<RunningService> {
    let grpc = GrpcServer::bind(listen, options).await?;
    let routes = Routes::new(CertificateQueryServiceServer::new(service));
    Ok(RunningService::spawn(
        grpc,
        routes,
        &[SERVICE_NAME],
        shutdown,
        tasks,
    ))
}

fn grpc_error(e: ProjectionError) -> Status {
    match e {
        ProjectionError::InvalidArgument { field, message } => {
            status::invalid_argument(&field, message)
        }
        ProjectionError::Log(e) => status::unavailable("the event log", &e),
        ProjectionError::Database { .. } => status::unavailable("the read models", &e),
        e => status::internal("query", &e),
    }
}

fn not_found(id: &str) -> Status {
    Status::not_found(format!("certificate {id:?} not found"))
}

fn required_id(id: &str) -> Result<(), Status> {
    if id.trim().is_empty() {
        return Err(status::invalid_argument(
            "certificate_id",
            "is required (e.g. the id returned by CreateOrder)",
        ));
    }
    Ok(())
}

/// The proto status of a read-model status name (`issued` → `CERTIFICATE_STATUS_ISSUED`).
pub fn status_of(name: &str) -> CertificateStatus {
    CertificateStatus::from_str_name(&format!("CERTIFICATE_STATUS_{}", name.to_ascii_uppercase()))
        .unwrap_or(CertificateStatus::Unspecified)
}

fn status_name(status: i32) -> Result<Option<String>, Status> {
    let s = CertificateStatus::try_from(status).map_err(|_| {
        status::invalid_argument("status", format!("{status} is not a certificate status"))
    })?;
    if s == CertificateStatus::Unspecified {
        return Ok(None);
    }
    let name = s
        .as_str_name()
        .trim_start_matches("CERTIFICATE_STATUS_")
        .to_ascii_lowercase();
    if !STATUSES.contains(&name.as_str()) {
        return Err(status::invalid_argument(
            "status",
            format!("{name} is not listed by the inventory"),
        ));
    }
    Ok(Some(name))
}

/// The API view of an inventory row (no PEM, spec or challenges: use GetCertificate).
fn row_to_proto(row: InventoryRow) -> order_api::Certificate {
    order_api::Certificate {
        certificate_id: row.certificate_id,
        status: status_of(&row.status) as i32,
        domains: row.domains,
        serial: row.serial.unwrap_or_default(),
        not_before: row.not_before.map(convert::timestamp),
        not_after: row.not_after.map(convert::timestamp),
        sha256_fingerprint: row.fingerprint.unwrap_or_default(),
        predecessor_id: row.predecessor_id.unwrap_or_default(),
        successor_id: row.successor_id.unwrap_or_default(),
        deployments: row
            .deployment_targets
            .into_iter()
            .map(|target_id| order_api::Deployment {
                target_id,
                ..Default::default()
            })
            .collect(),
        ordered_at: Some(convert::timestamp(row.ordered_at)),
        ..Default::default()
    }
}

type ChangeStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<api::InventoryChange, Status>> + Send>>;

#[tonic::async_trait]
impl CertificateQueryService for QueryService {
    async fn list_certificates(
        &self,
        request: Request<api::QueryCertificatesRequest>,
    ) -> Result<Response<api::QueryCertificatesResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let r = request.into_inner();
        let nonempty = |s: String| (!s.is_empty()).then_some(s);
        let expiring_before = match r.expiring_before {
            Some(ts) => Some(certledger_domain::time::from_timestamp(&ts).ok_or_else(|| {
                status::invalid_argument("expiring_before", "is not a valid timestamp")
            })?),
            None => None,
        };
        let filter = CertificateFilter {
            status: status_name(r.status)?,
            domain_contains: nonempty(r.domain_contains),
            issuer: nonempty(r.issuer),
            target_id: nonempty(r.target_id),
            expiring_before,
            needs_attention: r.needs_attention,
        };
        let page = r.page.unwrap_or_default();
        let page = PageRequest {
            page_size: page.page_size,
            page_token: page.page_token,
        };
        let result = self
            .store
            .list_certificates(&tenant, &filter, &page, Utc::now(), &self.policy)
            .await
            .map_err(grpc_error)?;
        Ok(Response::new(api::QueryCertificatesResponse {
            certificates: result.items.into_iter().map(row_to_proto).collect(),
            next_page_token: result.next_page_token,
        }))
    }

    async fn get_certificate(
        &self,
        request: Request<api::GetCertificateRequest>,
    ) -> Result<Response<order_api::Certificate>, Status> {
        let tenant = tenant_of(&request)?;
        let id = request.into_inner().certificate_id;
        required_id(&id)?;
        let certificate = self.at(&tenant, &id, At::Position(u64::MAX)).await?;
        Ok(Response::new(certificate))
    }

    async fn get_history(
        &self,
        request: Request<order_api::GetHistoryRequest>,
    ) -> Result<Response<order_api::GetHistoryResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let id = request.into_inner().certificate_id;
        required_id(&id)?;
        let items = history::history(&self.log, &tenant, &id)
            .await
            .map_err(grpc_error)?
            .ok_or_else(|| not_found(&id))?;
        let entries = items
            .into_iter()
            .map(|item| order_api::HistoryEntry {
                version: item.version,
                position: item.position,
                event_id: item.event_id,
                event_type: item.event_type,
                recorded_at: Some(convert::timestamp(item.recorded_at)),
                actor: item.actor,
                correlation_id: item.correlation_id.unwrap_or_default(),
                event: item
                    .event
                    .map(|event| CertificateEventMessage { event: Some(event) }),
            })
            .collect();
        Ok(Response::new(order_api::GetHistoryResponse { entries }))
    }

    async fn get_certificate_at(
        &self,
        request: Request<api::GetCertificateAtRequest>,
    ) -> Result<Response<order_api::Certificate>, Status> {
        use api::get_certificate_at_request::At as ApiAt;
        let tenant = tenant_of(&request)?;
        let r = request.into_inner();
        required_id(&r.certificate_id)?;
        let at = match r.at {
            Some(ApiAt::Time(ts)) => At::Time(
                certledger_domain::time::from_timestamp(&ts)
                    .ok_or_else(|| status::invalid_argument("time", "is not a valid timestamp"))?,
            ),
            Some(ApiAt::Position(p)) => At::Position(p),
            None => {
                return Err(status::invalid_argument(
                    "at",
                    "is required: set time or position",
                ));
            }
        };
        let certificate = self.at(&tenant, &r.certificate_id, at).await?;
        Ok(Response::new(certificate))
    }

    type WatchChangesStream = ChangeStream;

    async fn watch_changes(
        &self,
        request: Request<api::WatchChangesRequest>,
    ) -> Result<Response<Self::WatchChangesStream>, Status> {
        let tenant = tenant_of(&request)?;
        let after = request.into_inner().after_position;
        // Subscribe before reading the head: every change the projector sends after
        // this point is either replayed from the log (at most `head`) or received live.
        let mut changes = self.projector.subscribe();
        let head = if after == 0 {
            0
        } else {
            self.log
                .head_position()
                .await
                .map_err(|e| status::unavailable("the event log", &e))?
        };
        let (tx, rx) = mpsc::channel(64);
        let shutdown = self.shutdown.clone();
        let log = self.log.clone();
        tokio::spawn(async move {
            if after > 0 && after < head {
                let replay = replay_changes(&log, &tenant, after, head, &tx);
                let replayed = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = replay => r,
                };
                if let Err(status) = replayed {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            }
            let skip_through = head.max(after);
            loop {
                let change: InventoryChange = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tx.closed() => return,
                    received = changes.recv() => match received {
                        Ok(change) => change,
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            let _ = tx
                                .send(Err(Status::data_loss(format!(
                                    "the watcher fell {n} changes behind; watch again after the last position received"
                                ))))
                                .await;
                            return;
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                };
                if change.tenant != tenant || change.position <= skip_through {
                    continue;
                }
                let message = api::InventoryChange {
                    position: change.position,
                    status: status_of(&change.status) as i32,
                    certificate_id: change.certificate_id,
                    event_type: change.event_type,
                };
                if tx.send(Ok(message)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

impl QueryService {
    async fn at(&self, tenant: &str, id: &str, at: At) -> Result<order_api::Certificate, Status> {
        let items = history::history(&self.log, tenant, id)
            .await
            .map_err(grpc_error)?
            .ok_or_else(|| not_found(id))?;
        let ordered_at = items.first().map(|i| i.recorded_at);
        let state = history::certificate_at(&self.log, tenant, id, at)
            .await
            .map_err(grpc_error)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "certificate {id:?} did not exist yet at {}",
                    match at {
                        At::Time(t) => t.to_rfc3339(),
                        At::Position(p) => format!("log position {p}"),
                    }
                ))
            })?;
        Ok(convert::certificate(&state, ordered_at))
    }
}

/// Events per log read while replaying changes.
const REPLAY_BATCH: u32 = 500;

/// Sends one change per certificate event of `tenant` with a position in
/// `(after, head]`, with the certificate's status after it (a fold of its prefix).
async fn replay_changes(
    log: &Arc<dyn EventLog>,
    tenant: &str,
    after: u64,
    head: u64,
    tx: &mpsc::Sender<Result<api::InventoryChange, Status>>,
) -> Result<(), Status> {
    // Per certificate: its state as of the last event seen; None for another tenant's.
    let mut states: HashMap<String, Option<CertificateState>> = HashMap::new();
    let mut position = after;
    while position < head {
        let batch = log
            .read_all(position, REPLAY_BATCH)
            .await
            .map_err(|e| status::unavailable("the event log", &e))?;
        let Some(last) = batch.last() else {
            break;
        };
        position = last.position;
        for e in batch {
            if e.position > head {
                return Ok(());
            }
            let Some(id) = e.stream_id.strip_prefix("certificate-") else {
                continue;
            };
            let state = match states.get_mut(id) {
                Some(known) => {
                    if let Some(state) = known.take() {
                        *known = Some(
                            match CertificateEvent::decode(
                                &e.event_type,
                                e.schema_version,
                                &e.payload,
                            ) {
                                Ok(event) => evolve(state, &event),
                                Err(_) => CertificateState {
                                    version: state.version + 1,
                                    ..state
                                },
                            },
                        );
                    }
                    known.clone()
                }
                None => {
                    let state = history::certificate_at(log, tenant, id, At::Position(e.position))
                        .await
                        .map_err(grpc_error)?;
                    states.insert(id.to_owned(), state.clone());
                    state
                }
            };
            let Some(state) = state else {
                continue;
            };
            let message = api::InventoryChange {
                position: e.position,
                certificate_id: id.to_owned(),
                event_type: e.event_type,
                status: state.status.to_proto() as i32,
            };
            if tx.send(Ok(message)).await.is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}
