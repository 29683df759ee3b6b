//! The revocation read model: serial → good / revoked for the serials of one issuer, kept
//! current from certificate events.
//!
//! * `IssuanceIntended` — the serial is known from the moment the CA records its intent to
//!   sign (a crash between signing and `CertificateIssued` must never leave a signed serial
//!   that OCSP calls unknown, nor one it calls good after a revocation);
//! * `CertificateIssued` — the same serial, confirmed;
//! * `CertificateRevoked` — revoked, with the time and reason of the event.
//!
//! The model lives in memory, in every replica. At start it is rebuilt by one scan of the
//! log ([`StatusModel::rebuild`]); after that new events reach it three ways, all
//! idempotent: the RPC applies what it appended (so OCSP says revoked before the call
//! returns), the service's durable consumer (JetStream or SQL tail) applies what it is
//! delivered, and a per-replica tail of the log ([`StatusModel::follow`]) applies
//! everything, because a durable consumer shares its deliveries among replicas. Until the
//! scan is done the model is not [`StatusModel::is_ready`] and the OCSP responder answers
//! `tryLater` (never `unknown` or `good` from a half-built model).
//!
//! Why in memory rather than a table with its own checkpoint: a few bytes per serial
//! (10 million certificates fit in about a gigabyte), no second source of truth to keep
//! consistent, and the scan at start reads only the log (one sequential pass). A
//! persisted table becomes worth it when that start-up scan gets too slow.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use certledger_ca::SerialNumber;
use certledger_domain::CertificateEvent;
use certledger_eventlog::{EventLog, RecordedEvent};
use certledger_runtime::repository::{certificate_id_of, decode_event};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::crl::RevokedEntry;
use crate::reason::RevocationReason;
use crate::status::{CertStatus, MemoryStatusSource, StatusSource, StatusUnavailable};

/// Event types the model reads; every other event is skipped without decoding.
pub const MODEL_EVENTS: &[&str] = &[
    "IssuanceIntended",
    "CertificateIssued",
    "CertificateRevoked",
];

/// Events read per page while rebuilding.
const REBUILD_PAGE: u32 = 1000;

/// What applying one event changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Nothing (another issuer, an unrelated event, a repeat).
    Nothing,
    /// A serial became known (good).
    Known(SerialNumber),
    /// A serial was newly revoked: the CRL must be re-signed.
    Revoked(SerialNumber),
    /// A revocation the model already held (another path applied it first, e.g. the
    /// API call that recorded it): the CRL lists it, but none yet claims its position.
    AlreadyRevoked(SerialNumber),
}

/// serial → status for one issuer. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct StatusModel {
    issuer_id: String,
    serials: MemoryStatusSource,
    ready: AtomicBool,
    /// Every event at or before this log position has been applied (by the start-up
    /// rebuild and the tail).
    read_through: AtomicU64,
}

fn chrono_to_time(at: chrono::DateTime<chrono::Utc>) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(at.timestamp())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .replace_nanosecond(at.timestamp_subsec_nanos().min(999_999_999))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

impl StatusModel {
    /// An empty, not yet ready model of `issuer_id`'s serials.
    pub fn new(issuer_id: impl Into<String>) -> Self {
        Self {
            issuer_id: issuer_id.into(),
            serials: MemoryStatusSource::new(),
            ready: AtomicBool::new(false),
            read_through: AtomicU64::new(0),
        }
    }

    /// The issuer whose serials are kept.
    pub fn issuer_id(&self) -> &str {
        &self.issuer_id
    }

    /// Whether the start-up rebuild has finished.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Marks the model ready (after [`StatusModel::rebuild`]).
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// The log position through which every event has been applied: each revocation
    /// recorded at or before it is in [`StatusModel::revoked_entries`].
    pub fn read_through(&self) -> u64 {
        self.read_through.load(Ordering::Acquire)
    }

    fn advance(&self, position: u64) {
        self.read_through.fetch_max(position, Ordering::AcqRel);
    }

    /// Number of serials known.
    pub fn len(&self) -> usize {
        self.serials.len()
    }

    /// True when no serial is known.
    pub fn is_empty(&self) -> bool {
        self.serials.is_empty()
    }

    /// Every revoked serial (for the CRL).
    pub fn revoked_entries(&self) -> Vec<RevokedEntry> {
        self.serials.revoked_entries()
    }

    /// The status of `serial` as the model knows it (ready or not).
    pub fn lookup(&self, serial: &SerialNumber) -> CertStatus {
        self.serials.status(serial).unwrap_or(CertStatus::Unknown)
    }

    fn ours(&self, issuer_ca_id: &str) -> bool {
        issuer_ca_id.is_empty() || issuer_ca_id == self.issuer_id
    }

