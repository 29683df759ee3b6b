//! The file destination: contents, modes, the command, rollback, removal.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use certledger_deployment::{
    Bundle, Destination, Evidence, FileDestination, FileTargetConfig, Removed, Step,
};
use common::TestCa;

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn bundle(ca: &TestCa, id: &str) -> Bundle {
    ca.bundle(id, &["files.example.test"], &[])
}

#[tokio::test]
async fn writes_certificate_chain_and_key_then_runs_the_command() {
    let ca = TestCa::new();
    let a = bundle(&ca, "cert-a");
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("cert.pem");
    let chain = dir.path().join("chain.pem");
    let key = dir.path().join("key.pem");
    let marker = dir.path().join("command-ran");

    let mut config = FileTargetConfig::new(&cert, &key);
    config.chain_path = Some(chain.clone());
    // The command sees the new files in place.
    config.command = Some(vec![
        "sh".into(),
        "-c".into(),
        "cat \"$1\" > \"$2\"".into(),
        "post-install".into(),
        cert.display().to_string(),
        marker.display().to_string(),
    ]);
    config.command_timeout = Duration::from_secs(10);
    let dest = FileDestination::new(config).expect("config");

    let installed = dest.install(&a).await.expect("install");
    assert_eq!(installed.verified_fingerprint, a.fingerprint());
    assert_eq!(
        installed.evidence,
        Evidence::FilesWritten { command_ran: true }
    );
    assert_eq!(read(&cert), a.certificate_pem());
    assert_eq!(read(&chain), a.chain_pem());
    assert_eq!(read(&key), a.private_key().expect("key").expose_pem());
    assert_eq!(read(&marker), a.certificate_pem());
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&cert), 0o644);
    assert_eq!(mode(&chain), 0o644);
    // Nothing but the three files and the marker: no temporary files left.
    assert_eq!(fs::read_dir(dir.path()).expect("dir").count(), 4);
}

#[tokio::test]
async fn without_a_chain_file_the_certificate_file_holds_the_full_chain() {
    let ca = TestCa::new();
    let a = bundle(&ca, "cert-a");
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("fullchain.pem");
    let key = dir.path().join("privkey.pem");
    let dest = FileDestination::new(FileTargetConfig::new(&cert, &key)).expect("config");

    let installed = dest.install(&a).await.expect("install");
    assert_eq!(
        installed.evidence,
        Evidence::FilesWritten { command_ran: false }
    );
    assert_eq!(read(&cert), a.full_chain_pem());
    assert!(a.chain_len() >= 1);
    assert_eq!(read(&key), a.private_key().expect("key").expose_pem());
    assert_eq!(mode(&key), 0o600);
}

#[tokio::test]
async fn a_failing_command_restores_the_previous_files() {
    let ca = TestCa::new();
    let a = bundle(&ca, "cert-a");
    let b = bundle(&ca, "cert-b");
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("cert.pem");
    let chain = dir.path().join("chain.pem");
    let key = dir.path().join("key.pem");
    let flag = dir.path().join("refuse");

    let mut config = FileTargetConfig::new(&cert, &key);
    config.chain_path = Some(chain.clone());
    config.command = Some(vec![
        "sh".into(),
        "-c".into(),
        "if [ -e \"$1\" ]; then echo 'service refused the certificate' >&2; exit 4; fi".into(),
        "post-install".into(),
        flag.display().to_string(),
    ]);
    let dest = FileDestination::new(config).expect("config");
    dest.install(&a).await.expect("install A");

    fs::write(&flag, b"").expect("flag");
    let err = dest.install(&b).await.expect_err("B must fail");
    assert_eq!(err.step, Step::Reload);
    assert_eq!(
        err.observed.as_deref(),
        Some("service refused the certificate")
    );
    assert!(err.message.contains("restored"), "{}", err.message);
    assert_eq!(read(&cert), a.certificate_pem());
    assert_eq!(read(&chain), a.chain_pem());
    assert_eq!(read(&key), a.private_key().expect("key").expose_pem());
    assert_eq!(mode(&key), 0o600);
}

#[tokio::test]
async fn a_missing_directory_fails_the_write_step_and_leaves_nothing_behind() {
    let ca = TestCa::new();
    let a = bundle(&ca, "cert-a");
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("no-such-dir").join("key.pem");
    let dest = FileDestination::new(FileTargetConfig::new(&cert, &key)).expect("config");
    let err = dest.install(&a).await.expect_err("must fail");
    assert_eq!(err.step, Step::Write);
    assert!(err.message.contains("no-such-dir"), "{}", err.message);
    assert!(
        !cert.exists(),
        "the certificate written first is rolled back"
    );
    assert_eq!(fs::read_dir(dir.path()).expect("dir").count(), 0);
}

#[tokio::test]
async fn removal_only_touches_files_holding_the_certificate() {
    let ca = TestCa::new();
    let a = bundle(&ca, "cert-a");
    let b = bundle(&ca, "cert-b");
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("cert.pem");
    let chain = dir.path().join("chain.pem");
    let key = dir.path().join("key.pem");
    let mut config = FileTargetConfig::new(&cert, &key);
    config.chain_path = Some(chain.clone());
    let dest = FileDestination::new(config).expect("config");
    dest.install(&a).await.expect("install A");

    assert_eq!(
        dest.remove(&b).await.expect("remove B"),
        Removed::NotPresent
    );
    assert_eq!(read(&cert), a.certificate_pem());

    assert_eq!(dest.remove(&a).await.expect("remove A"), Removed::Removed);
    assert!(!cert.exists() && !key.exists() && !chain.exists());
    assert_eq!(dest.remove(&a).await.expect("again"), Removed::NotPresent);
}

#[tokio::test]
async fn a_bundle_without_key_leaves_the_key_file_alone() {
    let ca = TestCa::new();
    let a = bundle(&ca, "cert-a");
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    fs::write(&key, "the customer's own key").expect("key");
    let without_key =
        Bundle::new("cert-a", a.certificate_pem(), a.chain_pem(), None).expect("bundle");
    let dest = FileDestination::new(FileTargetConfig::new(&cert, &key)).expect("config");
    dest.install(&without_key).await.expect("install");
    assert_eq!(read(&cert), a.full_chain_pem());
    assert_eq!(read(&key), "the customer's own key");
}

#[test]
fn settings_are_checked() {
    let same = FileTargetConfig::new("/etc/ssl/x.pem", "/etc/ssl/x.pem");
    let err = FileDestination::new(same).expect_err("same path");
    assert_eq!(err.field, "key_path");
    let mut empty_command = FileTargetConfig::new("/etc/ssl/c.pem", "/etc/ssl/k.pem");
    empty_command.command = Some(vec![]);
    assert_eq!(
        FileDestination::new(empty_command)
            .expect_err("empty command")
            .field,
        "command"
    );
}
