//! From what a runtime saw to the outcome the reports say: an exit code read (a shell's 128 + n is
//! a signal), the spec's marks applied (expected failure), and kipoi's own words pulled out of
//! the output for the failure message.

use crate::config::spec::CasePlan;
use crate::config::units::{show_duration, show_size};
use crate::record::{Failure, InfraFailure, Outcome};
use crate::runtime::Ended;

/// Longest line of a failure message.
const MESSAGE_MAX: usize = 400;
/// Most lines of a failure message (kipoi's error and the lines it continues on).
const MESSAGE_LINES: usize = 10;

/// `stdout` and `stderr` are what was kept of the case's output (kipoi's message is found there).
pub fn judge(ended: &Ended, stdout: &str, stderr: &str, plan: &CasePlan) -> Outcome {
    marked(ran(ended, stdout, stderr), plan)
}

/// How the command ran, before the spec's marks: a command that exited 0 has `Passed` here,
/// and its predictions are checked before the marks apply.
pub fn ran(ended: &Ended, stdout: &str, stderr: &str) -> Outcome {
    let errored = |text: String| Outcome::Errored {
        error: Failure::message(text),
    };
    match ended {
        Ended::Exited { code: 0 } => Outcome::Passed,
        Ended::Exited {
            code: code @ 129..=192,
        } => errored(format!(
            "the command was killed by {} (exit code {code})",
            signal_name(code - 128)
        )),
        Ended::Exited { code } => {
            let said = model_message(stdout, stderr)
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            Outcome::Failed {
                message: format!("exit code {code}{said}"),
            }
        }
        Ended::Signalled { signal } => errored(format!(
            "the command was killed by {}",
            signal_name(i64::from(*signal))
        )),
        Ended::OutOfMemory { limit } => {
            let limit = limit
                .map(|m| format!("its memory limit of {}", show_size(m)))
                .unwrap_or_else(|| "the memory available".to_string());
            errored(format!(
                "out of memory: the kernel killed the command at {limit}"
            ))
        }
        Ended::Errored { error } => Outcome::Errored {
            error: error.clone(),
        },
        Ended::TimedOut { after, killed } => Outcome::TimedOut {
            message: format!(
                "ran past its timeout of {}; {}",
                show_duration(*after),
                if *killed {
                    "SIGTERM did not stop it, so SIGKILL ended it after the grace period"
                } else {
                    "SIGTERM stopped it"
                }
            ),
        },
        Ended::Interrupted => Outcome::NotRun {
            reason: "interrupted while running, and stopped".into(),
        },
        Ended::NotStarted { why } => Outcome::NotRun {
            reason: format!("{why}, before it started"),
        },
        Ended::Stuck {
            timed_out,
            waited,
            what,
        } => {
            let stuck = format!(
                "the {what} could not be stopped: still running {} after SIGTERM and a \
                 SIGKILL, so the runner gave up on it{}",
                show_duration(*waited),
                if *what == "container" {
                    " and removed it by force"
                } else {
                    ""
                }
            );
            match timed_out {
                Some(after) => Outcome::TimedOut {
                    message: format!("ran past its timeout of {}; {stuck}", show_duration(*after)),
                },
                None => errored(format!("interrupted while running; {stuck}")),
            }
        }
    }
}

/// The spec's marks applied: a failure that was expected, a pass that was not.
pub fn marked(outcome: Outcome, plan: &CasePlan) -> Outcome {
    match (&plan.expect_failure, outcome) {
        (Some(reason), Outcome::Failed { message }) => Outcome::ExpectedFailure {
            reason: reason.clone(),
            message,
        },
        (Some(reason), Outcome::Passed) => Outcome::Failed {
            message: format!("passed, but the spec expects it to fail ({reason}): remove the mark"),
        },
        (_, outcome) => outcome,
    }
}

