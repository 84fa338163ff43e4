//! A case's SIF, made ready before the case: found verified in the SIF folder, downloaded from
//! the catalog's URL, or built from the Docker image with `--sif-from-docker`. A read-only SIF
//! folder serves only what it holds, which is checked when the runtime opens.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use thiserror::Error;

use super::SingularityRuntime;
use crate::record::facts::{Fetched, ImageFacts};
use crate::record::Failure;
use crate::runtime::{Image, PrepareError, Ready};
use crate::store::sif::{pull, Removal, SifCache, SifError};
use crate::supervise::until;

/// Why a SIF cannot be had besides its fetch's own errors.
#[derive(Debug, Error)]
pub enum SifUnavailable {
    #[error(
        "the catalog has no SIF for the models of `{image}` (model-to-singularity.json); pass \
         --sif-from-docker to build one from `{image}`"
    )]
    NotInCatalog { image: String },
    #[error("the SIF fetch task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// Why `--prune-sifs` left a SIF this run fetched.
#[derive(Debug, Error)]
pub enum PruneError {
    #[error("another runner sharing the SIF folder `{}` uses it, so it stays", .dir.display())]
    InUse { dir: PathBuf },
    #[error("the SIF folder `{}` is read-only", .dir.display())]
    ReadOnly { dir: PathBuf },
    #[error("it could not be removed")]
    Failed(#[source] SifError),
    #[error("the removal task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// A read-only SIF folder lacks SIFs the run needs: nothing can be downloaded or built there.
#[derive(Debug, Error)]
#[error(
    "the SIF folder `{}` (--sif-dir) is read-only, and {} SIF(s) the selected cases need are not \
     in it: {}; nothing can be downloaded or built there: put them there first, or pass a \
     writable --sif-dir",
    .dir.display(),
    .missing.len(),
    .missing.join(", ")
)]
pub struct MissingFromStore {
    pub dir: PathBuf,
    pub missing: Vec<String>,
}

