//! A child process under the supervisor: started in a process group of its own (so a stop
//! reaches everything it started, and a signal to the runner's terminal group does not reach
//! it first), its output read into bounded captures, stopped with SIGTERM to the group, killed
//! with SIGKILL to the group. Whatever the end, what is left of its group is killed: nothing it
//! started outlives it.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use futures_util::future::BoxFuture;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::time::Instant;

use super::{supervise_reading, Control, Ending, Limits, Notice, Watched};
use crate::cancel::Cancel;
use crate::capture::Captured;

/// The process could not be started at all.
#[derive(Debug, Error)]
#[error("failed to start `{program}`")]
pub struct SpawnError {
    pub program: String,
    #[source]
    pub source: std::io::Error,
}

/// How a supervised process ended, with what it printed.
#[derive(Debug)]
pub struct Finished {
    pub ending: Ending<ExitStatus>,
    pub stdout: Captured,
    pub stderr: Captured,
    /// False when its output was still open [`Limits::drain`] after it ended (something it
    /// started left its process group and holds the pipes), or when it was given up on.
    pub drained: bool,
    /// What went wrong while stopping it.
    pub notes: Vec<String>,
}

impl Finished {
    /// True when it ended by itself with exit status 0.
    pub fn succeeded(&self) -> bool {
        matches!(&self.ending, Ending::Exited(status) if status.success())
    }
}

/// Signals to the process group a child leads.
struct Group {
    pgid: Option<i32>,
}

impl Control for Group {
    fn stop(&self, _grace: Duration) -> BoxFuture<'_, Result<(), String>> {
        self.signal(libc::SIGTERM);
        Box::pin(async { Ok(()) })
    }

    fn kill(&self) -> BoxFuture<'_, Result<(), String>> {
        self.signal(libc::SIGKILL);
        Box::pin(async { Ok(()) })
    }
}

impl Group {
    fn signal(&self, signal: i32) {
        if let Some(pgid) = self.pgid {
            signal_group(pgid, signal);
        }
    }
}

/// Sends `signal` to the process group `pgid`.
pub fn signal_group(pgid: i32, signal: i32) {
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is touched.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

/// Runs `command` in a process group of its own under `limits`, feeding it `stdin` (else
/// /dev/null) and keeping `keep` bytes of each end of its output. `on_notice` hears the
/// supervisor's notices as they come (slow, timed out, trouble stopping it).
pub async fn run(
    command: Command,
    stdin: Option<Vec<u8>>,
    keep: usize,
    limits: &Limits,
    cancel: &Cancel,
    on_notice: impl FnMut(Notice),
) -> Result<Finished, SpawnError> {
    let captures = [Captured::new(keep), Captured::new(keep)];
    run_capturing(command, stdin, captures, limits, cancel, on_notice).await
}

/// Like [`run`], with its output kept in memory only, never spooled to disk: for a child whose
/// output may hold a secret (a credential helper's answer).
pub async fn run_in_memory(
    command: Command,
    stdin: Option<Vec<u8>>,
    keep: usize,
    limits: &Limits,
    cancel: &Cancel,
) -> Result<Finished, SpawnError> {
    let captures = [Captured::in_memory(keep), Captured::in_memory(keep)];
    run_capturing(command, stdin, captures, limits, cancel, |_| {}).await
}

async fn run_capturing(
    mut command: Command,
    stdin: Option<Vec<u8>>,
    [mut stdout, mut stderr]: [Captured; 2],
    limits: &Limits,
    cancel: &Cancel,
    on_notice: impl FnMut(Notice),
) -> Result<Finished, SpawnError> {
    let program = command
        .as_std()
        .get_program()
        .to_string_lossy()
        .into_owned();
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let started = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|source| SpawnError { program, source })?;
    let group = Group {
        pgid: child.id().map(|id| id as i32),
    };
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A child that exits without reading closes the pipe: its exit status tells.
        tokio::spawn(async move {
            let _ = pipe.write_all(&bytes).await;
        });
    }
    let (out, err) = (child.stdout.take(), child.stderr.take());
    let Watched {
        ending,
        notes,
        drained,
    } = {
        let reading = async {
            tokio::join!(pump(out, &mut stdout), pump(err, &mut stderr));
        };
        let wait = async { child.wait().await.map_err(|e| e.to_string()) };
        supervise_reading(reading, wait, &group, limits, cancel, started, on_notice).await
    };
    // The leader is gone (or given up on): what is left of its group goes with it.
    group.signal(libc::SIGKILL);
    if matches!(ending, Ending::Stuck { .. }) {
        // Beyond the group: the leader itself, should it have left it.
        let _ = child.start_kill();
    }
    Ok(Finished {
        ending,
        stdout,
        stderr,
        drained,
        notes,
    })
}

/// Runs a future to its end from code that is not async: on the run's runtime from one of its
/// blocking threads, else on a runtime of its own. Never call it from async code.
pub fn block_on<F: std::future::Future>(fut: F) -> std::io::Result<F::Output> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => Ok(handle.block_on(fut)),
        Err(_) => Ok(tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(fut)),
    }
}

/// Copies a pipe into a bounded capture until it closes.
async fn pump(reader: Option<impl AsyncRead + Unpin>, into: &mut Captured) {
    let Some(mut reader) = reader else { return };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => into.push(&buf[..n]),
        }
    }
}

/// The signal that ended a process, if one did.
pub fn exit_signal(status: &ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    status.signal()
}

