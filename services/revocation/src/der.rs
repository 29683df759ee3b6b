//! A minimal DER reader and writer for the OCSP structures (RFC 6960), which no crate in the
//! dependency graph builds for us.
//!
//! The reader works on untrusted input: it never panics, never allocates for what it skips,
//! supports only low tag numbers (what OCSP uses), rejects indefinite lengths and lengths
//! beyond the input, and never recurses on its own (callers walk the fixed OCSP structure).

use time::OffsetDateTime;

/// Universal tags.
pub(crate) const TAG_BOOLEAN: u8 = 0x01;
pub(crate) const TAG_INTEGER: u8 = 0x02;
pub(crate) const TAG_BIT_STRING: u8 = 0x03;
pub(crate) const TAG_OCTET_STRING: u8 = 0x04;
pub(crate) const TAG_NULL: u8 = 0x05;
pub(crate) const TAG_OID: u8 = 0x06;
pub(crate) const TAG_ENUMERATED: u8 = 0x0a;
pub(crate) const TAG_GENERALIZED_TIME: u8 = 0x18;
pub(crate) const TAG_SEQUENCE: u8 = 0x30;

/// Context-specific constructed tag `[n]` (EXPLICIT tagging, or IMPLICIT of a constructed type).
pub(crate) const fn context_constructed(n: u8) -> u8 {
    0xa0 | n
}

/// Context-specific primitive tag `[n]` (IMPLICIT tagging of a primitive type).
pub(crate) const fn context_primitive(n: u8) -> u8 {
    0x80 | n
}

/// Why DER input was rejected. Deliberately coarse: the OCSP answer to all of these is
/// `malformedRequest`; the text is for logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DerError {
    #[error("input ends inside an element")]
    Truncated,
    #[error("high tag numbers are not supported")]
    HighTagNumber,
    #[error("indefinite length is not DER")]
    IndefiniteLength,
    #[error("length field too large")]
    LengthTooLarge,
    #[error("length is not minimally encoded (not DER)")]
    NonMinimalLength,
    #[error("expected tag {expected:#04x}, found {found:#04x}")]
    UnexpectedTag { expected: u8, found: u8 },
    #[error("trailing data after {what}")]
    TrailingData { what: &'static str },
}

/// One element: its tag, its content octets, and its full encoding (tag + length + content).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tlv<'a> {
    pub tag: u8,
    pub content: &'a [u8],
    pub raw: &'a [u8],
}

/// A cursor over a sequence of DER elements.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The tag of the next element, if any.
    pub fn peek_tag(&self) -> Option<u8> {
        self.data.first().copied()
    }

    /// Reads the next element.
    pub fn read(&mut self) -> Result<Tlv<'a>, DerError> {
        let data = self.data;
        let (&tag, rest) = data.split_first().ok_or(DerError::Truncated)?;
        if tag & 0x1f == 0x1f {
            return Err(DerError::HighTagNumber);
        }
        let (&first, mut rest) = rest.split_first().ok_or(DerError::Truncated)?;
        let len = if first < 0x80 {
            usize::from(first)
        } else if first == 0x80 {
            return Err(DerError::IndefiniteLength);
        } else {
            let n = usize::from(first & 0x7f);
            if n > 4 {
                return Err(DerError::LengthTooLarge);
            }
            let (len_bytes, after) = rest.split_at_checked(n).ok_or(DerError::Truncated)?;
            rest = after;
            let len = len_bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            // DER: the long form only when needed, with no leading zero octets.
            if len < 0x80 || len_bytes.first() == Some(&0) {
                return Err(DerError::NonMinimalLength);
            }
            len
        };
        let (content, after) = rest.split_at_checked(len).ok_or(DerError::Truncated)?;
        let header_len = data.len() - rest.len();
        let raw = data.get(..header_len + len).ok_or(DerError::Truncated)?;
        self.data = after;
        Ok(Tlv { tag, content, raw })
    }

    /// Reads the next element, which must have tag `expected`.
    pub fn expect(&mut self, expected: u8) -> Result<Tlv<'a>, DerError> {
        let tlv = self.read()?;
        if tlv.tag != expected {
            return Err(DerError::UnexpectedTag {
                expected,
                found: tlv.tag,
            });
        }
        Ok(tlv)
    }

    /// Reads the next element if it has tag `tag`.
    pub fn optional(&mut self, tag: u8) -> Result<Option<Tlv<'a>>, DerError> {
        if self.peek_tag() == Some(tag) {
            self.read().map(Some)
        } else {
            Ok(None)
        }
    }

    /// Fails unless all input was consumed.
    pub fn finish(&self, what: &'static str) -> Result<(), DerError> {
        if self.data.is_empty() {
            Ok(())
        } else {
            Err(DerError::TrailingData { what })
        }
    }
}

