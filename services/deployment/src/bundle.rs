//! What gets installed on a target: the certificate, its chain, (optionally) its private key,
//! and the identifiers the service records.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use rustls::crypto::aws_lc_rs::sign::any_supported_type;
use rustls::pki_types::pem::{PemObject, SectionKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// SHA-256 of DER bytes as lower-case hex without separators: the fingerprint format used
/// throughout certledger.
pub fn sha256_fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// Brings a fingerprint written as `AB:CD:…` or upper-case hex to the lower-case,
/// separator-free form [`sha256_fingerprint`] produces.
pub fn normalize_fingerprint(fingerprint: &str) -> String {
    fingerprint
        .chars()
        .filter(|c| *c != ':' && !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

/// A private key in PEM form. Its `Debug` output never shows the key, it has no `Display`,
/// and the text is zeroed when dropped. Reading it takes the explicit
/// [`PrivateKeyPem::expose_pem`].
#[derive(Clone)]
pub struct PrivateKeyPem(Zeroizing<String>);

impl PrivateKeyPem {
    /// Wraps PEM text (`PRIVATE KEY`, `EC PRIVATE KEY` or `RSA PRIVATE KEY`). It is checked
    /// when the [`Bundle`] is built.
    pub fn new(pem: impl Into<String>) -> Self {
        Self(Zeroizing::new(pem.into()))
    }

    /// The PEM text. This is the secret: never log it.
    pub fn expose_pem(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PrivateKeyPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKeyPem(<redacted>)")
    }
}

/// Why a [`Bundle`] could not be built. No variant carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// The certificate id is empty.
    #[error("certificate_id is empty")]
    EmptyCertificateId,
    /// The certificate PEM is not exactly one certificate.
    #[error("certificate_pem: {0}")]
    Certificate(String),
    /// The chain PEM holds something other than certificates.
    #[error("chain_pem: {0}")]
    Chain(String),
    /// The private key PEM is not one private key of a supported type.
    #[error("private_key: {0}")]
    PrivateKey(&'static str),
    /// The private key does not belong to the certificate.
    #[error("private_key: the key does not match the certificate's public key")]
    KeyMismatch,
}

/// Everything a destination installs: the leaf certificate, the chain that goes with it,
/// the private key when certledger holds it (it does not for certificates issued from the
/// customer's own CSR: the key is then already on the target), the certificate's SHA-256
/// fingerprint (hex of the DER) and its id.
///
/// Built only through [`Bundle::new`], which checks the PEM, re-encodes the certificates
/// canonically, computes the fingerprint from the DER and checks the key matches the
/// certificate. `Debug` shows the id and fingerprint, never the key.
#[derive(Clone)]
pub struct Bundle {
    certificate_id: String,
    certificate_der: Vec<u8>,
    certificate_pem: String,
    chain_pem: String,
    chain_len: usize,
    private_key: Option<PrivateKeyPem>,
    fingerprint: String,
}

impl Bundle {
    /// Checks and assembles a bundle.
    ///
    /// * `certificate_pem`: exactly one `CERTIFICATE` block, the leaf.
    /// * `chain_pem`: zero or more `CERTIFICATE` blocks, issuer first (what a server sends
    ///   after the leaf); nothing else (a private key pasted into the chain would be
    ///   published).
    /// * `private_key`: `None` when certledger does not hold the key.
    pub fn new(
        certificate_id: impl Into<String>,
        certificate_pem: &str,
        chain_pem: &str,
        private_key: Option<PrivateKeyPem>,
    ) -> Result<Self, BundleError> {
        let certificate_id = certificate_id.into();
        if certificate_id.trim().is_empty() {
            return Err(BundleError::EmptyCertificateId);
        }

        let mut leaf = certificates(certificate_pem).map_err(BundleError::Certificate)?;
        if leaf.len() != 1 {
            return Err(BundleError::Certificate(format!(
                "expected exactly one CERTIFICATE block, found {}",
                leaf.len()
            )));
        }
        let certificate_der = leaf.remove(0);
        let chain = certificates(chain_pem).map_err(BundleError::Chain)?;

        if let Some(key) = &private_key {
            check_key(&certificate_der, key)?;
        }

        Ok(Self {
            certificate_id,
            fingerprint: sha256_fingerprint(&certificate_der),
            certificate_pem: pem_encode_certificate(&certificate_der),
            chain_pem: chain
                .iter()
                .map(|der| pem_encode_certificate(der))
                .collect(),
            chain_len: chain.len(),
            certificate_der,
            private_key,
        })
    }

    /// The certificate's id in certledger.
    pub fn certificate_id(&self) -> &str {
        &self.certificate_id
    }

    /// The leaf certificate, DER.
    pub fn certificate_der(&self) -> &[u8] {
        &self.certificate_der
    }

    /// The leaf certificate, one canonical PEM block.
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// The chain, canonical PEM blocks (empty when there is none).
    pub fn chain_pem(&self) -> &str {
        &self.chain_pem
    }

    /// Number of certificates in the chain.
    pub fn chain_len(&self) -> usize {
        self.chain_len
    }

    /// Leaf followed by the chain: what nginx's `ssl_certificate` (and Apache's
    /// `SSLCertificateFile`, HAProxy's `crt` minus the key) want.
    pub fn full_chain_pem(&self) -> String {
        format!("{}{}", self.certificate_pem, self.chain_pem)
    }

    /// The private key, when certledger holds it.
    pub fn private_key(&self) -> Option<&PrivateKeyPem> {
        self.private_key.as_ref()
    }

    /// SHA-256 of the leaf's DER, lower-case hex.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

impl fmt::Debug for Bundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bundle")
            .field("certificate_id", &self.certificate_id)
            .field("fingerprint", &self.fingerprint)
            .field("chain_len", &self.chain_len)
            .field("has_private_key", &self.private_key.is_some())
            .finish_non_exhaustive()
    }
}

/// Every PEM block of `pem` must be a certificate; returns their DER.
fn certificates(pem: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem.as_bytes()) {
        match section {
            Ok((SectionKind::Certificate, der)) => out.push(der),
            Ok((kind, _)) => {
                return Err(format!(
                    "holds a {kind:?} block; only CERTIFICATE blocks belong here"
                ));
            }
            Err(e) => return Err(format!("not valid PEM: {e}")),
        }
    }
    // Private-key labels the parser does not know would be skipped silently above.
    if pem.contains("PRIVATE KEY-----") {
        return Err("holds a private key block; only CERTIFICATE blocks belong here".into());
    }
    Ok(out)
}

/// The key must parse as exactly one private key of a type rustls (aws-lc-rs) signs with,
/// and its public key must be the certificate's.
fn check_key(certificate_der: &[u8], key: &PrivateKeyPem) -> Result<(), BundleError> {
    let pem = key.expose_pem().as_bytes();
    let mut keys = 0usize;
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem) {
        match section {
            Ok((
                SectionKind::PrivateKey | SectionKind::EcPrivateKey | SectionKind::RsaPrivateKey,
                mut der,
            )) => {
                keys += 1;
                zeroize::Zeroize::zeroize(&mut der);
            }
            Ok(_) => {
                return Err(BundleError::PrivateKey(
                    "holds a PEM block that is not a private key",
                ));
            }
            // The parser's error may quote a line of the input: do not pass it on.
            Err(_) => return Err(BundleError::PrivateKey("not valid PEM")),
        }
    }
    if keys != 1 {
        return Err(BundleError::PrivateKey(
            "expected exactly one PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY block",
        ));
    }
    let der = PrivateKeyDer::from_pem_slice(pem)
        .map_err(|_| BundleError::PrivateKey("not a readable private key"))?;
    let signing_key = any_supported_type(&der)
        .map_err(|_| BundleError::PrivateKey("not a supported key (ECDSA, RSA or Ed25519)"))?;
    let certified = CertifiedKey::new(
        vec![CertificateDer::from(certificate_der.to_vec())],
        Arc::clone(&signing_key),
    );
    match certified.keys_match() {
        Ok(()) => Ok(()),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(BundleError::KeyMismatch)
        }
        // The key type cannot tell its public key: nothing to compare, the server will.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(()),
        Err(e) => Err(BundleError::Certificate(format!(
            "cannot read the certificate's public key: {e}"
        ))),
    }
}

