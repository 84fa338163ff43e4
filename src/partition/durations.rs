//! `--durations PATH`: how long each case took before, from JUnit reports the runner wrote (a
//! file, a folder of them, or a merged report), to balance `--partition time:M/N`.
//!
//! A case is known by `runtime::model` (the testcase's name and the runtime its classname
//! starts with). A case with no recorded time counts as the median of the recorded ones; a case
//! reported `not-run` (an interrupted run) has no recorded time. A case recorded in several
//! reports counts as the mean of its times. Reports that record no time at all have no median:
//! every case then weighs the same, as without `--durations`, and the callers say so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::report::junit::read::{self, JunitReadError, Outcome};

/// The weight of a case that took no measurable time: every case costs a container start.
const MIN_MS: u64 = 1;
/// The weight of every case when there is no median (no reports, or no time in them): a
/// placeholder that only makes the cases equal, never shown as a time.
const EQUAL_MS: u64 = 1000;

#[derive(Debug, Error)]
#[error("--durations `{path}`")]
pub struct DurationsError {
    path: PathBuf,
    #[source]
    source: JunitReadError,
}

#[derive(Debug, Clone, Default)]
pub struct Durations {
    /// `runtime::model` -> milliseconds.
    times: BTreeMap<String, u64>,
    /// The median of the recorded times; none when no case has one.
    median: Option<u64>,
    /// How many report files were read.
    pub files: usize,
}

impl Durations {
    pub fn load(path: &Path) -> Result<Self, DurationsError> {
        let wrap = |source| DurationsError {
            path: path.to_path_buf(),
            source,
        };
        let files = read::report_files(path).map_err(wrap)?;
        let mut sums: BTreeMap<String, (u128, u64)> = BTreeMap::new();
        for file in &files {
            let report = read::scan(file).map_err(wrap)?;
            for case in report.suites.iter().flat_map(|s| &s.cases) {
                let not_run =
                    matches!(&case.outcome, Outcome::Skipped { kind } if kind == "not-run");
                if let (Some(ms), false) = (case.time_ms, not_run) {
                    let e = sums.entry(case.case_name()).or_default();
                    e.0 += u128::from(ms);
                    e.1 += 1;
                }
            }
        }
        let times: BTreeMap<String, u64> = sums
            .into_iter()
            .map(|(name, (sum, n))| {
                let mean = (sum / u128::from(n.max(1))) as u64;
                (name, mean.max(MIN_MS))
            })
            .collect();
        Ok(Self {
            median: median(times.values().copied()),
            times,
            files: files.len(),
        })
    }

    /// Every case weighs the same: no earlier times.
    pub fn none() -> Self {
        Self::default()
    }

    /// The expected time of a case (`runtime::model`), in milliseconds: recorded, or the median.
    /// With no recorded time at all, every case gets the same weight (which is no time).
    pub fn weight(&self, case_name: &str) -> u64 {
        self.times
            .get(case_name)
            .copied()
            .or(self.median)
            .unwrap_or(EQUAL_MS)
    }

    /// True when the reports recorded at least one case's time.
    pub fn has_times(&self) -> bool {
        !self.times.is_empty()
    }

    pub fn is_known(&self, case_name: &str) -> bool {
        self.times.contains_key(case_name)
    }

    /// The median of the recorded times; none when the reports recorded no time.
    pub fn median_ms(&self) -> Option<u64> {
        self.median
    }
}

/// The median (the lower middle one of an even count, so it is always a recorded time).
fn median(values: impl Iterator<Item = u64>) -> Option<u64> {
    let mut all: Vec<u64> = values.collect();
    if all.is_empty() {
        return None;
    }
    all.sort_unstable();
    Some(all[(all.len() - 1) / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(cases: &[(&str, &str, &str)]) -> String {
        let mut text = String::from("<testsuites name=\"zoo-runner\" tests=\"0\" failures=\"0\" errors=\"0\">\n<testsuite name=\"docker:img\" tests=\"0\" failures=\"0\" errors=\"0\">\n");
        for (name, time, inner) in cases {
            text.push_str(&format!(
                "<testcase name=\"{name}\" classname=\"docker:img\" time=\"{time}\">{inner}</testcase>\n"
            ));
        }
        text + "</testsuite>\n</testsuites>\n"
    }

    #[test]
    fn known_cases_keep_their_time_and_others_get_the_median() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        std::fs::write(
            dir.path().join("a/one.xml"),
            report(&[
                ("m1", "1.0", ""),
                ("m2", "3.0", ""),
                ("m3", "100.0", ""),
                (
                    "cut",
                    "0",
                    "<skipped type=\"not-run\" message=\"interrupted\"/>",
                ),
            ]),
        )
        .unwrap();
        std::fs::write(dir.path().join("two.xml"), report(&[("m1", "3.0", "")])).unwrap();
        let d = Durations::load(dir.path()).unwrap();
        assert_eq!(d.files, 2);
        assert_eq!(d.weight("docker::m1"), 2000, "mean of 1s and 3s");
        assert_eq!(d.weight("docker::m3"), 100_000);
        assert!(!d.is_known("docker::cut"), "not-run is no measurement");
        assert_eq!(d.median_ms(), Some(3000));
        assert!(d.has_times());
        assert_eq!(d.weight("docker::unknown"), 3000);
        assert_eq!(
            d.weight("singularity::m1"),
            3000,
            "another runtime is another case"
        );
    }

    #[test]
    fn a_file_that_is_not_junit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.xml");
        std::fs::write(&path, "model,seconds\nm1,3\n").unwrap();
        let err = crate::error_chain::chain(&Durations::load(&path).unwrap_err());
        assert!(
            err.contains("--durations") && err.contains("not a JUnit report"),
            "{err}"
        );
    }

    #[test]
    fn no_times_at_all_weigh_every_case_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.xml");
        std::fs::write(&path, report(&[])).unwrap();
        let d = Durations::load(&path).unwrap();
        assert_eq!(d.weight("docker::a"), d.weight("docker::b"));
        assert!(!d.has_times());
        assert_eq!(
            d.median_ms(),
            None,
            "no time recorded: no median to count from"
        );
        // Only not-run cases: still nothing measured.
        std::fs::write(
            &path,
            report(&[(
                "cut",
                "0",
                "<skipped type=\"not-run\" message=\"interrupted\"/>",
            )]),
        )
        .unwrap();
        assert_eq!(Durations::load(&path).unwrap().median_ms(), None);
        assert_eq!(median([5, 1, 3, 2].into_iter()), Some(2));
    }
}
