//! Opening the built-in CA from the data directory: `<data>/ca/` holds `root.pem` and
//! `intermediate.pem`, `<data>/keys/` the key store (CA keys and generated certificate
//! keys; `keys.sqlite` or a file per key, both 0600, encrypted at rest when a
//! key-encryption key is configured). The CA is
//! created at first start and reloaded afterwards.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use certledger_ca::{
    Authority, AuthorityConfig, AuthorityError, CertificateUrls, IssuancePolicy, KeyStore,
    KeyStoreError, KeyStoreSettings,
};

/// How to open the CA.
#[derive(Debug, Clone)]
pub struct CaSettings {
    /// The data directory.
    pub data_dir: PathBuf,
    /// Validity policy of end-entity certificates.
    pub policy: IssuancePolicy,
    /// CRL and OCSP URLs written into certificates.
    pub urls: CertificateUrls,
    /// The key store's backend and key-encryption key.
    pub keys: KeyStoreSettings,
}

impl CaSettings {
    /// The CA certificate directory.
    pub fn cert_dir(&self) -> PathBuf {
        self.data_dir.join("ca")
    }

    /// The key store directory.
    pub fn key_dir(&self) -> PathBuf {
        self.data_dir.join("keys")
    }
}

/// Why the CA could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The key store.
    #[error("key store at {dir}: {source}")]
    KeyStore {
        /// Its directory.
        dir: PathBuf,
        /// What failed.
        #[source]
        source: KeyStoreError,
    },
    /// The CA itself.
    #[error("CA at {dir}: {source}")]
    Authority {
        /// Its directory.
        dir: PathBuf,
        /// What failed.
        #[source]
        source: AuthorityError,
    },
    /// The data directory.
    #[error("data directory {dir}: {source}")]
    DataDir {
        /// The directory.
        dir: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
}

/// The CA and its key store.
pub struct OpenedCa {
    /// The CA.
    pub authority: Arc<Authority>,
    /// The key store (also holds generated certificate keys).
    pub keys: Arc<dyn KeyStore>,
}

impl std::fmt::Debug for OpenedCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedCa")
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

/// PEM files of an existing CA (root certificate, intermediate certificate and the
/// intermediate's private key) to import instead of creating one at first start.
#[derive(Debug, Clone)]
pub struct CaImport {
    /// The root certificate.
    pub root_cert: PathBuf,
    /// The intermediate (issuing) certificate, signed by the root.
    pub intermediate_cert: PathBuf,
    /// The intermediate's private key (PKCS#8, SEC1 or PKCS#1 PEM).
    pub intermediate_key: PathBuf,
}

/// Opens (or creates) the CA in `settings.data_dir`.
pub fn open_ca(settings: &CaSettings) -> Result<OpenedCa, CaError> {
    open_or_import_ca(settings, None)
}

/// Opens the CA in `settings.data_dir`; at first start it is imported from `import` when
/// given, else created. Once the CA exists, `import` is ignored (it is never replaced).
pub fn open_or_import_ca(
    settings: &CaSettings,
    import: Option<&CaImport>,
) -> Result<OpenedCa, CaError> {
    create_dir(&settings.data_dir)?;
    let key_dir = settings.key_dir();
    let keys = settings
        .keys
        .open(&key_dir)
        .map_err(|source| CaError::KeyStore {
            dir: key_dir.clone(),
            source,
        })?;
    let cert_dir = settings.cert_dir();
    let mut config = AuthorityConfig::new(&cert_dir);
    config.policy = settings.policy.clone();
    config.urls = settings.urls.clone();
    let now = time::OffsetDateTime::now_utc();
    let authority = match import {
        Some(import) if !cert_dir.join("root.pem").exists() => Authority::import_files(
            &config,
            &*keys,
            &import.root_cert,
            &import.intermediate_cert,
            &import.intermediate_key,
            now,
        ),
        _ => Authority::open_or_create(&config, &*keys, now),
    }
    .map_err(|source| CaError::Authority {
        dir: cert_dir,
        source,
    })?;
    tracing::info!(
        origin = ?authority.origin(),
        root = %authority.root().subject,
        intermediate = %authority.intermediate().subject,
        key_store = ?settings.keys.kind,
        keys_encrypted = settings.keys.kek.is_some(),
        "CA ready"
    );
    Ok(OpenedCa {
        authority: Arc::new(authority),
        keys,
    })
}

fn create_dir(dir: &Path) -> Result<(), CaError> {
    std::fs::create_dir_all(dir).map_err(|source| CaError::DataDir {
        dir: dir.to_path_buf(),
        source,
    })
}
