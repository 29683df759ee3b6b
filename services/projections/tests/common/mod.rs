//! Test support: a log and read models on real PostgreSQL (a unique schema per test,
//! dropped afterwards) or SQLite (temporary files), and a realistic history written
//! through the domain's decider.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use certledger_domain::certificate::*;
use certledger_domain::target::{RegisterTarget, TargetCommand, decide_target, fold_target};
use certledger_domain::{CertificateEvent, TargetEvent};
use certledger_eventlog::{
    EventLog, ExpectedVersion, LogOptions, Metadata, NewEvent, RecordedEvent,
};
use certledger_eventstream::consumer::EventSource;
use certledger_projections::{
    AnyRow, ProjectionStore, Projector, ProjectorConfig, ReadModel, StoreOptions,
};
use certledger_proto::codec::{CURRENT_SCHEMA_VERSION, EventCodec};
use certledger_proto::common::v1::{
    CertificateSpec, DomainSlotKind, Failure, FailureCode, KeyAlgorithm, RevocationReason, Subject,
    ValidationMethod,
};
use certledger_proto::events::v1::crl_event::Event as CrlEvent;
use certledger_proto::events::v1::target_registered::Kind;
use certledger_proto::events::v1::{Challenge, CrlPublished, NginxTarget};
use certledger_testkit::eventually;
use chrono::{DateTime, TimeDelta, Utc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const DEADLINE: Duration = Duration::from_secs(60);

pub fn pg_url() -> String {
    std::env::var("CERTLEDGER_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A log and read models for one test.
pub struct TestDb {
    pub log: Arc<dyn EventLog>,
    pub store: ProjectionStore,
    pub label: &'static str,
    schemas: Vec<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// PostgreSQL: the log and the read models in two fresh schemas.
    pub async fn postgres() -> anyhow::Result<TestDb> {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let log_schema = format!("projtest_{}_log", &id[id.len() - 12..]);
        let rm_schema = format!("projtest_{}_rm", &id[id.len() - 12..]);
        let url = pg_url();
        let log = certledger_eventlog::connect_with(
            &url,
            LogOptions::new()
                .pg_schema(log_schema.clone())
                .poll_interval(Duration::from_millis(100)),
        )
        .await
        .with_context(|| {
            format!("connecting the event log at {url} (set CERTLEDGER_TEST_PG_URL)")
        })?;
        let store =
            ProjectionStore::connect_with(&url, StoreOptions::new().pg_schema(rm_schema.clone()))
                .await
                .context("connecting the read models")?;
        Ok(TestDb {
            log,
            store,
            label: "postgres",
            schemas: vec![log_schema, rm_schema],
            _dir: None,
        })
    }

    /// SQLite: the log and the read models in two files of a temporary directory.
    pub async fn sqlite() -> anyhow::Result<TestDb> {
        let dir = tempfile::tempdir()?;
        let log = certledger_eventlog::connect_with(
            &format!("sqlite:{}", dir.path().join("log.db").display()),
            LogOptions::new().poll_interval(Duration::from_millis(100)),
        )
        .await?;
        let store = Self::sqlite_store(&dir, "projections.db").await?;
        Ok(TestDb {
            log,
            store,
            label: "sqlite",
            schemas: vec![],
            _dir: Some(dir),
        })
    }

    async fn sqlite_store(dir: &tempfile::TempDir, name: &str) -> anyhow::Result<ProjectionStore> {
        Ok(
            ProjectionStore::connect(&format!("sqlite:{}", dir.path().join(name).display()))
                .await?,
        )
    }

    /// The directory of a SQLite test's files (none on PostgreSQL).
    pub fn dir(&self) -> Option<&std::path::Path> {
        self._dir.as_ref().map(|d| d.path())
    }

    /// A second, empty set of read models next to the first (same backend).
    pub async fn another_store(&self) -> anyhow::Result<(ProjectionStore, Option<String>)> {
        match &self._dir {
            Some(dir) => Ok((Self::sqlite_store(dir, "second.db").await?, None)),
            None => {
                let id = uuid::Uuid::now_v7().simple().to_string();
                let schema = format!("projtest_{}_rm2", &id[id.len() - 12..]);
                let store = ProjectionStore::connect_with(
                    &pg_url(),
                    StoreOptions::new().pg_schema(schema.clone()),
                )
                .await?;
                Ok((store, Some(schema)))
            }
        }
    }

    pub fn drop_schema_later(&mut self, schema: Option<String>) {
        self.schemas.extend(schema);
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.schemas.is_empty() {
            return;
        }
        let schemas = std::mem::take(&mut self.schemas);
        // Drop the schemas from a thread of its own (Drop cannot await), also when the
        // test failed.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                use sqlx::Connection;
                if let Ok(mut conn) = sqlx::PgConnection::connect(&pg_url()).await {
                    for s in schemas {
                        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                            "DROP SCHEMA IF EXISTS \"{s}\" CASCADE"
                        )))
                        .execute(&mut conn)
                        .await;
                    }
                }
            });
        })
        .join();
    }
}

