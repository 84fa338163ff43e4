//! The one lock of the store: a file per thing locked (a SIF name, a cache), held with an
//! advisory exclusive `flock` (`std::fs::File::try_lock`) by whoever works on it. The lock is
//! between the threads of a run and between runners sharing the folder alike. A process that
//! dies releases its locks with its open files, so a lock is never stale; lock files are never
//! deleted (deleting one lets two processes lock two different files of one name).
//!
//! The file holds the holder's pid, so that whoever waits can say whom it waits for, and its
//! modification time is when it was last taken. Waiting polls, so that it stays interruptible
//! and may be bounded.

use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use thiserror::Error;

/// How often a waiter tries the lock again.
const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Error)]
pub enum LockError {
    #[error("cannot open the lock file `{}`", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot lock `{}`", .path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A held lock; released when dropped.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

/// Who holds a lock, as far as its file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// This process: another case of this run.
    ThisRun,
    Other(u32),
    Unknown,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Holder::ThisRun => f.write_str("another case of this run"),
            Holder::Other(pid) => write!(f, "another runner (pid {pid})"),
            Holder::Unknown => f.write_str("another runner"),
        }
    }
}

/// How a wait for a lock ended.
#[derive(Debug)]
pub enum Waited {
    /// Taken, after this long.
    Taken(FileLock, Duration),
    /// Given up on: the caller's `stop` said so.
    Stopped,
    /// Given up on after the caller's limit, with who held it then.
    TimedOut(Holder),
}

