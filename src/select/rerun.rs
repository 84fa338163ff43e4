//! `--rerun-failed REPORT`: keep the cases that did not pass in an earlier report (a shard's, a
//! merged one, or a folder of them): those that failed, errored, timed out or did not run
//! there. Cases that passed are left out, and flaky ones (passed after a failed attempt) too
//! unless `--rerun-failed-include-flaky` asks for them. The report is read by the app
//! (`report::junit::rerun`) and handed here as plain data, as `--durations` is.

use std::collections::BTreeMap;
use std::path::PathBuf;

use thiserror::Error;

use crate::select::plan::Case;

/// What an earlier report says of a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// Failed, errored, timed out, or did not run (an interrupted run, `--fail-fast`).
    Again,
    /// Passed after a failed attempt.
    Flaky,
    /// Skipped by the spec, or failed as the spec expects.
    Skipped,
    Passed,
}

/// The cases of earlier reports, by `runtime::model`.
#[derive(Debug, Clone, Default)]
pub struct Rerun {
    /// `--rerun-failed PATH`.
    pub path: PathBuf,
    /// How many report files were read.
    pub files: usize,
    pub statuses: BTreeMap<String, Status>,
    /// `--rerun-failed-include-flaky`.
    pub include_flaky: bool,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RerunError {
    #[error(
        "--rerun-failed `{path}`: none of the {selected} selected cases appear in it ({in_report} \
         cases there{example}): is it a report of this zoo, spec and runtime? Give the report of \
         the run to repeat, or the same selection flags as that run"
    )]
    NoneOfTheZoo {
        path: PathBuf,
        selected: usize,
        in_report: usize,
        example: String,
    },
}

/// What `--rerun-failed` kept, for the note the run prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub again: usize,
    pub flaky: usize,
    pub passed: usize,
    /// Selected cases the report does not mention: not rerun.
    pub unknown: usize,
}

impl Rerun {
    /// Records what one report says of a case; a case in several reports counts as its best
    /// (a passing rerun next to the run it repeated means it passed).
    pub fn add(&mut self, case: String, status: Status) {
        let entry = self.statuses.entry(case).or_insert(status);
        *entry = (*entry).max(status);
    }

    /// The cases to run again, in their order. An error when the report names none of the
    /// selected cases (the wrong report, or another zoo's); an empty result when there is
    /// nothing to rerun.
    pub fn select(&self, cases: Vec<Case>) -> Result<(Vec<Case>, Kept), RerunError> {
        let known = cases
            .iter()
            .filter(|c| self.statuses.contains_key(&c.name))
            .count();
        if known == 0 && !cases.is_empty() {
            return Err(RerunError::NoneOfTheZoo {
                path: self.path.clone(),
                selected: cases.len(),
                in_report: self.statuses.len(),
                example: self
                    .statuses
                    .keys()
                    .next()
                    .map(|c| format!(", such as `{c}`"))
                    .unwrap_or_default(),
            });
        }
        let mut kept = Kept {
            again: 0,
            flaky: 0,
            passed: 0,
            unknown: cases.len() - known,
        };
        let cases = cases
            .into_iter()
            .filter(|c| match self.statuses.get(&c.name) {
                Some(Status::Again) => {
                    kept.again += 1;
                    true
                }
                Some(Status::Flaky) => {
                    kept.flaky += 1;
                    self.include_flaky
                }
                Some(Status::Passed) => {
                    kept.passed += 1;
                    false
                }
                Some(Status::Skipped) | None => false,
            })
            .collect();
        Ok((cases, kept))
    }

    /// The run's note: what was kept and what was not.
    pub fn describe(&self, kept: &Kept) -> String {
        let flaky = match (kept.flaky, self.include_flaky) {
            (0, _) => String::new(),
            (n, true) => format!(", {n} flaky (rerun: --rerun-failed-include-flaky)"),
            (n, false) => {
                format!(", {n} flaky left out (--rerun-failed-include-flaky reruns them)")
            }
        };
        let unknown = match kept.unknown {
            0 => String::new(),
            n => format!("; {n} selected case(s) are not in it and are not rerun"),
        };
        format!(
            "--rerun-failed `{}` ({} report(s)): {} case(s) failed, errored, timed out or did \
             not run there{flaky}; {} passed{unknown}",
            self.path.display(),
            self.files,
            kept.again,
            kept.passed,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(model: &str) -> Case {
        Case::for_test(model, "img:1")
    }

    fn names(cases: &[Case]) -> Vec<&str> {
        cases.iter().map(|c| c.model.as_str()).collect()
    }

    #[test]
    fn what_did_not_pass_is_kept_and_flaky_only_when_asked() {
        let mut rerun = Rerun {
            path: "r.xml".into(),
            files: 1,
            ..Rerun::default()
        };
        for (m, s) in [
            ("bad", Status::Again),
            ("ok", Status::Passed),
            ("flaky", Status::Flaky),
            ("off", Status::Skipped),
        ] {
            rerun.add(format!("docker::{m}"), s);
        }
        // A passing rerun beside the run it repeated: passed.
        rerun.add("docker::ok".into(), Status::Again);
        let all = || ["bad", "ok", "flaky", "off", "new"].map(case).to_vec();
        let (kept, note) = rerun.select(all()).unwrap();
        assert_eq!(names(&kept), ["bad"]);
        assert_eq!(
            note,
            Kept {
                again: 1,
                flaky: 1,
                passed: 1,
                unknown: 1
            }
        );
        assert_eq!(
            rerun.describe(&note),
            "--rerun-failed `r.xml` (1 report(s)): 1 case(s) failed, errored, timed out or did \
             not run there, 1 flaky left out (--rerun-failed-include-flaky reruns them); 1 \
             passed; 1 selected case(s) are not in it and are not rerun"
        );
        rerun.include_flaky = true;
        assert_eq!(names(&rerun.select(all()).unwrap().0), ["bad", "flaky"]);
    }

    #[test]
    fn a_report_of_another_zoo_is_refused_and_one_with_nothing_left_is_empty() {
        let mut rerun = Rerun {
            path: "other.xml".into(),
            files: 1,
            ..Rerun::default()
        };
        rerun.add("docker::elsewhere".into(), Status::Again);
        let err = rerun.select(vec![case("a"), case("b")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--rerun-failed `other.xml`: none of the 2 selected cases appear in it (1 cases \
             there, such as `docker::elsewhere`): is it a report of this zoo, spec and runtime? \
             Give the report of the run to repeat, or the same selection flags as that run"
        );
        rerun.add("docker::a".into(), Status::Passed);
        let (kept, _) = rerun.select(vec![case("a"), case("b")]).unwrap();
        assert!(kept.is_empty());
    }
}
