//! One lock per image name across processes: `<dir>/<name>.sif.lock`, held with an advisory
//! exclusive lock (`flock`, through `std::fs::File::try_lock`) by whoever fetches or builds that
//! image. A process that dies releases it with its open files, so a lock is never stale.
//!
//! Waiting polls, so that it stays interruptible (`stop`) and bounded ([`WAIT_LIMIT`]). The lock
//! file holds the holder's pid, for the waiting message; it is never deleted (deleting a lock
//! file lets two processes lock two different files of one name).

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use super::error::{io_error, SifError};
use crate::store::pid_file::{read_holder, write_holder};

/// How long a fetch waits for another process's fetch of the same image. A Kipoi SIF is a few
/// GB; this is far more than a working download needs and ends a wait on a stuck process.
pub(super) const WAIT_LIMIT: Duration = Duration::from_secs(2 * 60 * 60);
/// How often a waiting fetch tries the lock again and looks at `stop`.
const POLL: Duration = Duration::from_millis(100);

/// The held lock; released when dropped (the file is closed).
#[derive(Debug)]
pub(super) struct NameLock {
    _file: File,
}

impl NameLock {
    /// Takes the lock of `label` (`<name>.sif`) in `dir`, waiting for another holder at most
    /// `limit`, and giving up with [`SifError::Interrupted`] as soon as `stop()` is true. Also
    /// says whether it had to wait.
    pub(super) fn acquire(
        dir: &Path,
        label: &str,
        limit: Duration,
        stop: &dyn Fn() -> bool,
    ) -> Result<(NameLock, bool), SifError> {
        let path = dir.join(format!("{label}.lock"));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_error("open lock file", &path))?;
        let started = Instant::now();
        let mut told = false;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(err)) => return Err(io_error("lock", &path)(err)),
            }
            if stop() {
                return Err(SifError::Interrupted {
                    label: label.to_owned(),
                });
            }
            if started.elapsed() >= limit {
                return Err(SifError::LockWait {
                    path,
                    holder: read_holder(&mut file),
                    waited: limit,
                });
            }
            if !told {
                told = true;
                crate::events::note(format!(
                    "waiting for {} to finish fetching `{label}` into `{}`",
                    describe_holder(read_holder(&mut file)),
                    dir.display()
                ));
            }
            thread::sleep(POLL);
        }
        write_holder(&mut file);
        Ok((NameLock { _file: file }, told))
    }
}

pub(super) fn describe_holder(pid: Option<u32>) -> String {
    match pid {
        Some(pid) if pid == std::process::id() => "another case of this run".to_owned(),
        Some(pid) => format!("another process (pid {pid})"),
        None => "another process".to_owned(),
    }
}
