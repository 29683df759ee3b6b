//! Opening the built-in CA from the data directory: `<data>/ca/` holds `root.pem` and
//! `intermediate.pem`, `<data>/keys/` the key store (CA keys and generated certificate
//! keys; files 0600, encrypted at rest when a key-encryption key is configured). The CA is
//! created at first start and reloaded afterwards.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use certledger_ca::{
    Authority, AuthorityConfig, AuthorityError, CertificateUrls, FileKeyStore, IssuancePolicy,
    KeyEncryptionKey, KeyStore, KeyStoreError,
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

/// Opens (or creates) the CA in `settings.data_dir`.
pub fn open_ca(settings: &CaSettings, kek: Option<KeyEncryptionKey>) -> Result<OpenedCa, CaError> {
    create_dir(&settings.data_dir)?;
    let key_dir = settings.key_dir();
    let keys = FileKeyStore::open(&key_dir, kek).map_err(|source| CaError::KeyStore {
        dir: key_dir.clone(),
        source,
    })?;
    let cert_dir = settings.cert_dir();
    let mut config = AuthorityConfig::new(&cert_dir);
    config.policy = settings.policy.clone();
    config.urls = settings.urls.clone();
    let authority = Authority::open_or_create(&config, &keys, time::OffsetDateTime::now_utc())
        .map_err(|source| CaError::Authority {
            dir: cert_dir,
            source,
        })?;
    tracing::info!(
        origin = ?authority.origin(),
        root = %authority.root().subject,
        intermediate = %authority.intermediate().subject,
        keys_encrypted = keys.encrypts_at_rest(),
        "CA ready"
    );
    Ok(OpenedCa {
        authority: Arc::new(authority),
        keys: Arc::new(keys),
    })
}

fn create_dir(dir: &Path) -> Result<(), CaError> {
    std::fs::create_dir_all(dir).map_err(|source| CaError::DataDir {
        dir: dir.to_path_buf(),
        source,
    })
}
