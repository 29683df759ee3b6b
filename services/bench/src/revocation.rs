//! Scenario 5, revocation: OCSP responses/s over HTTP against the revocation service's
//! HTTP server (`RevocationHttp` with the service's `Responder`, on a loopback port,
//! answering from the in-memory status read model), and the time to sign a CRL with
//! 100,000 entries (as `services/revocation/examples/crl_100k.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use certledger_ca::{Authority, AuthorityConfig, MemoryKeyStore, SerialNumber, SerialPrefix};
use certledger_revocation::{
    CertIdHash, CrlConfig, CrlHandle, HttpConfig, IssuerSigner, MemoryStatusSource, OcspConfig,
    OcspHandle, Responder, RevocationHttp, RevocationReason, RevokedEntry, build_crl,
};
use http_body_util::{BodyExt, Full};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::Settings;
use crate::progress::{Counter, step};
use crate::report::Figure;

const SCENARIO: &str = "revocation";

struct Sizes {
    /// Serials the responder knows (a tenth of them revoked).
    known_serials: usize,
    /// Concurrent HTTP/1.1 keep-alive connections.
    connections: usize,
    /// How long OCSP load runs per repeat.
    ocsp_duration: Duration,
    /// Entries of the CRL.
    crl_entries: usize,
}

fn sizes(quick: bool) -> Sizes {
    if quick {
        Sizes {
            known_serials: 200,
            connections: 4,
            ocsp_duration: Duration::from_millis(500),
            crl_entries: 1_000,
        }
    } else {
        Sizes {
            known_serials: 100_000,
            connections: 32,
            ocsp_duration: Duration::from_secs(10),
            crl_entries: 100_000,
        }
    }
}

// --- a minimal DER writer for OCSP requests -------------------------------------------

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

fn sequence(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

/// An unsigned RFC 6960 OCSPRequest for one serial, CertID hashed with SHA-1 (what
/// openssl and most clients send).
fn ocsp_request(signer: &IssuerSigner, serial: &SerialNumber) -> Vec<u8> {
    const SHA1_OID: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1a];
    let hash = CertIdHash::Sha1;
    let cert_id = sequence(&[
        &sequence(&[&tlv(0x06, SHA1_OID), &tlv(0x05, &[])]),
        &tlv(0x04, &hash.digest(signer.subject_der())),
        &tlv(0x04, &hash.digest(signer.public_key_bits())),
        &tlv(0x02, serial.as_bytes()),
    ]);
    let request = sequence(&[&cert_id]);
    let list = sequence(&[&request]);
    let tbs = sequence(&[&list]);
    sequence(&[&tbs])
}

// --- the OCSP load ------------------------------------------------------------------------

async fn ocsp_client(
    addr: std::net::SocketAddr,
    requests: Arc<Vec<Bytes>>,
    offset: usize,
    stop: CancellationToken,
    counter: Arc<std::sync::atomic::AtomicU64>,
) -> anyhow::Result<u64> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .context("HTTP/1.1 handshake")?;
    let driver = tokio::spawn(conn);
    let mut answered = 0u64;
    let mut i = offset;
    while !stop.is_cancelled() {
        let body = requests[i % requests.len()].clone();
        i += 1;
        let request = hyper::Request::post("/ocsp")
            .header("host", addr.to_string())
            .header("content-type", "application/ocsp-request")
            .body(Full::new(body))
            .context("building the request")?;
        let response = sender
            .send_request(request)
            .await
            .context("sending an OCSP request")?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .context("reading an OCSP response")?
            .to_bytes();
        if !status.is_success() || body.len() < 16 {
            bail!("OCSP answered HTTP {status} with {} bytes", body.len());
        }
        answered += 1;
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    drop(sender);
    driver.abort();
    Ok(answered)
}

struct Ca {
    _dir: tempfile::TempDir,
    signer: Arc<IssuerSigner>,
}

fn bootstrap_ca() -> anyhow::Result<Ca> {
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let keys = MemoryKeyStore::new();
    let authority = Authority::open_or_create(
        &AuthorityConfig::new(dir.path()),
        &keys,
        OffsetDateTime::now_utc(),
    )
    .context("creating a CA")?;
    let signer = IssuerSigner::from_authority(&authority, &keys).context("the CA's signer")?;
    Ok(Ca {
        _dir: dir,
        signer: Arc::new(signer),
    })
}

fn serials(n: usize) -> anyhow::Result<Vec<SerialNumber>> {
    (0..n)
        .map(|_| SerialNumber::generate(SerialPrefix::DEFAULT).context("generating a serial"))
        .collect()
}

