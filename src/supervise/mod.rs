//! One supervisor for everything the runner starts and then waits on: a case's process, a SIF
//! build, a version probe, a credential helper, git. Whatever it watches, the same rules hold:
//!
//! - a deadline: past its timeout the target is asked to stop (SIGTERM), and killed after the
//!   grace period (SIGKILL);
//! - a cancel: the run's first interruption stops it the same way, a second one kills at once;
//! - a give-up: a target still there [`Limits::slack`] after its kill is given up on, so no
//!   wait is ever unbounded;
//! - slow notices: every [`Limits::slow`] while it runs;
//! - a bounded drain: its output is read for at most [`Limits::drain`] after it has ended.
//!
//! The target says how it is stopped and killed ([`Control`]); [`process`] is the one for a
//! child process in a process group of its own.

pub mod process;

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use futures_util::future::BoxFuture;

use crate::cancel::{Cancel, Level};

/// The bounds of one supervised wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Stopped after this long; `None` leaves only a cancel to stop it.
    pub timeout: Option<Duration>,
    /// Between the stop (SIGTERM) and the kill (SIGKILL).
    pub grace: Duration,
    /// How long a target may still take to go after its kill before it is given up on (and,
    /// for a target whose stop kills by itself, after that stop's grace period too).
    pub slack: Duration,
    /// A slow notice every period while it runs.
    pub slow: Option<Duration>,
    /// How long its output is still read after it has ended.
    pub drain: Duration,
}

impl Limits {
    /// Limits for a helper the runner runs for itself (a probe, a credential helper, git): a
    /// deadline, a short grace, no slow notices.
    pub fn helper(timeout: Duration) -> Limits {
        Limits {
            timeout: Some(timeout),
            grace: Duration::from_secs(2),
            slack: Duration::from_secs(5),
            slow: None,
            drain: Duration::from_secs(2),
        }
    }
}

/// How a supervised wait ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending<X> {
    /// It ended by itself.
    Exited(X),
    /// Stopped past its timeout; `killed` when the runner had to kill it (SIGTERM was not enough).
    TimedOut { killed: bool },
    /// Stopped because the run was interrupted; `killed` as above.
    Interrupted { killed: bool },
    /// Stopped (past its timeout when `timed_out`, else on interruption) and killed, but still
    /// there `waited` after the stop: given up on.
    Stuck { timed_out: bool, waited: Duration },
    /// It could not be waited on any more (the wait itself failed).
    Lost(String),
}

/// How a target is stopped and killed. Each request may take its time (a daemon that does not
/// answer): it runs beside the wait and the deadlines, never in front of them.
pub trait Control: Sync {
    /// Asks it to stop: SIGTERM. A target whose stop kills by itself after `grace` (Docker's
    /// stop) says so in [`Control::kill_after`].
    fn stop(&self, grace: Duration) -> BoxFuture<'_, Result<(), String>>;
    /// Kills it: SIGKILL.
    fn kill(&self) -> BoxFuture<'_, Result<(), String>>;
    /// How long after the stop the runner kills it itself: the grace period, unless the stop
    /// escalates by itself (then the grace period and the slack).
    fn kill_after(&self, limits: &Limits) -> Duration {
        limits.grace
    }
}

