//! Webhook receivers: the certificate is POSTed as JSON, signed with a shared secret.
//!
//! Headers of every request:
//!
//! * `X-Certledger-Signature: sha256=<hex HMAC-SHA256(secret, body)>` — the receiver
//!   recomputes it over the raw body and compares in constant time;
//! * `X-Certledger-Delivery: <uuid>` — the same on every attempt of one delivery, so a
//!   receiver that saw it already can answer 2xx and do nothing;
//! * `X-Certledger-Event: certificate.deployed | certificate.removed`;
//! * `X-Certledger-Attempt: <n>` (1-based).
//!
//! The body (identical on every attempt) is [`Payload`]. The private key is included only
//! when the target is configured for it (and certledger holds the key).
//!
//! A 2xx answer is success. Transport errors, timeouts, 408, 425, 429 and 5xx are retried
//! with exponential backoff up to `max_attempts`; any other answer (a 4xx such as a
//! rejected signature, a redirect) fails at once: repeating the request would not change it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use serde::Serialize;
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tracing::Instrument as _;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::bundle::Bundle;
use crate::destination::{DeployError, Destination, Evidence, Installed, Removed, Step};
use crate::nginx::ConfigError;

/// Header carrying the body's signature.
pub const SIGNATURE_HEADER: &str = "X-Certledger-Signature";
/// Header carrying the delivery id.
pub const DELIVERY_HEADER: &str = "X-Certledger-Delivery";
/// Header carrying the event name.
pub const EVENT_HEADER: &str = "X-Certledger-Event";
/// Header carrying the attempt number.
pub const ATTEMPT_HEADER: &str = "X-Certledger-Attempt";
/// Attempts when the configuration says 0.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

const RESPONSE_SNIPPET: usize = 512;

/// The shared secret deliveries are signed with. `Debug` does not show it; zeroed on drop.
#[derive(Clone)]
pub struct WebhookSecret(Zeroizing<Vec<u8>>);

impl WebhookSecret {
    /// Wraps the secret bytes.
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self(Zeroizing::new(secret.into()))
    }

    /// `sha256=<hex>` of `body`, the value of [`SIGNATURE_HEADER`].
    pub fn sign(&self, body: &[u8]) -> String {
        format!("sha256={}", hex::encode(hmac_sha256(&self.0, body)))
    }

    /// Checks a [`SIGNATURE_HEADER`] value against `body` in constant time (what a receiver
    /// does; also used by the tests).
    pub fn verify(&self, body: &[u8], header: &str) -> bool {
        let Some(hex_sig) = header.trim().strip_prefix("sha256=") else {
            return false;
        };
        let Ok(sig) = hex::decode(hex_sig) else {
            return false;
        };
        let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0) else {
            return false;
        };
        mac.update(body);
        mac.verify_slice(&sig).is_ok()
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

fn hmac_sha256(key: &[u8], body: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length: new_from_slice cannot fail for it.
    match <Hmac<Sha256> as KeyInit>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(body);
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// Where and how to deliver.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// `http://` or `https://` URL.
    pub url: String,
    /// The shared secret.
    pub secret: WebhookSecret,
    /// Whether the private key is sent (when certledger holds it).
    pub include_private_key: bool,
    /// Attempts in all (0 means [`DEFAULT_MAX_ATTEMPTS`]).
    pub max_attempts: u32,
    /// Pause before the second attempt; doubles after each.
    pub base_delay: Duration,
    /// The longest pause.
    pub max_delay: Duration,
    /// Time allowed for one attempt: connect, TLS, request, response headers.
    pub request_timeout: Duration,
    /// PEM trust anchors for `https://` receivers, added to the system's (e.g. certledger's
    /// own private root for an internal receiver).
    pub extra_root_certificates_pem: Option<String>,
}

impl WebhookConfig {
    /// 5 attempts, 1 s doubling up to 60 s, 10 s per attempt, no key.
    pub fn new(url: impl Into<String>, secret: WebhookSecret) -> Self {
        Self {
            url: url.into(),
            secret,
            include_private_key: false,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            extra_root_certificates_pem: None,
        }
    }
}

/// What a delivery is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookEvent {
    /// The certificate is to be used (from [`Destination::install`]).
    Deployed,
    /// The certificate is to be taken out of use (from [`Destination::remove`]).
    Removed,
}

