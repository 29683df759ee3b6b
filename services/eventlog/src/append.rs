//! Backend-independent parts of appending: validation, planning (expected versions,
//! duplicate ids, hash chain), batch execution with per-caller outcomes, group commit,
//! and the in-process "new events" notifier.
//!
//! A backend only has to run one transaction for a batch of independent append requests
//! ([`Backend::try_append`]): lock, read the heads of the streams involved and
//! the event ids that already exist, [`plan`], insert the planned rows, commit. The plan
//! refuses individual requests (conflict, duplicate id) without failing the others, so
//! the same code serves a single `append` and a group commit of many callers.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use crate::hash::{HashInput, ZERO_HASH, event_hash};
use crate::model::{
    AppendError, AppendResult, ExpectedVersion, NewEvent, StorageError, StreamAppend,
};

/// Longest accepted stream id, in bytes.
pub const MAX_STREAM_ID_LEN: usize = 512;
/// Longest accepted event type, in bytes.
pub const MAX_EVENT_TYPE_LEN: usize = 256;

pub(crate) type Outcome = Result<Vec<AppendResult>, AppendError>;

/// The last event of a stream, as seen inside the append transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    pub version: u64,
    pub hash: [u8; 32],
}

/// A row to insert: everything but the global position, which the database assigns.
#[derive(Debug, Clone)]
pub(crate) struct PlannedRow {
    pub stream_id: String,
    pub stream_version: u64,
    pub event: NewEvent,
    pub recorded_at: i64,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
}

#[derive(Debug)]
pub(crate) struct PlannedStream {
    stream_id: String,
    version: u64,
    rows: Range<usize>,
}

/// The rows one transaction inserts, and what to answer each request of the batch.
#[derive(Debug)]
pub(crate) struct Plan {
    pub rows: Vec<PlannedRow>,
    outcomes: Vec<Result<Vec<PlannedStream>, AppendError>>,
    recorded_at: DateTime<Utc>,
}

impl Plan {
    /// Answers every request, given the positions the database assigned to `rows`
    /// (same order).
    pub fn finish(self, positions: &[u64]) -> Vec<Outcome> {
        self.outcomes
            .into_iter()
            .map(|outcome| {
                outcome.map(|streams| {
                    streams
                        .into_iter()
                        .map(|s| AppendResult {
                            stream_id: s.stream_id,
                            version: s.version,
                            recorded_at: self.recorded_at,
                            positions: positions.get(s.rows).unwrap_or_default().to_vec(),
                        })
                        .collect()
                })
            })
            .collect()
    }
}

