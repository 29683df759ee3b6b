//! Command-line flags with environment fallbacks and a TOML file, for the service binaries.
//!
//! Each [`Flag`] is `--name value` (or `--name=value`) on the command line, or the
//! environment variable `env`, or the key `name` of the TOML file given with
//! `--config FILE` (or [`CONFIG`]'s variable `CERTLEDGER_CONFIG`), or its default — in that
//! order of precedence. Every binary also takes `--check-config`: validate, print the
//! effective configuration (secrets hidden) and exit 0. Every error names the key
//! (`--listen (CERTLEDGER_LISTEN): …`, or `FILE: key: …` for the file) and never repeats
//! the value of a secret.

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
        if self.env.is_empty() {
            format!("--{}", self.name)
        } else {
            format!("--{} ({})", self.name, self.env)
        }
    }
}

/// The option every binary takes that names its TOML configuration file.
pub const CONFIG: Flag = Flag::value(
    "config",
    "CERTLEDGER_CONFIG",
    "TOML file of options, keyed by option name (listen = \"0.0.0.0:50051\", issuer = [\"a\", \"b\"]); the environment and the command line override it",
);

/// The switch every binary takes that validates the configuration, prints the effective
/// values (secrets hidden) and exits 0 (command line only).
pub const CHECK_CONFIG: Flag = Flag::switch(
    "check-config",
    "",
    "validate the configuration, print the effective values as TOML (secrets hidden) and exit",
);

/// A configuration error naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// `--name (ENV)`, or `FILE: name` for a problem in the configuration file.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// The outcome of parsing.
#[derive(Debug)]
pub enum Parsed {
    /// `--help` was asked for (or `--check-config`: the effective configuration): print
    /// this and exit 0.
    Help(String),
    /// The values.
    Args(Args),
}

/// What the command line asks for, before the binary validates the values.
#[derive(Debug)]
pub enum Request {
    /// `--help`: print this and exit 0.
    Help(String),
    /// `--check-config`: validate these, print [`Args::effective`] and exit 0.
    Check(Args),
    /// Run with these.
    Run(Args),
}

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The command line.
    CommandLine,
    /// The flag's environment variable.
    Environment,
    /// The `--config` file.
    File,
    /// The flag's default.
    Default,
}

impl Source {
    fn describe(self) -> &'static str {
        match self {
            Source::CommandLine => "command line",
            Source::Environment => "environment",
            Source::File => "file",
            Source::Default => "default",
        }
    }
}

/// Parsed configuration values.
#[derive(Debug, Clone)]
pub struct Args {
    flags: Vec<Flag>,
    values: HashMap<&'static str, Vec<String>>,
    sources: HashMap<&'static str, Source>,
    file: Option<String>,
}

/// Usage text.
pub fn usage(program: &str, about: &str, flags: &[Flag]) -> String {
    let mut out = format!("{program}: {about}\n\nOptions (flag, or environment variable):\n");
    for f in flags.iter().chain([&CONFIG, &CHECK_CONFIG]) {
        let arg = match f.kind {
            Kind::Switch => String::new(),
            Kind::Value => " <value>".into(),
            Kind::Repeated => " <value> (repeatable; env comma-separated)".into(),
        };
        out.push_str(&format!("  --{}{arg}\n      {}", f.name, f.help));
        if !f.env.is_empty() {
            out.push_str(&format!(" [{}]", f.env));
        }
        if let Some(d) = f.default {
            out.push_str(&format!(" (default: {d})"));
        }
        out.push('\n');
    }
    out.push_str("  --help\n      print this help\n");
    out.push_str(
        "\nPrecedence: command line, then environment, then the --config file, then the default.\n",
    );
    out
}

