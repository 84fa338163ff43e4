//! Download cache for the Singularity/Apptainer images (SIF) that Kipoi publishes
//! in its catalog as `{url, name, md5}`, and for SIFs built from Docker images.
//!
//! The cache is one flat folder:
//!
//! - `<name>.sif`: a complete image; its md5 is checked again every time it is reused;
//! - `<name>.sif.lock`: the lock of that name, held by the process fetching or building it;
//! - `<name>.sif.part-<pid>-<n>`: an unfinished download of one process, resumed with an
//!   HTTP `Range` request by the next fetch (which takes it over under the lock);
//! - `<name>.sif.md5`: for a SIF built from a Docker image, the md5 it had when built;
//! - `<name>.sif.bad`: the last file of that name whose md5 did not match, kept as evidence;
//!   one per name at most (a new one replaces it, and those of older runners,
//!   `<name>.sif.bad-<unix-seconds>[-k]`, go then too); `cache prune` removes them.
//!
//! A catalog name that already ends in `.sif` is not given a second one.
//!
//! A folder the runner cannot write in (a shared store the admins fill, mounted read-only) is
//! used as it is: a SIF found there is used once its md5 matches (read from a `<name>.sif.md5`
//! beside it when that holds the catalog's md5, else computed), with no lock; one that is
//! missing cannot be fetched there ([`SifError::ReadOnly`]).
//!
//! Guarantees of [`SifCache::fetch`]:
//!
//! - the returned path is `<dir>/<name>.sif` and its md5 matched during that call;
//! - a download only gets the final name once it is complete and verified (an atomic
//!   rename), so an interrupted run leaves at most a `.part-*` file behind;
//! - transient failures (HTTP 429 and 5xx, refused or reset connections, truncated
//!   bodies) are retried with exponential backoff; other HTTP errors fail at once;
//! - fetches of the same name are serialised, between threads of one process and between
//!   processes sharing the folder (a file lock per name): the second one waits, then finds
//!   the first one's verified file and reuses it. Waiting is interruptible and bounded.
//!
//! This file holds the cache-level logic (reuse, verify, move aside, take over leftovers);
//! [`lock`] the lock per name, [`download`] the HTTP (and `file:`) side, [`progress`] the
//! progress line, [`pull`] the SIF built from a Docker image with `apptainer pull`.

mod download;
mod error;
mod in_use;
pub mod listing;
mod lock;
mod progress;
pub mod pull;
mod scratch;
#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use md5::{Digest, Md5};

use self::download::Downloader;
#[cfg(test)]
use self::download::RetryPolicy;
use self::error::io_error;
pub use self::error::SifError;
pub use self::in_use::{InUse, Removal};
pub use self::scratch::{check_root as check_tmp_dir, TmpDirError};
use crate::store::lock::FileLock;

/// Size of the buffer used to read response bodies and to hash files.
const CHUNK: usize = 256 * 1024;
/// A download whose md5 does not match is tried this many times in total.
const DOWNLOADS_PER_FETCH: u32 = 2;

/// One image of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SifSource {
    pub url: String,
    /// File name without the `.sif` extension.
    pub name: String,
    /// Expected md5 as 32 hex digits, any case.
    pub md5: String,
}

/// Downloads images into a folder and only hands out verified files.
#[derive(Debug)]
pub struct SifCache {
    dir: PathBuf,
    downloader: Downloader,
    /// How long to wait for another process holding a name's lock.
    lock_wait: Duration,
    /// The folder cannot be written in: SIFs are only read from it.
    read_only: bool,
    /// Where builds take their scratch space (`--tmp-dir`, `$APPTAINER_TMPDIR`); `None`: this
    /// folder.
    tmp_root: Option<PathBuf>,
}

