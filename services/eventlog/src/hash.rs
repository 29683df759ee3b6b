//! The per-stream hash chain.
//!
//! `hash = SHA-256(encoding)` where the encoding is unambiguous: every variable-length field
//! is prefixed with its length (u64, big endian), every optional field with a presence byte,
//! fixed-width integers are big endian. Two different envelopes therefore never produce the
//! same byte string (so a field boundary cannot be shifted to forge a collision):
//!
//! ```text
//! lp("certledger.eventlog.v1")  domain separation tag
//! prev_hash                     32 bytes; all zero for version 1
//! lp(stream_id)
//! stream_version                u64
//! event_id                      16 bytes
//! lp(event_type)
//! schema_version                u32
//! lp(tenant)
//! opt(correlation_id)           0x00 | 0x01 + 16 bytes
//! opt(causation_id)             0x00 | 0x01 + 16 bytes
//! lp(actor)
//! opt(trace_context)            0x00 | 0x01 + lp(text)
//! recorded_at                   i64 microseconds since the Unix epoch
//! lp(payload)
//! ```
//!
//! The global position is deliberately not hashed: it is assigned by the database at insert
//! time and is not part of what the writer asserted.

use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::model::Metadata;

/// `prev_hash` of the first event of every stream.
pub const ZERO_HASH: [u8; 32] = [0; 32];

const DOMAIN_TAG: &[u8] = b"certledger.eventlog.v1";

/// Everything that goes into an event's hash, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct HashInput<'a> {
    pub prev_hash: &'a [u8; 32],
    pub stream_id: &'a str,
    pub stream_version: u64,
    pub event_id: &'a Uuid,
    pub event_type: &'a str,
    pub schema_version: u32,
    pub metadata: &'a Metadata,
    pub recorded_at_micros: i64,
    pub payload: &'a [u8],
}

/// SHA-256 over the length-prefixed encoding described in the module documentation.
pub fn event_hash(input: &HashInput<'_>) -> [u8; 32] {
    let mut h = Sha256::new();
    bytes(&mut h, DOMAIN_TAG);
    h.update(input.prev_hash);
    bytes(&mut h, input.stream_id.as_bytes());
    h.update(input.stream_version.to_be_bytes());
    h.update(input.event_id.as_bytes());
    bytes(&mut h, input.event_type.as_bytes());
    h.update(input.schema_version.to_be_bytes());
    let m = input.metadata;
    bytes(&mut h, m.tenant.as_bytes());
    opt_uuid(&mut h, m.correlation_id.as_ref());
    opt_uuid(&mut h, m.causation_id.as_ref());
    bytes(&mut h, m.actor.as_bytes());
    match &m.trace_context {
        None => h.update([0u8]),
        Some(t) => {
            h.update([1u8]);
            bytes(&mut h, t.as_bytes());
        }
    }
    h.update(input.recorded_at_micros.to_be_bytes());
    bytes(&mut h, input.payload);
    h.finalize().into()
}

fn bytes(h: &mut Sha256, b: &[u8]) {
    h.update((b.len() as u64).to_be_bytes());
    h.update(b);
}

fn opt_uuid(h: &mut Sha256, u: Option<&Uuid>) {
    match u {
        None => h.update([0u8]),
        Some(u) => {
            h.update([1u8]);
            h.update(u.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(meta: &'a Metadata, id: &'a Uuid, payload: &'a [u8]) -> HashInput<'a> {
        HashInput {
            prev_hash: &ZERO_HASH,
            stream_id: "certificate-1",
            stream_version: 1,
            event_id: id,
            event_type: "OrderPlaced",
            schema_version: 1,
            metadata: meta,
            recorded_at_micros: 1_700_000_000_000_000,
            payload,
        }
    }

    #[test]
    fn every_field_changes_the_hash() {
        let meta = Metadata {
            tenant: "t".into(),
            correlation_id: None,
            causation_id: None,
            actor: "a".into(),
            trace_context: None,
        };
        let id = Uuid::now_v7();
        let base = event_hash(&input(&meta, &id, b"p"));
        assert_eq!(base, event_hash(&input(&meta, &id, b"p")), "deterministic");

        let mut variants = Vec::new();
        let prev = [1u8; 32];
        variants.push(event_hash(&HashInput {
            prev_hash: &prev,
            ..input(&meta, &id, b"p")
        }));
        variants.push(event_hash(&HashInput {
            stream_id: "certificate-2",
            ..input(&meta, &id, b"p")
        }));
        variants.push(event_hash(&HashInput {
            stream_version: 2,
            ..input(&meta, &id, b"p")
        }));
        let other = Uuid::now_v7();
        variants.push(event_hash(&input(&meta, &other, b"p")));
        variants.push(event_hash(&HashInput {
            event_type: "X",
            ..input(&meta, &id, b"p")
        }));
        variants.push(event_hash(&HashInput {
            schema_version: 2,
            ..input(&meta, &id, b"p")
        }));
        variants.push(event_hash(&HashInput {
            recorded_at_micros: 1,
            ..input(&meta, &id, b"p")
        }));
        variants.push(event_hash(&input(&meta, &id, b"q")));
        let metas = [
            Metadata {
                tenant: "u".into(),
                ..meta.clone()
            },
            Metadata {
                actor: "b".into(),
                ..meta.clone()
            },
            Metadata {
                correlation_id: Some(id),
                ..meta.clone()
            },
            Metadata {
                causation_id: Some(id),
                ..meta.clone()
            },
            Metadata {
                trace_context: Some(String::new()),
                ..meta.clone()
            },
        ];
        for m in &metas {
            variants.push(event_hash(&input(m, &id, b"p")));
        }
        for (i, v) in variants.iter().enumerate() {
            assert_ne!(*v, base, "variant {i} did not change the hash");
        }
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        // "ab" + "c" vs "a" + "bc" in adjacent string fields must differ.
        let m1 = Metadata {
            tenant: "ab".into(),
            actor: "c".into(),
            ..Default::default()
        };
        let m2 = Metadata {
            tenant: "a".into(),
            actor: "bc".into(),
            ..Default::default()
        };
        let id = Uuid::now_v7();
        assert_ne!(
            event_hash(&input(&m1, &id, b"")),
            event_hash(&input(&m2, &id, b""))
        );
        // correlation vs causation id in the same slot must differ.
        let m3 = Metadata {
            correlation_id: Some(id),
            ..Default::default()
        };
        let m4 = Metadata {
            causation_id: Some(id),
            ..Default::default()
        };
        assert_ne!(
            event_hash(&input(&m3, &id, b"")),
            event_hash(&input(&m4, &id, b""))
        );
    }
}
