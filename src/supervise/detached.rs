//! Work on a blocking thread that can outlive the future that started it: a SIF fetch or a
//! credential lookup made ready ahead for cases that then did not run (`--fail-fast`) goes on
//! in its thread after the stage drops its future. Each piece of work holds a [`Ticket`] until
//! its thread ends and runs under [`Detached::cancel`]; at the end of the run,
//! [`Detached::stop_all`] kills what still runs, at once, and waits for it, so that nothing the
//! runner started outlives it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedRwLockReadGuard, RwLock};

use crate::cancel::Cancel;

/// Held by a piece of work until its thread ends.
pub type Ticket = OwnedRwLockReadGuard<()>;

pub struct Detached {
    cancel: Cancel,
    /// Read by each piece of work in flight; written by `stop_all` to wait for them all.
    running: Arc<RwLock<()>>,
}

impl Detached {
    /// Work under a child of the run's cancel: stopped by an interruption, or by `stop_all`.
    pub fn new(run: &Cancel) -> Self {
        Detached {
            cancel: run.child(),
            running: Arc::default(),
        }
    }

    /// What the work runs under.
    pub fn cancel(&self) -> &Cancel {
        &self.cancel
    }

    /// Taken before the work starts, moved into its thread.
    pub async fn ticket(&self) -> Ticket {
        Arc::clone(&self.running).read_owned().await
    }

    /// Kills the work still running and waits for its threads to end: at most `bound`, or
    /// until they end (`None`). False when the bound passed first.
    pub async fn stop_all(&self, bound: Option<Duration>) -> bool {
        self.cancel.kill_now();
        match bound {
            Some(bound) => tokio::time::timeout(bound, self.running.write())
                .await
                .is_ok(),
            None => {
                let _all_ended = self.running.write().await;
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_all_kills_the_work_and_waits_for_its_thread() {
        let run = Cancel::new();
        let detached = Detached::new(&run);
        let ticket = detached.ticket().await;
        let cancel = detached.cancel().clone();
        // Work that runs until it is told to stop, long after its future was dropped.
        let thread = tokio::task::spawn_blocking(move || {
            let _ticket = ticket;
            while !cancel.is_cancelled() {
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        drop(thread);
        assert!(detached.stop_all(Some(Duration::from_secs(30))).await);
        assert!(!run.is_cancelled(), "the run goes on");
    }

    #[tokio::test]
    async fn a_thread_that_does_not_stop_is_waited_for_only_until_the_bound() {
        let detached = Detached::new(&Cancel::new());
        let ticket = detached.ticket().await;
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        // Deaf to the cancel: it ends when the test lets it.
        tokio::task::spawn_blocking(move || {
            let _ticket = ticket;
            let _ = rx.recv();
        });
        assert!(!detached.stop_all(Some(Duration::from_millis(50))).await);
        drop(tx);
    }
}
