//! Transfers off a terminal: one plain line at the start, whenever another quarter of the
//! total is reached (every [`PLAIN_STEP`] bytes while the total is unknown), at most every
//! [`PLAIN_PERIOD`] otherwise if bytes moved, and at the end. A redrawn line would become
//! one endless line in a CI log.

use std::time::{Duration, Instant};

use crate::config::units::show_size;

/// Distance between two lines when the total size is unknown.
const PLAIN_STEP: u64 = 256 * 1024 * 1024;
/// A line at least this often while bytes move, so a slow pull still shows life.
const PLAIN_PERIOD: Duration = Duration::from_secs(30);

/// When the last plain line of a transfer was printed, and at what byte count.
#[derive(Debug, Clone)]
pub(super) struct Milestones {
    last_printed: Option<u64>,
    last_at: Instant,
}

impl Milestones {
    pub(super) fn new(now: Instant) -> Self {
        Milestones {
            last_printed: None,
            last_at: now,
        }
    }

    /// Whether a line is due at `done` bytes.
    pub(super) fn due(&self, done: u64, total: Option<u64>, now: Instant) -> bool {
        match self.last_printed {
            None => true,
            Some(last) => {
                milestone(done, total) > milestone(last, total)
                    || (done > last && now.duration_since(self.last_at) >= PLAIN_PERIOD)
            }
        }
    }

    pub(super) fn mark(&mut self, done: u64, _total: Option<u64>, now: Instant) {
        self.last_printed = Some(done);
        self.last_at = now;
    }
}

/// Number of milestones reached at `done` bytes: quarters of `total` (0 to 4), or whole
/// [`PLAIN_STEP`]s when the total is unknown.
fn milestone(done: u64, total: Option<u64>) -> u64 {
    match total {
        Some(total) if total > 0 => (u128::from(done) * 4 / u128::from(total)).min(4) as u64,
        _ => done / PLAIN_STEP,
    }
}

/// `zoo-runner: pull img: 312.4 MiB of 1.2 GiB, 26%`.
pub fn transfer_line(label: &str, done: u64, total: Option<u64>) -> String {
    match total {
        Some(total) if total > 0 => {
            let percent = (u128::from(done) * 100 / u128::from(total)).min(100);
            format!(
                "zoo-runner: {label}: {} of {}, {percent}%",
                show_size(done),
                show_size(total)
            )
        }
        _ if done == 0 => format!("zoo-runner: {label}: starting"),
        _ => format!("zoo-runner: {label}: {}", show_size(done)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_show_readable_bytes_and_percent() {
        let mib = 1024 * 1024;
        assert_eq!(
            transfer_line("pull img", 312 * mib + mib / 2, Some(1229 * mib)),
            "zoo-runner: pull img: 312.5 MiB of 1.2 GiB, 25%"
        );
        assert_eq!(
            transfer_line("img.sif", 3 * mib, None),
            "zoo-runner: img.sif: 3.0 MiB"
        );
        assert_eq!(
            transfer_line("x", 10, Some(0)),
            "zoo-runner: x: 10 B",
            "a zero total is unknown, not a division by zero"
        );
    }

    #[test]
    fn lines_come_at_start_each_quarter_step_or_period() {
        let mib = 1024 * 1024;
        let t0 = Instant::now();
        let total = Some(100 * mib);
        let mut m = Milestones::new(t0);
        assert!(m.due(0, total, t0), "the first line is always due");
        m.mark(mib, total, t0);
        assert!(!m.due(24 * mib, total, t0));
        assert!(m.due(25 * mib, total, t0));
        m.mark(25 * mib, total, t0);
        assert!(!m.due(49 * mib, total, t0));
        assert!(m.due(100 * mib, total, t0));
        // Long quiet stretches still get a line, but only when bytes moved.
        let later = t0 + PLAIN_PERIOD;
        assert!(m.due(26 * mib, total, later));
        assert!(!m.due(25 * mib, total, later));
        // Unknown (or zero) total: every 256 MiB.
        for unknown in [None, Some(0)] {
            let mut m = Milestones::new(t0);
            m.mark(mib, unknown, t0);
            assert!(!m.due(255 * mib, unknown, t0));
            assert!(m.due(256 * mib, unknown, t0));
        }
    }
}
