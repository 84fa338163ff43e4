//! `--summary PATH`: Markdown that a person reads on the CI page, made from the run's own
//! records, or from the JUnit reports `merge` reads (see `input`).
//! 0. How the run ended, where the counts do not tell: interrupted (and how many cases did not
//!    run, and why), no case selected (and why), the JUnit report lost.
//! 1. A table per image (each runtime's testsuite), images with failures or errors first, then
//!    by name with numbers as numbers (`img2` before `img10`): passed, failed, errored, skipped,
//!    flaky, time; the columns add up to the cases (a flaky case passed on a retry and counts as
//!    flaky only).
//! 2. Each failure and error, with the first lines of its message.
//! 3. The models whose predictions changed, and by how much (the prediction check).
//! 4. The slowest of the cases that ran.
//!
//! Without `--summary`, a run or merge appends it to `$GITHUB_STEP_SUMMARY` when that is set.
//! It stays under 1 MiB (GitHub's limit for a step summary) whatever the reports hold: long
//! parts are cut, with a note that says so.

mod input;
mod order;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use thiserror::Error;

pub use input::{from_records, from_reports, Case, Notes, Suite};

use std::sync::Arc;

use crate::error_chain::chain;
use crate::events;
use crate::record::{self, Class, Record};
use crate::report::junit::names;

/// Milliseconds, shown as every duration is (`crate::config::units::show_duration`).
fn show_ms(ms: u64) -> String {
    crate::config::units::show_duration(std::time::Duration::from_millis(ms))
}

/// GitHub refuses a step summary of 1 MiB or more; this leaves room for our notes.
pub const LIMIT: usize = 1000 * 1000;
/// The table's share of the limit (a zoo with a great many images).
const TABLE_LIMIT: usize = 300 * 1000;
/// Lines and characters per line of a failure's message.
const MESSAGE_LINES: usize = 10;
const LINE_CHARS: usize = 300;
/// Characters of a name in a table cell or heading.
const NAME_CHARS: usize = 200;
const SLOWEST: usize = 10;
/// Lines shown per case whose predictions changed.
const PREDICTION_LINES: usize = 12;
/// Distinct reasons shown for the cases that did not run.
const NOT_RUN_REASONS: usize = 5;
pub const GITHUB_STEP_SUMMARY: &str = "GITHUB_STEP_SUMMARY";

#[derive(Debug, Error)]
pub enum SummaryError {
    #[error("--summary `{path}`: {why}")]
    Target { path: PathBuf, why: String },
    #[error("cannot write the summary to `{path}`")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A table row's figures: the cases' tally, and the image's pulls (its testsuite's
/// `pull-seconds` and `pulled-bytes`), which are not case time.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    cases: record::Counts,
    pull_ms: u64,
    pulled_bytes: u64,
}

impl Counts {
    fn add(&mut self, case: &Case) {
        let time = std::time::Duration::from_millis(case.time_ms.unwrap_or(0));
        self.cases.add(&case.outcome, case.flaky, time);
    }

    fn sum(&mut self, o: &Counts) {
        self.cases.sum(&o.cases);
        self.pull_ms = self.pull_ms.saturating_add(o.pull_ms);
        self.pulled_bytes = self.pulled_bytes.saturating_add(o.pulled_bytes);
    }

    /// Adds a suite's pull properties (a merged suite holds one per shard that pulled).
    fn add_pulls(&mut self, properties: &[(String, String)]) {
        for (key, value) in properties {
            match key.as_str() {
                names::PULL_SECONDS => {
                    let secs: f64 = value.parse().unwrap_or(0.0);
                    if secs.is_finite() && secs > 0.0 {
                        self.pull_ms = self.pull_ms.saturating_add((secs * 1000.0) as u64);
                    }
                }
                names::PULLED_BYTES => {
                    let bytes: u64 = value.parse().unwrap_or(0);
                    self.pulled_bytes = self.pulled_bytes.saturating_add(bytes);
                }
                _ => {}
            }
        }
    }

    fn cases(&self) -> usize {
        self.cases.cases()
    }

    fn ms(&self) -> u64 {
        u64::try_from(self.cases.time.as_millis()).unwrap_or(u64::MAX)
    }
}

