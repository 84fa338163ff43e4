//! What a SIF folder holds, for `sif list` and `sif prune`: its SIFs (downloaded, or built with
//! their md5 record), with their size, when a runner last took them (the name's lock file is
//! touched by every fetch, reuse included) and whether a runner is using or fetching them; and
//! what runs left behind: unfinished downloads (kept, the next fetch resumes them), quarantined
//! copies, md5 records whose SIF is gone, build folders of killed builds.
//!
//! Removing takes the name's lock without waiting (a fetch or build in progress keeps its files)
//! and, for a SIF, an exclusive `flock` on it ([`super::in_use`]): a runner using it keeps it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::error::SifError;
use super::in_use::{self, Removal};
use super::{quarantined_label, read_md5_record, CachePaths};
use crate::store::lock;

/// What one entry of the folder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A SIF; `built` when it has an md5 record (`--sif-from-docker`).
    Sif { built: bool },
    /// An unfinished download (`.part`, `.part-PID-N`): the next fetch of the name resumes it.
    Unfinished,
    /// A copy whose md5 did not match (`.bad`), kept as evidence.
    Quarantined,
    /// An md5 record (`.md5`) whose SIF is gone.
    OrphanRecord,
    /// A build folder (`.build-PID-N`) a killed build left.
    BuildFolder,
}

/// Whether a runner works with an entry's name now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    Idle,
    /// A runner is fetching or building this name (it holds the name's lock).
    Fetching,
    /// A runner has this SIF ready for its cases.
    InUse,
}

#[derive(Debug, Clone)]
pub struct Entry {
    /// The file's name in the folder.
    pub file: String,
    pub path: PathBuf,
    /// `<name>.sif`: the name's files share it.
    pub label: String,
    pub kind: Kind,
    pub size: u64,
    /// When a runner last took the name's lock, else the file's modification time.
    pub last_used: Option<SystemTime>,
    pub busy: Busy,
}

/// The entries of the SIF folder `dir`, by file name. A folder that does not exist holds none.
pub fn list(dir: &Path) -> io::Result<Vec<Entry>> {
    let names = match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<io::Result<Vec<String>>>()?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for file in names {
        let Some((label, kind)) = classify(dir, &file) else {
            continue;
        };
        let path = dir.join(&file);
        let meta = fs::symlink_metadata(&path)?;
        let size = if meta.is_dir() {
            bytes_under(&path)
        } else {
            meta.len()
        };
        let last_used =
            lock::last_used(&dir.join(format!("{label}.lock"))).or_else(|| meta.modified().ok());
        let busy = busy(dir, &label, kind);
        found.push(Entry {
            file,
            path,
            label,
            kind,
            size,
            last_used,
            busy,
        });
    }
    found.sort_by(|a, b| a.file.cmp(&b.file));
    Ok(found)
}

/// The name (`<name>.sif`) and kind of a file of the folder; `None` for lock files and what is
/// not the runner's.
fn classify(dir: &Path, file: &str) -> Option<(String, Kind)> {
    if file.ends_with(".sif") {
        let built = read_md5_record(&dir.join(format!("{file}.md5"))).is_some();
        return Some((file.to_string(), Kind::Sif { built }));
    }
    if let Some(label) = file.strip_suffix(".md5").filter(|l| l.ends_with(".sif")) {
        return (!dir.join(label).exists()).then(|| (label.to_string(), Kind::OrphanRecord));
    }
    if let Some(label) = quarantined_label(file).filter(|l| l.ends_with(".sif")) {
        return Some((label.to_string(), Kind::Quarantined));
    }
    let at = file.find(".sif.")? + ".sif".len();
    let (label, rest) = (&file[..at], &file[at..]);
    let kind = if rest == ".part" || rest.starts_with(".part-") {
        Kind::Unfinished
    } else if rest.starts_with(".build-") {
        Kind::BuildFolder
    } else {
        return None;
    };
    Some((label.to_string(), kind))
}

/// Whether a runner holds the name's lock or, for a SIF, uses it. Looks without waiting and
/// lets go at once; a name no runner ever locked (no lock file: a SIF put there by hand, a
/// read-only store) is idle, and gets no lock file from being looked at.
fn busy(dir: &Path, label: &str, kind: Kind) -> Busy {
    let lock_path = dir.join(format!("{label}.lock"));
    if !lock_path.exists() {
        return Busy::Idle;
    }
    settled(
        || probe(dir, label, kind, &lock_path),
        |busy| *busy == Busy::Idle,
    )
}

/// Looks (`look`) up to three times, a moment apart, until it finds the name free: a lock held
/// for a moment is not a fetch (another `sif list` probing the same name, or a child process
/// of a runner between its fork and its exec, which shares the parent's open files until exec
/// closes them). So a name counts as held only when it stays held.
fn settled<T>(mut look: impl FnMut() -> T, free: impl Fn(&T) -> bool) -> T {
    const LOOKS: u32 = 3;
    const PAUSE: std::time::Duration = std::time::Duration::from_millis(20);
    let mut seen = look();
    for _ in 1..LOOKS {
        if free(&seen) {
            break;
        }
        std::thread::sleep(PAUSE);
        seen = look();
    }
    seen
}

fn probe(dir: &Path, label: &str, kind: Kind, lock_path: &Path) -> Busy {
    let _held = match lock::try_acquire(lock_path) {
        Ok(Some(held)) => held,
        Ok(None) => return Busy::Fetching,
        Err(_) => return Busy::Idle,
    };
    if matches!(kind, Kind::Sif { .. }) && in_use::is_held(&dir.join(label)) {
        return Busy::InUse;
    }
    Busy::Idle
}

