//! How a case came out: the one outcome type, from the verdict to the terminal, the JUnit
//! report and the summary; and its [`Class`], which is all a report read back can tell of it.

use super::Failure;

/// How a case came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    /// The model ran and failed (or passed while marked expected to fail): what it said.
    Failed {
        message: String,
    },
    /// Something kept the model from running, or killed it from outside.
    Errored {
        error: Failure,
    },
    /// Stopped at its timeout.
    TimedOut {
        message: String,
    },
    /// Marked `skip` in the spec.
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

/// The kind of an outcome: what the counts count and a JUnit report keeps.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    Passed,
    Failed,
    Errored,
    TimedOut,
    /// A skip of this kind: the spec's `skip`, an `expected-failure`, or another tool's type
    /// (or none).
    Skipped {
        kind: String,
    },
    /// Never started (JUnit: a skip of kind `not-run`).
    NotRun,
}

/// The JUnit `skipped` types the runner writes.
pub const SKIP: &str = "skip";
pub const EXPECTED_FAILURE: &str = "expected-failure";
pub const NOT_RUN: &str = "not-run";

impl Outcome {
    pub fn class(&self) -> Class {
        match self {
            Outcome::Passed => Class::Passed,
            Outcome::Failed { .. } => Class::Failed,
            Outcome::Errored { .. } => Class::Errored,
            Outcome::TimedOut { .. } => Class::TimedOut,
            Outcome::Skipped { .. } => Class::Skipped { kind: SKIP.into() },
            Outcome::ExpectedFailure { .. } => Class::Skipped {
                kind: EXPECTED_FAILURE.into(),
            },
            Outcome::NotRun { .. } => Class::NotRun,
        }
    }

    /// True for the outcomes that make the run fail.
    pub fn is_bad(&self) -> bool {
        self.class().is_bad()
    }

    /// An error of the outside world (the spec's `infra_failures`), not of the model.
    pub fn is_infra(&self) -> bool {
        match self {
            Outcome::Errored { error } => error
                .error()
                .downcast_ref::<super::InfraFailure>()
                .is_some(),
            _ => false,
        }
    }

    /// What it says: the failure's or error's message, the skip's reason; empty for a pass.
    pub fn message(&self) -> String {
        match self {
            Outcome::Passed => String::new(),
            Outcome::Failed { message } | Outcome::TimedOut { message } => message.clone(),
            Outcome::Errored { error } => error.to_string(),
            Outcome::Skipped { reason } | Outcome::NotRun { reason } => reason.clone(),
            Outcome::ExpectedFailure { reason, message } => {
                format!("expected failure ({reason}): {message}")
            }
        }
    }

    /// A one-line description for the terminal.
    pub fn summary(&self) -> String {
        match self {
            Outcome::Passed => "passed".into(),
            Outcome::Failed { message } => format!("failed: {message}"),
            Outcome::Errored { error } => format!("error: {error}"),
            Outcome::TimedOut { message } => format!("timed out: {message}"),
            Outcome::Skipped { reason } => format!("skipped: {reason}"),
            Outcome::ExpectedFailure { reason, .. } => format!("expected failure: {reason}"),
            Outcome::NotRun { reason } => format!("not run: {reason}"),
        }
    }
}

impl Class {
    pub fn is_bad(&self) -> bool {
        matches!(self, Class::Failed | Class::Errored | Class::TimedOut)
    }

    /// True when the case ran (an expected failure ran, and failed as expected).
    pub fn ran(&self) -> bool {
        match self {
            Class::NotRun => false,
            Class::Skipped { kind } => kind == EXPECTED_FAILURE,
            _ => true,
        }
    }

    /// A JUnit `skipped` of this type.
    pub fn skipped(kind: &str) -> Class {
        if kind == NOT_RUN {
            Class::NotRun
        } else {
            Class::Skipped { kind: kind.into() }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_is_said_once() {
        let line = Outcome::NotRun {
            reason: "the run was interrupted while `img:1` was being pulled".into(),
        }
        .summary();
        assert_eq!(
            line,
            "not run: the run was interrupted while `img:1` was being pulled"
        );
    }

    #[test]
    fn classes_of_outcomes_and_of_junit_skips() {
        assert!(Outcome::TimedOut {
            message: "x".into()
        }
        .is_bad());
        assert!(!Outcome::NotRun { reason: "x".into() }.is_bad());
        assert_eq!(Class::skipped(NOT_RUN), Class::NotRun);
        assert!(Class::skipped(EXPECTED_FAILURE).ran());
        assert!(!Class::skipped(SKIP).ran());
    }
}