/// `--summary` is checked before anything runs: a folder, or a place no file can be made in,
/// is an input error.
pub fn check_target(path: Option<&Path>) -> Result<(), SummaryError> {
    let Some(path) = path else { return Ok(()) };
    let bad = |why: String| SummaryError::Target {
        path: path.to_path_buf(),
        why,
    };
    if path.is_dir() {
        return Err(bad("it is a folder; give a file path".into()));
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| bad(format!("cannot create its folder `{}`: {e}", dir.display())))?;
    tempfile::tempfile_in(dir)
        .map(drop)
        .map_err(|e| bad(format!("cannot create a file in `{}`: {e}", dir.display())))
}

/// At the end of a run, whether its report was written or lost: the summary, made from the
/// run's records, where one is wanted. A summary that cannot be written is said on stderr; it
/// does not change the run's exit code.
pub fn after_run(explicit: Option<&Path>, records: &[Arc<Record>], notes: &Notes) {
    if explicit.is_none() && std::env::var_os(GITHUB_STEP_SUMMARY).is_none() {
        return;
    }
    let text = render(&from_records(records), notes);
    match write(explicit, &text) {
        Ok(Some(path)) => events::note(format!("summary written to {}", path.display())),
        Ok(None) => {}
        Err(e) => events::line(format!("error: {}", chain(&e))),
    }
}

/// Writes the summary to `explicit` (replacing it), else appends it to `$GITHUB_STEP_SUMMARY`
/// when that is set. Returns where it went.
pub fn write(explicit: Option<&Path>, text: &str) -> Result<Option<PathBuf>, SummaryError> {
    let (path, append) = match explicit {
        Some(p) => (p.to_path_buf(), false),
        None => match std::env::var_os(GITHUB_STEP_SUMMARY).filter(|v| !v.is_empty()) {
            Some(p) => (PathBuf::from(p), true),
            None => return Ok(None),
        },
    };
    let failed = |source| SummaryError::Write {
        path: path.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(&path)
        .map_err(failed)?;
    file.write_all(text.as_bytes()).map_err(failed)?;
    Ok(Some(path))
}

/// One row of the table: an image's suites (a merge may hold several of the same name).
struct Group<'a> {
    name: &'a str,
    counts: Counts,
    cases: Vec<&'a Case>,
}

