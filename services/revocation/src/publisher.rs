//! Signing and publishing the CRL of the issuer: at start, promptly after every new
//! revocation (the model kicks the publisher), and on a schedule well before `nextUpdate`.
//!
//! CRL numbers are kept in the event log, on the stream `crl-<issuer>`: every CRL signed
//! is recorded as a `CrlPublished` event (issuer, CRL number, thisUpdate, nextUpdate,
//! entries, SHA-256) appended with the expected version of that stream. The number of a
//! new CRL is the last recorded number plus one, so it is strictly increasing across
//! restarts, and two replicas can never publish the same number (the second append
//! conflicts and that replica numbers again). A CRL is served only after its event is
//! committed. The events also let the projections measure revocation → CRL time.

use std::sync::Arc;
use std::time::Duration;

use certledger_domain::time::{from_timestamp, to_timestamp};
use certledger_eventlog::{AppendError, EventLog, ExpectedVersion, Metadata, NewEvent};
use certledger_proto::codec::{CURRENT_SCHEMA_VERSION, EventCodec};
use certledger_proto::events::v1::crl_event::Event as CrlEventKind;
use time::OffsetDateTime;
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;

use crate::crl::{CrlConfig, SignedCrl, build_crl};
use crate::http::CrlHandle;
use crate::issuer::IssuerSigner;
use crate::model::StatusModel;

/// Event type of a signed CRL on the `crl-<issuer>` stream.
pub const CRL_PUBLISHED: &str = "CrlPublished";

/// Delay before retrying a CRL that could not be signed or recorded.
const RETRY_DELAY: Duration = Duration::from_secs(5);

/// Attempts at numbering a CRL when other replicas publish concurrently.
const MAX_ATTEMPTS: u32 = 5;

pub use certledger_proto::events::v1::CrlPublished;

/// Decodes a `crl-<issuer>` event (`None`: another type, or unreadable — logged).
pub fn decode_crl_event(event: &certledger_eventlog::RecordedEvent) -> Option<CrlPublished> {
    match CrlEventKind::decode(&event.event_type, event.schema_version, &event.payload) {
        Ok(CrlEventKind::CrlPublished(p)) => Some(p),
        Err(error) => {
            tracing::warn!(stream = %event.stream_id, version = event.stream_version, %error, "CRL event does not decode; skipped");
            None
        }
    }
}

/// The stream id of an issuer's CRL events.
pub fn crl_stream(issuer_id: &str) -> String {
    format!("crl-{issuer_id}")
}

/// Why a CRL could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishFailure {
    /// Signing failed.
    #[error(transparent)]
    Crl(#[from] crate::crl::CrlError),
    /// The event log failed.
    #[error("event log: {0}")]
    Log(String),
    /// Other replicas kept publishing in between.
    #[error("the CRL stream changed concurrently {0} times in a row")]
    Contended(u32),
    /// The HTTP handle refused it.
    #[error(transparent)]
    Serve(#[from] crate::http::PublishError),
}

/// How CRLs are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublisherSettings {
    /// CRL validity (`nextUpdate - thisUpdate`).
    pub crl: CrlConfig,
    /// A new CRL is signed this long after the last one even without revocations (must be
    /// shorter than the validity, so that clients never see an outdated CRL).
    pub refresh: Duration,
}

impl Default for PublisherSettings {
    fn default() -> Self {
        Self {
            crl: CrlConfig::default(),
            refresh: Duration::from_secs(24 * 3600),
        }
    }
}

/// The last CRL recorded on the stream: (stream version, CRL number).
#[derive(Debug, Default, Clone, Copy)]
struct Recorded {
    version: u64,
    crl_number: u64,
}

/// Signs, records and serves CRLs of one issuer.
pub struct CrlPublisher {
    issuer_id: String,
    signer: Arc<IssuerSigner>,
    settings: PublisherSettings,
    log: Arc<dyn EventLog>,
    model: Arc<StatusModel>,
    handle: CrlHandle,
    kick: Arc<Notify>,
    recorded: Mutex<Recorded>,
}

