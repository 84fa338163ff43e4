//! The one owner of the terminal. Runtimes, the image stage and the SIF cache send it events
//! (a pull started, made progress or ended, a case is slow, containers were swept); it draws
//! them so that libtest's `test X ... ok` lines are never torn:
//! - libtest-mimic writes to stdout; [`relay`] puts a pipe there and hands the reporter whole
//!   lines, so a message never lands in the middle of `test X ... `;
//! - on a terminal ([`Mode::Live`]) transfers are indicatif bars below the finished lines, and
//!   the test still running shows as a spinner with its elapsed time;
//! - elsewhere (CI logs, files) everything is plain lines, and transfers print a line at
//!   milestones ([`lines`]) with readable byte counts.

mod lines;
pub mod relay;

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::config::units::show_duration;
pub use crate::events::Event;
pub use lines::transfer_line;
use lines::Milestones;

/// How the reporter draws: live bars on a terminal, plain lines elsewhere.
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
    /// The start of a stdout line not yet ended (libtest's `test X ... ` while X runs).
    pending: Vec<u8>,
    /// On a terminal, the pending line shown as a spinner.
    pending_bar: Option<ProgressBar>,
}

pub struct Reporter {
    mode: Mode,
    state: Mutex<State>,
    /// Where stdout lines go once [`relay`] has taken fd 1 (the terminal or file it was).
    stdout: Mutex<Option<std::fs::File>>,
}

static GLOBAL: OnceLock<Reporter> = OnceLock::new();

/// The run's reporter: live when stderr is a terminal indicatif can draw on.
pub fn global() -> &'static Reporter {
    GLOBAL.get_or_init(|| {
        let mode = if ProgressDrawTarget::stderr().is_hidden() {
            Mode::Plain
        } else {
            Mode::Live(MultiProgress::new())
        };
        Reporter {
            mode,
            state: Mutex::default(),
            stdout: Mutex::new(None),
        }
    })
}

impl Reporter {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn handle(&self, event: Event) {
        let mut state = self.state();
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
                let bar = match &self.mode {
                    Mode::Live(multi) => {
                        let bar = multi.add(transfer_bar(&label, total));
                        bar.set_position(done);
                        Some(bar)
                    }
                    Mode::Plain => None,
                };
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
                    if let (Some(bar), Mode::Live(multi)) = (&t.bar, &self.mode) {
                        bar.finish_and_clear();
                        multi.remove(bar);
                    }
                }
                self.err_line(&format!("zoo-runner: {summary}"));
            }
        }
    }

    /// A line on stderr, above the bars when there are some.
    fn err_line(&self, text: &str) {
        match &self.mode {
            Mode::Live(multi) => multi.suspend(|| eprintln!("{text}")),
            Mode::Plain => eprintln!("{text}"),
        }
    }

    /// Bytes written to stdout (relayed from fd 1): whole lines go out at once, the start of a
    /// line waits for its end.
    fn stdout_bytes(&self, bytes: &[u8]) {
        let mut state = self.state();
        state.pending.extend_from_slice(bytes);
        if let Some(end) = state.pending.iter().rposition(|&b| b == b'\n') {
            let whole: Vec<u8> = state.pending.drain(..=end).collect();
            if let Some(bar) = state.pending_bar.take() {
                bar.finish_and_clear();
                if let Mode::Live(multi) = &self.mode {
                    multi.remove(&bar);
                }
            }
            self.out_bytes(&whole);
        }
        if !state.pending.is_empty() && state.pending_bar.is_none() {
            if let Mode::Live(multi) = &self.mode {
                let text = String::from_utf8_lossy(&state.pending)
                    .trim_end()
                    .to_string();
                let bar = multi.add(running_bar(text));
                state.pending_bar = Some(bar);
            }
        }
    }

    /// Writes what is still pending (a line without its end) and stops the spinner.
    fn flush_stdout(&self) {
        let mut state = self.state();
        if let Some(bar) = state.pending_bar.take() {
            bar.finish_and_clear();
        }
        let rest = std::mem::take(&mut state.pending);
        if !rest.is_empty() {
            self.out_bytes(&rest);
        }
    }

    fn out_bytes(&self, bytes: &[u8]) {
        let mut out = self.stdout.lock().unwrap_or_else(|p| p.into_inner());
        let write = |sink: &mut dyn Write| {
            // Nowhere left to say it if stdout is gone (a closed pipe): the report still is.
            let _ = sink.write_all(bytes).and_then(|()| sink.flush());
        };
        let mut emit = || match out.as_mut() {
            Some(file) => write(file),
            None => write(&mut io::stdout()),
        };
        match &self.mode {
            Mode::Live(multi) => multi.suspend(emit),
            Mode::Plain => emit(),
        }
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

impl crate::events::Sink for Reporter {
    fn event(&self, event: Event) {
        self.handle(event);
    }
}
