//! Key pairs: generation for every supported algorithm, the secret PKCS#8 container, and
//! the subject public key a certificate is issued for (with the key-strength policy).

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature as lc_sig;
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;
use zeroize::Zeroizing;

use crate::der::{
    OID_EC_PUBLIC_KEY, OID_ED25519, OID_P256, OID_P384, OID_P521, OID_RSA_ENCRYPTION, sha256_hex,
};

/// Smallest RSA modulus we certify or accept in a CSR.
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus we accept (also the verifier's limit).
pub const MAX_RSA_BITS: usize = 8192;

/// The key algorithms the CA generates keys for. The gRPC service maps its proto enum onto
/// this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    /// ECDSA on NIST P-256 (signatures with SHA-256).
    EcdsaP256,
    /// ECDSA on NIST P-384 (signatures with SHA-384).
    EcdsaP384,
    /// RSA, 2048-bit modulus (PKCS#1 v1.5 signatures with SHA-256).
    Rsa2048,
    /// RSA, 3072-bit modulus.
    Rsa3072,
    /// RSA, 4096-bit modulus.
    Rsa4096,
    /// Ed25519.
    Ed25519,
}

impl KeyAlgorithm {
    /// Every algorithm, in a stable order.
    pub const ALL: [KeyAlgorithm; 6] = [
        KeyAlgorithm::EcdsaP256,
        KeyAlgorithm::EcdsaP384,
        KeyAlgorithm::Rsa2048,
        KeyAlgorithm::Rsa3072,
        KeyAlgorithm::Rsa4096,
        KeyAlgorithm::Ed25519,
    ];

    /// Stable lower-case name: `ecdsa-p256`, `ecdsa-p384`, `rsa-2048`, `rsa-3072`,
    /// `rsa-4096`, `ed25519`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::EcdsaP256 => "ecdsa-p256",
            KeyAlgorithm::EcdsaP384 => "ecdsa-p384",
            KeyAlgorithm::Rsa2048 => "rsa-2048",
            KeyAlgorithm::Rsa3072 => "rsa-3072",
            KeyAlgorithm::Rsa4096 => "rsa-4096",
            KeyAlgorithm::Ed25519 => "ed25519",
        }
    }

    /// The public key kind a key of this algorithm has.
    pub fn public_key_kind(self) -> PublicKeyKind {
        match self {
            KeyAlgorithm::EcdsaP256 => PublicKeyKind::EcdsaP256,
            KeyAlgorithm::EcdsaP384 => PublicKeyKind::EcdsaP384,
            KeyAlgorithm::Rsa2048 => PublicKeyKind::Rsa { bits: 2048 },
            KeyAlgorithm::Rsa3072 => PublicKeyKind::Rsa { bits: 3072 },
            KeyAlgorithm::Rsa4096 => PublicKeyKind::Rsa { bits: 4096 },
            KeyAlgorithm::Ed25519 => PublicKeyKind::Ed25519,
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyAlgorithm {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyAlgorithm::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| KeyError::UnknownAlgorithm {
                name: s.chars().take(64).collect(),
            })
    }
}

/// What kind of public key a certificate is issued for, as far as policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PublicKeyKind {
    /// RSA with the given modulus size (2048..=8192 bits).
    Rsa {
        /// Modulus size in bits.
        bits: usize,
    },
    /// ECDSA on NIST P-256.
    EcdsaP256,
    /// ECDSA on NIST P-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
}

impl PublicKeyKind {
    /// The [`KeyAlgorithm`] this key corresponds to, if it is one we also generate (RSA keys of
    /// unusual sizes such as 2560 bits are accepted in CSRs but have no `KeyAlgorithm`).
    pub fn key_algorithm(self) -> Option<KeyAlgorithm> {
        match self {
            PublicKeyKind::EcdsaP256 => Some(KeyAlgorithm::EcdsaP256),
            PublicKeyKind::EcdsaP384 => Some(KeyAlgorithm::EcdsaP384),
            PublicKeyKind::Ed25519 => Some(KeyAlgorithm::Ed25519),
            PublicKeyKind::Rsa { bits: 2048 } => Some(KeyAlgorithm::Rsa2048),
            PublicKeyKind::Rsa { bits: 3072 } => Some(KeyAlgorithm::Rsa3072),
            PublicKeyKind::Rsa { bits: 4096 } => Some(KeyAlgorithm::Rsa4096),
            PublicKeyKind::Rsa { .. } => None,
        }
    }