/// Checks one append request on its own (before any database access).
pub(crate) fn validate(appends: &[StreamAppend]) -> Result<(), AppendError> {
    if appends.is_empty() {
        return Err(AppendError::Invalid(
            "an append needs at least one stream".into(),
        ));
    }
    let mut streams = HashSet::new();
    let mut ids = HashSet::new();
    for sa in appends {
        let sid = &sa.stream_id;
        if sid.is_empty() || sid.len() > MAX_STREAM_ID_LEN || sid.contains('\0') {
            return Err(AppendError::Invalid(format!(
                "stream id {sid:?} must be 1..={MAX_STREAM_ID_LEN} bytes without NUL"
            )));
        }
        if !streams.insert(sid.as_str()) {
            return Err(AppendError::Invalid(format!(
                "stream {sid} appears twice in one append; put all its events in one part"
            )));
        }
        if sa.events.is_empty() {
            return Err(AppendError::Invalid(format!(
                "append to stream {sid} has no events"
            )));
        }
        for e in &sa.events {
            let ctx = || format!("stream {sid}, event {}", e.event_id);
            if e.event_id.get_version_num() != 7 {
                return Err(AppendError::Invalid(format!(
                    "{}: event id must be a UUID v7",
                    ctx()
                )));
            }
            if !ids.insert(e.event_id) {
                return Err(AppendError::DuplicateEvent {
                    event_id: e.event_id,
                });
            }
            if e.event_type.is_empty() || e.event_type.len() > MAX_EVENT_TYPE_LEN {
                return Err(AppendError::Invalid(format!(
                    "{}: event type must be 1..={MAX_EVENT_TYPE_LEN} bytes",
                    ctx()
                )));
            }
            let m = &e.metadata;
            let texts = [
                ("event type", Some(e.event_type.as_str())),
                ("tenant", Some(m.tenant.as_str())),
                ("actor", Some(m.actor.as_str())),
                ("trace context", m.trace_context.as_deref()),
            ];
            for (name, text) in texts {
                if text.is_some_and(|t| t.contains('\0')) {
                    return Err(AppendError::Invalid(format!(
                        "{}: {name} contains NUL",
                        ctx()
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Distinct stream ids of a batch, in first-seen order.
pub(crate) fn batch_stream_ids(batch: &[&[StreamAppend]]) -> Vec<String> {
    let mut seen = HashSet::new();
    batch
        .iter()
        .flat_map(|r| r.iter())
        .filter(|sa| seen.insert(sa.stream_id.as_str()))
        .map(|sa| sa.stream_id.clone())
        .collect()
}

/// Every event id of a batch.
pub(crate) fn batch_event_ids(batch: &[&[StreamAppend]]) -> Vec<Uuid> {
    batch
        .iter()
        .flat_map(|r| r.iter())
        .flat_map(|sa| sa.events.iter().map(|e| e.event_id))
        .collect()
}

/// Human-readable subject of an append for error contexts: `append to [a, b]`.
pub(crate) fn describe(batch: &[&[StreamAppend]]) -> String {
    let ids = batch_stream_ids(batch);
    const SHOWN: usize = 5;
    let mut s = ids
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if ids.len() > SHOWN {
        s.push_str(&format!(", … ({} streams)", ids.len()));
    }
    format!("append to [{s}]")
}

fn expected_matches(expected: ExpectedVersion, actual: u64) -> bool {
    match expected {
        ExpectedVersion::Any => true,
        ExpectedVersion::NoStream => actual == 0,
        ExpectedVersion::Exact(v) => actual == v,
    }
}

/// Decides, request by request and in order, what the transaction writes. Each accepted
/// request moves the heads forward, so a later request of the same batch is checked
/// against the earlier ones exactly as if it had come in its own, later transaction.
pub(crate) fn plan(
    batch: &[&[StreamAppend]],
    heads: &HashMap<String, Head>,
    existing_ids: &HashSet<Uuid>,
    recorded_at: DateTime<Utc>,
) -> Plan {
    // The log keeps microseconds; the answer says the time as stored.
    let recorded_at = recorded_at.trunc_subsecs(6);
    let recorded_micros = recorded_at.timestamp_micros();
    let mut heads = heads.clone();
    let mut taken: HashSet<Uuid> = HashSet::new();
    let mut rows = Vec::new();
    let mut outcomes = Vec::with_capacity(batch.len());
    'requests: for request in batch {
        for sa in request.iter() {
            let actual = heads.get(&sa.stream_id).map_or(0, |h| h.version);
            if !expected_matches(sa.expected, actual) {
                outcomes.push(Err(AppendError::Conflict {
                    stream_id: sa.stream_id.clone(),
                    expected: sa.expected,
                    actual,
                }));
                continue 'requests;
            }
            for e in &sa.events {
                if existing_ids.contains(&e.event_id) || taken.contains(&e.event_id) {
                    outcomes.push(Err(AppendError::DuplicateEvent {
                        event_id: e.event_id,
                    }));
                    continue 'requests;
                }
            }
        }
        let mut streams = Vec::with_capacity(request.len());
        for sa in request.iter() {
            let head = heads.get(&sa.stream_id).copied().unwrap_or(Head {
                version: 0,
                hash: ZERO_HASH,
            });
            let (mut version, mut prev) = (head.version, head.hash);
            let start = rows.len();
            for e in &sa.events {
                version += 1;
                let hash = event_hash(&HashInput {
                    prev_hash: &prev,
                    stream_id: &sa.stream_id,
                    stream_version: version,
                    event_id: &e.event_id,
                    event_type: &e.event_type,
                    schema_version: e.schema_version,
                    metadata: &e.metadata,
                    recorded_at_micros: recorded_micros,
                    payload: &e.payload,
                });
                taken.insert(e.event_id);
                rows.push(PlannedRow {
                    stream_id: sa.stream_id.clone(),
                    stream_version: version,
                    event: e.clone(),
                    recorded_at: recorded_micros,
                    prev_hash: prev,
                    hash,
                });
                prev = hash;
            }
            heads.insert(
                sa.stream_id.clone(),
                Head {
                    version,
                    hash: prev,
                },
            );
            streams.push(PlannedStream {
                stream_id: sa.stream_id.clone(),
                version,
                rows: start..rows.len(),
            });
        }
        outcomes.push(Ok(streams));
    }
    Plan {
        rows,
        outcomes,
        recorded_at,
    }
}

/// After a unique violation on (stream_id, stream_version): the first stream whose
/// version moved under us, as a conflict (`before` = heads the plan used, `now` = heads
/// re-read after the failed transaction).
fn conflict_after_race(
    batch: &[&[StreamAppend]],
    before: &HashMap<String, Head>,
    now: &HashMap<String, Head>,
) -> Option<AppendError> {
    batch.iter().flat_map(|r| r.iter()).find_map(|sa| {
        let base = before.get(&sa.stream_id).map_or(0, |h| h.version);
        let actual = now.get(&sa.stream_id).map_or(0, |h| h.version);
        let stale = match sa.expected {
            ExpectedVersion::Any => actual != base,
            other => !expected_matches(other, actual),
        };
        stale.then(|| AppendError::Conflict {
            stream_id: sa.stream_id.clone(),
            expected: sa.expected,
            actual,
        })
    })
}

/// Why a backend's append transaction failed: a unique violation (a writer that bypassed
/// the append lock) is classified after the rollback with [`classify_unique_violation`].
pub(crate) enum TxFailure {
    Append(AppendError),
    Unique {
        /// The heads the plan was made from.
        heads: HashMap<String, Head>,
        source: sqlx::Error,
    },
}

/// What a backend's "heads and existing ids" query returned, one row per stream head
/// (`id`, `Some(version)`, `Some(hash)`) or per event id already in the log (`id`,
/// `None`, `None`).
pub(crate) type HeadOrIdRow = (String, Option<i64>, Option<Vec<u8>>);

/// Sorts the rows of a "heads and existing ids" query into the stream heads and the set
/// of event ids that already exist.
pub(crate) fn heads_and_ids(
    rows: impl IntoIterator<Item = HeadOrIdRow>,
) -> Result<(HashMap<String, Head>, HashSet<Uuid>), sqlx::Error> {
    let mut heads = HashMap::new();
    let mut existing = HashSet::new();
    for (id, version, hash) in rows {
        match (version, hash) {
            (Some(version), Some(hash)) => {
                let hash: [u8; 32] = hash
                    .try_into()
                    .map_err(|_| sqlx::Error::decode("stored hash is not 32 bytes"))?;
                let version = u64::try_from(version)
                    .map_err(|_| sqlx::Error::decode("stored stream_version is negative"))?;
                heads.insert(id, Head { version, hash });
            }
            _ => {
                existing
                    .insert(Uuid::parse_str(&id).map_err(|e| sqlx::Error::decode(e.to_string()))?);
            }
        }
    }
    Ok((heads, existing))
}

/// After a unique violation (a writer that bypassed the append lock got there first):
/// the refusal the caller should get — an event id that now exists, else the first
/// stream whose version moved (`before` = heads the plan used; `now`, `existing` =
/// re-read after the failed transaction).
fn classify_unique_violation(
    batch: &[&[StreamAppend]],
    before: &HashMap<String, Head>,
    now: &HashMap<String, Head>,
    existing: &HashSet<Uuid>,
) -> Option<AppendError> {
    batch_event_ids(batch)
        .into_iter()
        .find(|id| existing.contains(id))
        .map(|event_id| AppendError::DuplicateEvent { event_id })
        .or_else(|| conflict_after_race(batch, before, now))
}

/// What a backend provides: one transaction for a batch of independent, validated
/// append requests, and a fresh look at the log to classify a failed one.
#[async_trait]
pub(crate) trait Backend: Send + Sync + 'static {
    /// `Ok`: one outcome per request; the accepted ones are committed, the refused ones
    /// (conflict, duplicate id) wrote nothing. `Err`: the transaction failed and nothing
    /// of the batch was written. `what` describes the batch for error contexts.
    async fn try_append(
        &self,
        batch: &[&[StreamAppend]],
        what: &str,
    ) -> Result<Vec<Outcome>, TxFailure>;

    /// The current heads of the batch's streams and which of its event ids exist,
    /// outside any append transaction.
    async fn current_heads_and_ids(
        &self,
        batch: &[&[StreamAppend]],
    ) -> Result<(HashMap<String, Head>, HashSet<Uuid>), sqlx::Error>;
}

/// One transaction for a batch; a unique violation (another writer got there first, only
/// possible if it bypassed the append lock; the transaction has been rolled back) is
/// answered as the conflict or duplicate it was.
async fn append_transaction<B: Backend + ?Sized>(
    backend: &B,
    batch: &[&[StreamAppend]],
) -> Result<Vec<Outcome>, AppendError> {
    let what = describe(batch);
    match backend.try_append(batch, &what).await {
        Ok(outcomes) => Ok(outcomes),
        Err(TxFailure::Append(e)) => Err(e),
        Err(TxFailure::Unique { heads, source }) => {
            let (now, existing) = backend
                .current_heads_and_ids(batch)
                .await
                .map_err(|e| StorageError::new(format!("{what}: classify unique violation"), e))?;
            Err(
                classify_unique_violation(batch, &heads, &now, &existing).unwrap_or_else(|| {
                    AppendError::Storage(StorageError::new(
                        format!("{what}: insert events"),
                        source,
                    ))
                }),
            )
        }
    }
}

/// Validates and appends a batch of independent requests, answering each one.
///
/// The valid requests share one transaction. If that transaction fails as a whole (an
/// unexpected storage error, a unique violation from a writer that raced us), every
/// request is retried in its own transaction so that each caller gets its own answer and
/// one bad request cannot fail the others. A retry of something that did commit (commit
/// acknowledgement lost) answers `DuplicateEvent` or `Conflict`, never appends twice: event
/// ids are unique.
pub(crate) async fn append_batch<B: Backend + ?Sized>(
    backend: &B,
    batch: &[Vec<StreamAppend>],
) -> Vec<Outcome> {
    let mut out: Vec<Option<Outcome>> = batch.iter().map(|r| validate(r).err().map(Err)).collect();
    let valid: Vec<usize> = (0..batch.len()).filter(|&i| out[i].is_none()).collect();
    if !valid.is_empty() {
        let slices: Vec<&[StreamAppend]> = valid.iter().map(|&i| batch[i].as_slice()).collect();
        match append_transaction(backend, &slices).await {
            Ok(results) => {
                for (&i, r) in valid.iter().zip(results) {
                    out[i] = Some(r);
                }
            }
            Err(e) if valid.len() == 1 => out[valid[0]] = Some(Err(e)),
            Err(e) => {
                tracing::warn!(error = %e, requests = valid.len(), "group commit failed; retrying each append on its own");
                for &i in &valid {
                    let single = [batch[i].as_slice()];
                    out[i] = Some(match append_transaction(backend, &single).await {
                        Ok(mut r) => r.pop().unwrap_or_else(|| Err(no_outcome())),
                        Err(e) => Err(e),
                    });
                }
            }
        }
    }
    out.into_iter()
        .map(|o| o.unwrap_or_else(|| Err(no_outcome())))
        .collect()
}

fn no_outcome() -> AppendError {
    AppendError::Invalid("internal error: the append produced no outcome".into())
}

fn writer_stopped() -> AppendError {
    AppendError::Storage(StorageError::new(
        "append: the group-commit writer task stopped",
        sqlx::Error::WorkerCrashed,
    ))
}

struct Pending {
    appends: Vec<StreamAppend>,
    reply: oneshot::Sender<Outcome>,
}

/// Group commit: one writer task per log handle takes every append request that is
/// pending when it is free and commits them in one transaction; callers wait for their
/// own answer. Batches form naturally: while one transaction commits, the next one
/// fills up. A request whose caller went away before its batch started is skipped.
pub(crate) struct GroupCommitter {
    tx: mpsc::UnboundedSender<Pending>,
}

impl GroupCommitter {
    pub fn spawn<B: Backend>(backend: Arc<B>, max_batch_events: usize) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run_writer(backend, rx, max_batch_events));
        Self { tx }
    }

    pub async fn append(&self, appends: Vec<StreamAppend>) -> Outcome {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending { appends, reply })
            .map_err(|_| writer_stopped())?;
        answer.await.map_err(|_| writer_stopped())?
    }
}

fn event_count(appends: &[StreamAppend]) -> usize {
    appends.iter().map(|sa| sa.events.len()).sum()
}

async fn run_writer<B: Backend>(
    backend: Arc<B>,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    max_batch_events: usize,
) {
    // The channel closes when the log handle is dropped; pending requests finish first.
    while let Some(first) = rx.recv().await {
        // Let callers that were just answered (and are runnable) queue their next append
        // before the batch is cut; otherwise batches alternate between tiny and full.
        tokio::task::yield_now().await;
        let mut events = event_count(&first.appends);
        let mut pending = vec![first];
        while events < max_batch_events {
            match rx.try_recv() {
                Ok(p) => {
                    events += event_count(&p.appends);
                    pending.push(p);
                }
                Err(_) => break,
            }
        }
        pending.retain(|p| !p.reply.is_closed());
        if pending.is_empty() {
            continue;
        }
        let batch: Vec<Vec<StreamAppend>> = pending
            .iter_mut()
            .map(|p| std::mem::take(&mut p.appends))
            .collect();
        let outcomes = append_batch(&*backend, &batch).await;
        for (p, outcome) in pending.into_iter().zip(outcomes) {
            // The caller may have given up waiting; the append stands either way.
            let _ = p.reply.send(outcome);
        }
    }
}

/// Highest committed position this process knows of, and a way to wait for it to move.
pub(crate) struct Notifier {
    tx: watch::Sender<u64>,
}

impl Default for Notifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Notifier {
    pub fn new() -> Self {
        Self {
            tx: watch::Sender::new(0),
        }
    }

    /// A commit up to `position` is visible.
    pub fn advance(&self, position: u64) {
        self.tx.send_if_modified(|cur| {
            if position > *cur {
                *cur = position;
                true
            } else {
                false
            }
        });
    }

    /// Wakes every waiter without news (e.g. notifications may have been lost).
    pub fn wake(&self) {
        self.tx.send_modify(|_| {});
    }

    /// Returns when a position after `after` is known, on any change, or after `timeout`.
    pub async fn wait(&self, after: u64, timeout: Duration) {
        let mut rx = self.tx.subscribe();
        if *rx.borrow_and_update() > after {
            return;
        }
        let _ = tokio::time::timeout(timeout, rx.changed()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Metadata;

    fn ev() -> NewEvent {
        NewEvent::new("T", 1, vec![1, 2, 3], Metadata::default())
    }

    fn sa(stream: &str, expected: ExpectedVersion, n: usize) -> StreamAppend {
        StreamAppend {
            stream_id: stream.into(),
            expected,
            events: (0..n).map(|_| ev()).collect(),
        }
    }

    #[test]
    fn validation_rejects_bad_requests() {
        assert!(matches!(validate(&[]), Err(AppendError::Invalid(_))));
        assert!(matches!(
            validate(&[sa("", ExpectedVersion::Any, 1)]),
            Err(AppendError::Invalid(_))
        ));
        assert!(matches!(
            validate(&[sa("a", ExpectedVersion::Any, 0)]),
            Err(AppendError::Invalid(_))
        ));
        assert!(matches!(
            validate(&[
                sa("a", ExpectedVersion::Any, 1),
                sa("a", ExpectedVersion::Any, 1)
            ]),
            Err(AppendError::Invalid(_))
        ));
        let mut v4 = sa("a", ExpectedVersion::Any, 1);
        v4.events[0].event_id = Uuid::from_u128(0x0000_0000_0000_4000_8000_0000_0000_0001);
        assert!(matches!(validate(&[v4]), Err(AppendError::Invalid(_))));
        let mut dup = sa("a", ExpectedVersion::Any, 2);
        dup.events[1].event_id = dup.events[0].event_id;
        assert!(matches!(
            validate(&[dup]),
            Err(AppendError::DuplicateEvent { .. })
        ));
        let mut nul = sa("a", ExpectedVersion::Any, 1);
        nul.events[0].metadata.actor = "a\0b".into();
        assert!(matches!(validate(&[nul]), Err(AppendError::Invalid(_))));
        assert!(
            validate(&[
                sa("a", ExpectedVersion::Any, 3),
                sa("b", ExpectedVersion::NoStream, 1)
            ])
            .is_ok()
        );
    }

    #[test]
    fn plan_checks_requests_in_order_and_chains_hashes() {
        let r1 = [sa("a", ExpectedVersion::NoStream, 2)];
        let r2 = [sa("a", ExpectedVersion::Exact(0), 1)]; // stale after r1
        let r3 = [
            sa("a", ExpectedVersion::Exact(2), 1),
            sa("b", ExpectedVersion::Any, 1),
        ];
        let batch: Vec<&[StreamAppend]> = vec![&r1, &r2, &r3];
        let p = plan(
            &batch,
            &HashMap::new(),
            &HashSet::new(),
            DateTime::UNIX_EPOCH,
        );
        assert_eq!(p.rows.len(), 4);
        assert_eq!(p.rows[0].prev_hash, ZERO_HASH);
        assert_eq!(p.rows[1].prev_hash, p.rows[0].hash);
        assert_eq!(p.rows[2].prev_hash, p.rows[1].hash);
        assert_eq!(p.rows[2].stream_version, 3);
        assert_eq!(p.rows[3].prev_hash, ZERO_HASH);
        let out = p.finish(&[10, 11, 12, 13]);
        assert_eq!(
            out[0].as_ref().map(|r| r[0].positions.clone()).ok(),
            Some(vec![10, 11])
        );
        assert!(matches!(
            out[1],
            Err(AppendError::Conflict { actual: 2, .. })
        ));
        let r3 = out[2].as_ref().ok().cloned().unwrap_or_default();
        assert_eq!((r3[0].version, r3[1].version), (3, 1));
        assert_eq!(
            (r3[0].positions.clone(), r3[1].positions.clone()),
            (vec![12], vec![13])
        );
    }

    /// A backend without a database: keeps stream heads in memory, numbers positions, and
    /// holds its first transaction until the test opens the gate.
    #[derive(Default)]
    struct FakeBackend {
        entered: tokio::sync::Notify,
        gate: tokio::sync::Notify,
        hold_first: std::sync::atomic::AtomicBool,
        fail_batches: bool,
        batch_sizes: std::sync::Mutex<Vec<usize>>,
        heads: std::sync::Mutex<HashMap<String, Head>>,
        next_position: std::sync::atomic::AtomicU64,
    }

    #[async_trait]
    impl Backend for FakeBackend {
        async fn current_heads_and_ids(
            &self,
            _batch: &[&[StreamAppend]],
        ) -> Result<(HashMap<String, Head>, HashSet<Uuid>), sqlx::Error> {
            Ok((
                self.heads.lock().map(|h| h.clone()).unwrap_or_default(),
                HashSet::new(),
            ))
        }

        async fn try_append(
            &self,
            batch: &[&[StreamAppend]],
            _what: &str,
        ) -> Result<Vec<Outcome>, TxFailure> {
            self.batch_sizes
                .lock()
                .map(|mut b| b.push(batch.len()))
                .ok();
            if self
                .hold_first
                .swap(false, std::sync::atomic::Ordering::SeqCst)
            {
                self.entered.notify_one();
                self.gate.notified().await;
            }
            if self.fail_batches && batch.len() > 1 {
                return Err(TxFailure::Append(AppendError::Invalid(
                    "simulated failure of a shared transaction".into(),
                )));
            }
            let mut heads = self.heads.lock().map(|h| h.clone()).unwrap_or_default();
            let p = plan(batch, &heads, &HashSet::new(), DateTime::UNIX_EPOCH);
            for r in &p.rows {
                heads.insert(
                    r.stream_id.clone(),
                    Head {
                        version: r.stream_version,
                        hash: r.hash,
                    },
                );
            }
            self.heads.lock().map(|mut h| *h = heads).ok();
            let n = p.rows.len() as u64;
            let first = self
                .next_position
                .fetch_add(n, std::sync::atomic::Ordering::SeqCst)
                + 1;
            let positions: Vec<u64> = (first..first + n).collect();
            Ok(p.finish(&positions))
        }
    }

    async fn pending_requests_share_one_transaction(fail_batches: bool) -> Vec<usize> {
        let backend = Arc::new(FakeBackend {
            fail_batches,
            ..Default::default()
        });
        backend
            .hold_first
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let committer = Arc::new(GroupCommitter::spawn(backend.clone(), 1_000));
        let first = {
            let c = committer.clone();
            tokio::spawn(async move {
                c.append(vec![sa("first", ExpectedVersion::NoStream, 1)])
                    .await
            })
        };
        backend.entered.notified().await;
        // Ten callers while the first transaction is in flight: eight race for one stream
        // (one wins), two write their own streams.
        let mut calls = Vec::new();
        for i in 0..10 {
            let stream = if i < 8 {
                "shared".to_owned()
            } else {
                format!("own-{i}")
            };
            calls.push(Box::pin(committer.append(vec![sa(
                &stream,
                ExpectedVersion::NoStream,
                1,
            )])));
        }
        for c in calls.iter_mut() {
            // The first poll queues the request (the writer is busy, so it stays pending).
            assert!(futures::poll!(c.as_mut()).is_pending());
        }
        backend.gate.notify_one();
        assert!(first.await.map(|r| r.is_ok()).unwrap_or(false));
        let results = futures::future::join_all(calls).await;
        let ok = results.iter().filter(|r| r.is_ok()).count();
        let conflicts = results
            .iter()
            .filter(|r| matches!(r, Err(AppendError::Conflict { .. })))
            .count();
        assert_eq!((ok, conflicts), (3, 7), "{results:?}");
        backend
            .batch_sizes
            .lock()
            .map(|b| b.clone())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn group_commit_batches_pending_callers_and_answers_each() {
        assert_eq!(
            pending_requests_share_one_transaction(false).await,
            vec![1, 10]
        );
    }

    #[tokio::test]
    async fn failed_group_commit_retries_each_caller_alone() {
        assert_eq!(
            pending_requests_share_one_transaction(true).await,
            [vec![1, 10], vec![1; 10]].concat()
        );
    }

    #[test]
    fn unique_violation_is_classified_as_duplicate_or_conflict() {
        let r1 = [sa("a", ExpectedVersion::Exact(1), 1)];
        let r2 = [sa("b", ExpectedVersion::Any, 1)];
        let batch: Vec<&[StreamAppend]> = vec![&r1, &r2];
        let head = |version| Head {
            version,
            hash: ZERO_HASH,
        };
        let before: HashMap<String, Head> = [("a".to_owned(), head(1))].into();
        let moved: HashMap<String, Head> =
            [("a".to_owned(), head(1)), ("b".to_owned(), head(1))].into();
        assert!(matches!(
            classify_unique_violation(&batch, &before, &moved, &HashSet::new()),
            Some(AppendError::Conflict { ref stream_id, actual: 1, .. }) if stream_id == "b"
        ));
        let taken: HashSet<Uuid> = [r2[0].events[0].event_id].into();
        assert!(matches!(
            classify_unique_violation(&batch, &before, &moved, &taken),
            Some(AppendError::DuplicateEvent { event_id }) if event_id == r2[0].events[0].event_id
        ));
        assert!(classify_unique_violation(&batch, &before, &before, &HashSet::new()).is_none());
    }

    #[test]
    fn heads_and_ids_sorts_rows() {
        let id = Uuid::now_v7();
        let (heads, ids) = heads_and_ids([
            ("s".to_owned(), Some(3), Some(vec![7; 32])),
            (id.to_string(), None, None),
        ])
        .unwrap_or_default();
        assert_eq!(
            heads.get("s").map(|h| (h.version, h.hash)),
            Some((3, [7; 32]))
        );
        assert!(ids.contains(&id) && ids.len() == 1);
        assert!(heads_and_ids([("s".to_owned(), Some(3), Some(vec![7; 31]))]).is_err());
    }

    #[test]
    fn plan_refuses_duplicates_across_the_batch_and_the_log() {
        let r1 = [sa("a", ExpectedVersion::Any, 1)];
        let mut r2 = [sa("b", ExpectedVersion::Any, 1)];
        r2[0].events[0].event_id = r1[0].events[0].event_id;
        let r3 = [sa("c", ExpectedVersion::Any, 1)];
        let existing: HashSet<Uuid> = [r3[0].events[0].event_id].into();
        let batch: Vec<&[StreamAppend]> = vec![&r1, &r2, &r3];
        let p = plan(&batch, &HashMap::new(), &existing, DateTime::UNIX_EPOCH);
        assert_eq!(p.rows.len(), 1);
        let out = p.finish(&[1]);
        assert!(out[0].is_ok());
        assert!(matches!(out[1], Err(AppendError::DuplicateEvent { .. })));
        assert!(matches!(out[2], Err(AppendError::DuplicateEvent { .. })));
    }
}
