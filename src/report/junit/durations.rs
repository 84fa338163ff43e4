//! `--durations PATH`: the times of earlier runs, read from the JUnit reports the runner wrote
//! (a file, a folder of them, or a merged report). A case reported `not-run` (an interrupted
//! run) has no recorded time.

use std::path::{Path, PathBuf};

use thiserror::Error;

use super::read::{self, JunitReadError, Outcome};
use crate::partition::durations::Durations;

#[derive(Debug, Error)]
#[error("--durations `{path}`")]
pub struct DurationsError {
    path: PathBuf,
    #[source]
    source: JunitReadError,
}

/// The durations the reports at `path` recorded.
pub fn load(path: &Path) -> Result<Durations, DurationsError> {
    let wrap = |source| DurationsError {
        path: path.to_path_buf(),
        source,
    };
    let files = read::report_files(path).map_err(wrap)?;
    let mut recorded = Vec::new();
    let mut pulls = Vec::new();
    for file in &files {
        let report = read::scan(file).map_err(wrap)?;
        for suite in &report.suites {
            for (key, value) in &suite.properties {
                if key == super::names::PULL_SECONDS {
                    if let Some(ms) = read::seconds_to_ms(value) {
                        pulls.push((suite.name.clone(), ms));
                    }
                }
            }
        }
        for case in report.suites.iter().flat_map(|s| &s.cases) {
            let not_run = case.outcome == Outcome::NotRun;
            if let (Some(ms), false) = (case.time_ms, not_run) {
                recorded.push((case.case_name(), ms));
            }
        }
    }
    Ok(Durations::from_times(path.to_path_buf(), files.len(), recorded).with_pulls(pulls))
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
        let d = load(dir.path()).unwrap();
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
    fn pulls_are_read_from_the_suites_and_unknown_images_get_their_median() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.xml");
        let text = report(&[("m1", "1.0", "")]).replace(
            "errors=\"0\">\n<testcase",
            "errors=\"0\">\n<properties><property name=\"pull-seconds\" value=\"90.5\"/>\
             <property name=\"pull-seconds\" value=\"30\"/></properties>\n<testcase",
        );
        std::fs::write(&path, text).unwrap();
        let d = load(&path).unwrap();
        assert_eq!(d.pull_ms("docker:img"), 90_500, "the longest pull");
        assert_eq!(
            d.pull_ms("docker:other"),
            90_500,
            "the median of those known"
        );
        assert_eq!(Durations::none().pull_ms("docker:img"), 0);
    }

    #[test]
    fn a_file_that_is_not_junit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.xml");
        std::fs::write(&path, "model,seconds\nm1,3\n").unwrap();
        let err = crate::error_chain::chain(&load(&path).unwrap_err());
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
        let d = load(&path).unwrap();
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
        assert_eq!(load(&path).unwrap().median_ms(), None);
    }
}
