//! The one owner of the terminal: it draws every event of the run (`crate::events`), and no
//! one else prints while a run goes (but `--list --format json` and `matrix`, whose stdout is
//! for machines).
//! - The `cargo test`-style lines go to stdout (or `--logfile`), in libtest's formats
//!   ([`face`]); a case's line is written whole when the case ends, so a note never lands
//!   inside `test X ... `.
//! - The runner's own lines (notes, warnings, slow cases, transfers) go to stderr.
//! - On a terminal ([`Mode::Live`]) transfers are indicatif bars below the finished lines, and
//!   each running case is a spinner with its elapsed time; elsewhere (CI logs, files) everything
//!   is plain lines, and transfers print a line at milestones ([`lines`]).
//! - How far the run is ([`progress`]): on a terminal a status line under everything (done and
//!   total, passed, failed, running, elapsed, ETA); off a terminal the same figures in a plain
//!   line every few minutes. Neither with `--format json` or `-q`, which ask for plain output.

pub mod face;
mod lines;
pub mod progress;

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::config::units::show_duration;
use crate::events::{Event, Shown};
use face::{Format, Tally};
pub use lines::transfer_line;
use lines::Milestones;
use progress::{Progress, PLAIN_EVERY};

/// How the `cargo test`-style lines look, and where they go: libtest's `--format`, `--color`
/// and `--logfile`.
#[derive(Debug, Clone, Default)]
pub struct Face {
    pub format: Format,
    pub color: Color,
    pub logfile: Option<PathBuf>,
}

/// libtest's `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Color {
    #[default]
    Auto,
    Always,
    Never,
}

/// How the display draws: live bars on a terminal, plain lines elsewhere.
enum Mode {
    Live(MultiProgress),
    Plain,
}

struct Transfer {
    label: String,
    total: Option<u64>,
    done: u64,
    bar: Option<ProgressBar>,
    milestones: Milestones,
}

#[derive(Default)]
struct State {
    transfers: HashMap<String, Transfer>,
    /// On a terminal, each running case as a spinner.
    running: HashMap<String, ProgressBar>,
    name_width: usize,
    tally: Tally,
    /// The cases shown `FAILED`, with their messages, for the list at the end.
    failed: Vec<(String, String)>,
    progress: Progress,
    /// On a terminal, the status line under everything else.
    status: Option<ProgressBar>,
    /// Off a terminal, when the last progress line was printed.
    last_progress: Option<Instant>,
}

pub struct Display {
    mode: Mode,
    format: Format,
    /// How often a progress line is printed off a terminal.
    progress_every: Duration,
    out: Mutex<Box<dyn Write + Send>>,
    err: Mutex<Box<dyn Write + Send>>,
    state: Mutex<State>,
}

impl Display {
    /// The display of a run in a terminal or a CI log: the lines go to stdout (or the
    /// logfile), the runner's own to stderr; live when stderr is a terminal.
    pub fn terminal(face: &Face) -> io::Result<Display> {
        let out: Box<dyn Write + Send> = match &face.logfile {
            Some(path) => {
                let file = std::fs::File::create(path)?;
                let choice = match face.color {
                    Color::Always => anstream::ColorChoice::Always,
                    _ => anstream::ColorChoice::Never,
                };
                Box::new(anstream::AutoStream::new(file, choice))
            }
            None => {
                let choice = match face.color {
                    Color::Auto => anstream::ColorChoice::Auto,
                    Color::Always => anstream::ColorChoice::Always,
                    Color::Never => anstream::ColorChoice::Never,
                };
                Box::new(anstream::AutoStream::new(io::stdout(), choice))
            }
        };
        let mode = if ProgressDrawTarget::stderr().is_hidden() {
            Mode::Plain
        } else {
            Mode::Live(MultiProgress::new())
        };
        Ok(Display::new(mode, face.format, out, Box::new(io::stderr())))
    }

    /// A plain display into any writers (no colour): for tests.
    pub fn plain(
        format: Format,
        out: Box<dyn Write + Send>,
        err: Box<dyn Write + Send>,
    ) -> Display {
        let out = Box::new(anstream::StripStream::new(out));
        Display::new(Mode::Plain, format, out, err)
    }

    fn new(
        mode: Mode,
        format: Format,
        out: Box<dyn Write + Send>,
        err: Box<dyn Write + Send>,
    ) -> Display {
        Display {
            mode,
            format,
            progress_every: PLAIN_EVERY,
            out: Mutex::new(out),
            err: Mutex::new(err),
            state: Mutex::default(),
        }
    }

