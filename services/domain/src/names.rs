//! The names a certificate carries: DNS names and IP addresses, checked and normalised.
//!
//! DNS names follow RFC 1035 host syntax (letters, digits, hyphens; labels of at most 63
//! octets; at most 253 octets in all) and RFC 5890/UTS #46 for internationalised names,
//! which are converted to their A-label (`xn--…`) form. Everything is lower-cased and a
//! single trailing root dot is dropped. A wildcard is allowed only as the whole leftmost
//! label of a name with at least two further labels (`*.example.com`).
//!
//! [`validate_names`] then applies the specification's domain slots and validation
//! method to the whole list.

use std::collections::HashMap;
use std::net::IpAddr;

use certledger_proto::common::v1::{
    CertificateSpec, DomainSlotKind, KeyAlgorithm, Subject, ValidationMethod,
};
use idna::AsciiDenyList;
use idna::uts46::{DnsLength, Hyphens, Uts46};

use crate::certificate::{Application, KeySource};
use crate::error::DomainError;
use crate::validate::{self, clip};

/// Longest DNS name, in octets of its A-label form without the trailing dot.
pub const MAX_NAME_LEN: usize = 253;
/// Longest DNS label, in octets of its A-label form.
pub const MAX_LABEL_LEN: usize = 63;
/// The most names (DNS names and IP addresses) a MULTI certificate may be ordered with.
pub const MAX_MULTI_NAMES: u32 = 100;

/// The prefix of a wildcard name.
const WILDCARD_PREFIX: &str = "*.";

/// Whether a (normalised) name is a wildcard name such as `*.example.com`.
pub fn is_wildcard(name: &str) -> bool {
    name.starts_with(WILDCARD_PREFIX)
}

/// The name a wildcard covers, e.g. `example.com` for `*.example.com`; `None` for a name
/// that is not a wildcard.
pub fn wildcard_base(name: &str) -> Option<&str> {
    name.strip_prefix(WILDCARD_PREFIX)
}

/// Checks one DNS name and returns its normalised form: A-labels, lower case, no
/// trailing dot. A leading `*.` wildcard label is accepted here; whether the
/// certificate may carry one is [`validate_names`]' business. `field` names the input in
/// the error.
pub fn normalize_domain(field: &str, input: &str) -> Result<String, DomainError> {
    let bad = |message: String| DomainError::invalid(field, message);
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(bad(
            "is empty; give a domain name such as example.com".into()
        ));
    }
    if trimmed.chars().any(char::is_whitespace) {
        return Err(bad(format!("{:?} contains whitespace", clip(trimmed))));
    }
    if trimmed.parse::<IpAddr>().is_ok()
        || trimmed
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .is_some_and(|s| s.parse::<IpAddr>().is_ok())
    {
        return Err(bad(format!(
            "{trimmed:?} is an IP address; put IP addresses in ip_addresses"
        )));
    }
    let name = trimmed.strip_suffix('.').unwrap_or(trimmed);
    let (wildcard, rest) = match name.strip_prefix(WILDCARD_PREFIX) {
        Some(rest) => (true, rest),
        None => (false, name),
    };
    if rest.contains('*') || name == "*" {
        return Err(bad(format!(
            "{:?}: a wildcard '*' is only allowed as the whole leftmost label, as in *.example.com",
            clip(trimmed)
        )));
    }
    let ascii = to_a_labels(rest).map_err(bad)?;
    check_ascii_labels(&ascii).map_err(bad)?;
    let full = if wildcard {
        format!("{WILDCARD_PREFIX}{ascii}")
    } else {
        ascii
    };
    if full.len() > MAX_NAME_LEN {
        return Err(bad(format!(
            "is {} octets long in A-label form; a DNS name may have at most {MAX_NAME_LEN}",
            full.len()
        )));
    }
    if wildcard && !full[WILDCARD_PREFIX.len()..].contains('.') {
        return Err(bad(format!(
            "{full:?}: a wildcard must cover a name of at least two labels, e.g. *.example.com, never a top-level domain"
        )));
    }
    Ok(full)
}

