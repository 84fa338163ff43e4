//! Which SIFs a runner is using, and removing one nobody uses (`--prune-sifs`, `sif prune`).
//!
//! A runner that has a SIF ready holds a shared `flock` on the SIF file itself ([`InUse`]),
//! taken under the name's lock right after the fetch verified it, and kept until the runner is
//! done with it. A removal takes the name's lock (so no fetch is verifying the file), then tries
//! an exclusive `flock` on the file without waiting: while any runner sharing the folder holds
//! it, the SIF stays. The lock is on the file, so no lock file is added to the folder; a fetch
//! that replaces the file (a new download, a rebuild) only ever does so under the name's lock.

use std::fs::{self, File, TryLockError};
use std::io;
use std::path::Path;

use super::error::{io_error, SifError};
use super::CachePaths;

/// This runner uses a SIF: a shared `flock` on it, released when dropped.
#[derive(Debug)]
pub struct InUse {
    _file: File,
}

/// Takes the shared lock on `path` (a verified SIF). Called under the name's lock.
pub(super) fn hold(path: &Path) -> Result<InUse, SifError> {
    let file = File::open(path).map_err(io_error("open", path))?;
    match file.try_lock_shared() {
        Ok(()) => Ok(InUse { _file: file }),
        // Only a removal takes it exclusively, and that holds the name's lock, as we do.
        Err(TryLockError::WouldBlock) => Err(SifError::Io {
            action: "lock (shared)",
            path: path.to_path_buf(),
            source: io::Error::from(io::ErrorKind::WouldBlock),
        }),
        Err(TryLockError::Error(source)) => Err(SifError::Io {
            action: "lock (shared)",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// True when a runner holds the SIF at `path` (a shared lock on it). Called under the name's
/// lock, so that no runner is taking its hold meanwhile; the probe lets go at once.
pub(super) fn is_held(path: &Path) -> bool {
    File::open(path).is_ok_and(|file| matches!(file.try_lock(), Err(TryLockError::WouldBlock)))
}

/// What a removal did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// The SIF (and a built one's md5 record) is gone: this many bytes were freed.
    Removed { bytes: u64 },
    /// A runner sharing the folder uses it: it stays.
    InUse,
    /// It was not there (another runner removed it first).
    Gone,
    /// The folder is read-only: nothing is removed from it.
    ReadOnly,
}

/// Removes the SIF of `paths` unless a runner holds it. The caller holds the name's lock.
pub(super) fn remove_unused(paths: &CachePaths) -> Result<Removal, SifError> {
    let file = match File::open(&paths.done) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Removal::Gone),
        Err(e) => return Err(io_error("open", &paths.done)(e)),
    };
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Ok(Removal::InUse),
        Err(TryLockError::Error(source)) => {
            return Err(SifError::Io {
                action: "lock",
                path: paths.done.clone(),
                source,
            })
        }
    }
    let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    fs::remove_file(&paths.done).map_err(io_error("remove", &paths.done))?;
    match fs::remove_file(&paths.md5) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(io_error("remove", &paths.md5)(e))
        }
        _ => {}
    }
    Ok(Removal::Removed { bytes })
}
