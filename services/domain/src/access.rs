//! Access control, pure: what each role may do, and the API tokens of a tenant (the
//! aggregate on stream `tokens-<tenant>`: created, revoked). Checking a presented token
//! against the folded registry is [`TokenRegistry::check`]; hashing and transport are the
//! service kit's.

use std::collections::{BTreeMap, BTreeSet};

use certledger_proto::common::v1::Role;
use certledger_proto::events::v1::token_event::Event as TokenEvent;
use certledger_proto::events::v1::{TokenCreated, TokenRevoked};
use chrono::{DateTime, Utc};

use crate::error::DomainError;
use crate::time::{from_timestamp, to_timestamp};
use crate::validate;

/// Longest token name.
pub const MAX_TOKEN_NAME_LEN: usize = 128;

/// One thing a caller may do. Every RPC needs exactly one (some need a second one for a
/// part of the request, e.g. exporting the private key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    /// Read certificates, history, targets, deployments, the CA chain, CRLs.
    Read,
    /// Place orders, submit applications, cancel.
    Order,
    /// Renew certificates.
    Renew,
    /// Deploy and undeploy certificates.
    Deploy,
    /// Approve or reject applications.
    Approve,
    /// Revoke certificates.
    Revoke,
    /// Export generated private keys.
    ExportKey,
    /// Register and remove deployment targets.
    ManageTargets,
    /// Create, list and revoke API tokens.
    ManageTokens,
}

impl Permission {
    /// Every permission.
    pub const ALL: [Permission; 9] = [
        Permission::Read,
        Permission::Order,
        Permission::Renew,
        Permission::Deploy,
        Permission::Approve,
        Permission::Revoke,
        Permission::ExportKey,
        Permission::ManageTargets,
        Permission::ManageTokens,
    ];

    /// Its name in messages, e.g. `"export-key"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Order => "order",
            Permission::Renew => "renew",
            Permission::Deploy => "deploy",
            Permission::Approve => "approve",
            Permission::Revoke => "revoke",
            Permission::ExportKey => "export-key",
            Permission::ManageTargets => "manage-targets",
            Permission::ManageTokens => "manage-tokens",
        }
    }
}

/// What a role grants.
pub fn permissions(role: Role) -> &'static [Permission] {
    use Permission::*;
    match role {
        Role::Unspecified => &[],
        Role::Viewer => &[Read],
        Role::Operator => &[Read, Order, Renew, Deploy],
        Role::SecurityOfficer => &[Read, Approve, Revoke, ExportKey],
        Role::Admin => &[Read, ManageTargets, ManageTokens],
    }
}

/// What a set of roles grants.
pub fn granted(roles: &BTreeSet<Role>) -> BTreeSet<Permission> {
    roles
        .iter()
        .flat_map(|r| permissions(*r).iter().copied())
        .collect()
}

/// The lower-case name of a role, e.g. `"security-officer"`.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Unspecified => "unspecified",
        Role::Viewer => "viewer",
        Role::Operator => "operator",
        Role::SecurityOfficer => "security-officer",
        Role::Admin => "admin",
    }
}

/// A role by its name (`viewer`, `operator`, `security-officer`, `admin`).
pub fn parse_role(name: &str) -> Option<Role> {
    [
        Role::Viewer,
        Role::Operator,
        Role::SecurityOfficer,
        Role::Admin,
    ]
    .into_iter()
    .find(|r| role_name(*r) == name.trim().to_ascii_lowercase().replace('_', "-"))
}

/// One token as folded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Its id.
    pub token_id: String,
    /// What it is for.
    pub name: String,
    /// Its roles.
    pub roles: BTreeSet<Role>,
    /// Hex SHA-256 of its secret.
    pub secret_sha256: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// Why it was revoked, once it is.
    pub revoked: Option<String>,
}

/// The tokens of one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TokenRegistry {
    /// Number of events folded (the stream version).
    pub version: u64,
    /// Tokens by id.
    pub tokens: BTreeMap<String, TokenRecord>,
}

