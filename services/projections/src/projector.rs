//! The projector: feeds the read models from the log, live (as an event-stream
//! [`Handler`]) or in batches (catch-up at start, rebuild).
//!
//! # How an event becomes rows
//!
//! 1. The event's stream is folded up to the event's version into a view
//!    ([`crate::view`]): the domain's `evolve` plus the times only the log knows. Views come
//!    from an in-memory cache (steady state: one `evolve` per event); on a miss (restart,
//!    another replica handled the previous event, a gap) the missing events are read
//!    from the log with `read_stream` and folded — one query and a fold of at most the
//!    stream's length (certificate streams are tens of events). No log I/O happens inside
//!    a read-model transaction.
//! 2. In one transaction per delivered batch (live) or per page of the log (catch-up,
//!    rebuild): the checkpoint rows are locked; the stream versions the read models
//!    already reflect are read (`projection_stream_versions`, one row per stream for
//!    every model);
//!    where a view is newer, the model's rows for that stream are rewritten from the view
//!    and the version recorded — gathered per table and written with multi-row statements
//!    ([`crate::rows::Writes`]); the models' checkpoints move to the batch's highest
//!    position. Commit, then acknowledge.
//!
//! Catch-up and rebuild work in three stages side by side: the next page of the log is
//! read while a page is folded, and a page is folded while the one before it is written
//! (pages are written one after the other, in position order).
//!
//! # Exactly once
//!
//! Delivery is at least once. Rows are a function of the whole stream prefix, written
//! only when the view's version is above the recorded one, in the same transaction as
//! that version: a repeated event changes nothing, a missed one (e.g. dead-lettered
//! during a database outage) is absorbed by the next event of its stream. Catch-up reads
//! the log in position order and also skips events at or below a model's checkpoint; live
//! delivery relies on the stream versions alone, because a JetStream redelivery may
//! arrive after later events (a position rule would drop it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use certledger_domain::certificate::RenewalWindow;
use certledger_eventlog::{EventLog, RecordedEvent};
use certledger_eventstream::consumer::{
    ConsumerSettings, EventSource, Filter, Handler, HandlerError,
};
use certledger_runtime::stream_cache::BoundedMap;
use serde::Serialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::error::ProjectionError;
use crate::model::{ReadModel, StreamKind, stream_kind};
use crate::rows::{Writes, clear_model, clear_stream_versions, set_checkpoint, stream_versions};
use crate::store::{Checkpoint, ProjectionStore, lock_checkpoints, tx_commit};
use crate::view::{Decoded, RowPolicy, StreamView, decode};

/// How the projector works.
#[derive(Debug, Clone)]
pub struct ProjectorConfig {
    /// When the renewal window opens (expiry calendar). Default 30 days before expiry.
    pub renewal_window: RenewalWindow,
    /// Streams whose views are kept in memory. Default 10,000.
    pub cache_capacity: usize,
    /// Events per transaction in catch-up and rebuild (one page of the log). Default
    /// 8,000: a transaction's begin, checkpoint lock and commit cost about as much as
    /// writing 1,000 events' rows (BENCHMARKS.md, scenario 3).
    pub batch_size: u32,
    /// A progress line is logged every this many events in catch-up and rebuild.
    /// Default 10,000.
    pub progress_every: u64,
    /// Durable consumer (JetStream) or checkpoint (SQL tail) name. Default `projections`.
    pub consumer_name: String,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        Self {
            renewal_window: RenewalWindow::default(),
            cache_capacity: 10_000,
            batch_size: 8_000,
            progress_every: 10_000,
            consumer_name: "projections".to_owned(),
        }
    }
}

/// Counters for logs and `/metrics`.
#[derive(Debug, Default)]
pub struct ProjectorStats {
    /// Events handled (live and catch-up).
    pub events: AtomicU64,
    /// Live deliveries that were already reflected (duplicates).
    pub duplicates: AtomicU64,
    /// Events skipped because this build cannot decode them.
    pub undecodable: AtomicU64,
    /// Stream rows rewritten (one per read model and stream).
    pub stream_writes: AtomicU64,
    /// Failed attempts (database or log errors; retried).
    pub errors: AtomicU64,
    /// Highest position handled.
    pub last_position: AtomicU64,
}

