//! The commands: a test run, `matrix`, `merge` and `cache`. Each glues the stages together
//! (select, partition, run, runtime, store, report); none holds a stage's logic. The command
//! line (`crate::cli`) hands each its plain configuration.

pub mod cache;
pub mod matrix;
pub mod merge;
pub mod run;
pub mod sbatch;
pub mod sifs;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::cancel::Cancel;
use crate::events;

/// Usage or input errors: nothing ran.
pub const EXIT_USAGE: u8 = 2;
/// A runtime cannot be used (no Docker daemon, no working Apptainer), or was lost during the
/// run: the models were not tested.
pub const EXIT_RUNTIME: u8 = 3;
/// The cases ran, but the JUnit report could not be written: their results are lost to CI.
pub const EXIT_REPORT_LOST: u8 = 4;
/// `--require-tests` and the selection holds no case: nothing was tested.
pub const EXIT_NO_TESTS: u8 = 5;

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    Run(Box<run::RunConfig>),
    Matrix(Box<matrix::MatrixConfig>),
    Merge(merge::MergeConfig),
    CacheList {
        dir: PathBuf,
        runtime: cache::CacheRuntime,
    },
    CachePrune {
        dir: PathBuf,
        sif_dir: PathBuf,
        all: bool,
        unused_for: Option<Duration>,
        runtime: cache::CacheRuntime,
    },
    SifList {
        dir: PathBuf,
    },
    SifPrune {
        dir: PathBuf,
        all: bool,
        unused_for: Option<Duration>,
    },
}

/// Carries out a command; an error is a usage or input error (exit 2).
pub fn execute(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run(config) => run::run(*config),
        Command::Matrix(config) => matrix::run(*config),
        Command::Merge(config) => merge::run(&config),
        Command::CacheList { dir, runtime } => {
            cache::list(&crate::store::caches::prepare_dir(&dir)?, runtime)
        }
        Command::CachePrune {
            dir,
            sif_dir,
            all,
            unused_for,
            runtime,
        } => {
            let dir = crate::store::caches::prepare_dir(&dir)?;
            cache::prune(&dir, &sif_dir, all, unused_for, runtime)
        }
        Command::SifList { dir } => sifs::list(&dir),
        Command::SifPrune {
            dir,
            all,
            unused_for,
        } => sifs::prune(&dir, all, unused_for),
    }
}

/// Runs `work` on an async runtime that catches SIGINT, SIGTERM and SIGHUP from its start:
/// whatever the runner starts from then on (git while the inputs load, a credential helper, a
/// case) is stopped on the first signal, and the run ends with 128 + its number.
fn with_signals(
    work: impl FnOnce(&tokio::runtime::Runtime, &Cancel) -> anyhow::Result<ExitCode>,
) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let cancel = Cancel::new();
    {
        let _guard = rt.enter();
        cancel
            .listen_for_signals()
            .context("failed to listen for SIGINT/SIGTERM/SIGHUP")?;
    }
    let code = work(&rt, &cancel);
    // A SIF download abandoned on Ctrl-C may still hold a blocking thread: don't wait for it.
    rt.shutdown_background();
    code
}

/// The exit code of a run interrupted before anything ran (while its inputs loaded): the
/// signal's, as the signal's default action would have given.
fn interrupted_early(cancel: &Cancel) -> Option<ExitCode> {
    let signal = cancel.signal()?;
    events::note("interrupted while the inputs were loaded; nothing ran");
    Some(ExitCode::from((128 + signal) as u8))
}