/// For tests: whether a process still runs, once a SIGKILL sent to it has had up to 10 s to
/// land (delivery is not instant on a loaded machine; a bound for a signal, not a speed check).
/// A zombie no one reaped yet does not run.
#[cfg(test)]
pub(crate) fn still_running(pid: &str) -> bool {
    let runs = || {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    };
    let asked = std::time::Instant::now();
    while runs() {
        if asked.elapsed() > Duration::from_secs(10) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script);
        c
    }

    fn limits(timeout: Duration) -> Limits {
        Limits {
            timeout: Some(timeout),
            grace: Duration::from_millis(200),
            slack: Duration::from_secs(2),
            slow: None,
            drain: Duration::from_millis(500),
        }
    }

    #[tokio::test]
    async fn output_and_exit_status_come_back() {
        let cancel = Cancel::new();
        let done = run(
            sh("read x; echo out $x; echo err >&2; exit 3"),
            Some(b"in\n".to_vec()),
            1024,
            &limits(Duration::from_secs(30)),
            &cancel,
            |_| {},
        )
        .await
        .unwrap();
        assert!(matches!(&done.ending, Ending::Exited(s) if s.code() == Some(3)));
        assert_eq!(done.stdout.finish().text(), "out in\n");
        assert_eq!(done.stderr.finish().text(), "err\n");
        assert!(done.drained);
    }

    #[tokio::test]
    async fn a_stop_reaches_the_whole_group_and_sigkill_follows_the_grace() {
        let cancel = Cancel::new();
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        // Both ignore SIGTERM; the group's SIGKILL after the grace period takes them. The stop
        // comes only once the background child is there (a loaded machine may take its time).
        let script = format!(
            "trap '' TERM; sleep 600 & echo $! > '{}'; wait",
            pidfile.display()
        );
        let (c2, watched) = (cancel.clone(), pidfile.clone());
        tokio::spawn(async move {
            while std::fs::read_to_string(&watched).map_or(true, |t| !t.ends_with('\n')) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            c2.raise(libc::SIGTERM);
        });
        let done = run(
            sh(&script),
            None,
            1024,
            &limits(Duration::from_secs(600)),
            &cancel,
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!(done.ending, Ending::Interrupted { killed: true });
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        assert!(!still_running(&pid), "the group's sleep is gone");
    }

    #[tokio::test]
    async fn a_cancel_ends_a_process_that_would_never_end() {
        let cancel = Cancel::new();
        let c2 = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            c2.raise(libc::SIGTERM);
        });
        let done = run(
            sh("sleep 600"),
            None,
            1024,
            &limits(Duration::from_secs(600)),
            &cancel,
            |_| {},
        )
        .await
        .unwrap();
        assert!(
            matches!(done.ending, Ending::Interrupted { .. }),
            "{:?}",
            done.ending
        );
    }

    /// A STAND-IN for a process that even SIGKILL does not end: a leader (perl) that moves
    /// itself out of its process group into the test's own (`setpgid`), so the group's SIGTERM
    /// and SIGKILL never reach it. The supervisor gives up on it after the slack and the wait
    /// ends; only then is the leader killed by its pid.
    #[tokio::test]
    async fn a_leader_the_group_kill_does_not_reach_is_given_up_on() {
        let cancel = Cancel::new();
        let dir = tempfile::tempdir().unwrap();
        let moved = dir.path().join("moved");
        let script = format!(
            "setpgrp(0, getpgrp(getppid())) or die \"setpgid: $!\"; \
             open(my $f, '>', '{}') or die; print $f \"$$\\n\"; close $f; sleep 600;",
            moved.display()
        );
        let mut command = Command::new("perl");
        command.arg("-e").arg(script);
        // The stop comes once it is out of its group.
        let (c2, watched) = (cancel.clone(), moved.clone());
        tokio::spawn(async move {
            while std::fs::read_to_string(&watched).map_or(true, |t| !t.ends_with('\n')) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            c2.raise(libc::SIGTERM);
        });
        let limits = Limits {
            timeout: Some(Duration::from_secs(600)),
            grace: Duration::from_millis(200),
            slack: Duration::from_secs(1),
            slow: None,
            drain: Duration::from_millis(500),
        };
        let mut notices = Vec::new();
        let done = run(command, None, 1024, &limits, &cancel, |n| notices.push(n))
            .await
            .unwrap();
        assert_eq!(
            done.ending,
            Ending::Stuck {
                timed_out: false,
                waited: Duration::from_millis(1200)
            },
            "the grace period, then the slack after the SIGKILL"
        );
        let gave_up = "still running 1s after the SIGKILL; the runner gave up on it";
        assert_eq!(done.notes, [gave_up]);
        assert_eq!(notices, [Notice::Note(gave_up.to_string())]);
        assert!(
            !done.drained,
            "a process given up on holds its output: not waited for"
        );
        let pid = std::fs::read_to_string(&moved).unwrap();
        assert!(!still_running(&pid), "killed by its pid once given up on");
    }

    #[tokio::test]
    async fn a_missing_program_keeps_the_os_error() {
        let cancel = Cancel::new();
        let err = run(
            Command::new("/nonexistent/program"),
            None,
            1024,
            &limits(Duration::from_secs(1)),
            &cancel,
            |_| {},
        )
        .await
        .unwrap_err();
        assert_eq!(err.source.kind(), std::io::ErrorKind::NotFound);
        assert!(err.to_string().contains("/nonexistent/program"), "{err}");
    }
}
