//! Who a new Docker cache volume belongs to, with nothing run in the image.
//!
//! Docker fills an empty volume with the image's content at its path, with its owners and
//! modes, when a container that mounts it is created. That is all a volume needs when the image
//! runs as root, or when the image's folder belongs to its user. Where the image runs as
//! another user and the folder is not in the image, or belongs to root (as ANTsPyNet's
//! `~/.keras` does), the volume's top folder must be given to that user: through the Engine
//! API's archive upload ([`crate::engine::archive`]) into the case's own container, created
//! and not yet started. No `chown`, no shell: an image FROM scratch with a few busybox applets
//! has caches too.
//!
//! What to do for each path is a property of the image ([`Plans`]): learnt once per run and
//! image, when the image is made ready (ahead of its cases with `--pull-ahead`), in a helper
//! container of the image that is created, never started, and removed: who owns the path in
//! the image, and the user's numbers from the image's `/etc/passwd` and `/etc/group`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig};
use bollard::Docker;
use thiserror::Error;

use super::users::{self, Ids, UserError};
use super::{CacheError, Caches, Held};
use crate::cancel::{Cancel, Level};
use crate::engine::archive::{self, ArchiveError};
use crate::engine::remove_container;
use crate::record::Failure;

/// The command of the helper container, which is never started: no program of the image runs.
const NEVER_STARTED: &str = "/zoo-runner-helper-is-never-started";

/// The helper container that reads the image's files: labelled (a sweep removes it after a
/// killed run), created and never started; each request to the daemon bounded.
#[derive(Debug, Clone)]
pub struct Helper {
    pub labels: HashMap<String, String>,
    /// How long the daemon gets to answer a request.
    pub request_timeout: Duration,
}

/// What a new volume of one path of an image needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Docker's own filling: the image runs as root, or its folder belongs to someone else.
    Fill,
    /// Then its top folder given to the user, with this mode.
    Give { ids: Ids, mode: u32 },
}

/// The plans of an image: by cache path, with the image's user as its `USER` says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plans {
    pub user: String,
    pub paths: HashMap<String, Plan>,
}

/// Why the image's caches could not be planned or given.
#[derive(Debug, Error)]
pub enum OwnerError {
    #[error("cannot inspect image `{image_id}` for its user")]
    Inspect {
        image_id: String,
        #[source]
        source: BollardError,
    },
    #[error("cannot create a container of image `{image_id}` to read its files")]
    Create {
        image_id: String,
        #[source]
        source: BollardError,
    },
    #[error("cannot read who owns `{path}` in image `{image_id}`")]
    Owner {
        image_id: String,
        path: String,
        #[source]
        source: ArchiveError,
    },
    #[error("cannot read `{path}` in image `{image_id}`")]
    Read {
        image_id: String,
        path: String,
        #[source]
        source: ArchiveError,
    },
    #[error("cannot give the caches of image `{image_id}` to its user `{user}`")]
    User {
        image_id: String,
        user: String,
        #[source]
        source: UserError,
    },
    #[error("cannot give the cache volume `{volume}` at `{path}` to the image's user `{user}`")]
    Give {
        volume: String,
        path: String,
        user: String,
        #[source]
        source: ArchiveError,
    },
}

/// A volume of the case's slot that was made (or never finished) and still needs its plan
/// carried out in the case's container; then its `ready` file is written.
#[derive(Debug, Clone)]
pub struct Fresh {
    pub volume: String,
    pub path: String,
    pub user: String,
    pub plan: Plan,
    pub ready: PathBuf,
}

/// The plans of the image `image_id`, learnt once per run (a failure is not kept: the next
/// case tries again).
pub async fn plans(
    caches: &Caches,
    docker: &Docker,
    image_id: &str,
    helper: &Helper,
) -> Result<Arc<Plans>, CacheError> {
    let cell = caches.plans_cell(image_id);
    cell.get_or_try_init(|| async {
        learn(docker, image_id, &caches.paths, helper, &caches.cancel)
            .await
            .map(Arc::new)
    })
    .await
    .cloned()
}

