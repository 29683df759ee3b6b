//! Issuing end-entity TLS certificates with the intermediate CA.
//!
//! Issuance is two steps, so that no signed certificate can leave the CA before the service
//! has durably recorded what it is about to release (as Boulder records the serial and a
//! precertificate before signing):
//!
//! 1. [`Authority::prepare`] checks the request, picks a random serial and the validity, signs,
//!    parses the result back and self-checks it, and returns a [`PendingCertificate`]. Its
//!    [`IssuanceIntent`] holds the serial, the SHA-256 of the DER TBSCertificate and the
//!    validity window; the signed DER stays private.
//! 2. After the caller appended the intent to the event log, [`PendingCertificate::release`]
//!    (given the intent as recorded) hands out the [`IssuedCertificate`]. The TBS hash in the
//!    intent is computed from the very DER that is released, so the event and the certificate
//!    always agree.
//!
//! If the process dies between the two steps, the recorded serial is known and no
//! certificate with it was ever handed out.

use std::fmt;
use std::net::IpAddr;

use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::authority::Authority;
use crate::csr::InspectedCsr;
use crate::der::{pem_encode, sha256_hex};
use crate::keys::SubjectPublicKey;
use crate::profile::{
    RequestError, SubjectFields, check_names, end_entity_key_usages, truncate_to_second,
};
use crate::serial::{SerialError, SerialNumber};

/// What to certify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueRequest {
    /// The subject's public key: from a CSR ([`InspectedCsr::public_key`]) or a generated key
    /// ([`crate::GeneratedKey::public_key`]).
    pub public_key: SubjectPublicKey,
    /// DNS names (subjectAltName dNSName); normalized to lower case.
    pub dns_names: Vec<String>,
    /// IP addresses (subjectAltName iPAddress).
    pub ip_addresses: Vec<IpAddr>,
    /// Subject attributes.
    pub subject: SubjectFields,
    /// Requested validity in days; `None` for the issuer's default. Capped by policy.
    pub validity_days: Option<u32>,
}

impl IssueRequest {
    /// A request for `public_key` with no names yet.
    pub fn new(public_key: SubjectPublicKey) -> Self {
        Self {
            public_key,
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            subject: SubjectFields::default(),
            validity_days: None,
        }
    }

    /// A request for what a CSR asks: its key and names. The CSR's subject attributes are not
    /// copied (the CN is chosen from the names).
    pub fn from_csr(csr: &InspectedCsr) -> Self {
        Self {
            public_key: csr.public_key.clone(),
            dns_names: csr.dns_names.clone(),
            ip_addresses: csr.ip_addresses.clone(),
            subject: SubjectFields::default(),
            validity_days: None,
        }
    }
}

/// Why a certificate could not be prepared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssueError {
    /// The request is invalid (maps to `INVALID_ARGUMENT`, see [`RequestError::field`]).
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The intermediate is expired or not yet valid (maps to `FAILED_PRECONDITION`).
    #[error(
        "the issuing CA certificate is not valid at {now} (valid from {not_before} until {not_after}); rotate the intermediate CA"
    )]
    IssuerNotValid {
        /// Issuance time.
        now: OffsetDateTime,
        /// Intermediate notBefore.
        not_before: OffsetDateTime,
        /// Intermediate notAfter.
        not_after: OffsetDateTime,
    },
    /// Serial generation failed (internal).
    #[error(transparent)]
    Serial(#[from] SerialError),
    /// Signing failed (internal).
    #[error("signing the certificate failed: {reason}")]
    Signing {
        /// rcgen's error.
        reason: String,
    },
    /// The signed certificate did not match what was asked (internal; never released).
    #[error("the signed certificate failed its self-check: {reason}")]
    SelfCheck {
        /// What did not match.
        reason: String,
    },
}

impl IssueError {
    /// The request field at fault, if the error is the caller's.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            IssueError::Request(e) => Some(e.field()),
            _ => None,
        }
    }
}

/// The facts to record durably before the certificate is released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuanceIntent {
    /// The certificate's serial.
    pub serial: SerialNumber,
    /// SHA-256 of the DER TBSCertificate of the certificate that will be released, hex.
    pub tbs_sha256: String,
    /// notBefore.
    pub not_before: OffsetDateTime,
    /// notAfter.
    pub not_after: OffsetDateTime,
    /// DNS names as certified.
    pub dns_names: Vec<String>,
    /// IP addresses as certified.
    pub ip_addresses: Vec<IpAddr>,
    /// SHA-256 of the certified SubjectPublicKeyInfo, hex.
    pub subject_spki_sha256: String,
    /// SHA-256 fingerprint of the issuing (intermediate) certificate, hex.
    pub issuer_sha256_fingerprint: String,
    /// True if the validity is shorter than requested (policy cap or issuer expiry).
    pub validity_capped: bool,
}

