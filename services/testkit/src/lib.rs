//! Test support shared by the crates' integration tests: real `nats-server` processes
//! (single node or a three-node JetStream cluster) on free loopback ports, each with its
//! own storage directory, waiting on a condition with a deadline instead of sleeping, an
//! HTTP-01 challenge server, the `openssl` command, and the certificate specification
//! most tests order.

pub mod challenge;
pub mod db;
pub mod openssl;

pub use challenge::ChallengeServer;

use anyhow::{Context, bail};
use certledger_proto::common::v1::{
    CertificateSpec, DomainSlotKind, DomainSlots, KeyAlgorithm, ValidationMethod,
};
use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The specification tests order unless they say otherwise: the built-in issuer, ECDSA
/// P-256, 90 days, up to `max_names` names of `kind` without wildcards, `method`
/// validation, no auto-renew. Change a field with struct update syntax.
pub fn certificate_spec(
    kind: DomainSlotKind,
    max_names: u32,
    method: ValidationMethod,
) -> CertificateSpec {
    CertificateSpec {
        issuer: "builtin".into(),
        key_algorithm: KeyAlgorithm::EcdsaP256 as i32,
        validity_days: 90,
        domain_slots: Some(DomainSlots {
            kind: kind as i32,
            max_names,
            allow_wildcards: false,
        }),
        validation_method: method as i32,
        auto_renew: false,
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding an ephemeral port")?;
    Ok(listener.local_addr()?.port())
}

/// Polls `check` until it returns `Some`, or fails after `deadline`. The poll interval
/// only bounds latency; correctness never depends on it.
pub async fn eventually<T, F, Fut>(
    deadline: Duration,
    what: &str,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() >= until {
            bail!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn nats_server_binary() -> PathBuf {
    std::env::var_os("NATS_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("nats-server"))
}

/// `base` made unique in this process (server names tell our server from another one
/// that took the same port).
fn unique_name(base: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{base}-{}-{n}", std::process::id())
}

/// One `nats-server -js` process; killed when dropped.
pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    pub cluster_port: Option<u16>,
    name: String,
    store: PathBuf,
    args: Vec<String>,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    /// A single JetStream node with its own store directory. A free port can be taken by
    /// a parallel test between choosing it and binding it; then this tries another.
    pub async fn start() -> anyhow::Result<Self> {
        let mut failure = None;
        for _ in 0..5 {
            let dir = tempfile::tempdir()?;
            let port = free_port()?;
            let mut server = Self {
                child: None,
                port,
                cluster_port: None,
                name: unique_name(&format!("n{port}")),
                store: dir.path().join("store"),
                args: vec![],
                _dir: dir,
            };
            server.spawn()?;
            match server.wait_until_serving(Duration::from_secs(10)).await {
                Ok(()) => return Ok(server),
                Err(e) => {
                    server.kill();
                    failure = Some(e);
                }
            }
        }
        Err(failure.unwrap_or_else(|| anyhow::anyhow!("nats-server did not start")))
    }

    /// Waits until this process (not another one on the same port) answers clients: it
    /// is still running and its INFO line carries its own server name.
    async fn wait_until_serving(&mut self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "nats-server {} exited at start ({status}); was port {} taken?",
                    self.name,
                    self.port
                );
            }
            if self.says_its_name().await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "nats-server {} is not serving on 127.0.0.1:{} after {within:?}",
                    self.name,
                    self.port
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the listener on the port is this server (its INFO names it).
    async fn says_its_name(&self) -> bool {
        use tokio::io::AsyncReadExt;
        let expected = format!("\"server_name\":\"{}\"", self.name);
        let read_info = async {
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
            let mut info = Vec::new();
            let mut buf = [0u8; 1024];
            while !info.ends_with(b"\r\n") && info.len() < 16 * 1024 {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                info.extend_from_slice(&buf[..n]);
            }
            std::io::Result::Ok(info)
        };
        match tokio::time::timeout(Duration::from_secs(1), read_info).await {
            Ok(Ok(info)) => String::from_utf8_lossy(&info).contains(&expected),
            _ => false,
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new(nats_server_binary());
        command
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-n",
                &self.name,
            ])
            .arg("-sd")
            .arg(&self.store)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = command
            .spawn()
            .context("starting nats-server (is it installed? apt-get install nats-server)")?;
        self.child = Some(child);
        Ok(())
    }

    /// Kills the process (SIGKILL): no graceful shutdown, like a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again with the same name, ports and store.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()?;
        self.wait_until_serving(Duration::from_secs(10)).await
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A JetStream cluster of `n` nodes on loopback, routes between all of them.
pub struct NatsCluster {
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    pub async fn start(n: usize) -> anyhow::Result<Self> {
        let cluster_name = format!("c{}", free_port()?);
        let mut plan = Vec::with_capacity(n);
        for _ in 0..n {
            plan.push((free_port()?, free_port()?));
        }
        let routes = plan
            .iter()
            .map(|(_, cport)| format!("nats-route://127.0.0.1:{cport}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::with_capacity(n);
        for (i, (port, cport)) in plan.iter().enumerate() {
            let dir = tempfile::tempdir()?;
            let mut node = NatsServer {
                child: None,
                port: *port,
                cluster_port: Some(*cport),
                name: format!("{cluster_name}-n{i}"),
                store: dir.path().join("store"),
                args: vec![
                    "--cluster_name".into(),
                    cluster_name.clone(),
                    "--cluster".into(),
                    format!("nats://127.0.0.1:{cport}"),
                    "--routes".into(),
                    routes.clone(),
                ],
                _dir: dir,
            };
            node.spawn()?;
            nodes.push(node);
        }
        for node in &mut nodes {
            node.wait_until_serving(Duration::from_secs(10)).await?;
        }
        Ok(Self { nodes })
    }

    /// Comma-separated client URLs of every node (clients fail over between them).
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }
}
