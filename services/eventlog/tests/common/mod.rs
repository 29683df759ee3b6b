//! The backend-independent test suite. `tests/postgres.rs` and `tests/sqlite.rs` provide a
//! [`Harness`] (an isolated log location: a fresh schema, a fresh file) and instantiate
//! every case with [`eventlog_suite!`].
//!
//! No sleep is used as synchronisation: tests wait on conditions with a deadline
//! ([`DEADLINE`], only reached when something is broken).

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use certledger_eventlog::hash::{HashInput, ZERO_HASH, event_hash};
use certledger_eventlog::test_hooks::{BeforeCommitHook, CommitInfo};
use certledger_eventlog::{
    AppendError, EventLog, ExpectedVersion, LogOptions, Metadata, NewEvent, RecordedEvent,
    SharedReads, StreamAppend, Tamper,
};
use chrono::Utc;
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

/// Upper bound for anything the tests wait for; reaching it means a bug, not slowness.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// An isolated place for a log, and raw access to its database.
pub trait Harness: Sized {
    type Log: EventLog;
    /// A fresh, empty, isolated log location (dropped = removed).
    fn create() -> impl Future<Output = Self>;
    /// A new handle on this harness's log (as another replica would open it).
    fn open(&self, options: LogOptions) -> impl Future<Output = Self::Log>;
    /// Raw SQL through the handle's pool; `Err` carries the database's message.
    fn exec(&self, log: &Self::Log, sql: &str) -> impl Future<Output = Result<u64, String>>;
    /// A SQL literal for a byte string in this dialect.
    fn blob_literal(bytes: &[u8]) -> String;
    /// SQL that turns the append-only protection off (only a test would).
    fn disable_append_only() -> &'static [&'static str];
    /// Statements that must be rejected besides UPDATE and DELETE (e.g. TRUNCATE).
    fn more_forbidden() -> &'static [&'static str];
}

/// Instantiates every suite case for a harness type.
#[macro_export]
macro_rules! eventlog_suite {
    ($harness:ty) => {
        $crate::eventlog_suite!(@cases $harness;
            append_and_read_back,
            conflicts_write_nothing,
            duplicate_event_id_rejected,
            invalid_appends_rejected,
            database_rejects_update_and_delete,
            concurrent_appenders_and_tailing_reader,
            group_commit_answers_each_caller,
            tampering_is_detected,
            checkpoints_and_head_position,
            wait_for_new_wakes_on_append,
            shared_reads_give_every_reader_the_whole_log,
        );
    };
    (@cases $harness:ty; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                common::$case::<$harness>().await
            }
        )*
    };
}

pub fn meta(actor: &str) -> Metadata {
    Metadata {
        tenant: "tenant-a".into(),
        correlation_id: Some(Uuid::now_v7()),
        causation_id: Some(Uuid::now_v7()),
        actor: actor.into(),
        trace_context: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
    }
}

pub fn event(event_type: &str, payload: &[u8]) -> NewEvent {
    NewEvent::new(event_type, 1, payload.to_vec(), meta("tester"))
}

pub fn part(stream: &str, expected: ExpectedVersion, events: Vec<NewEvent>) -> StreamAppend {
    StreamAppend {
        stream_id: stream.into(),
        expected,
        events,
    }
}

/// Waits for `fut`, failing the test after [`DEADLINE`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: not done within {DEADLINE:?}"),
    }
}

fn assert_matches_new(rec: &RecordedEvent, new: &NewEvent, stream: &str, version: u64) {
    assert_eq!(rec.stream_id, stream);
    assert_eq!(rec.stream_version, version);
    assert_eq!(rec.event_id, new.event_id);
    assert_eq!(rec.event_type, new.event_type);
    assert_eq!(rec.schema_version, new.schema_version);
    assert_eq!(rec.payload, new.payload);
    assert_eq!(rec.metadata, new.metadata);
}

pub fn recomputed_hash(e: &RecordedEvent) -> [u8; 32] {
    event_hash(&HashInput {
        prev_hash: &e.prev_hash,
        stream_id: &e.stream_id,
        stream_version: e.stream_version,
        event_id: &e.event_id,
        event_type: &e.event_type,
        schema_version: e.schema_version,
        metadata: &e.metadata,
        recorded_at_micros: e.recorded_at.timestamp_micros(),
        payload: &e.payload,
    })
}

// 1. append + read back ------------------------------------------------------------------