/// Parses `argv` (without the program name) against `flags`, falling back to `env`, then
/// to the `--config` file. `--check-config` yields [`Parsed::Help`] with the effective
/// configuration once the options parse; [`parse_request`] lets the binary validate the
/// values first.
pub fn parse(
    program: &str,
    about: &str,
    flags: &[Flag],
    argv: impl IntoIterator<Item = String>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Parsed, ConfigError> {
    Ok(match parse_request(program, about, flags, argv, env)? {
        Request::Help(text) => Parsed::Help(text),
        Request::Check(args) => Parsed::Help(format!(
            "# {program}: configuration parsed (option names, file and types checked)\n{}",
            args.effective()
        )),
        Request::Run(args) => Parsed::Args(args),
    })
}

/// Parses `argv` (without the program name) against `flags` with precedence command
/// line, `env`, the `--config` file (or `CERTLEDGER_CONFIG`), default.
pub fn parse_request(
    program: &str,
    about: &str,
    flags: &[Flag],
    argv: impl IntoIterator<Item = String>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Request, ConfigError> {
    let mut values: HashMap<&'static str, Vec<String>> = HashMap::new();
    let mut config_file = None;
    let mut check = false;
    let mut argv = argv.into_iter();
    while let Some(arg) = argv.next() {
        if arg == "--help" || arg == "-h" {
            return Ok(Request::Help(usage(program, about, flags)));
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
        let flag = flags
            .iter()
            .chain([&CONFIG, &CHECK_CONFIG])
            .find(|f| f.name == name)
            .ok_or_else(|| ConfigError {
                key: format!("--{name}"),
                message: format!("unknown option{} (see --help)", suggestion(name, flags)),
            })?;
        let value = match (flag.kind, inline) {
            (_, Some(v)) => v,
            (Kind::Switch, None) => "true".to_owned(),
            (_, None) => argv.next().ok_or_else(|| ConfigError {
                key: flag.key(),
                message: "needs a value".into(),
            })?,
        };
        if flag.name == CONFIG.name {
            config_file = Some(value);
            continue;
        }
        if flag.name == CHECK_CONFIG.name {
            check = parse_switch(&value).ok_or_else(|| ConfigError {
                key: CHECK_CONFIG.key(),
                message: "must be true or false".into(),
            })?;
            continue;
        }
        let entry = values.entry(flag.name).or_default();
        if flag.kind != Kind::Repeated {
            entry.clear();
        }
        entry.push(value);
    }
    let mut sources: HashMap<&'static str, Source> =
        values.keys().map(|k| (*k, Source::CommandLine)).collect();
    let config_file = config_file.or_else(|| env(CONFIG.env).filter(|v| !v.trim().is_empty()));
    let file_values = match &config_file {
        Some(path) => read_file(path, flags)?,
        None => HashMap::new(),
    };
    for flag in flags {
        if values.contains_key(flag.name) {
            continue;
        }
        let (list, source) = if let Some(v) = env(flag.env).filter(|v| !v.is_empty()) {
            let list = if flag.kind == Kind::Repeated {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            } else {
                vec![v]
            };
            (list, Source::Environment)
        } else if let Some(list) = file_values.get(flag.name) {
            (list.clone(), Source::File)
        } else if let Some(d) = flag.default {
            (vec![d.to_owned()], Source::Default)
        } else {
            continue;
        };
        values.insert(flag.name, list);
        sources.insert(flag.name, source);
    }
    let args = Args {
        flags: flags.to_vec(),
        values,
        sources,
        file: config_file,
    };
    Ok(if check {
        Request::Check(args)
    } else {
        Request::Run(args)
    })
}

/// Reads and checks the TOML file: every key an option of `flags`, every value of the
/// option's type. Empty strings count as unset, as in the environment.
fn read_file(
    path: &str,
    flags: &[Flag],
) -> Result<HashMap<&'static str, Vec<String>>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        key: CONFIG.key(),
        message: format!("cannot read {path}: {e}"),
    })?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError {
        key: CONFIG.key(),
        message: format!("{path} is not valid TOML: {}", e.to_string().trim_end()),
    })?;
    let mut out = HashMap::new();
    for (key, value) in &table {
        let problem = |message: String| ConfigError {
            key: format!("{path}: {key}"),
            message,
        };
        let Some(flag) = flags.iter().find(|f| f.name == key.as_str()) else {
            return Err(problem(if key == CONFIG.name || key == CHECK_CONFIG.name {
                "is a command-line option; it cannot be set in the file".to_owned()
            } else {
                format!("unknown key{} (see --help)", suggestion(key, flags))
            }));
        };
        let list = file_value(flag, value).map_err(problem)?;
        if !list.is_empty() || flag.kind == Kind::Repeated {
            out.insert(flag.name, list);
        }
    }
    Ok(out)
}

