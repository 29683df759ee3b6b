//! Test support: an isolated event log (a fresh PostgreSQL schema, dropped afterwards, or
//! an in-memory SQLite log), the order service started in-process on a free port, and
//! CSRs made with the `openssl` command.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use certledger_eventstream::consumer::EventSource;
use certledger_order::{CertificateList, OrderSetup, start};
use certledger_proto::common::v1::{
    CertificateSpec, DomainSlotKind, KeyAlgorithm, ValidationMethod,
};
use certledger_proto::order::v1::order_service_client::OrderServiceClient;
use certledger_proto::order::v1::{Application, application::KeySource};
use certledger_runtime::server::{RunningService, ServerOptions};
#[allow(unused_imports)] // not every test binary uses both
pub use certledger_testkit::db::{TestDb, pg_url};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// Upper bound for anything a test waits for; reaching it means a bug.
pub const DEADLINE: Duration = Duration::from_secs(60);

pub struct OrderUnderTest {
    pub service: RunningService,
    pub client: OrderServiceClient<Channel>,
}

/// Starts the order service on a free port, with the list read model fed by the SQL tail.
pub async fn start_order(db: &TestDb) -> OrderUnderTest {
    let schema = if db.schema.is_empty() {
        "eventlog"
    } else {
        &db.schema
    };
    let list = CertificateList::open(&db.url, schema)
        .await
        .expect("list table");
    let service = start(
        OrderSetup {
            repo: certledger_runtime::CertificateRepository::new(db.log.clone()),
            listen: "127.0.0.1:0".parse().unwrap(),
            issuers: vec!["builtin".into()],
            server: ServerOptions::default(),
            list: Some((
                list,
                EventSource::SqlTail {
                    log: db.log.clone(),
                },
            )),
            renewal: Default::default(),
            tasks: vec![],
        },
        CancellationToken::new(),
    )
    .await
    .expect("start order service");
    let client = OrderServiceClient::connect(service.url())
        .await
        .expect("connect");
    OrderUnderTest { service, client }
}

pub use certledger_testkit::certificate_spec as spec;

pub fn multi(max: u32) -> CertificateSpec {
    spec(DomainSlotKind::Multi, max, ValidationMethod::Approval)
}

pub fn generated(domains: &[&str]) -> Application {
    Application {
        domains: domains.iter().map(|d| (*d).to_owned()).collect(),
        key_source: Some(KeySource::GenerateKey(KeyAlgorithm::EcdsaP256 as i32)),
        ..Default::default()
    }
}

pub fn with_csr(domains: &[&str], csr_pem: String) -> Application {
    Application {
        domains: domains.iter().map(|d| (*d).to_owned()).collect(),
        key_source: Some(KeySource::CsrPem(csr_pem)),
        ..Default::default()
    }
}

/// A CSR made by `openssl req` with `newkey` (e.g. `ec`, `rsa:2048`) for `names`.
pub fn openssl_csr(dir: &Path, newkey: &str, names: &[&str]) -> String {
    let key = dir.join(format!("{}.key", uuid::Uuid::now_v7().simple()));
    let csr = dir.join(format!("{}.csr", uuid::Uuid::now_v7().simple()));
    let san = names
        .iter()
        .map(|n| format!("DNS:{n}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut cmd = Command::new("openssl");
    cmd.args(["req", "-new", "-nodes", "-newkey", newkey]);
    if newkey == "ec" {
        cmd.args(["-pkeyopt", "ec_paramgen_curve:prime256v1"]);
    }
    cmd.arg("-keyout").arg(&key).arg("-out").arg(&csr).args([
        "-subj",
        &format!("/CN={}", names.first().copied().unwrap_or("x")),
    ]);
    if !names.is_empty() {
        cmd.args(["-addext", &format!("subjectAltName={san}")]);
    }
    let out = cmd.output().expect("run openssl");
    assert!(
        out.status.success(),
        "openssl req failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(csr).expect("read csr")
}

/// The same CSR with one byte of its signature changed (still parses, does not verify).
pub fn corrupt_signature(csr_pem: &str) -> String {
    use base64::Engine;
    let b64: String = csr_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let mut der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64");
    let n = der.len();
    der[n - 3] ^= 0x01;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE REQUEST-----\n");
    for chunk in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).unwrap());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE REQUEST-----\n");
    pem
}

/// A request carrying the tenant header.
pub fn as_tenant<T>(tenant: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-certledger-tenant", tenant.parse().unwrap());
    request
}
