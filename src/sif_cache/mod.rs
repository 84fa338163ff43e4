//! Download cache for the Singularity/Apptainer images (SIF) that Kipoi publishes
//! in its catalog as `{url, name, md5}`.
//!
//! The cache is one flat folder:
//!
//! - `<name>.sif`: a complete image; its md5 is checked again every time it is reused;
//! - `<name>.sif.part`: an unfinished download, resumed with an HTTP `Range` request;
//! - `<name>.sif.bad-<unix-seconds>[-k]`: a file whose md5 did not match, kept as
//!   evidence (never deleted by this module).
//!
//! Guarantees of [`SifCache::fetch`]:
//!
//! - the returned path is `<dir>/<name>.sif` and its md5 matched during that call;
//! - a download only gets the final name once it is complete and verified, so an
//!   interrupted run leaves at most a `.part` file behind;
//! - transient failures (HTTP 429 and 5xx, refused or reset connections, truncated
//!   bodies) are retried with exponential backoff; other HTTP errors fail at once;
//! - fetches of the same name from several threads of one process are serialised.
//!   Separate processes sharing a folder are not coordinated.
//!
//! This file holds the cache-level logic (reuse, verify, move aside, locks);
//! [`download`] does the HTTP side and [`progress`] draws the progress line.

mod download;
mod error;
mod progress;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use md5::{Digest, Md5};

use self::download::Downloader;
#[cfg(test)]
use self::download::RetryPolicy;
use self::error::io_error;
pub use self::error::SifError;

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
    /// One lock per image name: concurrent fetches of one name would share the `.part` file.
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
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
            locks: Mutex::new(HashMap::new()),
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
    fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.downloader.retry = policy;
        self
    }

    /// Draw a progress line on stderr while downloading (default: off).
    pub fn with_progress(mut self, on: bool) -> Self {
        self.downloader.progress = on;
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Returns the path of `<dir>/<name>.sif` after checking that its md5 matches
    /// `src.md5`, downloading it first if needed.
    pub fn fetch(&self, src: &SifSource) -> Result<PathBuf, SifError> {
        validate_name(&src.name)?;
        let expected = normalized_md5(src)?;

        let lock = self.name_lock(&src.name);
        // A panic in another fetch leaves nothing half-updated that we rely on:
        // every file state is re-checked below, so a poisoned lock is still usable.
        let _guard = lock.lock().unwrap_or_else(PoisonError::into_inner);

        fs::create_dir_all(&self.dir).map_err(io_error("create cache folder", &self.dir))?;
        let paths = CachePaths::new(&self.dir, &src.name);
        if self.reuse_cached(&paths, &expected)? {
            return Ok(paths.done);
        }
        self.download_verified(src, &expected, &paths)
    }

    fn name_lock(&self, name: &str) -> Arc<Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(locks.entry(name.to_owned()).or_default())
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
        eprintln!(
            "warning: cached image `{}` has md5 {actual}, expected {expected}; \
             moved it to `{}` and downloading again",
            paths.done.display(),
            bad.display()
        );
        Ok(false)
    }

    /// Downloads into the `.part` file and renames it once its md5 matches.
    fn download_verified(
        &self,
        src: &SifSource,
        expected: &str,
        paths: &CachePaths,
    ) -> Result<PathBuf, SifError> {
        let mut round = 1;
        loop {
            self.downloader
                .download_with_retry(&src.url, &paths.part, &paths.label)?;
            let actual = md5_file(&paths.part).map_err(io_error("read download", &paths.part))?;
            if actual == expected {
                fs::rename(&paths.part, &paths.done)
                    .map_err(io_error("move finished download to", &paths.done))?;
                return Ok(paths.done.clone());
            }
            // Moving the file away also makes the next round start from zero
            // instead of resuming (the `.part` may stem from an older image).
            let bad = move_aside(&paths.part, &paths.done)?;
            if round == DOWNLOADS_PER_FETCH {
                return Err(SifError::Md5Mismatch {
                    url: src.url.clone(),
                    expected: expected.to_owned(),
                    actual,
                    path_of_bad_file: bad,
                });
            }
            eprintln!(
                "warning: download of `{}` has md5 {actual}, expected {expected}; \
                 kept it as `{}` and downloading again",
                src.url,
                bad.display()
            );
            round += 1;
        }
    }
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
    done: PathBuf,
    part: PathBuf,
    /// `<name>.sif`, shown in the progress line.
    label: String,
}

impl CachePaths {
    fn new(dir: &Path, name: &str) -> Self {
        let label = format!("{name}.sif");
        CachePaths {
            done: dir.join(&label),
            part: dir.join(format!("{label}.part")),
            label,
        }
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
