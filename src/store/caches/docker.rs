//! Docker caches: one named volume per (cache folder, image ID, path).
//!
//! - The volume is created with labels ([`LABEL_DIR`], [`LABEL_IMAGE`], [`LABEL_IMAGE_ID`],
//!   [`LABEL_PATH`], [`LABEL_CREATED`], and the runner's own), so `cache list` and `cache prune`
//!   find it.
//! - Docker fills an empty volume with the image's content at the mount path, with its owners,
//!   when a container that mounts it is created. For an image whose user is not root, a helper
//!   container made from the same image runs `chown USER PATH` as root once per run, so that the
//!   user can write the cache even where the image's folder belongs to root (as ANTsPyNet's
//!   `~/.keras` does) or does not exist at all.
//! - All of this happens under the cache's lock, held by the case until its container ends.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigLogConfig, Mount, MountType, VolumeCreateRequest,
};
use bollard::query_parameters::{ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder};
use bollard::Docker;
use futures_util::StreamExt;

use super::lock::{last_used, lock_path, CacheLock};
use super::{names, rfc3339, size_of, CacheError, Caches, Held, IN_USE};
use crate::engine::labels::{LABEL_RUNNER, RUNNER};
use crate::engine::short;

/// The cache folder whose locks guard the volume.
pub const LABEL_DIR: &str = "org.zoo-runner.cache.dir";
/// The image reference the volume was made for (the first one seen with that ID).
pub const LABEL_IMAGE: &str = "org.zoo-runner.cache.image";
pub const LABEL_IMAGE_ID: &str = "org.zoo-runner.cache.image-id";
/// The container path the volume is mounted at.
pub const LABEL_PATH: &str = "org.zoo-runner.cache.path";
/// When the volume was created, RFC 3339 (UTC).
pub const LABEL_CREATED: &str = "org.zoo-runner.cache.created";

/// How long the helper that gives a new volume to the image's user may take.
const HELPER_TIMEOUT: Duration = Duration::from_secs(120);

/// The folder (under the cache folder) that holds the Docker volumes' lock files.
pub fn lock_dir(caches_dir: &std::path::Path) -> PathBuf {
    caches_dir.join("docker")
}

/// The Docker mounts of the held caches.
pub fn mounts(held: &Held) -> Vec<Mount> {
    held.mounts
        .iter()
        .map(|(volume, path)| Mount {
            target: Some(path.clone()),
            source: Some(volume.clone()),
            typ: Some(MountType::VOLUME),
            read_only: Some(false),
            ..Default::default()
        })
        .collect()
}

