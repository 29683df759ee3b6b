//! Checks a certificate specification (what a customer orders).

use certledger_proto::common::v1::{
    CertificateSpec, DomainSlotKind, KeyAlgorithm, ValidationMethod,
};

use crate::error::DomainError;
use crate::names::MAX_MULTI_NAMES;

/// The longest validity a specification may ask for, in days (the CA/Browser Forum's
/// historical 398-day ceiling). Issuer policy caps it further (e.g. 200 days for public
/// issuers from 2026-03-15); 0 asks for the issuer's default.
pub const MAX_VALIDITY_DAYS: u32 = 398;

/// Longest issuer id.
pub const MAX_ISSUER_LEN: usize = 64;

/// Checks a specification: issuer present, key algorithm and validation method
/// specified (and known), domain slots sane, validity at most [`MAX_VALIDITY_DAYS`], and
/// slots the validation method can prove (wildcards need DNS-01, APPROVAL or NONE).
/// Errors name fields as `spec.<field>`.
pub fn validate_spec(spec: &CertificateSpec) -> Result<(), DomainError> {
    let issuer = spec.issuer.trim();
    if issuer.is_empty() {
        return Err(DomainError::invalid(
            "spec.issuer",
            "is required; name an issuer from the configuration, e.g. \"builtin\"",
        ));
    }
    if issuer != spec.issuer
        || spec.issuer.len() > MAX_ISSUER_LEN
        || spec
            .issuer
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(DomainError::invalid(
            "spec.issuer",
            format!(
                "{:?} is not an issuer id (at most {MAX_ISSUER_LEN} characters, no whitespace)",
                spec.issuer
            ),
        ));
    }
    match KeyAlgorithm::try_from(spec.key_algorithm) {
        Ok(KeyAlgorithm::Unspecified) => {
            return Err(DomainError::invalid(
                "spec.key_algorithm",
                "is not specified; choose ECDSA_P256, ECDSA_P384, RSA_2048, RSA_3072, RSA_4096 or ED25519",
            ));
        }
        Ok(_) => {}
        Err(_) => {
            return Err(DomainError::invalid(
                "spec.key_algorithm",
                format!("{} is not a known key algorithm", spec.key_algorithm),
            ));
        }
    }
    let method = match ValidationMethod::try_from(spec.validation_method) {
        Ok(ValidationMethod::Unspecified) => {
            return Err(DomainError::invalid(
                "spec.validation_method",
                "is not specified; choose APPROVAL, HTTP_01, DNS_01 or NONE",
            ));
        }
        Ok(method) => method,
        Err(_) => {
            return Err(DomainError::invalid(
                "spec.validation_method",
                format!(
                    "{} is not a known validation method",
                    spec.validation_method
                ),
            ));
        }
    };
    if spec.validity_days > MAX_VALIDITY_DAYS {
        return Err(DomainError::invalid(
            "spec.validity_days",
            format!(
                "{} days is longer than the {MAX_VALIDITY_DAYS} days allowed; use 0 for the issuer's default",
                spec.validity_days
            ),
        ));
    }
    let Some(slots) = spec.domain_slots else {
        return Err(DomainError::invalid(
            "spec.domain_slots",
            "is required; choose SINGLE, WILDCARD or MULTI slots",
        ));
    };
    let wildcards = match DomainSlotKind::try_from(slots.kind) {
        Ok(DomainSlotKind::Unspecified) => {
            return Err(DomainError::invalid(
                "spec.domain_slots.kind",
                "is not specified; choose SINGLE, WILDCARD or MULTI",
            ));
        }
        Err(_) => {
            return Err(DomainError::invalid(
                "spec.domain_slots.kind",
                format!("{} is not a known kind of domain slots", slots.kind),
            ));
        }
        Ok(DomainSlotKind::Single) => false,
        Ok(DomainSlotKind::Wildcard) => true,
        Ok(DomainSlotKind::Multi) => {
            if slots.max_names == 0 || slots.max_names > MAX_MULTI_NAMES {
                return Err(DomainError::invalid(
                    "spec.domain_slots.max_names",
                    format!(
                        "a MULTI certificate needs between 1 and {MAX_MULTI_NAMES} names, got {}",
                        slots.max_names
                    ),
                ));
            }
            slots.allow_wildcards
        }
    };
    if wildcards && method == ValidationMethod::Http01 {
        return Err(DomainError::invalid(
            "spec.validation_method",
            "HTTP-01 cannot validate wildcard names; choose DNS_01 (or APPROVAL for a private CA)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use certledger_proto::common::v1::DomainSlots;

    fn good() -> CertificateSpec {
        CertificateSpec {
            issuer: "builtin".into(),
            key_algorithm: KeyAlgorithm::EcdsaP256 as i32,
            validity_days: 0,
            domain_slots: Some(DomainSlots {
                kind: DomainSlotKind::Single as i32,
                max_names: 0,
                allow_wildcards: false,
            }),
            validation_method: ValidationMethod::Http01 as i32,
            auto_renew: true,
        }
    }

    fn field_of(spec: CertificateSpec) -> Option<String> {
        validate_spec(&spec)
            .err()
            .and_then(|e| e.field().map(str::to_owned))
    }

    #[test]
    fn accepts_a_good_spec() {
        assert!(validate_spec(&good()).is_ok());
    }

    #[test]
    fn names_the_bad_field() {
        assert_eq!(
            field_of(CertificateSpec {
                issuer: "".into(),
                ..good()
            })
            .as_deref(),
            Some("spec.issuer")
        );
        assert_eq!(
            field_of(CertificateSpec {
                issuer: " a".into(),
                ..good()
            })
            .as_deref(),
            Some("spec.issuer")
        );
        assert_eq!(
            field_of(CertificateSpec {
                key_algorithm: 0,
                ..good()
            })
            .as_deref(),
            Some("spec.key_algorithm")
        );
        assert_eq!(
            field_of(CertificateSpec {
                key_algorithm: 99,
                ..good()
            })
            .as_deref(),
            Some("spec.key_algorithm")
        );
        assert_eq!(
            field_of(CertificateSpec {
                validation_method: 0,
                ..good()
            })
            .as_deref(),
            Some("spec.validation_method")
        );
        assert_eq!(
            field_of(CertificateSpec {
                validity_days: 399,
                ..good()
            })
            .as_deref(),
            Some("spec.validity_days")
        );
        assert_eq!(
            field_of(CertificateSpec {
                domain_slots: None,
                ..good()
            })
            .as_deref(),
            Some("spec.domain_slots")
        );
        let slots = |kind: DomainSlotKind, max_names, allow_wildcards| {
            Some(DomainSlots {
                kind: kind as i32,
                max_names,
                allow_wildcards,
            })
        };
        assert_eq!(
            field_of(CertificateSpec {
                domain_slots: slots(DomainSlotKind::Unspecified, 0, false),
                ..good()
            })
            .as_deref(),
            Some("spec.domain_slots.kind")
        );
        assert_eq!(
            field_of(CertificateSpec {
                domain_slots: slots(DomainSlotKind::Multi, 0, false),
                ..good()
            })
            .as_deref(),
            Some("spec.domain_slots.max_names")
        );
        assert_eq!(
            field_of(CertificateSpec {
                domain_slots: slots(DomainSlotKind::Multi, 101, false),
                ..good()
            })
            .as_deref(),
            Some("spec.domain_slots.max_names")
        );
        assert_eq!(
            field_of(CertificateSpec {
                domain_slots: slots(DomainSlotKind::Wildcard, 0, false),
                ..good()
            })
            .as_deref(),
            Some("spec.validation_method")
        );
        assert_eq!(
            field_of(CertificateSpec {
                domain_slots: slots(DomainSlotKind::Multi, 5, true),
                validation_method: ValidationMethod::Dns01 as i32,
                ..good()
            }),
            None
        );
    }
}