impl WebhookEvent {
    /// `certificate.deployed` or `certificate.removed`.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEvent::Deployed => "certificate.deployed",
            WebhookEvent::Removed => "certificate.removed",
        }
    }
}

/// The JSON body. PEM fields are present for `certificate.deployed` only; `private_key_pem`
/// only when configured.
#[derive(Serialize)]
pub struct Payload<'a> {
    /// [`WebhookEvent::as_str`].
    pub event: &'a str,
    /// Same as the [`DELIVERY_HEADER`].
    pub delivery_id: Uuid,
    /// certledger's certificate id.
    pub certificate_id: &'a str,
    /// SHA-256 of the certificate's DER, lower-case hex.
    pub fingerprint_sha256: &'a str,
    /// The leaf certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_pem: Option<&'a str>,
    /// The chain (issuer first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain_pem: Option<&'a str>,
    /// The private key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key_pem: Option<&'a str>,
    /// When the delivery was created (RFC 3339, UTC); the same on every attempt.
    pub created_at: String,
}

/// A delivery the receiver accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The delivery id.
    pub delivery_id: Uuid,
    /// Attempts it took.
    pub attempts: u32,
    /// The receiver's 2xx status.
    pub status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    https: bool,
    host: String,
    port: u16,
    /// Host header value.
    authority: String,
    path_and_query: String,
}

impl Endpoint {
    fn parse(url: &str) -> Result<Self, ConfigError> {
        let bad = |why: &str| ConfigError::new("url", format!("{url:?} {why}"));
        let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(bad("is not an http:// or https:// URL"));
        };
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("contains white space"));
        }
        let rest = rest.split('#').next().unwrap_or_default();
        let (authority, path_and_query) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('?') => (&rest[..i], format!("/{}", &rest[i..])),
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        if authority.contains('@') {
            return Err(bad("must not carry credentials; the secret signs the body"));
        }
        let default_port = if https { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("has a bad IPv6 host"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad("has a bad port"))?,
                None if after.is_empty() => default_port,
                None => return Err(bad("has a bad IPv6 host")),
            };
            (host.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad("has a bad port"))?),
                None => (authority.to_string(), default_port),
            }
        };
        if host.is_empty() {
            return Err(bad("has no host"));
        }
        Ok(Self {
            https,
            host,
            port,
            authority: authority.to_string(),
            path_and_query,
        })
    }

    fn connect_address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The [`Destination`] delivering to a webhook receiver.
pub struct WebhookDestination {
    config: WebhookConfig,
    endpoint: Endpoint,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl fmt::Debug for WebhookDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookDestination")
            .field("config", &self.config)
            .field("https", &self.tls.is_some())
            .finish()
    }
}

impl WebhookDestination {
    /// Checks the URL and, for `https://`, builds the TLS client (system trust anchors plus
    /// the extra ones).
    pub fn new(mut config: WebhookConfig) -> Result<Self, ConfigError> {
        let endpoint = Endpoint::parse(&config.url)?;
        if config.max_attempts == 0 {
            config.max_attempts = DEFAULT_MAX_ATTEMPTS;
        }
        let tls = if endpoint.https {
            let name = ServerName::try_from(endpoint.host.clone())
                .map_err(|_| ConfigError::new("url", "the host is not a valid TLS name"))?;
            Some((
                TlsConnector::from(tls_client(config.extra_root_certificates_pem.as_deref())?),
                name,
            ))
        } else {
            None
        };
        Ok(Self {
            config,
            endpoint,
            tls,
        })
    }

    /// The settings.
    pub fn config(&self) -> &WebhookConfig {
        &self.config
    }

    /// Delivers `event` for `bundle` under `delivery_id`, retrying as configured. Give the
    /// same id to redeliver the same deployment (after a restart, say) so the receiver can
    /// deduplicate; [`Destination::install`] uses a fresh UUIDv7.
    pub async fn deliver(
        &self,
        event: WebhookEvent,
        bundle: &Bundle,
        delivery_id: Uuid,
    ) -> Result<Delivered, DeployError> {
        let span = tracing::info_span!(
            "webhook_delivery",
            url = %self.config.url,
            event = event.as_str(),
            %delivery_id,
            certificate_id = bundle.certificate_id(),
        );
        self.deliver_inner(event, bundle, delivery_id)
            .instrument(span)
            .await
    }