/// Checks that a read-only SIF folder holds the SIF of every image in `images` (those of the
/// cases that will run): the catalog's, or with `sif_from_docker` a built one with its md5
/// record.
pub fn check_read_only_store(
    cache: &SifCache,
    images: &[Image],
    sif_from_docker: bool,
) -> Result<(), MissingFromStore> {
    let mut missing: Vec<String> = Vec::new();
    for image in images {
        let lacking = match &image.sif {
            Some(entry) => (!cache.holds(&entry.name, false)).then(|| entry.name.clone()),
            None if sif_from_docker => {
                let name = pull::sif_name(&image.name);
                (!cache.holds(&name, true)).then(|| format!("{name} (built from {})", image.name))
            }
            None => None,
        };
        if let Some(name) = lacking.filter(|n| !missing.contains(n)) {
            missing.push(name);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(MissingFromStore {
        dir: cache.dir().to_path_buf(),
        missing,
    })
}

impl SingularityRuntime {
    /// What cases share one SIF: its catalog name, or the image it is built from.
    pub(super) fn sif_key(image: &Image) -> String {
        match &image.sif {
            Some(entry) => entry.name.clone(),
            None => format!("docker://{}", image.name),
        }
    }

    /// The image's SIF, ready. An interruption does not wait for a download (it sees the
    /// interruption too, and what it leaves is resumed next time); a build has a process group
    /// to stop, and is given the time to stop it, so it does not outlive the run.
    pub(super) async fn prepare_sif(&self, image: &Image) -> Result<Ready, PrepareError> {
        let building = image.sif.is_none();
        let what = if building {
            "its SIF was being built; the case did not start".to_string()
        } else {
            "its SIF was downloading; the case did not start".to_string()
        };
        if building && !self.sif_from_docker {
            return Err(PrepareError::Failed(Failure::new(
                SifUnavailable::NotInCatalog {
                    image: image.name.clone(),
                },
            )));
        }
        let started = Instant::now();
        let fetching = self.fetch(image);
        tokio::pin!(fetching);
        let Ok(fetched) = until(&mut fetching, None, &self.cancel).await else {
            if building {
                let _ = tokio::time::timeout(pull::STOP_TIME, &mut fetching).await;
            }
            return Err(PrepareError::Interrupted { what: what.clone() });
        };
        let mut fetched = match fetched {
            Ok(Ok(fetched)) => fetched,
            Ok(Err(e)) if e.is_interrupted() => return Err(PrepareError::Interrupted { what }),
            Ok(Err(e)) => return Err(PrepareError::Failed(Failure::new(e))),
            Err(e) => return Err(PrepareError::Failed(Failure::new(SifUnavailable::Task(e)))),
        };
        // The SIF's md5 keys its caches: the catalog's, else the one recorded when it was
        // built (a case computes it only should that record be missing).
        let md5 = match &image.sif {
            Some(entry) => Some(entry.md5.to_ascii_lowercase()),
            None => std::fs::read_to_string(format!("{}.md5", fetched.path.display()))
                .ok()
                .map(|text| text.trim().to_ascii_lowercase())
                .filter(|text| !text.is_empty()),
        };
        if let Some(in_use) = fetched.in_use.take() {
            self.held
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(fetched.path.clone(), in_use);
        }
        Ok(Ready {
            key: Self::sif_key(image),
            image: image.clone(),
            facts: ImageFacts {
                id: md5,
                sif: Some(fetched.path.clone()),
                runtime_version: Some(self.version.clone()),
                fetched: (!fetched.reused).then(|| Fetched {
                    elapsed: started.elapsed(),
                    bytes: fetched.bytes,
                }),
                versions: None,
            },
            sif: Some(fetched.path),
        })
    }

    /// Removes the ready SIF from the SIF folder once this runner lets go of it, unless another
    /// runner sharing the folder uses it.
    pub(super) async fn remove_sif(&self, ready: &Ready) -> Result<(), PruneError> {
        if let Some(path) = &ready.sif {
            self.held
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(path);
        }
        let name = Self::sif_name(&ready.image);
        let cache = Arc::clone(&self.cache);
        let cancel = self.cancel.clone();
        let removal =
            tokio::task::spawn_blocking(move || cache.remove(&name, &|| cancel.is_cancelled()))
                .await
                .map_err(PruneError::Task)?
                .map_err(PruneError::Failed)?;
        let dir = self.cache.dir().to_path_buf();
        match removal {
            Removal::Removed { .. } | Removal::Gone => Ok(()),
            Removal::InUse => Err(PruneError::InUse { dir }),
            Removal::ReadOnly => Err(PruneError::ReadOnly { dir }),
        }
    }

    /// The SIF's name in the folder: the catalog's, or the one built from the Docker image.
    fn sif_name(image: &Image) -> String {
        match &image.sif {
            Some(entry) => entry.name.clone(),
            None => pull::sif_name(&image.name),
        }
    }

    /// Downloads (or finds) the catalog's SIF, or builds one from the Docker image, on a
    /// blocking thread.
    async fn fetch(
        &self,
        image: &Image,
    ) -> Result<Result<crate::store::sif::Fetched, SifError>, tokio::task::JoinError> {
        let cache = Arc::clone(&self.cache);
        let cancel = self.fetches.cancel().clone();
        // Held until the thread ends, even when this future is dropped (a stage that gave up).
        let running = self.fetches.ticket().await;
        match &image.sif {
            Some(source) => {
                let source = source.clone();
                tokio::task::spawn_blocking(move || {
                    let _running = running;
                    cache.fetch_until(&source, &|| cancel.is_cancelled())
                })
                .await
            }
            None => {
                let bin = self.bin.clone();
                let image = image.name.clone();
                let handle = tokio::runtime::Handle::current();
                tokio::task::spawn_blocking(move || {
                    let _running = running;
                    let budget = cache.download_timeout();
                    cache.build(
                        &pull::sif_name(&image),
                        &|| cancel.is_cancelled(),
                        |target, scratch| {
                            pull::pull(&bin, &image, target, scratch, &handle, &cancel, budget)
                        },
                    )
                })
                .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sif::SifSource;

    fn image(name: &str, sif: Option<&str>) -> Image {
        Image {
            name: name.into(),
            sif: sif.map(|s| SifSource {
                url: format!("https://zenodo.org/{s}.sif"),
                name: s.into(),
                md5: "0".repeat(32),
            }),
        }
    }

    /// The stage shares one slot per key: groups of different images that point at one SIF
    /// share its download and its prune; a built SIF is keyed by the image it comes from.
    #[test]
    fn the_key_is_the_sif_so_groups_that_share_one_share_its_slot() {
        let shared = "kipoi-docker_sharedpy3keras2tf2-slim";
        let a = image("kipoi/kipoi-docker:sharedpy3keras2tf2-slim", Some(shared));
        let b = image("kipoi/kipoi-docker:other-slim", Some(shared));
        assert_eq!(SingularityRuntime::sif_key(&a), shared);
        assert_eq!(
            SingularityRuntime::sif_key(&a),
            SingularityRuntime::sif_key(&b)
        );
        let built = image("local/kipoi-fixture:py3", None);
        assert_eq!(
            SingularityRuntime::sif_key(&built),
            "docker://local/kipoi-fixture:py3"
        );
        assert_eq!(
            SingularityRuntime::sif_name(&built),
            "local_kipoi-fixture_py3"
        );
        assert_eq!(SingularityRuntime::sif_name(&b), shared);
    }
}
