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
use crate::store::sif::{pull, SifCache, SifError};
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
        let fetched = match fetched {
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

    /// Downloads (or finds) the catalog's SIF, or builds one from the Docker image, on a
    /// blocking thread.
    async fn fetch(
        &self,
        image: &Image,
    ) -> Result<Result<crate::store::sif::Fetched, SifError>, tokio::task::JoinError> {
        let cache = Arc::clone(&self.cache);
        let cancel = self.cancel.clone();
        match &image.sif {
            Some(source) => {
                let source = source.clone();
                tokio::task::spawn_blocking(move || {
                    cache.fetch_until(&source, &|| cancel.is_cancelled())
                })
                .await
            }
            None => {
                let bin = self.bin.clone();
                let image = image.name.clone();
                let handle = tokio::runtime::Handle::current();
                tokio::task::spawn_blocking(move || {
                    let budget = cache.download_timeout();
                    cache.build(
                        &pull::sif_name(&image),
                        &|| cancel.is_cancelled(),
                        |target| pull::pull(&bin, &image, target, &handle, &cancel, budget),
                    )
                })
                .await
            }
        }
    }
}
