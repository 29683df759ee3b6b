//! Certificate serial numbers, Boulder style: one prefix byte in `0x01..=0x7F` followed by
//! 17 bytes (136 bits) from the CSPRNG. The result is 18 octets, always positive (the high bit
//! of the first octet is clear), never zero, well within RFC 5280's 20-octet limit.
//!
//! rcgen's default serial is derived from the subject public key (not random, and repeated when
//! the same key is certified twice); the CA therefore always sets one from here.

use std::fmt;

/// Length of the serials this CA generates, in octets.
pub const SERIAL_LEN: usize = 18;
/// Random octets in a generated serial (136 bits).
pub const SERIAL_RANDOM_LEN: usize = SERIAL_LEN - 1;
/// RFC 5280 4.1.2.2: at most 20 octets.
pub const MAX_SERIAL_LEN: usize = 20;

/// Errors about serial numbers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SerialError {
    /// The configured prefix byte is not within `0x01..=0x7F`.
    #[error("serial prefix {prefix:#04x} is out of range (0x01..=0x7f)")]
    PrefixOutOfRange {
        /// The prefix given.
        prefix: u8,
    },
    /// The system CSPRNG failed.
    #[error("the system random number generator failed")]
    Random,
    /// Not a hexadecimal serial.
    #[error("serial number is not hexadecimal")]
    NotHex,
    /// Zero or empty.
    #[error("serial number must be positive")]
    NotPositive,
    /// More than 20 octets when DER-encoded.
    #[error("serial number is {len} octets long (at most 20)")]
    TooLong {
        /// Octets needed in DER.
        len: usize,
    },
}

/// The first octet of every serial this CA instance generates (`0x01..=0x7F`). Distinct
/// prefixes for distinct CA instances make collisions between them impossible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SerialPrefix(u8);

impl SerialPrefix {
    /// Prefix `0x01`.
    pub const DEFAULT: SerialPrefix = SerialPrefix(0x01);

    /// Checks the range `0x01..=0x7F`.
    pub fn new(prefix: u8) -> Result<Self, SerialError> {
        if (0x01..=0x7f).contains(&prefix) {
            Ok(Self(prefix))
        } else {
            Err(SerialError::PrefixOutOfRange { prefix })
        }
    }

    /// The prefix byte.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl Default for SerialPrefix {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A certificate serial number: a positive integer, held as its big-endian magnitude without
/// leading zero octets. Its string form is lower-case hex without separators.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SerialNumber(Vec<u8>);

impl SerialNumber {
    /// A new random serial with the given prefix.
    pub fn generate(prefix: SerialPrefix) -> Result<Self, SerialError> {
        let mut bytes = [0u8; SERIAL_LEN];
        bytes[0] = prefix.get();
        aws_lc_rs::rand::fill(&mut bytes[1..]).map_err(|_| SerialError::Random)?;
        Ok(Self(bytes.to_vec()))
    }

    /// From big-endian bytes (e.g. the content octets of a DER INTEGER, which may carry one
    /// leading zero). Rejects zero and values needing more than 20 DER octets.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SerialError> {
        let first = bytes
            .iter()
            .position(|b| *b != 0)
            .ok_or(SerialError::NotPositive)?;
        let magnitude = &bytes[first..];
        let der_len = magnitude.len() + usize::from(magnitude[0] & 0x80 != 0);
        if der_len > MAX_SERIAL_LEN {
            return Err(SerialError::TooLong { len: der_len });
        }
        Ok(Self(magnitude.to_vec()))
    }

    /// Parses hex, upper or lower case, with or without `:` separators (as openssl prints).
    pub fn from_hex(text: &str) -> Result<Self, SerialError> {
        let digits: String = text.chars().filter(|c| *c != ':').collect();
        if digits.is_empty() || digits.len() > 2 * (MAX_SERIAL_LEN + 1) {
            return Err(SerialError::NotHex);
        }
        let padded = if digits.len() % 2 == 1 {
            format!("0{digits}")
        } else {
            digits
        };
        let bytes = hex::decode(padded).map_err(|_| SerialError::NotHex)?;
        Self::from_bytes(&bytes)
    }

    /// Big-endian magnitude, no leading zero octets.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Lower-case hex, no separators (even number of digits).
    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }

    pub(crate) fn to_rcgen(&self) -> rcgen::SerialNumber {
        rcgen::SerialNumber::from_slice(&self.0)
    }
}

impl fmt::Display for SerialNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for SerialNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SerialNumber({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn prefix_range_is_enforced() {
        assert!(SerialPrefix::new(0).is_err());
        assert!(SerialPrefix::new(0x80).is_err());
        assert!(SerialPrefix::new(0xff).is_err());
        assert_eq!(SerialPrefix::new(0x01).map(SerialPrefix::get), Ok(1));
        assert_eq!(SerialPrefix::new(0x7f).map(SerialPrefix::get), Ok(0x7f));
    }

    #[test]
    fn generated_serials_follow_the_prefix_rule_and_are_distinct() {
        let prefix = SerialPrefix::new(0x2a).expect("prefix");
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            let serial = SerialNumber::generate(prefix).expect("generate");
            assert_eq!(serial.as_bytes().len(), SERIAL_LEN);
            assert_eq!(serial.as_bytes()[0], 0x2a);
            let hex = serial.to_hex();
            assert_eq!(hex.len(), 36);
            assert!(hex.starts_with("2a"));
            assert_eq!(hex, hex.to_lowercase());
            assert!(seen.insert(hex));
        }
    }

    #[test]
    fn hex_round_trip_and_validation() {
        let serial = SerialNumber::generate(SerialPrefix::DEFAULT).expect("generate");
        assert_eq!(SerialNumber::from_hex(&serial.to_hex()), Ok(serial.clone()));
        assert_eq!(
            SerialNumber::from_hex(&serial.to_hex().to_uppercase()),
            Ok(serial.clone())
        );
        assert_eq!(SerialNumber::from_hex("0:0a"), SerialNumber::from_hex("a"));
        assert_eq!(SerialNumber::from_hex("00"), Err(SerialError::NotPositive));
        assert_eq!(SerialNumber::from_hex("zz"), Err(SerialError::NotHex));
        assert_eq!(SerialNumber::from_hex(""), Err(SerialError::NotHex));
        // 20 octets with the high bit set need 21 DER octets.
        assert_eq!(
            SerialNumber::from_bytes(&[0x80; 20]),
            Err(SerialError::TooLong { len: 21 })
        );
        assert!(SerialNumber::from_bytes(&[0x7f; 20]).is_ok());
        // DER content octets with a leading zero.
        assert_eq!(
            SerialNumber::from_bytes(&[0x00, 0x80]).map(|s| s.to_hex()),
            Ok("80".to_string())
        );
    }
}