/// A SIF ready to use, and what it took.
#[derive(Debug)]
pub struct Fetched {
    /// `<dir>/<name>.sif`, verified.
    pub path: PathBuf,
    /// Bytes this call downloaded, or the size of the SIF it built; 0 when it reused one.
    pub bytes: u64,
    /// True when it was there at the first look: nothing was downloaded, built or waited for.
    pub reused: bool,
    /// Held while this runner uses the SIF, so no other runner's prune removes it (`None` in
    /// a read-only folder, where nothing is removed).
    pub in_use: Option<InUse>,
}

/// `--sif-dir` cannot be used at all.
#[derive(Debug, thiserror::Error)]
pub enum SifDirError {
    #[error("--sif-dir `{}` is a file, not a folder", .0.display())]
    NotAFolder(PathBuf),
    #[error("cannot create the SIF folder `{}` (--sif-dir)", .path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write a file in the SIF folder `{}` (--sif-dir)", .path.display())]
    Probe {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl SifCache {
    /// Uses `dir` as the cache folder; it is created if missing.
    #[cfg(test)]
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        // Best effort only: `fetch` creates it again and reports a failure properly.
        let _ = fs::create_dir_all(&dir);
        SifCache {
            dir,
            downloader: Downloader::new(),
            lock_wait: lock::WAIT_LIMIT,
            read_only: false,
            tmp_root: None,
        }
    }

    /// Uses `dir` (`--sif-dir`) as the cache folder: creates it when missing, and finds out
    /// whether files can be made in it (else it is used read-only). A file, or a folder that
    /// cannot be made or probed, is an error.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, SifDirError> {
        let dir = dir.into();
        if dir.is_file() {
            return Err(SifDirError::NotAFolder(dir));
        }
        fs::create_dir_all(&dir).map_err(|source| SifDirError::Create {
            path: dir.clone(),
            source,
        })?;
        let read_only = match tempfile::Builder::new()
            .prefix(".zoo-runner-probe-")
            .tempfile_in(&dir)
        {
            Ok(_probe) => false,
            Err(e) if is_read_only(&e) => true,
            Err(source) => return Err(SifDirError::Probe { path: dir, source }),
        };
        Ok(SifCache {
            dir,
            downloader: Downloader::new(),
            lock_wait: lock::WAIT_LIMIT,
            read_only,
            tmp_root: None,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// True when nothing can be written in the folder: SIFs are only read from it.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Whether the SIF `name` is in the folder (a built one with its md5 record), so that a
    /// read-only folder can serve it.
    pub fn holds(&self, name: &str, built: bool) -> bool {
        let paths = CachePaths::new(&self.dir, name);
        paths.done.is_file() && (!built || read_md5_record(&paths.md5).is_some())
    }

    /// How long one fetch (every download attempt and the pauses between them) or build may
    /// take in all (`--download-timeout`). The wait for another runner's fetch of the same SIF
    /// is at least as long.
    pub fn with_download_timeout(mut self, budget: Duration) -> Self {
        self.downloader.budget = budget;
        self.lock_wait = self.lock_wait.max(budget);
        self
    }

    /// Builds take their scratch space from `root` (checked with [`check_tmp_dir`]) instead of
    /// this folder.
    pub fn with_tmp_dir(mut self, root: Option<PathBuf>) -> Self {
        self.tmp_root = root;
        self
    }

    /// See [`Self::with_download_timeout`].
    pub fn download_timeout(&self) -> Duration {
        self.downloader.budget
    }

    /// `$SINGULARITY_PULL_FOLDER` if set and non-empty, else
    /// `$XDG_CACHE_HOME/zoo-runner/sif`, else `$HOME/.cache/zoo-runner/sif`
    /// (and the system temp folder if even `HOME` is missing).
    pub fn default_dir() -> PathBuf {
        default_dir_from(|key| std::env::var_os(key))
            .unwrap_or_else(|| std::env::temp_dir().join("zoo-runner").join("sif"))
    }

    #[cfg(test)]
    fn with_lock_wait(mut self, limit: Duration) -> Self {
        self.lock_wait = limit;
        self
    }

    #[cfg(test)]
    fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.downloader.retry = policy;
        self
    }

    /// Draw a progress line on stderr while downloading (default: off).
    pub fn with_progress(mut self, on: bool) -> Self {
        self.downloader.progress = on;
        self
    }

    /// Returns the path of `<dir>/<name>.sif` after checking that its md5 matches
    /// `src.md5`, downloading it first if needed. Never interrupted.
    #[cfg(test)]
    pub fn fetch(&self, src: &SifSource) -> Result<PathBuf, SifError> {
        self.fetch_until(src, &|| false).map(|f| f.path)
    }

    /// [`Self::fetch`] that gives up with [`SifError::Interrupted`] once `stop()` is true:
    /// while waiting for another process's lock, between chunks and between retries.
    pub fn fetch_until(
        &self,
        src: &SifSource,
        stop: &dyn Fn() -> bool,
    ) -> Result<Fetched, SifError> {
        validate_name(&src.name)?;
        let expected = normalized_md5(src)?;
        let paths = CachePaths::new(&self.dir, &src.name);
        if self.read_only {
            return read_only_sif(&paths, &expected, "downloaded");
        }
        let (_locked, waited) = self.lock(&paths, stop)?;
        if self.reuse_cached(&paths, &expected)? {
            return Ok(Fetched {
                in_use: Some(in_use::hold(&paths.done)?),
                path: paths.done,
                bytes: 0,
                reused: !waited,
            });
        }
        let bytes = self.download_verified(src, &expected, &paths, stop)?;
        Ok(Fetched {
            in_use: Some(in_use::hold(&paths.done)?),
            path: paths.done,
            bytes,
            reused: false,
        })
    }

    /// Returns `<dir>/<name>.sif` built by `make` (which writes a complete image to the path it
    /// is given first, using the scratch folder it is given second), or the one built earlier
    /// if it still has the md5 recorded when it was built. Same lock, atomic rename and `stop`
    /// as [`Self::fetch_until`]; the result must be a SIF. The scratch folder is removed after.
    pub fn build(
        &self,
        name: &str,
        stop: &dyn Fn() -> bool,
        make: impl FnOnce(&Path, &Path) -> Result<(), SifError>,
    ) -> Result<Fetched, SifError> {
        validate_name(name)?;
        let paths = CachePaths::new(&self.dir, name);
        if self.read_only {
            let Some(recorded) = read_md5_record(&paths.md5) else {
                return Err(SifError::ReadOnly {
                    dir: self.dir.clone(),
                    name: paths.label.clone(),
                    what: "built",
                });
            };
            return read_only_sif(&paths, &recorded, "built");
        }
        let (_locked, waited) = self.lock(&paths, stop)?;
        if let Some(recorded) = read_md5_record(&paths.md5) {
            if self.reuse_cached(&paths, &recorded)? {
                return Ok(Fetched {
                    in_use: Some(in_use::hold(&paths.done)?),
                    path: paths.done,
                    bytes: 0,
                    reused: !waited,
                });
            }
        } else if fs::symlink_metadata(&paths.done).is_ok() {
            // Not ours, or built before its md5 was recorded: it cannot be verified.
            let aside = quarantine(&paths.done, &paths)?;
            crate::events::line(format!(
                "warning: `{}` has no md5 record; moved it to `{}` and building it again",
                paths.done.display(),
                aside.display()
            ));
        }
        remove_leftovers(&paths)?;
        let part = paths.unique_part();
        let scratch =
            scratch::Scratch::new(self.tmp_root.as_deref().unwrap_or(&self.dir), &paths.label)?;
        let built = make(&part, scratch.path()).and_then(|()| {
            check_sif_header(&part)?;
            md5_file(&part).map_err(io_error("read built image", &part))
        });
        drop(scratch);
        let md5 = match built {
            Ok(md5) => md5,
            Err(err) => {
                let _ = fs::remove_file(&part);
                return Err(err);
            }
        };
        let bytes = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        write_atomically(&paths.md5, md5.as_bytes())?;
        fs::rename(&part, &paths.done).map_err(io_error("move built image to", &paths.done))?;
        Ok(Fetched {
            in_use: Some(in_use::hold(&paths.done)?),
            path: paths.done,
            bytes,
            reused: false,
        })
    }

    /// Removes the SIF `name` (a downloaded or a built one, with its md5 record) under the
    /// name's lock, unless a runner sharing the folder uses it ([`InUse`]): drop this runner's
    /// own [`InUse`] first. The lock file stays (lock files are never deleted). Waits for the
    /// name's lock as a fetch does; nothing is removed from a read-only folder.
    pub fn remove(&self, name: &str, stop: &dyn Fn() -> bool) -> Result<Removal, SifError> {
        validate_name(name)?;
        let paths = CachePaths::new(&self.dir, name);
        if self.read_only {
            return Ok(Removal::ReadOnly);
        }
        let (_locked, _) = self.lock(&paths, stop)?;
        in_use::remove_unused(&paths)
    }

    /// The lock of a name, and whether it had to wait for it. `flock` locks belong to an open
    /// file, so this serialises the threads of this process as well as other processes.
    fn lock(
        &self,
        paths: &CachePaths,
        stop: &dyn Fn() -> bool,
    ) -> Result<(FileLock, bool), SifError> {
        fs::create_dir_all(&self.dir)
            .map_err(io_error("create the SIF folder (--sif-dir)", &self.dir))?;
        lock::acquire(&self.dir, &paths.label, self.lock_wait, stop)
    }

    /// True if a cached file exists and matches; a mismatching one is moved aside.
    fn reuse_cached(&self, paths: &CachePaths, expected: &str) -> Result<bool, SifError> {
        if fs::symlink_metadata(&paths.done).is_err() {
            return Ok(false);
        }
        let actual = md5_file(&paths.done).map_err(io_error("read cached image", &paths.done))?;
        if actual == expected {
            return Ok(true);
        }
        let bad = quarantine(&paths.done, paths)?;
        crate::events::line(format!(
            "warning: cached image `{}` has md5 {actual}, expected {expected}; \
             moved it to `{}` and fetching it again",
            paths.done.display(),
            bad.display()
        ));
        Ok(false)
    }

    /// Downloads into this process's own `.part-*` file (taking over one left by an earlier
    /// run, to resume it) and renames it once its md5 matches. Returns the bytes received.
    fn download_verified(
        &self,
        src: &SifSource,
        expected: &str,
        paths: &CachePaths,
        stop: &dyn Fn() -> bool,
    ) -> Result<u64, SifError> {
        let part = paths.unique_part();
        take_over_leftover(paths, &part)?;
        let mut round = 1;
        let mut received = 0u64;
        loop {
            received += self
                .downloader
                .download_with_retry(&src.url, &part, &paths.label, stop)?;
            let actual = md5_file(&part).map_err(io_error("read download", &part))?;
            if actual == expected {
                fs::rename(&part, &paths.done)
                    .map_err(io_error("move finished download to", &paths.done))?;
                return Ok(received);
            }
            // Moving the file away also makes the next round start from zero
            // instead of resuming (the `.part` may stem from an older image).
            let bad = quarantine(&part, paths)?;
            if round == DOWNLOADS_PER_FETCH {
                return Err(SifError::Md5Mismatch {
                    url: src.url.clone(),
                    expected: expected.to_owned(),
                    actual,
                    path_of_bad_file: bad,
                });
            }
            crate::events::line(format!(
                "warning: download of `{}` has md5 {actual}, expected {expected}; \
                 kept it as `{}` and downloading again",
                src.url,
                bad.display()
            ));
            round += 1;
        }
    }
}

/// Unfinished downloads of `paths`' name: `<name>.sif.part` (older runners) and
/// `<name>.sif.part-*`. Under the lock, none of them is being written: their writers are gone.
fn leftovers(paths: &CachePaths) -> Result<Vec<(PathBuf, u64)>, SifError> {
    let plain = format!("{}.part", paths.label);
    let prefix = format!("{plain}-");
    let entries = fs::read_dir(&paths.dir).map_err(io_error("list cache folder", &paths.dir))?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_error("list cache folder", &paths.dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == plain || name.starts_with(&prefix) {
            let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
            found.push((entry.path(), len));
        }
    }
    Ok(found)
}

/// Renames the longest leftover to `part` (so the download resumes it) and removes the others.
fn take_over_leftover(paths: &CachePaths, part: &Path) -> Result<(), SifError> {
    let mut found = leftovers(paths)?;
    found.sort_by_key(|(_, len)| std::cmp::Reverse(*len));
    let mut found = found.into_iter();
    if let Some((longest, _)) = found.next() {
        fs::rename(&longest, part).map_err(io_error("take over unfinished download", &longest))?;
    }
    for (other, _) in found {
        fs::remove_file(&other).map_err(io_error("remove unfinished download", &other))?;
    }
    Ok(())
}

/// Removes every leftover of the name (a build cannot resume).
fn remove_leftovers(paths: &CachePaths) -> Result<(), SifError> {
    for (path, _) in leftovers(paths)? {
        fs::remove_file(&path).map_err(io_error("remove unfinished build", &path))?;
    }
    Ok(())
}

/// Bytes 32..42 of every SIF file (after a 32-byte launch script line).
const SIF_MAGIC: &[u8] = b"SIF_MAGIC\0";
const SIF_MAGIC_AT: usize = 32;

/// Fails with [`SifError::NotSif`] unless `path` starts like a SIF file.
fn check_sif_header(path: &Path) -> Result<(), SifError> {
    let mut head = [0u8; SIF_MAGIC_AT + 10];
    let read = File::open(path)
        .and_then(|mut file| file.read_exact(&mut head))
        .map(|()| &head[SIF_MAGIC_AT..] == SIF_MAGIC);
    match read {
        Ok(true) => Ok(()),
        Ok(false) => Err(SifError::NotSif {
            path: path.to_path_buf(),
        }),
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => Err(SifError::NotSif {
            path: path.to_path_buf(),
        }),
        Err(err) => Err(io_error("read built image", path)(err)),
    }
}

/// The md5 recorded beside a built image, if there is a well-formed one.
fn read_md5_record(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    let md5 = text.trim();
    (md5.len() == 32 && md5.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| md5.to_ascii_lowercase())
}

/// Writes `path` through a temporary file and a rename, so a reader sees all or nothing.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), SifError> {
    let mut tmp: OsString = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, bytes).map_err(io_error("write", &tmp))?;
    fs::rename(&tmp, path).map_err(io_error("write", path))
}

