//! The OCSP responder and the HTTP endpoints, checked with the real `openssl ocsp` client.

mod common;

use std::path::Path;

use base64::Engine as _;
use certledger_revocation::{CrlConfig, OcspResponseStatus, RevocationReason, build_crl};
use common::*;
use time::{Duration, OffsetDateTime};

fn ocsp_query(server: &TestServer, ca: &TestCa, subject: &[&str], extra: &[&str]) -> String {
    let mut cmd = openssl();
    cmd.arg("ocsp")
        .arg("-issuer")
        .arg(&ca.intermediate_pem)
        .args(extra)
        .args(subject)
        .arg("-url")
        .arg(server.url("/ocsp"))
        .arg("-CAfile")
        .arg(&ca.chain_pem)
        .arg("-resp_text");
    run_ok(&mut cmd)
}

fn cert_arg(path: &Path) -> Vec<String> {
    vec!["-cert".into(), path.display().to_string()]
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn openssl_ocsp_good_revoked_unknown_and_garbage() {
    let ca = TestCa::new("OCSP test");
    let server = TestServer::start(&ca);
    let (leaf, leaf_pem) = ca.issue("leaf");
    let (other, other_pem) = ca.issue("other");
    server.source.record_issued(leaf.serial.clone());
    server.source.record_issued(other.serial.clone());
    let leaf_name = leaf_pem.display().to_string();

    // good, with a nonce (openssl's default) and without.
    let out = ocsp_query(&server, &ca, &args(&cert_arg(&leaf_pem)), &[]);
    assert!(out.contains(&format!("{leaf_name}: good")), "{out}");
    assert!(out.contains("Response verify OK"), "{out}");
    assert!(out.contains("OCSP Nonce"), "nonce not echoed: {out}");
    assert!(!out.contains("WARNING: no nonce"), "{out}");
    assert!(out.contains("Responder Id: "), "{out}");
    assert!(out.contains("Next Update"), "{out}");
    let out = ocsp_query(&server, &ca, &args(&cert_arg(&leaf_pem)), &["-no_nonce"]);
    assert!(out.contains(&format!("{leaf_name}: good")), "{out}");
    assert!(out.contains("Response verify OK"), "{out}");
    assert!(!out.contains("OCSP Nonce"), "{out}");
    // SHA-256 CertID.
    let out = ocsp_query(&server, &ca, &args(&cert_arg(&leaf_pem)), &["-sha256"]);
    assert!(out.contains(&format!("{leaf_name}: good")), "{out}");
    assert!(out.contains("Hash Algorithm: sha256"), "{out}");
    assert!(out.contains("Response verify OK"), "{out}");

    // Revoked once the read model says so (with reason), other certificates unaffected.
    let revoked_at = OffsetDateTime::now_utc() - Duration::minutes(3);
    server.source.record_revoked(
        leaf.serial.clone(),
        revoked_at,
        RevocationReason::KeyCompromise,
    );
    let mut both = cert_arg(&leaf_pem);
    both.extend(cert_arg(&other_pem));
    let out = ocsp_query(&server, &ca, &args(&both), &[]);
    assert!(out.contains(&format!("{leaf_name}: revoked")), "{out}");
    assert!(out.contains("Reason: keyCompromise"), "{out}");
    assert!(out.contains("Revocation Time"), "{out}");
    assert!(
        out.contains(&format!("{}: good", other_pem.display())),
        "{out}"
    );
    assert!(out.contains("Response verify OK"), "{out}");

    // A serial this CA never issued: unknown, never good.
    let out = ocsp_query(
        &server,
        &ca,
        &["-serial", "0x0123456789abcdef0123456789abcdef01"],
        &[],
    );
    assert!(
        out.contains("0x0123456789abcdef0123456789abcdef01: unknown"),
        "{out}"
    );
    assert!(out.contains("Response verify OK"), "{out}");
    // Issued by this CA but not (yet) in the read model: unknown too.
    let (_, unrecorded_pem) = ca.issue("unrecorded");
    let out = ocsp_query(&server, &ca, &args(&cert_arg(&unrecorded_pem)), &[]);
    assert!(out.contains(": unknown"), "{out}");

    // Another CA's certificate (another issuer name and key): unknown.
    let other_ca = TestCa::new("Other");
    let (foreign, foreign_pem) = other_ca.issue("foreign");
    server.source.record_issued(foreign.serial.clone()); // same serial known, wrong issuer
    let out = run_ok(
        openssl()
            .arg("ocsp")
            .arg("-issuer")
            .arg(&other_ca.intermediate_pem)
            .arg("-cert")
            .arg(&foreign_pem)
            .arg("-url")
            .arg(server.url("/ocsp"))
            .arg("-noverify")
            .arg("-resp_text"),
    );
    assert!(
        out.contains(&format!("{}: unknown", foreign_pem.display())),
        "{out}"
    );

    // Garbage: malformedRequest (status 1), HTTP 200, and the server keeps serving.
    for body in [&b"hello"[..], &[0x30, 0x80, 0x00, 0x00], &[0x30; 1], &[]] {
        let resp = http(
            server.addr,
            "POST",
            "/ocsp",
            Some("application/ocsp-request"),
            body,
        );
        assert_eq!(resp.status, 200);
        assert_eq!(
            resp.header("content-type"),
            Some("application/ocsp-response")
        );
        assert_eq!(resp.body, vec![0x30, 0x03, 0x0a, 0x01, 0x01], "{body:?}");
    }
    // Oversized body: also malformedRequest.
    let big = vec![0x30; 64 * 1024];
    let resp = http(
        server.addr,
        "POST",
        "/ocsp",
        Some("application/ocsp-request"),
        &big,
    );
    assert_eq!(resp.body, vec![0x30, 0x03, 0x0a, 0x01, 0x01]);
    // openssl prints the status of an error response.
    let garbage = ca.path("garbage.der");
    write(&garbage, [0x30, 0x03, 0x0a, 0x01, 0x01]);
    let (_, stdout, stderr) = run(openssl()
        .args(["ocsp", "-respin"])
        .arg(&garbage)
        .arg("-resp_text"));
    assert!(
        format!("{stdout}{stderr}").contains("malformedrequest"),
        "{stdout}{stderr}"
    );
    let out = ocsp_query(&server, &ca, &args(&cert_arg(&other_pem)), &[]);
    assert!(
        out.contains(&format!("{}: good", other_pem.display())),
        "{out}"
    );
}

#[test]
fn ocsp_get_requests_and_cache_headers() {
    let ca = TestCa::new("OCSP GET");
    let server = TestServer::start(&ca);
    let (leaf, leaf_pem) = ca.issue("leaf");
    server.source.record_issued(leaf.serial.clone());

    let req = ca.path("req.der");
    run_ok(
        openssl()
            .arg("ocsp")
            .arg("-issuer")
            .arg(&ca.intermediate_pem)
            .arg("-cert")
            .arg(&leaf_pem)
            .arg("-no_nonce")
            .arg("-reqout")
            .arg(&req),
    );
    let der = std::fs::read(&req).expect("read request");
    let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
    let encoded = b64
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    // URL-encoded (as RFC 6960 says) and raw base64 ('/' and '+' unescaped) both work.
    for path in [format!("/ocsp/{encoded}"), format!("/ocsp/{b64}")] {
        let resp = http(server.addr, "GET", &path, None, &[]);
        assert_eq!(resp.status, 200, "{path}");
        assert_eq!(
            resp.header("content-type"),
            Some("application/ocsp-response")
        );
        let cache = resp.header("cache-control").unwrap_or_default().to_string();
        assert!(cache.contains("max-age=3600"), "{cache}");
        assert!(resp.header("last-modified").is_some());
        assert!(resp.header("expires").is_some());
        let resp_path = ca.path("resp.der");
        write(&resp_path, &resp.body);
        let out = read_response(&ca, &resp_path, &leaf_pem);
        assert!(
            out.contains(&format!("{}: good", leaf_pem.display())),
            "{out}"
        );
        assert!(out.contains("Response verify OK"), "{out}");
    }
    // Bad base64 in the path: malformedRequest, not cacheable.
    let resp = http(server.addr, "GET", "/ocsp/%%%not-base64!", None, &[]);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, vec![0x30, 0x03, 0x0a, 0x01, 0x01]);
    assert_eq!(resp.header("cache-control"), Some("no-store"));

    // No responder configured: tryLater.
    server.ocsp.set(None);
    let resp = http(server.addr, "GET", &format!("/ocsp/{encoded}"), None, &[]);
    assert_eq!(
        resp.body,
        vec![0x30, 0x03, 0x0a, 0x01, OcspResponseStatus::TryLater.code()]
    );

    let resp = http(server.addr, "GET", "/healthz", None, &[]);
    assert_eq!((resp.status, resp.body.as_slice()), (200, &b"ok\n"[..]));
}

