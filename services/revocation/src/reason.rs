//! RFC 5280 5.3.1 revocation reason codes.

use std::fmt;
use std::str::FromStr;

/// Why a certificate was revoked (RFC 5280 5.3.1 `CRLReason`). Code 7 is not assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RevocationReason {
    /// 0 — no reason given. Written as an absent reason code in CRLs and OCSP responses, as
    /// RFC 5280 and the CA/Browser Forum Baseline Requirements ask.
    Unspecified,
    /// 1 — the subscriber's private key is (suspected to be) compromised.
    KeyCompromise,
    /// 2 — the CA's key is compromised.
    CaCompromise,
    /// 3 — the subject's name or other information changed.
    AffiliationChanged,
    /// 4 — replaced by another certificate.
    Superseded,
    /// 5 — no longer needed (e.g. the domain is no longer used).
    CessationOfOperation,
    /// 6 — on hold (not allowed for TLS subscriber certificates by the Baseline Requirements).
    CertificateHold,
    /// 8 — only in delta CRLs.
    RemoveFromCrl,
    /// 9 — the right to use the certificate was withdrawn.
    PrivilegeWithdrawn,
    /// 10 — attribute authority compromised.
    AaCompromise,
}

/// A reason code or name that is not an RFC 5280 reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown revocation reason {given:?} (expected an RFC 5280 reason: unspecified, keyCompromise, cACompromise, affiliationChanged, superseded, cessationOfOperation, certificateHold, removeFromCRL, privilegeWithdrawn, aACompromise, or its code 0-10 except 7)"
)]
pub struct UnknownReason {
    /// What was given (truncated).
    pub given: String,
}

impl RevocationReason {
    /// Every reason, in code order.
    pub const ALL: [RevocationReason; 10] = [
        RevocationReason::Unspecified,
        RevocationReason::KeyCompromise,
        RevocationReason::CaCompromise,
        RevocationReason::AffiliationChanged,
        RevocationReason::Superseded,
        RevocationReason::CessationOfOperation,
        RevocationReason::CertificateHold,
        RevocationReason::RemoveFromCrl,
        RevocationReason::PrivilegeWithdrawn,
        RevocationReason::AaCompromise,
    ];

    /// The RFC 5280 `CRLReason` value.
    pub fn code(self) -> u8 {
        match self {
            RevocationReason::Unspecified => 0,
            RevocationReason::KeyCompromise => 1,
            RevocationReason::CaCompromise => 2,
            RevocationReason::AffiliationChanged => 3,
            RevocationReason::Superseded => 4,
            RevocationReason::CessationOfOperation => 5,
            RevocationReason::CertificateHold => 6,
            RevocationReason::RemoveFromCrl => 8,
            RevocationReason::PrivilegeWithdrawn => 9,
            RevocationReason::AaCompromise => 10,
        }
    }

    /// The reason with the given `CRLReason` value.
    pub fn from_code(code: u8) -> Result<Self, UnknownReason> {
        Self::ALL
            .into_iter()
            .find(|r| r.code() == code)
            .ok_or_else(|| UnknownReason {
                given: code.to_string(),
            })
    }

    /// The RFC 5280 ASN.1 name (`keyCompromise`, `cACompromise`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationReason::Unspecified => "unspecified",
            RevocationReason::KeyCompromise => "keyCompromise",
            RevocationReason::CaCompromise => "cACompromise",
            RevocationReason::AffiliationChanged => "affiliationChanged",
            RevocationReason::Superseded => "superseded",
            RevocationReason::CessationOfOperation => "cessationOfOperation",
            RevocationReason::CertificateHold => "certificateHold",
            RevocationReason::RemoveFromCrl => "removeFromCRL",
            RevocationReason::PrivilegeWithdrawn => "privilegeWithdrawn",
            RevocationReason::AaCompromise => "aACompromise",
        }
    }

    /// Whether the CA/Browser Forum TLS Baseline Requirements (7.2.2) allow this reason for a
    /// subscriber certificate: unspecified, keyCompromise, affiliationChanged, superseded,
    /// cessationOfOperation, privilegeWithdrawn.
    pub fn allowed_for_tls_subscriber(self) -> bool {
        matches!(
            self,
            RevocationReason::Unspecified
                | RevocationReason::KeyCompromise
                | RevocationReason::AffiliationChanged
                | RevocationReason::Superseded
                | RevocationReason::CessationOfOperation
                | RevocationReason::PrivilegeWithdrawn
        )
    }

    pub(crate) fn to_rcgen(self) -> rcgen::RevocationReason {
        match self {
            RevocationReason::Unspecified => rcgen::RevocationReason::Unspecified,
            RevocationReason::KeyCompromise => rcgen::RevocationReason::KeyCompromise,
            RevocationReason::CaCompromise => rcgen::RevocationReason::CaCompromise,
            RevocationReason::AffiliationChanged => rcgen::RevocationReason::AffiliationChanged,
            RevocationReason::Superseded => rcgen::RevocationReason::Superseded,
            RevocationReason::CessationOfOperation => rcgen::RevocationReason::CessationOfOperation,
            RevocationReason::CertificateHold => rcgen::RevocationReason::CertificateHold,
            RevocationReason::RemoveFromCrl => rcgen::RevocationReason::RemoveFromCrl,
            RevocationReason::PrivilegeWithdrawn => rcgen::RevocationReason::PrivilegeWithdrawn,
            RevocationReason::AaCompromise => rcgen::RevocationReason::AaCompromise,
        }
    }
}

impl fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RevocationReason {
    type Err = UnknownReason;

    /// Accepts the RFC name in any case and with or without `_`/`-` separators
    /// (`keyCompromise`, `key_compromise`, `KEY-COMPROMISE`), or the numeric code.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let unknown = || UnknownReason {
            given: s.chars().take(64).collect(),
        };
        let trimmed = s.trim();
        if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
            return trimmed
                .parse::<u8>()
                .ok()
                .and_then(|c| Self::from_code(c).ok())
                .ok_or_else(unknown);
        }
        let wanted: String = trimmed
            .chars()
            .filter(|c| *c != '_' && *c != '-')
            .collect::<String>()
            .to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|r| r.as_str().to_ascii_lowercase() == wanted)
            .ok_or_else(unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_names_round_trip() {
        for reason in RevocationReason::ALL {
            assert_eq!(RevocationReason::from_code(reason.code()), Ok(reason));
            assert_eq!(reason.as_str().parse(), Ok(reason));
            assert_eq!(reason.code().to_string().parse(), Ok(reason));
            assert_eq!(reason.to_rcgen() as u8, reason.code());
        }
        assert!(RevocationReason::from_code(7).is_err());
        assert!(RevocationReason::from_code(11).is_err());
        assert_eq!(
            "key_compromise".parse(),
            Ok(RevocationReason::KeyCompromise)
        );
        assert_eq!(
            "CESSATION-OF-OPERATION".parse(),
            Ok(RevocationReason::CessationOfOperation)
        );
        assert!("7".parse::<RevocationReason>().is_err());
        assert!("stolen".parse::<RevocationReason>().is_err());
        assert!("".parse::<RevocationReason>().is_err());
    }

    #[test]
    fn baseline_requirements_reasons() {
        assert!(RevocationReason::KeyCompromise.allowed_for_tls_subscriber());
        assert!(!RevocationReason::CertificateHold.allowed_for_tls_subscriber());
        assert!(!RevocationReason::CaCompromise.allowed_for_tls_subscriber());
    }
}