    async fn deliver_inner(
        &self,
        event: WebhookEvent,
        bundle: &Bundle,
        delivery_id: Uuid,
    ) -> Result<Delivered, DeployError> {
        let deployed = event == WebhookEvent::Deployed;
        let key = if deployed && self.config.include_private_key {
            bundle.private_key().map(|k| k.expose_pem())
        } else {
            None
        };
        let payload = Payload {
            event: event.as_str(),
            delivery_id,
            certificate_id: bundle.certificate_id(),
            fingerprint_sha256: bundle.fingerprint(),
            certificate_pem: deployed.then(|| bundle.certificate_pem()),
            chain_pem: deployed.then(|| bundle.chain_pem()),
            private_key_pem: key,
            created_at: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        };
        let body = Zeroizing::new(serde_json::to_vec(&payload).map_err(|e| {
            DeployError::new(Step::Webhook, format!("cannot encode the payload: {e}"))
        })?);
        let signature = self.config.secret.sign(&body);

        let max = self.config.max_attempts.max(1);
        let mut last = String::new();
        for attempt in 1..=max {
            match self
                .post(&body, &signature, event, delivery_id, attempt)
                .await
            {
                Ok((status, _)) if status.is_success() => {
                    tracing::info!(attempt, status = status.as_u16(), "delivered");
                    return Ok(Delivered {
                        delivery_id,
                        attempts: attempt,
                        status: status.as_u16(),
                    });
                }
                Ok((status, snippet)) => {
                    last = describe(status, &snippet);
                    if !retryable(status) {
                        tracing::warn!(attempt, observed = %last, "refused; not retrying");
                        return Err(DeployError::new(
                            Step::Webhook,
                            format!(
                                "{} refused the delivery on attempt {attempt} (not retried: \
                                 repeating it would not change the answer)",
                                self.config.url
                            ),
                        )
                        .with_observed(last));
                    }
                    tracing::warn!(attempt, observed = %last, "attempt failed");
                }
                Err(e) => {
                    tracing::warn!(attempt, error = %e, "attempt failed");
                    last = e;
                }
            }
            if attempt < max {
                tokio::time::sleep(self.delay_before(attempt + 1)).await;
            }
        }
        Err(DeployError::new(
            Step::Webhook,
            format!(
                "{} did not accept the delivery after {max} attempts",
                self.config.url
            ),
        )
        .with_observed(last))
    }

    /// The pause before attempt `n` (n ≥ 2): base · 2^(n−2), at most `max_delay`.
    fn delay_before(&self, n: u32) -> Duration {
        let factor = 1u32 << n.saturating_sub(2).min(20);
        self.config
            .base_delay
            .saturating_mul(factor)
            .min(self.config.max_delay)
    }

    /// One attempt: status and the start of the response body.
    async fn post(
        &self,
        body: &[u8],
        signature: &str,
        event: WebhookEvent,
        delivery_id: Uuid,
        attempt: u32,
    ) -> Result<(StatusCode, String), String> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.endpoint.path_and_query.as_str())
            .header(HOST, self.endpoint.authority.as_str())
            .header(CONTENT_TYPE, "application/json")
            .header(
                USER_AGENT,
                concat!("certledger-deployment/", env!("CARGO_PKG_VERSION")),
            )
            .header(SIGNATURE_HEADER, signature)
            .header(DELIVERY_HEADER, delivery_id.to_string())
            .header(EVENT_HEADER, event.as_str())
            .header(ATTEMPT_HEADER, attempt.to_string())
            .body(Full::new(Bytes::copy_from_slice(body)))
            .map_err(|e| format!("cannot build the request: {e}"))?;

        let timeout = self.config.request_timeout;
        let exchange = async {
            let address = self.endpoint.connect_address();
            let tcp = TcpStream::connect(&address)
                .await
                .map_err(|e| format!("cannot connect to {address}: {e}"))?;
            let _ = tcp.set_nodelay(true);
            match &self.tls {
                Some((connector, name)) => {
                    let tls = connector
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(|e| format!("TLS handshake with {address} failed: {e}"))?;
                    send(tls, request).await
                }
                None => send(tcp, request).await,
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| format!("no answer within {} ms", timeout.as_millis()))?
    }
}