async fn ocsp_rate(ca: &Ca, sizes: &Sizes) -> anyhow::Result<f64> {
    let source = Arc::new(MemoryStatusSource::new());
    let now = OffsetDateTime::now_utc();
    let known = serials(sizes.known_serials)?;
    for (i, serial) in known.iter().enumerate() {
        if i % 10 == 0 {
            source.record_revoked(serial.clone(), now, RevocationReason::KeyCompromise);
        } else {
            source.record_issued(serial.clone());
        }
    }
    let responder = Responder::new(ca.signer.clone(), source, OcspConfig::default())
        .context("the OCSP responder")?;
    let http = RevocationHttp::new(
        CrlHandle::new(),
        OcspHandle::with_responder(Arc::new(responder)),
        HttpConfig::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding a loopback port")?;
    let addr = listener.local_addr()?;
    let server_stop = CancellationToken::new();
    let server = {
        let token = server_stop.clone();
        tokio::spawn(async move { http.serve(listener, token.cancelled_owned()).await })
    };

    // Requests for a spread of known serials (good and revoked), built once.
    let requests: Arc<Vec<Bytes>> = Arc::new(
        known
            .iter()
            .step_by((known.len() / 1000).max(1))
            .map(|s| Bytes::from(ocsp_request(&ca.signer, s)))
            .collect(),
    );
    let stop = CancellationToken::new();
    let counter = Counter::start(format!("OCSP over {} connections", sizes.connections), 0);
    let start = Instant::now();
    let clients: Vec<_> = (0..sizes.connections)
        .map(|c| {
            tokio::spawn(ocsp_client(
                addr,
                requests.clone(),
                c * 31,
                stop.clone(),
                counter.handle(),
            ))
        })
        .collect();
    tokio::time::sleep(sizes.ocsp_duration).await;
    stop.cancel();
    let mut answered = 0;
    for client in clients {
        answered += client.await.context("OCSP client task")??;
    }
    let elapsed = start.elapsed();
    server_stop.cancel();
    server
        .await
        .context("the HTTP server task")?
        .context("the revocation HTTP server")?;
    Ok(answered as f64 / elapsed.as_secs_f64())
}

fn crl_seconds(ca: &Ca, entries: usize) -> anyhow::Result<f64> {
    let now = OffsetDateTime::now_utc();
    let reasons = [
        RevocationReason::Unspecified,
        RevocationReason::KeyCompromise,
        RevocationReason::Superseded,
        RevocationReason::CessationOfOperation,
    ];
    let entries: Vec<RevokedEntry> = serials(entries)?
        .into_iter()
        .enumerate()
        .map(|(i, serial)| RevokedEntry {
            serial,
            revoked_at: now - time::Duration::seconds(i as i64),
            reason: reasons[i % reasons.len()],
        })
        .collect();
    let config = CrlConfig::default();
    // Warm-up (page faults, lazy initialisation), then the measured run.
    build_crl(
        &ca.signer,
        &config,
        1,
        now,
        &entries[..entries.len().min(1000)],
    )
    .context("signing a warm-up CRL")?;
    let start = Instant::now();
    let crl = build_crl(&ca.signer, &config, 2, now, &entries).context("signing the CRL")?;
    let elapsed = start.elapsed().as_secs_f64();
    if crl.der.is_empty() {
        bail!("the CRL is empty");
    }
    Ok(elapsed)
}

pub async fn run(settings: &Settings) -> anyhow::Result<Vec<Figure>> {
    let sizes = sizes(settings.quick);
    let ca = bootstrap_ca()?;
    let mut figures = Vec::new();
    for repeat in 1..=settings.repeats {
        step(format!("revocation: repeat {repeat}/{}", settings.repeats));
        let rate = ocsp_rate(&ca, &sizes).await?;
        step(format!("  OCSP: {rate:.0} responses/s"));
        figures.push(
            Figure::new(SCENARIO, "OCSP responses over HTTP (POST)", "responses/s")
                .target(">= 20000")
                .note(format!(
                    "{} keep-alive connections from the same process for {:?}; {} serials known, 10% revoked; ECDSA P-256 issuer; client shares the 2 cores",
                    sizes.connections, sizes.ocsp_duration, sizes.known_serials
                ))
                .sample(rate),
        );
        let entries = sizes.crl_entries;
        let seconds = tokio::task::block_in_place(|| crl_seconds(&ca, entries))?;
        step(format!(
            "  CRL of {entries} entries signed in {seconds:.3} s"
        ));
        figures.push(
            Figure::new(SCENARIO, format!("sign a CRL of {entries} entries"), "s")
                .target("< 2 (100,000 entries)")
                .note("build_crl: DER encoding and ECDSA P-256 signature")
                .sample(seconds),
        );
    }
    Ok(figures)
}
