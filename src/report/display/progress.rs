//! How far the run is, and when it should end: cases done of the total, passed, failed and
//! running, the time elapsed, and an ETA (from the earlier runs' times `--durations` gives,
//! else from the cases finished so far). On a terminal it is a status line that stays under the
//! test lines ([`Status::terminal`]); off a terminal (CI logs, where a silent job is killed) a
//! plain line every [`PLAIN_EVERY`] ([`Status::plain`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::units::show_duration;

/// How often a plain progress line is printed off a terminal.
pub const PLAIN_EVERY: Duration = Duration::from_secs(180);

/// What the display keeps of the run's progress.
#[derive(Debug, Default)]
pub struct Progress {
    total: usize,
    passed: usize,
    failed: usize,
    /// Skipped, not run: done, neither passed nor failed.
    other: usize,
    started: Option<Instant>,
    /// The running cases, since when.
    running: HashMap<String, Instant>,
    finished: std::collections::HashSet<String>,
    threads: usize,
    /// Each case's expected time (ms), from `--durations`.
    expected: Option<Arc<BTreeMap<String, u64>>>,
}

/// Where an ETA comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// The earlier runs' times (`--durations`).
    Durations,
    /// The pace of the cases finished so far.
    Pace,
}

/// The figures of one status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub done: usize,
    pub total: usize,
    pub passed: usize,
    pub failed: usize,
    pub running: usize,
    pub elapsed: Duration,
    /// Time left, and what it is based on; none before anything tells.
    pub eta: Option<(Duration, Basis)>,
}

impl Progress {
    /// The run's cases are about to start.
    pub fn start(&mut self, total: usize, now: Instant) {
        self.total = total;
        self.started = Some(now);
    }

    /// How many cases run at once, and each case's expected time when earlier runs tell.
    pub fn plan(&mut self, threads: usize, expected: Option<Arc<BTreeMap<String, u64>>>) {
        self.threads = threads.max(1);
        self.expected = expected;
    }

    pub fn case_started(&mut self, name: &str, now: Instant) {
        self.running.insert(name.to_string(), now);
    }

    /// A case ended: passed, failed (any `FAILED` line) or neither (skipped, not run).
    pub fn case_finished(&mut self, name: &str, passed: bool, failed: bool) {
        self.running.remove(name);
        self.finished.insert(name.to_string());
        match (passed, failed) {
            (true, _) => self.passed += 1,
            (_, true) => self.failed += 1,
            _ => self.other += 1,
        }
    }

    /// Whether the run has started (and not everything is done).
    pub fn active(&self) -> bool {
        self.started.is_some() && self.done() < self.total
    }

    fn done(&self) -> usize {
        self.passed + self.failed + self.other
    }

    /// The figures at `now`.
    pub fn status(&self, now: Instant) -> Status {
        let elapsed = self
            .started
            .map(|s| now.saturating_duration_since(s))
            .unwrap_or_default();
        let done = self.done();
        let left = self.total.saturating_sub(done);
        let eta = if left == 0 {
            Some((Duration::ZERO, self.basis()))
        } else if let Some(expected) = &self.expected {
            // What is left of every case not finished, spread over the threads it can use.
            let ms: u64 = expected
                .iter()
                .filter(|(name, _)| !self.finished.contains(*name))
                .map(|(name, ms)| match self.running.get(name) {
                    Some(since) => {
                        let ran = now.saturating_duration_since(*since).as_millis();
                        ms.saturating_sub(u64::try_from(ran).unwrap_or(u64::MAX))
                    }
                    None => *ms,
                })
                .sum();
            let lanes = self.threads.clamp(1, left.max(1)) as u64;
            Some((Duration::from_millis(ms / lanes), Basis::Durations))
        } else if done > 0 {
            Some((elapsed.mul_f64(left as f64 / done as f64), Basis::Pace))
        } else {
            None
        };
        Status {
            done,
            total: self.total,
            passed: self.passed,
            failed: self.failed,
            running: self.running.len(),
            elapsed,
            eta,
        }
    }

    fn basis(&self) -> Basis {
        if self.expected.is_some() {
            Basis::Durations
        } else {
            Basis::Pace
        }
    }
}

/// Whole seconds: a status line need not say milliseconds.
fn seconds(d: Duration) -> String {
    match d.as_secs() {
        0 => "0s".to_string(),
        secs => show_duration(Duration::from_secs(secs)),
    }
}

