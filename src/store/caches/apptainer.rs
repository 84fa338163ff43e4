//! Apptainer caches: one host folder per (SIF md5, path), `<cache folder>/apptainer/NAME/`,
//! bound at the path with `--bind`. Beside it, `NAME.json` says what it is for (image, md5,
//! path, created, and every SIF file that used it) and `NAME.lock` is its lock.
//!
//! The key is the md5, not the file: the same SIF in two `--sif-dir`s shares its caches. So a
//! cache is gone only when no SIF file that used it is still there with its md5
//! ([`FolderMeta::known_sifs`]), or by age (`cache prune --unused-for`).
//!
//! Apptainer runs as the host user and binds the host user's home, so `$HOME` in the container
//! is the host's, and a cache under the image's home would never be used. A spec whose image
//! keeps its data under its own home says so with `apptainer_home`: the case then runs with
//! `--no-mount home --home HOME` (the ANTsPyNet notes advise `--home /home/antspyuser`; without
//! `--no-mount home` Apptainer mounts an empty home over the image's), so `$HOME` is the image's
//! home with its built-in data, and the caches beneath it are bound there.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::homes::Homes;
use super::lock::{self, last_used, lock_path};
use super::slots::{self, Want};
use super::{
    describe, names, rfc3339, size_of, sorted_paths, CacheError, Caches, For, Held, IN_USE,
};

/// What `NAME.json` records about a cache folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FolderMeta {
    pub image: String,
    /// The first SIF file that used it (all that older runners recorded).
    pub sif: PathBuf,
    pub md5: String,
    pub path: String,
    /// Which replica of the cache it is (0 for folders made before slots).
    #[serde(default)]
    pub slot: usize,
    pub created: String,
    /// Every SIF file that used it, as it was when it last did.
    #[serde(default)]
    pub sifs: Vec<SifSeen>,
}

/// A SIF file that used a cache: its path, size and modification time (seconds) then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SifSeen {
    pub path: PathBuf,
    pub size: u64,
    pub modified: u64,
}

impl SifSeen {
    /// The SIF file at `path` as it is now.
    fn of(path: &Path) -> Option<SifSeen> {
        let meta = std::fs::metadata(path).ok()?;
        Some(SifSeen {
            path: path.to_path_buf(),
            size: meta.len(),
            modified: modified_secs(&meta)?,
        })
    }

    /// True when the file is still there with the md5 `md5`: unchanged since it was seen (same
    /// size and time), else by its `.md5` record, else by reading it.
    fn holds(&self, md5: &str) -> bool {
        let Ok(meta) = std::fs::metadata(&self.path) else {
            return false;
        };
        if meta.len() == self.size && modified_secs(&meta) == Some(self.modified) {
            return true;
        }
        let record = PathBuf::from(format!("{}.md5", self.path.display()));
        if std::fs::read_to_string(record).is_ok_and(|r| r.trim().eq_ignore_ascii_case(md5)) {
            return true;
        }
        crate::store::sif::md5_file(&self.path).is_ok_and(|m| m.eq_ignore_ascii_case(md5))
    }
}

fn modified_secs(meta: &std::fs::Metadata) -> Option<u64> {
    let modified = meta.modified().ok()?;
    Some(modified.duration_since(UNIX_EPOCH).ok()?.as_secs())
}

impl FolderMeta {
    /// The SIF files that used this cache and still have its md5. None: the cache is of no use
    /// any more.
    pub fn known_sifs(&self) -> Vec<PathBuf> {
        let mut seen = self.sifs.clone();
        if !seen.iter().any(|s| s.path == self.sif) {
            // Recorded by an older runner, with no size or time: checked by its md5.
            seen.insert(
                0,
                SifSeen {
                    path: self.sif.clone(),
                    size: u64::MAX,
                    modified: 0,
                },
            );
        }
        seen.into_iter()
            .filter(|s| s.holds(&self.md5))
            .map(|s| s.path)
            .collect()
    }
}

/// The folder (under the cache folder) that holds the Apptainer caches.
pub fn root(caches_dir: &Path) -> PathBuf {
    caches_dir.join("apptainer")
}

