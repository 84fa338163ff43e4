//! Run-wide interruption state: Ctrl-C (SIGINT), SIGTERM or SIGHUP asks running cases to stop their
//! containers gracefully and the rest not to start; a second signal asks for an immediate kill.
//! Cases still remove what they started in both cases.

use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Running = 0,
    /// Stop gracefully: SIGTERM, grace period, SIGKILL.
    Stop = 1,
    /// Kill at once.
    Kill = 2,
}

#[derive(Debug, Clone)]
pub struct Cancel {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    level: AtomicU8,
    signal: AtomicI32,
    tx: watch::Sender<Level>,
    /// A child is cancelled with its parent too ([`Cancel::child`]).
    parent: Option<Cancel>,
}

impl Default for Cancel {
    fn default() -> Self {
        Self::new()
    }
}

impl Cancel {
    pub fn new() -> Self {
        Self::with_parent(None)
    }

    /// A cancel raised with this one, or on its own ([`Cancel::kill_now`]): for work that may
    /// have to stop while the run goes on.
    pub fn child(&self) -> Self {
        Self::with_parent(Some(self.clone()))
    }

    fn with_parent(parent: Option<Cancel>) -> Self {
        let (tx, _rx) = watch::channel(Level::Running);
        Self {
            inner: Arc::new(Inner {
                level: AtomicU8::new(0),
                signal: AtomicI32::new(0),
                tx,
                parent,
            }),
        }
    }

    pub fn level(&self) -> Level {
        let own = self.own_level();
        match &self.inner.parent {
            Some(parent) => own.max(parent.level()),
            None => own,
        }
    }

    fn own_level(&self) -> Level {
        match self.inner.level.load(Ordering::SeqCst) {
            0 => Level::Running,
            1 => Level::Stop,
            _ => Level::Kill,
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.level() != Level::Running
    }

    /// The first signal received, if any (2 for SIGINT, 15 for SIGTERM, 1 for SIGHUP).
    pub fn signal(&self) -> Option<i32> {
        match self.inner.signal.load(Ordering::SeqCst) {
            0 => self.inner.parent.as_ref().and_then(Cancel::signal),
            s => Some(s),
        }
    }

    /// Records a signal: the first asks to stop, the next asks to kill.
    pub fn raise(&self, signal: i32) {
        let _ = self
            .inner
            .signal
            .compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
        let next = if self.level() == Level::Running {
            Level::Stop
        } else {
            Level::Kill
        };
        self.inner.level.fetch_max(next as u8, Ordering::SeqCst);
        self.inner.tx.send_replace(self.own_level());
    }

    /// Asks for an immediate kill, with no signal: what runs under this cancel (a child's)
    /// stops at once, and a parent goes on.
    pub fn kill_now(&self) {
        self.inner
            .level
            .fetch_max(Level::Kill as u8, Ordering::SeqCst);
        self.inner.tx.send_replace(self.own_level());
    }

    /// Resolves once the level reaches at least `at_least`.
    pub async fn reached(&self, at_least: Level) {
        let mut rx = self.inner.tx.subscribe();
        let own = async move {
            let _ = rx.wait_for(|l| *l >= at_least).await;
        };
        match &self.inner.parent {
            Some(parent) => {
                tokio::select! {
                    _ = own => {}
                    _ = Box::pin(parent.reached(at_least)) => {}
                }
            }
            None => own.await,
        }
    }

    /// Listens for SIGINT, SIGTERM and SIGHUP on the current tokio runtime for the rest of the
    /// run. SIGHUP (a CI job's terminal that closes) is treated as SIGTERM; if the terminal is
    /// gone, the runner's own output goes to /dev/null from then on, so that printing cannot
    /// end the run before the containers are stopped and the report is written.
    pub fn listen_for_signals(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let sig = tokio::select! {
                    _ = int.recv() => libc::SIGINT,
                    _ = term.recv() => libc::SIGTERM,
                    _ = hup.recv() => {
                        silence_lost_terminal();
                        libc::SIGHUP
                    }
                };
                let first = !me.is_cancelled();
                me.raise(sig);
                if first {
                    crate::events::note(
                        "interrupted; stopping running containers (again to kill them at once)",
                    );
                } else {
                    crate::events::note("killing running containers now");
                }
            }
        });
        Ok(())
    }
}

/// Points stdout and stderr at /dev/null where they are a terminal: after a hangup, writes to
/// it fail, and a failed print would end the run.
fn silence_lost_terminal() {
    use std::os::fd::AsRawFd;
    let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") else {
        return;
    };
    for fd in [libc::STDOUT_FILENO, libc::STDERR_FILENO] {
        // SAFETY: isatty and dup2 on the process's own standard descriptors and a file we
        // opened; no memory is shared.
        unsafe {
            if libc::isatty(fd) == 1 {
                libc::dup2(null.as_raw_fd(), fd);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_signal_stops_second_kills() {
        let c = Cancel::new();
        assert_eq!(c.level(), Level::Running);
        c.raise(libc::SIGTERM);
        assert_eq!(c.level(), Level::Stop);
        c.raise(libc::SIGINT);
        assert_eq!(c.level(), Level::Kill);
        assert_eq!(c.signal(), Some(libc::SIGTERM), "the first signal is kept");
    }

    #[test]
    fn waiters_wake_up() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let c = Cancel::new();
        let c2 = c.clone();
        rt.block_on(async move {
            let waiter = tokio::spawn(async move { c2.reached(Level::Stop).await });
            tokio::task::yield_now().await;
            c.raise(libc::SIGINT);
            tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
                .await
                .expect("waiter woke")
                .unwrap();
        });
    }

    #[test]
    fn a_child_stops_with_its_parent_or_alone_and_the_parent_goes_on() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let wait = std::time::Duration::from_secs(5);
        rt.block_on(async move {
            // Alone: killed at once, with no signal, and the parent still runs.
            let parent = Cancel::new();
            let child = parent.child();
            let waiting = child.clone();
            let waiter = tokio::spawn(async move { waiting.reached(Level::Kill).await });
            tokio::task::yield_now().await;
            child.kill_now();
            tokio::time::timeout(wait, waiter).await.unwrap().unwrap();
            assert_eq!((child.level(), child.signal()), (Level::Kill, None));
            assert_eq!(parent.level(), Level::Running);

            // With its parent: the parent's level and signal.
            let parent = Cancel::new();
            let child = parent.child();
            let waiting = child.clone();
            let waiter = tokio::spawn(async move { waiting.reached(Level::Stop).await });
            tokio::task::yield_now().await;
            parent.raise(libc::SIGTERM);
            tokio::time::timeout(wait, waiter).await.unwrap().unwrap();
            assert_eq!(child.level(), Level::Stop);
            assert_eq!(child.signal(), Some(libc::SIGTERM));
        });
    }
}
