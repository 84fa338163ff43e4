//! How the runner waits before it tries again what the outside world failed: exponential
//! backoff with jitter. One policy for every retry of the kind: a SIF download, a registry pull,
//! and a case whose output says its data could not be fetched (the spec's `infra_failures`).
//!
//! Pause before retry `k` (0 for the first): a random time between half and all of
//! `first * 2^k`, held at `max`. The jitter spreads many jobs throttled at once (a CI matrix
//! that hit Zenodo's rate limit together) so that they do not come back together.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Pause before the first retry (before jitter); doubled for each further retry.
    pub first: Duration,
    /// The longest pause, however many retries came before.
    pub max: Duration,
}

impl Backoff {
    pub const fn new(first: Duration, max: Duration) -> Self {
        Backoff { first, max }
    }

    /// The pause before retry `retry` (0-based), before jitter: `first * 2^retry`, at most `max`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.min(31));
        self.first.saturating_mul(factor).min(self.max)
    }

    /// The pause before retry `retry` (0-based): between half the ceiling and all of it.
    pub fn pause(&self, retry: u32) -> Duration {
        jittered(self.ceiling(retry), fastrand::f64())
    }
}

/// `ceiling` scaled into [ceiling/2, ceiling] by `unit` (a number in [0, 1)).
fn jittered(ceiling: Duration, unit: f64) -> Duration {
    let unit = if unit.is_finite() {
        unit.clamp(0.0, 1.0)
    } else {
        0.0
    };
    ceiling.mul_f64(0.5 + unit / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_are_held_and_jittered_within_half() {
        let b = Backoff::new(Duration::from_secs(2), Duration::from_secs(60));
        assert_eq!(b.ceiling(0), Duration::from_secs(2));
        assert_eq!(b.ceiling(2), Duration::from_secs(8));
        assert_eq!(b.ceiling(10), Duration::from_secs(60));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(60));
        assert_eq!(
            jittered(Duration::from_secs(8), 0.0),
            Duration::from_secs(4)
        );
        assert_eq!(
            jittered(Duration::from_secs(8), 1.0),
            Duration::from_secs(8)
        );
        assert_eq!(
            jittered(Duration::from_secs(8), f64::NAN),
            Duration::from_secs(4)
        );
        let pauses: Vec<Duration> = (0..200).map(|_| b.pause(2)).collect();
        assert!(pauses
            .iter()
            .all(|p| *p >= Duration::from_secs(4) && *p <= Duration::from_secs(8)));
        assert!(
            pauses.iter().any(|p| *p != pauses[0]),
            "jitter: not every pause is the same"
        );
    }
}
