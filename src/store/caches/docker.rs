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
//!   The helper runs under the supervisor, as a case's container does: a deadline, the run's
//!   interruption, the same give-up.
//! - All of this happens under the cache's lock, held by the case until its container ends.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigLogConfig, Mount, MountType, VolumeCreateRequest,
};
use bollard::query_parameters::ListVolumesOptionsBuilder;
use bollard::Docker;
use thiserror::Error;

use super::homes::Homes;
use super::lock::{last_used, lock_path, try_acquire};
use super::slots::{self, Want};
use super::{
    describe, names, rfc3339, size_of, sorted_paths, CacheError, Caches, For, Held, IN_USE,
};
use crate::cancel::Cancel;
use crate::config::units::show_duration;
use crate::engine::container::Container;
use crate::engine::labels::{LABEL_RUNNER, RUNNER};
use crate::engine::{remove_container, short};
use crate::record::Failure;
use crate::supervise::{supervise, Ending, Limits, Target};

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

/// How long the helper that gives a new volume to the image's user may take.
pub const HELPER_TIMEOUT: Duration = Duration::from_secs(120);
/// The helper's grace period: `chown` has nothing to save.
const HELPER_GRACE: Duration = Duration::from_secs(2);

/// How the helper container that gives a new volume to the image's user runs: labelled (a
/// sweep removes it after a killed run), and under the supervisor like a case's container
/// (its deadline, the run's interruption, the same give-up).
#[derive(Debug, Clone)]
pub struct Helper {
    pub labels: HashMap<String, String>,
    pub limits: Limits,
    /// How long the daemon gets to answer a request.
    pub request_timeout: Duration,
}

impl Helper {
    /// [`HELPER_TIMEOUT`], a short grace period, and `slack` before the runner kills it and
    /// again before it gives up on it.
    pub fn new(
        labels: HashMap<String, String>,
        slack: Duration,
        request_timeout: Duration,
    ) -> Self {
        Helper {
            labels,
            limits: Limits {
                timeout: Some(HELPER_TIMEOUT),
                grace: HELPER_GRACE,
                slack,
                slow: None,
                drain: Target::Container.drain(),
            },
            request_timeout,
        }
    }
}

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
    #[error("cannot inspect image `{image_id}` for its user")]
    InspectImage {
        image_id: String,
        #[source]
        source: BollardError,
    },
    #[error("cannot give the cache volume `{volume}` at `{path}` to the image's user `{user}`")]
    Give {
        volume: String,
        path: String,
        user: String,
        #[source]
        source: GiveError,
    },
}

/// Why the helper container's `chown` did not do its work.
#[derive(Debug, Error)]
pub enum GiveError {
    #[error("the helper container could not be created")]
    Create(#[source] BollardError),
    #[error("`chown` did not start in the image")]
    Start(#[source] BollardError),
    #[error("`chown` exited with {0} in the image")]
    Exited(i64),
    #[error("`chown` did not end within {}, and was stopped", show_duration(*.0))]
    TimedOut(Duration),
    #[error(
        "the helper container could not be stopped: still running {} after its stop and a \
         SIGKILL, so the runner gave up on it",
        show_duration(*.0)
    )]
    Stuck(Duration),
    #[error("lost the Docker daemon while `chown` ran")]
    Lost(#[source] BollardError),
}

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

/// Takes the caches of `image` (whose ID is `image_id`) for one case: a slot ([`super::slots`])
/// of every path, locked; each volume of that slot created when missing and, once per run,
/// given to the image's user with a `helper` container.
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
        // Checked for every case (another runner may have pruned it since); given to the
        // image's user when created, and once per run otherwise (a run killed between the two
        // steps leaves a volume that still needs it).
        let created = ensure_volume(docker, &name, &dir, image, image_id, path, slot)
            .await
            .map_err(|e| CacheError::Docker(Failure::new(e)))?;
        let give = || give_to_user(docker, image_id, &name, path, helper, &caches.cancel);
        if created {
            give().await?;
        }
        let ready = caches.ready_cell(&name);
        let ready = ready
            .get_or_init(|| async {
                if created {
                    Ok(())
                } else {
                    give().await.map_err(Failure::new)
                }
            })
            .await
            .clone();
        if let Err(failure) = ready {
            return Err(shared(failure, &name));
        }
        caches.note_used(&name);
        held.mount(&name, path, waited);
    }
    homes.set(case.case, slot, &caches.cancel).await?;
    Ok(held)
}

