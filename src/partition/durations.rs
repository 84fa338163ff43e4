//! `--durations PATH`: how long each case took before, from JUnit reports the runner wrote (a
//! file, a folder of them, or a merged report), to balance `--partition time:M/N`.
//!
//! A case is known by `runtime::model` (the testcase's name and the runtime its classname
//! starts with). A case with no recorded time counts as the median of the recorded ones; a case
//! reported `not-run` (an interrupted run) has no recorded time. A case recorded in several
//! reports counts as the mean of its times. Reports that record no time at all have no median:
//! every case then weighs the same, as without `--durations`, and the callers say so.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// The weight of a case that took no measurable time: every case costs a container start.
const MIN_MS: u64 = 1;
/// The weight of every case when there is no median (no reports, or no time in them): a
/// placeholder that only makes the cases equal, never shown as a time.
const EQUAL_MS: u64 = 1000;

#[derive(Debug, Clone, Default)]
pub struct Durations {
    /// `runtime::model` -> milliseconds.
    times: BTreeMap<String, u64>,
    /// The median of the recorded times; none when no case has one.
    median: Option<u64>,
    /// How many report files were read.
    pub files: usize,
    /// Where they were read (`--durations PATH`).
    pub path: PathBuf,
    /// `runtime:image` -> the longest pull of the image the reports recorded (their
    /// testsuites' `pull-seconds`), in milliseconds; only pulls that took time.
    pulls: BTreeMap<String, u64>,
}

impl Durations {
    /// The durations `files` reports under `path` recorded: one `(runtime::model, ms)` per case
    /// that ran in a report (a case in several reports counts as the mean).
    pub fn from_times(
        path: PathBuf,
        files: usize,
        recorded: impl IntoIterator<Item = (String, u64)>,
    ) -> Self {
        let mut sums: BTreeMap<String, (u128, u64)> = BTreeMap::new();
        for (name, ms) in recorded {
            let e = sums.entry(name).or_default();
            e.0 += u128::from(ms);
            e.1 += 1;
        }
        let times: BTreeMap<String, u64> = sums
            .into_iter()
            .map(|(name, (sum, n))| {
                let mean = (sum / u128::from(n.max(1))) as u64;
                (name, mean.max(MIN_MS))
            })
            .collect();
        Self {
            median: median(times.values().copied()),
            times,
            files,
            path,
            pulls: BTreeMap::new(),
        }
    }

    /// Adds the pulls the reports recorded: `(runtime:image, ms)`; an image pulled in several
    /// reports counts as its longest pull (a job's limit must hold in the worst case).
    pub fn with_pulls(mut self, pulls: impl IntoIterator<Item = (String, u64)>) -> Self {
        for (suite, ms) in pulls.into_iter().filter(|(_, ms)| *ms > 0) {
            let e = self.pulls.entry(suite).or_default();
            *e = (*e).max(ms);
        }
        self
    }

    /// The expected pull time of an image (`runtime:image`), in milliseconds: recorded, or the
    /// median of the recorded pulls; none recorded, no time.
    pub fn pull_ms(&self, suite: &str) -> u64 {
        self.pulls
            .get(suite)
            .copied()
            .or_else(|| median(self.pulls.values().copied()))
            .unwrap_or(0)
    }

    /// Every case weighs the same: no earlier times.
    pub fn none() -> Self {
        Self::default()
    }

    /// The expected time of a case (`runtime::model`), in milliseconds: recorded, or the median.
    /// With no recorded time at all, every case gets the same weight (which is no time).
    pub fn weight(&self, case_name: &str) -> u64 {
        self.times
            .get(case_name)
            .copied()
            .or(self.median)
            .unwrap_or(EQUAL_MS)
    }

    /// True when the reports recorded at least one case's time.
    pub fn has_times(&self) -> bool {
        !self.times.is_empty()
    }

    pub fn is_known(&self, case_name: &str) -> bool {
        self.times.contains_key(case_name)
    }

    /// The median of the recorded times; none when the reports recorded no time.
    pub fn median_ms(&self) -> Option<u64> {
        self.median
    }
}

/// The median (the lower middle one of an even count, so it is always a recorded time).
fn median(values: impl Iterator<Item = u64>) -> Option<u64> {
    let mut all: Vec<u64> = values.collect();
    if all.is_empty() {
        return None;
    }
    all.sort_unstable();
    Some(all[(all.len() - 1) / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_a_recorded_time_and_a_case_in_several_reports_is_their_mean() {
        assert_eq!(median([5, 1, 3, 2].into_iter()), Some(2));
        assert_eq!(median(std::iter::empty()), None);
        let d = Durations::from_times(
            PathBuf::from("r"),
            2,
            [
                ("docker::a".to_string(), 1000),
                ("docker::a".to_string(), 3000),
            ],
        );
        assert_eq!(d.weight("docker::a"), 2000);
        assert_eq!(d.weight("docker::b"), 2000, "the median");
    }
}
