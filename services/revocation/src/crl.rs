//! Certificate revocation lists (RFC 5280 section 5): a complete (full) v2 CRL of the issuing
//! CA, signed by its key, with the authorityKeyIdentifier and CRL number extensions and a
//! reason code per entry.
//!
//! The CRL number is the caller's: it must increase with every CRL of this issuer (the
//! revocation service keeps it in its event stream). `nextUpdate` is `thisUpdate` plus the
//! configured validity: 7 days by default, never more than 10 days (CA/Browser Forum TLS
//! Baseline Requirements 4.9.7).

use certledger_ca::SerialNumber;
use time::{Duration, OffsetDateTime, UtcOffset};

use crate::der::pem_encode;
use crate::issuer::{CertIdHash, IssuerSigner};
use crate::reason::RevocationReason;

/// Default CRL validity: `nextUpdate = thisUpdate + 7 days`.
pub const DEFAULT_CRL_VALIDITY: Duration = Duration::days(7);
/// Longest CRL validity allowed (CA/Browser Forum: at most 10 days).
pub const MAX_CRL_VALIDITY: Duration = Duration::days(10);
/// Shortest CRL validity allowed.
pub const MIN_CRL_VALIDITY: Duration = Duration::minutes(1);

/// How CRLs are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrlConfig {
    /// `nextUpdate - thisUpdate`, within [`MIN_CRL_VALIDITY`]..=[`MAX_CRL_VALIDITY`].
    pub validity: Duration,
}

impl Default for CrlConfig {
    fn default() -> Self {
        Self {
            validity: DEFAULT_CRL_VALIDITY,
        }
    }
}

impl CrlConfig {
    /// Checks the validity bounds.
    pub fn validate(&self) -> Result<(), CrlError> {
        if self.validity < MIN_CRL_VALIDITY || self.validity > MAX_CRL_VALIDITY {
            return Err(CrlError::InvalidValidity {
                validity: self.validity,
            });
        }
        Ok(())
    }
}

/// One revoked certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RevokedEntry {
    /// Its serial.
    pub serial: SerialNumber,
    /// When the CA processed the revocation (written with whole seconds).
    pub revoked_at: OffsetDateTime,
    /// Why. [`RevocationReason::Unspecified`] is written as an absent reason code.
    pub reason: RevocationReason,
}

/// A signed CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCrl {
    /// DER (what `application/pkix-crl` serves).
    pub der: Vec<u8>,
    /// PEM (`X509 CRL`).
    pub pem: String,
    /// The CRL number.
    pub crl_number: u64,
    /// thisUpdate (whole seconds, UTC).
    pub this_update: OffsetDateTime,
    /// nextUpdate (whole seconds, UTC).
    pub next_update: OffsetDateTime,
    /// Number of revoked certificates listed.
    pub entries: usize,
    /// SHA-256 of the DER, lower-case hex (an ETag, and the CRL's id in events and logs).
    pub sha256_hex: String,
}

/// Why a CRL could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrlError {
    /// Validity outside the allowed bounds.
    #[error("CRL validity {validity} is out of range (1 minute to 10 days)")]
    InvalidValidity {
        /// The configured validity.
        validity: Duration,
    },
    /// A serial listed twice.
    #[error("serial {serial} is listed twice")]
    DuplicateSerial {
        /// The serial.
        serial: SerialNumber,
    },
    /// removeFromCRL belongs to delta CRLs only (RFC 5280 5.3.1); we make full CRLs.
    #[error("serial {serial}: reason {reason} is not allowed in a full CRL")]
    ReasonNotAllowed {
        /// The serial.
        serial: SerialNumber,
        /// The reason.
        reason: RevocationReason,
    },
    /// A time that cannot be encoded (outside the years 1950..=9999).
    #[error("{what} {at} cannot be encoded in a CRL")]
    TimeOutOfRange {
        /// Which time.
        what: &'static str,
        /// The time.
        at: OffsetDateTime,
    },
    /// The signing library failed (internal).
    #[error("signing the CRL failed: {reason}")]
    Signing {
        /// Its error.
        reason: String,
    },
}

fn whole_seconds_utc(at: OffsetDateTime) -> OffsetDateTime {
    let at = at.to_offset(UtcOffset::UTC);
    at.replace_nanosecond(0).unwrap_or(at)
}

fn check_year(what: &'static str, at: OffsetDateTime) -> Result<(), CrlError> {
    if (1950..=9999).contains(&at.year()) {
        Ok(())
    } else {
        Err(CrlError::TimeOutOfRange { what, at })
    }
}