/// Checks one IP address and returns its canonical text form (IPv6 compressed, lower
/// case). Brackets around an IPv6 address are accepted. The unspecified, broadcast and
/// multicast addresses are refused: they never name a host.
pub fn normalize_ip(field: &str, input: &str) -> Result<String, DomainError> {
    let trimmed = input.trim();
    let bare = trimmed
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(trimmed);
    let ip: IpAddr = bare.parse().map_err(|_| {
        DomainError::invalid(
            field,
            format!(
                "{:?} is not an IPv4 address (e.g. 192.0.2.10) or IPv6 address (e.g. 2001:db8::10)",
                clip(trimmed)
            ),
        )
    })?;
    let not_a_host = ip.is_unspecified()
        || ip.is_multicast()
        || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    if not_a_host {
        return Err(DomainError::invalid(
            field,
            format!("{ip} is not a host address (unspecified, broadcast or multicast)"),
        ));
    }
    Ok(ip.to_string())
}

/// The names of an application after checking: DNS names and IP addresses in their
/// normalised forms, in the order given.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Names {
    /// DNS names (A-labels, lower case; wildcards as `*.example.com`).
    pub domains: Vec<String>,
    /// IP addresses in canonical text form.
    pub ip_addresses: Vec<String>,
}

impl Names {
    /// Every name, DNS names first.
    pub fn all(&self) -> impl Iterator<Item = &str> {
        self.domains
            .iter()
            .chain(self.ip_addresses.iter())
            .map(String::as_str)
    }

    /// How many names there are.
    pub fn len(&self) -> usize {
        self.domains.len() + self.ip_addresses.len()
    }

