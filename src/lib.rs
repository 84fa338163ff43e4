//! zoo-runner: runs each model's example prediction inside its container (Docker or
//! Apptainer/Singularity) and reports, per model, what broke.
//!
//! The stages, from the command line down:
//! ```text
//! cli  ->  app (run | matrix | merge | cache)
//!            |
//!            v
//! select (catalog, plan) -> partition -> run (harness, stages, verdict) -> runtime -> store
//!                                              |                                supervise
//!                                              v
//!                                 report (display, JUnit, summary)
//! ```

pub mod app;
pub mod cancel;
pub mod capture;
pub mod cli;
pub mod config;
pub mod engine;
pub mod error_chain;
pub mod events;
pub mod identity;
pub mod partition;
pub mod record;
pub mod report;
pub mod run;
pub mod runtime;
pub mod select;
pub mod store;
pub mod supervise;
