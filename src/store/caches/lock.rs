//! One lock per cache, across the threads of a run and across runners: `NAME.lock` beside the
//! cache (Apptainer) or in the cache folder's `docker/` (Docker volumes), held with an advisory
//! exclusive `flock` by the case that uses the cache, from before its container is created until
//! it has ended. A runner that dies releases its locks with its open files, so a lock is never
//! stale; lock files are never deleted (deleting one lets two processes lock two files of one
//! name).
//!
//! The lock file holds the holder's pid (for the waiting message), and its modification time is
//! when the cache was last taken: `cache list` shows it as "last used".

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::CacheError;
use crate::cancel::Cancel;
use crate::store::pid_file::{read_holder, write_holder};

/// How often a waiting case tries the lock again.
const POLL: Duration = Duration::from_millis(100);

/// A held cache lock; released when dropped.
#[derive(Debug)]
pub struct CacheLock {
    _file: File,
}

impl CacheLock {
    /// Takes the lock at `path`, waiting for whoever holds it (a case of this run or of another
    /// runner) for as long as it takes; each case it waits for has a timeout of its own. Gives up
    /// when the run is interrupted. `what` names the cache in the waiting message. Returns the
    /// lock and how long it waited.
    pub async fn acquire(
        path: &Path,
        what: &str,
        cancel: &Cancel,
    ) -> Result<(CacheLock, Duration), CacheError> {
        let mut file = open(path)?;
        let started = Instant::now();
        let mut told = false;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(source)) => {
                    return Err(CacheError::Lock {
                        path: path.to_path_buf(),
                        source,
                    })
                }
            }
            if cancel.is_cancelled() {
                return Err(CacheError::Interrupted {
                    what: what.to_string(),
                });
            }
            if !told {
                told = true;
                crate::events::note(format!(
                    "waiting for {} to finish with the cache {what}",
                    describe_holder(read_holder(&mut file))
                ));
            }
            tokio::time::sleep(POLL).await;
        }
        write_holder(&mut file);
        Ok((CacheLock { _file: file }, started.elapsed()))
    }

    /// Takes the lock at `path` only when nobody holds it (for `cache prune`, which leaves a
    /// cache in use alone).
    pub fn try_acquire(path: &Path) -> Result<Option<CacheLock>, CacheError> {
        let mut file = open(path)?;
        match file.try_lock() {
            Ok(()) => {
                write_holder(&mut file);
                Ok(Some(CacheLock { _file: file }))
            }
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(source)) => Err(CacheError::Lock {
                path: path.to_path_buf(),
                source,
            }),
        }
    }
}

fn open(path: &Path) -> Result<File, CacheError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| CacheError::Folder {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|source| CacheError::Lock {
            path: path.to_path_buf(),
            source,
        })
}

fn describe_holder(pid: Option<u32>) -> String {
    match pid {
        Some(pid) if pid == std::process::id() => "another case of this run".to_owned(),
        Some(pid) => format!("another runner (pid {pid})"),
        None => "another case".to_owned(),
    }
}

/// When the cache whose lock is at `path` was last taken, if it ever was.
pub fn last_used(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The lock file of a cache named `name` in `dir`.
pub fn lock_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.lock"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_held_lock_makes_the_next_wait_and_prune_skip() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(dir.path(), "c");
        let cancel = Cancel::new();
        let (held, waited) = CacheLock::acquire(&path, "c", &cancel).await.unwrap();
        assert!(waited < Duration::from_secs(1));
        assert!(CacheLock::try_acquire(&path).unwrap().is_none());
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(held);
        });
        let (_again, waited) = CacheLock::acquire(&path, "c", &cancel).await.unwrap();
        assert!(waited >= Duration::from_millis(250), "{waited:?}");
        release.await.unwrap();
        assert!(last_used(&path).is_some());
    }

    #[tokio::test]
    async fn an_interruption_ends_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(dir.path(), "c");
        let _held = CacheLock::try_acquire(&path).unwrap().unwrap();
        let cancel = Cancel::new();
        cancel.raise(2);
        let err = CacheLock::acquire(&path, "`c`", &cancel).await.unwrap_err();
        assert!(err.to_string().contains("`c`"), "{err}");
    }
}
