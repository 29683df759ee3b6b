//! Access control, pure: what each role may do, and the credentials of a tenant (the
//! aggregate on stream `tokens-<tenant>`: API tokens created, client certificates issued,
//! either revoked; one id space). Checking a presented token against the folded registry
//! is [`TokenRegistry::check`], a presented client certificate
//! [`TokenRegistry::check_certificate`]; hashing, signing and transport are the service
//! kit's.

use std::collections::{BTreeMap, BTreeSet};

use certledger_proto::common::v1::Role;
use certledger_proto::events::v1::token_event::Event as TokenEvent;
use certledger_proto::events::v1::{ClientCertificateIssued, TokenCreated, TokenRevoked};
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
    /// Set when the credential is a client certificate (then `secret_sha256` is empty
    /// and `expires_at` is its not-after).
    pub client_certificate: Option<ClientCertificateInfo>,
}

/// What the registry knows of a client certificate (never its key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificateInfo {
    /// Lower-case hex serial number.
    pub serial: String,
    /// Lower-case hex SHA-256 of the DER certificate.
    pub sha256_fingerprint: String,
    /// The subject, e.g. `CN=deploy,O=acme`.
    pub subject: String,
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
            .filter(|t| t.client_certificate.is_none())
            .filter(|t| constant_time_eq(t.secret_sha256.as_bytes(), secret_sha256.as_bytes()))
            .ok_or(TokenRefusal::Unknown)?;
        usable(token, now)
    }

    /// The client certificate credential `credential_id` if the presented certificate's
    /// SHA-256 is `sha256_fingerprint` and it is neither revoked nor expired at `now`.
    pub fn check_certificate(
        &self,
        credential_id: &str,
        sha256_fingerprint: &str,
        now: DateTime<Utc>,
    ) -> Result<&TokenRecord, TokenRefusal> {
        let record = self
            .tokens
            .get(credential_id)
            .filter(|t| {
                t.client_certificate.as_ref().is_some_and(|c| {
                    constant_time_eq(
                        c.sha256_fingerprint.as_bytes(),
                        sha256_fingerprint.as_bytes(),
                    )
                })
            })
            .ok_or(TokenRefusal::Unknown)?;
        usable(record, now)
    }
}

/// `record` unless revoked or expired at `now`.
fn usable(record: &TokenRecord, now: DateTime<Utc>) -> Result<&TokenRecord, TokenRefusal> {
    if let Some(reason) = &record.revoked {
        return Err(TokenRefusal::Revoked(reason.clone()));
    }
    if let Some(at) = record.expires_at.filter(|at| now >= *at) {
        return Err(TokenRefusal::Expired(at));
    }
    Ok(record)
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

/// Record a client certificate the identity CA signed.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordClientCertificate {
    /// The credential id (carried in the certificate).
    pub token_id: String,
    /// What it is for.
    pub name: String,
    /// Its roles (at least one).
    pub roles: Vec<Role>,
    /// What the registry keeps of the certificate.
    pub certificate: ClientCertificateInfo,
    /// The current time.
    pub now: DateTime<Utc>,
    /// The certificate's not-after (after `now`).
    pub not_after: DateTime<Utc>,
}

/// A command on a tenant's tokens.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenCommand {
    /// See [`CreateToken`].
    Create(CreateToken),
    /// See [`RevokeToken`].
    Revoke(RevokeToken),
    /// See [`RecordClientCertificate`].
    RecordClientCertificate(RecordClientCertificate),
}

/// The checks a new credential's id, name and roles pass, whatever its kind.
fn validate_new_credential(
    state: &TokenRegistry,
    token_id: &str,
    name: &str,
    roles: &[Role],
) -> Result<(), DomainError> {
    validate::id("token_id", token_id)?;
    validate::text("name", name, true)?;
    if name.chars().count() > MAX_TOKEN_NAME_LEN {
        return Err(DomainError::invalid(
            "name",
            format!("is longer than {MAX_TOKEN_NAME_LEN} characters"),
        ));
    }
    if roles.is_empty() || roles.contains(&Role::Unspecified) {
        return Err(DomainError::invalid(
            "roles",
            "name at least one role: viewer, operator, security-officer or admin",
        ));
    }
    if state.tokens.contains_key(token_id) {
        return Err(DomainError::already_exists(format!(
            "token {token_id} already exists"
        )));
    }
    Ok(())
}

