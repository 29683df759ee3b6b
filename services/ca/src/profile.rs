//! Issuance policy and the end-entity certificate profile: validity caps (including the
//! CA/Browser Forum schedule for publicly-trusted-style issuers), name and subject rules, key
//! usages per key type, and the CRL / OCSP / caIssuers URLs put into every certificate.

use std::collections::HashSet;
use std::net::IpAddr;

use time::{Duration, OffsetDateTime, UtcOffset};

use crate::keys::PublicKeyKind;

/// Default and maximum validity of the built-in private CA, in days.
pub const DEFAULT_VALIDITY_DAYS: u32 = 365;
/// The largest back-dating of not-before we allow (clock skew allowance).
pub const MAX_BACKDATE: Duration = Duration::hours(1);
/// Default limit on the number of names (DNS + IP) in one certificate.
pub const DEFAULT_MAX_NAMES: usize = 100;

/// RFC 5280 upper bounds (ub-*) for subject attributes, in characters.
const UB_COMMON_NAME: usize = 64;
const UB_ORGANIZATION: usize = 64;
const UB_ORGANIZATIONAL_UNIT: usize = 64;
const UB_LOCALITY: usize = 128;
const UB_STATE: usize = 128;

/// A problem with the issuance policy configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid issuance configuration: {0}")]
pub struct PolicyError(pub String);

/// A problem with an issuance request: each names the request field it is about (see
/// [`RequestError::field`]); the service maps them to `INVALID_ARGUMENT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Neither DNS names nor IP addresses.
    #[error("dns_names: at least one DNS name or IP address is required")]
    NoNames,
    /// More names than the policy allows.
    #[error("dns_names: {count} names requested, at most {max} allowed")]
    TooManyNames {
        /// Names requested (DNS + IP, after removing duplicates).
        count: usize,
        /// The policy limit.
        max: usize,
    },
    /// A DNS name that is not a valid host name (or wildcard).
    #[error("dns_names: {name:?} is not a valid DNS name: {reason}")]
    InvalidDnsName {
        /// The name (truncated to 300 characters).
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// An IP address that cannot be certified.
    #[error("ip_addresses: {ip} cannot be certified: {reason}")]
    InvalidIpAddress {
        /// The address.
        ip: IpAddr,
        /// Why.
        reason: &'static str,
    },
    /// A subject attribute that is empty, too long, or has forbidden characters.
    #[error("{field}: {reason}")]
    InvalidSubjectField {
        /// Request field, e.g. `subject.organization`.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The common name is not one of the requested names.
    #[error(
        "subject.common_name: {common_name:?} must be one of the requested DNS names or IP addresses"
    )]
    CommonNameNotInNames {
        /// The common name given.
        common_name: String,
    },
    /// A validity of zero days.
    #[error("validity_days: must be at least 1 day")]
    ZeroValidity,
}

impl RequestError {
    /// The request field the error is about, for a gRPC error message / field violation.
    pub fn field(&self) -> &'static str {
        match self {
            RequestError::NoNames
            | RequestError::TooManyNames { .. }
            | RequestError::InvalidDnsName { .. } => "dns_names",
            RequestError::InvalidIpAddress { .. } => "ip_addresses",
            RequestError::InvalidSubjectField { field, .. } => field,
            RequestError::CommonNameNotInNames { .. } => "subject.common_name",
            RequestError::ZeroValidity => "validity_days",
        }
    }
}

/// Validity rules of one issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuancePolicy {
    /// Validity when the request names none.
    pub default_validity_days: u32,
    /// Longest validity this issuer grants; longer requests are capped.
    pub max_validity_days: u32,
    /// Follow the CA/Browser Forum Baseline Requirements' maximum validity schedule (by
    /// issuance date) on top of `max_validity_days`, as a publicly-trusted CA must.
    pub publicly_trusted_style: bool,
    /// How far not-before is set before the issuance time, for clients with slow clocks.
    /// At most [`MAX_BACKDATE`].
    pub backdate: Duration,
    /// Most names (DNS + IP) in one certificate.
    pub max_names: usize,
}

impl Default for IssuancePolicy {
    /// The built-in private CA: default and maximum 365 days, one hour back-dating.
    fn default() -> Self {
        Self {
            default_validity_days: DEFAULT_VALIDITY_DAYS,
            max_validity_days: DEFAULT_VALIDITY_DAYS,
            publicly_trusted_style: false,
            backdate: MAX_BACKDATE,
            max_names: DEFAULT_MAX_NAMES,
        }
    }
}