/// A change to the inventory, for dashboards that watch (the query API's
/// `WatchChanges`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InventoryChange {
    /// Log position of the event.
    pub position: u64,
    /// The certificate.
    pub certificate_id: String,
    /// Its tenant.
    pub tenant: String,
    /// The event's type.
    pub event_type: String,
    /// The certificate's status after it.
    pub status: String,
}

/// Where a catch-up or rebuild stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Progress {
    /// The read models being fed.
    pub models: Vec<ReadModel>,
    /// Events read from the log so far.
    pub events_done: u64,
    /// Position reached.
    pub position: u64,
    /// The log's head when last looked at.
    pub head: u64,
    /// Events per second so far.
    pub rate_per_sec: f64,
    /// Estimated time left (unknown before the first batch).
    pub eta: Option<Duration>,
    /// Time since the start.
    pub elapsed: Duration,
    /// The last report of the run.
    pub finished: bool,
}

/// Stream views by stream id, the least recently used forgotten first.
pub(crate) type ViewCache = BoundedMap<Arc<StreamView>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// One delivered event; rebuilding models' checkpoints are left to the rebuild.
    Live,
    /// Position-ordered batches from the log.
    CatchUp,
}

/// One stream touched by a batch, with its view at the newest of the batch's events.
struct Touched {
    stream_id: String,
    view: Arc<StreamView>,
    last_position: u64,
    last_event_type: String,
}

/// The projector. Share it as `Arc<Projector>`.
pub struct Projector {
    store: ProjectionStore,
    log: Arc<dyn EventLog>,
    config: ProjectorConfig,
    policy: RowPolicy,
    cache: Mutex<ViewCache>,
    stats: Arc<ProjectorStats>,
    changes: broadcast::Sender<InventoryChange>,
}

impl std::fmt::Debug for Projector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projector")
            .field("store", &self.store)
            .field("config", &self.config)
            .finish()
    }
}