/// Decides a token command.
pub fn decide_token(
    command: &TokenCommand,
    state: &TokenRegistry,
) -> Result<Vec<TokenEvent>, DomainError> {
    match command {
        TokenCommand::Create(c) => {
            validate::sha256_hex("secret_sha256", &c.secret_sha256)?;
            if c.expires_at.is_some_and(|at| at <= c.now) {
                return Err(DomainError::invalid("expires_at", "must be in the future"));
            }
            validate_new_credential(state, &c.token_id, &c.name, &c.roles)?;
            Ok(vec![TokenEvent::TokenCreated(TokenCreated {
                token_id: c.token_id.clone(),
                name: c.name.clone(),
                roles: c.roles.iter().map(|r| *r as i32).collect(),
                secret_sha256: c.secret_sha256.clone(),
                created_at: Some(to_timestamp(c.now)),
                expires_at: c.expires_at.map(to_timestamp),
            })])
        }
        TokenCommand::RecordClientCertificate(c) => {
            validate::sha256_hex("sha256_fingerprint", &c.certificate.sha256_fingerprint)?;
            if c.certificate.serial.is_empty()
                || !c.certificate.serial.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return Err(DomainError::invalid("serial", "must be hex digits"));
            }
            if c.not_after <= c.now {
                return Err(DomainError::invalid("not_after", "must be in the future"));
            }
            validate_new_credential(state, &c.token_id, &c.name, &c.roles)?;
            Ok(vec![TokenEvent::ClientCertificateIssued(
                ClientCertificateIssued {
                    token_id: c.token_id.clone(),
                    name: c.name.clone(),
                    roles: c.roles.iter().map(|r| *r as i32).collect(),
                    serial: c.certificate.serial.clone(),
                    sha256_fingerprint: c.certificate.sha256_fingerprint.clone(),
                    subject: c.certificate.subject.clone(),
                    created_at: Some(to_timestamp(c.now)),
                    not_after: Some(to_timestamp(c.not_after)),
                },
            )])
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
    let at = |ts: Option<&prost_types::Timestamp>| ts.and_then(from_timestamp);
    let roles = |roles: &[i32]| -> BTreeSet<Role> {
        roles
            .iter()
            .filter_map(|r| Role::try_from(*r).ok())
            .filter(|r| *r != Role::Unspecified)
            .collect()
    };
    match event {
        TokenEvent::TokenCreated(e) => {
            state.tokens.insert(
                e.token_id.clone(),
                TokenRecord {
                    token_id: e.token_id.clone(),
                    name: e.name.clone(),
                    roles: roles(&e.roles),
                    secret_sha256: e.secret_sha256.clone(),
                    created_at: at(e.created_at.as_ref()).unwrap_or(DateTime::UNIX_EPOCH),
                    expires_at: at(e.expires_at.as_ref()),
                    revoked: None,
                    client_certificate: None,
                },
            );
        }
        TokenEvent::ClientCertificateIssued(e) => {
            state.tokens.insert(
                e.token_id.clone(),
                TokenRecord {
                    token_id: e.token_id.clone(),
                    name: e.name.clone(),
                    roles: roles(&e.roles),
                    secret_sha256: String::new(),
                    created_at: at(e.created_at.as_ref()).unwrap_or(DateTime::UNIX_EPOCH),
                    // A certificate always expires; a missing time refuses it.
                    expires_at: Some(at(e.not_after.as_ref()).unwrap_or(DateTime::UNIX_EPOCH)),
                    revoked: None,
                    client_certificate: Some(ClientCertificateInfo {
                        serial: e.serial.clone(),
                        sha256_fingerprint: e.sha256_fingerprint.clone(),
                        subject: e.subject.clone(),
                    }),
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
    fn a_client_certificate_works_until_revoked_or_expired() {
        let now = Utc::now();
        let record = TokenCommand::RecordClientCertificate(RecordClientCertificate {
            token_id: "c1".into(),
            name: "web-1".into(),
            roles: vec![Role::Viewer],
            certificate: ClientCertificateInfo {
                serial: "0a1b".into(),
                sha256_fingerprint: hash(0xcd),
                subject: "CN=web-1,O=acme".into(),
            },
            now,
            not_after: now + chrono::TimeDelta::days(1),
        });
        let events = decide_token(&record, &TokenRegistry::default()).unwrap();
        let state = events.iter().fold(TokenRegistry::default(), evolve_token);
        assert!(state.check_certificate("c1", &hash(0xcd), now).is_ok());
        assert_eq!(
            state.check_certificate("c1", &hash(0xce), now),
            Err(TokenRefusal::Unknown)
        );
        // A certificate is no bearer token, even with an empty secret.
        assert_eq!(state.check("c1", "", now), Err(TokenRefusal::Unknown));
        assert!(matches!(
            state.check_certificate("c1", &hash(0xcd), now + chrono::TimeDelta::days(2)),
            Err(TokenRefusal::Expired(_))
        ));
        let revoke = TokenCommand::Revoke(RevokeToken {
            token_id: "c1".into(),
            reason: "laptop lost".into(),
        });
        let state = decide_token(&revoke, &state)
            .unwrap()
            .iter()
            .fold(state, evolve_token);
        assert_eq!(
            state.check_certificate("c1", &hash(0xcd), now),
            Err(TokenRefusal::Revoked("laptop lost".into()))
        );
        let e = decide_token(&record, &state).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::AlreadyExists);
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
