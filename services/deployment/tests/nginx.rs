//! The nginx destination against a real nginx: deploy, redeploy, a broken reload, a failed
//! verification, removal. Every check of what is served is a real TLS handshake.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use certledger_deployment::{
    Bundle, DeployError, Destination, Evidence, NginxConfig, NginxDestination, Removed, Step,
    VerifyOptions, served_fingerprint,
};
use common::{Nginx, SNI, TestCa, openssl_served_fingerprint};

fn destination(nginx: &Nginx, reload_command: Vec<String>, deadline: Duration) -> NginxDestination {
    let mut config = NginxConfig::new(
        &nginx.cert_path,
        &nginx.key_path,
        reload_command,
        nginx.address(),
    );
    config.verify_server_name = Some(SNI.into());
    config.reload_timeout = Duration::from_secs(20);
    config.verify = VerifyOptions {
        deadline,
        ..VerifyOptions::default()
    };
    NginxDestination::new(config).expect("config")
}

async fn served(nginx: &Nginx) -> String {
    served_fingerprint(&nginx.address(), Some(SNI), Duration::from_secs(5))
        .await
        .expect("handshake")
}

/// One handshake sees `bundle` (with nginx's error log when it does not).
async fn assert_serves(nginx: &Nginx, bundle: &Bundle) {
    let fp = served(nginx).await;
    assert_eq!(
        fp,
        bundle.fingerprint(),
        "served {fp}, expected {} ({})\nerror.log:\n{}",
        bundle.fingerprint(),
        bundle.certificate_id(),
        nginx.read("error.log")
    );
}

/// The files on disk are `bundle`'s.
fn assert_files_hold(nginx: &Nginx, bundle: &Bundle) {
    let cert = std::fs::read_to_string(&nginx.cert_path).expect("read cert");
    assert_eq!(cert, bundle.full_chain_pem(), "certificate file");
    let key = std::fs::read_to_string(&nginx.key_path).expect("read key");
    assert_eq!(
        key,
        bundle.private_key().expect("key").expose_pem(),
        "key file"
    );
    let mode = std::fs::metadata(&nginx.key_path)
        .expect("key metadata")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "key file mode");
}