/// Renames `from` to `<name>.sif.bad`, the one quarantined copy a name keeps (a SIF is GBs:
/// one copy of evidence is enough, and the error names both sums). An earlier one is replaced,
/// and those older runners kept as `<name>.sif.bad-<unix-seconds>[-k]` are removed. Returns the
/// new path.
fn quarantine(from: &Path, paths: &CachePaths) -> Result<PathBuf, SifError> {
    let target = paths.dir.join(format!("{}.bad", paths.label));
    for old in quarantined(&paths.dir).map_err(io_error("list cache folder", &paths.dir))? {
        let ours = old
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(quarantined_label)
            == Some(paths.label.as_str());
        if ours && old != target {
            fs::remove_file(&old).map_err(io_error("remove old bad file", &old))?;
        }
    }
    fs::rename(from, &target).map_err(io_error("move bad file aside to", &target))?;
    Ok(target)
}

/// The `<name>.sif` of a quarantined file's name (`<name>.sif.bad`, or an older runner's
/// `<name>.sif.bad-<unix-seconds>[-k]`).
fn quarantined_label(file_name: &str) -> Option<&str> {
    if let Some(label) = file_name.strip_suffix(".bad") {
        return Some(label);
    }
    let at = file_name.find(".sif.bad-")? + ".sif".len();
    let (label, stamp) = (&file_name[..at], &file_name[at + ".bad-".len()..]);
    stamp
        .split('-')
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        .then_some(label)
}

