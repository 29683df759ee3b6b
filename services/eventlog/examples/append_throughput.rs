//! Append throughput harness (not a test): N concurrent writers, each appending
//! single-event appends to its own stream with an exact expected version, through one
//! log handle (group commit on unless `--no-group-commit`).
//!
//! ```text
//! cargo run --release -p certledger-eventlog --example append_throughput -- \
//!     [URL] [--writers 64] [--events-per-writer 500] [--no-group-commit]
//! ```
//!
//! URL defaults to `CERTLEDGER_TEST_PG_URL` or `postgres://postgres@127.0.0.1:5432/test`;
//! a PostgreSQL run uses a throwaway schema that is dropped afterwards. A `sqlite:` URL
//! (e.g. `sqlite:///tmp/bench.db`) benchmarks the embedded backend.

use std::sync::Arc;
use std::time::Instant;

use certledger_eventlog::{
    EventLog, ExpectedVersion, LogOptions, Metadata, NewEvent, PgEventLog, SqliteEventLog,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut url = std::env::var("CERTLEDGER_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let mut writers = 64usize;
    let mut per_writer = 500usize;
    let mut group_commit = true;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--writers" => writers = args.next().ok_or("--writers N")?.parse()?,
            "--events-per-writer" => {
                per_writer = args.next().ok_or("--events-per-writer N")?.parse()?
            }
            "--no-group-commit" => group_commit = false,
            other => url = other.to_owned(),
        }
    }
    let options = LogOptions::new()
        .group_commit(group_commit)
        .max_connections(16);
    let schema = format!("evlog_bench_{}", uuid::Uuid::now_v7().simple());
    let log: Arc<dyn EventLog> = if url.starts_with("sqlite:") {
        Arc::new(SqliteEventLog::connect_with(&url, options).await?)
    } else {
        Arc::new(PgEventLog::connect_with(&url, &schema, options).await?)
    };

    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let stream = format!("certificate-{w}");
            for v in 0..per_writer as u64 {
                let e = NewEvent::new("Benchmarked", 1, vec![0u8; 200], Metadata::default());
                log.append_one(&stream, ExpectedVersion::Exact(v), vec![e])
                    .await?;
            }
            Ok::<_, certledger_eventlog::AppendError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let elapsed = start.elapsed();
    let total = writers * per_writer;
    let report = log.verify(None).await?;
    drop(log);
    if !url.starts_with("sqlite:") {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&url).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA \"{schema}\" CASCADE"
        )))
        .execute(&mut conn)
        .await?;
    }
    println!(
        "{url}: {writers} writers x {per_writer} single-event appends (group commit {group_commit}): \
         {total} events in {elapsed:.2?} = {:.0} events/s; verify: {} events checked, problem: {:?}",
        total as f64 / elapsed.as_secs_f64(),
        report.events_checked,
        report.first_problem
    );
    Ok(())
}
