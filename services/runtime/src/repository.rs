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
//!
//! # The fold cache
//!
//! A repository (and its clones) keeps the folds of recently used streams in a bounded
//! cache ([`StreamCache`], least recently used first out), each at its stream version, so
//! that a stream is not read and folded from its first event for every command and every
//! reaction:
//!
//! - [`CertificateRepository::load`] reads only the events after the cached version (one
//!   query, usually returning nothing) and folds them onto the cached state;
//! - [`CertificateRepository::load_since`] (for reactions: "at least as new as the event
//!   I am handling") answers from the cache without any query when the cached fold is
//!   at that version or newer;
//! - a command is decided on the cached fold without reading first, and appended with the
//!   cached version as the expected one: if the stream moved on meanwhile (another
//!   process, another repository), the log refuses the append, the entry is dropped and
//!   the command is loaded and decided again like any conflict. A decision on a cached
//!   fold that refuses the command or changes nothing is not believed until the fold is
//!   read up to date and the command decided again (a newer event may allow it);
//! - after an append the cache holds the fold with the appended events.
//!
//! Events are never changed once appended, so a cached fold is never wrong, only
//! possibly old; the optimistic concurrency check of the append is what keeps decisions
//! on it correct.

use std::sync::Arc;

use certledger_domain::certificate::{CertificateCommand, CertificateState, decide_all, evolve};
use certledger_domain::{CertificateEvent, DomainError};
use certledger_eventlog::{
    AppendError, EventLog, ExpectedVersion, Metadata, NewEvent, RecordedEvent, StorageError,
    StreamAppend,
};
use certledger_proto::codec::{CURRENT_SCHEMA_VERSION, CodecError, EventCodec};
use chrono::{DateTime, Utc};

use crate::context::CallContext;
use crate::stream_cache::{DEFAULT_CAPACITY, StreamCache};

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
    /// The caller has just made the id up (a fresh UUID): decide on the empty stream
    /// without reading it. Should the stream exist after all, the append conflicts and
    /// the command is decided again on the stream as it is, as with `Any`.
    New,
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

/// A certificate as loaded (`Default`: a stream without events).
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// The folded state.
    pub state: CertificateState,
    /// When the order was recorded (the first event's time).
    pub ordered_at: Option<DateTime<Utc>>,
    /// The global position of the stream's first event.
    pub first_position: Option<u64>,
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

/// Loads, decides and appends certificate commands. Cheap to clone; clones share the
/// fold cache (see the module docs).
#[derive(Clone)]
pub struct CertificateRepository {
    log: Arc<dyn EventLog>,
    max_attempts: u32,
    cache: Arc<StreamCache>,
}

impl std::fmt::Debug for CertificateRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateRepository")
            .field("max_attempts", &self.max_attempts)
            .field("cached_streams", &self.cache.len())
            .finish_non_exhaustive()
    }
}

impl CertificateRepository {
    /// A repository over `log`, caching up to [`DEFAULT_CAPACITY`] folded streams.
    pub fn new(log: Arc<dyn EventLog>) -> Self {
        Self {
            log,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            cache: Arc::new(StreamCache::new(DEFAULT_CAPACITY)),
        }
    }

    /// Caches up to `streams` folded streams (0: no cache, every load reads the whole
    /// stream). A fresh, empty cache, not shared with earlier clones.
    pub fn with_cache_capacity(mut self, streams: usize) -> Self {
        self.cache = Arc::new(StreamCache::new(streams));
        self
    }

