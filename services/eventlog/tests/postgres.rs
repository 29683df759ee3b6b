//! The shared suite against PostgreSQL (`CERTLEDGER_TEST_PG_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`), each test in a schema of its own that is
//! dropped afterwards, plus PostgreSQL-specific tests.

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::Duration;

use certledger_eventlog::test_hooks::CommitInfo;
use certledger_eventlog::{EventLog, ExpectedVersion, LogOptions, PgEventLog};
use common::{Harness, event, within};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use uuid::Uuid;

fn pg_url() -> String {
    std::env::var("CERTLEDGER_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

struct PgHarness {
    url: String,
    schema: String,
}

impl Harness for PgHarness {
    type Log = PgEventLog;

    async fn create() -> Self {
        Self {
            url: pg_url(),
            schema: format!("evlog_{}", Uuid::now_v7().simple()),
        }
    }

    async fn open(&self, options: LogOptions) -> PgEventLog {
        PgEventLog::connect_with(&self.url, &self.schema, options.max_connections(4))
            .await
            .expect("connect")
    }

    async fn exec(&self, log: &PgEventLog, sql: &str) -> Result<u64, String> {
        sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
            .execute(log.pool())
            .await
            .map(|r| r.rows_affected())
            .map_err(|e| e.to_string())
    }

    fn blob_literal(bytes: &[u8]) -> String {
        format!("'\\x{}'::bytea", hex::encode(bytes))
    }

    fn disable_append_only() -> &'static [&'static str] {
        &["ALTER TABLE events DISABLE TRIGGER events_append_only"]
    }

    fn more_forbidden() -> &'static [&'static str] {
        &["TRUNCATE events", "TRUNCATE events CASCADE"]
    }
}

impl Drop for PgHarness {
    /// Drops the test's schema, also when the test failed (on a thread of its own: Drop
    /// cannot await).
    fn drop(&mut self) {
        let url = self.url.clone();
        let schema = self.schema.clone();
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let mut conn = PgConnection::connect(&url).await?;
                sqlx::raw_sql("SET lock_timeout = '10s'")
                    .execute(&mut conn)
                    .await?;
                // A failed test may leave a transaction open (e.g. held by a hook): end
                // the sessions holding locks in this schema, and only those.
                sqlx::query(
                    "SELECT pg_terminate_backend(l.pid) FROM pg_locks l
                     JOIN pg_class c ON c.oid = l.relation
                     JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = $1 AND l.pid <> pg_backend_pid()",
                )
                .bind(&schema)
                .execute(&mut conn)
                .await?;
                sqlx::raw_sql(AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
                )))
                .execute(&mut conn)
                .await?;
                conn.close().await
            })
            .map_err(std::io::Error::other)
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test schema {}: {dropped:?}", self.schema);
        }
    }
}

eventlog_suite!(crate::PgHarness);