/// The Markdown for these suites; always under `LIMIT` bytes.
pub fn render(suites: &[Suite], notes: &Notes) -> String {
    let mut groups: Vec<Group> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for suite in suites {
        let at = *index.entry(suite.name.as_str()).or_insert_with(|| {
            groups.push(Group {
                name: &suite.name,
                counts: Counts::default(),
                cases: Vec::new(),
            });
            groups.len() - 1
        });
        let group = &mut groups[at];
        group.counts.add_pulls(&suite.properties);
        for case in &suite.cases {
            group.counts.add(case);
            group.cases.push(case);
        }
    }
    // What broke first, then by name with numbers as numbers.
    groups.sort_by(|a, b| {
        let all_good = |g: &Group| g.counts.cases.bad() == 0;
        all_good(a)
            .cmp(&all_good(b))
            .then_with(|| order::natural(a.name, b.name))
    });
    let all: Vec<(&str, &Case)> = groups
        .iter()
        .flat_map(|g| g.cases.iter().map(move |c| (g.name, *c)))
        .collect();
    let mut total = Counts::default();
    groups.iter().for_each(|g| total.sum(&g.counts));

    let mut head = String::new();
    let _ = writeln!(
        head,
        "## zoo-runner{}: {} passed, {} failed, {} errored, {} skipped, {} flaky ({} cases, {})\n",
        match &notes.interrupted {
            Some(signal) => format!(" (interrupted by {signal})"),
            None => String::new(),
        },
        total.cases.passed,
        total.cases.failed,
        total.cases.junit_errors(),
        total.cases.junit_skipped(),
        total.cases.flaky,
        total.cases(),
        show_ms(total.ms())
    );
    if let Some(why) = &notes.report_lost {
        let _ = writeln!(
            head,
            "**The JUnit report was lost:** {}. This summary is what is left of the results.\n",
            cut_chars(&clean(why), LINE_CHARS)
        );
    }
    head.push_str(&not_run(&all, &total, notes));
    head.push_str(&could_not_fetch(&all));
    if total.cases() == 0 {
        let why = notes
            .why_empty
            .as_deref()
            .unwrap_or("the reports hold no case");
        let _ = writeln!(
            head,
            "**No case ran, so nothing was tested:** {}.",
            cut_chars(&clean(why), LINE_CHARS * 2)
        );
        return head;
    }
    if total.pull_ms > 0 || total.pulled_bytes > 0 {
        let _ = writeln!(
            head,
            "{} took {} ({}), not counted in the case times.\n",
            fetches_words(&groups),
            show_ms(total.pull_ms),
            crate::config::units::show_size(total.pulled_bytes)
        );
    }
    head.push_str("| image | passed | failed | errored | skipped | flaky | time | pull |\n");
    head.push_str("|---|--:|--:|--:|--:|--:|--:|--:|\n");
    let mut shown = 0;
    for g in &groups {
        let row = table_row(&code(g.name), &g.counts);
        if head.len() + row.len() > TABLE_LIMIT {
            break;
        }
        head.push_str(&row);
        shown += 1;
    }
    if shown < groups.len() {
        let _ = writeln!(
            head,
            "| *{} more images not shown: this summary is kept under 1 MiB* | | | | | | | |",
            groups.len() - shown
        );
    }
    if groups.len() > 1 {
        head.push_str(&table_row("**all**", &total));
    }

    let tail = slowest(&all);
    let mut body = String::new();
    let bad: Vec<&(&str, &Case)> = all.iter().filter(|(_, c)| c.outcome.is_bad()).collect();
    if !bad.is_empty() {
        let _ = writeln!(body, "\n### Failures and errors ({})\n", bad.len());
        // Room for the table, the slowest cases and the note that says what was cut.
        let room = LIMIT.saturating_sub(head.len() + tail.len() + 400);
        for (i, (suite, case)) in bad.iter().enumerate() {
            let entry = failure_entry(suite, case);
            if body.len() + entry.len() > room {
                let _ = writeln!(
                    body,
                    "*{} more failures and errors not shown: this summary is kept under 1 MiB \
                     (GitHub's limit for a step summary); the JUnit report has them all.*",
                    bad.len() - i
                );
                break;
            }
            body.push_str(&entry);
        }
    }
    let changed = predictions(&all);
    let mut text = head + &body;
    if !changed.is_empty() && text.len() + changed.len() + tail.len() < LIMIT - 400 {
        while !text.ends_with("\n\n") {
            text.push('\n');
        }
        text.push_str(&changed);
    }
    if !tail.is_empty() {
        // One blank line before the section, whatever came before it.
        while !text.ends_with("\n\n") {
            text.push('\n');
        }
        text.push_str(&tail);
    }
    if text.len() >= LIMIT {
        // Only reachable with pathological names; never leave a summary GitHub refuses.
        let mut at = LIMIT - 200;
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.truncate(at);
        text.push_str("\n\n*The summary was cut here: it is kept under 1 MiB.*\n");
    }
    text
}

/// The cases that did not run, how many and why (each distinct reason with its count, the most
/// common first); an interrupted run says so even when every case had started.
fn not_run(all: &[(&str, &Case)], total: &Counts, notes: &Notes) -> String {
    let mut text = String::new();
    let n = total.cases.not_run;
    match (&notes.interrupted, n) {
        (None, 0) => return text,
        (Some(signal), 0) => {
            let _ = writeln!(text, "**The run was interrupted ({signal}).**\n");
            return text;
        }
        (Some(signal), _) => {
            let _ = writeln!(
                text,
                "**The run was interrupted ({signal}): {n} of {} cases did not run.**\n",
                total.cases()
            );
        }
        (None, _) => {
            let _ = writeln!(text, "**{n} of {} cases did not run.**\n", total.cases());
        }
    }
    let mut reasons: Vec<(&str, usize)> = Vec::new();
    for (_, case) in all.iter().filter(|(_, c)| c.outcome == Class::NotRun) {
        let reason = case.message.lines().next().unwrap_or_default();
        match reasons.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, count)) => *count += 1,
            None => reasons.push((reason, 1)),
        }
    }
    // Stable: equal counts keep the order the cases came in.
    reasons.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
    for (reason, count) in reasons.iter().take(NOT_RUN_REASONS) {
        let reason = if reason.is_empty() {
            "(no reason given)".to_string()
        } else {
            cut_chars(&clean(reason), LINE_CHARS)
        };
        let _ = writeln!(text, "- {count}: {reason}");
    }
    if reasons.len() > NOT_RUN_REASONS {
        let _ = writeln!(
            text,
            "- and {} other reasons (the JUnit report has them)",
            reasons.len() - NOT_RUN_REASONS
        );
    }
    text.push('\n');
    text
}

