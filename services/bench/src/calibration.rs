//! How fast this machine is at what the scenarios are made of, measured at the start of
//! every run and written into the report beside the figures: the same code has measured
//! 2.3 times slower from one session's machine to the next (BENCHMARKS.md), and these
//! say which kind of work a slower machine is slower at.
//!
//! * a system call (a one-byte `write` to `/dev/null`);
//! * a round trip over loopback TCP between two threads, as every call to PostgreSQL,
//!   NATS and the gRPC services is (two system calls and a wake-up on each side);
//! * P-256 signatures on one core (the issue quotes "over 30,000/s" for its machine).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use serde_json::{Value, json};

/// How long each measurement runs.
const SPAN: Duration = Duration::from_millis(300);

/// The calibration figures (a figure that could not be measured is `null`).
pub fn measure() -> Value {
    json!({
        "syscall_ns": syscall_ns(),
        "loopback_round_trip_us": loopback_round_trip_us().ok(),
        "p256_signatures_per_s_one_core": p256_signatures_per_s(),
    })
}

/// Runs `op` for about [`SPAN`]; how many times and how long it took.
fn repeat(mut op: impl FnMut() -> bool) -> Option<(u64, Duration)> {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < SPAN {
        for _ in 0..64 {
            if !op() {
                return None;
            }
        }
        n += 64;
    }
    Some((n, start.elapsed()))
}

fn syscall_ns() -> Option<f64> {
    let mut null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .ok()?;
    let (n, took) = repeat(|| null.write(&[0]).is_ok())?;
    Some((took.as_nanos() as f64 / n as f64).round())
}

fn loopback_round_trip_us() -> std::io::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut peer, _) = listener.accept()?;
        peer.set_nodelay(true)?;
        let mut byte = [0u8];
        while peer.read(&mut byte)? == 1 {
            peer.write_all(&byte)?;
        }
        Ok(())
    });
    let mut client = TcpStream::connect(addr)?;
    client.set_nodelay(true)?;
    let mut byte = [0u8];
    let measured =
        repeat(|| client.write_all(&[1]).is_ok() && matches!(client.read(&mut byte), Ok(1)));
    drop(client);
    let _ = echo.join();
    let (n, took) = measured.ok_or_else(|| std::io::Error::other("the echo stopped"))?;
    Ok((took.as_nanos() as f64 / n as f64 / 10.0).round() / 100.0)
}

fn p256_signatures_per_s() -> Option<f64> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).ok()?;
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).ok()?;
    let message = [7u8; 200];
    let (n, took) = repeat(|| key.sign(&rng, &message).is_ok())?;
    Some((n as f64 / took.as_secs_f64()).round())
}

#[test]
fn every_calibration_figure_is_measured() {
    let figures = measure();
    for name in [
        "syscall_ns",
        "loopback_round_trip_us",
        "p256_signatures_per_s_one_core",
    ] {
        assert!(
            figures[name].as_f64().is_some_and(|v| v > 0.0),
            "{name}: {}",
            figures[name]
        );
    }
}
