//! The OCSP responder core (RFC 6960, with the RFC 5019 / CA/Browser Forum expectations):
//! parse an `OCSPRequest`, answer every `CertID` from a [`StatusSource`], and sign a
//! `BasicOCSPResponse` with the issuing CA's key directly (ResponderID byKey).
//!
//! * A `CertID` matches the issuing CA when its issuerNameHash and issuerKeyHash are the CA's
//!   under its hash algorithm (SHA-1, SHA-256, SHA-384 or SHA-512). Anything else — another
//!   issuer, an unsupported hash, a zero, negative or over-long serial — is answered
//!   `unknown`. So is a serial the source has no record of: never `good` for a serial that
//!   was never issued.
//! * The nonce extension (RFC 8954: 1 to 32 octets) is echoed unchanged.
//! * Input is bounded ([`OcspConfig::max_request_bytes`], [`OcspConfig::max_cert_ids`]);
//!   anything malformed gets a `malformedRequest` response, a status source that cannot
//!   answer gets `tryLater`, a signing failure `internalError`. Nothing panics.
//!
//! Request signatures are accepted but not verified (nothing here needs the requestor's
//! identity).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use certledger_ca::SerialNumber;
use time::{Duration, OffsetDateTime, UtcOffset};

use crate::der::{
    self, DerError, Reader, TAG_BOOLEAN, TAG_INTEGER, TAG_NULL, TAG_OCTET_STRING, TAG_OID,
    TAG_SEQUENCE, context_constructed, context_primitive,
};
use crate::issuer::{CertIdHash, IssuerSigner};
use crate::reason::RevocationReason;
use crate::status::{CertStatus, StatusSource};

/// id-pkix-ocsp-basic (1.3.6.1.5.5.7.48.1.1), OID content octets.
const OID_OCSP_BASIC: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01];
/// id-pkix-ocsp-nonce (1.3.6.1.5.5.7.48.1.2).
const OID_OCSP_NONCE: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x02];
/// id-pkix-ocsp-response (acceptable response types, 1.3.6.1.5.5.7.48.1.4).
const OID_OCSP_ACCEPTABLE_RESPONSES: &[u8] =
    &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x04];
/// id-pkix-ocsp-service-locator (1.3.6.1.5.5.7.48.1.7).
const OID_OCSP_SERVICE_LOCATOR: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x07];
/// id-pkix-ocsp-pref-sig-algs (1.3.6.1.5.5.7.48.1.8).
const OID_OCSP_PREF_SIG_ALGS: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x08];

/// Default largest request accepted, in bytes (a one-certificate request is about 80 bytes;
/// a signed one with its certificate chain a few KiB).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 16 * 1024;
/// Default most `CertID`s answered in one request.
pub const DEFAULT_MAX_CERT_IDS: usize = 16;
/// Default response validity (`nextUpdate - thisUpdate`): 12 hours. The CA/Browser Forum asks
/// for at least 8 hours and at most 10 days.
pub const DEFAULT_OCSP_VALIDITY: Duration = Duration::hours(12);
/// Longest response validity allowed (10 days).
pub const MAX_OCSP_VALIDITY: Duration = Duration::days(10);
/// Largest nonce accepted (RFC 8954).
pub const MAX_NONCE_LEN: usize = 32;

/// How the responder answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OcspConfig {
    /// `nextUpdate - thisUpdate` of every answer: 1 minute to 10 days.
    pub validity: Duration,
    /// Largest DER request accepted (at least 64 bytes, at most 1 MiB).
    pub max_request_bytes: usize,
    /// Most `CertID`s per request (1 to 1000).
    pub max_cert_ids: usize,
}

impl Default for OcspConfig {
    fn default() -> Self {
        Self {
            validity: DEFAULT_OCSP_VALIDITY,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_cert_ids: DEFAULT_MAX_CERT_IDS,
        }
    }
}

/// A configuration value out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid OCSP configuration: {0}")]
pub struct OcspConfigError(pub String);

impl OcspConfig {
    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), OcspConfigError> {
        if self.validity < Duration::minutes(1) || self.validity > MAX_OCSP_VALIDITY {
            return Err(OcspConfigError(format!(
                "validity {} is out of range (1 minute to 10 days)",
                self.validity
            )));
        }
        if !(64..=1 << 20).contains(&self.max_request_bytes) {
            return Err(OcspConfigError(format!(
                "max_request_bytes {} is out of range (64 to 1048576)",
                self.max_request_bytes
            )));
        }
        if !(1..=1000).contains(&self.max_cert_ids) {
            return Err(OcspConfigError(format!(
                "max_cert_ids {} is out of range (1 to 1000)",
                self.max_cert_ids
            )));
        }
        Ok(())
    }
}

