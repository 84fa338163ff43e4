//! Caches keyed by image: the container paths a spec names in `caches` are kept between cases
//! and runs, one cache per image and path, so that a new image version starts with a fresh cache
//! and never sees another version's files.
//!
//! - Docker ([`docker`]): one named volume per (cache folder, image ID, path), created from the
//!   image's own content at that path (Docker copies it into an empty volume), made writable by
//!   the image's user, and labelled (runner, cache folder, image, image ID, path, created).
//! - Apptainer ([`apptainer`]): one host folder per (SIF md5, path) under the cache folder,
//!   bound at the path.
//! - Each cache is kept in up to `--test-threads` replicas, its slots ([`slots`]): a case
//!   takes one slot of its image's caches, its home ([`homes`], where its data is) when free,
//!   and holds the slot's locks ([`lock`]) from before its container starts until it ends. So
//!   cases of one image run side by side, each in a replica of its own, and other runners
//!   sharing the cache folder take the free slots or wait.
//! - [`command`] is `zoo-runner cache list|prune`.

pub mod apptainer;
pub mod docker;
pub mod homes;
pub mod lock;
pub mod names;
pub mod owners;
pub mod slots;
pub mod users;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use thiserror::Error;

use crate::cancel::Cancel;
use crate::config::units::show_duration;
use crate::record::facts::CacheUse;
use crate::record::Failure;

#[derive(Debug, Error)]
pub enum CacheError {
    #[error(
        "cannot create the cache folder `{}` (pass --cache-dir DIR to use another)",
        .path.display()
    )]
    Folder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot write in the cache folder `{path}` (pass --cache-dir DIR to use another, or make \
         it writable)"
    )]
    NotWritable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Lock(#[from] crate::store::lock::LockError),
    #[error("interrupted while waiting for the lock of the cache {what}")]
    Interrupted { what: String },
    /// The run was interrupted while the image's files were read to set its caches up.
    #[error("interrupted while the caches of image `{image}` were set up for its user")]
    SetupInterrupted { image: String },
    /// A Docker volume could not be made ready.
    #[error("{0}")]
    Docker(Failure),
    #[error("cannot write `{}`", .path.display())]
    Record {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the record of the caches' slots is locked by {holder} for over {}: `{}`",
        show_duration(*.limit),
        .path.display()
    )]
    HomesLocked {
        path: PathBuf,
        holder: String,
        limit: Duration,
    },
    #[error("cannot read `{}` to key its caches", .path.display())]
    ReadSif {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl CacheError {
    /// True when the run's interruption ended the wait (the case did not start).
    pub fn is_interrupted(&self) -> bool {
        matches!(
            self,
            CacheError::Interrupted { .. } | CacheError::SetupInterrupted { .. }
        )
    }
}

/// Why `cache prune` keeps a cache a case holds; the caller says "kept".
pub const IN_USE: &str = "in use by a running case";

/// Everything a run knows about caches: where they live, which paths, and what it has set up.
/// Shared by every case of the run.
#[derive(Debug)]
pub struct Caches {
    /// The cache folder (`--cache-dir`), absolute.
    pub dir: PathBuf,
    /// Container paths, from the spec.
    pub paths: Vec<String>,
    /// How many slots (replicas) each cache has: as many as cases may run at once.
    pub slots: usize,
    cancel: Cancel,
    /// Names of the caches this run used, for its summary.
    used: Mutex<BTreeSet<String>>,
    /// Docker: what each image's new volumes need, learnt once per image (by ID).
    plans: Mutex<HashMap<String, PlansCell>>,
}

/// The plans of one image's new Docker volumes, once learnt ([`owners::plans`]).
type PlansCell = Arc<tokio::sync::OnceCell<Arc<owners::Plans>>>;

impl Caches {
    /// Creates the cache folder if needed and resolves it to an absolute path (it names the
    /// Docker volumes, so `./c` and `/abs/c` must agree), and checks that cases can write where
    /// they will (before any case runs, rather than failing each). `slots`: how many cases may
    /// run at once (at least one).
    pub fn new(
        dir: &Path,
        paths: Vec<String>,
        slots: usize,
        cancel: Cancel,
    ) -> Result<Caches, CacheError> {
        let dir = prepare_dir(dir)?;
        check_writable(&dir)?;
        Ok(Caches {
            dir,
            paths,
            slots: slots.max(1),
            cancel,
            used: Mutex::default(),
            plans: Mutex::default(),
        })
    }

    /// The cache folder as it names Docker volumes.
    pub fn dir_label(&self) -> String {
        self.dir.display().to_string()
    }

    fn note_used(&self, name: &str) {
        self.used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string());
    }

    fn plans_cell(&self, image_id: &str) -> PlansCell {
        self.plans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(image_id.to_string())
            .or_default()
            .clone()
    }

    /// How many caches the run used.
    pub fn used_count(&self) -> usize {
        self.used.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// What a case holds while it runs: its mounts (source, container path) and the locks of its
/// slot, that keep other cases out of those replicas until it is dropped.
#[derive(Debug, Default)]
pub struct Held {
    /// (Docker volume name or host folder, container path).
    pub mounts: Vec<(String, String)>,
    /// The caches held, with how long the slot was waited for: the case's facts.
    pub uses: Vec<CacheUse>,
    /// Docker: the volumes still to be made ready in the case's container.
    fresh: Vec<owners::Fresh>,
    _locks: Vec<lock::CacheLock>,
}

impl Held {
    /// Holds a taken slot; its replicas are added with [`Held::mount`].
    fn of(taken: slots::Taken) -> (Held, usize, Duration) {
        let held = Held {
            _locks: taken.locks,
            ..Held::default()
        };
        (held, taken.slot, taken.waited)
    }

    fn mount(&mut self, source: &str, path: &str, waited: Duration) {
        self.mounts.push((source.to_string(), path.to_string()));
        self.uses.push(CacheUse {
            source: source.to_string(),
            path: path.to_string(),
            waited,
        });
    }
}

/// Who a case is, as its caches need to know: its name (the key of its home slot) and whether
/// the run is offline (then only its home will do).
#[derive(Debug, Clone, Copy)]
pub struct For<'a> {
    pub case: &'a str,
    pub offline: bool,
}

/// The paths of the spec's caches, sorted (every case takes a slot's locks in this order), and
/// how they are named in messages (`/a`, `/b` of IMAGE).
fn sorted_paths(caches: &Caches) -> Vec<String> {
    let mut paths = caches.paths.clone();
    paths.sort();
    paths.dedup();
    paths
}

/// Names the caches of `image` at `paths` in the slots `slots`, for a waiting message.
fn describe(paths: &[String], image: &str, slots: &[usize]) -> String {
    let paths: Vec<String> = paths.iter().map(|p| format!("`{p}`")).collect();
    let slots = match slots {
        [one] => format!("slot {one}"),
        all => format!("all {} slots in use", all.len()),
    };
    format!("{} of `{image}` ({slots})", paths.join(", "))
}

/// `$XDG_CACHE_HOME/zoo-runner/caches`, else `$HOME/.cache/zoo-runner/caches`.
pub fn default_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })
        .unwrap_or_else(std::env::temp_dir);
    base.join("zoo-runner").join("caches")
}

