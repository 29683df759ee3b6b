//! The HTTP surface of the query side: the dashboard (`/`), a page per certificate
//! (`/certificates/<id>`), JSON (`/api/…`), `/metrics`, `/healthz` and `/readyz`.
//!
//! With authentication (the binaries' default, [`HttpServer::with_auth`]) every route
//! but `/healthz`, `/readyz` and `/login` needs an API token with the `read` permission:
//! `authorization: Bearer <token>` (scripts, Prometheus) or the HttpOnly cookie that
//! signing in on `/login` sets (browsers). The tenant is then the token's; `/metrics`
//! covers every tenant and so needs a token of the platform tenant `default`. When the
//! authenticator holds the server's TLS identity (`--tls-cert`/`--tls-key`), the HTTP
//! side speaks HTTPS with it too.
//!
//! Without authentication (`--insecure-no-auth`) the tenant comes from the
//! `x-certledger-tenant` header (default `default`); the pages also accept `?tenant=` so
//! that a browser can switch.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use axum::middleware::{self, Next};
use axum::routing::get;
use certledger_eventlog::EventLog;
use certledger_eventstream::relay::RelayStats;
use certledger_runtime::auth::{Authenticator, Permission, Principal};
use chrono::{DateTime, TimeDelta, Utc};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::OnceCell;

use crate::error::ProjectionError;
use crate::history;
use crate::html;
use crate::metrics::{self, MetricsSources};
use crate::projector::ProjectorStats;
use crate::query::{AttentionPolicy, CertificateFilter, PageRequest};
use crate::store::ProjectionStore;

/// The request header naming the tenant, and the tenant of a request that names none.
pub use certledger_runtime::tenant::{DEFAULT_TENANT, TENANT_HEADER};

/// How the HTTP server behaves.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// What counts as needing attention.
    pub attention: AttentionPolicy,
    /// `/readyz` answers 200 once every read model is within this many events of the
    /// log head as it was at startup. Default 100.
    pub ready_max_lag: u64,
    /// Certificates listed on the dashboard (the rest via the JSON API). Default 200.
    pub dashboard_limit: u32,
    /// Time allowed for a request's headers. Default 10 s.
    pub header_read_timeout: Duration,
    /// How long open connections may finish after shutdown. Default 5 s.
    pub drain_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            attention: AttentionPolicy::default(),
            ready_max_lag: 100,
            dashboard_limit: 200,
            header_read_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

struct AppState {
    store: ProjectionStore,
    log: Arc<dyn EventLog>,
    config: HttpConfig,
    projector: Option<Arc<ProjectorStats>>,
    relay: Option<Arc<RelayStats>>,
    startup_head: OnceCell<u64>,
    ready: AtomicBool,
    auth: Option<Arc<Authenticator>>,
}

/// The HTTP server. Build, optionally attach counters, then [`HttpServer::serve`] (or
/// embed [`HttpServer::router`] in another server).
pub struct HttpServer {
    state: AppState,
}

impl HttpServer {
    /// A server over the read models in `store` and the history in `log`.
    pub fn new(store: ProjectionStore, log: Arc<dyn EventLog>, config: HttpConfig) -> Self {
        Self {
            state: AppState {
                store,
                log,
                config,
                projector: None,
                relay: None,
                startup_head: OnceCell::new(),
                ready: AtomicBool::new(false),
                auth: None,
            },
        }
    }

    /// Exposes the in-process projector's counters on `/metrics`.
    pub fn with_projector_stats(mut self, stats: Arc<ProjectorStats>) -> Self {
        self.state.projector = Some(stats);
        self
    }

    /// Requires an API token on every route but health and sign-in (`None`: no
    /// authentication, for `--insecure-no-auth`).
    pub fn with_auth(mut self, auth: Option<Arc<Authenticator>>) -> Self {
        self.state.auth = auth;
        self
    }

