//! Order and issuance as separate processes on PostgreSQL and NATS JetStream: orders in
//! both key modes with approval and HTTP-01 validation, followed with WatchCertificate
//! until issued and checked with the openssl command; then the issuance process is
//! killed in the middle of a batch and every order still ends issued exactly once.

use certledger_e2e::{Service, TestDb, args};
use certledger_proto::common::v1::{
    CertificateSpec, CertificateStatus, DomainSlotKind, KeyAlgorithm, ValidationMethod,
};
use certledger_proto::issuance::v1::issuance_service_client::IssuanceServiceClient;
use certledger_proto::issuance::v1::{ApproveApplicationRequest, GetCaChainRequest};
use certledger_proto::order::v1::order_service_client::OrderServiceClient;
use certledger_proto::order::v1::{
    Application, Certificate, GetCertificateRequest, GetHistoryRequest, PlaceOrderRequest,
    WatchCertificateRequest, application::KeySource,
};
use certledger_testkit::{ChallengeServer, NatsServer, eventually, openssl};
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

const DEADLINE: Duration = Duration::from_secs(120);
const REVOCATION_BASE: &str = "http://revocation.certledger.test";

struct Platform {
    order: Service,
    issuance: Service,
    orders: OrderServiceClient<Channel>,
    ca: IssuanceServiceClient<Channel>,
    issuance_args: Vec<String>,
}

async fn start_issuance(
    issuance_args: &[String],
) -> anyhow::Result<(Service, IssuanceServiceClient<Channel>)> {
    let issuance = Service::start("certledger-issuance", issuance_args).await?;
    let ca = IssuanceServiceClient::connect(issuance.endpoint()).await?;
    Ok((issuance, ca))
}

async fn start_platform(
    db: &TestDb,
    nats: &NatsServer,
    data_dir: &Path,
    http01: Option<&ChallengeServer>,
) -> anyhow::Result<Platform> {
    let data_dir = data_dir.display().to_string();
    let nats_url = nats.url();
    // Access control is tested on certd (services/certd/tests/access.rs); here the
    // clients act anonymously.
    let common = [
        "--database-url",
        &db.url,
        "--pg-schema",
        &db.schema,
        "--nats-url",
        &nats_url,
        "--listen",
        "127.0.0.1:0",
        "--insecure-no-auth",
    ];
    let mut issuance_args = args(&common);
    issuance_args.extend(args(&[
        "--data-dir",
        &data_dir,
        "--revocation-base-url",
        REVOCATION_BASE,
        "--allow-no-validation",
        "--stale-intent-after",
        "2s",
        "--validation-retry-delay",
        "200ms",
    ]));
    if let Some(server) = http01 {
        issuance_args.extend(args(&["--http01-resolve", &format!("*={}", server.addr)]));
    }
    let (issuance, ca) = start_issuance(&issuance_args).await?;
    let order = Service::start("certledger-order", &args(&common)).await?;
    let orders = OrderServiceClient::connect(order.endpoint()).await?;
    Ok(Platform {
        order,
        issuance,
        orders,
        ca,
        issuance_args,
    })
}

fn spec(method: ValidationMethod, names: u32) -> CertificateSpec {
    certledger_testkit::certificate_spec(DomainSlotKind::Multi, names, method)
}

async fn place(
    orders: &mut OrderServiceClient<Channel>,
    method: ValidationMethod,
    domains: &[String],
    key_source: KeySource,
) -> anyhow::Result<Certificate> {
    let response = orders
        .place_order(PlaceOrderRequest {
            spec: Some(spec(method, domains.len() as u32)),
            application: Some(Application {
                domains: domains.to_vec(),
                key_source: Some(key_source),
                ..Default::default()
            }),
            idempotency_key: String::new(),
        })
        .await?
        .into_inner();
    response
        .certificate
        .ok_or_else(|| anyhow::anyhow!("PlaceOrder returned no certificate"))
}

async fn get(orders: &OrderServiceClient<Channel>, id: &str) -> Option<Certificate> {
    orders
        .clone()
        .get_certificate(GetCertificateRequest {
            certificate_id: id.to_owned(),
        })
        .await
        .ok()
        .map(|r| r.into_inner())
}

