//! certctl as a process against certd (started in this process on a temporary data
//! directory): order → approve → issued → history → export → CA chain checked by
//! `openssl verify`; targets → deploy to files → revoke → the CRL lists the serial;
//! renew; precise errors with a non-zero exit.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use anyhow::{Context, bail, ensure};
use tokio_util::sync::CancellationToken;

/// Where certd listens, and the token certctl sends.
#[derive(Clone)]
struct Server {
    url: String,
    token_file: std::path::PathBuf,
}

struct Certd {
    server: Server,
    shutdown: CancellationToken,
    running: certledger_certd::Certd,
}

async fn start_certd(data: &Path) -> anyhow::Result<Certd> {
    let argv = [
        "--data-dir",
        &data.display().to_string(),
        "--listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        "--revocation-http-listen",
        "127.0.0.1:0",
    ]
    .map(str::to_owned)
    .to_vec();
    let config = certledger_certd::configure(argv, |_| None)?.context("configuration")?;
    let shutdown = CancellationToken::new();
    let running = certledger_certd::start(&config, shutdown.clone()).await?;
    Ok(Certd {
        server: Server {
            url: format!("http://{}", running.grpc_addr()),
            token_file: config
                .auth
                .bootstrap_token_file
                .clone()
                .context("certd writes a bootstrap token")?,
        },
        shutdown,
        running,
    })
}

