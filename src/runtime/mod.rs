//! Runtimes run one case and say what happened; they know nothing of reports.
//!
//! A case ends in one of four outcomes: it passed, it ran and failed (a failure: the model's
//! fault), something kept it from running or killed it from outside (an error: image missing,
//! daemon gone, out-of-memory kill, signal), or it ran past its timeout.

pub mod apptainer;
pub mod docker;

use std::sync::Arc;
use std::time::Duration;

use crate::capture::Captured;
use crate::config::spec::Network;
use crate::run::versions::Versions;
use crate::store::caches::{CacheError, Caches};

/// Everything a runtime needs to run one case.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub case_name: String,
    pub command: Vec<String>,
    pub workdir: Option<String>,
    /// `NAME=value` pairs: all the container sees of an environment.
    pub env: Vec<String>,
    pub network: Network,
    /// `SOURCE:/path[:ro]` mounts (Docker volume names or host paths).
    pub volumes: Vec<String>,
    pub timeout: Duration,
    /// How long after SIGTERM before SIGKILL.
    pub grace: Duration,
    /// After this long a case is reported as slow (and again each period).
    pub slow_period: Duration,
    pub memory: Option<u64>,
    /// Bytes kept at each end of stdout and of stderr.
    pub keep: usize,
    /// The run's caches; None with `--no-cache` or a spec without `caches`.
    pub caches: Option<Arc<Caches>>,
    /// `--offline`: no network at all (for Docker `network` already says `none`).
    pub offline: bool,
    /// Apptainer only: the image's home folder (the spec's `apptainer_home`).
    pub apptainer_home: Option<String>,
    /// The spec's `versions` command, run once per image.
    pub versions: Option<Arc<Versions>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    /// The command ran and exited non-zero.
    Failed {
        exit_code: i64,
    },
    /// The case could not run, or was killed from outside.
    Errored {
        reason: String,
    },
    /// Stopped after running past its timeout; `killed` when SIGTERM did not end it and
    /// SIGKILL did, after the grace period.
    TimedOut {
        after: Duration,
        killed: bool,
    },
    /// Stopped because the run was interrupted (Ctrl-C, SIGTERM).
    Interrupted,
    /// Ended before its command started, by an interruption while it waited (for a cache's
    /// lock); `reason` says where it was.
    NotStarted {
        reason: String,
    },
    /// Stopped (at its timeout `timed_out`, else on interruption), but the container would not
    /// go: still running `waited` after the stop, through its grace period and a SIGKILL. The
    /// runner gave up on it and removes it by force.
    Stuck {
        timed_out: Option<Duration>,
        waited: Duration,
    },
}

/// What a runtime reports for one case.
#[derive(Debug)]
pub struct Execution {
    pub outcome: Outcome,
    pub stdout: Captured,
    pub stderr: Captured,
    pub duration: Duration,
    /// Facts for the report: image id, runtime version, command.
    pub properties: Vec<(String, String)>,
}

impl Execution {
    /// An error before anything ran.
    pub fn errored(reason: impl Into<String>, keep: usize) -> Self {
        Self::before_start(
            Outcome::Errored {
                reason: reason.into(),
            },
            keep,
        )
    }

    /// An end reached before the command started (no output).
    pub fn before_start(outcome: Outcome, keep: usize) -> Self {
        Self {
            outcome,
            stdout: Captured::new(keep),
            stderr: Captured::new(keep),
            duration: Duration::ZERO,
            properties: Vec::new(),
        }
    }
}

/// The outcome of a case whose caches could not be taken: an interruption while it waited for
/// a cache's lock ends it before it started; anything else is an error.
pub fn outcome_of_cache_error(e: &CacheError) -> Outcome {
    match e {
        CacheError::Interrupted { .. } => Outcome::NotStarted {
            reason: format!("{e}, before it started"),
        },
        other => Outcome::Errored {
            reason: other.to_string(),
        },
    }
}

/// The name of a signal number, for messages.
pub fn signal_name(signal: i64) -> String {
    let name = match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => return format!("signal {signal}"),
    };
    name.to_string()
}

/// Exit codes above 128 are how Docker and shells report death by a signal (128 + n).
pub fn outcome_of_exit(exit_code: i64) -> Outcome {
    match exit_code {
        0 => Outcome::Passed,
        129..=192 => Outcome::Errored {
            reason: format!(
                "the command was killed by {} (exit code {exit_code})",
                signal_name(exit_code - 128)
            ),
        },
        _ => Outcome::Failed { exit_code },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_map_to_outcomes() {
        assert_eq!(outcome_of_exit(0), Outcome::Passed);
        assert_eq!(outcome_of_exit(1), Outcome::Failed { exit_code: 1 });
        assert_eq!(outcome_of_exit(2), Outcome::Failed { exit_code: 2 });
        match outcome_of_exit(139) {
            Outcome::Errored { reason } => assert!(reason.contains("SIGSEGV"), "{reason}"),
            other => panic!("{other:?}"),
        }
        match outcome_of_exit(137) {
            Outcome::Errored { reason } => assert!(reason.contains("SIGKILL"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
}