    /// Prints the plain progress line this often (tests shorten it).
    pub fn with_progress_every(mut self, every: Duration) -> Display {
        self.progress_every = every;
        self
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `--list`: the names of the cases that would run.
    pub fn list(&self, names: &[&str]) {
        self.out(&face::list(names));
    }

    pub fn handle(&self, event: Event) {
        let mut state = self.state();
        let finished = matches!(event, Event::RunFinished { .. });
        self.draw(&mut state, event);
        if !finished {
            self.show_progress(&mut state);
        }
    }

    /// The status line (on a terminal) or a progress line when one is due (off it); nothing
    /// with `--format json` or `-q`.
    fn show_progress(&self, state: &mut State) {
        if self.format != Format::Pretty || !state.progress.active() {
            return;
        }
        let now = Instant::now();
        match &self.mode {
            Mode::Live(multi) => {
                let (counts, eta) = state.progress.status(now).terminal_parts();
                let bar = state.status.get_or_insert_with(|| {
                    let bar = multi.add(ProgressBar::new_spinner());
                    bar.set_style(
                        ProgressStyle::with_template("{prefix} · {elapsed} elapsed · {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    bar.enable_steady_tick(Duration::from_secs(1));
                    bar
                });
                bar.set_prefix(counts);
                bar.set_message(eta);
            }
            Mode::Plain => {
                let last = *state.last_progress.get_or_insert(now);
                if now.saturating_duration_since(last) >= self.progress_every {
                    state.last_progress = Some(now);
                    self.err_line(&state.progress.status(now).plain());
                }
            }
        }
    }

    /// A new bar, made only on a terminal: above the status line when there is one.
    fn add_bar(&self, state: &State, bar: impl FnOnce() -> ProgressBar) -> Option<ProgressBar> {
        match &self.mode {
            Mode::Live(multi) => Some(match &state.status {
                Some(status) => multi.insert_before(status, bar()),
                None => multi.add(bar()),
            }),
            Mode::Plain => None,
        }
    }

    fn draw(&self, state: &mut State, event: Event) {
        match event {
            Event::Note(text) => self.err_line(&format!("zoo-runner: {text}")),
            Event::Line(text) => self.err_line(&text),
            Event::SlowCase { case, running } => self.err_line(&format!(
                "zoo-runner: {case} has been running for over {}",
                show_duration(running)
            )),
            Event::Swept { removed } => self.err_line(&format!(
                "zoo-runner: removed {removed} container(s) left by earlier runs that were killed"
            )),
            Event::TransferStarted {
                key,
                label,
                done,
                total,
            } => {
                let bar = self.add_bar(state, || transfer_bar(&label, total));
                if let Some(bar) = &bar {
                    bar.set_position(done);
                }
                let mut transfer = Transfer {
                    label,
                    total,
                    done,
                    bar,
                    milestones: Milestones::new(Instant::now()),
                };
                if transfer.bar.is_none() {
                    transfer.milestones.mark(done, total, Instant::now());
                    self.err_line(&transfer_line(&transfer.label, done, total));
                }
                state.transfers.insert(key, transfer);
            }
            Event::TransferProgress { key, done, total } => {
                let Some(t) = state.transfers.get_mut(&key) else {
                    return;
                };
                t.done = done;
                t.total = total.or(t.total);
                if let Some(bar) = &t.bar {
                    if let Some(total) = t.total {
                        bar.set_length(total);
                    }
                    bar.set_position(done);
                } else if t.milestones.due(done, t.total, Instant::now()) {
                    t.milestones.mark(done, t.total, Instant::now());
                    let text = transfer_line(&t.label, done, t.total);
                    self.err_line(&text);
                }
            }
            Event::TransferEnded { key, summary } => {
                if let Some(t) = state.transfers.remove(&key) {
                    self.remove_bar(t.bar.as_ref());
                }
                self.err_line(&format!("zoo-runner: {summary}"));
            }
            Event::RunStarted {
                cases,
                filtered_out,
                name_width,
            } => {
                state.name_width = name_width;
                state.tally = Tally {
                    filtered_out,
                    ..Tally::default()
                };
                state.progress.start(cases, Instant::now());
                self.out(&face::title(self.format, cases));
            }
            Event::Estimates {
                threads,
                expected_ms,
            } => state.progress.plan(threads, expected_ms),
            Event::CaseStarted { name } => {
                state.progress.case_started(&name, Instant::now());
                if self.format == Format::Pretty {
                    let text = format!("test {name:<width$} ...", width = state.name_width);
                    if let Some(bar) = self.add_bar(state, || running_bar(text)) {
                        state.running.insert(name, bar);
                    }
                }
            }
            Event::CaseRetrying {
                name,
                attempt,
                pause,
            } => {
                self.err_line(&match pause {
                    Some(pause) => format!(
                        "zoo-runner: {name} could not fetch its data; retrying in {} \
                         (attempt {attempt})",
                        show_duration(pause)
                    ),
                    None => format!("zoo-runner: retrying {name} (attempt {attempt})"),
                });
            }
            Event::CaseFinished { record, shown } => {
                let bar = state.running.remove(&record.name);
                self.remove_bar(bar.as_ref());
                state.progress.case_finished(
                    &record.name,
                    shown == Shown::Ok,
                    matches!(shown, Shown::Failed { .. }),
                );
                match &shown {
                    Shown::Ok => state.tally.passed += 1,
                    Shown::Failed { message } => {
                        state.tally.failed += 1;
                        state.failed.push((record.name.clone(), message.clone()));
                    }
                    Shown::Ignored { .. } => state.tally.ignored += 1,
                }
                let width = state.name_width;
                self.out(&face::case(self.format, &record.name, width, &shown));
                if record.flaky() {
                    self.err_line(&format!(
                        "zoo-runner: {} is flaky: passed after a failed attempt",
                        record.name
                    ));
                }
            }
            Event::RunFinished { elapsed } => {
                for (_, bar) in state.running.drain() {
                    self.remove_bar(Some(&bar));
                }
                let status = state.status.take();
                self.remove_bar(status.as_ref());
                let mut text = face::failures(self.format, &state.failed);
                text.push_str(&face::result(self.format, &state.tally, elapsed));
                self.out(&text);
            }
        }
    }

    /// The `test result:` tally so far.
    pub fn tally(&self) -> Tally {
        self.state().tally
    }

    fn remove_bar(&self, bar: Option<&ProgressBar>) {
        if let (Some(bar), Mode::Live(multi)) = (bar, &self.mode) {
            bar.finish_and_clear();
            multi.remove(bar);
        }
    }

    /// A line on stderr, above the bars when there are some.
    fn err_line(&self, text: &str) {
        let mut err = self.err.lock().unwrap_or_else(|p| p.into_inner());
        let mut emit = || {
            // Nowhere left to say it if stderr is gone (a closed pipe): the report still is.
            let _ = writeln!(err, "{text}").and_then(|()| err.flush());
        };
        match &self.mode {
            Mode::Live(multi) => multi.suspend(emit),
            Mode::Plain => emit(),
        }
    }

    /// Text on stdout (or the logfile), above the bars when there are some.
    fn out(&self, text: &str) {
        if text.is_empty() {
            return;
        }
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let mut emit = || {
            let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
        };
        match &self.mode {
            Mode::Live(multi) => multi.suspend(emit),
            Mode::Plain => emit(),
        }
    }
}

impl crate::events::Sink for Display {
    fn event(&self, event: Event) {
        self.handle(event);
    }
}

fn transfer_bar(label: &str, total: Option<u64>) -> ProgressBar {
    let bar = ProgressBar::new(total.unwrap_or(0));
    let style = ProgressStyle::with_template(
        "{msg} [{wide_bar}] {binary_bytes} of {binary_total_bytes}, {percent}% ({binary_bytes_per_sec})",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(label.to_string());
    bar
}

fn running_bar(text: String) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    let style = ProgressStyle::with_template("{msg} {spinner} {elapsed}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    bar.set_style(style);
    bar.set_message(text);
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Attempt, Outcome, Record};
    use std::sync::Arc;

    /// A writer the test reads back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    fn record(model: &str, outcome: Outcome, earlier: usize) -> Arc<Record> {
        Arc::new(Record {
            name: format!("docker::{model}"),
            model: model.into(),
            runtime: crate::runtime::DOCKER,
            image: "img:1".into(),
            image_facts: None,
            earlier: (0..earlier)
                .map(|_| {
                    Attempt::not_started(Outcome::Failed {
                        message: "first".into(),
                    })
                })
                .collect(),
            last: Attempt::not_started(outcome),
        })
    }

    /// Off a terminal the progress is a plain line now and then (here at every event); never
    /// with `--format json` or `-q`.
    #[test]
    fn off_a_terminal_progress_is_a_plain_line_and_never_in_json_or_quiet() {
        for (format, shown) in [
            (Format::Pretty, true),
            (Format::Json, false),
            (Format::Terse, false),
        ] {
            let (out, err) = (Shared::default(), Shared::default());
            let d = Display::plain(format, Box::new(out.clone()), Box::new(err.clone()))
                .with_progress_every(Duration::ZERO);
            d.handle(Event::RunStarted {
                cases: 2,
                filtered_out: 0,
                name_width: 10,
            });
            d.handle(Event::CaseStarted {
                name: "docker::ok".into(),
            });
            d.handle(Event::CaseFinished {
                record: record("ok", Outcome::Passed, 0),
                shown: Shown::Ok,
            });
            d.handle(Event::CaseStarted {
                name: "docker::bad".into(),
            });
            d.handle(Event::RunFinished {
                elapsed: Duration::from_secs(1),
            });
            let text = err.text();
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("zoo-runner: progress: "))
                .collect();
            if !shown {
                assert!(lines.is_empty(), "{format:?}: {text}");
                continue;
            }
            assert!(
                lines[0].starts_with(
                    "zoo-runner: progress: 0 of 2 cases done (0 passed, 0 failed), 0 running; "
                ) && lines[0].ends_with("time left known after the first case"),
                "{text}"
            );
            assert!(
                lines.iter().any(|l| l.starts_with(
                    "zoo-runner: progress: 1 of 2 cases done (1 passed, 0 failed), 1 running; "
                ) && l.ends_with("left (at the pace so far)")),
                "{text}"
            );
            assert!(
                !out.text().contains("progress"),
                "progress goes to stderr, not among the test lines"
            );
        }
    }

    /// A run as the terminal shows it off a terminal: the `cargo test` lines on stdout, whole,
    /// and the runner's own lines on stderr, a note never inside a test line.
    #[test]
    fn a_run_reads_like_cargo_test() {
        let (out, err) = (Shared::default(), Shared::default());
        let d = Display::plain(Format::Pretty, Box::new(out.clone()), Box::new(err.clone()));
        let finished =
            |model: &str, outcome: Outcome, earlier: usize, shown: Shown| Event::CaseFinished {
                record: record(model, outcome, earlier),
                shown,
            };
        let events = vec![
            Event::RunStarted {
                cases: 4,
                filtered_out: 1,
                name_width: 16,
            },
            Event::CaseStarted {
                name: "docker::ok".into(),
            },
            Event::TransferStarted {
                key: "k".into(),
                label: "pull img:2".into(),
                done: 0,
                total: Some(4 << 20),
            },
            Event::TransferProgress {
                key: "k".into(),
                done: 2 << 20,
                total: Some(4 << 20),
            },
            finished("ok", Outcome::Passed, 0, Shown::Ok),
            Event::SlowCase {
                case: "docker::bad".into(),
                running: Duration::from_secs(60),
            },
            finished(
                "bad",
                Outcome::Failed {
                    message: "exit code 1: boom".into(),
                },
                0,
                Shown::Failed {
                    message: "failed: exit code 1: boom".into(),
                },
            ),
            Event::CaseRetrying {
                name: "docker::flaky".into(),
                attempt: 2,
                pause: None,
            },
            finished("flaky", Outcome::Passed, 1, Shown::Ok),
            Event::TransferEnded {
                key: "k".into(),
                summary: "pulled img:2: 4.0 MiB in 2s".into(),
            },
            finished(
                "off",
                Outcome::Skipped {
                    reason: "needs a GPU".into(),
                },
                0,
                Shown::Ignored {
                    reason: "skipped: needs a GPU".into(),
                },
            ),
            Event::Note("JUnit report written to reports/junit.xml".into()),
            Event::RunFinished {
                elapsed: Duration::from_millis(4200),
            },
        ];
        for e in events {
            d.handle(e);
        }
        assert_eq!(
            d.tally(),
            Tally {
                passed: 2,
                failed: 1,
                ignored: 1,
                filtered_out: 1
            }
        );
        insta::assert_snapshot!("stdout", out.text());
        insta::assert_snapshot!("stderr", err.text());
    }
}