    fn parse_serial(stream_id: &str, serial: &str) -> Option<SerialNumber> {
        match SerialNumber::from_hex(serial) {
            Ok(s) => Some(s),
            Err(error) => {
                tracing::warn!(stream = %stream_id, serial, %error, "event carries an unreadable serial; skipped");
                None
            }
        }
    }

    /// Applies one recorded event (idempotent; any order of repeats is harmless).
    pub fn apply(&self, event: &RecordedEvent) -> Applied {
        if !MODEL_EVENTS.contains(&event.event_type.as_str())
            || certificate_id_of(&event.stream_id).is_none()
        {
            return Applied::Nothing;
        }
        let decoded = match decode_event(event) {
            Ok(Some(decoded)) => decoded,
            Ok(None) => return Applied::Nothing,
            Err(error) => {
                tracing::warn!(%error, "certificate event does not decode; skipped by the revocation model");
                return Applied::Nothing;
            }
        };
        self.apply_decoded(&event.stream_id, event.recorded_at, &decoded)
    }

    /// Applies a decoded event of `stream_id` recorded at `recorded_at` (the revocation
    /// time when the event carries none).
    pub fn apply_decoded(
        &self,
        stream_id: &str,
        recorded_at: chrono::DateTime<chrono::Utc>,
        decoded: &CertificateEvent,
    ) -> Applied {
        match decoded {
            CertificateEvent::IssuanceIntended(e) if self.ours(&e.issuer_ca_id) => {
                self.known(stream_id, &e.serial)
            }
            CertificateEvent::CertificateIssued(e) if self.ours(&e.issuer_ca_id) => {
                self.known(stream_id, &e.serial)
            }
            CertificateEvent::CertificateRevoked(e) => {
                let Some(serial) = Self::parse_serial(stream_id, &e.serial) else {
                    return Applied::Nothing;
                };
                let revoked_at = e
                    .revoked_at
                    .as_ref()
                    .and_then(certledger_domain::time::from_timestamp)
                    .unwrap_or(recorded_at);
                let reason = u8::try_from(e.reason)
                    .ok()
                    .and_then(|c| RevocationReason::from_code(c).ok())
                    .unwrap_or(RevocationReason::Unspecified);
                self.revoked(serial, chrono_to_time(revoked_at), reason)
            }
            _ => Applied::Nothing,
        }
    }

    fn known(&self, stream_id: &str, serial: &str) -> Applied {
        let Some(serial) = Self::parse_serial(stream_id, serial) else {
            return Applied::Nothing;
        };
        if self.lookup(&serial) != CertStatus::Unknown {
            return Applied::Nothing;
        }
        self.serials.record_issued(serial.clone());
        Applied::Known(serial)
    }

    /// Records a revocation of a serial this issuer knows (a serial it never intended is
    /// another issuer's and stays out of this CRL).
    pub fn revoked(
        &self,
        serial: SerialNumber,
        revoked_at: OffsetDateTime,
        reason: RevocationReason,
    ) -> Applied {
        match self.lookup(&serial) {
            CertStatus::Unknown => {
                tracing::debug!(serial = %serial.to_hex(), "revocation of a serial this issuer never intended; ignored");
                Applied::Nothing
            }
            CertStatus::Revoked { reason: r, .. }
                if r == reason || reason != RevocationReason::KeyCompromise =>
            {
                Applied::AlreadyRevoked(serial)
            }
            _ => {
                self.serials
                    .record_revoked(serial.clone(), revoked_at, reason);
                Applied::Revoked(serial)
            }
        }
    }

    /// Rebuilds the model from the whole log (one scan, page by page), retrying storage
    /// errors until `shutdown`. Returns the log position the model has read up to.
    pub async fn rebuild(&self, log: &Arc<dyn EventLog>, shutdown: &CancellationToken) -> u64 {
        let mut after = 0;
        let mut read = 0u64;
        loop {
            if shutdown.is_cancelled() {
                return after;
            }
            let page = match log.read_all(after, REBUILD_PAGE).await {
                Ok(page) => page,
                Err(error) => {
                    tracing::warn!(%error, "rebuilding the revocation model: reading the log failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = shutdown.cancelled() => return after,
                    }
                }
            };
            let Some(last) = page.last() else {
                break;
            };
            after = last.position;
            read += page.len() as u64;
            for event in &page {
                self.apply(event);
            }
            self.advance(after);
        }
        tracing::info!(
            events = read,
            serials = self.len(),
            revoked = self.revoked_entries().len(),
            position = after,
            "revocation model rebuilt from the log"
        );
        after
    }

