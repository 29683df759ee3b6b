//! A small in-memory read table: which certificates were ever deployed to which target, and
//! which targets exist. It only says *where to look*; every answer is then folded from the
//! streams themselves (certificate and target state are never cached here).
//!
//! It is rebuilt at start by reading the log from the beginning and then follows the log
//! (`read_all` + `wait_for_new`), so it needs no checkpoint and cannot disagree with the
//! log after a restart. Request handlers also add what they append, so a caller sees its
//! own writes at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use certledger_domain::CertificateEvent;
use certledger_eventlog::{EventLog, StorageError};
use certledger_runtime::repository::{certificate_id_of, decode_event};
use tokio_util::sync::CancellationToken;

use super::targets::TARGET_STREAM_PREFIX;

#[derive(Debug, Default)]
struct Inner {
    by_target: BTreeMap<String, BTreeSet<String>>,
    by_certificate: BTreeMap<String, BTreeSet<String>>,
    targets: BTreeSet<String>,
    position: u64,
}

/// See the module docs. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct DeploymentIndex {
    inner: Arc<RwLock<Inner>>,
}

const BATCH: u32 = 1000;

impl DeploymentIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `certificate_id` was deployed (asked for) on `target_id`.
    pub fn add_deployment(&self, certificate_id: &str, target_id: &str) {
        if let Ok(mut inner) = self.inner.write() {
            inner
                .by_target
                .entry(target_id.to_owned())
                .or_default()
                .insert(certificate_id.to_owned());
            inner
                .by_certificate
                .entry(certificate_id.to_owned())
                .or_default()
                .insert(target_id.to_owned());
        }
    }

    /// Records a target.
    pub fn add_target(&self, target_id: &str) {
        if let Ok(mut inner) = self.inner.write() {
            inner.targets.insert(target_id.to_owned());
        }
    }

    /// Certificates ever deployed to a target.
    pub fn certificates_on(&self, target_id: &str) -> Vec<String> {
        self.inner
            .read()
            .map(|i| {
                i.by_target
                    .get(target_id)
                    .map(|s| s.iter().cloned().collect())
                    .unwrap_or_default()
            })
            .unwrap_or_default()
    }

    /// Every (certificate, target) pair ever deployed.
    pub fn pairs(&self) -> Vec<(String, String)> {
        self.inner
            .read()
            .map(|i| {
                i.by_certificate
                    .iter()
                    .flat_map(|(c, ts)| ts.iter().map(move |t| (c.clone(), t.clone())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every target id.
    pub fn targets(&self) -> Vec<String> {
        self.inner
            .read()
            .map(|i| i.targets.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn position(&self) -> u64 {
        self.inner.read().map(|i| i.position).unwrap_or_default()
    }

    /// Reads what the log holds after the last position seen; returns how many events were
    /// read.
    pub async fn catch_up(&self, log: &dyn EventLog) -> Result<usize, StorageError> {
        let mut total = 0;
        loop {
            let events = log.read_all(self.position(), BATCH).await?;
            let Some(last) = events.last().map(|e| e.position) else {
                return Ok(total);
            };
            total += events.len();
            for event in &events {
                if let Some(target_id) = event.stream_id.strip_prefix(TARGET_STREAM_PREFIX) {
                    if event.event_type == "TargetRegistered" {
                        self.add_target(target_id);
                    }
                } else if let Some(certificate_id) = certificate_id_of(&event.stream_id)
                    && event.event_type == "DeploymentRequested"
                {
                    match decode_event(event) {
                        Ok(Some(CertificateEvent::DeploymentRequested(d))) => {
                            self.add_deployment(certificate_id, &d.target_id);
                        }
                        Ok(_) => {}
                        Err(error) => {
                            tracing::warn!(%error, "deployment index: undecodable event skipped");
                        }
                    }
                }
            }
            if let Ok(mut inner) = self.inner.write() {
                inner.position = inner.position.max(last);
            }
            if events.len() < BATCH as usize {
                return Ok(total);
            }
        }
    }

    /// Follows the log until `shutdown`.
    pub async fn follow(self, log: Arc<dyn EventLog>, shutdown: CancellationToken) {
        loop {
            if let Err(error) = self.catch_up(log.as_ref()).await {
                tracing::warn!(%error, "deployment index: reading the log failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                    _ = shutdown.cancelled() => return,
                }
                continue;
            }
            tokio::select! {
                _ = log.wait_for_new(self.position()) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }
}
