//! What a summary is made from: suites (one per runtime and image) with their properties and
//! cases, each case with its name, outcome, time and message. A run makes it from its own
//! records (so a report lost at the end does not lose the summary), `merge` from the JUnit
//! reports it reads.

use std::collections::HashMap;

use std::sync::Arc;

use crate::record::{Class, Record};
use crate::report::junit::names;
use crate::report::junit::read::ScannedReport;

#[derive(Debug, Clone)]
pub struct Case {
    /// `runtime::model`, the name the runner shows.
    pub name: String,
    pub outcome: Class,
    /// Passed after failed attempts.
    pub flaky: bool,
    /// An error of the outside world (the spec's `infra_failures`): its data could not be
    /// fetched.
    pub infra: bool,
    /// Milliseconds, when known.
    pub time_ms: Option<u64>,
    /// The failure's, error's or skip's message, or why the case did not run; empty for a pass.
    pub message: String,
    /// What its prediction check said, line by line (`crate::report::junit::names`); empty when
    /// there was none.
    pub predictions: Vec<String>,
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
                    outcome: c.outcome.clone(),
                    flaky: c.flaky,
                    infra: c.infra,
                    time_ms: c.time_ms,
                    message: c.message.clone(),
                    predictions: c.predictions.clone(),
                })
                .collect(),
        })
        .collect()
}

/// The suites of a run, from its records: as its JUnit report groups them (one per runtime
/// and image, in the order the cases ran), with the pull properties of each image.
pub fn from_records(records: &[Arc<Record>]) -> Vec<Suite> {
    let mut suites: Vec<Suite> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for r in records {
        let name = r.suite();
        let at = *index.entry(name.clone()).or_insert_with(|| {
            suites.push(Suite {
                name,
                ..Suite::default()
            });
            suites.len() - 1
        });
        let suite = &mut suites[at];
        for pair in names::image_properties(r) {
            let pull = pair.0 == names::PULL_SECONDS || pair.0 == names::PULLED_BYTES;
            if pull && !suite.properties.contains(&pair) {
                suite.properties.push(pair);
            }
        }
        suite.cases.push(case_of(r));
    }
    suites
}

fn case_of(r: &Record) -> Case {
    Case {
        name: r.name.clone(),
        outcome: r.outcome().class(),
        flaky: r.flaky(),
        infra: r.outcome().is_infra(),
        time_ms: Some(u64::try_from(r.total_duration().as_millis()).unwrap_or(u64::MAX)),
        message: r.outcome().message(),
        predictions: r
            .last
            .facts
            .predictions
            .as_ref()
            .map(names::prediction_lines)
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::facts::{Fetched, ImageFacts};
    use crate::record::Outcome;
    use crate::report::junit::read;
    use crate::report::junit::write::tests::record;
    use crate::report::junit::{Flavor, ReportTarget};

    /// A run's records and the JUnit report written from them give the same suites.
    #[test]
    fn records_and_their_report_read_alike() {
        let mut records = vec![
            record("ok", vec![Outcome::Passed]),
            record(
                "flaky",
                vec![
                    Outcome::Failed {
                        message: "first".into(),
                    },
                    Outcome::Passed,
                ],
            ),
            record(
                "bad",
                vec![Outcome::Failed {
                    message: "exit code 1".into(),
                }],
            ),
            record(
                "slow",
                vec![Outcome::TimedOut {
                    message: "ran past 1s".into(),
                }],
            ),
            record(
                "xfail",
                vec![Outcome::ExpectedFailure {
                    reason: "dead link".into(),
                    message: "exit code 1".into(),
                }],
            ),
            record(
                "cut",
                vec![Outcome::NotRun {
                    reason: "the run was interrupted before this case started".into(),
                }],
            ),
        ];
        // The cases of an image pulled in 2.5 s.
        let pulled = Arc::new(ImageFacts {
            id: Some("sha256:abc".into()),
            fetched: Some(Fetched {
                elapsed: std::time::Duration::from_millis(2500),
                bytes: 7,
            }),
            ..ImageFacts::default()
        });
        for r in records.iter_mut() {
            Arc::get_mut(r).expect("one owner").image_facts = Some(Arc::clone(&pulled));
        }
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
                .filter(|(k, _)| k == names::PULL_SECONDS)
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
            assert_eq!(a.predictions, b.predictions);
        }
        assert_eq!(made[0].cases[5].outcome, Class::NotRun);
        assert!(made[0].cases[1].flaky);
    }
}
