//! The one mapping of errors onto gRPC statuses.
//!
//! | error | code |
//! |---|---|
//! | `DomainError::InvalidArgument` | `INVALID_ARGUMENT`, message `<field>: <why>` |
//! | `DomainError::FailedPrecondition` | `FAILED_PRECONDITION` (rule in metadata) |
//! | `DomainError::AlreadyExists` | `ALREADY_EXISTS` |
//! | `DomainError::NotFound` (also another tenant's certificate) | `NOT_FOUND` |
//! | expected version mismatch, contention after retries | `ABORTED` |
//! | event log unreachable | `UNAVAILABLE` |
//! | anything else (corrupt data, bugs) | `INTERNAL` |
//!
//! Internal details (database errors, paths) are logged with an incident id and never
//! sent to the caller, who gets the incident id to quote.

use std::fmt::Display;

use certledger_domain::{DomainError, ErrorKind};
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};
use uuid::Uuid;

use crate::repository::RepositoryError;

/// Response metadata key carrying the offending field of an `INVALID_ARGUMENT`.
pub const FIELD_METADATA: &str = "certledger-field";

/// Response metadata key carrying the violated rule of a `FAILED_PRECONDITION`.
pub const RULE_METADATA: &str = "certledger-rule";

/// The status of a domain error.
pub fn from_domain(error: &DomainError) -> Status {
    let code = match error.kind() {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::NotFound => Code::NotFound,
    };
    let mut status = Status::new(code, error.to_string());
    if let Some(field) = error.field()
        && let Ok(value) = MetadataValue::try_from(field)
    {
        status.metadata_mut().insert(FIELD_METADATA, value);
    }
    if let Some(rule) = error.rule()
        && let Ok(value) = MetadataValue::try_from(rule.as_str())
    {
        status.metadata_mut().insert(RULE_METADATA, value);
    }
    status
}

/// The status of a repository error.
pub fn from_repository(error: RepositoryError) -> Status {
    match error {
        RepositoryError::Domain(e) => from_domain(&e),
        e @ (RepositoryError::VersionMismatch { .. } | RepositoryError::Contended { .. }) => {
            Status::aborted(e.to_string())
        }
        RepositoryError::Storage(e) => unavailable("the event log", &e),
        e @ (RepositoryError::Append(_) | RepositoryError::Corrupt { .. }) => {
            internal("event log", &e)
        }
    }
}

/// `INVALID_ARGUMENT` naming `field`: `<field>: <message>`.
pub fn invalid_argument(field: &str, message: impl Display) -> Status {
    from_domain(&DomainError::invalid(field, message.to_string()))
}

/// `INTERNAL` with an incident id; the error itself goes to the log only.
pub fn internal(context: &str, error: &dyn Display) -> Status {
    let incident = Uuid::now_v7();
    tracing::error!(%incident, context, %error, "internal error");
    Status::internal(format!(
        "internal error (incident {incident}); the operator can find it in the service log"
    ))
}

/// `UNAVAILABLE` naming what is unavailable, with an incident id; details go to the log.
pub fn unavailable(what: &str, error: &dyn Display) -> Status {
    let incident = Uuid::now_v7();
    tracing::warn!(%incident, what, %error, "dependency unavailable");
    Status::unavailable(format!(
        "{what} is unavailable right now; retry later (incident {incident})"
    ))
}

impl From<RepositoryError> for Status {
    fn from(error: RepositoryError) -> Self {
        from_repository(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use certledger_domain::Rule;

    #[test]
    fn domain_errors_map_to_codes_with_field_and_rule() {
        let s = from_domain(&DomainError::invalid("application.csr_pem", "bad"));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "application.csr_pem: bad");
        assert_eq!(
            s.metadata().get(FIELD_METADATA).unwrap(),
            "application.csr_pem"
        );
        let s = from_domain(&DomainError::precondition(Rule::Lifecycle, "no"));
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert_eq!(s.metadata().get(RULE_METADATA).unwrap(), "lifecycle");
        assert_eq!(
            from_domain(&DomainError::already_exists("x")).code(),
            Code::AlreadyExists
        );
        assert_eq!(
            from_domain(&DomainError::not_found("x")).code(),
            Code::NotFound
        );
    }

    #[test]
    fn internal_errors_do_not_leak() {
        let s = internal("db", &"password=hunter2 at /var/lib/x");
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("hunter2"));
        let s = from_repository(RepositoryError::Contended {
            certificate_id: "c".into(),
            attempts: 5,
        });
        assert_eq!(s.code(), Code::Aborted);
    }
}
