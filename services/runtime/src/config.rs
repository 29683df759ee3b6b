//! Command-line flags with environment fallbacks, for the service binaries.
//!
//! Each [`Flag`] is `--name value` (or `--name=value`) on the command line, or the
//! environment variable `env` (the command line wins), or its default. Every error names
//! the key both ways (`--listen (CERTLEDGER_LISTEN): …`) and never repeats the value of a
//! secret.

use std::collections::HashMap;
use std::fmt::Display;
use std::str::FromStr;

/// How a flag takes values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One value.
    Value,
    /// A switch: `--name` alone, or `--name=true|false`; env `1|0|true|false|yes|no`.
    Switch,
    /// Any number of values (`--name a --name b`; env comma-separated).
    Repeated,
}

/// One configuration key.
#[derive(Debug, Clone, Copy)]
pub struct Flag {
    /// Flag name without dashes, e.g. `listen`.
    pub name: &'static str,
    /// Environment variable, e.g. `CERTLEDGER_LISTEN`.
    pub env: &'static str,
    /// How it takes values.
    pub kind: Kind,
    /// The default, if any.
    pub default: Option<&'static str>,
    /// Whether the value is secret (never printed).
    pub secret: bool,
    /// One line of help.
    pub help: &'static str,
}

impl Flag {
    /// A single-valued flag.
    pub const fn value(name: &'static str, env: &'static str, help: &'static str) -> Self {
        Self {
            name,
            env,
            kind: Kind::Value,
            default: None,
            secret: false,
            help,
        }
    }

    /// A switch.
    pub const fn switch(name: &'static str, env: &'static str, help: &'static str) -> Self {
        Self {
            kind: Kind::Switch,
            ..Self::value(name, env, help)
        }
    }

    /// A repeated flag.
    pub const fn repeated(name: &'static str, env: &'static str, help: &'static str) -> Self {
        Self {
            kind: Kind::Repeated,
            ..Self::value(name, env, help)
        }
    }

    /// With a default.
    pub const fn default(self, value: &'static str) -> Self {
        Self {
            default: Some(value),
            ..self
        }
    }

    /// Marks the value secret.
    pub const fn secret(self) -> Self {
        Self {
            secret: true,
            ..self
        }
    }

    /// `--name (ENV)`, as errors name the key.
    pub fn key(&self) -> String {
        format!("--{} ({})", self.name, self.env)
    }
}

/// A configuration error naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// `--name (ENV)`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// The outcome of parsing.
#[derive(Debug)]
pub enum Parsed {
    /// `--help` was asked for: print this and exit 0.
    Help(String),
    /// The values.
    Args(Args),
}

/// Parsed configuration values.
#[derive(Debug, Clone)]
pub struct Args {
    flags: Vec<Flag>,
    values: HashMap<&'static str, Vec<String>>,
}

/// Usage text.
pub fn usage(program: &str, about: &str, flags: &[Flag]) -> String {
    let mut out = format!("{program}: {about}\n\nOptions (flag, or environment variable):\n");
    for f in flags {
        let arg = match f.kind {
            Kind::Switch => String::new(),
            Kind::Value => " <value>".into(),
            Kind::Repeated => " <value> (repeatable; env comma-separated)".into(),
        };
        out.push_str(&format!(
            "  --{}{arg}\n      {} [{}]",
            f.name, f.help, f.env
        ));
        if let Some(d) = f.default {
            out.push_str(&format!(" (default: {d})"));
        }
        out.push('\n');
    }
    out.push_str("  --help\n      print this help\n");
    out
}