/// The validity window chosen for one certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// notBefore: issuance time (whole seconds, UTC) minus the back-dating.
    pub not_before: OffsetDateTime,
    /// notAfter: `not_before + days - 1 second`, so the validity period (RFC 5280 counts both
    /// ends) is exactly `days` days; possibly cut to the issuer's own notAfter.
    pub not_after: OffsetDateTime,
    /// Validity granted, in days (before any cut to the issuer's notAfter).
    pub days: u32,
    /// True if the granted validity is shorter than requested (policy cap or issuer expiry).
    pub capped: bool,
}

impl IssuancePolicy {
    /// The built-in private CA policy (same as `Default`).
    pub fn private_ca() -> Self {
        Self::default()
    }

    /// A publicly-trusted-style issuer: validity capped by the CA/Browser Forum schedule
    /// (398 days today, falling to 47 days from 2029-03-15).
    pub fn publicly_trusted() -> Self {
        Self {
            default_validity_days: 398,
            max_validity_days: 398,
            publicly_trusted_style: true,
            ..Self::default()
        }
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.max_validity_days == 0 {
            return Err(PolicyError("max_validity_days must be at least 1".into()));
        }
        if self.default_validity_days == 0 {
            return Err(PolicyError(
                "default_validity_days must be at least 1".into(),
            ));
        }
        if self.default_validity_days > self.max_validity_days {
            return Err(PolicyError(format!(
                "default_validity_days ({}) exceeds max_validity_days ({})",
                self.default_validity_days, self.max_validity_days
            )));
        }
        if self.backdate.is_negative() || self.backdate > MAX_BACKDATE {
            return Err(PolicyError(format!(
                "backdate must be between 0 and 1 hour, got {}",
                self.backdate
            )));
        }
        if self.max_names == 0 {
            return Err(PolicyError("max_names must be at least 1".into()));
        }
        Ok(())
    }

    /// The longest validity this issuer grants for a certificate issued at `now`.
    pub fn max_validity_days_at(&self, now: OffsetDateTime) -> u32 {
        if self.publicly_trusted_style {
            self.max_validity_days.min(cabf_max_validity_days(now))
        } else {
            self.max_validity_days
        }
    }

    /// Chooses not-before / not-after for a certificate issued at `now` with the requested
    /// validity (`None`: the default), capped by policy.
    pub fn validity(
        &self,
        requested_days: Option<u32>,
        now: OffsetDateTime,
    ) -> Result<Validity, RequestError> {
        let max = self.max_validity_days_at(now);
        let wanted = match requested_days {
            Some(0) => return Err(RequestError::ZeroValidity),
            Some(days) => days,
            None => self.default_validity_days,
        };
        let days = wanted.min(max);
        let now = truncate_to_second(now);
        let backdate = self.backdate.clamp(Duration::ZERO, MAX_BACKDATE);
        let not_before = now - backdate;
        let not_after = not_before + Duration::days(i64::from(days)) - Duration::SECOND;
        Ok(Validity {
            not_before,
            not_after,
            days,
            capped: days < wanted,
        })
    }
}

/// Whole seconds, UTC (certificates carry no fractions of a second).
pub(crate) fn truncate_to_second(t: OffsetDateTime) -> OffsetDateTime {
    let t = t.to_offset(UtcOffset::UTC);
    t - Duration::nanoseconds(i64::from(t.nanosecond()))
}

/// 2026-03-15T00:00:00Z, 2027-03-15T00:00:00Z and 2029-03-15T00:00:00Z as Unix time.
const CABF_200_DAYS_FROM: i64 = 1_773_532_800;
const CABF_100_DAYS_FROM: i64 = 1_805_068_800;
const CABF_47_DAYS_FROM: i64 = 1_868_227_200;

/// Maximum validity in days of a publicly-trusted TLS certificate issued at `issued_at`
/// (CA/Browser Forum Baseline Requirements, ballot SC-081):
/// 398 days before 2026-03-15, 200 days from 2026-03-15, 100 days from 2027-03-15,
/// 47 days from 2029-03-15 (all 00:00 UTC).
pub fn cabf_max_validity_days(issued_at: OffsetDateTime) -> u32 {
    let t = issued_at.unix_timestamp();
    if t >= CABF_47_DAYS_FROM {
        47
    } else if t >= CABF_100_DAYS_FROM {
        100
    } else if t >= CABF_200_DAYS_FROM {
        200
    } else {
        398
    }
}

