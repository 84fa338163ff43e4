//! From what a runtime saw to what the report says: the spec's marks (expected failure) applied,
//! and kipoi's own words pulled out of the output for the failure message.

use crate::config::spec::CasePlan;
use crate::config::units::{show_duration, show_size};
use crate::run::record::Status;
use crate::runtime::{signal_name, Ended};
use crate::select::plan::RuntimeKind;

/// Longest failure message shown on one line.
const MESSAGE_MAX: usize = 400;

/// `stdout` and `stderr` are what was kept of the case's output (kipoi's message is found there).
pub fn judge(
    ended: &Ended,
    runtime: RuntimeKind,
    stdout: &str,
    stderr: &str,
    plan: &CasePlan,
) -> Status {
    let status = match ended {
        Ended::Exited { code: 0 } => Status::Passed,
        // 128 + n: how Docker and shells report death by signal n.
        Ended::Exited {
            code: code @ 129..=192,
        } => Status::Errored {
            message: format!(
                "the command was killed by {} (exit code {code})",
                signal_name(code - 128)
            ),
        },
        Ended::Exited { code } => {
            let said = model_message(stdout, stderr)
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            Status::Failed {
                message: format!("exit code {code}{said}"),
            }
        }
        Ended::Signalled { signal } => Status::Errored {
            message: format!(
                "the process was killed by {}",
                signal_name(i64::from(*signal))
            ),
        },
        Ended::OutOfMemory { limit } => {
            let limit = limit
                .map(|m| format!("its memory limit of {}", show_size(m)))
                .unwrap_or_else(|| "the memory available".to_string());
            Status::Errored {
                message: format!("out of memory: the kernel killed the command at {limit}"),
            }
        }
        Ended::Errored { error } => Status::Errored {
            message: error.to_string(),
        },
        Ended::TimedOut { after, killed } => Status::TimedOut {
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
        Ended::Interrupted => Status::NotRun {
            reason: "interrupted while running, and stopped".into(),
        },
        Ended::NotStarted { why } => Status::NotRun {
            reason: format!("{why}, before it started"),
        },
        Ended::Stuck { timed_out, waited } => {
            let stuck = match runtime {
                RuntimeKind::Docker => format!(
                    "the container could not be stopped: still running {} after SIGTERM and a \
                     SIGKILL, so the runner gave up on it and removed it by force",
                    show_duration(*waited)
                ),
                RuntimeKind::Singularity => format!(
                    "the process could not be stopped: still running {} after SIGTERM and a \
                     SIGKILL, so the runner gave up on it",
                    show_duration(*waited)
                ),
            };
            match timed_out {
                Some(after) => Status::TimedOut {
                    message: format!("ran past its timeout of {}; {stuck}", show_duration(*after)),
                },
                None => Status::Errored {
                    message: format!("interrupted while running; {stuck}"),
                },
            }
        }
    };
    match (&plan.expect_failure, status) {
        (Some(reason), Status::Failed { message }) => Status::ExpectedFailure {
            reason: reason.clone(),
            message,
        },
        (Some(reason), Status::Passed) => Status::Failed {
            message: format!("passed, but the spec expects it to fail ({reason}): remove the mark"),
        },
        (_, status) => status,
    }
}

/// What the model's tooling said about its failure: kipoi's ERROR log line (stdout) or the last
/// line of a Python traceback (stderr), else the last line of stderr.
pub fn model_message(stdout: &str, stderr: &str) -> Option<String> {
    let stdout = strip_ansi(stdout);
    let stderr = strip_ansi(stderr);
    let error_line = stdout
        .lines()
        .chain(stderr.lines())
        .rfind(|l| l.trim_start().starts_with("ERROR"));
    let exception = stderr.lines().rev().find(|l| is_exception_line(l));
    let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
    let found = exception.or(error_line).or(last)?;
    Some(clip(found.trim()))
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

    use crate::record::Failure;

    /// What a runtime saw, as `judge` takes it.
    struct Seen<'a>(Ended, &'a str, &'a str);

    fn exec<'a>(ended: Ended, stdout: &'a str, stderr: &'a str) -> Seen<'a> {
        Seen(ended, stdout, stderr)
    }

    fn judge(seen: &Seen<'_>, plan: &CasePlan) -> Status {
        super::judge(&seen.0, RuntimeKind::Docker, seen.1, seen.2, plan)
    }

    fn plan(expect_failure: Option<&str>) -> CasePlan {
        CasePlan {
            command: vec!["x".into()],
            workdir: None,
            timeout: Duration::from_secs(1),
            memory: None,
            skip: None,
            expect_failure: expect_failure.map(str::to_string),
        }
    }

    const KIPOI_MISMATCH: &str = "\u{1b}[32mINFO\u{1b}[0m start\n\u{1b}[31mERROR\u{1b}[0m \u{1b}[44m[kipoi.cli.main]\u{1b}[0m Model predictions don't match the expected predictions.expected: [[1]]\n";
    const TRACEBACK: &str = "Traceback (most recent call last):\n  File \"model.py\", line 8, in predict_on_batch\n    raise RuntimeError(\"boom\")\nRuntimeError: fixture: deliberate failure\n";

    #[test]
    fn failure_messages_quote_kipoi() {
        let s = judge(
            &exec(
                Ended::Exited { code: 1 },
                KIPOI_MISMATCH,
                "0it [00:00]\r100%\n",
            ),
            &plan(None),
        );
        assert_eq!(
            s,
            Status::Failed {
                message: "exit code 1: ERROR [kipoi.cli.main] Model predictions don't match the expected predictions.expected: [[1]]".into()
            }
        );
        let s = judge(&exec(Ended::Exited { code: 1 }, "", TRACEBACK), &plan(None));
        assert_eq!(
            s,
            Status::Failed {
                message: "exit code 1: RuntimeError: fixture: deliberate failure".into()
            }
        );
    }

    #[test]
    fn expected_failures_and_unexpected_passes() {
        let s = judge(
            &exec(Ended::Exited { code: 1 }, "", TRACEBACK),
            &plan(Some("dead link")),
        );
        assert!(
            matches!(s, Status::ExpectedFailure { ref reason, .. } if reason == "dead link"),
            "{s:?}"
        );
        let s = judge(
            &exec(Ended::Exited { code: 0 }, "", ""),
            &plan(Some("dead link")),
        );
        assert!(
            matches!(s, Status::Failed { ref message } if message.contains("remove the mark")),
            "{s:?}"
        );
        // An error is not the failure the mark expects.
        let s = judge(
            &exec(
                Ended::Errored {
                    error: Failure::message("no image"),
                },
                "",
                "",
            ),
            &plan(Some("x")),
        );
        assert!(matches!(s, Status::Errored { .. }), "{s:?}");
    }

    #[test]
    fn a_container_that_would_not_stop_says_so() {
        let stuck = |timed_out| Ended::Stuck {
            timed_out,
            waited: Duration::from_secs(64),
        };
        let s = judge(
            &exec(stuck(Some(Duration::from_secs(2))), "", ""),
            &plan(None),
        );
        let Status::TimedOut { message } = s else {
            panic!("a timeout, with its stuck container: {s:?}")
        };
        assert!(message.contains("timeout of 2s"), "{message}");
        assert!(message.contains("could not be stopped"), "{message}");
        assert!(message.contains("1m4s"), "{message}");
        let s = judge(&exec(stuck(None), "", ""), &plan(None));
        assert!(
            matches!(s, Status::Errored { ref message } if message.contains("interrupted")
                && message.contains("could not be stopped")),
            "{s:?}"
        );
    }

    #[test]
    fn signals_memory_and_interruptions_say_what_happened() {
        let errored = |ended: Ended| match judge(&exec(ended, "", ""), &plan(None)) {
            Status::Errored { message } => message,
            other => panic!("{other:?}"),
        };
        let segv = errored(Ended::Exited { code: 139 });
        assert!(segv.contains("SIGSEGV") && segv.contains("139"), "{segv}");
        let killed = errored(Ended::Signalled { signal: 9 });
        assert_eq!(killed, "the process was killed by SIGKILL");
        let oom = errored(Ended::OutOfMemory {
            limit: Some(128 << 20),
        });
        assert!(oom.contains("its memory limit of 128.0 MiB"), "{oom}");
        let oom = errored(Ended::OutOfMemory { limit: None });
        assert!(oom.contains("the memory available"), "{oom}");
        let why = Failure::message("interrupted while waiting for the lock of the cache x");
        assert_eq!(
            judge(&exec(Ended::NotStarted { why }, "", ""), &plan(None)),
            Status::NotRun {
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
        };
        let s = super::judge(&stuck, RuntimeKind::Singularity, "", "", &plan(None));
        let Status::TimedOut { message } = s else {
            panic!("{s:?}")
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
    fn exception_lines() {
        assert!(is_exception_line("ValueError: bad"));
        assert!(is_exception_line(
            "requests.exceptions.HTTPError: 404 Client Error"
        ));
        assert!(!is_exception_line("  File \"x\", line 1"));
        assert!(!is_exception_line("Some words: here"));
    }
}
