//! Docker caches: one named volume per (cache folder, image ID, path, slot).
//!
//! - The volume is created with labels ([`LABEL_DIR`], [`LABEL_IMAGE`], [`LABEL_IMAGE_ID`],
//!   [`LABEL_PATH`], [`LABEL_SLOT`], [`LABEL_CREATED`], and the runner's own), so `cache list`
//!   and `cache prune` find it.
//! - A new volume is filled by Docker with the image's content at its path when the case's
//!   container that mounts it is created, and given to the image's user where it needs to be,
//!   in that container before it starts ([`super::owners`]). A `NAME.ready` file beside the
//!   volume's lock says this was done (a run killed in between leaves a volume the next case
//!   fills and gives); later cases mount it with `nocopy`, so that Docker never fills it again
//!   (nor gives its top folder the image folder's owner again) while it is still empty.
//! - All of this happens under the slot's lock, held by the case until its container ends.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bollard::errors::Error as BollardError;
use bollard::models::{Mount, MountType, MountVolumeOptions, VolumeCreateRequest};
use bollard::query_parameters::ListVolumesOptionsBuilder;
use bollard::Docker;
use thiserror::Error;

use super::homes::Homes;
use super::lock::{last_used, lock_path, try_acquire};
use super::owners::{self, Fresh, Helper, Plan};
use super::slots::{self, Want};
use super::{
    describe, names, rfc3339, size_of, sorted_paths, CacheError, Caches, For, Held, IN_USE,
};
use crate::engine::labels::{LABEL_RUNNER, RUNNER};
use crate::engine::short;
use crate::record::Failure;

/// The cache folder whose locks guard the volume.
pub const LABEL_DIR: &str = "org.zoo-runner.cache.dir";
/// The image reference the volume was made for (the first one seen with that ID).
pub const LABEL_IMAGE: &str = "org.zoo-runner.cache.image";
pub const LABEL_IMAGE_ID: &str = "org.zoo-runner.cache.image-id";
/// The container path the volume is mounted at.
pub const LABEL_PATH: &str = "org.zoo-runner.cache.path";
/// Which replica of the cache it is ([`super::slots`]); none on volumes made before slots
/// (slot 0).
pub const LABEL_SLOT: &str = "org.zoo-runner.cache.slot";
/// When the volume was created, RFC 3339 (UTC).
pub const LABEL_CREATED: &str = "org.zoo-runner.cache.created";

/// Why a Docker cache volume could not be made ready.
#[derive(Debug, Error)]
pub enum VolumeError {
    #[error(
        "a Docker volume named `{name}` exists but zoo-runner did not make it for `{path}`; \
         remove it (`docker volume rm {name}`) or pass another --cache-dir"
    )]
    NotOurs { name: String, path: String },
    #[error("cannot inspect the cache volume `{name}`")]
    Inspect {
        name: String,
        #[source]
        source: BollardError,
    },
    #[error("cannot create the cache volume `{name}`")]
    Create {
        name: String,
        #[source]
        source: BollardError,
    },
}

/// The folder (under the cache folder) that holds the Docker volumes' lock files.
pub fn lock_dir(caches_dir: &std::path::Path) -> PathBuf {
    caches_dir.join("docker")
}

/// The Docker mounts of the held caches, for a case's container. A fresh volume is mounted as
/// Docker mounts any (filled with the image's content while it is empty); one that is ready
/// with `nocopy`, since Docker would fill it again, and give its top folder the image folder's
/// owner again, at every container it is mounted in while it is still empty.
pub fn mounts(held: &Held) -> Vec<Mount> {
    held.mounts
        .iter()
        .map(|(volume, path)| {
            let fresh = held.fresh.iter().any(|f| &f.volume == volume);
            Mount {
                target: Some(path.clone()),
                source: Some(volume.clone()),
                typ: Some(MountType::VOLUME),
                read_only: Some(false),
                volume_options: Some(MountVolumeOptions {
                    no_copy: Some(!fresh),
                    ..Default::default()
                }),
                ..Default::default()
            }
        })
        .collect()
}

/// Takes the caches of `image` (whose ID is `image_id`) for one case: a slot ([`super::slots`])
/// of every path, locked; each volume of that slot created when missing. A volume not yet
/// ready is held as fresh, with its plan ([`super::owners`]), for [`owners::settle`] once the
/// case's container is created.
pub async fn prepare(
    caches: &Caches,
    docker: &Docker,
    image: &str,
    image_id: &str,
    case: For<'_>,
    helper: &Helper,
) -> Result<Held, CacheError> {
    let dir = caches.dir_label();
    let paths = sorted_paths(caches);
    let locks = lock_dir(&caches.dir);
    let homes = Homes::of(&locks, &names::volume_set(&dir, image_id));
    let home = homes.get(case.case);
    let want = Want {
        home,
        count: caches.slots,
        only_home: case.offline,
    };
    let volume =
        |path: &str, slot| names::slot_name(&names::volume_name(&dir, image_id, path), slot);
    let locks_of = |slot| {
        paths
            .iter()
            .map(|p| lock_path(&locks, &volume(p, slot)))
            .collect()
    };
    let what = |slots: &[usize]| describe(&paths, image, slots);
    let taken = slots::take(&want, &locks_of, &what, &caches.cancel).await?;
    let (mut held, slot, waited) = Held::of(taken);
    for path in &paths {
        let name = volume(path, slot);
        // Checked for every case (another runner may have pruned it since); fresh when created,
        // or when a run was killed before it was made ready.
        let created = ensure_volume(docker, &name, &dir, image, image_id, path, slot)
            .await
            .map_err(|e| CacheError::Docker(Failure::new(e)))?;
        let ready = ready_path(&caches.dir, &name);
        if created || !ready.exists() {
            let plans = owners::plans(caches, docker, image_id, helper).await?;
            held.fresh.push(Fresh {
                volume: name.clone(),
                path: path.clone(),
                user: plans.user.clone(),
                plan: plans.paths.get(path).copied().unwrap_or(Plan::Fill),
                ready,
            });
        }
        caches.note_used(&name);
        held.mount(&name, path, waited);
    }
    homes.set(case.case, slot, &caches.cancel).await?;
    Ok(held)
}

