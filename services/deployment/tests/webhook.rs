//! The webhook destination against a small real HTTP/1.1 receiver (plain and TLS) on
//! loopback: signature, payload, retries with one delivery id, refusals.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use certledger_deployment::{
    Bundle, Destination, Evidence, Removed, Step, WebhookConfig, WebhookDestination, WebhookEvent,
    WebhookSecret,
};
use common::TestCa;
use hmac::{Hmac, KeyInit, Mac};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use uuid::Uuid;

const SECRET: &str = "correct horse battery staple";

#[derive(Debug, Clone)]
struct Received {
    headers: HashMap<String, String>,
    body: Vec<u8>,
    answered: u16,
    at: Instant,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// A tiny HTTP/1.1 receiver: answers the n-th request with `statuses[n]` (200 past the
/// end), one request per connection, and records what it got.
struct Receiver {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(statuses: Vec<u16>, tls: Option<TlsAcceptor>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let counter = Arc::new(AtomicUsize::new(0));
        let statuses = Arc::new(statuses);
        let task = {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        return;
                    };
                    let (log, counter, statuses, tls) = (
                        Arc::clone(&log),
                        Arc::clone(&counter),
                        Arc::clone(&statuses),
                        tls.clone(),
                    );
                    tokio::spawn(async move {
                        match tls {
                            Some(acceptor) => {
                                if let Ok(stream) = acceptor.accept(tcp).await {
                                    serve(stream, log, counter, statuses).await;
                                }
                            }
                            None => serve(tcp, log, counter, statuses).await,
                        }
                    });
                }
            })
        };
        Receiver { addr, log, task }
    }

    fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}/hooks/certledger?tenant=t1", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.log.lock().expect("log").clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    log: Arc<Mutex<Vec<Received>>>,
    counter: Arc<AtomicUsize>,
    statuses: Arc<Vec<u16>>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    assert!(
        request_line.starts_with("POST /hooks/certledger?tenant=t1 HTTP/1.1"),
        "{request_line}"
    );
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .expect("content-length");
    let mut body = buf[header_end + 4..].to_vec();
    while body.len() < length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    let n = counter.fetch_add(1, Ordering::SeqCst);
    let status = statuses.get(n).copied().unwrap_or(200);
    log.lock().expect("log").push(Received {
        headers,
        body,
        answered: status,
        at: Instant::now(),
    });
    let text = format!("answer {status}");
    let response = format!(
        "HTTP/1.1 {status} Whatever\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn config(url: String) -> WebhookConfig {
    let mut config = WebhookConfig::new(url, WebhookSecret::new(SECRET.as_bytes().to_vec()));
    config.base_delay = Duration::from_millis(20);
    config.max_delay = Duration::from_millis(200);
    config.request_timeout = Duration::from_secs(5);
    config
}

/// HMAC-SHA256 computed here, independently of the crate's signing code.
fn expected_signature(body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(SECRET.as_bytes()).expect("hmac");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// And once more with the openssl command.
fn openssl_hmac(body: &[u8]) -> String {
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", SECRET, "-r"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl dgst");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body)
        .expect("pipe body");
    let out = child.wait_with_output().expect("openssl dgst");
    let text = String::from_utf8_lossy(&out.stdout);
    format!("sha256={}", text.split_whitespace().next().expect("digest"))
}

fn bundle(ca: &TestCa, id: &str) -> Bundle {
    ca.bundle(id, &["api.example.test"], &[])
}

