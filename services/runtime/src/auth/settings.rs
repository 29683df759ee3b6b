//! The authentication options every binary takes, and turning them into an
//! [`Authenticator`] once the event log is open.

use std::path::PathBuf;
use std::sync::Arc;

use certledger_eventlog::EventLog;

use super::{Authenticator, bootstrap_token_file};
use crate::clock::SharedClock;
use crate::config::{Args, ConfigError, Flag};
use crate::tenant::DEFAULT_TENANT;

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
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            bootstrap_token_file: None,
        }
    }
}

impl AuthSettings {
    /// From [`NO_AUTH_FLAG`] and [`BOOTSTRAP_TOKEN_FLAG`] (both must be in the binary's
    /// flags).
    pub fn from_args(args: &Args) -> Result<Self, ConfigError> {
        let enabled = !args.switch(NO_AUTH_FLAG.name)?;
        let bootstrap_token_file = args.value(BOOTSTRAP_TOKEN_FLAG.name).map(PathBuf::from);
        if !enabled && bootstrap_token_file.is_some() {
            return Err(args.error(
                BOOTSTRAP_TOKEN_FLAG.name,
                "makes no sense without authentication (insecure-no-auth is set)",
            ));
        }
        Ok(Self {
            enabled,
            bootstrap_token_file,
        })
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
        let auth = Authenticator::new(log, clock);
        if let Some(path) = &self.bootstrap_token_file
            && bootstrap_token_file(&auth, path, DEFAULT_TENANT).await?
        {
            tracing::info!(path = %path.display(), "bootstrap API token written (every role, tenant default)");
        }
        Ok(Some(auth))
    }
}