    /// Exposes the in-process relay's counters (and relay lag) on `/metrics`.
    pub fn with_relay_stats(mut self, stats: Arc<RelayStats>) -> Self {
        self.state.relay = Some(stats);
        self
    }

    /// The routes, for embedding in another server. Note the log head for `/readyz` is
    /// taken at the first `/readyz` call then.
    pub fn router(self) -> Router {
        router(Arc::new(self.state))
    }

    /// Serves on `listener` until `shutdown` resolves, then drains open connections
    /// (at most the drain timeout).
    pub async fn serve<F>(self, listener: TcpListener, shutdown: F) -> io::Result<()>
    where
        F: Future<Output = ()> + Send,
    {
        let header_read_timeout = self.state.config.header_read_timeout;
        let drain_timeout = self.state.config.drain_timeout;
        let state = Arc::new(self.state);
        // The head "at startup" for /readyz; taken lazily if the log is unreachable now.
        match state.log.head_position().await {
            Ok(head) => {
                let _ = state.startup_head.set(head);
            }
            Err(error) => {
                tracing::warn!(%error, "reading the log head at startup failed; /readyz will retry")
            }
        }
        // HTTPS with the gRPC servers' certificate when they have one.
        let tls = state
            .auth
            .as_ref()
            .and_then(|a| a.server_tls())
            .map(|t| t.https_config())
            .transpose()
            .map_err(io::Error::other)?
            .map(tokio_rustls::TlsAcceptor::from);
        let router = router(state);
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        let local = listener.local_addr()?;
        tracing::info!(%local, tls = tls.is_some(), "projections HTTP server listening");
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let service = hyper_util::service::TowerToHyperService::new(router.clone());
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .max_buf_size(64 * 1024);
            let watcher = graceful.watcher();
            let tls = tls.clone();
            tokio::spawn(async move {
                let served = match tls {
                    None => {
                        watcher
                            .watch(builder.serve_connection(TokioIo::new(stream), service))
                            .await
                    }
                    Some(tls) => {
                        let handshake =
                            tokio::time::timeout(header_read_timeout, tls.accept(stream)).await;
                        match handshake {
                            Ok(Ok(stream)) => {
                                watcher
                                    .watch(builder.serve_connection(TokioIo::new(stream), service))
                                    .await
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        }
                    }
                };
                if let Err(e) = served {
                    tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                }
            });
        }
        tracing::info!(%local, "projections HTTP server draining");
        tokio::select! {
            () = graceful.shutdown() => {}
            () = tokio::time::sleep(drain_timeout) => {
                tracing::warn!("connections still open after the drain timeout; closing");
            }
        }
        Ok(())
    }
}

fn router(state: Arc<AppState>) -> Router {
    let protected = Router::new()
        .route("/", get(dashboard))
        .route("/certificates/{id}", get(certificate_page))
        .route("/api/certificates", get(api_certificates))
        .route("/api/certificates/{id}", get(api_certificate))
        .route("/api/attention", get(api_attention))
        .route("/api/expiry", get(api_expiry))
        .route("/api/revocations", get(api_revocations))
        .route("/api/deployments", get(api_deployments))
        .route("/api/targets", get(api_targets))
        .route("/metrics", get(metrics_handler))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .merge(protected)
        .route("/login", get(login_form).post(login))
        .route("/logout", axum::routing::post(logout))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

// --- authentication -------------------------------------------------------------------

/// The cookie that carries a browser's token (HttpOnly, SameSite=Strict).
pub const TOKEN_COOKIE: &str = "certledger_token";

/// Pages answer a browser; everything else (JSON, metrics) a program.
fn is_page(path: &str) -> bool {
    path == "/" || path.starts_with("/certificates/")
}

/// The request's token as an `authorization` header: the header itself, else the
/// sign-in cookie.
fn credentials(headers: &HeaderMap) -> HeaderMap {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let mut out = HeaderMap::new();
        out.insert(header::AUTHORIZATION, v.clone());
        return out;
    }
    let token = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == TOKEN_COOKIE)
        .map(|(_, value)| value);
    token.map(bearer).unwrap_or_default()
}

