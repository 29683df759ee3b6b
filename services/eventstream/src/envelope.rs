//! The event envelope on NATS: headers carry the log envelope, the body is the event's
//! protobuf message. This file is the one place where the header contract is written
//! and read (documented in docs/events.md).

use async_nats::jetstream::message::PublishMessage;
use async_nats::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use certledger_eventlog::{Metadata, RecordedEvent};
use certledger_proto::codec::EVENTS_PACKAGE;
use chrono::{DateTime, SecondsFormat, Utc};
use uuid::Uuid;

pub const SPEC_VERSION: &str = "1.0";
pub const H_MSG_ID: &str = "Nats-Msg-Id";
pub const H_CE_SPECVERSION: &str = "ce-specversion";
pub const H_CE_ID: &str = "ce-id";
pub const H_CE_TYPE: &str = "ce-type";
pub const H_CE_SOURCE: &str = "ce-source";
pub const H_CE_SUBJECT: &str = "ce-subject";
pub const H_CE_TIME: &str = "ce-time";
pub const H_CONTENT_TYPE: &str = "content-type";
pub const H_POSITION: &str = "certledger-position";
pub const H_STREAM_VERSION: &str = "certledger-stream-version";
pub const H_SCHEMA_VERSION: &str = "certledger-schema-version";
pub const H_TENANT: &str = "certledger-tenant";
pub const H_CORRELATION_ID: &str = "certledger-correlation-id";
pub const H_CAUSATION_ID: &str = "certledger-causation-id";
pub const H_ACTOR: &str = "certledger-actor";
pub const H_TRACEPARENT: &str = "traceparent";
pub const H_PREV_HASH: &str = "certledger-prev-hash";
pub const H_HASH: &str = "certledger-hash";

/// Why a message could not be turned back into an event (a poison message).
#[derive(Debug, thiserror::Error)]
#[error("message is not a certledger event: header {header}: {problem}")]
pub struct EnvelopeError {
    pub header: &'static str,
    pub problem: String,
}

/// `ce-type` of an event type: its full protobuf message name.
pub fn ce_type(event_type: &str) -> String {
    format!("{EVENTS_PACKAGE}.{event_type}")
}

/// The message the relay publishes for an event.
pub fn to_message(event: &RecordedEvent) -> PublishMessage {
    PublishMessage::build()
        .headers(envelope_headers(event))
        .payload(Bytes::from(event.payload.clone()))
}

/// The headers of an event's message. Values move into the map (no copies), and names
/// are built from their constants without parsing: the relay builds up to seventeen
/// headers per event.
pub fn envelope_headers(event: &RecordedEvent) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: String| {
        headers.insert(HeaderName::from_static(name), header_value(value));
    };
    let id = event.event_id.to_string();
    let type_ = ce_type(&event.event_type);
    put(H_MSG_ID, id.clone());
    put(H_CE_SPECVERSION, SPEC_VERSION.to_owned());
    put(H_CE_ID, id);
    put(
        H_CONTENT_TYPE,
        format!("application/protobuf; messageType={type_}"),
    );
    put(H_CE_TYPE, type_);
    put(
        H_CE_SOURCE,
        format!("/certledger/{}", event.metadata.tenant),
    );
    put(H_CE_SUBJECT, event.stream_id.clone());
    put(
        H_CE_TIME,
        event
            .recorded_at
            .to_rfc3339_opts(SecondsFormat::Micros, true),
    );
    put(H_POSITION, event.position.to_string());
    put(H_STREAM_VERSION, event.stream_version.to_string());
    put(H_SCHEMA_VERSION, event.schema_version.to_string());
    put(H_TENANT, event.metadata.tenant.clone());
    if let Some(id) = event.metadata.correlation_id {
        put(H_CORRELATION_ID, id.to_string());
    }
    if let Some(id) = event.metadata.causation_id {
        put(H_CAUSATION_ID, id.to_string());
    }
    put(H_ACTOR, event.metadata.actor.clone());
    if let Some(trace) = &event.metadata.trace_context {
        put(H_TRACEPARENT, trace.clone());
    }
    put(H_PREV_HASH, hex::encode(event.prev_hash));
    put(H_HASH, hex::encode(event.hash));
    headers
}

/// A header value; a line break (which would end the header, and which the client's own
/// conversion refuses with a panic) becomes a space. The services never record one in
/// the fields that become headers, but the relay must not stop on an event that has.
fn header_value(mut value: String) -> HeaderValue {
    if value.contains(['\r', '\n']) {
        value = value.replace(['\r', '\n'], " ");
    }
    HeaderValue::from(value)
}

fn get<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, EnvelopeError> {
    headers.get(name).map(|v| v.as_str()).ok_or(EnvelopeError {
        header: name,
        problem: "missing".into(),
    })
}

fn parse<T: std::str::FromStr>(headers: &HeaderMap, name: &'static str) -> Result<T, EnvelopeError>
where
    T::Err: std::fmt::Display,
{
    get(headers, name)?
        .parse()
        .map_err(|e: T::Err| EnvelopeError {
            header: name,
            problem: e.to_string(),
        })
}

fn optional_uuid(headers: &HeaderMap, name: &'static str) -> Result<Option<Uuid>, EnvelopeError> {
    match headers.get(name) {
        None => Ok(None),
        Some(_) => parse(headers, name).map(Some),
    }
}

fn hash(headers: &HeaderMap, name: &'static str) -> Result<[u8; 32], EnvelopeError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(get(headers, name)?, &mut out).map_err(|e| EnvelopeError {
        header: name,
        problem: e.to_string(),
    })?;
    Ok(out)
}

