//! Shared helpers of the integration tests: temporary directories, a CA, and the real
//! `openssl` command.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use certledger_ca::{
    Authority, AuthorityConfig, CertificateUrls, FileKeyStore, IssueRequest, IssuedCertificate,
    KeyStore,
};
use time::OffsetDateTime;

pub const CRL_URL: &str = "http://crl.certledger.test/intermediate.crl";
pub const OCSP_URL: &str = "http://ocsp.certledger.test";
pub const CA_ISSUERS_URL: &str = "http://ca.certledger.test/intermediate.der";

pub fn openssl() -> Command {
    Command::new("/usr/bin/openssl")
}

/// Runs openssl, panicking with its output if it fails.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run openssl");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run openssl")
}

pub fn config(dir: &Path) -> AuthorityConfig {
    let mut config = AuthorityConfig::new(dir.join("ca"));
    config.urls = CertificateUrls {
        crl_distribution_point: Some(CRL_URL.into()),
        ocsp: Some(OCSP_URL.into()),
        ca_issuers: Some(CA_ISSUERS_URL.into()),
    };
    config
}

pub fn keystore(dir: &Path) -> FileKeyStore {
    FileKeyStore::open(dir.join("keys"), None).expect("key store")
}

pub fn new_authority(dir: &Path, keys: &dyn KeyStore) -> Authority {
    Authority::open_or_create(&config(dir), keys, OffsetDateTime::now_utc()).expect("CA")
}

/// prepare + release with the intent as recorded.
pub fn issue(ca: &Authority, request: &IssueRequest, now: OffsetDateTime) -> IssuedCertificate {
    let pending = ca.prepare(request, now).expect("prepare");
    let recorded = pending.intent().clone();
    pending.release(&recorded).expect("release")
}

pub struct Files {
    pub root: PathBuf,
    pub intermediate: PathBuf,
    pub leaf: PathBuf,
}

/// Writes root.pem, intermediate.pem and leaf.pem (named with `tag`) into `dir`.
pub fn write_pems(dir: &Path, tag: &str, ca: &Authority, leaf: &IssuedCertificate) -> Files {
    let files = Files {
        root: dir.join(format!("{tag}-root.pem")),
        intermediate: dir.join(format!("{tag}-intermediate.pem")),
        leaf: dir.join(format!("{tag}-leaf.pem")),
    };
    std::fs::write(&files.root, &ca.root().pem).expect("write root");
    std::fs::write(&files.intermediate, &ca.intermediate().pem).expect("write intermediate");
    std::fs::write(&files.leaf, &leaf.pem).expect("write leaf");
    files
}

/// `openssl verify -CAfile root.pem -untrusted intermediate.pem leaf.pem` (optionally at a
/// given time and for the TLS server purpose).
pub fn openssl_verify(files: &Files, at: Option<OffsetDateTime>) -> Output {
    let mut cmd = openssl();
    cmd.arg("verify")
        .arg("-purpose")
        .arg("sslserver")
        .arg("-x509_strict")
        .arg("-CAfile")
        .arg(&files.root)
        .arg("-untrusted")
        .arg(&files.intermediate);
    if let Some(at) = at {
        cmd.arg("-attime").arg(at.unix_timestamp().to_string());
    }
    cmd.arg(&files.leaf);
    run(&mut cmd)
}

pub fn assert_verifies(files: &Files, at: Option<OffsetDateTime>) {
    let out = openssl_verify(files, at);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(": OK"),
        "openssl verify failed:\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn x509_text(path: &Path) -> String {
    run_ok(
        openssl()
            .arg("x509")
            .arg("-in")
            .arg(path)
            .arg("-text")
            .arg("-noout"),
    )
}
