//! Benchmark harness: signs a CRL with 100,000 entries (or the number given as the first
//! argument) with a freshly bootstrapped CA and reports how long it took.
//!
//! ```text
//! cargo run --release -p certledger-revocation --example crl_100k [ENTRIES] [OUT.crl]
//! ```
//!
//! With OUT.crl the DER CRL is written there (for `openssl crl -inform DER -noout -text`).

use std::time::Instant;

use certledger_ca::{Authority, AuthorityConfig, MemoryKeyStore, SerialNumber, SerialPrefix};
use certledger_revocation::{CrlConfig, IssuerSigner, RevocationReason, RevokedEntry, build_crl};
use time::{Duration, OffsetDateTime};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let count: usize = match args.next() {
        Some(n) => n.parse()?,
        None => 100_000,
    };
    let out = args.next();

    let dir = tempfile::tempdir()?;
    let keys = MemoryKeyStore::new();
    let now = OffsetDateTime::now_utc();
    let authority = Authority::open_or_create(&AuthorityConfig::new(dir.path()), &keys, now)?;
    let signer = IssuerSigner::from_authority(&authority, &keys)?;

    let reasons = [
        RevocationReason::Unspecified,
        RevocationReason::KeyCompromise,
        RevocationReason::Superseded,
        RevocationReason::CessationOfOperation,
    ];
    let entries: Vec<RevokedEntry> = (0..count)
        .map(|i| {
            Ok(RevokedEntry {
                serial: SerialNumber::generate(SerialPrefix::DEFAULT)?,
                revoked_at: now - Duration::seconds(i as i64),
                reason: reasons[i % reasons.len()],
            })
        })
        .collect::<Result<_, certledger_ca::SerialError>>()?;

    let config = CrlConfig::default();
    // Warm-up (page faults, lazy init), then the measured runs.
    build_crl(
        &signer,
        &config,
        1,
        now,
        &entries[..entries.len().min(1000)],
    )?;
    let mut timings = Vec::new();
    let mut last = None;
    for run in 0..5u64 {
        let start = Instant::now();
        let crl = build_crl(&signer, &config, 2 + run, now, &entries)?;
        timings.push(start.elapsed());
        last = Some(crl);
    }
    timings.sort();
    let crl = last.ok_or("no run")?;
    println!(
        "CRL with {count} entries: {} bytes DER; build_crl min {:?}, median {:?}, max {:?} (5 runs)",
        crl.der.len(),
        timings[0],
        timings[timings.len() / 2],
        timings[timings.len() - 1]
    );
    if let Some(path) = out {
        std::fs::write(&path, &crl.der)?;
        std::fs::write(format!("{path}.issuer.pem"), authority.chain_pem())?;
        println!("wrote {path} and {path}.issuer.pem");
    }
    Ok(())
}
