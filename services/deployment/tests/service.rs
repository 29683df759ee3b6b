//! The deployment service end to end: certificates issued by the issuance service
//! (in-process, validation NONE), installed by the deployment service on a real nginx,
//! plain files and a webhook receiver; every "served" check is a real TLS handshake.

mod common;
mod stack;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use certledger_deployment::WebhookSecret;
use certledger_proto::common::v1::ValidationMethod;
use certledger_proto::deployment::v1::{
    ListDeploymentsRequest, ListTargetsRequest, RegisterTargetRequest, RemoveTargetRequest,
    register_target_request::Kind,
};
use certledger_proto::events::v1::{FileTarget, WebhookTarget, certificate_event};
use certledger_testkit::eventually;
use common::{Nginx, SNI, TestCa, openssl_served_fingerprint};
use stack::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tonic::Code;

fn run(argv: &[String]) {
    let status = Command::new(&argv[0])
        .args(&argv[1..])
        .status()
        .expect("run command");
    assert!(status.success(), "{argv:?} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nginx_deploy_redeploy_broken_reload_and_drift() {
    let stack = start_stack(Some(Duration::from_millis(200))).await;
    let ca = TestCa::new();
    let initial = ca.bundle("initial", &[SNI], &[]);
    let nginx = Nginx::start(&initial).await;
    let target = register_nginx(&stack, "acme", &nginx).await;
    assert!(!target.target_id.is_empty());

    // Deploy: verified, and the handshake (ours and openssl's) sees the fingerprint.
    let first = stack.issue("acme", &[SNI]).await;
    let d = deploy(&stack, "acme", &first.certificate_id, &target.target_id)
        .await
        .expect("deploy");
    assert_eq!(d.state, "succeeded", "{d:?}\n{}", nginx.read("error.log"));
    assert_eq!(served(&nginx).await, first.sha256_fingerprint);
    assert_eq!(
        openssl_served_fingerprint(&nginx.address(), SNI),
        first.sha256_fingerprint
    );
    let mode = std::fs::metadata(&nginx.key_path)
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let history = stack.history(&first.certificate_id, "acme").await;
    let succeeded = history
        .iter()
        .find_map(|e| match e.event.as_ref()?.event.as_ref()? {
            certificate_event::Event::DeploymentSucceeded(s) => Some(s.clone()),
            _ => None,
        })
        .expect("DeploymentSucceeded");
    assert_eq!(succeeded.verified_fingerprint, first.sha256_fingerprint);
    // Deploying it again changes nothing.
    let again = deploy(&stack, "acme", &first.certificate_id, &target.target_id)
        .await
        .expect("deploy again");
    assert_eq!(again.deployment_id, d.deployment_id);

    // A second certificate on the same target: the handshake sees it; the first is
    // recorded as no longer deployed there.
    let second = stack.issue("acme", &[SNI]).await;
    let d2 = deploy(&stack, "acme", &second.certificate_id, &target.target_id)
        .await
        .expect("deploy second");
    assert_eq!(d2.state, "succeeded");
    assert_eq!(served(&nginx).await, second.sha256_fingerprint);
    assert_eq!(
        state_on(&stack, "acme", &target.target_id, &first.certificate_id)
            .await
            .as_deref(),
        Some("removed")
    );
    assert_eq!(
        state_on(&stack, "acme", &target.target_id, &second.certificate_id)
            .await
            .as_deref(),
        Some("succeeded")
    );

    // A broken reload: DeploymentFailed at step reload, and nginx keeps serving the second.
    nginx.write_config("this_is_not_a_directive on;");
    let third = stack.issue("acme", &[SNI]).await;
    let d3 = deploy(&stack, "acme", &third.certificate_id, &target.target_id)
        .await
        .expect("deploy third");
    assert_eq!(d3.state, "failed");
    let failed = stack
        .history(&third.certificate_id, "acme")
        .await
        .iter()
        .find_map(|e| match e.event.as_ref()?.event.as_ref()? {
            certificate_event::Event::DeploymentFailed(f) => Some(f.clone()),
            _ => None,
        })
        .expect("DeploymentFailed");
    assert_eq!(failed.step, "reload");
    assert_eq!(served(&nginx).await, second.sha256_fingerprint);
    assert_eq!(
        std::fs::read_to_string(&nginx.cert_path).expect("cert file"),
        format!("{}{}", second.certificate_pem, second.chain_pem).replace("\r\n", "\n"),
        "the previous files are restored"
    );
    nginx.write_config("");

    // Drift: other files behind the service's back → DeploymentDrifted; the right files
    // again → DeploymentRestored (both recorded by the periodic probe).
    let backup = nginx.dir.path().join("backup");
    std::fs::create_dir(&backup).expect("backup dir");
    std::fs::copy(&nginx.cert_path, backup.join("crt")).expect("copy");
    std::fs::copy(&nginx.key_path, backup.join("key")).expect("copy");
    std::fs::write(&nginx.cert_path, initial.full_chain_pem()).expect("write");
    std::fs::write(
        &nginx.key_path,
        initial.private_key().expect("key").expose_pem(),
    )
    .expect("write");
    run(&nginx.reload_command());
    eventually(DEADLINE, "DeploymentDrifted", || async {
        (state_on(&stack, "acme", &target.target_id, &second.certificate_id)
            .await
            .as_deref()
            == Some("drifted"))
        .then_some(())
    })
    .await
    .expect("drift recorded");
    let drifted = stack
        .history(&second.certificate_id, "acme")
        .await
        .iter()
        .find_map(|e| match e.event.as_ref()?.event.as_ref()? {
            certificate_event::Event::DeploymentDrifted(d) => Some(d.clone()),
            _ => None,
        })
        .expect("DeploymentDrifted");
    assert_eq!(drifted.observed_fingerprint, initial.fingerprint());
    std::fs::copy(backup.join("crt"), &nginx.cert_path).expect("restore");
    std::fs::copy(backup.join("key"), &nginx.key_path).expect("restore");
    run(&nginx.reload_command());
    eventually(DEADLINE, "DeploymentRestored", || async {
        (state_on(&stack, "acme", &target.target_id, &second.certificate_id)
            .await
            .as_deref()
            == Some("succeeded"))
        .then_some(())
    })
    .await
    .expect("restore recorded");
    let types = stack.history_types(&second.certificate_id, "acme").await;
    assert_eq!(
        types.iter().filter(|t| *t == "DeploymentRestored").count(),
        1,
        "{types:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn preconditions_tenants_and_file_targets() {
    let stack = start_stack(None).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file_target = |name: &str| {
        Kind::File(FileTarget {
            certificate_path: dir.path().join(format!("{name}.crt")).display().to_string(),
            key_path: dir.path().join(format!("{name}.key")).display().to_string(),
            chain_path: dir
                .path()
                .join(format!("{name}.chain"))
                .display()
                .to_string(),
            command: vec![],
        })
    };
    let mut client = stack.deployments.clone();

    // Bad settings name the field.
    let bad = client
        .register_target(as_tenant(
            "acme",
            RegisterTargetRequest {
                name: "bad".into(),
                kind: Some(Kind::File(FileTarget {
                    certificate_path: "relative.crt".into(),
                    key_path: "/tmp/x.key".into(),
                    ..Default::default()
                })),
                webhook_secret: String::new(),
            },
        ))
        .await
        .expect_err("relative path");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(
        bad.message().contains("file.certificate_path"),
        "{}",
        bad.message()
    );

    let target = client
        .register_target(as_tenant(
            "acme",
            RegisterTargetRequest {
                name: "files".into(),
                kind: Some(file_target("site")),
                webhook_secret: String::new(),
            },
        ))
        .await
        .expect("register")
        .into_inner();

    // An unissued certificate cannot be deployed.
    let pending = stack
        .order(
            "acme",
            &["pending.example.test"],
            ValidationMethod::Approval,
        )
        .await;
    let e = deploy(&stack, "acme", &pending, &target.target_id)
        .await
        .expect_err("unissued");
    assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());

    // Another tenant's target does not exist for the caller.
    let theirs = stack.issue("other", &["other.example.test"]).await;
    let e = deploy(&stack, "other", &theirs.certificate_id, &target.target_id)
        .await
        .expect_err("other tenant's target");
    assert_eq!(e.code(), Code::NotFound, "{}", e.message());
    let listed = client
        .list_targets(as_tenant("other", ListTargetsRequest {}))
        .await
        .expect("list")
        .into_inner();
    assert!(listed.targets.is_empty());
    let e = client
        .remove_target(as_tenant(
            "other",
            RemoveTargetRequest {
                target_id: target.target_id.clone(),
            },
        ))
        .await
        .expect_err("remove other tenant's target");
    assert_eq!(e.code(), Code::NotFound);
    let e = client
        .list_deployments(as_tenant(
            "other",
            ListDeploymentsRequest {
                certificate_id: String::new(),
                target_id: target.target_id.clone(),
            },
        ))
        .await
        .expect_err("list other tenant's target");
    assert_eq!(e.code(), Code::NotFound);

    // A file target: files written, key 0600, listed by certificate.
    let mine = stack.issue("acme", &["files.example.test"]).await;
    let d = deploy(&stack, "acme", &mine.certificate_id, &target.target_id)
        .await
        .expect("deploy to files");
    assert_eq!(d.state, "succeeded");
    let cert = std::fs::read_to_string(dir.path().join("site.crt")).expect("cert file");
    assert!(cert.contains("BEGIN CERTIFICATE"));
    let mode = std::fs::metadata(dir.path().join("site.key"))
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let by_cert = client
        .list_deployments(as_tenant(
            "acme",
            ListDeploymentsRequest {
                certificate_id: mine.certificate_id.clone(),
                target_id: String::new(),
            },
        ))
        .await
        .expect("list by certificate")
        .into_inner();
    assert_eq!(by_cert.deployments.len(), 1);
    let listed = client
        .list_targets(as_tenant("acme", ListTargetsRequest {}))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.targets.len(), 1);
    assert!(!listed.targets[0].removed);

    // Revoked: the deployment is serving_revoked, the target is flagged with an event
    // (operators see it still serves it), and a revoked certificate cannot be deployed again.
    {
        use certledger_domain::certificate::{RecordRevoked, RequestRevocation};
        use certledger_proto::common::v1::RevocationReason;
        use certledger_runtime::{CallContext, CertificateRepository, Expect};
        let repo = CertificateRepository::new(stack.db.log.clone());
        let ctx = CallContext::system("test");
        for command in [
            RequestRevocation {
                reason: RevocationReason::KeyCompromise,
                requested_by: "test".into(),
                comment: String::new(),
                now: chrono::Utc::now(),
            }
            .into(),
            RecordRevoked {
                reason: RevocationReason::KeyCompromise,
                revoked_at: chrono::Utc::now(),
            }
            .into(),
        ] {
            repo.execute(&mine.certificate_id, &ctx, Expect::Any, command)
                .await
                .expect("revoke");
        }
    }
    assert_eq!(
        state_on(&stack, "acme", &target.target_id, &mine.certificate_id)
            .await
            .as_deref(),
        Some("serving_revoked")
    );
    // The reaction to the revocation records that this file target still holds it.
    eventually(DEADLINE, "RevokedCertificateServed", || async {
        let types = stack.history_types(&mine.certificate_id, "acme").await;
        types
            .iter()
            .any(|t| t == "RevokedCertificateServed")
            .then_some(())
    })
    .await
    .expect("the revoked certificate is flagged on its target");
    let types = stack.history_types(&mine.certificate_id, "acme").await;
    assert_eq!(
        types
            .iter()
            .filter(|t| *t == "RevokedCertificateServed")
            .count(),
        1,
        "{types:?}"
    );
    let second_target = client
        .register_target(as_tenant(
            "acme",
            RegisterTargetRequest {
                name: "files 2".into(),
                kind: Some(file_target("second")),
                webhook_secret: String::new(),
            },
        ))
        .await
        .expect("register")
        .into_inner();
    let e = deploy(
        &stack,
        "acme",
        &mine.certificate_id,
        &second_target.target_id,
    )
    .await
    .expect_err("revoked");
    assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());

    // A removed target takes no more deployments.
    client
        .remove_target(as_tenant(
            "acme",
            RemoveTargetRequest {
                target_id: target.target_id.clone(),
            },
        ))
        .await
        .expect("remove");
    let another = stack.issue("acme", &["files2.example.test"]).await;
    let e = deploy(&stack, "acme", &another.certificate_id, &target.target_id)
        .await
        .expect_err("removed target");
    assert_eq!(e.code(), Code::FailedPrecondition);
}

