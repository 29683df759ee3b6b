//! Shared row decoding, integer conversions, hash-chain verification and migrations.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::{ColumnIndex, Decode, Row, Type};
use uuid::Uuid;

use crate::hash::{HashInput, ZERO_HASH, event_hash};
use crate::model::{Metadata, RecordedEvent, StorageError, Tamper, VerifyReport};

/// Column order expected by [`decode_event`] (and by the SQLite backend's own row
/// decoding); both backends select exactly these, with UUIDs as text.
pub(crate) const EVENT_COLUMN_COUNT: usize = 15;

/// Decodes an event row: position, stream_id, stream_version, event_id, event_type,
/// schema_version, payload, tenant, correlation_id, causation_id, actor, trace_context,
/// recorded_at (µs), prev_hash, hash.
pub(crate) fn decode_event<'r, R>(row: &'r R) -> Result<RecordedEvent, sqlx::Error>
where
    R: Row,
    usize: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
    &'r [u8]: Decode<'r, R::Database> + Type<R::Database>,
{
    if row.len() != EVENT_COLUMN_COUNT {
        return Err(sqlx::Error::protocol(format!(
            "event row has {} columns, expected {EVENT_COLUMN_COUNT}",
            row.len()
        )));
    }
    let position: i64 = row.try_get(0)?;
    let stream_version: i64 = row.try_get(2)?;
    let event_id: String = row.try_get(3)?;
    let schema_version: i64 = row.try_get(5)?;
    let correlation_id: Option<String> = row.try_get(8)?;
    let causation_id: Option<String> = row.try_get(9)?;
    let recorded_at: i64 = row.try_get(12)?;
    let prev_hash: &[u8] = row.try_get(13)?;
    let hash: &[u8] = row.try_get(14)?;
    Ok(RecordedEvent {
        position: to_u64(position, "position")?,
        stream_id: row.try_get(1)?,
        stream_version: to_u64(stream_version, "stream_version")?,
        event_id: parse_uuid(&event_id, "event_id")?,
        event_type: row.try_get(4)?,
        schema_version: u32::try_from(schema_version).map_err(|_| {
            sqlx::Error::decode(format!("schema_version {schema_version} out of range"))
        })?,
        payload: row.try_get(6)?,
        metadata: Metadata {
            tenant: row.try_get(7)?,
            correlation_id: correlation_id
                .as_deref()
                .map(|s| parse_uuid(s, "correlation_id"))
                .transpose()?,
            causation_id: causation_id
                .as_deref()
                .map(|s| parse_uuid(s, "causation_id"))
                .transpose()?,
            actor: row.try_get(10)?,
            trace_context: row.try_get(11)?,
        },
        recorded_at: micros_to_time(recorded_at)?,
        prev_hash: to_hash(prev_hash, "prev_hash")?,
        hash: to_hash(hash, "hash")?,
    })
}

pub(crate) fn parse_uuid(s: &str, column: &str) -> Result<Uuid, sqlx::Error> {
    Uuid::parse_str(s).map_err(|e| sqlx::Error::decode(format!("{column} {s:?}: {e}")))
}

pub(crate) fn to_hash(v: &[u8], column: &str) -> Result<[u8; 32], sqlx::Error> {
    v.try_into()
        .map_err(|_| sqlx::Error::decode(format!("{column} has {} bytes, expected 32", v.len())))
}

pub(crate) fn to_u64(v: i64, column: &str) -> Result<u64, sqlx::Error> {
    u64::try_from(v).map_err(|_| sqlx::Error::decode(format!("{column} {v} is negative")))
}

/// A position or version for a query parameter; values beyond `i64::MAX` cannot exist
/// in the log, so they clamp (e.g. "after u64::MAX" selects nothing).
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn micros_to_time(m: i64) -> Result<DateTime<Utc>, sqlx::Error> {
    DateTime::from_timestamp_micros(m)
        .ok_or_else(|| sqlx::Error::decode(format!("recorded_at {m} out of range")))
}

/// Microseconds since the epoch, the log's clock for `recorded_at`.
pub(crate) fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

/// Error-context helper: `.map_err(ctx("read stream x"))`.
pub(crate) fn ctx(context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> StorageError {
    let context = context.into();
    move |source| StorageError::new(context, source)
}

/// Walks events ordered by (stream_id, stream_version) and reports the first problem.
#[derive(Debug, Default)]
pub(crate) struct ChainWalker {
    last: Option<(String, u64, [u8; 32])>,
    pub checked: u64,
}

impl ChainWalker {
    pub fn check(&mut self, e: &RecordedEvent) -> Option<Tamper> {
        let (expected_version, expected_prev) = match &self.last {
            Some((stream, version, hash)) if *stream == e.stream_id => (version + 1, *hash),
            _ => (1, ZERO_HASH),
        };
        self.checked += 1;
        if e.stream_version != expected_version {
            return Some(if e.stream_version > expected_version {
                Tamper::Missing {
                    stream_id: e.stream_id.clone(),
                    version: expected_version,
                }
            } else {
                Tamper::BrokenLink {
                    stream_id: e.stream_id.clone(),
                    version: e.stream_version,
                    position: e.position,
                }
            });
        }
        let computed = event_hash(&HashInput {
            prev_hash: &e.prev_hash,
            stream_id: &e.stream_id,
            stream_version: e.stream_version,
            event_id: &e.event_id,
            event_type: &e.event_type,
            schema_version: e.schema_version,
            metadata: &e.metadata,
            recorded_at_micros: e.recorded_at.timestamp_micros(),
            payload: &e.payload,
        });
        if computed != e.hash {
            return Some(Tamper::Altered {
                stream_id: e.stream_id.clone(),
                version: e.stream_version,
                position: e.position,
            });
        }
        if e.prev_hash != expected_prev {
            return Some(Tamper::BrokenLink {
                stream_id: e.stream_id.clone(),
                version: e.stream_version,
                position: e.position,
            });
        }
        self.last = Some((e.stream_id.clone(), e.stream_version, e.hash));
        None
    }

    pub fn report(&self, first_problem: Option<Tamper>) -> VerifyReport {
        VerifyReport {
            events_checked: self.checked,
            first_problem,
        }
    }
}

/// One schema migration, embedded in the binary.
pub(crate) struct Migration {
    pub version: i64,
    pub description: &'static str,
    pub sql: &'static str,
}

impl Migration {
    pub fn checksum(&self) -> Vec<u8> {
        Sha256::digest(self.sql.as_bytes()).to_vec()
    }
}

/// Checks the migrations already applied against the embedded ones: an applied
/// migration whose text changed is an error (history must not be rewritten).
pub(crate) fn check_applied(
    applied: &[(i64, Vec<u8>)],
    known: &[Migration],
    what: &str,
) -> Result<(), StorageError> {
    for (version, checksum) in applied {
        match known.iter().find(|m| m.version == *version) {
            Some(m) if m.checksum() != *checksum => {
                return Err(StorageError::new(
                    format!("{what}: migrate"),
                    sqlx::Error::Configuration(
                        format!(
                            "applied migration {version} ({}) differs from the embedded one",
                            m.description
                        )
                        .into(),
                    ),
                ));
            }
            Some(_) => {}
            None => tracing::warn!(
                version,
                "{what}: the database has a migration this binary does not know (newer binary?)"
            ),
        }
    }
    Ok(())
}
