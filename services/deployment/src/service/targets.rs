//! The target repository: stream `target-<id>`, folded with the domain's target decider,
//! appended with the expected version (retried on conflict). Another tenant's target is
//! reported exactly like one that does not exist.

use std::sync::Arc;

use certledger_domain::target::{TargetCommand, TargetState, decide_target, evolve_target};
use certledger_domain::{DomainError, TargetEvent};
use certledger_eventlog::{AppendError, EventLog, ExpectedVersion};
use certledger_proto::codec::{CodecError, EventCodec};
use certledger_runtime::repository::encode_events;
use certledger_runtime::{CallContext, RepositoryError};

/// Prefix of a target's stream id.
pub const TARGET_STREAM_PREFIX: &str = "target-";

/// The stream id of a target.
pub fn target_stream(target_id: &str) -> String {
    format!("{TARGET_STREAM_PREFIX}{target_id}")
}

/// The one "not found" of a target (also for another tenant's).
pub fn target_not_found(target_id: &str) -> DomainError {
    DomainError::not_found(format!("target {target_id} not found"))
}

/// Whether `state` is visible to `tenant` (`None`: every tenant).
pub fn target_visible(state: &TargetState, tenant: Option<&str>) -> bool {
    state.exists() && tenant.is_none_or(|t| t == state.tenant)
}

/// Loads and changes targets.
#[derive(Clone)]
pub struct TargetRepository {
    log: Arc<dyn EventLog>,
}

impl std::fmt::Debug for TargetRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetRepository").finish_non_exhaustive()
    }
}

impl TargetRepository {
    /// A repository over `log`.
    pub fn new(log: Arc<dyn EventLog>) -> Self {
        Self { log }
    }

    /// The folded target (absent when the stream does not exist).
    pub async fn read(&self, target_id: &str) -> Result<TargetState, RepositoryError> {
        certledger_domain::validate::id("target_id", target_id)?;
        let stream = target_stream(target_id);
        let recorded = self.log.read_stream(&stream, 0).await?;
        let mut state = TargetState::default();
        for r in &recorded {
            match TargetEvent::decode(&r.event_type, r.schema_version, &r.payload) {
                Ok(event) => state = evolve_target(state, &event),
                Err(CodecError::UnknownType { .. }) => state.version += 1,
                Err(e) => {
                    return Err(RepositoryError::Corrupt {
                        stream_id: stream,
                        version: r.stream_version,
                        event_type: r.event_type.clone(),
                        reason: e.to_string(),
                    });
                }
            }
        }
        Ok(state)
    }

    /// A target visible to `tenant`; otherwise NOT_FOUND.
    pub async fn load(
        &self,
        target_id: &str,
        tenant: Option<&str>,
    ) -> Result<TargetState, RepositoryError> {
        let state = self.read(target_id).await?;
        if !target_visible(&state, tenant) {
            return Err(target_not_found(target_id).into());
        }
        Ok(state)
    }

    /// Decides `command` on the target and appends the events; returns the new state and
    /// whether anything was appended.
    pub async fn execute(
        &self,
        target_id: &str,
        ctx: &CallContext,
        command: &TargetCommand,
    ) -> Result<(TargetState, bool), RepositoryError> {
        let stream = target_stream(target_id);
        for _ in 0..certledger_runtime::repository::DEFAULT_MAX_ATTEMPTS {
            let state = self.read(target_id).await?;
            if state.exists() && !target_visible(&state, ctx.tenant()) {
                return Err(target_not_found(target_id).into());
            }
            let tenant = match command {
                TargetCommand::Register(r) if !state.exists() => r.tenant.clone(),
                _ => state.tenant.clone(),
            };
            let decided = decide_target(command, &state)?;
            if decided.is_empty() {
                return Ok((state, false));
            }
            let events = encode_events(&decided, &ctx.metadata(&tenant));
            let expected = if state.version == 0 {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Exact(state.version)
            };
            match self.log.append_one(&stream, expected, events).await {
                Ok(_) => {
                    let state = decided.iter().fold(state, evolve_target);
                    return Ok((state, true));
                }
                Err(AppendError::Conflict { .. }) => tokio::task::yield_now().await,
                Err(AppendError::Storage(e)) => return Err(RepositoryError::Storage(e)),
                Err(e) => return Err(RepositoryError::Append(e.to_string())),
            }
        }
        Err(RepositoryError::Contended {
            certificate_id: format!("target {target_id}"),
            attempts: certledger_runtime::repository::DEFAULT_MAX_ATTEMPTS,
        })
    }
}