/// `authorization: Bearer <token>` (empty if the token cannot be a header value).
fn bearer(token: &str) -> HeaderMap {
    let mut out = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) {
        out.insert(header::AUTHORIZATION, value);
    }
    out
}

/// The caller of `headers` if it may read: the one check of the HTTP side. Refusals
/// are (status, message).
async fn reader(
    auth: &Authenticator,
    headers: &HeaderMap,
) -> Result<Principal, (StatusCode, String)> {
    let principal = match auth.authenticate(headers).await {
        Ok(p) => p,
        Err(status) if status.code() == tonic::Code::Unauthenticated => {
            return Err((StatusCode::UNAUTHORIZED, status.message().to_owned()));
        }
        Err(status) => {
            tracing::warn!(error = %status.message(), "reading the token registry failed");
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "the token registry could not be read; try again".to_owned(),
            ));
        }
    };
    principal
        .require(Permission::Read)
        .map_err(|status| (StatusCode::FORBIDDEN, status.message().to_owned()))?;
    Ok(principal)
}

fn refused(path: &str, status: StatusCode, message: &str) -> Response<Body> {
    if is_page(path) {
        let mut r = html_page(status, html::login(Some(message)));
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        return r;
    }
    let mut r = json_error(status, message);
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"certledger\""),
        );
    }
    r
}

/// Lets a request through with the `read` permission, acting in the token's tenant.
async fn authenticate(
    State(s): State<Arc<AppState>>,
    mut request: axum::extract::Request,
    next: Next,
) -> Response<Body> {
    let Some(auth) = &s.auth else {
        return next.run(request).await;
    };
    let path = request.uri().path().to_owned();
    let principal = match reader(auth, &credentials(request.headers())).await {
        Ok(p) => p,
        Err((status, message)) => return refused(&path, status, &message),
    };
    if path == "/metrics" && principal.tenant != DEFAULT_TENANT {
        return refused(
            &path,
            StatusCode::FORBIDDEN,
            &format!(
                "/metrics covers every tenant: it needs a token of the platform tenant {DEFAULT_TENANT:?}, not {:?}",
                principal.tenant
            ),
        );
    }
    // The token decides the tenant; a header naming another one is overridden.
    match HeaderValue::from_str(&principal.tenant) {
        Ok(v) => {
            request.headers_mut().insert(TENANT_HEADER, v);
        }
        Err(_) => {
            return refused(
                &path,
                StatusCode::FORBIDDEN,
                "the token's tenant is unusable",
            );
        }
    }
    next.run(request).await
}

async fn login_form(State(s): State<Arc<AppState>>) -> Response<Body> {
    if s.auth.is_none() {
        return redirect("/", None);
    }
    html_page(StatusCode::OK, html::login(None))
}

fn redirect(to: &'static str, cookie: Option<String>) -> Response<Body> {
    let mut r = respond(StatusCode::SEE_OTHER, "text/plain; charset=utf-8", "");
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    if let Some(v) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// Checks the posted token (`token=` form field) and keeps it in the cookie.
async fn login(State(s): State<Arc<AppState>>, body: axum::body::Bytes) -> Response<Body> {
    let Some(auth) = &s.auth else {
        return redirect("/", None);
    };
    let token = form_urlencoded::parse(&body)
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    let headers = bearer(&token);
    if token.is_empty() || headers.is_empty() {
        return html_page(
            StatusCode::BAD_REQUEST,
            html::login(Some(
                "field token: paste an API token (clt.<tenant>.<id>.<secret>)",
            )),
        );
    }
    if let Err((status, message)) = reader(auth, &headers).await {
        return html_page(status, html::login(Some(&message)));
    }
    // Over HTTPS the browser must never send it in the clear.
    let secure = if auth.server_tls().is_some() {
        "; Secure"
    } else {
        ""
    };
    redirect(
        "/",
        Some(format!(
            "{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}"
        )),
    )
}

async fn logout() -> Response<Body> {
    redirect(
        "/login",
        Some(format!(
            "{TOKEN_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
        )),
    )
}

// --- responses ------------------------------------------------------------------------

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Body>,
) -> Response<Body> {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn json<T: Serialize>(value: &T) -> Response<Body> {
    match serde_json::to_vec_pretty(value) {
        Ok(bytes) => respond(StatusCode::OK, "application/json", bytes),
        Err(e) => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("encoding JSON: {e}"),
        ),
    }
}

