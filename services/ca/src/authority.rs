//! The certificate authority: a root CA and an intermediate CA, created at first start (or
//! imported from PEM files), persisted (certificates as PEM files, keys in the [`KeyStore`])
//! and reloaded on restart. The intermediate signs end-entity certificates (see
//! [`crate::signing`]).
//!
//! Layout of the certificate directory:
//! * `intermediate.pem` — the intermediate CA certificate;
//! * `root.pem` — the root CA certificate, written last: its presence means the CA is complete.
//!
//! Keys are stored under ids derived from their public keys
//! (`ca-root-<first 16 hex digits of the SPKI SHA-256>`, `ca-intermediate-<…>`), so a
//! restart finds the key of the certificate on disk and an interrupted first start leaves
//! nothing that a retry would collide with.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use zeroize::Zeroizing;

use crate::der::{pem_encode, sha256_hex};
use crate::keys::{
    KeyAlgorithm, KeyError, PrivateKeyPkcs8, PublicKeyKind, SubjectPublicKey, generate_key,
};
use crate::keystore::{KeyStore, KeyStoreError};
use crate::profile::{CertificateUrls, IssuancePolicy, PolicyError, truncate_to_second};
use crate::serial::{SerialError, SerialNumber, SerialPrefix};

/// File name of the root CA certificate in the certificate directory.
pub const ROOT_CERT_FILE: &str = "root.pem";
/// File name of the intermediate CA certificate in the certificate directory.
pub const INTERMEDIATE_CERT_FILE: &str = "intermediate.pem";

/// How a new CA is made at first start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapConfig {
    /// CN of the root.
    pub root_common_name: String,
    /// CN of the intermediate.
    pub intermediate_common_name: String,
    /// O of both, if any.
    pub organization: Option<String>,
    /// C of both (two upper-case letters), if any.
    pub country: Option<String>,
    /// Root key algorithm (default ECDSA P-384).
    pub root_key_algorithm: KeyAlgorithm,
    /// Intermediate key algorithm (default ECDSA P-256).
    pub intermediate_key_algorithm: KeyAlgorithm,
    /// Root validity (default 3650 days, 10 years).
    pub root_validity_days: u32,
    /// Intermediate validity (default 1825 days, 5 years; never beyond the root's).
    pub intermediate_validity_days: u32,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        Self {
            root_common_name: "certledger Root CA".into(),
            intermediate_common_name: "certledger Intermediate CA".into(),
            organization: Some("certledger".into()),
            country: None,
            root_key_algorithm: KeyAlgorithm::EcdsaP384,
            intermediate_key_algorithm: KeyAlgorithm::EcdsaP256,
            root_validity_days: 3650,
            intermediate_validity_days: 1825,
        }
    }
}

/// Configuration of the CA.
#[derive(Debug, Clone)]
pub struct AuthorityConfig {
    /// Directory of `root.pem` and `intermediate.pem`.
    pub cert_dir: PathBuf,
    /// How to create the CA if the directory holds none.
    pub bootstrap: BootstrapConfig,
    /// Validity rules for end-entity certificates.
    pub policy: IssuancePolicy,
    /// CRL / OCSP / caIssuers URLs written into end-entity certificates.
    pub urls: CertificateUrls,
    /// First octet of every serial this instance generates.
    pub serial_prefix: SerialPrefix,
}