/// Takes the caches of the SIF `sif` (md5 `md5`, made for `image`) for one case: a slot
/// ([`super::slots`]) of every path, locked; each folder of that slot made when missing.
pub async fn prepare(
    caches: &Caches,
    image: &str,
    sif: &Path,
    md5: &str,
    case: For<'_>,
) -> Result<Held, CacheError> {
    let root = root(&caches.dir);
    let paths = sorted_paths(caches);
    let homes = Homes::of(&root, &names::folder_set(md5));
    let want = Want {
        home: homes.get(case.case),
        count: caches.slots,
        only_home: case.offline,
    };
    let folder = |path: &str, slot| names::slot_name(&names::folder_name(md5, path), slot);
    let locks_of = |slot| {
        paths
            .iter()
            .map(|p| lock_path(&root, &folder(p, slot)))
            .collect()
    };
    let sif_name = sif.display().to_string();
    let what = |slots: &[usize]| describe(&paths, &sif_name, slots);
    let taken = slots::take(&want, &locks_of, &what, &caches.cancel).await?;
    let (mut held, slot, waited) = Held::of(taken);
    for path in &paths {
        let name = folder(path, slot);
        if !root.join(&name).is_dir() {
            let at = Key {
                image,
                sif,
                md5,
                path,
                slot,
            };
            create(&root, &name, &at)?;
        } else {
            record_use(&root, &name, sif)?;
        }
        caches.note_used(&name);
        held.mount(&root.join(&name).display().to_string(), path, waited);
    }
    homes.set(case.case, slot, &caches.cancel).await?;
    Ok(held)
}

/// What a cache folder is for.
struct Key<'a> {
    image: &'a str,
    sif: &'a Path,
    md5: &'a str,
    path: &'a str,
    slot: usize,
}

fn create(root: &Path, name: &str, at: &Key) -> Result<(), CacheError> {
    let folder = root.join(name);
    let io = |source| CacheError::Folder {
        path: folder.clone(),
        source,
    };
    let meta = FolderMeta {
        image: at.image.to_string(),
        sif: at.sif.to_path_buf(),
        md5: at.md5.to_string(),
        path: at.path.to_string(),
        slot: at.slot,
        created: rfc3339(SystemTime::now()),
        sifs: SifSeen::of(at.sif).into_iter().collect(),
    };
    write_meta(root, name, &meta).map_err(io)?;
    std::fs::create_dir_all(&folder).map_err(io)
}

/// Adds `sif` to the SIF files the cache's record lists (or brings its entry up to date).
/// Called under the cache's lock.
fn record_use(root: &Path, name: &str, sif: &Path) -> Result<(), CacheError> {
    let file = root.join(format!("{name}.json"));
    let Some(mut meta) = std::fs::read_to_string(&file)
        .ok()
        .and_then(|text| serde_json::from_str::<FolderMeta>(&text).ok())
    else {
        // No record (made by hand, or lost): nothing to add to.
        return Ok(());
    };
    let Some(now) = SifSeen::of(sif) else {
        return Ok(());
    };
    if meta.sifs.contains(&now) {
        return Ok(());
    }
    meta.sifs.retain(|s| s.path != now.path);
    meta.sifs.push(now);
    write_meta(root, name, &meta).map_err(|source| CacheError::Record { path: file, source })
}

/// Writes `NAME.json` through a temporary file and a rename: `cache list` never reads half.
fn write_meta(root: &Path, name: &str, meta: &FolderMeta) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(meta).unwrap_or_default();
    let tmp = root.join(format!("{name}.json.tmp-{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, root.join(format!("{name}.json")))
}

/// The `apptainer exec` options for the held caches and the spec's `apptainer_home`:
/// `--no-mount home --home HOME` (the image's home is `$HOME`, with what the image keeps there,
/// instead of the host user's home), then `--bind FOLDER:PATH` per cache.
pub fn bind_args(held: &Held, home: Option<&str>) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(home) = home {
        args.extend(["--no-mount", "home", "--home", home].map(String::from));
    }
    for (folder, path) in &held.mounts {
        args.extend(["--bind".into(), format!("{folder}:{path}")]);
    }
    args
}

/// One Apptainer cache, as `cache list` shows it.
#[derive(Debug, Clone)]
pub struct FolderCache {
    pub name: String,
    pub meta: FolderMeta,
    pub size: Option<u64>,
    pub last_used: Option<SystemTime>,
}

/// The Apptainer caches under the cache folder `dir` (folders with their `NAME.json`).
pub fn list(dir: &Path) -> Result<Vec<FolderCache>, String> {
    let root = root(dir);
    let entries = match std::fs::read_dir(&root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read `{}`: {e}", root.display())),
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let file = entry.path();
        let Some(name) = file
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let Ok(meta) = serde_json::from_str::<FolderMeta>(&text) else {
            continue;
        };
        found.push(FolderCache {
            name: name.to_string(),
            size: size_of(&root.join(name)),
            last_used: last_used(&lock_path(&root, name)),
            meta,
        });
    }
    found.sort_by(|a, b| {
        (&a.meta.image, &a.meta.path, a.meta.slot).cmp(&(&b.meta.image, &b.meta.path, b.meta.slot))
    });
    Ok(found)
}