// --- writing histories through the decider -------------------------------------------

/// Appends decided events to the log, like a service handler would.
pub struct Writer {
    pub log: Arc<dyn EventLog>,
}

pub fn metadata(tenant: &str, actor: &str) -> Metadata {
    Metadata {
        tenant: tenant.to_owned(),
        correlation_id: Some(uuid::Uuid::now_v7()),
        causation_id: None,
        actor: actor.to_owned(),
        trace_context: None,
    }
}

impl Writer {
    async fn certificate_state(&self, id: &str) -> anyhow::Result<CertificateState> {
        let events = self
            .log
            .read_stream(&format!("certificate-{id}"), 0)
            .await?;
        let mut state = CertificateState::default();
        for e in &events {
            state = match CertificateEvent::decode(&e.event_type, e.schema_version, &e.payload) {
                Ok(ev) => evolve(state, &ev),
                Err(_) => CertificateState {
                    version: state.version + 1,
                    ..state
                },
            };
        }
        Ok(state)
    }

    /// Decides `command` on certificate `id` and appends the events.
    pub async fn run(
        &self,
        id: &str,
        tenant: &str,
        command: impl Into<CertificateCommand>,
    ) -> anyhow::Result<Vec<CertificateEvent>> {
        let command = command.into();
        let state = self.certificate_state(id).await?;
        let events = decide(&command, &state)
            .map_err(|e| anyhow!("{} on {id} refused: {e}", command.name()))?;
        if events.is_empty() {
            return Ok(events);
        }
        let new: Vec<NewEvent> = events
            .iter()
            .map(|e| {
                NewEvent::new(
                    e.event_type(),
                    CURRENT_SCHEMA_VERSION,
                    e.encode_payload(),
                    metadata(tenant, "test"),
                )
            })
            .collect();
        self.log
            .append_one(
                &format!("certificate-{id}"),
                ExpectedVersion::Exact(state.version),
                new,
            )
            .await?;
        Ok(events)
    }

    /// Registers an nginx target.
    pub async fn register_target(&self, id: &str, tenant: &str, name: &str) -> anyhow::Result<()> {
        let stream = format!("target-{id}");
        let history: Vec<TargetEvent> = self
            .log
            .read_stream(&stream, 0)
            .await?
            .iter()
            .filter_map(|e| TargetEvent::decode(&e.event_type, e.schema_version, &e.payload).ok())
            .collect();
        let state = fold_target(&history);
        let events = decide_target(
            &TargetCommand::Register(RegisterTarget {
                target_id: id.to_owned(),
                tenant: tenant.to_owned(),
                name: name.to_owned(),
                kind: Some(Kind::Nginx(NginxTarget {
                    certificate_path: format!("/etc/nginx/certs/{id}.pem"),
                    key_path: format!("/etc/nginx/certs/{id}.key"),
                    reload_command: vec!["nginx".into(), "-s".into(), "reload".into()],
                    verify_address: "127.0.0.1:443".into(),
                    verify_server_name: "www.example.com".into(),
                })),
            }),
            &state,
        )
        .map_err(|e| anyhow!("registering {id}: {e}"))?;
        let new = events
            .iter()
            .map(|e| {
                NewEvent::new(
                    e.event_type(),
                    CURRENT_SCHEMA_VERSION,
                    e.encode_payload(),
                    metadata(tenant, "test"),
                )
            })
            .collect();
        self.log
            .append_one(&stream, ExpectedVersion::Exact(state.version), new)
            .await?;
        Ok(())
    }

