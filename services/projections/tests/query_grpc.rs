//! `CertificateQueryService` over real gRPC against real PostgreSQL: list with filters
//! and paging, get, history, time travel, tenants, and the change stream; and the
//! binary's `rebuild` mode as a process on a SQLite log.

mod common;

use std::process::Stdio;

use anyhow::Context;
use certledger_domain::certificate::PlaceOrder;
use certledger_projections::grpc::start;
use certledger_projections::{ProjectionStore, QueryService, ReadModel};
use certledger_proto::common::v1::{CertificateStatus, PageRequest};
use certledger_proto::order::v1::GetHistoryRequest;
use certledger_proto::query::v1::certificate_query_service_client::CertificateQueryServiceClient;
use certledger_proto::query::v1::get_certificate_at_request::At;
use certledger_proto::query::v1::{
    GetCertificateAtRequest, GetCertificateRequest, QueryCertificatesRequest, WatchChangesRequest,
};
use certledger_runtime::convert::timestamp;
use certledger_runtime::server::ServerOptions;
use certledger_runtime::tenant::TENANT_HEADER;
use chrono::{TimeDelta, Utc};
use common::*;
use tokio_util::sync::CancellationToken;
use tonic::Request;
use tonic::transport::Channel;

type Client = CertificateQueryServiceClient<Channel>;

fn ids(r: &certledger_proto::query::v1::QueryCertificatesResponse) -> Vec<String> {
    let mut v: Vec<String> = r
        .certificates
        .iter()
        .map(|c| c.certificate_id.clone())
        .collect();
    v.sort();
    v
}

async fn list(client: &mut Client, req: QueryCertificatesRequest) -> anyhow::Result<Vec<String>> {
    Ok(ids(&client.list_certificates(req).await?.into_inner()))
}

