//! Test support: an isolated event log (fresh PostgreSQL schema or in-memory SQLite), the
//! order and issuance services in-process on free ports, a tiny HTTP server answering
//! HTTP-01 challenges, CSRs from `openssl req`, and `openssl` checks of what was issued.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use certledger_ca::{CertificateUrls, IssuancePolicy};
use certledger_eventstream::consumer::EventSource;
use certledger_issuance::ca::{CaSettings, OpenedCa, open_ca};
use certledger_issuance::http01::Http01Settings;
use certledger_issuance::{IssuanceSetup, IssuerSettings, RetryPolicy, StartedIssuance};
use certledger_order::OrderSetup;
use certledger_proto::common::v1::{
    CertificateSpec, CertificateStatus, DomainSlotKind, KeyAlgorithm, ValidationMethod,
};
use certledger_proto::issuance::v1::issuance_service_client::IssuanceServiceClient;
use certledger_proto::order::v1::order_service_client::OrderServiceClient;
use certledger_proto::order::v1::{
    Application, Certificate, GetCertificateRequest, application::KeySource,
};
use certledger_runtime::server::{RunningService, ServerOptions};
#[allow(unused_imports)] // not every test binary uses both
pub use certledger_testkit::db::{TestDb, pg_url};
use certledger_testkit::eventually;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub const DEADLINE: Duration = Duration::from_secs(90);

pub const CRL_URL: &str = "http://crl.certledger.test/crl/builtin.crl";
pub const OCSP_URL: &str = "http://ocsp.certledger.test/ocsp";

/// A CA in a temporary directory, with CRL and OCSP URLs.
pub fn test_ca(dir: &Path) -> OpenedCa {
    open_ca(&CaSettings {
        data_dir: dir.to_path_buf(),
        policy: IssuancePolicy::default(),
        urls: CertificateUrls {
            crl_distribution_point: Some(CRL_URL.into()),
            ocsp: Some(OCSP_URL.into()),
            ca_issuers: None,
        },
        keys: certledger_ca::KeyStoreKind::Sqlite.into(),
    })
    .expect("open CA")
}

/// Issuer settings for tests: quick retries, HTTP-01 names resolved to `http01`.
pub fn test_settings(http01: Option<std::net::SocketAddr>) -> IssuerSettings {
    let mut resolve = HashMap::new();
    if let Some(addr) = http01 {
        resolve.insert("*".to_owned(), addr);
    }
    IssuerSettings {
        allow_no_validation: true,
        http01: Http01Settings {
            port: 80,
            resolve,
            timeout: Duration::from_secs(5),
        },
        validation_retry: RetryPolicy {
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(500),
            max_attempts: 50,
        },
        reissue_delay: Duration::ZERO,
        ..IssuerSettings::default()
    }
}

pub struct Stack {
    pub order: RunningService,
    pub issuance: StartedIssuance,
    pub orders: OrderServiceClient<Channel>,
    pub ca: IssuanceServiceClient<Channel>,
    pub dir: tempfile::TempDir,
}

impl Stack {
    pub async fn stop(self) {
        self.issuance.service.stop().await.unwrap();
        self.order.stop().await.unwrap();
    }

    /// Waits until the certificate reaches `status` (fails early on FAILED).
    pub async fn wait_for(
        &self,
        id: &str,
        tenant: Option<&str>,
        status: CertificateStatus,
    ) -> Certificate {
        let client = self.orders.clone();
        eventually(DEADLINE, &format!("certificate {id} {status:?}"), || {
            let mut client = client.clone();
            let request = match tenant {
                Some(t) => as_tenant(
                    t,
                    GetCertificateRequest {
                        certificate_id: id.to_owned(),
                    },
                ),
                None => tonic::Request::new(GetCertificateRequest {
                    certificate_id: id.to_owned(),
                }),
            };
            async move {
                let cert = client.get_certificate(request).await.ok()?.into_inner();
                if cert.status == CertificateStatus::Failed as i32
                    && status != CertificateStatus::Failed
                {
                    panic!("certificate failed: {:?}", cert.last_failure);
                }
                (cert.status == status as i32).then_some(cert)
            }
        })
        .await
        .unwrap()
    }
}

/// Starts order and issuance (consumer on the SQL tail) over `db`.
pub async fn start_stack(db: &TestDb, settings: IssuerSettings) -> Stack {
    let source = EventSource::SqlTail {
        log: db.log.clone(),
    };
    start_stack_with(db, settings, source, vec![]).await
}