    /// Is this an RSA key?
    pub fn is_rsa(self) -> bool {
        matches!(self, PublicKeyKind::Rsa { .. })
    }

    /// rcgen's description of the key, used to write the SubjectPublicKeyInfo.
    pub(crate) fn rcgen_algorithm(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            PublicKeyKind::Rsa { .. } => &rcgen::PKCS_RSA_SHA256,
            PublicKeyKind::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            PublicKeyKind::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            PublicKeyKind::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }
}

impl fmt::Display for PublicKeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublicKeyKind::Rsa { bits } => write!(f, "RSA {bits}"),
            PublicKeyKind::EcdsaP256 => f.write_str("ECDSA P-256"),
            PublicKeyKind::EcdsaP384 => f.write_str("ECDSA P-384"),
            PublicKeyKind::Ed25519 => f.write_str("Ed25519"),
        }
    }
}

/// Errors about keys. They never contain key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A key algorithm name we do not know.
    #[error(
        "unknown key algorithm {name:?} (expected one of ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096, ed25519)"
    )]
    UnknownAlgorithm {
        /// The name given (truncated).
        name: String,
    },
    /// The cryptographic library failed to generate a key.
    #[error("generating a {algorithm} key failed")]
    Generation {
        /// The algorithm asked for.
        algorithm: KeyAlgorithm,
    },
    /// The SubjectPublicKeyInfo is not valid DER.
    #[error("malformed public key: {reason}")]
    MalformedPublicKey {
        /// What is wrong.
        reason: String,
    },
    /// A key type we do not certify (DSA, GOST, X25519, ...).
    #[error(
        "unsupported public key type {oid} (allowed: RSA >= 2048 bits, ECDSA P-256/P-384, Ed25519)"
    )]
    UnsupportedKeyType {
        /// The algorithm OID of the key.
        oid: String,
    },
    /// An elliptic curve we do not certify.
    #[error("unsupported elliptic curve {curve} (allowed: P-256, P-384)")]
    UnsupportedCurve {
        /// The curve (name or OID).
        curve: String,
    },
    /// RSA modulus below [`MIN_RSA_BITS`].
    #[error("RSA key of {bits} bits is too weak: at least 2048 bits are required")]
    RsaKeyTooSmall {
        /// The modulus size.
        bits: usize,
    },
    /// RSA modulus above [`MAX_RSA_BITS`].
    #[error("RSA key of {bits} bits is too large: at most 8192 bits are supported")]
    RsaKeyTooLarge {
        /// The modulus size.
        bits: usize,
    },
    /// RSA public exponent that is even, 1, or absurdly large.
    #[error("RSA public exponent is not acceptable (must be odd, >= 3 and fit in 64 bits)")]
    RsaBadExponent,
    /// A private key that cannot be parsed or is of an unsupported type.
    #[error("malformed or unsupported private key: {reason}")]
    MalformedPrivateKey {
        /// What is wrong (never key bytes).
        reason: &'static str,
    },
}

/// A private key in PKCS#8 DER form. The bytes are zeroed on drop, and neither `Debug` nor
/// `Display` print them: reading them needs the explicit [`PrivateKeyPkcs8::expose_pkcs8_der`]
/// or [`PrivateKeyPkcs8::expose_pkcs8_pem`].
#[derive(Clone)]
pub struct PrivateKeyPkcs8 {
    der: Zeroizing<Vec<u8>>,
}

