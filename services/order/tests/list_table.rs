//! The certificate list's table on both backends: rows stored in batches (more than one
//! statement's worth), never replaced by an older stream version.

use certledger_order::CertificateList;
use certledger_order::listing::ListRow;
use certledger_proto::common::v1::CertificateStatus;
use certledger_testkit::db::TestDb;
use chrono::{DateTime, Duration, Utc};

fn row(i: usize, version: u64, due_at: DateTime<Utc>) -> ListRow {
    ListRow {
        certificate_id: format!("c{i:03}"),
        tenant: "acme".into(),
        status: CertificateStatus::Issued,
        names: format!("www{i}.example.com"),
        ordered_position: i as u64 + 1,
        version,
        due_at: Some(due_at),
    }
}

async fn check_batches(db: TestDb) -> anyhow::Result<()> {
    let schema = if db.schema.is_empty() {
        "eventlog"
    } else {
        &db.schema
    };
    let list = CertificateList::open(&db.url, schema).await?;
    let t0 = DateTime::<Utc>::from_timestamp(1_900_000_000, 0).unwrap_or_default();
    let later = t0 + Duration::days(365);
    // 150 rows: three statements in one transaction; due one second apart, in order.
    let rows: Vec<ListRow> = (0..150)
        .map(|i| row(i, 5, t0 + Duration::seconds(i as i64)))
        .collect();
    list.upsert_all(&rows).await?;
    let due = list.due(later, 1000).await?;
    let expected: Vec<String> = rows.iter().map(|r| r.certificate_id.clone()).collect();
    assert_eq!(due, expected);

    // An older version of c000 is ignored, a newer one of c149 replaces its row: c149
    // becomes due first.
    let early = t0 - Duration::days(1);
    list.upsert_all(&[row(0, 4, later), row(149, 6, early)])
        .await?;
    let due = list.due(later, 1000).await?;
    assert_eq!(due.first().map(String::as_str), Some("c149"));
    assert_eq!(
        due.get(1).map(String::as_str),
        Some("c000"),
        "c000 kept its row"
    );
    assert_eq!(due.len(), 150);
    Ok(())
}

#[tokio::test]
async fn list_rows_in_batches_on_sqlite() -> anyhow::Result<()> {
    check_batches(TestDb::sqlite().await?).await
}

#[tokio::test]
async fn list_rows_in_batches_on_postgres() -> anyhow::Result<()> {
    check_batches(TestDb::postgres().await?).await
}
