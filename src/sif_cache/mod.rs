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
//! - `<name>.sif.bad-<unix-seconds>[-k]`: a file whose md5 did not match, kept as
//!   evidence (never deleted by this module).
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
mod lock;
mod progress;
pub mod pull;
#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use std::time::{SystemTime, UNIX_EPOCH};

use md5::{Digest, Md5};

use self::download::Downloader;
#[cfg(test)]
use self::download::RetryPolicy;
use self::error::io_error;
pub use self::error::SifError;
use self::lock::NameLock;

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
}

impl SifCache {
    /// Uses `dir` as the cache folder; it is created if missing.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        // Best effort only: `fetch` creates it again and reports a failure properly.
        let _ = fs::create_dir_all(&dir);
        SifCache {
            dir,
            downloader: Downloader::new(),
            lock_wait: lock::WAIT_LIMIT,
        }
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
        self.fetch_until(src, &|| false)
    }

    /// [`Self::fetch`] that gives up with [`SifError::Interrupted`] once `stop()` is true:
    /// while waiting for another process's lock, between chunks and between retries.
    pub fn fetch_until(
        &self,
        src: &SifSource,
        stop: &dyn Fn() -> bool,
    ) -> Result<PathBuf, SifError> {
        validate_name(&src.name)?;
        let expected = normalized_md5(src)?;
        let paths = CachePaths::new(&self.dir, &src.name);
        let _locked = self.lock(&paths, stop)?;
        if self.reuse_cached(&paths, &expected)? {
            return Ok(paths.done);
        }
        self.download_verified(src, &expected, &paths, stop)
    }

    /// Returns `<dir>/<name>.sif` built by `make` (which writes a complete image to the path it
    /// is given), or the one built earlier if it still has the md5 recorded when it was built.
    /// Same lock, atomic rename and `stop` as [`Self::fetch_until`]; the result must be a SIF.
    pub fn build(
        &self,
        name: &str,
        stop: &dyn Fn() -> bool,
        make: impl FnOnce(&Path) -> Result<(), SifError>,
    ) -> Result<PathBuf, SifError> {
        validate_name(name)?;
        let paths = CachePaths::new(&self.dir, name);
        let _locked = self.lock(&paths, stop)?;
        if let Some(recorded) = read_md5_record(&paths.md5) {
            if self.reuse_cached(&paths, &recorded)? {
                return Ok(paths.done);
            }
        } else if fs::symlink_metadata(&paths.done).is_ok() {
            // Not ours, or built before its md5 was recorded: it cannot be verified.
            let aside = move_aside(&paths.done, &paths.done)?;
            crate::reporter::line(format!(
                "warning: `{}` has no md5 record; moved it to `{}` and building it again",
                paths.done.display(),
                aside.display()
            ));
        }
        remove_leftovers(&paths)?;
        let part = paths.unique_part();
        let built = make(&part).and_then(|()| {
            check_sif_header(&part)?;
            md5_file(&part).map_err(io_error("read built image", &part))
        });
        let md5 = match built {
            Ok(md5) => md5,
            Err(err) => {
                let _ = fs::remove_file(&part);
                return Err(err);
            }
        };
        write_atomically(&paths.md5, md5.as_bytes())?;
        fs::rename(&part, &paths.done).map_err(io_error("move built image to", &paths.done))?;
        Ok(paths.done)
    }

    /// The lock of a name. `flock` locks belong to an open file, so this serialises the
    /// threads of this process as well as other processes.
    fn lock(&self, paths: &CachePaths, stop: &dyn Fn() -> bool) -> Result<NameLock, SifError> {
        fs::create_dir_all(&self.dir).map_err(io_error("create cache folder", &self.dir))?;
        NameLock::acquire(&self.dir, &paths.label, self.lock_wait, stop)
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
        let bad = move_aside(&paths.done, &paths.done)?;
        crate::reporter::line(format!(
            "warning: cached image `{}` has md5 {actual}, expected {expected}; \
             moved it to `{}` and fetching it again",
            paths.done.display(),
            bad.display()
        ));
        Ok(false)
    }

    /// Downloads into this process's own `.part-*` file (taking over one left by an earlier
    /// run, to resume it) and renames it once its md5 matches.
    fn download_verified(
        &self,
        src: &SifSource,
        expected: &str,
        paths: &CachePaths,
        stop: &dyn Fn() -> bool,
    ) -> Result<PathBuf, SifError> {
        let part = paths.unique_part();
        take_over_leftover(paths, &part)?;
        let mut round = 1;
        loop {
            self.downloader
                .download_with_retry(&src.url, &part, &paths.label, stop)?;
            let actual = md5_file(&part).map_err(io_error("read download", &part))?;
            if actual == expected {
                fs::rename(&part, &paths.done)
                    .map_err(io_error("move finished download to", &paths.done))?;
                return Ok(paths.done.clone());
            }
            // Moving the file away also makes the next round start from zero
            // instead of resuming (the `.part` may stem from an older image).
            let bad = move_aside(&part, &paths.done)?;
            if round == DOWNLOADS_PER_FETCH {
                return Err(SifError::Md5Mismatch {
                    url: src.url.clone(),
                    expected: expected.to_owned(),
                    actual,
                    path_of_bad_file: bad,
                });
            }
            crate::reporter::line(format!(
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

/// Renames `from` to `<done>.bad-<unix-seconds>`, adding `-1`, `-2`, ... rather than
/// overwriting an earlier piece of evidence. Returns the new path.
fn move_aside(from: &Path, done: &Path) -> Result<PathBuf, SifError> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut suffix = 0u32;
    let target = loop {
        let mut name: OsString = done.as_os_str().to_owned();
        name.push(format!(".bad-{secs}"));
        if suffix > 0 {
            name.push(format!("-{suffix}"));
        }
        let candidate = PathBuf::from(name);
        if fs::symlink_metadata(&candidate).is_err() {
            break candidate;
        }
        suffix += 1;
    };
    fs::rename(from, &target).map_err(io_error("move bad file aside to", &target))?;
    Ok(target)
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
        let label = format!("{name}.sif");
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
