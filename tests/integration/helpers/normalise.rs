//! What makes two runs' outputs differ, taken out before a snapshot compares them: temporary
//! folders, the project's path, times, ids (run, container, image), versions, pids. Every
//! snapshot of the end-to-end tests goes through one of the two filter sets here, so when the
//! runner's output changes on purpose (say, how a duration is shown), the filters change here
//! once and the snapshots are accepted again (`INSTA_UPDATE=always cargo test --test
//! integration`, then read each changed `.snap` file before committing it).
//!
//! - [`messages`]: for error messages of bad inputs, whose numbers and durations are the
//!   user's own and stay in: only paths and pids are replaced.
//! - [`run_output`]: for what a run prints and writes (terminal lines, summaries, JUnit): the
//!   paths and pids, and also every measured time and id.

use std::path::Path;

use super::{root, Run};

/// Snapshot settings for error messages: paths and pids replaced.
pub fn messages() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.set_prepend_module_to_snapshot(true);
    settings.set_omit_expression(true);
    for (pattern, replacement) in path_filters() {
        settings.add_filter(&pattern, replacement);
    }
    settings
}

/// Snapshot settings for a run's output: [`messages`]' filters, and times and ids replaced.
pub fn run_output() -> insta::Settings {
    let mut settings = messages();
    for (pattern, replacement) in RUN_FILTERS {
        settings.add_filter(pattern, *replacement);
    }
    settings
}

/// The temporary folders (`tempfile`'s `.tmpXXXXXX` below the system's one) and the project's
/// folder, wherever they appear.
fn path_filters() -> Vec<(String, &'static str)> {
    let tmp = std::env::temp_dir();
    let tmp = tmp.to_str().expect("a UTF-8 temporary folder");
    vec![
        (
            format!(r"{}/\.tmp[0-9A-Za-z]+", escape(tmp.trim_end_matches('/'))),
            "[TMP]",
        ),
        (
            escape(root().to_str().expect("a UTF-8 project path")),
            "[ROOT]",
        ),
        // The runner's work folder beside a report, and the files it writes there.
        (r"\.spool-[0-9A-Za-z]+".to_string(), ".spool-[RANDOM]"),
        (
            r"\breport-[0-9A-Za-z]+\.tmp".to_string(),
            "report-[RANDOM].tmp",
        ),
    ]
}

/// Applied in this order, after the paths.
const RUN_FILTERS: &[(&str, &str)] = &[
    // JUnit: times, the run id (pid and start), the versions of the runner and the runtimes.
    (r#"time="[0-9.]+""#, r#"time="[TIME]""#),
    (
        r#"name="run-id" value="[^"]*""#,
        r#"name="run-id" value="[RUN-ID]""#,
    ),
    (
        r#"name="([a-z-]*version)" value="[^"]*""#,
        r#"name="$1" value="[VERSION]""#,
    ),
    (r"sha256:[0-9a-f]{64}", "sha256:[IMAGE-ID]"),
    // A container's short or long id, as a case's fact line gives it.
    (r"container: [0-9a-f]{12,64}", "container: [CONTAINER]"),
    // tqdm's progress in kipoi's output: rate and clock.
    (r"[0-9.]+it/s", "[RATE]it/s"),
    (r"\[\d\d:\d\d(?:(?:<|&lt;)(?:\?|\d\d:\d\d))?", "[[CLOCK]"),
    // Output a passing case did not keep: its length varies with the progress bar's rate.
    (
        r"\d+ bytes of output not kept",
        "[N] bytes of output not kept",
    ),
    // Durations as the runner shows them: `743ms`, `2.5s`, `1m 05s`, `2h 03m`, `1m5s`.
    (
        r"\b\d+(?:\.\d+)?(?:ms|s|m|h)(?: ?\d+(?:ms|s|m))*\b",
        "[TIME]",
    ),
    // A runner that starts removes what killed runs left (the sweep); a test running at the
    // same time may have just lost its daemon and left such containers. Not this run's doing.
    (
        r"zoo-runner: removed \d+ container\(s\) left by earlier runs that were killed\n",
        "",
    ),
];

/// `text` with the characters that mean something in a regex escaped (a filter for one value).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A command and what it did, for a snapshot of several: `$ zoo-runner ARGS`, its exit code,
/// and its stdout and stderr when not empty.
pub fn transcript(args: &[&str], run: &Run) -> String {
    transcript_with_env(&[], args, run)
}

/// Like [`transcript`], for a run with variables set: `$ NAME=VALUE zoo-runner ARGS`.
pub fn transcript_with_env(env: &[(&str, &str)], args: &[&str], run: &Run) -> String {
    let vars: String = env
        .iter()
        .map(|(k, v)| format!("{k}={} ", shell_line(&[v])))
        .collect();
    let mut text = format!(
        "$ {vars}zoo-runner {}\nexit {}\n",
        shell_line(args),
        run.code
    );
    for (name, out) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
        if !out.is_empty() {
            text.push_str(&format!("--- {name}\n{}", out));
            if !out.ends_with('\n') {
                text.push('\n');
            }
        }
    }
    text
}

/// The arguments as one line, each quoted for a POSIX shell when it needs it.
fn shell_line(args: &[&str]) -> String {
    args.iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+%".contains(c));
            if plain {
                a.to_string()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A Markdown summary with the rows of its `### Slowest cases` table sorted by case: their
/// order is by measured time, which differs from run to run (the test checks that order
/// against the report, see [`slowest_cases`]).
pub fn slowest_by_name(md: &str) -> String {
    let Some((head, table)) = md.split_once("### Slowest cases\n") else {
        return md.to_string();
    };
    let mut lines: Vec<&str> = table.lines().collect();
    let rows_at = lines
        .iter()
        .position(|l| l.starts_with("|---"))
        .map_or(lines.len(), |i| i + 1);
    let rows_end = lines[rows_at..]
        .iter()
        .position(|l| !l.starts_with('|'))
        .map_or(lines.len(), |i| rows_at + i);
    lines[rows_at..rows_end].sort();
    let mut out = format!("{head}### Slowest cases\n{}", lines.join("\n"));
    if md.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// The cases of a summary's `### Slowest cases` table, in its order (`docker::tiny_linear`).
pub fn slowest_cases(md: &str) -> Vec<String> {
    let table = md.split_once("### Slowest cases\n").map_or("", |(_, t)| t);
    table
        .lines()
        .skip_while(|l| !l.starts_with("|---"))
        .skip(1)
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| {
            let first = l.split('|').nth(1)?.trim();
            Some(first.trim_matches(['`', '*']).to_string())
        })
        .collect()
}

/// The cases of a JUnit report, slowest first (by its `time` attributes), as `RUNTIME::NAME`.
pub fn slowest_in_report(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).expect("the report exists");
    let doc = roxmltree::Document::parse(&text).expect("the report parses");
    let mut cases: Vec<(f64, String)> = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .map(|n| {
            let runtime = n
                .attribute("classname")
                .and_then(|c| c.split_once(':'))
                .map_or("", |(r, _)| r);
            let time = n
                .attribute("time")
                .and_then(|t| t.parse().ok())
                .unwrap_or(0.0);
            (
                time,
                format!("{runtime}::{}", n.attribute("name").unwrap_or_default()),
            )
        })
        .collect();
    cases.sort_by(|a, b| b.0.total_cmp(&a.0));
    cases.into_iter().map(|(_, name)| name).collect()
}
