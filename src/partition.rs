//! `--partition hash:M/N` and `count:M/N`: split the cases into N stable shards for a CI matrix
//! and keep shard M. `hash` places a case by a hash of its name, so a case stays in its shard
//! when others are added or removed; `count` deals cases out in turn, for even shards.

use std::str::FromStr;

use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Hash,
    Count,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    pub scheme: Scheme,
    /// 1-based shard to keep.
    pub shard: u64,
    pub total: u64,
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("`{0}` is not a partition: write hash:M/N or count:M/N with 1 <= M <= N, like hash:2/4")]
pub struct PartitionError(String);

impl FromStr for Partition {
    type Err = PartitionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || PartitionError(text.to_string());
        let (scheme, rest) = text.split_once(':').ok_or_else(bad)?;
        let scheme = match scheme {
            "hash" => Scheme::Hash,
            "count" => Scheme::Count,
            _ => return Err(bad()),
        };
        let (m, n) = rest.split_once('/').ok_or_else(bad)?;
        let shard: u64 = m.trim().parse().map_err(|_| bad())?;
        let total: u64 = n.trim().parse().map_err(|_| bad())?;
        if shard == 0 || total == 0 || shard > total {
            return Err(bad());
        }
        Ok(Self {
            scheme,
            shard,
            total,
        })
    }
}

impl Partition {
    /// Keeps the items of this shard; `name` gives the stable name an item is hashed by.
    pub fn keep<T>(&self, items: Vec<T>, name: impl Fn(&T) -> &str) -> Vec<T> {
        items
            .into_iter()
            .enumerate()
            .filter(|(i, item)| {
                let slot = match self.scheme {
                    Scheme::Hash => fnv1a(name(item).as_bytes()),
                    Scheme::Count => *i as u64,
                };
                slot % self.total == self.shard - 1
            })
            .map(|(_, item)| item)
            .collect()
    }
}

/// FNV-1a, 64 bit: stable across runs, machines and Rust versions (unlike std's hasher).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("docker::Model{i}/x")).collect()
    }

    #[test]
    fn parses_and_rejects() {
        assert_eq!(
            "hash:2/4".parse(),
            Ok(Partition {
                scheme: Scheme::Hash,
                shard: 2,
                total: 4
            })
        );
        assert_eq!(
            "count:1/1".parse::<Partition>().map(|p| p.scheme),
            Ok(Scheme::Count)
        );
        for bad in [
            "hash:0/4", "hash:5/4", "hash:1/0", "mod:1/2", "hash:1", "1/2", "hash:a/b",
        ] {
            assert!(bad.parse::<Partition>().is_err(), "{bad}");
        }
    }

    #[test]
    fn shards_are_disjoint_and_cover_everything() {
        for scheme in ["hash", "count"] {
            let all = names(200);
            let mut seen: Vec<String> = Vec::new();
            for m in 1..=4 {
                let p: Partition = format!("{scheme}:{m}/4").parse().unwrap();
                let shard = p.keep(all.clone(), |s| s.as_str());
                assert!(!shard.is_empty(), "{scheme} shard {m} is empty");
                seen.extend(shard);
            }
            seen.sort();
            let mut want = all.clone();
            want.sort();
            assert_eq!(seen, want, "{scheme}");
        }
    }

    #[test]
    fn hash_shards_are_stable_when_cases_are_added() {
        let p: Partition = "hash:3/5".parse().unwrap();
        let before = p.keep(names(50), |s| s.as_str());
        let after = p.keep(names(80), |s| s.as_str());
        assert!(before.iter().all(|n| after.contains(n)));
        // A known value pins the hash function itself.
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
