//! Testing knobs: environment variables that shorten the runner's longest waits, so the tests
//! can reach deadlines that take minutes in real use. They are left out of `--help` on purpose
//! (the README's "Testing knobs" names them); a bad value stops the run at start (exit 2).

use std::ffi::OsString;
use std::time::Duration;

use thiserror::Error;

use crate::config::units::{parse_positive_duration, UnitError};

/// How long the daemon gets to answer a request (bollard's default) when no stop needs longer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long after a stop's grace period the runner still waits for the container to exit
/// before it kills it itself, and again after that kill before it gives up on it.
pub const STOP_SLACK: Duration = Duration::from_secs(30);
/// How long the runner waits on a container that will not stop and on a daemon that does not
/// answer. The constants above, unless the tests shorten them (this module).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waits {
    /// See `STOP_SLACK`.
    pub stop_slack: Duration,
    /// The least time a request gets; see `request_timeout`.
    pub request_timeout: Duration,
}

impl Default for Waits {
    fn default() -> Self {
        Self {
            stop_slack: STOP_SLACK,
            request_timeout: REQUEST_TIMEOUT,
        }
    }
}

impl Waits {
    /// How long any request to the daemon may take: at least `request_timeout`, and as long as
    /// the longest stop (the grace period, then a SIGKILL, with `stop_slack` after each), so a
    /// stop with a long grace period is not cut off while the daemon carries it out. Rounded
    /// up to whole seconds: bollard counts whole seconds and would take 0.5 s as 0 (at once).
    pub fn request_timeout(&self, grace: Duration) -> Duration {
        let longest_stop = grace.saturating_add(self.stop_slack.saturating_mul(2));
        let wanted = self.request_timeout.max(longest_stop);
        let secs = wanted.as_secs() + u64::from(wanted.subsec_nanos() > 0);
        Duration::from_secs(secs.max(1))
    }
}

/// Replaces `STOP_SLACK`: the wait after a stop's grace period before SIGKILL, and after that
/// SIGKILL before the container is given up on.
pub const STOP_SLACK_VAR: &str = "ZOO_RUNNER_STOP_SLACK";
/// Replaces `REQUEST_TIMEOUT`: the least time the daemon gets to answer a request.
pub const REQUEST_TIMEOUT_VAR: &str = "ZOO_RUNNER_REQUEST_TIMEOUT";

/// Replaces the deadlines of the programs the runner runs for itself: credential helpers
/// (`HELPER_TIMEOUT`) and git (`GIT_TIMEOUT`).
pub const HELPER_TIMEOUT_VAR: &str = "ZOO_RUNNER_HELPER_TIMEOUT";

/// Replaces `INFRA_BACKOFF`: the pause before the first rerun of a case the outside world
/// failed (the spec's `infra_failures`).
pub const INFRA_BACKOFF_VAR: &str = "ZOO_RUNNER_INFRA_BACKOFF";
/// Before the first rerun of such a case: a throttled server (Zenodo's rate limit) wants time.
/// Doubled for each further rerun, at most `INFRA_BACKOFF_MAX`, with jitter (`config::backoff`).
pub const INFRA_BACKOFF: Duration = Duration::from_secs(30);
pub const INFRA_BACKOFF_MAX: Duration = Duration::from_secs(600);

/// Replaces how often a plain progress line is printed off a terminal (every 3 minutes).
pub const PROGRESS_EVERY_VAR: &str = "ZOO_RUNNER_PROGRESS_EVERY";

/// How often the knob says a progress line is printed off a terminal, if it is set.
pub fn progress_every(
    get: impl Fn(&str) -> Option<OsString>,
) -> Result<Option<Duration>, KnobError> {
    duration(&get, PROGRESS_EVERY_VAR)
}

/// The most any knob takes: they exist to shorten waits, not to make them endless.
const MAX_KNOB: Duration = Duration::from_secs(3600);

#[derive(Debug, Error, PartialEq, Eq)]
pub enum KnobError {
    #[error(
        "bad value in the environment variable {var} (a testing knob; unset it to use the default)"
    )]
    Bad {
        var: &'static str,
        #[source]
        source: UnitError,
    },
    #[error("the environment variable {var} is not valid UTF-8 (a testing knob; unset it to use the default)")]
    NotUnicode { var: &'static str },
}

/// The Docker waits, with the knobs `get` finds (`std::env::var_os` in the runner) applied.
pub fn docker_waits(get: impl Fn(&str) -> Option<OsString>) -> Result<Waits, KnobError> {
    let defaults = Waits::default();
    Ok(Waits {
        stop_slack: duration(&get, STOP_SLACK_VAR)?.unwrap_or(defaults.stop_slack),
        request_timeout: request_timeout(&get)?.unwrap_or(defaults.request_timeout),
    })
}

/// The deadline the knob sets for the runner's helper programs, if it is set.
pub fn helper_timeout(
    get: impl Fn(&str) -> Option<OsString>,
) -> Result<Option<Duration>, KnobError> {
    duration(&get, HELPER_TIMEOUT_VAR)
}

/// The pauses before the reruns of a case the outside world failed, with the knob applied.
pub fn infra_backoff(
    get: impl Fn(&str) -> Option<OsString>,
) -> Result<crate::config::backoff::Backoff, KnobError> {
    let first = duration(&get, INFRA_BACKOFF_VAR)?.unwrap_or(INFRA_BACKOFF);
    Ok(crate::config::backoff::Backoff::new(
        first,
        INFRA_BACKOFF_MAX.max(first),
    ))
}

