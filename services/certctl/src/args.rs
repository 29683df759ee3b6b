//! A small command-line parser: `--name value`, `--name=value`, switches, positionals;
//! every option must be used by the command (`finish` names the ones that were not).

use std::collections::VecDeque;
use std::str::FromStr;

/// Options that take no value.
const SWITCHES: &[&str] = &[
    "json",
    "auto-renew",
    "wait",
    "quiet",
    "include-private-key",
    "help",
];

/// A usage error (exit 2).
#[derive(Debug)]
pub struct UsageError(pub String);

#[derive(Debug)]
struct Opt {
    name: String,
    value: Option<String>,
    used: bool,
}

/// The parsed command line.
#[derive(Debug)]
pub struct Args {
    options: Vec<Opt>,
    positionals: VecDeque<String>,
}

impl Args {
    /// Splits `argv` into options and positionals.
    pub fn parse(argv: Vec<String>) -> Result<Self, UsageError> {
        let mut options = Vec::new();
        let mut positionals = VecDeque::new();
        let mut argv = argv.into_iter();
        while let Some(arg) = argv.next() {
            if arg == "-h" {
                options.push(Opt {
                    name: "help".into(),
                    value: None,
                    used: false,
                });
                continue;
            }
            let Some(body) = arg.strip_prefix("--") else {
                positionals.push_back(arg);
                continue;
            };
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
                None if SWITCHES.contains(&body) => (body.to_owned(), None),
                None => {
                    let value = argv
                        .next()
                        .ok_or_else(|| UsageError(format!("--{body} needs a value")))?;
                    (body.to_owned(), Some(value))
                }
            };
            options.push(Opt {
                name,
                value,
                used: false,
            });
        }
        Ok(Self {
            options,
            positionals,
        })
    }

    /// Whether the switch is on (`--name`, `--name=true`).
    pub fn switch(&mut self, name: &str) -> bool {
        let mut on = false;
        for opt in self.options.iter_mut().filter(|o| o.name == name) {
            opt.used = true;
            on = !matches!(
                opt.value.as_deref().map(str::to_ascii_lowercase).as_deref(),
                Some("false" | "0" | "no" | "off")
            );
        }
        on
    }

    /// Every value of a repeatable option.
    pub fn values(&mut self, name: &str) -> Result<Vec<String>, UsageError> {
        let mut out = Vec::new();
        for opt in self.options.iter_mut().filter(|o| o.name == name) {
            opt.used = true;
            match &opt.value {
                Some(v) => out.push(v.clone()),
                None => return Err(UsageError(format!("--{name} needs a value"))),
            }
        }
        Ok(out)
    }

    /// The (last) value of an option.
    pub fn value(&mut self, name: &str) -> Result<Option<String>, UsageError> {
        Ok(self.values(name)?.pop())
    }

    /// The values of an option without using it up.
    pub fn peek_values(&self, name: &str) -> Vec<String> {
        self.options
            .iter()
            .filter(|o| o.name == name)
            .filter_map(|o| o.value.clone())
            .collect()
    }

    /// The last value of an option without using it up.
    pub fn peek_value(&self, name: &str) -> Option<String> {
        self.peek_values(name).pop()
    }

    /// A value parsed with `FromStr`.
    pub fn parsed<T>(&mut self, name: &str) -> Result<Option<T>, UsageError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        match self.value(name)? {
            None => Ok(None),
            Some(raw) => raw
                .trim()
                .parse::<T>()
                .map(Some)
                .map_err(|e| UsageError(format!("--{name} {raw:?}: {e}"))),
        }
    }

    /// The next positional argument.
    pub fn next_positional(&mut self) -> Option<String> {
        self.positionals.pop_front()
    }

    /// The next positional argument, which must be there.
    pub fn required_positional(&mut self, what: &str) -> Result<String, UsageError> {
        self.next_positional()
            .ok_or_else(|| UsageError(format!("missing the {what}")))
    }

    /// Fails on options the command did not use and extra positionals.
    pub fn finish(&self) -> Result<(), UsageError> {
        if let Some(opt) = self.options.iter().find(|o| !o.used) {
            return Err(UsageError(format!(
                "--{} is not an option of this command",
                opt.name
            )));
        }
        if let Some(extra) = self.positionals.front() {
            return Err(UsageError(format!("unexpected argument {extra:?}")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Args {
        Args::parse(line.split_whitespace().map(str::to_owned).collect()).unwrap()
    }

    #[test]
    fn options_switches_and_positionals() {
        let mut a = args("--json order --domain a.test --domain=b.test --wait --validity-days 30");
        assert!(a.switch("json"));
        assert_eq!(a.next_positional().as_deref(), Some("order"));
        assert_eq!(a.values("domain").unwrap(), ["a.test", "b.test"]);
        assert!(a.switch("wait"));
        assert_eq!(a.parsed::<u32>("validity-days").unwrap(), Some(30));
        assert!(a.finish().is_ok());
    }

    #[test]
    fn unused_options_and_extra_arguments_are_errors() {
        let mut a = args("get x --nope 1");
        a.next_positional();
        a.next_positional();
        assert!(a.finish().unwrap_err().0.contains("--nope"));
        let mut a = args("get x y");
        a.next_positional();
        a.next_positional();
        assert!(a.finish().unwrap_err().0.contains("\"y\""));
        assert!(Args::parse(vec!["--domain".into()]).is_err());
    }
}