/// Waits for `wait` (the target's end) within `limits`, stopping and killing it through
/// `control` at its timeout or on a cancel, and giving up on it when it will not go. `on_slow`
/// is told how long it has run, every slow period. Also returns notes on what went wrong while
/// stopping it (failed requests, a give-up), for the case's output.
pub async fn supervise<X>(
    wait: impl Future<Output = Result<X, String>>,
    control: &dyn Control,
    limits: &Limits,
    cancel: &Cancel,
    started: Instant,
    mut on_slow: impl FnMut(Duration),
) -> (Ending<X>, Vec<String>) {
    tokio::pin!(wait);
    let far = Duration::from_secs(100 * 365 * 24 * 3600);
    let deadline = tokio::time::sleep_until(at(started, limits.timeout.unwrap_or(far)));
    tokio::pin!(deadline);
    let period = limits.slow.unwrap_or(far).max(Duration::from_millis(1));
    // The next whole period from the start: a wait begun late must not repeat the slow
    // notices it missed.
    let periods = started.elapsed().as_nanos() / period.as_nanos() + 1;
    let first = period.saturating_mul(u32::try_from(periods).unwrap_or(u32::MAX));
    let mut slow = tokio::time::interval_at(at(started, first), period);
    slow.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);

    // Why it was stopped: a timeout (true) or a cancel (false).
    let mut stopped: Option<bool> = None;
    let mut killed = false;
    let mut request: Option<BoxFuture<'_, (&'static str, Result<(), String>)>> = None;
    let mut give_up: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    let mut notes = Vec::new();
    let stop = |grace| -> BoxFuture<'_, (&'static str, Result<(), String>)> {
        let fut = control.stop(grace);
        Box::pin(async move { ("stop", fut.await) })
    };
    let kill = || -> BoxFuture<'_, (&'static str, Result<(), String>)> {
        let fut = control.kill();
        Box::pin(async move { ("kill", fut.await) })
    };
    loop {
        tokio::select! {
            ended = &mut wait => {
                let ending = match (ended, stopped) {
                    (_, Some(true)) => Ending::TimedOut { killed },
                    (_, Some(false)) => Ending::Interrupted { killed },
                    (Ok(x), None) => Ending::Exited(x),
                    (Err(e), None) => Ending::Lost(e),
                };
                return (ending, notes);
            }
            _ = &mut deadline, if stopped.is_none() => {
                stopped = Some(true);
                request = Some(stop(limits.grace));
                give_up = Some(Box::pin(tokio::time::sleep(control.kill_after(limits))));
            }
            _ = cancel.reached(Level::Stop), if stopped.is_none() => {
                stopped = Some(false);
                request = Some(stop(limits.grace));
                give_up = Some(Box::pin(tokio::time::sleep(control.kill_after(limits))));
            }
            // A second interruption kills at once.
            _ = cancel.reached(Level::Kill), if stopped.is_some() && !killed => {
                killed = true;
                request = Some(kill());
                give_up = Some(Box::pin(tokio::time::sleep(limits.slack)));
            }
            (what, result) = async { request.as_mut().expect("guarded").await }, if request.is_some() => {
                request = None;
                if let Err(e) = result {
                    notes.push(format!("the {what} request failed: {e}"));
                }
            }
            _ = async { give_up.as_mut().expect("guarded").await }, if give_up.is_some() => {
                if killed {
                    notes.push(format!(
                        "still running {} after the SIGKILL; the runner gave up on it",
                        crate::config::units::show_duration(limits.slack)
                    ));
                    let waited = control.kill_after(limits).saturating_add(limits.slack);
                    return (Ending::Stuck { timed_out: stopped == Some(true), waited }, notes);
                }
                if control.kill_after(limits) > limits.grace {
                    notes.push(format!(
                        "still running {} after its stop's grace period; the runner sent SIGKILL",
                        crate::config::units::show_duration(limits.slack)
                    ));
                }
                killed = true;
                request = Some(kill());
                give_up = Some(Box::pin(tokio::time::sleep(limits.slack)));
            }
            _ = slow.tick(), if stopped.is_none() && limits.slow.is_some() => {
                on_slow(started.elapsed());
            }
        }
    }
}

/// Drives `reading` while `work` runs, then gives `reading` at most `drain` more. Returns what
/// `work` gave and whether `reading` finished.
pub async fn read_while<W: Future>(
    reading: impl Future<Output = ()>,
    work: W,
    drain: Duration,
) -> (W::Output, bool) {
    tokio::pin!(reading);
    tokio::pin!(work);
    let mut read_all = false;
    let result = loop {
        tokio::select! {
            () = &mut reading, if !read_all => read_all = true,
            result = &mut work => break result,
        }
    };
    let read_all = read_all || tokio::time::timeout(drain, &mut reading).await.is_ok();
    (result, read_all)
}

