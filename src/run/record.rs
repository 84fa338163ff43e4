//! What the runner keeps of each case for the report: libtest-mimic keeps no per-test results,
//! so the harness records them here.

use std::time::Duration;

use crate::capture::Output;
use crate::select::plan::{Case, RuntimeKind};

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

/// One attempt at a case (several with --retries). Its output is spooled on disk.
#[derive(Debug)]
pub struct Attempt {
    pub status: Status,
    pub stdout: Output,
    pub stderr: Output,
    pub duration: Duration,
}

impl Attempt {
    /// A case that never started (skipped, not run, or kept from running): no output, no time.
    pub fn not_started(status: Status) -> Self {
        Self {
            status,
            stdout: Output::empty(),
            stderr: Output::empty(),
            duration: Duration::ZERO,
        }
    }
}

/// What the report keeps of a case. Small: the output stays in spool files.
#[derive(Debug)]
pub struct Record {
    pub model: String,
    pub runtime: RuntimeKind,
    pub image: String,
    /// Failed or errored attempts before the last one (with --retries).
    pub earlier: Vec<Attempt>,
    /// The attempt that decides the case.
    pub last: Attempt,
    pub properties: Vec<(String, String)>,
}

impl Record {
    pub fn new(
        case: &Case,
        earlier: Vec<Attempt>,
        last: Attempt,
        properties: Vec<(String, String)>,
    ) -> Self {
        Self {
            model: case.model.clone(),
            runtime: case.runtime,
            image: case.image.clone(),
            earlier,
            last,
            properties,
        }
    }

    pub fn status(&self) -> &Status {
        &self.last.status
    }

    pub fn attempts(&self) -> usize {
        self.earlier.len() + 1
    }

    pub fn total_duration(&self) -> Duration {
        self.earlier.iter().map(|a| a.duration).sum::<Duration>() + self.last.duration
    }
}
