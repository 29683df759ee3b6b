//! The shared suite against SQLite (a fresh temporary database file per test, removed
//! afterwards), plus SQLite-specific tests.

#[macro_use]
mod common;

use std::path::PathBuf;

use certledger_eventlog::{EventLog, ExpectedVersion, LogOptions, SqliteEventLog};
use common::{Harness, event};
use sqlx::AssertSqlSafe;
use uuid::Uuid;

struct SqliteHarness {
    path: PathBuf,
}

impl Harness for SqliteHarness {
    type Log = SqliteEventLog;

    async fn create() -> Self {
        let path = std::env::temp_dir().join(format!(
            "certledger-eventlog-test-{}.db",
            Uuid::now_v7().simple()
        ));
        Self { path }
    }

    async fn open(&self, options: LogOptions) -> SqliteEventLog {
        SqliteEventLog::open_with(&self.path, options)
            .await
            .expect("open")
    }

    async fn exec(&self, log: &SqliteEventLog, sql: &str) -> Result<u64, String> {
        sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
            .execute(log.pool())
            .await
            .map(|r| r.rows_affected())
            .map_err(|e| e.to_string())
    }

    fn blob_literal(bytes: &[u8]) -> String {
        format!("X'{}'", hex::encode(bytes))
    }

    fn disable_append_only() -> &'static [&'static str] {
        &[
            "DROP TRIGGER events_no_update",
            "DROP TRIGGER events_no_delete",
        ]
    }

    fn more_forbidden() -> &'static [&'static str] {
        &[]
    }
}

impl Drop for SqliteHarness {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.path.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

eventlog_suite!(crate::SqliteHarness);

#[tokio::test]
async fn in_memory_log_works() {
    let log = SqliteEventLog::in_memory().await.unwrap();
    let r = log
        .append_one(
            "s",
            ExpectedVersion::NoStream,
            vec![event("A", b"a"), event("B", b"b")],
        )
        .await
        .unwrap();
    assert_eq!(r.positions, vec![1, 2]);
    assert_eq!(log.read_all(0, 10).await.unwrap().len(), 2);
    assert_eq!(log.verify(None).await.unwrap().first_problem, None);
    // Each in-memory log is private.
    let other = certledger_eventlog::connect("sqlite::memory:")
        .await
        .unwrap();
    assert_eq!(other.head_position().await.unwrap(), 0);
}

#[tokio::test]
async fn file_log_uses_wal_and_survives_reopen() {
    let h = SqliteHarness::create().await;
    let url = format!("sqlite://{}", h.path.display());
    {
        let log = certledger_eventlog::connect(&url).await.unwrap();
        log.append_one("s", ExpectedVersion::NoStream, vec![event("A", b"a")])
            .await
            .unwrap();
        log.save_checkpoint("relay", 1).await.unwrap();
    }
    let log = h.open(LogOptions::new()).await;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(log.pool())
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(log.read_stream("s", 0).await.unwrap().len(), 1);
    assert_eq!(log.load_checkpoint("relay").await.unwrap(), 1);
    let migrations: i64 = sqlx::query_scalar("SELECT count(*) FROM eventlog_migrations")
        .fetch_one(log.pool())
        .await
        .unwrap();
    assert_eq!(migrations, 1, "reopening does not re-apply migrations");
}

/// Reads go through connections of their own, which keep their statements between
/// reads: each read still sees every append committed before it, by this handle or by
/// another one on the file, and none works once the log is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_see_every_earlier_commit_and_end_at_close() {
    let h = SqliteHarness::create().await;
    let log = h.open(LogOptions::new()).await;
    let other = h.open(LogOptions::new()).await;
    for i in 0..50u64 {
        let (writer, name) = if i % 2 == 0 {
            (&log, "a")
        } else {
            (&other, "b")
        };
        let expected = if i < 2 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(i / 2)
        };
        writer
            .append_one(name, expected, vec![event("E", b"")])
            .await
            .unwrap();
        assert_eq!(log.read_all(i, 10).await.unwrap().len(), 1, "append {i}");
        assert_eq!(
            log.read_stream(name, 0).await.unwrap().len() as u64,
            i / 2 + 1
        );
    }
    log.close().await;
    assert!(log.read_all(0, 10).await.is_err());
    assert!(log.read_stream("a", 0).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_opens_migrate_once() {
    let h = SqliteHarness::create().await;
    let opens = (0..4).map(|_| SqliteEventLog::open(&h.path));
    let logs: Vec<SqliteEventLog> = futures::future::join_all(opens)
        .await
        .into_iter()
        .map(|l| l.expect("open"))
        .collect();
    logs[0]
        .append_one("s", ExpectedVersion::NoStream, vec![event("A", b"")])
        .await
        .unwrap();
    assert_eq!(logs[3].head_position().await.unwrap(), 1);
}

/// Reads and verification go page by page on SQLite (2,000 events a page): a log of
/// 2,100 events in 700 streams of 3 puts a stream across the boundary of both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_verification_cross_page_boundaries() {
    let h = SqliteHarness::create().await;
    let log = h.open(LogOptions::new()).await;
    let streams: Vec<String> = (0..700).map(|i| format!("cert-{i:04}")).collect();
    let parts = streams
        .iter()
        .map(|s| {
            let events = (0..3u8).map(|v| event("E", &[v; 16])).collect();
            common::part(s, ExpectedVersion::NoStream, events)
        })
        .collect();
    log.append(parts).await.unwrap();

    let mut all = Vec::new();
    while all.len() < 2_100 {
        let after = all
            .last()
            .map_or(0, |e: &certledger_eventlog::RecordedEvent| e.position);
        let page = log.read_all(after, 2_000).await.unwrap();
        assert!(!page.is_empty(), "the log ended after {} events", all.len());
        all.extend(page);
    }
    assert!(log.read_all(2_100, 2_000).await.unwrap().is_empty());
    let positions: Vec<u64> = all.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=2_100).collect::<Vec<_>>());
    let stream = log.read_stream("cert-0666", 1).await.unwrap();
    assert_eq!(stream, all[1_999..2_001].to_vec());

    let report = log.verify(None).await.unwrap();
    assert_eq!((report.events_checked, report.first_problem), (2_100, None));

    // The last event of the first page is cert-0666's second. Forged with a hash that
    // matches, it is found by its successor, the first event of the second page.
    for sql in SqliteHarness::disable_append_only() {
        h.exec(&log, sql).await.unwrap();
    }
    let mut forged = all[1_999].clone();
    forged.payload = b"forged".to_vec();
    let sql = format!(
        "UPDATE events SET payload = {}, hash = {} WHERE position = {}",
        SqliteHarness::blob_literal(&forged.payload),
        SqliteHarness::blob_literal(&common::recomputed_hash(&forged)),
        forged.position
    );
    assert_eq!(h.exec(&log, &sql).await.unwrap(), 1);
    let report = log.verify(None).await.unwrap();
    assert_eq!(
        report.first_problem,
        Some(certledger_eventlog::Tamper::BrokenLink {
            stream_id: "cert-0666".into(),
            version: 3,
            position: all[2_000].position,
        })
    );
    assert_eq!(report.events_checked, 2_001);
}