fn json_error(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": message }).to_string();
    respond(status, "application/json", body)
}

fn html_page(status: StatusCode, body: String) -> Response<Body> {
    let mut r = respond(status, "text/html; charset=utf-8", body);
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; img-src 'self'"),
    );
    r.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// A failed query as JSON: 400 naming the parameter, or 500 (details in the log).
fn api_failure(e: ProjectionError) -> Response<Body> {
    match e {
        ProjectionError::InvalidArgument { .. } => {
            json_error(StatusCode::BAD_REQUEST, &e.to_string())
        }
        e => {
            tracing::error!(error = %e, "query failed");
            json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the read models could not be queried; see the server log",
            )
        }
    }
}

fn page_failure(tenant: &str, e: ProjectionError) -> Response<Body> {
    match e {
        ProjectionError::InvalidArgument { .. } => html_page(
            StatusCode::BAD_REQUEST,
            html::error_page(tenant, &e.to_string()),
        ),
        e => {
            tracing::error!(error = %e, "page failed");
            html_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                html::error_page(
                    tenant,
                    "The read models could not be queried; see the server log.",
                ),
            )
        }
    }
}

// --- request parsing -------------------------------------------------------------------

/// Checks a tenant id: `[a-z0-9][a-z0-9_-]{0,62}` (the rule of the gRPC services).
pub fn validate_tenant(tenant: &str) -> Result<(), ProjectionError> {
    certledger_runtime::tenant::validate_tenant(tenant)
        .map_err(|why| ProjectionError::invalid(TENANT_HEADER, format!("tenant {tenant:?} {why}")))
}

fn params(query: Option<&str>) -> Vec<(String, String)> {
    query
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The tenant: header, then (pages only) `?tenant=`, then the default.
fn tenant(
    headers: &HeaderMap,
    params: &[(String, String)],
    pages: bool,
) -> Result<String, ProjectionError> {
    let tenant = match headers.get(TENANT_HEADER) {
        Some(v) => v
            .to_str()
            .map_err(|_| ProjectionError::invalid(TENANT_HEADER, "is not printable ASCII"))?
            .to_owned(),
        None => match param(params, "tenant").filter(|_| pages) {
            Some(t) if !t.is_empty() => t.to_owned(),
            _ => DEFAULT_TENANT.to_owned(),
        },
    };
    validate_tenant(&tenant)?;
    Ok(tenant)
}

fn parse_time(field: &str, value: &str) -> Result<DateTime<Utc>, ProjectionError> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.to_utc())
        .map_err(|e| {
            ProjectionError::invalid(
                field,
                format!("{value:?} is not an RFC 3339 time such as 2027-01-31T00:00:00Z: {e}"),
            )
        })
}

fn parse_bool(field: &str, value: &str) -> Result<bool, ProjectionError> {
    match value {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" | "" => Ok(false),
        _ => Err(ProjectionError::invalid(
            field,
            format!("{value:?} is not a boolean; use true or false"),
        )),
    }
}