impl Status {
    fn eta_words(&self) -> String {
        match self.eta {
            Some((left, Basis::Durations)) => {
                format!("about {} left (by --durations)", seconds(left))
            }
            Some((left, Basis::Pace)) => {
                format!("about {} left (at the pace so far)", seconds(left))
            }
            None => "time left known after the first case".to_string(),
        }
    }

    /// The status line under the test lines on a terminal.
    pub fn terminal(&self) -> String {
        let (counts, eta) = self.terminal_parts();
        format!("{counts} · {} elapsed · {eta}", seconds(self.elapsed))
    }

    /// The status line's counts and its ETA; on a live terminal the bar draws the elapsed time
    /// between them itself, every second.
    pub fn terminal_parts(&self) -> (String, String) {
        let eta = match self.eta {
            Some((left, Basis::Durations)) => format!("ETA {} (by --durations)", seconds(left)),
            Some((left, Basis::Pace)) => format!("ETA {}", seconds(left)),
            None => "ETA after the first case".to_string(),
        };
        let counts = format!(
            "[{}/{}] {} passed, {} failed, {} running",
            self.done, self.total, self.passed, self.failed, self.running
        );
        (counts, eta)
    }

    /// The line a CI log gets every few minutes.
    pub fn plain(&self) -> String {
        format!(
            "zoo-runner: progress: {} of {} cases done ({} passed, {} failed), {} running; {} \
             elapsed; {}",
            self.done,
            self.total,
            self.passed,
            self.failed,
            self.running,
            seconds(self.elapsed),
            self.eta_words()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run of four cases on two threads, at fixed instants: the figures and the ETA as each
    /// event comes.
    fn script(expected: Option<Arc<BTreeMap<String, u64>>>, line: fn(&Status) -> String) -> String {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut p = Progress::default();
        p.plan(2, expected);
        let mut lines = Vec::new();
        p.start(4, at(0));
        lines.push(line(&p.status(at(0))));
        p.case_started("docker::a", at(0));
        p.case_started("docker::b", at(0));
        lines.push(line(&p.status(at(30))));
        p.case_finished("docker::a", true, false);
        p.case_started("docker::c", at(60));
        lines.push(line(&p.status(at(60))));
        p.case_finished("docker::b", false, true);
        p.case_started("docker::d", at(90));
        lines.push(line(&p.status(at(125))));
        p.case_finished("docker::c", false, false);
        p.case_finished("docker::d", true, false);
        lines.push(line(&p.status(at(3725))));
        lines.join("\n")
    }

    fn durations() -> Option<Arc<BTreeMap<String, u64>>> {
        Some(Arc::new(
            [("a", 60), ("b", 90), ("c", 600), ("d", 30)]
                .into_iter()
                .map(|(m, s)| (format!("docker::{m}"), s * 1000))
                .collect(),
        ))
    }

    #[test]
    fn the_terminal_status_line() {
        insta::assert_snapshot!("terminal_by_pace", script(None, Status::terminal));
        insta::assert_snapshot!(
            "terminal_by_durations",
            script(durations(), Status::terminal)
        );
    }

    #[test]
    fn the_plain_progress_line() {
        let text = script(durations(), Status::plain);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "zoo-runner: progress: 0 of 4 cases done (0 passed, 0 failed), 0 running; 0s \
             elapsed; about 6m30s left (by --durations)"
        );
        // a done at 60 s, c running since 60 s: b's 30 s, c's 600 s and d's 30 s over two threads.
        assert_eq!(
            lines[2],
            "zoo-runner: progress: 1 of 4 cases done (1 passed, 0 failed), 2 running; 1m \
             elapsed; about 5m30s left (by --durations)"
        );
        assert_eq!(
            lines[4],
            "zoo-runner: progress: 4 of 4 cases done (2 passed, 1 failed), 0 running; 1h2m5s \
             elapsed; about 0s left (by --durations)"
        );
        let pace = script(None, Status::plain);
        assert!(
            pace.lines()
                .next()
                .unwrap()
                .ends_with("time left known after the first case"),
            "{pace}"
        );
        // One case of four in 60 s: three more at that pace.
        assert!(
            pace.lines()
                .nth(2)
                .unwrap()
                .ends_with("about 3m left (at the pace so far)"),
            "{pace}"
        );
    }
}
