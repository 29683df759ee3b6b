//! Where the OCSP responder learns a certificate's status: the [`StatusSource`] trait, and an
//! in-memory read model ([`MemoryStatusSource`]) the service keeps current from the event
//! stream (issued → good, revoked → revoked).

use std::collections::HashMap;
use std::sync::RwLock;

use certledger_ca::SerialNumber;
use time::OffsetDateTime;

use crate::crl::RevokedEntry;
use crate::reason::RevocationReason;

/// The status of one serial of the issuing CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertStatus {
    /// Issued by this CA and not revoked.
    Good,
    /// Revoked.
    Revoked {
        /// When the CA processed the revocation.
        revoked_at: OffsetDateTime,
        /// Why ([`RevocationReason::Unspecified`] is answered without a reason).
        reason: RevocationReason,
    },
    /// Never issued by this CA (as far as the source knows). Never answered as good.
    Unknown,
}

/// The status source cannot answer now (e.g. its read model has not caught up with the event
/// log yet). The responder answers `tryLater`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("certificate status is unavailable: {reason}")]
pub struct StatusUnavailable {
    /// Why (for logs).
    pub reason: String,
}

/// Answers "what is the status of this serial of the issuing CA?".
///
/// Implementations must answer [`CertStatus::Unknown`] for a serial they have no record of:
/// the responder never says `good` for a serial that was never issued.
pub trait StatusSource: Send + Sync {
    /// The status of `serial`.
    fn status(&self, serial: &SerialNumber) -> Result<CertStatus, StatusUnavailable>;
}

impl<T: StatusSource + ?Sized> StatusSource for std::sync::Arc<T> {
    fn status(&self, serial: &SerialNumber) -> Result<CertStatus, StatusUnavailable> {
        (**self).status(serial)
    }
}

/// An in-memory status read model: serial → issued or revoked. Cheap to share (`Arc`);
/// updates and lookups may run concurrently.
#[derive(Debug, Default)]
pub struct MemoryStatusSource {
    inner: RwLock<HashMap<SerialNumber, CertStatus>>,
}

impl MemoryStatusSource {
    /// An empty read model (every serial unknown).
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `serial` was issued. Idempotent; never turns a revoked serial back to good
    /// (a replayed or reordered "issued" event cannot undo a revocation).
    pub fn record_issued(&self, serial: SerialNumber) {
        let mut map = self.inner.write().unwrap_or_else(|p| p.into_inner());
        map.entry(serial).or_insert(CertStatus::Good);
    }

    /// Records that `serial` was revoked. Idempotent: the first revocation recorded wins (its
    /// time and reason stay), except that a later record may raise the reason to
    /// keyCompromise, as RFC 5280 and the Baseline Requirements allow.
    pub fn record_revoked(
        &self,
        serial: SerialNumber,
        revoked_at: OffsetDateTime,
        reason: RevocationReason,
    ) {
        let mut map = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let slot = map.entry(serial).or_insert(CertStatus::Good);
        match slot {
            CertStatus::Revoked {
                reason: existing, ..
            } => {
                if reason == RevocationReason::KeyCompromise {
                    *existing = RevocationReason::KeyCompromise;
                }
            }
            _ => *slot = CertStatus::Revoked { revoked_at, reason },
        }
    }

    /// Forgets `serial` (e.g. expired long ago and dropped from the read model).
    pub fn forget(&self, serial: &SerialNumber) {
        let mut map = self.inner.write().unwrap_or_else(|p| p.into_inner());
        map.remove(serial);
    }

    /// Number of serials known.
    pub fn len(&self) -> usize {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// True if no serial is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every revoked serial, for building the CRL.
    pub fn revoked_entries(&self) -> Vec<RevokedEntry> {
        let map = self.inner.read().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .filter_map(|(serial, status)| match status {
                CertStatus::Revoked { revoked_at, reason } => Some(RevokedEntry {
                    serial: serial.clone(),
                    revoked_at: *revoked_at,
                    reason: *reason,
                }),
                _ => None,
            })
            .collect()
    }
}

impl StatusSource for MemoryStatusSource {
    fn status(&self, serial: &SerialNumber) -> Result<CertStatus, StatusUnavailable> {
        let map = self.inner.read().unwrap_or_else(|p| p.into_inner());
        Ok(map.get(serial).copied().unwrap_or(CertStatus::Unknown))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serial(hex: &str) -> SerialNumber {
        SerialNumber::from_hex(hex).expect("serial")
    }

    #[test]
    fn unknown_until_issued_and_revocation_sticks() {
        let source = MemoryStatusSource::new();
        let s = serial("01ab");
        assert_eq!(source.status(&s), Ok(CertStatus::Unknown));
        source.record_issued(s.clone());
        assert_eq!(source.status(&s), Ok(CertStatus::Good));
        let at = time::macros::datetime!(2026-01-02 03:04:05 UTC);
        source.record_revoked(s.clone(), at, RevocationReason::Superseded);
        let revoked = CertStatus::Revoked {
            revoked_at: at,
            reason: RevocationReason::Superseded,
        };
        assert_eq!(source.status(&s), Ok(revoked));
        // Replays change nothing.
        source.record_issued(s.clone());
        source.record_revoked(
            s.clone(),
            at + time::Duration::hours(1),
            RevocationReason::Superseded,
        );
        assert_eq!(source.status(&s), Ok(revoked));
        // Escalation to keyCompromise keeps the first time.
        source.record_revoked(s.clone(), at, RevocationReason::KeyCompromise);
        assert_eq!(
            source.status(&s),
            Ok(CertStatus::Revoked {
                revoked_at: at,
                reason: RevocationReason::KeyCompromise
            })
        );
        assert_eq!(source.revoked_entries().len(), 1);
        source.forget(&s);
        assert_eq!(source.status(&s), Ok(CertStatus::Unknown));
        assert!(source.is_empty());
    }
}