/// Follows the certificate with WatchCertificate until its CertificateIssued event.
async fn watch_until_issued(
    orders: &mut OrderServiceClient<Channel>,
    id: &str,
) -> anyhow::Result<Vec<String>> {
    let mut stream = orders
        .watch_certificate(WatchCertificateRequest {
            certificate_id: id.to_owned(),
            after_version: 0,
        })
        .await?
        .into_inner();
    let mut seen = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        while let Some(entry) = stream.next().await {
            let entry = entry?;
            seen.push(entry.event_type.clone());
            if entry.event_type == "CertificateIssued" {
                return anyhow::Ok(());
            }
            // A failure with a retry time is retried; only a final one ends the order.
            if entry.event_type.ends_with("Failed")
                && get(orders, id)
                    .await
                    .is_some_and(|c| c.status == CertificateStatus::Failed as i32)
            {
                anyhow::bail!("certificate {id} failed: {seen:?}");
            }
        }
        anyhow::bail!("watch of {id} ended before issuance: {seen:?}")
    })
    .await
    .map_err(|_| anyhow::anyhow!("certificate {id} not issued in time: {seen:?}"))??;
    Ok(seen)
}

fn names(prefix: &str) -> Vec<String> {
    let tag = uuid::Uuid::now_v7().simple().to_string();
    vec![
        format!("{prefix}-{}.example.test", &tag[20..]),
        format!("www.{prefix}-{}.example.test", &tag[20..]),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_in_both_key_modes_with_approval_and_http01_end_issued_and_verified()
-> anyhow::Result<()> {
    let db = TestDb::postgres().await?;
    let nats = NatsServer::start().await?;
    let dir = tempfile::tempdir()?;
    let challenges = ChallengeServer::start().await?;
    let mut platform =
        start_platform(&db, &nats, &dir.path().join("data"), Some(&challenges)).await?;

    let cases = [
        ("approval-generated", ValidationMethod::Approval, false),
        ("approval-csr", ValidationMethod::Approval, true),
        ("http01-generated", ValidationMethod::Http01, false),
        ("http01-csr", ValidationMethod::Http01, true),
    ];
    let mut placed = Vec::new();
    for (label, method, with_csr) in cases {
        let domains = names(label);
        let key_source = if with_csr {
            let csr_dir = dir.path().join(label);
            std::fs::create_dir_all(&csr_dir)?;
            let refs: Vec<&str> = domains.iter().map(String::as_str).collect();
            KeySource::CsrPem(openssl::csr(&csr_dir, "ec", &refs)?)
        } else {
            KeySource::GenerateKey(KeyAlgorithm::EcdsaP256 as i32)
        };
        let certificate = place(&mut platform.orders, method, &domains, key_source).await?;
        placed.push((label, method, domains, certificate.certificate_id));
    }

    // Do what an operator and a web server would: approve, and serve the challenges.
    for (label, method, _, id) in &placed {
        let orders = platform.orders.clone();
        let id = id.clone();
        let started = eventually(DEADLINE, &format!("validation of {label} to start"), || {
            let (orders, id) = (orders.clone(), id.clone());
            async move {
                get(&orders, &id)
                    .await
                    .filter(|c| c.status == CertificateStatus::Validating as i32)
            }
        })
        .await?;
        match method {
            ValidationMethod::Approval => {
                platform
                    .ca
                    .approve_application(ApproveApplicationRequest {
                        certificate_id: id,
                        comment: "checked by e2e".into(),
                    })
                    .await?;
            }
            _ => {
                assert_eq!(
                    started.challenges.len(),
                    2,
                    "one challenge per name: {started:?}"
                );
                for challenge in &started.challenges {
                    challenges.serve(&challenge.token, &challenge.key_authorization);
                }
            }
        }
    }

    let chain = platform
        .ca
        .get_ca_chain(GetCaChainRequest::default())
        .await?
        .into_inner();
    for (label, _, domains, id) in &placed {
        let seen = watch_until_issued(&mut platform.orders, id).await?;
        assert!(
            seen.iter().position(|t| t == "IssuanceIntended")
                < seen.iter().position(|t| t == "CertificateIssued"),
            "intent recorded before the certificate: {seen:?}"
        );
        let certificate = get(&platform.orders, id)
            .await
            .ok_or_else(|| anyhow::anyhow!("{label} vanished"))?;
        let check_dir = dir.path().join(format!("check-{label}"));
        std::fs::create_dir_all(&check_dir)?;
        let text = openssl::verify_leaf(
            &check_dir,
            &chain.root_pem,
            &chain.intermediate_pem,
            &certificate.certificate_pem,
        )?;
        for name in domains {
            assert!(
                text.contains(&format!("DNS:{name}")),
                "{label}: SAN {name} missing:\n{text}"
            );
        }
        for expected in [
            "TLS Web Server Authentication",
            "CA:FALSE",
            &format!("URI:{REVOCATION_BASE}/crl/builtin.crl"),
            &format!("OCSP - URI:{REVOCATION_BASE}/ocsp"),
        ] {
            assert!(
                text.contains(expected),
                "{label}: {expected} missing:\n{text}"
            );
        }
    }
    drop(platform.order);
    drop(platform.issuance);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_issuance_mid_batch_still_issues_every_order_exactly_once() -> anyhow::Result<()> {
    const ORDERS: usize = 100;
    let db = TestDb::postgres().await?;
    let nats = NatsServer::start().await?;
    let dir = tempfile::tempdir()?;
    let mut platform = start_platform(&db, &nats, &dir.path().join("data"), None).await?;
    // The batch is placed while no issuance process runs, so that the kill below lands
    // in the middle of it however fast this machine signs.
    platform.issuance.kill().await?;
    let mut ids = Vec::new();
    for i in 0..ORDERS {
        let domains = vec![format!(
            "batch-{i}-{}.example.test",
            uuid::Uuid::now_v7().simple()
        )];
        let key = KeySource::GenerateKey(KeyAlgorithm::EcdsaP256 as i32);
        ids.push(
            place(&mut platform.orders, ValidationMethod::None, &domains, key)
                .await?
                .certificate_id,
        );
    }
    let issued_count = |orders: OrderServiceClient<Channel>, ids: Vec<String>| async move {
        let mut n = 0;
        for id in &ids {
            if get(&orders, id)
                .await
                .is_some_and(|c| c.status == CertificateStatus::Issued as i32)
            {
                n += 1;
            }
        }
        n
    };
    // Start issuing, and kill the process (SIGKILL, like a crash) as soon as the first
    // certificate of the batch is issued.
    let (issuance, _ca) = start_issuance(&platform.issuance_args).await?;
    watch_until_issued(&mut platform.orders, &ids[0]).await?;
    issuance.kill().await?;
    let before_restart = issued_count(platform.orders.clone(), ids.clone()).await;
    assert!(
        before_restart < ORDERS,
        "the kill happened mid-batch ({before_restart} of {ORDERS} issued)"
    );
    let (issuance, _ca) = start_issuance(&platform.issuance_args).await?;

    eventually(
        DEADLINE,
        "every order to be issued after the restart",
        || {
            let (orders, ids) = (platform.orders.clone(), ids.clone());
            async move { (issued_count(orders, ids).await == ORDERS).then_some(()) }
        },
    )
    .await?;

    let mut serials = HashSet::new();
    for id in &ids {
        let history = platform
            .orders
            .get_history(GetHistoryRequest {
                certificate_id: id.clone(),
            })
            .await?
            .into_inner()
            .entries;
        let issued = history
            .iter()
            .filter(|e| e.event_type == "CertificateIssued")
            .count();
        assert_eq!(
            issued,
            1,
            "certificate {id} issued exactly once: {:?}",
            history
                .iter()
                .map(|e| e.event_type.as_str())
                .collect::<Vec<_>>()
        );
        let certificate = get(&platform.orders, id)
            .await
            .ok_or_else(|| anyhow::anyhow!("{id} vanished"))?;
        assert!(
            serials.insert(certificate.serial.clone()),
            "serial {} issued twice",
            certificate.serial
        );
    }
    drop(issuance);
    drop(platform.order);
    Ok(())
}
