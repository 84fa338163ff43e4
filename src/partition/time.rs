//! `--partition time:M/N`: shards of about equal running time, each image's cases together.
//!
//! Every job pulls each image it touches, and pulls of multi-GB images dominate real runs, so an
//! image's cases stay in one shard, unless the image alone holds more than a fair share (the
//! total over N): such an image cannot fit in one shard anyway, and its cases fill the others
//! up. In two steps:
//! 1. The images within a fair share go whole, heaviest first. When no image is larger, each
//!    goes to the lightest shard, and then images are moved or swapped between the longest and
//!    the shortest shard while that shortens the longest. Otherwise they are packed tight (each
//!    into the first shard it fits in under a fair share), so that the larger images keep whole
//!    shards to themselves.
//! 2. The larger images, heaviest first, are poured into the shards with the most room, up to
//!    the water level (the load every shard reaches when the rest is poured in evenly): each
//!    shard's room is taken by the largest case that still fits, so a shard boundary splits one
//!    image at a time. A case that fits nowhere goes, heaviest first, to a shard that holds its
//!    image if that stays within 1% over the level, else to the lightest shard.
//!
//! The aim is the longest shard within 5% of the mean. When whole images cannot meet it (three
//! images of 45%, 32% and 23% over two shards), the heaviest image within a fair share is
//! split too, then the next, until the aim is met (at most 32 more), else the best is kept.
//!
//! Weights are whole milliseconds and ties are broken by image name and case order, so the same
//! inputs give the same shards on every machine.

use std::collections::BTreeMap;

/// One case to place: its image and its weight (expected running time, in ms).
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    pub image: &'a str,
    pub weight: u64,
}

/// The aim: the longest shard at most 5% over the mean.
pub const TARGET_PERCENT: u128 = 105;
/// How many images within a fair share may be split to meet the aim.
const MAX_EXTRA_SPLITS: usize = 32;

/// A case not placed yet.
const UNPLACED: usize = usize::MAX;

/// An image: its name, its weight and its items.
type Image<'a> = (&'a str, u128, Vec<usize>);

/// The shard (0-based, below `shards`) of each item, in the items' order.
pub fn assign(items: &[Item<'_>], shards: usize) -> Vec<usize> {
    let n = shards.max(1);
    let images = images_of(items);
    let total: u128 = images.iter().map(|i| i.1).sum();
    // A fair share is total/n; comparing w*n with total avoids rounding.
    let must_split = images.iter().filter(|i| i.1 * n as u128 > total).count();
    let mut best: Option<(u128, Vec<usize>)> = None;
    let extra_max = MAX_EXTRA_SPLITS.min(images.len() - must_split);
    for extra in 0..=extra_max {
        let shard_of = assign_splitting(items, &images, n, must_split + extra);
        let longest = loads_of(items, &shard_of, n).into_iter().max().unwrap_or(0);
        if longest * n as u128 * 100 <= total * TARGET_PERCENT {
            return shard_of;
        }
        if best.as_ref().is_none_or(|(b, _)| longest < *b) {
            best = Some((longest, shard_of));
        }
    }
    best.map(|(_, s)| s).unwrap_or_else(|| vec![0; items.len()])
}

/// The images, heaviest first (ties by name).
fn images_of<'a>(items: &[Item<'a>]) -> Vec<Image<'a>> {
    let mut by_name: BTreeMap<&str, (u128, Vec<usize>)> = BTreeMap::new();
    for (idx, item) in items.iter().enumerate() {
        let entry = by_name.entry(item.image).or_default();
        entry.0 += u128::from(item.weight);
        entry.1.push(idx);
    }
    let mut images: Vec<Image> = by_name.into_iter().map(|(k, (w, c))| (k, w, c)).collect();
    images.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    images
}