pub async fn append_and_read_back<H: Harness>() {
    let h = H::create().await;
    let log = h.open(LogOptions::new()).await;
    assert_eq!(log.head_position().await.unwrap(), 0);
    assert!(
        log.read_stream("certificate-1", 0)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(log.read_all(0, 100).await.unwrap().is_empty());

    let mut e1 = event("OrderPlaced", &[1, 2, 3]);
    e1.schema_version = 3;
    e1.metadata.causation_id = None;
    e1.metadata.trace_context = None;
    let e2 = event("ApplicationSubmitted", b"\x00\xff binary \x00");
    let mut e3 = event("ValidationStarted", &[]);
    e3.metadata = Metadata {
        tenant: "tenant-ü".into(),
        correlation_id: None,
        causation_id: None,
        actor: "CN=ops, O=Example «quoted» 'x'".into(),
        trace_context: None,
    };
    e3.schema_version = u32::MAX;
    let e4 = event("TargetRegistered", &[9; 4096]);

    let before = Utc::now();
    let r1 = log
        .append_one(
            "certificate-1",
            ExpectedVersion::NoStream,
            vec![e1.clone(), e2.clone()],
        )
        .await
        .unwrap();
    assert_eq!(r1.stream_id, "certificate-1");
    assert_eq!(r1.version, 2);
    assert_eq!(r1.positions, vec![1, 2], "positions start at 1");
    let r2 = log
        .append(vec![
            part("certificate-1", ExpectedVersion::Exact(2), vec![e3.clone()]),
            part("target-1", ExpectedVersion::Any, vec![e4.clone()]),
        ])
        .await
        .unwrap();
    let after = Utc::now();
    assert_eq!(r2.len(), 2);
    assert_eq!(
        (
            r2[0].stream_id.as_str(),
            r2[0].version,
            r2[0].positions.clone()
        ),
        ("certificate-1", 3, vec![3])
    );
    assert_eq!(
        (
            r2[1].stream_id.as_str(),
            r2[1].version,
            r2[1].positions.clone()
        ),
        ("target-1", 1, vec![4])
    );

    let stream = log.read_stream("certificate-1", 0).await.unwrap();
    assert_eq!(stream.len(), 3);
    for (i, (rec, new)) in stream.iter().zip([&e1, &e2, &e3]).enumerate() {
        assert_matches_new(rec, new, "certificate-1", i as u64 + 1);
        assert_eq!(rec.position, i as u64 + 1);
        assert!(
            rec.recorded_at >= before - chrono::Duration::milliseconds(1)
                && rec.recorded_at <= after
        );
        assert_eq!(
            rec.recorded_at.timestamp_subsec_nanos() % 1000,
            0,
            "microsecond precision"
        );
        assert_eq!(
            rec.hash,
            recomputed_hash(rec),
            "stored hash is the envelope hash"
        );
    }
    assert_eq!(stream[0].prev_hash, ZERO_HASH);
    assert_eq!(stream[1].prev_hash, stream[0].hash);
    assert_eq!(stream[2].prev_hash, stream[1].hash);
    assert_eq!(
        stream[0].recorded_at, stream[1].recorded_at,
        "one append, one time"
    );

    let target = log.read_stream("target-1", 0).await.unwrap();
    assert_eq!(target.len(), 1);
    assert_matches_new(&target[0], &e4, "target-1", 1);
    assert_eq!(target[0].prev_hash, ZERO_HASH);

    let tail = log.read_stream("certificate-1", 1).await.unwrap();
    assert_eq!(
        tail.iter().map(|e| e.stream_version).collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert!(
        log.read_stream("certificate-1", 3)
            .await
            .unwrap()
            .is_empty()
    );

    let all = log.read_all(0, 100).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert_eq!(
        &all[..3],
        &stream[..],
        "read_all and read_stream return the same envelopes"
    );
    assert_eq!(all[3], target[0]);
    let page = log.read_all(1, 2).await.unwrap();
    assert_eq!(
        page.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert!(log.read_all(4, 10).await.unwrap().is_empty());
    assert!(log.read_all(0, 0).await.unwrap().is_empty());
    assert!(log.read_all(u64::MAX, 10).await.unwrap().is_empty());
    assert_eq!(log.head_position().await.unwrap(), 4);

    // Another handle (another replica) reads the same log.
    let other = h.open(LogOptions::new()).await;
    assert_eq!(other.read_all(0, 100).await.unwrap(), all);
    let report = other.verify(None).await.unwrap();
    assert_eq!((report.events_checked, report.first_problem), (4, None));
}

// 2. conflicts -------------------------------------------------------------------------

pub async fn conflicts_write_nothing<H: Harness>() {
    let h = H::create().await;
    let log = h.open(LogOptions::new()).await;
    log.append_one("s", ExpectedVersion::NoStream, vec![event("A", b"1")])
        .await
        .unwrap();

    let cases = [
        ("s", ExpectedVersion::NoStream, 1),
        ("s", ExpectedVersion::Exact(0), 1),
        ("s", ExpectedVersion::Exact(5), 1),
        ("missing", ExpectedVersion::Exact(1), 0),
    ];
    for (stream, expected, actual_version) in cases {
        match log
            .append_one(stream, expected, vec![event("B", b"2")])
            .await
        {
            Err(AppendError::Conflict {
                stream_id,
                expected: e,
                actual,
            }) => {
                assert_eq!(
                    (stream_id.as_str(), e, actual),
                    (stream, expected, actual_version)
                );
            }
            other => panic!("{stream} {expected:?}: expected a conflict, got {other:?}"),
        }
    }
    let err = log
        .append_one("s", ExpectedVersion::Exact(0), vec![event("B", b"2")])
        .await
        .unwrap_err();
    assert!(err.is_conflict());
    assert!(
        err.to_string().contains("stream s is at version 1"),
        "{err}"
    );
    assert_eq!(log.head_position().await.unwrap(), 1);
    assert_eq!(log.read_stream("s", 0).await.unwrap().len(), 1);
    assert!(log.read_stream("missing", 0).await.unwrap().is_empty());

    // Several streams: one stale part fails the whole append, nothing is written.
    let b = event("B", b"b");
    let c = event("C", b"c");
    let d = event("D", b"d");
    let stale = log
        .append(vec![
            part("s", ExpectedVersion::Exact(1), vec![b.clone()]),
            part("t", ExpectedVersion::NoStream, vec![c.clone()]),
            part("u", ExpectedVersion::Exact(3), vec![d.clone()]),
        ])
        .await;
    match stale {
        Err(AppendError::Conflict {
            stream_id,
            expected,
            actual,
        }) => {
            assert_eq!(
                (stream_id.as_str(), expected, actual),
                ("u", ExpectedVersion::Exact(3), 0)
            );
        }
        other => panic!("expected a conflict on u, got {other:?}"),
    }
    assert_eq!(log.head_position().await.unwrap(), 1);
    assert_eq!(log.read_stream("s", 0).await.unwrap().len(), 1);
    assert!(log.read_stream("t", 0).await.unwrap().is_empty());
    assert_eq!(log.read_all(0, 100).await.unwrap().len(), 1);

    // The same events (same ids: nothing was burnt) with the right versions go through.
    let ok = log
        .append(vec![
            part("s", ExpectedVersion::Exact(1), vec![b]),
            part("t", ExpectedVersion::NoStream, vec![c]),
            part("u", ExpectedVersion::Exact(0), vec![d]),
        ])
        .await
        .unwrap();
    assert_eq!(
        ok.iter().map(|r| r.version).collect::<Vec<_>>(),
        vec![2, 1, 1]
    );
    let positions: Vec<u64> = ok.iter().flat_map(|r| r.positions.clone()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    let any = log
        .append_one("s", ExpectedVersion::Any, vec![event("E", b"e")])
        .await
        .unwrap();
    assert_eq!(any.version, 3);
    assert_eq!(log.verify(None).await.unwrap().first_problem, None);
}

// 3. duplicate event ids ----------------------------------------------------------------

pub async fn duplicate_event_id_rejected<H: Harness>() {
    let h = H::create().await;
    let log = h.open(LogOptions::new()).await;
    let a = event("A", b"a");
    log.append_one("s", ExpectedVersion::Any, vec![a.clone()])
        .await
        .unwrap();

    // A retried append (same event id) is refused, on any stream.
    for stream in ["s", "t"] {
        match log
            .append_one(stream, ExpectedVersion::Any, vec![a.clone()])
            .await
        {
            Err(AppendError::DuplicateEvent { event_id }) => assert_eq!(event_id, a.event_id),
            other => panic!("expected DuplicateEvent, got {other:?}"),
        }
    }
    // With other streams in the same append: nothing of it is written.
    let fresh = event("F", b"f");
    let err = log
        .append(vec![
            part("u", ExpectedVersion::Any, vec![fresh.clone()]),
            part("v", ExpectedVersion::Any, vec![a.clone()]),
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(err, AppendError::DuplicateEvent { event_id } if event_id == a.event_id),
        "{err:?}"
    );
    // The same id twice in one append.
    let err = log
        .append_one(
            "w",
            ExpectedVersion::Any,
            vec![fresh.clone(), fresh.clone()],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, AppendError::DuplicateEvent { event_id } if event_id == fresh.event_id),
        "{err:?}"
    );
    assert_eq!(log.head_position().await.unwrap(), 1);
    for stream in ["t", "u", "v", "w"] {
        assert!(
            log.read_stream(stream, 0).await.unwrap().is_empty(),
            "{stream}"
        );
    }
    // The fresh event itself was not burnt.
    log.append_one("u", ExpectedVersion::NoStream, vec![fresh])
        .await
        .unwrap();
}

pub async fn invalid_appends_rejected<H: Harness>() {
    let h = H::create().await;
    let log = h.open(LogOptions::new()).await;
    let mut not_v7 = event("A", b"");
    not_v7.event_id = Uuid::from_u128(0x6ba7_b810_9dad_41d1_80b4_00c0_4fd4_30c8);
    let mut nul = event("A", b"");
    nul.metadata.tenant = "a\0b".into();
    let cases: Vec<Vec<StreamAppend>> = vec![
        vec![],
        vec![part("", ExpectedVersion::Any, vec![event("A", b"")])],
        vec![part("s", ExpectedVersion::Any, vec![])],
        vec![
            part("s", ExpectedVersion::Any, vec![event("A", b"")]),
            part("s", ExpectedVersion::Any, vec![event("A", b"")]),
        ],
        vec![part("s", ExpectedVersion::Any, vec![event("", b"")])],
        vec![part("s", ExpectedVersion::Any, vec![not_v7])],
        vec![part("s", ExpectedVersion::Any, vec![nul])],
        vec![part(
            &"x".repeat(certledger_eventlog::MAX_STREAM_ID_LEN + 1),
            ExpectedVersion::Any,
            vec![event("A", b"")],
        )],
    ];
    for (i, appends) in cases.into_iter().enumerate() {
        match log.append(appends).await {
            Err(AppendError::Invalid(msg)) => assert!(!msg.is_empty()),
            other => panic!("case {i}: expected Invalid, got {other:?}"),
        }
    }
    assert_eq!(log.head_position().await.unwrap(), 0);
}

// 4. append-only in the database --------------------------------------------------------

pub async fn database_rejects_update_and_delete<H: Harness>() {
    let h = H::create().await;
    let log = h.open(LogOptions::new()).await;
    log.append_one(
        "s",
        ExpectedVersion::NoStream,
        vec![event("A", b"a"), event("B", b"b")],
    )
    .await
    .unwrap();
    let before = log.read_all(0, 10).await.unwrap();

    let set_payload = format!(
        "UPDATE events SET payload = {} WHERE position = 1",
        H::blob_literal(b"forged")
    );
    let mut statements = vec![
        "UPDATE events SET event_type = 'Forged'".to_owned(),
        set_payload,
        "UPDATE events SET stream_version = stream_version + 10 WHERE stream_id = 's'".to_owned(),
        "DELETE FROM events".to_owned(),
        "DELETE FROM events WHERE position = 2".to_owned(),
    ];
    statements.extend(H::more_forbidden().iter().map(|s| s.to_string()));
    for sql in &statements {
        match h.exec(&log, sql).await {
            Err(msg) => assert!(msg.contains("append-only"), "{sql}: unexpected error {msg}"),
            Ok(n) => panic!("{sql}: the database accepted it ({n} rows)"),
        }
    }
    assert_eq!(log.read_all(0, 10).await.unwrap(), before);
    // Checkpoints are not part of the log and stay mutable.
    log.save_checkpoint("relay", 1).await.unwrap();
    h.exec(&log, "DELETE FROM checkpoints").await.unwrap();
    assert_eq!(log.load_checkpoint("relay").await.unwrap(), 0);
}

// 5. concurrency ------------------------------------------------------------------------

/// Holds every append transaction open for a pseudo-random 0–2 ms between insert and
/// commit, so that without an ordering guard concurrent transactions commit out of
/// position order. Not synchronisation: the tests pass for any delay; it only widens
/// the window in which a missing guard shows.
pub fn jitter_hook() -> BeforeCommitHook {
    Arc::new(|_info: CommitInfo| {
        Box::pin(async move {
            let micros = (Uuid::now_v7().as_u128() as u64) % 2_000;
            tokio::time::sleep(Duration::from_micros(micros)).await;
        })
    })
}

/// Tails the whole log from position 0 until it has passed the final head (sent once
/// every writer is done), checking that positions strictly increase.
async fn tail<L: EventLog + ?Sized>(
    log: Arc<L>,
    page: u32,
    mut final_head: watch::Receiver<Option<u64>>,
) -> Vec<RecordedEvent> {
    let deadline = Instant::now() + DEADLINE;
    let mut pos = 0;
    let mut seen = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "reader stuck at position {pos}");
        let batch = log.read_all(pos, page).await.expect("read_all");
        if batch.is_empty() {
            if final_head
                .borrow_and_update()
                .is_some_and(|last| pos >= last)
            {
                return seen;
            }
            tokio::select! {
                _ = log.wait_for_new(pos) => {}
                _ = final_head.changed() => {}
            }
            continue;
        }
        for e in batch {
            assert!(e.position > pos, "position {} after {pos}", e.position);
            pos = e.position;
            seen.push(e);
        }
    }
}

pub async fn concurrent_appenders_and_tailing_reader<H: Harness>() {
    const HANDLES: usize = 4;
    const WRITERS: usize = 24;
    const STREAMS: usize = 6;
    const PER_WRITER: usize = 8;
    let h = H::create().await;
    // Several handles = several replicas; half of them group-commit, half use one
    // transaction per append; all hold their transactions open for a while.
    let mut handles = Vec::new();
    for i in 0..HANDLES {
        let options = LogOptions::new()
            .max_connections(4)
            .group_commit(i % 2 == 0)
            .before_commit_hook(jitter_hook());
        handles.push(Arc::new(h.open(options).await));
    }
    let reader_log = Arc::new(h.open(LogOptions::new().max_connections(2)).await);
    let (final_tx, final_rx) = watch::channel(None);
    let reader = tokio::spawn(tail(reader_log.clone(), 16, final_rx));

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let log = handles[w % HANDLES].clone();
        writers.push(tokio::spawn(async move {
            let mut won = Vec::new();
            let mut conflicts = 0u32;
            for k in 0..PER_WRITER {
                let stream = format!("certificate-{}", (w + k) % STREAMS);
                let mut expected = 0;
                loop {
                    let e = event("Touched", format!("{w}/{k}").as_bytes());
                    match log
                        .append_one(&stream, ExpectedVersion::Exact(expected), vec![e.clone()])
                        .await
                    {
                        Ok(r) => {
                            assert_eq!(r.version, expected + 1);
                            won.push((stream.clone(), r.version, e.event_id, r.positions[0]));
                            break;
                        }
                        Err(AppendError::Conflict { actual, .. }) => {
                            assert_ne!(
                                actual, expected,
                                "a conflict must report a different version"
                            );
                            expected = actual;
                            conflicts += 1;
                        }
                        Err(other) => panic!("writer {w}: {other}"),
                    }
                }
            }
            (won, conflicts)
        }));
    }
    let mut won = Vec::new();
    let mut conflicts = 0;
    for w in writers {
        let (mut wn, c) = within("writers", w).await.expect("writer task");
        won.append(&mut wn);
        conflicts += c;
    }
    assert!(conflicts > 0, "the writers never raced");
    let head = reader_log.head_position().await.unwrap();
    final_tx.send_replace(Some(head));
    let seen = within("reader", reader).await.expect("reader task");

    // Exactly one winner per (stream, version), versions 1..n contiguous.
    assert_eq!(won.len(), WRITERS * PER_WRITER);
    let mut by_stream: BTreeMap<String, BTreeMap<u64, (Uuid, u64)>> = BTreeMap::new();
    for (stream, version, id, position) in &won {
        let prev = by_stream
            .entry(stream.clone())
            .or_default()
            .insert(*version, (*id, *position));
        assert!(prev.is_none(), "two winners for {stream} version {version}");
    }
    for (stream, versions) in &by_stream {
        let n = versions.len() as u64;
        assert!(
            versions.keys().copied().eq(1..=n),
            "{stream}: versions {:?}",
            versions.keys()
        );
        let stored = reader_log.read_stream(stream, 0).await.unwrap();
        assert_eq!(stored.len() as u64, n, "{stream}");
        for e in &stored {
            assert_eq!(
                versions.get(&e.stream_version),
                Some(&(e.event_id, e.position)),
                "{stream}"
            );
        }
    }

    // The tailing reader saw every committed event exactly once, in an order consistent
    // with each stream's versions, with strictly increasing positions.
    let won_ids: HashMap<Uuid, (String, u64, u64)> = won
        .iter()
        .map(|(s, v, id, p)| (*id, (s.clone(), *v, *p)))
        .collect();
    let mut seen_ids = HashSet::new();
    let mut last_version: HashMap<&str, u64> = HashMap::new();
    for e in &seen {
        assert!(
            seen_ids.insert(e.event_id),
            "event {} seen twice",
            e.event_id
        );
        let expected = won_ids
            .get(&e.event_id)
            .unwrap_or_else(|| panic!("reader saw unknown event {}", e.event_id));
        assert_eq!(
            expected,
            &(e.stream_id.clone(), e.stream_version, e.position)
        );
        let last = last_version.entry(e.stream_id.as_str()).or_default();
        assert_eq!(
            e.stream_version,
            *last + 1,
            "{}: versions out of order for the reader (an event was skipped or seen late)",
            e.stream_id
        );
        *last = e.stream_version;
    }
    let missed: Vec<_> = won_ids
        .iter()
        .filter(|(id, _)| !seen_ids.contains(*id))
        .map(|(_, v)| v)
        .collect();
    assert!(
        missed.is_empty(),
        "the tailing reader skipped {} committed events: {missed:?}",
        missed.len()
    );
    assert_eq!(seen.len(), won.len());
    let report = reader_log.verify(None).await.unwrap();
    assert_eq!(
        (report.events_checked, report.first_problem),
        (won.len() as u64, None)
    );
}

/// Many callers through one group-committing handle: each gets its own answer; a
/// conflict or a duplicate fails only its own caller.
pub async fn group_commit_answers_each_caller<H: Harness>() {
    let h = H::create().await;
    let log = Arc::new(h.open(LogOptions::new().group_commit(true)).await);
    let dup = event("Dup", b"same id");
    let mut tasks = Vec::new();
    for i in 0..64 {
        let log = log.clone();
        let dup = dup.clone();
        tasks.push(tokio::spawn(async move {
            let result = match i % 4 {
                // Own stream: always succeeds.
                0 | 1 => {
                    log.append_one(
                        &format!("own-{i}"),
                        ExpectedVersion::NoStream,
                        vec![event("A", b"a")],
                    )
                    .await
                }
                // All race for version 1 of one stream: exactly one wins.
                2 => {
                    log.append_one("shared", ExpectedVersion::NoStream, vec![event("S", b"s")])
                        .await
                }
                // All append the same event id: exactly one wins.
                _ => {
                    log.append_one(&format!("dup-{i}"), ExpectedVersion::Any, vec![dup])
                        .await
                }
            };
            (i, result)
        }));
    }
    let mut shared_winners = 0;
    let mut dup_winners = 0;
    let mut positions = HashSet::new();
    for t in tasks {
        let (i, result) = within("appenders", t).await.expect("task");
        match (i % 4, result) {
            (0 | 1, Ok(r)) => {
                assert_eq!(r.version, 1);
                assert!(positions.insert(r.positions[0]));
            }
            (2, Ok(r)) => {
                shared_winners += 1;
                assert!(positions.insert(r.positions[0]));
            }
            (
                2,
                Err(AppendError::Conflict {
                    stream_id, actual, ..
                }),
            ) => assert_eq!((stream_id.as_str(), actual), ("shared", 1)),
            (3, Ok(r)) => {
                dup_winners += 1;
                assert!(positions.insert(r.positions[0]));
            }
            (3, Err(AppendError::DuplicateEvent { event_id })) => {
                assert_eq!(event_id, dup.event_id)
            }
            (k, other) => panic!("caller {i} (kind {k}): unexpected {other:?}"),
        }
    }
    assert_eq!((shared_winners, dup_winners), (1, 1));
    assert_eq!(positions.len(), 32 + 2);
    let all = log.read_all(0, 1000).await.unwrap();
    assert_eq!(all.len(), positions.len());
    assert_eq!(
        all.iter().map(|e| e.position).collect::<HashSet<_>>(),
        positions
    );
    assert_eq!(log.verify(None).await.unwrap().first_problem, None);
}

// 6. tamper evidence --------------------------------------------------------------------

pub async fn tampering_is_detected<H: Harness>() {
    let h = H::create().await;
    let log = h.open(LogOptions::new()).await;
    for stream in ["cert-a", "cert-b", "cert-c", "cert-d"] {
        for i in 0..3u8 {
            log.append_one(
                stream,
                ExpectedVersion::Exact(u64::from(i)),
                vec![event("E", &[i; 8])],
            )
            .await
            .unwrap();
        }
    }
    let report = log.verify(None).await.unwrap();
    assert_eq!((report.events_checked, report.first_problem), (12, None));
    let report = log.verify(Some("cert-a")).await.unwrap();
    assert_eq!((report.events_checked, report.first_problem), (3, None));
    assert_eq!(log.verify(Some("nothing")).await.unwrap().events_checked, 0);

    for sql in H::disable_append_only() {
        h.exec(&log, sql).await.unwrap();
    }
    let position_of = |events: &[RecordedEvent], version: u64| {
        events
            .iter()
            .find(|e| e.stream_version == version)
            .map(|e| e.position)
            .unwrap()
    };

    // An altered payload: that event's hash no longer matches.
    let a = log.read_stream("cert-a", 0).await.unwrap();
    let sql = format!(
        "UPDATE events SET payload = {} WHERE stream_id = 'cert-a' AND stream_version = 2",
        H::blob_literal(b"forged")
    );
    assert_eq!(h.exec(&log, &sql).await.unwrap(), 1);
    let altered = Tamper::Altered {
        stream_id: "cert-a".into(),
        version: 2,
        position: position_of(&a, 2),
    };
    assert_eq!(
        log.verify(Some("cert-a")).await.unwrap().first_problem,
        Some(altered.clone())
    );
    let report = log.verify(None).await.unwrap();
    assert_eq!(report.first_problem, Some(altered));
    assert_eq!(report.events_checked, 2);
    assert_eq!(
        log.verify(Some("cert-b")).await.unwrap().first_problem,
        None
    );

    // An altered payload with a recomputed hash: the next event's link breaks.
    let b = log.read_stream("cert-b", 0).await.unwrap();
    let mut forged = b[0].clone();
    forged.payload = b"forged".to_vec();
    let forged_hash = recomputed_hash(&forged);
    let sql = format!(
        "UPDATE events SET payload = {}, hash = {} WHERE stream_id = 'cert-b' AND stream_version = 1",
        H::blob_literal(&forged.payload),
        H::blob_literal(&forged_hash)
    );
    assert_eq!(h.exec(&log, &sql).await.unwrap(), 1);
    assert_eq!(
        log.verify(Some("cert-b")).await.unwrap().first_problem,
        Some(Tamper::BrokenLink {
            stream_id: "cert-b".into(),
            version: 2,
            position: position_of(&b, 2)
        })
    );

    // A deleted event in the middle: a missing version.
    assert_eq!(
        h.exec(
            &log,
            "DELETE FROM events WHERE stream_id = 'cert-c' AND stream_version = 2"
        )
        .await
        .unwrap(),
        1
    );
    assert_eq!(
        log.verify(Some("cert-c")).await.unwrap().first_problem,
        Some(Tamper::Missing {
            stream_id: "cert-c".into(),
            version: 2
        })
    );
    // A deleted first event.
    assert_eq!(
        h.exec(
            &log,
            "DELETE FROM events WHERE stream_id = 'cert-d' AND stream_version = 1"
        )
        .await
        .unwrap(),
        1
    );
    assert_eq!(
        log.verify(Some("cert-d")).await.unwrap().first_problem,
        Some(Tamper::Missing {
            stream_id: "cert-d".into(),
            version: 1
        })
    );
}

// 7. checkpoints, head, wait_for_new ----------------------------------------------------

pub async fn checkpoints_and_head_position<H: Harness>() {
    let h = H::create().await;
    let log = h.open(LogOptions::new()).await;
    assert_eq!(log.load_checkpoint("relay").await.unwrap(), 0);
    log.save_checkpoint("relay", 5).await.unwrap();
    log.save_checkpoint("projection", 7).await.unwrap();
    assert_eq!(log.load_checkpoint("relay").await.unwrap(), 5);
    log.save_checkpoint("relay", 3).await.unwrap();
    assert_eq!(
        log.load_checkpoint("relay").await.unwrap(),
        3,
        "a save overwrites, even backwards"
    );
    assert_eq!(log.load_checkpoint("projection").await.unwrap(), 7);
    assert!(log.save_checkpoint("relay", u64::MAX).await.is_err());
    let other = h.open(LogOptions::new()).await;
    assert_eq!(
        other.load_checkpoint("relay").await.unwrap(),
        3,
        "checkpoints are durable and shared"
    );

    assert_eq!(log.head_position().await.unwrap(), 0);
    let r = log
        .append_one(
            "s",
            ExpectedVersion::NoStream,
            vec![event("A", b""), event("B", b"")],
        )
        .await
        .unwrap();
    assert_eq!(log.head_position().await.unwrap(), r.positions[1]);
    assert_eq!(other.head_position().await.unwrap(), r.positions[1]);
}

pub async fn wait_for_new_wakes_on_append<H: Harness>() {
    let h = H::create().await;
    // A poll interval of an hour: only a notification can wake these waiters in time.
    let waiter = h
        .open(LogOptions::new().poll_interval(Duration::from_secs(3600)))
        .await;
    let writer = h.open(LogOptions::new()).await;

    // Woken by an append through another handle (another replica).
    let head = waiter.head_position().await.unwrap();
    {
        let mut wait = pin!(waiter.wait_for_new(head));
        assert!(futures::poll!(&mut wait).is_pending(), "nothing new yet");
        writer
            .append_one("s", ExpectedVersion::NoStream, vec![event("A", b"")])
            .await
            .unwrap();
        within("wait_for_new after another handle's append", wait).await;
    }
    // Woken by an append through the same handle.
    let head = waiter.head_position().await.unwrap();
    {
        let mut wait = pin!(waiter.wait_for_new(head));
        assert!(futures::poll!(&mut wait).is_pending(), "nothing new yet");
        waiter
            .append_one("s", ExpectedVersion::Exact(1), vec![event("B", b"")])
            .await
            .unwrap();
        within("wait_for_new after own append", wait).await;
    }
    // Already known news: no wait at all (no lost wake-up between read_all and wait).
    within(
        "wait_for_new with news already known",
        waiter.wait_for_new(0),
    )
    .await;

    // Without news, the poll interval bounds the wait.
    let poller = h
        .open(LogOptions::new().poll_interval(Duration::from_millis(20)))
        .await;
    let head = poller.head_position().await.unwrap();
    within("wait_for_new poll fallback", poller.wait_for_new(head)).await;
}

/// Readers sharing their reads ([`SharedReads`]) while writers append and race (on
/// PostgreSQL a refused append leaves a gap in the positions): each reader, whatever its
/// page size, sees exactly the log, in order; a reader at the window reads nothing from
/// the log; one behind the window reads the log itself.
pub async fn shared_reads_give_every_reader_the_whole_log<H: Harness>() {
    const WRITERS: usize = 8;
    const PER_WRITER: usize = 12;
    let h = H::create().await;
    let log: Arc<dyn EventLog> = Arc::new(h.open(LogOptions::new().max_connections(4)).await);
    let shared = Arc::new(SharedReads::new(log.clone(), 8));
    let (final_tx, final_rx) = watch::channel(None);
    let readers: Vec<_> = [1, 3, 7, 50]
        .into_iter()
        .map(|page| tokio::spawn(tail(shared.clone(), page, final_rx.clone())))
        .collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let log = log.clone();
            tokio::spawn(async move {
                for k in 0..PER_WRITER {
                    let stream = format!("certificate-{}", (w + k) % 3);
                    let mut expected = ExpectedVersion::Exact(0);
                    loop {
                        let e = event("Touched", format!("{w}/{k}").as_bytes());
                        match log.append_one(&stream, expected, vec![e]).await {
                            Ok(_) => break,
                            Err(AppendError::Conflict { actual, .. }) => {
                                expected = ExpectedVersion::Exact(actual);
                            }
                            Err(other) => panic!("writer {w}: {other}"),
                        }
                    }
                }
            })
        })
        .collect();
    for w in writers {
        within("writers", w).await.expect("writer task");
    }
    let whole = log.read_all(0, 10_000).await.expect("read the log");
    assert_eq!(whole.len(), WRITERS * PER_WRITER);
    final_tx.send_replace(whole.last().map(|e| e.position));
    let ids = |events: &[RecordedEvent]| events.iter().map(|e| e.event_id).collect::<Vec<_>>();
    for reader in readers {
        let seen = within("reader", reader).await.expect("reader task");
        assert_eq!(ids(&seen), ids(&whole));
    }

    // A lone reader's pages are not kept: the same page again is read from the log, and
    // that read, from behind the end of the last, shows a second reader.
    let head = whole[whole.len() - 1].position;
    let tail = whole[whole.len() - 4..].to_vec();
    let after = whole[whole.len() - 5].position;
    let (shared, catching_up) = (
        SharedReads::new(log.clone(), 4),
        SharedReads::new(log.clone(), 4),
    );
    for reads in 1..=2 {
        for s in [&shared, &catching_up] {
            assert_eq!(ids(&s.read_all(after, 100).await.unwrap()), ids(&tail));
            assert_eq!(s.reads_from_log(), reads);
        }
    }
    // From then on: one read for readers at the window, none for the others.
    let news: Vec<NewEvent> = (0..4).map(|i| event("Touched", &[i])).collect();
    log.append_one("certificate-news", ExpectedVersion::NoStream, news)
        .await
        .expect("append");
    let last = log.read_all(head, 100).await.expect("read the log");
    assert_eq!(last.len(), 4);
    assert_eq!(ids(&shared.read_all(head, 100).await.unwrap()), ids(&last));
    assert_eq!(ids(&shared.read_all(head, 100).await.unwrap()), ids(&last));
    assert_eq!(
        ids(&shared.read_all(last[0].position, 2).await.unwrap()),
        ids(&last[1..3])
    );
    assert_eq!(shared.reads_from_log(), 3);
    // Behind the window: the log itself, and the window stays where it was.
    assert_eq!(ids(&shared.read_all(0, 2).await.unwrap()), ids(&whole[..2]));
    assert_eq!(shared.reads_from_log(), 4);
    assert_eq!(ids(&shared.read_all(head, 100).await.unwrap()), ids(&last));
    assert_eq!(shared.reads_from_log(), 4);
    // A full page (a reader catching up) is not kept.
    for reads in 3..=4 {
        assert_eq!(
            ids(&catching_up.read_all(head, 4).await.unwrap()),
            ids(&last)
        );
        assert_eq!(catching_up.reads_from_log(), reads);
    }
}
