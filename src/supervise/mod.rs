//! One supervisor for everything the runner starts and then waits on: a case's container or
//! process, a SIF build, a version probe, a credential helper, git.
//! Whatever it watches, the same rules hold:
//!
//! - a deadline: past its timeout the target is asked to stop (SIGTERM), and killed after the
//!   grace period (SIGKILL);
//! - a cancel: the run's first interruption stops it the same way, a second one kills at once;
//! - a give-up: a target still there [`Limits::slack`] after its kill is given up on, so no
//!   wait is ever unbounded;
//! - slow notices: every [`Limits::slow`] while it runs;
//! - a bounded drain: its output is read for at most [`Limits::drain`] once it has ended (one
//!   number per kind of target: [`Target::drain`]).
//!
//! The target says how it is stopped and killed ([`Control`]); [`process`] is the one for a
//! child process in a process group of its own, `crate::engine::container` the one for a
//! Docker container.

pub mod detached;
pub mod process;

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use futures_util::future::BoxFuture;

use crate::cancel::{Cancel, Level};
use crate::config::units::show_duration;

/// What a supervisor watches: it decides how long its output may stay open after its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A Docker container: its output stream ends with it; a daemon that keeps the stream open
    /// gets this long.
    Container,
    /// A child process: something it started that left its process group (`setsid`) may hold
    /// the pipes open for ever.
    Process,
}

impl Target {
    /// How long its output is still read after it has ended.
    pub const fn drain(self) -> Duration {
        match self {
            Target::Container => Duration::from_secs(10),
            Target::Process => Duration::from_secs(2),
        }
    }
}

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
    /// How long its output is still read after it has ended ([`Target::drain`]).
    pub drain: Duration,
}

impl Limits {
    /// Limits for a helper process the runner runs for itself (a probe, a credential helper,
    /// git): a deadline, a short grace, no slow notices.
    pub fn helper(timeout: Duration) -> Limits {
        Limits {
            timeout: Some(timeout),
            grace: Duration::from_secs(2),
            slack: Duration::from_secs(5),
            slow: None,
            drain: Target::Process.drain(),
        }
    }
}

/// What a supervised wait tells as it goes, for the person watching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// It has run this long (once per slow period).
    Slow(Duration),
    /// It ran past its timeout, and is being stopped.
    TimedOut,
    /// Something went wrong while stopping it (the same text is in the returned notes).
    Note(String),
}

/// How a supervised wait ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending<X, E = String> {
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
    Lost(E),
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
/// `control` at its timeout or on a cancel, and giving up on it when it will not go.
/// `on_notice` hears, as they happen, its slow notices, its timeout and what went wrong while
/// stopping it; those notes (failed requests, a give-up) are also returned, for its output.
///
/// This is the runner's one wait loop over a deadline: every wait on something it started
/// goes through here.
pub async fn supervise<X, E>(
    wait: impl Future<Output = Result<X, E>>,
    control: &dyn Control,
    limits: &Limits,
    cancel: &Cancel,
    started: Instant,
    mut on_notice: impl FnMut(Notice),
) -> (Ending<X, E>, Vec<String>) {
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
    let mut notes: Vec<String> = Vec::new();
    let note = |text: String, notes: &mut Vec<String>, on_notice: &mut dyn FnMut(Notice)| {
        on_notice(Notice::Note(text.clone()));
        notes.push(text);
    };
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
                on_notice(Notice::TimedOut);
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
                    note(format!("the {what} request failed: {e}"), &mut notes, &mut on_notice);
                }
            }
            _ = async { give_up.as_mut().expect("guarded").await }, if give_up.is_some() => {
                if killed {
                    let text = format!(
                        "still running {} after the SIGKILL; the runner gave up on it",
                        show_duration(limits.slack)
                    );
                    note(text, &mut notes, &mut on_notice);
                    let waited = control.kill_after(limits).saturating_add(limits.slack);
                    return (Ending::Stuck { timed_out: stopped == Some(true), waited }, notes);
                }
                if control.kill_after(limits) > limits.grace {
                    let text = format!(
                        "still running {} after its stop's grace period; the runner sent SIGKILL",
                        show_duration(limits.slack)
                    );
                    note(text, &mut notes, &mut on_notice);
                }
                killed = true;
                request = Some(kill());
                give_up = Some(Box::pin(tokio::time::sleep(limits.slack)));
            }
            _ = slow.tick(), if stopped.is_none() && limits.slow.is_some() => {
                on_notice(Notice::Slow(started.elapsed()));
            }
        }
    }
}

/// A supervised wait that read its target's output too.
#[derive(Debug)]
pub struct Watched<X, E = String> {
    pub ending: Ending<X, E>,
    /// What went wrong while stopping it ([`supervise`]'s notes).
    pub notes: Vec<String>,
    /// False when its output was still open [`Limits::drain`] after it ended, or when it was
    /// given up on (its output is then not waited for: it would not end).
    pub drained: bool,
}

/// [`supervise`], while `reading` takes in the target's output: once the target has ended,
/// `reading` gets at most [`Limits::drain`] more; none for a target given up on, which still
/// holds its output open.
pub async fn supervise_reading<X, E>(
    reading: impl Future<Output = ()>,
    wait: impl Future<Output = Result<X, E>>,
    control: &dyn Control,
    limits: &Limits,
    cancel: &Cancel,
    started: Instant,
    on_notice: impl FnMut(Notice),
) -> Watched<X, E> {
    tokio::pin!(reading);
    let work = supervise(wait, control, limits, cancel, started, on_notice);
    tokio::pin!(work);
    let mut read_all = false;
    let (ending, notes) = loop {
        tokio::select! {
            () = &mut reading, if !read_all => read_all = true,
            done = &mut work => break done,
        }
    };
    let stuck = matches!(ending, Ending::Stuck { .. });
    let drained = read_all
        || (!stuck
            && tokio::time::timeout(limits.drain, &mut reading)
                .await
                .is_ok());
    Watched {
        ending,
        notes,
        drained,
    }
}

/// How a bounded wait on a request was cut short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// It took longer than its timeout.
    TimedOut,
    /// The run was interrupted.
    Interrupted,
}

/// Waits for `work`, a request with nothing to stop (dropping it ends it: a daemon's answer, a
/// pull's stream, a download on a blocking thread that sees the interruption too), for at most
/// `timeout` and until the run's interruption. To go on with `work` after a cut, pass it by
/// `&mut` (pinned).
pub async fn until<T>(
    work: impl Future<Output = T>,
    timeout: Option<Duration>,
    cancel: &Cancel,
) -> Result<T, Cut> {
    let far = Duration::from_secs(100 * 365 * 24 * 3600);
    tokio::select! {
        done = tokio::time::timeout(timeout.unwrap_or(far), work) => done.map_err(|_| Cut::TimedOut),
        _ = cancel.reached(Level::Stop) => Err(Cut::Interrupted),
    }
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
    async fn a_bounded_request_ends_at_its_timeout_or_the_interruption() {
        let cancel = Cancel::new();
        let slow = tokio::time::sleep(Duration::from_secs(60));
        assert_eq!(
            until(slow, Some(Duration::from_secs(1)), &cancel).await,
            Err(Cut::TimedOut)
        );
        assert_eq!(until(async { 7 }, None, &cancel).await, Ok(7));
        let c2 = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            c2.raise(libc::SIGINT);
        });
        let never = std::future::pending::<()>();
        assert_eq!(until(never, None, &cancel).await, Err(Cut::Interrupted));
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
