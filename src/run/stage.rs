//! The image stage, for any runtime: an image (a Docker image, a SIF) is made ready as a step of
//! its own before its first case, so a pull or a download is timed apart from the cases. Cases
//! run image by image; while one image's cases run, the next `pull_ahead` images are made ready,
//! and never more (disk is what CI runners lack). With `prune`, an image this run fetched is
//! removed after its last case (and at the end, any fetched ahead for cases that never ran); an
//! image that was there before the run is never removed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::task::JoinHandle;

use crate::cancel::Cancel;
use crate::config::units::{show_duration, show_size};
use crate::events;
use crate::runtime::{Image, PrepareError, Ready, Runtime};

/// The most images made ready ahead of the running one.
pub const MAX_PULL_AHEAD: usize = 16;

#[derive(Default)]
struct Slot {
    image: Option<Image>,
    ready: OnceCell<Result<Ready, PrepareError>>,
    /// Cases of this image still to end; at zero the image may be pruned.
    remaining: AtomicUsize,
    /// Its first case has asked for it: from then on it no longer counts as fetched ahead.
    started: AtomicBool,
    pruned: AtomicBool,
}

/// What the stage fetched in this run, for the run's last lines.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    pub count: usize,
    pub bytes: u64,
    pub time: Duration,
}

pub struct Stage {
    runtime: Arc<dyn Runtime>,
    cancel: Cancel,
    /// Keys in the order their cases run.
    order: Vec<String>,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    pull_ahead: usize,
    prune: bool,
    /// Images being made ready ahead of their cases.
    ahead: Mutex<Vec<JoinHandle<()>>>,
    /// Removals of pruned images.
    prunes: Mutex<Vec<JoinHandle<()>>>,
}

impl Stage {
    /// `images` holds one entry per case that will run, in run order (an image once per case).
    /// It prunes when the runtime was asked to ([`Runtime::prunes`]).
    pub fn new(
        runtime: Arc<dyn Runtime>,
        cancel: Cancel,
        images: &[Image],
        pull_ahead: usize,
    ) -> Arc<Stage> {
        let prune = runtime.prunes();
        let mut order: Vec<String> = Vec::new();
        let mut slots: HashMap<String, Arc<Slot>> = HashMap::new();
        for image in images {
            let key = runtime.key(image);
            let slot = slots.entry(key.clone()).or_insert_with(|| {
                order.push(key);
                Arc::new(Slot {
                    image: Some(image.clone()),
                    ..Slot::default()
                })
            });
            slot.remaining.fetch_add(1, Ordering::SeqCst);
        }
        Arc::new(Stage {
            runtime,
            cancel,
            order,
            slots: Mutex::new(slots),
            pull_ahead,
            prune,
            ahead: Mutex::default(),
            prunes: Mutex::default(),
        })
    }

