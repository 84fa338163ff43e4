//! The SIF stage: a Singularity case's SIF is made ready (found verified in the SIF cache,
//! downloaded, or built from the Docker image with `--sif-from-docker`) as a step of its own
//! before the case, as the image stage does a Docker pull: once per run per file however many
//! cases share it, with its own progress line, and timed apart from the cases. What it took goes
//! on the cases' records (`pull-seconds`, `pulled-bytes`: properties of their testsuite) and
//! into the run's last lines; a case's own time starts once its SIF is ready.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::sync::OnceCell;

use crate::cancel::{Cancel, Level};
use crate::config::units::{show_duration, show_size};
use crate::select::plan::Case;
use crate::store::sif::{pull, Fetched, SifCache, SifError, SifSource};

/// Why a case has no SIF to run. Shared by every case of the file, hence `Arc`.
#[derive(Debug, Clone, Error)]
pub enum SifUnavailable {
    #[error(
        "the catalog has no SIF for `{model}` (model-to-singularity.json); pass \
         --sif-from-docker to build one from `{image}`"
    )]
    NotInCatalog { model: String, image: String },
    #[error(transparent)]
    Fetch(Arc<SifError>),
    #[error("the SIF fetch task failed")]
    Task(#[source] Arc<tokio::task::JoinError>),
    #[error(
        "the run was interrupted while its SIF was {}; the case did not start",
        if *.building { "being built" } else { "downloading" }
    )]
    Interrupted { building: bool },
}

/// A case's SIF, verified, and what getting it took.
#[derive(Debug, Clone, PartialEq)]
pub struct SifReady {
    pub path: PathBuf,
    /// None when it was in the cache already.
    pub fetched: Option<FetchStats>,
}

/// One SIF this run downloaded or built (or waited for another runner to).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FetchStats {
    pub elapsed: Duration,
    /// Bytes downloaded, or the size of the built SIF.
    pub bytes: u64,
}

type Slot = Arc<OnceCell<Result<SifReady, SifUnavailable>>>;

pub struct SifStage {
    /// The Apptainer binary, for builds.
    bin: PathBuf,
    cache: Arc<SifCache>,
    sif_from_docker: bool,
    cancel: Cancel,
    /// SIF name (or `docker://IMAGE`) -> its SIF, once per run.
    slots: Mutex<HashMap<String, Slot>>,
}

impl SifStage {
    pub fn new(bin: PathBuf, cache: SifCache, sif_from_docker: bool, cancel: Cancel) -> Self {
        SifStage {
            bin,
            cache: Arc::new(cache),
            sif_from_docker,
            cancel,
            slots: Mutex::default(),
        }
    }

    /// The case's SIF, ready. An interruption does not wait for a download (it sees the
    /// interruption too, and what it leaves is resumed next time); a build has a process group
    /// to stop, and is given the time to stop it, so it does not outlive the run.
    pub async fn prepare(&self, case: &Case) -> Result<SifReady, SifUnavailable> {
        let building = case.sif.is_none();
        let fetching = self.ready(case);
        tokio::pin!(fetching);
        let ready = tokio::select! {
            ready = &mut fetching => ready,
            _ = self.cancel.reached(Level::Stop) => {
                if building {
                    let _ = tokio::time::timeout(pull::STOP_TIME, &mut fetching).await;
                }
                return Err(SifUnavailable::Interrupted { building });
            }
        };
        match ready {
            Err(SifUnavailable::Fetch(e)) if e.is_interrupted() => {
                Err(SifUnavailable::Interrupted { building })
            }
            other => other,
        }
    }

