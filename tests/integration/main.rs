//! The end-to-end tests, one binary: they run the built `zoo-runner` against the real Docker
//! daemon, the fixture images and SIF (`fixtures/build.sh`), the loopback registries
//! (`fixtures/registry.sh`) and the real Apptainer (`fixtures/apptainer/apptainer`).
//!
//! Every test here may run at the same time as any other (`cargo test` runs as many at once as
//! there are cores). A test that starts the runner takes [`helpers::daemon::shared`] first; the
//! few that need the daemon to themselves (they check what a killed run left, which any other
//! runner's start would sweep) take [`helpers::daemon::alone`]. `.config/nextest.toml` says the
//! same for nextest, which runs each test in a process of its own.
//!
//! Snapshots of whole outputs (terminal lines, summaries, JUnit, error messages) live in
//! `snapshots/`, normalised by [`helpers::normalise`].

mod helpers;

mod apptainer_ahead_standin;
mod apptainer_giveup_standin;
mod apptainer_pipes_standin;
mod apptainer_setup_standin;
mod cache_apptainer;
mod cache_e2e;
mod cache_slots;
mod changed_since_e2e;
mod ci_examples;
mod docker_e2e;
mod faults_e2e;
mod gitlab_local;
mod infra_e2e;
mod inputs_e2e;
mod main_job;
mod matrix_e2e;
mod matrix_fit_e2e;
mod merge_e2e;
mod predictions_e2e;
mod progress_e2e;
mod registry_e2e;
mod registry_fixture;
mod registry_pull_messages;
mod rerun_e2e;
mod sif_cache_shared;
mod sif_from_docker;
mod sif_prune;
mod singularity_e2e;
mod slurm_e2e;
mod spec_e2e;
mod stuck_daemon_e2e;
mod suite_config;
