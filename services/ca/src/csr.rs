//! Inspection of PKCS#10 certificate signing requests (x509-parser): PEM/DER structure, key
//! type and strength, self-signature, requested names.
//!
//! Every error is about the request field `csr_pem` ([`CsrError::FIELD`]); the service maps
//! them to `INVALID_ARGUMENT`. Garbage input yields an error, never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::error::X509Error;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Name;

use crate::keys::{KeyError, PublicKeyKind, SubjectPublicKey};
use crate::profile::{RequestError, SubjectFields, normalize_dns_name};

/// Largest CSR (PEM text or DER) we look at.
pub const MAX_CSR_LEN: usize = 64 * 1024;

/// Signature algorithms we accept on a CSR (no SHA-1).
const ACCEPTED_SIGNATURE_OIDS: &[&str] = &[
    "1.2.840.113549.1.1.11", // sha256WithRSAEncryption
    "1.2.840.113549.1.1.12", // sha384WithRSAEncryption
    "1.2.840.113549.1.1.13", // sha512WithRSAEncryption
    "1.2.840.113549.1.1.10", // RSASSA-PSS (hash checked by the verifier)
    "1.2.840.10045.4.3.2",   // ecdsa-with-SHA256
    "1.2.840.10045.4.3.3",   // ecdsa-with-SHA384
    "1.3.101.112",           // Ed25519
];

/// Why a CSR was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    /// Input larger than [`MAX_CSR_LEN`].
    #[error("csr_pem is {len} bytes long, at most {max} allowed")]
    TooLarge {
        /// Input length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not a PEM document.
    #[error("csr_pem is not valid PEM: {reason}")]
    MalformedPem {
        /// What is wrong.
        reason: String,
    },
    /// A PEM block of another kind (e.g. a certificate or a private key).
    #[error("csr_pem holds a {label:?} PEM block; expected \"CERTIFICATE REQUEST\"")]
    WrongPemLabel {
        /// The label found (truncated).
        label: String,
    },
    /// More than one PEM block.
    #[error("csr_pem must contain exactly one PEM block, found {count}")]
    MultiplePemBlocks {
        /// Blocks found.
        count: usize,
    },
    /// The DER is not a PKCS#10 CertificationRequest.
    #[error("csr_pem is not a valid PKCS#10 certification request: {reason}")]
    MalformedDer {
        /// The parser's complaint.
        reason: String,
    },
    /// Bytes after the CertificationRequest.
    #[error("csr_pem has {count} bytes of trailing data after the certification request")]
    TrailingData {
        /// Number of extra bytes.
        count: usize,
    },
    /// A version other than v1 (0).
    #[error("csr_pem has unsupported version {version} (only version 1 exists)")]
    UnsupportedVersion {
        /// The version number field.
        version: u32,
    },
    /// The subject public key is of a type or size we do not certify.
    #[error("csr_pem: {0}")]
    Key(#[from] KeyError),
    /// Signed with an algorithm we do not accept (SHA-1, unknown, ...).
    #[error("csr_pem is signed with an unsupported signature algorithm ({oid})")]
    UnsupportedSignatureAlgorithm {
        /// The signature algorithm OID.
        oid: String,
    },
    /// The self-signature does not verify with the CSR's public key.
    #[error(
        "csr_pem: the signature does not verify with the request's public key (altered or corrupted request)"
    )]
    BadSignature,
    /// The extension request could not be parsed.
    #[error("csr_pem: malformed {extension} extension in the extension request: {reason}")]
    MalformedExtension {
        /// Which extension.
        extension: &'static str,
        /// The parser's complaint.
        reason: String,
    },
    /// A subjectAltName of a kind we do not certify (e-mail, URI, ...).
    #[error(
        "csr_pem requests a {kind} subject alternative name; only DNS names and IP addresses can be certified"
    )]
    UnsupportedSubjectAltName {
        /// The GeneralName kind.
        kind: &'static str,
    },
    /// An IP address SAN that is neither 4 nor 16 octets.
    #[error("csr_pem requests an IP address SAN of {len} octets (expected 4 or 16)")]
    InvalidIpAddress {
        /// Octets found.
        len: usize,
    },
    /// A requested DNS name is not valid.
    #[error("csr_pem: {0}")]
    InvalidName(RequestError),
    /// Neither a subjectAltName nor a usable common name.
    #[error(
        "csr_pem names no DNS name or IP address (no subjectAltName extension and no common name)"
    )]
    NoNames,
}