impl AuthorityConfig {
    /// Defaults (private CA policy, no URLs, prefix 0x01) with the given directory.
    pub fn new(cert_dir: impl Into<PathBuf>) -> Self {
        Self {
            cert_dir: cert_dir.into(),
            bootstrap: BootstrapConfig::default(),
            policy: IssuancePolicy::default(),
            urls: CertificateUrls::default(),
            serial_prefix: SerialPrefix::DEFAULT,
        }
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), AuthorityError> {
        self.policy.validate()?;
        self.urls.validate()?;
        let b = &self.bootstrap;
        for (what, cn) in [
            ("root_common_name", &b.root_common_name),
            ("intermediate_common_name", &b.intermediate_common_name),
        ] {
            if cn.trim().is_empty() || cn.chars().count() > 64 {
                return Err(AuthorityError::Config(format!(
                    "{what} must be 1 to 64 characters"
                )));
            }
        }
        if b.root_common_name == b.intermediate_common_name {
            return Err(AuthorityError::Config(
                "root and intermediate common names must differ".into(),
            ));
        }
        if let Some(c) = &b.country
            && (c.len() != 2 || !c.bytes().all(|x| x.is_ascii_uppercase()))
        {
            return Err(AuthorityError::Config(format!(
                "country {c:?} is not a two-letter upper-case code"
            )));
        }
        if b.root_validity_days == 0 || b.intermediate_validity_days == 0 {
            return Err(AuthorityError::Config(
                "CA validity must be at least 1 day".into(),
            ));
        }
        if b.intermediate_validity_days > b.root_validity_days {
            return Err(AuthorityError::Config(
                "intermediate_validity_days exceeds root_validity_days".into(),
            ));
        }
        Ok(())
    }
}

/// Where the running CA came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorityOrigin {
    /// Created at this start (first start).
    Created,
    /// Loaded from the certificate directory and key store.
    Loaded,
    /// Imported from PEM files at this start.
    Imported,
}

/// One CA certificate and facts about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaCertificate {
    /// DER.
    pub der: Vec<u8>,
    /// PEM.
    pub pem: String,
    /// Subject DN as text (RFC 4514 style, as x509-parser prints it).
    pub subject: String,
    /// Serial, lower-case hex.
    pub serial_hex: String,
    /// notBefore.
    pub not_before: OffsetDateTime,
    /// notAfter.
    pub not_after: OffsetDateTime,
    /// SHA-256 of the DER certificate, lower-case hex.
    pub sha256_fingerprint: String,
    /// SHA-256 of the DER SubjectPublicKeyInfo, lower-case hex.
    pub spki_sha256: String,
    /// Id of the private key in the key store (the root's key may be absent, e.g. an
    /// imported offline root).
    pub key_id: String,
    /// Key type.
    pub key_kind: PublicKeyKind,
}

/// Errors of creating, loading or importing the CA.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    /// Bad configuration.
    #[error("invalid CA configuration: {0}")]
    Config(String),
    /// Bad policy / URL configuration.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// A file operation on the certificate directory failed.
    #[error("CA: cannot {op} {path}: {source}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `load` found no CA.
    #[error("the CA is not initialized: {path} does not exist")]
    NotInitialized {
        /// The missing file.
        path: PathBuf,
    },
    /// `create` or `import` found an existing CA.
    #[error("{dir} already holds a CA; refusing to replace it")]
    AlreadyInitialized {
        /// The certificate directory.
        dir: PathBuf,
    },
    /// A CA certificate that is unusable.
    #[error("{which} CA certificate: {reason}")]
    InvalidCertificate {
        /// `root` or `intermediate`.
        which: &'static str,
        /// Why.
        reason: String,
    },
    /// A CA key that is unusable.
    #[error("{which} CA key: {source}")]
    Key {
        /// `root` or `intermediate`.
        which: &'static str,
        /// Why.
        #[source]
        source: KeyError,
    },
    /// The private key is not the certificate's.
    #[error("the {which} CA private key does not match the {which} CA certificate")]
    KeyMismatch {
        /// `root` or `intermediate`.
        which: &'static str,
    },
    /// The key store failed.
    #[error(transparent)]
    KeyStore(#[from] KeyStoreError),
    /// Serial generation failed.
    #[error(transparent)]
    Serial(#[from] SerialError),
    /// rcgen could not build a CA certificate.
    #[error("building the {which} CA certificate failed: {reason}")]
    Build {
        /// `root` or `intermediate`.
        which: &'static str,
        /// rcgen's error.
        reason: String,
    },
}

/// PEM inputs of [`Authority::import`]. The root's private key is not needed (it may stay
/// offline): the intermediate signs.
#[derive(Clone, Copy)]
pub struct ImportMaterial<'a> {
    /// The root CA certificate (self-signed), PEM.
    pub root_cert_pem: &'a str,
    /// The intermediate CA certificate, signed by the root, PEM.
    pub intermediate_cert_pem: &'a str,
    /// The intermediate's private key: PKCS#8 `PRIVATE KEY`, SEC1 `EC PRIVATE KEY` or PKCS#1
    /// `RSA PRIVATE KEY` PEM.
    pub intermediate_key_pem: &'a str,
}