/// Creates `dir` and returns it absolute and without symlinks.
pub fn prepare_dir(dir: &Path) -> Result<PathBuf, CacheError> {
    let folder_error = |source| CacheError::Folder {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(folder_error)?;
    std::fs::canonicalize(dir).map_err(folder_error)
}

/// Checks that the folders cases write in (Docker's lock files, Apptainer's cache folders) can
/// be made and written: a file is created in each and removed again. Root ignores file modes,
/// so only trying tells (an immutable folder, a read-only mount).
fn check_writable(dir: &Path) -> Result<(), CacheError> {
    for folder in [docker::lock_dir(dir), apptainer::root(dir)] {
        let not_writable = |source| CacheError::NotWritable {
            path: folder.clone(),
            source,
        };
        std::fs::create_dir_all(&folder).map_err(not_writable)?;
        tempfile::Builder::new()
            .prefix(".zoo-runner-write-check-")
            .tempfile_in(&folder)
            .map_err(not_writable)?;
    }
    Ok(())
}

/// A time as RFC 3339 in UTC, to the second (`2024-05-01T12:00:00Z`).
pub fn rfc3339(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rest = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The bytes under `path` (files and symlinks themselves, not followed), or None when it cannot
/// be read.
pub fn size_of(path: &Path) -> Option<u64> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_dir() {
        return Some(meta.len());
    }
    let mut total = 0;
    for entry in std::fs::read_dir(path).ok()? {
        total += size_of(&entry.ok()?.path())?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_is_utc_to_the_second() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_661); // 2000-02-29 01:01:01
        assert_eq!(rfc3339(t), "2000-02-29T01:01:01Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_735_689_599); // last second of 2024
        assert_eq!(rfc3339(t), "2024-12-31T23:59:59Z");
    }

    #[test]
    fn sizes_add_up_files_below() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        std::fs::write(dir.path().join("a/x"), [0u8; 100]).unwrap();
        std::fs::write(dir.path().join("y"), [0u8; 23]).unwrap();
        assert_eq!(size_of(dir.path()), Some(123));
        assert_eq!(size_of(&dir.path().join("gone")), None);
    }

    #[test]
    fn the_cache_folder_is_made_absolute() {
        let dir = tempfile::tempdir().unwrap();
        let made = prepare_dir(&dir.path().join("x/../y")).unwrap();
        assert!(made.is_absolute() && made.ends_with("y"), "{made:?}");
        let file = dir.path().join("f");
        std::fs::write(&file, "").unwrap();
        let err = prepare_dir(&file.join("sub")).unwrap_err().to_string();
        assert!(err.contains("--cache-dir"), "{err}");
    }
}