    /// Records a CRL of `issuer` listing every revocation through log position
    /// `through`, as the revocation service does.
    pub async fn crl_published(
        &self,
        issuer: &str,
        crl_number: u64,
        through: u64,
        this_update: DateTime<Utc>,
    ) -> anyhow::Result<RecordedEvent> {
        let event = CrlEvent::CrlPublished(CrlPublished {
            issuer: issuer.into(),
            crl_number,
            this_update: Some(certledger_domain::time::to_timestamp(this_update)),
            next_update: Some(certledger_domain::time::to_timestamp(
                this_update + TimeDelta::days(1),
            )),
            entries: 1,
            sha256: hex64(0xc0),
            revocations_through: through,
        });
        self.append_raw(
            &format!("crl-{issuer}"),
            event.event_type(),
            event.encode_payload(),
            "",
        )
        .await
    }

    /// Appends a raw event (e.g. of a type no build knows yet).
    pub async fn append_raw(
        &self,
        stream: &str,
        event_type: &str,
        payload: Vec<u8>,
        tenant: &str,
    ) -> anyhow::Result<RecordedEvent> {
        self.log
            .append_one(
                stream,
                ExpectedVersion::Any,
                vec![NewEvent::new(
                    event_type,
                    1,
                    payload,
                    metadata(tenant, "test"),
                )],
            )
            .await?;
        let events = self.log.read_stream(stream, 0).await?;
        events.last().cloned().context("the event just appended")
    }
}

pub const TENANT: &str = "default";
pub const OTHER_TENANT: &str = "other";
pub const XSS_REASON: &str =
    "CA at <ca.internal> unreachable: \"timeout\" & <script>alert('x')</script>";
const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

pub fn hex64(byte: u8) -> String {
    format!("{byte:02x}").repeat(32)
}

fn spec(auto_renew: bool, validity_days: u32) -> CertificateSpec {
    CertificateSpec {
        validity_days,
        auto_renew,
        ..certledger_testkit::certificate_spec(DomainSlotKind::Multi, 5, ValidationMethod::Http01)
    }
}

fn challenge(domain: &str) -> Challenge {
    Challenge {
        domain: domain.into(),
        method: ValidationMethod::Http01 as i32,
        token: format!(
            "token-{}-0123456789abcdef",
            domain.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
        ),
        key_authorization: "token.thumbprint".into(),
    }
}

/// What one certificate of the scenario looks like.
pub struct CertPlan<'a> {
    pub id: &'a str,
    pub tenant: &'a str,
    pub domains: &'a [&'a str],
    pub auto_renew: bool,
    pub validity_days: u32,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    pub serial_byte: u8,
}

impl Writer {
    /// Order, application, key, validation: the certificate is validated.
    pub async fn validated(&self, p: &CertPlan<'_>) -> anyhow::Result<()> {
        self.run(
            p.id,
            p.tenant,
            PlaceOrder {
                certificate_id: p.id.into(),
                tenant: p.tenant.into(),
                spec: spec(p.auto_renew, p.validity_days),
                application: None,
                predecessor_id: None,
                idempotency_key: None,
            },
        )
        .await?;
        self.run(
            p.id,
            p.tenant,
            SubmitApplication {
                application: Application {
                    domains: p.domains.iter().map(|d| (*d).to_owned()).collect(),
                    ip_addresses: vec![],
                    subject: Subject::default(),
                    key_source: KeySource::Generate {
                        algorithm: KeyAlgorithm::Unspecified,
                    },
                },
            },
        )
        .await?;
        self.run(
            p.id,
            p.tenant,
            RecordKeyGenerated {
                key_id: format!("key-{}", p.id),
                algorithm: KeyAlgorithm::EcdsaP256,
                public_key_sha256: hex64(0x11),
            },
        )
        .await?;
        self.run(
            p.id,
            p.tenant,
            StartValidation {
                challenges: p.domains.iter().map(|d| challenge(d)).collect(),
            },
        )
        .await?;
        for d in p.domains {
            self.run(
                p.id,
                p.tenant,
                RecordDomainValidated {
                    domain: (*d).to_owned(),
                },
            )
            .await?;
        }
        Ok(())
    }