/// `OCSPResponseStatus` (RFC 6960 4.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OcspResponseStatus {
    /// 0 — a signed response follows.
    Successful,
    /// 1 — the request does not parse or breaks the rules.
    MalformedRequest,
    /// 2 — the responder failed internally.
    InternalError,
    /// 3 — the responder cannot answer now; try again later.
    TryLater,
    /// 5 — the request must be signed.
    SigRequired,
    /// 6 — the client may not ask this responder.
    Unauthorized,
}

impl OcspResponseStatus {
    /// The ENUMERATED value.
    pub fn code(self) -> u8 {
        match self {
            OcspResponseStatus::Successful => 0,
            OcspResponseStatus::MalformedRequest => 1,
            OcspResponseStatus::InternalError => 2,
            OcspResponseStatus::TryLater => 3,
            OcspResponseStatus::SigRequired => 5,
            OcspResponseStatus::Unauthorized => 6,
        }
    }

    /// RFC name (`successful`, `malformedRequest`, ...), for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            OcspResponseStatus::Successful => "successful",
            OcspResponseStatus::MalformedRequest => "malformedRequest",
            OcspResponseStatus::InternalError => "internalError",
            OcspResponseStatus::TryLater => "tryLater",
            OcspResponseStatus::SigRequired => "sigRequired",
            OcspResponseStatus::Unauthorized => "unauthorized",
        }
    }
}

/// Why a request was rejected as malformed (for logs; the client only sees
/// `malformedRequest`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OcspRequestError {
    /// Empty body / path.
    #[error("empty OCSP request")]
    Empty,
    /// Larger than the configured limit.
    #[error("OCSP request of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Size received (or a lower bound of it).
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not valid DER / not an OCSPRequest.
    #[error("malformed OCSP request: {0}")]
    Malformed(String),
    /// The GET path is not base64 (after percent-decoding).
    #[error("the OCSP GET path is not a base64 request")]
    NotBase64,
    /// No CertID.
    #[error("OCSP request lists no certificates")]
    NoCertIds,
    /// More CertIDs than allowed.
    #[error("OCSP request lists more than {max} certificates")]
    TooManyCertIds {
        /// The limit.
        max: usize,
    },
    /// Version other than v1.
    #[error("unsupported OCSP request version")]
    UnsupportedVersion,
    /// A critical extension we do not implement.
    #[error("unsupported critical extension {oid}")]
    UnsupportedCriticalExtension {
        /// Its OID, dotted.
        oid: String,
    },
    /// The same extension twice.
    #[error("duplicate extension {oid}")]
    DuplicateExtension {
        /// Its OID, dotted.
        oid: String,
    },
    /// A nonce outside 1..=32 octets (RFC 8954).
    #[error("nonce of {len} octets (must be 1 to 32)")]
    BadNonce {
        /// Its length.
        len: usize,
    },
}

impl From<DerError> for OcspRequestError {
    fn from(e: DerError) -> Self {
        OcspRequestError::Malformed(e.to_string())
    }
}

/// One `CertID` of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertId {
    /// Its hash algorithm, `None` if not one we support.
    pub hash: Option<CertIdHash>,
    /// issuerNameHash.
    pub issuer_name_hash: Vec<u8>,
    /// issuerKeyHash.
    pub issuer_key_hash: Vec<u8>,
    /// serialNumber: the INTEGER content octets as sent (two's complement).
    pub serial_der: Vec<u8>,
    /// The whole CertID as sent (echoed in the answer).
    raw: Vec<u8>,
}

impl CertId {
    /// The serial, if it is a valid certificate serial (positive, at most 20 octets).
    pub fn serial(&self) -> Option<SerialNumber> {
        if self.serial_der.first().is_some_and(|b| b & 0x80 != 0) {
            return None; // negative
        }
        SerialNumber::from_bytes(&self.serial_der).ok()
    }
}

/// A parsed `OCSPRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OcspRequest {
    /// The certificates asked about, in order.
    pub cert_ids: Vec<CertId>,
    /// The nonce value, if the request carries one.
    pub nonce: Option<Vec<u8>>,
    /// True if the request carried an (unverified) signature.
    pub signed: bool,
    /// The nonce Extension as sent, echoed in the response.
    nonce_extension: Option<Vec<u8>>,
}

