//! Reads JUnit reports back, streamed: `merge`, `--durations` and `--summary` need each case's
//! name, time, outcome and message, and `merge` the place of each `testcase` in its file to copy
//! it unchanged. Memory depends on the number of cases (a few short strings each), never on
//! their output.

use std::fs::File;
use std::io::BufReader;
use std::ops::Range;
use std::path::{Path, PathBuf};

use quick_xml::events::{BytesStart, Event};
use quick_xml::XmlVersion;
use thiserror::Error;

/// Bytes of a failure message kept per case (the summary shows its first lines).
const MESSAGE_KEEP: usize = 2048;
/// Bytes of a case's `system-out` searched for its fact lines (they come first).
const FACTS_KEEP: usize = 64 * 1024;

#[derive(Debug, Error)]
pub enum JunitReadError {
    #[error("cannot read `{path}`")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{path}` does not exist")]
    Missing { path: PathBuf },
    #[error("`{path}` holds no JUnit report: no `*.xml` file in it or below")]
    EmptyFolder { path: PathBuf },
    #[error("`{path}` is not a JUnit report: {why}")]
    NotJunit { path: PathBuf, why: String },
}

pub use crate::record::Class as Outcome;

#[derive(Debug, Clone)]
pub struct ScannedCase {
    pub name: String,
    pub classname: String,
    /// Milliseconds, when the report gives a time.
    pub time_ms: Option<u64>,
    pub outcome: Outcome,
    /// The message of the failure, error or skip (its first bytes); empty for a pass.
    pub message: String,
    /// Passed after failed attempts (`flakyFailure`/`flakyError`).
    pub flaky: bool,
    /// The prediction check's fact lines (`[zoo-runner] predictions: ...`), as the runner
    /// wrote them at the head of `system-out`.
    pub predictions: Vec<String>,
    /// An error of type `infra`: the outside world failed it, not the model.
    pub infra: bool,
    /// Where `<testcase ...>...</testcase>` stands in the file, in bytes.
    pub range: Range<u64>,
}

impl ScannedCase {
    /// The runtime part of the classname (`docker` of `docker:IMAGE`).
    pub fn runtime(&self) -> Option<&str> {
        self.classname.split_once(':').map(|(r, _)| r)
    }

    /// The name the runner shows and filters on: `runtime::model`.
    pub fn case_name(&self) -> String {
        match self.runtime() {
            Some(runtime) => format!("{runtime}::{}", self.name),
            None => self.name.clone(),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ScannedSuite {
    pub name: String,
    pub properties: Vec<(String, String)>,
    pub cases: Vec<ScannedCase>,
}

#[derive(Debug, Clone)]
pub struct ScannedReport {
    pub path: PathBuf,
    pub suites: Vec<ScannedSuite>,
    /// What keeps the report from validating against junit-10.xsd, as the extended flavour
    /// writes it (a `skipped` count on the root, `properties` in a testcase, a `time` on a
    /// rerun); `None` for a strict report.
    pub extended: Option<&'static str>,
}

/// The report files a path names: the file itself, or every `*.xml` file in a folder and
/// below (as artifact downloads nest them), sorted by path.
pub fn report_files(path: &Path) -> Result<Vec<PathBuf>, JunitReadError> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => JunitReadError::Missing {
            path: path.to_path_buf(),
        },
        _ => JunitReadError::Io {
            path: path.to_path_buf(),
            source: e,
        },
    })?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut found = Vec::new();
    let mut folders = vec![path.to_path_buf()];
    while let Some(dir) = folders.pop() {
        let io = |source| JunitReadError::Io {
            path: dir.clone(),
            source,
        };
        for entry in std::fs::read_dir(&dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let kind = entry.file_type().map_err(io)?;
            let p = entry.path();
            if kind.is_dir() {
                folders.push(p);
            } else if p.extension().is_some_and(|e| e == "xml") {
                found.push(p);
            }
        }
    }
    if found.is_empty() {
        return Err(JunitReadError::EmptyFolder {
            path: path.to_path_buf(),
        });
    }
    found.sort();
    Ok(found)
}

