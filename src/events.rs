//! The run's event stream: what every stage tells the person watching (a case started or
//! ended, a note, a slow case, a transfer's progress). Stages send events here; one consumer,
//! the reporter (`crate::report`), owns the terminal and keeps the records for the JUnit report
//! and the summary. Until it is installed (a command that draws nothing, a unit test), notes and
//! lines go to stderr as they are.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::record::Record;

/// What the run tells the person watching it.
#[derive(Debug, Clone)]
pub enum Event {
    /// A line of its own, said by the runner (`zoo-runner: ` is put in front).
    Note(String),
    /// A line as it is (errors and warnings carry their own `error:` / `warning:`).
    Line(String),
    /// A transfer (an image pull, a SIF download) started, with `done` bytes already there (a
    /// resumed download); `key` names it in later events.
    TransferStarted {
        key: String,
        label: String,
        done: u64,
        total: Option<u64>,
    },
    /// Bytes done so far, and the total as far as it is known (a pull learns it layer by layer).
    TransferProgress {
        key: String,
        done: u64,
        total: Option<u64>,
    },
    /// The transfer ended; `summary` says how (`pulled X: 1.2 GiB in 3m`).
    TransferEnded { key: String, summary: String },
    /// A case is still running after this long.
    SlowCase { case: String, running: Duration },
    /// Containers left by killed runs were removed.
    Swept { removed: usize },
    /// The cases are about to run: how many, how many the name filters left out, and the
    /// longest name (the terminal lines line up on it).
    RunStarted {
        cases: usize,
        filtered_out: usize,
        name_width: usize,
    },
    /// How the run will go, for its ETA: how many cases run at once, and each case's expected
    /// time in milliseconds (`runtime::model`) when earlier runs tell (`--durations`).
    Estimates {
        threads: usize,
        expected_ms: Option<Arc<std::collections::BTreeMap<String, u64>>>,
    },
    /// A case started (its image is ready).
    CaseStarted { name: String },
    /// A case's attempt did not pass and it runs again (`attempt` is the next one's number),
    /// after `pause` when the outside world failed it (the spec's `infra_failures`).
    CaseRetrying {
        name: String,
        attempt: u32,
        pause: Option<Duration>,
    },
    /// A case ended: its record, and how the terminal shows it.
    CaseFinished { record: Arc<Record>, shown: Shown },
    /// Every case has ended.
    RunFinished { elapsed: Duration },
}

/// How a finished case shows in the `cargo test`-style lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shown {
    Ok,
    /// `FAILED`, with the message listed under `failures:`.
    Failed {
        message: String,
    },
    /// `ignored (REASON)`.
    Ignored {
        reason: String,
    },
}

/// Whoever draws the events.
pub trait Sink: Send + Sync {
    fn event(&self, event: Event);
}

static SINK: OnceLock<Arc<dyn Sink>> = OnceLock::new();

/// Makes `sink` the consumer of every event from now on (the first call wins).
pub fn install(sink: Arc<dyn Sink>) {
    let _ = SINK.set(sink);
}

/// Sends an event to the run's consumer.
pub fn send(event: Event) {
    match SINK.get() {
        Some(sink) => sink.event(event),
        None => match event {
            Event::Note(text) => eprintln!("zoo-runner: {text}"),
            Event::Line(text) => eprintln!("{text}"),
            Event::TransferEnded { summary, .. } => eprintln!("zoo-runner: {summary}"),
            _ => {}
        },
    }
}

/// `zoo-runner: {message}` on its own line.
pub fn note(message: impl Into<String>) {
    send(Event::Note(message.into()));
}

/// A line as it is, on stderr.
pub fn line(text: impl Into<String>) {
    send(Event::Line(text.into()));
}

/// One transfer on the event stream: progress while it lives, its end line when it ends. Dropped
/// without [`Transfer::end`] (a failure, an interruption), it still ends, saying it stopped.
pub struct TransferHandle {
    key: String,
    label: String,
    ended: bool,
}

impl TransferHandle {
    pub fn start(label: impl Into<String>, total: Option<u64>) -> Self {
        Self::start_at(label, 0, total)
    }

    /// A transfer that starts with `done` bytes already there (a resumed download).
    pub fn start_at(label: impl Into<String>, done: u64, total: Option<u64>) -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let label = label.into();
        let key = format!("{}#{label}", NEXT.fetch_add(1, Ordering::Relaxed));
        send(Event::TransferStarted {
            key: key.clone(),
            label: label.clone(),
            done,
            total,
        });
        TransferHandle {
            key,
            label,
            ended: false,
        }
    }

    pub fn progress(&self, done: u64, total: Option<u64>) {
        send(Event::TransferProgress {
            key: self.key.clone(),
            done,
            total,
        });
    }

    /// Ends the transfer with a line saying how (`zoo-runner: ` goes in front).
    pub fn end(mut self, summary: impl Into<String>) {
        self.ended = true;
        send(Event::TransferEnded {
            key: self.key.clone(),
            summary: summary.into(),
        });
    }
}

impl Drop for TransferHandle {
    fn drop(&mut self) {
        if !self.ended {
            send(Event::TransferEnded {
                key: self.key.clone(),
                summary: format!("{}: stopped", self.label),
            });
        }
    }
}
