//! The issuing CA as the revocation side sees it: its certificate, the facts OCSP matches
//! requests against (name and key hashes), and its signing key, which signs CRLs and OCSP
//! responses directly (no delegated OCSP responder certificate).

use std::fmt;

use aws_lc_rs::digest;
use certledger_ca::{Authority, KeyStore, KeyStoreError, PrivateKeyPkcs8};
use rcgen::SigningKey;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::FromDer;

/// Hash algorithms of an OCSP `CertID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CertIdHash {
    /// SHA-1 (what most clients, openssl included, send by default).
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl CertIdHash {
    /// Every supported algorithm.
    pub const ALL: [CertIdHash; 4] = [
        CertIdHash::Sha1,
        CertIdHash::Sha256,
        CertIdHash::Sha384,
        CertIdHash::Sha512,
    ];

    /// DER content octets of the algorithm's OID.
    pub(crate) fn oid(self) -> &'static [u8] {
        match self {
            // 1.3.14.3.2.26
            CertIdHash::Sha1 => &[0x2b, 0x0e, 0x03, 0x02, 0x1a],
            // 2.16.840.1.101.3.4.2.1 / .2 / .3
            CertIdHash::Sha256 => &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01],
            CertIdHash::Sha384 => &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02],
            CertIdHash::Sha512 => &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03],
        }
    }

    /// The algorithm with the given OID content octets.
    pub(crate) fn from_oid(oid: &[u8]) -> Option<Self> {
        Self::ALL.into_iter().find(|h| h.oid() == oid)
    }

    /// Hashes `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        let alg = match self {
            CertIdHash::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            CertIdHash::Sha256 => &digest::SHA256,
            CertIdHash::Sha384 => &digest::SHA384,
            CertIdHash::Sha512 => &digest::SHA512,
        };
        digest::digest(alg, data).as_ref().to_vec()
    }

    /// Name, as openssl prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            CertIdHash::Sha1 => "sha1",
            CertIdHash::Sha256 => "sha256",
            CertIdHash::Sha384 => "sha384",
            CertIdHash::Sha512 => "sha512",
        }
    }
}

/// Why the issuing CA cannot be used for revocation.
#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    /// The CA certificate is unusable.
    #[error("issuing CA certificate: {0}")]
    Certificate(String),
    /// The private key is unusable.
    #[error("issuing CA key: {0}")]
    Key(String),
    /// The key is not the certificate's.
    #[error("the private key does not match the issuing CA certificate")]
    KeyMismatch,
    /// The key store failed.
    #[error(transparent)]
    KeyStore(#[from] KeyStoreError),
}

/// Signing failed (the crypto library refused; never expected with a valid key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("signing with the issuing CA key failed: {reason}")]
pub struct SignError {
    /// The library's error.
    pub reason: String,
}

