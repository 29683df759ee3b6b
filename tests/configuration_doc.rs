//! docs/configuration.md documents every option of every binary (name, environment
//! variable, default), and the example files in deploy/config/ are valid for their
//! binary: every key known, every value of the right type and accepted by the binary's
//! own validation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use certledger_runtime::config::{
    Args, CHECK_CONFIG, CONFIG, ConfigError, Flag, Request, parse_request,
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// Every binary and its options.
fn binaries() -> Vec<(&'static str, Vec<Flag>)> {
    vec![
        ("certledger-order", certledger_order::config::FLAGS.to_vec()),
        (
            "certledger-issuance",
            certledger_issuance::config::FLAGS.to_vec(),
        ),
        (
            "certledger-deployment",
            certledger_deployment::config::FLAGS.to_vec(),
        ),
        (
            "certledger-revocation",
            certledger_revocation::config::FLAGS.to_vec(),
        ),
        (
            "certledger-projections",
            certledger_projections::config::FLAGS.to_vec(),
        ),
        ("certd", certledger_certd::flags()),
    ]
}

/// The `### <binary>` sections of the document.
fn sections(doc: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for part in doc.split("\n### ").skip(1) {
        let (title, body) = part.split_once('\n').unwrap_or((part, ""));
        let body = body.split("\n## ").next().unwrap_or_default();
        out.insert(title.trim().to_owned(), body.to_owned());
    }
    out
}

/// Problems with one binary's section: options missing or wrong, rows for options the
/// binary does not have.
fn check_section(binary: &str, flags: &[Flag], section: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let rows: Vec<&str> = section.lines().filter(|l| l.starts_with("| `--")).collect();
    for flag in flags {
        let start = format!("| `--{}` | `{}` |", flag.name, flag.env);
        let Some(row) = rows.iter().find(|r| r.starts_with(&start)) else {
            problems.push(format!(
                "{binary}: no row `{start} …` for --{} ({})",
                flag.name, flag.env
            ));
            continue;
        };
        let cells: Vec<&str> = row.split(" | ").collect();
        let default = cells.get(3).copied().unwrap_or_default();
        let expected = flag
            .default
            .map_or_else(|| "—".to_owned(), |d| format!("`{d}`"));
        if default != expected {
            problems.push(format!(
                "{binary}: --{} default documented as {default}, is {expected}",
                flag.name
            ));
        }
    }
    for row in rows {
        let name = row
            .trim_start_matches("| `--")
            .split('`')
            .next()
            .unwrap_or_default();
        if !flags.iter().any(|f| f.name == name) {
            problems.push(format!(
                "{binary}: documents --{name}, which it does not take"
            ));
        }
    }
    problems
}

#[test]
fn every_option_of_every_binary_is_documented() {
    let path = repo().join("docs/configuration.md");
    let doc = std::fs::read_to_string(&path).expect("docs/configuration.md");
    let sections = sections(&doc);
    let mut problems = Vec::new();
    for (binary, flags) in binaries() {
        match sections.get(binary) {
            Some(section) => problems.extend(check_section(binary, &flags, section)),
            None => problems.push(format!("no section `### {binary}`")),
        }
    }
    for generic in [CONFIG, CHECK_CONFIG] {
        if !doc.contains(&format!("`--{}", generic.name)) {
            problems.push(format!(
                "the generic option --{} is not documented",
                generic.name
            ));
        }
    }
    if !doc.contains(CONFIG.env) {
        problems.push(format!("{} is not documented", CONFIG.env));
    }
    assert!(
        problems.is_empty(),
        "{} is out of date:\n  {}",
        path.display(),
        problems.join("\n  ")
    );
}

#[test]
fn a_missing_option_is_noticed() {
    let flags = certledger_order::config::FLAGS;
    let doc = std::fs::read_to_string(repo().join("docs/configuration.md")).expect("doc");
    let section = sections(&doc)
        .remove("certledger-order")
        .expect("order section");
    assert!(check_section("certledger-order", flags, &section).is_empty());
    let without: String = section
        .lines()
        .filter(|l| !l.starts_with("| `--listen`"))
        .map(|l| format!("{l}\n"))
        .collect();
    let problems = check_section("certledger-order", flags, &without);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("--listen"), "{problems:?}");
    let extra = format!("{section}\n| `--nope` | `X` | string | — | gone |\n");
    assert_eq!(check_section("certledger-order", flags, &extra).len(), 1);
}

/// Parses deploy/config/`file` for `flags` as `<binary> --config FILE` would, with the
/// passwords the deployment gives in the environment and a readable KEK file.
fn example(file: &str, flags: &[Flag], kek_file: &Path) -> Result<Args, ConfigError> {
    let path = repo().join("deploy/config").join(file);
    let env: HashMap<&str, String> = HashMap::from([
        (
            "CERTLEDGER_DATABASE_URL",
            "postgres://certledger:change-me@db.internal:5432/certledger".to_owned(),
        ),
        ("CERTLEDGER_KEK_FILE", kek_file.display().to_string()),
    ]);
    let argv = vec!["--config".to_owned(), path.display().to_string()];
    match parse_request("test", "test", flags, argv, |k| env.get(k).cloned())? {
        Request::Run(args) => Ok(args),
        other => panic!("{file}: {other:?}"),
    }
}

/// Panics unless deploy/config/`file` parses and passes the binary's own validation.
fn valid<C>(
    file: &str,
    flags: &[Flag],
    kek_file: &Path,
    configure: impl FnOnce(&Args) -> Result<C, ConfigError>,
) {
    let checked = example(file, flags, kek_file).and_then(|args| configure(&args));
    if let Err(e) = checked {
        panic!("deploy/config/{file}: {e}");
    }
}

#[test]
fn the_example_files_are_valid() {
    let dir = std::env::temp_dir().join(format!("certledger-config-doc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let kek = dir.join("kek");
    std::fs::write(&kek, "00".repeat(32)).expect("kek");
    valid(
        "order.toml",
        certledger_order::config::FLAGS,
        &kek,
        certledger_order::config::OrderConfig::from_args,
    );
    valid(
        "issuance.toml",
        certledger_issuance::config::FLAGS,
        &kek,
        certledger_issuance::config::IssuanceConfig::from_args,
    );
    valid(
        "deployment.toml",
        certledger_deployment::config::FLAGS,
        &kek,
        certledger_deployment::config::DeploymentConfig::from_args,
    );
    valid(
        "revocation.toml",
        certledger_revocation::config::FLAGS,
        &kek,
        certledger_revocation::config::RevocationConfig::from_args,
    );
    valid(
        "projections.toml",
        certledger_projections::config::FLAGS,
        &kek,
        certledger_projections::config::ProjectionsConfig::from_args,
    );
    let certd = repo().join("deploy/config/certd.toml");
    let config = certledger_certd::configure(
        vec!["--config".to_owned(), certd.display().to_string()],
        |_| None,
    )
    .expect("certd.toml")
    .expect("not --help");
    assert!(config.embedded);
    // And a wrong key in a copy is refused.
    let bad = dir.join("bad.toml");
    let text = std::fs::read_to_string(repo().join("deploy/config/order.toml")).expect("order");
    std::fs::write(&bad, format!("{text}\nlisten-adress = \"x\"\n")).expect("bad.toml");
    let env = |_: &str| None;
    let e = parse_request(
        "test",
        "test",
        certledger_order::config::FLAGS,
        vec!["--config".to_owned(), bad.display().to_string()],
        env,
    )
    .expect_err("an unknown key");
    assert!(e.to_string().contains("listen-adress"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
