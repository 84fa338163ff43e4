//! Apptainer caches: one host folder per (SIF md5, path), `<cache folder>/apptainer/NAME/`,
//! bound at the path with `--bind`. Beside it, `NAME.json` says what it is for (image, SIF, md5,
//! path, created) and `NAME.lock` is its lock.
//!
//! Apptainer runs as the host user and binds the host user's home, so `$HOME` in the container
//! is the host's, and a cache under the image's home would never be used. A spec whose image
//! keeps its data under its own home says so with `apptainer_home`: the case then runs with
//! `--no-mount home --home HOME` (the ANTsPyNet notes advise `--home /home/antspyuser`; without
//! `--no-mount home` Apptainer mounts an empty home over the image's), so `$HOME` is the image's
//! home with its built-in data, and the caches beneath it are bound there.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::lock::{last_used, lock_path, CacheLock};
use super::{names, rfc3339, size_of, CacheError, Caches, Held, IN_USE};

/// What `NAME.json` records about a cache folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FolderMeta {
    pub image: String,
    pub sif: PathBuf,
    pub md5: String,
    pub path: String,
    pub created: String,
}

/// The folder (under the cache folder) that holds the Apptainer caches.
pub fn root(caches_dir: &Path) -> PathBuf {
    caches_dir.join("apptainer")
}

/// Takes the caches of the SIF `sif` (md5 `md5`, made for `image`) for one case: locks each and
/// creates its folder when missing.
pub async fn prepare(
    caches: &Caches,
    image: &str,
    sif: &Path,
    md5: &str,
) -> Result<Held, CacheError> {
    let root = root(&caches.dir);
    let mut held = Held::default();
    let mut paths = caches.paths.clone();
    paths.sort();
    for path in &paths {
        let name = names::folder_name(md5, path);
        let what = format!("`{path}` of `{}` ({name})", sif.display());
        let (lock, waited) =
            CacheLock::acquire(&lock_path(&root, &name), &what, &caches.cancel).await?;
        let folder = root.join(&name);
        if !folder.is_dir() {
            create(&root, &name, image, sif, md5, path)?;
        }
        caches.note_used(&name);
        held.take(lock, waited, &folder.display().to_string(), path);
    }
    Ok(held)
}

fn create(
    root: &Path,
    name: &str,
    image: &str,
    sif: &Path,
    md5: &str,
    path: &str,
) -> Result<(), CacheError> {
    let folder = root.join(name);
    let io = |source| CacheError::Folder {
        path: folder.clone(),
        source,
    };
    let meta = FolderMeta {
        image: image.to_string(),
        sif: sif.to_path_buf(),
        md5: md5.to_string(),
        path: path.to_string(),
        created: rfc3339(SystemTime::now()),
    };
    let text = serde_json::to_string_pretty(&meta).unwrap_or_default();
    std::fs::write(root.join(format!("{name}.json")), text).map_err(io)?;
    std::fs::create_dir_all(&folder).map_err(io)
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
    found.sort_by(|a, b| (&a.meta.image, &a.meta.path).cmp(&(&b.meta.image, &b.meta.path)));
    Ok(found)
}

/// Removes a cache folder and its record, unless a case holds it (then says so: [`super::IN_USE`]).
pub fn remove(dir: &Path, name: &str) -> Result<(), String> {
    let root = root(dir);
    let _lock = CacheLock::try_acquire(&lock_path(&root, name))
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

    fn held(caches: &Caches) -> Held {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(prepare(
            caches,
            "img:1",
            Path::new("/sifs/img.sif"),
            "0123456789abcdef0123456789abcdef",
        ))
        .unwrap()
    }

    #[test]
    fn a_folder_per_md5_and_path_is_made_recorded_listed_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let paths = vec!["/root/.keras".to_string(), "/data".to_string()];
        let caches = Caches::new(dir.path(), paths, Cancel::new()).unwrap();
        let first = held(&caches);
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
        let again = held(&caches);
        assert!(Path::new(&again.mounts[0].0).join("weights").exists());
        drop(again);
        remove(&caches.dir, &data.name).unwrap();
        assert_eq!(list(&caches.dir).unwrap().len(), 1);
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
