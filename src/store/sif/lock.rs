//! One lock per image name across processes: `<dir>/<name>.sif.lock` (the store's one lock,
//! `crate::store::lock`), held by whoever fetches or builds that image. Waiting stays
//! interruptible (`stop`) and bounded ([`WAIT_LIMIT`]).

use std::path::Path;
use std::time::Duration;

use super::error::SifError;
use crate::store::lock::{self, FileLock, Waited};

/// How long a fetch waits for another process's fetch of the same image. A Kipoi SIF is a few
/// GB; this is far more than a working download needs and ends a wait on a stuck process.
pub(super) const WAIT_LIMIT: Duration = Duration::from_secs(2 * 60 * 60);

/// Takes the lock of `label` (`<name>.sif`) in `dir`, waiting for another holder at most
/// `limit`, and giving up with [`SifError::Interrupted`] as soon as `stop()` is true. Also
/// says whether it had to wait.
pub(super) fn acquire(
    dir: &Path,
    label: &str,
    limit: Duration,
    stop: &dyn Fn() -> bool,
) -> Result<(FileLock, bool), SifError> {
    let path = dir.join(format!("{label}.lock"));
    let mut waited = false;
    let said = |holder| {
        waited = true;
        crate::events::note(format!(
            "waiting for {holder} to finish fetching `{label}` into `{}`",
            dir.display()
        ));
    };
    match lock::acquire_blocking(&path, Some(limit), stop, said)? {
        Waited::Taken(lock, _) => Ok((lock, waited)),
        Waited::Stopped => Err(SifError::Interrupted {
            label: label.to_owned(),
        }),
        Waited::TimedOut(holder) => Err(SifError::LockWait {
            path,
            holder,
            waited: limit,
        }),
    }
}
