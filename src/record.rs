//! What the runner keeps of each case for the report: libtest-mimic keeps no per-test results,
//! so the harness records them here.

use std::time::Duration;

use crate::plan::RuntimeKind;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Passed,
    /// The model ran and failed (or passed while marked expected-to-fail).
    Failed {
        message: String,
    },
    /// Something kept the model from running, or killed it from outside.
    Errored {
        message: String,
    },
    /// Stopped at its timeout.
    TimedOut {
        message: String,
    },
    /// Marked skip in the spec.
    Skipped {
        reason: String,
    },
    /// Failed, as the spec said it would.
    ExpectedFailure {
        reason: String,
        message: String,
    },
    /// Never started: the run was interrupted, or stopped early by --fail-fast.
    NotRun {
        reason: String,
    },
}

impl Status {
    /// True for the outcomes that make the run fail.
    pub fn is_bad(&self) -> bool {
        matches!(
            self,
            Status::Failed { .. } | Status::Errored { .. } | Status::TimedOut { .. }
        )
    }

    /// A one-line description for the terminal.
    pub fn summary(&self) -> String {
        match self {
            Status::Passed => "passed".into(),
            Status::Failed { message } => format!("failed: {message}"),
            Status::Errored { message } => format!("error: {message}"),
            Status::TimedOut { message } => format!("timed out: {message}"),
            Status::Skipped { reason } => format!("skipped: {reason}"),
            Status::ExpectedFailure { reason, .. } => format!("expected failure: {reason}"),
            Status::NotRun { reason } => format!("not run: {reason}"),
        }
    }
}

/// One attempt at a case (several with --retries).
#[derive(Debug, Clone)]
pub struct Attempt {
    pub status: Status,
    pub stdout: String,
    pub stderr: String,
    pub duration: Duration,
}

#[derive(Debug, Clone)]
pub struct Record {
    pub model: String,
    pub runtime: RuntimeKind,
    pub image: String,
    /// Attempts in order; the last one decides, the earlier ones are reruns.
    pub attempts: Vec<Attempt>,
    pub properties: Vec<(String, String)>,
}

impl Record {
    pub fn last(&self) -> Option<&Attempt> {
        self.attempts.last()
    }

    pub fn status(&self) -> &Status {
        static NOT_RUN: std::sync::OnceLock<Status> = std::sync::OnceLock::new();
        self.last().map(|a| &a.status).unwrap_or_else(|| {
            NOT_RUN.get_or_init(|| Status::NotRun {
                reason: "never attempted".into(),
            })
        })
    }

    pub fn total_duration(&self) -> Duration {
        self.attempts.iter().map(|a| a.duration).sum()
    }
}