#[test]
fn crl_endpoint_serves_der_and_pem_and_swaps() {
    let ca = TestCa::new("CRL HTTP");
    let server = TestServer::start(&ca);
    let (leaf, _) = ca.issue("leaf");

    let resp = http(server.addr, "GET", "/crl/intermediate.crl", None, &[]);
    assert_eq!(resp.status, 404);

    let now = OffsetDateTime::now_utc();
    let crl1 = build_crl(&ca.signer, &CrlConfig::default(), 1, now, &[]).expect("crl");
    server
        .crls
        .publish("intermediate", crl1.clone())
        .expect("publish");
    let resp = http(server.addr, "GET", "/crl/intermediate.crl", None, &[]);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("application/pkix-crl"));
    assert_eq!(resp.body, crl1.der);
    assert_eq!(
        resp.header("etag").map(str::to_string),
        Some(format!("\"{}\"", crl1.sha256_hex))
    );

    // Re-signed with the leaf revoked: the new CRL is served.
    server
        .source
        .record_revoked(leaf.serial.clone(), now, RevocationReason::Superseded);
    let crl2 = build_crl(
        &ca.signer,
        &CrlConfig::default(),
        2,
        now + Duration::seconds(1),
        &server.source.revoked_entries(),
    )
    .expect("crl");
    server
        .crls
        .publish("intermediate", crl2.clone())
        .expect("publish");
    // Publishing an older CRL is refused; the same one again is a no-op.
    assert!(server.crls.publish("intermediate", crl1).is_err());
    assert!(server.crls.publish("intermediate", crl2.clone()).is_ok());
    assert!(server.crls.publish("../x", crl2.clone()).is_err());

    let der_resp = http(server.addr, "GET", "/crl/intermediate.crl", None, &[]);
    assert_eq!(der_resp.body, crl2.der);
    for path in ["/crl/intermediate.pem", "/crl/intermediate.crl?format=pem"] {
        let resp = http(server.addr, "GET", path, None, &[]);
        assert_eq!(resp.status, 200, "{path}");
        assert_eq!(resp.header("content-type"), Some("application/x-pem-file"));
        assert_eq!(resp.body, crl2.pem.as_bytes(), "{path}");
    }
    let path = ca.path("served.crl");
    write(&path, &der_resp.body);
    let text = run_ok(
        openssl()
            .args(["crl", "-inform", "DER", "-noout", "-text", "-in"])
            .arg(&path)
            .arg("-CAfile")
            .arg(&ca.chain_pem),
    );
    assert!(text.contains("verify OK"), "{text}");
    assert!(
        text.contains(&leaf.serial.to_hex().to_uppercase()),
        "{text}"
    );
    assert!(text.contains("Superseded"), "{text}");

    for bad in [
        "/crl/other.crl",
        "/crl/intermediate",
        "/crl/intermediate.txt",
    ] {
        assert_eq!(
            http(server.addr, "GET", bad, None, &[]).status,
            404,
            "{bad}"
        );
    }
}