/// Takes the caches of `image` (whose ID is `image_id`) for one case: locks each, creates its
/// volume when missing and, once per run, gives it to the image's user. `helper_labels` label the
/// helper container (so a sweep can remove it after a killed run).
pub async fn prepare(
    caches: &Caches,
    docker: &Docker,
    image: &str,
    image_id: &str,
    helper_labels: HashMap<String, String>,
) -> Result<Held, CacheError> {
    let mut held = Held::default();
    let mut paths = caches.paths.clone();
    paths.sort();
    for path in &paths {
        let name = names::volume_name(&caches.dir_label(), image_id, path);
        let what = format!("`{path}` of `{image}` ({name})");
        let (lock, waited) = CacheLock::acquire(
            &lock_path(&lock_dir(&caches.dir), &name),
            &what,
            &caches.cancel,
        )
        .await?;
        // Checked for every case (another runner may have pruned it since); given to the
        // image's user when created, and once per run otherwise (a run killed between the two
        // steps leaves a volume that still needs it).
        let created = ensure_volume(docker, &name, &caches.dir_label(), image, image_id, path)
            .await
            .map_err(CacheError::Docker)?;
        let give = || give_to_user(docker, image_id, &name, path, helper_labels.clone());
        if created {
            give().await.map_err(CacheError::Docker)?;
        }
        let slot = caches.ready_slot(&name);
        slot.get_or_init(|| async {
            if created {
                Ok(())
            } else {
                give().await
            }
        })
        .await
        .clone()
        .map_err(CacheError::Docker)?;
        caches.note_used(&name);
        held.take(lock, waited, &name, path);
    }
    Ok(held)
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
) -> Result<bool, String> {
    match docker.inspect_volume(name).await {
        Ok(volume) => {
            let labels = &volume.labels;
            if labels.get(LABEL_RUNNER).map(String::as_str) != Some(RUNNER)
                || labels.get(LABEL_PATH).map(String::as_str) != Some(path)
            {
                return Err(format!(
                    "a Docker volume named `{name}` exists but zoo-runner did not make it for \
                     `{path}`; remove it (`docker volume rm {name}`) or pass another --cache-dir"
                ));
            }
            return Ok(false);
        }
        Err(BollardError::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        Err(e) => {
            return Err(format!(
                "cannot inspect the cache volume `{name}`: {}",
                short(&e)
            ))
        }
    }
    let labels = HashMap::from([
        (LABEL_RUNNER.to_string(), RUNNER.to_string()),
        (LABEL_DIR.to_string(), dir.to_string()),
        (LABEL_IMAGE.to_string(), image.to_string()),
        (LABEL_IMAGE_ID.to_string(), image_id.to_string()),
        (LABEL_PATH.to_string(), path.to_string()),
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
        .map_err(|e| format!("cannot create the cache volume `{name}`: {}", short(&e)))
}

/// True for the users a container runs as root with.
fn is_root(user: &str) -> bool {
    let name = user.split(':').next().unwrap_or_default();
    matches!(name, "" | "root" | "0")
}

/// Makes the volume's top folder belong to the image's user (when that is not root): a helper
/// container from the image runs `chown USER PATH` as root with the volume mounted. Creating it
/// also fills an empty volume with the image's content at the path.
async fn give_to_user(
    docker: &Docker,
    image_id: &str,
    volume: &str,
    path: &str,
    labels: HashMap<String, String>,
) -> Result<(), String> {
    let info = docker
        .inspect_image(image_id)
        .await
        .map_err(|e| format!("cannot inspect image `{image_id}`: {}", short(&e)))?;
    let user = info.config.and_then(|c| c.user).unwrap_or_default();
    if is_root(&user) {
        return Ok(());
    }
    let held = Held {
        mounts: vec![(volume.to_string(), path.to_string())],
        ..Default::default()
    };
    let body = ContainerCreateBody {
        image: Some(image_id.to_string()),
        user: Some("0:0".to_string()),
        entrypoint: Some(vec![]),
        cmd: Some(vec!["chown".into(), user.clone(), path.to_string()]),
        labels: Some(labels),
        network_disabled: Some(true),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            mounts: Some(mounts(&held)),
            log_config: Some(HostConfigLogConfig {
                typ: Some("none".into()),
                config: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let failed = |why: String| {
        format!(
            "cannot give the cache volume `{volume}` at `{path}` to the image's user `{user}`: \
             {why}"
        )
    };
    let id = docker
        .create_container(None, body)
        .await
        .map_err(|e| failed(short(&e)))?
        .id;
    let outcome = tokio::time::timeout(HELPER_TIMEOUT, async {
        docker
            .start_container(&id, None)
            .await
            .map_err(|e| format!("`chown` did not start in the image: {}", short(&e)))?;
        let mut waiting = docker.wait_container(&id, None);
        while waiting.next().await.is_some() {}
        let code = docker
            .inspect_container(&id, None)
            .await
            .ok()
            .and_then(|i| i.state)
            .and_then(|s| s.exit_code)
            .unwrap_or(-1);
        match code {
            0 => Ok(()),
            code => Err(format!(
                "`chown {user} {path}` exited with {code} in the image"
            )),
        }
    })
    .await
    .unwrap_or_else(|_| Err("`chown` did not end within two minutes".to_string()));
    let options = RemoveContainerOptionsBuilder::default().force(true).build();
    let _ = docker.remove_container(&id, Some(options)).await;
    outcome.map_err(failed)
}

/// One Docker cache, as `cache list` shows it.
#[derive(Debug, Clone)]
pub struct VolumeCache {
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub path: String,
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
                created: label(LABEL_CREATED),
                // Readable when the daemon runs on this machine and the runner may read its
                // volumes (root, typically).
                size: size_of(std::path::Path::new(&v.mountpoint)),
                last_used: last_used(&lock_path(&lock_dir(dir), &v.name)),
                name: v.name,
            }
        })
        .collect();
    found.sort_by(|a, b| (&a.image, &a.path, &a.name).cmp(&(&b.image, &b.path, &b.name)));
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
    let lock = CacheLock::try_acquire(&lock_path(&lock_dir(dir), name))
        .map_err(|e| e.to_string())?
        .ok_or_else(|| IN_USE.to_string())?;
    let result = docker
        .remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>)
        .await;
    drop(lock);
    match result {
        Ok(())
        | Err(BollardError::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(e) => Err(short(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_users_need_no_helper() {
        for user in ["", "root", "0", "0:0", "root:staff"] {
            assert!(is_root(user), "{user}");
        }
        for user in ["antspyuser", "1000", "1000:1000", "modeluser:users"] {
            assert!(!is_root(user), "{user}");
        }
    }
}
