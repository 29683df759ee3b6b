//! Small field checks shared by the commands: ids, free text, hex digests, PEM.

use crate::error::DomainError;

/// Longest accepted id (certificate, deployment, target, successor, key ids).
pub const MAX_ID_LEN: usize = 64;

/// Longest accepted free-text field (reasons, comments, observations).
pub const MAX_TEXT_LEN: usize = 1024;

/// Checks an id: 1 to 64 characters from `[A-Za-z0-9_-]`. Ids become part of stream
/// ids (`certificate-<id>`) and NATS subjects, where `.`, `*`, `>` and whitespace have
/// meaning, so nothing else is allowed.
pub fn id(field: &str, value: &str) -> Result<(), DomainError> {
    if value.is_empty() {
        return Err(DomainError::invalid(field, "is required"));
    }
    if value.len() > MAX_ID_LEN {
        return Err(DomainError::invalid(
            field,
            format!(
                "is {} characters long; at most {MAX_ID_LEN} are allowed",
                value.len()
            ),
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(DomainError::invalid(
            field,
            format!("contains {c:?}; ids may only use letters, digits, '-' and '_'"),
        ));
    }
    Ok(())
}

/// Checks free text: at most [`MAX_TEXT_LEN`] characters, no control characters other
/// than newline and tab. With `required`, it must not be blank.
pub fn text(field: &str, value: &str, required: bool) -> Result<(), DomainError> {
    if required && value.trim().is_empty() {
        return Err(DomainError::invalid(field, "is required"));
    }
    let len = value.chars().count();
    if len > MAX_TEXT_LEN {
        return Err(DomainError::invalid(
            field,
            format!("is {len} characters long; at most {MAX_TEXT_LEN} are allowed"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(DomainError::invalid(field, "contains control characters"));
    }
    Ok(())
}

/// Checks a lower-case hex SHA-256 digest (64 hex digits).
pub fn sha256_hex(field: &str, value: &str) -> Result<(), DomainError> {
    if value.len() != 64 || !is_lower_hex(value) {
        return Err(DomainError::invalid(
            field,
            format!(
                "must be a SHA-256 digest as 64 lower-case hex digits, got {:?}",
                clip(value)
            ),
        ));
    }
    Ok(())
}

/// Checks a certificate serial: lower-case hex of the serial number's positive
/// big-endian bytes, no leading zero byte, not zero, at most 20 octets once DER-encoded
/// (RFC 5280 section 4.1.2.2).
pub fn serial_hex(field: &str, value: &str) -> Result<(), DomainError> {
    if value.is_empty() {
        return Err(DomainError::invalid(field, "is required"));
    }
    if !is_lower_hex(value) || !value.len().is_multiple_of(2) {
        return Err(DomainError::invalid(
            field,
            format!(
                "must be lower-case hex with an even number of digits, got {:?}",
                clip(value)
            ),
        ));
    }
    if value.starts_with("00") {
        return Err(DomainError::invalid(
            field,
            "must not start with a zero byte (give the minimal big-endian bytes)",
        ));
    }
    let octets = value.len() / 2;
    // DER adds a 0x00 byte when the high bit is set.
    let high_bit = value
        .get(..1)
        .and_then(|d| u8::from_str_radix(d, 16).ok())
        .is_some_and(|d| d >= 8);
    let der_octets = octets + usize::from(high_bit);
    if der_octets > 20 {
        return Err(DomainError::invalid(
            field,
            format!("encodes to {der_octets} octets; RFC 5280 allows at most 20"),
        ));
    }
    Ok(())
}

/// Checks a PEM block of the given label (e.g. `CERTIFICATE`) is present.
pub fn pem(field: &str, value: &str, labels: &[&str]) -> Result<(), DomainError> {
    if value.trim().is_empty() {
        return Err(DomainError::invalid(field, "is required"));
    }
    let found = labels.iter().any(|label| {
        value.contains(&format!("-----BEGIN {label}-----"))
            && value.contains(&format!("-----END {label}-----"))
    });
    if !found {
        return Err(DomainError::invalid(
            field,
            format!(
                "must be PEM with a \"-----BEGIN {}-----\" block",
                labels.join("\" or \"")
            ),
        ));
    }
    Ok(())
}

fn is_lower_hex(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// At most 80 characters of a value, for quoting it in a message.
pub(crate) fn clip(value: &str) -> String {
    const MAX: usize = 80;
    if value.chars().count() <= MAX {
        value.to_owned()
    } else {
        let mut s: String = value.chars().take(MAX).collect();
        s.push('…');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(id("x", "0195f3a0-7b1c-7cc4-9c4e-2a1d5b0e8f11").is_ok());
        assert_eq!(id("x", "").unwrap_err().field(), Some("x"));
        assert!(id("x", "a.b").is_err());
        assert!(id("x", "a b").is_err());
        assert!(id("x", &"a".repeat(65)).is_err());
    }

    #[test]
    fn serials() {
        assert!(serial_hex("s", "01").is_ok());
        assert!(serial_hex("s", &format!("7f{}", "ab".repeat(19))).is_ok());
        assert!(serial_hex("s", &format!("80{}", "ab".repeat(19))).is_err());
        assert!(serial_hex("s", &format!("01{}", "ab".repeat(20))).is_err());
        assert!(serial_hex("s", "00ff").is_err());
        assert!(serial_hex("s", "ABCD").is_err());
        assert!(serial_hex("s", "abc").is_err());
        assert!(serial_hex("s", "").is_err());
    }

    #[test]
    fn digests_text_and_pem() {
        assert!(sha256_hex("f", &"ab".repeat(32)).is_ok());
        assert!(sha256_hex("f", &"AB".repeat(32)).is_err());
        assert!(sha256_hex("f", "abc").is_err());
        assert!(text("r", "", false).is_ok());
        assert!(text("r", "  ", true).is_err());
        assert!(text("r", "a\u{7}b", false).is_err());
        assert!(text("r", &"a".repeat(1025), false).is_err());
        let pem_ok = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        assert!(pem("p", pem_ok, &["CERTIFICATE"]).is_ok());
        assert!(pem("p", "MIIB", &["CERTIFICATE"]).is_err());
    }
}