/// The issuing CA (normally the intermediate) with its signing key.
pub struct IssuerSigner {
    certificate_der: Vec<u8>,
    subject: String,
    subject_der: Vec<u8>,
    public_key_bits: Vec<u8>,
    key_identifier: Vec<u8>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    key: rcgen::KeyPair,
    signature_algorithm: &'static [u8],
    /// SHA-1 of the public key bits: the OCSP ResponderID byKey.
    responder_key_hash: Vec<u8>,
    /// (algorithm, issuerNameHash, issuerKeyHash) for every CertID hash we accept.
    cert_id_hashes: Vec<(CertIdHash, Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for IssuerSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuerSigner")
            .field("subject", &self.subject)
            .field("key_identifier", &hex::encode(&self.key_identifier))
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// AlgorithmIdentifier DER of the signature algorithm of rcgen's key pair.
fn signature_algorithm_der(alg: &'static rcgen::SignatureAlgorithm) -> Option<&'static [u8]> {
    if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
        // ecdsa-with-SHA256, no parameters
        Some(&[
            0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
        ])
    } else if alg == &rcgen::PKCS_ECDSA_P384_SHA384 {
        // ecdsa-with-SHA384
        Some(&[
            0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03,
        ])
    } else if alg == &rcgen::PKCS_RSA_SHA256 {
        // sha256WithRSAEncryption, NULL parameters
        Some(&[
            0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05,
            0x00,
        ])
    } else if alg == &rcgen::PKCS_ED25519 {
        // id-Ed25519
        Some(&[0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70])
    } else {
        None
    }
}

impl IssuerSigner {
    /// The issuing CA from its DER certificate and PKCS#8 private key. The certificate must be
    /// a CA certificate whose key usage (if present) allows cRLSign, and the key must be its
    /// key.
    pub fn new(certificate_der: &[u8], key: &PrivateKeyPkcs8) -> Result<Self, IssuerError> {
        let bad = |reason: String| IssuerError::Certificate(reason);
        let (rest, cert) = X509Certificate::from_der(certificate_der)
            .map_err(|e| bad(format!("not a valid X.509 certificate ({e})")))?;
        if !rest.is_empty() {
            return Err(bad("trailing data after the certificate".into()));
        }
        match cert.basic_constraints() {
            Ok(Some(bc)) if bc.value.ca => {}
            Ok(_) => return Err(bad("basicConstraints does not say CA:TRUE".into())),
            Err(_) => return Err(bad("malformed or duplicate basicConstraints".into())),
        }
        match cert.key_usage() {
            Ok(Some(ku)) if !ku.value.crl_sign() => {
                return Err(bad("key usage lacks cRLSign".into()));
            }
            Ok(_) => {}
            Err(_) => return Err(bad("malformed or duplicate key usage".into())),
        }
        let key_identifier = cert
            .iter_extensions()
            .find_map(|ext| match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
                _ => None,
            });
        let public_key_bits = cert.public_key().subject_public_key.data.to_vec();
        let subject_der = cert.subject().as_raw().to_vec();

        let kp = rcgen::KeyPair::try_from(key.expose_pkcs8_der())
            .map_err(|_| IssuerError::Key("not a PKCS#8 key of a supported algorithm".into()))?;
        if kp.public_key_raw() != public_key_bits.as_slice() {
            return Err(IssuerError::KeyMismatch);
        }
        let signature_algorithm = signature_algorithm_der(kp.algorithm())
            .ok_or_else(|| IssuerError::Key("unsupported signature algorithm".into()))?;

        let key_identifier = key_identifier.unwrap_or_else(|| {
            // RFC 5280 4.2.1.2 method (1): SHA-1 of the subjectPublicKey bits.
            CertIdHash::Sha1.digest(&public_key_bits)
        });
        let cert_id_hashes = CertIdHash::ALL
            .into_iter()
            .map(|h| (h, h.digest(&subject_der), h.digest(&public_key_bits)))
            .collect();
        Ok(Self {
            certificate_der: certificate_der.to_vec(),
            subject: cert.subject().to_string(),
            responder_key_hash: CertIdHash::Sha1.digest(&public_key_bits),
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
            subject_der,
            public_key_bits,
            key_identifier,
            key: kp,
            signature_algorithm,
            cert_id_hashes,
        })
    }

    /// The intermediate CA of `authority`, with its key from `keys`.
    pub fn from_authority(authority: &Authority, keys: &dyn KeyStore) -> Result<Self, IssuerError> {
        let intermediate = authority.intermediate();
        let key = keys.get(&intermediate.key_id)?;
        Self::new(&intermediate.der, &key)
    }

    /// The CA certificate, DER.
    pub fn certificate_der(&self) -> &[u8] {
        &self.certificate_der
    }

    /// Subject DN as text.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The DER-encoded subject Name (what CRLs carry as issuer).
    pub fn subject_der(&self) -> &[u8] {
        &self.subject_der
    }

    /// The key identifier (the certificate's subjectKeyIdentifier; written as the
    /// authorityKeyIdentifier of CRLs).
    pub fn key_identifier(&self) -> &[u8] {
        &self.key_identifier
    }

    /// notBefore of the CA certificate.
    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    /// notAfter of the CA certificate.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// The subjectPublicKey bits of the CA certificate.
    pub fn public_key_bits(&self) -> &[u8] {
        &self.public_key_bits
    }

    /// Is (`name_hash`, `key_hash`) this CA under `alg`? Constant work per call.
    pub fn matches(&self, alg: CertIdHash, name_hash: &[u8], key_hash: &[u8]) -> bool {
        self.cert_id_hashes
            .iter()
            .any(|(h, n, k)| *h == alg && n == name_hash && k == key_hash)
    }

    pub(crate) fn responder_key_hash(&self) -> &[u8] {
        &self.responder_key_hash
    }

    pub(crate) fn signature_algorithm_der(&self) -> &'static [u8] {
        self.signature_algorithm
    }

    pub(crate) fn key_pair(&self) -> &rcgen::KeyPair {
        &self.key
    }

    /// Signs `message` with the CA key (the signature value, as the algorithm of
    /// [`Self::signature_algorithm_der`] defines it).
    pub(crate) fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        self.key.sign(message).map_err(|e| SignError {
            reason: e.to_string(),
        })
    }
}
