//! The read models fed by tailing the log, on real PostgreSQL and on SQLite: contents,
//! tenancy, queries, idempotency (every event delivered twice), gaps, rebuild equals live.

mod common;

use std::sync::Arc;

use certledger_eventlog::{ExpectedVersion, NewEvent};
use certledger_projections::history::{At, certificate_at, history};
use certledger_projections::query::{
    AttentionKind, AttentionPolicy, CertificateFilter, PageRequest,
};
use certledger_projections::{AnyRow, Progress, ProjectionError, ReadModel};
use certledger_testkit::eventually;
use chrono::{TimeDelta, Utc};
use common::*;

macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() -> anyhow::Result<()> {
                    super::$name(super::TestDb::postgres().await?).await
                }
            )+
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() -> anyhow::Result<()> {
                    super::$name(super::TestDb::sqlite().await?).await
                }
            )+
        }
    };
}

both_backends!(
    live_read_models,
    every_event_twice_changes_nothing,
    a_gap_is_absorbed_by_the_next_event,
    rebuild_equals_live,
    a_batch_of_many_streams_is_looked_up_whole,
);

async fn live_read_models(db: TestDb) -> anyhow::Result<()> {
    // The projector runs first: the history reaches it through the SQL tail, live.
    let running = start_projector(&db, &db.store, "projections");
    let s = write_scenario(&db.log).await?;
    wait_caught_up(&db.log, &db.store).await?;
    let store = &db.store;
    let now = Utc::now();
    let policy = AttentionPolicy::default();

    // Inventory.
    let ok = store.certificate(TENANT, s.ok).await?.expect("cert-ok");
    assert_eq!(ok.status, "issued");
    assert_eq!(ok.domains, ["www.example.com", "api.example.com"]);
    assert_eq!(ok.issuer, "builtin");
    assert_eq!(ok.key_algorithm, "ecdsa_p256");
    assert_eq!(ok.validation_method, "http_01");
    assert!(ok.auto_renew);
    assert_eq!(
        ok.serial.as_deref(),
        Some("01a2b3c4d5e6f708192a3b4c5d6e7f8091")
    );
    assert!(ok.not_after.is_some_and(|t| t > now));
    assert_eq!(
        (ok.deployment_count, ok.deployment_targets.clone()),
        (1, vec!["web-1".to_owned()])
    );
    let ok_events = db.log.read_stream("certificate-cert-ok", 0).await?;
    assert_eq!(
        ok.stream_version as usize,
        ok_events.len(),
        "the unknown event counts"
    );
    assert_eq!(
        ok.updated_position as u64,
        ok_events.last().map(|e| e.position).unwrap_or(0)
    );
    let issued_at = ok_events
        .iter()
        .find(|e| e.event_type == "CertificateIssued")
        .map(|e| e.recorded_at)
        .expect("issued event");
    assert_eq!(
        ok.status_since.timestamp_micros(),
        issued_at.timestamp_micros()
    );

    let failed = store
        .certificate(TENANT, s.failed)
        .await?
        .expect("cert-failed");
    assert_eq!(failed.status, "failed");
    assert_eq!(failed.last_failure_code.as_deref(), Some("ca_unavailable"));
    assert_eq!(failed.last_failure_reason.as_deref(), Some(XSS_REASON));
    assert_eq!(failed.issuance_failures, 1);
    assert!(failed.last_failure_at.is_some() && failed.next_retry_at.is_none());

    let revoked = store
        .certificate(TENANT, s.revoked)
        .await?
        .expect("cert-revoked");
    assert_eq!(revoked.status, "revoked");

    // Expiry calendar: 30 days before not-after by default.
    let calendar = store
        .expiry_calendar(TENANT, now + TimeDelta::days(30))
        .await?;
    let ids: Vec<&str> = calendar.iter().map(|e| e.certificate_id.as_str()).collect();
    assert_eq!(ids, [s.expiring]);
    let e = &calendar[0];
    assert!(!e.auto_renew);
    assert_eq!(e.renewal_opens_at, e.not_after - TimeDelta::days(30));
    assert_eq!(e.not_after.timestamp(), s.expiring_not_after.timestamp());
    let all = store
        .expiry_calendar(TENANT, now + TimeDelta::days(3650))
        .await?;
    assert!(
        !all.iter().any(|e| e.certificate_id == s.revoked),
        "revoked is not in the calendar"
    );
    assert_eq!(all.len(), 4, "issued: ok, expiring, drifted, deploy-failed");

    // Deployments per target, including drifted, failed and serving-revoked.
    let deployments = store.deployments(TENANT, None).await?;
    let states: Vec<(&str, &str, &str)> = deployments
        .iter()
        .map(|d| {
            (
                d.target_id.as_str(),
                d.certificate_id.as_str(),
                d.state.as_str(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("web-1", s.deploy_failed, "failed"),
            ("web-1", s.ok, "succeeded"),
            ("web-2", s.revoked, "serving_revoked"),
            ("web-3", s.drifted, "drifted"),
        ]
    );
    let failed_dep = &deployments[0];
    assert_eq!(failed_dep.failure_step.as_deref(), Some("reload"));
    assert_eq!(failed_dep.failure_code.as_deref(), Some("deploy_reload"));
    assert_eq!(
        deployments[3].observed_fingerprint.as_deref(),
        Some(hex64(0xee).as_str())
    );
    assert_eq!(store.deployments(TENANT, Some("web-2")).await?.len(), 1);
    let targets = store.targets(TENANT).await?;
    assert_eq!(targets.len(), 3);
    assert!(
        targets
            .iter()
            .all(|t| t.kind == "nginx" && t.status == "registered")
    );
    assert_eq!(targets[0].name, "edge 1");

    // Revocations: the compliance clock.
    let revocations = store.revocations(TENANT, now, &policy).await?;
    assert_eq!(revocations.len(), 1);
    let r = &revocations[0];
    assert_eq!(r.revocation.reason, "key_compromise");
    assert_eq!(r.revocation.requested_by.as_deref(), Some("alice"));
    let (req, rev) = (
        r.revocation.requested_at.expect("requested"),
        r.revocation.revoked_at.expect("revoked"),
    );
    assert!(req <= rev);
    assert_eq!(r.revocation.issuer.as_deref(), Some("builtin-int-1"));
    assert_eq!(
        r.revocation.crl_published_at,
        Some(s.revoked_on_crl_at),
        "the first CRL whose revocations_through reaches the revocation"
    );
    assert_eq!(r.revoke_compliance, "met");
    assert_eq!(r.crl_compliance, "published");
    assert_eq!(r.crl_deadline, Some(rev + TimeDelta::hours(24)));

    // Needs attention.
    let attention = store.attention(TENANT, now, &policy).await?;
    let kinds: Vec<(AttentionKind, &str)> = attention
        .iter()
        .map(|a| (a.kind, a.certificate_id.as_str()))
        .collect();
    for expected in [
        (AttentionKind::ServingRevoked, s.revoked),
        (AttentionKind::ExpiringWithoutAutoRenew, s.expiring),
        (AttentionKind::Failed, s.failed),
        (AttentionKind::DeploymentFailed, s.deploy_failed),
        (AttentionKind::Drifted, s.drifted),
    ] {
        assert!(
            kinds.contains(&expected),
            "{expected:?} missing from {kinds:?}"
        );
    }
    assert_eq!(kinds.len(), 5, "{kinds:?}");
    assert_eq!(
        attention[0].kind,
        AttentionKind::ServingRevoked,
        "critical first"
    );
    // Later: the expiring certificate becomes critical, a stuck order shows up.
    let later = store
        .attention(TENANT, now + TimeDelta::days(5), &policy)
        .await?;
    let expiring = later
        .iter()
        .find(|a| a.certificate_id == s.expiring)
        .expect("still expiring");
    assert_eq!(
        expiring.severity,
        certledger_projections::query::Severity::Critical
    );

    // Tenancy.
    assert!(store.certificate(OTHER_TENANT, s.ok).await?.is_none());
    let other = store
        .list_certificates(
            OTHER_TENANT,
            &CertificateFilter::default(),
            &PageRequest::default(),
            now,
            &policy,
        )
        .await?;
    assert_eq!(other.items.len(), 1);
    assert_eq!(other.items[0].certificate_id, s.other_tenant);
    assert_eq!(other.items[0].status, "ordered");
    assert!(
        store
            .attention(OTHER_TENANT, now, &policy)
            .await?
            .is_empty()
    );

    // Filters and pages.
    let list = |f: CertificateFilter| {
        let store = store.clone();
        async move {
            let page = store
                .list_certificates(
                    TENANT,
                    &f,
                    &PageRequest::default(),
                    now,
                    &AttentionPolicy::default(),
                )
                .await?;
            Ok::<_, ProjectionError>(
                page.items
                    .into_iter()
                    .map(|c| c.certificate_id)
                    .collect::<Vec<_>>(),
            )
        }
    };
    assert_eq!(
        list(CertificateFilter {
            domain_contains: Some("API.example".into()),
            ..Default::default()
        })
        .await?,
        [s.ok]
    );
    assert_eq!(
        list(CertificateFilter {
            status: Some("failed".into()),
            ..Default::default()
        })
        .await?,
        [s.failed]
    );
    assert_eq!(
        list(CertificateFilter {
            target_id: Some("web-1".into()),
            ..Default::default()
        })
        .await?,
        [s.deploy_failed, s.ok]
    );
    assert_eq!(
        list(CertificateFilter {
            expiring_before: Some(now + TimeDelta::days(30)),
            ..Default::default()
        })
        .await?,
        [s.expiring]
    );
    assert_eq!(
        list(CertificateFilter {
            needs_attention: true,
            issuer: Some("builtin".into()),
            ..Default::default()
        })
        .await?,
        [s.deploy_failed, s.drifted, s.expiring, s.failed, s.revoked]
    );
    assert_eq!(
        list(CertificateFilter {
            domain_contains: Some("%".into()),
            ..Default::default()
        })
        .await?,
        Vec::<String>::new(),
        "LIKE wildcards are literal"
    );
    match list(CertificateFilter {
        status: Some("bogus".into()),
        ..Default::default()
    })
    .await
    {
        Err(ProjectionError::InvalidArgument { field, .. }) => assert_eq!(field, "status"),
        other => panic!("expected an invalid status, got {other:?}"),
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = store
            .list_certificates(
                TENANT,
                &CertificateFilter::default(),
                &PageRequest {
                    page_size: 2,
                    page_token: token,
                },
                now,
                &policy,
            )
            .await?;
        assert!(page.items.len() <= 2);
        seen.extend(page.items.into_iter().map(|c| c.certificate_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(
        seen,
        [
            s.deploy_failed,
            s.drifted,
            s.expiring,
            s.failed,
            s.ok,
            s.revoked
        ],
        "pages cover everything once, in order"
    );

    // Detail, history and time travel.
    let detail = store
        .certificate_detail(TENANT, s.revoked, now, &policy)
        .await?
        .expect("detail");
    assert_eq!(detail.deployments.len(), 1);
    assert_eq!(detail.attention[0].kind, AttentionKind::ServingRevoked);
    let timeline = history(&db.log, TENANT, s.ok).await?.expect("history");
    let types: Vec<&str> = timeline.iter().map(|h| h.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "CertificateOrdered",
            "ApplicationSubmitted",
            "KeyGenerated",
            "ValidationStarted",
            "DomainValidated",
            "DomainValidated",
            "ValidationPassed",
            "IssuanceIntended",
            "CertificateIssued",
            "DeploymentRequested",
            "DeploymentSucceeded",
            "CertificateTeleported",
        ]
    );
    assert!(
        timeline[8].summary.starts_with("serial 01a2b3"),
        "{}",
        timeline[8].summary
    );
    assert!(
        timeline
            .iter()
            .all(|h| !h.summary.contains("BEGIN CERTIFICATE"))
    );
    assert_eq!(timeline[11].summary, "", "unknown events have no summary");
    assert!(
        history(&db.log, OTHER_TENANT, s.ok).await?.is_none(),
        "other tenants see nothing"
    );
    let before_issue = certificate_at(&db.log, TENANT, s.ok, At::Position(timeline[7].position))
        .await?
        .expect("state");
    assert_eq!(before_issue.status, certledger_domain::Status::Issuing);
    let at_end = certificate_at(&db.log, TENANT, s.ok, At::Time(Utc::now()))
        .await?
        .expect("state");
    assert_eq!(at_end.version, 12);
    assert!(
        certificate_at(&db.log, TENANT, s.ok, At::Position(0))
            .await?
            .is_none()
    );

    // Live change notifications and a later event.
    let mut changes = running.projector.subscribe();
    let w = Writer {
        log: db.log.clone(),
    };
    w.run(
        s.expiring,
        TENANT,
        certledger_domain::certificate::StartRenewal {
            successor_id: "cert-expiring-2".into(),
            reason: "manual".into(),
            trigger: "bob".into(),
            window: Default::default(),
            now: Utc::now(),
        },
    )
    .await?;
    let change = tokio::time::timeout(DEADLINE, changes.recv()).await??;
    assert_eq!(change.certificate_id, s.expiring);
    assert_eq!(change.event_type, "RenewalStarted");
    wait_caught_up(&db.log, store).await?;
    let renewing = store.certificate(TENANT, s.expiring).await?.expect("row");
    assert_eq!(renewing.successor_id.as_deref(), Some("cert-expiring-2"));
    assert_eq!(renewing.renewal_state.as_deref(), Some("active"));
    let after = store.attention(TENANT, Utc::now(), &policy).await?;
    assert!(
        !after.iter().any(|a| a.certificate_id == s.expiring),
        "a renewal under way takes it off the list"
    );

    let stats = running.projector.stats();
    assert!(stats.undecodable.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    running.stop().await?;
    Ok(())
}

async fn every_event_twice_changes_nothing(db: TestDb) -> anyhow::Result<()> {
    let running = start_projector(&db, &db.store, "projections");
    write_scenario(&db.log).await?;
    let head = wait_caught_up(&db.log, &db.store).await?;
    let live = dump_all(&db.store).await?;

    // 1. A second consumer over the same read models: the SQL tail delivers every event
    //    again from position 0.
    let replay = start_projector(&db, &db.store, "projections-replay");
    eventually(
        DEADLINE,
        "the replaying consumer to reach the head",
        || async {
            (db.log
                .load_checkpoint("consumer:projections-replay")
                .await
                .ok()?
                >= head)
                .then_some(())
        },
    )
    .await?;
    replay.stop().await?;
    assert_same_rows(
        "after redelivering everything",
        &live,
        &dump_all(&db.store).await?,
    )?;

    // 2. Straight into the handler, every event again (as a JetStream redelivery would).
    let all = db.log.read_all(0, 10_000).await?;
    for e in &all {
        running.projector.apply_live(e).await?;
    }
    assert_same_rows(
        "after handling everything twice",
        &live,
        &dump_all(&db.store).await?,
    )?;
    let stats = running.projector.stats();
    assert!(stats.duplicates.load(std::sync::atomic::Ordering::Relaxed) >= 40);
    running.stop().await?;
    Ok(())
}

/// One batch with more streams than a statement takes (lookups and writes are split into
/// statements of at most 64 keys or rows): every stream is written once, and handling the
/// batch again finds every stream's version, so writes nothing.
async fn a_batch_of_many_streams_is_looked_up_whole(db: TestDb) -> anyhow::Result<()> {
    const CERTIFICATES: usize = 150;
    let w = Writer {
        log: db.log.clone(),
    };
    let now = Utc::now();
    let ids: Vec<String> = (0..CERTIFICATES).map(|i| format!("cert-{i:03}")).collect();
    for (i, id) in ids.iter().enumerate() {
        w.issued(&CertPlan {
            id,
            tenant: TENANT,
            domains: &["many.example.com"],
            auto_renew: true,
            validity_days: 365,
            not_before: now - TimeDelta::days(1),
            not_after: now + TimeDelta::days(300),
            serial_byte: u8::try_from(i % 200 + 1)?,
        })
        .await?;
    }
    let all = db.log.read_all(0, 10_000).await?;
    let projector = certledger_projections::Projector::new(
        db.store.clone(),
        db.log.clone(),
        certledger_projections::ProjectorConfig::default(),
    );
    let writes = || {
        projector
            .stats()
            .stream_writes
            .load(std::sync::atomic::Ordering::Relaxed)
    };

    projector.apply_live_batch(&all).await?;
    let once = dump_all(&db.store).await?;
    let inventory = once
        .iter()
        .find(|(m, _)| *m == ReadModel::Inventory)
        .map_or(0, |(_, rows)| rows.len());
    assert_eq!(inventory, CERTIFICATES, "{}", db.label);
    let written = writes();
    // Inventory, expiry calendar, deployments and revocations read certificate streams.
    assert_eq!(written, 4 * CERTIFICATES as u64, "{}", db.label);

    projector.apply_live_batch(&all).await?;
    assert_eq!(writes(), written, "{}: a stream written twice", db.label);
    assert_same_rows("after the batch twice", &once, &dump_all(&db.store).await?)?;
    Ok(())
}

async fn a_gap_is_absorbed_by_the_next_event(mut db: TestDb) -> anyhow::Result<()> {
    let s = write_scenario(&db.log).await?;
    let (store, schema) = db.another_store().await?;
    db.drop_schema_later(schema);
    let projector =
        certledger_projections::Projector::new(store.clone(), db.log.clone(), Default::default());
    // Deliver only the 9th event of cert-ok (issued): the first eight are missing.
    let events = db.log.read_stream("certificate-cert-ok", 0).await?;
    projector.apply_live(&events[8]).await?;
    let row = store
        .certificate(TENANT, s.ok)
        .await?
        .expect("row from the gap");
    assert_eq!((row.status.as_str(), row.stream_version), ("issued", 9));
    assert_eq!(row.domains, ["www.example.com", "api.example.com"]);
    // The missed events arrive late: nothing moves backwards.
    for e in &events[..8] {
        projector.apply_live(e).await?;
    }
    let again = store.certificate(TENANT, s.ok).await?.expect("row");
    assert_eq!(again, row);
    // Then everything in order, and the result equals a straight feed.
    for e in db.log.read_all(0, 10_000).await? {
        projector.apply_live(&e).await?;
    }
    let straight = certledger_projections::Projector::new(
        db.store.clone(),
        db.log.clone(),
        Default::default(),
    );
    straight.catch_up(&ReadModel::ALL, &mut |_| {}).await?;
    assert_same_rows(
        "gap then redelivery vs straight",
        &dump_all(&db.store).await?,
        &dump_all(&store).await?,
    )?;
    store.close().await;
    Ok(())
}

async fn rebuild_equals_live(db: TestDb) -> anyhow::Result<()> {
    let running = start_projector(&db, &db.store, "projections");
    let s = write_scenario(&db.log).await?;
    let head = wait_caught_up(&db.log, &db.store).await?;
    let live = dump_all(&db.store).await?;
    assert!(live.iter().all(|(_, rows)| !rows.is_empty()));

    // Rebuild every read model while the live projector keeps running.
    let mut reports: Vec<Progress> = Vec::new();
    let reached = running
        .projector
        .rebuild(&ReadModel::ALL, &mut |p| reports.push(p.clone()))
        .await?;
    assert!(reached >= head);
    let last = reports.last().expect("progress reported");
    assert!(last.finished);
    assert_eq!(last.events_done, head, "every event replayed");
    assert!(reports.len() >= 2, "progress after each batch");
    assert!(
        reports
            .iter()
            .any(|p| !p.finished && p.rate_per_sec > 0.0 && p.eta.is_some())
    );
    let rebuilt = dump_all(&db.store).await?;
    assert_same_rows("rebuilt vs live", &live, &rebuilt)?;
    for cp in db.store.checkpoints().await? {
        assert!(!cp.rebuilding && cp.position >= head, "{cp:?}");
    }

    // One model alone; the others keep their rows.
    running
        .projector
        .rebuild(&[ReadModel::Revocations], &mut |_| {})
        .await?;
    assert_same_rows(
        "revocations rebuilt alone",
        &live,
        &dump_all(&db.store).await?,
    )?;

    // An interrupted rebuild (rows cleared, flag set, nothing replayed yet) resumes at
    // the next start.
    running.projector.reset(&[ReadModel::Inventory]).await?;
    assert!(db.store.dump(ReadModel::Inventory).await?.is_empty());
    assert!(
        db.store
            .checkpoints()
            .await?
            .iter()
            .any(|c| c.model == ReadModel::Inventory && c.rebuilding)
    );
    running.stop().await?;
    let restarted = start_projector(&db, &db.store, "projections");
    wait_caught_up(&db.log, &db.store).await?;
    restarted.stop().await?;
    assert_same_rows("after restart", &live, &dump_all(&db.store).await?)?;

    // The rebuilt rows are the live rows, checked for one of them by value too.
    let inventory = &rebuilt[0].1;
    assert!(inventory.iter().any(|r| matches!(r, AnyRow::Inventory(i) if i.certificate_id == s.failed && i.status == "failed")));
    Ok(())
}

#[tokio::test]
async fn unknown_event_types_are_skipped_not_fatal() -> anyhow::Result<()> {
    let db = TestDb::sqlite().await?;
    // A stream whose very first event is of an unknown type, then a garbled payload.
    db.log
        .append_one(
            "certificate-weird",
            ExpectedVersion::NoStream,
            vec![
                NewEvent::new("FromTheFuture", 1, vec![1, 2, 3], Default::default()),
                NewEvent::new(
                    "CertificateOrdered",
                    1,
                    vec![0xff, 0xff, 0xff],
                    Default::default(),
                ),
                NewEvent::new("CertificateOrdered", 9, vec![], Default::default()),
            ],
        )
        .await?;
    let projector = certledger_projections::Projector::new(
        db.store.clone(),
        db.log.clone(),
        Default::default(),
    );
    projector.catch_up(&ReadModel::ALL, &mut |_| {}).await?;
    assert!(db.store.dump(ReadModel::Inventory).await?.is_empty());
    assert_eq!(
        projector
            .stats()
            .undecodable
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    let cps = db.store.checkpoints().await?;
    assert!(cps.iter().all(|c| c.position == 3));
    let _ = Arc::clone(&db.log);
    Ok(())
}

/// A statement that fails in the middle of a batch's write (SQLite writes a batch's rows
/// through its own API, inside sqlx's transaction) leaves nothing of the batch: the rows
/// written before it are rolled back and the checkpoints stay where they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_leaves_nothing_of_its_batch() -> anyhow::Result<()> {
    let db = TestDb::sqlite().await?;
    write_scenario(&db.log).await?;
    let head = db.log.head_position().await?;
    let file = db
        .dir()
        .expect("a SQLite test's directory")
        .join("projections.db");
    let direct = sqlx::SqlitePool::connect(&format!("sqlite:{}", file.display())).await?;
    // Expiry rows are written after the inventory's, in the same transaction.
    sqlx::raw_sql(
        "CREATE TRIGGER refuse_expiry BEFORE INSERT ON expiry_calendar \
         BEGIN SELECT RAISE(ABORT, 'expiry refused'); END",
    )
    .execute(&direct)
    .await?;
    let projector = certledger_projections::Projector::new(
        db.store.clone(),
        db.log.clone(),
        Default::default(),
    );
    let error = projector
        .catch_up(&ReadModel::ALL, &mut |_| {})
        .await
        .expect_err("the expiry calendar refuses rows");
    let message = error.to_string();
    assert!(
        message.contains("write expiry_calendar") && message.contains("expiry refused"),
        "{message}"
    );
    assert!(db.store.dump(ReadModel::Inventory).await?.is_empty());
    let positions = || async {
        anyhow::Ok(
            db.store
                .checkpoints()
                .await?
                .iter()
                .map(|c| c.position)
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(positions().await?, [0; 4]);

    sqlx::raw_sql("DROP TRIGGER refuse_expiry")
        .execute(&direct)
        .await?;
    projector.catch_up(&ReadModel::ALL, &mut |_| {}).await?;
    assert!(!db.store.dump(ReadModel::ExpiryCalendar).await?.is_empty());
    assert_eq!(positions().await?, [head; 4]);
    Ok(())
}
