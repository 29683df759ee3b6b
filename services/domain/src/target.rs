//! The deployment-target aggregate (stream `target-<id>`): registered, then removed.

use certledger_proto::events::v1::target_event::Event as TargetEvent;
use certledger_proto::events::v1::target_registered::Kind;
use certledger_proto::events::v1::{TargetRegistered, TargetRemoved};

use crate::error::{DomainError, Rule};
use crate::names::normalize_domain;
use crate::validate;

/// Longest target name.
pub const MAX_TARGET_NAME_LEN: usize = 128;
/// Most delivery attempts a webhook target may ask for.
pub const MAX_WEBHOOK_ATTEMPTS: u32 = 100;

/// Where a target stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TargetStatus {
    /// No event yet: the stream does not exist.
    #[default]
    Absent,
    /// Registered; certificates can be deployed to it.
    Registered,
    /// Removed; nothing more is deployed to it.
    Removed,
}

/// A target as folded from its events.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TargetState {
    /// Number of events folded (the stream version).
    pub version: u64,
    /// Where it stands.
    pub status: TargetStatus,
    /// The target's id.
    pub target_id: String,
    /// The owning tenant.
    pub tenant: String,
    /// Its name.
    pub name: String,
    /// What kind of target it is and how to install on it.
    pub kind: Option<Kind>,
    /// Why it was removed.
    pub removal_reason: Option<String>,
}

impl TargetState {
    /// Whether the target exists (registered or removed).
    pub fn exists(&self) -> bool {
        self.status != TargetStatus::Absent
    }
}

/// Register a target.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisterTarget {
    /// The new target's id.
    pub target_id: String,
    /// The tenant, from the caller's credentials.
    pub tenant: String,
    /// A name for people.
    pub name: String,
    /// The kind and its settings.
    pub kind: Option<Kind>,
}

/// Remove a target.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoveTarget {
    /// Why (optional).
    pub reason: String,
}

/// A command on the target aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetCommand {
    /// See [`RegisterTarget`].
    Register(RegisterTarget),
    /// See [`RemoveTarget`].
    Remove(RemoveTarget),
}

/// Decides which events a command produces on a target. Registering an existing target
/// is `AlreadyExists`; removing a removed one decides no events.
pub fn decide_target(
    command: &TargetCommand,
    state: &TargetState,
) -> Result<Vec<TargetEvent>, DomainError> {
    match command {
        TargetCommand::Register(c) => {
            validate::id("target_id", &c.target_id)?;
            validate::text("tenant", &c.tenant, true)?;
            validate::text("name", &c.name, true)?;
            if c.name.chars().count() > MAX_TARGET_NAME_LEN {
                return Err(DomainError::invalid(
                    "name",
                    format!("is longer than {MAX_TARGET_NAME_LEN} characters"),
                ));
            }
            let Some(kind) = &c.kind else {
                return Err(DomainError::invalid(
                    "kind",
                    "is required; give nginx, file or webhook settings",
                ));
            };
            validate_kind(kind)?;
            if state.exists() {
                return Err(DomainError::already_exists(format!(
                    "target {} already exists",
                    state.target_id
                )));
            }
            Ok(vec![TargetEvent::TargetRegistered(TargetRegistered {
                target_id: c.target_id.clone(),
                tenant: c.tenant.clone(),
                name: c.name.trim().to_owned(),
                kind: Some(kind.clone()),
            })])
        }
        TargetCommand::Remove(c) => {
            validate::text("reason", &c.reason, false)?;
            match state.status {
                TargetStatus::Absent => Err(DomainError::not_found("target does not exist")),
                TargetStatus::Removed => Ok(vec![]),
                TargetStatus::Registered => Ok(vec![TargetEvent::TargetRemoved(TargetRemoved {
                    reason: c.reason.clone(),
                })]),
            }
        }
    }
}

/// Refuses a deployment to a target that is not registered (for the deployment service
/// to call with the target's state before deciding a `RequestDeployment`).
pub fn ensure_deployable(state: &TargetState) -> Result<(), DomainError> {
    match state.status {
        TargetStatus::Registered => Ok(()),
        TargetStatus::Absent => Err(DomainError::not_found("target does not exist")),
        TargetStatus::Removed => Err(DomainError::precondition(
            Rule::Lifecycle,
            format!(
                "target {} is removed; register it again under a new id to deploy to it",
                state.target_id
            ),
        )),
    }
}