/// Why a presented token is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRefusal {
    /// No such token, or the secret does not match.
    Unknown,
    /// Revoked (the reason).
    Revoked(String),
    /// Expired at this time.
    Expired(DateTime<Utc>),
}

impl TokenRegistry {
    /// The token `token_id` if its secret hashes to `secret_sha256` and it is neither
    /// revoked nor expired at `now`.
    pub fn check(
        &self,
        token_id: &str,
        secret_sha256: &str,
        now: DateTime<Utc>,
    ) -> Result<&TokenRecord, TokenRefusal> {
        let token = self
            .tokens
            .get(token_id)
            .filter(|t| constant_time_eq(t.secret_sha256.as_bytes(), secret_sha256.as_bytes()))
            .ok_or(TokenRefusal::Unknown)?;
        if let Some(reason) = &token.revoked {
            return Err(TokenRefusal::Revoked(reason.clone()));
        }
        if let Some(at) = token.expires_at.filter(|at| now >= *at) {
            return Err(TokenRefusal::Expired(at));
        }
        Ok(token)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Create a token.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateToken {
    /// The new token's id.
    pub token_id: String,
    /// What it is for.
    pub name: String,
    /// Its roles (at least one).
    pub roles: Vec<Role>,
    /// Hex SHA-256 of its secret.
    pub secret_sha256: String,
    /// The current time.
    pub now: DateTime<Utc>,
    /// When it stops working, if ever (after `now`).
    pub expires_at: Option<DateTime<Utc>>,
}

/// Revoke a token.
#[derive(Debug, Clone, PartialEq)]
pub struct RevokeToken {
    /// The token.
    pub token_id: String,
    /// Why.
    pub reason: String,
}

/// A command on a tenant's tokens.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenCommand {
    /// See [`CreateToken`].
    Create(CreateToken),
    /// See [`RevokeToken`].
    Revoke(RevokeToken),
}

/// Decides a token command.
pub fn decide_token(
    command: &TokenCommand,
    state: &TokenRegistry,
) -> Result<Vec<TokenEvent>, DomainError> {
    match command {
        TokenCommand::Create(c) => {
            validate::id("token_id", &c.token_id)?;
            validate::text("name", &c.name, true)?;
            if c.name.chars().count() > MAX_TOKEN_NAME_LEN {
                return Err(DomainError::invalid(
                    "name",
                    format!("is longer than {MAX_TOKEN_NAME_LEN} characters"),
                ));
            }
            if c.roles.is_empty() || c.roles.contains(&Role::Unspecified) {
                return Err(DomainError::invalid(
                    "roles",
                    "name at least one role: viewer, operator, security-officer or admin",
                ));
            }
            validate::sha256_hex("secret_sha256", &c.secret_sha256)?;
            if c.expires_at.is_some_and(|at| at <= c.now) {
                return Err(DomainError::invalid("expires_at", "must be in the future"));
            }
            if state.tokens.contains_key(&c.token_id) {
                return Err(DomainError::already_exists(format!(
                    "token {} already exists",
                    c.token_id
                )));
            }
            Ok(vec![TokenEvent::TokenCreated(TokenCreated {
                token_id: c.token_id.clone(),
                name: c.name.clone(),
                roles: c.roles.iter().map(|r| *r as i32).collect(),
                secret_sha256: c.secret_sha256.clone(),
                created_at: Some(to_timestamp(c.now)),
                expires_at: c.expires_at.map(to_timestamp),
            })])
        }
        TokenCommand::Revoke(c) => {
            validate::text("reason", &c.reason, false)?;
            let Some(token) = state.tokens.get(&c.token_id) else {
                return Err(DomainError::not_found(format!(
                    "token {} not found",
                    c.token_id
                )));
            };
            if token.revoked.is_some() {
                return Ok(vec![]);
            }
            Ok(vec![TokenEvent::TokenRevoked(TokenRevoked {
                token_id: c.token_id.clone(),
                reason: c.reason.clone(),
            })])
        }
    }
}

/// Applies one token event.
pub fn evolve_token(mut state: TokenRegistry, event: &TokenEvent) -> TokenRegistry {
    state.version += 1;
    match event {
        TokenEvent::TokenCreated(e) => {
            let at = |ts: Option<&prost_types::Timestamp>| ts.and_then(from_timestamp);
            state.tokens.insert(
                e.token_id.clone(),
                TokenRecord {
                    token_id: e.token_id.clone(),
                    name: e.name.clone(),
                    roles: e
                        .roles
                        .iter()
                        .filter_map(|r| Role::try_from(*r).ok())
                        .filter(|r| *r != Role::Unspecified)
                        .collect(),
                    secret_sha256: e.secret_sha256.clone(),
                    created_at: at(e.created_at.as_ref()).unwrap_or(DateTime::UNIX_EPOCH),
                    expires_at: at(e.expires_at.as_ref()),
                    revoked: None,
                },
            );
        }
        TokenEvent::TokenRevoked(e) => {
            if let Some(token) = state.tokens.get_mut(&e.token_id) {
                token.revoked = Some(e.reason.clone());
            }
        }
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(byte: u8) -> String {
        format!("{byte:02x}").repeat(32)
    }

    fn created(now: DateTime<Utc>) -> TokenRegistry {
        let create = TokenCommand::Create(CreateToken {
            token_id: "t1".into(),
            name: "deploy script".into(),
            roles: vec![Role::Operator],
            secret_sha256: hash(0xab),
            now,
            expires_at: Some(now + chrono::TimeDelta::days(1)),
        });
        let events = decide_token(&create, &TokenRegistry::default()).unwrap();
        events.iter().fold(TokenRegistry::default(), evolve_token)
    }

    #[test]
    fn roles_grant_permissions() {
        let roles = BTreeSet::from([Role::Operator, Role::SecurityOfficer]);
        let g = granted(&roles);
        assert!(g.contains(&Permission::Order) && g.contains(&Permission::Revoke));
        assert!(!g.contains(&Permission::ManageTokens));
        assert!(!granted(&BTreeSet::from([Role::Viewer])).contains(&Permission::Order));
        assert_eq!(parse_role("security_officer"), Some(Role::SecurityOfficer));
        assert_eq!(parse_role("root"), None);
    }

    #[test]
    fn a_token_works_until_revoked_or_expired() {
        let now = Utc::now();
        let state = created(now);
        assert!(state.check("t1", &hash(0xab), now).is_ok());
        assert_eq!(
            state.check("t1", &hash(0xac), now),
            Err(TokenRefusal::Unknown)
        );
        assert_eq!(
            state.check("t2", &hash(0xab), now),
            Err(TokenRefusal::Unknown)
        );
        assert!(matches!(
            state.check("t1", &hash(0xab), now + chrono::TimeDelta::days(2)),
            Err(TokenRefusal::Expired(_))
        ));
        let revoke = TokenCommand::Revoke(RevokeToken {
            token_id: "t1".into(),
            reason: "leaked".into(),
        });
        let events = decide_token(&revoke, &state).unwrap();
        let state = events.iter().fold(state, evolve_token);
        assert_eq!(
            state.check("t1", &hash(0xab), now),
            Err(TokenRefusal::Revoked("leaked".into()))
        );
        assert!(decide_token(&revoke, &state).unwrap().is_empty());
    }

    #[test]
    fn bad_commands_name_the_field() {
        let now = Utc::now();
        let bad = TokenCommand::Create(CreateToken {
            token_id: "t1".into(),
            name: "x".into(),
            roles: vec![],
            secret_sha256: hash(1),
            now,
            expires_at: None,
        });
        let e = decide_token(&bad, &TokenRegistry::default()).unwrap_err();
        assert_eq!(e.field(), Some("roles"));
        let again = TokenCommand::Create(CreateToken {
            token_id: "t1".into(),
            name: "x".into(),
            roles: vec![Role::Viewer],
            secret_sha256: hash(1),
            now,
            expires_at: None,
        });
        let e = decide_token(&again, &created(now)).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::AlreadyExists);
    }
}