/// Parses `data` as exactly one element with tag `tag`.
pub(crate) fn parse_single<'a>(
    data: &'a [u8],
    tag: u8,
    what: &'static str,
) -> Result<Tlv<'a>, DerError> {
    let mut reader = Reader::new(data);
    let tlv = reader.expect(tag)?;
    reader.finish(what)?;
    Ok(tlv)
}

pub(crate) use certledger_ca::der::{push_len, tlv};

/// A constructed element from the concatenation of already encoded parts.
pub(crate) fn constructed(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let len = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(len + 6);
    out.push(tag);
    push_len(&mut out, len);
    for part in parts {
        out.extend_from_slice(part);
    }
    out
}

/// SEQUENCE of already encoded parts.
pub(crate) fn sequence(parts: &[&[u8]]) -> Vec<u8> {
    constructed(TAG_SEQUENCE, parts)
}

/// ENUMERATED with a small non-negative value.
pub(crate) fn enumerated(value: u8) -> Vec<u8> {
    if value & 0x80 != 0 {
        tlv(TAG_ENUMERATED, &[0, value])
    } else {
        tlv(TAG_ENUMERATED, &[value])
    }
}

/// GeneralizedTime `YYYYMMDDHHMMSSZ` (UTC, whole seconds), as RFC 5280 4.1.2.5.2 requires.
pub(crate) fn generalized_time(at: OffsetDateTime) -> Vec<u8> {
    let at = at.to_offset(time::UtcOffset::UTC);
    let year = at.year().clamp(0, 9999);
    let text = format!(
        "{year:04}{:02}{:02}{:02}{:02}{:02}Z",
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    );
    tlv(TAG_GENERALIZED_TIME, text.as_bytes())
}

/// BIT STRING with no unused bits.
pub(crate) fn bit_string(bytes: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(bytes.len() + 1);
    content.push(0);
    content.extend_from_slice(bytes);
    tlv(TAG_BIT_STRING, &content)
}

/// PEM with LF line endings and 64-column lines, as openssl writes it.
pub(crate) fn pem_encode(tag: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(tag, der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_round_trip() {
        for len in [0usize, 1, 127, 128, 255, 256, 65_535, 65_536, 1 << 20] {
            let content = vec![0x5a; len];
            let encoded = tlv(TAG_OCTET_STRING, &content);
            let parsed = parse_single(&encoded, TAG_OCTET_STRING, "test").expect("parse");
            assert_eq!(parsed.content.len(), len);
            assert_eq!(parsed.raw, encoded.as_slice());
        }
    }

    #[test]
    fn bad_encodings_are_rejected_without_panics() {
        assert_eq!(Reader::new(&[]).read().err(), Some(DerError::Truncated));
        assert_eq!(Reader::new(&[0x30]).read().err(), Some(DerError::Truncated));
        assert_eq!(
            Reader::new(&[0x30, 0x80, 0, 0]).read().err(),
            Some(DerError::IndefiniteLength)
        );
        assert_eq!(
            Reader::new(&[0x1f, 0x01, 0x00]).read().err(),
            Some(DerError::HighTagNumber)
        );
        assert_eq!(
            Reader::new(&[0x04, 0x85, 1, 0, 0, 0, 0]).read().err(),
            Some(DerError::LengthTooLarge)
        );
        assert_eq!(
            Reader::new(&[0x04, 0x84, 0xff, 0xff, 0xff, 0xff])
                .read()
                .err(),
            Some(DerError::Truncated)
        );
        assert_eq!(
            Reader::new(&[0x04, 0x82, 0x01]).read().err(),
            Some(DerError::Truncated)
        );
        assert_eq!(
            Reader::new(&[0x04, 0x81, 0x01, 0x00]).read().err(),
            Some(DerError::NonMinimalLength)
        );
        assert_eq!(
            Reader::new(&[0x04, 0x82, 0x00, 0x80]).read().err(),
            Some(DerError::NonMinimalLength)
        );
        assert_eq!(
            parse_single(&[0x05, 0x00, 0x00], TAG_NULL, "NULL").err(),
            Some(DerError::TrailingData { what: "NULL" })
        );
    }

    #[test]
    fn enumerated_values() {
        assert_eq!(enumerated(1), vec![0x0a, 0x01, 0x01]);
        assert_eq!(enumerated(0x80), vec![0x0a, 0x02, 0x00, 0x80]);
    }

    #[test]
    fn generalized_time_format() {
        let at = time::macros::datetime!(2026-03-05 07:08:09.75 UTC);
        assert_eq!(generalized_time(at)[2..], *b"20260305070809Z");
    }
}