/// `start + after` on tokio's clock, or a far future where that would overflow.
fn at(start: Instant, after: Duration) -> Instant {
    start
        .checked_add(after)
        .unwrap_or_else(|| start + Duration::from_secs(100 * 365 * 24 * 3600))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;

    /// A stand-in target, named so: it records the requests it gets, and ends only when told
    /// to by `ends_on` (a stop, a kill, or never: a target that ignores even SIGKILL).
    struct StandIn {
        stops: AtomicU32,
        kills: AtomicU32,
        ends_on: &'static str,
        end: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    }

    impl StandIn {
        fn new(ends_on: &'static str) -> (StandIn, tokio::sync::oneshot::Receiver<()>) {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let s = StandIn {
                stops: AtomicU32::new(0),
                kills: AtomicU32::new(0),
                ends_on,
                end: Mutex::new(Some(tx)),
            };
            (s, rx)
        }
        fn end_if(&self, what: &str) {
            if self.ends_on == what {
                if let Some(tx) = self.end.lock().unwrap().take() {
                    let _ = tx.send(());
                }
            }
        }
    }

    impl Control for StandIn {
        fn stop(&self, _grace: Duration) -> BoxFuture<'_, Result<(), String>> {
            self.stops.fetch_add(1, Ordering::SeqCst);
            self.end_if("stop");
            Box::pin(async { Ok(()) })
        }
        fn kill(&self) -> BoxFuture<'_, Result<(), String>> {
            self.kills.fetch_add(1, Ordering::SeqCst);
            self.end_if("kill");
            Box::pin(async { Ok(()) })
        }
    }

    fn limits(timeout_ms: u64) -> Limits {
        Limits {
            timeout: Some(Duration::from_millis(timeout_ms)),
            grace: Duration::from_millis(100),
            slack: Duration::from_millis(100),
            slow: None,
            drain: Duration::from_millis(100),
        }
    }

    async fn run(
        target: &StandIn,
        rx: tokio::sync::oneshot::Receiver<()>,
        l: Limits,
        cancel: &Cancel,
    ) -> Ending<()> {
        let wait = async move { rx.await.map_err(|e| e.to_string()) };
        supervise(wait, target, &l, cancel, Instant::now(), |_| {})
            .await
            .0
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_stops_then_kills_then_gives_up() {
        let cancel = Cancel::new();
        let (t, rx) = StandIn::new("stop");
        assert_eq!(
            run(&t, rx, limits(50), &cancel).await,
            Ending::TimedOut { killed: false }
        );
        let (t, rx) = StandIn::new("kill");
        assert_eq!(
            run(&t, rx, limits(50), &cancel).await,
            Ending::TimedOut { killed: true }
        );
        assert_eq!(
            (
                t.stops.load(Ordering::SeqCst),
                t.kills.load(Ordering::SeqCst)
            ),
            (1, 1)
        );
        // A stand-in that ignores even SIGKILL: given up on, within grace + slack.
        let (t, rx) = StandIn::new("never");
        let began = Instant::now();
        let ending = run(&t, rx, limits(50), &cancel).await;
        assert!(
            matches!(
                ending,
                Ending::Stuck {
                    timed_out: true,
                    ..
                }
            ),
            "{ending:?}"
        );
        assert_eq!(
            began.elapsed(),
            Duration::from_millis(250),
            "timeout, grace, slack"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancel_stops_and_a_second_kills_at_once() {
        let cancel = Cancel::new();
        let (t, rx) = StandIn::new("kill");
        let mut l = limits(60_000);
        l.grace = Duration::from_secs(60);
        let c2 = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            c2.raise(libc::SIGINT);
            tokio::time::sleep(Duration::from_millis(50)).await;
            c2.raise(libc::SIGINT);
        });
        let began = Instant::now();
        assert_eq!(
            run(&t, rx, l, &cancel).await,
            Ending::Interrupted { killed: true }
        );
        assert_eq!(
            began.elapsed(),
            Duration::from_millis(100),
            "not the 60 s grace"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_end_by_itself_is_exited_and_slow_notices_come_per_period() {
        let cancel = Cancel::new();
        let (t, _rx) = StandIn::new("never");
        let mut l = limits(60_000);
        l.slow = Some(Duration::from_millis(40));
        let mut notices = 0;
        let wait = async {
            tokio::time::sleep(Duration::from_millis(150)).await;
            Ok::<_, String>(7)
        };
        let (ending, notes) =
            supervise(wait, &t, &l, &cancel, Instant::now(), |_| notices += 1).await;
        assert_eq!(ending, Ending::Exited(7));
        assert!(notes.is_empty());
        assert_eq!(notices, 3, "at 40, 80 and 120 ms");
    }
}
