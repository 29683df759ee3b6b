//! The append-only event log: one API, two backends (PostgreSQL, SQLite).
//!
//! * `append` writes events to one or more streams in one transaction, with optimistic
//!   concurrency per stream (a stale expected version is a typed [`AppendError::Conflict`]).
//! * Events are append-only in the database itself: triggers reject UPDATE and DELETE.
//! * Every event carries the hash of its stream's previous event and its own hash over
//!   the envelope and payload (a per-stream hash chain); [`EventLog::verify`] walks it.
//! * Global positions are visible to readers in position order: a reader tailing
//!   `position > last_seen` never skips an event that committed late.

pub mod model;

pub use model::*;