impl PrivateKeyPkcs8 {
    /// Wraps PKCS#8 DER bytes. No validation: use [`PrivateKeyPkcs8::public_key`] or
    /// [`PrivateKeyPkcs8::algorithm`] to check the key.
    pub fn from_pkcs8_der(der: Vec<u8>) -> Self {
        Self {
            der: Zeroizing::new(der),
        }
    }

    /// Parses a PEM private key: `PRIVATE KEY` (PKCS#8), `EC PRIVATE KEY` (SEC1) or
    /// `RSA PRIVATE KEY` (PKCS#1); the latter two are converted to PKCS#8. The key must be one
    /// of the supported algorithms.
    pub fn from_pem(pem_text: &str) -> Result<Self, KeyError> {
        let block = pem::parse(pem_text).map_err(|_| KeyError::MalformedPrivateKey {
            reason: "not a PEM block",
        })?;
        let tag = block.tag().to_string();
        let contents = Zeroizing::new(block.into_contents());
        let key = match tag.as_str() {
            "PRIVATE KEY" => Self::from_pkcs8_der(contents.to_vec()),
            "EC PRIVATE KEY" => {
                let mut found = None;
                for alg in [
                    &lc_sig::ECDSA_P256_SHA256_ASN1_SIGNING,
                    &lc_sig::ECDSA_P384_SHA384_ASN1_SIGNING,
                ] {
                    if let Ok(kp) = lc_sig::EcdsaKeyPair::from_private_key_der(alg, &contents) {
                        let doc = kp.to_pkcs8v1().map_err(|_| KeyError::MalformedPrivateKey {
                            reason: "cannot convert the EC key to PKCS#8",
                        })?;
                        found = Some(Self::from_pkcs8_der(doc.as_ref().to_vec()));
                        break;
                    }
                }
                found.ok_or(KeyError::MalformedPrivateKey {
                    reason: "EC PRIVATE KEY is not a valid P-256 or P-384 key",
                })?
            }
            "RSA PRIVATE KEY" => {
                let kp = lc_sig::RsaKeyPair::from_der(&contents).map_err(|_| {
                    KeyError::MalformedPrivateKey {
                        reason: "RSA PRIVATE KEY is not a valid PKCS#1 RSA key",
                    }
                })?;
                let doc = kp.as_der().map_err(|_| KeyError::MalformedPrivateKey {
                    reason: "cannot convert the RSA key to PKCS#8",
                })?;
                Self::from_pkcs8_der(doc.as_ref().to_vec())
            }
            _ => {
                return Err(KeyError::MalformedPrivateKey {
                    reason: "expected a PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY PEM block",
                });
            }
        };
        // Make sure it is a key we support.
        key.algorithm()?;
        Ok(key)
    }

    /// The PKCS#8 DER bytes. Handle with care: this is the secret.
    pub fn expose_pkcs8_der(&self) -> &[u8] {
        &self.der
    }

    /// The key as a PKCS#8 `PRIVATE KEY` PEM block (for the explicit export call and for
    /// tools such as openssl). The string is zeroed on drop.
    pub fn expose_pkcs8_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(crate::der::pem_encode("PRIVATE KEY", &self.der))
    }

    /// Loads the key for signing, checking it is one of the supported algorithms.
    pub(crate) fn signing_key(&self) -> Result<(rcgen::KeyPair, KeyAlgorithm), KeyError> {
        let kp = rcgen::KeyPair::try_from(self.der.as_slice()).map_err(|_| {
            KeyError::MalformedPrivateKey {
                reason: "not a PKCS#8 key of a supported algorithm",
            }
        })?;
        let public =
            SubjectPublicKey::from_spki_der(&rcgen::PublicKeyData::subject_public_key_info(&kp))?;
        let algorithm = public
            .kind()
            .key_algorithm()
            .ok_or(KeyError::MalformedPrivateKey {
                reason: "RSA keys must have 2048, 3072 or 4096 bits",
            })?;
        Ok((kp, algorithm))
    }

    /// The algorithm of this key (parses it).
    pub fn algorithm(&self) -> Result<KeyAlgorithm, KeyError> {
        self.signing_key().map(|(_, alg)| alg)
    }

    /// The public half of this key (parses it).
    pub fn public_key(&self) -> Result<SubjectPublicKey, KeyError> {
        let (kp, _) = self.signing_key()?;
        SubjectPublicKey::from_spki_der(&rcgen::PublicKeyData::subject_public_key_info(&kp))
    }

    /// Constant-time comparison of two secrets.
    pub fn ct_eq(&self, other: &PrivateKeyPkcs8) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(&self.der, &other.der).is_ok()
    }
}

