//! The key store options of the services that open the issuance service's key store
//! (issuance, deployment, revocation, certd): its backend and its key-encryption key.

use certledger_ca::{KeyEncryptionKey, KeyStoreKind, KeyStoreSettings};

use crate::config::{Args, ConfigError, Flag};

/// `--key-store`. The services default to files; certd, one process, to sqlite.
pub const KEY_STORE_FLAG: Flag = Flag::value(
    "key-store",
    "CERTLEDGER_KEY_STORE",
    "how private keys are kept in the key directory: files (a file per key; any filesystem, also a volume shared by several hosts or mounted read-only) or sqlite (one database, keys.sqlite, concurrent keys stored in one transaction; processes on one host, each with write access); every service sharing the directory must say the same",
)
.default("files");

/// `--kek-file`.
pub const KEK_FILE_FLAG: Flag = Flag::value(
    "kek-file",
    "CERTLEDGER_KEK_FILE",
    "file holding the key store's key-encryption key (64 hex digits); new keys are then encrypted at rest",
);

/// `--kek`.
pub const KEK_FLAG: Flag = Flag::value(
    "kek",
    "CERTLEDGER_KEK",
    "the key-encryption key itself (64 hex digits); prefer --kek-file",
)
.secret();

/// The key store's settings from `--key-store`, `--kek-file` and `--kek`.
pub fn key_store_settings(args: &Args) -> Result<KeyStoreSettings, ConfigError> {
    let kind = args
        .parsed::<KeyStoreKind>(KEY_STORE_FLAG.name)?
        .ok_or_else(|| args.error(KEY_STORE_FLAG.name, "is required"))?;
    let kek = match (args.value(KEK_FILE_FLAG.name), args.value(KEK_FLAG.name)) {
        (Some(_), Some(_)) => {
            return Err(args.error(KEK_FLAG.name, "give either --kek-file or --kek, not both"));
        }
        (Some(path), None) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| args.error(KEK_FILE_FLAG.name, format!("cannot read {path}: {e}")))?;
            Some(KeyEncryptionKey::from_hex(&text).map_err(|e| args.error(KEK_FILE_FLAG.name, e))?)
        }
        (None, Some(hex)) => {
            Some(KeyEncryptionKey::from_hex(hex).map_err(|e| args.error(KEK_FLAG.name, e))?)
        }
        (None, None) => None,
    };
    Ok(KeyStoreSettings { kind, kek })
}