fn filter_from(
    params: &[(String, String)],
) -> Result<(CertificateFilter, PageRequest), ProjectionError> {
    let text = |name| {
        param(params, name)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let filter = CertificateFilter {
        status: text("status"),
        domain_contains: text("domain"),
        issuer: text("issuer"),
        target_id: text("target"),
        expiring_before: text("expiring_before")
            .map(|v| parse_time("expiring_before", &v))
            .transpose()?,
        needs_attention: text("needs_attention")
            .map(|v| parse_bool("needs_attention", &v))
            .transpose()?
            .unwrap_or(false),
    };
    let page = PageRequest {
        page_size: match text("page_size") {
            Some(v) => v.parse().map_err(|_| {
                ProjectionError::invalid("page_size", format!("{v:?} is not a whole number"))
            })?,
            None => 0,
        },
        page_token: text("page_token").unwrap_or_default(),
    };
    Ok((filter, page))
}

macro_rules! api_try {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return api_failure(e),
        }
    };
}

// --- handlers ------------------------------------------------------------------------

async fn dashboard(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response<Body> {
    let params = params(query.as_deref());
    let tenant = match tenant(&headers, &params, true) {
        Ok(t) => t,
        Err(e) => return page_failure(DEFAULT_TENANT, e),
    };
    match render_dashboard(&s, &tenant).await {
        Ok(body) => html_page(StatusCode::OK, body),
        Err(e) => page_failure(&tenant, e),
    }
}

async fn render_dashboard(s: &AppState, tenant: &str) -> Result<String, ProjectionError> {
    let now = Utc::now();
    let policy = &s.config.attention;
    let attention = s.store.attention(tenant, now, policy).await?;
    let expiring = s
        .store
        .expiry_calendar(tenant, now + TimeDelta::days(30))
        .await?;
    let counts = s.store.status_counts(Some(tenant)).await?;
    let certificates = s
        .store
        .list_certificates(
            tenant,
            &CertificateFilter::default(),
            &PageRequest {
                page_size: s
                    .config
                    .dashboard_limit
                    .clamp(1, crate::query::MAX_PAGE_SIZE),
                page_token: String::new(),
            },
            now,
            policy,
        )
        .await?;
    let revocations = s.store.revocations(tenant, now, policy).await?;
    let checkpoints = s.store.checkpoints().await?;
    let head = s.log.head_position().await?;
    Ok(html::dashboard(&html::DashboardData {
        tenant,
        now,
        attention: &attention,
        expiring: &expiring,
        counts: &counts,
        certificates: &certificates.items,
        more_certificates: !certificates.next_page_token.is_empty(),
        revocations: &revocations,
        checkpoints: &checkpoints,
        head,
    }))
}

async fn certificate_page(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response<Body> {
    let params = params(query.as_deref());
    let tenant = match tenant(&headers, &params, true) {
        Ok(t) => t,
        Err(e) => return page_failure(DEFAULT_TENANT, e),
    };
    let now = Utc::now();
    let detail = match s
        .store
        .certificate_detail(&tenant, &id, now, &s.config.attention)
        .await
    {
        Ok(Some(d)) => d,
        Ok(None) => return html_page(StatusCode::NOT_FOUND, html::not_found(&tenant, &id)),
        Err(e) => return page_failure(&tenant, e),
    };
    let timeline = match history::history(&s.log, &tenant, &id).await {
        Ok(h) => h.unwrap_or_default(),
        Err(e) => return page_failure(&tenant, e),
    };
    html_page(
        StatusCode::OK,
        html::certificate(&tenant, &detail, &timeline, now),
    )
}

async fn api_certificates(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response<Body> {
    let params = params(query.as_deref());
    let tenant = api_try!(tenant(&headers, &params, false));
    let (filter, page) = api_try!(filter_from(&params));
    let page = api_try!(
        s.store
            .list_certificates(&tenant, &filter, &page, Utc::now(), &s.config.attention)
            .await
    );
    json(&page)
}

#[derive(Serialize)]
struct CertificateResponse {
    #[serde(flatten)]
    detail: crate::query::CertificateDetail,
    history: Vec<history::HistoryItem>,
}

async fn api_certificate(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response<Body> {
    let tenant = api_try!(tenant(&headers, &[], false));
    let detail = match api_try!(
        s.store
            .certificate_detail(&tenant, &id, Utc::now(), &s.config.attention)
            .await
    ) {
        Some(d) => d,
        None => {
            return json_error(
                StatusCode::NOT_FOUND,
                &format!("certificate {id} does not exist"),
            );
        }
    };
    let history = api_try!(history::history(&s.log, &tenant, &id).await).unwrap_or_default();
    json(&CertificateResponse { detail, history })
}

async fn api_attention(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Response<Body> {
    let tenant = api_try!(tenant(&headers, &[], false));
    json(&api_try!(
        s.store
            .attention(&tenant, Utc::now(), &s.config.attention)
            .await
    ))
}

async fn api_expiry(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response<Body> {
    let params = params(query.as_deref());
    let tenant = api_try!(tenant(&headers, &params, false));
    let until = match param(&params, "before").filter(|v| !v.is_empty()) {
        Some(v) => api_try!(parse_time("before", v)),
        None => Utc::now() + TimeDelta::days(90),
    };
    json(&api_try!(s.store.expiry_calendar(&tenant, until).await))
}

async fn api_revocations(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Response<Body> {
    let tenant = api_try!(tenant(&headers, &[], false));
    json(&api_try!(
        s.store
            .revocations(&tenant, Utc::now(), &s.config.attention)
            .await
    ))
}

async fn api_deployments(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response<Body> {
    let params = params(query.as_deref());
    let tenant = api_try!(tenant(&headers, &params, false));
    let target = param(&params, "target").filter(|v| !v.is_empty());
    json(&api_try!(s.store.deployments(&tenant, target).await))
}

async fn api_targets(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Response<Body> {
    let tenant = api_try!(tenant(&headers, &[], false));
    json(&api_try!(s.store.targets(&tenant).await))
}

async fn metrics_handler(State(s): State<Arc<AppState>>) -> Response<Body> {
    let sources = MetricsSources {
        store: s.store.clone(),
        log: s.log.clone(),
        projector: s.projector.clone(),
        relay: s.relay.clone(),
        policy: s.config.attention,
    };
    match metrics::render(&sources, Utc::now()).await {
        Ok(text) => respond(StatusCode::OK, metrics::CONTENT_TYPE, text),
        Err(e) => {
            tracing::error!(error = %e, "rendering /metrics failed");
            respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain; charset=utf-8",
                "the read models could not be queried; see the server log\n",
            )
        }
    }
}

async fn healthz() -> Response<Body> {
    respond(StatusCode::OK, "text/plain; charset=utf-8", "ok\n")
}

async fn readyz(State(s): State<Arc<AppState>>) -> Response<Body> {
    if s.ready.load(Ordering::Relaxed) {
        return respond(StatusCode::OK, "text/plain; charset=utf-8", "ready\n");
    }
    let not_ready = |why: String| {
        respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain; charset=utf-8",
            format!("not ready: {why}\n"),
        )
    };
    let head = match s
        .startup_head
        .get_or_try_init(|| async { s.log.head_position().await })
        .await
    {
        Ok(h) => *h,
        Err(e) => return not_ready(format!("the event log is unreachable: {e}")),
    };
    let checkpoints = match s.store.checkpoints().await {
        Ok(c) => c,
        Err(e) => return not_ready(format!("the read models are unreachable: {e}")),
    };
    let target = head.saturating_sub(s.config.ready_max_lag);
    let behind: Vec<String> = checkpoints
        .iter()
        .filter(|c| c.rebuilding || c.position < target)
        .map(|c| {
            format!(
                "{} at position {}{} of {head}",
                c.model.name(),
                c.position,
                if c.rebuilding { " (rebuilding)" } else { "" }
            )
        })
        .collect();
    if behind.is_empty() {
        s.ready.store(true, Ordering::Relaxed);
        respond(StatusCode::OK, "text/plain; charset=utf-8", "ready\n")
    } else {
        not_ready(format!("catching up: {}", behind.join(", ")))
    }
}
