//! `--rerun-failed REPORT`: what earlier JUnit reports (a file, a merged report, or a folder of
//! them) say of each case, for `select::rerun` to keep the cases that did not pass there.

use std::path::{Path, PathBuf};

use thiserror::Error;

use super::read::{self, JunitReadError, Outcome, ScannedCase};
use crate::select::rerun::{Rerun, Status};

#[derive(Debug, Error)]
#[error("--rerun-failed `{path}`")]
pub struct RerunReadError {
    path: PathBuf,
    #[source]
    source: JunitReadError,
}

/// Reads the reports at `path`.
pub fn load(path: &Path, include_flaky: bool) -> Result<Rerun, RerunReadError> {
    let wrap = |source| RerunReadError {
        path: path.to_path_buf(),
        source,
    };
    let files = read::report_files(path).map_err(wrap)?;
    let mut rerun = Rerun {
        path: path.to_path_buf(),
        files: files.len(),
        include_flaky,
        ..Rerun::default()
    };
    for file in &files {
        let report = read::scan(file).map_err(wrap)?;
        for case in report.suites.iter().flat_map(|s| &s.cases) {
            rerun.add(case.case_name(), status(case));
        }
    }
    Ok(rerun)
}

fn status(case: &ScannedCase) -> Status {
    match &case.outcome {
        Outcome::Passed if case.flaky => Status::Flaky,
        Outcome::Passed => Status::Passed,
        Outcome::Failed | Outcome::Errored | Outcome::TimedOut | Outcome::NotRun => Status::Again,
        Outcome::Skipped { .. } => Status::Skipped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_status_of_a_report_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let text = r#"<testsuites name="zoo-runner" tests="6" failures="1" errors="2">
<testsuite name="docker:img" tests="6" failures="1" errors="2">
<testcase name="ok" classname="docker:img" time="1"/>
<testcase name="bad" classname="docker:img" time="1"><failure type="failure" message="x"/></testcase>
<testcase name="gone" classname="docker:img" time="1"><error type="infra" message="429"/></testcase>
<testcase name="slow" classname="docker:img" time="1"><error type="timeout" message="t"/></testcase>
<testcase name="cut" classname="docker:img" time="0"><skipped type="not-run" message="i"/></testcase>
<testcase name="off" classname="docker:img" time="0"><skipped type="skip" message="gpu"/></testcase>
<testcase name="wobbly" classname="docker:img" time="1"><flakyFailure type="failure" message="f"/></testcase>
</testsuite></testsuites>"#;
        std::fs::write(dir.path().join("a.xml"), text).unwrap();
        let rerun = load(dir.path(), false).unwrap();
        let of = |m: &str| rerun.statuses[&format!("docker::{m}")];
        assert_eq!(of("ok"), Status::Passed);
        for m in ["bad", "gone", "slow", "cut"] {
            assert_eq!(of(m), Status::Again, "{m}");
        }
        assert_eq!(of("off"), Status::Skipped);
        assert_eq!(of("wobbly"), Status::Flaky);
        assert_eq!(rerun.files, 1);
        let err = load(&dir.path().join("nope.xml"), false).unwrap_err();
        let text = crate::error_chain::chain(&err);
        assert!(
            text.contains("--rerun-failed") && text.contains("does not exist"),
            "{text}"
        );
    }
}