    /// Validated, intent recorded: the CA is signing.
    pub async fn issuing(&self, p: &CertPlan<'_>) -> anyhow::Result<()> {
        self.validated(p).await?;
        self.run(
            p.id,
            p.tenant,
            IntendIssuance {
                issuer_ca_id: "builtin-int-1".into(),
                serial: format!("{:02x}a2b3c4d5e6f708192a3b4c5d6e7f8091", p.serial_byte),
                tbs_sha256: hex64(0x7b),
                not_before: p.not_before,
                not_after: p.not_after,
            },
        )
        .await?;
        Ok(())
    }

    /// Issued.
    pub async fn issued(&self, p: &CertPlan<'_>) -> anyhow::Result<()> {
        self.issuing(p).await?;
        self.run(
            p.id,
            p.tenant,
            RecordIssued {
                issuer_ca_id: "builtin-int-1".into(),
                serial: format!("{:02x}a2b3c4d5e6f708192a3b4c5d6e7f8091", p.serial_byte),
                not_before: p.not_before,
                not_after: p.not_after,
                sha256_fingerprint: hex64(p.serial_byte),
                certificate_pem: PEM.into(),
                chain_pem: PEM.into(),
            },
        )
        .await?;
        Ok(())
    }

    /// Deploys an issued certificate on a target; `verified` records success.
    pub async fn deploy(
        &self,
        id: &str,
        tenant: &str,
        target: &str,
        fingerprint_byte: u8,
        verified: bool,
    ) -> anyhow::Result<()> {
        let deployment_id = format!("dep-{id}-{target}");
        self.run(
            id,
            tenant,
            RequestDeployment {
                deployment_id: deployment_id.clone(),
                target_id: target.into(),
                replaces_certificate_id: None,
                now: Utc::now(),
            },
        )
        .await?;
        if verified {
            self.run(
                id,
                tenant,
                RecordDeploymentSucceeded {
                    deployment_id,
                    target_id: target.into(),
                    verified_fingerprint: hex64(fingerprint_byte),
                },
            )
            .await?;
        }
        Ok(())
    }
}

/// The ids of the scenario's certificates.
pub struct Scenario {
    pub ok: &'static str,
    pub revoked: &'static str,
    pub failed: &'static str,
    pub expiring: &'static str,
    pub drifted: &'static str,
    pub deploy_failed: &'static str,
    pub other_tenant: &'static str,
    pub expiring_not_after: DateTime<Utc>,
    /// thisUpdate of the first CRL listing the revocation of `revoked`.
    pub revoked_on_crl_at: DateTime<Utc>,
}