/// Starts order and issuance with the issuance consumer on `source`.
pub async fn start_stack_with(
    db: &TestDb,
    settings: IssuerSettings,
    source: EventSource,
    tasks: Vec<tokio::task::JoinHandle<()>>,
) -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let ca = test_ca(dir.path());
    let order = certledger_order::start(
        OrderSetup {
            repo: certledger_runtime::CertificateRepository::new(db.log.clone()),
            listen: "127.0.0.1:0".parse().unwrap(),
            issuers: vec!["builtin".into()],
            server: ServerOptions::default(),
            list: None,
            renewal: Default::default(),
            tasks: vec![],
        },
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let issuance = certledger_issuance::start(
        IssuanceSetup {
            repo: certledger_runtime::CertificateRepository::new(db.log.clone()),
            source,
            authority: ca.authority,
            keys: ca.keys,
            settings,
            listen: "127.0.0.1:0".parse().unwrap(),
            server: ServerOptions::default(),
            recover: true,
            tasks,
        },
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let orders = OrderServiceClient::connect(order.url()).await.unwrap();
    let ca = IssuanceServiceClient::connect(issuance.service.url())
        .await
        .unwrap();
    Stack {
        order,
        issuance,
        orders,
        ca,
        dir,
    }
}

pub fn spec(method: ValidationMethod, algorithm: KeyAlgorithm, max_names: u32) -> CertificateSpec {
    CertificateSpec {
        key_algorithm: algorithm as i32,
        ..certledger_testkit::certificate_spec(DomainSlotKind::Multi, max_names, method)
    }
}

pub fn generated(domains: &[&str]) -> Application {
    Application {
        domains: domains.iter().map(|d| (*d).to_owned()).collect(),
        key_source: Some(KeySource::GenerateKey(KeyAlgorithm::Unspecified as i32)),
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

pub fn as_tenant<T>(tenant: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-certledger-tenant", tenant.parse().unwrap());
    request
}

/// A CSR made by `openssl req` with `newkey` (`ec` or `rsa:2048`) for `names`.
pub fn openssl_csr(dir: &Path, newkey: &str, names: &[&str]) -> String {
    certledger_testkit::openssl::csr(dir, newkey, names).unwrap()
}

fn openssl(args: &[&str], dir: &Path) -> String {
    certledger_testkit::openssl::run(args, dir).unwrap()
}

/// Checks an issued certificate with the `openssl` command: it verifies against the CA
/// chain, and carries the SANs, serverAuth, CA:FALSE, the CRL DP and the OCSP URL.
pub fn openssl_checks(
    dir: &Path,
    cert: &Certificate,
    root_pem: &str,
    intermediate_pem: &str,
    names: &[&str],
) -> String {
    std::fs::write(dir.join("root.pem"), root_pem).unwrap();
    std::fs::write(dir.join("intermediate.pem"), intermediate_pem).unwrap();
    std::fs::write(dir.join("leaf.pem"), &cert.certificate_pem).unwrap();
    let verified = openssl(
        &[
            "verify",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "intermediate.pem",
            "-purpose",
            "sslserver",
            "leaf.pem",
        ],
        dir,
    );
    assert!(verified.contains("leaf.pem: OK"), "{verified}");
    let text = openssl(&["x509", "-in", "leaf.pem", "-noout", "-text"], dir);
    for name in names {
        assert!(
            text.contains(&format!("DNS:{name}")),
            "SAN {name} missing:\n{text}"
        );
    }
    for expected in [
        "TLS Web Server Authentication",
        "CA:FALSE",
        "X509v3 CRL Distribution Points",
        CRL_URL,
        &format!("OCSP - URI:{OCSP_URL}"),
        "X509v3 Subject Key Identifier",
        "X509v3 Authority Key Identifier",
    ] {
        assert!(text.contains(expected), "{expected} missing:\n{text}");
    }
    let serial = openssl(&["x509", "-in", "leaf.pem", "-noout", "-serial"], dir);
    assert_eq!(
        serial
            .trim()
            .trim_start_matches("serial=")
            .to_ascii_lowercase(),
        cert.serial,
        "serial in the certificate and in the event"
    );
    let fingerprint = openssl(
        &[
            "x509",
            "-in",
            "leaf.pem",
            "-noout",
            "-fingerprint",
            "-sha256",
        ],
        dir,
    );
    let fingerprint: String = fingerprint
        .trim()
        .rsplit('=')
        .next()
        .unwrap()
        .replace(':', "")
        .to_ascii_lowercase();
    assert_eq!(fingerprint, cert.sha256_fingerprint);
    text
}

/// The public key of a certificate and of a private key (PEM), by `openssl`.
pub fn same_public_key(dir: &Path, cert_pem: &str, key_pem: &str) -> bool {
    std::fs::write(dir.join("pair-cert.pem"), cert_pem).unwrap();
    std::fs::write(dir.join("pair-key.pem"), key_pem).unwrap();
    let a = openssl(&["x509", "-in", "pair-cert.pem", "-noout", "-pubkey"], dir);
    let b = openssl(&["pkey", "-in", "pair-key.pem", "-pubout"], dir);
    a == b
}

#[allow(unused_imports)] // used by some of the test binaries only
pub use certledger_testkit::ChallengeServer;
