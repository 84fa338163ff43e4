//! Docker images: made ready (the daemon has it, or it is pulled with the login the docker CLI
//! would use, a failed pull described with its registry), removed after their last case
//! (`--prune-images`), and what a pull this run stopped left behind cleaned up.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::query_parameters::{ListImagesOptionsBuilder, RemoveImageOptionsBuilder};
use thiserror::Error;

use super::pull::{self, Refused};
use super::DockerRuntime;
use crate::config::backoff::Backoff;
use crate::engine::short;
use crate::events;
use crate::record::facts::{Fetched, ImageFacts};
use crate::record::Failure;
use crate::runtime::{Image, PrepareError, Ready};
use crate::store::caches::owners;
use crate::store::registry::{
    credentials_for, describe_pull_failure, registry_host, AuthError, PullFailure,
};
use crate::supervise::until;

/// How often a pull that the registry throttled, failed with a server error or let time out
/// is tried again, and the pauses before (about 5 s, 10 s, 20 s: `config::backoff`).
pub const PULL_RETRIES: u32 = 3;
const PULL_BACKOFF: Backoff = Backoff::new(Duration::from_secs(5), Duration::from_secs(60));

/// Why an image cannot be had.
#[derive(Debug, Error)]
pub enum ImageError {
    #[error("failed to inspect image `{image}`")]
    Inspect {
        image: String,
        #[source]
        source: BollardError,
    },
    #[error("cannot pull `{image}`: the login for registry {registry} cannot be read")]
    Credentials {
        image: String,
        registry: String,
        #[source]
        source: AuthError,
    },
    #[error("cannot pull `{image}`: the lookup of its login failed")]
    CredentialsTask {
        image: String,
        #[source]
        source: tokio::task::JoinError,
    },
    /// A failed pull, described with the registry it came from.
    #[error(transparent)]
    Pull(#[from] PullFailure),
    #[error("image `{image}` is missing after its pull")]
    MissingAfterPull {
        image: String,
        #[source]
        source: BollardError,
    },
    #[error("failed to remove image `{image}`")]
    Remove {
        image: String,
        #[source]
        source: BollardError,
    },
}

impl DockerRuntime {
    /// The image, ready: there already, or pulled now. An interruption does not wait for a
    /// pull (dropping it ends it on the daemon's side too).
    pub(super) async fn prepare_image(&self, image: &Image) -> Result<Ready, PrepareError> {
        let (id, fetched) = until(self.fetch(&image.name), None, &self.cancel)
            .await
            .map_err(|_| PrepareError::Interrupted {
                what: format!("`{}` was being pulled", image.name),
            })?
            .map_err(|e| PrepareError::Failed(Failure::new(e)))?;
        if let Some(caches) = &self.caches {
            // What the image's new cache volumes need, learnt now (ahead of its cases with
            // --pull-ahead); a failure is said by the first case that needs it.
            let helper = self.cache_helper(&image.name);
            let _ = owners::plans(caches, &self.docker, &id, &helper).await;
        }
        Ok(Ready {
            key: image.name.clone(),
            image: image.clone(),
            facts: ImageFacts {
                id: Some(id),
                runtime_version: Some(self.version.clone()),
                fetched,
                ..ImageFacts::default()
            },
            sif: None,
        })
    }