/// The file that says a volume was filled and given to the image's user.
fn ready_path(caches_dir: &Path, volume: &str) -> PathBuf {
    lock_dir(caches_dir).join(format!("{volume}.ready"))
}

/// Creates the volume unless it exists (true when it made it); an existing volume must be one
/// of ours for this path.
async fn ensure_volume(
    docker: &Docker,
    name: &str,
    dir: &str,
    image: &str,
    image_id: &str,
    path: &str,
    slot: usize,
) -> Result<bool, VolumeError> {
    match docker.inspect_volume(name).await {
        Ok(volume) => {
            let labels = &volume.labels;
            if labels.get(LABEL_RUNNER).map(String::as_str) != Some(RUNNER)
                || labels.get(LABEL_PATH).map(String::as_str) != Some(path)
            {
                return Err(VolumeError::NotOurs {
                    name: name.to_string(),
                    path: path.to_string(),
                });
            }
            return Ok(false);
        }
        Err(BollardError::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        Err(source) => {
            return Err(VolumeError::Inspect {
                name: name.to_string(),
                source,
            })
        }
    }
    let labels = HashMap::from([
        (LABEL_RUNNER.to_string(), RUNNER.to_string()),
        (LABEL_DIR.to_string(), dir.to_string()),
        (LABEL_IMAGE.to_string(), image.to_string()),
        (LABEL_IMAGE_ID.to_string(), image_id.to_string()),
        (LABEL_PATH.to_string(), path.to_string()),
        (LABEL_SLOT.to_string(), slot.to_string()),
        (LABEL_CREATED.to_string(), rfc3339(SystemTime::now())),
    ]);
    let request = VolumeCreateRequest {
        name: Some(name.to_string()),
        labels: Some(labels),
        ..Default::default()
    };
    docker
        .create_volume(request)
        .await
        .map(|_| true)
        .map_err(|source| VolumeError::Create {
            name: name.to_string(),
            source,
        })
}

/// One Docker cache, as `cache list` shows it.
#[derive(Debug, Clone)]
pub struct VolumeCache {
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub path: String,
    /// Which replica of the cache it is.
    pub slot: usize,
    /// The caches of its image, all paths and slots ([`names::volume_set`]).
    pub set: String,
    pub created: String,
    /// None when the size cannot be read (a remote daemon, no permission).
    pub size: Option<u64>,
    pub last_used: Option<SystemTime>,
}

/// The cache volumes of the cache folder `dir`.
pub async fn list(docker: &Docker, dir: &std::path::Path) -> Result<Vec<VolumeCache>, String> {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![
            format!("{LABEL_RUNNER}={RUNNER}"),
            format!("{LABEL_DIR}={}", dir.display()),
        ],
    )]);
    let options = ListVolumesOptionsBuilder::default()
        .filters(&filters)
        .build();
    let volumes = docker
        .list_volumes(Some(options))
        .await
        .map_err(|e| format!("cannot list the cache volumes: {}", short(&e)))?
        .volumes
        .unwrap_or_default();
    let mut found: Vec<VolumeCache> = volumes
        .into_iter()
        .map(|v| {
            let label = |k: &str| v.labels.get(k).cloned().unwrap_or_default();
            VolumeCache {
                image: label(LABEL_IMAGE),
                image_id: label(LABEL_IMAGE_ID),
                path: label(LABEL_PATH),
                slot: label(LABEL_SLOT).parse().unwrap_or(0),
                set: names::volume_set(&dir.display().to_string(), &label(LABEL_IMAGE_ID)),
                created: label(LABEL_CREATED),
                // Readable when the daemon runs on this machine and the runner may read its
                // volumes (root, typically).
                size: size_of(std::path::Path::new(&v.mountpoint)),
                last_used: last_used(&lock_path(&lock_dir(dir), &v.name)),
                name: v.name,
            }
        })
        .collect();
    found.sort_by(|a, b| {
        (&a.image, &a.path, a.slot, &a.name).cmp(&(&b.image, &b.path, b.slot, &b.name))
    });
    Ok(found)
}

/// True when the daemon still has the image with this ID.
pub async fn image_exists(docker: &Docker, image_id: &str) -> Result<bool, String> {
    match docker.inspect_image(image_id).await {
        Ok(_) => Ok(true),
        Err(BollardError::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(e) => Err(format!("cannot inspect image `{image_id}`: {}", short(&e))),
    }
}

/// Removes a cache volume, unless a case holds it (then says so: [`super::IN_USE`]).
pub async fn remove(docker: &Docker, dir: &std::path::Path, name: &str) -> Result<(), String> {
    let lock = try_acquire(&lock_path(&lock_dir(dir), name))
        .map_err(|e| e.to_string())?
        .ok_or_else(|| IN_USE.to_string())?;
    let result = docker
        .remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>)
        .await;
    if result.is_ok() {
        let _ = std::fs::remove_file(ready_path(dir, name));
    }
    drop(lock);
    match result {
        Ok(())
        | Err(BollardError::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(e) => Err(short(&e)),
    }
}