/// Dotted text of OID content octets (for error messages; best effort).
fn oid_text(content: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut value: u64 = 0;
    for (i, b) in content.iter().enumerate() {
        if value > (u64::MAX >> 7) {
            return format!("<long OID {}>", hex::encode(content));
        }
        value = (value << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() && i < 16 {
                let first = (value / 40).min(2);
                arcs.push(first);
                arcs.push(value - first * 40);
            } else {
                arcs.push(value);
            }
            value = 0;
        }
    }
    arcs.iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(".")
}

/// One parsed Extension: (OID content, critical, extnValue content, raw TLV).
struct Extension<'a> {
    oid: &'a [u8],
    critical: bool,
    value: &'a [u8],
    raw: &'a [u8],
}

/// Parses `Extensions ::= SEQUENCE SIZE (1..MAX) OF Extension` (the content of the EXPLICIT
/// tag), rejecting duplicates.
fn parse_extensions(explicit_content: &[u8]) -> Result<Vec<Extension<'_>>, OcspRequestError> {
    let seq = der::parse_single(explicit_content, TAG_SEQUENCE, "Extensions")?;
    let mut reader = Reader::new(seq.content);
    let mut out: Vec<Extension<'_>> = Vec::new();
    while !reader.is_empty() {
        let ext = reader.expect(TAG_SEQUENCE)?;
        let mut fields = Reader::new(ext.content);
        let oid = fields.expect(TAG_OID)?.content;
        if oid.is_empty() {
            return Err(OcspRequestError::Malformed("empty OID".into()));
        }
        let critical = match fields.optional(TAG_BOOLEAN)? {
            Some(b) => match b.content {
                [0xff] => true,
                [0x00] => false,
                _ => return Err(OcspRequestError::Malformed("bad BOOLEAN".into())),
            },
            None => false,
        };
        let value = fields.expect(TAG_OCTET_STRING)?.content;
        fields.finish("Extension")?;
        if out.iter().any(|e| e.oid == oid) {
            return Err(OcspRequestError::DuplicateExtension { oid: oid_text(oid) });
        }
        out.push(Extension {
            oid,
            critical,
            value,
            raw: ext.raw,
        });
    }
    if out.is_empty() {
        return Err(OcspRequestError::Malformed("empty Extensions".into()));
    }
    Ok(out)
}

/// The nonce value of an id-pkix-ocsp-nonce extnValue: RFC 8954 says an OCTET STRING of 1 to
/// 32 octets; older clients put the raw octets there, which we accept too.
fn nonce_value(extn_value: &[u8]) -> Result<Vec<u8>, OcspRequestError> {
    let value = match der::parse_single(extn_value, TAG_OCTET_STRING, "nonce") {
        Ok(inner) => inner.content,
        Err(_) => extn_value,
    };
    if value.is_empty() || value.len() > MAX_NONCE_LEN {
        return Err(OcspRequestError::BadNonce { len: value.len() });
    }
    Ok(value.to_vec())
}

fn parse_cert_id(reader: &mut Reader<'_>) -> Result<CertId, OcspRequestError> {
    let cert_id = reader.expect(TAG_SEQUENCE)?;
    let mut fields = Reader::new(cert_id.content);
    let alg = fields.expect(TAG_SEQUENCE)?;
    let mut alg_fields = Reader::new(alg.content);
    let oid = alg_fields.expect(TAG_OID)?.content;
    if let Some(params) = alg_fields.optional(TAG_NULL)?
        && !params.content.is_empty()
    {
        return Err(OcspRequestError::Malformed("bad NULL".into()));
    }
    alg_fields.finish("hashAlgorithm")?;
    let issuer_name_hash = fields.expect(TAG_OCTET_STRING)?.content.to_vec();
    let issuer_key_hash = fields.expect(TAG_OCTET_STRING)?.content.to_vec();
    let serial = fields.expect(TAG_INTEGER)?.content;
    if serial.is_empty() {
        return Err(OcspRequestError::Malformed("empty INTEGER".into()));
    }
    fields.finish("CertID")?;
    Ok(CertId {
        hash: CertIdHash::from_oid(oid),
        issuer_name_hash,
        issuer_key_hash,
        serial_der: serial.to_vec(),
        raw: cert_id.raw.to_vec(),
    })
}