impl std::fmt::Debug for ImportMaterial<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportMaterial")
            .field("root_cert_pem", &self.root_cert_pem.len())
            .field("intermediate_cert_pem", &self.intermediate_cert_pem.len())
            .field("intermediate_key_pem", &"<redacted>")
            .finish()
    }
}

/// A running CA: root and intermediate certificates, and the intermediate's signing key.
pub struct Authority {
    origin: AuthorityOrigin,
    root: CaCertificate,
    intermediate: CaCertificate,
    pub(crate) issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    chain_pem: String,
    pub(crate) policy: IssuancePolicy,
    pub(crate) urls: CertificateUrls,
    pub(crate) serial_prefix: SerialPrefix,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("origin", &self.origin)
            .field("root", &self.root.subject)
            .field("intermediate", &self.intermediate.subject)
            .field("intermediate_key_id", &self.intermediate.key_id)
            .field("policy", &self.policy)
            .field("urls", &self.urls)
            .field("serial_prefix", &self.serial_prefix)
            .finish_non_exhaustive()
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> AuthorityError + 'a {
    move |source| AuthorityError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn key_id(role: &str, spki_sha256: &str) -> String {
    let short = spki_sha256.get(..16).unwrap_or(spki_sha256);
    format!("ca-{role}-{short}")
}

impl Authority {
    /// Loads the CA from `config.cert_dir` and the key store, or creates a new root and
    /// intermediate if the directory holds no CA yet.
    pub fn open_or_create(
        config: &AuthorityConfig,
        keys: &dyn KeyStore,
        now: OffsetDateTime,
    ) -> Result<Self, AuthorityError> {
        if root_exists(&config.cert_dir)? {
            Self::load(config, keys, now)
        } else {
            Self::create(config, keys, now)
        }
    }

    /// Loads an existing CA. The intermediate's key must be in the key store; the root's is
    /// not needed.
    pub fn load(
        config: &AuthorityConfig,
        keys: &dyn KeyStore,
        now: OffsetDateTime,
    ) -> Result<Self, AuthorityError> {
        config.validate()?;
        let root_path = config.cert_dir.join(ROOT_CERT_FILE);
        let int_path = config.cert_dir.join(INTERMEDIATE_CERT_FILE);
        let root_pem = read_existing(&root_path)?;
        let int_pem = read_existing(&int_path)?;
        let root_der = cert_der_from_pem("root", &root_pem)?;
        let int_der = cert_der_from_pem("intermediate", &int_pem)?;
        let int_spki = spki_sha256_of("intermediate", &int_der)?;
        let int_key = keys.get(&key_id("intermediate", &int_spki))?;
        let authority = Self::assemble(
            config,
            root_der,
            int_der,
            &int_key,
            AuthorityOrigin::Loaded,
            now,
        )?;
        tracing::info!(
            root = %authority.root.subject,
            intermediate = %authority.intermediate.subject,
            intermediate_not_after = %authority.intermediate.not_after,
            "loaded CA"
        );
        Ok(authority)
    }

