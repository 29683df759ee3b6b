//! The event stream: the SQL log is the source of truth, JetStream a replayable transport.
//!
//! * [`relay`] publishes every committed event to the `CERTLEDGER` stream with the
//!   event id as `Nats-Msg-Id` (JetStream dedupes) and keeps its checkpoint in the
//!   database, so a crash between publish and checkpoint republishes without duplicates.
//! * [`consumer`] drives the services: a durable pull consumer per reacting service
//!   (replicas share it), or — in embedded mode — the same [`consumer::Handler`] fed by
//!   tailing the SQL log.
//! * [`subject`] and [`envelope`] are the documented contract for external
//!   subscribers (docs/events.md).

mod checkpoint;
pub mod consumer;
pub mod envelope;
mod leased;
mod pull;
pub mod relay;
pub mod setup;
pub mod subject;
