//! The SIF stage: a Singularity case's SIF is made ready by the runtime (found verified in the
//! SIF cache, downloaded, or built from the Docker image with `--sif-from-docker`) as a step of
//! its own before the case, as the image stage does a Docker pull: once per run per file however
//! many cases share it, with its own progress line, and timed apart from the cases. What it took
//! goes on the cases' records (`pull-seconds`, `pulled-bytes`: properties of their testsuite)
//! and into the run's last lines; a case's own time starts once its SIF is ready.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;

use crate::config::units::{show_duration, show_size};
use crate::runtime::{Image, PrepareError, Ready, Runtime};

type Slot = Arc<OnceCell<Result<Ready, PrepareError>>>;

pub struct SifStage {
    runtime: Arc<dyn Runtime>,
    /// The runtime's key of a SIF -> its SIF, once per run.
    slots: Mutex<HashMap<String, Slot>>,
}

impl SifStage {
    pub fn new(runtime: Arc<dyn Runtime>) -> Self {
        SifStage {
            runtime,
            slots: Mutex::default(),
        }
    }

    /// The image's SIF, ready; once per run per SIF, however many cases share it.
    pub async fn prepare(&self, image: &Image) -> Result<Ready, PrepareError> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(slots.entry(self.runtime.key(image)).or_default())
        };
        slot.get_or_init(|| self.runtime.prepare(image))
            .await
            .clone()
    }

    /// What this run downloaded or built.
    pub fn totals(&self) -> SifTotals {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let mut totals = SifTotals::default();
        for slot in slots.values() {
            if let Some(Ok(ready)) = slot.get() {
                if let Some(fetched) = ready.facts.fetched {
                    totals.sifs += 1;
                    totals.bytes += fetched.bytes;
                    totals.time += fetched.elapsed;
                }
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
    }
}