    /// Creates a new root CA (self-signed, pathLen 1) and intermediate CA (pathLen 0), stores
    /// both keys in the key store and writes both certificates. Fails if a CA exists.
    pub fn create(
        config: &AuthorityConfig,
        keys: &dyn KeyStore,
        now: OffsetDateTime,
    ) -> Result<Self, AuthorityError> {
        config.validate()?;
        ensure_uninitialized(&config.cert_dir)?;
        let b = &config.bootstrap;
        let now = truncate_to_second(now);
        let not_before = now - Duration::hours(1);

        let root_key =
            generate_key(b.root_key_algorithm).map_err(|source| AuthorityError::Key {
                which: "root",
                source,
            })?;
        let int_key =
            generate_key(b.intermediate_key_algorithm).map_err(|source| AuthorityError::Key {
                which: "intermediate",
                source,
            })?;
        let (root_kp, _) =
            root_key
                .private_key
                .signing_key()
                .map_err(|source| AuthorityError::Key {
                    which: "root",
                    source,
                })?;
        let (int_kp, _) =
            int_key
                .private_key
                .signing_key()
                .map_err(|source| AuthorityError::Key {
                    which: "intermediate",
                    source,
                })?;

        let root_not_after =
            not_before + Duration::days(i64::from(b.root_validity_days)) - Duration::SECOND;
        let mut root_params = ca_params(
            b,
            &b.root_common_name,
            1,
            not_before,
            root_not_after,
            config.serial_prefix,
        )?;
        root_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let root_cert = root_params
            .self_signed(&root_kp)
            .map_err(|e| build_err("root", e))?;
        let root_issuer = rcgen::Issuer::from_ca_cert_der(root_cert.der(), &root_kp)
            .map_err(|e| build_err("root", e))?;

        let int_not_after = (not_before + Duration::days(i64::from(b.intermediate_validity_days))
            - Duration::SECOND)
            .min(root_not_after);
        let mut int_params = ca_params(
            b,
            &b.intermediate_common_name,
            0,
            not_before,
            int_not_after,
            config.serial_prefix,
        )?;
        // digitalSignature lets the intermediate sign OCSP responses itself.
        int_params.key_usages = vec![
            rcgen::KeyUsagePurpose::DigitalSignature,
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        int_params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        int_params.use_authority_key_identifier_extension = true;
        let int_cert = int_params
            .signed_by(&int_kp, &root_issuer)
            .map_err(|e| build_err("intermediate", e))?;

        keys.put(
            &key_id("root", &root_key.spki_sha256_hex),
            &root_key.private_key,
        )?;
        keys.put(
            &key_id("intermediate", &int_key.spki_sha256_hex),
            &int_key.private_key,
        )?;
        let authority = Self::assemble(
            config,
            root_cert.der().to_vec(),
            int_cert.der().to_vec(),
            &int_key.private_key,
            AuthorityOrigin::Created,
            now,
        )?;
        authority.write_certificates(&config.cert_dir)?;
        tracing::info!(
            root = %authority.root.subject,
            root_key_id = %authority.root.key_id,
            intermediate = %authority.intermediate.subject,
            intermediate_key_id = %authority.intermediate.key_id,
            "created a new CA"
        );
        Ok(authority)
    }

    /// Imports an existing root certificate, intermediate certificate and intermediate key
    /// (checked: the intermediate is a CA signed by the root, the key is the intermediate's),
    /// stores the key and writes the certificates so later starts [`Authority::load`] them.
    /// Fails if the directory already holds a CA.
    pub fn import(
        config: &AuthorityConfig,
        keys: &dyn KeyStore,
        material: ImportMaterial<'_>,
        now: OffsetDateTime,
    ) -> Result<Self, AuthorityError> {
        config.validate()?;
        ensure_uninitialized(&config.cert_dir)?;
        let root_der = cert_der_from_pem("root", material.root_cert_pem)?;
        let int_der = cert_der_from_pem("intermediate", material.intermediate_cert_pem)?;
        let int_key =
            PrivateKeyPkcs8::from_pem(material.intermediate_key_pem).map_err(|source| {
                AuthorityError::Key {
                    which: "intermediate",
                    source,
                }
            })?;
        let authority = Self::assemble(
            config,
            root_der,
            int_der,
            &int_key,
            AuthorityOrigin::Imported,
            now,
        )?;
        keys.put(&authority.intermediate.key_id, &int_key)?;
        authority.write_certificates(&config.cert_dir)?;
        tracing::info!(
            root = %authority.root.subject,
            intermediate = %authority.intermediate.subject,
            intermediate_key_id = %authority.intermediate.key_id,
            "imported CA"
        );
        Ok(authority)
    }

    /// [`Authority::import`] from PEM files.
    pub fn import_files(
        config: &AuthorityConfig,
        keys: &dyn KeyStore,
        root_cert: &Path,
        intermediate_cert: &Path,
        intermediate_key: &Path,
        now: OffsetDateTime,
    ) -> Result<Self, AuthorityError> {
        let root = fs::read_to_string(root_cert).map_err(io_err("read", root_cert))?;
        let int =
            fs::read_to_string(intermediate_cert).map_err(io_err("read", intermediate_cert))?;
        let key = Zeroizing::new(
            fs::read_to_string(intermediate_key).map_err(io_err("read", intermediate_key))?,
        );
        Self::import(
            config,
            keys,
            ImportMaterial {
                root_cert_pem: &root,
                intermediate_cert_pem: &int,
                intermediate_key_pem: &key,
            },
            now,
        )
    }

    /// Checks the pair of certificates and the intermediate key and builds the signer.
    fn assemble(
        config: &AuthorityConfig,
        root_der: Vec<u8>,
        int_der: Vec<u8>,
        int_key: &PrivateKeyPkcs8,
        origin: AuthorityOrigin,
        now: OffsetDateTime,
    ) -> Result<Self, AuthorityError> {
        let (root_x509, root) = inspect_ca_cert("root", &root_der)?;
        let (int_x509, intermediate) = inspect_ca_cert("intermediate", &int_der)?;

        root_x509
            .verify_signature(None)
            .map_err(|e| AuthorityError::InvalidCertificate {
                which: "root",
                reason: format!("not a valid self-signed certificate ({e})"),
            })?;
        if int_x509.issuer().as_raw() != root_x509.subject().as_raw() {
            return Err(AuthorityError::InvalidCertificate {
                which: "intermediate",
                reason: format!(
                    "issued by {:?}, not by the root {:?}",
                    int_x509.issuer().to_string(),
                    root.subject
                ),
            });
        }
        int_x509
            .verify_signature(Some(root_x509.public_key()))
            .map_err(|e| AuthorityError::InvalidCertificate {
                which: "intermediate",
                reason: format!("its signature does not verify with the root's key ({e})"),
            })?;
        if let Some(bc) = root_x509.basic_constraints().ok().flatten()
            && bc.value.path_len_constraint == Some(0)
        {
            return Err(AuthorityError::InvalidCertificate {
                which: "root",
                reason: "pathLenConstraint 0 forbids an intermediate".into(),
            });
        }

        let (kp, _) = int_key
            .signing_key()
            .map_err(|source| AuthorityError::Key {
                which: "intermediate",
                source,
            })?;
        let key_public =
            SubjectPublicKey::from_spki_der(&rcgen::PublicKeyData::subject_public_key_info(&kp))
                .map_err(|source| AuthorityError::Key {
                    which: "intermediate",
                    source,
                })?;
        let cert_public =
            SubjectPublicKey::from_parsed(int_x509.public_key()).map_err(|source| {
                AuthorityError::Key {
                    which: "intermediate",
                    source,
                }
            })?;
        if !key_public.same_key(&cert_public) {
            return Err(AuthorityError::KeyMismatch {
                which: "intermediate",
            });
        }
        let issuer = rcgen::Issuer::from_ca_cert_der(&int_der.as_slice().into(), kp)
            .map_err(|e| build_err("intermediate", e))?;
        if !issuer
            .key_usages()
            .contains(&rcgen::KeyUsagePurpose::KeyCertSign)
        {
            return Err(AuthorityError::InvalidCertificate {
                which: "intermediate",
                reason: "key usage lacks keyCertSign".into(),
            });
        }

        let now = truncate_to_second(now);
        if now < intermediate.not_before || now > intermediate.not_after {
            tracing::warn!(
                not_before = %intermediate.not_before,
                not_after = %intermediate.not_after,
                %now,
                "the intermediate CA certificate is not valid now; issuance will fail"
            );
        }

        let chain_pem = format!("{}{}", intermediate.pem, root.pem);
        Ok(Self {
            origin,
            root,
            intermediate,
            issuer,
            chain_pem,
            policy: config.policy.clone(),
            urls: config.urls.clone(),
            serial_prefix: config.serial_prefix,
        })
    }

    fn write_certificates(&self, dir: &Path) -> Result<(), AuthorityError> {
        fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        // The intermediate first: root.pem marks a complete CA.
        write_atomic(
            &dir.join(INTERMEDIATE_CERT_FILE),
            self.intermediate.pem.as_bytes(),
        )?;
        write_atomic(&dir.join(ROOT_CERT_FILE), self.root.pem.as_bytes())?;
        Ok(())
    }

    /// Created, loaded or imported.
    pub fn origin(&self) -> AuthorityOrigin {
        self.origin
    }

    /// The root CA certificate.
    pub fn root(&self) -> &CaCertificate {
        &self.root
    }

    /// The intermediate CA certificate (the issuer of end-entity certificates).
    pub fn intermediate(&self) -> &CaCertificate {
        &self.intermediate
    }

    /// The chain to serve with an end-entity certificate: intermediate, then root (PEM).
    pub fn chain_pem(&self) -> &str {
        &self.chain_pem
    }

    /// The issuance policy.
    pub fn policy(&self) -> &IssuancePolicy {
        &self.policy
    }

    /// The URLs written into end-entity certificates.
    pub fn urls(&self) -> &CertificateUrls {
        &self.urls
    }

    /// The serial prefix of this instance.
    pub fn serial_prefix(&self) -> SerialPrefix {
        self.serial_prefix
    }
}

fn build_err(which: &'static str, e: rcgen::Error) -> AuthorityError {
    AuthorityError::Build {
        which,
        reason: e.to_string(),
    }
}

fn root_exists(dir: &Path) -> Result<bool, AuthorityError> {
    let path = dir.join(ROOT_CERT_FILE);
    path.try_exists().map_err(io_err("check", &path))
}

fn ensure_uninitialized(dir: &Path) -> Result<(), AuthorityError> {
    if root_exists(dir)? {
        return Err(AuthorityError::AlreadyInitialized {
            dir: dir.to_path_buf(),
        });
    }
    Ok(())
}

fn read_existing(path: &Path) -> Result<String, AuthorityError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(AuthorityError::NotInitialized {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

fn cert_der_from_pem(which: &'static str, text: &str) -> Result<Vec<u8>, AuthorityError> {
    let invalid = |reason: String| AuthorityError::InvalidCertificate { which, reason };
    let blocks = pem::parse_many(text).map_err(|e| invalid(format!("not valid PEM ({e})")))?;
    let certs: Vec<_> = blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .collect();
    match <[pem::Pem; 1]>::try_from(certs) {
        Ok([one]) => Ok(one.into_contents()),
        Err(v) if v.is_empty() => Err(invalid("no CERTIFICATE PEM block".into())),
        Err(v) => Err(invalid(format!(
            "{} CERTIFICATE blocks; expected exactly one",
            v.len()
        ))),
    }
}

fn parse_cert<'a>(
    which: &'static str,
    der: &'a [u8],
) -> Result<X509Certificate<'a>, AuthorityError> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| AuthorityError::InvalidCertificate {
            which,
            reason: format!("not a valid X.509 certificate ({e})"),
        })?;
    if !rest.is_empty() {
        return Err(AuthorityError::InvalidCertificate {
            which,
            reason: "trailing data after the certificate".into(),
        });
    }
    Ok(cert)
}

