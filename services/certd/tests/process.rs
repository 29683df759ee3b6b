//! certd as a real process on a temporary data directory: it prints its addresses,
//! serves gRPC (health of every service: order, issuance, deployment, revocation, query),
//! the dashboard and a CRL that openssl reads, stops cleanly on SIGTERM, keeps its CA
//! across restarts, and a Python client generated from proto/ orders a certificate and
//! reads it back.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

struct Certd {
    child: Child,
    grpc: String,
    http: String,
    revocation: String,
    stderr: PathBuf,
}

impl Drop for Certd {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn start_certd(data: &Path, log_dir: &Path) -> anyhow::Result<Certd> {
    let stderr = log_dir.join(format!("certd-{}.log", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_certd"))
        .args(["--data-dir"])
        .arg(data)
        .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .args(["--revocation-http-listen", "127.0.0.1:0"])
        .env_remove("CERTLEDGER_DATABASE_URL")
        .env_remove("CERTLEDGER_NATS_URL")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr)?)
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut addrs = Vec::new();
    let mut revocation = None;
    let read = async {
        while addrs.len() < 2 || revocation.is_none() {
            match lines.next_line().await? {
                Some(line) => {
                    if let Some(addr) = line.strip_prefix("listening on ") {
                        addrs.push(addr.to_owned());
                    } else if let Some(addr) = line.strip_prefix("revocation on http://") {
                        revocation = Some(addr.to_owned());
                    }
                }
                None => bail!("certd exited before listening"),
            }
        }
        anyhow::Ok(())
    };
    if let Err(e) = tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .context("certd did not start listening")?
    {
        let log = std::fs::read_to_string(&stderr).unwrap_or_default();
        bail!("{e}\n{log}");
    }
    ensure!(
        !addrs[0].contains("://"),
        "first line is the gRPC address: {addrs:?}"
    );
    ensure!(
        addrs[1].starts_with("http://"),
        "second line is the dashboard: {addrs:?}"
    );
    Ok(Certd {
        child,
        grpc: addrs[0].clone(),
        http: addrs[1].trim_start_matches("http://").to_owned(),
        revocation: revocation.context("no revocation address")?,
        stderr,
    })
}

/// GET over HTTP/1.1: the status line and the body (a `Content-Length` body).
async fn http_get_bytes(addr: &str, path: &str) -> anyhow::Result<(String, Vec<u8>)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: certd\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of the headers")?;
    let head = String::from_utf8_lossy(&response[..end]).into_owned();
    let body = response[end + 4..].to_vec();
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .with_context(|| format!("no Content-Length in {head}"))?;
    ensure!(body.len() == length, "{} bytes, not {length}", body.len());
    let status = head.lines().next().unwrap_or_default().to_owned();
    Ok((status, body))
}

/// GET over HTTP/1.1: the status line, a line break, the body as text.
async fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    let (status, body) = http_get_bytes(addr, path).await?;
    Ok(format!("{status}\n{}", String::from_utf8_lossy(&body)))
}

/// Health reports SERVING for the server and for each of certd's services.
async fn every_service_is_serving(grpc: &str) -> anyhow::Result<()> {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    let channel = tonic::transport::Channel::from_shared(format!("http://{grpc}"))?
        .connect()
        .await?;
    let health = HealthClient::new(channel);
    let mut names = vec![""];
    names.extend_from_slice(certledger_certd::GRPC_SERVICES);
    for name in [
        "certledger.deployment.v1.DeploymentService",
        "certledger.revocation.v1.RevocationService",
        "certledger.query.v1.CertificateQueryService",
    ] {
        ensure!(names.contains(&name), "{name} is not one of {names:?}");
    }
    for name in names {
        certledger_testkit::eventually(Duration::from_secs(20), name, || {
            let mut health = health.clone();
            async move {
                let status = health
                    .check(HealthCheckRequest {
                        service: name.into(),
                    })
                    .await
                    .ok()?
                    .into_inner()
                    .status;
                (status == ServingStatus::Serving as i32).then_some(())
            }
        })
        .await?;
    }
    Ok(())
}