impl CsrError {
    /// The request field all CSR errors are about.
    pub const FIELD: &'static str = "csr_pem";

    /// The request field the error is about (always `csr_pem`).
    pub fn field(&self) -> &'static str {
        Self::FIELD
    }
}

/// What a valid CSR asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InspectedCsr {
    /// The subject public key, checked against the key policy.
    pub public_key: SubjectPublicKey,
    /// Lower-case DNS names from the subjectAltName extension request, or from the common name
    /// if there is no subjectAltName; duplicates removed, in request order.
    pub dns_names: Vec<String>,
    /// IP addresses from the subjectAltName extension request (or a common name that is an IP).
    pub ip_addresses: Vec<IpAddr>,
    /// The subject attributes as written in the CSR (informational; the CA decides what goes
    /// into the certificate).
    pub subject: SubjectFields,
    /// SHA-256 over the DER SubjectPublicKeyInfo, lower-case hex.
    pub spki_sha256_hex: String,
}

impl InspectedCsr {
    /// Key type and strength.
    pub fn key_kind(&self) -> PublicKeyKind {
        self.public_key.kind()
    }
}

/// Inspects a PEM CSR (`-----BEGIN CERTIFICATE REQUEST-----`, or the old
/// `NEW CERTIFICATE REQUEST` label).
pub fn inspect_csr_pem(csr_pem: &str) -> Result<InspectedCsr, CsrError> {
    if csr_pem.len() > MAX_CSR_LEN {
        return Err(CsrError::TooLarge {
            len: csr_pem.len(),
            max: MAX_CSR_LEN,
        });
    }
    let blocks = pem::parse_many(csr_pem).map_err(|e| CsrError::MalformedPem {
        reason: e.to_string(),
    })?;
    let block = match blocks.as_slice() {
        [] => {
            return Err(CsrError::MalformedPem {
                reason: "no -----BEGIN CERTIFICATE REQUEST----- block found".into(),
            });
        }
        [one] => one,
        more => return Err(CsrError::MultiplePemBlocks { count: more.len() }),
    };
    match block.tag() {
        "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST" => inspect_csr_der(block.contents()),
        other => Err(CsrError::WrongPemLabel {
            label: other.chars().take(64).collect(),
        }),
    }
}

/// Inspects a DER CSR.
pub fn inspect_csr_der(der: &[u8]) -> Result<InspectedCsr, CsrError> {
    if der.len() > MAX_CSR_LEN {
        return Err(CsrError::TooLarge {
            len: der.len(),
            max: MAX_CSR_LEN,
        });
    }
    let (rest, csr) =
        X509CertificationRequest::from_der(der).map_err(|e| CsrError::MalformedDer {
            reason: e.to_string(),
        })?;
    if !rest.is_empty() {
        return Err(CsrError::TrailingData { count: rest.len() });
    }
    let info = &csr.certification_request_info;
    if info.version.0 != 0 {
        return Err(CsrError::UnsupportedVersion {
            version: info.version.0,
        });
    }

    // Key policy first: a weak key is reported as such, not as a signature problem.
    let public_key = SubjectPublicKey::from_parsed(&info.subject_pki)?;

    let sig_oid = csr.signature_algorithm.algorithm.to_id_string();
    if !ACCEPTED_SIGNATURE_OIDS.contains(&sig_oid.as_str()) {
        return Err(CsrError::UnsupportedSignatureAlgorithm { oid: sig_oid });
    }
    csr.verify_signature().map_err(|e| match e {
        X509Error::SignatureUnsupportedAlgorithm => CsrError::UnsupportedSignatureAlgorithm {
            oid: sig_oid.clone(),
        },
        _ => CsrError::BadSignature,
    })?;

    let subject = subject_fields(&info.subject);
    let (mut dns_names, mut ip_addresses, saw_san) = requested_names(&csr)?;
    if !saw_san || (dns_names.is_empty() && ip_addresses.is_empty()) {
        match subject.common_name.as_deref() {
            Some(cn) => match cn.parse::<IpAddr>() {
                Ok(ip) => ip_addresses.push(ip),
                Err(_) => dns_names.push(normalize_dns_name(cn).map_err(CsrError::InvalidName)?),
            },
            None => return Err(CsrError::NoNames),
        }
    }
    let spki_sha256_hex = public_key.spki_sha256_hex();
    Ok(InspectedCsr {
        public_key,
        dns_names,
        ip_addresses,
        subject,
        spki_sha256_hex,
    })
}