/// The cases the outside world failed (errors of kind infra), apart from the models' failures:
/// how many, and that a later rerun may pass.
fn could_not_fetch(all: &[(&str, &Case)]) -> String {
    let n = all.iter().filter(|(_, c)| c.infra).count();
    if n == 0 {
        return String::new();
    }
    let (models, their) = if n == 1 {
        ("model", "its")
    } else {
        ("models", "their")
    };
    format!(
        "**{n} {models} could not fetch {their} data:** the output matched the spec's \
         `infra_failures` (a download throttled or cut, the network failing), so {} counted \
         among the errors, not as broken models; `--rerun-failed` runs {} again later.\n\n",
        if n == 1 { "it is" } else { "they are" },
        if n == 1 { "it" } else { "them" },
    )
}

/// What the pull time was spent on: Docker images pulled, SIF files downloaded, or both. A
/// suite's name starts with its runtime (`singularity:…`).
fn fetches_words(groups: &[Group]) -> &'static str {
    let fetched = |g: &&Group| g.counts.pull_ms > 0 || g.counts.pulled_bytes > 0;
    let sif = |g: &&Group| g.name.starts_with("singularity:");
    let sifs = groups.iter().filter(fetched).any(|g| sif(&g));
    let images = groups.iter().filter(fetched).any(|g| !sif(&g));
    match (images, sifs) {
        (false, true) => "SIF downloads",
        (true, true) => "Image pulls and SIF downloads",
        _ => "Image pulls",
    }
}

fn table_row(name: &str, c: &Counts) -> String {
    format!(
        "| {name} | {} | {} | {} | {} | {} | {} | {} |\n",
        c.cases.passed,
        c.cases.failed,
        c.cases.junit_errors(),
        c.cases.junit_skipped(),
        c.cases.flaky,
        show_ms(c.ms()),
        if c.pull_ms > 0 || c.pulled_bytes > 0 {
            show_ms(c.pull_ms)
        } else {
            "-".to_string()
        }
    )
}

fn failure_entry(suite: &str, case: &Case) -> String {
    let what = match case.outcome {
        Class::Failed => "failed",
        Class::TimedOut => "timed out",
        _ => "errored",
    };
    let mut entry = format!(
        "**{}** {what} (in {}, {})\n",
        code(&case.name),
        code(suite),
        show_ms(case.time_ms.unwrap_or(0))
    );
    let lines: Vec<&str> = case.message.lines().collect();
    let mut shown: Vec<String> = lines
        .iter()
        .take(MESSAGE_LINES)
        .map(|l| cut_chars(&clean(l), LINE_CHARS))
        .collect();
    if lines.len() > MESSAGE_LINES {
        shown.push(format!(
            "[{} more lines in the JUnit report]",
            lines.len() - MESSAGE_LINES
        ));
    }
    if shown.is_empty() {
        shown.push("(no message)".to_string());
    }
    let block = shown.join("\n");
    let fence = "`".repeat(longest_backtick_run(&block).max(2) + 1);
    let _ = writeln!(entry, "{fence}text\n{block}\n{fence}\n");
    entry
}

/// The cases whose predictions changed, each with what changed and by how much.
fn predictions(all: &[(&str, &Case)]) -> String {
    let changed: Vec<&(&str, &Case)> = all
        .iter()
        .filter(|(_, c)| names::predictions_changed(&c.predictions))
        .collect();
    if changed.is_empty() {
        return String::new();
    }
    let mut text = format!("### Predictions ({} changed)\n\n", changed.len());
    for (suite, case) in changed {
        let _ = writeln!(text, "**{}** (in {})", code(&case.name), code(suite));
        let mut shown: Vec<String> = case
            .predictions
            .iter()
            .take(PREDICTION_LINES)
            .map(|l| cut_chars(&clean(l), LINE_CHARS))
            .collect();
        if case.predictions.len() > PREDICTION_LINES {
            shown.push(format!(
                "[{} more lines in the JUnit report]",
                case.predictions.len() - PREDICTION_LINES
            ));
        }
        let block = shown.join("\n");
        let fence = "`".repeat(longest_backtick_run(&block).max(2) + 1);
        let _ = writeln!(text, "{fence}text\n{block}\n{fence}\n");
    }
    text
}

