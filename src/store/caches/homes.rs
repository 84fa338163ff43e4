//! Where each model's data is: the slot of its image's caches that it last ran in (its "home").
//! A case takes its home again when it is free, so that a model finds the data it fetched
//! before; an offline run waits for it rather than run where the data is not.
//!
//! One record per image (a set of caches, [`super::names::volume_set`] or
//! [`super::names::folder_set`]): `<runtime folder>/homes/SET.json`, `{"case": slot, ...}`.
//! Written under one lock for the folder (`homes/homes.lock`, held for a read and a write)
//! through a temporary file and a rename, so that readers need no lock and never see half a
//! record. A record that is missing or does not parse is an empty one: homes only save
//! downloads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::CacheError;
use crate::cancel::Cancel;
use crate::store::lock::{self, Waited};

/// How long a case waits for the record's lock (held for a read and a write by others).
const LOCK_LIMIT: Duration = Duration::from_secs(30);

/// The record of one set of caches.
#[derive(Debug, Clone)]
pub struct Homes {
    folder: PathBuf,
    set: String,
}

/// The folder of the records, in a runtime's folder of the cache folder.
pub fn folder(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join("homes")
}

impl Homes {
    /// The record of the set `set` in the runtime's folder `runtime_dir` (`docker/`,
    /// `apptainer/`).
    pub fn of(runtime_dir: &Path, set: &str) -> Homes {
        Homes {
            folder: folder(runtime_dir),
            set: set.to_string(),
        }
    }

    fn file(&self) -> PathBuf {
        self.folder.join(format!("{}.json", self.set))
    }

    /// Every case's home.
    pub fn all(&self) -> BTreeMap<String, usize> {
        std::fs::read_to_string(self.file())
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default()
    }

    /// The slot `case` last ran in, if it ever did.
    pub fn get(&self, case: &str) -> Option<usize> {
        self.all().get(case).copied()
    }

    /// Records that `case` now runs in `slot`.
    pub async fn set(&self, case: &str, slot: usize, cancel: &Cancel) -> Result<(), CacheError> {
        if self.get(case) == Some(slot) {
            return Ok(());
        }
        let lock_file = self.folder.join("homes.lock");
        let stop = || cancel.is_cancelled();
        let _lock = match lock::acquire(&lock_file, Some(LOCK_LIMIT), &stop, |_| {}).await? {
            Waited::Taken(lock, _) => lock,
            Waited::Stopped => {
                return Err(CacheError::Interrupted {
                    what: format!("record `{}`", self.file().display()),
                })
            }
            Waited::TimedOut(holder) => {
                return Err(CacheError::HomesLocked {
                    path: lock_file,
                    holder: holder.to_string(),
                    limit: LOCK_LIMIT,
                })
            }
        };
        let mut homes = self.all();
        homes.insert(case.to_string(), slot);
        let file = self.file();
        write(&file, &homes).map_err(|source| CacheError::Record { path: file, source })
    }
}

/// Writes a record through a temporary file and a rename.
fn write(file: &Path, homes: &BTreeMap<String, usize>) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(homes).unwrap_or_default();
    let tmp = file.with_extension(format!("json.tmp-{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, file)
}

/// Removes the records of the sets `keep` says no to (`cache prune`, once their caches are
/// gone). Best effort: a record left behind only names slots.
pub fn forget(runtime_dir: &Path, keep: impl Fn(&str) -> bool) {
    let Ok(entries) = std::fs::read_dir(folder(runtime_dir)) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let set = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"));
        if set.is_some_and(|set| !keep(set)) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn homes_are_recorded_per_set_and_forgotten_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let cancel = Cancel::new();
        let a = Homes::of(dir.path(), "set-a");
        assert_eq!(a.get("docker::m"), None);
        a.set("docker::m", 1, &cancel).await.unwrap();
        a.set("docker::n", 0, &cancel).await.unwrap();
        a.set("docker::m", 2, &cancel).await.unwrap();
        assert_eq!(a.get("docker::m"), Some(2));
        assert_eq!(a.get("docker::n"), Some(0));
        let b = Homes::of(dir.path(), "set-b");
        assert_eq!(b.get("docker::m"), None, "another image, another record");
        b.set("docker::m", 0, &cancel).await.unwrap();
        // A record that does not parse is an empty one, and is written anew.
        std::fs::write(folder(dir.path()).join("set-b.json"), "{half").unwrap();
        assert_eq!(b.get("docker::m"), None);
        b.set("docker::m", 1, &cancel).await.unwrap();
        assert_eq!(b.get("docker::m"), Some(1));
        forget(dir.path(), |set| set == "set-b");
        assert_eq!(a.get("docker::m"), None);
        assert_eq!(b.get("docker::m"), Some(1));
    }
}