    /// Whether there are no names at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Checks and normalises the names of an application against its specification:
/// every name's syntax ([`normalize_domain`], [`normalize_ip`]), at least one name, no
/// duplicates after normalisation, the count and the wildcards the domain slots allow,
/// and names the validation method can prove (no wildcard with HTTP-01, no IP address
/// with DNS-01). Errors name fields as `domains[i]` / `ip_addresses[i]`; prefix them
/// with [`DomainError::under`].
pub fn validate_names(
    domains: &[String],
    ip_addresses: &[String],
    spec: &CertificateSpec,
) -> Result<Names, DomainError> {
    let mut names = Names::default();
    let mut seen: HashMap<String, String> = HashMap::new();
    for (i, raw) in domains.iter().enumerate() {
        let field = format!("domains[{i}]");
        let name = normalize_domain(&field, raw)?;
        if let Some(first) = seen.get(&name) {
            return Err(DomainError::invalid(
                field,
                format!("{name:?} is given twice (also as {first}); list each name once"),
            ));
        }
        seen.insert(name.clone(), field);
        names.domains.push(name);
    }
    for (i, raw) in ip_addresses.iter().enumerate() {
        let field = format!("ip_addresses[{i}]");
        let ip = normalize_ip(&field, raw)?;
        if let Some(first) = seen.get(&ip) {
            return Err(DomainError::invalid(
                field,
                format!("{ip} is given twice (also as {first}); list each address once"),
            ));
        }
        seen.insert(ip.clone(), field);
        names.ip_addresses.push(ip);
    }
    if names.is_empty() {
        return Err(DomainError::invalid(
            "domains",
            "at least one domain name (or IP address) is required",
        ));
    }
    check_slots(&names, spec)?;
    check_method(&names, spec)?;
    Ok(names)
}

fn check_slots(names: &Names, spec: &CertificateSpec) -> Result<(), DomainError> {
    let slots = spec.domain_slots.unwrap_or_default();
    let kind = DomainSlotKind::try_from(slots.kind).unwrap_or(DomainSlotKind::Unspecified);
    let wildcards: Vec<(usize, &String)> = names
        .domains
        .iter()
        .enumerate()
        .filter(|(_, n)| is_wildcard(n))
        .collect();
    match kind {
        DomainSlotKind::Unspecified => Err(DomainError::invalid(
            "spec.domain_slots.kind",
            "is not specified; choose SINGLE, WILDCARD or MULTI",
        )),
        DomainSlotKind::Single => {
            if let Some((i, name)) = wildcards.first() {
                return Err(DomainError::invalid(
                    format!("domains[{i}]"),
                    format!(
                        "{name:?} is a wildcard name; a SINGLE certificate carries one non-wildcard name (order a WILDCARD certificate for it)"
                    ),
                ));
            }
            if names.len() > 1 {
                return Err(DomainError::invalid(
                    extra_field(names, 1),
                    format!(
                        "a SINGLE certificate carries exactly one name, {} were given; order a MULTI certificate for more",
                        names.len()
                    ),
                ));
            }
            Ok(())
        }
        DomainSlotKind::Wildcard => {
            if let Some(ip) = names.ip_addresses.first() {
                return Err(DomainError::invalid(
                    "ip_addresses[0]",
                    format!("{ip}: a WILDCARD certificate cannot carry IP addresses"),
                ));
            }
            let Some((wi, wildcard)) = wildcards.first().copied() else {
                return Err(DomainError::invalid(
                    "domains",
                    "a WILDCARD certificate needs one wildcard name such as *.example.com",
                ));
            };
            if let Some((i, _)) = wildcards.get(1) {
                return Err(DomainError::invalid(
                    format!("domains[{i}]"),
                    "a WILDCARD certificate carries exactly one wildcard name; order a MULTI certificate with wildcards for more",
                ));
            }
            let base = wildcard_base(wildcard).unwrap_or_default();
            for (i, name) in names.domains.iter().enumerate() {
                if i != wi && name != base {
                    return Err(DomainError::invalid(
                        format!("domains[{i}]"),
                        format!(
                            "a WILDCARD certificate for {wildcard} may only add its base name {base}, not {name}"
                        ),
                    ));
                }
            }
            Ok(())
        }
        DomainSlotKind::Multi => {
            if !slots.allow_wildcards
                && let Some((i, name)) = wildcards.first()
            {
                return Err(DomainError::invalid(
                    format!("domains[{i}]"),
                    format!(
                        "{name:?} is a wildcard name, but this MULTI certificate was ordered without wildcard slots"
                    ),
                ));
            }
            let max = usize::try_from(slots.max_names).unwrap_or(usize::MAX);
            if names.len() > max {
                return Err(DomainError::invalid(
                    extra_field(names, max),
                    format!(
                        "{} names were given but only {max} slots were ordered; remove names or order more slots",
                        names.len()
                    ),
                ));
            }
            Ok(())
        }
    }
}

fn check_method(names: &Names, spec: &CertificateSpec) -> Result<(), DomainError> {
    let method =
        ValidationMethod::try_from(spec.validation_method).unwrap_or(ValidationMethod::Unspecified);
    if method == ValidationMethod::Http01
        && let Some((i, name)) = names
            .domains
            .iter()
            .enumerate()
            .find(|(_, n)| is_wildcard(n))
    {
        return Err(DomainError::invalid(
            format!("domains[{i}]"),
            format!(
                "{name:?} is a wildcard name, which HTTP-01 cannot validate; order with DNS-01 validation"
            ),
        ));
    }
    if method == ValidationMethod::Dns01
        && let Some(ip) = names.ip_addresses.first()
    {
        return Err(DomainError::invalid(
            "ip_addresses[0]",
            format!("{ip}: DNS-01 cannot validate IP addresses; order with HTTP-01 or APPROVAL"),
        ));
    }
    Ok(())
}

/// The field of the `n`th name (0-based) counting DNS names first.
fn extra_field(names: &Names, n: usize) -> String {
    if n < names.domains.len() {
        format!("domains[{n}]")
    } else {
        format!("ip_addresses[{}]", n - names.domains.len())
    }
}

/// Converts a (possibly internationalised) name without wildcard to A-labels, lower case.
fn to_a_labels(name: &str) -> Result<String, String> {
    if name.is_ascii() {
        // Plain LDH names get precise messages from check_ascii_labels; only labels that
        // claim to be A-labels need the IDNA check.
        let lower = name.to_ascii_lowercase();
        for label in lower.split('.') {
            if label.starts_with("xn--") && !valid_a_label(label) {
                return Err(format!(
                    "label {label:?} is not a valid IDNA A-label (its Punycode does not decode to a valid internationalised label)"
                ));
            }
        }
        return Ok(lower);
    }
    let uts46 = Uts46::new();
    match uts46.to_ascii(
        name.as_bytes(),
        AsciiDenyList::STD3,
        Hyphens::Check,
        DnsLength::Ignore,
    ) {
        Ok(ascii) => Ok(ascii.into_owned()),
        Err(_) => {
            // Name the offending label if one fails on its own.
            let bad_label = name
                .split(['.', '\u{3002}', '\u{ff0e}', '\u{ff61}'])
                .find(|label| {
                    uts46
                        .to_ascii(
                            label.as_bytes(),
                            AsciiDenyList::STD3,
                            Hyphens::Check,
                            DnsLength::Ignore,
                        )
                        .is_err()
                });
            Err(match bad_label {
                Some(label) => format!(
                    "label {:?} is not a valid internationalised domain label (IDNA/UTS #46)",
                    clip(label)
                ),
                None => format!(
                    "{:?} is not a valid internationalised domain name (IDNA/UTS #46)",
                    clip(name)
                ),
            })
        }
    }
}

fn valid_a_label(label: &str) -> bool {
    Uts46::new()
        .to_ascii(
            label.as_bytes(),
            AsciiDenyList::STD3,
            Hyphens::Check,
            DnsLength::Ignore,
        )
        .is_ok_and(|ascii| ascii == label)
}

/// RFC 1035 host-name rules on an ASCII, lower-case name (no wildcard, no trailing dot).
fn check_ascii_labels(name: &str) -> Result<(), String> {
    let labels: Vec<&str> = name.split('.').collect();
    for label in &labels {
        if label.is_empty() {
            return Err(format!(
                "{:?} has an empty label (a leading dot or two dots in a row)",
                clip(name)
            ));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            let why = if c == '_' {
                "underscores are not allowed in host names (RFC 1035) or in certificates".to_owned()
            } else {
                "host names may only use letters, digits and hyphens".to_owned()
            };
            return Err(format!("label {:?} contains {c:?}; {why}", clip(label)));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "label {label:?} starts or ends with a hyphen, which host names do not allow"
            ));
        }
        if label.get(2..4) == Some("--") && !label.starts_with("xn--") {
            return Err(format!(
                "label {label:?} has hyphens in the 3rd and 4th positions, which are reserved for IDNA A-labels (xn--)"
            ));
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(format!(
                "label {:?} is {} octets long; a DNS label may have at most {MAX_LABEL_LEN}",
                clip(label),
                label.len()
            ));
        }
    }
    if let Some(tld) = labels.last()
        && tld.chars().all(|c| c.is_ascii_digit())
    {
        return Err(format!(
            "{:?} ends in the all-numeric label {tld:?}; no top-level domain is numeric (IP addresses go in ip_addresses)",
            clip(name)
        ));
    }
    Ok(())
}