/// Removes a cache folder and its record, unless a case holds it (then says so: [`super::IN_USE`]).
pub fn remove(dir: &Path, name: &str) -> Result<(), String> {
    let root = root(dir);
    let _lock = lock::try_acquire(&lock_path(&root, name))
        .map_err(|e| e.to_string())?
        .ok_or_else(|| IN_USE.to_string())?;
    let folder = root.join(name);
    match std::fs::remove_dir_all(&folder) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot remove `{}`: {e}", folder.display())),
    }
    let _ = std::fs::remove_file(root.join(format!("{name}.json")));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cancel::Cancel;

    fn held(caches: &Caches, case: &str) -> Held {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(prepare(
            caches,
            "img:1",
            Path::new("/sifs/img.sif"),
            "0123456789abcdef0123456789abcdef",
            For {
                case,
                offline: false,
            },
        ))
        .unwrap()
    }

    #[test]
    fn a_folder_per_md5_and_path_is_made_recorded_listed_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let paths = vec!["/root/.keras".to_string(), "/data".to_string()];
        let caches = Caches::new(dir.path(), paths, 1, Cancel::new()).unwrap();
        let first = held(&caches, "a");
        assert_eq!(first.mounts.len(), 2);
        for (folder, _) in &first.mounts {
            assert!(Path::new(folder).is_dir(), "{folder}");
        }
        std::fs::write(Path::new(&first.mounts[0].0).join("weights"), "w").unwrap();
        // Held: another case cannot remove it.
        let listed = list(&caches.dir).unwrap();
        assert_eq!(listed.len(), 2);
        let keras = listed
            .iter()
            .find(|c| c.meta.path == "/root/.keras")
            .unwrap();
        assert_eq!(keras.meta.image, "img:1");
        assert!(keras.last_used.is_some());
        let data = listed.iter().find(|c| c.meta.path == "/data").unwrap();
        assert_eq!(data.size, Some(1));
        let err = remove(&caches.dir, &data.name).unwrap_err();
        assert!(err.contains("in use"), "{err}");
        drop(first);
        // Reused: the same folders, the file still there.
        let again = held(&caches, "a");
        assert!(Path::new(&again.mounts[0].0).join("weights").exists());
        drop(again);
        remove(&caches.dir, &data.name).unwrap();
        assert_eq!(list(&caches.dir).unwrap().len(), 1);
    }

    #[test]
    fn cases_at_once_take_a_slot_each_and_come_back_to_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let paths = vec!["/root/.keras".to_string(), "/data".to_string()];
        let caches = Caches::new(dir.path(), paths, 2, Cancel::new()).unwrap();
        let a = held(&caches, "a");
        let b = held(&caches, "b");
        let folders = |h: &Held| h.mounts.iter().map(|m| m.0.clone()).collect::<Vec<_>>();
        let (slot0, slot1) = (folders(&a), folders(&b));
        assert!(
            slot0.iter().all(|f| !slot1.contains(f)),
            "{slot0:?} {slot1:?}"
        );
        assert!(slot1.iter().all(|f| f.ends_with("-s1")), "{slot1:?}");
        drop((a, b));
        // Taken the other way round, each case gets its own slot (home) back.
        let b = held(&caches, "b");
        let a = held(&caches, "a");
        assert_eq!((folders(&a), folders(&b)), (slot0, slot1));
        let listed = list(&caches.dir).unwrap();
        let slots: Vec<usize> = listed.iter().map(|c| c.meta.slot).collect();
        assert_eq!(slots, [0, 1, 0, 1], "by image, path and slot");
    }

    #[test]
    fn binds_and_home_follow_the_spec() {
        let held = Held {
            mounts: vec![
                ("/c/a".into(), "/home/u/.keras".into()),
                ("/c/b".into(), "/opt/data".into()),
            ],
            ..Default::default()
        };
        assert_eq!(
            bind_args(&held, None),
            ["--bind", "/c/a:/home/u/.keras", "--bind", "/c/b:/opt/data"]
        );
        assert_eq!(
            bind_args(&held, Some("/home/u")),
            [
                "--no-mount",
                "home",
                "--home",
                "/home/u",
                "--bind",
                "/c/a:/home/u/.keras",
                "--bind",
                "/c/b:/opt/data"
            ]
        );
    }
}