async fn sigterm_and_wait(certd: &mut Certd) -> anyhow::Result<()> {
    let pid = certd.child.id().context("certd already exited")?;
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await?;
    ensure!(status.success(), "kill -TERM failed");
    let exit = tokio::time::timeout(Duration::from_secs(20), certd.child.wait())
        .await
        .context("certd did not stop within 20 s of SIGTERM")??;
    let log = std::fs::read_to_string(&certd.stderr).unwrap_or_default();
    ensure!(exit.success(), "certd exited with {exit}:\n{log}");
    ensure!(log.contains("certd stopped"), "{log}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn certd_serves_prints_next_steps_and_stops_on_sigterm() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let mut certd = start_certd(&data, dir.path()).await?;

    let healthz = http_get(&certd.http, "/healthz").await?;
    ensure!(healthz.starts_with("HTTP/1.1 200"), "{healthz}");
    // The dashboard side needs a token like the gRPC side (read with one in certctl's
    // tests and the projections' own).
    let metrics = http_get(&certd.http, "/metrics").await?;
    ensure!(metrics.starts_with("HTTP/1.1 401"), "{metrics}");
    every_service_is_serving(&certd.grpc).await?;

    // The revocation service's HTTP side serves a CRL signed by the intermediate; the
    // first is published once the status model is rebuilt from the log.
    let revocation = certd.revocation.clone();
    let crl = certledger_testkit::eventually(Duration::from_secs(20), "the first CRL", || {
        let revocation = revocation.clone();
        async move {
            let (status, body) = http_get_bytes(&revocation, "/crl/builtin.crl").await.ok()?;
            status.contains(" 200 ").then_some(body)
        }
    })
    .await?;
    std::fs::write(dir.path().join("builtin.crl"), &crl)?;
    let text = certledger_testkit::openssl::run(
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            "builtin.crl",
            "-noout",
            "-text",
        ],
        dir.path(),
    )?;
    ensure!(text.contains("Certificate Revocation List"), "{text}");
    ensure!(text.contains("X509v3 CRL Number"), "{text}");
    ensure!(text.contains("No Revoked Certificates"), "{text}");
    let intermediate = certledger_testkit::openssl::run(
        &["x509", "-in", "ca/intermediate.pem", "-noout", "-subject"],
        &data,
    )?;
    let subject = intermediate.trim().trim_start_matches("subject=").trim();
    ensure!(
        text.contains(subject),
        "the CRL is not issued by {subject}:\n{text}"
    );
    ensure!(
        http_get(&revocation, "/healthz")
            .await?
            .starts_with("HTTP/1.1 200"),
        "revocation /healthz"
    );
    let log = std::fs::read_to_string(&certd.stderr)?;
    ensure!(log.contains("certctl"), "no next command in:\n{log}");
    ensure!(
        log.contains(&format!("http://{}/crl/builtin.crl", certd.revocation)),
        "the CRL address is not announced:\n{log}"
    );
    ensure!(
        log.contains("laptop CA"),
        "validation none is not announced:\n{log}"
    );
    ensure!(data.join("certledger.db").exists() && data.join("ca").exists());
    let root = std::fs::read(data.join("ca").join("root.pem"))?;
    let grpc = certd.grpc.clone();
    sigterm_and_wait(&mut certd).await?;
    ensure!(
        tokio::net::TcpStream::connect(&grpc).await.is_err(),
        "still listening after shutdown"
    );

    // A restart reloads the CA instead of creating another.
    let mut again = start_certd(&data, dir.path()).await?;
    ensure!(
        std::fs::read(data.join("ca").join("root.pem"))? == root,
        "the CA changed"
    );
    sigterm_and_wait(&mut again).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn python_client_orders_and_reads_back() -> anyhow::Result<()> {
    let probe = Command::new("python3")
        .args(["-c", "import grpc_tools, grpc"])
        .output()
        .await
        .context("python3 is needed (apt-get install python3)")?;
    ensure!(
        probe.status.success(),
        "the Python gRPC tools are missing: python3 -m pip install grpcio-tools ({})",
        String::from_utf8_lossy(&probe.stderr).trim()
    );

    let dir = tempfile::tempdir()?;
    let stubs = dir.path().join("stubs");
    std::fs::create_dir_all(&stubs)?;
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let proto = manifest.join("../../proto").canonicalize()?;
    let mut files = Vec::new();
    collect_protos(&proto, &mut files)?;
    ensure!(
        !files.is_empty(),
        "no .proto files under {}",
        proto.display()
    );
    let out = Command::new("python3")
        .args(["-m", "grpc_tools.protoc"])
        .arg(format!("-I{}", proto.display()))
        .arg(format!("--python_out={}", stubs.display()))
        .arg(format!("--grpc_python_out={}", stubs.display()))
        .args(&files)
        .output()
        .await?;
    ensure!(
        out.status.success(),
        "generating the Python stubs: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let certd = start_certd(&dir.path().join("data"), dir.path()).await?;
    let token = std::fs::read_to_string(dir.path().join("data/admin.token"))?;
    let client = manifest.join("tests/python/order_client.py");
    let run = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new("python3")
            .arg(&client)
            .arg(&certd.grpc)
            .env("PYTHONPATH", &stubs)
            .env("CERTLEDGER_TOKEN", token.trim())
            .output(),
    )
    .await
    .context("the Python client did not finish in 60 s")??;
    let stdout = String::from_utf8_lossy(&run.stdout);
    ensure!(
        run.status.success(),
        "python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    ensure!(stdout.contains("issued "), "{stdout}");
    Ok(())
}

fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