/// A file value as the strings the command line would have given.
fn file_value(flag: &Flag, value: &toml::Value) -> Result<Vec<String>, String> {
    use toml::Value as V;
    let scalar = |v: &V| match v {
        V::String(s) => Some(s.clone()),
        V::Integer(i) => Some(i.to_string()),
        V::Float(f) => Some(f.to_string()),
        V::Boolean(b) => Some(b.to_string()),
        V::Datetime(_) | V::Array(_) | V::Table(_) => None,
    };
    let not = |what: &str| {
        format!(
            "must be {what}, not {} {}",
            article(value),
            value.type_str()
        )
    };
    match (flag.kind, value) {
        (Kind::Switch, V::Boolean(b)) => Ok(vec![b.to_string()]),
        (Kind::Switch, _) => Err(not("true or false")),
        (Kind::Repeated, V::Array(items)) => {
            let mut list = Vec::new();
            for item in items {
                let s = scalar(item).ok_or_else(|| {
                    format!(
                        "must be an array of strings, but holds {} {}",
                        article(item),
                        item.type_str()
                    )
                })?;
                list.extend(non_empty(s));
            }
            Ok(list)
        }
        (Kind::Repeated, v) => scalar(v)
            .map(non_empty)
            .ok_or_else(|| not("an array of strings")),
        (Kind::Value, v) => scalar(v)
            .map(non_empty)
            .ok_or_else(|| not("a string, number or boolean")),
    }
}

/// `[s]`, or nothing for an empty string (unset, as in the environment).
fn non_empty(s: String) -> Vec<String> {
    if s.is_empty() { Vec::new() } else { vec![s] }
}

fn article(value: &toml::Value) -> &'static str {
    match value {
        toml::Value::Integer(_) | toml::Value::Array(_) => "an",
        _ => "a",
    }
}

/// `; did you mean `name`?` for the flag closest to `given`, if one is close.
fn suggestion(given: &str, flags: &[Flag]) -> String {
    let given = given.to_ascii_lowercase().replace('_', "-");
    flags
        .iter()
        .map(|f| (edit_distance(&given, f.name), f.name))
        .filter(|(d, name)| *d <= (name.len() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, name)| format!("; did you mean `{name}`?"))
        .unwrap_or_default()
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (row[j + 1] + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

fn parse_switch(raw: &str) -> Option<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

/// Hides the password of `scheme://user:password@host…` and of `password=…` parameters.
fn redact_passwords(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    // Each comma-separated part may be its own URL (a list of NATS servers).
    while !rest.is_empty() {
        let (part, tail) = match rest.find(',') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        out.push_str(&redact_url(part));
        let Some(tail) = tail.strip_prefix(',') else {
            break;
        };
        out.push(',');
        rest = tail;
    }
    out
}

fn redact_url(url: &str) -> String {
    let mut url = url.to_owned();
    if let Some(scheme_end) = url.find("://") {
        let authority_start = scheme_end + 3;
        let authority_end = url[authority_start..]
            .find(['/', '?'])
            .map_or(url.len(), |i| authority_start + i);
        if let Some(at) = url[authority_start..authority_end].rfind('@')
            && let Some(colon) = url[authority_start..authority_start + at].find(':')
        {
            url.replace_range(authority_start + colon + 1..authority_start + at, "***");
        }
    }
    if let Some(query) = url.find('?') {
        let (base, params) = url.split_at(query + 1);
        let params: Vec<String> = params
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => p.to_owned(),
            })
            .collect();
        url = format!("{base}{}", params.join("&"));
    }
    url
}

/// Parses the process's arguments and environment.
pub fn from_env(program: &str, about: &str, flags: &[Flag]) -> Result<Parsed, ConfigError> {
    parse(program, about, flags, std::env::args().skip(1), |k| {
        std::env::var(k).ok()
    })
}