fn spki_sha256_of(which: &'static str, der: &[u8]) -> Result<String, AuthorityError> {
    Ok(sha256_hex(parse_cert(which, der)?.public_key().raw))
}

fn inspect_ca_cert<'a>(
    which: &'static str,
    der: &'a [u8],
) -> Result<(X509Certificate<'a>, CaCertificate), AuthorityError> {
    let cert = parse_cert(which, der)?;
    let invalid = |reason: &str| AuthorityError::InvalidCertificate {
        which,
        reason: reason.to_string(),
    };
    if cert.version().0 != 2 {
        return Err(invalid("not an X.509 v3 certificate"));
    }
    match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => {}
        Ok(_) => return Err(invalid("basicConstraints does not say CA:TRUE")),
        Err(_) => return Err(invalid("malformed or duplicate basicConstraints")),
    }
    match cert.key_usage() {
        Ok(Some(ku)) if ku.value.key_cert_sign() => {}
        Ok(Some(_)) => return Err(invalid("key usage lacks keyCertSign")),
        Ok(None) => return Err(invalid("no key usage extension")),
        Err(_) => return Err(invalid("malformed or duplicate key usage")),
    }
    let public = SubjectPublicKey::from_parsed(cert.public_key())
        .map_err(|source| AuthorityError::Key { which, source })?;
    let spki_sha256 = sha256_hex(cert.public_key().raw);
    let info = CaCertificate {
        der: der.to_vec(),
        pem: pem_encode("CERTIFICATE", der),
        subject: cert.subject().to_string(),
        serial_hex: SerialNumber::from_bytes(cert.raw_serial())
            .map(|s| s.to_hex())
            .unwrap_or_else(|_| hex::encode(cert.raw_serial())),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        sha256_fingerprint: sha256_hex(der),
        key_id: key_id(which, &spki_sha256),
        spki_sha256,
        key_kind: public.kind(),
    };
    Ok((cert, info))
}