/// A realistic history: issued and deployed, revoked while deployed, a failed issuance,
/// an expiring certificate without auto-renew, a drifted and a failed deployment, a
/// certificate of another tenant, targets, an event of a type no build knows, and an
/// event on a stream nobody reads.
pub async fn write_scenario(log: &Arc<dyn EventLog>) -> anyhow::Result<Scenario> {
    let w = Writer { log: log.clone() };
    let now = Utc::now();
    let day = TimeDelta::days(1);
    for (id, name) in [
        ("web-1", "edge 1"),
        ("web-2", "edge 2"),
        ("web-3", "edge 3"),
    ] {
        w.register_target(id, TENANT, name).await?;
    }
    let s = Scenario {
        ok: "cert-ok",
        revoked: "cert-revoked",
        failed: "cert-failed",
        expiring: "cert-expiring",
        drifted: "cert-drifted",
        deploy_failed: "cert-deploy-failed",
        other_tenant: "cert-other",
        expiring_not_after: now + day * 10,
        revoked_on_crl_at: DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now),
    };
    let plan = |id, domains, auto_renew, serial_byte| CertPlan {
        id,
        tenant: TENANT,
        domains,
        auto_renew,
        validity_days: 365,
        not_before: now - day,
        not_after: now + day * 300,
        serial_byte,
    };

    // Issued and verified on web-1.
    w.issued(&plan(
        s.ok,
        &["www.example.com", "api.example.com"],
        true,
        0x01,
    ))
    .await?;
    w.deploy(s.ok, TENANT, "web-1", 0x01, true).await?;

    // Issued, verified on web-2, then revoked (key compromise): web-2 serves a revoked
    // certificate.
    w.issued(&plan(s.revoked, &["shop.example.com"], true, 0x02))
        .await?;
    w.deploy(s.revoked, TENANT, "web-2", 0x02, true).await?;
    w.run(
        s.revoked,
        TENANT,
        RequestRevocation {
            reason: RevocationReason::KeyCompromise,
            requested_by: "alice".into(),
            comment: "key leaked in a public repository".into(),
            now: Utc::now(),
        },
    )
    .await?;
    w.run(
        s.revoked,
        TENANT,
        RecordRevoked {
            reason: RevocationReason::KeyCompromise,
            revoked_at: Utc::now(),
        },
    )
    .await?;
    // CRLs of the issuer: one built before the revocation service had read the
    // revocation, then the first to list it, then a later one.
    let revoked_position = w
        .log
        .read_stream(&format!("certificate-{}", s.revoked), 0)
        .await?
        .last()
        .map(|e| e.position)
        .context("the revocation just recorded")?;
    let issuer = "builtin-int-1";
    let second = TimeDelta::seconds(1);
    w.crl_published(
        issuer,
        1,
        revoked_position - 1,
        s.revoked_on_crl_at - second,
    )
    .await?;
    w.crl_published(issuer, 2, revoked_position, s.revoked_on_crl_at)
        .await?;
    w.crl_published(
        issuer,
        3,
        revoked_position + 2,
        s.revoked_on_crl_at + second,
    )
    .await?;
    // A later event of the certificate rewrites its revocation row after the CRLs are
    // known (the date then comes from the CRL side already recorded).
    w.run(
        s.revoked,
        TENANT,
        FlagRevokedServed {
            deployment_id: format!("dep-{}-web-2", s.revoked),
            target_id: "web-2".into(),
            observed: "TLS handshake served the revoked serial".into(),
        },
    )
    .await?;

    // Issuance failed for good (the reason carries markup the pages must escape).
    w.issuing(&plan(s.failed, &["fail.example.com"], true, 0x03))
        .await?;
    w.run(
        s.failed,
        TENANT,
        RecordIssuanceFailed {
            failure: Failure {
                code: FailureCode::CaUnavailable as i32,
                reason: XSS_REASON.into(),
                attempt: 3,
                next_retry_at: None,
            },
        },
    )
    .await?;

    // Expires in 10 days, auto-renew off.
    w.issued(&CertPlan {
        id: s.expiring,
        tenant: TENANT,
        domains: &["legacy.example.com"],
        auto_renew: false,
        validity_days: 90,
        not_before: now - day * 80,
        not_after: s.expiring_not_after,
        serial_byte: 0x04,
    })
    .await?;

    // Verified on web-3, then seen serving something else.
    w.issued(&plan(s.drifted, &["blog.example.com"], true, 0x05))
        .await?;
    w.deploy(s.drifted, TENANT, "web-3", 0x05, true).await?;
    w.run(
        s.drifted,
        TENANT,
        RecordDeploymentDrifted {
            deployment_id: format!("dep-{}-web-3", s.drifted),
            target_id: "web-3".into(),
            observed_fingerprint: hex64(0xee),
            observed: "served another certificate".into(),
        },
    )
    .await?;

    // Deployment to web-1 failed at reload.
    w.issued(&plan(s.deploy_failed, &["mail.example.com"], true, 0x06))
        .await?;
    w.deploy(s.deploy_failed, TENANT, "web-1", 0x06, false)
        .await?;
    w.run(
        s.deploy_failed,
        TENANT,
        RecordDeploymentFailed {
            deployment_id: format!("dep-{}-web-1", s.deploy_failed),
            target_id: "web-1".into(),
            step: "reload".into(),
            failure: Failure {
                code: FailureCode::DeployReload as i32,
                reason: "nginx -s reload exited with status 1".into(),
                attempt: 1,
                next_retry_at: None,
            },
            observed: "nginx: [emerg] cannot load certificate".into(),
        },
    )
    .await?;

    // Another tenant's certificate, only ordered.
    w.run(
        s.other_tenant,
        OTHER_TENANT,
        PlaceOrder {
            certificate_id: s.other_tenant.into(),
            tenant: OTHER_TENANT.into(),
            spec: spec(true, 365),
            application: None,
            predecessor_id: None,
            idempotency_key: None,
        },
    )
    .await?;

    // A type from the future on a certificate stream, and a stream nobody reads.
    w.append_raw(
        &format!("certificate-{}", s.ok),
        "CertificateTeleported",
        vec![0x0a, 0x03, b'm', b'a', b'r'],
        TENANT,
    )
    .await?;
    w.append_raw("audit-1", "SomethingAudited", vec![1, 2, 3], TENANT)
        .await?;
    Ok(s)
}

