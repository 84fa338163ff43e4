//! Records -> JUnit XML, streamed: the counts come from the records (small, in memory), the
//! output of each case is copied from its spool file as it is written. Memory depends on one
//! case's output, never on how many cases ran.
//!
//! The default flavour validates against Jenkins xunit's `junit-10.xsd` (vendored in
//! `fixtures/junit-10.xsd`), the strictest common consumer:
//! - one `testsuite` per runtime and image; its `properties` hold what is the same for every
//!   case of the image (image, image ID, runtime version) and the run's facts;
//! - one `testcase` per model (classname `runtime:image`); `failure` for a model that ran and
//!   failed, `error` for what kept it from running (type `timeout` for a timeout, `infra` for an
//!   outside failure the spec's `infra_failures` name), `skipped` with
//!   a type for skips, expected failures and cases not run;
//! - earlier attempts of a retried case as `flakyFailure`/`flakyError` (passed at last) or
//!   `rerunFailure`/`rerunError`, each with its own output;
//! - per-case facts (command, container, SIF and its md5, attempts) as the first lines of
//!   `system-out`, since the schema has no `properties` inside `testcase`; then the container's
//!   stdout; its stderr in `system-err`.
//!
//! The `extended` flavour adds the per-case facts as `properties` inside each `testcase` and a
//! `skipped` count on `testsuites`, for consumers that read them (it does not validate).

use std::io::{self, Write};
use std::sync::Arc;
use std::time::Duration;

use clap::ValueEnum;

use super::names;
use super::xml;
use crate::capture::Output;
use crate::record::{count, Attempt, Counts, Outcome, Record};

/// Which JUnit dialect to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Flavor {
    /// Valid against junit-10.xsd (Jenkins xunit, pytest's xunit2): Jenkins, GitLab, GitHub
    /// test reporters, Azure.
    #[default]
    Strict,
    /// Also `properties` inside each `testcase` (as pytest's xunit1 and cargo-nextest write).
    Extended,
}

/// The prefix of the per-case fact lines at the head of `system-out`.
pub const FACT_PREFIX: &str = "[zoo-runner] ";