/// The quarantined files (md5 mismatches kept as evidence) in a SIF folder, for `cache prune`.
/// A folder that does not exist holds none.
pub fn quarantined(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if quarantined_label(name).is_some_and(|l| l.ends_with(".sif")) {
            found.push(entry.path());
        }
    }
    found.sort();
    Ok(found)
}

/// A SIF in a read-only folder: used when it is there and its md5 is `expected` (a `.md5`
/// record beside it that says so is trusted; else it is computed).
fn read_only_sif(
    paths: &CachePaths,
    expected: &str,
    what: &'static str,
) -> Result<Fetched, SifError> {
    if !paths.done.is_file() {
        return Err(SifError::ReadOnly {
            dir: paths.dir.clone(),
            name: paths.label.clone(),
            what,
        });
    }
    // A built SIF's record is what is expected: only the file itself can confirm it.
    if what == "built" || read_md5_record(&paths.md5).as_deref() != Some(expected) {
        let actual = md5_file(&paths.done).map_err(io_error("read cached image", &paths.done))?;
        if actual != expected {
            return Err(SifError::ReadOnlyMismatch {
                path: paths.done.clone(),
                expected: expected.to_owned(),
                actual,
            });
        }
    }
    Ok(Fetched {
        path: paths.done.clone(),
        bytes: 0,
        reused: true,
        in_use: None,
    })
}