    /// The fold cache.
    pub fn cache(&self) -> &StreamCache {
        &self.cache
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

    /// Loads a certificate visible to `tenant` (`None`: any tenant), up to date: the
    /// events after the cached fold are read (all of them without one). A certificate that
    /// does not exist or belongs to another tenant is [`not_found`].
    pub async fn load(
        &self,
        certificate_id: &str,
        tenant: Option<&str>,
    ) -> Result<Loaded, RepositoryError> {
        check_certificate_id("certificate_id", certificate_id)?;
        let loaded = self.current(certificate_id).await?;
        if !visible(&loaded.state, tenant) {
            return Err(not_found(certificate_id).into());
        }
        Ok(loaded)
    }

    /// Loads a certificate at version `min_version` or newer: from the cache without any
    /// query when it holds such a fold, otherwise like [`CertificateRepository::load`].
    /// For reactions, with the version of the event being handled: the fold is then at
    /// least as new as that event, though later events may exist (a decision on it is
    /// still checked by the append's expected version).
    pub async fn load_since(
        &self,
        certificate_id: &str,
        tenant: Option<&str>,
        min_version: u64,
    ) -> Result<Loaded, RepositoryError> {
        check_certificate_id("certificate_id", certificate_id)?;
        if let Some(cached) = self.cache.get(certificate_id)
            && cached.state.version >= min_version
        {
            if !visible(&cached.state, tenant) {
                return Err(not_found(certificate_id).into());
            }
            return Ok(cached);
        }
        self.load(certificate_id, tenant).await
    }

    /// The up-to-date fold of a stream (not checked for visibility): the cached fold and
    /// the events after it, or the whole stream; cached for the next time.
    async fn current(&self, certificate_id: &str) -> Result<Loaded, RepositoryError> {
        if let Some(cached) = self.cache.get(certificate_id) {
            let after = cached.state.version;
            let events = self.read_after(certificate_id, after).await?;
            match events.first() {
                None => return Ok(cached),
                Some(first) if first.recorded.stream_version == after + 1 => {
                    let loaded = fold_onto(cached, &events);
                    self.cache.put(certificate_id, &loaded);
                    return Ok(loaded);
                }
                // Not the continuation of the cached fold (cannot happen with an
                // append-only log): start over from the first event.
                Some(first) => {
                    tracing::warn!(
                        certificate_id,
                        cached_version = after,
                        next_version = first.recorded.stream_version,
                        "the stream does not continue the cached fold; reading it whole"
                    );
                    self.cache.forget(certificate_id);
                }
            }
        }
        let events = self.read(certificate_id).await?;
        let loaded = fold_stored(&events);
        self.cache.put(certificate_id, &loaded);
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
        self.cache.put(certificate_id, &loaded);
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
                Ok(vec![vec![build(&states[0])?]])
            })
            .await?;
        executed
            .pop()
            .ok_or_else(|| RepositoryError::Append("no result for a one-stream command".to_owned()))
    }

    /// Carries out several commands on a certificate as one: each decided on the state the
    /// events of the ones before it lead to (see [`decide_all`]), and all their events
    /// appended in one transaction, or none if any is refused. The events are the same,
    /// in the same order, as carrying the commands out one after the other would record.
    pub async fn execute_all(
        &self,
        certificate_id: &str,
        ctx: &CallContext,
        expect: Expect,
        commands: Vec<CertificateCommand>,
    ) -> Result<Executed, RepositoryError> {
        let mut executed = self
            .run(ctx, &[(certificate_id, expect)], |_| {
                Ok(vec![commands.clone()])
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
        mut build: F,
    ) -> Result<Vec<Executed>, RepositoryError>
    where
        F: FnMut(&[CertificateState]) -> Result<Vec<CertificateCommand>, DomainError>,
    {
        let streams: Vec<(&str, Expect)> = certificate_ids
            .iter()
            .map(|id| (*id, Expect::Any))
            .collect();
        self.run(ctx, &streams, |states| {
            Ok(build(states)?.into_iter().map(|c| vec![c]).collect())
        })
        .await
    }

    async fn run<F>(
        &self,
        ctx: &CallContext,
        streams: &[(&str, Expect)],
        mut build: F,
    ) -> Result<Vec<Executed>, RepositoryError>
    where
        F: FnMut(&[CertificateState]) -> Result<Vec<Vec<CertificateCommand>>, DomainError>,
    {
        for (id, _) in streams {
            check_certificate_id("certificate_id", id)?;
        }
        let mut attempt = 0;
        // Decide on cached folds without reading first (see the module docs); off once
        // such a decision has to be checked against the stream as it is.
        let mut trust_cache = true;
        while attempt < self.max_attempts {
            let mut loaded = Vec::with_capacity(streams.len());
            let mut from_cache = false;
            for (id, expect) in streams {
                let cached = match expect {
                    _ if !trust_cache => None,
                    Expect::New => Some(Loaded::default()),
                    Expect::Any => self.cache.get(id),
                    Expect::Version(v) => self.cache.get(id).filter(|c| c.state.version == *v),
                };
                let current = match cached {
                    Some(cached) => {
                        from_cache = true;
                        cached
                    }
                    None => self.current(id).await?,
                };
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
            let decided = build(&states)
                .map_err(RepositoryError::from)
                .and_then(|commands| decide_each(streams, &states, commands));
            let (commands, decided_all) = match decided {
                Ok(decided) => decided,
                // Refused, or nothing to do, on a fold that may be old: read the streams up
                // to date and decide again before believing it.
                Err(RepositoryError::Domain(_)) if from_cache => {
                    trust_cache = false;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if from_cache && decided_all.iter().any(Vec::is_empty) {
                trust_cache = false;
                continue;
            }
            attempt += 1;
            let mut appends = Vec::new();
            let mut event_ids = Vec::with_capacity(streams.len());
            for ((((id, _), state), command), decided) in
                streams.iter().zip(&states).zip(&commands).zip(&decided_all)
            {
                let tenant = match command.first() {
                    Some(CertificateCommand::PlaceOrder(order)) if !state.exists() => &order.tenant,
                    _ => &state.tenant,
                };
                let new_events = encode_events(decided, &ctx.metadata(tenant));
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
            }
            let results = if appends.is_empty() {
                Vec::new()
            } else {
                match self.log.append(appends).await {
                    Ok(results) => results,
                    Err(AppendError::Conflict {
                        stream_id, actual, ..
                    }) => {
                        // Whatever was cached or assumed for these streams is older than
                        // the log.
                        for (id, _) in streams {
                            self.cache.forget(id);
                        }
                        trust_cache = false;
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
                    Err(e) => {
                        // The append may or may not have been committed.
                        for (id, _) in streams {
                            self.cache.forget(id);
                        }
                        return Err(match e {
                            AppendError::Storage(e) => RepositoryError::Storage(e),
                            e => RepositoryError::Append(e.to_string()),
                        });
                    }
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
                let Loaded {
                    state,
                    ordered_at,
                    first_position,
                } = current;
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
                let result = results.next();
                let positions = result
                    .as_ref()
                    .map(|r| r.positions.clone())
                    .unwrap_or_default();
                let was_new = state.version == 0;
                let state = decided.iter().fold(state, evolve);
                let (ordered_at, first_position) = match &result {
                    // The order time is the log's: the time it recorded the first event.
                    Some(r) if was_new => (Some(r.recorded_at), positions.first().copied()),
                    _ => (ordered_at, first_position),
                };
                if result.as_ref().is_some_and(|r| r.version == state.version) {
                    self.cache.put(
                        id,
                        &Loaded {
                            state: state.clone(),
                            ordered_at,
                            first_position,
                        },
                    );
                } else {
                    self.cache.forget(id);
                }
                tracing::debug!(
                    certificate_id = id,
                    command = %command_names(command),
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
}

/// The commands built for a call (per stream) and the events decided for each stream.
type Decisions = (Vec<Vec<CertificateCommand>>, Vec<Vec<CertificateEvent>>);

fn command_names(commands: &[CertificateCommand]) -> String {
    commands
        .iter()
        .map(CertificateCommand::name)
        .collect::<Vec<_>>()
        .join("+")
}

/// Decides the commands of each stream on its state.
fn decide_each(
    streams: &[(&str, Expect)],
    states: &[CertificateState],
    commands: Vec<Vec<CertificateCommand>>,
) -> Result<Decisions, RepositoryError> {
    if commands.len() != streams.len() {
        return Err(RepositoryError::Append(format!(
            "{} commands built for {} certificates",
            commands.len(),
            streams.len()
        )));
    }
    let mut decided_all = Vec::with_capacity(streams.len());
    for (((id, _), state), command) in streams.iter().zip(states).zip(&commands) {
        match command.first() {
            Some(CertificateCommand::PlaceOrder(_)) if !state.exists() => {}
            _ if !state.exists() => return Err(not_found(id).into()),
            _ => {}
        }
        decided_all.push(decide_all(command, state)?);
    }
    Ok((commands, decided_all))
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
    fold_onto(
        Loaded {
            state: CertificateState::default(),
            ordered_at: events.first().map(|e| e.recorded.recorded_at),
            first_position: events.first().map(|e| e.recorded.position),
        },
        events,
    )
}

/// Folds the stored events that follow `loaded` onto it.
fn fold_onto(loaded: Loaded, events: &[StoredEvent]) -> Loaded {
    let Loaded {
        state,
        ordered_at,
        first_position,
    } = loaded;
    let state = events
        .iter()
        .fold(state, |state, stored| match &stored.event {
            Some(event) => evolve(state, event),
            None => CertificateState {
                version: state.version + 1,
                ..state
            },
        });
    Loaded {
        state,
        ordered_at,
        first_position,
    }
}

/// Whether a certificate is visible to a caller in `tenant` (`None`: every tenant).
pub fn visible(state: &CertificateState, tenant: Option<&str>) -> bool {
    state.exists() && tenant.is_none_or(|t| t == state.tenant)
}

#[cfg(test)]
mod tests {
    use super::*;
    use certledger_domain::certificate::{
        Application, CancelOrder, KeySource, PlaceOrder, StartValidation, Status, SubmitApplication,
    };
    use certledger_proto::common::v1::{
        CertificateSpec, DomainSlotKind, KeyAlgorithm, ValidationMethod,
    };

    fn ctx() -> CallContext {
        CallContext {
            tenant: Some("acme".into()),
            ..CallContext::system("test")
        }
    }

    fn place(id: &str) -> CertificateCommand {
        PlaceOrder {
            certificate_id: id.into(),
            tenant: "acme".into(),
            spec: CertificateSpec {
                validity_days: 0,
                ..certledger_testkit::certificate_spec(
                    DomainSlotKind::Multi,
                    3,
                    ValidationMethod::Approval,
                )
            },
            application: None,
            predecessor_id: None,
            idempotency_key: None,
        }
        .into()
    }

    fn submit() -> CertificateCommand {
        SubmitApplication {
            application: Application {
                domains: vec!["a.example".into()],
                ip_addresses: vec![],
                subject: Default::default(),
                key_source: KeySource::Generate {
                    algorithm: KeyAlgorithm::EcdsaP256,
                },
            },
        }
        .into()
    }

    fn start_validation() -> CertificateCommand {
        StartValidation { challenges: vec![] }.into()
    }

    /// `command` on c1 with any version.
    async fn run(
        repo: &CertificateRepository,
        command: CertificateCommand,
    ) -> Result<Executed, RepositoryError> {
        repo.execute("c1", &ctx(), Expect::Any, command).await
    }

    fn cancel() -> CertificateCommand {
        CancelOrder {
            reason: String::new(),
        }
        .into()
    }

    /// Two repositories on one log: `a` keeps a fold that `b`'s appends make old.
    async fn two_repositories() -> (CertificateRepository, CertificateRepository) {
        let log = certledger_eventlog::connect("sqlite::memory:")
            .await
            .unwrap();
        let a = CertificateRepository::new(log.clone());
        let b = CertificateRepository::new(log);
        a.execute("c1", &ctx(), Expect::Any, place("c1"))
            .await
            .unwrap();
        assert_eq!(a.cache().get("c1").map(|l| l.state.version), Some(1));
        (a, b)
    }

    #[tokio::test]
    async fn a_stale_cached_fold_conflicts_then_is_reloaded_and_decided_again() {
        let (a, b) = two_repositories().await;
        run(&b, submit()).await.unwrap();
        // `a` decides on its cached version 1; the append finds version 2 and conflicts;
        // the entry is dropped, the stream read again and the command decided again.
        let executed = run(&a, cancel()).await.unwrap();
        assert_eq!(executed.attempts, 2);
        assert_eq!(executed.state.version, 3);
        assert_eq!(executed.state.status, Status::Cancelled);
        assert!(
            executed.state.application.is_some(),
            "b's event is folded in"
        );
        let cached = a.cache().get("c1").unwrap();
        assert_eq!(cached.state.version, 3);
        assert_eq!(cached.state.status, Status::Cancelled);
        // What is cached is what the log folds to.
        let fresh = fold_stored(&a.read("c1").await.unwrap());
        assert_eq!(fresh.state.version, cached.state.version);
        assert_eq!(fresh.state.status, cached.state.status);
        assert_eq!(fresh.first_position, cached.first_position);
        assert_eq!(fresh.ordered_at, cached.ordered_at);
    }

    #[tokio::test]
    async fn a_new_stream_is_decided_unread_and_cached_with_the_logs_order_time() {
        let (a, b) = two_repositories().await;
        let placed = b
            .execute("c2", &ctx(), Expect::New, place("c2"))
            .await
            .unwrap();
        assert_eq!(placed.attempts, 1);
        let fresh = fold_stored(&b.read("c2").await.unwrap());
        let cached = b.cache().get("c2").unwrap();
        assert!(fresh.ordered_at.is_some());
        assert_eq!(
            (placed.ordered_at, cached.ordered_at, cached.first_position),
            (fresh.ordered_at, fresh.ordered_at, fresh.first_position)
        );
        // The stream exists after all (made by `a`): the append conflicts and the order
        // is decided again on the log, which refuses it.
        let err = b
            .execute("c1", &ctx(), Expect::New, place("c1"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("c1 already exists"), "{err}");
        assert_eq!(a.read("c1").await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_refusal_on_a_stale_cached_fold_is_checked_against_the_log() {
        let (a, b) = two_repositories().await;
        run(&b, submit()).await.unwrap();
        // Starting validation is refused on the cached fold (no application yet) but
        // allowed on the log's: the refusal is not believed.
        let executed = run(&a, start_validation()).await.unwrap();
        assert!(executed.changed());
        assert_eq!(executed.state.status, Status::Validating);
        assert_eq!(executed.state.version, 3);
        // Nothing to do on the cached fold, but the log moved on: decided again too.
        run(&b, cancel()).await.unwrap();
        let err = run(&a, start_validation()).await.unwrap_err();
        assert!(matches!(err, RepositoryError::Domain(_)), "{err:?}");
        assert_eq!(a.cache().get("c1").unwrap().state.version, 4);
    }

    #[tokio::test]
    async fn load_since_answers_from_the_cache_and_load_reads_what_is_newer() {
        let (a, b) = two_repositories().await;
        run(&b, submit()).await.unwrap();
        // Cached version 1 satisfies "at least 1", not "at least 2".
        let old = a.load_since("c1", None, 1).await.unwrap();
        assert_eq!(old.state.version, 1);
        let new = a.load_since("c1", None, 2).await.unwrap();
        assert_eq!(new.state.version, 2);
        assert_eq!(new.state.status, Status::Applied);
        run(&b, cancel()).await.unwrap();
        let loaded = a.load("c1", Some("acme")).await.unwrap();
        assert_eq!(loaded.state.version, 3);
        assert!(loaded.ordered_at.is_some());
        assert!(loaded.first_position.is_some());
        // Tenants are checked on cached folds too.
        assert!(a.load_since("c1", Some("other"), 1).await.is_err());
        // A pinned expected version above the cached one reads the log first.
        let (a, b) = two_repositories().await;
        run(&b, submit()).await.unwrap();
        let executed = a
            .execute("c1", &ctx(), Expect::Version(2), cancel())
            .await
            .unwrap();
        assert_eq!(executed.attempts, 1);
        assert_eq!(executed.state.version, 3);
    }

    #[tokio::test]
    async fn several_commands_are_one_append_with_the_events_of_each_in_order() {
        let (a, _) = two_repositories().await;
        let executed = a
            .execute_all(
                "c1",
                &ctx(),
                Expect::Any,
                vec![submit(), start_validation()],
            )
            .await
            .unwrap();
        let types: Vec<_> = executed
            .events
            .iter()
            .map(certledger_proto::codec::EventCodec::event_type)
            .collect();
        assert_eq!(types, ["ApplicationSubmitted", "ValidationStarted"]);
        assert_eq!(executed.state.version, 3);
        let stored = a.read("c1").await.unwrap();
        assert_eq!(stored.len(), 3);
        // One transaction: consecutive positions of one append.
        assert_eq!(executed.positions.len(), 2);
        // A refusal of any command appends nothing.
        let err = a
            .execute_all("c1", &ctx(), Expect::Any, vec![cancel(), submit()])
            .await
            .unwrap_err();
        assert!(matches!(err, RepositoryError::Domain(_)), "{err:?}");
        assert_eq!(a.read("c1").await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn the_cache_is_bounded() {
        let log = certledger_eventlog::connect("sqlite::memory:")
            .await
            .unwrap();
        let repo = CertificateRepository::new(log.clone()).with_cache_capacity(2);
        for id in ["c1", "c2", "c3"] {
            repo.execute(id, &ctx(), Expect::Any, place(id))
                .await
                .unwrap();
        }
        assert_eq!(repo.cache().len(), 2);
        assert_eq!(repo.cache().capacity(), 2);
        assert!(
            repo.cache().get("c1").is_none(),
            "the least recently used goes"
        );
        // An evicted certificate is read whole again.
        let loaded = repo.load("c1", None).await.unwrap();
        assert_eq!(loaded.state.version, 1);
        assert_eq!(repo.cache().len(), 2);

        // Without a cache everything still works, from the log.
        let repo = CertificateRepository::new(log).with_cache_capacity(0);
        let executed = run(&repo, cancel()).await.unwrap();
        assert_eq!(executed.state.version, 2);
        assert!(repo.cache().is_empty());
        assert_eq!(repo.load("c1", None).await.unwrap().state.version, 2);
    }
}
