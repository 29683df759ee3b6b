//! certledger's certificate authority, as a library (the issuance gRPC service wraps it).
//!
//! * [`keys`] — key generation for every [`KeyAlgorithm`], the redacted [`PrivateKeyPkcs8`],
//!   and the policy-checked [`SubjectPublicKey`] a certificate is issued for.
//! * [`keystore`] — the [`KeyStore`] trait; [`FileKeyStore`] (0600 files, atomic writes,
//!   optional AES-256-GCM at rest) and [`MemoryKeyStore`].
//! * [`keydb`] — [`SqliteKeyStore`]: keys in one SQLite database, concurrent writes in one
//!   transaction.
//! * [`authority`] — the root and intermediate CA: created at first start, persisted,
//!   reloaded, or imported ([`Authority`]).
//! * [`csr`] — PKCS#10 inspection ([`inspect_csr_pem`]).
//! * [`profile`] — issuance policy (validity caps incl. the CA/Browser Forum schedule), name and
//!   subject rules, the end-entity extensions.
//! * [`signing`] — issuing end-entity certificates: [`Authority::prepare`] then
//!   [`PendingCertificate::release`] once the intent is recorded.
//! * [`serial`] — random serial numbers (prefix byte + 136 random bits).
//!
//! Private keys never appear in `Debug`/`Display` output, errors or logs.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod authority;
pub mod csr;
/// Small DER encoding helpers shared with the revocation service's CRL/OCSP code.
pub mod der;
pub mod keydb;
pub mod keys;
pub mod keystore;
pub mod profile;
pub mod serial;
pub mod signing;

pub use authority::{
    Authority, AuthorityConfig, AuthorityError, AuthorityOrigin, BootstrapConfig, CaCertificate,
    INTERMEDIATE_CERT_FILE, ImportMaterial, ROOT_CERT_FILE,
};
pub use csr::{CsrError, InspectedCsr, inspect_csr_der, inspect_csr_pem};
pub use keydb::SqliteKeyStore;
pub use keys::{
    GeneratedKey, KeyAlgorithm, KeyError, PrivateKeyPkcs8, PublicKeyKind, SubjectPublicKey,
    generate_key,
};
pub use keystore::{
    FileKeyStore, KeyEncryptionKey, KeyStore, KeyStoreError, KeyStoreKind, KeyStoreSettings,
    MemoryKeyStore,
};
pub use profile::{
    CertificateUrls, IssuancePolicy, PolicyError, RequestError, SubjectFields,
    cabf_max_validity_days,
};
pub use serial::{SerialError, SerialNumber, SerialPrefix};
pub use signing::{
    IssuanceIntent, IssueError, IssueRequest, IssuedCertificate, PendingCertificate, ReleaseError,
};