async fn certctl(server: &Server, args: &[&str]) -> anyhow::Result<Output> {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_certctl"))
        .args(args)
        .env("CERTLEDGER_SERVER", &server.url)
        .env("CERTLEDGER_TOKEN_FILE", &server.token_file)
        .env_remove("CERTLEDGER_TOKEN")
        .env_remove("CERTLEDGER_TENANT")
        .output()
        .await?;
    Ok(output)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn ok(server: &Server, args: &[&str]) -> anyhow::Result<String> {
    let out = certctl(server, args).await?;
    if !out.status.success() {
        bail!(
            "certctl {args:?} failed ({}): {}{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
    }
    Ok(text(&out.stdout))
}

async fn json(server: &Server, args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = ok(server, &all).await?;
    serde_json::from_str(&out).with_context(|| format!("certctl {args:?} printed {out:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn order_approve_history_export_and_verify() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let certd = start_certd(&data.path().join("data")).await?;
    let server = certd.server.clone();

    // Order with the application inline and a generated key; approval is the default.
    let ordered = json(
        &server,
        &[
            "order",
            "--domain",
            "app.example.test",
            "--domain",
            "www.example.test",
            "--generate-key",
            "ecdsa-p256",
            "--validity-days",
            "90",
        ],
    )
    .await?;
    let id = ordered["certificate_id"]
        .as_str()
        .context("certificate_id")?
        .to_owned();
    ensure!(
        ordered["spec"]["validation_method"] == "approval",
        "{ordered}"
    );
    ensure!(
        ordered["spec"]["domain_slots"]["kind"] == "multi",
        "{ordered}"
    );

    // The human output names the certificate and the next step.
    let got = ok(&server, &["get", &id]).await?;
    ensure!(
        got.contains(&id) && got.contains("app.example.test"),
        "{got}"
    );

    // Approve and wait until issued.
    let approved = ok(&server, &["approve", &id, "--comment", "test", "--wait"]).await?;
    ensure!(approved.contains("status:       issued"), "{approved}");
    let issued = json(&server, &["get", &id]).await?;
    ensure!(issued["status"] == "issued", "{issued}");
    ensure!(
        !issued["serial"].as_str().unwrap_or("").is_empty(),
        "{issued}"
    );

    // The listing (a read model fed by the event stream) shows it soon.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let list = json(&server, &["list", "--status", "issued"]).await?;
        if list
            .as_array()
            .is_some_and(|l| l.iter().any(|c| c["certificate_id"] == id.as_str()))
        {
            break;
        }
        ensure!(tokio::time::Instant::now() < deadline, "not listed: {list}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // A readable timeline, in order (the key may be generated before or after the
    // approval, but before issuance).
    let history = ok(&server, &["history", &id]).await?;
    let position = |event: &str| {
        history
            .find(event)
            .with_context(|| format!("no {event} in:\n{history}"))
    };
    let order = [
        "CertificateOrdered",
        "ApplicationSubmitted",
        "ApplicationApproved",
        "CertificateIssued",
    ]
    .map(position);
    let order = order.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    ensure!(order.is_sorted(), "out of order:\n{history}");
    let key = position("KeyGenerated")?;
    ensure!(order[1] < key && key < order[3], "{history}");
    ensure!(history.contains("approved by"), "{history}");

    // Export with the key: files, the key 0600, a warning on stderr.
    let out_dir = data.path().join("export");
    let export = certctl(
        &server,
        &[
            "export",
            &id,
            "--include-private-key",
            "--out",
            &out_dir.display().to_string(),
        ],
    )
    .await?;
    ensure!(export.status.success(), "{}", text(&export.stderr));
    ensure!(text(&export.stderr).contains("WARNING"), "no warning");
    for file in ["cert.pem", "chain.pem", "fullchain.pem", "key.pem"] {
        ensure!(out_dir.join(file).exists(), "{file} missing");
    }
    let mode = std::fs::metadata(out_dir.join("key.pem"))?
        .permissions()
        .mode()
        & 0o777;
    ensure!(mode == 0o600, "key.pem has mode {mode:o}");
    let key = std::fs::read_to_string(out_dir.join("key.pem"))?;
    ensure!(key.contains("PRIVATE KEY"), "{key}");
    let history = ok(&server, &["history", &id]).await?;
    ensure!(history.contains("PrivateKeyExported"), "{history}");

    // The CA chain certctl prints verifies the exported certificate with openssl.
    let chain = ok(&server, &["ca"]).await?;
    let root_at = chain
        .rfind("-----BEGIN CERTIFICATE-----")
        .context("no certificate in the chain")?;
    std::fs::write(data.path().join("root.pem"), &chain[root_at..])?;
    std::fs::write(data.path().join("ca-chain.pem"), &chain)?;
    let verify = tokio::process::Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(data.path().join("root.pem"))
        .arg("-untrusted")
        .arg(data.path().join("ca-chain.pem"))
        .arg(out_dir.join("cert.pem"))
        .output()
        .await
        .context("running openssl (apt-get install openssl)")?;
    ensure!(
        verify.status.success(),
        "openssl verify: {}{}",
        text(&verify.stdout),
        text(&verify.stderr)
    );

    certd.shutdown.cancel();
    certd.running.wait().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_idempotency_tenants_and_watch() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let certd = start_certd(&data.path().join("data")).await?;
    let server = certd.server.clone();

    // Embedded certd allows validation none: --wait returns once issued.
    let order = [
        "order",
        "--domain",
        "laptop.example.test",
        "--validation",
        "none",
        "--idempotency-key",
        "k1",
        "--wait",
    ];
    let issued = json(&server, &order).await?;
    ensure!(issued["status"] == "issued", "{issued}");
    let id = issued["certificate_id"].as_str().context("id")?.to_owned();

    // The same idempotency key gives the same certificate; --quiet prints only its id.
    let mut again = order.to_vec();
    again.pop();
    again.push("--quiet");
    let replayed = ok(&server, &again).await?;
    ensure!(replayed.trim() == id, "{replayed} != {id}");

    // Another tenant does not see it: a token of tenant acme, made by the platform admin.
    let created = json(
        &server,
        &[
            "tokens",
            "create",
            "acme ops",
            "--role",
            "operator",
            "--for-tenant",
            "acme",
        ],
    )
    .await?;
    ensure!(created["tenant"] == "acme", "{created}");
    let acme_dir = tempfile::tempdir()?;
    let acme = Server {
        url: server.url.clone(),
        token_file: acme_dir.path().join("acme.token"),
    };
    std::fs::write(
        &acme.token_file,
        created["secret"].as_str().context("secret")?,
    )?;
    let other = certctl(&acme, &["get", &id]).await?;
    ensure!(!other.status.success());
    ensure!(
        text(&other.stderr).contains("NOT_FOUND"),
        "{}",
        text(&other.stderr)
    );
    let mine = json(&acme, &["list"]).await?;
    ensure!(mine.as_array().is_some_and(Vec::is_empty), "{mine}");
    let who = json(&acme, &["whoami"]).await?;
    ensure!(
        who["tenant"] == "acme" && who["roles"] == "operator",
        "{who}"
    );
    // The operator may not revoke; the denial names the permission.
    let denied = certctl(&acme, &["revoke", &id, "--reason", "superseded"]).await?;
    ensure!(
        text(&denied.stderr).contains("PERMISSION_DENIED")
            && text(&denied.stderr).contains("\"revoke\""),
        "{}",
        text(&denied.stderr)
    );
    // Revoked, the token stops working at once.
    let token_id = created["token_id"].as_str().context("token id")?;
    ok(
        &server,
        &[
            "tokens",
            "revoke",
            token_id,
            "--reason",
            "test",
            "--for-tenant",
            "acme",
        ],
    )
    .await?;
    let refused = certctl(&acme, &["list"]).await?;
    ensure!(
        text(&refused.stderr).contains("UNAUTHENTICATED"),
        "{}",
        text(&refused.stderr)
    );
    // Without a token nothing is served.
    let anonymous = Server {
        url: server.url.clone(),
        token_file: acme_dir.path().join("missing.token"),
    };
    let none = tokio::process::Command::new(env!("CARGO_BIN_EXE_certctl"))
        .args(["list"])
        .env("CERTLEDGER_SERVER", &anonymous.url)
        .env_remove("CERTLEDGER_TOKEN")
        .env_remove("CERTLEDGER_TOKEN_FILE")
        .current_dir(acme_dir.path())
        .output()
        .await?;
    ensure!(
        text(&none.stderr).contains("UNAUTHENTICATED"),
        "{}",
        text(&none.stderr)
    );

    // watch prints the history and keeps following.
    let mut watch = tokio::process::Command::new(env!("CARGO_BIN_EXE_certctl"))
        .args(["--server", &server.url, "watch", &id])
        .env("CERTLEDGER_TOKEN_FILE", &server.token_file)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = watch.stdout.take().context("stdout")?;
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let seen = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await? {
            if line.contains("CertificateIssued") {
                return anyhow::Ok(true);
            }
        }
        anyhow::Ok(false)
    })
    .await??;
    ensure!(seen, "watch ended without the issued event");
    ensure!(
        watch.try_wait()?.is_none(),
        "watch stopped after the history"
    );
    watch.start_kill()?;

    certd.shutdown.cancel();
    certd.running.wait().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_name_the_status_and_the_field() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let certd = start_certd(&data.path().join("data")).await?;
    let server = certd.server.clone();

    let bad = certctl(
        &server,
        &[
            "order",
            "--domain",
            "bad..example.test",
            "--generate-key",
            "ecdsa-p256",
        ],
    )
    .await?;
    ensure!(!bad.status.success(), "a bad domain was accepted");
    let stderr = text(&bad.stderr);
    ensure!(stderr.contains("INVALID_ARGUMENT"), "{stderr}");
    ensure!(stderr.contains("domains[0]"), "{stderr}");

    let missing = certctl(&server, &["get", "01900000-0000-7000-8000-000000000000"]).await?;
    ensure!(!missing.status.success());
    ensure!(
        text(&missing.stderr).contains("NOT_FOUND"),
        "{}",
        text(&missing.stderr)
    );

    let usage = certctl(
        &server,
        &["order", "--generate-key", "dsa", "--domain", "a.test"],
    )
    .await?;
    ensure!(usage.status.code() == Some(2), "{usage:?}");

    certd.shutdown.cancel();
    certd.running.wait().await?;

    // Nobody listening: UNAVAILABLE with a hint.
    let down = certctl(&server, &["get", "x"]).await?;
    ensure!(!down.status.success());
    ensure!(
        text(&down.stderr).contains("UNAVAILABLE"),
        "{}",
        text(&down.stderr)
    );
    Ok(())
}

/// The certificate id of `order … --quiet`.
async fn issued_certificate(
    server: &Server,
    domain: &str,
    validity_days: &str,
) -> anyhow::Result<String> {
    let id = ok(
        server,
        &[
            "order",
            "--domain",
            domain,
            "--validation",
            "none",
            "--validity-days",
            validity_days,
            "--wait",
            "--quiet",
        ],
    )
    .await?;
    Ok(id.trim().to_owned())
}

/// The issuer's current CRL (RevocationService.GetCrl) as `openssl crl -text` reads it.
/// GET over HTTP/1.1 (with a bearer token): (status, body).
async fn http_get(
    addr: std::net::SocketAddr,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\r\n")
            .as_bytes(),
    )
    .await?;
    let mut raw = String::new();
    tcp.read_to_string(&mut raw).await?;
    let status = raw.split(' ').nth(1).context("status line")?.parse()?;
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    Ok((status, body.to_owned()))
}

async fn crl_text(server: &Server, dir: &Path) -> anyhow::Result<String> {
    use certledger_proto::revocation::v1::GetCrlRequest;
    use certledger_proto::revocation::v1::revocation_service_client::RevocationServiceClient;
    let token = std::fs::read_to_string(&server.token_file)?;
    let mut request = tonic::Request::new(GetCrlRequest {
        issuer: "builtin".into(),
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {}", token.trim()).parse()?);
    let crl = RevocationServiceClient::connect(server.url.clone())
        .await?
        .get_crl(request)
        .await?
        .into_inner();
    std::fs::write(dir.join("builtin.crl"), &crl.crl_der)?;
    certledger_testkit::openssl::run(
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            "builtin.crl",
            "-noout",
            "-text",
        ],
        dir,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn targets_deploy_to_files_and_revoke() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let certd = start_certd(&data.path().join("data")).await?;
    let server = certd.server.clone();
    let id = issued_certificate(&server, "files.example.test", "90").await?;

    let none = ok(&server, &["targets"]).await?;
    ensure!(none.starts_with("no targets"), "{none}");

    // A file target: certificate, chain and key written where it says.
    let site = data.path().join("site");
    std::fs::create_dir_all(&site)?;
    let path = |name: &str| site.join(name).display().to_string();
    let added = json(
        &server,
        &[
            "targets",
            "add",
            "site",
            "--kind",
            "file",
            "--cert-path",
            &path("cert.pem"),
            "--key-path",
            &path("key.pem"),
            "--chain-path",
            &path("chain.pem"),
        ],
    )
    .await?;
    ensure!(
        added["kind"] == "file" && added["name"] == "site" && added["removed"] == false,
        "{added}"
    );
    let target = added["target_id"].as_str().context("target_id")?.to_owned();
    let listed = ok(&server, &["targets", "list"]).await?;
    ensure!(
        listed.starts_with("TARGET") && listed.contains(&target) && listed.contains("active"),
        "{listed}"
    );

    // deploy returns once the deployment is verified.
    let deployed = ok(&server, &["deploy", &id, "--target", &target]).await?;
    ensure!(deployed.contains("state:        succeeded"), "{deployed}");
    let issued = json(&server, &["get", &id]).await?;
    let pem = issued["certificate_pem"]
        .as_str()
        .context("certificate_pem")?;
    ensure!(
        std::fs::read_to_string(site.join("cert.pem"))? == pem,
        "cert.pem is not the issued certificate"
    );
    ensure!(
        std::fs::read_to_string(site.join("chain.pem"))? == issued["chain_pem"],
        "chain.pem is not the chain"
    );
    // The key written is the certificate's.
    let public = |args: &[&str]| certledger_testkit::openssl::run(args, &site);
    ensure!(
        public(&["x509", "-in", "cert.pem", "-noout", "-pubkey"])?
            == public(&["pkey", "-in", "key.pem", "-pubout"])?,
        "key.pem does not belong to cert.pem"
    );
    let mode = std::fs::metadata(site.join("key.pem"))?
        .permissions()
        .mode()
        & 0o777;
    ensure!(mode == 0o600, "key.pem has mode {mode:o}");
    let shown = json(&server, &["get", &id]).await?;
    ensure!(
        shown["deployments"][0]["target_id"] == target.as_str()
            && shown["deployments"][0]["state"] == "succeeded",
        "{shown}"
    );

    // A command that fails: the deployment fails, certctl says why and exits non-zero.
    let broken = json(
        &server,
        &[
            "targets",
            "add",
            "broken",
            "--kind",
            "file",
            "--cert-path",
            &data.path().join("broken/cert.pem").display().to_string(),
            "--key-path",
            &data.path().join("broken/key.pem").display().to_string(),
            "--command",
            "/bin/false --flag",
        ],
    )
    .await?;
    ensure!(
        broken["settings"]["command"] == serde_json::json!(["/bin/false", "--flag"]),
        "{broken}"
    );
    let broken = broken["target_id"].as_str().context("target_id")?;
    let failed = certctl(&server, &["--json", "deploy", &id, "--target", broken]).await?;
    ensure!(failed.status.code() == Some(1), "{failed:?}");
    let state: serde_json::Value = serde_json::from_slice(&failed.stdout)?;
    ensure!(state["state"] == "failed", "{state}");
    let stderr = text(&failed.stderr);
    ensure!(stderr.contains("ended failed: deployment to"), "{stderr}");

    let unknown = certctl(&server, &["deploy", &id, "--target", "no-such-target"]).await?;
    ensure!(unknown.status.code() == Some(1), "{unknown:?}");
    ensure!(
        text(&unknown.stderr).contains("NOT_FOUND"),
        "{}",
        text(&unknown.stderr)
    );

    // Removed targets are listed as removed.
    let removed = json(&server, &["targets", "remove", broken]).await?;
    ensure!(removed["removed"] == true, "{removed}");

    // Revoke: the certificate says so, and the CRL lists its serial.
    let usage = certctl(&server, &["revoke", &id, "--reason", "bored"]).await?;
    ensure!(usage.status.code() == Some(2), "{usage:?}");
    let revoked = ok(
        &server,
        &[
            "revoke",
            &id,
            "--reason",
            "key-compromise",
            "--comment",
            "test",
        ],
    )
    .await?;
    ensure!(
        revoked.contains("status:       revoked") && revoked.contains("(key-compromise)"),
        "{revoked}"
    );
    let serial = issued["serial"]
        .as_str()
        .context("serial")?
        .replace(':', "")
        .to_ascii_uppercase();
    let dir = data.path().to_owned();
    let crl = certledger_testkit::eventually(
        std::time::Duration::from_secs(20),
        "the serial on the CRL",
        || {
            let (dir, server, serial) = (dir.clone(), server.clone(), serial.clone());
            async move {
                let crl = crl_text(&server, &dir).await.ok()?;
                crl.to_ascii_uppercase().contains(&serial).then_some(crl)
            }
        },
    )
    .await?;
    ensure!(crl.contains("Key Compromise"), "{crl}");

    // The revocations read model dates the CRL leg of the compliance clock from the
    // CRL events; the JSON API needs the token like everything else.
    let http = certd.running.http_addr().context("dashboard address")?;
    let (status, _) = http_get(http, "/api/revocations", None).await?;
    ensure!(status == 401, "served without a token: {status}");
    let token = std::fs::read_to_string(&server.token_file)?;
    let published = certledger_testkit::eventually(
        std::time::Duration::from_secs(20),
        "the revocation's CRL publication in the read model",
        || async {
            let (_, body) = http_get(http, "/api/revocations", Some(token.trim()))
                .await
                .ok()?;
            let rows: serde_json::Value = serde_json::from_str(&body).ok()?;
            rows.as_array()?
                .iter()
                .find(|r| r["certificate_id"] == id.as_str())
                .filter(|r| r["crl_compliance"] == "published")
                .cloned()
        },
    )
    .await?;
    ensure!(
        published["crl_published_at"].as_str() >= published["revoked_at"].as_str(),
        "{published}"
    );

    certd.shutdown.cancel();
    certd.running.wait().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn renew_orders_a_successor() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let certd = start_certd(&data.path().join("data")).await?;
    let server = certd.server.clone();
    // Inside the renewal window (30 days before expiry) from the start.
    let id = issued_certificate(&server, "renew.example.test", "10").await?;

    let out = certctl(&server, &["--json", "renew", &id, "--wait"]).await?;
    ensure!(out.status.success(), "{}", text(&out.stderr));
    let renewed: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let successor = &renewed["successor"];
    ensure!(
        renewed["predecessor"]["certificate_id"] == id.as_str(),
        "{renewed}"
    );
    ensure!(
        successor["status"] == "issued" && successor["predecessor_id"] == id.as_str(),
        "{renewed}"
    );
    ensure!(successor["certificate_id"] != id.as_str(), "{renewed}");
    let again = json(&server, &["get", &id]).await?;
    ensure!(
        again["successor_id"] == successor["certificate_id"],
        "{again}"
    );

    let missing = certctl(&server, &["renew", "01900000-0000-7000-8000-000000000000"]).await?;
    ensure!(missing.status.code() == Some(1), "{missing:?}");

    certd.shutdown.cancel();
    certd.running.wait().await?;
    Ok(())
}
