//! The run's face: the lines `cargo test` prints (libtest's pretty, terse and JSON formats), so
//! the runner reads like any Rust test binary and its flags (`--format`, `-q`, `--color`,
//! `--logfile`) mean what they mean there. Pure text: the display decides where it goes.

use std::fmt::Write as _;
use std::time::Duration;

use anstyle::{AnsiColor, Color, Style};

use crate::events::Shown;

/// libtest's output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Pretty,
    Terse,
    Json,
}

/// What the `test result:` line counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub passed: usize,
    pub failed: usize,
    pub ignored: usize,
    pub filtered_out: usize,
}

fn style_of(shown: &Shown) -> Style {
    let color = match shown {
        Shown::Ok => AnsiColor::Green,
        Shown::Failed { .. } => AnsiColor::Red,
        Shown::Ignored { .. } => AnsiColor::Yellow,
    };
    Style::new().fg_color(Some(Color::Ansi(color)))
}

/// `ok`, `FAILED`, `ignored (REASON)`, coloured.
fn outcome_word(shown: &Shown) -> String {
    let style = style_of(shown);
    let word = match shown {
        Shown::Ok => "ok".to_string(),
        Shown::Failed { .. } => "FAILED".to_string(),
        Shown::Ignored { reason } => format!("ignored ({reason})"),
    };
    format!("{style}{word}{style:#}")
}

/// A JSON string, as libtest writes them.
fn json(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_string())
}

/// The first lines: `running N tests`.
pub fn title(format: Format, cases: usize) -> String {
    match format {
        Format::Pretty | Format::Terse => {
            let s = if cases == 1 { "" } else { "s" };
            format!("\nrunning {cases} test{s}\n")
        }
        Format::Json => {
            format!("{{ \"type\": \"suite\", \"event\": \"started\", \"test_count\": {cases} }}\n")
        }
    }
}

/// What a finished case prints: `test NAME ... ok` (names padded to `width`), one character
/// in terse mode, a started and a result object in JSON.
pub fn case(format: Format, name: &str, width: usize, shown: &Shown) -> String {
    match format {
        Format::Pretty => format!("test {name:<width$} ... {}\n", outcome_word(shown)),
        Format::Terse => {
            let style = style_of(shown);
            let c = match shown {
                Shown::Ok => '.',
                Shown::Failed { .. } => 'F',
                Shown::Ignored { .. } => 'i',
            };
            format!("{style}{c}{style:#}")
        }
        Format::Json => {
            let event = match shown {
                Shown::Ok => "ok",
                Shown::Failed { .. } => "failed",
                Shown::Ignored { .. } => "ignored",
            };
            let stdout = match shown {
                Shown::Failed { message } => {
                    format!(", \"stdout\": {}", json(&format!("Error: \"{message}\"\n")))
                }
                _ => String::new(),
            };
            format!(
                "{{ \"type\": \"test\", \"event\": \"started\", \"name\": {} }}\n\
                 {{ \"type\": \"test\", \"name\": {}, \"event\": \"{event}\"{stdout} }}\n",
                json(name),
                json(name)
            )
        }
    }
}

/// The failures' messages, then their names (not in JSON).
pub fn failures(format: Format, failed: &[(String, String)]) -> String {
    if format == Format::Json || failed.is_empty() {
        return String::new();
    }
    let mut text = String::from("\nfailures:\n\n");
    for (name, message) in failed {
        let _ = writeln!(text, "---- {name} ----\n{message}\n");
    }
    text.push_str("\nfailures:\n");
    for (name, _) in failed {
        let _ = writeln!(text, "    {name}");
    }
    text
}

/// The last line: `test result: ok. 3 passed; 0 failed; ...`.
pub fn result(format: Format, tally: &Tally, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    match format {
        Format::Pretty | Format::Terse => {
            let overall = if tally.failed > 0 {
                Shown::Failed {
                    message: String::new(),
                }
            } else {
                Shown::Ok
            };
            format!(
                "\ntest result: {}. {} passed; {} failed; {} ignored; 0 measured; {} filtered \
                 out; finished in {secs:.2}s\n\n",
                outcome_word(&overall),
                tally.passed,
                tally.failed,
                tally.ignored,
                tally.filtered_out
            )
        }
        Format::Json => format!(
            "{{ \"type\": \"suite\", \"event\": \"{}\", \"passed\": {}, \"failed\": {}, \
             \"ignored\": {}, \"measured\": 0, \"filtered_out\": {}, \"exec_time\": {secs} }}\n",
            if tally.failed > 0 { "failed" } else { "ok" },
            tally.passed,
            tally.failed,
            tally.ignored,
            tally.filtered_out
        ),
    }
}

/// `--list`: `NAME: test` per case.
pub fn list(names: &[&str]) -> String {
    names.iter().map(|n| format!("{n}: test\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(text: String) -> String {
        anstream::adapter::strip_str(&text).to_string()
    }

    #[test]
    fn lines_read_as_cargo_test_writes_them() {
        let failed = Shown::Failed {
            message: "failed: exit code 1".into(),
        };
        let ignored = Shown::Ignored {
            reason: "skipped: needs a GPU".into(),
        };
        let mut out = title(Format::Pretty, 3);
        out += &case(Format::Pretty, "docker::a", 12, &Shown::Ok);
        out += &case(Format::Pretty, "docker::long", 12, &failed);
        out += &case(Format::Pretty, "docker::b", 12, &ignored);
        out += &failures(
            Format::Pretty,
            &[("docker::long".into(), "failed: exit code 1".into())],
        );
        let tally = Tally {
            passed: 1,
            failed: 1,
            ignored: 1,
            filtered_out: 2,
        };
        out += &result(Format::Pretty, &tally, Duration::from_millis(1234));
        insta::assert_snapshot!(plain(out));
    }

    #[test]
    fn terse_and_json_forms() {
        let failed = Shown::Failed {
            message: "boom \"x\"".into(),
        };
        let terse = title(Format::Terse, 2)
            + &case(Format::Terse, "a", 1, &Shown::Ok)
            + &case(Format::Terse, "b", 1, &failed);
        assert_eq!(plain(terse), "\nrunning 2 tests\n.F");
        let json_lines = case(Format::Json, "docker::b", 0, &failed);
        for line in json_lines.lines() {
            serde_json::from_str::<serde_json::Value>(line).expect("each line is JSON");
        }
        insta::assert_snapshot!(json_lines);
        let end = result(Format::Json, &Tally::default(), Duration::ZERO);
        serde_json::from_str::<serde_json::Value>(end.trim()).expect("JSON");
        assert_eq!(
            list(&["docker::a", "docker::b"]),
            "docker::a: test\ndocker::b: test\n"
        );
    }
}