#[test]
fn slow_clients_are_disconnected_and_others_still_served() {
    use std::io::{Read, Write};
    let ca = TestCa::new("Slow");
    let config = certledger_revocation::HttpConfig {
        header_read_timeout: std::time::Duration::from_millis(300),
        ..certledger_revocation::HttpConfig::default()
    };
    let server = TestServer::start_with(&ca, config);
    let mut slow = std::net::TcpStream::connect(server.addr).expect("connect");
    slow.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("timeout");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "slow client kept for {:?}",
        started.elapsed()
    );
    let resp = http(server.addr, "GET", "/healthz", None, &[]);
    assert_eq!(resp.status, 200);
}

/// What `openssl ocsp` makes of the DER response in `response` about `leaf` (it checks
/// the signature against the CA chain).
fn read_response(ca: &TestCa, response: &Path, leaf: &Path) -> String {
    run_ok(
        openssl()
            .args(["ocsp", "-respin"])
            .arg(response)
            .arg("-issuer")
            .arg(&ca.intermediate_pem)
            .arg("-cert")
            .arg(leaf)
            .arg("-CAfile")
            .arg(&ca.chain_pem)
            .arg("-no_nonce")
            .arg("-resp_text"),
    )
}

/// The DER request `openssl ocsp` would send for `leaf` (with or without a nonce).
fn request_der(ca: &TestCa, leaf: &Path, nonce: bool, name: &str) -> Vec<u8> {
    let out = ca.path(name);
    let mut cmd = openssl();
    cmd.arg("ocsp")
        .arg("-issuer")
        .arg(&ca.intermediate_pem)
        .arg("-cert")
        .arg(leaf)
        .arg("-reqout")
        .arg(&out);
    if !nonce {
        cmd.arg("-no_nonce");
    }
    run_ok(&mut cmd);
    std::fs::read(&out).expect("read request")
}

