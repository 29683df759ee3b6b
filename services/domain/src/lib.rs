//! certledger's domain: the certificate lifecycle as a pure decider.
//!
//! A service handler is: load the stream, [`fold`] its events into a
//! [`CertificateState`], [`decide`] a [`CertificateCommand`], append the events with the
//! expected version, retry on conflict. Nothing here does I/O, reads a clock or draws
//! random numbers: the current time, new ids, challenge tokens and serials come in
//! through the command.
//!
//! The events are the generated protobuf messages of `certledger-proto`
//! ([`CertificateEvent`] and [`TargetEvent`]), one definition per idea; commands and
//! state are domain types. Errors are [`DomainError`]s whose [`ErrorKind`] maps onto a
//! gRPC status code.

#![warn(missing_docs)]

pub mod access;
pub mod certificate;
pub mod error;
pub mod names;
pub mod spec;
pub mod target;
pub mod time;
pub mod validate;

pub use certificate::{CertificateCommand, CertificateState, Status, decide, evolve, fold};
pub use error::{DomainError, ErrorKind, Rule};

/// A certificate stream's event (the `CertificateEvent` oneof).
pub use certledger_proto::events::v1::certificate_event::Event as CertificateEvent;
/// A target stream's event (the `TargetEvent` oneof).
pub use certledger_proto::events::v1::target_event::Event as TargetEvent;
