//! Subject scheme: `certledger.v1.<tenant>.<aggregate>.<aggregate-id>.<EventType>`.
//!
//! The tenant is the third token so that NATS permissions can limit a subscriber to
//! `certledger.v1.<its tenant>.>`. A stream id `certificate-<uuid>` is the aggregate
//! `certificate` and id `<uuid>`. Tokens never contain `.`, `*`, `>` or white space:
//! any such byte (and `%`) is percent-encoded, so every subject is valid and decodable.

/// The root of every subject; `v1` is the version of this contract.
pub const ROOT: &str = "certledger.v1";

/// Subjects captured by the `CERTLEDGER` stream.
pub const ALL: &str = "certledger.v1.>";

/// Encodes one subject token.
pub fn token(raw: &str) -> String {
    if raw.is_empty() {
        return "_".to_owned();
    }
    let mut out = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        let safe = byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b':' | b'=' | b'@');
        if safe {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Splits a stream id into (aggregate, id) at the first `-`; a stream id without one is
/// the aggregate `stream`.
pub fn split_stream_id(stream_id: &str) -> (&str, &str) {
    stream_id.split_once('-').unwrap_or(("stream", stream_id))
}

/// The subject an event is published on.
pub fn for_event(tenant: &str, stream_id: &str, event_type: &str) -> String {
    let (aggregate, id) = split_stream_id(stream_id);
    format!(
        "{ROOT}.{}.{}.{}.{}",
        token(tenant),
        token(aggregate),
        token(id),
        token(event_type)
    )
}

/// A filter for one event type of one aggregate kind, across tenants and ids
/// (`certledger.v1.*.certificate.*.ApplicationSubmitted`).
pub fn filter_event_type(aggregate: &str, event_type: &str) -> String {
    format!("{ROOT}.*.{}.*.{}", token(aggregate), token(event_type))
}

/// A filter for every event of one aggregate kind (`certledger.v1.*.certificate.>`).
pub fn filter_aggregate(aggregate: &str) -> String {
    format!("{ROOT}.*.{}.>", token(aggregate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_subjects_follow_the_contract() {
        assert_eq!(
            for_event("acme", "certificate-0190f5c2-aaaa", "CertificateIssued"),
            "certledger.v1.acme.certificate.0190f5c2-aaaa.CertificateIssued"
        );
    }

    #[test]
    fn unsafe_bytes_never_break_the_subject() {
        let subject = for_event("a.b *>", "target-x.y", "T");
        assert_eq!(subject, "certledger.v1.a%2Eb%20%2A%3E.target.x%2Ey.T");
        assert_eq!(subject.split('.').count(), 6);
        assert_eq!(token(""), "_");
        assert_eq!(token("100%"), "100%25");
    }
}