/// A failure whose output says the outside world failed (a line holds one of the spec's
/// `infra_failures`, compared without case) becomes an error of kind infra: the model was not
/// at fault. Other outcomes are kept. `code` is the command's exit code.
pub fn infra(
    outcome: Outcome,
    code: i64,
    stdout: &str,
    stderr: &str,
    patterns: &[String],
) -> Outcome {
    if !matches!(outcome, Outcome::Failed { .. }) || patterns.is_empty() {
        return outcome;
    }
    let wanted: Vec<(String, &String)> = patterns
        .iter()
        .filter(|p| !p.trim().is_empty())
        .map(|p| (p.to_lowercase(), p))
        .collect();
    let (stdout, stderr) = (strip_ansi(stdout), strip_ansi(stderr));
    // The last such line: the error the command ended on.
    let found = stdout.lines().chain(stderr.lines()).rev().find_map(|line| {
        let lower = line.to_lowercase();
        wanted
            .iter()
            .find(|(p, _)| lower.contains(p.as_str()))
            .map(|(_, pattern)| (line, *pattern))
    });
    match found {
        Some((line, pattern)) => Outcome::Errored {
            error: Failure::new(InfraFailure {
                pattern: pattern.clone(),
                line: clip(line.trim()),
                code,
            }),
        },
        None => outcome,
    }
}

/// The name of a signal number, for messages.
pub fn signal_name(signal: i64) -> String {
    let name = match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => return format!("signal {signal}"),
    };
    name.to_string()
}

/// What the model's tooling said about its failure: kipoi's ERROR log line (stdout) or the last
/// line of a Python traceback (stderr), else the last line of stderr.
pub fn model_message(stdout: &str, stderr: &str) -> Option<String> {
    let stdout = strip_ansi(stdout);
    let stderr = strip_ansi(stderr);
    let lines: Vec<&str> = stdout.lines().chain(stderr.lines()).collect();
    let error_line = lines
        .iter()
        .rposition(|l| l.trim_start().starts_with("ERROR"))
        .map(|at| logged_with_continuation(&lines[at..]));
    let exception = stderr.lines().rev().find(|l| is_exception_line(l));
    let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
    if let Some(exception) = exception {
        return Some(clip(exception.trim()));
    }
    error_line.or_else(|| last.map(|l| clip(l.trim())))
}

/// A log line and the lines it continues on (until the next log line or an empty one), each
/// cut to a readable length; sentences kipoi glues together (`predictions.expected: [[...`) are
/// put on lines of their own.
fn logged_with_continuation(lines: &[&str]) -> String {
    let mut kept: Vec<String> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim();
        if i > 0 && (trimmed.is_empty() || starts_with_level(trimmed)) {
            break;
        }
        if kept.len() == MESSAGE_LINES {
            kept.push("…".to_string());
            break;
        }
        kept.push(clip(&unglue(trimmed)));
    }
    kept.join("\n")
}

fn starts_with_level(line: &str) -> bool {
    ["ERROR", "WARNING", "WARN", "INFO", "DEBUG", "CRITICAL"]
        .iter()
        .any(|level| line.starts_with(level))
}

/// `a sentence.next: more` -> `a sentence.\nnext: more`: a full stop followed at once by a
/// word and a colon joins two lines that lost their break.
fn unglue(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let chars: Vec<char> = line.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        out.push(c);
        if c == '.' && i > 0 && chars[i - 1].is_alphabetic() {
            let word: String = chars[i + 1..]
                .iter()
                .take_while(|c| c.is_ascii_lowercase() || **c == '_')
                .collect();
            if !word.is_empty() && chars.get(i + 1 + word.len()) == Some(&':') {
                out.push('\n');
            }
        }
    }
    out
}

/// `RuntimeError: ...`, `ValueError`, `kipoi.x.SomeException: ...`
fn is_exception_line(line: &str) -> bool {
    let head = line.split(':').next().unwrap_or_default();
    !line.starts_with(' ')
        && !head.is_empty()
        && head
            .chars()
            .all(|c| c.is_alphanumeric() || c == '.' || c == '_')
        && (head.ends_with("Error") || head.ends_with("Exception") || head.ends_with("Interrupt"))
}

fn clip(text: &str) -> String {
    if text.chars().count() <= MESSAGE_MAX {
        return text.to_string();
    }
    let cut: String = text.chars().take(MESSAGE_MAX).collect();
    format!("{cut}…")
}

