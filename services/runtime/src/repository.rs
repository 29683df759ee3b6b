//! The certificate repository: one command = load the stream `certificate-<id>`, decode
//! and fold its events, decide, append the decided events with the expected version, and
//! on a conflict (someone appended in between) load and decide again, a bounded number of
//! times.
//!
//! Tenant isolation lives here: with a tenant scope, a certificate of another tenant is
//! reported exactly like one that does not exist ([`not_found`]).
//!
//! A command that repeats what is already recorded decides no events; [`Executed::changed`]
//! is then false and nothing is appended (this is what makes handlers idempotent).

use std::sync::Arc;

use certledger_domain::certificate::{CertificateCommand, CertificateState, decide, evolve};
use certledger_domain::{CertificateEvent, DomainError};
use certledger_eventlog::{
    AppendError, EventLog, ExpectedVersion, Metadata, NewEvent, RecordedEvent, StorageError,
    StreamAppend,
};
use certledger_proto::codec::{CURRENT_SCHEMA_VERSION, CodecError, EventCodec};
use chrono::{DateTime, Utc};

use crate::context::CallContext;

/// Prefix of a certificate's stream id.
pub const CERTIFICATE_STREAM_PREFIX: &str = "certificate-";

/// How many times a command is decided again after a conflicting append.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

/// The stream id of a certificate.
pub fn certificate_stream(certificate_id: &str) -> String {
    format!("{CERTIFICATE_STREAM_PREFIX}{certificate_id}")
}

/// The certificate id of a certificate stream id, if it is one.
pub fn certificate_id_of(stream_id: &str) -> Option<&str> {
    stream_id.strip_prefix(CERTIFICATE_STREAM_PREFIX)
}

/// The one "not found" error, used both for a certificate that does not exist and for one
/// of another tenant, so that the two cannot be told apart.
pub fn not_found(certificate_id: &str) -> DomainError {
    DomainError::not_found(format!("certificate {certificate_id} not found"))
}

/// Checks a certificate id from a request (`field` names it in the error).
pub fn check_certificate_id(field: &str, certificate_id: &str) -> Result<(), DomainError> {
    certledger_domain::validate::id(field, certificate_id)
}

/// What the caller expects the stream's version to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Whatever it is (conflicts are retried).
    Any,
    /// Exactly this version (a mismatch is reported, not retried).
    Version(u64),
}

impl Expect {
    /// From a request's `expected_version` field: 0 means any.
    pub fn from_request(expected_version: u64) -> Self {
        if expected_version == 0 {
            Expect::Any
        } else {
            Expect::Version(expected_version)
        }
    }
}

/// Why a command could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    /// The decider refused the command (or the certificate is not visible).
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The caller's expected version is not the stream's.
    #[error(
        "certificate {certificate_id} is at version {actual}, not the expected {expected}; reload it and retry"
    )]
    VersionMismatch {
        /// The certificate.
        certificate_id: String,
        /// What the caller expected.
        expected: u64,
        /// What the stream is at.
        actual: u64,
    },
    /// Every attempt met a concurrent append.
    #[error(
        "certificate {certificate_id} was changed concurrently {attempts} times in a row; retry the request"
    )]
    Contended {
        /// The certificate.
        certificate_id: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The event log failed (database unreachable, …).
    #[error("event log: {0}")]
    Storage(#[source] StorageError),
    /// The log refused the append for a reason that is a bug on our side.
    #[error("event log refused the append: {0}")]
    Append(String),
    /// A stored event cannot be read by this build.
    #[error("stream {stream_id} version {version} ({event_type}): {reason}")]
    Corrupt {
        /// The stream.
        stream_id: String,
        /// The event's version.
        version: u64,
        /// The event's type.
        event_type: String,
        /// Why it does not decode.
        reason: String,
    },
}

impl RepositoryError {
    /// Whether retrying later may succeed (storage trouble, contention).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            RepositoryError::Storage(_) | RepositoryError::Contended { .. }
        )
    }
}

impl From<StorageError> for RepositoryError {
    fn from(e: StorageError) -> Self {
        RepositoryError::Storage(e)
    }
}

/// A certificate as loaded.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The folded state.
    pub state: CertificateState,
    /// When the order was recorded (the first event's time).
    pub ordered_at: Option<DateTime<Utc>>,
}