/// The error of a volume's preparation that another case of this run made: its interruption
/// is this case's too.
fn shared(failure: Failure, volume: &str) -> CacheError {
    let interrupted = failure
        .error()
        .downcast_ref::<CacheError>()
        .is_some_and(CacheError::is_interrupted);
    if interrupted {
        CacheError::HelperInterrupted {
            volume: volume.to_string(),
        }
    } else {
        CacheError::Docker(failure)
    }
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

/// True for the users a container runs as root with.
fn is_root(user: &str) -> bool {
    let name = user.split(':').next().unwrap_or_default();
    matches!(name, "" | "root" | "0")
}

/// Makes the volume's top folder belong to the image's user (when that is not root): a helper
/// container from the image runs `chown USER PATH` as root with the volume mounted. Creating it
/// also fills an empty volume with the image's content at the path. The helper runs under the
/// supervisor: stopped at its deadline or on the run's interruption, given up on if it will not
/// go, and removed by force whatever happened.
async fn give_to_user(
    docker: &Docker,
    image_id: &str,
    volume: &str,
    path: &str,
    helper: &Helper,
    cancel: &Cancel,
) -> Result<(), CacheError> {
    let info = docker.inspect_image(image_id).await.map_err(|source| {
        CacheError::Docker(Failure::new(VolumeError::InspectImage {
            image_id: image_id.to_string(),
            source,
        }))
    })?;
    let user = info.config.and_then(|c| c.user).unwrap_or_default();
    if is_root(&user) {
        return Ok(());
    }
    let failed = |source: GiveError| {
        CacheError::Docker(Failure::new(VolumeError::Give {
            volume: volume.to_string(),
            path: path.to_string(),
            user: user.clone(),
            source,
        }))
    };
    let held = Held {
        mounts: vec![(volume.to_string(), path.to_string())],
        ..Default::default()
    };
    let body = ContainerCreateBody {
        image: Some(image_id.to_string()),
        user: Some("0:0".to_string()),
        entrypoint: Some(vec![]),
        cmd: Some(vec!["chown".into(), user.clone(), path.to_string()]),
        labels: Some(helper.labels.clone()),
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
    let id = docker
        .create_container(None, body)
        .await
        .map_err(|e| failed(GiveError::Create(e)))?
        .id;
    let outcome = run_helper(docker, &id, helper, cancel).await;
    // Gone whatever happened (a helper given up on too).
    let _ = remove_container(docker, &id).await;
    match outcome {
        Ok(()) => Ok(()),
        Err(None) => Err(CacheError::HelperInterrupted {
            volume: volume.to_string(),
        }),
        Err(Some(e)) => Err(failed(e)),
    }
}

/// Starts the helper container and waits for it under the supervisor; `Err(None)` when the
/// run was interrupted.
async fn run_helper(
    docker: &Docker,
    id: &str,
    helper: &Helper,
    cancel: &Cancel,
) -> Result<(), Option<GiveError>> {
    docker
        .start_container(id, None)
        .await
        .map_err(|e| Some(GiveError::Start(e)))?;
    let container = Container {
        docker,
        id,
        request_timeout: helper.request_timeout,
    };
    let started = tokio::time::Instant::now();
    let (ending, _notes) = supervise(
        container.wait(),
        &container,
        &helper.limits,
        cancel,
        started,
        |_| {},
    )
    .await;
    match ending {
        Ending::Exited(Some(0)) => Ok(()),
        Ending::Exited(_) => {
            let code = docker
                .inspect_container(id, None)
                .await
                .ok()
                .and_then(|i| i.state)
                .and_then(|s| s.exit_code)
                .unwrap_or(-1);
            match code {
                0 => Ok(()),
                code => Err(Some(GiveError::Exited(code))),
            }
        }
        Ending::TimedOut { .. } => Err(Some(GiveError::TimedOut(
            helper.limits.timeout.unwrap_or(HELPER_TIMEOUT),
        ))),
        Ending::Stuck { waited, .. } => Err(Some(GiveError::Stuck(waited))),
        Ending::Interrupted { .. } => Err(None),
        Ending::Lost(e) => Err(Some(GiveError::Lost(e))),
    }
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

    use crate::engine::labels;
    use crate::identity::Identity;

    /// A container of the fixture image that runs `sleep 600`: a STAND-IN for a helper whose
    /// `chown` never ends.
    async fn hanging_helper(docker: &Docker, labels: &HashMap<String, String>) -> String {
        let body = ContainerCreateBody {
            image: Some("local/kipoi-fixture:py3".to_string()),
            entrypoint: Some(vec![]),
            cmd: Some(vec!["sleep".into(), "600".into()]),
            labels: Some(labels.clone()),
            host_config: Some(HostConfig {
                network_mode: Some("none".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        docker
            .create_container(None, body)
            .await
            .expect("a container of the fixture image (bash fixtures/build.sh makes it)")
            .id
    }

    /// Against the real daemon: the helper container is waited for under the supervisor, so
    /// the run's interruption ends the wait (its case then did not start), and so does its
    /// deadline.
    #[tokio::test]
    async fn the_helper_container_ends_with_the_run_and_at_its_deadline() {
        let docker = Docker::connect_with_defaults().unwrap();
        let labels =
            labels::for_container("unit-test", &Identity::of_this_process(), "cache helper");
        let mut helper = Helper::new(labels, Duration::from_secs(5), Duration::from_secs(60));
        helper.limits.grace = Duration::from_secs(1);

        let cancel = Cancel::new();
        let raiser = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            raiser.raise(libc::SIGINT);
        });
        let id = hanging_helper(&docker, &helper.labels).await;
        let interrupted = run_helper(&docker, &id, &helper, &cancel).await;
        let _ = remove_container(&docker, &id).await;
        assert!(matches!(interrupted, Err(None)), "{interrupted:?}");

        helper.limits.timeout = Some(Duration::from_secs(1));
        let id = hanging_helper(&docker, &helper.labels).await;
        let timed_out = run_helper(&docker, &id, &helper, &Cancel::new()).await;
        let _ = remove_container(&docker, &id).await;
        match timed_out {
            Err(Some(e @ GiveError::TimedOut(_))) => {
                assert_eq!(
                    e.to_string(),
                    "`chown` did not end within 1s, and was stopped"
                )
            }
            other => panic!("{other:?}"),
        }
    }

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