/// Neither the error's Display nor its Debug output holds any of the keys.
fn assert_no_key_in(err: &DeployError, bundles: &[&Bundle]) {
    let shown = format!("{err} {err:?}");
    for b in bundles {
        let pem = b.private_key().expect("key").expose_pem();
        for line in pem.lines().filter(|l| !l.starts_with("-----")) {
            assert!(
                !shown.contains(line),
                "the error shows key material: {shown}"
            );
        }
    }
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_a_then_b_and_the_server_serves_each() {
    let ca = TestCa::new();
    let boot = ca.bundle("boot", &[SNI], &[]);
    let a = ca.bundle("cert-a", &[SNI], &[]);
    let b = ca.bundle("cert-b", &[SNI], &[]);
    let nginx = Nginx::start(&boot).await;
    let dest = destination(&nginx, nginx.reload_command(), Duration::from_secs(15));

    let installed = dest.install(&a).await.expect("install A");
    assert_eq!(installed.verified_fingerprint, a.fingerprint());
    match &installed.evidence {
        Evidence::Handshake {
            address,
            server_name,
            attempts,
        } => {
            assert_eq!(address, &nginx.address());
            assert_eq!(server_name.as_deref(), Some(SNI));
            assert!(*attempts >= 1);
        }
        other => panic!("unexpected evidence {other:?}"),
    }
    assert_files_hold(&nginx, &a);
    assert_serves(&nginx, &a).await;
    // An independent client agrees.
    assert_eq!(
        openssl_served_fingerprint(&nginx.address(), SNI),
        a.fingerprint()
    );

    let installed = dest.install(&b).await.expect("install B");
    assert_eq!(installed.verified_fingerprint, b.fingerprint());
    assert_files_hold(&nginx, &b);
    assert_serves(&nginx, &b).await;
    assert_eq!(
        openssl_served_fingerprint(&nginx.address(), SNI),
        b.fingerprint()
    );

    // Re-installing what is already served is fine (idempotent).
    let again = dest.install(&b).await.expect("install B again");
    assert_eq!(again.verified_fingerprint, b.fingerprint());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_configuration_fails_the_reload_and_nginx_keeps_serving_the_old_certificate() {
    let ca = TestCa::new();
    let boot = ca.bundle("boot", &[SNI], &[]);
    let a = ca.bundle("cert-a", &[SNI], &[]);
    let b = ca.bundle("cert-b", &[SNI], &[]);
    let nginx = Nginx::start(&boot).await;
    let dest = destination(&nginx, nginx.reload_command(), Duration::from_secs(15));
    dest.install(&a).await.expect("install A");

    // Someone broke the server's configuration: it now references a file that is missing.
    let missing = nginx.dir.path().join("missing-dhparam.pem");
    nginx.write_config(&format!("ssl_dhparam {};", missing.display()));

    let err = dest.install(&b).await.expect_err("B must fail");
    assert_eq!(err.step, Step::Reload, "{err}");
    let observed = err.observed.clone().unwrap_or_default();
    assert!(
        observed.contains("missing-dhparam.pem"),
        "observed should be nginx's complaint: {observed:?}"
    );
    assert!(err.message.contains("restored"), "{}", err.message);
    // The reload after restoring fails as well (the configuration is still broken), and
    // the error says so.
    assert!(err.message.contains("failed too"), "{}", err.message);
    assert_no_key_in(&err, &[&a, &b]);

    assert_files_hold(&nginx, &a);
    assert_serves(&nginx, &a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_reload_command_restores_the_files_and_reloads_them() {
    let ca = TestCa::new();
    let boot = ca.bundle("boot", &[SNI], &[]);
    let a = ca.bundle("cert-a", &[SNI], &[]);
    let b = ca.bundle("cert-b", &[SNI], &[]);
    let nginx = Nginx::start(&boot).await;
    destination(&nginx, nginx.reload_command(), Duration::from_secs(15))
        .install(&a)
        .await
        .expect("install A");

    // A reload that refuses certificate B (like a server rejecting it) but reloads anything
    // else: the rollback's second reload succeeds.
    let b_line = b
        .certificate_pem()
        .lines()
        .find(|l| !l.starts_with("-----") && !a.full_chain_pem().contains(l))
        .expect("a line of B's base64 that A lacks")
        .to_string();
    let script = format!(
        "if grep -qF '{b_line}' '{cert}'; then echo 'certificate refused by policy' >&2; exit 7; fi; exec \"$@\"",
        cert = nginx.cert_path.display()
    );
    let mut reload = vec![
        "sh".to_string(),
        "-c".to_string(),
        script,
        "reload".to_string(),
    ];
    reload.extend(nginx.reload_command());
    let dest = destination(&nginx, reload, Duration::from_secs(15));

    let err = dest.install(&b).await.expect_err("B must fail");
    assert_eq!(err.step, Step::Reload);
    assert_eq!(
        err.observed.as_deref(),
        Some("certificate refused by policy")
    );
    assert!(err.message.contains("exit status: 7"), "{}", err.message);
    assert!(
        err.message
            .contains("previous files were restored and the command ran again"),
        "{}",
        err.message
    );
    assert_files_hold(&nginx, &a);
    assert_serves(&nginx, &a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_does_nothing_fails_verification_with_the_fingerprint_served() {
    let ca = TestCa::new();
    let boot = ca.bundle("boot", &[SNI], &[]);
    let a = ca.bundle("cert-a", &[SNI], &[]);
    let b = ca.bundle("cert-b", &[SNI], &[]);
    let nginx = Nginx::start(&boot).await;
    destination(&nginx, nginx.reload_command(), Duration::from_secs(15))
        .install(&a)
        .await
        .expect("install A");

    // `true` exits 0 but nginx never re-reads the files.
    let dest = destination(&nginx, vec!["true".into()], Duration::from_millis(1500));
    let err = dest.install(&b).await.expect_err("B must fail");
    assert_eq!(err.step, Step::Verify, "{err}");
    assert_eq!(err.observed.as_deref(), Some(a.fingerprint()));
    assert!(err.message.contains(a.fingerprint()), "{}", err.message);
    assert!(err.message.contains(b.fingerprint()), "{}", err.message);
    assert_no_key_in(&err, &[&a, &b]);

    assert_files_hold(&nginx, &a);
    assert_serves(&nginx, &a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_certificate_nginx_still_uses_is_refused_and_undone() {
    let ca = TestCa::new();
    let boot = ca.bundle("boot", &[SNI], &[]);
    let a = ca.bundle("cert-a", &[SNI], &[]);
    let b = ca.bundle("cert-b", &[SNI], &[]);
    let nginx = Nginx::start(&boot).await;
    let dest = destination(&nginx, nginx.reload_command(), Duration::from_secs(15));
    dest.install(&a).await.expect("install A");

    // B is not on the target: nothing to do.
    assert_eq!(
        dest.remove(&b).await.expect("remove B"),
        Removed::NotPresent
    );

    // A is, but nginx's configuration references its files: the reload fails and the files
    // are put back.
    let err = dest.remove(&a).await.expect_err("remove A");
    assert_eq!(err.step, Step::Reload, "{err}");
    assert_files_hold(&nginx, &a);
    assert_serves(&nginx, &a).await;
}