/// The fingerprint of the first certificate in PEM text (what a certificate file holds),
/// `None` if it holds none.
pub(crate) fn first_certificate_fingerprint(pem: &[u8]) -> Option<String> {
    CertificateDer::pem_slice_iter(pem)
        .next()
        .and_then(Result::ok)
        .map(|der| sha256_fingerprint(der.as_ref()))
}

/// A canonical `CERTIFICATE` PEM block (64-character lines, `\n` line ends).
pub(crate) fn pem_encode_certificate(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 60);
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII.
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_key_debug_is_redacted() {
        let key = PrivateKeyPem::new("-----BEGIN PRIVATE KEY-----\nsecret\n");
        assert_eq!(format!("{key:?}"), "PrivateKeyPem(<redacted>)");
    }

    #[test]
    fn fingerprints_are_normalized() {
        assert_eq!(normalize_fingerprint("AB:cd:0F"), "abcd0f");
        assert_eq!(
            sha256_fingerprint(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(
            Bundle::new(" ", "", "", None).err(),
            Some(BundleError::EmptyCertificateId)
        );
        assert!(matches!(
            Bundle::new("c1", "", "", None),
            Err(BundleError::Certificate(_))
        ));
        assert!(matches!(
            Bundle::new("c1", "not pem", "", None),
            Err(BundleError::Certificate(_))
        ));
    }
}