/// Sends one request on a fresh HTTP/1.1 connection; returns the status and up to
/// [`RESPONSE_SNIPPET`] bytes of the body.
async fn send<S>(io: S, request: Request<Full<Bytes>>) -> Result<(StatusCode, String), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("HTTP request failed: {e}"))?;
        let status = response.status();
        let mut body = response.into_body();
        let mut snippet = Vec::new();
        while snippet.len() < RESPONSE_SNIPPET {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        let room = RESPONSE_SNIPPET - snippet.len();
                        snippet.extend_from_slice(&data[..data.len().min(room)]);
                    }
                }
                _ => break,
            }
        }
        Ok((status, String::from_utf8_lossy(&snippet).trim().to_string()))
    }
    .await;
    driver.abort();
    result
}

fn retryable(status: StatusCode) -> bool {
    status.is_server_error() || matches!(status.as_u16(), 408 | 425 | 429)
}

fn describe(status: StatusCode, snippet: &str) -> String {
    if snippet.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {snippet}")
    }
}

fn tls_client(extra_roots_pem: Option<&str>) -> Result<Arc<ClientConfig>, ConfigError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::warn!(error = %e, "skipping unreadable system trust anchors");
    }
    roots.add_parsable_certificates(native.certs);
    if let Some(pem) = extra_roots_pem {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|e| {
                ConfigError::new("extra_root_certificates_pem", format!("not valid PEM: {e}"))
            })?;
            roots.add(cert).map_err(|e| {
                ConfigError::new(
                    "extra_root_certificates_pem",
                    format!("not a usable trust anchor: {e}"),
                )
            })?;
        }
    }
    if roots.is_empty() {
        return Err(ConfigError::new(
            "url",
            "https:// needs trust anchors: none in the system store (install ca-certificates) \
             and no extra_root_certificates_pem",
        ));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::new("url", format!("TLS client configuration: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[async_trait::async_trait]
impl Destination for WebhookDestination {
    async fn install(&self, bundle: &Bundle) -> Result<Installed, DeployError> {
        let delivered = self
            .deliver(WebhookEvent::Deployed, bundle, Uuid::now_v7())
            .await?;
        Ok(Installed {
            verified_fingerprint: bundle.fingerprint().to_string(),
            evidence: Evidence::Delivered {
                delivery_id: delivered.delivery_id,
                attempts: delivered.attempts,
                status: delivered.status,
            },
        })
    }

    /// Tells the receiver (`certificate.removed`, no PEM, no key).
    async fn remove(&self, bundle: &Bundle) -> Result<Removed, DeployError> {
        self.deliver(WebhookEvent::Removed, bundle, Uuid::now_v7())
            .await?;
        Ok(Removed::Removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let e = Endpoint::parse("http://127.0.0.1:8080/hooks/certs?x=1#frag").unwrap();
        assert!(!e.https);
        assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", 8080));
        assert_eq!(e.authority, "127.0.0.1:8080");
        assert_eq!(e.path_and_query, "/hooks/certs?x=1");
        let e = Endpoint::parse("https://hooks.example.test").unwrap();
        assert_eq!((e.port, e.path_and_query.as_str()), (443, "/"));
        let e = Endpoint::parse("http://[::1]:9000?q").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 9000));
        assert_eq!(e.path_and_query, "/?q");
        assert_eq!(e.connect_address(), "[::1]:9000");
        for bad in [
            "ftp://x",
            "http://",
            "http://user:pw@host/",
            "http://host:port/",
            "http://ho st/",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn signs_and_verifies() {
        let secret = WebhookSecret::new(b"s3cret".to_vec());
        let sig = secret.sign(b"{}");
        assert!(sig.starts_with("sha256="));
        assert_eq!(sig.len(), "sha256=".len() + 64);
        assert!(secret.verify(b"{}", &sig));
        assert!(!secret.verify(b"{ }", &sig));
        assert!(!WebhookSecret::new(b"other".to_vec()).verify(b"{}", &sig));
        assert_eq!(format!("{secret:?}"), "WebhookSecret(<redacted>)");
        // RFC 4231, test case 2.
        assert_eq!(
            WebhookSecret::new(b"Jefe".to_vec()).sign(b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut config = WebhookConfig::new("http://127.0.0.1:1/", WebhookSecret::new(vec![1]));
        config.base_delay = Duration::from_millis(100);
        config.max_delay = Duration::from_millis(350);
        let d = WebhookDestination::new(config).unwrap();
        assert_eq!(d.delay_before(2), Duration::from_millis(100));
        assert_eq!(d.delay_before(3), Duration::from_millis(200));
        assert_eq!(d.delay_before(4), Duration::from_millis(350));
        assert_eq!(d.delay_before(40), Duration::from_millis(350));
    }
}