/// Rebuilds the logged event from a delivered message.
pub fn from_message(
    headers: Option<&HeaderMap>,
    payload: &[u8],
) -> Result<RecordedEvent, EnvelopeError> {
    let headers = headers.ok_or(EnvelopeError {
        header: H_CE_ID,
        problem: "message has no headers".into(),
    })?;
    let ce_type = get(headers, H_CE_TYPE)?;
    let event_type = ce_type
        .strip_prefix(EVENTS_PACKAGE)
        .and_then(|rest| rest.strip_prefix('.'))
        .ok_or(EnvelopeError {
            header: H_CE_TYPE,
            problem: format!("{ce_type:?} is not in package {EVENTS_PACKAGE}"),
        })?;
    let recorded_at = DateTime::parse_from_rfc3339(get(headers, H_CE_TIME)?)
        .map_err(|e| EnvelopeError {
            header: H_CE_TIME,
            problem: e.to_string(),
        })?
        .with_timezone(&Utc);
    Ok(RecordedEvent {
        position: parse(headers, H_POSITION)?,
        stream_id: get(headers, H_CE_SUBJECT)?.to_owned(),
        stream_version: parse(headers, H_STREAM_VERSION)?,
        event_id: parse(headers, H_CE_ID)?,
        event_type: event_type.to_owned(),
        schema_version: parse(headers, H_SCHEMA_VERSION)?,
        payload: payload.to_vec(),
        metadata: Metadata {
            tenant: get(headers, H_TENANT)?.to_owned(),
            correlation_id: optional_uuid(headers, H_CORRELATION_ID)?,
            causation_id: optional_uuid(headers, H_CAUSATION_ID)?,
            actor: get(headers, H_ACTOR)?.to_owned(),
            trace_context: headers.get(H_TRACEPARENT).map(|v| v.as_str().to_owned()),
        },
        recorded_at,
        prev_hash: hash(headers, H_PREV_HASH)?,
        hash: hash(headers, H_HASH)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(without: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let id = Uuid::from_u128(0x1234).to_string();
        let hash = hex::encode([7u8; 32]);
        let type_ = ce_type("CertificateIssued");
        for (name, value) in [
            (H_MSG_ID, id.as_str()),
            (H_CE_ID, id.as_str()),
            (H_CE_TYPE, type_.as_str()),
            (H_CE_TIME, "2026-11-28T09:00:00.000001Z"),
            (H_CE_SUBJECT, "certificate-abc"),
            (H_POSITION, "42"),
            (H_STREAM_VERSION, "3"),
            (H_SCHEMA_VERSION, "1"),
            (H_TENANT, "acme"),
            (H_ACTOR, "issuance"),
            (H_PREV_HASH, hash.as_str()),
            (H_HASH, hash.as_str()),
        ] {
            if Some(name) != without {
                headers.insert(name, value);
            }
        }
        headers
    }

    #[test]
    fn an_event_is_rebuilt_from_its_headers_and_a_missing_one_is_named() {
        let event = from_message(Some(&headers(None)), b"payload").expect("rebuilt");
        assert_eq!(event.position, 42);
        assert_eq!(event.stream_version, 3);
        assert_eq!(event.event_type, "CertificateIssued");
        assert_eq!(event.metadata.tenant, "acme");
        assert_eq!(event.metadata.correlation_id, None);
        assert_eq!(event.metadata.trace_context, None);
        assert_eq!(event.hash, [7u8; 32]);
        assert_eq!(event.payload, b"payload");
        for required in [H_CE_TYPE, H_POSITION, H_TENANT, H_HASH] {
            let error = from_message(Some(&headers(Some(required))), b"").err();
            assert_eq!(error.map(|e| e.header), Some(required));
        }
        let mut bad = headers(None);
        bad.insert(H_STREAM_VERSION, "three");
        let error = from_message(Some(&bad), b"").err();
        assert_eq!(error.map(|e| e.header), Some(H_STREAM_VERSION));
    }

    fn event(actor: &str) -> RecordedEvent {
        RecordedEvent {
            position: 9,
            stream_id: "certificate-abc".into(),
            stream_version: 2,
            event_id: Uuid::from_u128(0x99),
            event_type: "OrderPlaced".into(),
            schema_version: 1,
            payload: b"payload".to_vec(),
            metadata: Metadata {
                tenant: "acme".into(),
                correlation_id: Some(Uuid::from_u128(1)),
                causation_id: Some(Uuid::from_u128(2)),
                actor: actor.into(),
                trace_context: Some(
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
                ),
            },
            recorded_at: DateTime::from_timestamp_micros(1_795_000_000_123_456).unwrap_or_default(),
            prev_hash: [1u8; 32],
            hash: [2u8; 32],
        }
    }

    #[test]
    fn the_relays_headers_rebuild_the_event() {
        let event = event("token:ops");
        let headers = envelope_headers(&event);
        assert_eq!(
            headers.get(H_MSG_ID).map(|v| v.as_str().to_owned()),
            Some(event.event_id.to_string())
        );
        assert_eq!(
            headers.get(H_CONTENT_TYPE).map(|v| v.as_str()),
            Some("application/protobuf; messageType=certledger.events.v1.OrderPlaced")
        );
        let rebuilt = from_message(Some(&headers), &event.payload).expect("rebuilt");
        assert_eq!(rebuilt, event);
    }

    #[test]
    fn a_line_break_in_a_field_does_not_stop_the_relay() {
        let headers = envelope_headers(&event("two\r\nlines"));
        assert_eq!(headers.get(H_ACTOR).map(|v| v.as_str()), Some("two  lines"));
    }
}
