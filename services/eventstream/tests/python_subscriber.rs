//! The documented Python subscriber (examples/subscribers/python/feed.py, nats-py) reads
//! the live feed that the relay publishes.

mod common;

use certledger_eventstream::relay::{Relay, RelaySettings};
use certledger_testkit::NatsServer;
use common::*;
use std::path::PathBuf;
use std::process::Command;

#[tokio::test]
async fn python_feed_prints_every_event() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let js = jetstream_for(&nats.url()).await?;
    let log = memory_log().await?;
    append_events(log.as_ref(), 2, 3).await?;
    Relay::new(log.clone(), js, RelaySettings::default())
        .publish_batch(0)
        .await?;

    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/subscribers/python/feed.py");
    let url = nats.url();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .args([
                "--url",
                &url,
                "--from-beginning",
                "--count",
                "6",
                "--timeout",
                "30",
            ])
            .output()
    })
    .await??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "feed.py failed (is nats-py installed? pip install nats-py): {stderr}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 6, "{stdout}");
    for (event, line) in log.read_all(0, 10).await?.iter().zip(&lines) {
        assert!(
            line.contains(&event.stream_id),
            "{line} names {}",
            event.stream_id
        );
        assert!(line.contains("OrderCancelled"), "{line}");
        assert!(
            line.trim_start().starts_with(&event.position.to_string()),
            "{line}"
        );
        assert!(line.contains(" acme "), "{line}");
    }
    Ok(())
}
