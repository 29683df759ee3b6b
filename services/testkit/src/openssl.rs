//! The `openssl` command, to check what the CA signs with a tool that is not ours.

use anyhow::{Context, bail};
use std::path::Path;
use std::process::Command;

/// Runs `openssl args…` in `dir`; its stdout, or an error with its output.
pub fn run(args: &[&str], dir: &Path) -> anyhow::Result<String> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("running openssl (apt-get install openssl)")?;
    if !out.status.success() {
        bail!(
            "openssl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A CSR made by `openssl req` with `newkey` (`ec` for P-256, or e.g. `rsa:2048`) for
/// `names` (the first is the CN); the key is left in `dir/csr.key`.
pub fn csr(dir: &Path, newkey: &str, names: &[&str]) -> anyhow::Result<String> {
    let first = names.first().context("a CSR needs at least one name")?;
    let san = names
        .iter()
        .map(|n| format!("DNS:{n}"))
        .collect::<Vec<_>>()
        .join(",");
    let subject = format!("/CN={first}");
    let san = format!("subjectAltName={san}");
    let mut args = vec!["req", "-new", "-nodes", "-newkey", newkey];
    if newkey == "ec" {
        args.extend(["-pkeyopt", "ec_paramgen_curve:prime256v1"]);
    }
    args.extend(["-keyout", "csr.key", "-out", "csr.pem", "-subj", &subject]);
    args.extend(["-addext", &san]);
    run(&args, dir)?;
    std::fs::read_to_string(dir.join("csr.pem")).context("reading csr.pem")
}

/// Verifies `leaf_pem` against root and intermediate with `openssl verify -purpose
/// sslserver`, and returns `openssl x509 -text` of it.
pub fn verify_leaf(
    dir: &Path,
    root_pem: &str,
    intermediate_pem: &str,
    leaf_pem: &str,
) -> anyhow::Result<String> {
    std::fs::write(dir.join("root.pem"), root_pem)?;
    std::fs::write(dir.join("intermediate.pem"), intermediate_pem)?;
    std::fs::write(dir.join("leaf.pem"), leaf_pem)?;
    let verified = run(
        &[
            "verify",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "intermediate.pem",
            "-purpose",
            "sslserver",
            "leaf.pem",
        ],
        dir,
    )?;
    if !verified.contains("leaf.pem: OK") {
        bail!("openssl verify: {verified}");
    }
    run(&["x509", "-in", "leaf.pem", "-noout", "-text"], dir)
}