#[tokio::test]
async fn delivers_a_signed_payload_without_the_key_by_default() {
    let ca = TestCa::new();
    let a = bundle(&ca, "cert-a");
    let receiver = Receiver::start(vec![], None).await;
    let dest = WebhookDestination::new(config(receiver.url("http"))).expect("config");

    let installed = dest.install(&a).await.expect("delivered");
    assert_eq!(installed.verified_fingerprint, a.fingerprint());
    let Evidence::Delivered {
        delivery_id,
        attempts,
        status,
    } = installed.evidence
    else {
        panic!("unexpected evidence {:?}", installed.evidence);
    };
    assert_eq!((attempts, status), (1, 200));

    let got = receiver.received();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(r.header("host"), receiver.addr.to_string());
    assert_eq!(r.header("x-certledger-event"), "certificate.deployed");
    assert_eq!(r.header("x-certledger-attempt"), "1");
    assert_eq!(
        r.header("x-certledger-delivery")
            .parse::<Uuid>()
            .expect("uuid"),
        delivery_id
    );
    let signature = r.header("x-certledger-signature");
    assert_eq!(signature, expected_signature(&r.body));
    assert_eq!(signature, openssl_hmac(&r.body));

    let json = r.json();
    assert_eq!(json["event"], "certificate.deployed");
    assert_eq!(json["delivery_id"], delivery_id.to_string());
    assert_eq!(json["certificate_id"], "cert-a");
    assert_eq!(json["fingerprint_sha256"], a.fingerprint());
    assert_eq!(json["certificate_pem"], a.certificate_pem());
    assert_eq!(json["chain_pem"], a.chain_pem());
    assert!(json.get("private_key_pem").is_none(), "{json}");
    assert!(!String::from_utf8_lossy(&r.body).contains("PRIVATE KEY"));
    assert!(
        json["created_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
}

#[tokio::test]
async fn sends_the_key_only_when_configured() {
    let ca = TestCa::new();
    let a = bundle(&ca, "cert-a");
    let receiver = Receiver::start(vec![], None).await;
    let mut config = config(receiver.url("http"));
    config.include_private_key = true;
    let dest = WebhookDestination::new(config).expect("config");
    dest.install(&a).await.expect("delivered");

    let got = receiver.received();
    let json = got[0].json();
    assert_eq!(
        json["private_key_pem"],
        a.private_key().expect("key").expose_pem()
    );
    assert_eq!(
        got[0].header("x-certledger-signature"),
        expected_signature(&got[0].body)
    );
}

#[tokio::test]
async fn retries_server_errors_with_one_delivery_id_and_succeeds_once() {
    let ca = TestCa::new();
    let a = bundle(&ca, "cert-a");
    let receiver = Receiver::start(vec![500, 500], None).await;
    let dest = WebhookDestination::new(config(receiver.url("http"))).expect("config");

    let installed = dest
        .install(&a)
        .await
        .expect("delivered on the third attempt");
    let Evidence::Delivered {
        delivery_id,
        attempts,
        status,
    } = installed.evidence
    else {
        panic!("unexpected evidence");
    };
    assert_eq!((attempts, status), (3, 200));

    let got = receiver.received();
    assert_eq!(got.len(), 3);
    let ids: Vec<&str> = got
        .iter()
        .map(|r| r.header("x-certledger-delivery"))
        .collect();
    assert!(
        ids.iter().all(|id| *id == delivery_id.to_string()),
        "{ids:?}"
    );
    let attempt_headers: Vec<&str> = got
        .iter()
        .map(|r| r.header("x-certledger-attempt"))
        .collect();
    assert_eq!(attempt_headers, ["1", "2", "3"]);
    // The same body (and so the same signature) every time.
    assert!(got.iter().all(|r| r.body == got[0].body));
    assert!(
        got.iter()
            .all(|r| r.header("x-certledger-signature") == expected_signature(&r.body))
    );
    // A receiver deduplicating by delivery id processes the certificate exactly once.
    let accepted: Vec<&Received> = got.iter().filter(|r| r.answered / 100 == 2).collect();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].json()["fingerprint_sha256"], a.fingerprint());
    // Exponential backoff: at least 20 ms, then at least 40 ms between attempts.
    assert!(got[1].at - got[0].at >= Duration::from_millis(20));
    assert!(got[2].at - got[1].at >= Duration::from_millis(40));
}

#[tokio::test]
async fn gives_up_after_max_attempts() {
    let ca = TestCa::new();
    let a = bundle(&ca, "cert-a");
    let receiver = Receiver::start(vec![503; 10], None).await;
    let mut config = config(receiver.url("http"));
    config.max_attempts = 3;
    let dest = WebhookDestination::new(config).expect("config");

    let err = dest.install(&a).await.expect_err("must fail");
    assert_eq!(err.step, Step::Webhook);
    assert_eq!(
        err.observed.as_deref(),
        Some("HTTP 503 Service Unavailable: answer 503")
    );
    assert!(err.message.contains("after 3 attempts"), "{}", err.message);
    assert_eq!(receiver.received().len(), 3);
}