fn lock_cache(cache: &Mutex<ViewCache>) -> std::sync::MutexGuard<'_, ViewCache> {
    // A panic while holding the lock cannot leave a view half-written (views are
    // replaced whole), so a poisoned cache is still usable.
    cache
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Projector {
    /// A projector writing to `store`, reading streams from `log`.
    pub fn new(
        store: ProjectionStore,
        log: Arc<dyn EventLog>,
        config: ProjectorConfig,
    ) -> Arc<Projector> {
        let (changes, _) = broadcast::channel(1024);
        Arc::new(Projector {
            policy: RowPolicy {
                renewal_window: config.renewal_window,
            },
            cache: Mutex::new(ViewCache::new(config.cache_capacity.max(1))),
            store,
            log,
            config,
            stats: Arc::default(),
            changes,
        })
    }

    /// The read models' store.
    pub fn store(&self) -> &ProjectionStore {
        &self.store
    }

    /// The event log.
    pub fn log(&self) -> &Arc<dyn EventLog> {
        &self.log
    }

    /// The configuration.
    pub fn config(&self) -> &ProjectorConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> Arc<ProjectorStats> {
        self.stats.clone()
    }

    /// Inventory changes as they are committed (live events only; a slow receiver
    /// misses the oldest and gets `Lagged`).
    pub fn subscribe(&self) -> broadcast::Receiver<InventoryChange> {
        self.changes.subscribe()
    }

    /// The consumer settings the projector runs under (every event of the log).
    pub fn consumer_settings(&self) -> ConsumerSettings {
        // The events that arrived together are written in one transaction.
        ConsumerSettings::new(self.config.consumer_name.clone(), Filter::All).batched()
    }

    /// Catches every read model up with the log (resuming an interrupted rebuild), then
    /// feeds them from `source` until `shutdown`.
    pub async fn run(
        self: Arc<Self>,
        source: EventSource,
        shutdown: CancellationToken,
    ) -> Result<(), ProjectionError> {
        let mut quiet = |_: &Progress| {};
        tokio::select! {
            caught_up = self.catch_up(&ReadModel::ALL, &mut quiet) => { caught_up?; }
            () = shutdown.cancelled() => return Ok(()),
        }
        let settings = self.consumer_settings();
        source
            .run(settings, self.clone() as Arc<dyn Handler>, shutdown)
            .await?;
        Ok(())
    }

    /// Feeds `models` from their lowest checkpoint to the log's head in batches, then
    /// clears their rebuilding flags. Returns the position reached. `progress` is
    /// called after every batch and once at the end.
    pub async fn catch_up(
        &self,
        models: &[ReadModel],
        progress: &mut (dyn FnMut(&Progress) + Send),
    ) -> Result<u64, ProjectionError> {
        self.catch_up_with(models, &self.cache, progress).await
    }

    /// Empties `models` and replays the whole log into them (see [`Projector::catch_up`]
    /// for `progress`). Safe while the live projector runs: both write a stream's rows
    /// only from a newer view, and a crashed rebuild resumes at the next catch-up.
    pub async fn rebuild(
        &self,
        models: &[ReadModel],
        progress: &mut (dyn FnMut(&Progress) + Send),
    ) -> Result<u64, ProjectionError> {
        self.reset(models).await?;
        // A cache of its own: the shared one holds views ahead of the replay.
        let cache = Mutex::new(ViewCache::new(self.config.cache_capacity.max(1)));
        self.catch_up_with(models, &cache, progress).await
    }

    /// Empties `models` and marks them rebuilding at position 0, in one transaction: the
    /// first step of [`Projector::rebuild`]. The next catch-up (at the latest the next
    /// [`Projector::run`]) replays the log into them.
    pub async fn reset(&self, models: &[ReadModel]) -> Result<(), ProjectionError> {
        let names: Vec<&str> = models.iter().map(|m| m.name()).collect();
        let what = format!("reset {}", names.join(", "));
        tracing::info!(models = ?names, "emptying read models for a rebuild from position 0");
        let mut tx = self.store.begin_write(&what).await?;
        lock_checkpoints(&mut tx, models, &what).await?;
        for model in models {
            clear_model(&mut tx, *model, &what).await?;
            set_checkpoint(&mut tx, *model, 0, true, &what).await?;
        }
        clear_stream_versions(&mut tx, models, &what).await?;
        tx_commit(tx, &what).await
    }

    async fn catch_up_with(
        &self,
        models: &[ReadModel],
        cache: &Mutex<ViewCache>,
        progress: &mut (dyn FnMut(&Progress) + Send),
    ) -> Result<u64, ProjectionError> {
        let checkpoints = self.store.checkpoints().await?;
        let mut position = checkpoints
            .iter()
            .filter(|c| models.contains(&c.model))
            .map(|c| c.position)
            .min()
            .unwrap_or(0);
        let start_position = position;
        let started = Instant::now();
        let mut head = self.log.head_position().await?;
        let mut done = 0u64;
        let mut next_line = self.config.progress_every.max(1);
        let report = |done: u64, position: u64, head: u64, finished: bool| {
            let elapsed = started.elapsed();
            let secs = elapsed.as_secs_f64();
            let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
            let left = head.saturating_sub(position);
            let eta = (rate > 0.0).then(|| Duration::from_secs_f64(left as f64 / rate));
            Progress {
                models: models.to_vec(),
                events_done: done,
                position,
                head,
                rate_per_sec: rate,
                eta,
                elapsed,
                finished,
            }
        };
        // Three stages run side by side: the log is read a page ahead, a page is folded
        // while the one before it is written (in a task of its own), and batches are
        // written one after the other, in position order.
        let read = |after: u64| {
            let log = self.log.clone();
            let limit = self.config.batch_size;
            Task::spawn(async move { log.read_all(after, limit).await })
        };
        let mut page = Some(read(position));
        // The batch being written, with its number of events and last position.
        let mut writing: Option<Task<Result<(u64, u64), ProjectionError>>> = None;
        loop {
            let mut folded = None;
            if let Some(reading) = page.take() {
                let events = reading.join().await??;
                if let Some(last) = events.last().map(|e| e.position) {
                    page = Some(read(last));
                    let batch = self.fold(&events, cache).await?;
                    folded = Some((batch, events.len() as u64, last));
                }
            }
            if let Some(written) = writing.take() {
                let (events, last) = written.join().await??;
                done += events;
                position = last;
                if position > head {
                    head = self.log.head_position().await?;
                }
                let p = report(done, position, head, false);
                if done >= next_line {
                    next_line = done + self.config.progress_every.max(1);
                    tracing::info!(
                        models = ?p.models.iter().map(|m| m.name()).collect::<Vec<_>>(),
                        events_done = p.events_done,
                        position = p.position,
                        head = p.head,
                        rate_per_sec = p.rate_per_sec.round(),
                        eta_secs = p.eta.map(|d| d.as_secs()),
                        "projecting the log"
                    );
                }
                progress(&p);
            }
            let Some((batch, events, last)) = folded else {
                break;
            };
            let (sink, models) = (self.sink(), models.to_vec());
            let write = async move {
                let written = sink.write(&batch, &models, Mode::CatchUp).await;
                written.map(|()| (events, last))
            };
            writing = Some(Task::spawn(write));
        }
        let what = "finish catch-up";
        let mut tx = self.store.begin_write(what).await?;
        let locked = lock_checkpoints(&mut tx, models, what).await?;
        for cp in locked.iter().filter(|c| c.rebuilding) {
            set_checkpoint(&mut tx, cp.model, cp.position.max(position), false, what).await?;
            tracing::info!(model = cp.model.name(), position, "rebuild finished");
        }
        tx_commit(tx, what).await?;
        let p = report(done, position, head.max(position), true);
        if done > 0 || position > start_position {
            tracing::info!(
                events_done = p.events_done,
                position = p.position,
                elapsed_ms = p.elapsed.as_millis() as u64,
                "read models caught up with the log"
            );
        }
        progress(&p);
        Ok(position)
    }

    /// Handles one delivered event (what [`Handler::handle`] does).
    pub async fn apply_live(&self, event: &RecordedEvent) -> Result<(), ProjectionError> {
        if self.already_reflected(event).await? {
            self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
            self.stats.events.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        self.apply_batch(
            std::slice::from_ref(event),
            &ReadModel::ALL,
            Mode::Live,
            &self.cache,
        )
        .await
    }

    /// Handles delivered events together, in one transaction (what
    /// [`Handler::handle_batch`] does). Events already reflected are folded but not
    /// written again.
    pub async fn apply_live_batch(&self, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
        self.apply_batch(events, &ReadModel::ALL, Mode::Live, &self.cache)
            .await
    }

    /// Whether every read model that reads the event's stream already reflects its
    /// version (a duplicate delivery): then nothing is folded or written.
    async fn already_reflected(&self, event: &RecordedEvent) -> Result<bool, ProjectionError> {
        let (kind, _) = stream_kind(&event.stream_id);
        let models: Vec<ReadModel> = ReadModel::ALL
            .into_iter()
            .filter(|m| m.reads(kind))
            .collect();
        if models.is_empty() {
            return Ok(false);
        }
        let what = format!("check position {}", event.position);
        let mut conn = self.store.conn(&what).await?;
        let reflected = stream_versions(conn.connection(), &[&event.stream_id], &what).await?;
        let reflected = reflected.get(&event.stream_id).copied().unwrap_or_default();
        Ok(models
            .iter()
            .all(|m| reflected[m.index()] >= event.stream_version))
    }

    /// The cached view of a stream, taken out of the cache for folding, when it is not
    /// ahead of version `n`.
    fn take_cached(cache: &Mutex<ViewCache>, stream_id: &str, n: u64) -> Option<Arc<StreamView>> {
        let mut cache = lock_cache(cache);
        let view = cache.remove(stream_id)?;
        if view.version() <= n {
            Some(view)
        } else {
            cache.insert(stream_id, view);
            None
        }
    }

    /// Folds `event` into `view`, a view of the event's stream below the event's version.
    /// A gap (a miss, another replica handled the previous events) is folded from the
    /// log first. On an error the view is left at a version it did reach.
    async fn advance(
        &self,
        view: &mut StreamView,
        event: &RecordedEvent,
        decoded: &Decoded,
    ) -> Result<(), ProjectionError> {
        let n = event.stream_version;
        if view.version() + 1 < n {
            let missing = self
                .log
                .read_stream(&event.stream_id, view.version())
                .await?;
            for e in missing.iter().take_while(|e| e.stream_version < n) {
                if e.stream_version != view.version() + 1 {
                    return Err(ProjectionError::Inconsistent(format!(
                        "stream {} jumps from version {} to {} in the log",
                        event.stream_id,
                        view.version(),
                        e.stream_version
                    )));
                }
                let (d, ok) = decode(e);
                if !ok {
                    self.stats.undecodable.fetch_add(1, Ordering::Relaxed);
                }
                view.apply(e, &d);
            }
            if view.version() + 1 != n {
                return Err(ProjectionError::Inconsistent(format!(
                    "stream {} has {} events in the log before version {n}, but event {} at position {} is its version {n}",
                    event.stream_id,
                    view.version(),
                    event.event_id,
                    event.position
                )));
            }
        }
        view.apply(event, decoded);
        Ok(())
    }

    /// Folds `events` into the views of their streams, one [`Touched`] per stream at its
    /// newest version in the batch, outside any transaction; the views are cached
    /// (also after an error: they are the streams' folds whatever the read models say).
    /// Views come out of the cache and are changed in place (steady state: one `evolve`
    /// per event, no copy). Streams no read model reads are left out.
    async fn fold(
        &self,
        events: &[RecordedEvent],
        cache: &Mutex<ViewCache>,
    ) -> Result<Batch, ProjectionError> {
        let (first, last) = match (events.first(), events.last()) {
            (Some(f), Some(l)) => (f.position, l.position),
            _ => (0, 0),
        };
        let mut touched: Vec<Touched> = Vec::new();
        let folded = self.fold_into(events, cache, &mut touched).await;
        let mut cached = lock_cache(cache);
        for t in &touched {
            cached.insert(&t.stream_id, t.view.clone());
        }
        drop(cached);
        folded?;
        Ok(Batch {
            touched,
            events: events.len() as u64,
            // Live batches may come slightly out of position order (JetStream).
            highest: events.iter().map(|e| e.position).max().unwrap_or(last),
            what: if events.len() == 1 {
                format!("project position {last}")
            } else {
                format!("project positions {first}..={last}")
            },
        })
    }

    async fn fold_into(
        &self,
        events: &[RecordedEvent],
        cache: &Mutex<ViewCache>,
        touched: &mut Vec<Touched>,
    ) -> Result<(), ProjectionError> {
        let mut index: HashMap<&str, usize> = HashMap::new();
        for event in events {
            if stream_kind(&event.stream_id).0 == StreamKind::Other {
                continue;
            }
            let (decoded, ok) = decode(event);
            if !ok {
                self.stats.undecodable.fetch_add(1, Ordering::Relaxed);
            }
            let n = event.stream_version;
            let i = match index.get(event.stream_id.as_str()) {
                // A redelivered older event of the stream never replaces a newer view.
                Some(&i) if touched[i].view.version() >= n => continue,
                Some(&i) => i,
                None => {
                    let view = Self::take_cached(cache, &event.stream_id, n)
                        .unwrap_or_else(|| Arc::new(StreamView::empty(&event.stream_id)));
                    let already = view.version() == n;
                    index.insert(&event.stream_id, touched.len());
                    touched.push(Touched {
                        stream_id: event.stream_id.clone(),
                        view,
                        last_position: event.position,
                        last_event_type: event.event_type.clone(),
                    });
                    if already {
                        // Folded before (a repeated delivery).
                        continue;
                    }
                    touched.len() - 1
                }
            };
            let t = &mut touched[i];
            // A copy only when the view is still being written by the previous batch.
            self.advance(Arc::make_mut(&mut t.view), event, &decoded)
                .await?;
            t.last_position = event.position;
            t.last_event_type.clone_from(&event.event_type);
        }
        Ok(())
    }

    async fn apply_batch(
        &self,
        events: &[RecordedEvent],
        models: &[ReadModel],
        mode: Mode,
        cache: &Mutex<ViewCache>,
    ) -> Result<(), ProjectionError> {
        if events.is_empty() {
            return Ok(());
        }
        let batch = self.fold(events, cache).await?;
        self.sink().write(&batch, models, mode).await
    }

    fn sink(&self) -> Sink {
        Sink {
            store: self.store.clone(),
            policy: self.policy,
            stats: self.stats.clone(),
            changes: self.changes.clone(),
        }
    }
}

/// A task of the catch-up, aborted when dropped (a cancelled catch-up leaves nothing
/// running; an unfinished write is rolled back).
struct Task<T>(tokio::task::JoinHandle<T>);

impl<T: Send + 'static> Task<T> {
    fn spawn(future: impl std::future::Future<Output = T> + Send + 'static) -> Self {
        Task(tokio::spawn(future))
    }

    async fn join(mut self) -> Result<T, ProjectionError> {
        match (&mut self.0).await {
            Ok(value) => Ok(value),
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(error) => Err(ProjectionError::Inconsistent(format!(
                "a catch-up task ended early: {error}"
            ))),
        }
    }
}

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A folded batch, ready to be written.
struct Batch {
    touched: Vec<Touched>,
    /// Events in the batch.
    events: u64,
    /// Its highest position.
    highest: u64,
    /// What it is, for errors.
    what: String,
}