/// Folds one event into a target's state. Pure and total.
pub fn evolve_target(mut state: TargetState, event: &TargetEvent) -> TargetState {
    state.version += 1;
    match event {
        TargetEvent::TargetRegistered(e) => {
            if state.status == TargetStatus::Absent {
                state.status = TargetStatus::Registered;
                state.target_id = e.target_id.clone();
                state.tenant = e.tenant.clone();
                state.name = e.name.clone();
                state.kind = e.kind.clone();
            }
        }
        TargetEvent::TargetRemoved(e) => {
            if state.status == TargetStatus::Registered {
                state.status = TargetStatus::Removed;
                state.removal_reason = Some(e.reason.clone());
            }
        }
    }
    state
}

/// Folds a target's whole history.
pub fn fold_target<'a>(events: impl IntoIterator<Item = &'a TargetEvent>) -> TargetState {
    events
        .into_iter()
        .fold(TargetState::default(), evolve_target)
}

fn validate_kind(kind: &Kind) -> Result<(), DomainError> {
    match kind {
        Kind::Nginx(n) => {
            absolute_path("nginx.certificate_path", &n.certificate_path, true)?;
            absolute_path("nginx.key_path", &n.key_path, true)?;
            distinct_paths("nginx.key_path", &n.certificate_path, &n.key_path)?;
            argv("nginx.reload_command", &n.reload_command, true)?;
            host_port("nginx.verify_address", &n.verify_address)?;
            if !n.verify_server_name.is_empty() {
                let name = normalize_domain("nginx.verify_server_name", &n.verify_server_name)?;
                if crate::names::is_wildcard(&name) {
                    return Err(DomainError::invalid(
                        "nginx.verify_server_name",
                        "must be a host name, not a wildcard",
                    ));
                }
            }
        }
        Kind::File(f) => {
            absolute_path("file.certificate_path", &f.certificate_path, true)?;
            absolute_path("file.key_path", &f.key_path, true)?;
            absolute_path("file.chain_path", &f.chain_path, false)?;
            distinct_paths("file.key_path", &f.certificate_path, &f.key_path)?;
            argv("file.command", &f.command, false)?;
        }
        Kind::Webhook(w) => {
            let rest = w
                .url
                .strip_prefix("https://")
                .or_else(|| w.url.strip_prefix("http://"));
            let host = rest.and_then(|r| r.split(['/', '?', '#']).next());
            if host.is_none_or(str::is_empty) || w.url.chars().any(char::is_whitespace) {
                return Err(DomainError::invalid(
                    "webhook.url",
                    format!(
                        "{:?} is not an http(s) URL, e.g. https://hooks.example.com/certs",
                        validate::clip(&w.url)
                    ),
                ));
            }
            if w.secret_id.trim().is_empty() {
                return Err(DomainError::invalid(
                    "webhook.secret_id",
                    "is required: webhook deliveries are signed with the shared secret",
                ));
            }
            if w.max_attempts > MAX_WEBHOOK_ATTEMPTS {
                return Err(DomainError::invalid(
                    "webhook.max_attempts",
                    format!(
                        "at most {MAX_WEBHOOK_ATTEMPTS} attempts, got {}",
                        w.max_attempts
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn absolute_path(field: &str, path: &str, required: bool) -> Result<(), DomainError> {
    if path.is_empty() {
        return if required {
            Err(DomainError::invalid(field, "is required"))
        } else {
            Ok(())
        };
    }
    if !path.starts_with('/') || path.contains('\0') || path.ends_with('/') {
        return Err(DomainError::invalid(
            field,
            format!("{:?} is not an absolute file path", validate::clip(path)),
        ));
    }
    if path.split('/').any(|part| part == "..") {
        return Err(DomainError::invalid(field, "must not contain \"..\""));
    }
    Ok(())
}

fn distinct_paths(field: &str, certificate: &str, key: &str) -> Result<(), DomainError> {
    if certificate == key {
        return Err(DomainError::invalid(
            field,
            "must differ from the certificate path",
        ));
    }
    Ok(())
}

fn argv(field: &str, argv: &[String], required: bool) -> Result<(), DomainError> {
    if argv.is_empty() {
        return if required {
            Err(DomainError::invalid(
                field,
                "is required, as an argument list, e.g. [\"nginx\", \"-s\", \"reload\"]",
            ))
        } else {
            Ok(())
        };
    }
    if argv[0].trim().is_empty() {
        return Err(DomainError::invalid(
            format!("{field}[0]"),
            "must name the program to run",
        ));
    }
    if let Some(i) = argv.iter().position(|a| a.contains('\0')) {
        return Err(DomainError::invalid(
            format!("{field}[{i}]"),
            "contains a NUL character",
        ));
    }
    Ok(())
}

fn host_port(field: &str, value: &str) -> Result<(), DomainError> {
    let bad = || {
        DomainError::invalid(
            field,
            format!(
                "{:?} is not host:port, e.g. 127.0.0.1:443 or [::1]:443",
                validate::clip(value)
            ),
        )
    };
    let (host, port) = value.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty() && !host.contains(':') && !host.chars().any(char::is_whitespace)
    };
    if port == 0 || !host_ok {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use certledger_proto::events::v1::{FileTarget, NginxTarget, WebhookTarget};

    fn nginx() -> Kind {
        Kind::Nginx(NginxTarget {
            certificate_path: "/etc/nginx/tls/site.crt".into(),
            key_path: "/etc/nginx/tls/site.key".into(),
            reload_command: vec!["nginx".into(), "-s".into(), "reload".into()],
            verify_address: "127.0.0.1:443".into(),
            verify_server_name: "www.example.com".into(),
        })
    }

    fn register(kind: Kind) -> TargetCommand {
        TargetCommand::Register(RegisterTarget {
            target_id: "t1".into(),
            tenant: "acme".into(),
            name: "edge nginx".into(),
            kind: Some(kind),
        })
    }

    #[test]
    fn register_then_remove() {
        let events = decide_target(&register(nginx()), &TargetState::default()).unwrap();
        let state = fold_target(&events);
        assert_eq!(state.status, TargetStatus::Registered);
        assert!(ensure_deployable(&state).is_ok());
        let again = decide_target(&register(nginx()), &state).unwrap_err();
        assert_eq!(again.kind(), crate::ErrorKind::AlreadyExists);
        let remove = TargetCommand::Remove(RemoveTarget {
            reason: "decommissioned".into(),
        });
        let removed = decide_target(&remove, &state).unwrap();
        let state = fold_target(events.iter().chain(&removed));
        assert_eq!(state.status, TargetStatus::Removed);
        assert_eq!(state.version, 2);
        assert_eq!(decide_target(&remove, &state).unwrap(), vec![]);
        assert_eq!(
            ensure_deployable(&state).unwrap_err().kind(),
            crate::ErrorKind::FailedPrecondition
        );
        assert_eq!(
            decide_target(&remove, &TargetState::default())
                .unwrap_err()
                .kind(),
            crate::ErrorKind::NotFound
        );
    }

    #[test]
    fn settings_are_checked() {
        let field = |kind: Kind| {
            decide_target(&register(kind), &TargetState::default())
                .unwrap_err()
                .field()
                .map(str::to_owned)
        };
        let Kind::Nginx(base) = nginx() else {
            unreachable!()
        };
        assert_eq!(
            field(Kind::Nginx(NginxTarget {
                certificate_path: "site.crt".into(),
                ..base.clone()
            }))
            .as_deref(),
            Some("nginx.certificate_path")
        );
        assert_eq!(
            field(Kind::Nginx(NginxTarget {
                key_path: base.certificate_path.clone(),
                ..base.clone()
            }))
            .as_deref(),
            Some("nginx.key_path")
        );
        assert_eq!(
            field(Kind::Nginx(NginxTarget {
                reload_command: vec![],
                ..base.clone()
            }))
            .as_deref(),
            Some("nginx.reload_command")
        );
        assert_eq!(
            field(Kind::Nginx(NginxTarget {
                verify_address: "localhost".into(),
                ..base.clone()
            }))
            .as_deref(),
            Some("nginx.verify_address")
        );
        assert_eq!(
            field(Kind::Nginx(NginxTarget {
                verify_server_name: "*.example.com".into(),
                ..base.clone()
            }))
            .as_deref(),
            Some("nginx.verify_server_name")
        );
        assert!(
            decide_target(
                &register(Kind::Nginx(NginxTarget {
                    verify_address: "[::1]:8443".into(),
                    ..base
                })),
                &TargetState::default()
            )
            .is_ok()
        );
        assert_eq!(
            field(Kind::File(FileTarget {
                certificate_path: "/srv/c.pem".into(),
                key_path: "/srv/../k.pem".into(),
                ..Default::default()
            }))
            .as_deref(),
            Some("file.key_path")
        );
        assert_eq!(
            field(Kind::Webhook(WebhookTarget {
                url: "ftp://x".into(),
                secret_id: "s".into(),
                max_attempts: 3
            }))
            .as_deref(),
            Some("webhook.url")
        );
        assert_eq!(
            field(Kind::Webhook(WebhookTarget {
                url: "https://hooks.example.com/x".into(),
                secret_id: "".into(),
                max_attempts: 3
            }))
            .as_deref(),
            Some("webhook.secret_id")
        );
        let missing = decide_target(
            &TargetCommand::Register(RegisterTarget {
                target_id: "t1".into(),
                tenant: "acme".into(),
                name: "x".into(),
                kind: None,
            }),
            &TargetState::default(),
        )
        .unwrap_err();
        assert_eq!(missing.field(), Some("kind"));
    }
}
