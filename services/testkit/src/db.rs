//! An isolated event log for one test: a PostgreSQL schema of its own (dropped when the
//! test ends, even when it fails) or an in-memory SQLite log.

use certledger_eventlog::{EventLog, LogOptions};
use std::sync::Arc;
use std::time::Duration;

/// The test database: env `CERTLEDGER_TEST_PG_URL`, by default the machine's `test`.
pub fn pg_url() -> String {
    std::env::var("CERTLEDGER_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub struct TestDb {
    pub url: String,
    /// The PostgreSQL schema (empty for SQLite).
    pub schema: String,
    pub log: Arc<dyn EventLog>,
}

impl TestDb {
    /// A log in a new PostgreSQL schema `test_<uuid>`.
    pub async fn postgres() -> anyhow::Result<Self> {
        let url = pg_url();
        let schema = format!("test_{}", uuid::Uuid::now_v7().simple());
        let log = certledger_eventlog::connect_with(
            &url,
            LogOptions::new()
                .pg_schema(&schema)
                .max_connections(6)
                .poll_interval(Duration::from_millis(100)),
        )
        .await
        .map_err(|e| {
            anyhow::anyhow!("connecting to PostgreSQL (CERTLEDGER_TEST_PG_URL={url}): {e}")
        })?;
        Ok(Self { url, schema, log })
    }

    /// A throwaway in-memory SQLite log.
    pub async fn sqlite() -> anyhow::Result<Self> {
        let url = "sqlite::memory:".to_owned();
        let log = certledger_eventlog::connect(&url).await?;
        Ok(Self {
            url,
            schema: String::new(),
            log,
        })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.schema.is_empty() {
            return;
        }
        let url = self.url.clone();
        let schema = self.schema.clone();
        // Drop cannot be async: a thread of its own with a small runtime.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&url).await?;
                sqlx::raw_sql("SET lock_timeout = '10s'")
                    .execute(&mut conn)
                    .await?;
                // Services of the test may still hold connections in the schema.
                sqlx::query(
                    "SELECT pg_terminate_backend(l.pid) FROM pg_locks l
                     JOIN pg_class c ON c.oid = l.relation
                     JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = $1 AND l.pid <> pg_backend_pid()",
                )
                .bind(&schema)
                .execute(&mut conn)
                .await?;
                // The name is ours (test_ + hex), never input.
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
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