/// Longest subject attribute (X.520 upper bound for CN, O, OU, ST, L).
pub const MAX_SUBJECT_ATTRIBUTE_LEN: usize = 64;

/// Longest CSR accepted, in bytes of PEM.
pub const MAX_CSR_PEM_LEN: usize = 64 * 1024;

/// Checks a whole application against the specification and returns it normalised:
/// the names ([`validate_names`]), the subject (attribute lengths; a two-letter country,
/// upper-cased; a common name, if given, must be one of the names and is normalised like
/// them) and the key source (a PEM CSR; or a key to generate whose algorithm, if given,
/// is the specification's — an unspecified one becomes the specification's). Errors name
/// fields as `application.<field>`.
pub fn validate_application(
    application: &Application,
    spec: &CertificateSpec,
) -> Result<Application, DomainError> {
    let names = validate_names(&application.domains, &application.ip_addresses, spec)
        .map_err(|e| e.under("application"))?;
    let subject = validate_subject(&application.subject, &names)?;
    let key_source = match &application.key_source {
        KeySource::Csr { pem } => {
            if pem.len() > MAX_CSR_PEM_LEN {
                return Err(DomainError::invalid(
                    "application.csr_pem",
                    format!(
                        "is {} bytes long; at most {MAX_CSR_PEM_LEN} are accepted",
                        pem.len()
                    ),
                ));
            }
            validate::pem(
                "application.csr_pem",
                pem,
                &["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"],
            )?;
            KeySource::Csr { pem: pem.clone() }
        }
        KeySource::Generate { algorithm } => {
            let ordered =
                KeyAlgorithm::try_from(spec.key_algorithm).unwrap_or(KeyAlgorithm::Unspecified);
            if *algorithm != KeyAlgorithm::Unspecified && *algorithm != ordered {
                return Err(DomainError::invalid(
                    "application.generate_key",
                    format!(
                        "{} differs from the ordered key algorithm {}; leave it unspecified or order a certificate with {}",
                        algorithm.as_str_name(),
                        ordered.as_str_name(),
                        algorithm.as_str_name()
                    ),
                ));
            }
            KeySource::Generate { algorithm: ordered }
        }
    };
    Ok(Application {
        domains: names.domains,
        ip_addresses: names.ip_addresses,
        subject,
        key_source,
    })
}