/// Deterministic version of the skipped-event trap: transaction A has inserted (its
/// position is allocated) but not committed; transaction B (another handle) appends to
/// another stream. B must not become visible before A: with the advisory-lock guard B
/// waits for the lock (seen in pg_locks); without it B commits position A+1 first and a
/// tailing reader at that moment would skip A forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn later_position_never_visible_before_an_earlier_commit() {
    let h = PgHarness::create().await;
    let entered = Arc::new(Notify::new());
    let gate = Arc::new(Notify::new());
    let (positions_tx, mut positions_rx) = mpsc::unbounded_channel();
    let hook = {
        let (entered, gate) = (entered.clone(), gate.clone());
        Arc::new(move |info: CommitInfo| {
            let (entered, gate, positions_tx) =
                (entered.clone(), gate.clone(), positions_tx.clone());
            Box::pin(async move {
                if info.stream_ids.iter().any(|s| s == "held") {
                    let _ = positions_tx.send(info.positions.clone());
                    entered.notify_one();
                    gate.notified().await;
                }
            }) as futures::future::BoxFuture<'static, ()>
        })
    };
    let a = Arc::new(
        h.open(
            LogOptions::new()
                .group_commit(false)
                .before_commit_hook(hook),
        )
        .await,
    );
    let b = Arc::new(h.open(LogOptions::new().group_commit(false)).await);
    let reader = h.open(LogOptions::new()).await;

    let a_task = {
        let a = a.clone();
        tokio::spawn(async move {
            a.append_one("held", ExpectedVersion::NoStream, vec![event("A", b"")])
                .await
        })
    };
    within("A inserted", entered.notified()).await;
    let held_position = positions_rx.recv().await.expect("A's positions")[0];

    let b_task = {
        let b = b.clone();
        tokio::spawn(async move {
            b.append_one("free", ExpectedVersion::NoStream, vec![event("B", b"")])
                .await
        })
    };
    // Wait until B either committed (guard missing) or waits for the append lock.
    let deadline = Instant::now() + common::DEADLINE;
    loop {
        if b_task.is_finished() {
            break;
        }
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks
             WHERE locktype = 'advisory' AND NOT granted AND objsubid = 1
               AND ((classid::int8 << 32) | objid::int8) = $1",
        )
        .bind(a.append_lock_key())
        .fetch_one(reader.pool())
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B neither committed nor waited for the lock"
        );
        tokio::time::sleep(Duration::from_millis(5)).await; // polling a condition, not synchronising
    }
    let visible = reader.read_all(0, 100).await.unwrap();
    assert!(
        visible.iter().all(|e| e.position < held_position),
        "position(s) {:?} visible while {held_position} is not committed yet: a tailing reader would skip it",
        visible.iter().map(|e| e.position).collect::<Vec<_>>()
    );
    gate.notify_one();
    let ra = within("A", a_task).await.unwrap().unwrap();
    let rb = within("B", b_task).await.unwrap().unwrap();
    assert!(ra.positions[0] < rb.positions[0]);
    let all = reader.read_all(0, 100).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.stream_id.as_str()).collect::<Vec<_>>(),
        vec!["held", "free"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connect_dispatches_on_url_and_schemas_isolate() {
    let h1 = PgHarness::create().await;
    let h2 = PgHarness::create().await;
    let log1 = certledger_eventlog::connect_with(
        &h1.url,
        LogOptions::new().pg_schema(&h1.schema).max_connections(2),
    )
    .await
    .unwrap();
    let log2 = certledger_eventlog::connect_with(
        &h2.url,
        LogOptions::new().pg_schema(&h2.schema).max_connections(2),
    )
    .await
    .unwrap();
    log1.append_one("s", ExpectedVersion::NoStream, vec![event("A", b"")])
        .await
        .unwrap();
    assert_eq!(log1.head_position().await.unwrap(), 1);
    assert_eq!(
        log2.head_position().await.unwrap(),
        0,
        "another schema is another log"
    );
    let same = h1.open(LogOptions::new()).await;
    assert_eq!(same.read_stream("s", 0).await.unwrap().len(), 1);

    for bad in [
        "",
        "Upper",
        "with-dash",
        "pg_catalog",
        "x; drop table events",
        &"a".repeat(64),
    ] {
        assert!(
            PgEventLog::connect(&h1.url, bad).await.is_err(),
            "schema {bad:?} accepted"
        );
    }
    assert!(
        certledger_eventlog::connect("mysql://localhost/x")
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_connects_migrate_once() {
    let h = PgHarness::create().await;
    let opens = (0..4)
        .map(|_| PgEventLog::connect_with(&h.url, &h.schema, LogOptions::new().max_connections(1)));
    let logs = futures::future::join_all(opens).await;
    let logs: Vec<PgEventLog> = logs.into_iter().map(|l| l.expect("connect")).collect();
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version::int8 FROM eventlog_migrations ORDER BY version")
            .fetch_all(logs[0].pool())
            .await
            .unwrap();
    assert_eq!(versions, [1, 2], "each migration applied once");
    logs[0]
        .append_one("s", ExpectedVersion::NoStream, vec![event("A", b"")])
        .await
        .unwrap();
    assert_eq!(logs[3].head_position().await.unwrap(), 1);
}

/// Advisory locks on `key` in pg_locks, granted or waited for.
async fn advisory_locks(log: &PgEventLog, key: i64, granted: bool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks
         WHERE locktype = 'advisory' AND granted = $2 AND objsubid = 1
           AND ((classid::int8 << 32) | objid::int8) = $1",
    )
    .bind(key)
    .bind(granted)
    .fetch_one(log.pool())
    .await
    .unwrap()
}

/// A reader's lease has one holder among every handle on the log (each its own process,
/// as far as PostgreSQL can tell): a second waits until the first gives it up, and a
/// holder whose connection is ended learns that it lost the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_has_one_holder_at_a_time() {
    let h = PgHarness::create().await;
    let a = h.open(LogOptions::new()).await;
    let b = Arc::new(h.open(LogOptions::new()).await);
    let key = a.lease_key("consumer:list");
    assert_eq!(
        key,
        b.lease_key("consumer:list"),
        "the same log, the same lease"
    );
    assert_ne!(key, a.lease_key("consumer:other"));

    let held = within("a takes the lease", a.lease("consumer:list"))
        .await
        .unwrap();
    let _other = within("another name is another lease", b.lease("consumer:other"))
        .await
        .unwrap();
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move { b.lease("consumer:list").await })
    };
    let deadline = Instant::now() + common::DEADLINE;
    while advisory_locks(&a, key, false).await == 0 {
        assert!(!waiter.is_finished(), "b took a lease a holds");
        assert!(Instant::now() < deadline, "b never waited for the lease");
        tokio::time::sleep(Duration::from_millis(5)).await; // polling a condition
    }
    assert!(!waiter.is_finished(), "b took a lease a holds");
    assert_eq!(advisory_locks(&a, key, true).await, 1);

    drop(held);
    let mut lease = within("b takes over once a gives up", waiter)
        .await
        .unwrap()
        .unwrap();
    // The session holding b's lease ends (as when its connection breaks).
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_locks
         WHERE locktype = 'advisory' AND granted AND objsubid = 1
           AND ((classid::int8 << 32) | objid::int8) = $1",
    )
    .bind(key)
    .execute(a.pool())
    .await
    .unwrap();
    within("b learns that it lost the lease", lease.lost()).await;
    let _again = within("the lease is free again", a.lease("consumer:list"))
        .await
        .unwrap();
}

/// An event of a few kilobytes (a certificate with its chain) stays in the events table's
/// own pages: not compressed first (it would not shrink) nor moved to the TOAST table,
/// from where every reader of the log would have to fetch it back.
#[tokio::test]
async fn payloads_of_a_few_kilobytes_stay_inline() {
    let h = PgHarness::create().await;
    let log = h.open(LogOptions::new()).await;
    // Hash output: as incompressible as a certificate's signature and key.
    use sha2::Digest;
    let payload: Vec<u8> = (0..100u32)
        .flat_map(|i| sha2::Sha256::digest(i.to_be_bytes()))
        .collect();
    log.append_one(
        "big",
        ExpectedVersion::NoStream,
        vec![event("CertificateIssued", &payload)],
    )
    .await
    .unwrap();
    let toast_bytes: i64 = sqlx::query_scalar(
        "SELECT pg_relation_size(reltoastrelid) FROM pg_class WHERE oid = 'events'::regclass",
    )
    .fetch_one(log.pool())
    .await
    .unwrap();
    assert_eq!(toast_bytes, 0, "the payload went to the TOAST table");
    let read = log.read_stream("big", 0).await.unwrap();
    assert_eq!(read[0].payload, payload);
}