/// One stored event with its decoded form (`None` for an event type this build does not
/// know, which only counts towards the version).
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// The envelope as stored.
    pub recorded: RecordedEvent,
    /// The decoded event.
    pub event: Option<CertificateEvent>,
}

/// The result of a command.
#[derive(Debug, Clone)]
pub struct Executed {
    /// The state after the command (the loaded state when nothing was decided).
    pub state: CertificateState,
    /// When the order was recorded.
    pub ordered_at: Option<DateTime<Utc>>,
    /// The events appended (empty when the command repeated what was recorded).
    pub events: Vec<CertificateEvent>,
    /// Their global positions.
    pub positions: Vec<u64>,
    /// Their event ids.
    pub event_ids: Vec<uuid::Uuid>,
    /// How many times the command was decided (1 without conflicts).
    pub attempts: u32,
}

impl Executed {
    /// Whether events were appended.
    pub fn changed(&self) -> bool {
        !self.events.is_empty()
    }
}

/// Decodes one stored certificate event. Unknown event types (written by a newer build)
/// decode to `None`; a payload that does not decode, or a schema version newer than
/// this build reads, is [`RepositoryError::Corrupt`].
pub fn decode_event(recorded: &RecordedEvent) -> Result<Option<CertificateEvent>, RepositoryError> {
    match CertificateEvent::decode(
        &recorded.event_type,
        recorded.schema_version,
        &recorded.payload,
    ) {
        Ok(event) => Ok(Some(event)),
        Err(CodecError::UnknownType { .. }) => {
            tracing::warn!(
                stream = %recorded.stream_id,
                version = recorded.stream_version,
                event_type = %recorded.event_type,
                "unknown event type; counted towards the version only"
            );
            Ok(None)
        }
        Err(e) => Err(RepositoryError::Corrupt {
            stream_id: recorded.stream_id.clone(),
            version: recorded.stream_version,
            event_type: recorded.event_type.clone(),
            reason: e.to_string(),
        }),
    }
}

/// Loads, decides and appends certificate commands. Cheap to clone.
#[derive(Clone)]
pub struct CertificateRepository {
    log: Arc<dyn EventLog>,
    max_attempts: u32,
}

impl std::fmt::Debug for CertificateRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateRepository")
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

