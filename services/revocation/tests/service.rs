//! The revocation service end to end: certificates issued by the issuance service running
//! in-process (validation method NONE), revoked over gRPC, and checked with the `openssl`
//! command against the CRL and the OCSP responder this service serves over HTTP.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use certledger_ca::{CertificateUrls, IssuancePolicy};
use certledger_domain::certificate::{CertificateCommand, RequestRevocation};
use certledger_eventlog::EventLog;
use certledger_eventstream::consumer::EventSource;
use certledger_issuance::ca::{CaSettings, OpenedCa, open_ca};
use certledger_issuance::{IssuanceSetup, IssuerSettings, StartedIssuance};
use certledger_order::OrderSetup;
use certledger_proto::common::v1::{
    CertificateSpec, CertificateStatus, DomainSlotKind, KeyAlgorithm, RevocationReason,
    ValidationMethod,
};
use certledger_proto::order::v1::order_service_client::OrderServiceClient;
use certledger_proto::order::v1::{
    Application, Certificate, GetCertificateRequest, PlaceOrderRequest, application::KeySource,
};
use certledger_proto::revocation::v1::revocation_service_client::RevocationServiceClient;
use certledger_proto::revocation::v1::{GetCrlRequest, RevokeCertificateRequest};
use certledger_revocation::{
    HttpConfig, IssuerSigner, OcspConfig, PublisherSettings, RevocationSetup, StartedRevocation,
};
use certledger_runtime::server::{RunningService, ServerOptions};
use certledger_runtime::{CallContext, CertificateRepository, Expect};
use certledger_testkit::eventually;
use common::{TestDb, http, openssl, run, run_ok, write};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;

const DEADLINE: Duration = Duration::from_secs(90);

/// Order + issuance in-process, the CA naming `http://<http_addr>` as its revocation base.
struct Stack {
    order: RunningService,
    issuance: StartedIssuance,
    orders: OrderServiceClient<Channel>,
    signer: Arc<IssuerSigner>,
    root_pem: String,
    intermediate_pem: String,
    _dir: tempfile::TempDir,
}

async fn start_stack(db: &TestDb, http_addr: SocketAddr) -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let base = format!("http://{http_addr}");
    let ca: OpenedCa = open_ca(&CaSettings {
        data_dir: dir.path().to_path_buf(),
        policy: IssuancePolicy::default(),
        urls: CertificateUrls {
            crl_distribution_point: Some(format!("{base}/crl/builtin.crl")),
            ocsp: Some(format!("{base}/ocsp")),
            ca_issuers: None,
        },
        keys: certledger_ca::KeyStoreKind::Sqlite.into(),
    })
    .expect("open CA");
    let signer = Arc::new(IssuerSigner::from_authority(&ca.authority, ca.keys.as_ref()).unwrap());
    let root_pem = ca.authority.root().pem.clone();
    let intermediate_pem = ca.authority.intermediate().pem.clone();
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
            source: EventSource::SqlTail {
                log: db.log.clone(),
            },
            authority: ca.authority,
            keys: ca.keys,
            settings: IssuerSettings {
                allow_no_validation: true,
                reissue_delay: Duration::ZERO,
                ..IssuerSettings::default()
            },
            listen: "127.0.0.1:0".parse().unwrap(),
            server: ServerOptions::default(),
            recover: true,
            tasks: vec![],
        },
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let orders = OrderServiceClient::connect(order.url()).await.unwrap();
    Stack {
        order,
        issuance,
        orders,
        signer,
        root_pem,
        intermediate_pem,
        _dir: dir,
    }
}

async fn start_revocation(
    db: &TestDb,
    signer: Arc<IssuerSigner>,
    http_addr: SocketAddr,
) -> StartedRevocation {
    let source = EventSource::SqlTail {
        log: db.log.clone(),
    };
    start_revocation_with(db, signer, http_addr, source, vec![]).await
}

async fn start_revocation_with(
    db: &TestDb,
    signer: Arc<IssuerSigner>,
    http_addr: SocketAddr,
    source: EventSource,
    tasks: Vec<tokio::task::JoinHandle<()>>,
) -> StartedRevocation {
    certledger_revocation::start(
        RevocationSetup {
            log: db.log.clone(),
            source,
            signer,
            issuer_id: "builtin".into(),
            publisher: PublisherSettings::default(),
            ocsp: OcspConfig::default(),
            http: HttpConfig::default(),
            listen: "127.0.0.1:0".parse().unwrap(),
            http_listen: http_addr,
            server: ServerOptions::default(),
            tasks,
        },
        CancellationToken::new(),
    )
    .await
    .unwrap()
}