/// What is open while reading a case.
#[derive(Default)]
struct OpenCase {
    name: String,
    classname: String,
    time_ms: Option<u64>,
    outcome: Option<Outcome>,
    message: String,
    /// Reading the text of the status element, for a message that is not in the attribute.
    in_status_text: bool,
    /// Reading the case's own `system-out` (not a rerun's), for its fact lines.
    in_out: bool,
    out: String,
    flaky: bool,
    infra: bool,
    start: u64,
}

/// Reads one report file.
pub fn scan(path: &Path) -> Result<ScannedReport, JunitReadError> {
    let file = File::open(path).map_err(|source| JunitReadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let not_junit = |why: String| JunitReadError::NotJunit {
        path: path.to_path_buf(),
        why,
    };
    let mut reader = quick_xml::Reader::from_reader(BufReader::with_capacity(256 * 1024, file));
    let mut buf = Vec::new();
    let mut report = ScannedReport {
        path: path.to_path_buf(),
        suites: Vec::new(),
        extended: None,
    };
    // Open elements' names, and the suites open among them (indexes into report.suites).
    let mut stack: Vec<Vec<u8>> = Vec::new();
    let mut open_suites: Vec<usize> = Vec::new();
    let mut case: Option<OpenCase> = None;
    let mut in_properties = false;
    let mut saw_root = false;
    loop {
        let before = reader.buffer_position();
        let event = reader.read_event_into(&mut buf).map_err(|e| {
            not_junit(format!(
                "bad XML at byte {}: {e}",
                reader.error_position().max(before)
            ))
        })?;
        let empty = matches!(event, Event::Empty(_));
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let tag = e.name().as_ref().to_vec();
                if stack.is_empty() {
                    if saw_root {
                        return Err(not_junit("it has more than one root element".into()));
                    }
                    saw_root = true;
                    match tag.as_slice() {
                        b"testsuites" => {
                            if attr(e, b"skipped").is_some() {
                                report.extended = Some("its root has a `skipped` count");
                            }
                        }
                        b"testsuite" => {}
                        other => {
                            return Err(not_junit(format!(
                                "its root element is `{}`, not `testsuites` or `testsuite`",
                                String::from_utf8_lossy(other)
                            )))
                        }
                    }
                }
                match tag.as_slice() {
                    b"testsuite" if case.is_none() => {
                        report.suites.push(ScannedSuite {
                            name: attr(e, b"name").unwrap_or_default(),
                            ..Default::default()
                        });
                        if !empty {
                            open_suites.push(report.suites.len() - 1);
                        }
                    }
                    b"properties" if case.is_none() => in_properties = !empty,
                    b"properties" if stack.last().is_some_and(|t| t == b"testcase") => {
                        report
                            .extended
                            .get_or_insert("its testcases hold `properties`");
                    }
                    b"property" if in_properties && case.is_none() => {
                        if let (Some(&s), Some(name)) = (open_suites.last(), attr(e, b"name")) {
                            let value = attr(e, b"value").unwrap_or_default();
                            report.suites[s].properties.push((name, value));
                        }
                    }
                    b"testcase" if case.is_none() => {
                        if open_suites.is_empty() {
                            return Err(not_junit("a `testcase` outside any `testsuite`".into()));
                        }
                        let open = OpenCase {
                            name: attr(e, b"name").unwrap_or_default(),
                            classname: attr(e, b"classname").unwrap_or_default(),
                            time_ms: attr(e, b"time").and_then(|t| seconds_to_ms(&t)),
                            start: before,
                            ..Default::default()
                        };
                        if empty {
                            let end = reader.buffer_position();
                            push_case(&mut report, &open_suites, open, end);
                        } else {
                            case = Some(open);
                        }
                    }
                    status @ (b"failure" | b"error" | b"skipped")
                        if stack.last().is_some_and(|t| t == b"testcase") =>
                    {
                        if let Some(c) = case.as_mut() {
                            let ty = attr(e, b"type").unwrap_or_default();
                            c.outcome = Some(match status {
                                b"failure" => Outcome::Failed,
                                b"error" if ty == "timeout" => Outcome::TimedOut,
                                b"error" if ty == crate::record::infra::INFRA => {
                                    c.infra = true;
                                    Outcome::Errored
                                }
                                b"error" => Outcome::Errored,
                                _ => Outcome::skipped(&ty),
                            });
                            c.message = cut(attr(e, b"message").unwrap_or_default());
                            c.in_status_text = !empty && c.message.is_empty();
                        }
                    }
                    b"system-out" if stack.last().is_some_and(|t| t == b"testcase") => {
                        if let Some(c) = case.as_mut() {
                            c.in_out = !empty;
                        }
                    }
                    rerun @ (b"flakyFailure" | b"flakyError" | b"rerunFailure" | b"rerunError")
                        if case.is_some() =>
                    {
                        if attr(e, b"time").is_some() {
                            report.extended.get_or_insert("its reruns have a `time`");
                        }
                        if let Some(c) = case.as_mut() {
                            c.flaky |= rerun.starts_with(b"flaky");
                        }
                    }
                    _ => {}
                }
                if !empty {
                    stack.push(tag);
                }
            }
            Event::End(ref e) => {
                let tag = e.name().as_ref().to_vec();
                stack.pop();
                match tag.as_slice() {
                    b"testcase" if stack.last().is_some_and(|t| t == b"testsuite") => {
                        if let Some(open) = case.take() {
                            let end = reader.buffer_position();
                            push_case(&mut report, &open_suites, open, end);
                        }
                    }
                    b"testsuite" if case.is_none() => {
                        open_suites.pop();
                    }
                    b"properties" => in_properties = false,
                    b"failure" | b"error" | b"skipped" => {
                        if let Some(c) = case.as_mut() {
                            c.in_status_text = false;
                        }
                    }
                    b"system-out" => {
                        if let Some(c) = case.as_mut() {
                            c.in_out = false;
                        }
                    }
                    _ => {}
                }
            }
            Event::Text(ref t) => {
                if let Some(c) = case.as_mut().filter(|c| c.in_status_text) {
                    if let Ok(text) = t.decode() {
                        append_cut(&mut c.message, &text);
                    }
                }
                if let Some(c) = case
                    .as_mut()
                    .filter(|c| c.in_out && c.out.len() < FACTS_KEEP)
                {
                    if let Ok(text) = t.decode() {
                        c.out.push_str(&text);
                    }
                }
            }
            Event::CData(ref t) => {
                if let Some(c) = case.as_mut().filter(|c| c.in_status_text) {
                    append_cut(&mut c.message, &String::from_utf8_lossy(t));
                }
            }
            Event::GeneralRef(ref r) => {
                if let Some(c) = case.as_mut().filter(|c| c.in_status_text) {
                    let ch = match r.resolve_char_ref() {
                        Ok(Some(ch)) => Some(ch),
                        _ => r
                            .decode()
                            .ok()
                            .and_then(|name| quick_xml::escape::resolve_predefined_entity(&name))
                            .and_then(|s| s.chars().next()),
                    };
                    if let Some(ch) = ch {
                        append_cut(&mut c.message, ch.encode_utf8(&mut [0; 4]));
                    }
                }
                if let Some(c) = case
                    .as_mut()
                    .filter(|c| c.in_out && c.out.len() < FACTS_KEEP)
                {
                    if let Some(ch) = resolve(r) {
                        c.out.push(ch);
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !stack.is_empty() {
        return Err(not_junit(format!(
            "it ends inside `<{}>`: the file is cut short",
            String::from_utf8_lossy(stack.last().map(Vec::as_slice).unwrap_or_default())
        )));
    }
    if !saw_root {
        return Err(not_junit(
            "it has no root element (an empty file, or plain text)".into(),
        ));
    }
    Ok(report)
}

/// The character an entity or character reference stands for.
fn resolve(r: &quick_xml::events::BytesRef<'_>) -> Option<char> {
    match r.resolve_char_ref() {
        Ok(Some(ch)) => Some(ch),
        _ => r
            .decode()
            .ok()
            .and_then(|name| quick_xml::escape::resolve_predefined_entity(&name))
            .and_then(|s| s.chars().next()),
    }
}

/// The prediction fact lines at the head of a case's `system-out`.
fn prediction_facts(out: &str) -> Vec<String> {
    let prefix = format!(
        "{}{}: ",
        super::write::FACT_PREFIX,
        super::names::PREDICTIONS
    );
    out.lines()
        .take_while(|l| l.starts_with(super::write::FACT_PREFIX))
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(str::to_string)
        .collect()
}

fn push_case(report: &mut ScannedReport, open_suites: &[usize], open: OpenCase, end: u64) {
    let Some(&suite) = open_suites.last() else {
        return;
    };
    let predictions = prediction_facts(&open.out);
    report.suites[suite].cases.push(ScannedCase {
        name: open.name,
        classname: open.classname,
        time_ms: open.time_ms,
        outcome: open.outcome.unwrap_or(Outcome::Passed),
        message: open.message,
        flaky: open.flaky,
        predictions,
        infra: open.infra,
        range: open.start..end,
    });
}

/// An attribute's value, unescaped; `None` when absent or unreadable.
fn attr(e: &BytesStart<'_>, name: &[u8]) -> Option<String> {
    let a = e.try_get_attribute(name).ok()??;
    a.normalized_value(XmlVersion::Implicit1_0)
        .ok()
        .map(|v| v.into_owned())
}

/// `1.234` (or Surefire's `1,234.5`) seconds as whole milliseconds; `None` for what is no time.
/// Times beyond 30 days are held at 30 days.
pub fn seconds_to_ms(text: &str) -> Option<u64> {
    let clean: String = text.trim().chars().filter(|c| *c != ',').collect();
    let secs: f64 = clean.parse().ok()?;
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    const MAX_MS: f64 = 30.0 * 24.0 * 3600.0 * 1000.0;
    Some((secs * 1000.0).round().min(MAX_MS) as u64)
}

fn cut(mut text: String) -> String {
    if text.len() > MESSAGE_KEEP {
        let mut at = MESSAGE_KEEP;
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.truncate(at);
    }
    text
}

fn append_cut(message: &mut String, more: &str) {
    if message.len() < MESSAGE_KEEP {
        message.push_str(more);
        let whole = std::mem::take(message);
        *message = cut(whole);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    const REPORT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="zoo-runner" tests="5" failures="1" errors="1" time="3.500">
  <testsuite name="docker:img:1" tests="5" failures="1" errors="1" skipped="1" time="3.500">
    <properties>
      <property name="run-id" value="r1"/>
      <property name="image" value="img:1"/>
    </properties>
    <testcase name="ok" classname="docker:img:1" time="1.000">
    </testcase>
    <testcase name="bad" classname="docker:img:1" time="2.000">
      <failure type="failure" message="exit code 1: RuntimeError &lt;x&gt;">exit code 1</failure>
      <system-out>[zoo-runner] command: kipoi test bad
</system-out>
    </testcase>
    <testcase name="slow" classname="docker:img:1" time="0.500"><error type="timeout" message="">ran past 1s &amp; more</error></testcase>
    <testcase name="off" classname="docker:img:1" time="0"><skipped type="not-run" message="interrupted"/></testcase>
    <testcase name="flaky" classname="docker:img:1" time="0"><flakyFailure type="failure" message="first"/></testcase>
  </testsuite>
</testsuites>
"#;

    #[test]
    fn reads_cases_outcomes_and_where_they_stand() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "a.xml", REPORT);
        let report = scan(&path).unwrap();
        assert_eq!(report.suites.len(), 1);
        let suite = &report.suites[0];
        assert_eq!(suite.name, "docker:img:1");
        assert_eq!(suite.properties[0], ("run-id".into(), "r1".into()));
        let names: Vec<&str> = suite.cases.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["ok", "bad", "slow", "off", "flaky"]);
        let c = |i: usize| &suite.cases[i];
        assert_eq!(c(0).outcome, Outcome::Passed);
        assert_eq!(c(1).outcome, Outcome::Failed);
        assert_eq!(c(1).message, "exit code 1: RuntimeError <x>");
        assert_eq!(c(2).outcome, Outcome::TimedOut);
        assert_eq!(c(2).message, "ran past 1s & more", "text when no message");
        assert_eq!(c(3).outcome, Outcome::NotRun);
        assert!(c(4).flaky && c(4).outcome == Outcome::Passed);
        assert_eq!(report.extended, None, "a strict report");
        assert_eq!(c(1).time_ms, Some(2000));
        assert_eq!(c(1).case_name(), "docker::bad");
        let bytes = std::fs::read(&path).unwrap();
        for case in &suite.cases {
            let raw = &bytes[case.range.start as usize..case.range.end as usize];
            let raw = String::from_utf8_lossy(raw);
            assert!(
                raw.starts_with("<testcase") && raw.ends_with(">"),
                "{raw:?}"
            );
            assert!(raw.contains(&format!("name=\"{}\"", case.name)));
        }
    }

    /// What the extended flavour adds, each on its own, marks a report as extended.
    #[test]
    fn extended_reports_are_told_from_strict_ones() {
        let dir = tempfile::tempdir().unwrap();
        let variants = [
            (
                REPORT.replace("time=\"3.500\">\n  <testsuite", "skipped=\"1\" time=\"3.500\">\n  <testsuite"),
                "`skipped` count",
            ),
            (
                REPORT.replace(
                    "time=\"1.000\">\n",
                    "time=\"1.000\"><properties><property name=\"command\" value=\"x\"/></properties>\n",
                ),
                "`properties`",
            ),
            (
                REPORT.replace("message=\"first\"/>", "message=\"first\" time=\"0.5\"/>"),
                "`time`",
            ),
        ];
        for (i, (text, why)) in variants.iter().enumerate() {
            assert_ne!(text, REPORT, "variant {i} changes the report");
            let path = write(dir.path(), &format!("{i}.xml"), text);
            let report = scan(&path).unwrap();
            assert!(
                report.extended.is_some_and(|w| w.contains(why)),
                "{i}: {:?}",
                report.extended
            );
            assert_eq!(report.suites[0].cases.len(), 5, "{i}");
        }
    }

    #[test]
    fn what_is_not_junit_is_an_error_that_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("empty.xml", "", "no root element"),
            ("html.xml", "<html><body/></html>", "root element is `html`"),
            ("text.xml", "just words", "not a JUnit report"),
            ("json.xml", "{\"a\": 1}", "not a JUnit report"),
            ("cut.xml", &REPORT[..REPORT.len() / 2], "not a JUnit report"),
        ];
        for (name, text, want) in cases {
            let path = write(dir.path(), name, text);
            let err = scan(&path).unwrap_err().to_string();
            assert!(err.contains(want) && err.contains(name), "{name}: {err}");
        }
        let err = report_files(&dir.path().join("nope")).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        let empty = dir.path().join("empty-dir");
        std::fs::create_dir(&empty).unwrap();
        let err = report_files(&empty).unwrap_err();
        assert!(err.to_string().contains("no `*.xml` file"), "{err}");
    }

    #[test]
    fn folders_are_read_below_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "b/junit.xml", REPORT);
        write(dir.path(), "a/x/junit.xml", REPORT);
        write(dir.path(), "a/notes.txt", "not a report");
        let files = report_files(dir.path()).unwrap();
        assert_eq!(files.len(), 2);
        assert!(files[0].ends_with("a/x/junit.xml") && files[1].ends_with("b/junit.xml"));
    }

    #[test]
    fn times_parse_within_bounds() {
        assert_eq!(seconds_to_ms("1.5"), Some(1500));
        assert_eq!(seconds_to_ms("1,234.5"), Some(1_234_500));
        assert_eq!(seconds_to_ms("-1"), None);
        assert_eq!(seconds_to_ms("NaN"), None);
        assert_eq!(seconds_to_ms("soon"), None);
        assert_eq!(seconds_to_ms("1e300"), Some(30 * 24 * 3600 * 1000));
    }
}