/// The slowest of the cases that ran (not those skipped or not run, which took no time).
fn slowest(all: &[(&str, &Case)]) -> String {
    let mut timed: Vec<&(&str, &Case)> = all
        .iter()
        .filter(|(_, c)| c.outcome.ran() && c.time_ms.is_some())
        .collect();
    if timed.is_empty() {
        return String::new();
    }
    timed.sort_by_key(|t| std::cmp::Reverse(t.1.time_ms));
    let mut text =
        String::from("### Slowest cases\n\n| case | image | time | result |\n|---|---|--:|---|\n");
    for (suite, case) in timed.into_iter().take(SLOWEST) {
        let result = match (&case.outcome, case.flaky) {
            (Class::Passed, false) => "passed".to_string(),
            (Class::Passed, true) => "flaky".to_string(),
            (Class::Failed, _) => "failed".to_string(),
            (Class::TimedOut, _) => "timed out".to_string(),
            (Class::Errored, _) => "errored".to_string(),
            (Class::NotRun, _) => "not run".to_string(),
            (Class::Skipped { kind }, _) if kind.is_empty() => "skipped".to_string(),
            (Class::Skipped { kind }, _) => format!("skipped ({})", code(kind)),
        };
        let _ = writeln!(
            text,
            "| {} | {} | {} | {result} |",
            code(&case.name),
            code(suite),
            show_ms(case.time_ms.unwrap_or(0))
        );
    }
    text
}

/// A name as inline code that a table cell or heading cannot break out of.
fn code(name: &str) -> String {
    let flat: String = clean(name)
        .chars()
        .map(|c| if c == '`' { '\'' } else { c })
        .collect();
    format!("`{}`", cut_chars(&flat, NAME_CHARS).replace('|', "\\|"))
}

/// Control characters (ANSI codes, NULs) out; a tab becomes a space.
fn clean(text: &str) -> String {
    text.chars()
        .filter_map(|c| match c {
            '\t' => Some(' '),
            c if c.is_control() => None,
            c => Some(c),
        })
        .collect()
}

fn cut_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

