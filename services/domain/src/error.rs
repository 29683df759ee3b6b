//! The one error type of the domain: precise, person-actionable, and typed so that the
//! gRPC layer maps it to a status code without matching on strings.

use std::fmt;

/// What kind of error a [`DomainError`] is; maps one-to-one onto a gRPC status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The command itself is malformed (gRPC `INVALID_ARGUMENT`).
    InvalidArgument,
    /// The command is well-formed but illegal in the aggregate's current state
    /// (gRPC `FAILED_PRECONDITION`).
    FailedPrecondition,
    /// The aggregate already exists (gRPC `ALREADY_EXISTS`).
    AlreadyExists,
    /// The command addresses a stream that does not exist (gRPC `NOT_FOUND`).
    NotFound,
}

impl ErrorKind {
    /// The gRPC status code name, e.g. `"FAILED_PRECONDITION"`.
    pub fn grpc_code_name(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "INVALID_ARGUMENT",
            ErrorKind::FailedPrecondition => "FAILED_PRECONDITION",
            ErrorKind::AlreadyExists => "ALREADY_EXISTS",
            ErrorKind::NotFound => "NOT_FOUND",
        }
    }
}

/// The lifecycle rule a [`DomainError::FailedPrecondition`] enforces. Stable snake-case
/// codes (see [`Rule::as_str`]) can travel in gRPC error details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// The command is not allowed in the certificate's (or target's) current status.
    Lifecycle,
    /// The application was already submitted.
    ApplicationAlreadySubmitted,
    /// The command needs the key pair the application asked the system to generate,
    /// or conflicts with the application's key source.
    KeySource,
    /// The command does not fit the specification's validation method.
    ValidationMethod,
    /// The name is not one of the application's names.
    UnknownName,
    /// The recorded issuance intent (serial, validity) does not match.
    IssuanceIntent,
    /// The certificate is expired (at `not_after`), even if no expiry event is recorded yet.
    Expired,
    /// Renewal outside the renewal window.
    RenewalWindow,
    /// A renewal is already in progress or done (at most one active successor).
    RenewalInProgress,
    /// The successor named is not this certificate's active successor.
    UnknownSuccessor,
    /// The certificate is already superseded by a different successor.
    Superseded,
    /// No deployment with that id is current on that target.
    UnknownDeployment,
    /// The deployment is not in a state that allows the command.
    DeploymentState,
    /// A fingerprint does not match what it must equal.
    FingerprintMismatch,
    /// The revocation reason is not allowed for this certificate.
    RevocationReason,
}

impl Rule {
    /// A stable snake-case code for the rule, e.g. `"renewal_window"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Lifecycle => "lifecycle",
            Rule::ApplicationAlreadySubmitted => "application_already_submitted",
            Rule::KeySource => "key_source",
            Rule::ValidationMethod => "validation_method",
            Rule::UnknownName => "unknown_name",
            Rule::IssuanceIntent => "issuance_intent",
            Rule::Expired => "expired",
            Rule::RenewalWindow => "renewal_window",
            Rule::RenewalInProgress => "renewal_in_progress",
            Rule::UnknownSuccessor => "unknown_successor",
            Rule::Superseded => "superseded",
            Rule::UnknownDeployment => "unknown_deployment",
            Rule::DeploymentState => "deployment_state",
            Rule::FingerprintMismatch => "fingerprint_mismatch",
            Rule::RevocationReason => "revocation_reason",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected command, with a message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// A field of the command is malformed. `field` is a path into the request, e.g.
    /// `application.domains[2]` or `spec.key_algorithm`.
    #[error("{field}: {message}")]
    InvalidArgument {
        /// Path of the offending field.
        field: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The command is illegal in the current state.
    #[error("{message}")]
    FailedPrecondition {
        /// The rule that forbids it.
        rule: Rule,
        /// What is wrong and what the person can do instead.
        message: String,
    },
    /// The aggregate already exists.
    #[error("{message}")]
    AlreadyExists {
        /// What exists already.
        message: String,
    },
    /// The aggregate does not exist.
    #[error("{message}")]
    NotFound {
        /// What was not found.
        message: String,
    },
}

impl DomainError {
    /// Builds an [`DomainError::InvalidArgument`].
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        DomainError::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Builds a [`DomainError::FailedPrecondition`].
    pub fn precondition(rule: Rule, message: impl Into<String>) -> Self {
        DomainError::FailedPrecondition {
            rule,
            message: message.into(),
        }
    }

    /// Builds an [`DomainError::AlreadyExists`].
    pub fn already_exists(message: impl Into<String>) -> Self {
        DomainError::AlreadyExists {
            message: message.into(),
        }
    }

    /// Builds a [`DomainError::NotFound`].
    pub fn not_found(message: impl Into<String>) -> Self {
        DomainError::NotFound {
            message: message.into(),
        }
    }

    /// The kind of error, for mapping to a gRPC status code.
    pub fn kind(&self) -> ErrorKind {
        match self {
            DomainError::InvalidArgument { .. } => ErrorKind::InvalidArgument,
            DomainError::FailedPrecondition { .. } => ErrorKind::FailedPrecondition,
            DomainError::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            DomainError::NotFound { .. } => ErrorKind::NotFound,
        }
    }

    /// The offending field's path, for `InvalidArgument` (e.g. for a
    /// `google.rpc.BadRequest.FieldViolation`).
    pub fn field(&self) -> Option<&str> {
        match self {
            DomainError::InvalidArgument { field, .. } => Some(field),
            _ => None,
        }
    }

    /// The violated rule, for `FailedPrecondition` (e.g. for a
    /// `google.rpc.PreconditionFailure.Violation`).
    pub fn rule(&self) -> Option<Rule> {
        match self {
            DomainError::FailedPrecondition { rule, .. } => Some(*rule),
            _ => None,
        }
    }

    /// The person-readable message without the field prefix.
    pub fn message(&self) -> &str {
        match self {
            DomainError::InvalidArgument { message, .. }
            | DomainError::FailedPrecondition { message, .. }
            | DomainError::AlreadyExists { message }
            | DomainError::NotFound { message } => message,
        }
    }

    /// Prefixes the field path, e.g. `domains[0]` becomes `application.domains[0]`.
    pub fn under(self, prefix: &str) -> Self {
        match self {
            DomainError::InvalidArgument { field, message } => DomainError::InvalidArgument {
                field: format!("{prefix}.{field}"),
                message,
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors_expose_kind_field_and_rule() {
        let e = DomainError::invalid("domains[2]", "bad").under("application");
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert_eq!(e.field(), Some("application.domains[2]"));
        assert_eq!(e.to_string(), "application.domains[2]: bad");
        assert_eq!(e.message(), "bad");
        let e = DomainError::precondition(Rule::RenewalWindow, "not yet");
        assert_eq!(e.kind().grpc_code_name(), "FAILED_PRECONDITION");
        assert_eq!(e.rule(), Some(Rule::RenewalWindow));
        assert_eq!(e.field(), None);
        assert_eq!(Rule::RenewalWindow.to_string(), "renewal_window");
    }
}
