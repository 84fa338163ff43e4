//! The one tally of results: the terminal's last line, the JUnit counts, the summary's table
//! and `merge` all count with it.

use std::time::Duration;

use super::outcome::Class;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub passed: usize,
    /// Passed after a failed attempt (counted here only, not in `passed`).
    pub flaky: usize,
    pub failed: usize,
    pub errored: usize,
    pub timed_out: usize,
    /// Skipped by the spec, expected failures, and other tools' skips.
    pub skipped: usize,
    pub not_run: usize,
    /// The cases' own time (every attempt), without pulls.
    pub time: Duration,
}

impl Counts {
    /// Counts one case.
    pub fn add(&mut self, class: &Class, flaky: bool, time: Duration) {
        match class {
            Class::Passed if flaky => self.flaky += 1,
            Class::Passed => self.passed += 1,
            Class::Failed => self.failed += 1,
            Class::Errored => self.errored += 1,
            Class::TimedOut => self.timed_out += 1,
            Class::Skipped { .. } => self.skipped += 1,
            Class::NotRun => self.not_run += 1,
        }
        self.time = self.time.saturating_add(time);
    }

    pub fn sum(&mut self, other: &Counts) {
        self.passed += other.passed;
        self.flaky += other.flaky;
        self.failed += other.failed;
        self.errored += other.errored;
        self.timed_out += other.timed_out;
        self.skipped += other.skipped;
        self.not_run += other.not_run;
        self.time = self.time.saturating_add(other.time);
    }

    /// Every case counted.
    pub fn cases(&self) -> usize {
        self.passed
            + self.flaky
            + self.failed
            + self.errored
            + self.timed_out
            + self.skipped
            + self.not_run
    }

    /// Cases that did not pass: failures, errors and timeouts.
    pub fn bad(&self) -> usize {
        self.failed + self.errored + self.timed_out
    }

    /// JUnit's `errors`: errors and timeouts.
    pub fn junit_errors(&self) -> usize {
        self.errored + self.timed_out
    }

    /// JUnit's `skipped`: skips, expected failures and cases not run.
    pub fn junit_skipped(&self) -> usize {
        self.skipped + self.not_run
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case_counts_once() {
        let mut c = Counts::default();
        let second = Duration::from_secs(1);
        c.add(&Class::Passed, false, second);
        c.add(&Class::Passed, true, second);
        c.add(&Class::TimedOut, false, second);
        c.add(&Class::skipped("expected-failure"), false, second);
        c.add(&Class::NotRun, false, Duration::ZERO);
        assert_eq!(c.cases(), 5);
        assert_eq!((c.passed, c.flaky, c.bad()), (1, 1, 1));
        assert_eq!((c.junit_errors(), c.junit_skipped()), (1, 2));
        assert_eq!(c.time, Duration::from_secs(4));
        let mut total = Counts::default();
        total.sum(&c);
        total.sum(&c);
        assert_eq!(total.cases(), 10);
    }
}
