//! Support for the end-to-end tests: service binaries started as real processes (killed
//! when dropped); the tests' PostgreSQL schema is the test kit's `TestDb`.

use anyhow::{Context, bail};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub use certledger_testkit::db::{TestDb, pg_url};

/// A service binary built by cargo next to the test executable.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("locating the target directory")?;
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} is missing: run the tests with `cargo test --workspace` (it builds every binary)",
            path.display()
        );
    }
    Ok(path)
}

/// A running service process; SIGKILLed when dropped.
pub struct Service {
    pub name: String,
    pub addr: String,
    child: Child,
}

impl Service {
    /// Starts `binary` with `args` and waits for its `listening on <addr>` line.
    pub async fn start(binary_name: &str, args: &[String]) -> anyhow::Result<Self> {
        let mut child = Command::new(binary(binary_name)?)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {binary_name}"))?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    return anyhow::Ok(addr.trim().to_owned());
                }
            }
            bail!("{binary_name} exited before it was listening")
        })
        .await
        .with_context(|| format!("{binary_name} did not start listening"))??;
        // Keep draining stdout so the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            name: binary_name.to_owned(),
            addr,
            child,
        })
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGKILL: no graceful shutdown, like a crash.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

/// `args` from string slices.
pub fn args(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}
