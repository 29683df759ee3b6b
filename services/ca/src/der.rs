//! Small encoding helpers: hashing, PEM, and the few DER structures rcgen cannot build
//! (Authority Information Access).

use sha2::{Digest, Sha256};

pub(crate) const OID_RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
pub(crate) const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
pub(crate) const OID_ED25519: &str = "1.3.101.112";
pub(crate) const OID_P256: &str = "1.2.840.10045.3.1.7";
pub(crate) const OID_P384: &str = "1.3.132.0.34";
pub(crate) const OID_P521: &str = "1.3.132.0.35";

/// id-pe-authorityInfoAccess (RFC 5280 4.2.2.1).
pub(crate) const OID_AUTHORITY_INFO_ACCESS: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 1, 1];
/// id-ad-ocsp, DER content octets of 1.3.6.1.5.5.7.48.1.
const ID_AD_OCSP: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01];
/// id-ad-caIssuers, DER content octets of 1.3.6.1.5.5.7.48.2.
const ID_AD_CA_ISSUERS: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x02];

const TAG_OID: u8 = 0x06;
const TAG_SEQUENCE: u8 = 0x30;
/// GeneralName uniformResourceIdentifier: [6] IMPLICIT IA5String.
const TAG_GENERAL_NAME_URI: u8 = 0x86;

/// SHA-256, lower-case hex.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// PEM with LF line endings and 64-column lines, as openssl writes it.
pub(crate) fn pem_encode(tag: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(tag, der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// Appends a DER length.
pub fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let first = bytes
            .iter()
            .position(|b| *b != 0)
            .unwrap_or(bytes.len() - 1);
        let significant = &bytes[first..];
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
}

/// One DER tag-length-value.
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    push_len(&mut out, content.len());
    out.extend_from_slice(content);
    out
}

/// The extnValue of an Authority Information Access extension:
///
/// ```text
/// AuthorityInfoAccessSyntax ::= SEQUENCE SIZE (1..MAX) OF AccessDescription
/// AccessDescription ::= SEQUENCE { accessMethod OBJECT IDENTIFIER, accessLocation GeneralName }
/// ```
///
/// with an id-ad-ocsp entry and/or an id-ad-caIssuers entry, each a URI. `None` if both are
/// absent (the extension must then be left out: the SEQUENCE may not be empty).
pub(crate) fn authority_info_access(
    ocsp: Option<&str>,
    ca_issuers: Option<&str>,
) -> Option<Vec<u8>> {
    let mut descriptions = Vec::new();
    for (method, uri) in [(ID_AD_OCSP, ocsp), (ID_AD_CA_ISSUERS, ca_issuers)] {
        if let Some(uri) = uri {
            let mut access = tlv(TAG_OID, method);
            access.extend(tlv(TAG_GENERAL_NAME_URI, uri.as_bytes()));
            descriptions.extend(tlv(TAG_SEQUENCE, &access));
        }
    }
    if descriptions.is_empty() {
        None
    } else {
        Some(tlv(TAG_SEQUENCE, &descriptions))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_use_short_and_long_forms() {
        assert_eq!(tlv(0x04, &[]), vec![0x04, 0x00]);
        assert_eq!(tlv(0x04, &[1; 127])[..2], [0x04, 0x7f]);
        assert_eq!(tlv(0x04, &[1; 128])[..3], [0x04, 0x81, 0x80]);
        assert_eq!(tlv(0x04, &[1; 256])[..4], [0x04, 0x82, 0x01, 0x00]);
    }

    #[test]
    fn aia_parses_back_with_x509_parser() {
        use x509_parser::extensions::{AuthorityInfoAccess, GeneralName};
        use x509_parser::prelude::FromDer;

        let der = authority_info_access(
            Some("http://ocsp.example/"),
            Some("http://ca.example/i.der"),
        )
        .expect("some");
        let (rest, aia) = AuthorityInfoAccess::from_der(&der).expect("parse");
        assert!(rest.is_empty());
        let entries: Vec<(String, String)> = aia
            .accessdescs
            .iter()
            .map(|d| {
                let location = match &d.access_location {
                    GeneralName::URI(u) => u.to_string(),
                    other => format!("{other:?}"),
                };
                (d.access_method.to_id_string(), location)
            })
            .collect();
        assert_eq!(
            entries,
            vec![
                (
                    "1.3.6.1.5.5.7.48.1".to_string(),
                    "http://ocsp.example/".to_string()
                ),
                (
                    "1.3.6.1.5.5.7.48.2".to_string(),
                    "http://ca.example/i.der".to_string()
                ),
            ]
        );
        assert!(authority_info_access(None, None).is_none());
    }
}