fn reject_unknown_critical(
    extensions: &[Extension<'_>],
    known: &[&[u8]],
) -> Result<(), OcspRequestError> {
    for ext in extensions {
        if ext.critical && !known.contains(&ext.oid) {
            return Err(OcspRequestError::UnsupportedCriticalExtension {
                oid: oid_text(ext.oid),
            });
        }
    }
    Ok(())
}

impl OcspRequest {
    /// Parses a DER `OCSPRequest` of at most `max_bytes` bytes listing at most `max_cert_ids`
    /// certificates.
    pub fn from_der(
        der: &[u8],
        max_bytes: usize,
        max_cert_ids: usize,
    ) -> Result<Self, OcspRequestError> {
        if der.is_empty() {
            return Err(OcspRequestError::Empty);
        }
        if der.len() > max_bytes {
            return Err(OcspRequestError::TooLarge {
                len: der.len(),
                max: max_bytes,
            });
        }
        // OCSPRequest ::= SEQUENCE { tbsRequest, optionalSignature [0] EXPLICIT OPTIONAL }
        let outer = der::parse_single(der, TAG_SEQUENCE, "OCSPRequest")?;
        let mut top = Reader::new(outer.content);
        let tbs = top.expect(TAG_SEQUENCE)?;
        let signed = top.optional(context_constructed(0))?.is_some();
        top.finish("OCSPRequest")?;

        // TBSRequest ::= SEQUENCE { version [0], requestorName [1], requestList, requestExtensions [2] }
        let mut fields = Reader::new(tbs.content);
        if let Some(version) = fields.optional(context_constructed(0))? {
            let v = der::parse_single(version.content, TAG_INTEGER, "version")?;
            if v.content != [0] {
                return Err(OcspRequestError::UnsupportedVersion);
            }
        }
        let _requestor_name = fields.optional(context_constructed(1))?;
        let list = fields.expect(TAG_SEQUENCE)?;
        let extensions = fields.optional(context_constructed(2))?;
        fields.finish("TBSRequest")?;

        let mut cert_ids = Vec::new();
        let mut requests = Reader::new(list.content);
        while !requests.is_empty() {
            if cert_ids.len() == max_cert_ids {
                return Err(OcspRequestError::TooManyCertIds { max: max_cert_ids });
            }
            // Request ::= SEQUENCE { reqCert CertID, singleRequestExtensions [0] EXPLICIT OPTIONAL }
            let request = requests.expect(TAG_SEQUENCE)?;
            let mut request_fields = Reader::new(request.content);
            let cert_id = parse_cert_id(&mut request_fields)?;
            if let Some(exts) = request_fields.optional(context_constructed(0))? {
                let exts = parse_extensions(exts.content)?;
                reject_unknown_critical(&exts, &[OID_OCSP_SERVICE_LOCATOR])?;
            }
            request_fields.finish("Request")?;
            cert_ids.push(cert_id);
        }
        if cert_ids.is_empty() {
            return Err(OcspRequestError::NoCertIds);
        }

        let mut nonce = None;
        let mut nonce_extension = None;
        if let Some(exts) = extensions {
            let exts = parse_extensions(exts.content)?;
            reject_unknown_critical(
                &exts,
                &[
                    OID_OCSP_NONCE,
                    OID_OCSP_ACCEPTABLE_RESPONSES,
                    OID_OCSP_PREF_SIG_ALGS,
                ],
            )?;
            if let Some(ext) = exts.iter().find(|e| e.oid == OID_OCSP_NONCE) {
                nonce = Some(nonce_value(ext.value)?);
                nonce_extension = Some(ext.raw.to_vec());
            }
        }
        Ok(Self {
            cert_ids,
            nonce,
            signed,
            nonce_extension,
        })
    }

    /// Decodes the last path segment of an RFC 6960 Appendix A GET request (the URL-encoded
    /// base64 of the DER request; `/` in it may be sent raw or as `%2F`) and parses it.
    pub fn from_get_path(
        path: &str,
        max_bytes: usize,
        max_cert_ids: usize,
    ) -> Result<Self, OcspRequestError> {
        let der = decode_get_path(path, max_bytes)?;
        Self::from_der(&der, max_bytes, max_cert_ids)
    }
}

/// Percent-decodes then base64-decodes (standard or URL-safe alphabet, padding optional) a GET
/// path, bounded by `max_bytes` of DER.
pub fn decode_get_path(path: &str, max_bytes: usize) -> Result<Vec<u8>, OcspRequestError> {
    if path.is_empty() {
        return Err(OcspRequestError::Empty);
    }
    // base64 is 4/3 of the DER, percent-encoding at most 3 times that.
    let max_path = max_bytes.saturating_mul(4).saturating_add(8);
    if path.len() > max_path.saturating_mul(3) {
        return Err(OcspRequestError::TooLarge {
            len: path.len() / 4,
            max: max_bytes,
        });
    }
    let bytes = path.as_bytes();
    let mut text = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex_digits = bytes.get(i + 1..i + 3).ok_or(OcspRequestError::NotBase64)?;
            let s = std::str::from_utf8(hex_digits).map_err(|_| OcspRequestError::NotBase64)?;
            text.push(u8::from_str_radix(s, 16).map_err(|_| OcspRequestError::NotBase64)?);
            i += 3;
        } else {
            text.push(b);
            i += 1;
        }
    }
    if text.len() > max_path {
        return Err(OcspRequestError::TooLarge {
            len: text.len() / 4 * 3,
            max: max_bytes,
        });
    }
    let config = GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let standard = GeneralPurpose::new(&base64::alphabet::STANDARD, config);
    let url_safe = GeneralPurpose::new(&base64::alphabet::URL_SAFE, config);
    let der = standard
        .decode(&text)
        .or_else(|_| url_safe.decode(&text))
        .map_err(|_| OcspRequestError::NotBase64)?;
    if der.len() > max_bytes {
        return Err(OcspRequestError::TooLarge {
            len: der.len(),
            max: max_bytes,
        });
    }
    Ok(der)
}