impl fmt::Debug for PrivateKeyPkcs8 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKeyPkcs8(<redacted>)")
    }
}

impl fmt::Display for PrivateKeyPkcs8 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted private key>")
    }
}

/// A public key a certificate can be issued for: a parsed, policy-checked
/// SubjectPublicKeyInfo (RSA 2048..=8192 bits, ECDSA P-256/P-384, Ed25519).
#[derive(Clone, PartialEq, Eq)]
pub struct SubjectPublicKey {
    spki_der: Vec<u8>,
    /// Contents of the subjectPublicKey BIT STRING.
    key_bytes: Vec<u8>,
    kind: PublicKeyKind,
}

impl SubjectPublicKey {
    /// Parses and checks a DER SubjectPublicKeyInfo.
    pub fn from_spki_der(spki_der: &[u8]) -> Result<Self, KeyError> {
        let (rest, spki) =
            SubjectPublicKeyInfo::from_der(spki_der).map_err(|e| KeyError::MalformedPublicKey {
                reason: format!("not a DER SubjectPublicKeyInfo ({e})"),
            })?;
        if !rest.is_empty() {
            return Err(KeyError::MalformedPublicKey {
                reason: format!(
                    "{} trailing bytes after the SubjectPublicKeyInfo",
                    rest.len()
                ),
            });
        }
        Self::from_parsed(&spki)
    }

    pub(crate) fn from_parsed(spki: &SubjectPublicKeyInfo<'_>) -> Result<Self, KeyError> {
        let kind = classify(spki)?;
        let key_bytes = spki.subject_public_key.data.to_vec();
        // Let the crypto library confirm the key really parses (EC point on the curve, RSA
        // structure, Ed25519 length).
        let verify_alg: &'static dyn lc_sig::VerificationAlgorithm = match kind {
            PublicKeyKind::Rsa { .. } => &lc_sig::RSA_PKCS1_2048_8192_SHA256,
            PublicKeyKind::EcdsaP256 => &lc_sig::ECDSA_P256_SHA256_ASN1,
            PublicKeyKind::EcdsaP384 => &lc_sig::ECDSA_P384_SHA384_ASN1,
            PublicKeyKind::Ed25519 => &lc_sig::ED25519,
        };
        lc_sig::ParsedPublicKey::new(verify_alg, &key_bytes).map_err(|_| {
            KeyError::MalformedPublicKey {
                reason: format!("the {kind} public key is not valid"),
            }
        })?;
        Ok(Self {
            spki_der: spki.raw.to_vec(),
            key_bytes,
            kind,
        })
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// The key as a `PUBLIC KEY` PEM block.
    pub fn to_pem(&self) -> String {
        crate::der::pem_encode("PUBLIC KEY", &self.spki_der)
    }

    /// SHA-256 over the DER SubjectPublicKeyInfo, lower-case hex (the key's fingerprint in
    /// events).
    pub fn spki_sha256_hex(&self) -> String {
        sha256_hex(&self.spki_der)
    }

    /// Key type and size.
    pub fn kind(&self) -> PublicKeyKind {
        self.kind
    }

    /// Same key (type and key bits), regardless of how the SubjectPublicKeyInfo was encoded.
    pub fn same_key(&self, other: &SubjectPublicKey) -> bool {
        self.kind == other.kind && self.key_bytes == other.key_bytes
    }
}