/// Removes an entry unless a runner is fetching its name or using it: `Ok(Some(why))` says
/// why it was kept.
pub fn remove(dir: &Path, entry: &Entry) -> Result<Option<&'static str>, SifError> {
    // As in `busy`: kept only when it stays held.
    settled(
        || remove_once(dir, entry),
        |removed| !matches!(removed, Ok(Some(_))),
    )
}

fn remove_once(dir: &Path, entry: &Entry) -> Result<Option<&'static str>, SifError> {
    // A name no runner ever locked gets no lock file just for this, but for a SIF, whose
    // removal must not cross a fetch that starts meanwhile.
    let lock_path = dir.join(format!("{}.lock", entry.label));
    let _held = if lock_path.exists() || matches!(entry.kind, Kind::Sif { .. }) {
        let Some(held) = lock::try_acquire(&lock_path)? else {
            return Ok(Some("a runner is fetching it"));
        };
        Some(held)
    } else {
        None
    };
    let io = |action| super::error::io_error(action, &entry.path);
    match entry.kind {
        Kind::Sif { .. } => {
            let name = entry.label.clone();
            return Ok(match in_use::remove_unused(&CachePaths::new(dir, &name))? {
                Removal::InUse => Some("a runner is using it"),
                Removal::Removed { .. } | Removal::Gone | Removal::ReadOnly => None,
            });
        }
        Kind::BuildFolder => super::scratch::remove_all(&entry.path).map_err(io("remove"))?,
        Kind::OrphanRecord if dir.join(&entry.label).exists() => {
            return Ok(Some("its SIF is back"));
        }
        Kind::Unfinished | Kind::Quarantined | Kind::OrphanRecord => {
            match fs::remove_file(&entry.path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io("remove")(e)),
                _ => {}
            }
        }
    }
    Ok(None)
}

fn bytes_under(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    fs::read_dir(path)
        .map(|entries| entries.flatten().map(|e| bytes_under(&e.path())).sum())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(dir: &Path) -> Vec<(String, Kind, u64)> {
        list(dir)
            .unwrap()
            .into_iter()
            .map(|e| (e.file, e.kind, e.size))
            .collect()
    }

    #[test]
    fn a_folder_is_read_file_by_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (file, bytes) in [
            ("a.sif", 10),
            ("a.sif.lock", 5),
            ("b.sif", 20),
            ("b.sif.md5", 32),
            ("c.sif.md5", 32),
            ("a.sif.part-7-0", 3),
            ("a.sif.bad", 4),
            ("d.sif.bad-1700000000", 6),
            ("notes.txt", 1),
            (".zoo-runner-probe-x", 0),
        ] {
            let text = if file.ends_with(".md5") {
                "0123456789abcdef0123456789abcdef".to_string()
            } else {
                "x".repeat(bytes)
            };
            fs::write(d.join(file), text).unwrap();
        }
        fs::create_dir_all(d.join("b.sif.build-9-1/rootfs")).unwrap();
        fs::write(d.join("b.sif.build-9-1/rootfs/f"), "1234567").unwrap();
        assert_eq!(
            kinds(d),
            [
                ("a.sif".to_string(), Kind::Sif { built: false }, 10),
                ("a.sif.bad".to_string(), Kind::Quarantined, 4),
                ("a.sif.part-7-0".to_string(), Kind::Unfinished, 3),
                ("b.sif".to_string(), Kind::Sif { built: true }, 20),
                ("b.sif.build-9-1".to_string(), Kind::BuildFolder, 7),
                ("c.sif.md5".to_string(), Kind::OrphanRecord, 32),
                ("d.sif.bad-1700000000".to_string(), Kind::Quarantined, 6),
            ]
        );
        let entries = list(d).unwrap();
        assert!(
            entries.iter().all(|e| e.busy == Busy::Idle),
            "{:?}",
            entries
                .iter()
                .map(|e| (&e.file, e.busy))
                .collect::<Vec<_>>()
        );
        for entry in &entries {
            assert_eq!(remove(d, entry).unwrap(), None, "{}", entry.file);
        }
        let mut left: Vec<String> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        // Lock files stay (and none is made for a leftover); what is not the runner's is not
        // touched.
        assert_eq!(
            left,
            [
                ".zoo-runner-probe-x",
                "a.sif.lock",
                "b.sif.lock",
                "notes.txt"
            ]
        );
        assert!(list(&d.join("absent")).unwrap().is_empty());
    }

    #[test]
    fn what_a_runner_fetches_or_uses_is_shown_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("a.sif"), "sif").unwrap();
        fs::write(d.join("b.sif"), "sif").unwrap();
        // As a runner's fetch leaves them: the name's lock file, and its hold on the SIF.
        fs::write(d.join("a.sif.lock"), "").unwrap();
        let used = in_use::hold(&d.join("a.sif")).unwrap();
        let fetching = lock::try_acquire(&d.join("b.sif.lock")).unwrap().unwrap();
        let entries = list(d).unwrap();
        let busy: Vec<Busy> = entries.iter().map(|e| e.busy).collect();
        assert_eq!(busy, [Busy::InUse, Busy::Fetching]);
        assert_eq!(
            remove(d, &entries[0]).unwrap(),
            Some("a runner is using it")
        );
        assert_eq!(
            remove(d, &entries[1]).unwrap(),
            Some("a runner is fetching it")
        );
        assert!(d.join("a.sif").exists() && d.join("b.sif").exists());
        drop((used, fetching));
        assert_eq!(remove(d, &entries[0]).unwrap(), None);
        assert!(!d.join("a.sif").exists());
    }
}