#[test]
fn signed_answers_are_reused_only_while_fresh_nonce_free_and_still_true() {
    let ca = TestCa::new("OCSP reuse");
    let source = std::sync::Arc::new(certledger_revocation::MemoryStatusSource::new());
    let responder = certledger_revocation::Responder::new(
        ca.signer.clone(),
        source.clone(),
        certledger_revocation::OcspConfig::default(),
    )
    .expect("responder");
    let (leaf, leaf_pem) = ca.issue("leaf");
    source.record_issued(leaf.serial.clone());
    let plain = request_der(&ca, &leaf_pem, false, "plain.der");
    let with_nonce = request_der(&ca, &leaf_pem, true, "nonce.der");
    let t0 = OffsetDateTime::now_utc();
    let minute = Duration::minutes(1);

    // Without a nonce, the same request a minute later gets the very response signed first
    // (its thisUpdate says so: a new signature would carry the later time).
    let first = responder.respond(&plain, t0);
    assert_eq!(first.status, OcspResponseStatus::Successful);
    let again = responder.respond(&plain, t0 + minute);
    assert_eq!(again.der, first.der);
    // With a nonce it is signed for this request every time.
    let nonced = responder.respond(&with_nonce, t0 + minute);
    assert_ne!(nonced.der, first.der);
    assert_eq!(nonced.this_update, Some(whole(t0 + minute)));

    // A revocation is answered at once, not after the kept response ages out.
    source.record_revoked(leaf.serial.clone(), t0, RevocationReason::KeyCompromise);
    let revoked = responder.respond(&plain, t0 + minute * 2);
    assert_ne!(revoked.der, first.der);
    assert!(matches!(
        revoked.answers[0].status,
        certledger_revocation::CertStatus::Revoked { .. }
    ));
    write(&ca.path("revoked.der"), &revoked.der);
    let out = read_response(&ca, &ca.path("revoked.der"), &leaf_pem);
    assert!(
        out.contains("revoked") && out.contains("Response verify OK"),
        "{out}"
    );

    // Past a quarter of the validity (12 h by default) the answer is signed anew.
    let kept = responder.respond(&plain, t0 + minute * 3);
    assert_eq!(kept.der, revoked.der);
    let later = t0 + minute * 2 + Duration::hours(3);
    let renewed = responder.respond(&plain, later);
    assert_ne!(renewed.der, revoked.der);
    assert_eq!(renewed.this_update, Some(whole(later)));
}

fn whole(at: OffsetDateTime) -> OffsetDateTime {
    at.replace_nanosecond(0).expect("whole seconds")
}