/// The answer for one `CertID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The serial asked about, if it is a valid serial.
    pub serial: Option<SerialNumber>,
    /// True if the CertID names this responder's issuing CA.
    pub issuer_matched: bool,
    /// The status answered.
    pub status: CertStatus,
}

/// A response, ready to send as `application/ocsp-response`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OcspResponse {
    /// DER `OCSPResponse`.
    pub der: Vec<u8>,
    /// Its status.
    pub status: OcspResponseStatus,
    /// One answer per CertID (empty unless successful).
    pub answers: Vec<Answer>,
    /// thisUpdate / producedAt (successful responses).
    pub this_update: Option<OffsetDateTime>,
    /// nextUpdate (successful responses).
    pub next_update: Option<OffsetDateTime>,
    /// Why the request failed, for logs (unsuccessful responses).
    pub error: Option<String>,
}

impl OcspResponse {
    /// An unsigned error response (`OCSPResponse ::= SEQUENCE { responseStatus }`).
    /// `Successful` is not an error: it is answered as `internalError`.
    pub fn error(status: OcspResponseStatus, reason: impl Into<String>) -> Self {
        let status = if status == OcspResponseStatus::Successful {
            OcspResponseStatus::InternalError
        } else {
            status
        };
        Self {
            der: der::sequence(&[&der::enumerated(status.code())]),
            status,
            answers: Vec::new(),
            this_update: None,
            next_update: None,
            error: Some(reason.into()),
        }
    }
}

/// Signed responses kept for reuse, at most (the map is emptied when full).
const REUSE_CAPACITY: usize = 100_000;

