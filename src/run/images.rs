//! The image stage: a Docker image is made ready (inspected, or pulled from its registry) as a
//! step of its own before its cases, so a pull is timed apart from them. Cases run image by
//! image; while one image's cases run, the next `pull_ahead` images are pulled, and never more
//! (disk is what CI runners lack). With `prune`, an image this run pulled is removed after its
//! last case; an image that was there before the run is never removed. A pull stopped half way
//! (an interruption, or `--fail-fast` ending the run while an image was pulled ahead) is cleaned
//! up too: what the daemon kept of it is removed, so the disk after the run is as before it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::task::JoinHandle;

use crate::cancel::{Cancel, Level};
use crate::config::units::{show_duration, show_size};
use crate::error_chain::chain;
use crate::events;
use crate::runtime::docker::{DockerRuntime, ImageError, ImageReady};
use crate::store::registry::{credentials_for, describe_pull_failure, registry_host, HelperRun};

/// The most images pulled ahead of the running one.
pub const MAX_PULL_AHEAD: usize = 16;

#[derive(Default)]
struct Slot {
    ready: OnceCell<Result<ImageReady, ImageError>>,
    /// Cases of this image still to end; at zero the image may be pruned.
    remaining: AtomicUsize,
    /// Its first case has asked for it: from then on it no longer counts as pulled ahead.
    started: AtomicBool,
    pruned: AtomicBool,
    /// The daemon did not have it when it was first asked for: a pull of this run may have
    /// brought (some of) it in.
    absent: AtomicBool,
}

/// Pulls this run made, for the final line and the summary.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PullTotals {
    pub images: usize,
    pub bytes: u64,
    pub time: Duration,
}

pub struct ImageStage {
    docker: Arc<DockerRuntime>,
    /// Where pulls ahead and prunes run (case ends are told from libtest's threads).
    handle: tokio::runtime::Handle,
    cancel: Cancel,
    /// Images in the order their cases run.
    order: Vec<String>,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    pull_ahead: usize,
    prune: bool,
    /// Pulls started ahead of their cases.
    ahead: Mutex<Vec<JoinHandle<()>>>,
    /// Removals of pruned images.
    prunes: Mutex<Vec<JoinHandle<()>>>,
    /// With `prune`: the ids of the images the daemon had before this run's first pull (`None`
    /// when they could not be listed), so that cleaning up never touches one of them.
    before: OnceCell<Option<HashSet<String>>>,
    /// How credential helpers run (deadline, the run's cancel).
    helpers: HelperRun,
    /// Held (shared) by each credential lookup in flight, which runs on a blocking thread and
    /// outlives a `prepare` given up on: `finish` takes it whole, so no helper outlives the run.
    lookups: Arc<tokio::sync::RwLock<()>>,
}

impl ImageStage {
    /// `images` holds one entry per case that will run, in run order (an image once per case).
    pub fn new(
        docker: Arc<DockerRuntime>,
        handle: tokio::runtime::Handle,
        cancel: Cancel,
        images: &[&str],
        pull_ahead: usize,
        prune: bool,
        helper_timeout: Duration,
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
        let helpers = HelperRun {
            timeout: helper_timeout,
            cancel: cancel.clone(),
        };
        Arc::new(ImageStage {
            docker,
            handle,
            cancel,
            order,
            slots: Mutex::new(slots),
            pull_ahead,
            prune,
            ahead: Mutex::default(),
            prunes: Mutex::default(),
            before: OnceCell::new(),
            helpers,
            lookups: Arc::default(),
        })
    }

    fn slot(&self, image: &str) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(slots.entry(image.to_string()).or_default())
    }

    /// The image, ready: pulled now unless it was there or pulled ahead. Starts pulling the next
    /// images ahead. An interruption does not wait for a pull.
    pub async fn prepare(self: &Arc<Self>, image: &str) -> Result<ImageReady, ImageError> {
        let slot = self.slot(image);
        slot.started.store(true, Ordering::SeqCst);
        self.pull_ahead_of(image);
        tokio::select! {
            ready = slot.ready.get_or_init(|| self.fetch(image)) => ready.clone(),
            _ = self.cancel.reached(Level::Stop) => Err(ImageError::Interrupted {
                image: image.to_string(),
            }),
        }
    }

    async fn fetch(&self, image: &str) -> Result<ImageReady, ImageError> {
        if let Some(id) = self.docker.image_id(image).await? {
            return Ok(ImageReady { id, pulled: None });
        }
        let registry = registry_host(image);
        // Read the way the docker CLI reads them; a credential helper may take its time.
        let owned = image.to_string();
        let helpers = self.helpers.clone();
        let lookup = Arc::clone(&self.lookups).read_owned().await;
        let credentials = tokio::task::spawn_blocking(move || {
            let _lookup = lookup;
            credentials_for(&owned, &helpers)
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|found| found.map_err(|e| chain(&e)))
        .map_err(|reason| ImageError::Credentials {
            image: image.to_string(),
            registry: registry.clone(),
            reason,
        })?;
        let sent = credentials.is_some();
        if self.prune {
            // Before the first pull, so that a pull stopped half way can be told from what
            // was there.
            self.before
                .get_or_init(|| async { self.docker.image_ids().await.ok() })
                .await;
        }
        self.slot(image).absent.store(true, Ordering::SeqCst);
        match self.docker.pull_image(image, credentials).await {
            Err(ImageError::Pull { image, reason }) => Err(ImageError::Registry(
                describe_pull_failure(&image, &registry, sent, &reason).to_string(),
            )),
            other => other,
        }
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
                tokio::select! {
                    _ = slot.ready.get_or_init(|| me.fetch(&next)) => {}
                    _ = me.cancel.reached(Level::Stop) => {}
                }
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
        let pulled_here = matches!(
            slot.ready.get(),
            Some(Ok(ImageReady {
                pulled: Some(_),
                ..
            }))
        );
        if !pulled_here || slot.pruned.swap(true, Ordering::SeqCst) {
            return;
        }
        let docker = Arc::clone(&self.docker);
        let image = image.to_string();
        let task = self.handle.spawn(async move {
            match docker.remove_image(&image).await {
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
    /// run pulled is removed, also those pulled ahead for cases that never ran, and what the
    /// daemon kept of a pull that was stopped.
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
        // A credential helper still running (its case gave up on it when the run was
        // interrupted) is stopped by then; its end is waited for.
        let _no_lookups = self.lookups.write().await;
        if self.prune {
            self.clean_stopped_pulls().await;
        }
    }

    /// Removes what the daemon kept of the pulls this run began but did not finish (stopped, or
    /// failed): an image it finished all the same after the runner let go of the pull, and
    /// dangling images of its repository; never an image the daemon had before the run.
    async fn clean_stopped_pulls(&self) {
        let before = self.before.get().and_then(Option::as_ref);
        for image in &self.order {
            let slot = self.slot(image);
            let finished = matches!(slot.ready.get(), Some(Ok(_)));
            if !slot.absent.load(Ordering::SeqCst) || finished {
                continue;
            }
            for line in self.docker.remove_stopped_pull(image, before).await {
                let line = line.unwrap_or_else(|why| why);
                events::note(format!("--prune-images: {line}"));
            }
        }
    }

    /// What this run pulled.
    pub fn totals(&self) -> PullTotals {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let mut totals = PullTotals::default();
        for slot in slots.values() {
            if let Some(Ok(ImageReady {
                pulled: Some(stats),
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
