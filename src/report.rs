//! Records -> JUnit XML (quick-junit), written atomically (temp file + rename).
//!
//! One testsuite per runtime and image, one testcase per model (classname `runtime:image`).
//! A model that ran and failed is a `failure`; what kept it from running is an `error`; skips
//! and expected failures are `skipped` with their reason; earlier attempts of a retried case are
//! `flakyFailure`/`flakyError` (passed at last) or `rerunFailure`/`rerunError`. Container stdout
//! and stderr go to `system-out` and `system-err`. quick-junit drops what XML cannot hold (ANSI
//! escapes, control characters), and the captures were already made valid UTF-8, so the file
//! parses whatever a container printed.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use quick_junit::{
    FlakyOrRerun, NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestRerun, TestSuite,
};
use thiserror::Error;

use crate::record::{Attempt, Record, Status};

#[derive(Debug, Error)]
pub enum ReportError {
    #[error("failed to write the JUnit report `{path}`: {reason}")]
    Write {
        path: PathBuf,
        /// Shown in the message, so not chained as a source as well.
        reason: std::io::Error,
    },
    #[error("failed to serialize the JUnit report: {0}")]
    Serialize(#[from] quick_junit::SerializeError),
}

/// Builds the report; `extra` properties (run id, runner version, runtime versions) go on
/// every suite.
pub fn build(records: &[Record], extra: &[(String, String)]) -> Report {
    let mut suites: BTreeMap<(String, String), Vec<&Record>> = BTreeMap::new();
    for r in records {
        suites
            .entry((r.runtime.name().to_string(), r.image.clone()))
            .or_default()
            .push(r);
    }
    let mut report = Report::new("zoo-runner");
    for ((runtime, image), records) in suites {
        let mut suite = TestSuite::new(format!("{runtime}:{image}"));
        suite.add_properties(
            extra
                .iter()
                .map(|(k, v)| Property::new(k.as_str(), v.as_str())),
        );
        suite.add_test_cases(records.into_iter().map(test_case));
        report.add_test_suite(suite);
    }
    report
}

fn test_case(r: &Record) -> TestCase {
    let mut status = match r.status() {
        Status::Passed => TestCaseStatus::success(),
        Status::Failed { message } => non_success(NonSuccessKind::Failure, "failure", message),
        Status::Errored { message } => non_success(NonSuccessKind::Error, "error", message),
        Status::TimedOut { message } => non_success(NonSuccessKind::Error, "timeout", message),
        Status::Skipped { reason } => skipped("skip", reason),
        Status::ExpectedFailure { reason, message } => skipped(
            "expected-failure",
            &format!("expected failure ({reason}): {message}"),
        ),
        Status::NotRun { reason } => skipped("not-run", reason),
    };
    if !r.earlier.is_empty() {
        status.add_reruns(r.earlier.iter().filter_map(rerun));
        status.set_rerun_kind(FlakyOrRerun::Rerun);
    }
    let mut case = TestCase::new(r.model.as_str(), status);
    case.set_classname(format!("{}:{}", r.runtime.name(), r.image));
    case.set_time(r.total_duration());
    case.add_properties(
        r.properties
            .iter()
            .map(|(k, v)| Property::new(k.as_str(), v.as_str())),
    );
    if r.attempts() > 1 {
        case.add_property(Property::new("attempts", r.attempts().to_string()));
    }
    if !r.last.stdout.is_empty() {
        case.set_system_out(r.last.stdout.as_str());
    }
    if !r.last.stderr.is_empty() {
        case.set_system_err(r.last.stderr.as_str());
    }
    case
}

fn non_success(kind: NonSuccessKind, ty: &str, message: &str) -> TestCaseStatus {
    let mut s = TestCaseStatus::non_success(kind);
    s.set_message(message).set_type(ty);
    s
}

fn skipped(ty: &str, message: &str) -> TestCaseStatus {
    let mut s = TestCaseStatus::skipped();
    s.set_message(message).set_type(ty);
    s
}

/// An earlier attempt, kept whole (message and output) in the report.
fn rerun(a: &Attempt) -> Option<TestRerun> {
    let (kind, ty, message) = match &a.status {
        Status::Failed { message } => (NonSuccessKind::Failure, "failure", message),
        Status::Errored { message } => (NonSuccessKind::Error, "error", message),
        Status::TimedOut { message } => (NonSuccessKind::Error, "timeout", message),
        _ => return None,
    };
    let mut rerun = TestRerun::new(kind);
    rerun
        .set_type(ty)
        .set_message(message.as_str())
        .set_time(a.duration)
        .set_system_out(a.stdout.as_str())
        .set_system_err(a.stderr.as_str());
    Some(rerun)
}

/// Writes the report next to its final path, then renames it into place, so a reader never
/// sees half a file.
pub fn write(report: &Report, path: &Path) -> Result<(), ReportError> {
    let io_err = |reason| ReportError::Write {
        path: path.to_path_buf(),
        reason,
    };
    let xml = report.to_string()?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_err)?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("junit.xml"),
        std::process::id()
    ));
    let mut file = std::fs::File::create(&tmp).map_err(io_err)?;
    file.write_all(xml.as_bytes()).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::RuntimeKind;
    use std::time::Duration;

    fn record(model: &str, attempts: Vec<Status>) -> Record {
        let mut attempts: Vec<Attempt> = attempts
            .into_iter()
            .enumerate()
            .map(|(i, status)| Attempt {
                status,
                stdout: format!("out {i} \u{1b}[31mred\u{1b}[0m ]]> <&> \u{0}\u{7}"),
                stderr: format!("err {i} \u{fffd}"),
                duration: Duration::from_millis(5),
            })
            .collect();
        let last = attempts.pop().expect("a test record has an attempt");
        Record {
            model: model.into(),
            runtime: RuntimeKind::Docker,
            image: "img:1".into(),
            earlier: attempts,
            last,
            properties: vec![("image-id".into(), "sha256:abc".into())],
        }
    }

    fn parse(xml: &str) -> roxmltree::Document<'_> {
        roxmltree::Document::parse(xml).expect("strict XML parser accepts the report")
    }

    #[test]
    fn statuses_map_to_junit_elements() {
        let records = vec![
            record("ok", vec![Status::Passed]),
            record(
                "bad",
                vec![Status::Failed {
                    message: "exit code 1: RuntimeError: x".into(),
                }],
            ),
            record(
                "gone",
                vec![Status::Errored {
                    message: "image `img:1` is missing".into(),
                }],
            ),
            record(
                "slow",
                vec![Status::TimedOut {
                    message: "ran past 1s".into(),
                }],
            ),
            record(
                "skip",
                vec![Status::Skipped {
                    reason: "too big".into(),
                }],
            ),
            record(
                "xfail",
                vec![Status::ExpectedFailure {
                    reason: "dead link".into(),
                    message: "exit code 1".into(),
                }],
            ),
        ];
        let xml = build(&records, &[("run-id".into(), "r1".into())])
            .to_string()
            .unwrap();
        let doc = parse(&xml);
        let case = |name: &str| {
            doc.descendants()
                .find(|n| n.has_tag_name("testcase") && n.attribute("name") == Some(name))
                .unwrap_or_else(|| panic!("testcase {name}"))
        };
        let child = |name: &str, tag: &str| case(name).children().find(|n| n.has_tag_name(tag));
        assert!(child("ok", "failure").is_none() && child("ok", "error").is_none());
        assert!(child("bad", "failure")
            .unwrap()
            .attribute("message")
            .unwrap()
            .contains("RuntimeError"));
        assert!(child("gone", "error")
            .unwrap()
            .attribute("message")
            .unwrap()
            .contains("missing"));
        assert_eq!(
            child("slow", "error").unwrap().attribute("type"),
            Some("timeout")
        );
        assert_eq!(
            child("skip", "skipped").unwrap().attribute("message"),
            Some("too big")
        );
        assert!(child("xfail", "skipped")
            .unwrap()
            .attribute("message")
            .unwrap()
            .contains("dead link"));
        assert_eq!(case("ok").attribute("classname"), Some("docker:img:1"));
        let out = child("bad", "system-out").unwrap().text().unwrap();
        assert!(
            out.contains("]]> <&>") && out.contains("red") && !out.contains('\u{1b}'),
            "{out}"
        );
        let suite = doc
            .descendants()
            .find(|n| n.has_tag_name("testsuite"))
            .unwrap();
        assert_eq!(suite.attribute("name"), Some("docker:img:1"));
        assert_eq!(suite.attribute("tests"), Some("6"));
        assert_eq!(suite.attribute("failures"), Some("1"));
        assert_eq!(suite.attribute("errors"), Some("2"));
    }

    #[test]
    fn retried_cases_keep_every_attempt() {
        let flaky = record(
            "flaky",
            vec![
                Status::Failed {
                    message: "first".into(),
                },
                Status::Passed,
            ],
        );
        let still = record(
            "still",
            vec![
                Status::Errored {
                    message: "e1".into(),
                },
                Status::Failed {
                    message: "f2".into(),
                },
            ],
        );
        let xml = build(&[flaky, still], &[]).to_string().unwrap();
        let doc = parse(&xml);
        let flaky_failure = doc
            .descendants()
            .find(|n| n.has_tag_name("flakyFailure"))
            .unwrap();
        assert_eq!(flaky_failure.attribute("message"), Some("first"));
        let out = flaky_failure
            .children()
            .find(|n| n.has_tag_name("system-out"))
            .unwrap();
        assert!(out.text().unwrap().starts_with("out 0"));
        assert!(doc.descendants().any(|n| n.has_tag_name("rerunError")));
    }

    #[test]
    fn written_atomically_and_parseable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/junit.xml");
        let report = build(&[record("ok", vec![Status::Passed])], &[]);
        write(&report, &path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        parse(&text);
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
