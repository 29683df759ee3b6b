//! Progress on stderr while a scenario runs: a line when a step starts, and for long
//! loops a counter line every two seconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Prints a step line on stderr.
pub fn step(message: impl AsRef<str>) {
    eprintln!("[bench] {}", message.as_ref());
}

/// A counter of work done, reported on stderr every two seconds until dropped.
pub struct Counter {
    done: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Counter {
    /// Starts reporting `label`: `done/total` (`total` 0: open-ended) and the rate so far.
    pub fn start(label: impl Into<String>, total: u64) -> Self {
        let label = label.into();
        let done = Arc::new(AtomicU64::new(0));
        let counter = done.clone();
        let task = tokio::spawn(async move {
            let start = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let n = counter.load(Ordering::Relaxed);
                let rate = n as f64 / start.elapsed().as_secs_f64().max(1e-9);
                if total > 0 {
                    eprintln!("[bench]   {label}: {n}/{total} ({rate:.0}/s)");
                } else {
                    eprintln!("[bench]   {label}: {n} ({rate:.0}/s)");
                }
            }
        });
        Self { done, task }
    }

    /// A handle to count with.
    pub fn handle(&self) -> Arc<AtomicU64> {
        self.done.clone()
    }

    pub fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        self.task.abort();
    }
}