/// What the receiver got: headers, body, and the status it answered.
type Delivery = (HashMap<String, String>, Vec<u8>, u16);

/// A receiver answering 500 to the first `failures` requests and 200 afterwards.
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Delivery>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(failures: usize) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let got = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let task = {
            let got = got.clone();
            tokio::spawn(async move {
                while let Ok((mut tcp, _)) = listener.accept().await {
                    let (got, count) = (got.clone(), count.clone());
                    tokio::spawn(async move {
                        let mut buf = Vec::new();
                        let mut chunk = [0u8; 8192];
                        let end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i;
                            }
                            match tcp.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        let headers: HashMap<String, String> = head
                            .split("\r\n")
                            .skip(1)
                            .filter_map(|l| l.split_once(':'))
                            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                            .collect();
                        let length: usize = headers
                            .get("content-length")
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        let mut body = buf[end + 4..].to_vec();
                        while body.len() < length {
                            match tcp.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => body.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let n = count.fetch_add(1, Ordering::SeqCst);
                        let status = if n < failures { 500 } else { 200 };
                        got.lock().expect("lock").push((headers, body, status));
                        let reason = if status == 200 {
                            "OK"
                        } else {
                            "Internal Server Error"
                        };
                        let _ = tcp
                            .write_all(
                                format!("HTTP/1.1 {status} {reason}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                                    .as_bytes(),
                            )
                            .await;
                        let _ = tcp.shutdown().await;
                    });
                }
            })
        };
        Receiver { addr, got, task }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhook_receiver_failing_twice_gets_the_certificate_once() {
    let stack = start_stack(None).await;
    let receiver = Receiver::start(2).await;
    let secret = "a-shared-secret-of-some-length";
    let mut client = stack.deployments.clone();
    let missing = client
        .register_target(as_tenant(
            "acme",
            RegisterTargetRequest {
                name: "hook".into(),
                kind: Some(Kind::Webhook(WebhookTarget {
                    url: format!("http://{}/hook", receiver.addr),
                    secret_id: String::new(),
                    max_attempts: 5,
                })),
                webhook_secret: String::new(),
            },
        ))
        .await
        .expect_err("no secret");
    assert_eq!(missing.code(), Code::InvalidArgument);
    let target = client
        .register_target(as_tenant(
            "acme",
            RegisterTargetRequest {
                name: "hook".into(),
                kind: Some(Kind::Webhook(WebhookTarget {
                    url: format!("http://{}/hook", receiver.addr),
                    secret_id: String::new(),
                    max_attempts: 5,
                })),
                webhook_secret: secret.into(),
            },
        ))
        .await
        .expect("register webhook")
        .into_inner();
    let Some(certledger_proto::deployment::v1::target::Kind::Webhook(w)) = &target.kind else {
        panic!("not a webhook target: {target:?}");
    };
    assert!(!w.secret_id.is_empty());
    assert_ne!(w.secret_id, secret);

    let cert = stack.issue("acme", &["hook.example.test"]).await;
    let d = deploy(&stack, "acme", &cert.certificate_id, &target.target_id)
        .await
        .expect("deploy");
    assert_eq!(d.state, "succeeded");
    let got = receiver.got.lock().expect("lock").clone();
    assert_eq!(got.len(), 3, "two failures then one success");
    assert_eq!(got.iter().filter(|(_, _, s)| *s == 200).count(), 1);
    let signer = WebhookSecret::new(secret.as_bytes().to_vec());
    let delivery_ids: std::collections::HashSet<_> = got
        .iter()
        .map(|(h, _, _)| h.get("x-certledger-delivery").cloned())
        .collect();
    assert_eq!(delivery_ids.len(), 1, "one delivery, retried");
    for (headers, body, _) in &got {
        let signature = headers
            .get("x-certledger-signature")
            .expect("signature header");
        assert!(signer.verify(body, signature), "signature checks");
        let json: serde_json::Value = serde_json::from_slice(body).expect("json");
        assert_eq!(json["certificate_id"], cert.certificate_id.as_str());
        assert_eq!(json["fingerprint_sha256"], cert.sha256_fingerprint.as_str());
        assert!(json.get("private_key_pem").is_none_or(|v| v.is_null()));
    }
    // The secret is in no event.
    for entry in stack.history(&cert.certificate_id, "acme").await {
        assert!(!format!("{entry:?}").contains(secret));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_renewal_successor_replaces_its_predecessor_once() {
    use certledger_domain::certificate::{PlaceOrder, RenewalWindow, StartRenewal};
    use certledger_eventstream::consumer::Handler;
    use certledger_runtime::{CallContext, CertificateRepository, Expect};

    let stack = start_stack(None).await;
    let ca = TestCa::new();
    let nginx = Nginx::start(&ca.bundle("initial", &[SNI], &[])).await;
    let target = register_nginx(&stack, "acme", &nginx).await;
    let predecessor = stack.issue("acme", &[SNI]).await;
    let d = deploy(
        &stack,
        "acme",
        &predecessor.certificate_id,
        &target.target_id,
    )
    .await
    .expect("deploy predecessor");
    assert_eq!(d.state, "succeeded");

    // Renew: the predecessor records the renewal, the successor is ordered naming it.
    let repo = CertificateRepository::new(stack.db.log.clone());
    let ctx = CallContext::system("test");
    let successor_id = uuid::Uuid::now_v7().to_string();
    repo.execute(
        &predecessor.certificate_id,
        &ctx,
        Expect::Any,
        StartRenewal {
            successor_id: successor_id.clone(),
            reason: "test".into(),
            trigger: "test".into(),
            window: RenewalWindow::DaysBeforeExpiry(365),
            now: chrono::Utc::now(),
        }
        .into(),
    )
    .await
    .expect("start renewal");
    let application =
        certledger_runtime::convert::application(&certledger_proto::order::v1::Application {
            domains: vec![SNI.into()],
            key_source: Some(certledger_proto::order::v1::application::KeySource::GenerateKey(0)),
            ..Default::default()
        })
        .expect("application");
    repo.execute(
        &successor_id,
        &ctx,
        Expect::Any,
        PlaceOrder {
            certificate_id: successor_id.clone(),
            tenant: "acme".into(),
            spec: spec(ValidationMethod::None),
            application: Some(application),
            predecessor_id: Some(predecessor.certificate_id.clone()),
            idempotency_key: None,
        }
        .into(),
    )
    .await
    .expect("order successor");
    let successor = stack
        .wait_for(
            &successor_id,
            "acme",
            certledger_proto::common::v1::CertificateStatus::Issued,
        )
        .await;

    // The reaction deploys the successor where the predecessor was, and records the
    // predecessor as replaced there.
    wait_for_replacement(
        &stack,
        "acme",
        &target.target_id,
        &successor_id,
        &predecessor.certificate_id,
    )
    .await;
    assert_eq!(served(&nginx).await, successor.sha256_fingerprint);
    let requested = stack
        .history(&successor_id, "acme")
        .await
        .iter()
        .find_map(|e| match e.event.as_ref()?.event.as_ref()? {
            certificate_event::Event::DeploymentRequested(r) => Some(r.clone()),
            _ => None,
        })
        .expect("DeploymentRequested");
    assert_eq!(
        requested.replaces_certificate_id,
        predecessor.certificate_id
    );

    // The same event handled again changes nothing.
    let issued = stack
        .db
        .log
        .read_stream(&format!("certificate-{successor_id}"), 0)
        .await
        .expect("read")
        .into_iter()
        .find(|e| e.event_type == "CertificateIssued")
        .expect("CertificateIssued");
    let before = stack.history_types(&successor_id, "acme").await.len();
    certledger_deployment::DeploymentReactions::new(stack.deployment.deployer.clone())
        .handle(&issued)
        .await
        .expect("handle again");
    assert_eq!(
        stack.history_types(&successor_id, "acme").await.len(),
        before
    );
    let types = stack
        .history_types(&predecessor.certificate_id, "acme")
        .await;
    assert_eq!(
        types.iter().filter(|t| *t == "DeploymentReplaced").count(),
        1,
        "{types:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deployment_left_requested_is_resumed() {
    use certledger_domain::certificate::RequestDeployment;
    use certledger_runtime::{CallContext, CertificateRepository, Expect};

    let stack = start_stack(None).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let target = stack
        .deployments
        .clone()
        .register_target(as_tenant(
            "acme",
            RegisterTargetRequest {
                name: "files".into(),
                kind: Some(Kind::File(FileTarget {
                    certificate_path: dir.path().join("c.pem").display().to_string(),
                    key_path: dir.path().join("k.pem").display().to_string(),
                    chain_path: String::new(),
                    command: vec![],
                })),
                webhook_secret: String::new(),
            },
        ))
        .await
        .expect("register")
        .into_inner();
    let cert = stack.issue("acme", &["resume.example.test"]).await;
    // As if a previous run stopped right after recording the request.
    CertificateRepository::new(stack.db.log.clone())
        .execute(
            &cert.certificate_id,
            &CallContext::system("test"),
            Expect::Any,
            RequestDeployment {
                deployment_id: uuid::Uuid::now_v7().to_string(),
                target_id: target.target_id.clone(),
                replaces_certificate_id: None,
                now: chrono::Utc::now(),
            }
            .into(),
        )
        .await
        .expect("request");
    let deployer = stack.deployment.deployer.clone();
    eventually(DEADLINE, "the requested deployment resumed", || {
        let deployer = deployer.clone();
        let stack = &stack;
        let target_id = target.target_id.clone();
        let id = cert.certificate_id.clone();
        async move {
            deployer.resume_requested().await;
            (state_on(stack, "acme", &target_id, &id).await.as_deref() == Some("succeeded"))
                .then_some(())
        }
    })
    .await
    .expect("resumed");
    assert!(dir.path().join("c.pem").exists());
}