    /// Once per run per SIF, however many cases share it.
    async fn ready(&self, case: &Case) -> Result<SifReady, SifUnavailable> {
        let key = match &case.sif {
            Some(entry) => entry.name.clone(),
            None if self.sif_from_docker => format!("docker://{}", case.image),
            None => {
                return Err(SifUnavailable::NotInCatalog {
                    model: case.model.clone(),
                    image: case.image.clone(),
                })
            }
        };
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(slots.entry(key).or_default())
        };
        slot.get_or_init(|| self.fetch(case)).await.clone()
    }

    async fn fetch(&self, case: &Case) -> Result<SifReady, SifUnavailable> {
        let started = Instant::now();
        let cache = Arc::clone(&self.cache);
        let cancel = self.cancel.clone();
        let task = match &case.sif {
            Some(entry) => {
                let source = SifSource {
                    url: entry.url.clone(),
                    name: entry.name.clone(),
                    md5: entry.md5.clone(),
                };
                tokio::task::spawn_blocking(move || {
                    cache.fetch_until(&source, &|| cancel.is_cancelled())
                })
            }
            None => {
                let bin = self.bin.clone();
                let image = case.image.clone();
                let handle = tokio::runtime::Handle::current();
                tokio::task::spawn_blocking(move || {
                    let budget = cache.download_timeout();
                    cache.build(
                        &pull::sif_name(&image),
                        &|| cancel.is_cancelled(),
                        |target| pull::pull(&bin, &image, target, &handle, &cancel, budget),
                    )
                })
            }
        };
        let Fetched {
            path,
            bytes,
            reused,
        } = task
            .await
            .map_err(|e| SifUnavailable::Task(Arc::new(e)))?
            .map_err(|e| SifUnavailable::Fetch(Arc::new(e)))?;
        Ok(SifReady {
            path,
            fetched: (!reused).then(|| FetchStats {
                elapsed: started.elapsed(),
                bytes,
            }),
        })
    }

    /// What this run downloaded or built.
    pub fn totals(&self) -> SifTotals {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let mut totals = SifTotals::default();
        for slot in slots.values() {
            if let Some(Ok(SifReady {
                fetched: Some(stats),
                ..
            })) = slot.get()
            {
                totals.sifs += 1;
                totals.bytes += stats.bytes;
                totals.time += stats.elapsed;
            }
        }
        totals
    }
}

/// SIFs this run fetched, for its last lines.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SifTotals {
    pub sifs: usize,
    pub bytes: u64,
    pub time: Duration,
}

impl SifTotals {
    /// `fetched 1 SIF (2.9 GiB) in 4m10s, not counted in case times`.
    pub fn line(&self) -> Option<String> {
        (self.sifs > 0).then(|| {
            format!(
                "fetched {} SIF{} ({}) in {}, not counted in case times",
                self.sifs,
                if self.sifs == 1 { "" } else { "s" },
                show_size(self.bytes),
                show_duration(self.time)
            )
        })
    }
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

/// Checks that a read-only SIF folder holds the SIF of every case in `cases` (the Singularity
/// cases that will run): the catalog's, or with `sif_from_docker` a built one with its md5
/// record.
pub fn check_read_only_store<'a>(
    cache: &SifCache,
    cases: impl IntoIterator<Item = &'a Case>,
    sif_from_docker: bool,
) -> Result<(), MissingFromStore> {
    let mut missing: Vec<String> = Vec::new();
    for case in cases {
        let lacking = match &case.sif {
            Some(entry) => (!cache.holds(&entry.name, false)).then(|| entry.name.clone()),
            None if sif_from_docker => {
                let name = pull::sif_name(&case.image);
                (!cache.holds(&name, true)).then(|| format!("{name} (built from {})", case.image))
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

/// `pull-seconds` and `pulled-bytes` of a case's SIF, as a Docker case has them for its image:
/// 0 when it was in the cache already. They become properties of the testsuite.
pub fn fetch_facts(ready: &SifReady) -> Vec<(String, String)> {
    let (seconds, bytes) = ready
        .fetched
        .map(|f| (f.elapsed.as_secs_f64(), f.bytes))
        .unwrap_or_default();
    vec![
        ("pull-seconds".to_string(), format!("{seconds:.3}")),
        ("pulled-bytes".to_string(), bytes.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_counts_only_what_was_fetched() {
        assert_eq!(SifTotals::default().line(), None);
        let two = SifTotals {
            sifs: 2,
            bytes: 3 << 20,
            time: Duration::from_secs(75),
        };
        assert_eq!(
            two.line().unwrap(),
            "fetched 2 SIFs (3.0 MiB) in 1m15s, not counted in case times"
        );
        let ready = SifReady {
            path: PathBuf::from("/s/x.sif"),
            fetched: None,
        };
        assert_eq!(
            fetch_facts(&ready),
            [
                ("pull-seconds".to_string(), "0.000".to_string()),
                ("pulled-bytes".to_string(), "0".to_string())
            ]
        );
    }
}
