//! certledger's revocation core, as a library (the revocation service wraps it):
//!
//! * [`issuer`] — the issuing CA ([`IssuerSigner`]): its certificate, the hashes OCSP
//!   requests name it by, and its key, which signs CRLs and OCSP responses directly.
//! * [`crl`] — full v2 CRLs ([`build_crl`]) with CRL number, authorityKeyIdentifier and
//!   reason codes; `nextUpdate` 7 days after `thisUpdate` by default, never more than 10.
//! * [`ocsp`] — the RFC 6960 responder ([`Responder`]): parses requests defensively,
//!   answers good / revoked / unknown from a [`StatusSource`], echoes the nonce.
//! * [`status`] — the [`StatusSource`] trait and the in-memory read model
//!   [`MemoryStatusSource`].
//! * [`http`] — the HTTP endpoints (`/crl/<issuer>.crl`, `/ocsp`, `/healthz`) over swappable
//!   [`CrlHandle`] and [`OcspHandle`].
//! * [`reason`] — RFC 5280 revocation reasons.
//!
//! Private keys never appear in `Debug` output, errors or logs.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod crl;
mod der;
pub mod http;
pub mod issuer;
pub mod ocsp;
pub mod reason;
pub mod status;

pub use crl::{
    CrlConfig, CrlError, DEFAULT_CRL_VALIDITY, MAX_CRL_VALIDITY, MIN_CRL_VALIDITY, RevokedEntry,
    SignedCrl, build_crl,
};
pub use http::{Clock, CrlHandle, HttpConfig, OcspHandle, PublishError, RevocationHttp};
pub use issuer::{CertIdHash, IssuerError, IssuerSigner, SignError};
pub use ocsp::{
    Answer, CertId, OcspConfig, OcspConfigError, OcspRequest, OcspRequestError, OcspResponse,
    OcspResponseStatus, Responder,
};
pub use reason::{RevocationReason, UnknownReason};
pub use status::{CertStatus, MemoryStatusSource, StatusSource, StatusUnavailable};