/// A signed certificate held back until its intent is recorded.
pub struct PendingCertificate {
    intent: IssuanceIntent,
    der: Vec<u8>,
    chain_pem: String,
}

impl fmt::Debug for PendingCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingCertificate")
            .field("intent", &self.intent)
            .finish_non_exhaustive()
    }
}

/// `release` was given an intent that is not this certificate's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the recorded intent (serial {recorded_serial}, tbs sha256 {recorded_tbs_sha256}) is not this certificate's (serial {serial}, tbs sha256 {tbs_sha256}); record this certificate's intent before releasing it"
)]
pub struct ReleaseError {
    /// The pending certificate's serial.
    pub serial: SerialNumber,
    /// Its TBS hash.
    pub tbs_sha256: String,
    /// The serial passed in.
    pub recorded_serial: SerialNumber,
    /// The TBS hash passed in.
    pub recorded_tbs_sha256: String,
}

impl PendingCertificate {
    /// What to record before releasing.
    pub fn intent(&self) -> &IssuanceIntent {
        &self.intent
    }

    /// The serial.
    pub fn serial(&self) -> &SerialNumber {
        &self.intent.serial
    }

    /// SHA-256 of the DER TBSCertificate, hex.
    pub fn tbs_sha256(&self) -> &str {
        &self.intent.tbs_sha256
    }

    /// notBefore.
    pub fn not_before(&self) -> OffsetDateTime {
        self.intent.not_before
    }

    /// notAfter.
    pub fn not_after(&self) -> OffsetDateTime {
        self.intent.not_after
    }

    /// Releases the certificate. Call only after `recorded` — the intent as durably stored —
    /// was committed; its serial and TBS hash must be this certificate's.
    pub fn release(self, recorded: &IssuanceIntent) -> Result<IssuedCertificate, ReleaseError> {
        if recorded.serial != self.intent.serial || recorded.tbs_sha256 != self.intent.tbs_sha256 {
            return Err(ReleaseError {
                serial: self.intent.serial.clone(),
                tbs_sha256: self.intent.tbs_sha256.clone(),
                recorded_serial: recorded.serial.clone(),
                recorded_tbs_sha256: recorded.tbs_sha256.clone(),
            });
        }
        let pem = pem_encode("CERTIFICATE", &self.der);
        let sha256_fingerprint = sha256_hex(&self.der);
        Ok(IssuedCertificate {
            pem,
            sha256_fingerprint,
            der: self.der,
            serial: self.intent.serial,
            tbs_sha256: self.intent.tbs_sha256,
            not_before: self.intent.not_before,
            not_after: self.intent.not_after,
            chain_pem: self.chain_pem,
        })
    }
}

/// A released certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// DER.
    pub der: Vec<u8>,
    /// PEM.
    pub pem: String,
    /// Serial.
    pub serial: SerialNumber,
    /// notBefore.
    pub not_before: OffsetDateTime,
    /// notAfter.
    pub not_after: OffsetDateTime,
    /// SHA-256 of the DER certificate, lower-case hex.
    pub sha256_fingerprint: String,
    /// SHA-256 of the DER TBSCertificate, lower-case hex (equals the recorded intent's).
    pub tbs_sha256: String,
    /// Intermediate then root, PEM.
    pub chain_pem: String,
}

impl IssuedCertificate {
    /// Certificate followed by the chain (what a web server's `ssl_certificate` wants; the
    /// root may be left out by the deployer).
    pub fn full_chain_pem(&self) -> String {
        format!("{}{}", self.pem, self.chain_pem)
    }
}

