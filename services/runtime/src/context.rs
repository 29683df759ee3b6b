//! Who is calling and why: the tenant scope, correlation and causation ids, the actor and
//! the trace context that every appended event carries in its metadata.

use certledger_eventlog::{Metadata, RecordedEvent};
use tonic::{Request, Status};
use uuid::Uuid;

use crate::auth::{Permission, Principal};
use crate::tenant::tenant_of;

/// Request metadata key of the correlation id (a UUID); a new UUID v7 when absent.
pub const CORRELATION_HEADER: &str = "x-correlation-id";

/// W3C trace context request metadata key.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// The actor of requests until authentication arrives (issue 8).
pub const ANONYMOUS: &str = "anonymous";

/// The context of one command: who, on whose behalf, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallContext {
    /// The tenant the caller acts within; `None` for a service reacting to events, which
    /// acts on every tenant's certificates (the event metadata then carries the
    /// certificate's own tenant).
    pub tenant: Option<String>,
    /// Shared by everything that happens because of one request.
    pub correlation_id: Uuid,
    /// The event that caused this command (reactions), if any.
    pub causation_id: Option<Uuid>,
    /// Who acts: for now the service name, or [`ANONYMOUS`] for requests.
    pub actor: String,
    /// W3C traceparent, when the request carried one.
    pub trace_context: Option<String>,
    /// The authenticated caller (`None`: a service acting on its own, or a server
    /// running without authentication).
    pub principal: Option<Principal>,
}

impl CallContext {
    /// The context of a gRPC request: tenant from [`tenant_of`] (the credentials' when
    /// the server authenticates), actor from the credentials, correlation id from
    /// `x-correlation-id` (or a new UUID v7), trace context from `traceparent`.
    pub fn from_request<T>(request: &Request<T>) -> Result<Self, Status> {
        let metadata = request.metadata();
        let tenant = tenant_of(request)?;
        let principal = crate::auth::principal(request).cloned();
        let correlation_id = match metadata.get(CORRELATION_HEADER) {
            None => Uuid::now_v7(),
            Some(value) => value
                .to_str()
                .ok()
                .and_then(|s| Uuid::parse_str(s.trim()).ok())
                .ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "{CORRELATION_HEADER}: must be a UUID, e.g. {}",
                        Uuid::now_v7()
                    ))
                })?,
        };
        let trace_context = metadata
            .get(TRACEPARENT_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| valid_traceparent(v))
            .map(str::to_owned);
        Ok(Self {
            tenant: Some(tenant),
            correlation_id,
            causation_id: None,
            actor: principal
                .as_ref()
                .map_or_else(|| ANONYMOUS.to_owned(), |p| p.actor.clone()),
            trace_context,
            principal,
        })
    }

    /// The context of a reaction to `event` by `service`: any tenant, the event's
    /// correlation id (or a new one), caused by the event.
    pub fn reaction(event: &RecordedEvent, service: &str) -> Self {
        Self {
            tenant: None,
            correlation_id: event.metadata.correlation_id.unwrap_or_else(Uuid::now_v7),
            causation_id: Some(event.event_id),
            actor: service.to_owned(),
            trace_context: event.metadata.trace_context.clone(),
            principal: None,
        }
    }

    /// The context of work a service starts on its own (timers, recovery at start).
    pub fn system(service: &str) -> Self {
        Self {
            tenant: None,
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            actor: service.to_owned(),
            trace_context: None,
            principal: None,
        }
    }

    /// `PERMISSION_DENIED` naming `permission` unless the caller has it (always allowed
    /// without authentication), for a part of a request the method's policy does not
    /// cover (e.g. exporting a private key).
    pub fn require(&self, permission: Permission) -> Result<(), Status> {
        match &self.principal {
            Some(principal) => principal.require(permission),
            None => Ok(()),
        }
    }

    /// The caller's tenant, or `None` for a service acting on every tenant.
    pub fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    /// The event metadata for events on a stream of `tenant`.
    pub fn metadata(&self, tenant: &str) -> Metadata {
        Metadata {
            tenant: tenant.to_owned(),
            correlation_id: Some(self.correlation_id),
            causation_id: self.causation_id,
            actor: self.actor.clone(),
            trace_context: self.trace_context.clone(),
        }
    }
}

/// `00-<32 hex>-<16 hex>-<2 hex>` (W3C trace context, version 00), loosely.
fn valid_traceparent(value: &str) -> bool {
    value.len() <= 128
        && value.split('-').count() == 4
        && value.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_context_reads_metadata() {
        let mut request = Request::new(());
        let id = Uuid::now_v7();
        request
            .metadata_mut()
            .insert(CORRELATION_HEADER, id.to_string().parse().unwrap());
        request.metadata_mut().insert(
            TRACEPARENT_HEADER,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let ctx = CallContext::from_request(&request).unwrap();
        assert_eq!(ctx.tenant(), Some("default"));
        assert_eq!(ctx.correlation_id, id);
        assert!(ctx.trace_context.is_some());
        assert_eq!(ctx.metadata("t").actor, ANONYMOUS);

        let mut bad = Request::new(());
        bad.metadata_mut()
            .insert(CORRELATION_HEADER, "nope".parse().unwrap());
        let e = CallContext::from_request(&bad).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().starts_with(CORRELATION_HEADER));
    }
}