fn longest_backtick_run(text: &str) -> usize {
    let (mut best, mut run) = (0, 0);
    for c in text.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        best = best.max(run);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Class as Outcome;

    /// A case of the suite it is put in: `docker::NAME` (or `singularity::NAME`).
    fn case(name: &str, outcome: Outcome, flaky: bool, ms: u64, message: &str) -> Case {
        Case {
            name: name.into(),
            outcome,
            flaky,
            infra: false,
            time_ms: Some(ms),
            message: message.into(),
            predictions: Vec::new(),
        }
    }

    fn report(suites: Vec<(&str, Vec<Case>)>) -> Vec<Suite> {
        suites
            .into_iter()
            .map(|(name, cases)| Suite {
                name: name.into(),
                properties: vec![],
                cases: cases
                    .into_iter()
                    .map(|c| Case {
                        name: format!("{}::{}", name.split(':').next().unwrap(), c.name),
                        ..c
                    })
                    .collect(),
            })
            .collect()
    }

    fn md(suites: &[Suite]) -> String {
        render(suites, &Notes::default())
    }

    #[test]
    fn pull_time_is_shown_apart_from_case_time() {
        let mut pulled = report(vec![
            (
                "docker:img:1",
                vec![case("a", Outcome::Passed, false, 2000, "")],
            ),
            (
                "docker:img:2",
                vec![case("b", Outcome::Passed, false, 1000, "")],
            ),
        ]);
        pulled[0].properties = vec![
            ("pull-seconds".into(), "90.5".into()),
            ("pulled-bytes".into(), (3u64 << 30).to_string()),
        ];
        pulled[1].properties = vec![
            ("pull-seconds".into(), "0.000".into()),
            ("pulled-bytes".into(), "0".into()),
        ];
        let text = md(&pulled);
        assert!(
            text.contains("Image pulls took 1m30s (3.0 GiB), not counted in the case times."),
            "{text}"
        );
        let row = text
            .lines()
            .find(|l| l.starts_with("| `docker:img:1`"))
            .unwrap();
        assert!(row.ends_with("| 2s | 1m30s |"), "{row}");
        let row = text
            .lines()
            .find(|l| l.starts_with("| `docker:img:2`"))
            .unwrap();
        assert!(
            row.ends_with("| 1s | - |"),
            "an image that was there: {row}"
        );
        // Without pulls, no pull line at all.
        let none = md(&report(vec![(
            "docker:img:3",
            vec![case("c", Outcome::Passed, false, 10, "")],
        )]));
        assert!(!none.contains("Image pulls took"), "{none}");
    }

    #[test]
    fn the_pull_line_names_what_was_fetched_images_sifs_or_both() {
        let fetched = |name: &str| {
            let mut suite = report(vec![(
                name,
                vec![case("a", Outcome::Passed, false, 10, "")],
            )]);
            suite[0].properties = vec![
                ("pull-seconds".into(), "2.0".into()),
                ("pulled-bytes".into(), "1024".into()),
            ];
            suite.remove(0)
        };
        let sif = md(&[fetched("singularity:kipoi-fixture.sif")]);
        assert!(sif.contains("\nSIF downloads took 2s (1.0 KiB)"), "{sif}");
        let both = md(&[fetched("docker:img:1"), fetched("singularity:x.sif")]);
        assert!(
            both.contains("\nImage pulls and SIF downloads took 4s (2.0 KiB)"),
            "{both}"
        );
    }

    #[test]
    fn every_status_has_its_column_and_failures_their_message() {
        let r = report(vec![
            (
                "docker:img:1",
                vec![
                    case("ok", Outcome::Passed, false, 1000, ""),
                    case("flaky", Outcome::Passed, true, 2000, ""),
                    case(
                        "bad",
                        Outcome::Failed,
                        false,
                        3000,
                        "exit code 1: RuntimeError: x\nline 2",
                    ),
                    case(
                        "gone",
                        Outcome::Errored,
                        false,
                        0,
                        "image `img:1` is missing",
                    ),
                    case("slow", Outcome::TimedOut, false, 90_000, "ran past 90s"),
                    case(
                        "skip",
                        Outcome::Skipped {
                            kind: "skip".into(),
                        },
                        false,
                        0,
                        "too big",
                    ),
                    case(
                        "xfail",
                        Outcome::Skipped {
                            kind: "expected-failure".into(),
                        },
                        false,
                        5,
                        "dead link",
                    ),
                ],
            ),
            (
                "singularity:img:1",
                vec![case("ok", Outcome::Passed, false, 7_200_000, "")],
            ),
        ]);
        let md = md(&r);
        assert!(
            md.contains("| `docker:img:1` | 1 | 1 | 2 | 2 | 1 | 1m36s |"),
            "{md}"
        );
        assert!(
            md.contains("| `singularity:img:1` | 1 | 0 | 0 | 0 | 0 | 2h |"),
            "{md}"
        );
        assert!(md.contains("| **all** | 2 | 1 | 2 | 2 | 1 |"), "{md}");
        assert!(md.contains("2 passed, 1 failed, 2 errored, 2 skipped, 1 flaky (8 cases"));
        assert!(md.contains("**`docker::bad`** failed") && md.contains("RuntimeError: x\nline 2"));
        assert!(md.contains("**`docker::slow`** timed out"));
        assert!(md.contains("image `img:1` is missing"), "{md}");
        assert!(!md.contains("`docker::ok`** failed"));
        let slowest = md.split("### Slowest cases").nth(1).unwrap();
        let first_row = slowest.lines().find(|l| l.starts_with("| `")).unwrap();
        assert!(first_row.contains("singularity::ok"), "{first_row}");
        assert!(slowest.contains("timed out"));
    }

    #[test]
    fn a_flood_stays_under_a_mebibyte_and_says_what_was_cut() {
        let message = format!("{}\n", "boom ".repeat(100)).repeat(50);
        let cases: Vec<Case> = (0..20_000)
            .map(|i| case(&format!("m{i}"), Outcome::Failed, false, i, &message))
            .collect();
        let many_suites: Vec<(&str, Vec<Case>)> = vec![("docker:img:1", cases)];
        let md = self::md(&report(many_suites));
        assert!(md.len() < 1 << 20, "{} bytes", md.len());
        assert!(
            md.contains("more failures and errors not shown"),
            "cut is said"
        );
        assert!(md.contains("| `docker:img:1` | 0 | 20000 |"));
        assert!(
            md.contains("### Slowest cases"),
            "the last part survives the cut"
        );
        assert!(md.contains("more lines in the JUnit report"));

        // Many images, names full of markup and control characters.
        let odd: Vec<(String, Vec<Case>)> = (0..20_000)
            .map(|i| {
                (
                    format!("docker:img|`{i}`\u{1b}[31m{}", "x".repeat(300)),
                    vec![case("m", Outcome::Errored, false, 1, "```\n```")],
                )
            })
            .collect();
        let r = report(odd.iter().map(|(n, c)| (n.as_str(), c.clone())).collect());
        let md = self::md(&r);
        assert!(md.len() < 1 << 20, "{} bytes", md.len());
        assert!(md.contains("more images not shown"));
        assert!(!md.contains('\u{1b}'));
        assert!(
            md.contains("````text"),
            "a fence longer than the message's backticks"
        );
    }

    /// An interrupted run says so, how many cases did not run and why; its slowest cases are
    /// the ones that ran.
    #[test]
    fn an_interrupted_run_says_so_and_what_did_not_run() {
        let mut cases = vec![case("ran", Outcome::Passed, false, 1500, "")];
        cases.push(case(
            "stopped",
            Outcome::NotRun,
            false,
            0,
            "interrupted while running, and stopped",
        ));
        for i in 0..10 {
            cases.push(case(
                &format!("later{i}"),
                Outcome::NotRun,
                false,
                0,
                "the run was interrupted before this case started",
            ));
        }
        let suites = report(vec![("docker:img:1", cases)]);
        let notes = Notes {
            interrupted: Some("SIGINT".into()),
            ..Notes::default()
        };
        let md = render(&suites, &notes);
        assert!(
            md.starts_with(
                "## zoo-runner (interrupted by SIGINT): 1 passed, 0 failed, 0 errored, 11 skipped"
            ),
            "{md}"
        );
        assert!(
            md.contains("**The run was interrupted (SIGINT): 11 of 12 cases did not run.**"),
            "{md}"
        );
        let first = md.find("- 10: the run was interrupted before this case started");
        let second = md.find("- 1: interrupted while running, and stopped");
        assert!(first.is_some() && first < second, "most common first: {md}");
        let slowest = md.split("### Slowest cases").nth(1).unwrap();
        assert_eq!(slowest.matches("| `docker::").count(), 1, "{slowest}");
        assert!(
            !slowest.contains("not run") && !slowest.contains("0ms"),
            "{slowest}"
        );

        // Without a signal (--fail-fast, or reports merged): the count and the reasons.
        let md = self::md(&report(vec![(
            "docker:img:1",
            vec![
                case("bad", Outcome::Failed, false, 10, "exit code 1"),
                case(
                    "next",
                    Outcome::NotRun,
                    false,
                    0,
                    "--fail-fast: an earlier case failed",
                ),
            ],
        )]));
        assert!(!md.contains("interrupted"), "{md}");
        assert!(
            md.contains(
                "**1 of 2 cases did not run.**\n\n- 1: --fail-fast: an earlier case failed"
            ),
            "{md}"
        );
    }

    /// Skipped cases and cases not run took no time: they are no "slowest case".
    #[test]
    fn only_cases_that_ran_are_among_the_slowest() {
        let md = md(&report(vec![(
            "docker:img:1",
            vec![
                case(
                    "skip",
                    Outcome::Skipped {
                        kind: "skip".into(),
                    },
                    false,
                    0,
                    "big",
                ),
                case("cut", Outcome::NotRun, false, 0, "interrupted"),
                case(
                    "xfail",
                    Outcome::Skipped {
                        kind: "expected-failure".into(),
                    },
                    false,
                    20,
                    "dead link",
                ),
                case("ok", Outcome::Passed, false, 30, ""),
            ],
        )]));
        let slowest = md.split("### Slowest cases").nth(1).unwrap();
        let rows: Vec<&str> = slowest.lines().filter(|l| l.starts_with("| `")).collect();
        assert_eq!(rows.len(), 2, "{slowest}");
        assert!(rows[0].contains("docker::ok") && rows[1].contains("docker::xfail"));
        // Nothing ran: no section at all.
        let md = self::md(&report(vec![(
            "docker:img:1",
            vec![case(
                "skip",
                Outcome::Skipped {
                    kind: "skip".into(),
                },
                false,
                0,
                "big",
            )],
        )]));
        assert!(!md.contains("Slowest"), "{md}");
    }

    /// No case: the reason instead of an empty table.
    #[test]
    fn an_empty_selection_says_why_instead_of_an_empty_table() {
        let notes = Notes {
            why_empty: Some("the filter `HAL` matched none of the 3 planned cases".into()),
            ..Notes::default()
        };
        let md = render(&[], &notes);
        assert!(
            md.contains("**No case ran, so nothing was tested:** the filter `HAL` matched none"),
            "{md}"
        );
        assert!(!md.contains("| image |"), "{md}");
        let md = self::md(&[]);
        assert!(md.contains("the reports hold no case"), "{md}");
    }

    /// A run whose report is lost still gets its summary, which says the report is lost.
    #[test]
    fn models_that_could_not_fetch_their_data_are_counted_apart() {
        let mut throttled = case(
            "z",
            Outcome::Errored,
            false,
            10,
            "its data could not be fetched",
        );
        throttled.infra = true;
        let mut also = throttled.clone();
        also.name = "y".into();
        let text = md(&report(vec![(
            "docker:img:1",
            vec![
                throttled,
                also,
                case("x", Outcome::Errored, false, 10, "no image"),
            ],
        )]));
        assert!(
            text.contains("**2 models could not fetch their data:**"),
            "{text}"
        );
        let none = md(&report(vec![(
            "docker:img:1",
            vec![case("x", Outcome::Errored, false, 10, "no image")],
        )]));
        assert!(!none.contains("could not fetch"), "{none}");
    }

    #[test]
    fn a_lost_report_is_said() {
        let notes = Notes {
            report_lost: Some("failed to write the JUnit report `r/junit.xml`: because x".into()),
            ..Notes::default()
        };
        let md = render(
            &report(vec![(
                "docker:img:1",
                vec![case("bad", Outcome::TimedOut, false, 3000, "ran past 3s")],
            )]),
            &notes,
        );
        assert!(
            md.contains("**The JUnit report was lost:** failed to write"),
            "{md}"
        );
        assert!(md.contains("**`docker::bad`** timed out"), "{md}");
    }

    /// Images with failures or errors first, then by name with numbers as numbers; the
    /// failures follow the table's order.
    #[test]
    fn images_that_broke_come_first_then_in_natural_order() {
        let ok = |m: &str| case(m, Outcome::Passed, false, 1, "");
        let md = md(&report(vec![
            ("docker:img0_1", vec![ok("a")]),
            ("docker:img0_10", vec![ok("b")]),
            ("docker:img0_2", vec![ok("c")]),
            (
                "docker:img0_30",
                vec![case("d", Outcome::Errored, false, 1, "gone")],
            ),
            (
                "docker:img0_4",
                vec![case("e", Outcome::Failed, false, 1, "boom")],
            ),
        ]));
        let rows: Vec<&str> = md
            .lines()
            .filter(|l| l.starts_with("| `docker:img"))
            .map(|l| l.split(" | ").next().unwrap())
            .collect();
        assert_eq!(
            rows,
            [
                "| `docker:img0_4`",
                "| `docker:img0_30`",
                "| `docker:img0_1`",
                "| `docker:img0_2`",
                "| `docker:img0_10`",
            ]
        );
        let failures = md.split("### Failures and errors").nth(1).unwrap();
        assert!(
            failures.find("docker::e") < failures.find("docker::d"),
            "{failures}"
        );
    }

    /// The models whose predictions changed get a section, with what changed; the same ones
    /// do not.
    #[test]
    fn changed_predictions_have_their_section() {
        let mut changed = case("m", Outcome::Failed, false, 10, "predictions changed: ...");
        changed.predictions = vec![
            "changed: 1 of 2 output(s) of `p.h5` differ (rtol 1e-7, atol 0): preds".into(),
            "preds: 3 of 4 elements off (75.0%), max abs diff 1, max rel diff 0.5".into(),
        ];
        let mut same = case("ok", Outcome::Passed, false, 10, "");
        same.predictions = vec!["same: 2 output(s) of `p.h5`".into()];
        let md = md(&report(vec![("docker:img:1", vec![changed, same])]));
        let section = md.split("### Predictions (1 changed)\n\n").nth(1).unwrap();
        let section = section.split("### Slowest").next().unwrap();
        insta::assert_snapshot!(section);
        assert!(!section.contains("docker::ok"), "{section}");
        assert!(
            !md.contains("\n\n\n### Predictions"),
            "one blank line before: {md}"
        );
    }

    #[test]
    fn times_read_well() {
        assert_eq!(show_ms(950), "950ms");
        assert_eq!(show_ms(4100), "4.1s");
        assert_eq!(show_ms(185_000), "3m5s");
        assert_eq!(show_ms(7_800_000), "2h10m");
        assert!(show_ms(u64::MAX).ends_with('s'));
    }

    #[test]
    fn targets_are_checked_and_step_summary_appended() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_target(Some(dir.path()))
            .unwrap_err()
            .to_string()
            .contains("folder"));
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        assert!(check_target(Some(&file.join("s.md"))).is_err());
        assert!(check_target(Some(&dir.path().join("sub/s.md"))).is_ok());
        let path = dir.path().join("s.md");
        write(Some(&path), "one").unwrap();
        write(Some(&path), "two").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "two",
            "--summary replaces"
        );
    }
}
