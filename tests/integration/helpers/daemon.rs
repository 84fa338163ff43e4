//! Turns at the Docker daemon. A runner that starts removes the containers of runs whose runner
//! was killed (the sweep, `DockerRuntime::sweep_stale`), so a test that checks what a killed run
//! left, or that the next run removes it, needs a moment in which no other runner starts. Such
//! a test takes [`alone`]; every test that starts the runner takes [`shared`] first (the
//! runner's path, [`super::bin`], checks that it did), so the two never overlap.
//!
//! One lock for the whole test binary (`cargo test`). Under nextest every test is a process of
//! its own and this lock does nothing: `.config/nextest.toml` gives the [`alone`] tests every
//! test thread instead (`threads-required`), so nothing runs beside them there either.

use std::cell::Cell;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

static DAEMON: RwLock<()> = RwLock::new(());

thread_local! {
    /// How many guards this thread holds (a test may take one more in a helper).
    static HELD: Cell<usize> = const { Cell::new(0) };
}

/// A turn at the daemon, held until dropped.
pub struct Turn {
    _guard: Guard,
}

enum Guard {
    Shared(#[allow(dead_code)] RwLockReadGuard<'static, ()>),
    Alone(#[allow(dead_code)] RwLockWriteGuard<'static, ()>),
    /// This thread already had a turn: a second read lock could wait behind a waiting writer
    /// forever (std's lock prefers writers), so none is taken.
    Nested,
}

/// A turn beside every other test that holds one too; waits while an [`alone`] test runs.
pub fn shared() -> Turn {
    let guard = if held() > 0 {
        Guard::Nested
    } else {
        Guard::Shared(DAEMON.read().unwrap_or_else(|p| p.into_inner()))
    };
    HELD.with(|h| h.set(h.get() + 1));
    Turn { _guard: guard }
}

/// The daemon to this test alone: waits until no other test holds a turn, and keeps every
/// other test that starts the runner waiting until dropped.
pub fn alone() -> Turn {
    assert_eq!(held(), 0, "take daemon::alone() before any other turn");
    let guard = Guard::Alone(DAEMON.write().unwrap_or_else(|p| p.into_inner()));
    HELD.with(|h| h.set(h.get() + 1));
    Turn { _guard: guard }
}

impl Drop for Turn {
    fn drop(&mut self) {
        HELD.with(|h| h.set(h.get() - 1));
    }
}

fn held() -> usize {
    HELD.with(Cell::get)
}

/// Fails the test unless this thread holds a turn: every runner a test starts runs in one.
pub fn assert_turn() {
    assert!(
        held() > 0,
        "a test that starts the runner takes `let _daemon = daemon::shared();` first \
         (or daemon::alone()): see tests/integration/helpers/daemon.rs"
    );
}