/// Removes ANSI escape sequences (colours, cursor moves) and carriage-return progress bars.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // CSI: parameters and intermediates, then one final byte in @..~
                for d in chars.by_ref() {
                    if ('@'..='~').contains(&d) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
        } else if c == '\r' {
            // A progress bar rewrites its line: keep only what follows the last \r.
            let line_start = out.rfind('\n').map(|i| i + 1).unwrap_or(0);
            out.truncate(line_start);
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn plan(expect_failure: Option<&str>) -> CasePlan {
        CasePlan {
            command: vec!["x".into()],
            workdir: None,
            timeout: Duration::from_secs(1),
            memory: None,
            skip: None,
            expect_failure: expect_failure.map(str::to_string),
            predictions: None,
        }
    }

    fn exited(code: i64) -> Ended {
        Ended::Exited { code }
    }

    const KIPOI_MISMATCH: &str = "\u{1b}[32mINFO\u{1b}[0m start\n\u{1b}[31mERROR\u{1b}[0m \u{1b}[44m[kipoi.cli.main]\u{1b}[0m Model predictions don't match the expected predictions.expected: [[1]]\nactual: [[2]]\n\u{1b}[32mINFO\u{1b}[0m done\n";
    const TRACEBACK: &str = "Traceback (most recent call last):\n  File \"model.py\", line 8, in predict_on_batch\n    raise RuntimeError(\"boom\")\nRuntimeError: fixture: deliberate failure\n";

    #[test]
    fn failure_messages_quote_kipoi_with_its_line_breaks() {
        let s = judge(
            &exited(1),
            KIPOI_MISMATCH,
            "0it [00:00]\r100%\n",
            &plan(None),
        );
        assert_eq!(
            s,
            Outcome::Failed {
                message: "exit code 1: ERROR [kipoi.cli.main] Model predictions don't match the \
                          expected predictions.\nexpected: [[1]]\nactual: [[2]]"
                    .into()
            }
        );
        let s = judge(&exited(1), "", TRACEBACK, &plan(None));
        assert_eq!(
            s,
            Outcome::Failed {
                message: "exit code 1: RuntimeError: fixture: deliberate failure".into()
            }
        );
    }

    #[test]
    fn glued_sentences_come_apart_and_nothing_else_does() {
        assert_eq!(
            unglue("predictions.expected: [[1]]"),
            "predictions.\nexpected: [[1]]"
        );
        assert_eq!(
            unglue("v1.2: fine; 3.5: x; e.g. a"),
            "v1.2: fine; 3.5: x; e.g. a"
        );
        assert_eq!(unglue("see kipoi.cli.main"), "see kipoi.cli.main");
    }

    #[test]
    fn signals_and_memory_are_errors_that_say_so() {
        let killed = judge(&exited(139), "", "", &plan(None));
        assert!(
            killed.is_bad() && killed.message().contains("SIGSEGV"),
            "{killed:?}"
        );
        let killed = judge(&Ended::Signalled { signal: 9 }, "", "", &plan(None));
        assert!(killed.message().contains("SIGKILL"), "{killed:?}");
        let oom = judge(
            &Ended::OutOfMemory {
                limit: Some(128 << 20),
            },
            "",
            "",
            &plan(None),
        );
        assert_eq!(
            oom.message(),
            "out of memory: the kernel killed the command at its memory limit of 128.0 MiB"
        );
    }

    #[test]
    fn expected_failures_and_unexpected_passes() {
        let s = judge(&exited(1), "", TRACEBACK, &plan(Some("dead link")));
        assert!(
            matches!(s, Outcome::ExpectedFailure { ref reason, .. } if reason == "dead link"),
            "{s:?}"
        );
        let s = judge(&exited(0), "", "", &plan(Some("dead link")));
        assert!(
            matches!(s, Outcome::Failed { ref message } if message.contains("remove the mark")),
            "{s:?}"
        );
        // An error is not the failure the mark expects.
        let error = Ended::Errored {
            error: Failure::message("no image"),
        };
        let s = judge(&error, "", "", &plan(Some("x")));
        assert!(matches!(s, Outcome::Errored { .. }), "{s:?}");
    }

    #[test]
    fn a_container_that_would_not_stop_says_so() {
        let stuck = |timed_out| Ended::Stuck {
            timed_out,
            waited: Duration::from_secs(64),
            what: "container",
        };
        let s = judge(&stuck(Some(Duration::from_secs(2))), "", "", &plan(None));
        let Outcome::TimedOut { message } = s else {
            panic!("a timeout, with its stuck container: {s:?}")
        };
        assert!(message.contains("timeout of 2s"), "{message}");
        assert!(message.contains("could not be stopped"), "{message}");
        assert!(message.contains("1m4s"), "{message}");
        let s = judge(&stuck(None), "", "", &plan(None));
        assert!(
            s.is_bad()
                && s.message().contains("interrupted")
                && s.message().contains("could not be stopped"),
            "{s:?}"
        );
    }

    #[test]
    fn a_case_stopped_before_it_started_says_so() {
        let why = Failure::message("interrupted while waiting for the lock of the cache x");
        assert_eq!(
            judge(&Ended::NotStarted { why }, "", "", &plan(None)),
            Outcome::NotRun {
                reason: "interrupted while waiting for the lock of the cache x, before it started"
                    .into()
            }
        );
    }

    #[test]
    fn a_process_that_would_not_stop_is_not_called_a_container() {
        let stuck = Ended::Stuck {
            timed_out: Some(Duration::from_secs(2)),
            waited: Duration::from_secs(3),
            what: "process",
        };
        let Outcome::TimedOut { message } = judge(&stuck, "", "", &plan(None)) else {
            panic!("a timeout")
        };
        assert!(
            message.contains("the process could not be stopped: still running 3s"),
            "{message}"
        );
        assert!(!message.contains("container"), "{message}");
    }

    #[test]
    fn ansi_and_progress_bars_are_stripped() {
        assert_eq!(strip_ansi("\u{1b}[31mred\u{1b}[0m"), "red");
        assert_eq!(strip_ansi("a\n10%\r50%\r100%\nb"), "a\n100%\nb");
        assert_eq!(strip_ansi("\u{1b}[1;44mx\u{1b}[0m y"), "x y");
    }

    #[test]
    fn a_failure_whose_output_says_the_network_failed_is_an_infra_error() {
        let patterns = vec![
            "HTTP Error 429".to_string(),
            "connection reset by peer".into(),
        ];
        let stderr = "Traceback\nException: URL fetch failure on http://x/a.dat: HTTP Error 429: \
                      Too Many Requests\n";
        let failed = judge(&exited(1), "", stderr, &plan(None));
        let outcome = infra(failed.clone(), 1, "", stderr, &patterns);
        assert!(outcome.is_infra() && outcome.is_bad(), "{outcome:?}");
        assert_eq!(
            outcome.message(),
            "its data could not be fetched (exit code 1): the output says `Exception: URL fetch \
             failure on http://x/a.dat: HTTP Error 429: Too Many Requests`, which the spec's \
             `infra_failures` count as the outside world failing (`HTTP Error 429`), not the model"
        );
        // Case does not matter; a model's own failure and a pass stay what they are.
        let reset = infra(
            failed.clone(),
            1,
            "[Errno 104] Connection Reset By Peer",
            "",
            &patterns,
        );
        assert!(reset.is_infra());
        let own = judge(&exited(1), "", TRACEBACK, &plan(None));
        assert_eq!(infra(own.clone(), 1, "", TRACEBACK, &patterns), own);
        assert_eq!(
            infra(Outcome::Passed, 0, stderr, stderr, &patterns),
            Outcome::Passed
        );
        assert_eq!(infra(failed.clone(), 1, "", stderr, &[]), failed);
    }

    #[test]
    fn exception_lines() {
        assert!(is_exception_line("ValueError: bad"));
        assert!(is_exception_line(
            "requests.exceptions.HTTPError: 404 Client Error"
        ));
        assert!(!is_exception_line("  File \"x\", line 1"));
        assert!(!is_exception_line("Some words: here"));
    }
}
