//! The image stage: a Docker image is made ready (inspected, or pulled from its registry) as a
//! step of its own before its cases, so a pull is timed apart from them. Cases run image by
//! image; while one image's cases run, the next `pull_ahead` images are pulled, and never more
//! (disk is what CI runners lack). With `prune`, an image this run pulled is removed after its
//! last case; an image that was there before the run is never removed. A pull stopped half way
//! (an interruption, or `--fail-fast` ending the run while an image was pulled ahead) is cleaned
//! up too: what the daemon kept of it is removed, so the disk after the run is as before it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::task::JoinHandle;

use crate::config::units::{show_duration, show_size};
use crate::events;
use crate::runtime::{Image, PrepareError, Ready, Runtime};

/// The most images pulled ahead of the running one.
pub const MAX_PULL_AHEAD: usize = 16;

#[derive(Default)]
struct Slot {
    ready: OnceCell<Result<Ready, PrepareError>>,
    /// Cases of this image still to end; at zero the image may be pruned.
    remaining: AtomicUsize,
    /// Its first case has asked for it: from then on it no longer counts as pulled ahead.
    started: AtomicBool,
    pruned: AtomicBool,
}

/// Pulls this run made, for the final line and the summary.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PullTotals {
    pub images: usize,
    pub bytes: u64,
    pub time: Duration,
}

pub struct ImageStage {
    docker: Arc<dyn Runtime>,
    /// Where pulls ahead and prunes run (case ends are told from libtest's threads).
    handle: tokio::runtime::Handle,
    /// Images in the order their cases run.
    order: Vec<String>,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    pull_ahead: usize,
    prune: bool,
    /// Pulls started ahead of their cases.
    ahead: Mutex<Vec<JoinHandle<()>>>,
    /// Removals of pruned images.
    prunes: Mutex<Vec<JoinHandle<()>>>,
}

impl ImageStage {
    /// `images` holds one entry per case that will run, in run order (an image once per case).
    pub fn new(
        docker: Arc<dyn Runtime>,
        handle: tokio::runtime::Handle,
        images: &[&str],
        pull_ahead: usize,
        prune: bool,
    ) -> Arc<Self> {
        let mut order: Vec<String> = Vec::new();
        let mut slots: HashMap<String, Arc<Slot>> = HashMap::new();
        for &image in images {
            let slot = slots.entry(image.to_string()).or_insert_with(|| {
                order.push(image.to_string());
                Arc::default()
            });
            slot.remaining.fetch_add(1, Ordering::SeqCst);
        }
        Arc::new(ImageStage {
            docker,
            handle,
            order,
            slots: Mutex::new(slots),
            pull_ahead,
            prune,
            ahead: Mutex::default(),
            prunes: Mutex::default(),
        })
    }

    fn slot(&self, image: &str) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(slots.entry(image.to_string()).or_default())
    }

    /// The image, ready: pulled now unless it was there or pulled ahead. Starts pulling the next
    /// images ahead. An interruption does not wait for a pull (the runtime sees it).
    pub async fn prepare(self: &Arc<Self>, image: &str) -> Result<Ready, PrepareError> {
        let slot = self.slot(image);
        slot.started.store(true, Ordering::SeqCst);
        self.pull_ahead_of(image);
        let image = docker_image(image);
        slot.ready
            .get_or_init(|| self.docker.prepare(&image))
            .await
            .clone()
    }

    /// Starts the pulls of the next `pull_ahead` images after `image` that no case asked for yet.
    fn pull_ahead_of(self: &Arc<Self>, image: &str) {
        let Some(at) = self.order.iter().position(|i| i == image) else {
            return;
        };
        for next in self.order.iter().skip(at + 1).take(self.pull_ahead) {
            let slot = self.slot(next);
            if slot.started.load(Ordering::SeqCst) || slot.ready.initialized() {
                continue;
            }
            let me = Arc::clone(self);
            let next = next.clone();
            let task = self.handle.spawn(async move {
                let slot = me.slot(&next);
                let image = docker_image(&next);
                slot.ready.get_or_init(|| me.docker.prepare(&image)).await;
            });
            self.ahead
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(task);
        }
    }

    /// One case of `image` has ended (run or not); after its last, a pulled image is pruned.
    pub fn case_done(self: &Arc<Self>, image: &str) {
        let slot = self.slot(image);
        let before = slot
            .remaining
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if before == Ok(1) {
            self.prune_later(image);
        }
    }

    fn prune_later(self: &Arc<Self>, image: &str) {
        if !self.prune {
            return;
        }
        let slot = self.slot(image);
        let ready = match slot.ready.get() {
            Some(Ok(ready)) if ready.facts.fetched.is_some() => ready.clone(),
            _ => return,
        };
        if slot.pruned.swap(true, Ordering::SeqCst) {
            return;
        }
        let docker = Arc::clone(&self.docker);
        let image = image.to_string();
        let task = self.handle.spawn(async move {
            match docker.remove(&ready).await {
                Ok(()) => events::note(format!(
                    "--prune-images: removed {image} (this run pulled it)"
                )),
                Err(why) => {
                    events::note(format!("--prune-images: could not remove {image}: {why}"))
                }
            }
        });
        self.prunes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task);
    }

    /// Ends the stage: pulls still going ahead are stopped, and with `prune` every image this
    /// run pulled is removed, also those pulled ahead for cases that never ran (what the daemon
    /// kept of a pull that was stopped is the runtime's `finish`).
    pub async fn finish(self: &Arc<Self>) {
        // Every case has ended: a pull still going ahead is for cases that will not run.
        let ahead = std::mem::take(&mut *self.ahead.lock().unwrap_or_else(|p| p.into_inner()));
        for task in ahead {
            task.abort();
            let _ = task.await;
        }
        if self.prune {
            for image in self.order.clone() {
                self.prune_later(&image);
            }
        }
        let prunes = std::mem::take(&mut *self.prunes.lock().unwrap_or_else(|p| p.into_inner()));
        for task in prunes {
            let _ = task.await;
        }
    }

    /// What this run pulled.
    pub fn totals(&self) -> PullTotals {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let mut totals = PullTotals::default();
        for slot in slots.values() {
            if let Some(Ok(Ready {
                facts:
                    crate::record::facts::ImageFacts {
                        fetched: Some(stats),
                        ..
                    },
                ..
            })) = slot.ready.get()
            {
                totals.images += 1;
                totals.bytes += stats.bytes;
                totals.time += stats.elapsed;
            }
        }
        totals
    }
}

impl PullTotals {
    /// `pulled 2 images (1.2 GiB) in 3m12s, not counted in case times`.
    pub fn line(&self) -> Option<String> {
        (self.images > 0).then(|| {
            format!(
                "pulled {} image{} ({}) in {}, not counted in case times",
                self.images,
                if self.images == 1 { "" } else { "s" },
                show_size(self.bytes),
                show_duration(self.time)
            )
        })
    }
}

/// A Docker image as the runtime takes it.
fn docker_image(name: &str) -> Image {
    Image {
        name: name.to_string(),
        sif: None,
    }
}