impl std::fmt::Debug for CrlPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrlPublisher")
            .field("issuer_id", &self.issuer_id)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl CrlPublisher {
    /// A publisher of `model`'s revocations, signed by `signer`, served through `handle`.
    pub fn new(
        issuer_id: impl Into<String>,
        signer: Arc<IssuerSigner>,
        settings: PublisherSettings,
        log: Arc<dyn EventLog>,
        model: Arc<StatusModel>,
        handle: CrlHandle,
    ) -> Self {
        Self {
            issuer_id: issuer_id.into(),
            signer,
            settings,
            log,
            model,
            handle,
            kick: Arc::new(Notify::new()),
            recorded: Mutex::new(Recorded::default()),
        }
    }

    /// Asks for a new CRL as soon as possible (a revocation was recorded). Kicks while a
    /// CRL is being signed are not lost.
    pub fn kick(&self) {
        self.kick.notify_one();
    }

    /// The issuer id.
    pub fn issuer_id(&self) -> &str {
        &self.issuer_id
    }

    /// Reads CRL events recorded after the cached version (ours or another replica's).
    async fn catch_up(&self, recorded: &mut Recorded) -> Result<(), PublishFailure> {
        let stream = crl_stream(&self.issuer_id);
        let events = self
            .log
            .read_stream(&stream, recorded.version)
            .await
            .map_err(|e| PublishFailure::Log(e.to_string()))?;
        for event in events {
            recorded.version = event.stream_version;
            if let Some(p) = decode_crl_event(&event) {
                recorded.crl_number = recorded.crl_number.max(p.crl_number);
            }
        }
        Ok(())
    }

    /// Signs a CRL of every revoked serial now, records it and serves it.
    pub async fn publish_now(&self) -> Result<Arc<SignedCrl>, PublishFailure> {
        let mut recorded = self.recorded.lock().await;
        let stream = crl_stream(&self.issuer_id);
        for _ in 0..MAX_ATTEMPTS {
            self.catch_up(&mut recorded).await?;
            let served = self
                .handle
                .get(&self.issuer_id)
                .map(|c| c.crl_number)
                .unwrap_or(0);
            let number = recorded.crl_number.max(served) + 1;
            // Read before the entries: every revocation at or before it is among them.
            let revocations_through = self.model.read_through();
            let entries = self.model.revoked_entries();
            let signer = self.signer.clone();
            let config = self.settings.crl;
            let now = OffsetDateTime::now_utc();
            let crl = tokio::task::spawn_blocking(move || {
                build_crl(&signer, &config, number, now, &entries)
            })
            .await
            .map_err(|e| PublishFailure::Log(format!("signing task: {e}")))??;
            let payload = CrlPublished {
                issuer: self.issuer_id.clone(),
                crl_number: number,
                this_update: Some(to_timestamp(time_to_chrono(crl.this_update))),
                next_update: Some(to_timestamp(time_to_chrono(crl.next_update))),
                entries: crl.entries as u64,
                sha256: crl.sha256_hex.clone(),
                revocations_through,
            };
            let payload = CrlEventKind::CrlPublished(payload);
            let event = NewEvent::new(
                payload.event_type(),
                CURRENT_SCHEMA_VERSION,
                payload.encode_payload(),
                Metadata {
                    tenant: String::new(),
                    correlation_id: None,
                    causation_id: None,
                    actor: "revocation".into(),
                    trace_context: None,
                },
            );
            let expected = if recorded.version == 0 {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Exact(recorded.version)
            };
            match self.log.append_one(&stream, expected, vec![event]).await {
                Ok(result) => {
                    recorded.version = result.version;
                    recorded.crl_number = number;
                    self.handle.publish(&self.issuer_id, crl)?;
                    return self
                        .handle
                        .get(&self.issuer_id)
                        .ok_or_else(|| PublishFailure::Log("published CRL is not served".into()));
                }
                Err(AppendError::Conflict { .. }) => {
                    tracing::debug!(%stream, "another replica recorded a CRL; numbering again");
                }
                Err(e) => return Err(PublishFailure::Log(e.to_string())),
            }
        }
        Err(PublishFailure::Contended(MAX_ATTEMPTS))
    }

    /// The last CRL recorded in the log (by any replica), if any: (number, nextUpdate).
    pub async fn last_recorded(
        &self,
    ) -> Result<Option<(u64, Option<chrono::DateTime<chrono::Utc>>)>, PublishFailure> {
        let events = self
            .log
            .read_stream(&crl_stream(&self.issuer_id), 0)
            .await
            .map_err(|e| PublishFailure::Log(e.to_string()))?;
        Ok(events.iter().rev().find_map(|e| {
            decode_crl_event(e).map(|p| {
                (
                    p.crl_number,
                    p.next_update.as_ref().and_then(from_timestamp),
                )
            })
        }))
    }

    /// Publishes at once, then after every kick and every `refresh`, until `shutdown`.
    /// Failures are retried after a short delay.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut due_now = true;
        loop {
            if due_now {
                match self.publish_now().await {
                    Ok(crl) => {
                        tracing::info!(issuer = %self.issuer_id, crl_number = crl.crl_number, entries = crl.entries, next_update = %crl.next_update, "CRL signed and published");
                        due_now = false;
                    }
                    Err(error) => {
                        tracing::warn!(issuer = %self.issuer_id, %error, retry_in = ?RETRY_DELAY, "publishing the CRL failed; retrying");
                    }
                }
            }
            let wait = if due_now {
                RETRY_DELAY
            } else {
                self.settings.refresh
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.kick.notified() => due_now = true,
                _ = tokio::time::sleep(wait) => due_now = true,
            }
        }
        tracing::debug!(issuer = %self.issuer_id, "CRL publisher stopped");
    }
}

fn time_to_chrono(at: OffsetDateTime) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(at.unix_timestamp(), at.nanosecond()).unwrap_or_default()
}