    /// The image's id, and what its pull took when this run pulled it.
    async fn fetch(&self, image: &str) -> Result<(String, Option<Fetched>), ImageError> {
        if let Some(id) = self.image_id(image).await? {
            return Ok((id, None));
        }
        let registry = registry_host(image);
        // Read the way the docker CLI reads them; a credential helper may take its time.
        let owned = image.to_string();
        let helpers = self.helpers.clone();
        let lookup = self.lookups.ticket().await;
        let credentials = tokio::task::spawn_blocking(move || {
            let _lookup = lookup;
            credentials_for(&owned, &helpers)
        })
        .await
        .map_err(|source| ImageError::CredentialsTask {
            image: image.to_string(),
            source,
        })?
        .map_err(|source| ImageError::Credentials {
            image: image.to_string(),
            registry: registry.clone(),
            source,
        })?;
        let sent = credentials.is_some();
        if self.prune {
            // Before the first pull, so that a pull stopped half way can be told from what
            // was there.
            self.before
                .get_or_init(|| async { self.image_ids().await.ok() })
                .await;
        }
        self.pulled(image, false);
        // A rate limit, a server error or a timeout is tried again after a pause (an
        // interruption drops this future, pause included).
        let mut retry = 0;
        // The pull's time is that of every try and pause: none of it is case time.
        let started = std::time::Instant::now();
        let stats = loop {
            let failure = match pull::pull(&self.docker, image, credentials.clone()).await {
                Ok(stats) => break stats,
                Err(Refused(said)) => describe_pull_failure(image, &registry, sent, &said),
            };
            if !failure.is_transient() || retry >= PULL_RETRIES {
                return Err(failure.into());
            }
            let pause = PULL_BACKOFF.pause(retry);
            retry += 1;
            // The pull's own line has just said why it failed.
            events::note(format!(
                "pull of {image}: trying again in {} ({retry} of {PULL_RETRIES})",
                crate::config::units::show_duration(pause)
            ));
            tokio::time::sleep(pause).await;
        };
        let id = match self.docker.inspect_image(image).await {
            Ok(info) => info.id.unwrap_or_default(),
            Err(source) => {
                return Err(ImageError::MissingAfterPull {
                    image: image.to_string(),
                    source,
                })
            }
        };
        self.pulled(image, true);
        Ok((
            id,
            Some(Fetched {
                elapsed: started.elapsed(),
                bytes: stats.bytes,
            }),
        ))
    }

    /// Notes that this run began to pull `image` (`finished` false), or finished its pull.
    fn pulled(&self, image: &str, finished: bool) {
        self.pulls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(image.to_string(), finished);
    }

    /// The image's id when the daemon has it, `None` when it does not.
    async fn image_id(&self, image: &str) -> Result<Option<String>, ImageError> {
        match self.docker.inspect_image(image).await {
            Ok(info) => Ok(Some(info.id.unwrap_or_default())),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(source) => {
                self.note_if_lost(&source);
                Err(ImageError::Inspect {
                    image: image.to_string(),
                    source,
                })
            }
        }
    }

    /// The ids of every image the daemon has (intermediate ones too).
    async fn image_ids(&self) -> Result<HashSet<String>, BollardError> {
        let options = ListImagesOptionsBuilder::default().all(true).build();
        let images = self.docker.list_images(Some(options)).await?;
        Ok(images.into_iter().map(|i| i.id).collect())
    }

    /// Removes an image this run pulled (`--prune-images`), once no container of the runner
    /// uses it: the containers created ahead for its cases that did not run are removed, and
    /// every removal in flight is waited for first.
    pub(super) async fn remove_image(&self, image: &str) -> Result<(), Failure> {
        // The image's cases have all ended: a container made ahead for one of them is unused.
        self.discard_ahead(|ahead| ahead.image == image).await;
        self.settle_removals().await;
        let options = RemoveImageOptionsBuilder::default().build();
        self.docker
            .remove_image(image, Some(options), None)
            .await
            .map(|_| ())
            .map_err(|source| {
                Failure::new(ImageError::Remove {
                    image: image.to_string(),
                    source,
                })
            })
    }

    /// Removes what the pulls this run began but did not finish (stopped, or failed) left
    /// behind: an image the daemon finished all the same after the runner let go of the pull,
    /// and dangling images of its repository; never an image the daemon had before the run.
    pub(super) async fn clean_stopped_pulls(&self) {
        let before = self.before.get().and_then(Option::as_ref);
        let stopped: Vec<String> = {
            let pulls = self.pulls.lock().unwrap_or_else(|p| p.into_inner());
            let mut stopped: Vec<String> = pulls
                .iter()
                .filter(|(_, finished)| !**finished)
                .map(|(image, _)| image.clone())
                .collect();
            stopped.sort();
            stopped
        };
        for image in stopped {
            for line in self.remove_stopped_pull(&image, before).await {
                let line = line.unwrap_or_else(|why| why);
                events::note(format!("--prune-images: {line}"));
            }
        }
    }

