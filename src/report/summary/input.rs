//! What a summary is made from: suites (one per runtime and image) with their properties and
//! cases, each case with its name, outcome, time and message. A run makes it from its own
//! records (so a report lost at the end does not lose the summary), `merge` from the JUnit
//! reports it reads.

use std::collections::HashMap;

use crate::report::junit::read::{self, ScannedReport};
use crate::run::record::{Record, Status};

/// The testsuite properties the summary reads: what pulling the image took.
const PULL_KEYS: [&str; 2] = ["pull-seconds", "pulled-bytes"];

/// How a case ended, as the summary tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed,
    Errored,
    TimedOut,
    /// Skipped by the spec (`skip`), an expected failure (`expected-failure`), or another
    /// tool's skip (its type, or none).
    Skipped {
        kind: String,
    },
    /// Never started: the run was interrupted, or stopped early (--fail-fast).
    NotRun,
}

impl Outcome {
    pub fn is_bad(&self) -> bool {
        matches!(self, Outcome::Failed | Outcome::Errored | Outcome::TimedOut)
    }

    /// True when the case ran (an expected failure ran, and failed as expected).
    pub fn ran(&self) -> bool {
        match self {
            Outcome::NotRun => false,
            Outcome::Skipped { kind } => kind == "expected-failure",
            _ => true,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Case {
    /// `runtime::model`, the name the runner shows.
    pub name: String,
    pub outcome: Outcome,
    /// Passed after failed attempts.
    pub flaky: bool,
    /// Milliseconds, when known.
    pub time_ms: Option<u64>,
    /// The failure's, error's or skip's message, or why the case did not run; empty for a pass.
    pub message: String,
}

#[derive(Debug, Clone, Default)]
pub struct Suite {
    /// `runtime:image`.
    pub name: String,
    pub properties: Vec<(String, String)>,
    pub cases: Vec<Case>,
}

/// What the summary says besides the cases: how the run ended, where the cases do not tell.
#[derive(Debug, Clone, Default)]
pub struct Notes {
    /// The signal that interrupted the run (`SIGINT`).
    pub interrupted: Option<String>,
    /// Why the run selected no case.
    pub why_empty: Option<String>,
    /// Why the JUnit report could not be written.
    pub report_lost: Option<String>,
}

/// The suites of JUnit reports, as they read.
pub fn from_reports(reports: &[ScannedReport]) -> Vec<Suite> {
    reports
        .iter()
        .flat_map(|r| &r.suites)
        .map(|suite| Suite {
            name: suite.name.clone(),
            properties: suite.properties.clone(),
            cases: suite
                .cases
                .iter()
                .map(|c| Case {
                    name: c.case_name(),
                    outcome: match &c.outcome {
                        read::Outcome::Passed => Outcome::Passed,
                        read::Outcome::Failed => Outcome::Failed,
                        read::Outcome::Errored { timeout: true } => Outcome::TimedOut,
                        read::Outcome::Errored { timeout: false } => Outcome::Errored,
                        read::Outcome::Skipped { kind } if kind == "not-run" => Outcome::NotRun,
                        read::Outcome::Skipped { kind } => Outcome::Skipped { kind: kind.clone() },
                    },
                    flaky: c.flaky,
                    time_ms: c.time_ms,
                    message: c.message.clone(),
                })
                .collect(),
        })
        .collect()
}

/// The suites of a run, from its records: as its JUnit report groups them (one per runtime
/// and image, in the order the cases ran), with the pull properties of each image.
pub fn from_records(records: &[Record]) -> Vec<Suite> {
    let mut suites: Vec<Suite> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for r in records {
        let name = format!("{}:{}", r.runtime.name(), r.image);
        let at = *index.entry(name.clone()).or_insert_with(|| {
            suites.push(Suite {
                name,
                ..Suite::default()
            });
            suites.len() - 1
        });
        let suite = &mut suites[at];
        for (key, value) in &r.properties {
            let pair = (key.clone(), value.clone());
            if PULL_KEYS.contains(&key.as_str()) && !suite.properties.contains(&pair) {
                suite.properties.push(pair);
            }
        }
        suite.cases.push(case_of(r));
    }
    suites
}

fn case_of(r: &Record) -> Case {
    let (outcome, message) = match r.status() {
        Status::Passed => (Outcome::Passed, String::new()),
        Status::Failed { message } => (Outcome::Failed, message.clone()),
        Status::Errored { message } => (Outcome::Errored, message.clone()),
        Status::TimedOut { message } => (Outcome::TimedOut, message.clone()),
        Status::Skipped { reason } => (
            Outcome::Skipped {
                kind: "skip".into(),
            },
            reason.clone(),
        ),
        Status::ExpectedFailure { reason, message } => (
            Outcome::Skipped {
                kind: "expected-failure".into(),
            },
            format!("expected failure ({reason}): {message}"),
        ),
        Status::NotRun { reason } => (Outcome::NotRun, reason.clone()),
    };
    Case {
        name: format!("{}::{}", r.runtime.name(), r.model),
        flaky: outcome == Outcome::Passed && !r.earlier.is_empty(),
        outcome,
        time_ms: Some(u64::try_from(r.total_duration().as_millis()).unwrap_or(u64::MAX)),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::junit::write::tests::record;
    use crate::report::junit::{Flavor, ReportTarget};

    /// A run's records and the JUnit report written from them give the same suites.
    #[test]
    fn records_and_their_report_read_alike() {
        let mut records = vec![
            record("ok", vec![Status::Passed]),
            record(
                "flaky",
                vec![
                    Status::Failed {
                        message: "first".into(),
                    },
                    Status::Passed,
                ],
            ),
            record(
                "bad",
                vec![Status::Failed {
                    message: "exit code 1".into(),
                }],
            ),
            record(
                "slow",
                vec![Status::TimedOut {
                    message: "ran past 1s".into(),
                }],
            ),
            record(
                "xfail",
                vec![Status::ExpectedFailure {
                    reason: "dead link".into(),
                    message: "exit code 1".into(),
                }],
            ),
            record(
                "cut",
                vec![Status::NotRun {
                    reason: "the run was interrupted before this case started".into(),
                }],
            ),
        ];
        records[0]
            .properties
            .push(("pull-seconds".into(), "2.500".into()));
        records[1]
            .properties
            .push(("pull-seconds".into(), "2.500".into()));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junit.xml");
        ReportTarget::prepare(&path)
            .unwrap()
            .write(&records, &[], Flavor::Strict)
            .unwrap();
        let read = from_reports(&[read::scan(&path).unwrap()]);
        let made = from_records(&records);
        assert_eq!(made.len(), 1);
        assert_eq!(read.len(), 1);
        let pulls = |s: &Suite| -> Vec<(String, String)> {
            s.properties
                .iter()
                .filter(|(k, _)| PULL_KEYS.contains(&k.as_str()))
                .cloned()
                .collect()
        };
        assert_eq!(made[0].name, read[0].name);
        assert_eq!(pulls(&made[0]), pulls(&read[0]));
        assert_eq!(pulls(&made[0]), [("pull-seconds".into(), "2.500".into())]);
        for (a, b) in made[0].cases.iter().zip(&read[0].cases) {
            assert_eq!(
                (&a.name, &a.outcome, a.flaky, a.time_ms, &a.message),
                (&b.name, &b.outcome, b.flaky, b.time_ms, &b.message)
            );
        }
        assert_eq!(made[0].cases[5].outcome, Outcome::NotRun);
        assert!(made[0].cases[1].flaky);
    }
}