fn ca_params(
    b: &BootstrapConfig,
    common_name: &str,
    path_len: u8,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    prefix: SerialPrefix,
) -> Result<rcgen::CertificateParams, AuthorityError> {
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    if let Some(country) = &b.country {
        let printable = rcgen::string::PrintableString::try_from(country.as_str())
            .map_err(|_| AuthorityError::Config(format!("country {country:?} is not printable")))?;
        dn.push(
            rcgen::DnType::CountryName,
            rcgen::DnValue::PrintableString(printable),
        );
    }
    if let Some(org) = &b.organization {
        dn.push(rcgen::DnType::OrganizationName, org.as_str());
    }
    dn.push(rcgen::DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(path_len));
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(SerialNumber::generate(prefix)?.to_rcgen());
    params.key_identifier_method = rcgen::KeyIdMethod::Sha256;
    Ok(params)
}

/// Temporary file in the same directory, fsync, rename over the target, fsync the directory.
fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), AuthorityError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut suffix = [0u8; 8];
    aws_lc_rs::rand::fill(&mut suffix).map_err(|_| AuthorityError::Io {
        op: "create a temporary name for",
        path: path.to_path_buf(),
        source: io::Error::other("random number generator failed"),
    })?;
    let tmp = dir.join(format!(".{name}.{}.tmp", hex::encode(suffix)));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        file.set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(io_err("set permissions of", &tmp))?;
        file.write_all(contents).map_err(io_err("write", &tmp))?;
        file.sync_all().map_err(io_err("sync", &tmp))?;
        fs::rename(&tmp, path).map_err(io_err("rename into place", path))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("sync directory", dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
