//! Event codec: a certificate or target event <-> (event type, schema version, payload).
//!
//! The payload in the log and on NATS is the single event message (for example
//! `certledger.events.v1.CertificateIssued`), not the `CertificateEvent` wrapper, so
//! that a subscriber in any language decodes exactly the type named in `ce-type`.
//! The event type is the message's short name. Old schema versions are upcast here
//! when read; history is never rewritten.

use crate::events::v1::{
    CertificateEvent, CrlEvent, TargetEvent, TokenEvent, certificate_event, crl_event,
    target_event, token_event,
};
use prost::Message;

/// Protobuf package of the event messages; `ce-type` is `PACKAGE.<event type>`.
pub const EVENTS_PACKAGE: &str = "certledger.events.v1";

/// The schema version written for every event type today.
pub const CURRENT_SCHEMA_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("unknown event type {event_type:?}")]
    UnknownType { event_type: String },
    #[error(
        "event type {event_type} has schema version {schema_version}, newer than this build reads (at most {CURRENT_SCHEMA_VERSION})"
    )]
    FutureSchema {
        event_type: String,
        schema_version: u32,
    },
    #[error("payload of {event_type} does not decode: {source}")]
    Decode {
        event_type: String,
        #[source]
        source: prost::DecodeError,
    },
}

/// An event that can be written to the log.
pub trait EventCodec: Sized {
    /// The event's type: the short name of its message.
    fn event_type(&self) -> &'static str;
    /// The protobuf encoding of the event's message.
    fn encode_payload(&self) -> Vec<u8>;
    /// Decodes (and upcasts) a stored event.
    fn decode(event_type: &str, schema_version: u32, payload: &[u8]) -> Result<Self, CodecError>;
}

macro_rules! codec {
    ($wrapper:ident, $module:ident, $( $variant:ident ),+ $(,)?) => {
        impl EventCodec for $module::Event {
            fn event_type(&self) -> &'static str {
                match self {
                    $( $module::Event::$variant(_) => stringify!($variant), )+
                }
            }

            fn encode_payload(&self) -> Vec<u8> {
                match self {
                    $( $module::Event::$variant(m) => m.encode_to_vec(), )+
                }
            }

            fn decode(event_type: &str, schema_version: u32, payload: &[u8]) -> Result<Self, CodecError> {
                if schema_version > CURRENT_SCHEMA_VERSION {
                    return Err(CodecError::FutureSchema { event_type: event_type.to_owned(), schema_version });
                }
                let decode_err = |source| CodecError::Decode { event_type: event_type.to_owned(), source };
                match event_type {
                    $( stringify!($variant) => Ok($module::Event::$variant(
                        crate::events::v1::$variant::decode(payload).map_err(decode_err)?,
                    )), )+
                    _ => Err(CodecError::UnknownType { event_type: event_type.to_owned() }),
                }
            }
        }

        impl From<$module::Event> for $wrapper {
            fn from(event: $module::Event) -> Self {
                $wrapper { event: Some(event) }
            }
        }
    };
}

codec!(
    CertificateEvent,
    certificate_event,
    CertificateOrdered,
    ApplicationSubmitted,
    KeyGenerated,
    ValidationStarted,
    DomainValidated,
    ValidationPassed,
    ValidationFailed,
    ApplicationApproved,
    ApplicationRejected,
    IssuanceIntended,
    CertificateIssued,
    IssuanceFailed,
    OrderCancelled,
    DeploymentRequested,
    DeploymentSucceeded,
    DeploymentFailed,
    DeploymentRemoved,
    DeploymentReplaced,
    DeploymentDrifted,
    DeploymentRestored,
    RenewalStarted,
    RenewalFailed,
    CertificateSuperseded,
    ExpiryApproaching,
    CertificateExpired,
    RevocationRequested,
    CertificateRevoked,
    PrivateKeyExported,
    RevokedCertificateServed,
);

codec!(TargetEvent, target_event, TargetRegistered, TargetRemoved);

codec!(CrlEvent, crl_event, CrlPublished);

codec!(
    TokenEvent,
    token_event,
    TokenCreated,
    TokenRevoked,
    ClientCertificateIssued
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::v1::{CertificateRevoked, OrderCancelled};

    #[test]
    fn round_trips_type_and_payload() {
        let event = certificate_event::Event::OrderCancelled(OrderCancelled {
            reason: "customer asked".into(),
        });
        assert_eq!(event.event_type(), "OrderCancelled");
        let bytes = event.encode_payload();
        let back = certificate_event::Event::decode("OrderCancelled", 1, &bytes).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn unknown_and_future_types_are_errors_not_panics() {
        assert!(matches!(
            certificate_event::Event::decode("NoSuchEvent", 1, &[]),
            Err(CodecError::UnknownType { .. })
        ));
        assert!(matches!(
            certificate_event::Event::decode("CertificateRevoked", 2, &[]),
            Err(CodecError::FutureSchema { .. })
        ));
        // A truncated varint must be a decode error.
        let bad = [0x08u8, 0xff];
        assert!(matches!(
            certificate_event::Event::decode("CertificateRevoked", 1, &bad),
            Err(CodecError::Decode { .. })
        ));
        let _ = CertificateRevoked::default();
    }

    #[test]
    fn crl_events_round_trip() {
        let event = crl_event::Event::CrlPublished(crate::events::v1::CrlPublished {
            issuer: "builtin".into(),
            crl_number: 7,
            entries: 2,
            ..Default::default()
        });
        assert_eq!(event.event_type(), "CrlPublished");
        let back = crl_event::Event::decode("CrlPublished", 1, &event.encode_payload()).unwrap();
        assert_eq!(back, event);
    }
}