/// Minimal big-endian bytes of `n` (one zero byte for 0).
fn u64_magnitude(n: u64) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let first = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len() - 1);
    bytes[first..].to_vec()
}

/// Builds and signs a full CRL of `issuer` listing `revoked`, numbered `crl_number`, with
/// `thisUpdate = this_update` (truncated to whole seconds) and `nextUpdate` from `config`.
/// Entries are written in serial order, so the same input always yields the same
/// TBSCertList.
pub fn build_crl(
    issuer: &IssuerSigner,
    config: &CrlConfig,
    crl_number: u64,
    this_update: OffsetDateTime,
    revoked: &[RevokedEntry],
) -> Result<SignedCrl, CrlError> {
    config.validate()?;
    let this_update = whole_seconds_utc(this_update);
    let next_update = this_update + config.validity;
    check_year("thisUpdate", this_update)?;
    check_year("nextUpdate", next_update)?;

    let mut sorted: Vec<&RevokedEntry> = revoked.iter().collect();
    sorted.sort_unstable_by(|a, b| {
        // Numeric order: shorter magnitudes are smaller.
        (a.serial.as_bytes().len(), a.serial.as_bytes())
            .cmp(&(b.serial.as_bytes().len(), b.serial.as_bytes()))
    });
    let mut revoked_certs = Vec::with_capacity(sorted.len());
    let mut previous: Option<&SerialNumber> = None;
    for entry in sorted {
        if previous == Some(&entry.serial) {
            return Err(CrlError::DuplicateSerial {
                serial: entry.serial.clone(),
            });
        }
        previous = Some(&entry.serial);
        if entry.reason == RevocationReason::RemoveFromCrl {
            return Err(CrlError::ReasonNotAllowed {
                serial: entry.serial.clone(),
                reason: entry.reason,
            });
        }
        let revoked_at = whole_seconds_utc(entry.revoked_at);
        check_year("revocation time", revoked_at)?;
        revoked_certs.push(rcgen::RevokedCertParams {
            serial_number: rcgen::SerialNumber::from_slice(entry.serial.as_bytes()),
            revocation_time: revoked_at,
            reason_code: Some(entry.reason.to_rcgen()),
            invalidity_date: None,
        });
    }
    let entries = revoked_certs.len();

    let params = rcgen::CertificateRevocationListParams {
        this_update,
        next_update,
        crl_number: rcgen::SerialNumber::from_slice(&u64_magnitude(crl_number)),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: rcgen::KeyIdMethod::PreSpecified(issuer.key_identifier().to_vec()),
    };
    let rcgen_issuer =
        rcgen::Issuer::from_ca_cert_der(&issuer.certificate_der().into(), issuer.key_pair())
            .map_err(|e| CrlError::Signing {
                reason: e.to_string(),
            })?;
    let crl = params
        .signed_by(&rcgen_issuer)
        .map_err(|e| CrlError::Signing {
            reason: e.to_string(),
        })?;
    let der = crl.der().to_vec();
    let pem = pem_encode("X509 CRL", &der);
    let sha256_hex = hex::encode(CertIdHash::Sha256.digest(&der));
    tracing::debug!(
        crl_number,
        entries,
        %this_update,
        %next_update,
        bytes = der.len(),
        "signed CRL"
    );
    Ok(SignedCrl {
        der,
        pem,
        crl_number,
        this_update,
        next_update,
        entries,
        sha256_hex,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_bounds() {
        assert!(CrlConfig::default().validate().is_ok());
        assert_eq!(CrlConfig::default().validity, Duration::days(7));
        for bad in [
            Duration::days(10) + Duration::seconds(1),
            Duration::seconds(59),
            Duration::ZERO,
            Duration::days(-1),
        ] {
            assert!(
                CrlConfig { validity: bad }.validate().is_err(),
                "{bad} accepted"
            );
        }
        assert!(
            CrlConfig {
                validity: Duration::days(10)
            }
            .validate()
            .is_ok()
        );
    }

    #[test]
    fn crl_number_magnitude() {
        assert_eq!(u64_magnitude(0), vec![0]);
        assert_eq!(u64_magnitude(42), vec![42]);
        assert_eq!(u64_magnitude(0x0100), vec![1, 0]);
        assert_eq!(u64_magnitude(u64::MAX), vec![0xff; 8]);
    }
}
