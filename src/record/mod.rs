//! The typed results every stage shares, from the runtime up to the report: a runtime's name,
//! an error kept with its sources, the facts a result carries, the one outcome type, the one
//! tally, and what the run keeps of each case (its [`Record`]).

mod counts;
pub mod facts;
mod failure;
pub mod infra;
mod name;
pub mod outcome;
pub mod predictions;

use std::sync::Arc;
use std::time::Duration;

pub use counts::Counts;
pub use failure::Failure;
pub use infra::InfraFailure;
pub use name::RuntimeName;
pub use outcome::{Class, Outcome};

use crate::capture::Output;
use facts::{CaseFacts, ImageFacts};

/// One attempt at a case (several with --retries). Its output is spooled on disk.
#[derive(Debug)]
pub struct Attempt {
    pub outcome: Outcome,
    pub stdout: Output,
    pub stderr: Output,
    pub duration: Duration,
    pub facts: CaseFacts,
}

impl Attempt {
    /// A case that never started (skipped, not run, or kept from running): no output, no time.
    pub fn not_started(outcome: Outcome) -> Self {
        Self {
            outcome,
            stdout: Output::empty(),
            stderr: Output::empty(),
            duration: Duration::ZERO,
            facts: CaseFacts::default(),
        }
    }
}

/// What the run keeps of a case. Small: the output stays in spool files.
#[derive(Debug)]
pub struct Record {
    /// `runtime::model`, the name the terminal shows and filters on.
    pub name: String,
    pub model: String,
    pub runtime: RuntimeName,
    /// The Docker image the case is of (its testsuite is `runtime:image`).
    pub image: String,
    /// What is the same for every case of the image (shared by its records); `None` when
    /// the image never got ready (or the case did not ask for it).
    pub image_facts: Option<Arc<ImageFacts>>,
    /// Failed or errored attempts before the last one (with --retries).
    pub earlier: Vec<Attempt>,
    /// The attempt that decides the case.
    pub last: Attempt,
}

impl Record {
    pub fn outcome(&self) -> &Outcome {
        &self.last.outcome
    }

    pub fn attempts(&self) -> usize {
        self.earlier.len() + 1
    }

    /// Passed after failed attempts.
    pub fn flaky(&self) -> bool {
        !self.earlier.is_empty() && self.last.outcome == Outcome::Passed
    }

    /// Every attempt's time.
    pub fn total_duration(&self) -> Duration {
        self.earlier.iter().map(|a| a.duration).sum::<Duration>() + self.last.duration
    }

    /// `runtime:image`: the record's testsuite.
    pub fn suite(&self) -> String {
        format!("{}:{}", self.runtime, self.image)
    }
}

/// Counts records.
pub fn count<'a>(records: impl IntoIterator<Item = &'a Record>) -> Counts {
    let mut counts = Counts::default();
    for r in records {
        counts.add(&r.outcome().class(), r.flaky(), r.total_duration());
    }
    counts
}