    pub fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.runtime
    }

    fn slot(&self, key: &str) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(slots.entry(key.to_string()).or_default())
    }

    /// The image, ready: made ready now unless it was ready before or made ready ahead. Starts
    /// making the next images ready ahead. The runtime ends its `prepare` on an interruption
    /// itself (a pull at once; a SIF build once its process group is stopped), and every case
    /// waiting for that image then hears of it.
    pub async fn prepare(self: &Arc<Self>, image: &Image) -> Result<Ready, PrepareError> {
        let key = self.runtime.key(image);
        let slot = self.slot(&key);
        slot.started.store(true, Ordering::SeqCst);
        if self.cancel.is_cancelled() && !slot.ready.initialized() {
            return Err(PrepareError::Interrupted {
                what: self.runtime.interrupted_while(image),
            });
        }
        self.ahead_of(&key);
        slot.ready
            .get_or_init(|| self.runtime.prepare(image))
            .await
            .clone()
    }

    /// Starts making ready the next `pull_ahead` images after `key` that no case asked for yet.
    fn ahead_of(self: &Arc<Self>, key: &str) {
        let Some(at) = self.order.iter().position(|k| k == key) else {
            return;
        };
        for next in self.order.iter().skip(at + 1).take(self.pull_ahead) {
            let slot = self.slot(next);
            let Some(image) = slot.image.clone() else {
                continue;
            };
            if slot.started.load(Ordering::SeqCst) || slot.ready.initialized() {
                continue;
            }
            let me = Arc::clone(self);
            let task = tokio::spawn(async move {
                slot.ready.get_or_init(|| me.runtime.prepare(&image)).await;
            });
            self.ahead
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(task);
        }
    }

    /// One case of `image` has ended (run or not); after its last, an image this run fetched
    /// is pruned.
    pub fn case_done(self: &Arc<Self>, image: &Image) {
        let key = self.runtime.key(image);
        let slot = self.slot(&key);
        let before = slot
            .remaining
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if before == Ok(1) {
            self.prune_later(&key);
        }
    }

    fn prune_later(self: &Arc<Self>, key: &str) {
        if !self.prune {
            return;
        }
        let slot = self.slot(key);
        let Some(Ok(ready)) = slot.ready.get() else {
            return;
        };
        if ready.facts.fetched.is_none() || slot.pruned.swap(true, Ordering::SeqCst) {
            return;
        }
        let ready = ready.clone();
        let runtime = Arc::clone(&self.runtime);
        let flag = self.runtime.words().prune_flag;
        let task = tokio::spawn(async move {
            match runtime.remove(&ready).await {
                Ok(()) => events::note(format!(
                    "{flag}: removed {} (this run fetched it)",
                    ready.key
                )),
                Err(why) => events::note(format!("{flag}: could not remove {}: {why}", ready.key)),
            }
        });
        self.prunes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task);
    }

    /// Ends the stage: what is still being made ready ahead is stopped, and with `prune` every
    /// image this run fetched is removed, also those fetched ahead for cases that never ran.
    pub async fn finish(self: &Arc<Self>) {
        // Every case has ended: what is still made ready ahead is for cases that will not run.
        let ahead = std::mem::take(&mut *self.ahead.lock().unwrap_or_else(|p| p.into_inner()));
        for task in ahead {
            task.abort();
            let _ = task.await;
        }
        if self.prune {
            for key in self.order.clone() {
                self.prune_later(&key);
            }
        }
        let prunes = std::mem::take(&mut *self.prunes.lock().unwrap_or_else(|p| p.into_inner()));
        for task in prunes {
            let _ = task.await;
        }
    }

    /// What this run fetched.
    pub fn totals(&self) -> Totals {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let mut totals = Totals::default();
        for slot in slots.values() {
            if let Some(Ok(Ready { facts, .. })) = slot.ready.get() {
                if let Some(fetched) = facts.fetched {
                    totals.count += 1;
                    totals.bytes += fetched.bytes;
                    totals.time += fetched.elapsed;
                }
            }
        }
        totals
    }

    /// `pulled 2 images (1.2 GiB) in 3m12s, not counted in case times`, when it fetched any.
    pub fn totals_line(&self) -> Option<String> {
        let totals = self.totals();
        let words = self.runtime.words();
        let (verb, noun) = (words.fetched, words.noun);
        (totals.count > 0).then(|| {
            format!(
                "{verb} {} {noun}{} ({}) in {}, not counted in case times",
                totals.count,
                if totals.count == 1 { "" } else { "s" },
                show_size(totals.bytes),
                show_duration(totals.time)
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::standin::{Asked, StandIn};
    use crate::runtime::DOCKER;

    fn image(name: &str) -> Image {
        Image {
            name: name.into(),
            sif: None,
        }
    }

    fn stage(standin: &Arc<StandIn>, images: &[&str], ahead: usize) -> Arc<Stage> {
        let images: Vec<Image> = images.iter().map(|i| image(i)).collect();
        Stage::new(
            Arc::clone(standin) as Arc<dyn Runtime>,
            Cancel::new(),
            &images,
            ahead,
        )
    }

    #[tokio::test]
    async fn the_next_images_are_made_ready_ahead_and_never_more() {
        let standin = Arc::new(StandIn::new(DOCKER));
        let s = stage(&standin, &["a", "b", "c", "d"], 1);
        s.prepare(&image("a")).await.unwrap();
        s.finish().await;
        let prepares: Vec<Asked> = standin.asked();
        assert!(prepares.contains(&Asked::Prepare("a".into())));
        assert!(
            !prepares.contains(&Asked::Prepare("c".into())),
            "{prepares:?}"
        );
        assert!(
            !prepares.contains(&Asked::Prepare("d".into())),
            "{prepares:?}"
        );
    }

    #[tokio::test]
    async fn a_fetched_image_is_pruned_after_its_last_case_only() {
        let mut standin = StandIn::new(DOCKER);
        standin.fetches = true;
        standin.prunes = true;
        let standin = Arc::new(standin);
        let s = stage(&standin, &["a", "a", "b"], 0);
        s.prepare(&image("a")).await.unwrap();
        s.case_done(&image("a"));
        tokio::task::yield_now().await;
        assert!(!standin.asked().contains(&Asked::Remove("a".into())));
        s.case_done(&image("a"));
        // `b` never ran: the stage's end removes nothing of it (it fetched nothing).
        s.finish().await;
        let asked = standin.asked();
        assert!(asked.contains(&Asked::Remove("a".into())), "{asked:?}");
        assert!(!asked.contains(&Asked::Remove("b".into())), "{asked:?}");
        assert_eq!(s.totals().count, 1);
        assert!(s
            .totals_line()
            .unwrap()
            .contains("not counted in case times"));
    }

    #[tokio::test]
    async fn images_that_share_a_key_are_made_ready_once_and_pruned_after_the_last_case() {
        // Nine Kipoi groups point at one SIF: their images share the runtime's key.
        let mut standin = StandIn::new(DOCKER);
        standin.fetches = true;
        standin.prunes = true;
        standin.keys = ["g1", "g2", "g3"]
            .iter()
            .map(|g| (g.to_string(), "shared.sif".to_string()))
            .collect();
        let standin = Arc::new(standin);
        let s = stage(&standin, &["g1", "g2", "g2", "g3"], 1);
        for (i, group) in ["g1", "g2", "g2", "g3"].iter().enumerate() {
            let ready = s.prepare(&image(group)).await.unwrap();
            assert_eq!(ready.key, "shared.sif");
            s.case_done(&image(group));
            tokio::task::yield_now().await;
            let removed = standin
                .asked()
                .contains(&Asked::Remove("shared.sif".into()));
            assert_eq!(removed, i == 3, "after case {i}: {:?}", standin.asked());
        }
        s.finish().await;
        let asked = standin.asked();
        let prepares = asked
            .iter()
            .filter(|a| matches!(a, Asked::Prepare(_)))
            .count();
        let removes = asked
            .iter()
            .filter(|a| matches!(a, Asked::Remove(_)))
            .count();
        assert_eq!((prepares, removes), (1, 1), "{asked:?}");
        assert_eq!(s.totals().count, 1);
    }

    #[tokio::test]
    async fn an_image_that_was_there_is_never_pruned() {
        let mut standin = StandIn::new(DOCKER);
        standin.prunes = true;
        let standin = Arc::new(standin);
        let s = stage(&standin, &["a"], 0);
        s.prepare(&image("a")).await.unwrap();
        s.case_done(&image("a"));
        s.finish().await;
        assert!(!standin.asked().contains(&Asked::Remove("a".into())));
        assert_eq!(s.totals_line(), None);
    }
}
