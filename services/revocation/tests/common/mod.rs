//! Shared helpers of the integration tests: a CA in a temporary directory, leaves, the real
//! `openssl` command, a running HTTP server and a tiny HTTP/1.1 client.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use certledger_ca::{
    Authority, AuthorityConfig, CertificateUrls, IssueRequest, IssuedCertificate, KeyAlgorithm,
    MemoryKeyStore, generate_key,
};
use certledger_revocation::{
    CrlHandle, HttpConfig, IssuerSigner, MemoryStatusSource, OcspConfig, OcspHandle, Responder,
    RevocationHttp,
};
#[allow(unused_imports)] // not every test binary uses both
pub use certledger_testkit::db::{TestDb, pg_url};
use time::OffsetDateTime;

pub fn openssl() -> Command {
    Command::new("/usr/bin/openssl")
}

/// Runs a command and returns (success, stdout, stderr).
pub fn run(cmd: &mut Command) -> (bool, String, String) {
    let out: Output = cmd.output().expect("run openssl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs a command that must succeed; returns stdout + stderr.
pub fn run_ok(cmd: &mut Command) -> String {
    let (ok, stdout, stderr) = run(cmd);
    assert!(ok, "{cmd:?} failed:\nstdout: {stdout}\nstderr: {stderr}");
    format!("{stdout}{stderr}")
}

/// A CA on disk with PEM files for openssl.
pub struct TestCa {
    pub dir: tempfile::TempDir,
    pub keys: MemoryKeyStore,
    pub authority: Authority,
    pub signer: Arc<IssuerSigner>,
    pub root_pem: PathBuf,
    pub intermediate_pem: PathBuf,
    /// root + intermediate.
    pub chain_pem: PathBuf,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        Self::with_algorithm(name, KeyAlgorithm::EcdsaP256)
    }

    /// A CA whose intermediate (the issuer of leaves, CRLs and OCSP responses) has a key of
    /// `algorithm`.
    pub fn with_algorithm(name: &str, algorithm: KeyAlgorithm) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = MemoryKeyStore::new();
        let mut config = AuthorityConfig::new(dir.path().join("ca"));
        config.bootstrap.root_common_name = format!("{name} Root CA");
        config.bootstrap.intermediate_common_name = format!("{name} Intermediate CA");
        config.bootstrap.intermediate_key_algorithm = algorithm;
        config.urls = CertificateUrls {
            crl_distribution_point: Some("http://crl.certledger.test/crl/intermediate.crl".into()),
            ocsp: Some("http://ocsp.certledger.test/ocsp".into()),
            ca_issuers: None,
        };
        let authority =
            Authority::open_or_create(&config, &keys, OffsetDateTime::now_utc()).expect("CA");
        let signer = Arc::new(IssuerSigner::from_authority(&authority, &keys).expect("signer"));
        let root_pem = dir.path().join("root.pem");
        let intermediate_pem = dir.path().join("intermediate.pem");
        let chain_pem = dir.path().join("chain.pem");
        std::fs::write(&root_pem, &authority.root().pem).expect("write");
        std::fs::write(&intermediate_pem, &authority.intermediate().pem).expect("write");
        std::fs::write(
            &chain_pem,
            format!("{}{}", authority.root().pem, authority.intermediate().pem),
        )
        .expect("write");
        Self {
            dir,
            keys,
            authority,
            signer,
            root_pem,
            intermediate_pem,
            chain_pem,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Issues a leaf for `name` and writes it to `<name>.pem`.
    pub fn issue(&self, name: &str) -> (IssuedCertificate, PathBuf) {
        let key = generate_key(KeyAlgorithm::EcdsaP256).expect("key");
        let mut request = IssueRequest::new(key.public_key.clone());
        request.dns_names = vec![format!("{name}.example.test")];
        let pending = self
            .authority
            .prepare(&request, OffsetDateTime::now_utc())
            .expect("prepare");
        let intent = pending.intent().clone();
        let cert = pending.release(&intent).expect("release");
        let path = self.path(&format!("{name}.pem"));
        std::fs::write(&path, &cert.pem).expect("write leaf");
        (cert, path)
    }
}

/// A revocation HTTP server running on a loopback port in its own runtime.
pub struct TestServer {
    pub addr: SocketAddr,
    pub crls: CrlHandle,
    pub ocsp: OcspHandle,
    pub source: Arc<MemoryStatusSource>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TestServer {
    pub fn start(ca: &TestCa) -> Self {
        Self::start_with(ca, HttpConfig::default())
    }

    pub fn start_with(ca: &TestCa, config: HttpConfig) -> Self {
        let source = Arc::new(MemoryStatusSource::new());
        let responder = Responder::new(ca.signer.clone(), source.clone(), OcspConfig::default())
            .expect("responder");
        let crls = CrlHandle::new();
        let ocsp = OcspHandle::with_responder(Arc::new(responder));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let http = RevocationHttp::new(crls.clone(), ocsp.clone(), config);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        runtime.spawn(async move {
            http.serve(listener, async {
                let _ = rx.await;
            })
            .await
            .expect("serve");
        });
        Self {
            addr,
            crls,
            ocsp,
            source,
            shutdown: Some(tx),
            runtime: Some(runtime),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(StdDuration::from_secs(5));
        }
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request with `Connection: close`.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> HttpResponse {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(StdDuration::from_secs(10)))
        .expect("timeout");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(ct) = content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("write head");
    // The server may answer (and close) before reading an oversized body.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    HttpResponse {
        status,
        headers,
        body,
    }
}

pub fn write(path: &Path, data: impl AsRef<[u8]>) {
    std::fs::write(path, data).expect("write file");
}

// ---------------------------------------------------------------------------
// A fresh PostgreSQL schema per test (the service tests)
// ---------------------------------------------------------------------------