// --- running the projector -----------------------------------------------------------

pub struct Running {
    pub projector: Arc<Projector>,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), certledger_projections::ProjectionError>>,
}

impl Running {
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await??;
        Ok(())
    }
}

/// Starts a projector fed by tailing the SQL log.
pub fn start_projector(db: &TestDb, store: &ProjectionStore, consumer: &str) -> Running {
    let projector = Projector::new(
        store.clone(),
        db.log.clone(),
        ProjectorConfig {
            consumer_name: consumer.to_owned(),
            batch_size: 7,
            ..ProjectorConfig::default()
        },
    );
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(projector.clone().run(
        EventSource::SqlTail {
            log: db.log.clone(),
        },
        shutdown.clone(),
    ));
    Running {
        projector,
        shutdown,
        task,
    }
}

/// Waits until every read model's checkpoint is at the log's head.
pub async fn wait_caught_up(
    log: &Arc<dyn EventLog>,
    store: &ProjectionStore,
) -> anyhow::Result<u64> {
    let head = log.head_position().await?;
    eventually(
        DEADLINE,
        "the read models to reach the log head",
        || async {
            let cps = store.checkpoints().await.ok()?;
            (cps.len() == ReadModel::ALL.len()
                && cps.iter().all(|c| c.position >= head && !c.rebuilding))
            .then_some(())
        },
    )
    .await?;
    Ok(head)
}

/// Every row of every read model.
pub async fn dump_all(store: &ProjectionStore) -> anyhow::Result<Vec<(ReadModel, Vec<AnyRow>)>> {
    let mut out = Vec::new();
    for m in ReadModel::ALL {
        out.push((m, store.dump(m).await?));
    }
    Ok(out)
}

/// Asserts two dumps are equal, row by row, naming the first difference.
pub fn assert_same_rows(
    what: &str,
    a: &[(ReadModel, Vec<AnyRow>)],
    b: &[(ReadModel, Vec<AnyRow>)],
) -> anyhow::Result<()> {
    for ((ma, ra), (mb, rb)) in a.iter().zip(b) {
        if ma != mb {
            bail!("{what}: models differ: {ma} vs {mb}");
        }
        for (i, (x, y)) in ra.iter().zip(rb).enumerate() {
            if x != y {
                bail!("{what}: {ma} row {i} differs:\n  {x:?}\nvs\n  {y:?}");
            }
        }
        if ra.len() != rb.len() {
            bail!("{what}: {ma} has {} rows vs {}", ra.len(), rb.len());
        }
    }
    Ok(())
}