/// The `main` of a service binary: parses flags, environment and the `--config` file
/// (`--help` prints the usage), validates them with `configure` (a bad value exits 2
/// naming the key; `--check-config` then prints the effective configuration and exits
/// 0), starts telemetry, then runs `run` (an error is logged and exits 1).
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
    let request = parse_request(program, about, flags, std::env::args().skip(1), |k| {
        std::env::var(k).ok()
    });
    let config = match request {
        Ok(Request::Help(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Ok(Request::Check(args)) => {
            return match configure(&args) {
                Ok(_) => {
                    print!("# {program}: configuration valid\n{}", args.effective());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{program}: configuration error: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Ok(Request::Run(args)) => configure(&args),
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

    /// The key of a flag as errors name it (with the file, when the value came from it).
    pub fn key(&self, name: &str) -> String {
        let key = self.flag(name).key();
        match (self.source(name), &self.file) {
            (Some(Source::File), Some(file)) => format!("{key}, set in {file}"),
            _ => key,
        }
    }

    /// Where a flag's value came from (`None`: unset).
    pub fn source(&self, name: &str) -> Option<Source> {
        self.sources.get(name).copied()
    }

    /// The `--config` file, if one was read.
    pub fn config_file(&self) -> Option<&str> {
        self.file.as_deref()
    }

    /// The effective configuration as a TOML file could give it, each value with where it
    /// came from; secret values and URL passwords are not shown.
    pub fn effective(&self) -> String {
        let mut out = String::new();
        if let Some(file) = &self.file {
            out.push_str(&format!("# configuration file: {file}\n"));
        }
        for flag in &self.flags {
            let Some(values) = self.values.get(flag.name) else {
                out.push_str(&format!("# {} is not set\n", flag.name));
                continue;
            };
            let source = self.source(flag.name).unwrap_or(Source::Default).describe();
            if flag.secret {
                out.push_str(&format!(
                    "# {} is set (secret, not shown) [{source}]\n",
                    flag.name
                ));
                continue;
            }
            let string = |v: &String| toml::Value::String(redact_passwords(v));
            let value = match flag.kind {
                Kind::Repeated => toml::Value::Array(values.iter().map(string).collect()),
                Kind::Switch => match values.last().and_then(|v| parse_switch(v)) {
                    Some(b) => toml::Value::Boolean(b),
                    None => values
                        .last()
                        .map(string)
                        .unwrap_or(toml::Value::Boolean(false)),
                },
                Kind::Value => values
                    .last()
                    .map(string)
                    .unwrap_or(toml::Value::String(String::new())),
            };
            out.push_str(&format!("{} = {value}  # {source}\n", flag.name));
        }
        out
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
        match self.value(name) {
            None => Ok(false),
            Some(raw) => parse_switch(raw).ok_or_else(|| self.error(name, "must be true or false")),
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

    /// A TOML file in the temporary directory, removed on drop.
    struct TempToml(std::path::PathBuf);

    impl TempToml {
        fn new(text: &str) -> Self {
            static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!(
                "certledger-config-test-{}-{n}.toml",
                std::process::id()
            ));
            std::fs::write(&path, text).unwrap();
            Self(path)
        }

        fn path(&self) -> String {
            self.0.display().to_string()
        }
    }

    impl Drop for TempToml {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn request(argv: &[&str], env: &[(&str, &str)]) -> Result<Request, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        parse_request(
            "x",
            "test",
            FLAGS,
            argv.iter().map(|s| (*s).to_owned()),
            |k| env.get(k).cloned(),
        )
    }

    #[test]
    fn precedence_command_line_environment_file_default() {
        let file = TempToml::new(
            "listen = \"10.0.0.1:1\"\ndb = \"sqlite:file.db\"\nresolve = [\"f=1\", \"g=2\"]\nfast = true\n",
        );
        let path = file.path();
        // The file beats the default.
        let a = run(&["--config", &path], &[]).unwrap();
        assert_eq!(a.value("listen"), Some("10.0.0.1:1"));
        assert_eq!(a.source("listen"), Some(Source::File));
        assert_eq!(a.values("resolve"), ["f=1", "g=2"]);
        assert!(a.switch("fast").unwrap());
        assert_eq!(a.config_file(), Some(path.as_str()));
        // The environment beats the file, the command line beats both.
        let a = run(
            &[&format!("--config={path}"), "--db", "sqlite:cli.db"],
            &[("X_LISTEN", "10.0.0.2:2"), ("X_DB", "sqlite:env.db")],
        )
        .unwrap();
        assert_eq!(a.value("listen"), Some("10.0.0.2:2"));
        assert_eq!(a.source("listen"), Some(Source::Environment));
        assert_eq!(a.value("db"), Some("sqlite:cli.db"));
        assert_eq!(a.source("db"), Some(Source::CommandLine));
        // Repeated values: the environment's list replaces the file's.
        let a = run(&["--config", &path], &[("X_RESOLVE", "e=5")]).unwrap();
        assert_eq!(a.values("resolve"), ["e=5"]);
        // An empty environment variable does not hide the file's value.
        let a = run(&["--config", &path], &[("X_LISTEN", "")]).unwrap();
        assert_eq!(a.value("listen"), Some("10.0.0.1:1"));
        // Without a file, the default.
        let a = run(&[], &[]).unwrap();
        assert_eq!(a.value("listen"), Some("127.0.0.1:0"));
        assert_eq!(a.source("listen"), Some(Source::Default));
        assert_eq!(a.source("db"), None);
    }

    #[test]
    fn the_file_can_come_from_the_environment() {
        let file = TempToml::new("db = \"sqlite:from-env-file.db\"\n");
        let a = run(&[], &[("CERTLEDGER_CONFIG", &file.path())]).unwrap();
        assert_eq!(a.value("db"), Some("sqlite:from-env-file.db"));
        // --config beats CERTLEDGER_CONFIG.
        let other = TempToml::new("db = \"sqlite:other.db\"\n");
        let a = run(
            &["--config", &other.path()],
            &[("CERTLEDGER_CONFIG", &file.path())],
        )
        .unwrap();
        assert_eq!(a.value("db"), Some("sqlite:other.db"));
    }

    #[test]
    fn file_values_of_every_type() {
        let file = TempToml::new(
            "listen = 8080\ndb = true\nresolve = \"only=1\"\nkek = 1.5\nfast = false\n",
        );
        let a = run(&["--config", &file.path()], &[]).unwrap();
        assert_eq!(a.value("listen"), Some("8080"));
        assert_eq!(a.value("db"), Some("true"));
        assert_eq!(a.values("resolve"), ["only=1"]);
        assert_eq!(a.value("kek"), Some("1.5"));
        assert!(!a.switch("fast").unwrap());
        let file = TempToml::new("resolve = [1, \"b=2\", \"\"]\ndb = \"\"\n");
        let a = run(&["--config", &file.path()], &[]).unwrap();
        assert_eq!(a.values("resolve"), ["1", "b=2"]);
        assert_eq!(a.value("db"), None, "an empty string is unset");
        let file = TempToml::new("resolve = []\n");
        let a = run(&["--config", &file.path()], &[]).unwrap();
        assert!(a.values("resolve").is_empty());
    }

    #[test]
    fn wrong_types_name_the_key_and_the_file() {
        for (text, key, message) in [
            (
                "listen = [\"a\"]",
                "listen",
                "must be a string, number or boolean, not an array",
            ),
            (
                "fast = \"yes\"",
                "fast",
                "must be true or false, not a string",
            ),
            ("fast = 1", "fast", "must be true or false, not an integer"),
            (
                "resolve = [[\"a\"]]",
                "resolve",
                "must be an array of strings, but holds an array",
            ),
            (
                "resolve = { a = 1 }",
                "resolve",
                "must be an array of strings, not a table",
            ),
            (
                "db = 1979-05-27",
                "db",
                "must be a string, number or boolean, not a datetime",
            ),
        ] {
            let file = TempToml::new(text);
            let e = run(&["--config", &file.path()], &[]).unwrap_err();
            assert_eq!(e.key, format!("{}: {key}", file.path()), "{text}");
            assert_eq!(e.message, message, "{text}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_files_are_errors() {
        let file = TempToml::new("listen = \"127.0.0.1:1\"\nlisten_adress = \"x\"\n");
        let e = run(&["--config", &file.path()], &[]).unwrap_err();
        assert_eq!(e.key, format!("{}: listen_adress", file.path()));
        assert!(e.message.starts_with("unknown key"), "{e}");
        let file = TempToml::new("Fast = true\n");
        let e = run(&["--config", &file.path()], &[]).unwrap_err();
        assert!(e.message.contains("did you mean `fast`?"), "{e}");
        let file = TempToml::new("resolv = [\"a\"]\n");
        let e = run(&["--config", &file.path()], &[]).unwrap_err();
        assert!(e.message.contains("did you mean `resolve`?"), "{e}");
        let file = TempToml::new("completely-unrelated = 1\n");
        let e = run(&["--config", &file.path()], &[]).unwrap_err();
        assert!(!e.message.contains("did you mean"), "{e}");
        let file = TempToml::new("config = \"other.toml\"\n");
        let e = run(&["--config", &file.path()], &[]).unwrap_err();
        assert!(e.message.contains("command-line option"), "{e}");
        // Not TOML, and no file at all.
        let file = TempToml::new("listen = \n");
        let e = run(&["--config", &file.path()], &[]).unwrap_err();
        assert_eq!(e.key, "--config (CERTLEDGER_CONFIG)");
        assert!(e.message.contains("is not valid TOML"), "{e}");
        assert!(e.message.contains("line 1"), "{e}");
        let e = run(&["--config", "/nonexistent/certledger.toml"], &[]).unwrap_err();
        assert!(
            e.message
                .starts_with("cannot read /nonexistent/certledger.toml"),
            "{e}"
        );
        // Unknown command-line options get a suggestion too.
        let e = run(&["--lisen", "x"], &[]).unwrap_err();
        assert!(e.message.contains("did you mean `listen`?"), "{e}");
    }

    #[test]
    fn values_from_the_file_are_named_in_later_errors() {
        let file = TempToml::new("listen = \"nope\"\n");
        let a = run(&["--config", &file.path()], &[]).unwrap();
        let e = a.parsed::<std::net::SocketAddr>("listen").unwrap_err();
        assert!(
            e.key
                .starts_with(&format!("--listen (X_LISTEN), set in {}", file.path())),
            "{e}"
        );
        let a = run(&["--config", &file.path(), "--listen", "nope"], &[]).unwrap();
        assert_eq!(a.key("listen"), "--listen (X_LISTEN)");
    }

    #[test]
    fn check_config_prints_the_effective_configuration_without_secrets() {
        let file = TempToml::new(
            "kek = \"s3cret-kek\"\nresolve = [\"a=1\"]\nfast = true\n\
             db = \"postgres://user:hunter2@db:5432/x?sslmode=require&password=hunter3\"\n",
        );
        let Request::Check(args) =
            request(&["--config", &file.path(), "--check-config"], &[]).unwrap()
        else {
            panic!("not a check");
        };
        let text = args.effective();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(!text.contains("hunter"), "{text}");
        assert!(
            text.contains("# kek is set (secret, not shown) [file]"),
            "{text}"
        );
        assert!(
            text.contains("db = \"postgres://user:***@db:5432/x?sslmode=require&password=***\""),
            "{text}"
        );
        assert!(
            text.contains("listen = \"127.0.0.1:0\"  # default"),
            "{text}"
        );
        assert!(text.contains("resolve = [\"a=1\"]  # file"), "{text}");
        assert!(text.contains("fast = true  # file"), "{text}");
        // The printed configuration, secrets aside, is itself a valid file.
        let reread = TempToml::new(&text);
        let again = run(&["--config", &reread.path()], &[]).unwrap();
        assert_eq!(again.values("resolve"), ["a=1"]);
        assert_eq!(again.value("kek"), None);
        // `parse` (without the binary's own checks) answers with the same text.
        match parse("x", "test", FLAGS, ["--check-config".to_owned()], |_| None).unwrap() {
            Parsed::Help(text) => assert!(text.contains("listen = \"127.0.0.1:0\""), "{text}"),
            Parsed::Args(_) => panic!("--check-config ran"),
        }
        // Without --check-config it runs.
        assert!(matches!(request(&[], &[]).unwrap(), Request::Run(_)));
    }

    #[test]
    fn passwords_in_urls_are_redacted() {
        assert_eq!(
            redact_passwords("nats://svc:pw@n1:4222,nats://svc:pw@n2:4222"),
            "nats://svc:***@n1:4222,nats://svc:***@n2:4222"
        );
        assert_eq!(
            redact_passwords("postgres://user@db/x"),
            "postgres://user@db/x"
        );
        assert_eq!(redact_passwords("sqlite:data/log.db"), "sqlite:data/log.db");
        assert_eq!(redact_passwords("127.0.0.1:80"), "127.0.0.1:80");
    }

    #[test]
    fn usage_lists_the_generic_options() {
        let text = usage("x", "test", FLAGS);
        assert!(text.contains("--config <value>"), "{text}");
        assert!(text.contains("[CERTLEDGER_CONFIG]"), "{text}");
        assert!(text.contains("--check-config\n"), "{text}");
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