fn spec() -> CertificateSpec {
    certledger_testkit::certificate_spec(DomainSlotKind::Multi, 3, ValidationMethod::None)
}

fn as_tenant<T>(tenant: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-certledger-tenant", tenant.parse().unwrap());
    request
}

/// Orders a certificate for `name` as `tenant` (with an application unless `ordered_only`).
async fn order(stack: &Stack, tenant: &str, name: &str, ordered_only: bool) -> String {
    let application = (!ordered_only).then(|| Application {
        domains: vec![name.to_owned()],
        key_source: Some(KeySource::GenerateKey(KeyAlgorithm::Unspecified as i32)),
        ..Default::default()
    });
    stack
        .orders
        .clone()
        .place_order(as_tenant(
            tenant,
            PlaceOrderRequest {
                spec: Some(spec()),
                application,
                idempotency_key: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .certificate
        .unwrap()
        .certificate_id
}

async fn wait_issued(stack: &Stack, tenant: &str, id: &str) -> Certificate {
    let client = stack.orders.clone();
    eventually(DEADLINE, &format!("certificate {id} issued"), || {
        let mut client = client.clone();
        let request = as_tenant(
            tenant,
            GetCertificateRequest {
                certificate_id: id.to_owned(),
            },
        );
        async move {
            let cert = client.get_certificate(request).await.ok()?.into_inner();
            assert_ne!(
                cert.status,
                CertificateStatus::Failed as i32,
                "{:?}",
                cert.last_failure
            );
            (cert.status == CertificateStatus::Issued as i32).then_some(cert)
        }
    })
    .await
    .unwrap()
}

/// The CRL served over HTTP, written to `<dir>/crl.der`; its number.
fn fetch_crl(dir: &Path, http_addr: SocketAddr) -> Option<u64> {
    let response = http(http_addr, "GET", "/crl/builtin.crl", None, b"");
    if response.status != 200 {
        return None;
    }
    write(&dir.join("crl.der"), &response.body);
    let text = run_ok(openssl().current_dir(dir).args([
        "crl",
        "-inform",
        "DER",
        "-in",
        "crl.der",
        "-noout",
        "-crlnumber",
    ]));
    let hex = text.trim().rsplit('=').next()?.trim().to_owned();
    u64::from_str_radix(hex.trim_start_matches("0x"), 16).ok()
}

/// `openssl crl -verify` of `<dir>/crl.der` with the CA chain; the text of the CRL.
fn verify_crl(dir: &Path) -> String {
    let out = run_ok(openssl().current_dir(dir).args([
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
    assert!(out.contains("verify OK"), "{out}");
    out
}

/// `openssl verify -crl_check` of `<dir>/<leaf>` against `<dir>/crl.der`.
fn verify_with_crl(dir: &Path, leaf: &str) -> (bool, String) {
    run_ok(
        openssl()
            .current_dir(dir)
            .args(["crl", "-inform", "DER", "-in", "crl.der", "-out", "crl.pem"]),
    );
    let (ok, stdout, stderr) = run(openssl().current_dir(dir).args([
        "verify",
        "-crl_check",
        "-CAfile",
        "root.pem",
        "-untrusted",
        "intermediate.pem",
        "-CRLfile",
        "crl.pem",
        leaf,
    ]));
    (ok, format!("{stdout}{stderr}"))
}

/// `openssl ocsp` for `<dir>/<leaf>` (or `-serial`) against the responder.
fn ocsp(dir: &Path, http_addr: SocketAddr, target: &[&str]) -> String {
    let url = format!("http://{http_addr}/ocsp");
    let mut args = vec![
        "ocsp",
        "-issuer",
        "intermediate.pem",
        "-CAfile",
        "chain.pem",
        "-url",
        &url,
    ];
    args.extend_from_slice(target);
    let (_, stdout, stderr) = run(openssl().current_dir(dir).args(&args));
    format!("{stdout}{stderr}")
}

async fn revoke(
    client: &RevocationServiceClient<Channel>,
    tenant: &str,
    id: &str,
    reason: RevocationReason,
) -> Result<Certificate, tonic::Status> {
    client
        .clone()
        .revoke_certificate(as_tenant(
            tenant,
            RevokeCertificateRequest {
                certificate_id: id.to_owned(),
                reason: reason as i32,
                comment: "test".into(),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

async fn event_types(log: &Arc<dyn EventLog>, id: &str) -> Vec<String> {
    log.read_stream(&format!("certificate-{id}"), 0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_then_crl_and_ocsp_say_revoked_with_openssl() {
    let db = TestDb::postgres().await.expect("test database");
    let port = certledger_testkit::free_port().unwrap();
    let http_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let stack = start_stack(&db, http_addr).await;
    let revocation = start_revocation(&db, stack.signer.clone(), http_addr).await;
    let client = RevocationServiceClient::connect(revocation.service.url())
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    write(&dir.join("root.pem"), &stack.root_pem);
    write(&dir.join("intermediate.pem"), &stack.intermediate_pem);
    write(
        &dir.join("chain.pem"),
        format!("{}{}", stack.intermediate_pem, stack.root_pem),
    );

    let good_id = order(&stack, "acme", "good.example.com", false).await;
    let bad_id = order(&stack, "acme", "bad.example.com", false).await;
    let good = wait_issued(&stack, "acme", &good_id).await;
    let bad = wait_issued(&stack, "acme", &bad_id).await;
    write(&dir.join("good.pem"), &good.certificate_pem);
    write(&dir.join("bad.pem"), &bad.certificate_pem);
    let text = run_ok(
        openssl()
            .current_dir(dir)
            .args(["x509", "-in", "bad.pem", "-noout", "-text"]),
    );
    assert!(
        text.contains(&format!("http://{http_addr}/crl/builtin.crl")),
        "{text}"
    );

    // Before any revocation: the CRL verifies, both certificates pass -crl_check, OCSP
    // says good.
    let first = eventually(DEADLINE, "first CRL", || async {
        fetch_crl(dir, http_addr)
    })
    .await
    .unwrap();
    verify_crl(dir);
    for leaf in ["good.pem", "bad.pem"] {
        let (ok, out) = verify_with_crl(dir, leaf);
        assert!(ok, "{leaf}: {out}");
    }
    eventually(DEADLINE, "OCSP good", || async {
        let out = ocsp(dir, http_addr, &["-cert", "bad.pem"]);
        out.contains("bad.pem: good").then_some(())
    })
    .await
    .unwrap();
    // A serial this CA never issued: unknown (never good).
    let out = ocsp(dir, http_addr, &["-serial", "0x7f0102030405060708"]);
    assert!(out.contains(": unknown"), "{out}");

    // Revoke.
    let revoked = revoke(&client, "acme", &bad_id, RevocationReason::KeyCompromise)
        .await
        .unwrap();
    assert_eq!(revoked.status, CertificateStatus::Revoked as i32);
    assert_eq!(
        revoked.revocation_reason,
        RevocationReason::KeyCompromise as i32
    );

    let out = eventually(DEADLINE, "OCSP revoked", || async {
        let out = ocsp(dir, http_addr, &["-cert", "bad.pem"]);
        out.contains("bad.pem: revoked").then_some(out)
    })
    .await
    .unwrap();
    assert!(out.contains("Reason: keyCompromise"), "{out}");
    assert!(out.contains("Response verify OK"), "{out}");
    let out = ocsp(dir, http_addr, &["-cert", "good.pem"]);
    assert!(out.contains("good.pem: good"), "{out}");

    let second = eventually(DEADLINE, "CRL re-signed after the revocation", || async {
        fetch_crl(dir, http_addr).filter(|n| *n > first)
    })
    .await
    .unwrap();
    let text = verify_crl(dir);
    assert!(
        text.to_ascii_lowercase().contains(&bad.serial),
        "serial {} missing from\n{text}",
        bad.serial
    );
    assert!(text.contains("Key Compromise"), "{text}");
    let (ok, out) = verify_with_crl(dir, "bad.pem");
    assert!(!ok && out.contains("certificate revoked"), "{out}");
    let (ok, out) = verify_with_crl(dir, "good.pem");
    assert!(ok, "{out}");

    // The CRL events date the revocation for the read models: a CRL claims every
    // revocation through its revocations_through position, and one that reaches the
    // revocation's position is recorded (the log tail kicks a re-signing).
    let revoked_position = db
        .log
        .read_stream(&format!("certificate-{bad_id}"), 0)
        .await
        .unwrap()
        .iter()
        .find(|e| e.event_type == "CertificateRevoked")
        .map(|e| e.position)
        .unwrap();
    let crls = |log: Arc<dyn EventLog>| async move {
        log.read_stream("crl-builtin", 0)
            .await
            .unwrap()
            .iter()
            .filter_map(certledger_revocation::publisher::decode_crl_event)
            .collect::<Vec<_>>()
    };
    let covering = eventually(
        DEADLINE,
        "a CRL recorded as listing the revocation",
        || async {
            crls(db.log.clone())
                .await
                .into_iter()
                .find(|c| c.revocations_through >= revoked_position)
        },
    )
    .await
    .unwrap();
    assert_eq!(covering.entries, 1, "{covering:?}");
    let before = crls(db.log.clone()).await;
    let before = before.iter().find(|c| c.crl_number == first).unwrap();
    assert!(
        before.revocations_through < revoked_position && before.entries == 0,
        "{before:?}"
    );

    // GetCrl serves the same CRL.
    let crl = client
        .clone()
        .get_crl(GetCrlRequest {
            issuer: "builtin".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(crl.crl_number >= second);
    assert_eq!(
        client
            .clone()
            .get_crl(GetCrlRequest {
                issuer: "other".into()
            })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );

    // Idempotent: a second revocation changes nothing.
    let again = revoke(&client, "acme", &bad_id, RevocationReason::KeyCompromise)
        .await
        .unwrap();
    assert_eq!(again.status, CertificateStatus::Revoked as i32);
    let types = event_types(&db.log, &bad_id).await;
    assert_eq!(
        types.iter().filter(|t| *t == "CertificateRevoked").count(),
        1,
        "{types:?}"
    );
    assert_eq!(
        types.iter().filter(|t| *t == "RevocationRequested").count(),
        1,
        "{types:?}"
    );

    // Unknown certificate, another tenant's certificate: NOT_FOUND, nothing written.
    let e = revoke(
        &client,
        "acme",
        "no-such-certificate",
        RevocationReason::Superseded,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let before = event_types(&db.log, &good_id).await;
    let e = revoke(&client, "other", &good_id, RevocationReason::Superseded)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert_eq!(event_types(&db.log, &good_id).await, before);

    // A CA/B-forbidden reason: INVALID_ARGUMENT naming the field.
    let e = revoke(&client, "acme", &good_id, RevocationReason::CertificateHold)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert_eq!(event_types(&db.log, &good_id).await, before);

    // Ordered only (never issued): FAILED_PRECONDITION, nothing appended.
    let ordered = order(&stack, "acme", "ordered.example.com", true).await;
    let before = event_types(&db.log, &ordered).await;
    let e = revoke(&client, "acme", &ordered, RevocationReason::Unspecified)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert_eq!(event_types(&db.log, &ordered).await, before);

    // Restart the revocation service: the model is rebuilt from the log (OCSP still says
    // revoked), and the CRL number keeps increasing.
    revocation.service.stop().await.unwrap();
    let revocation = start_revocation(&db, stack.signer.clone(), http_addr).await;
    let third = eventually(DEADLINE, "CRL after the restart", || async {
        fetch_crl(dir, http_addr)
    })
    .await
    .unwrap();
    assert!(
        third > second,
        "CRL number {third} after restart, {second} before"
    );
    let text = verify_crl(dir);
    assert!(text.to_ascii_lowercase().contains(&bad.serial), "{text}");
    let out = eventually(DEADLINE, "OCSP after the restart", || async {
        let out = ocsp(dir, http_addr, &["-cert", "bad.pem"]);
        out.contains("bad.pem: revoked").then_some(out)
    })
    .await
    .unwrap();
    assert!(out.contains("Reason: keyCompromise"), "{out}");
    let out = ocsp(dir, http_addr, &["-cert", "good.pem"]);
    assert!(out.contains("good.pem: good"), "{out}");

    revocation.service.stop().await.unwrap();
    stack.issuance.service.stop().await.unwrap();
    stack.order.stop().await.unwrap();
}

/// A revocation requested without the CA's record (another writer, or a crash between
/// the two appends of RevokeCertificate): the consumer records it, and OCSP and the CRL
/// follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requested_revocation_is_completed_by_the_consumer() {
    let db = TestDb::postgres().await.expect("test database");
    let port = certledger_testkit::free_port().unwrap();
    let http_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let stack = start_stack(&db, http_addr).await;
    let revocation = start_revocation(&db, stack.signer.clone(), http_addr).await;

    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    write(&dir.join("root.pem"), &stack.root_pem);
    write(&dir.join("intermediate.pem"), &stack.intermediate_pem);
    write(
        &dir.join("chain.pem"),
        format!("{}{}", stack.intermediate_pem, stack.root_pem),
    );
    let id = order(&stack, "default", "requested.example.com", false).await;
    let cert = wait_issued(&stack, "default", &id).await;
    write(&dir.join("leaf.pem"), &cert.certificate_pem);
    let first = eventually(DEADLINE, "first CRL", || async {
        fetch_crl(dir, http_addr)
    })
    .await
    .unwrap();

    let repo = CertificateRepository::new(db.log.clone());
    let executed = repo
        .execute(
            &id,
            &CallContext::system("operator"),
            Expect::Any,
            CertificateCommand::RequestRevocation(RequestRevocation {
                reason: RevocationReason::Superseded,
                requested_by: "operator".into(),
                comment: "replaced".into(),
                now: chrono::Utc::now(),
            }),
        )
        .await
        .unwrap();
    assert!(executed.changed());

    let log = db.log.clone();
    eventually(
        DEADLINE,
        "CertificateRevoked recorded by the consumer",
        || {
            let log = log.clone();
            let id = id.clone();
            async move {
                let types = event_types(&log, &id).await;
                types
                    .iter()
                    .any(|t| t == "CertificateRevoked")
                    .then_some(())
            }
        },
    )
    .await
    .unwrap();
    let out = eventually(DEADLINE, "OCSP revoked", || async {
        let out = ocsp(dir, http_addr, &["-cert", "leaf.pem"]);
        out.contains("leaf.pem: revoked").then_some(out)
    })
    .await
    .unwrap();
    assert!(out.contains("Reason: superseded"), "{out}");
    eventually(DEADLINE, "CRL listing the revocation", || async {
        fetch_crl(dir, http_addr).filter(|n| *n > first)?;
        let (ok, out) = verify_with_crl(dir, "leaf.pem");
        (!ok && out.contains("certificate revoked")).then_some(())
    })
    .await
    .unwrap();
    verify_crl(dir);

    revocation.service.stop().await.unwrap();
    stack.issuance.service.stop().await.unwrap();
    stack.order.stop().await.unwrap();
}

/// Two replicas on one log: a revocation through one reaches the other's OCSP answers and
/// CRL (each replica follows the log; the durable consumer alone would split the events
/// between them), and their CRL numbers never collide.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_agree_and_never_reuse_a_crl_number() {
    let db = TestDb::postgres().await.expect("test database");
    let port = certledger_testkit::free_port().unwrap();
    let http_a: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let port = certledger_testkit::free_port().unwrap();
    let http_b: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let stack = start_stack(&db, http_a).await;
    let a = start_revocation(&db, stack.signer.clone(), http_a).await;
    let b = start_revocation(&db, stack.signer.clone(), http_b).await;
    let client_a = RevocationServiceClient::connect(a.service.url())
        .await
        .unwrap();

    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    for dir in [dir_a.path(), dir_b.path()] {
        write(&dir.join("root.pem"), &stack.root_pem);
        write(&dir.join("intermediate.pem"), &stack.intermediate_pem);
        write(
            &dir.join("chain.pem"),
            format!("{}{}", stack.intermediate_pem, stack.root_pem),
        );
    }
    let id = order(&stack, "default", "replicas.example.com", false).await;
    let cert = wait_issued(&stack, "default", &id).await;
    write(&dir_b.path().join("leaf.pem"), &cert.certificate_pem);
    let (dir_a, dir_b) = (dir_a.path(), dir_b.path());
    let first_a = eventually(DEADLINE, "CRL of replica A", || async {
        fetch_crl(dir_a, http_a)
    })
    .await
    .unwrap();
    let first_b = eventually(DEADLINE, "CRL of replica B", || async {
        fetch_crl(dir_b, http_b)
    })
    .await
    .unwrap();
    assert_ne!(first_a, first_b, "two replicas signed the same CRL number");
    eventually(DEADLINE, "replica B says good", || async {
        ocsp(dir_b, http_b, &["-cert", "leaf.pem"])
            .contains("leaf.pem: good")
            .then_some(())
    })
    .await
    .unwrap();

    revoke(
        &client_a,
        "default",
        &id,
        RevocationReason::CessationOfOperation,
    )
    .await
    .unwrap();
    let out = eventually(DEADLINE, "replica B says revoked", || async {
        let out = ocsp(dir_b, http_b, &["-cert", "leaf.pem"]);
        out.contains("leaf.pem: revoked").then_some(out)
    })
    .await
    .unwrap();
    assert!(out.contains("Reason: cessationOfOperation"), "{out}");
    eventually(DEADLINE, "replica B's CRL lists it", || async {
        fetch_crl(dir_b, http_b).filter(|n| *n > first_a.max(first_b))?;
        let (ok, out) = verify_with_crl(dir_b, "leaf.pem");
        (!ok && out.contains("certificate revoked")).then_some(())
    })
    .await
    .unwrap();

    // Every CrlPublished number on the issuer's stream is distinct and increasing.
    let numbers: Vec<u64> = db
        .log
        .read_stream("crl-builtin", 0)
        .await
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e.event_type, "CrlPublished");
            certledger_revocation::publisher::decode_crl_event(e)
                .unwrap()
                .crl_number
        })
        .collect();
    assert!(numbers.len() >= 3, "{numbers:?}");
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");

    a.service.stop().await.unwrap();
    b.service.stop().await.unwrap();
    stack.issuance.service.stop().await.unwrap();
    stack.order.stop().await.unwrap();
}

/// The distributed set-up: the log relayed to JetStream, the revocation consumer a durable
/// pull consumer. A revocation requested by another writer is completed through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requested_revocations_are_completed_through_jetstream() {
    let nats = certledger_testkit::NatsServer::start()
        .await
        .expect("nats-server");
    let db = TestDb::postgres().await.expect("test database");
    let port = certledger_testkit::free_port().unwrap();
    let http_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let stack = start_stack(&db, http_addr).await;
    let relay_stop = CancellationToken::new();
    let (source, relay) = certledger_runtime::events::open_source(
        db.log.clone(),
        Some(&nats.url()),
        true,
        relay_stop.clone(),
    )
    .await
    .expect("JetStream");
    let revocation = start_revocation_with(
        &db,
        stack.signer.clone(),
        http_addr,
        source,
        relay.into_iter().collect(),
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    write(&dir.join("intermediate.pem"), &stack.intermediate_pem);
    write(
        &dir.join("chain.pem"),
        format!("{}{}", stack.intermediate_pem, stack.root_pem),
    );
    let id = order(&stack, "default", "js.example.com", false).await;
    let cert = wait_issued(&stack, "default", &id).await;
    write(&dir.join("leaf.pem"), &cert.certificate_pem);
    eventually(DEADLINE, "OCSP good", || async {
        ocsp(dir, http_addr, &["-cert", "leaf.pem"])
            .contains("leaf.pem: good")
            .then_some(())
    })
    .await
    .unwrap();

    CertificateRepository::new(db.log.clone())
        .execute(
            &id,
            &CallContext::system("operator"),
            Expect::Any,
            CertificateCommand::RequestRevocation(RequestRevocation {
                reason: RevocationReason::AffiliationChanged,
                requested_by: "operator".into(),
                comment: String::new(),
                now: chrono::Utc::now(),
            }),
        )
        .await
        .unwrap();
    let log = db.log.clone();
    eventually(DEADLINE, "CertificateRevoked via JetStream", || {
        let log = log.clone();
        let id = id.clone();
        async move {
            let types = event_types(&log, &id).await;
            types
                .iter()
                .any(|t| t == "CertificateRevoked")
                .then_some(())
        }
    })
    .await
    .unwrap();
    let out = eventually(DEADLINE, "OCSP revoked", || async {
        let out = ocsp(dir, http_addr, &["-cert", "leaf.pem"]);
        out.contains("leaf.pem: revoked").then_some(out)
    })
    .await
    .unwrap();
    assert!(out.contains("Reason: affiliationChanged"), "{out}");

    relay_stop.cancel();
    revocation.service.stop().await.unwrap();
    stack.issuance.service.stop().await.unwrap();
    stack.order.stop().await.unwrap();
}
