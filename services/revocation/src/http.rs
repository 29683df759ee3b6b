//! The public HTTP endpoints of revocation (plain HTTP, as RFC 5280 and RFC 6960 clients
//! expect):
//!
//! * `GET /crl/<issuer>.crl` — the current CRL, DER, `application/pkix-crl`;
//!   `GET /crl/<issuer>.pem` or `GET /crl/<issuer>.crl?format=pem` — PEM;
//! * `POST /ocsp` (also `POST /ocsp/`) — `application/ocsp-request` in,
//!   `application/ocsp-response` out;
//! * `GET /ocsp/<url-encoded base64 request>` (RFC 6960 Appendix A), with cache headers;
//! * `GET /healthz`.
//!
//! The CRLs come from a [`CrlHandle`] and the responder from an [`OcspHandle`]; the service
//! swaps their contents (re-signed CRL, new responder) while the server runs. OCSP problems
//! are answered with an OCSP error response and HTTP 200, as OCSP clients expect; nothing a
//! client sends can stop the server.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, Response, StatusCode, Uri, header};
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use time::{Duration, OffsetDateTime, UtcOffset};
use tokio::net::TcpListener;

use crate::crl::SignedCrl;
use crate::ocsp::{OcspResponse, OcspResponseStatus, Responder};

/// Media type of DER CRLs (RFC 2585).
pub const CONTENT_TYPE_CRL: &str = "application/pkix-crl";
/// Media type of PEM files.
pub const CONTENT_TYPE_PEM: &str = "application/x-pem-file";
/// Media type of OCSP requests (RFC 6960 Appendix C).
pub const CONTENT_TYPE_OCSP_REQUEST: &str = "application/ocsp-request";
/// Media type of OCSP responses (RFC 6960 Appendix C).
pub const CONTENT_TYPE_OCSP_RESPONSE: &str = "application/ocsp-response";

/// A CRL could not be published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The issuer name cannot appear in a URL path segment.
    #[error(
        "issuer name {name:?} is not 1 to 64 characters of A-Z a-z 0-9 . _ - (not starting with . or -)"
    )]
    InvalidIssuerName {
        /// The name (truncated).
        name: String,
    },
    /// A CRL with a lower number (or the same number and different content) than the one
    /// being served: publishing it would move clients backwards.
    #[error("CRL number {offered} for {issuer} is stale: CRL number {current} is being served")]
    Stale {
        /// The issuer.
        issuer: String,
        /// Number being served.
        current: u64,
        /// Number offered.
        offered: u64,
    },
}

fn validate_issuer_name(name: &str) -> Result<(), PublishError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !name.starts_with(['.', '-']);
    if ok {
        Ok(())
    } else {
        Err(PublishError::InvalidIssuerName {
            name: name.chars().take(64).collect(),
        })
    }
}

/// The CRLs being served, by issuer name (the `<issuer>` of `/crl/<issuer>.crl`). Cloning
/// shares the same set; [`CrlHandle::publish`] swaps a CRL in atomically.
#[derive(Debug, Clone, Default)]
pub struct CrlHandle {
    inner: Arc<RwLock<HashMap<String, Published>>>,
}

/// A CRL being served, with its encodings ready to send without copying.
#[derive(Debug, Clone)]
struct Published {
    crl: Arc<SignedCrl>,
    der: Bytes,
    pem: Bytes,
}

impl CrlHandle {
    /// No CRLs yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `crl` as the CRL of `issuer` from now on. Refuses a CRL older than the one being
    /// served (lower CRL number, or the same number with other content); publishing the same
    /// CRL again is a no-op.
    pub fn publish(&self, issuer: &str, crl: SignedCrl) -> Result<(), PublishError> {
        validate_issuer_name(issuer)?;
        let mut map = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if let Some(Published { crl: current, .. }) = map.get(issuer) {
            let same = current.crl_number == crl.crl_number && current.der == crl.der;
            if same {
                return Ok(());
            }
            if crl.crl_number <= current.crl_number {
                return Err(PublishError::Stale {
                    issuer: issuer.to_string(),
                    current: current.crl_number,
                    offered: crl.crl_number,
                });
            }
        }
        tracing::info!(
            issuer,
            crl_number = crl.crl_number,
            entries = crl.entries,
            next_update = %crl.next_update,
            "publishing CRL"
        );
        let published = Published {
            der: Bytes::from(crl.der.clone()),
            pem: Bytes::from(crl.pem.clone().into_bytes()),
            crl: Arc::new(crl),
        };
        map.insert(issuer.to_string(), published);
        Ok(())
    }

    /// The CRL being served for `issuer`.
    pub fn get(&self, issuer: &str) -> Option<Arc<SignedCrl>> {
        self.published(issuer).map(|p| p.crl)
    }

    fn published(&self, issuer: &str) -> Option<Published> {
        let map = self.inner.read().unwrap_or_else(|p| p.into_inner());
        map.get(issuer).cloned()
    }
}

/// The OCSP responder being used, swappable (e.g. after an intermediate rotation). Without
/// one, OCSP requests are answered `tryLater`.
#[derive(Debug, Clone, Default)]
pub struct OcspHandle {
    inner: Arc<RwLock<Option<Arc<Responder>>>>,
}