fn request_timeout(get: &impl Fn(&str) -> Option<OsString>) -> Result<Option<Duration>, KnobError> {
    let Some(d) = duration(get, REQUEST_TIMEOUT_VAR)? else {
        return Ok(None);
    };
    // bollard counts whole seconds: less than one would time every request out at once.
    if d < Duration::from_secs(1) {
        let text = get(REQUEST_TIMEOUT_VAR)
            .map(|v| v.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Err(KnobError::Bad {
            var: REQUEST_TIMEOUT_VAR,
            source: UnitError::TooSmall {
                text,
                what: REQUEST_TIMEOUT_VAR,
                min: "1s".to_string(),
            },
        });
    }
    Ok(Some(d))
}

/// A duration knob: `None` when unset, an error naming the variable when it does not parse or
/// is zero or above `MAX_KNOB`.
fn duration(
    get: &impl Fn(&str) -> Option<OsString>,
    var: &'static str,
) -> Result<Option<Duration>, KnobError> {
    let Some(value) = get(var) else {
        return Ok(None);
    };
    let text = value.to_str().ok_or(KnobError::NotUnicode { var })?;
    parse_positive_duration(text, var, MAX_KNOB)
        .map(Some)
        .map_err(|source| KnobError::Bad { var, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error_chain::chain;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn requests_may_take_as_long_as_the_longest_stop() {
        let defaults = Waits::default();
        // Short stops keep bollard's two minutes.
        assert_eq!(defaults.request_timeout(secs(10)), REQUEST_TIMEOUT);
        assert_eq!(defaults.request_timeout(Duration::ZERO), REQUEST_TIMEOUT);
        // A long grace period: the grace, then a SIGKILL, with the slack after each.
        assert_eq!(defaults.request_timeout(secs(300)), secs(300 + 2 * 30));
        assert_eq!(defaults.request_timeout(secs(3600)), secs(3660));
        let knobs = Waits {
            stop_slack: secs(2),
            request_timeout: secs(3),
        };
        assert_eq!(knobs.request_timeout(secs(6)), secs(10));
        assert_eq!(knobs.request_timeout(Duration::ZERO), secs(4));
        let knobs = Waits {
            stop_slack: secs(1),
            request_timeout: secs(5),
        };
        assert_eq!(knobs.request_timeout(secs(1)), secs(5));
    }

    #[test]
    fn request_timeouts_are_whole_seconds_never_zero() {
        let w = Waits {
            stop_slack: Duration::from_millis(250),
            request_timeout: Duration::from_millis(100),
        };
        assert_eq!(w.request_timeout(Duration::ZERO), secs(1));
        assert_eq!(w.request_timeout(secs(2)), secs(3), "2.5 s rounds up");
    }

    /// Against the real daemon: two removals of one container at once (as two runners'
    /// sweeps of one leftover) both end without an error, one of them by the other's hand,
    /// and the container is gone.
    fn waits(vars: &[(&str, &str)]) -> Result<Waits, KnobError> {
        docker_waits(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        })
    }

    #[test]
    fn unset_knobs_keep_the_defaults() {
        assert_eq!(waits(&[]), Ok(Waits::default()));
    }

    #[test]
    fn knobs_replace_the_waits() {
        let w = waits(&[(STOP_SLACK_VAR, "2s"), (REQUEST_TIMEOUT_VAR, "1m30s")]).unwrap();
        assert_eq!(w.stop_slack, Duration::from_secs(2));
        assert_eq!(w.request_timeout, Duration::from_secs(90));
        let w = waits(&[(STOP_SLACK_VAR, "500ms")]).unwrap();
        assert_eq!(w.stop_slack, Duration::from_millis(500));
        assert_eq!(w.request_timeout, Waits::default().request_timeout);
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, value) in [
            (STOP_SLACK_VAR, "soon"),
            (STOP_SLACK_VAR, "0s"),
            (STOP_SLACK_VAR, "2h"),
            (REQUEST_TIMEOUT_VAR, ""),
            (REQUEST_TIMEOUT_VAR, "500ms"),
            (REQUEST_TIMEOUT_VAR, "99999999999999999999s"),
        ] {
            let e = waits(&[(var, value)]).unwrap_err();
            let shown = chain(&e);
            assert!(shown.contains(var), "{var}={value}: {shown}");
            assert!(shown.contains(&format!("`{value}`")), "{shown}");
        }
    }

    #[test]
    fn the_helper_deadline_knob_is_read_and_checked() {
        let get = |value: &'static str| {
            move |name: &str| (name == HELPER_TIMEOUT_VAR).then(|| OsString::from(value))
        };
        assert_eq!(helper_timeout(|_| None), Ok(None));
        assert_eq!(helper_timeout(get("2s")), Ok(Some(Duration::from_secs(2))));
        let e = helper_timeout(get("0s")).unwrap_err();
        assert!(chain(&e).contains(HELPER_TIMEOUT_VAR), "{}", chain(&e));
    }

    #[test]
    fn a_value_that_is_not_utf8_is_an_error_too() {
        use std::os::unix::ffi::OsStringExt;
        let e = docker_waits(|name| {
            (name == STOP_SLACK_VAR).then(|| OsString::from_vec(vec![b'2', 0xff]))
        })
        .unwrap_err();
        assert_eq!(
            e,
            KnobError::NotUnicode {
                var: STOP_SLACK_VAR
            }
        );
    }
}
