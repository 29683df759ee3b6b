//! The caller's tenant.
//!
//! The tenant comes from the caller's credentials when the server authenticates (see
//! [`crate::auth`]), otherwise from the request metadata `x-certledger-tenant` (default
//! [`DEFAULT_TENANT`]). Keep it this one function: every service asks [`tenant_of`] (or
//! [`crate::CallContext`]) and nothing else.
//!
//! A certificate of another tenant behaves exactly like one that does not exist
//! (`NOT_FOUND` with the same message), never `PERMISSION_DENIED`: see
//! [`crate::repository`].

use tonic::Status;
use tonic::metadata::MetadataMap;

/// Request metadata key naming the tenant.
pub const TENANT_HEADER: &str = "x-certledger-tenant";

/// The tenant of a request that names none.
pub const DEFAULT_TENANT: &str = "default";

/// Longest tenant id.
pub const MAX_TENANT_LEN: usize = 63;

/// Checks a tenant id: `[a-z0-9][a-z0-9_-]{0,62}`.
pub fn validate_tenant(tenant: &str) -> Result<(), String> {
    let mut chars = tenant.chars();
    let Some(first) = chars.next() else {
        return Err("is empty".into());
    };
    if tenant.len() > MAX_TENANT_LEN {
        return Err(format!(
            "is {} characters long; at most {MAX_TENANT_LEN} are allowed",
            tenant.len()
        ));
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err("must start with a lower-case letter or a digit".into());
    }
    if let Some(c) =
        chars.find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
    {
        return Err(format!(
            "contains {c:?}; a tenant id may only use a-z, 0-9, '-' and '_'"
        ));
    }
    Ok(())
}

/// The tenant a request acts within: the authenticated caller's when the server
/// authenticates (the header is then ignored), otherwise the `x-certledger-tenant`
/// header (default [`DEFAULT_TENANT`]).
pub fn tenant_of<T>(request: &tonic::Request<T>) -> Result<String, Status> {
    if let Some(principal) = crate::auth::principal(request) {
        return Ok(principal.tenant.clone());
    }
    tenant_of_header(request.metadata())
}

/// The tenant named by the `x-certledger-tenant` header (default [`DEFAULT_TENANT`]).
pub fn tenant_of_header(metadata: &MetadataMap) -> Result<String, Status> {
    let Some(value) = metadata.get(TENANT_HEADER) else {
        return Ok(DEFAULT_TENANT.to_owned());
    };
    let tenant = value.to_str().map_err(|_| {
        Status::invalid_argument(format!(
            "{TENANT_HEADER}: is not printable ASCII; a tenant id may only use a-z, 0-9, '-' and '_'"
        ))
    })?;
    validate_tenant(tenant)
        .map_err(|why| Status::invalid_argument(format!("{TENANT_HEADER}: {tenant:?} {why}")))?;
    Ok(tenant.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_are_checked() {
        assert!(validate_tenant("default").is_ok());
        assert!(validate_tenant("acme-1_b").is_ok());
        assert!(validate_tenant("0").is_ok());
        assert!(validate_tenant("").is_err());
        assert!(validate_tenant("-a").is_err());
        assert!(validate_tenant("Acme").is_err());
        assert!(validate_tenant("a.b").is_err());
        assert!(validate_tenant(&"a".repeat(63)).is_ok());
        assert!(validate_tenant(&"a".repeat(64)).is_err());
    }

    #[test]
    fn tenant_from_metadata() {
        let mut md = MetadataMap::new();
        assert_eq!(tenant_of_header(&md).unwrap(), "default");
        md.insert(TENANT_HEADER, "acme".parse().unwrap());
        assert_eq!(tenant_of_header(&md).unwrap(), "acme");
        md.insert(TENANT_HEADER, "Not OK".parse().unwrap());
        let e = tenant_of_header(&md).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().starts_with(TENANT_HEADER), "{}", e.message());
    }
}