#[tokio::test]
async fn a_refusal_is_not_retried() {
    let ca = TestCa::new();
    let a = bundle(&ca, "cert-a");
    let receiver = Receiver::start(vec![401], None).await;
    let dest = WebhookDestination::new(config(receiver.url("http"))).expect("config");

    let err = dest.install(&a).await.expect_err("must fail");
    assert_eq!(err.step, Step::Webhook);
    assert!(
        err.observed.as_deref().is_some_and(|o| o.contains("401")),
        "{err:?}"
    );
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test]
async fn an_unreachable_receiver_is_retried_then_reported() {
    let ca = TestCa::new();
    let a = bundle(&ca, "cert-a");
    let port = common::free_port();
    let mut config = config(format!("http://127.0.0.1:{port}/hook"));
    config.max_attempts = 2;
    let dest = WebhookDestination::new(config).expect("config");
    let err = dest.install(&a).await.expect_err("must fail");
    assert_eq!(err.step, Step::Webhook);
    assert!(
        err.observed
            .as_deref()
            .is_some_and(|o| o.contains("cannot connect")),
        "{err:?}"
    );
}

#[tokio::test]
async fn removal_is_announced_without_certificate_or_key() {
    let ca = TestCa::new();
    let a = bundle(&ca, "cert-a");
    let receiver = Receiver::start(vec![], None).await;
    let mut config = config(receiver.url("http"));
    config.include_private_key = true;
    let dest = WebhookDestination::new(config).expect("config");
    assert_eq!(dest.remove(&a).await.expect("removed"), Removed::Removed);

    let got = receiver.received();
    let json = got[0].json();
    assert_eq!(got[0].header("x-certledger-event"), "certificate.removed");
    assert_eq!(json["event"], "certificate.removed");
    assert_eq!(json["fingerprint_sha256"], a.fingerprint());
    for absent in ["certificate_pem", "chain_pem", "private_key_pem"] {
        assert!(json.get(absent).is_none(), "{absent} in {json}");
    }

    // An explicit delivery id (the service redelivering after a restart) is used as is.
    let id = Uuid::now_v7();
    let delivered = dest
        .deliver(WebhookEvent::Deployed, &a, id)
        .await
        .expect("delivered");
    assert_eq!(delivered.delivery_id, id);
    assert_eq!(
        receiver.received()[1].header("x-certledger-delivery"),
        id.to_string()
    );
}

fn tls_acceptor(server: &Bundle) -> TlsAcceptor {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(server.full_chain_pem().as_bytes())
            .collect::<Result<_, _>>()
            .expect("chain");
    let key =
        PrivateKeyDer::from_pem_slice(server.private_key().expect("key").expose_pem().as_bytes())
            .expect("key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("server config");
    TlsAcceptor::from(Arc::new(config))
}

#[tokio::test]
async fn https_receivers_are_verified_against_the_configured_roots() {
    let ca = TestCa::new();
    let a = bundle(&ca, "cert-a");
    let server = ca.bundle(
        "receiver",
        &["localhost"],
        &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
    );
    let receiver = Receiver::start(vec![], Some(tls_acceptor(&server))).await;

    // Trusting certledger's root: delivered.
    let mut trusted = config(receiver.url("https"));
    trusted.extra_root_certificates_pem = Some(ca.root_pem().to_string());
    let dest = WebhookDestination::new(trusted).expect("config");
    dest.install(&a).await.expect("delivered over TLS");
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].header("x-certledger-signature"),
        expected_signature(&got[0].body)
    );

    // Without it the receiver's certificate is not trusted, and nothing is sent.
    let mut untrusted = config(receiver.url("https"));
    untrusted.max_attempts = 1;
    match WebhookDestination::new(untrusted) {
        Ok(dest) => {
            let err = dest.install(&a).await.expect_err("untrusted receiver");
            assert_eq!(err.step, Step::Webhook);
            assert!(
                err.observed
                    .as_deref()
                    .is_some_and(|o| o.contains("TLS handshake") && o.contains("UnknownIssuer")),
                "{err:?}"
            );
        }
        // A machine without the ca-certificates package has no system trust anchors.
        Err(e) => assert!(e.message.contains("trust anchors"), "{e}"),
    }
    assert_eq!(receiver.received().len(), 1);
}
