//! The certificate aggregate (stream `certificate-<id>`): state, commands, the decider
//! and the fold.

mod command;
mod decide;
mod evolve;
mod invariants;
mod policy;
mod schedule;
mod state;

pub use command::*;
pub use decide::{DEPLOYMENT_STEPS, decide, decide_all, revocation_reason_allowed};
pub use evolve::{evolve, evolve_wrapped, fold, fold_from};
pub use invariants::invariants;
pub use policy::{
    DEFAULT_EXPIRY_THRESHOLDS, DEFAULT_RENEWAL_DAYS, MAX_EXPIRY_THRESHOLD_DAYS, RenewalWindow,
    validate_thresholds,
};
pub use schedule::{Backoff, RenewalPolicy, renewal_attempt};
pub use state::*;