type Names = (Vec<String>, Vec<IpAddr>, bool);

fn requested_names(csr: &X509CertificationRequest<'_>) -> Result<Names, CsrError> {
    let mut dns: Vec<String> = Vec::new();
    let mut ips: Vec<IpAddr> = Vec::new();
    let mut saw_san = false;
    let Some(extensions) = csr.requested_extensions() else {
        return Ok((dns, ips, saw_san));
    };
    for ext in extensions {
        match ext {
            ParsedExtension::SubjectAlternativeName(san) => {
                saw_san = true;
                for name in &san.general_names {
                    match name {
                        GeneralName::DNSName(d) => {
                            let n = normalize_dns_name(d).map_err(CsrError::InvalidName)?;
                            if !dns.contains(&n) {
                                dns.push(n);
                            }
                        }
                        GeneralName::IPAddress(bytes) => {
                            let ip = ip_from_bytes(bytes)?;
                            if !ips.contains(&ip) {
                                ips.push(ip);
                            }
                        }
                        GeneralName::RFC822Name(_) => {
                            return Err(CsrError::UnsupportedSubjectAltName { kind: "e-mail" });
                        }
                        GeneralName::URI(_) => {
                            return Err(CsrError::UnsupportedSubjectAltName { kind: "URI" });
                        }
                        GeneralName::OtherName(..) => {
                            return Err(CsrError::UnsupportedSubjectAltName { kind: "otherName" });
                        }
                        GeneralName::DirectoryName(_) => {
                            return Err(CsrError::UnsupportedSubjectAltName {
                                kind: "directoryName",
                            });
                        }
                        GeneralName::RegisteredID(_) => {
                            return Err(CsrError::UnsupportedSubjectAltName {
                                kind: "registeredID",
                            });
                        }
                        GeneralName::X400Address(_) | GeneralName::EDIPartyName(_) => {
                            return Err(CsrError::UnsupportedSubjectAltName {
                                kind: "X.400/EDI party",
                            });
                        }
                        GeneralName::Invalid(..) => {
                            return Err(CsrError::MalformedExtension {
                                extension: "subjectAltName",
                                reason: "invalid GeneralName encoding".into(),
                            });
                        }
                    }
                }
            }
            ParsedExtension::ParseError { error } => {
                return Err(CsrError::MalformedExtension {
                    extension: "requested",
                    reason: error.to_string(),
                });
            }
            // Key usage, basic constraints etc. requested by the applicant are ignored: the
            // CA's profile decides them.
            _ => {}
        }
    }
    Ok((dns, ips, saw_san))
}

fn ip_from_bytes(bytes: &[u8]) -> Result<IpAddr, CsrError> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Ok(IpAddr::V4(Ipv4Addr::from(v4)));
    }
    if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
        return Ok(IpAddr::V6(Ipv6Addr::from(v6)));
    }
    Err(CsrError::InvalidIpAddress { len: bytes.len() })
}

fn first_text<'a>(
    mut attrs: impl Iterator<Item = &'a x509_parser::x509::AttributeTypeAndValue<'a>>,
) -> Option<String> {
    attrs
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_string)
}