impl Authority {
    /// Checks `request`, signs the certificate with the intermediate CA at time `now` and
    /// holds it back as a [`PendingCertificate`] until its intent is recorded.
    pub fn prepare(
        &self,
        request: &IssueRequest,
        now: OffsetDateTime,
    ) -> Result<PendingCertificate, IssueError> {
        request.subject.validate()?;
        let names = check_names(
            &request.dns_names,
            &request.ip_addresses,
            &request.subject,
            self.policy.max_names,
        )?;
        let issuer = self.intermediate();
        let now_s = truncate_to_second(now);
        if now_s < issuer.not_before || now_s > issuer.not_after {
            return Err(IssueError::IssuerNotValid {
                now: now_s,
                not_before: issuer.not_before,
                not_after: issuer.not_after,
            });
        }
        let mut validity = self.policy.validity(request.validity_days, now)?;
        if validity.not_before < issuer.not_before {
            validity.not_before = issuer.not_before;
        }
        if validity.not_after > issuer.not_after {
            tracing::warn!(
                requested_not_after = %validity.not_after,
                issuer_not_after = %issuer.not_after,
                "validity cut to the intermediate CA's notAfter"
            );
            validity.not_after = issuer.not_after;
            validity.capped = true;
        }
        let serial = SerialNumber::generate(self.serial_prefix)?;

        let mut params = rcgen::CertificateParams::default();
        params.serial_number = Some(serial.to_rcgen());
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        params.distinguished_name = request
            .subject
            .to_distinguished_name(names.common_name.as_deref())?;
        let mut sans = Vec::with_capacity(names.dns_names.len() + names.ip_addresses.len());
        for name in &names.dns_names {
            let ia5 = rcgen::string::Ia5String::try_from(name.as_str()).map_err(|_| {
                RequestError::InvalidDnsName {
                    name: name.clone(),
                    reason: "not an IA5 string",
                }
            })?;
            sans.push(rcgen::SanType::DnsName(ia5));
        }
        sans.extend(
            names
                .ip_addresses
                .iter()
                .copied()
                .map(rcgen::SanType::IpAddress),
        );
        params.subject_alt_names = sans;
        params.is_ca = rcgen::IsCa::ExplicitNoCa; // basicConstraints CA:FALSE, critical; SKI
        params.key_usages = end_entity_key_usages(request.public_key.kind());
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.key_identifier_method = rcgen::KeyIdMethod::Sha256;
        if let Some(url) = &self.urls.crl_distribution_point {
            params.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
                uris: vec![url.clone()],
            }];
        }
        if let Some(aia) = self.urls.authority_info_access_extension() {
            params.custom_extensions.push(aia);
        }

        let cert = params
            .signed_by(&request.public_key, &self.issuer)
            .map_err(|e| IssueError::Signing {
                reason: e.to_string(),
            })?;
        let der = cert.der().to_vec();
        let checked = self.self_check(&der, &serial, &request.public_key, &validity)?;

        tracing::debug!(serial = %serial, tbs_sha256 = %checked.tbs_sha256, "prepared certificate");
        Ok(PendingCertificate {
            intent: IssuanceIntent {
                serial,
                tbs_sha256: checked.tbs_sha256,
                not_before: validity.not_before,
                not_after: validity.not_after,
                dns_names: names.dns_names,
                ip_addresses: names.ip_addresses,
                subject_spki_sha256: checked.spki_sha256,
                issuer_sha256_fingerprint: issuer.sha256_fingerprint.clone(),
                validity_capped: validity.capped,
            },
            der,
            chain_pem: self.chain_pem().to_string(),
        })
    }

    /// Parses the signed DER back and checks it is what we meant to sign, signed by the
    /// intermediate. Returns the TBS and SPKI hashes.
    fn self_check(
        &self,
        der: &[u8],
        serial: &SerialNumber,
        public_key: &SubjectPublicKey,
        validity: &crate::profile::Validity,
    ) -> Result<Checked, IssueError> {
        let fail = |reason: String| IssueError::SelfCheck { reason };
        let (rest, cert) =
            X509Certificate::from_der(der).map_err(|e| fail(format!("does not parse: {e}")))?;
        if !rest.is_empty() {
            return Err(fail("trailing data".into()));
        }
        let parsed_serial = SerialNumber::from_bytes(cert.raw_serial())
            .map_err(|e| fail(format!("serial: {e}")))?;
        if &parsed_serial != serial {
            return Err(fail(format!("serial {parsed_serial} != {serial}")));
        }
        let certified = SubjectPublicKey::from_parsed(cert.public_key())
            .map_err(|e| fail(format!("public key: {e}")))?;
        if !certified.same_key(public_key) {
            return Err(fail(
                "certified public key differs from the requested one".into(),
            ));
        }
        if cert.validity().not_before.to_datetime() != validity.not_before
            || cert.validity().not_after.to_datetime() != validity.not_after
        {
            return Err(fail("validity differs from the chosen window".into()));
        }
        let (_, issuer_cert) = X509Certificate::from_der(&self.intermediate().der)
            .map_err(|e| fail(format!("intermediate does not parse: {e}")))?;
        cert.verify_signature(Some(issuer_cert.public_key()))
            .map_err(|e| {
                fail(format!(
                    "signature does not verify with the intermediate's key: {e}"
                ))
            })?;
        if cert.issuer().as_raw() != issuer_cert.subject().as_raw() {
            return Err(fail(
                "issuer name differs from the intermediate's subject".into(),
            ));
        }
        Ok(Checked {
            tbs_sha256: sha256_hex(cert.tbs_certificate.as_ref()),
            spki_sha256: sha256_hex(cert.public_key().raw),
        })
    }
}

struct Checked {
    tbs_sha256: String,
    spki_sha256: String,
}
