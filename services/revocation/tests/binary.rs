//! The `certledger-revocation` binary: flags, the CA opened read-only from the issuance
//! service's data directory, a CRL served over HTTP and verified by `openssl crl -verify`,
//! OCSP `unknown` for a serial never issued, and a clean stop on SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use certledger_ca::{CertificateUrls, IssuancePolicy};
use certledger_issuance::ca::{CaSettings, open_ca};
use certledger_proto::revocation::v1::GetCrlRequest;
use certledger_proto::revocation::v1::revocation_service_client::RevocationServiceClient;
use certledger_testkit::eventually;
use common::{TestDb, http, openssl, run, run_ok, write};

const BIN: &str = env!("CARGO_BIN_EXE_certledger-revocation");

#[test]
fn refuses_a_data_dir_without_a_ca_and_creates_none() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["--database-url", "sqlite::memory:", "--data-dir"])
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("start the issuance service once"),
        "{stderr}"
    );
    assert!(!dir.path().join("ca").join("root.pem").exists());

    let out = Command::new(BIN)
        .args(["--database-url", "sqlite::memory:"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("data-dir"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_a_verifiable_crl_and_ocsp_from_the_issuance_data_dir() {
    let db = TestDb::postgres().await.expect("test database");
    let data = tempfile::tempdir().unwrap();
    let ca = open_ca(&CaSettings {
        data_dir: data.path().to_path_buf(),
        policy: IssuancePolicy::default(),
        urls: CertificateUrls::default(),
        // The revocation binary opens the key store as the issuance service does by default.
        keys: certledger_ca::KeyStoreKind::Files.into(),
    })
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    write(
        &work.join("intermediate.pem"),
        &ca.authority.intermediate().pem,
    );
    write(
        &work.join("chain.pem"),
        format!(
            "{}{}",
            ca.authority.intermediate().pem,
            ca.authority.root().pem
        ),
    );

    let mut child = Command::new(BIN)
        .args(["--database-url", &db.url, "--pg-schema", &db.schema])
        .arg("--data-dir")
        .arg(data.path())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--crl-validity",
            "2h",
            "--crl-refresh",
            "1h",
            "--bootstrap-token-file",
        ])
        .arg(data.path().join("admin.token"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let grpc = lines.next().unwrap().unwrap();
    let http_line = lines.next().unwrap().unwrap();
    let grpc = grpc.strip_prefix("listening on ").unwrap().to_owned();
    let http_addr: std::net::SocketAddr =
        http_line.strip_prefix("http on ").unwrap().parse().unwrap();

    let crl = eventually(Duration::from_secs(60), "a CRL", || async {
        let response = http(http_addr, "GET", "/crl/builtin.crl", None, b"");
        (response.status == 200).then_some(response.body)
    })
    .await
    .unwrap();
    write(&work.join("crl.der"), &crl);
    let text = run_ok(openssl().current_dir(work).args([
        "crl",
        "-inform",
        "DER",
        "-in",
        "crl.der",
        "-CAfile",
        "chain.pem",
        "-verify",
        "-noout",
        "-text",
    ]));
    assert!(text.contains("verify OK"), "{text}");
    assert!(text.contains("No Revoked Certificates"), "{text}");

    let url = format!("http://{http_addr}/ocsp");
    let (_, o, e) = run(openssl().current_dir(work).args([
        "ocsp",
        "-issuer",
        "intermediate.pem",
        "-CAfile",
        "chain.pem",
        "-serial",
        "0x4a0102030405060708",
        "-url",
        &url,
    ]));
    let out = format!("{o}{e}");
    assert!(out.contains(": unknown"), "{out}");
    assert!(out.contains("Response verify OK"), "{out}");

    let mut client = RevocationServiceClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    let anonymous = client.get_crl(GetCrlRequest::default()).await.unwrap_err();
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
    let token = std::fs::read_to_string(data.path().join("admin.token")).unwrap();
    let mut request = tonic::Request::new(GetCrlRequest::default());
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", token.trim()).parse().unwrap(),
    );
    let served = client.get_crl(request).await.unwrap().into_inner();
    assert_eq!(served.crl_der, crl);
    assert!(served.crl_number >= 1);

    let pid = child.id().to_string();
    run(Command::new("kill").args(["-TERM", &pid]));
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