/// Opens the lock file at `path`, making its folder when missing.
fn open(path: &Path) -> Result<File, LockError> {
    let open_error = |source| LockError::Open {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(open_error)?;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(open_error)
}

/// One try: the lock, or who holds it.
fn try_once(file: &mut File, path: &Path) -> Result<Option<Holder>, LockError> {
    match file.try_lock() {
        Ok(()) => {
            write_holder(file);
            Ok(None)
        }
        Err(TryLockError::WouldBlock) => Ok(Some(read_holder(file))),
        Err(TryLockError::Error(source)) => Err(LockError::Lock {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Takes the lock at `path` only when nobody holds it.
pub fn try_acquire(path: &Path) -> Result<Option<FileLock>, LockError> {
    let mut file = open(path)?;
    Ok(match try_once(&mut file, path)? {
        None => Some(FileLock { _file: file }),
        Some(_) => None,
    })
}

/// Takes the lock at `path` when nobody holds it, else says who does (for a caller that tries
/// several locks in turn and waits for whichever frees first).
pub fn try_or_holder(path: &Path) -> Result<Result<FileLock, Holder>, LockError> {
    let mut file = open(path)?;
    Ok(match try_once(&mut file, path)? {
        None => Ok(FileLock { _file: file }),
        Some(holder) => Err(holder),
    })
}

/// Takes the lock at `path`, waiting for its holder from a blocking thread: at most `limit`,
/// and no longer once `stop()` is true. `waiting` is told whom it waits for, once, when it
/// has to wait.
pub fn acquire_blocking(
    path: &Path,
    limit: Option<Duration>,
    stop: &dyn Fn() -> bool,
    waiting: impl FnOnce(Holder),
) -> Result<Waited, LockError> {
    let mut file = open(path)?;
    let mut tries = Tries::new(path, limit, waiting);
    loop {
        match tries.once(&mut file, stop)? {
            Try::Taken => return Ok(Waited::Taken(FileLock { _file: file }, tries.waited())),
            Try::Ended(waited) => return Ok(waited),
            Try::Again => std::thread::sleep(POLL),
        }
    }
}

/// [`acquire_blocking`] for async code: waits without holding a thread.
pub async fn acquire(
    path: &Path,
    limit: Option<Duration>,
    stop: &(dyn Fn() -> bool + Sync),
    waiting: impl FnOnce(Holder),
) -> Result<Waited, LockError> {
    let mut file = open(path)?;
    let mut tries = Tries::new(path, limit, waiting);
    loop {
        match tries.once(&mut file, stop)? {
            Try::Taken => return Ok(Waited::Taken(FileLock { _file: file }, tries.waited())),
            Try::Ended(waited) => return Ok(waited),
            Try::Again => tokio::time::sleep(POLL).await,
        }
    }
}

/// How one try of a wait went.
enum Try {
    Taken,
    /// Stopped or timed out.
    Ended(Waited),
    /// Held: try again after a pause.
    Again,
}

/// The tries of one wait for a lock, apart from how the caller pauses between them.
struct Tries<'a, W: FnOnce(Holder)> {
    path: &'a Path,
    started: Instant,
    limit: Option<Duration>,
    waiting: Option<W>,
}

impl<'a, W: FnOnce(Holder)> Tries<'a, W> {
    fn new(path: &'a Path, limit: Option<Duration>, waiting: W) -> Self {
        Tries {
            path,
            started: Instant::now(),
            limit,
            waiting: Some(waiting),
        }
    }

    fn waited(&self) -> Duration {
        self.started.elapsed()
    }

    fn once(&mut self, file: &mut File, stop: &dyn Fn() -> bool) -> Result<Try, LockError> {
        let Some(holder) = try_once(file, self.path)? else {
            return Ok(Try::Taken);
        };
        if stop() {
            return Ok(Try::Ended(Waited::Stopped));
        }
        if self.limit.is_some_and(|limit| self.waited() >= limit) {
            return Ok(Try::Ended(Waited::TimedOut(holder)));
        }
        if let Some(tell) = self.waiting.take() {
            tell(holder);
        }
        Ok(Try::Again)
    }
}

/// When the lock at `path` was last taken, if it ever was.
pub fn last_used(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Writes this process's pid into the held lock file (which also marks the time of use). Best
/// effort: the pid is only for messages.
fn write_holder(file: &mut File) {
    let _ = file
        .set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)))
        .and_then(|_| write!(file, "{}", std::process::id()));
}

/// The holder the lock file names.
fn read_holder(file: &mut File) -> Holder {
    let mut text = String::new();
    let read = file
        .seek(SeekFrom::Start(0))
        .and_then(|_| Read::by_ref(file).take(32).read_to_string(&mut text));
    match read.ok().and_then(|_| text.trim().parse::<u32>().ok()) {
        Some(pid) if pid == std::process::id() => Holder::ThisRun,
        Some(pid) => Holder::Other(pid),
        None => Holder::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_held_lock_makes_the_next_wait_and_a_try_skip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/c.lock");
        let never = || false;
        let Waited::Taken(held, _) = acquire(&path, None, &never, |_| {}).await.unwrap() else {
            panic!("free")
        };
        assert!(try_acquire(&path).unwrap().is_none());
        assert!(matches!(
            try_or_holder(&path).unwrap(),
            Err(Holder::ThisRun)
        ));
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(held);
        });
        let mut told = None;
        let Waited::Taken(_again, waited) = acquire(&path, None, &never, |h| told = Some(h))
            .await
            .unwrap()
        else {
            panic!("taken once released")
        };
        assert!(waited >= Duration::from_millis(250), "{waited:?}");
        assert_eq!(told, Some(Holder::ThisRun));
        release.await.unwrap();
        assert!(last_used(&path).is_some());
    }

    #[test]
    fn a_wait_stops_or_times_out_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.lock");
        let _held = try_acquire(&path).unwrap().unwrap();
        let stop = || true;
        assert!(matches!(
            acquire_blocking(&path, None, &stop, |_| {}).unwrap(),
            Waited::Stopped
        ));
        let never = || false;
        let limit = Some(Duration::from_millis(200));
        assert!(matches!(
            acquire_blocking(&path, limit, &never, |_| {}).unwrap(),
            Waited::TimedOut(Holder::ThisRun)
        ));
    }

    #[test]
    fn holders_are_named_for_messages() {
        assert_eq!(Holder::Other(42).to_string(), "another runner (pid 42)");
        assert_eq!(Holder::ThisRun.to_string(), "another case of this run");
    }
}
