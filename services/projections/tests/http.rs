//! The HTTP surface over a live projection: `/metrics` scraped and parsed, the JSON API,
//! health, and the dashboard loaded in a real headless Chromium.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use certledger_domain::access::{RevokeToken, TokenCommand};
use certledger_projections::{HttpConfig, HttpServer};
use certledger_proto::common::v1::Role;
use certledger_runtime::auth::Authenticator;
use certledger_runtime::tls::{IdentityCa, ServerTls};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

type HttpResponse = (u16, HashMap<String, String>, String);

/// A plain HTTP/1.1 GET: (status, headers, body).
async fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> anyhow::Result<HttpResponse> {
    request(port, "GET", path, headers, "").await
}

/// A plain HTTP/1.1 request (header names lower-cased in the answer).
async fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> anyhow::Result<HttpResponse> {
    let mut stream = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    .context("connect timed out")??;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw))
        .await
        .context("response timed out")??;
    let text = String::from_utf8(raw).context("response is not UTF-8")?;
    let (head, body) = text.split_once("\r\n\r\n").context("no header end")?;
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .context("no status line")?
        .parse()?;
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Ok((status, headers, body))
}

fn dechunk(mut body: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").context("chunk size")?;
        let size = usize::from_str_radix(size.trim(), 16)?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..size).context("short chunk")?);
        body = rest.get(size + 2..).context("chunk end")?;
    }
}

// --- a strict parser of the Prometheus text format (0.0.4) ---------------------------

#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn is_metric_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

fn parse_value(s: &str) -> anyhow::Result<f64> {
    Ok(match s {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        s => s.parse().with_context(|| format!("bad value {s:?}"))?,
    })
}

fn parse_sample(line: &str) -> anyhow::Result<Sample> {
    let name_end = line.find(['{', ' ']).context("no value")?;
    let name = &line[..name_end];
    ensure!(is_metric_name(name), "bad metric name {name:?}");
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
        loop {
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let eq = rest.find('=').context("label without =")?;
            let key = &rest[..eq];
            ensure!(is_label_name(key), "bad label name {key:?}");
            rest = rest[eq + 1..]
                .strip_prefix('"')
                .context("label value not quoted")?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                let (i, c) = chars.next().context("unterminated label value")?;
                match c {
                    '"' => break i,
                    '\\' => match chars.next().map(|(_, c)| c) {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        other => bail!("bad escape \\{other:?}"),
                    },
                    '\n' => bail!("raw newline in label value"),
                    c => value.push(c),
                }
            };
            ensure!(
                labels.insert(key.to_owned(), value).is_none(),
                "duplicate label {key}"
            );
            rest = &rest[end + 1..];
            if let Some(r) = rest.strip_prefix(',') {
                rest = r;
            } else {
                ensure!(rest.starts_with('}'), "expected , or }} after a label");
            }
        }
    }
    let rest = rest
        .strip_prefix(' ')
        .context("no space before the value")?;
    let mut parts = rest.split(' ');
    let value = parse_value(parts.next().context("no value")?)?;
    if let Some(ts) = parts.next() {
        ts.parse::<i64>().context("bad timestamp")?;
    }
    ensure!(parts.next().is_none(), "trailing garbage");
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Parses an exposition; every line must be valid, every sample's family typed before
/// it and contiguous.
fn parse_exposition(text: &str) -> anyhow::Result<Vec<Sample>> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut finished: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    let mut samples = Vec::new();
    ensure!(
        text.ends_with('\n'),
        "the exposition must end with a line feed"
    );
    for (n, line) in text.lines().enumerate() {
        let at = || format!("line {}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut p = rest.splitn(3, ' ');
            let (kw, name) = (p.next().unwrap_or(""), p.next().unwrap_or(""));
            ensure!(is_metric_name(name), "{}: bad name", at());
            match kw {
                "HELP" => {}
                "TYPE" => {
                    let t = p.next().unwrap_or("");
                    ensure!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                        "{}: bad type",
                        at()
                    );
                    ensure!(
                        types.insert(name.to_owned(), t.to_owned()).is_none(),
                        "{}: TYPE twice",
                        at()
                    );
                    if let Some(c) = current.replace(name.to_owned()) {
                        finished.push(c);
                    }
                }
                _ => {}
            }
            continue;
        }
        ensure!(!line.starts_with('#'), "{}: comment without a space", at());
        let s = parse_sample(line).with_context(at)?;
        ensure!(
            types.contains_key(&s.name),
            "{}: sample before its TYPE",
            at()
        );
        ensure!(
            current.as_deref() == Some(s.name.as_str()),
            "{}: family not contiguous",
            at()
        );
        ensure!(!finished.contains(&s.name), "{}: family repeated", at());
        if types[&s.name] == "counter" {
            ensure!(
                s.name.ends_with("_total"),
                "{}: counter without _total",
                at()
            );
            ensure!(s.value >= 0.0, "{}: negative counter", at());
        }
        samples.push(s);
    }
    Ok(samples)
}

fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    samples.iter().find(|s| {
        s.name == name
            && labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
    })
}

#[test]
fn the_metrics_parser_rejects_what_prometheus_rejects() {
    assert!(parse_exposition("# TYPE a gauge\na 1\n").is_ok());
    assert!(parse_exposition("a 1\n").is_err(), "untyped sample");
    assert!(parse_exposition("# TYPE a gauge\na{b=\"c} 1\n").is_err());
    assert!(parse_exposition("# TYPE a gauge\na{b=\"\\x\"} 1\n").is_err());
    assert!(parse_exposition("# TYPE a gauge\na one\n").is_err());
    assert!(
        parse_exposition("# TYPE a counter\na 1\n").is_err(),
        "counter name"
    );
    assert!(parse_exposition("# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\na 2\n").is_err());
}

// --- the server over a live projection -----------------------------------------------

struct Server {
    port: u16,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn serve(db: &TestDb, running: &Running) -> anyhow::Result<Server> {
    start_server(
        HttpServer::new(db.store.clone(), db.log.clone(), HttpConfig::default())
            .with_projector_stats(running.projector.stats()),
    )
    .await
}

async fn start_server(server: HttpServer) -> anyhow::Result<Server> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.serve(listener, shutdown.clone().cancelled_owned()));
    Ok(Server {
        port,
        shutdown,
        task,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_api_and_health_over_http() -> anyhow::Result<()> {
    let db = TestDb::postgres().await?;
    let running = start_projector(&db, &db.store, "projections");
    let s = write_scenario(&db.log).await?;
    let head = wait_caught_up(&db.log, &db.store).await?;
    let server = serve(&db, &running).await?;
    let port = server.port;

    // Health.
    let (status, _, body) = get(port, "/healthz", &[]).await?;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, _, body) = get(port, "/readyz", &[]).await?;
    assert_eq!(status, 200, "{body}");

    // /metrics: every line valid, the expected series present.
    let (status, headers, text) = get(port, "/metrics", &[]).await?;
    assert_eq!(status, 200);
    assert!(headers["content-type"].starts_with("text/plain; version=0.0.4"));
    let samples = parse_exposition(&text).with_context(|| format!("parsing:\n{text}"))?;
    let value = |name: &str, labels: &[(&str, &str)]| {
        find(&samples, name, labels)
            .map(|s| s.value)
            .with_context(|| format!("{name}{labels:?} missing from\n{text}"))
    };
    assert_eq!(
        value(
            "certledger_certificates",
            &[("status", "issued"), ("issuer", "builtin")]
        )?,
        4.0
    );
    assert_eq!(
        value(
            "certledger_certificates",
            &[("status", "failed"), ("issuer", "builtin")]
        )?,
        1.0
    );
    assert_eq!(
        value(
            "certledger_certificates",
            &[("status", "revoked"), ("issuer", "builtin")]
        )?,
        1.0
    );
    let expiry = value(
        "certledger_certificate_expiration_timestamp_seconds",
        &[
            ("certificate_id", s.expiring),
            ("tenant", TENANT),
            ("issuer", "builtin"),
            ("common_name", "legacy.example.com"),
            ("auto_renew", "false"),
        ],
    )?;
    assert!((expiry - s.expiring_not_after.timestamp_micros() as f64 / 1e6).abs() < 1e-3);
    let due = value(
        "certledger_certificate_renewal_due_timestamp_seconds",
        &[("certificate_id", s.expiring)],
    )?;
    assert!(
        (expiry - due - 30.0 * 86_400.0).abs() < 1e-3,
        "renewal due 30 days before expiry"
    );
    for model in ["inventory", "expiry_calendar", "deployments", "revocations"] {
        assert_eq!(
            value("certledger_projection_lag_events", &[("projection", model)])?,
            0.0
        );
        assert_eq!(
            value(
                "certledger_projection_lag_seconds",
                &[("projection", model)]
            )?,
            0.0
        );
        assert_eq!(
            value(
                "certledger_projection_checkpoint_position",
                &[("projection", model)]
            )?,
            head as f64
        );
    }
    assert_eq!(value("certledger_log_head_position", &[])?, head as f64);
    assert_eq!(
        value(
            "certledger_issuance_failures_total",
            &[("issuer", "builtin")]
        )?,
        1.0
    );
    assert_eq!(
        value(
            "certledger_deployment_failures_total",
            &[("issuer", "builtin")]
        )?,
        1.0
    );
    assert_eq!(
        value(
            "certledger_renewal_failures_total",
            &[("issuer", "builtin")]
        )?,
        0.0
    );
    assert_eq!(
        value("certledger_needs_attention", &[("kind", "failed")])?,
        1.0
    );
    assert_eq!(
        value("certledger_needs_attention", &[("kind", "serving_revoked")])?,
        1.0
    );
    assert_eq!(
        value(
            "certledger_needs_attention",
            &[("kind", "expiring_without_auto_renew")]
        )?,
        1.0
    );
    assert!(value("certledger_projector_events_total", &[])? >= head as f64);

    // JSON API, with the tenant from the header.
    let (status, headers, body) = get(port, "/api/attention", &[]).await?;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    let items: serde_json::Value = serde_json::from_str(&body)?;
    let kinds: Vec<(&str, &str)> = items
        .as_array()
        .context("array")?
        .iter()
        .map(|i| {
            (
                i["kind"].as_str().unwrap_or(""),
                i["certificate_id"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(kinds.contains(&("failed", s.failed)), "{kinds:?}");
    assert!(
        kinds.contains(&("expiring_without_auto_renew", s.expiring)),
        "{kinds:?}"
    );
    let (_, _, body) = get(
        port,
        "/api/attention",
        &[("x-certledger-tenant", OTHER_TENANT)],
    )
    .await?;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body)?,
        serde_json::json!([])
    );
    let (status, _, body) = get(
        port,
        "/api/attention",
        &[("x-certledger-tenant", "Bad Tenant")],
    )
    .await?;
    assert_eq!(status, 400);
    assert!(body.contains("x-certledger-tenant"), "{body}");

    let (status, _, body) = get(port, "/api/certificates?status=failed", &[]).await?;
    assert_eq!(status, 200);
    let page: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(page["items"][0]["certificate_id"], s.failed);
    assert_eq!(page["items"][0]["last_failure_reason"], XSS_REASON);
    let (status, _, body) = get(port, "/api/certificates?status=bogus", &[]).await?;
    assert_eq!(status, 400);
    assert!(body.contains("status"), "{body}");
    let (status, _, body) = get(port, "/api/certificates?page_size=2", &[]).await?;
    assert_eq!(status, 200);
    let page: serde_json::Value = serde_json::from_str(&body)?;
    let token = page["next_page_token"]
        .as_str()
        .context("token")?
        .to_owned();
    assert!(!token.is_empty());
    let (_, _, body) = get(
        port,
        &format!("/api/certificates?page_size=2&page_token={token}"),
        &[],
    )
    .await?;
    let page2: serde_json::Value = serde_json::from_str(&body)?;
    assert_ne!(
        page2["items"][0]["certificate_id"],
        page["items"][0]["certificate_id"]
    );
    let (status, _, _) = get(port, "/api/certificates?page_token=zz", &[]).await?;
    assert_eq!(status, 400);

    let (status, _, body) = get(port, &format!("/api/certificates/{}", s.revoked), &[]).await?;
    assert_eq!(status, 200);
    let detail: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(detail["certificate"]["status"], "revoked");
    assert_eq!(detail["revocation"]["reason"], "key_compromise");
    assert_eq!(detail["revocation"]["revoke_compliance"], "met");
    assert_eq!(detail["deployments"][0]["state"], "serving_revoked");
    assert_eq!(detail["history"].as_array().map(Vec::len), Some(13));
    let (status, _, _) = get(
        port,
        &format!("/api/certificates/{}", s.revoked),
        &[("x-certledger-tenant", OTHER_TENANT)],
    )
    .await?;
    assert_eq!(status, 404, "another tenant's certificate does not exist");
    let (status, _, body) = get(port, "/api/expiry", &[]).await?;
    assert_eq!(status, 200);
    assert!(body.contains(s.expiring));
    let (status, _, body) = get(port, "/api/deployments?target=web-3", &[]).await?;
    assert_eq!(status, 200);
    assert!(body.contains("\"drifted\""));
    let (status, _, body) = get(port, "/api/revocations", &[]).await?;
    assert_eq!(status, 200);
    assert!(body.contains("key_compromise"));
    let (status, _, body) = get(port, "/api/targets", &[]).await?;
    assert_eq!(status, 200);
    assert!(body.contains("edge 3"));

    // The per-certificate page: the timeline from the log, markup escaped.
    let (status, headers, html) = get(port, &format!("/certificates/{}", s.failed), &[]).await?;
    assert_eq!(status, 200);
    assert!(headers["content-type"].starts_with("text/html"));
    assert!(html.contains("data-event-type=\"IssuanceFailed\""));
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
    assert!(
        !html.contains("<script>"),
        "nothing from an event is markup"
    );
    let (status, _, _) = get(port, "/certificates/nope", &[]).await?;
    assert_eq!(status, 404);

    server.shutdown.cancel();
    server.task.await??;
    running.stop().await?;
    Ok(())
}

fn chromium() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("CHROMIUM_BIN") {
        return Ok(PathBuf::from(p));
    }
    for p in [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ] {
        if std::path::Path::new(p).exists() {
            return Ok(PathBuf::from(p));
        }
    }
    bail!("no Chromium found: install the Debian package `chromium` (or set CHROMIUM_BIN)")
}

async fn run_chromium(args: &[String], profile: &std::path::Path) -> anyhow::Result<String> {
    let mut cmd = tokio::process::Command::new(chromium()?);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .context("chromium did not finish within 90 s")??;
    ensure!(
        out.status.success(),
        "chromium failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_headless_chromium_lists_what_needs_attention() -> anyhow::Result<()> {
    let db = TestDb::sqlite().await?;
    let running = start_projector(&db, &db.store, "projections");
    let s = write_scenario(&db.log).await?;
    wait_caught_up(&db.log, &db.store).await?;
    let server = serve(&db, &running).await?;
    let url = format!("http://127.0.0.1:{}/", server.port);
    let profile = tempfile::tempdir()?;

    // The DOM as the browser built it.
    let dom = run_chromium(&["--dump-dom".to_owned(), url.clone()], profile.path()).await?;
    let attention_at = dom
        .find("id=\"needs-attention\"")
        .context("attention section")?;
    let inventory_at = dom.find("id=\"inventory\"").context("inventory section")?;
    let expiring_at = dom
        .find("id=\"expiring-soon\"")
        .context("expiring section")?;
    assert!(
        attention_at < expiring_at && expiring_at < inventory_at,
        "needs attention comes first"
    );
    let section = &dom[attention_at..expiring_at];
    for (kind, id) in [
        ("failed", s.failed),
        ("expiring_without_auto_renew", s.expiring),
        ("serving_revoked", s.revoked),
    ] {
        let row = format!("data-kind=\"{kind}\" data-certificate=\"{id}\"");
        assert!(
            section.contains(&row),
            "{row} missing from the attention list:\n{section}"
        );
    }
    assert!(section.contains("auto-renew is off"));
    // The failure reason is text, not markup, in the browser's DOM too.
    assert!(
        section.contains("&lt;script&gt;alert('x')&lt;/script&gt;"),
        "{section}"
    );
    assert!(!dom.contains("<script>"));
    assert!(!dom[expiring_at..inventory_at].contains(s.ok));
    assert!(dom[expiring_at..inventory_at].contains(s.expiring));

    // A picture, for people (kept under target/ for inspection).
    let shot = option_env!("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join("projections-dashboard.png");
    run_chromium(
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1400,1300".to_owned(),
            url,
        ],
        profile.path(),
    )
    .await?;
    let png = std::fs::read(&shot).with_context(|| format!("reading {}", shot.display()))?;
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");

    // The certificate page: its timeline, in the browser.
    let page = format!(
        "http://127.0.0.1:{}/certificates/{}",
        server.port, s.revoked
    );
    let dom = run_chromium(&["--dump-dom".to_owned(), page.clone()], profile.path()).await?;
    let timeline = &dom[dom.find("id=\"timeline\"").context("timeline")?..];
    assert_eq!(timeline.matches("<li data-event-type=").count(), 13);
    assert!(timeline.contains("data-event-type=\"CertificateRevoked\""));
    assert!(dom.contains("serving_revoked"));
    let shot = shot.with_file_name("projections-certificate.png");
    run_chromium(
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1200,1500".to_owned(),
            page,
        ],
        profile.path(),
    )
    .await?;

    server.shutdown.cancel();
    server.task.await??;
    running.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_but_health_and_sign_in_needs_a_token() -> anyhow::Result<()> {
    let db = TestDb::sqlite().await?;
    let running = start_projector(&db, &db.store, "projections");
    write_scenario(&db.log).await?;
    wait_caught_up(&db.log, &db.store).await?;
    let auth = Authenticator::new(db.log.clone(), certledger_runtime::clock::system());
    let admin = metadata(TENANT, "test");
    let (viewer_record, viewer) = auth
        .create(TENANT, "dashboard", vec![Role::Viewer], 30, &admin)
        .await?;
    let (_, other) = auth
        .create(OTHER_TENANT, "other", vec![Role::Viewer], 30, &admin)
        .await?;
    let viewer = viewer.expose();
    let other = other.expose();
    let server = start_server(
        HttpServer::new(db.store.clone(), db.log.clone(), HttpConfig::default())
            .with_auth(Some(auth.clone())),
    )
    .await?;
    let port = server.port;
    let bearer = |t: &str| format!("Bearer {t}");

    // Health and the sign-in form are open.
    assert_eq!(get(port, "/healthz", &[]).await?.0, 200);
    let (status, _, form) = get(port, "/login", &[]).await?;
    assert_eq!(status, 200);
    assert!(form.contains("action=\"/login\""), "{form}");

    // No credentials: 401 everywhere else; programs get JSON, browsers the form.
    for path in ["/api/attention", "/api/certificates", "/metrics"] {
        let (status, headers, body) = get(port, path, &[]).await?;
        assert_eq!(status, 401, "{path}: {body}");
        assert!(body.contains("no credentials"), "{path}: {body}");
        assert!(headers.contains_key("www-authenticate"), "{path}");
    }
    let (status, _, page) = get(port, "/", &[]).await?;
    assert_eq!(status, 401);
    assert!(page.contains("action=\"/login\""), "{page}");
    let (status, _, body) = get(
        port,
        "/api/attention",
        &[("authorization", "Bearer clt.default.nope.nope")],
    )
    .await?;
    assert_eq!(status, 401, "{body}");

    // A viewer reads its tenant.
    let (status, _, body) = get(
        port,
        "/api/certificates/cert-ok",
        &[("authorization", &bearer(&viewer))],
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("www.example.com"), "{body}");
    // Another tenant's token: the certificate does not exist for it, whatever tenant the
    // request names; and /metrics, which covers every tenant, is refused.
    let (status, _, body) = get(
        port,
        "/api/certificates/cert-ok",
        &[
            ("authorization", &bearer(&other)),
            ("x-certledger-tenant", TENANT),
        ],
    )
    .await?;
    assert_eq!(status, 404, "{body}");
    let (status, _, body) = get(port, "/metrics", &[("authorization", &bearer(&other))]).await?;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("platform tenant"), "{body}");
    let (status, _, body) = get(port, "/metrics", &[("authorization", &bearer(&viewer))]).await?;
    assert_eq!(status, 200);
    parse_exposition(&body)?;

    // A browser signs in: the token goes into an HttpOnly cookie, the dashboard opens.
    let (status, _, page) = request(
        port,
        "POST",
        "/login",
        &[("content-type", "application/x-www-form-urlencoded")],
        "token=wrong",
    )
    .await?;
    assert_eq!(status, 401);
    assert!(page.contains("malformed"), "{page}");
    let form = format!(
        "token={}",
        form_urlencoded::byte_serialize(viewer.as_bytes()).collect::<String>()
    );
    let (status, headers, _) = request(
        port,
        "POST",
        "/login",
        &[("content-type", "application/x-www-form-urlencoded")],
        &form,
    )
    .await?;
    assert_eq!(status, 303);
    assert_eq!(headers.get("location").map(String::as_str), Some("/"));
    let cookie = headers.get("set-cookie").context("a cookie")?;
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().context("cookie pair")?.to_owned();
    let (status, _, page) = get(port, "/", &[("cookie", &cookie)]).await?;
    assert_eq!(status, 200);
    assert!(page.contains("id=\"attention\""), "{page}");

    // Revoking the token locks the browser out at once.
    auth.execute(
        TENANT,
        &admin,
        &TokenCommand::Revoke(RevokeToken {
            token_id: viewer_record.token_id.clone(),
            reason: "left the team".into(),
        }),
    )
    .await?;
    let (status, _, page) = get(port, "/", &[("cookie", &cookie)]).await?;
    assert_eq!(status, 401);
    assert!(page.contains("revoked"), "{page}");
    let (status, headers, _) = request(port, "POST", "/logout", &[], "").await?;
    assert_eq!(status, 303);
    assert!(
        headers
            .get("set-cookie")
            .is_some_and(|c| c.contains("Max-Age=0"))
    );

    server.shutdown.cancel();
    server.task.await??;
    running.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_servers_tls_identity_the_http_side_speaks_https() -> anyhow::Result<()> {
    let db = TestDb::sqlite().await?;
    let now = chrono::Utc::now();
    let (ca_pem, ca_key) = IdentityCa::generate("test identity CA", now)?;
    let (cert, key) = IdentityCa::from_pem(&ca_pem, &ca_key)?
        .issue_server(&["localhost".into(), "127.0.0.1".into()], now)?;
    let auth = Authenticator::with_tls(
        db.log.clone(),
        certledger_runtime::clock::system(),
        Some(ServerTls::from_pem(cert, key, None)?),
        None,
    );
    let admin = metadata(TENANT, "test");
    let (_, token) = auth
        .create(TENANT, "reader", vec![Role::Viewer], 30, &admin)
        .await?;
    let server = start_server(
        HttpServer::new(db.store.clone(), db.log.clone(), HttpConfig::default())
            .with_auth(Some(auth)),
    )
    .await?;
    let port = server.port;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("ca.pem"), &ca_pem)?;

    // openssl verifies the server's chain to the CA and reads the JSON API through it.
    let mut child = tokio::process::Command::new("openssl")
        .current_dir(dir.path())
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-CAfile",
            "ca.pem",
            "-verify_return_error",
            "-verify_ip",
            "127.0.0.1",
            "-ign_eof",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let request = format!(
        "GET /api/targets HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        token.expose()
    );
    let mut stdin = child.stdin.take().context("stdin")?;
    stdin.write_all(request.as_bytes()).await?;
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .context("openssl s_client timed out")??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("Verify return code: 0 (ok)"),
        "{stdout}\n{stderr}"
    );
    assert!(stdout.contains("HTTP/1.1 200"), "{stdout}\n{stderr}");
    // Plain HTTP gets no answer.
    assert!(get(port, "/healthz", &[]).await.is_err());

    server.shutdown.cancel();
    server.task.await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_waits_for_the_read_models_and_lag_is_measured() -> anyhow::Result<()> {
    let db = TestDb::sqlite().await?;
    write_scenario(&db.log).await?;
    let head = db.log.head_position().await?;
    // Nothing projected yet: not ready, and the lag is the whole log.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let shutdown = CancellationToken::new();
    let config = HttpConfig {
        ready_max_lag: 0,
        ..HttpConfig::default()
    };
    let task = tokio::spawn(
        HttpServer::new(db.store.clone(), db.log.clone(), config)
            .serve(listener, shutdown.clone().cancelled_owned()),
    );
    let (status, _, body) = get(port, "/readyz", &[]).await?;
    assert_eq!(status, 503);
    assert!(body.contains("catching up"), "{body}");
    let (_, _, text) = get(port, "/metrics", &[]).await?;
    let samples = parse_exposition(&text)?;
    let lag = find(
        &samples,
        "certledger_projection_lag_events",
        &[("projection", "inventory")],
    )
    .context("lag series")?;
    assert_eq!(lag.value, head as f64);
    let lag_secs = find(
        &samples,
        "certledger_projection_lag_seconds",
        &[("projection", "inventory")],
    )
    .context("lag seconds series")?;
    assert!(lag_secs.value >= 0.0);
    assert!(
        find(&samples, "certledger_projector_events_total", &[]).is_none(),
        "no projector here"
    );

    // The projector catches up (another process, say): ready, and it stays ready.
    let running = start_projector(&db, &db.store, "projections");
    wait_caught_up(&db.log, &db.store).await?;
    let (status, _, body) = get(port, "/readyz", &[]).await?;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    shutdown.cancel();
    task.await??;
    running.stop().await?;
    Ok(())
}