/// CRL and OCSP locations (and optionally the issuer certificate's URL) written into every
/// end-entity certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertificateUrls {
    /// CRL distribution point URI (`http://...`).
    pub crl_distribution_point: Option<String>,
    /// OCSP responder URI, written to Authority Information Access as id-ad-ocsp.
    pub ocsp: Option<String>,
    /// Where the issuing certificate can be downloaded (id-ad-caIssuers), optional.
    pub ca_issuers: Option<String>,
}

impl CertificateUrls {
    /// Checks each URL is an absolute `http://` or `https://` URL of printable ASCII.
    pub fn validate(&self) -> Result<(), PolicyError> {
        for (name, url) in [
            ("crl_distribution_point", &self.crl_distribution_point),
            ("ocsp", &self.ocsp),
            ("ca_issuers", &self.ca_issuers),
        ] {
            if let Some(url) = url {
                let ok_chars = url.bytes().all(|b| b.is_ascii_graphic());
                let rest = url
                    .strip_prefix("http://")
                    .or_else(|| url.strip_prefix("https://"));
                let host_present = rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'));
                if !ok_chars || !host_present || url.len() > 2048 {
                    return Err(PolicyError(format!(
                        "{name} URL {url:?} must be an absolute http:// or https:// URL"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The Authority Information Access extension (rcgen has no builder for it), if an OCSP or
    /// caIssuers URL is configured.
    pub(crate) fn authority_info_access_extension(&self) -> Option<rcgen::CustomExtension> {
        crate::der::authority_info_access(self.ocsp.as_deref(), self.ca_issuers.as_deref()).map(
            |der| {
                rcgen::CustomExtension::from_oid_content(crate::der::OID_AUTHORITY_INFO_ACCESS, der)
            },
        )
    }
}

/// Subject distinguished-name attributes of an end-entity certificate. All optional; the
/// common name, if given, must be one of the certificate's names, and if absent the first DNS
/// name (when it fits in 64 characters) is used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubjectFields {
    /// CN.
    pub common_name: Option<String>,
    /// O.
    pub organization: Option<String>,
    /// OU.
    pub organizational_unit: Option<String>,
    /// C, two-letter ISO 3166 code.
    pub country: Option<String>,
    /// ST.
    pub state_or_province: Option<String>,
    /// L.
    pub locality: Option<String>,
}

fn check_text(field: &'static str, value: &str, max: usize) -> Result<(), RequestError> {
    if value.trim().is_empty() {
        return Err(RequestError::InvalidSubjectField {
            field,
            reason: "must not be empty (leave it out instead)".into(),
        });
    }
    let chars = value.chars().count();
    if chars > max {
        return Err(RequestError::InvalidSubjectField {
            field,
            reason: format!("is {chars} characters long, at most {max} allowed"),
        });
    }
    if value.chars().any(char::is_control) {
        return Err(RequestError::InvalidSubjectField {
            field,
            reason: "must not contain control characters".into(),
        });
    }
    Ok(())
}

impl SubjectFields {
    /// Checks lengths (RFC 5280 upper bounds), characters and the country code.
    pub fn validate(&self) -> Result<(), RequestError> {
        for (field, value, max) in [
            ("subject.common_name", &self.common_name, UB_COMMON_NAME),
            ("subject.organization", &self.organization, UB_ORGANIZATION),
            (
                "subject.organizational_unit",
                &self.organizational_unit,
                UB_ORGANIZATIONAL_UNIT,
            ),
            (
                "subject.state_or_province",
                &self.state_or_province,
                UB_STATE,
            ),
            ("subject.locality", &self.locality, UB_LOCALITY),
        ] {
            if let Some(value) = value {
                check_text(field, value, max)?;
            }
        }
        if let Some(country) = &self.country
            && (country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()))
        {
            return Err(RequestError::InvalidSubjectField {
                field: "subject.country",
                reason: format!("{country:?} is not a two-letter upper-case ISO 3166 country code"),
            });
        }
        Ok(())
    }

    /// The distinguished name, with `common_name` as the CN.
    pub(crate) fn to_distinguished_name(
        &self,
        common_name: Option<&str>,
    ) -> Result<rcgen::DistinguishedName, RequestError> {
        let mut dn = rcgen::DistinguishedName::new();
        if let Some(country) = &self.country {
            let printable =
                rcgen::string::PrintableString::try_from(country.as_str()).map_err(|_| {
                    RequestError::InvalidSubjectField {
                        field: "subject.country",
                        reason: "not a PrintableString".into(),
                    }
                })?;
            dn.push(
                rcgen::DnType::CountryName,
                rcgen::DnValue::PrintableString(printable),
            );
        }
        if let Some(v) = &self.state_or_province {
            dn.push(rcgen::DnType::StateOrProvinceName, v.as_str());
        }
        if let Some(v) = &self.locality {
            dn.push(rcgen::DnType::LocalityName, v.as_str());
        }
        if let Some(v) = &self.organization {
            dn.push(rcgen::DnType::OrganizationName, v.as_str());
        }
        if let Some(v) = &self.organizational_unit {
            dn.push(rcgen::DnType::OrganizationalUnitName, v.as_str());
        }
        if let Some(cn) = common_name {
            dn.push(rcgen::DnType::CommonName, cn);
        }
        Ok(dn)
    }
}

/// The names of one certificate after normalization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateNames {
    /// Lower-case DNS names (A-labels), duplicates removed, in request order.
    pub dns_names: Vec<String>,
    /// IP addresses, duplicates removed, in request order.
    pub ip_addresses: Vec<IpAddr>,
    /// The CN to write, if any.
    pub common_name: Option<String>,
}

/// Normalizes and checks the requested names and picks the common name.
pub fn check_names(
    dns_names: &[String],
    ip_addresses: &[IpAddr],
    subject: &SubjectFields,
    max_names: usize,
) -> Result<CertificateNames, RequestError> {
    let mut seen = HashSet::new();
    let mut dns = Vec::new();
    for name in dns_names {
        let normalized = normalize_dns_name(name)?;
        if seen.insert(normalized.clone()) {
            dns.push(normalized);
        }
    }
    let mut seen_ip = HashSet::new();
    let mut ips = Vec::new();
    for ip in ip_addresses {
        let ip = canonical_ip(*ip);
        if ip.is_unspecified() {
            return Err(RequestError::InvalidIpAddress {
                ip,
                reason: "the unspecified address is not a host",
            });
        }
        if ip.is_multicast() {
            return Err(RequestError::InvalidIpAddress {
                ip,
                reason: "multicast addresses are not hosts",
            });
        }
        if seen_ip.insert(ip) {
            ips.push(ip);
        }
    }
    let count = dns.len() + ips.len();
    if count == 0 {
        return Err(RequestError::NoNames);
    }
    if count > max_names {
        return Err(RequestError::TooManyNames {
            count,
            max: max_names,
        });
    }
    let common_name = match &subject.common_name {
        Some(cn) => {
            let matches_dns = normalize_dns_name(cn)
                .map(|n| dns.contains(&n))
                .unwrap_or(false);
            let matches_ip = cn
                .parse::<IpAddr>()
                .map(|ip| ips.contains(&canonical_ip(ip)))
                .unwrap_or(false);
            if !matches_dns && !matches_ip {
                return Err(RequestError::CommonNameNotInNames {
                    common_name: truncate(cn),
                });
            }
            Some(if matches_dns {
                cn.to_ascii_lowercase()
            } else {
                cn.clone()
            })
        }
        None => dns
            .iter()
            .find(|n| n.len() <= UB_COMMON_NAME)
            .cloned()
            .or_else(|| ips.first().map(ToString::to_string)),
    };
    Ok(CertificateNames {
        dns_names: dns,
        ip_addresses: ips,
        common_name,
    })
}

/// IPv4-mapped IPv6 addresses are certified as the IPv4 address.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(300).collect()
}

/// Checks a DNS name (host name or `*.` wildcard) and returns it in lower case.
///
/// Rules: ASCII only (internationalized names in their `xn--` A-label form), at most 253
/// characters, labels of 1 to 63 letters, digits and hyphens not starting or ending with a
/// hyphen, no trailing dot, a wildcard only as the whole left-most label followed by at least
/// two labels, and not an IP address written as a name.
pub fn normalize_dns_name(name: &str) -> Result<String, RequestError> {
    let invalid = |reason: &'static str| RequestError::InvalidDnsName {
        name: truncate(name),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("empty name"));
    }
    if !name.is_ascii() {
        return Err(invalid(
            "non-ASCII characters; use the IDNA A-label (xn--) form",
        ));
    }
    if name.len() > 253 {
        return Err(invalid("longer than 253 characters"));
    }
    if name.ends_with('.') {
        return Err(invalid("trailing dot"));
    }
    if name.parse::<IpAddr>().is_ok() {
        return Err(invalid("an IP address; put it in ip_addresses"));
    }
    let lower = name.to_ascii_lowercase();
    let (wildcard, rest) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    let labels: Vec<&str> = rest.split('.').collect();
    for label in &labels {
        if label.is_empty() {
            return Err(invalid("empty label"));
        }
        if label.len() > 63 {
            return Err(invalid("label longer than 63 characters"));
        }
        if label.contains('*') {
            return Err(invalid(
                "a wildcard is only allowed as the whole left-most label (*.example.com)",
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(invalid(
                "labels may only contain letters, digits and hyphens",
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(invalid("label starts or ends with a hyphen"));
        }
    }
    if wildcard && labels.len() < 2 {
        return Err(invalid(
            "a wildcard must be followed by at least two labels",
        ));
    }
    if let Some(tld) = labels.last()
        && labels.len() > 1
        && tld.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(invalid("the top-level label is all-numeric"));
    }
    Ok(lower)
}

/// Key usages of an end-entity TLS certificate for this kind of key: digitalSignature, plus
/// keyEncipherment for RSA (RSA key exchange in TLS 1.2).
pub(crate) fn end_entity_key_usages(kind: PublicKeyKind) -> Vec<rcgen::KeyUsagePurpose> {
    let mut usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    if kind.is_rsa() {
        usages.push(rcgen::KeyUsagePurpose::KeyEncipherment);
    }
    usages
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn cabf_schedule_boundaries() {
        assert_eq!(cabf_max_validity_days(datetime!(2025-01-01 00:00 UTC)), 398);
        assert_eq!(
            cabf_max_validity_days(datetime!(2026-03-14 23:59:59 UTC)),
            398
        );
        assert_eq!(cabf_max_validity_days(datetime!(2026-03-15 00:00 UTC)), 200);
        assert_eq!(
            cabf_max_validity_days(datetime!(2027-03-14 23:59:59 UTC)),
            200
        );
        assert_eq!(cabf_max_validity_days(datetime!(2027-03-15 00:00 UTC)), 100);
        assert_eq!(
            cabf_max_validity_days(datetime!(2029-03-14 23:59:59 UTC)),
            100
        );
        assert_eq!(cabf_max_validity_days(datetime!(2029-03-15 00:00 UTC)), 47);
        assert_eq!(cabf_max_validity_days(datetime!(2040-01-01 00:00 UTC)), 47);
        // The date is the UTC date: 2026-03-15 01:00 at +02:00 is still 2026-03-14 UTC.
        assert_eq!(cabf_max_validity_days(datetime!(2026-03-15 01:00 +2)), 398);
    }

    #[test]
    fn validity_is_capped_and_backdated() {
        let policy = IssuancePolicy::private_ca();
        let now = datetime!(2026-06-01 12:00:00.75 UTC);
        let v = policy.validity(None, now).expect("validity");
        assert_eq!(v.not_before, datetime!(2026-06-01 11:00 UTC));
        assert_eq!(v.days, 365);
        assert!(!v.capped);
        assert_eq!(
            v.not_after - v.not_before + Duration::SECOND,
            Duration::days(365)
        );
        let v = policy.validity(Some(1000), now).expect("validity");
        assert_eq!((v.days, v.capped), (365, true));
        let v = policy.validity(Some(30), now).expect("validity");
        assert_eq!((v.days, v.capped), (30, false));
        assert_eq!(
            policy.validity(Some(0), now),
            Err(RequestError::ZeroValidity)
        );
    }

    #[test]
    fn publicly_trusted_policy_follows_the_schedule() {
        let policy = IssuancePolicy::publicly_trusted();
        for (now, expected) in [
            (datetime!(2026-03-14 23:59:59 UTC), 398),
            (datetime!(2026-03-15 00:00 UTC), 200),
            (datetime!(2027-03-14 12:00 UTC), 200),
            (datetime!(2027-03-15 00:00 UTC), 100),
            (datetime!(2029-03-14 23:59:59 UTC), 100),
            (datetime!(2029-03-15 00:00 UTC), 47),
        ] {
            let v = policy.validity(Some(398), now).expect("validity");
            assert_eq!(v.days, expected, "at {now}");
            assert_eq!(
                v.not_after - v.not_before + Duration::SECOND,
                Duration::days(i64::from(expected))
            );
            let v = policy.validity(None, now).expect("validity");
            assert_eq!(v.days, expected, "default at {now}");
        }
        // A private CA is not affected by the schedule.
        let private = IssuancePolicy::private_ca();
        assert_eq!(
            private
                .validity(None, datetime!(2030-01-01 00:00 UTC))
                .expect("validity")
                .days,
            365
        );
    }

    #[test]
    fn policy_validation() {
        assert!(IssuancePolicy::default().validate().is_ok());
        assert!(IssuancePolicy::publicly_trusted().validate().is_ok());
        let bad = IssuancePolicy {
            backdate: Duration::hours(2),
            ..IssuancePolicy::default()
        };
        assert!(bad.validate().is_err());
        let bad = IssuancePolicy {
            default_validity_days: 400,
            ..IssuancePolicy::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn dns_name_rules() {
        assert_eq!(
            normalize_dns_name("WWW.Example.COM"),
            Ok("www.example.com".into())
        );
        assert_eq!(
            normalize_dns_name("*.example.com"),
            Ok("*.example.com".into())
        );
        assert_eq!(normalize_dns_name("localhost"), Ok("localhost".into()));
        assert_eq!(
            normalize_dns_name("xn--bcher-kva.example"),
            Ok("xn--bcher-kva.example".into())
        );
        for bad in [
            "",
            "bücher.example",
            "example.com.",
            "a..b",
            "-a.example",
            "a-.example",
            "a_b.example",
            "*.com",
            "foo.*.example.com",
            "f*o.example.com",
            "10.0.0.1",
            "1.2.3.999",
            "a b.example",
        ] {
            assert!(normalize_dns_name(bad).is_err(), "{bad:?} accepted");
        }
        let long_label = format!("{}.example", "a".repeat(64));
        assert!(normalize_dns_name(&long_label).is_err());
    }

    #[test]
    fn names_dedup_and_common_name() {
        let names = check_names(
            &["B.example".into(), "b.example".into(), "a.example".into()],
            &[
                "10.0.0.1".parse().expect("ip"),
                "::ffff:10.0.0.1".parse().expect("ip"),
            ],
            &SubjectFields::default(),
            100,
        )
        .expect("names");
        assert_eq!(names.dns_names, vec!["b.example", "a.example"]);
        assert_eq!(names.ip_addresses.len(), 1);
        assert_eq!(names.common_name.as_deref(), Some("b.example"));

        let subject = SubjectFields {
            common_name: Some("other.example".into()),
            ..SubjectFields::default()
        };
        let err = check_names(&["a.example".into()], &[], &subject, 100).expect_err("cn");
        assert_eq!(err.field(), "subject.common_name");

        assert_eq!(
            check_names(&[], &[], &SubjectFields::default(), 100),
            Err(RequestError::NoNames)
        );
        let many: Vec<String> = (0..3).map(|i| format!("h{i}.example")).collect();
        assert_eq!(
            check_names(&many, &[], &SubjectFields::default(), 2),
            Err(RequestError::TooManyNames { count: 3, max: 2 })
        );
    }

    #[test]
    fn subject_field_rules() {
        let ok = SubjectFields {
            organization: Some("Example Ltd".into()),
            country: Some("DE".into()),
            ..SubjectFields::default()
        };
        assert!(ok.validate().is_ok());
        let bad_country = SubjectFields {
            country: Some("Germany".into()),
            ..SubjectFields::default()
        };
        assert_eq!(
            bad_country.validate().map_err(|e| e.field()),
            Err("subject.country")
        );
        let long_org = SubjectFields {
            organization: Some("x".repeat(65)),
            ..SubjectFields::default()
        };
        assert_eq!(
            long_org.validate().map_err(|e| e.field()),
            Err("subject.organization")
        );
    }

    #[test]
    fn url_validation() {
        let ok = CertificateUrls {
            crl_distribution_point: Some("http://crl.example/ca.crl".into()),
            ocsp: Some("http://ocsp.example".into()),
            ca_issuers: None,
        };
        assert!(ok.validate().is_ok());
        let bad = CertificateUrls {
            ocsp: Some("ocsp.example".into()),
            ..CertificateUrls::default()
        };
        assert!(bad.validate().is_err());
        let bad = CertificateUrls {
            crl_distribution_point: Some("http://crl example/".into()),
            ..CertificateUrls::default()
        };
        assert!(bad.validate().is_err());
    }
}