impl CertificateRepository {
    /// A repository over `log`.
    pub fn new(log: Arc<dyn EventLog>) -> Self {
        Self {
            log,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }

    /// Sets how many times a command is decided before giving up on contention.
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The event log.
    pub fn log(&self) -> &Arc<dyn EventLog> {
        &self.log
    }

    /// Every event of a certificate's stream, decoded.
    pub async fn read(&self, certificate_id: &str) -> Result<Vec<StoredEvent>, RepositoryError> {
        self.read_after(certificate_id, 0).await
    }

    /// The events of a certificate's stream after `after_version`, decoded.
    pub async fn read_after(
        &self,
        certificate_id: &str,
        after_version: u64,
    ) -> Result<Vec<StoredEvent>, RepositoryError> {
        let stream = certificate_stream(certificate_id);
        let recorded = self.log.read_stream(&stream, after_version).await?;
        recorded
            .into_iter()
            .map(|recorded| {
                let event = decode_event(&recorded)?;
                Ok(StoredEvent { recorded, event })
            })
            .collect()
    }

    /// Loads a certificate visible to `tenant` (`None`: any tenant). A certificate that
    /// does not exist or belongs to another tenant is [`not_found`].
    pub async fn load(
        &self,
        certificate_id: &str,
        tenant: Option<&str>,
    ) -> Result<Loaded, RepositoryError> {
        check_certificate_id("certificate_id", certificate_id)?;
        let events = self.read(certificate_id).await?;
        let loaded = fold_stored(&events);
        if !visible(&loaded.state, tenant) {
            return Err(not_found(certificate_id).into());
        }
        Ok(loaded)
    }

    /// Loads a certificate visible to `tenant` with its stored events (for history).
    pub async fn load_with_events(
        &self,
        certificate_id: &str,
        tenant: Option<&str>,
    ) -> Result<(Loaded, Vec<StoredEvent>), RepositoryError> {
        check_certificate_id("certificate_id", certificate_id)?;
        let events = self.read(certificate_id).await?;
        let loaded = fold_stored(&events);
        if !visible(&loaded.state, tenant) {
            return Err(not_found(certificate_id).into());
        }
        Ok((loaded, events))
    }

    /// Carries out `command` on a certificate (see the module docs).
    pub async fn execute(
        &self,
        certificate_id: &str,
        ctx: &CallContext,
        expect: Expect,
        command: CertificateCommand,
    ) -> Result<Executed, RepositoryError> {
        self.execute_with(certificate_id, ctx, expect, |_| Ok(command.clone()))
            .await
    }

    /// Like [`CertificateRepository::execute`], with the command built from the loaded
    /// state on every attempt (for commands whose checks need the state, e.g. a CSR checked
    /// against the ordered specification).
    pub async fn execute_with<F>(
        &self,
        certificate_id: &str,
        ctx: &CallContext,
        expect: Expect,
        mut build: F,
    ) -> Result<Executed, RepositoryError>
    where
        F: FnMut(&CertificateState) -> Result<CertificateCommand, DomainError>,
    {
        let mut executed = self
            .run(ctx, &[(certificate_id, expect)], |states| {
                Ok(vec![build(&states[0])?])
            })
            .await?;
        executed
            .pop()
            .ok_or_else(|| RepositoryError::Append("no result for a one-stream command".to_owned()))
    }

    /// Carries out one command on each of several certificates, atomically: all decided
    /// events are appended in one transaction, each stream at the version its command was
    /// decided on, or none is (a renewal starts on the predecessor and orders the
    /// successor together). `build` gets the states in the order of `certificate_ids`
    /// and returns one command for each, in that order. Conflicts are decided again.
    pub async fn execute_together<F>(
        &self,
        ctx: &CallContext,
        certificate_ids: &[&str],
        build: F,
    ) -> Result<Vec<Executed>, RepositoryError>
    where
        F: FnMut(&[CertificateState]) -> Result<Vec<CertificateCommand>, DomainError>,
    {
        let streams: Vec<(&str, Expect)> = certificate_ids
            .iter()
            .map(|id| (*id, Expect::Any))
            .collect();
        self.run(ctx, &streams, build).await
    }

    async fn run<F>(
        &self,
        ctx: &CallContext,
        streams: &[(&str, Expect)],
        mut build: F,
    ) -> Result<Vec<Executed>, RepositoryError>
    where
        F: FnMut(&[CertificateState]) -> Result<Vec<CertificateCommand>, DomainError>,
    {
        for (id, _) in streams {
            check_certificate_id("certificate_id", id)?;
        }
        let mut attempt = 0;
        while attempt < self.max_attempts {
            attempt += 1;
            let mut loaded = Vec::with_capacity(streams.len());
            for (id, expect) in streams {
                let events = self.read(id).await?;
                let current = fold_stored(&events);
                let state = &current.state;
                if state.exists() && !visible(state, ctx.tenant()) {
                    return Err(not_found(id).into());
                }
                if let Expect::Version(expected) = *expect
                    && state.version != expected
                {
                    if !state.exists() {
                        return Err(not_found(id).into());
                    }
                    return Err(RepositoryError::VersionMismatch {
                        certificate_id: (*id).to_owned(),
                        expected,
                        actual: state.version,
                    });
                }
                loaded.push(current);
            }
            let states: Vec<CertificateState> = loaded.iter().map(|l| l.state.clone()).collect();
            let commands = build(&states)?;
            if commands.len() != streams.len() {
                return Err(RepositoryError::Append(format!(
                    "{} commands built for {} certificates",
                    commands.len(),
                    streams.len()
                )));
            }
            let mut decided_all = Vec::with_capacity(streams.len());
            let mut appends = Vec::new();
            let mut event_ids = Vec::with_capacity(streams.len());
            for (((id, _), current), command) in streams.iter().zip(&loaded).zip(&commands) {
                let state = &current.state;
                let tenant = match command {
                    CertificateCommand::PlaceOrder(order) if !state.exists() => {
                        order.tenant.clone()
                    }
                    _ if !state.exists() => return Err(not_found(id).into()),
                    _ => state.tenant.clone(),
                };
                let decided = decide(command, state)?;
                let new_events = encode_events(&decided, &ctx.metadata(&tenant));
                event_ids.push(new_events.iter().map(|e| e.event_id).collect::<Vec<_>>());
                if !new_events.is_empty() {
                    appends.push(StreamAppend {
                        stream_id: certificate_stream(id),
                        expected: if state.version == 0 {
                            ExpectedVersion::NoStream
                        } else {
                            ExpectedVersion::Exact(state.version)
                        },
                        events: new_events,
                    });
                }
                decided_all.push(decided);
            }
            let results = if appends.is_empty() {
                Vec::new()
            } else {
                match self.log.append(appends).await {
                    Ok(results) => results,
                    Err(AppendError::Conflict {
                        stream_id, actual, ..
                    }) => {
                        let pinned = streams.iter().find_map(|(id, expect)| match expect {
                            Expect::Version(v) if certificate_stream(id) == stream_id => {
                                Some((*id, *v))
                            }
                            _ => None,
                        });
                        if let Some((id, expected)) = pinned {
                            return Err(RepositoryError::VersionMismatch {
                                certificate_id: id.to_owned(),
                                expected,
                                actual,
                            });
                        }
                        tracing::debug!(stream_id, attempt, "conflicting append; deciding again");
                        tokio::task::yield_now().await;
                        continue;
                    }
                    Err(AppendError::Storage(e)) => return Err(RepositoryError::Storage(e)),
                    Err(e) => return Err(RepositoryError::Append(e.to_string())),
                }
            };
            let mut results = results.into_iter();
            let mut executed = Vec::with_capacity(streams.len());
            for ((((id, _), current), command), (decided, ids)) in streams
                .iter()
                .zip(loaded)
                .zip(&commands)
                .zip(decided_all.into_iter().zip(event_ids))
            {
                let Loaded { state, ordered_at } = current;
                if decided.is_empty() {
                    executed.push(Executed {
                        state,
                        ordered_at,
                        events: vec![],
                        positions: vec![],
                        event_ids: vec![],
                        attempts: attempt,
                    });
                    continue;
                }
                let positions = results.next().map(|r| r.positions).unwrap_or_default();
                let was_new = state.version == 0;
                let state = decided.iter().fold(state, evolve);
                let ordered_at = if was_new {
                    self.first_recorded_at(&certificate_stream(id)).await
                } else {
                    ordered_at
                };
                tracing::debug!(
                    certificate_id = id,
                    command = command.name(),
                    version = state.version,
                    events = decided.len(),
                    attempt,
                    "appended"
                );
                executed.push(Executed {
                    state,
                    ordered_at,
                    events: decided,
                    positions,
                    event_ids: ids,
                    attempts: attempt,
                });
            }
            return Ok(executed);
        }
        Err(RepositoryError::Contended {
            certificate_id: streams
                .iter()
                .map(|(id, _)| *id)
                .collect::<Vec<_>>()
                .join(", "),
            attempts: attempt,
        })
    }

    async fn first_recorded_at(&self, stream: &str) -> Option<DateTime<Utc>> {
        match self.log.read_stream(stream, 0).await {
            Ok(events) => events.first().map(|e| e.recorded_at),
            Err(error) => {
                tracing::warn!(stream, %error, "reading back the order time failed");
                None
            }
        }
    }
}

/// Decided events as log entries (current schema version, fresh ids), all with `metadata`.
pub fn encode_events<E: EventCodec>(decided: &[E], metadata: &Metadata) -> Vec<NewEvent> {
    decided
        .iter()
        .map(|e| {
            NewEvent::new(
                e.event_type(),
                CURRENT_SCHEMA_VERSION,
                e.encode_payload(),
                metadata.clone(),
            )
        })
        .collect()
}

/// Folds stored events; unknown event types count towards the version only.
pub fn fold_stored(events: &[StoredEvent]) -> Loaded {
    let ordered_at = events.first().map(|e| e.recorded.recorded_at);
    let state = events
        .iter()
        .fold(CertificateState::default(), |state, stored| {
            match &stored.event {
                Some(event) => evolve(state, event),
                None => CertificateState {
                    version: state.version + 1,
                    ..state
                },
            }
        });
    Loaded { state, ordered_at }
}

/// Whether a certificate is visible to a caller in `tenant` (`None`: every tenant).
pub fn visible(state: &CertificateState, tenant: Option<&str>) -> bool {
    state.exists() && tenant.is_none_or(|t| t == state.tenant)
}
