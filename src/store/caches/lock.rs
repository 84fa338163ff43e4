//! One lock per cache (the store's one lock, `crate::store::lock`): `NAME.lock` beside the
//! cache (Apptainer) or in the cache folder's `docker/` (Docker volumes), held by the case that
//! uses the cache, from before its container is created until it has ended. Its modification
//! time is when the cache was last taken: `cache list` shows it as "last used".

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::CacheError;
use crate::cancel::Cancel;
use crate::store::lock::{self, FileLock, Waited};

pub use crate::store::lock::last_used;

/// A held cache lock; released when dropped.
pub type CacheLock = FileLock;

/// Takes the lock at `path`, waiting for whoever holds it (a case of this run or of another
/// runner) for as long as it takes; each case it waits for has a timeout of its own. Gives up
/// when the run is interrupted. `what` names the cache in the waiting message. Returns the lock
/// and how long it waited.
pub async fn acquire(
    path: &Path,
    what: &str,
    cancel: &Cancel,
) -> Result<(CacheLock, Duration), CacheError> {
    let stop = || cancel.is_cancelled();
    let said = |holder| {
        crate::events::note(format!(
            "waiting for {holder} to finish with the cache {what}"
        ))
    };
    match lock::acquire(path, None, &stop, said).await? {
        Waited::Taken(lock, waited) => Ok((lock, waited)),
        Waited::Stopped | Waited::TimedOut(_) => Err(CacheError::Interrupted {
            what: what.to_string(),
        }),
    }
}

/// Takes the lock at `path` only when nobody holds it (for `cache prune`, which leaves a
/// cache in use alone).
pub fn try_acquire(path: &Path) -> Result<Option<CacheLock>, CacheError> {
    Ok(lock::try_acquire(path)?)
}

/// The lock file of a cache named `name` in `dir`.
pub fn lock_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.lock"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_interruption_ends_the_wait_and_names_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(dir.path(), "c");
        let _held = try_acquire(&path).unwrap().unwrap();
        let cancel = Cancel::new();
        cancel.raise(2);
        let err = acquire(&path, "`c`", &cancel).await.unwrap_err();
        assert!(err.to_string().contains("`c`"), "{err}");
    }
}