impl fmt::Debug for SubjectPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubjectPublicKey")
            .field("kind", &self.kind)
            .field("spki_sha256", &self.spki_sha256_hex())
            .finish()
    }
}

impl rcgen::PublicKeyData for SubjectPublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.key_bytes
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.kind.rcgen_algorithm()
    }
}

fn classify(spki: &SubjectPublicKeyInfo<'_>) -> Result<PublicKeyKind, KeyError> {
    let alg_oid = spki.algorithm.algorithm.to_id_string();
    match alg_oid.as_str() {
        OID_RSA_ENCRYPTION => {
            let parsed = spki.parsed().map_err(|e| KeyError::MalformedPublicKey {
                reason: format!("RSA public key does not parse ({e})"),
            })?;
            let x509_parser::public_key::PublicKey::RSA(rsa) = parsed else {
                return Err(KeyError::MalformedPublicKey {
                    reason: "RSA public key does not parse".to_string(),
                });
            };
            let bits = bit_length(rsa.modulus);
            if bits < MIN_RSA_BITS {
                return Err(KeyError::RsaKeyTooSmall { bits });
            }
            if bits > MAX_RSA_BITS {
                return Err(KeyError::RsaKeyTooLarge { bits });
            }
            let e = rsa.try_exponent().map_err(|_| KeyError::RsaBadExponent)?;
            if e < 3 || e % 2 == 0 {
                return Err(KeyError::RsaBadExponent);
            }
            Ok(PublicKeyKind::Rsa { bits })
        }
        OID_EC_PUBLIC_KEY => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string())
                .ok_or_else(|| KeyError::MalformedPublicKey {
                    reason: "EC public key without a named curve".to_string(),
                })?;
            match curve.as_str() {
                OID_P256 => Ok(PublicKeyKind::EcdsaP256),
                OID_P384 => Ok(PublicKeyKind::EcdsaP384),
                OID_P521 => Err(KeyError::UnsupportedCurve {
                    curve: "P-521".to_string(),
                }),
                other => Err(KeyError::UnsupportedCurve {
                    curve: other.to_string(),
                }),
            }
        }
        OID_ED25519 => {
            if spki.algorithm.parameters.is_some() {
                return Err(KeyError::MalformedPublicKey {
                    reason: "Ed25519 key with algorithm parameters".to_string(),
                });
            }
            Ok(PublicKeyKind::Ed25519)
        }
        other => Err(KeyError::UnsupportedKeyType {
            oid: other.to_string(),
        }),
    }
}