impl OcspHandle {
    /// No responder yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A handle serving `responder`.
    pub fn with_responder(responder: Arc<Responder>) -> Self {
        let handle = Self::new();
        handle.set(Some(responder));
        handle
    }

    /// Replaces the responder.
    pub fn set(&self, responder: Option<Arc<Responder>>) {
        *self.inner.write().unwrap_or_else(|p| p.into_inner()) = responder;
    }

    /// The current responder.
    pub fn get(&self) -> Option<Arc<Responder>> {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Limits and cache lifetimes of the HTTP endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpConfig {
    /// A connection must send its request headers within this time (slow clients are
    /// dropped).
    pub header_read_timeout: std::time::Duration,
    /// A POST body must arrive within this time.
    pub body_read_timeout: std::time::Duration,
    /// Largest `Cache-Control: max-age` of a GET OCSP response (never beyond its
    /// nextUpdate).
    pub ocsp_max_age: Duration,
    /// Largest `Cache-Control: max-age` of a CRL (never beyond its nextUpdate).
    pub crl_max_age: Duration,
    /// How long shutdown waits for open connections to finish.
    pub drain_timeout: std::time::Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: std::time::Duration::from_secs(10),
            body_read_timeout: std::time::Duration::from_secs(10),
            ocsp_max_age: Duration::hours(1),
            crl_max_age: Duration::hours(1),
            drain_timeout: std::time::Duration::from_secs(10),
        }
    }
}

/// Source of the current time (injectable for tests).
pub type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

/// The revocation HTTP server: CRLs, OCSP and health.
#[derive(Clone)]
pub struct RevocationHttp {
    crls: CrlHandle,
    ocsp: OcspHandle,
    config: HttpConfig,
    clock: Clock,
}