fn as_tenant<T>(message: T, tenant: &str) -> anyhow::Result<Request<T>> {
    let mut r = Request::new(message);
    r.metadata_mut().insert(TENANT_HEADER, tenant.parse()?);
    Ok(r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_service_over_grpc_on_postgres() -> anyhow::Result<()> {
    let db = TestDb::postgres().await?;
    let running = start_projector(&db, &db.store, "projections");
    let s = write_scenario(&db.log).await?;
    wait_caught_up(&db.log, &db.store).await?;

    let shutdown = CancellationToken::new();
    let service = QueryService::new(running.projector.clone(), shutdown.clone());
    let server = start(
        service,
        "127.0.0.1:0".parse()?,
        ServerOptions::default(),
        shutdown.clone(),
        vec![],
    )
    .await?;
    let mut client = CertificateQueryServiceClient::connect(server.url()).await?;

    // List: everything of the caller's tenant, and nothing of the other's.
    let all = list(&mut client, QueryCertificatesRequest::default()).await?;
    let mut expected: Vec<String> = [
        s.ok,
        s.revoked,
        s.failed,
        s.expiring,
        s.drifted,
        s.deploy_failed,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    expected.sort();
    assert_eq!(all, expected);
    let other = client
        .list_certificates(as_tenant(
            QueryCertificatesRequest::default(),
            OTHER_TENANT,
        )?)
        .await?
        .into_inner();
    assert_eq!(ids(&other), [s.other_tenant]);

    // Paging: pages of 2 add up to the whole list, each id once.
    let mut paged = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let r = client
            .list_certificates(QueryCertificatesRequest {
                page: Some(PageRequest {
                    page_size: 2,
                    page_token: token.clone(),
                }),
                ..Default::default()
            })
            .await?
            .into_inner();
        assert!(r.certificates.len() <= 2);
        paged.extend(r.certificates.iter().map(|c| c.certificate_id.clone()));
        pages += 1;
        anyhow::ensure!(pages < 10, "paging does not end");
        if r.next_page_token.is_empty() {
            break;
        }
        token = r.next_page_token;
    }
    paged.sort();
    assert_eq!(paged, expected);
    assert!(pages >= 3);
    let bad_token = client
        .list_certificates(QueryCertificatesRequest {
            page: Some(PageRequest {
                page_size: 2,
                page_token: "garbage!".into(),
            }),
            ..Default::default()
        })
        .await
        .expect_err("a garbled token");
    assert_eq!(bad_token.code(), tonic::Code::InvalidArgument);

    // Filters.
    let issued = client
        .list_certificates(QueryCertificatesRequest {
            status: CertificateStatus::Issued as i32,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(
        issued
            .certificates
            .iter()
            .all(|c| c.status == CertificateStatus::Issued as i32)
    );
    let issued = ids(&issued);
    assert!(issued.contains(&s.ok.to_owned()) && issued.contains(&s.expiring.to_owned()));
    assert!(!issued.contains(&s.revoked.to_owned()) && !issued.contains(&s.failed.to_owned()));
    assert_eq!(
        list(
            &mut client,
            QueryCertificatesRequest {
                status: CertificateStatus::Failed as i32,
                ..Default::default()
            }
        )
        .await?,
        [s.failed]
    );
    assert_eq!(
        list(
            &mut client,
            QueryCertificatesRequest {
                domain_contains: "SHOP.example".into(),
                ..Default::default()
            }
        )
        .await?,
        [s.revoked]
    );
    assert_eq!(
        list(
            &mut client,
            QueryCertificatesRequest {
                target_id: "web-2".into(),
                ..Default::default()
            }
        )
        .await?,
        [s.revoked]
    );
    assert_eq!(
        list(
            &mut client,
            QueryCertificatesRequest {
                expiring_before: Some(timestamp(Utc::now() + TimeDelta::days(30))),
                ..Default::default()
            }
        )
        .await?,
        [s.expiring]
    );
    assert_eq!(
        list(
            &mut client,
            QueryCertificatesRequest {
                issuer: "builtin".into(),
                ..Default::default()
            }
        )
        .await?,
        expected
    );
    assert!(
        list(
            &mut client,
            QueryCertificatesRequest {
                issuer: "no-such-ca".into(),
                ..Default::default()
            }
        )
        .await?
        .is_empty()
    );
    let attention = list(
        &mut client,
        QueryCertificatesRequest {
            needs_attention: true,
            ..Default::default()
        },
    )
    .await?;
    for id in [s.failed, s.expiring, s.revoked] {
        assert!(attention.contains(&id.to_owned()), "{id} in {attention:?}");
    }
    assert!(!attention.contains(&s.ok.to_owned()), "{attention:?}");

    // Get: the fold of the certificate's stream.
    let ok = client
        .get_certificate(GetCertificateRequest {
            certificate_id: s.ok.into(),
        })
        .await?
        .into_inner();
    assert_eq!(ok.status, CertificateStatus::Issued as i32);
    assert_eq!(ok.domains, ["www.example.com", "api.example.com"]);
    assert_eq!(ok.serial, "01a2b3c4d5e6f708192a3b4c5d6e7f8091");
    assert!(ok.spec.is_some() && ok.ordered_at.is_some() && !ok.certificate_pem.is_empty());
    let ok_events = db.log.read_stream("certificate-cert-ok", 0).await?;
    assert_eq!(ok.version as usize, ok_events.len());

    // Another tenant's certificate does not exist for this caller; an empty id is named.
    for id in [s.other_tenant, "no-such-certificate"] {
        let e = client
            .get_certificate(GetCertificateRequest {
                certificate_id: id.into(),
            })
            .await
            .expect_err("not visible");
        assert_eq!(e.code(), tonic::Code::NotFound, "{id}: {e:?}");
        let e = client
            .get_history(GetHistoryRequest {
                certificate_id: id.into(),
            })
            .await
            .expect_err("not visible");
        assert_eq!(e.code(), tonic::Code::NotFound, "{id}: {e:?}");
    }
    let other = client
        .get_certificate(as_tenant(
            GetCertificateRequest {
                certificate_id: s.other_tenant.into(),
            },
            OTHER_TENANT,
        )?)
        .await?
        .into_inner();
    assert_eq!(other.status, CertificateStatus::Ordered as i32);
    let e = client
        .get_certificate(GetCertificateRequest::default())
        .await
        .expect_err("no id");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("certificate_id"), "{}", e.message());

    // History: one typed entry per event, the unknown type untyped.
    let history = client
        .get_history(GetHistoryRequest {
            certificate_id: s.ok.into(),
        })
        .await?
        .into_inner()
        .entries;
    assert_eq!(history.len(), ok_events.len());
    assert_eq!(history[0].event_type, "CertificateOrdered");
    assert!(history[0].event.is_some());
    for (entry, recorded) in history.iter().zip(&ok_events) {
        assert_eq!(entry.position, recorded.position);
        assert_eq!(entry.version, recorded.stream_version);
    }
    let teleported = history
        .iter()
        .find(|e| e.event_type == "CertificateTeleported")
        .context("the unknown event")?;
    assert!(teleported.event.is_none());

    // Time travel: by position (just after the order) and by time (when it was issued,
    // before its revocation).
    let at_order = client
        .get_certificate_at(GetCertificateAtRequest {
            certificate_id: s.ok.into(),
            at: Some(At::Position(ok_events[0].position)),
        })
        .await?
        .into_inner();
    assert_eq!(at_order.status, CertificateStatus::Ordered as i32);
    assert_eq!(at_order.version, 1);
    assert!(at_order.serial.is_empty());
    let revoked_events = db.log.read_stream("certificate-cert-revoked", 0).await?;
    let issued_at = revoked_events
        .iter()
        .find(|e| e.event_type == "CertificateIssued")
        .map(|e| e.recorded_at)
        .context("issued event")?;
    let before_revocation = client
        .get_certificate_at(GetCertificateAtRequest {
            certificate_id: s.revoked.into(),
            at: Some(At::Time(timestamp(issued_at))),
        })
        .await?
        .into_inner();
    assert_eq!(before_revocation.status, CertificateStatus::Issued as i32);
    let now = client
        .get_certificate_at(GetCertificateAtRequest {
            certificate_id: s.revoked.into(),
            at: Some(At::Time(timestamp(Utc::now()))),
        })
        .await?
        .into_inner();
    assert_eq!(now.status, CertificateStatus::Revoked as i32);
    let before_it_existed = client
        .get_certificate_at(GetCertificateAtRequest {
            certificate_id: s.revoked.into(),
            at: Some(At::Time(timestamp(
                revoked_events[0].recorded_at - TimeDelta::seconds(1),
            ))),
        })
        .await
        .expect_err("not yet ordered");
    assert_eq!(before_it_existed.code(), tonic::Code::NotFound);
    let e = client
        .get_certificate_at(GetCertificateAtRequest {
            certificate_id: s.revoked.into(),
            at: None,
        })
        .await
        .expect_err("no time or position");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = client
        .get_certificate_at(as_tenant(
            GetCertificateAtRequest {
                certificate_id: s.revoked.into(),
                at: Some(At::Position(u64::MAX)),
            },
            OTHER_TENANT,
        )?)
        .await
        .expect_err("another tenant's");
    assert_eq!(e.code(), tonic::Code::NotFound);

    // WatchChanges from now: a new order shows up; another tenant's does not.
    let mut changes = client
        .watch_changes(WatchChangesRequest { after_position: 0 })
        .await?
        .into_inner();
    let w = Writer {
        log: db.log.clone(),
    };
    let order = |id: &str, tenant: &str| PlaceOrder {
        certificate_id: id.into(),
        tenant: tenant.into(),
        spec: certledger_proto::common::v1::CertificateSpec {
            issuer: "builtin".into(),
            key_algorithm: certledger_proto::common::v1::KeyAlgorithm::EcdsaP256 as i32,
            validity_days: 90,
            domain_slots: Some(certledger_proto::common::v1::DomainSlots {
                kind: certledger_proto::common::v1::DomainSlotKind::Single as i32,
                max_names: 1,
                allow_wildcards: false,
            }),
            validation_method: certledger_proto::common::v1::ValidationMethod::Http01 as i32,
            auto_renew: true,
        },
        application: None,
        predecessor_id: None,
        idempotency_key: None,
    };
    let before_orders = db.log.head_position().await?;
    w.run(
        "cert-watch-other",
        OTHER_TENANT,
        order("cert-watch-other", OTHER_TENANT),
    )
    .await?;
    w.run("cert-watch", TENANT, order("cert-watch", TENANT))
        .await?;
    let change = tokio::time::timeout(DEADLINE, changes.message())
        .await
        .context("no change within the deadline")??
        .context("the stream ended")?;
    assert_eq!(change.certificate_id, "cert-watch");
    assert_eq!(change.event_type, "CertificateOrdered");
    assert_eq!(change.status, CertificateStatus::Ordered as i32);
    let head = db.log.head_position().await?;
    assert_eq!(change.position, head);

    drop(changes);

    // WatchChanges after a past position: the log's changes since then are replayed
    // (this tenant's only), each with the status after it.
    let mut replayed = client
        .watch_changes(WatchChangesRequest {
            after_position: before_orders,
        })
        .await?
        .into_inner();
    let change = tokio::time::timeout(DEADLINE, replayed.message())
        .await
        .context("no replayed change within the deadline")??
        .context("the stream ended")?;
    assert_eq!(
        (
            change.certificate_id.as_str(),
            change.position,
            change.status
        ),
        ("cert-watch", head, CertificateStatus::Ordered as i32)
    );
    drop(replayed);
    let mut replayed = client
        .watch_changes(WatchChangesRequest {
            after_position: ok_events[0].position,
        })
        .await?
        .into_inner();
    let mut seen = Vec::new();
    loop {
        let change = tokio::time::timeout(DEADLINE, replayed.message())
            .await
            .context("no replayed change within the deadline")??
            .context("the stream ended")?;
        assert!(change.position > ok_events[0].position);
        assert_ne!(change.certificate_id, s.other_tenant);
        seen.push(change.position);
        if change.certificate_id == s.ok {
            assert_eq!(change.position, ok_events[1].position);
            assert_eq!(change.event_type, ok_events[1].event_type);
            assert_eq!(change.status, CertificateStatus::Applied as i32);
            break;
        }
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    drop(replayed);
    server.stop().await?;
    running.stop().await?;
    Ok(())
}

/// `certledger-projections rebuild` as a process on a SQLite log: progress on stderr,
/// read models equal to those built live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_mode_of_the_binary_on_sqlite() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log_url = format!("sqlite:{}", dir.path().join("log.db").display());
    let log = certledger_eventlog::connect(&log_url).await?;
    let s = write_scenario(&log).await?;
    let head = log.head_position().await?;

    // Built live, for comparison.
    let live_url = format!("sqlite:{}", dir.path().join("live.db").display());
    let live = ProjectionStore::connect(&live_url).await?;
    let projector = certledger_projections::Projector::new(
        live.clone(),
        log.clone(),
        certledger_projections::ProjectorConfig::default(),
    );
    projector.catch_up(&ReadModel::ALL, &mut |_| {}).await?;

    let store_url = format!("sqlite:{}", dir.path().join("rebuilt.db").display());
    let output = tokio::time::timeout(
        DEADLINE,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_certledger-projections"))
            .args([
                "rebuild",
                "--database-url",
                &log_url,
                "--store-url",
                &store_url,
            ])
            .env_remove("CERTLEDGER_PROJECTIONS_MODELS")
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .context("rebuild did not finish")??;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "rebuild failed: {stderr}");
    assert!(stderr.contains("events/s"), "{stderr}");
    assert!(
        stderr.contains(&format!("position {head}/{head}")),
        "{stderr}"
    );
    assert!(stderr.contains("done"), "{stderr}");
    assert!(
        stderr.contains(&format!("finished at log position {head}")),
        "{stderr}"
    );

    let rebuilt = ProjectionStore::connect(&store_url).await?;
    let ok = rebuilt
        .certificate(TENANT, s.ok)
        .await?
        .context("cert-ok rebuilt")?;
    assert_eq!(ok.status, "issued");
    assert_eq!(dump_all(&rebuilt).await?, dump_all(&live).await?);
    for cp in rebuilt.checkpoints().await? {
        assert_eq!(cp.position, head, "{cp:?}");
        assert!(!cp.rebuilding, "{cp:?}");
    }

    // One model by name; an unknown name is a configuration error naming the flag.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_certledger-projections"))
        .args([
            "rebuild",
            "--database-url",
            &log_url,
            "--store-url",
            &store_url,
            "--model",
            ReadModel::ALL[0].name(),
        ])
        .output()
        .await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains(ReadModel::ALL[0].name()), "{stderr}");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_certledger-projections"))
        .args(["rebuild", "--database-url", &log_url, "--model", "nope"])
        .output()
        .await?;
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("model"));
    Ok(())
}

/// The binary serving: prints both addresses, answers gRPC and HTTP, stops on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_and_stops_on_sigterm() -> anyhow::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let dir = tempfile::tempdir()?;
    let log_url = format!("sqlite:{}", dir.path().join("log.db").display());
    let log = certledger_eventlog::connect(&log_url).await?;
    let s = write_scenario(&log).await?;
    let store_url = format!("sqlite:{}", dir.path().join("rm.db").display());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_certledger-projections"))
        .args([
            "--database-url",
            &log_url,
            "--store-url",
            &store_url,
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--bootstrap-token-file",
            &dir.path().join("admin.token").display().to_string(),
        ])
        .env_remove("CERTLEDGER_NATS_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let mut grpc = None;
    let mut http = None;
    while grpc.is_none() || http.is_none() {
        let line = tokio::time::timeout(DEADLINE, lines.next_line())
            .await
            .context("no address printed")??
            .context("stdout closed before the addresses")?;
        if let Some(a) = line.strip_prefix("listening on ") {
            grpc = Some(a.to_owned());
        } else if let Some(a) = line.strip_prefix("http on ") {
            http = Some(a.to_owned());
        }
    }
    let (grpc, http) = (grpc.context("grpc")?, http.context("http")?);
    // Authenticated with the token the binary wrote at start.
    let token = std::fs::read_to_string(dir.path().join("admin.token"))?;
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {}", token.trim()).parse()?;
    let channel = tonic::transport::Channel::from_shared(format!("http://{grpc}"))?
        .connect()
        .await?;
    let anonymous = CertificateQueryServiceClient::new(channel.clone())
        .list_certificates(QueryCertificatesRequest::default())
        .await
        .expect_err("served without a token");
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
    let mut client = CertificateQueryServiceClient::with_interceptor(
        channel,
        move |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
            Ok(request)
        },
    );
    let found = certledger_testkit::eventually(DEADLINE, "cert-ok listed", || {
        let mut client = client.clone();
        async move {
            let r = client
                .list_certificates(QueryCertificatesRequest::default())
                .await
                .ok()?
                .into_inner();
            (r.certificates.len() == 6).then_some(r)
        }
    })
    .await?;
    assert!(ids(&found).contains(&s.ok.to_owned()));
    let ok = client
        .get_certificate(GetCertificateRequest {
            certificate_id: s.ok.into(),
        })
        .await?
        .into_inner();
    assert_eq!(ok.status, CertificateStatus::Issued as i32);

    // The HTTP side authenticates too.
    let scrape = |authorization: String| {
        let http = http.clone();
        async move {
            let mut tcp = tokio::net::TcpStream::connect(&http).await?;
            tcp.write_all(
                format!(
                    "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{authorization}\r\n"
                )
                .as_bytes(),
            )
            .await?;
            let mut body = String::new();
            tcp.read_to_string(&mut body).await?;
            anyhow::Ok(body)
        }
    };
    let body = scrape(String::new()).await?;
    assert!(body.starts_with("HTTP/1.1 401"), "{body}");
    let body = scrape(format!("authorization: Bearer {}\r\n", token.trim())).await?;
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(
        body.contains("certledger_certificate_expiration_timestamp_seconds"),
        "{body}"
    );

    let pid = child.id().context("pid")?;
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    assert!(killed.success());
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .context("did not stop after SIGTERM")??;
    assert!(status.success(), "{status:?}");
    Ok(())
}