    /// Removes what a pull of `image` that this run stopped (or that failed) left behind: the
    /// image itself, should the daemon have finished it, and dangling images of its repository
    /// (a tag gone, its digest kept). Only images whose id is not in `before` (what the daemon
    /// had before the run's first pull) are touched; without `before` only the image itself,
    /// which the daemon did not have when the pull began. Returns one line per image removed
    /// or not.
    async fn remove_stopped_pull(
        &self,
        image: &str,
        before: Option<&HashSet<String>>,
    ) -> Vec<Result<String, String>> {
        // Waits for the runner's own containers, as a prune does.
        self.discard_ahead(|ahead| ahead.image == image).await;
        self.settle_removals().await;
        // (what to remove: a name or an id; its id; what to call it)
        let mut left: Vec<(String, String, String)> = Vec::new();
        if let Ok(Some(id)) = self.image_id(image).await {
            if before.is_none_or(|b| !b.contains(&id)) {
                // By name: should someone have tagged it otherwise meanwhile, theirs stays.
                left.push((image.to_string(), id, image.to_string()));
            }
        }
        if let Some(before) = before {
            let repository = repository_of(image);
            let filters = HashMap::from([("dangling".to_string(), vec!["true".to_string()])]);
            let options = ListImagesOptionsBuilder::default()
                .filters(&filters)
                .build();
            let dangling = self
                .docker
                .list_images(Some(options))
                .await
                .unwrap_or_default();
            for found in dangling {
                let ours = found
                    .repo_digests
                    .iter()
                    .any(|d| repository_of(d) == repository);
                let listed = left.iter().any(|(_, id, _)| *id == found.id);
                if ours && !before.contains(&found.id) && !listed {
                    let what = format!("{repository} ({})", short_id(&found.id));
                    left.push((found.id.clone(), found.id, what));
                }
            }
        }
        let mut lines = Vec::new();
        for (target, _, what) in left {
            let options = RemoveImageOptionsBuilder::default().build();
            lines.push(
                match self.docker.remove_image(&target, Some(options), None).await {
                    Ok(_)
                    | Err(BollardError::DockerResponseServerError {
                        status_code: 404, ..
                    }) => Ok(format!("removed {what}, left by a pull this run stopped")),
                    Err(e) => Err(format!(
                        "could not remove {what}, left by a pull this run stopped: {}",
                        short(&e)
                    )),
                },
            );
        }
        lines
    }
}

/// The repository an image reference or a repo digest names, as the daemon writes it
/// (`127.0.0.1:5555/zoo/x:1` and `127.0.0.1:5555/zoo/x@sha256:...` -> `127.0.0.1:5555/zoo/x`;
/// Docker Hub's `docker.io/library/` prefixes left out).
fn repository_of(reference: &str) -> String {
    let name = reference.split('@').next().unwrap_or(reference);
    let name = match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => name,
    };
    let name = name
        .strip_prefix("docker.io/")
        .or_else(|| name.strip_prefix("index.docker.io/"))
        .unwrap_or(name);
    name.strip_prefix("library/").unwrap_or(name).to_string()
}

/// The first 12 hex digits of an image id, as the docker CLI shows it.
fn short_id(id: &str) -> String {
    id.trim_start_matches("sha256:").chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_of_references_and_digests_agree() {
        let local = "127.0.0.1:5555/zoo/x";
        assert_eq!(repository_of("127.0.0.1:5555/zoo/x:t1"), local);
        assert_eq!(repository_of("127.0.0.1:5555/zoo/x@sha256:ab"), local);
        assert_eq!(repository_of("127.0.0.1:5555/zoo/x"), local);
        assert_eq!(repository_of("docker.io/library/busybox:1"), "busybox");
        assert_eq!(repository_of("busybox@sha256:ab"), "busybox");
        assert_eq!(
            repository_of("kipoi/kipoi-docker:mmsplice"),
            "kipoi/kipoi-docker"
        );
    }
}
