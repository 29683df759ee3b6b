//! The authentication options every binary takes (with TLS: the server certificate,
//! the client CA of mutual TLS, the identity CA that issues client certificates), and
//! turning them into an [`Authenticator`] once the event log is open.

use std::path::PathBuf;
use std::sync::Arc;

use certledger_eventlog::EventLog;

use super::{Authenticator, bootstrap_token_file};
use crate::clock::SharedClock;
use crate::config::{Args, ConfigError, Flag};
use crate::tenant::DEFAULT_TENANT;
use crate::tls::{
    IDENTITY_CA_CERT_FLAG, IDENTITY_CA_KEY_FLAG, IdentityCa, TLS_CERT_FLAG, TlsSettings,
};

/// `--insecure-no-auth`.
pub const NO_AUTH_FLAG: Flag = Flag::switch(
    "insecure-no-auth",
    "CERTLEDGER_INSECURE_NO_AUTH",
    "serve without authentication: every caller is anonymous and picks its tenant with the x-certledger-tenant header (development only)",
);

/// `--bootstrap-token-file`.
pub const BOOTSTRAP_TOKEN_FLAG: Flag = Flag::value(
    "bootstrap-token-file",
    "CERTLEDGER_BOOTSTRAP_TOKEN_FILE",
    "if this file does not exist at start, create an API token with every role in the default tenant and write it there (mode 0600)",
);

/// How a server authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// Whether callers must present a token.
    pub enabled: bool,
    /// Where to write the first token, if it is not there yet.
    pub bootstrap_token_file: Option<PathBuf>,
    /// Serve TLS (mutual when it names a client CA); `None`: plaintext.
    pub tls: Option<TlsSettings>,
    /// The identity CA (certificate, key) that signs client certificates; `None`:
    /// `IssueClientCertificate` is refused with `FAILED_PRECONDITION`.
    pub identity_ca: Option<(PathBuf, PathBuf)>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            bootstrap_token_file: None,
            tls: None,
            identity_ca: None,
        }
    }
}

impl AuthSettings {
    /// From [`NO_AUTH_FLAG`] and [`BOOTSTRAP_TOKEN_FLAG`] (both must be in the binary's
    /// flags), and the TLS and identity CA flags of [`crate::tls`] the binary has.
    pub fn from_args(args: &Args) -> Result<Self, ConfigError> {
        let enabled = !args.switch(NO_AUTH_FLAG.name)?;
        let bootstrap_token_file = args.value(BOOTSTRAP_TOKEN_FLAG.name).map(PathBuf::from);
        if !enabled && bootstrap_token_file.is_some() {
            return Err(args.error(
                BOOTSTRAP_TOKEN_FLAG.name,
                "makes no sense without authentication (insecure-no-auth is set)",
            ));
        }
        let tls = TlsSettings::from_args(args)?;
        if !enabled && tls.is_some() {
            return Err(args.error(
                TLS_CERT_FLAG.name,
                "is served together with authentication; insecure-no-auth is set (development only, plaintext)",
            ));
        }
        let path = |flag: &Flag| {
            args.value(flag.name)
                .filter(|v| !v.trim().is_empty())
                .map(PathBuf::from)
        };
        let identity_ca = match (path(&IDENTITY_CA_CERT_FLAG), path(&IDENTITY_CA_KEY_FLAG)) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(args.error(
                    IDENTITY_CA_KEY_FLAG.name,
                    "is required with --identity-ca-cert",
                ));
            }
            (None, Some(_)) => {
                return Err(args.error(
                    IDENTITY_CA_CERT_FLAG.name,
                    "is required with --identity-ca-key",
                ));
            }
        };
        if !enabled && identity_ca.is_some() {
            return Err(args.error(
                IDENTITY_CA_CERT_FLAG.name,
                "makes no sense without authentication (insecure-no-auth is set)",
            ));
        }
        Ok(Self {
            enabled,
            bootstrap_token_file,
            tls,
            identity_ca,
        })
    }

    /// What the banner says about transport security, e.g. `TLS with client
    /// certificates`.
    pub fn describe_tls(&self) -> &'static str {
        match &self.tls {
            None => "off (plaintext)",
            Some(t) if t.client_ca.is_some() => {
                "on, with client certificates (mutual TLS) or bearer tokens"
            }
            Some(_) => "on (server certificate only)",
        }
    }

    /// The authenticator over `log` (`None` when disabled), after writing the bootstrap
    /// token if asked to.
    pub async fn start(
        &self,
        log: Arc<dyn EventLog>,
        clock: SharedClock,
    ) -> anyhow::Result<Option<Arc<Authenticator>>> {
        if !self.enabled {
            tracing::warn!(
                "authentication is OFF (--insecure-no-auth): anyone who reaches this server can do anything"
            );
            return Ok(None);
        }
        use anyhow::Context;
        let tls = match &self.tls {
            Some(settings) => Some(
                settings
                    .load()
                    .context("loading the TLS material (--tls-*)")?,
            ),
            None => None,
        };
        let identity_ca = match &self.identity_ca {
            Some((cert, key)) => Some(
                IdentityCa::load(cert, key).context("loading the identity CA (--identity-ca-*)")?,
            ),
            None => None,
        };
        if let Some(tls) = &tls {
            tracing::info!(mutual = tls.mutual(), "serving TLS");
        }
        let auth = Authenticator::with_tls(log, clock, tls, identity_ca);
        if let Some(path) = &self.bootstrap_token_file
            && bootstrap_token_file(&auth, path, DEFAULT_TENANT).await?
        {
            tracing::info!(path = %path.display(), "bootstrap API token written (every role, tenant default)");
        }
        Ok(Some(auth))
    }
}