/// Bit length of a big-endian unsigned integer (leading zero bytes ignored).
fn bit_length(be: &[u8]) -> usize {
    let trimmed: &[u8] = {
        let first = be.iter().position(|b| *b != 0).unwrap_or(be.len());
        &be[first..]
    };
    match trimmed.first() {
        None => 0,
        Some(top) => (trimmed.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
    }
}

/// A freshly generated key pair: the secret (for the key store) and its public half.
#[derive(Debug, Clone)]
pub struct GeneratedKey {
    /// The algorithm.
    pub algorithm: KeyAlgorithm,
    /// The private key (PKCS#8 DER, redacted in Debug).
    pub private_key: PrivateKeyPkcs8,
    /// The public key, ready for [`crate::IssueRequest`].
    pub public_key: SubjectPublicKey,
    /// SHA-256 of the DER SubjectPublicKeyInfo, lower-case hex.
    pub spki_sha256_hex: String,
}

/// Generates a new key pair with the system CSPRNG (aws-lc-rs).
pub fn generate_key(algorithm: KeyAlgorithm) -> Result<GeneratedKey, KeyError> {
    let generated = match algorithm {
        KeyAlgorithm::EcdsaP256 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        KeyAlgorithm::EcdsaP384 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
        KeyAlgorithm::Ed25519 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519),
        KeyAlgorithm::Rsa2048 => {
            rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        }
        KeyAlgorithm::Rsa3072 => {
            rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_3072)
        }
        KeyAlgorithm::Rsa4096 => {
            rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_4096)
        }
    };
    let kp = generated.map_err(|_| KeyError::Generation { algorithm })?;
    let der = Zeroizing::new(kp.serialize_der());
    let private_key = if algorithm == KeyAlgorithm::Ed25519 {
        // aws-lc writes Ed25519 keys as PKCS#8 v2 (with the public key), which OpenSSL 3.0
        // cannot read; store and export the v1 form every tool understands.
        let v1 = lc_sig::Ed25519KeyPair::from_pkcs8(&der)
            .ok()
            .and_then(|k| k.to_pkcs8v1().ok())
            .ok_or(KeyError::Generation { algorithm })?;
        PrivateKeyPkcs8::from_pkcs8_der(v1.as_ref().to_vec())
    } else {
        PrivateKeyPkcs8::from_pkcs8_der(der.to_vec())
    };
    let public_key =
        SubjectPublicKey::from_spki_der(&rcgen::PublicKeyData::subject_public_key_info(&kp))?;
    if public_key.kind() != algorithm.public_key_kind() {
        return Err(KeyError::Generation { algorithm });
    }
    let spki_sha256_hex = public_key.spki_sha256_hex();
    Ok(GeneratedKey {
        algorithm,
        private_key,
        public_key,
        spki_sha256_hex,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_length_ignores_leading_zeroes() {
        assert_eq!(bit_length(&[]), 0);
        assert_eq!(bit_length(&[0, 0]), 0);
        assert_eq!(bit_length(&[0x00, 0x80, 0x00]), 16);
        assert_eq!(bit_length(&[0x01, 0xff]), 9);
        assert_eq!(bit_length(&[0x7f; 256]), 2047);
    }

    #[test]
    fn algorithm_names_round_trip() {
        for alg in KeyAlgorithm::ALL {
            assert_eq!(alg.as_str().parse::<KeyAlgorithm>(), Ok(alg));
            assert_eq!(alg.public_key_kind().key_algorithm(), Some(alg));
        }
        assert!(matches!(
            "dsa-1024".parse::<KeyAlgorithm>(),
            Err(KeyError::UnknownAlgorithm { .. })
        ));
    }

    #[test]
    fn every_algorithm_generates_and_reloads() {
        for alg in KeyAlgorithm::ALL {
            let key = generate_key(alg).expect("generate");
            assert_eq!(key.algorithm, alg);
            assert_eq!(key.public_key.kind(), alg.public_key_kind());
            assert_eq!(key.spki_sha256_hex.len(), 64);
            assert_eq!(key.private_key.algorithm().expect("reload"), alg);
            assert_eq!(
                key.private_key.public_key().expect("public"),
                key.public_key
            );
            // PEM round trip.
            let pem = key.private_key.expose_pkcs8_pem();
            let again = PrivateKeyPkcs8::from_pem(&pem).expect("from pem");
            assert!(again.ct_eq(&key.private_key));
        }
    }

    #[test]
    fn debug_and_display_never_print_key_bytes() {
        let key = generate_key(KeyAlgorithm::EcdsaP256).expect("generate");
        let der = key.private_key.expose_pkcs8_der().to_vec();
        let der_hex = hex::encode(&der);
        for text in [
            format!("{:?}", key.private_key),
            format!("{}", key.private_key),
            format!("{:#?}", key.private_key),
            format!("{key:?}"),
            format!("{key:#?}"),
        ] {
            assert!(text.contains("redacted"), "{text}");
            assert!(!text.contains(&der_hex), "{text}");
            // Not even a run of the raw bytes printed as a decimal list.
            let decimal: Vec<String> = der[der.len() - 8..].iter().map(|b| b.to_string()).collect();
            assert!(!text.contains(&decimal.join(", ")), "{text}");
            let pem = key.private_key.expose_pkcs8_pem();
            let body: String = pem.lines().nth(1).unwrap_or_default().to_string();
            assert!(!text.contains(&body), "{text}");
        }
    }
}