impl std::fmt::Debug for RevocationHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationHttp")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RevocationHttp {
    /// Serves the CRLs of `crls` and answers OCSP with `ocsp`, using the system clock.
    pub fn new(crls: CrlHandle, ocsp: OcspHandle, config: HttpConfig) -> Self {
        Self {
            crls,
            ocsp,
            config,
            clock: Arc::new(OffsetDateTime::now_utc),
        }
    }

    /// Uses `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The routes, for embedding in another server.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/healthz", get(healthz))
            .route("/crl/{file}", get(crl))
            .route("/ocsp", post(ocsp_post))
            .route("/ocsp/", post(ocsp_post))
            .route("/ocsp/{*request}", get(ocsp_get))
            .with_state(self.clone())
    }

    /// Serves HTTP/1.1 on `listener` until `shutdown` completes, then stops accepting and
    /// waits (at most [`HttpConfig::drain_timeout`]) for open connections.
    pub async fn serve<F>(self, listener: TcpListener, shutdown: F) -> io::Result<()>
    where
        F: Future<Output = ()> + Send,
    {
        let router = self.router();
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        let local = listener.local_addr()?;
        tracing::info!(%local, "revocation HTTP server listening");
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let service = hyper_util::service::TowerToHyperService::new(router.clone());
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(self.config.header_read_timeout)
                .max_buf_size(128 * 1024);
            let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                }
            });
        }
        tracing::info!(%local, "revocation HTTP server draining");
        tokio::select! {
            () = graceful.shutdown() => {}
            () = tokio::time::sleep(self.config.drain_timeout) => {
                tracing::warn!("connections still open after the drain timeout; closing");
            }
        }
        Ok(())
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// IMF-fixdate (RFC 9110 5.6.7).
fn http_date(at: OffsetDateTime) -> String {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let at = at.to_offset(UtcOffset::UTC);
    let day = DAYS
        .get(usize::from(at.weekday().number_days_from_monday()))
        .copied()
        .unwrap_or("Mon");
    let month = MONTHS
        .get(usize::from(u8::from(at.month())).saturating_sub(1))
        .copied()
        .unwrap_or("Jan");
    format!(
        "{day}, {:02} {month} {:04} {:02}:{:02}:{:02} GMT",
        at.day(),
        at.year(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// `max-age` in seconds: until `next_update`, capped, never negative.
fn max_age(now: OffsetDateTime, next_update: OffsetDateTime, cap: Duration) -> i64 {
    (next_update - now).min(cap).whole_seconds().max(0)
}

fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

async fn crl(
    State(http): State<RevocationHttp>,
    Path(file): Path<String>,
    RawQuery(query): RawQuery,
) -> Response<Body> {
    let pem_query = query
        .as_deref()
        .map(|q| q.split('&').any(|p| p.eq_ignore_ascii_case("format=pem")))
        .unwrap_or(false);
    let (issuer, pem) = if let Some(issuer) = file.strip_suffix(".crl") {
        (issuer, pem_query)
    } else if let Some(issuer) = file.strip_suffix(".pem") {
        (issuer, true)
    } else {
        return plain(StatusCode::NOT_FOUND, "not found: use /crl/<issuer>.crl\n");
    };
    let Some(published) = http.crls.published(issuer) else {
        return plain(StatusCode::NOT_FOUND, "no CRL for this issuer\n");
    };
    let now = (http.clock)();
    let (body, content_type) = if pem {
        (Body::from(published.pem), CONTENT_TYPE_PEM)
    } else {
        (Body::from(published.der), CONTENT_TYPE_CRL)
    };
    let crl = published.crl;
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::LAST_MODIFIED,
        header_value(&http_date(crl.this_update)),
    );
    headers.insert(header::EXPIRES, header_value(&http_date(crl.next_update)));
    headers.insert(
        header::ETAG,
        header_value(&format!("\"{}\"", crl.sha256_hex)),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header_value(&format!(
            "public, max-age={}, no-transform",
            max_age(now, crl.next_update, http.config.crl_max_age)
        )),
    );
    response
}

fn ocsp_http_response(
    response: OcspResponse,
    cacheable_until: Option<(OffsetDateTime, Duration)>,
) -> Response<Body> {
    let mut http_response = Response::new(Body::from(response.der));
    let headers = http_response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(CONTENT_TYPE_OCSP_RESPONSE),
    );
    match (
        response.status,
        response.this_update,
        response.next_update,
        cacheable_until,
    ) {
        (
            OcspResponseStatus::Successful,
            Some(this_update),
            Some(next_update),
            Some((now, cap)),
        ) => {
            // RFC 5019 6.2: caching headers for GET responses.
            headers.insert(header::LAST_MODIFIED, header_value(&http_date(this_update)));
            headers.insert(header::EXPIRES, header_value(&http_date(next_update)));
            headers.insert(
                header::CACHE_CONTROL,
                header_value(&format!(
                    "public, max-age={}, no-transform, must-revalidate",
                    max_age(now, next_update, cap)
                )),
            );
        }
        _ => {
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
    }
    http_response
}

fn log_ocsp(method: &'static str, response: &OcspResponse) {
    match response.status {
        OcspResponseStatus::Successful => tracing::debug!(
            method,
            answers = response.answers.len(),
            "OCSP request answered"
        ),
        // Client garbage is routine on a public endpoint: not worth more than debug.
        OcspResponseStatus::MalformedRequest => tracing::debug!(
            method,
            error = response.error.as_deref().unwrap_or(""),
            "OCSP request malformed"
        ),
        status => tracing::warn!(
            method,
            status = status.as_str(),
            error = response.error.as_deref().unwrap_or(""),
            "OCSP request not answered"
        ),
    }
}

async fn ocsp_post(State(http): State<RevocationHttp>, body: Body) -> Response<Body> {
    let Some(responder) = http.ocsp.get() else {
        let response = OcspResponse::error(OcspResponseStatus::TryLater, "no OCSP responder");
        return ocsp_http_response(response, None);
    };
    let limit = responder.config().max_request_bytes;
    let bytes = tokio::time::timeout(
        http.config.body_read_timeout,
        axum::body::to_bytes(body, limit),
    )
    .await;
    let response = match bytes {
        Ok(Ok(bytes)) => responder.respond(&bytes, (http.clock)()),
        Ok(Err(e)) => OcspResponse::error(
            OcspResponseStatus::MalformedRequest,
            format!("request body unreadable or larger than {limit} bytes ({e})"),
        ),
        Err(_) => OcspResponse::error(
            OcspResponseStatus::MalformedRequest,
            "request body not received in time",
        ),
    };
    log_ocsp("POST", &response);
    ocsp_http_response(response, None)
}

async fn ocsp_get(State(http): State<RevocationHttp>, uri: Uri) -> Response<Body> {
    let Some(responder) = http.ocsp.get() else {
        let response = OcspResponse::error(OcspResponseStatus::TryLater, "no OCSP responder");
        return ocsp_http_response(response, None);
    };
    // The raw path: the request is base64, whose '/' and '+' must not be reinterpreted.
    let encoded = uri.path().strip_prefix("/ocsp/").unwrap_or_default();
    let now = (http.clock)();
    let response = responder.respond_get(encoded, now);
    log_ocsp("GET", &response);
    ocsp_http_response(response, Some((now, http.config.ocsp_max_age)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        let at = time::macros::datetime!(1994-11-06 08:49:37.5 UTC);
        assert_eq!(http_date(at), "Sun, 06 Nov 1994 08:49:37 GMT");
    }

    #[test]
    fn max_age_is_capped_and_never_negative() {
        let now = time::macros::datetime!(2026-01-01 00:00 UTC);
        assert_eq!(
            max_age(now, now + Duration::days(2), Duration::hours(1)),
            3600
        );
        assert_eq!(
            max_age(now, now + Duration::minutes(5), Duration::hours(1)),
            300
        );
        assert_eq!(
            max_age(now, now - Duration::minutes(5), Duration::hours(1)),
            0
        );
    }

    #[test]
    fn issuer_names() {
        for ok in ["intermediate", "ca-intermediate-0123abcd", "a.b_c"] {
            assert!(validate_issuer_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".x", "-x", "a/b", "a b", &"x".repeat(65)] {
            assert!(validate_issuer_name(bad).is_err(), "{bad:?}");
        }
    }
}