/// True for the errors of a file that cannot be made because the place is read-only.
fn is_read_only(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
    )
}

/// The files that belong to one image name.
struct CachePaths {
    dir: PathBuf,
    done: PathBuf,
    /// The md5 recorded for a built image.
    md5: PathBuf,
    /// `<name>.sif`, shown in the progress line.
    label: String,
}

impl CachePaths {
    fn new(dir: &Path, name: &str) -> Self {
        // A catalog name may already end in `.sif`: `x.sif`, not `x.sif.sif`.
        let label = if name.ends_with(".sif") {
            name.to_owned()
        } else {
            format!("{name}.sif")
        };
        CachePaths {
            dir: dir.to_path_buf(),
            done: dir.join(&label),
            md5: dir.join(format!("{label}.md5")),
            label,
        }
    }

    /// A `.part-<pid>-<n>` name no other process or attempt uses.
    fn unique_part(&self) -> PathBuf {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        self.dir
            .join(format!("{}.part-{}-{n}", self.label, std::process::id()))
    }
}

/// Lowercase hex md5 of a file, read in fixed-size chunks.
pub fn md5_file(path: &Path) -> Result<String, io::Error> {
    let mut file = File::open(path)?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        }
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// Accepts only plain file names, so a catalog entry cannot write outside the cache.
pub fn validate_name(name: &str) -> Result<(), SifError> {
    let bad = name.is_empty()
        || name == "."
        || name.starts_with("..")
        || name.contains(['/', '\\', '\0']);
    if bad {
        return Err(SifError::BadName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// The expected md5 in lowercase, or [`SifError::BadMd5`].
fn normalized_md5(src: &SifSource) -> Result<String, SifError> {
    let md5 = &src.md5;
    if md5.len() == 32 && md5.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(md5.to_ascii_lowercase())
    } else {
        Err(SifError::BadMd5 {
            name: src.name.clone(),
            md5: md5.clone(),
        })
    }
}

/// The default folder from the environment, or `None` when not even `HOME` is set.
fn default_dir_from(env: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let non_empty = |key: &str| env(key).filter(|value| !value.is_empty());
    if let Some(dir) = non_empty("SINGULARITY_PULL_FOLDER") {
        return Some(PathBuf::from(dir));
    }
    let cache = non_empty("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| non_empty("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(cache.join("zoo-runner").join("sif"))
}
