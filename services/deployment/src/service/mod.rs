//! The deployment service around the core: targets, deployments, reactions and drift.

pub mod api;
pub mod deployer;
pub mod index;
pub mod reactions;
pub mod secrets;
pub mod targets;