/// The OCSP responder of one issuing CA.
///
/// A response to a request without a nonce is kept and served again to the same request
/// (RFC 5019's pre-produced responses) while it is younger than a quarter of its validity
/// and every serial it answers still has the status it says: a revocation is answered at
/// once, and signing — the responder's main cost — happens about once per serial and
/// quarter validity instead of once per request.
pub struct Responder {
    issuer: Arc<IssuerSigner>,
    source: Arc<dyn StatusSource>,
    config: OcspConfig,
    reuse: RwLock<HashMap<Vec<u8>, OcspResponse>>,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("issuer", &self.issuer.subject())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn whole_seconds_utc(at: OffsetDateTime) -> OffsetDateTime {
    let at = at.to_offset(UtcOffset::UTC);
    at.replace_nanosecond(0).unwrap_or(at)
}

fn cert_status_der(status: &CertStatus) -> Vec<u8> {
    match status {
        // good [0] IMPLICIT NULL
        CertStatus::Good => vec![context_primitive(0), 0x00],
        // revoked [1] IMPLICIT RevokedInfo ::= SEQUENCE { revocationTime, revocationReason [0] EXPLICIT CRLReason OPTIONAL }
        CertStatus::Revoked { revoked_at, reason } => {
            let time = der::generalized_time(whole_seconds_utc(*revoked_at));
            if *reason == RevocationReason::Unspecified {
                der::constructed(context_constructed(1), &[&time])
            } else {
                let reason =
                    der::constructed(context_constructed(0), &[&der::enumerated(reason.code())]);
                der::constructed(context_constructed(1), &[&time, &reason])
            }
        }
        // unknown [2] IMPLICIT NULL
        CertStatus::Unknown => vec![context_primitive(2), 0x00],
    }
}

impl Responder {
    /// A responder for `issuer`, answering from `source`.
    pub fn new(
        issuer: Arc<IssuerSigner>,
        source: Arc<dyn StatusSource>,
        config: OcspConfig,
    ) -> Result<Self, OcspConfigError> {
        config.validate()?;
        Ok(Self {
            issuer,
            source,
            config,
            reuse: RwLock::new(HashMap::new()),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &OcspConfig {
        &self.config
    }

    /// The issuing CA.
    pub fn issuer(&self) -> &IssuerSigner {
        &self.issuer
    }

    /// Answers a DER `OCSPRequest` (an HTTP POST body) at time `now`.
    pub fn respond(&self, request_der: &[u8], now: OffsetDateTime) -> OcspResponse {
        match OcspRequest::from_der(
            request_der,
            self.config.max_request_bytes,
            self.config.max_cert_ids,
        ) {
            Ok(request) => self.answer(&request, now),
            Err(e) => malformed(e),
        }
    }

    /// Answers an RFC 6960 Appendix A GET path segment (URL-encoded base64 of the DER
    /// request) at time `now`.
    pub fn respond_get(&self, path: &str, now: OffsetDateTime) -> OcspResponse {
        match OcspRequest::from_get_path(
            path,
            self.config.max_request_bytes,
            self.config.max_cert_ids,
        ) {
            Ok(request) => self.answer(&request, now),
            Err(e) => malformed(e),
        }
    }

    /// The status of one CertID.
    fn status_of(&self, cert_id: &CertId) -> Result<Answer, OcspResponse> {
        let serial = cert_id.serial();
        let issuer_matched = cert_id.hash.is_some_and(|h| {
            self.issuer
                .matches(h, &cert_id.issuer_name_hash, &cert_id.issuer_key_hash)
        });
        let status = match (&serial, issuer_matched) {
            (Some(serial), true) => self.source.status(serial).map_err(|e| {
                tracing::warn!(error = %e, "OCSP: status source unavailable; answering tryLater");
                OcspResponse::error(OcspResponseStatus::TryLater, e.to_string())
            })?,
            _ => CertStatus::Unknown,
        };
        Ok(Answer {
            serial,
            issuer_matched,
            status,
        })
    }

    /// Answers a parsed request at time `now`.
    pub fn answer(&self, request: &OcspRequest, now: OffsetDateTime) -> OcspResponse {
        let mut answers = Vec::with_capacity(request.cert_ids.len());
        for cert_id in &request.cert_ids {
            match self.status_of(cert_id) {
                Ok(a) => answers.push(a),
                Err(response) => return response,
            }
        }
        if request.nonce_extension.is_some() {
            return self.sign(request, answers, now);
        }
        let key: Vec<u8> = request
            .cert_ids
            .iter()
            .flat_map(|c| c.raw.iter().copied())
            .collect();
        if let Some(kept) = self.reusable(&key, &answers, now) {
            return kept;
        }
        let response = self.sign(request, answers, now);
        if response.status == OcspResponseStatus::Successful {
            let mut reuse = self.reuse.write().unwrap_or_else(|p| p.into_inner());
            if reuse.len() >= REUSE_CAPACITY {
                reuse.clear();
            }
            reuse.insert(key, response.clone());
        }
        response
    }

    /// The kept response to the request with CertIDs `key`, if it is young enough and
    /// still says `answers`.
    fn reusable(
        &self,
        key: &[u8],
        answers: &[Answer],
        now: OffsetDateTime,
    ) -> Option<OcspResponse> {
        let reuse = self.reuse.read().unwrap_or_else(|p| p.into_inner());
        let kept = reuse.get(key)?;
        let produced = kept.this_update?;
        let fresh = now >= produced && now < produced + self.config.validity / 4;
        (fresh && kept.answers == answers).then(|| kept.clone())
    }

    /// Signs a response saying `answers` to `request`, produced at `now`.
    fn sign(
        &self,
        request: &OcspRequest,
        answers: Vec<Answer>,
        now: OffsetDateTime,
    ) -> OcspResponse {
        let this_update = whole_seconds_utc(now);
        let next_update = this_update + self.config.validity;
        let this_update_der = der::generalized_time(this_update);
        let next_update_der = der::constructed(
            context_constructed(0),
            &[&der::generalized_time(next_update)],
        );

        let mut responses = Vec::new();
        for (cert_id, answer) in request.cert_ids.iter().zip(&answers) {
            // SingleResponse ::= SEQUENCE { certID, certStatus, thisUpdate, nextUpdate [0] EXPLICIT }
            responses.extend(der::sequence(&[
                &cert_id.raw,
                &cert_status_der(&answer.status),
                &this_update_der,
                &next_update_der,
            ]));
        }

        // ResponderID byKey [2] EXPLICIT KeyHash (SHA-1 of the CA's subjectPublicKey bits)
        let responder_id = der::constructed(
            context_constructed(2),
            &[&der::tlv(
                TAG_OCTET_STRING,
                self.issuer.responder_key_hash(),
            )],
        );
        let responses = der::tlv(TAG_SEQUENCE, &responses);
        let extensions = request
            .nonce_extension
            .as_ref()
            .map(|nonce| der::constructed(context_constructed(1), &[&der::sequence(&[nonce])]));
        let mut tbs_parts: Vec<&[u8]> = vec![&responder_id, &this_update_der, &responses];
        if let Some(ext) = &extensions {
            tbs_parts.push(ext);
        }
        // ResponseData (version v1 is the DEFAULT and therefore omitted)
        let tbs = der::sequence(&tbs_parts);
        let signature = match self.issuer.sign(&tbs) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "OCSP: signing the response failed");
                return OcspResponse::error(OcspResponseStatus::InternalError, e.to_string());
            }
        };
        let basic = der::sequence(&[
            &tbs,
            self.issuer.signature_algorithm_der(),
            &der::bit_string(&signature),
        ]);
        let response_bytes = der::sequence(&[
            &der::tlv(TAG_OID, OID_OCSP_BASIC),
            &der::tlv(TAG_OCTET_STRING, &basic),
        ]);
        let response = der::sequence(&[
            &der::enumerated(OcspResponseStatus::Successful.code()),
            &der::constructed(context_constructed(0), &[&response_bytes]),
        ]);
        tracing::debug!(
            cert_ids = answers.len(),
            nonce = request.nonce.is_some(),
            "OCSP: answered"
        );
        OcspResponse {
            der: response,
            status: OcspResponseStatus::Successful,
            answers,
            this_update: Some(this_update),
            next_update: Some(next_update),
            error: None,
        }
    }
}

fn malformed(e: OcspRequestError) -> OcspResponse {
    tracing::debug!(error = %e, "OCSP: malformed request");
    OcspResponse::error(OcspResponseStatus::MalformedRequest, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_id(hash_oid: &[u8], serial: &[u8]) -> Vec<u8> {
        der::sequence(&[
            &der::sequence(&[&der::tlv(TAG_OID, hash_oid), &der::tlv(TAG_NULL, &[])]),
            &der::tlv(TAG_OCTET_STRING, &[1; 20]),
            &der::tlv(TAG_OCTET_STRING, &[2; 20]),
            &der::tlv(TAG_INTEGER, serial),
        ])
    }

    fn request(cert_ids: &[Vec<u8>], extensions: Option<Vec<u8>>) -> Vec<u8> {
        let requests: Vec<Vec<u8>> = cert_ids.iter().map(|c| der::sequence(&[c])).collect();
        let requests: Vec<&[u8]> = requests.iter().map(|r| r.as_slice()).collect();
        let list = der::sequence(&requests);
        let mut tbs_parts: Vec<&[u8]> = vec![&list];
        let ext;
        if let Some(e) = extensions {
            ext = der::constructed(context_constructed(2), &[&e]);
            tbs_parts.push(&ext);
        }
        der::sequence(&[&der::sequence(&tbs_parts)])
    }

    fn nonce_ext(len: usize, critical: bool) -> Vec<u8> {
        let value = der::tlv(TAG_OCTET_STRING, &vec![7; len]);
        let oid = der::tlv(TAG_OID, OID_OCSP_NONCE);
        let octets = der::tlv(TAG_OCTET_STRING, &value);
        let ext = if critical {
            der::sequence(&[&oid, &der::tlv(TAG_BOOLEAN, &[0xff]), &octets])
        } else {
            der::sequence(&[&oid, &octets])
        };
        der::sequence(&[&ext])
    }

    #[test]
    fn parses_cert_ids_and_nonce() {
        let sha1 = CertIdHash::Sha1.oid();
        let der = request(
            &[
                cert_id(sha1, &[0x01, 0x02]),
                cert_id(&[0x2a, 0x03], &[0x00, 0x80]),
            ],
            Some(nonce_ext(16, false)),
        );
        let req = OcspRequest::from_der(&der, 4096, 16).expect("parse");
        assert_eq!(req.cert_ids.len(), 2);
        assert_eq!(req.cert_ids[0].hash, Some(CertIdHash::Sha1));
        assert_eq!(req.cert_ids[1].hash, None);
        assert_eq!(
            req.cert_ids[0].serial().map(|s| s.to_hex()),
            Some("0102".into())
        );
        assert_eq!(
            req.cert_ids[1].serial().map(|s| s.to_hex()),
            Some("80".into())
        );
        assert_eq!(req.nonce, Some(vec![7; 16]));
        assert!(!req.signed);
    }

    #[test]
    fn invalid_serials_are_not_serials() {
        let sha1 = CertIdHash::Sha1.oid();
        for serial in [&[0x00][..], &[0xff], &[0x80, 0x01], &[0x01; 21]] {
            let der = request(&[cert_id(sha1, serial)], None);
            let req = OcspRequest::from_der(&der, 4096, 16).expect("parse");
            assert_eq!(req.cert_ids[0].serial(), None, "{serial:02x?}");
        }
    }

    #[test]
    fn rule_breaking_requests_are_rejected() {
        let sha1 = CertIdHash::Sha1.oid();
        let one = cert_id(sha1, &[1]);
        assert_eq!(
            OcspRequest::from_der(&[], 4096, 16),
            Err(OcspRequestError::Empty)
        );
        assert_eq!(
            OcspRequest::from_der(&request(&[], None), 4096, 16),
            Err(OcspRequestError::NoCertIds)
        );
        let three = request(&[one.clone(), one.clone(), one.clone()], None);
        assert_eq!(
            OcspRequest::from_der(&three, 4096, 2),
            Err(OcspRequestError::TooManyCertIds { max: 2 })
        );
        assert!(matches!(
            OcspRequest::from_der(&three, 10, 16),
            Err(OcspRequestError::TooLarge { .. })
        ));
        assert_eq!(
            OcspRequest::from_der(
                &request(std::slice::from_ref(&one), Some(nonce_ext(33, false))),
                4096,
                16
            ),
            Err(OcspRequestError::BadNonce { len: 33 })
        );
        // A critical nonce is understood; a critical unknown extension is not.
        assert!(
            OcspRequest::from_der(
                &request(std::slice::from_ref(&one), Some(nonce_ext(32, true))),
                4096,
                16
            )
            .is_ok()
        );
        let unknown_critical = der::sequence(&[&der::sequence(&[
            &der::tlv(TAG_OID, &[0x2a, 0x03, 0x04]),
            &der::tlv(TAG_BOOLEAN, &[0xff]),
            &der::tlv(TAG_OCTET_STRING, &[0x05, 0x00]),
        ])]);
        assert_eq!(
            OcspRequest::from_der(
                &request(std::slice::from_ref(&one), Some(unknown_critical)),
                4096,
                16
            ),
            Err(OcspRequestError::UnsupportedCriticalExtension {
                oid: "1.2.3.4".into()
            })
        );
        let mut trailing = request(std::slice::from_ref(&one), None);
        trailing.push(0);
        assert!(matches!(
            OcspRequest::from_der(&trailing, 4096, 16),
            Err(OcspRequestError::Malformed(_))
        ));
    }

    #[test]
    fn get_paths_decode_with_either_alphabet_and_percent_encoding() {
        let der = vec![0xfb, 0xff, 0xfe, 0x30, 0x03];
        // standard: "+//+MAM=" ; URL-safe: "-__-MAM"
        assert_eq!(decode_get_path("+//+MAM=", 64), Ok(der.clone()));
        assert_eq!(decode_get_path("%2B%2F%2f%2BMAM%3D", 64), Ok(der.clone()));
        assert_eq!(decode_get_path("-__-MAM", 64), Ok(der.clone()));
        assert_eq!(decode_get_path("%zz", 64), Err(OcspRequestError::NotBase64));
        assert_eq!(decode_get_path("%2", 64), Err(OcspRequestError::NotBase64));
        assert_eq!(
            decode_get_path("!!!!", 64),
            Err(OcspRequestError::NotBase64)
        );
        assert_eq!(decode_get_path("", 64), Err(OcspRequestError::Empty));
        assert!(matches!(
            decode_get_path(&"A".repeat(10_000), 64),
            Err(OcspRequestError::TooLarge { .. })
        ));
    }

    #[test]
    fn oid_text_is_dotted() {
        assert_eq!(oid_text(OID_OCSP_NONCE), "1.3.6.1.5.5.7.48.1.2");
        assert_eq!(oid_text(CertIdHash::Sha256.oid()), "2.16.840.1.101.3.4.2.1");
    }

    #[test]
    fn error_responses_are_tiny_sequences() {
        let r = OcspResponse::error(OcspResponseStatus::MalformedRequest, "x");
        assert_eq!(r.der, vec![0x30, 0x03, 0x0a, 0x01, 0x01]);
        let r = OcspResponse::error(OcspResponseStatus::Successful, "x");
        assert_eq!(r.status, OcspResponseStatus::InternalError);
    }
}
