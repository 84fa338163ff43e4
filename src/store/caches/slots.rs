//! Slots: every cache of an image is kept in up to as many replicas ("slots") as cases of that
//! image may run at once (the run's `--test-threads`). A case takes one slot for all its cache
//! paths, by locking each path's replica of that slot, and holds it until it ends: cases of one
//! image run side by side, each writing its own replica, and no two cases ever write one
//! replica at the same moment (the models write their caches in place: git's `index.lock`,
//! keras' `get_file`).
//!
//! Which slot: the case's home ([`super::homes`], where its data is) when it is free, else the
//! first free one; when every slot is busy (another runner sharing the cache folder), it waits
//! for whichever frees first. An offline run waits for the home itself: the data is there and
//! nowhere else.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::lock::CacheLock;
use super::CacheError;
use crate::cancel::Cancel;
use crate::store::lock::{self, Holder};

/// How often a waiting case tries the slots again.
const POLL: Duration = Duration::from_millis(100);

/// What a case asks of its image's slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    /// The slot it last ran in, if any.
    pub home: Option<usize>,
    /// How many slots there are to take from (the run's threads).
    pub count: usize,
    /// Only the home will do (an offline run: the data is nowhere else).
    pub only_home: bool,
}

impl Want {
    /// The slots to try, in order: the home first, then the others from the first. A home
    /// beyond `count` (made by a run with more threads) is still tried: its data is there.
    pub fn order(&self) -> Vec<usize> {
        if let (true, Some(home)) = (self.only_home, self.home) {
            return vec![home];
        }
        let mut order: Vec<usize> = self.home.into_iter().collect();
        order.extend((0..self.count.max(1)).filter(|s| Some(*s) != self.home));
        order
    }
}

/// A slot taken: its number, its locks (one per cache path), and how long the case waited.
#[derive(Debug)]
pub struct Taken {
    pub slot: usize,
    pub locks: Vec<CacheLock>,
    pub waited: Duration,
}

/// Takes a slot as `want` says. `locks_of(slot)` are the lock files of that slot's replicas
/// (taken in that order, all or none); `what(slots)` names the cache waited for in messages.
/// Waits as long as it takes (each case waited for has its own timeout) and gives up when the
/// run is interrupted.
pub async fn take(
    want: &Want,
    locks_of: &(dyn Fn(usize) -> Vec<PathBuf> + Sync),
    what: &(dyn Fn(&[usize]) -> String + Sync),
    cancel: &Cancel,
) -> Result<Taken, CacheError> {
    let order = want.order();
    let started = Instant::now();
    let mut said = false;
    loop {
        let mut first_holder = None;
        for &slot in &order {
            match try_slot(&locks_of(slot))? {
                Ok(locks) => {
                    return Ok(Taken {
                        slot,
                        locks,
                        waited: started.elapsed(),
                    })
                }
                Err(holder) => {
                    first_holder.get_or_insert(holder);
                }
            }
        }
        if cancel.is_cancelled() {
            return Err(CacheError::Interrupted { what: what(&order) });
        }
        if !said {
            said = true;
            let holder = first_holder.unwrap_or(Holder::Unknown);
            crate::events::note(format!(
                "waiting for {holder} to finish with the cache {}",
                what(&order)
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Takes every lock of one slot, or none: who holds the first that is taken.
fn try_slot(paths: &[PathBuf]) -> Result<Result<Vec<CacheLock>, Holder>, CacheError> {
    let mut locks = Vec::with_capacity(paths.len());
    for path in paths {
        match lock::try_or_holder(path)? {
            Ok(lock) => locks.push(lock),
            // The ones taken are released as `locks` drops.
            Err(holder) => return Ok(Err(holder)),
        }
    }
    Ok(Ok(locks))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_home_comes_first_and_offline_waits_for_it_alone() {
        let want = |home, count, only_home| Want {
            home,
            count,
            only_home,
        };
        assert_eq!(want(None, 3, false).order(), [0, 1, 2]);
        assert_eq!(want(Some(1), 3, false).order(), [1, 0, 2]);
        assert_eq!(want(Some(4), 2, false).order(), [4, 0, 1]);
        assert_eq!(want(Some(2), 3, true).order(), [2]);
        // Offline but never ran: any slot.
        assert_eq!(want(None, 2, true).order(), [0, 1]);
        assert_eq!(want(None, 0, false).order(), [0]);
    }

    fn paths(dir: &std::path::Path) -> impl Fn(usize) -> Vec<PathBuf> + '_ {
        move |slot| {
            vec![
                dir.join(format!("a{slot}.lock")),
                dir.join(format!("b{slot}.lock")),
            ]
        }
    }

    #[tokio::test]
    async fn a_busy_home_gives_the_next_free_slot_and_a_slot_is_taken_whole() {
        let dir = tempfile::tempdir().unwrap();
        let locks_of = paths(dir.path());
        let what = |slots: &[usize]| format!("{slots:?}");
        let cancel = Cancel::new();
        let want = Want {
            home: Some(1),
            count: 3,
            only_home: false,
        };
        let home = take(&want, &locks_of, &what, &cancel).await.unwrap();
        assert_eq!((home.slot, home.locks.len()), (1, 2));
        // Slot 0 is half held (one of its paths): not taken, and not left half held.
        let half = lock::try_acquire(&dir.path().join("b0.lock"))
            .unwrap()
            .unwrap();
        let next = take(&want, &locks_of, &what, &cancel).await.unwrap();
        assert_eq!(next.slot, 2);
        assert!(lock::try_acquire(&dir.path().join("a0.lock"))
            .unwrap()
            .is_some());
        drop(half);
        let last = take(&want, &locks_of, &what, &cancel).await.unwrap();
        assert_eq!(last.slot, 0);
    }

    #[tokio::test]
    async fn every_slot_busy_waits_for_the_first_freed_and_stops_on_interruption() {
        let dir = tempfile::tempdir().unwrap();
        let locks_of = paths(dir.path());
        let what = |slots: &[usize]| format!("slots {slots:?}");
        let cancel = Cancel::new();
        let want = Want {
            home: None,
            count: 2,
            only_home: false,
        };
        let a = take(&want, &locks_of, &what, &cancel).await.unwrap();
        let b = take(&want, &locks_of, &what, &cancel).await.unwrap();
        assert_eq!((a.slot, b.slot), (0, 1));
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(b);
        });
        let c = take(&want, &locks_of, &what, &cancel).await.unwrap();
        assert_eq!(c.slot, 1);
        assert!(c.waited >= Duration::from_millis(200), "{:?}", c.waited);
        release.await.unwrap();

        // Offline, the home alone: a free slot 1 does not do for a model whose data is in 0.
        let offline = Want {
            home: Some(0),
            count: 2,
            only_home: true,
        };
        drop(c);
        cancel.raise(libc::SIGINT);
        let err = take(&offline, &locks_of, &what, &cancel).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "interrupted while waiting for the lock of the cache slots [0]"
        );
        drop(a);
    }
}
