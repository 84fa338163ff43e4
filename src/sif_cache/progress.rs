//! The progress line drawn on stderr while an image downloads.
//!
//! On a terminal one line is redrawn in place with `\r`, at most every
//! [`PROGRESS_INTERVAL`]. Elsewhere (CI logs, files, pipes) that would become one
//! endless line, so plain lines are printed instead: at the start, whenever another
//! quarter of the known size is reached (every [`PLAIN_STEP`] bytes when the size
//! is unknown), and at the end.

use std::io::{self, IsTerminal};
use std::time::{Duration, Instant};

/// Minimum time between two redraws of the progress line.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);
/// Distance between two plain lines when the total size is unknown.
const PLAIN_STEP: u64 = 256 * 1024 * 1024;

/// The progress line of one download attempt on stderr.
pub(super) struct Progress<'a> {
    enabled: bool,
    label: &'a str,
    total: Option<u64>,
    style: Style,
}

/// How the line is shown, chosen once by whether stderr is a terminal.
enum Style {
    /// One line redrawn with `\r`; `last_draw` is when it was last drawn.
    Redraw { last_draw: Option<Instant> },
    /// One line per milestone; `last_printed` is the byte count of the last line.
    Lines { last_printed: Option<u64> },
}

impl<'a> Progress<'a> {
    pub(super) fn new(enabled: bool, label: &'a str, total: Option<u64>) -> Self {
        let style = if io::stderr().is_terminal() {
            Style::Redraw { last_draw: None }
        } else {
            Style::Lines { last_printed: None }
        };
        Progress {
            enabled,
            label,
            total,
            style,
        }
    }

    pub(super) fn update(&mut self, done: u64) {
        if !self.enabled {
            return;
        }
        let due = match self.style {
            Style::Redraw { last_draw } => {
                last_draw.is_none_or(|at| at.elapsed() >= PROGRESS_INTERVAL)
            }
            Style::Lines { last_printed } => plain_line_due(last_printed, done, self.total),
        };
        if due {
            self.draw(done);
        }
    }

    pub(super) fn finish(&mut self, done: u64) {
        if !self.enabled {
            return;
        }
        // A plain line for exactly this count is already there: do not repeat it.
        if let Style::Lines {
            last_printed: Some(last),
        } = self.style
        {
            if last == done {
                return;
            }
        }
        self.draw(done);
    }

    fn draw(&mut self, done: u64) {
        let line = progress_line(self.label, done, self.total);
        match &mut self.style {
            Style::Redraw { last_draw } => {
                eprint!("\r{line}");
                *last_draw = Some(Instant::now());
            }
            Style::Lines { last_printed } => {
                eprintln!("{line}");
                *last_printed = Some(done);
            }
        }
    }
}

impl Drop for Progress<'_> {
    /// Ends the redrawn line, also when the download failed half-way.
    fn drop(&mut self) {
        if let Style::Redraw { last_draw: Some(_) } = self.style {
            eprintln!();
        }
    }
}

/// Whether a plain (non-terminal) line is due at `done` bytes, given the byte count
/// of the last printed line: the first line always is, later ones once `done`
/// reaches a new quarter of `total` (or a new multiple of [`PLAIN_STEP`] when the
/// total is unknown).
fn plain_line_due(last_printed: Option<u64>, done: u64, total: Option<u64>) -> bool {
    last_printed.is_none_or(|last| milestone(done, total) > milestone(last, total))
}

/// Number of milestones reached at `done` bytes: quarters of `total` (0 to 4),
/// or whole [`PLAIN_STEP`]s when the total is unknown.
fn milestone(done: u64, total: Option<u64>) -> u64 {
    match total {
        Some(total) if total > 0 => (u128::from(done) * 4 / u128::from(total)).min(4) as u64,
        _ => done / PLAIN_STEP,
    }
}

fn progress_line(label: &str, done: u64, total: Option<u64>) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let done_mib = done as f64 / MIB;
    match total {
        Some(total) if total > 0 => {
            let percent = (u128::from(done) * 100 / u128::from(total)).min(100);
            let total_mib = total as f64 / MIB;
            format!("{label}: {percent:>3}% ({done_mib:.1} of {total_mib:.1} MiB)")
        }
        _ => format!("{label}: {done_mib:.1} MiB"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_line_shows_percent_and_mib() {
        let mib = 1024 * 1024;
        assert_eq!(
            progress_line("img.sif", mib / 2, Some(mib)),
            "img.sif:  50% (0.5 of 1.0 MiB)"
        );
        assert_eq!(progress_line("img.sif", 3 * mib, None), "img.sif: 3.0 MiB");
    }

    #[test]
    fn plain_line_due_at_start_each_quarter_or_256_mib_step() {
        let mib = 1024 * 1024;
        let total = Some(100 * mib);
        // The first line is always due, also for a resumed download.
        assert!(plain_line_due(None, 0, total));
        assert!(plain_line_due(None, 60 * mib, total));
        assert!(plain_line_due(None, mib, None));
        // Known size: one line per quarter reached, not per chunk.
        assert!(!plain_line_due(Some(mib), 24 * mib, total));
        assert!(plain_line_due(Some(24 * mib), 25 * mib, total));
        assert!(!plain_line_due(Some(25 * mib), 49 * mib, total));
        assert!(plain_line_due(Some(49 * mib), 75 * mib, total));
        assert!(plain_line_due(Some(99 * mib), 100 * mib, total));
        assert!(!plain_line_due(Some(100 * mib), 100 * mib, total));
        // Resumed at 60%: the next line comes at 75%.
        assert!(!plain_line_due(Some(60 * mib), 74 * mib, total));
        assert!(plain_line_due(Some(60 * mib), 75 * mib, total));
        // Unknown (or zero) size: every 256 MiB.
        for unknown in [None, Some(0)] {
            assert!(!plain_line_due(Some(mib), 255 * mib, unknown));
            assert!(plain_line_due(Some(255 * mib), 256 * mib, unknown));
            assert!(!plain_line_due(Some(256 * mib), 511 * mib, unknown));
            assert!(plain_line_due(Some(300 * mib), 600 * mib, unknown));
        }
    }
}
