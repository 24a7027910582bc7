//! mrlab as a library: scenarios, prediction inputs, the runner, comparison and reports. The
//! `mrlab` binary is a thin CLI over this; the e2e tests drive it directly.

pub mod error;
pub mod input;
pub mod judge;
pub mod predictors;
pub mod prepare;
pub mod prepare_grub;
pub mod recorded;
pub mod report;
pub mod resolve;
pub mod run;
pub mod scenario;
pub mod schedule;
pub mod snapshot;
pub mod verification;