fn seconds(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

/// Writes the whole report to `out`. `run` holds the run's own facts (run id, runner version,
/// spec, runtime versions), written on every testsuite.
pub fn write(
    out: &mut impl Write,
    records: &[Arc<Record>],
    run: &[(String, String)],
    flavor: Flavor,
) -> io::Result<()> {
    // One suite per runtime and image, in name order.
    let mut suites: Vec<(String, Vec<&Record>)> = Vec::new();
    for r in records {
        let name = r.suite();
        match suites.iter_mut().find(|(n, _)| *n == name) {
            Some((_, list)) => list.push(r),
            None => suites.push((name, vec![r])),
        }
    }
    suites.sort_by(|a, b| a.0.cmp(&b.0));
    let mut total = Counts::default();
    for (_, list) in &suites {
        total.sum(&count(list.iter().copied()));
    }

    out.write_all(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"zoo-runner\"")?;
    write_counts(out, &total, flavor == Flavor::Extended)?;
    out.write_all(b">\n")?;
    for (name, list) in suites {
        out.write_all(b"  <testsuite name=\"")?;
        xml::attr(out, &name)?;
        out.write_all(b"\"")?;
        write_counts(out, &count(list.iter().copied()), true)?;
        out.write_all(b">\n")?;
        let mut properties: Vec<(String, String)> = run.to_vec();
        properties.extend(
            image_properties(&list)
                .into_iter()
                .filter(|(k, _)| !run.iter().any(|(rk, _)| rk == k)),
        );
        write_properties(out, "    ", &properties)?;
        for r in list {
            write_case(out, r, flavor)?;
        }
        out.write_all(b"  </testsuite>\n")?;
    }
    out.write_all(b"</testsuites>\n")
}

/// The counts of a `testsuites` or `testsuite` element (`skipped` where it may stand).
pub(crate) fn write_counts(out: &mut impl Write, c: &Counts, with_skipped: bool) -> io::Result<()> {
    write!(
        out,
        " tests=\"{}\" failures=\"{}\" errors=\"{}\"",
        c.cases(),
        c.failed,
        c.junit_errors()
    )?;
    if with_skipped {
        write!(out, " skipped=\"{}\"", c.junit_skipped())?;
    }
    write!(out, " time=\"{}\"", seconds(c.time))
}

/// The image-level facts of a suite, each once; should two cases disagree (an image re-pulled
/// mid-run), every value is kept.
fn image_properties(records: &[&Record]) -> Vec<(String, String)> {
    let mut found: Vec<(String, Vec<String>)> = Vec::new();
    for r in records {
        for (key, value) in names::image_properties(r) {
            match found.iter_mut().find(|(k, _)| *k == key) {
                Some((_, values)) if !values.contains(&value) => values.push(value),
                Some(_) => {}
                None => found.push((key, vec![value])),
            }
        }
    }
    found.into_iter().map(|(k, v)| (k, v.join(" "))).collect()
}

fn write_properties(
    out: &mut impl Write,
    indent: &str,
    properties: &[(String, String)],
) -> io::Result<()> {
    if properties.is_empty() {
        return Ok(());
    }
    writeln!(out, "{indent}<properties>")?;
    for (name, value) in properties {
        write!(out, "{indent}  <property name=\"")?;
        xml::attr(out, name)?;
        out.write_all(b"\" value=\"")?;
        xml::attr(out, value)?;
        out.write_all(b"\"/>\n")?;
    }
    writeln!(out, "{indent}</properties>")
}

fn write_case(out: &mut impl Write, r: &Record, flavor: Flavor) -> io::Result<()> {
    out.write_all(b"    <testcase name=\"")?;
    xml::attr(out, &r.model)?;
    out.write_all(b"\" classname=\"")?;
    xml::attr(out, &format!("{}:{}", r.runtime.as_str(), r.image))?;
    writeln!(out, "\" time=\"{}\">", seconds(r.total_duration()))?;
    let facts = names::case_facts(r);
    if flavor == Flavor::Extended {
        // The image's facts and the case's; the `versions` text stays on the testsuite.
        let mut all: Vec<(String, String)> = names::image_properties(r)
            .into_iter()
            .filter(|(k, _)| k != names::VERSIONS)
            .collect();
        all.extend(facts.iter().cloned());
        write_properties(out, "      ", &all)?;
    }
    write_outcome(out, r.outcome())?;
    let final_passed = *r.outcome() == Outcome::Passed;
    for earlier in &r.earlier {
        write_rerun(out, earlier, final_passed, flavor)?;
    }
    write_stream(out, "system-out", &facts, &r.last.stdout)?;
    write_stream(out, "system-err", &[], &r.last.stderr)?;
    out.write_all(b"    </testcase>\n")
}

/// The element that says how a case ended (nothing for a pass).
fn write_outcome(out: &mut impl Write, outcome: &Outcome) -> io::Result<()> {
    use crate::record::infra::INFRA;
    use crate::record::outcome::{EXPECTED_FAILURE, NOT_RUN, SKIP};
    let (tag, ty) = match outcome {
        Outcome::Passed => return Ok(()),
        Outcome::Failed { .. } => ("failure", "failure"),
        o @ Outcome::Errored { .. } if o.is_infra() => ("error", INFRA),
        Outcome::Errored { .. } => ("error", "error"),
        Outcome::TimedOut { .. } => ("error", "timeout"),
        Outcome::Skipped { .. } => ("skipped", SKIP),
        Outcome::ExpectedFailure { .. } => ("skipped", EXPECTED_FAILURE),
        Outcome::NotRun { .. } => ("skipped", NOT_RUN),
    };
    write_element(out, "      ", tag, ty, &outcome.message())
}

fn write_element(
    out: &mut impl Write,
    indent: &str,
    tag: &str,
    ty: &str,
    message: &str,
) -> io::Result<()> {
    write!(out, "{indent}<{tag} type=\"")?;
    xml::attr(out, ty)?;
    out.write_all(b"\" message=\"")?;
    xml::attr(out, message)?;
    out.write_all(b"\">")?;
    xml::text(out, message)?;
    writeln!(out, "</{tag}>")
}

/// An earlier attempt, kept whole (message and output). Its time is in the extended flavour
/// only: junit-10.xsd has no `time` on reruns (the testcase's time counts every attempt).
fn write_rerun(
    out: &mut impl Write,
    a: &Attempt,
    final_passed: bool,
    flavor: Flavor,
) -> io::Result<()> {
    let (failure, ty) = match &a.outcome {
        Outcome::Failed { .. } => (true, "failure"),
        o @ Outcome::Errored { .. } if o.is_infra() => (false, crate::record::infra::INFRA),
        Outcome::Errored { .. } => (false, "error"),
        Outcome::TimedOut { .. } => (false, "timeout"),
        _ => return Ok(()),
    };
    let message = a.outcome.message();
    let tag = match (final_passed, failure) {
        (true, true) => "flakyFailure",
        (true, false) => "flakyError",
        (false, true) => "rerunFailure",
        (false, false) => "rerunError",
    };
    out.write_all(b"      <")?;
    out.write_all(tag.as_bytes())?;
    out.write_all(b" type=\"")?;
    xml::attr(out, ty)?;
    out.write_all(b"\" message=\"")?;
    xml::attr(out, &message)?;
    if flavor == Flavor::Extended {
        write!(out, "\" time=\"{}", seconds(a.duration))?;
    }
    out.write_all(b"\">\n")?;
    write_stream(out, "system-out", &[], &a.stdout)?;
    write_stream(out, "system-err", &[], &a.stderr)?;
    writeln!(out, "      </{tag}>")
}

/// `system-out` / `system-err`: fact lines first, then the spooled output, copied in chunks.
fn write_stream(
    out: &mut impl Write,
    tag: &str,
    facts: &[(String, String)],
    output: &Output,
) -> io::Result<()> {
    let discarded_note = output.is_discarded() && output.total() > 0;
    if facts.is_empty() && output.is_empty() && !discarded_note {
        return Ok(());
    }
    write!(out, "      <{tag}>")?;
    for (k, v) in facts {
        xml::text(out, &format!("{FACT_PREFIX}{k}: {v}\n"))?;
    }
    if discarded_note {
        xml::text(
            out,
            &format!(
                "{FACT_PREFIX}{} bytes of output not kept: the case passed \
                 (--store-success-output keeps it)\n",
                output.total()
            ),
        )?;
    }
    if !output.is_empty() {
        if !facts.is_empty() {
            xml::text(out, "\n")?;
        }
        match output.reader() {
            Ok(reader) => xml::text_from(out, reader)?,
            Err(e) => xml::text(
                out,
                &format!("[zoo-runner: the spooled output is lost: {e}]"),
            )?,
        }
    }
    writeln!(out, "</{tag}>")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::record::facts::{CaseFacts, ImageFacts};
    use crate::record::Failure;

    fn attempt(outcome: Outcome, i: usize) -> Attempt {
        Attempt {
            outcome,
            stdout: Output::from_text(&format!(
                "out {i} \u{1b}[31mred\u{1b}[0m ]]> <&> \u{0}\u{7}"
            )),
            stderr: Output::from_text(&format!("err {i} \u{fffd}")),
            duration: Duration::from_millis(5),
            facts: CaseFacts {
                command: vec!["kipoi".into(), "test".into(), "x".into()],
                container: Some("0123456789ab".into()),
                ..CaseFacts::default()
            },
        }
    }

    pub fn record(model: &str, statuses: Vec<Outcome>) -> Arc<Record> {
        let mut attempts: Vec<Attempt> = statuses
            .into_iter()
            .enumerate()
            .map(|(i, s)| attempt(s, i))
            .collect();
        let last = attempts.pop().expect("a test record has an attempt");
        Arc::new(Record {
            name: format!("docker::{model}"),
            model: model.into(),
            runtime: crate::runtime::DOCKER,
            image: "img:1".into(),
            image_facts: Some(Arc::new(ImageFacts {
                id: Some("sha256:abc".into()),
                ..ImageFacts::default()
            })),
            earlier: attempts,
            last,
        })
    }

    fn render(records: &[Arc<Record>], flavor: Flavor) -> String {
        let mut out = Vec::new();
        write(&mut out, records, &[("run-id".into(), "r1".into())], flavor).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn parse(xml: &str) -> roxmltree::Document<'_> {
        roxmltree::Document::parse(xml).expect("strict XML parser accepts the report")
    }

    #[test]
    fn statuses_map_to_junit_elements() {
        let records = vec![
            record("ok", vec![Outcome::Passed]),
            record(
                "bad",
                vec![Outcome::Failed {
                    message: "exit code 1: RuntimeError: x".into(),
                }],
            ),
            record(
                "gone",
                vec![Outcome::Errored {
                    error: Failure::message("image `img:1` is missing"),
                }],
            ),
            record(
                "slow",
                vec![Outcome::TimedOut {
                    message: "ran past 1s".into(),
                }],
            ),
            record(
                "skip",
                vec![Outcome::Skipped {
                    reason: "too big".into(),
                }],
            ),
            record(
                "xfail",
                vec![Outcome::ExpectedFailure {
                    reason: "dead link".into(),
                    message: "exit code 1".into(),
                }],
            ),
        ];
        let xml = render(&records, Flavor::Strict);
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
        assert_eq!(suite.attribute("skipped"), Some("2"));
    }

    #[test]
    fn strict_flavor_moves_facts_out_of_testcases() {
        let xml = render(&[record("ok", vec![Outcome::Passed])], Flavor::Strict);
        let doc = parse(&xml);
        let root = doc.root_element();
        assert_eq!(
            root.attribute("skipped"),
            None,
            "junit-10.xsd has no skipped here"
        );
        let case = doc
            .descendants()
            .find(|n| n.has_tag_name("testcase"))
            .unwrap();
        assert!(
            !case.children().any(|n| n.has_tag_name("properties")),
            "no properties inside testcase"
        );
        let out = case
            .children()
            .find(|n| n.has_tag_name("system-out"))
            .unwrap()
            .text()
            .unwrap();
        assert!(
            out.starts_with(
                "[zoo-runner] command: kipoi test x\n[zoo-runner] container: 0123456789ab\n"
            ),
            "{out}"
        );
        let suite_props: Vec<(&str, &str)> = doc
            .descendants()
            .filter(|n| n.has_tag_name("property"))
            .map(|n| (n.attribute("name").unwrap(), n.attribute("value").unwrap()))
            .collect();
        assert_eq!(
            suite_props,
            [
                ("run-id", "r1"),
                ("image", "img:1"),
                ("image-id", "sha256:abc"),
                ("pull-seconds", "0.000"),
                ("pulled-bytes", "0")
            ]
        );
    }

    #[test]
    fn extended_flavor_keeps_testcase_properties() {
        let xml = render(&[record("ok", vec![Outcome::Passed])], Flavor::Extended);
        let doc = parse(&xml);
        let case = doc
            .descendants()
            .find(|n| n.has_tag_name("testcase"))
            .unwrap();
        let props = case
            .children()
            .find(|n| n.has_tag_name("properties"))
            .unwrap();
        assert!(props
            .children()
            .any(|n| n.attribute("name") == Some("command")));
        assert_eq!(doc.root_element().attribute("skipped"), Some("0"));
    }

    #[test]
    fn retried_cases_keep_every_attempt() {
        let flaky = record(
            "flaky",
            vec![
                Outcome::Failed {
                    message: "first".into(),
                },
                Outcome::Passed,
            ],
        );
        let still = record(
            "still",
            vec![
                Outcome::Errored {
                    error: Failure::message("e1"),
                },
                Outcome::Failed {
                    message: "f2".into(),
                },
            ],
        );
        let xml = render(&[flaky, still], Flavor::Strict);
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
        let out = doc
            .descendants()
            .find(|n| n.has_tag_name("testcase") && n.attribute("name") == Some("flaky"))
            .unwrap()
            .children()
            .find(|n| n.has_tag_name("system-out"))
            .unwrap();
        assert!(out.text().unwrap().contains("[zoo-runner] attempts: 2"));
    }

    /// Every status the runner writes, flaky and rerun cases included, passes the schema Jenkins
    /// validates with (xmllint, Debian's libxml2-utils) and reads back with quick-junit's parser.
    #[test]
    fn every_status_validates_against_junit_10_xsd() {
        let statuses = [
            vec![Outcome::Passed],
            vec![Outcome::Failed {
                message: "exit code 1".into(),
            }],
            vec![Outcome::Errored {
                error: Failure::message("no image"),
            }],
            vec![Outcome::TimedOut {
                message: "ran past 1s".into(),
            }],
            vec![Outcome::Skipped {
                reason: "big".into(),
            }],
            vec![Outcome::ExpectedFailure {
                reason: "dead link".into(),
                message: "exit code 1".into(),
            }],
            vec![Outcome::NotRun {
                reason: "--fail-fast".into(),
            }],
            vec![
                Outcome::Failed {
                    message: "first".into(),
                },
                Outcome::Errored {
                    error: Failure::message("second"),
                },
                Outcome::Passed,
            ],
            vec![
                Outcome::TimedOut {
                    message: "first".into(),
                },
                Outcome::Failed {
                    message: "second".into(),
                },
            ],
        ];
        let records: Vec<Arc<Record>> = statuses
            .into_iter()
            .enumerate()
            .map(|(i, s)| record(&format!("m{i}"), s))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("all.xml");
        let xml = render(&records, Flavor::Strict);
        std::fs::write(&path, &xml).unwrap();
        let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/junit-10.xsd");
        let out = std::process::Command::new("xmllint")
            .args(["--noout", "--schema", schema])
            .arg(&path)
            .output()
            .expect("xmllint runs (Debian's libxml2-utils; the test command installs it)");
        assert!(
            out.status.success(),
            "{}\n{xml}",
            String::from_utf8_lossy(&out.stderr)
        );
        let read = quick_junit::Report::deserialize_from_str(&xml).expect("quick-junit reads it");
        assert_eq!(read.tests, 9);
        assert_eq!(read.failures, 2);
        assert_eq!(read.errors, 2);
        // The extended flavour is what strict consumers reject: it must differ where it says.
        let extended = render(&records, Flavor::Extended);
        std::fs::write(&path, &extended).unwrap();
        let out = std::process::Command::new("xmllint")
            .args(["--noout", "--schema", schema])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "extended carries testcase properties"
        );
    }

    #[test]
    fn discarded_output_says_so() {
        let mut r = Arc::try_unwrap(record("ok", vec![Outcome::Passed])).expect("one owner");
        r.last.stdout.discard();
        r.last.stderr.discard();
        let r = Arc::new(r);
        let xml = render(&[r], Flavor::Strict);
        let doc = parse(&xml);
        let case = doc
            .descendants()
            .find(|n| n.has_tag_name("testcase"))
            .unwrap();
        let out = case
            .children()
            .find(|n| n.has_tag_name("system-out"))
            .unwrap()
            .text()
            .unwrap();
        assert!(out.contains("not kept: the case passed"), "{out}");
        assert!(!out.contains("out 0"), "{out}");
    }
}
