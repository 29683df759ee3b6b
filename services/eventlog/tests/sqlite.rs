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