fn validate_subject(subject: &Subject, names: &Names) -> Result<Subject, DomainError> {
    let attributes = [
        ("application.subject.common_name", &subject.common_name),
        ("application.subject.organization", &subject.organization),
        (
            "application.subject.organizational_unit",
            &subject.organizational_unit,
        ),
        ("application.subject.state", &subject.state),
        ("application.subject.locality", &subject.locality),
    ];
    for (field, value) in attributes {
        let len = value.chars().count();
        if len > MAX_SUBJECT_ATTRIBUTE_LEN {
            return Err(DomainError::invalid(
                field,
                format!(
                    "is {len} characters long; at most {MAX_SUBJECT_ATTRIBUTE_LEN} are allowed"
                ),
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(DomainError::invalid(field, "contains control characters"));
        }
    }
    let country = subject.country.trim();
    let country_ok = country.is_empty()
        || (country.len() == 2 && country.chars().all(|c| c.is_ascii_alphabetic()));
    if !country_ok {
        return Err(DomainError::invalid(
            "application.subject.country",
            format!(
                "{:?} is not a two-letter ISO 3166 country code, e.g. DE",
                clip(country)
            ),
        ));
    }
    let common_name = if subject.common_name.trim().is_empty() {
        String::new()
    } else {
        let cn = subject.common_name.trim();
        let as_domain = normalize_domain("application.subject.common_name", cn).ok();
        let as_ip = normalize_ip("application.subject.common_name", cn).ok();
        match (as_domain, as_ip) {
            (Some(d), _) if names.domains.contains(&d) => d,
            (_, Some(ip)) if names.ip_addresses.contains(&ip) => ip,
            _ => {
                return Err(DomainError::invalid(
                    "application.subject.common_name",
                    format!(
                        "{:?} is not one of the application's names; the common name must repeat one of them (or stay empty to default to the first)",
                        clip(cn)
                    ),
                ));
            }
        }
    };
    Ok(Subject {
        common_name,
        country: country.to_ascii_uppercase(),
        ..subject.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use certledger_proto::common::v1::DomainSlots;

    fn norm(s: &str) -> Result<String, String> {
        normalize_domain("d", s).map_err(|e| e.message().to_owned())
    }

    fn spec(
        kind: DomainSlotKind,
        max: u32,
        wild: bool,
        method: ValidationMethod,
    ) -> CertificateSpec {
        CertificateSpec {
            issuer: "builtin".into(),
            key_algorithm: 1,
            validity_days: 90,
            domain_slots: Some(DomainSlots {
                kind: kind as i32,
                max_names: max,
                allow_wildcards: wild,
            }),
            validation_method: method as i32,
            auto_renew: false,
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn normalises_case_trailing_dot_and_idn() {
        assert_eq!(norm("Example.COM.").unwrap(), "example.com");
        assert_eq!(norm(" www.example.com ").unwrap(), "www.example.com");
        assert_eq!(norm("bücher.example").unwrap(), "xn--bcher-kva.example");
        assert_eq!(norm("BÜCHER.example").unwrap(), "xn--bcher-kva.example");
        assert_eq!(
            norm("xn--bcher-kva.example").unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(norm("*.Example.com").unwrap(), "*.example.com");
        assert_eq!(norm("*.bücher.example").unwrap(), "*.xn--bcher-kva.example");
        // Ideographic full stop is a label separator in UTS #46.
        assert_eq!(norm("例え。テスト").unwrap(), "xn--r8jz45g.xn--zckzah");
        assert_eq!(norm("localhost").unwrap(), "localhost");
    }

    #[test]
    fn rejects_bad_syntax_with_precise_messages() {
        assert!(norm("").unwrap_err().contains("is empty"));
        assert!(norm("exa mple.com").unwrap_err().contains("whitespace"));
        assert!(norm("a..b.com").unwrap_err().contains("empty label"));
        assert!(norm(".example.com").unwrap_err().contains("empty label"));
        assert!(norm("-a.example.com").unwrap_err().contains("hyphen"));
        assert!(norm("a-.example.com").unwrap_err().contains("hyphen"));
        assert!(
            norm("ab--cd.example.com")
                .unwrap_err()
                .contains("3rd and 4th")
        );
        assert!(
            norm("my_host.example.com")
                .unwrap_err()
                .contains("underscores")
        );
        assert!(
            norm("a!b.example.com")
                .unwrap_err()
                .contains("letters, digits")
        );
        assert!(
            norm(&format!("{}.com", "a".repeat(64)))
                .unwrap_err()
                .contains("at most 63")
        );
        assert!(norm(&format!("{}.com", "a".repeat(63))).is_ok());
        let long = format!("{}.com", vec!["a".repeat(60); 5].join("."));
        assert!(norm(&long).unwrap_err().contains("at most 253"));
        assert!(norm("xn--zz.example").unwrap_err().contains("A-label"));
        assert!(norm("192.0.2.1").unwrap_err().contains("ip_addresses"));
        assert!(norm("[2001:db8::1]").unwrap_err().contains("ip_addresses"));
        assert!(norm("example.123").unwrap_err().contains("numeric"));
        // UTS #46 maps a zero-width space away; a leading combining mark is invalid.
        assert_eq!(norm("a\u{200b}b.example").unwrap(), "ab.example");
        assert!(norm("\u{0301}a.example").unwrap_err().contains("IDNA"));
    }

    #[test]
    fn wildcards_only_as_whole_leftmost_label() {
        assert!(
            norm("a*.example.com")
                .unwrap_err()
                .contains("whole leftmost label")
        );
        assert!(
            norm("*a.example.com")
                .unwrap_err()
                .contains("whole leftmost label")
        );
        assert!(
            norm("www.*.example.com")
                .unwrap_err()
                .contains("whole leftmost label")
        );
        assert!(
            norm("*.*.example.com")
                .unwrap_err()
                .contains("whole leftmost label")
        );
        assert!(norm("*").unwrap_err().contains("whole leftmost label"));
        assert!(norm("*.com").unwrap_err().contains("at least two labels"));
        assert!(is_wildcard("*.example.com"));
        assert_eq!(wildcard_base("*.example.com"), Some("example.com"));
        assert_eq!(wildcard_base("example.com"), None);
    }

    #[test]
    fn ip_addresses_are_parsed_and_canonical() {
        assert_eq!(normalize_ip("i", "192.0.2.10").unwrap(), "192.0.2.10");
        assert_eq!(normalize_ip("i", "2001:DB8:0:0::1").unwrap(), "2001:db8::1");
        assert_eq!(normalize_ip("i", "[2001:db8::1]").unwrap(), "2001:db8::1");
        assert!(normalize_ip("i", "192.0.2").is_err());
        assert!(normalize_ip("i", "010.0.0.1").is_err());
        assert!(normalize_ip("i", "0.0.0.0").is_err());
        assert!(normalize_ip("i", "255.255.255.255").is_err());
        assert!(normalize_ip("i", "ff02::1").is_err());
        assert!(normalize_ip("i", "example.com").is_err());
    }

    #[test]
    fn single_slot() {
        let s = spec(DomainSlotKind::Single, 0, false, ValidationMethod::Http01);
        let n = validate_names(&strings(&["WWW.example.com"]), &[], &s).unwrap();
        assert_eq!(n.domains, vec!["www.example.com"]);
        let e = validate_names(&strings(&["a.example.com", "b.example.com"]), &[], &s).unwrap_err();
        assert_eq!(e.field(), Some("domains[1]"));
        let e =
            validate_names(&strings(&["a.example.com"]), &strings(&["192.0.2.1"]), &s).unwrap_err();
        assert_eq!(e.field(), Some("ip_addresses[0]"));
        let e = validate_names(&strings(&["*.example.com"]), &[], &s).unwrap_err();
        assert_eq!(e.field(), Some("domains[0]"));
        assert!(e.message().contains("WILDCARD"));
        let e = validate_names(&[], &[], &s).unwrap_err();
        assert_eq!(e.field(), Some("domains"));
        // An IP-only certificate is fine.
        assert!(validate_names(&[], &strings(&["192.0.2.1"]), &s).is_ok());
    }

    #[test]
    fn wildcard_slot() {
        let s = spec(DomainSlotKind::Wildcard, 0, false, ValidationMethod::Dns01);
        assert!(validate_names(&strings(&["*.example.com"]), &[], &s).is_ok());
        assert!(validate_names(&strings(&["example.com", "*.example.com"]), &[], &s).is_ok());
        let e =
            validate_names(&strings(&["*.example.com", "www.example.com"]), &[], &s).unwrap_err();
        assert_eq!(e.field(), Some("domains[1]"));
        assert!(e.message().contains("base name example.com"));
        let e = validate_names(&strings(&["*.example.com", "*.example.org"]), &[], &s).unwrap_err();
        assert_eq!(e.field(), Some("domains[1]"));
        let e = validate_names(&strings(&["example.com"]), &[], &s).unwrap_err();
        assert_eq!(e.field(), Some("domains"));
        let s_http = spec(DomainSlotKind::Wildcard, 0, false, ValidationMethod::Http01);
        let e = validate_names(&strings(&["*.example.com"]), &[], &s_http).unwrap_err();
        assert!(e.message().contains("DNS-01"));
    }

    #[test]
    fn multi_slot() {
        let s = spec(DomainSlotKind::Multi, 3, false, ValidationMethod::Http01);
        let n = validate_names(
            &strings(&["a.example.com", "b.example.com"]),
            &strings(&["192.0.2.1"]),
            &s,
        )
        .unwrap();
        assert_eq!(n.len(), 3);
        let e = validate_names(
            &strings(&["a.example.com", "b.example.com", "c.example.com"]),
            &strings(&["192.0.2.1"]),
            &s,
        )
        .unwrap_err();
        assert_eq!(e.field(), Some("ip_addresses[0]"));
        assert!(e.message().contains("only 3 slots"));
        let e = validate_names(&strings(&["a.example.com", "*.example.com"]), &[], &s).unwrap_err();
        assert_eq!(e.field(), Some("domains[1]"));
        let s_wild = spec(DomainSlotKind::Multi, 3, true, ValidationMethod::Dns01);
        assert!(
            validate_names(&strings(&["a.example.com", "*.example.org"]), &[], &s_wild).is_ok()
        );
        let e = validate_names(
            &strings(&["a.example.com"]),
            &strings(&["192.0.2.1"]),
            &s_wild,
        )
        .unwrap_err();
        assert!(e.message().contains("DNS-01 cannot validate IP"));
    }

    #[test]
    fn duplicates_after_normalisation() {
        let s = spec(DomainSlotKind::Multi, 5, false, ValidationMethod::Approval);
        let e = validate_names(&strings(&["Example.com", "example.com."]), &[], &s).unwrap_err();
        assert_eq!(e.field(), Some("domains[1]"));
        assert!(e.message().contains("domains[0]"));
        let e = validate_names(
            &strings(&["bücher.example", "xn--bcher-kva.example"]),
            &[],
            &s,
        )
        .unwrap_err();
        assert_eq!(e.field(), Some("domains[1]"));
        let e = validate_names(&[], &strings(&["2001:db8::1", "2001:DB8:0::1"]), &s).unwrap_err();
        assert_eq!(e.field(), Some("ip_addresses[1]"));
    }
}
