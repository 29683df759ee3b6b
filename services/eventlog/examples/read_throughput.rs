//! Log read throughput harness (not a test): reads the whole log with `read_all` pages
//! and reports events/s, projecting nothing. The log is filled first if it holds fewer
//! than `--events` events (1,000 streams per append, 6 events per stream, 200-byte
//! payloads).
//!
//! ```text
//! cargo run --release -p certledger-eventlog --example read_throughput -- \
//!     URL [--events 1000000] [--page 2000] [--repeats 3]
//! ```
//!
//! URL is a `sqlite:` URL (e.g. `sqlite:///tmp/read.db`) or a PostgreSQL URL (schema
//! `read_bench`, kept between runs so that a second run only reads).

use std::time::Instant;

use certledger_eventlog::{
    ExpectedVersion, LogOptions, Metadata, NewEvent, StreamAppend, connect_with,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut url = None;
    let (mut events, mut page, mut repeats) = (1_000_000u64, 2_000u32, 3usize);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--events" => events = args.next().ok_or("--events N")?.parse()?,
            "--page" => page = args.next().ok_or("--page N")?.parse()?,
            "--repeats" => repeats = args.next().ok_or("--repeats N")?.parse()?,
            other => url = Some(other.to_owned()),
        }
    }
    let url = url.ok_or("usage: read_throughput URL [--events N] [--page N] [--repeats N]")?;
    let log = connect_with(&url, LogOptions::new().pg_schema("read_bench")).await?;

    let mut head = log.head_position().await?;
    let fill = Instant::now();
    while head < events {
        let appends = (0..1_000)
            .map(|_| StreamAppend {
                stream_id: format!("certificate-{}", uuid::Uuid::now_v7()),
                expected: ExpectedVersion::NoStream,
                events: (0..6)
                    .map(|_| NewEvent::new("Benchmarked", 1, vec![7u8; 200], Metadata::default()))
                    .collect(),
            })
            .collect();
        log.append(appends).await?;
        head = log.head_position().await?;
    }
    eprintln!("log holds {head} events (filled in {:.1?})", fill.elapsed());

    for repeat in 1..=repeats {
        let start = Instant::now();
        let (mut after, mut read) = (0u64, 0u64);
        loop {
            let batch = log.read_all(after, page).await?;
            let Some(last) = batch.last() else { break };
            after = last.position;
            read += batch.len() as u64;
        }
        let took = start.elapsed();
        println!(
            "repeat {repeat}: {read} events in {took:.2?}: {:.0} events/s",
            read as f64 / took.as_secs_f64()
        );
    }
    Ok(())
}