fn subject_fields(name: &X509Name<'_>) -> SubjectFields {
    SubjectFields {
        common_name: first_text(name.iter_common_name()),
        organization: first_text(name.iter_organization()),
        organizational_unit: first_text(name.iter_organizational_unit()),
        country: first_text(name.iter_country()),
        state_or_province: first_text(name.iter_state_or_province()),
        locality: first_text(name.iter_locality()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeyAlgorithm, generate_key};

    fn rcgen_csr(alg: KeyAlgorithm, sans: &[&str], cn: Option<&str>) -> (String, Vec<u8>) {
        let key = generate_key(alg).expect("key");
        let kp = rcgen::KeyPair::try_from(key.private_key.expose_pkcs8_der()).expect("kp");
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
        }
        let csr = params.serialize_request(&kp).expect("csr");
        (csr.pem().expect("pem"), csr.der().to_vec())
    }

    #[test]
    fn accepts_every_supported_key_type() {
        for alg in KeyAlgorithm::ALL {
            let (pem, _) = rcgen_csr(
                alg,
                &["Www.Example.com", "10.1.2.3"],
                Some("www.example.com"),
            );
            let csr = inspect_csr_pem(&pem).expect("inspect");
            assert_eq!(csr.key_kind(), alg.public_key_kind());
            assert_eq!(csr.dns_names, vec!["www.example.com"]);
            assert_eq!(
                csr.ip_addresses,
                vec!["10.1.2.3".parse::<IpAddr>().expect("ip")]
            );
            assert_eq!(csr.subject.common_name.as_deref(), Some("www.example.com"));
            assert_eq!(csr.spki_sha256_hex, csr.public_key.spki_sha256_hex());
        }
    }

    #[test]
    fn falls_back_to_common_name() {
        let (pem, _) = rcgen_csr(KeyAlgorithm::EcdsaP256, &[], Some("Host.Example.org"));
        let csr = inspect_csr_pem(&pem).expect("inspect");
        assert_eq!(csr.dns_names, vec!["host.example.org"]);
        let (pem, _) = rcgen_csr(KeyAlgorithm::EcdsaP256, &[], None);
        assert_eq!(inspect_csr_pem(&pem), Err(CsrError::NoNames));
    }

    #[test]
    fn rejects_altered_signature_and_structure_errors() {
        let (_, der) = rcgen_csr(KeyAlgorithm::EcdsaP256, &["a.example"], None);
        // Flip a bit inside the signature (the last bytes of the DER).
        let mut altered = der.clone();
        let last = altered.len() - 3;
        altered[last] ^= 0x01;
        assert_eq!(inspect_csr_der(&altered), Err(CsrError::BadSignature));
        // Flip a bit in the requested name: the signature no longer matches.
        let mut altered = der.clone();
        let pos = altered
            .windows(9)
            .position(|w| w == b"a.example")
            .expect("name in der");
        altered[pos] = b'b';
        assert_eq!(inspect_csr_der(&altered), Err(CsrError::BadSignature));
        // Trailing data.
        let mut trailing = der.clone();
        trailing.extend_from_slice(&[0, 0]);
        assert_eq!(
            inspect_csr_der(&trailing),
            Err(CsrError::TrailingData { count: 2 })
        );
    }

    #[test]
    fn pem_errors_are_precise() {
        assert!(matches!(
            inspect_csr_pem("hello"),
            Err(CsrError::MalformedPem { .. })
        ));
        let cert_label = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            inspect_csr_pem(cert_label),
            Err(CsrError::WrongPemLabel { .. })
        ));
        let (pem, _) = rcgen_csr(KeyAlgorithm::EcdsaP256, &["a.example"], None);
        assert_eq!(
            inspect_csr_pem(&format!("{pem}{pem}")),
            Err(CsrError::MultiplePemBlocks { count: 2 })
        );
        let big = "A".repeat(MAX_CSR_LEN + 1);
        assert!(matches!(
            inspect_csr_pem(&big),
            Err(CsrError::TooLarge { .. })
        ));
        for e in [
            CsrError::BadSignature,
            CsrError::NoNames,
            CsrError::Key(KeyError::RsaKeyTooSmall { bits: 1024 }),
        ] {
            assert_eq!(e.field(), "csr_pem");
            assert!(e.to_string().starts_with("csr_pem"), "{e}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        let (pem, der) = rcgen_csr(
            KeyAlgorithm::Rsa2048,
            &["a.example", "b.example"],
            Some("a.example"),
        );
        // Every truncation of a valid DER CSR.
        for len in 0..der.len() {
            assert!(inspect_csr_der(&der[..len]).is_err(), "truncated at {len}");
        }
        // Every truncation of the PEM text.
        for len in (0..pem.len()).step_by(7) {
            let _ = inspect_csr_pem(&pem[..len]);
        }
        // Single-byte corruptions everywhere.
        for i in 0..der.len() {
            let mut d = der.clone();
            d[i] ^= 0xff;
            let _ = inspect_csr_der(&d);
        }
        // Pseudo-random bytes (a fixed xorshift so the test is reproducible).
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..2000 {
            let len = (round % 300) + 1;
            let mut buf = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf.push((x & 0xff) as u8);
            }
            if round % 2 == 0 {
                buf[0] = 0x30; // looks like a SEQUENCE
            }
            let _ = inspect_csr_der(&buf);
            let text = String::from_utf8_lossy(&buf);
            let _ = inspect_csr_pem(&format!(
                "-----BEGIN CERTIFICATE REQUEST-----\n{text}\n-----END CERTIFICATE REQUEST-----\n"
            ));
        }
        let _ = inspect_csr_pem("-----BEGIN CERTIFICATE REQUEST-----\n");
        let _ = inspect_csr_pem(
            "-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n",
        );
        let _ = inspect_csr_pem("\u{0}\u{ffff}-----BEGIN");
    }
}