    /// Keeps this replica's model current by tailing the log from `after` until
    /// `shutdown`, calling `on_revoked` for every newly revoked serial.
    ///
    /// The service's durable consumer shares its deliveries among replicas (each event
    /// reaches one replica), so it cannot be the only feed of a model every replica
    /// holds in memory; this tail is per replica, has no checkpoint (the model is rebuilt
    /// at start anyway) and, like every reader of `read_all`, never skips an event that
    /// commits out of position order.
    pub async fn follow(
        &self,
        log: &Arc<dyn EventLog>,
        mut after: u64,
        on_revoked: &(dyn Fn(&SerialNumber) + Send + Sync),
        shutdown: &CancellationToken,
    ) {
        while !shutdown.is_cancelled() {
            let page = match log.read_all(after, REBUILD_PAGE).await {
                Ok(page) => page,
                Err(error) => {
                    tracing::warn!(%error, "following the log for the revocation model failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = shutdown.cancelled() => return,
                    }
                }
            };
            let Some(last) = page.last() else {
                tokio::select! {
                    _ = log.wait_for_new(after) => continue,
                    _ = shutdown.cancelled() => return,
                }
            };
            after = last.position;
            for event in &page {
                let applied = self.apply(event);
                // Pages come in position order with no gaps, so every earlier event is
                // applied too; a CRL signed after the kick can claim this position.
                self.advance(event.position);
                if let Applied::Revoked(serial) | Applied::AlreadyRevoked(serial) = applied {
                    on_revoked(&serial);
                }
            }
        }
    }
}

impl StatusSource for StatusModel {
    fn status(&self, serial: &SerialNumber) -> Result<CertStatus, StatusUnavailable> {
        if !self.is_ready() {
            return Err(StatusUnavailable {
                reason: "the revocation model is still being rebuilt from the event log".into(),
            });
        }
        self.serials.status(serial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use certledger_proto::events::v1::{CertificateIssued, CertificateRevoked, IssuanceIntended};

    fn at(secs: i64) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn serial(hex: &str) -> SerialNumber {
        SerialNumber::from_hex(hex).unwrap()
    }

    #[test]
    fn intent_makes_a_serial_known_and_revocation_sticks() {
        let model = StatusModel::new("builtin");
        let stream = "certificate-c1";
        let s = serial("01ab");
        // Not ready: tryLater, never unknown or good.
        assert!(model.status(&s).is_err());
        model.set_ready();
        assert_eq!(model.status(&s), Ok(CertStatus::Unknown));

        let intended = CertificateEvent::IssuanceIntended(IssuanceIntended {
            issuer_ca_id: "builtin".into(),
            serial: "01ab".into(),
            ..Default::default()
        });
        assert_eq!(
            model.apply_decoded(stream, at(0), &intended),
            Applied::Known(s.clone())
        );
        assert_eq!(model.status(&s), Ok(CertStatus::Good));
        let issued = CertificateEvent::CertificateIssued(CertificateIssued {
            issuer_ca_id: "builtin".into(),
            serial: "01ab".into(),
            ..Default::default()
        });
        assert_eq!(
            model.apply_decoded(stream, at(1), &issued),
            Applied::Nothing
        );

        let revoked = CertificateEvent::CertificateRevoked(CertificateRevoked {
            serial: "01ab".into(),
            reason: 4,
            revoked_at: Some(certledger_domain::time::to_timestamp(at(1_000))),
        });
        assert_eq!(
            model.apply_decoded(stream, at(2), &revoked),
            Applied::Revoked(s.clone())
        );
        // A repeat changes nothing; it is told apart so that the log's tail can have a
        // CRL recorded that claims the revocation's position.
        assert_eq!(
            model.apply_decoded(stream, at(3), &revoked),
            Applied::AlreadyRevoked(s.clone())
        );
        assert_eq!(
            model.apply_decoded(stream, at(3), &issued),
            Applied::Nothing
        );
        let entries = model.revoked_entries();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].reason, RevocationReason::Superseded);
        assert_eq!(entries[0].revoked_at.unix_timestamp(), 1_000);
    }

    #[test]
    fn other_issuers_and_unknown_serials_stay_out() {
        let model = StatusModel::new("builtin");
        model.set_ready();
        let foreign = CertificateEvent::IssuanceIntended(IssuanceIntended {
            issuer_ca_id: "acme-upstream".into(),
            serial: "02".into(),
            ..Default::default()
        });
        assert_eq!(
            model.apply_decoded("certificate-x", at(0), &foreign),
            Applied::Nothing
        );
        let revoked = CertificateEvent::CertificateRevoked(CertificateRevoked {
            serial: "02".into(),
            reason: 1,
            revoked_at: None,
        });
        assert_eq!(
            model.apply_decoded("certificate-x", at(0), &revoked),
            Applied::Nothing
        );
        assert!(model.revoked_entries().is_empty());
        let garbage = CertificateEvent::IssuanceIntended(IssuanceIntended {
            issuer_ca_id: "builtin".into(),
            serial: "not hex".into(),
            ..Default::default()
        });
        assert_eq!(
            model.apply_decoded("certificate-x", at(0), &garbage),
            Applied::Nothing
        );
        assert!(model.is_empty());
    }
}