/// Parses `argv` (without the program name) against `flags`, falling back to `env`.
pub fn parse(
    program: &str,
    about: &str,
    flags: &[Flag],
    argv: impl IntoIterator<Item = String>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Parsed, ConfigError> {
    let mut values: HashMap<&'static str, Vec<String>> = HashMap::new();
    let mut argv = argv.into_iter();
    while let Some(arg) = argv.next() {
        if arg == "--help" || arg == "-h" {
            return Ok(Parsed::Help(usage(program, about, flags)));
        }
        let Some(body) = arg.strip_prefix("--") else {
            return Err(ConfigError {
                key: arg.clone(),
                message: "unexpected argument; options start with -- (see --help)".into(),
            });
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (body, None),
        };
        let Some(flag) = flags.iter().find(|f| f.name == name) else {
            return Err(ConfigError {
                key: format!("--{name}"),
                message: "unknown option (see --help)".into(),
            });
        };
        let value = match (flag.kind, inline) {
            (_, Some(v)) => v,
            (Kind::Switch, None) => "true".to_owned(),
            (_, None) => argv.next().ok_or_else(|| ConfigError {
                key: flag.key(),
                message: "needs a value".into(),
            })?,
        };
        let entry = values.entry(flag.name).or_default();
        if flag.kind != Kind::Repeated {
            entry.clear();
        }
        entry.push(value);
    }
    for flag in flags {
        if values.contains_key(flag.name) {
            continue;
        }
        if let Some(v) = env(flag.env).filter(|v| !v.is_empty()) {
            let list = if flag.kind == Kind::Repeated {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            } else {
                vec![v]
            };
            values.insert(flag.name, list);
        } else if let Some(d) = flag.default {
            values.insert(flag.name, vec![d.to_owned()]);
        }
    }
    Ok(Parsed::Args(Args {
        flags: flags.to_vec(),
        values,
    }))
}

/// Parses the process's arguments and environment.
pub fn from_env(program: &str, about: &str, flags: &[Flag]) -> Result<Parsed, ConfigError> {
    parse(program, about, flags, std::env::args().skip(1), |k| {
        std::env::var(k).ok()
    })
}

/// The `main` of a service binary: parses flags and environment (`--help` prints the
/// usage), validates them with `configure` (a bad value exits 2 naming the key), starts
/// telemetry, then runs `run` (an error is logged and exits 1).
pub async fn service_main<C, Fut>(
    program: &str,
    about: &str,
    flags: &[Flag],
    configure: impl FnOnce(&Args) -> Result<C, ConfigError>,
    run: impl FnOnce(C) -> Fut,
) -> std::process::ExitCode
where
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    use std::process::ExitCode;
    let config = match from_env(program, about, flags) {
        Ok(Parsed::Help(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Args(args)) => configure(&args),
        Err(e) => Err(e),
    };
    let config = match config {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{program}: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    crate::telemetry::init();
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "{program} failed");
            eprintln!("{program}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

impl Args {
    fn flag(&self, name: &str) -> Flag {
        self.flags
            .iter()
            .find(|f| f.name == name)
            .copied()
            .unwrap_or(Flag::value("?", "?", ""))
    }

    /// The key of a flag as errors name it.
    pub fn key(&self, name: &str) -> String {
        self.flag(name).key()
    }

    /// An error about a flag.
    pub fn error(&self, name: &str, message: impl Display) -> ConfigError {
        ConfigError {
            key: self.key(name),
            message: message.to_string(),
        }
    }

    /// The value of a single-valued flag, if set.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .and_then(|v| v.last())
            .map(String::as_str)
    }

    /// The value of a required flag.
    pub fn required(&self, name: &str) -> Result<&str, ConfigError> {
        self.value(name)
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| self.error(name, "is required"))
    }

    /// Every value of a repeated flag.
    pub fn values(&self, name: &str) -> &[String] {
        self.values.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// A switch's value (false when unset).
    pub fn switch(&self, name: &str) -> Result<bool, ConfigError> {
        match self.value(name).map(str::to_ascii_lowercase).as_deref() {
            None => Ok(false),
            Some("1" | "true" | "yes" | "on") => Ok(true),
            Some("0" | "false" | "no" | "off" | "") => Ok(false),
            Some(_) => Err(self.error(name, "must be true or false")),
        }
    }

    /// A value parsed with `FromStr`, if set.
    pub fn parsed<T>(&self, name: &str) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        let Some(raw) = self.value(name) else {
            return Ok(None);
        };
        raw.trim().parse::<T>().map(Some).map_err(|e| {
            if self.flag(name).secret {
                self.error(name, "is not valid (value not shown: it is secret)")
            } else {
                self.error(name, format!("{raw:?} is not valid: {e}"))
            }
        })
    }

    /// A duration in the form `500ms`, `5s`, `2m`, `1h` (or plain seconds), if set.
    pub fn duration(&self, name: &str) -> Result<Option<std::time::Duration>, ConfigError> {
        let Some(raw) = self.value(name) else {
            return Ok(None);
        };
        parse_duration(raw).map(Some).ok_or_else(|| {
            self.error(
                name,
                format!("{raw:?} is not a duration such as 500ms, 5s, 2m or 1h"),
            )
        })
    }
}

/// Parses `500ms`, `5s`, `2m`, `1h` or a plain number of seconds.
pub fn parse_duration(raw: &str) -> Option<std::time::Duration> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let n: u64 = number.parse().ok()?;
    let ms = match unit {
        "ms" => n,
        "" | "s" => n.checked_mul(1000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        _ => return None,
    };
    Some(std::time::Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLAGS: &[Flag] = &[
        Flag::value("listen", "X_LISTEN", "address").default("127.0.0.1:0"),
        Flag::value("db", "X_DB", "database"),
        Flag::switch("fast", "X_FAST", "go fast"),
        Flag::repeated("resolve", "X_RESOLVE", "overrides"),
        Flag::value("kek", "X_KEK", "secret").secret(),
    ];

    fn run(argv: &[&str], env: &[(&str, &str)]) -> Result<Args, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        match parse(
            "x",
            "test",
            FLAGS,
            argv.iter().map(|s| (*s).to_owned()),
            |k| env.get(k).cloned(),
        )? {
            Parsed::Args(a) => Ok(a),
            Parsed::Help(_) => panic!("help"),
        }
    }

    #[test]
    fn flags_env_and_defaults() {
        let a = run(
            &[
                "--db",
                "sqlite::memory:",
                "--fast",
                "--resolve=a=1",
                "--resolve",
                "b=2",
            ],
            &[("X_LISTEN", "0.0.0.0:1")],
        )
        .unwrap();
        assert_eq!(a.value("db"), Some("sqlite::memory:"));
        assert_eq!(a.value("listen"), Some("0.0.0.0:1"));
        assert!(a.switch("fast").unwrap());
        assert_eq!(a.values("resolve"), ["a=1", "b=2"]);
        let a = run(&["--listen=1.2.3.4:5"], &[("X_RESOLVE", "c=3, d=4")]).unwrap();
        assert_eq!(a.value("listen"), Some("1.2.3.4:5"));
        assert_eq!(a.values("resolve"), ["c=3", "d=4"]);
        let e = a.required("db").unwrap_err();
        assert_eq!(e.to_string(), "--db (X_DB): is required");
    }

    #[test]
    fn errors_name_the_key_and_hide_secrets() {
        let e = run(&["--nope"], &[]).unwrap_err();
        assert_eq!(e.key, "--nope");
        let e = run(&["--db"], &[]).unwrap_err();
        assert!(e.to_string().contains("--db (X_DB)"));
        let a = run(&["--kek", "s3cret"], &[]).unwrap();
        let e = a.parsed::<u32>("kek").unwrap_err();
        assert!(!e.to_string().contains("s3cret"));
        let a = run(&["--listen", "nope"], &[]).unwrap();
        let e = a.parsed::<std::net::SocketAddr>("listen").unwrap_err();
        assert!(e.to_string().starts_with("--listen (X_LISTEN)"));
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("500ms"),
            Some(std::time::Duration::from_millis(500))
        );
        assert_eq!(parse_duration("5"), Some(std::time::Duration::from_secs(5)));
        assert_eq!(
            parse_duration("2m"),
            Some(std::time::Duration::from_secs(120))
        );
        assert_eq!(parse_duration("x"), None);
    }
}