/// Reads the image's user and, unless it is root, who owns each path in the image and the
/// user's numbers, in a helper container that is created and never started.
async fn learn(
    docker: &Docker,
    image_id: &str,
    paths: &[String],
    helper: &Helper,
    cancel: &Cancel,
) -> Result<Plans, CacheError> {
    let failed = |e: OwnerError| CacheError::Docker(Failure::new(e));
    let info = docker.inspect_image(image_id).await.map_err(|source| {
        failed(OwnerError::Inspect {
            image_id: image_id.to_string(),
            source,
        })
    })?;
    let user = info.config.and_then(|c| c.user).unwrap_or_default();
    let all_fill = |user: String| Plans {
        user,
        paths: paths.iter().map(|p| (p.clone(), Plan::Fill)).collect(),
    };
    if users::is_root(&user) {
        return Ok(all_fill(user));
    }
    let body = ContainerCreateBody {
        image: Some(image_id.to_string()),
        entrypoint: Some(vec![]),
        cmd: Some(vec![NEVER_STARTED.into()]),
        labels: Some(helper.labels.clone()),
        network_disabled: Some(true),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
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
        .map_err(|source| {
            failed(OwnerError::Create {
                image_id: image_id.to_string(),
                source,
            })
        })?
        .id;
    let read = read_plans(docker, &id, image_id, &user, paths, helper.request_timeout);
    let outcome = tokio::select! {
        outcome = read => Some(outcome),
        () = cancel.reached(Level::Stop) => None,
    };
    // Gone whatever happened.
    let _ = remove_container(docker, &id).await;
    match outcome {
        Some(Ok(Some(plans))) => Ok(Plans { user, paths: plans }),
        Some(Ok(None)) => Ok(all_fill(user)),
        Some(Err(e)) => Err(failed(e)),
        None => Err(CacheError::SetupInterrupted {
            image: image_id.to_string(),
        }),
    }
}

/// In the helper container `id`: the plan of each path; None when the user turns out to be
/// root (a name for uid 0).
async fn read_plans(
    docker: &Docker,
    id: &str,
    image_id: &str,
    user: &str,
    paths: &[String],
    limit: Duration,
) -> Result<Option<HashMap<String, Plan>>, OwnerError> {
    // The mode each path needs given, or None when Docker's filling does: the image's folder
    // belongs to someone other than root.
    let mut modes = Vec::new();
    for path in paths {
        let owner = archive::owner(docker, id, path, limit)
            .await
            .map_err(|source| OwnerError::Owner {
                image_id: image_id.to_string(),
                path: path.clone(),
                source,
            })?;
        let mode = match owner {
            Some(entry) if entry.uid != 0 => None,
            Some(entry) => Some(entry.mode & 0o7777 | 0o700),
            None => Some(0o755),
        };
        modes.push((path.clone(), mode));
    }
    if modes.iter().all(|(_, mode)| mode.is_none()) {
        let fill = modes.into_iter().map(|(p, _)| (p, Plan::Fill)).collect();
        return Ok(Some(fill));
    }
    let read = |file: &'static str| async move {
        let text = archive::read_file(docker, id, file, limit)
            .await
            .map_err(|source| OwnerError::Read {
                image_id: image_id.to_string(),
                path: file.to_string(),
                source,
            })?;
        Ok::<_, OwnerError>(text.map(|t| String::from_utf8_lossy(&t).into_owned()))
    };
    let (need_passwd, need_group) = users::needs(user);
    let passwd = if need_passwd {
        read("/etc/passwd").await?
    } else {
        None
    };
    let group = if need_group {
        read("/etc/group").await?
    } else {
        None
    };
    let ids = users::resolve(user, passwd.as_deref(), group.as_deref()).map_err(|source| {
        OwnerError::User {
            image_id: image_id.to_string(),
            user: user.to_string(),
            source,
        }
    })?;
    if ids.uid == 0 {
        return Ok(None);
    }
    let plans = modes
        .into_iter()
        .map(|(path, mode)| {
            let plan = mode.map_or(Plan::Fill, |mode| Plan::Give { ids, mode });
            (path, plan)
        })
        .collect();
    Ok(Some(plans))
}

/// Carries out the plans of the case's fresh volumes in its container `id`, created (which
/// filled them) and not yet started, and writes their `ready` files.
pub async fn settle(
    docker: &Docker,
    id: &str,
    held: &Held,
    limit: Duration,
) -> Result<(), CacheError> {
    for fresh in &held.fresh {
        if let Plan::Give { ids, mode } = fresh.plan {
            archive::set_owner(docker, id, &fresh.path, (ids.uid, ids.gid, mode), limit)
                .await
                .map_err(|source| {
                    CacheError::Docker(Failure::new(OwnerError::Give {
                        volume: fresh.volume.clone(),
                        path: fresh.path.clone(),
                        user: fresh.user.clone(),
                        source,
                    }))
                })?;
        }
        std::fs::write(&fresh.ready, "").map_err(|source| CacheError::Record {
            path: fresh.ready.clone(),
            source,
        })?;
    }
    Ok(())
}