/// What writing a batch needs, owned: catch-up writes a batch in a task of its own while
/// it folds the next.
struct Sink {
    store: ProjectionStore,
    policy: RowPolicy,
    stats: Arc<ProjectorStats>,
    changes: broadcast::Sender<InventoryChange>,
}

impl Sink {
    /// Writes a batch's rows and checkpoints in one transaction: for each read model the
    /// streams whose views are newer than the versions it reflects.
    async fn write(
        &self,
        batch: &Batch,
        models: &[ReadModel],
        mode: Mode,
    ) -> Result<(), ProjectionError> {
        let (touched, highest, what) = (&batch.touched, batch.highest, batch.what.as_str());
        let mut tx = self.store.begin_write(what).await?;
        let checkpoints = lock_checkpoints(&mut tx, models, what).await?;
        let due = |cp: &Checkpoint, t: &Touched| {
            cp.model.reads(stream_kind(&t.stream_id).0)
                && !(mode == Mode::CatchUp && t.last_position <= cp.position)
        };
        let ids: Vec<&str> = touched
            .iter()
            .filter(|t| checkpoints.iter().any(|cp| due(cp, t)))
            .map(|t| t.stream_id.as_str())
            .collect();
        let reflected = stream_versions(tx.connection(), &ids, what).await?;
        let mut writes = Writes::default();
        let mut inventory_written: Vec<&Touched> = Vec::new();
        for t in touched {
            let was = reflected
                .get(t.stream_id.as_str())
                .copied()
                .unwrap_or_default();
            let mut now = [None; 4];
            for cp in checkpoints.iter().filter(|cp| due(cp, t)) {
                let i = cp.model.index();
                if t.view.version() <= was[i] {
                    continue;
                }
                writes.add(cp.model, &t.view, was[i], &self.policy);
                now[i] = Some(t.view.version());
                if cp.model == ReadModel::Inventory {
                    inventory_written.push(t);
                }
            }
            writes.versions(&t.stream_id, now);
        }
        let streams = writes.streams();
        for cp in &checkpoints {
            let advance = !(mode == Mode::Live && cp.rebuilding);
            if advance && highest > cp.position {
                writes.checkpoint(cp.model, highest, cp.rebuilding);
            }
        }
        writes.flush(&mut tx, what).await?;
        tx_commit(tx, what).await?;
        // Counters and change notifications, after the commit.
        self.stats.events.fetch_add(batch.events, Ordering::Relaxed);
        self.stats
            .stream_writes
            .fetch_add(streams, Ordering::Relaxed);
        self.stats
            .last_position
            .fetch_max(highest, Ordering::Relaxed);
        if mode == Mode::Live && self.changes.receiver_count() > 0 {
            for t in inventory_written {
                if let StreamView::Certificate(v) = t.view.as_ref() {
                    // No receiver is not an error.
                    let _ = self.changes.send(InventoryChange {
                        position: t.last_position,
                        certificate_id: v.id.clone(),
                        tenant: if v.state.tenant.is_empty() {
                            v.metadata_tenant.clone()
                        } else {
                            v.state.tenant.clone()
                        },
                        event_type: t.last_event_type.clone(),
                        status: v.state.status.as_str().to_owned(),
                    });
                }
            }
        }
        Ok(())
    }
}

impl Projector {
    fn handler_error(&self, error: ProjectionError, what: &str) -> HandlerError {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(events = what, %error, "projecting failed");
        if error.is_transient() {
            HandlerError::Retry(error.to_string())
        } else {
            HandlerError::Poison(error.to_string())
        }
    }
}

#[async_trait]
impl Handler for Projector {
    async fn handle(&self, event: &RecordedEvent) -> Result<(), HandlerError> {
        self.apply_live(event).await.map_err(|error| {
            self.handler_error(
                error,
                &format!("position {} of {}", event.position, event.stream_id),
            )
        })
    }

    async fn handle_batch(&self, events: &[RecordedEvent]) -> Result<(), HandlerError> {
        self.apply_live_batch(events)
            .await
            .map_err(|error| self.handler_error(error, &format!("a batch of {}", events.len())))
    }
}