fn loads_of(items: &[Item<'_>], shard_of: &[usize], n: usize) -> Vec<u128> {
    let mut loads = vec![0u128; n];
    for (item, &s) in items.iter().zip(shard_of) {
        loads[s] += u128::from(item.weight);
    }
    loads
}

/// The shards when the first `split` images (the heaviest) are split and the others kept whole.
fn assign_splitting(
    items: &[Item<'_>],
    images: &[Image<'_>],
    n: usize,
    split: usize,
) -> Vec<usize> {
    let mut shard_of = vec![UNPLACED; items.len()];
    let mut loads = vec![0u128; n];
    let total: u128 = images.iter().map(|i| i.1).sum();
    let (split, whole) = images.split_at(split.min(images.len()));

    let fair = total.div_ceil(n as u128);
    for (_, weight, cases) in whole {
        let s = if split.is_empty() {
            lightest(&loads)
        } else {
            (0..n)
                .find(|&s| loads[s] + weight <= fair)
                .unwrap_or_else(|| lightest(&loads))
        };
        for &idx in cases {
            shard_of[idx] = s;
        }
        loads[s] += weight;
    }

    if split.is_empty() {
        improve_whole(whole, &mut shard_of, &mut loads);
        return shard_of;
    }

    // The larger images, heaviest first, each poured into the shards with the most room until
    // they reach the water level: each shard's room taken by the largest case that still fits,
    // so that a shard boundary splits one image at a time.
    let split_total: u128 = split.iter().map(|i| i.1).sum();
    let level = water_level(&loads, split_total);
    let mut pending: Vec<Vec<usize>> = split
        .iter()
        .map(|(_, _, cases)| {
            let mut cases = cases.clone();
            // Heaviest first; the sort is stable, so ties keep case order.
            cases.sort_by(|a, b| items[*b].weight.cmp(&items[*a].weight));
            cases
        })
        .collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&s| loads[s]);
    let mut image = 0;
    for s in order {
        let mut room = level.saturating_sub(loads[s]);
        while image < pending.len() {
            if pending[image].is_empty() {
                image += 1;
                continue;
            }
            let cases = &mut pending[image];
            let fits = cases.partition_point(|&idx| u128::from(items[idx].weight) > room);
            if fits == cases.len() {
                break;
            }
            let idx = cases.remove(fits);
            shard_of[idx] = s;
            loads[s] += u128::from(items[idx].weight);
            room -= u128::from(items[idx].weight);
        }
    }
    // What fit nowhere under the level, heaviest first: to a shard that holds its image when
    // that stays within 1% over the level, else to the lightest shard.
    let slack = level / 100;
    let mut rest: Vec<(usize, usize)> = pending
        .into_iter()
        .enumerate()
        .flat_map(|(image, cases)| cases.into_iter().map(move |idx| (image, idx)))
        .collect();
    rest.sort_by(|a, b| items[b.1].weight.cmp(&items[a.1].weight));
    for (image, idx) in rest {
        let weight = u128::from(items[idx].weight);
        let home = split[image]
            .2
            .iter()
            .map(|&i| shard_of[i])
            .filter(|&s| s != UNPLACED && loads[s] + weight <= level + slack)
            .min_by_key(|&s| (loads[s], s));
        let s = home.unwrap_or_else(|| lightest(&loads));
        shard_of[idx] = s;
        loads[s] += weight;
    }
    shard_of
}

/// Whole images only: moves an image from the heaviest shard to the lightest, or swaps two,
/// while that shortens the longest shard (a bounded number of times).
fn improve_whole(whole: &[Image<'_>], shard_of: &mut [usize], loads: &mut [u128]) {
    let mut place: Vec<usize> = whole
        .iter()
        .map(|(_, _, cases)| cases.first().map_or(0, |&i| shard_of[i]))
        .collect();
    for _ in 0..10_000 {
        let heavy = heaviest(loads);
        let light = lightest(loads);
        if heavy == light {
            break;
        }
        let gap = loads[heavy] - loads[light];
        // The best move: an image u from heavy (and maybe v back from light), with
        // 0 < w(u) - w(v) < gap; the closer to gap/2, the better.
        let mut best: Option<(u128, usize, Option<usize>)> = None;
        for (u, (_, wu, _)) in whole.iter().enumerate().filter(|(u, _)| place[*u] == heavy) {
            let candidates = std::iter::once(None)
                .chain((0..whole.len()).filter(|v| place[*v] == light).map(Some));
            for v in candidates {
                let wv = v.map_or(0, |v| whole[v].1);
                if *wu <= wv || wu - wv >= gap {
                    continue;
                }
                let delta = wu - wv;
                let new_max = (loads[heavy] - delta).max(loads[light] + delta);
                if best.is_none_or(|(m, _, _)| new_max < m) {
                    best = Some((new_max, u, v));
                }
            }
        }
        let Some((new_max, u, v)) = best else { break };
        // Only a change that shortens the longest shard of all.
        let others = (0..loads.len())
            .filter(|&s| s != heavy && s != light)
            .map(|s| loads[s])
            .max()
            .unwrap_or(0);
        if new_max.max(others) >= loads[heavy] {
            break;
        }
        let wu = whole[u].1;
        let wv = v.map_or(0, |v| whole[v].1);
        loads[heavy] = loads[heavy] - wu + wv;
        loads[light] = loads[light] + wu - wv;
        place[u] = light;
        if let Some(v) = v {
            place[v] = heavy;
        }
    }
    for (u, (_, _, cases)) in whole.iter().enumerate() {
        for &idx in cases {
            shard_of[idx] = place[u];
        }
    }
}

/// The heaviest shard; the first of equals.
fn heaviest(loads: &[u128]) -> usize {
    let mut best = 0;
    for (s, &load) in loads.iter().enumerate() {
        if load > loads[best] {
            best = s;
        }
    }
    best
}

/// The lightest shard; the first of equals.
fn lightest(loads: &[u128]) -> usize {
    let mut best = 0;
    for (s, &load) in loads.iter().enumerate() {
        if load < loads[best] {
            best = s;
        }
    }
    best
}

/// The load every shard reaches when `extra` is poured over `loads` into the lowest first
/// (rounded up, so the room under it holds all of `extra`).
fn water_level(loads: &[u128], extra: u128) -> u128 {
    let mut sorted = loads.to_vec();
    sorted.sort_unstable();
    let mut below: u128 = 0;
    for k in 1..=sorted.len() {
        below += sorted[k - 1];
        let level = (extra + below).div_ceil(k as u128);
        if k == sorted.len() || level <= sorted[k] {
            return level;
        }
    }
    0
}

/// Each shard's load: the sum of its items' weights.
#[cfg(test)]
pub fn loads(items: &[Item<'_>], shard_of: &[usize], shards: usize) -> Vec<u128> {
    let mut loads = vec![0u128; shards.max(1)];
    for (item, &s) in items.iter().zip(shard_of) {
        loads[s] += u128::from(item.weight);
    }
    loads
}

/// The longest shard over the mean shard: 1.0 is a perfect split.
#[cfg(test)]
pub fn imbalance(loads: &[u128]) -> f64 {
    let total: u128 = loads.iter().sum();
    if total == 0 || loads.is_empty() {
        return 1.0;
    }
    let max = loads.iter().copied().max().unwrap_or(0);
    max as f64 * loads.len() as f64 / total as f64
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// A small, seeded generator: the same zoo on every machine.
    pub struct Rng(u64);

    impl Rng {
        pub fn new(seed: u64) -> Self {
            Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
        }

        pub fn next_u64(&mut self) -> u64 {
            // xorshift64*
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        /// Uniform in (0, 1).
        pub fn unit(&mut self) -> f64 {
            ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }

        /// Log-normal: heavy-tailed like model test times (median `median`).
        pub fn log_normal(&mut self, median: f64, sigma: f64) -> f64 {
            let (u1, u2) = (self.unit(), self.unit());
            let normal = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            median * (sigma * normal).exp()
        }
    }

    /// A Kipoi-shaped zoo: 19 images holding 1383, 618, 87, ... models (as the real catalog
    /// does, 2,169 in all), each model's time log-normal around an image-specific median.
    pub fn kipoi_like_zoo(seed: u64) -> Vec<(String, String, u64)> {
        let sizes = [
            1383, 618, 87, 55, 4, 4, 3, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1,
        ];
        let mut rng = Rng::new(seed);
        let mut cases = Vec::new();
        for (i, &size) in sizes.iter().enumerate() {
            let image = format!("zoo/image-{i:02}");
            let median_ms = rng.log_normal(60_000.0, 0.8);
            for m in 0..size {
                let ms = rng.log_normal(median_ms, 1.2).clamp(1.0, 4.0 * 3_600_000.0);
                cases.push((image.clone(), format!("docker::G{i}/m{m:04}"), ms as u64));
            }
        }
        cases
    }

    fn items(zoo: &[(String, String, u64)]) -> Vec<Item<'_>> {
        zoo.iter()
            .map(|(image, _, w)| Item { image, weight: *w })
            .collect()
    }

    fn hash_loads(zoo: &[(String, String, u64)], n: usize) -> Vec<u128> {
        let mut loads = vec![0u128; n];
        for (_, name, w) in zoo {
            loads[(crate::partition::fnv1a(name.as_bytes()) % n as u64) as usize] += *w as u128;
        }
        loads
    }

    #[test]
    fn time_shards_are_within_5_percent_and_keep_images_together() {
        for seed in [1, 2, 3] {
            let zoo = kipoi_like_zoo(seed);
            assert!(zoo.len() >= 2000);
            let items = items(&zoo);
            let total: u128 = items.iter().map(|i| i.weight as u128).sum();
            for n in [2, 3, 4, 5, 6, 8, 10, 12, 16] {
                let shard_of = assign(&items, n);
                assert!(shard_of.iter().all(|&s| s < n));
                let shard_loads = loads(&items, &shard_of, n);
                assert_eq!(
                    shard_loads.iter().sum::<u128>(),
                    total,
                    "every case placed once"
                );
                let ratio = imbalance(&shard_loads);
                let hash = imbalance(&hash_loads(&zoo, n));
                assert!(
                    ratio <= 1.05,
                    "seed {seed}, {n} shards: longest/mean {ratio:.3} (hash: {hash:.3})"
                );
                // An image within a fair share sits in exactly one shard, unless keeping all
                // of them whole misses the aim; a larger one in no more shards than it needs
                // plus two (it may start and end in shards that others fill).
                let images = images_of(&items);
                let must = images.iter().filter(|i| i.1 * n as u128 > total).count();
                let whole_only = assign_splitting(&items, &images, n, must);
                let whole_ratio = imbalance(&loads_of(&items, &whole_only, n));
                let mut by_image: BTreeMap<&str, (u128, BTreeSet<usize>)> = BTreeMap::new();
                for (item, &s) in items.iter().zip(&shard_of) {
                    let e = by_image.entry(item.image).or_default();
                    e.0 += item.weight as u128;
                    e.1.insert(s);
                }
                let fair = total.div_ceil(n as u128);
                for (image, (weight, shards)) in by_image {
                    let need = weight.div_ceil(fair) as usize;
                    if weight * n as u128 <= total && shards.len() > 1 {
                        assert!(
                            whole_ratio > 1.05,
                            "{image} split over {shards:?} though whole images give {whole_ratio}"
                        );
                    }
                    assert!(
                        shards.len() <= need + 2,
                        "seed {seed}, {n} shards: {image}: {} shards for {need} fair shares",
                        shards.len()
                    );
                }
                // A time partition never touches more images per shard than hash's does.
                let pulls = |shard_of: &[usize]| {
                    let set: BTreeSet<(&str, usize)> = items
                        .iter()
                        .zip(shard_of)
                        .map(|(i, &s)| (i.image, s))
                        .collect();
                    set.len()
                };
                let hash_of: Vec<usize> = zoo
                    .iter()
                    .map(|(_, name, _)| {
                        (crate::partition::fnv1a(name.as_bytes()) % n as u64) as usize
                    })
                    .collect();
                assert!(
                    pulls(&shard_of) < pulls(&hash_of),
                    "seed {seed}, {n} shards"
                );
            }
        }
    }

    #[test]
    fn images_within_a_fair_share_are_split_only_to_meet_the_aim() {
        // Three images at 45%, 32% and 23%: whole, two shards cannot come within 5%.
        let mut zoo = Vec::new();
        for (image, count) in [("a", 450), ("b", 320), ("c", 230)] {
            for i in 0..count {
                zoo.push((image.to_string(), format!("docker::{image}{i}"), 1000));
            }
        }
        let items = items(&zoo);
        let shard_of = assign(&items, 2);
        assert!(imbalance(&loads(&items, &shard_of, 2)) <= 1.05);
        let split: Vec<&str> = ["a", "b", "c"]
            .into_iter()
            .filter(|img| {
                let shards: BTreeSet<usize> = items
                    .iter()
                    .zip(&shard_of)
                    .filter(|(i, _)| i.image == *img)
                    .map(|(_, &s)| s)
                    .collect();
                shards.len() > 1
            })
            .collect();
        assert_eq!(split, ["a"], "only the largest image is split");
        // Four equal images over two shards: whole images are a perfect split.
        let even: Vec<Item> = (0..4)
            .flat_map(|i| {
                std::iter::repeat_n(
                    Item {
                        image: ["w", "x", "y", "z"][i],
                        weight: 10,
                    },
                    5,
                )
            })
            .collect();
        let shard_of = assign(&even, 2);
        for img in ["w", "x", "y", "z"] {
            let shards: BTreeSet<usize> = even
                .iter()
                .zip(&shard_of)
                .filter(|(i, _)| i.image == img)
                .map(|(_, &s)| s)
                .collect();
            assert_eq!(shards.len(), 1, "{img}");
        }
    }

    #[test]
    fn the_same_inputs_give_the_same_shards() {
        let zoo = kipoi_like_zoo(7);
        let items = items(&zoo);
        assert_eq!(assign(&items, 8), assign(&items, 8));
        // Equal weights everywhere (no recorded times): still every shard gets cases.
        let flat: Vec<Item> = items.iter().map(|i| Item { weight: 1, ..*i }).collect();
        let shard_of = assign(&flat, 8);
        let used: BTreeSet<usize> = shard_of.iter().copied().collect();
        assert_eq!(used.len(), 8);
    }

    #[test]
    fn small_and_odd_inputs_do_not_panic() {
        assert!(assign(&[], 4).is_empty());
        let one = [Item {
            image: "a",
            weight: u64::MAX,
        }];
        assert_eq!(assign(&one, 3), [0]);
        let huge: Vec<Item> = (0..10)
            .map(|i| Item {
                image: if i % 2 == 0 { "a" } else { "b" },
                weight: u64::MAX,
            })
            .collect();
        let shard_of = assign(&huge, 256);
        assert_eq!(shard_of.len(), 10);
        assert_eq!(assign(&one, 0), [0]);
    }
}
