//! `--partition SCHEME:M/N`: split the cases into N shards for a CI matrix and keep shard M.
//! - `hash` places a case by a hash of its name, so a case stays in its shard when others are
//!   added or removed;
//! - `count` deals cases out in turn, for even case counts;
//! - `time` balances earlier running times and keeps each image's cases together (see
//!   `time_partition`).
//!
//! `SCHEME:auto` (or `SCHEME:auto/auto`) takes M and N from `CI_NODE_INDEX` and
//! `CI_NODE_TOTAL`, which GitLab's `parallel:` sets, or from a Slurm job array's
//! `SLURM_ARRAY_TASK_*` ([`slurm`]); both at once is refused.

pub mod durations;
pub mod slurm;
pub mod time;

use std::str::FromStr;

use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Hash,
    Count,
    Time,
}

impl Scheme {
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Hash => "hash",
            Scheme::Count => "count",
            Scheme::Time => "time",
        }
    }
}

/// A shard to keep, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    pub scheme: Scheme,
    /// 1-based shard to keep.
    pub shard: u64,
    pub total: u64,
}

/// `--partition` as given: a fixed shard, or one that the CI's environment names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionArg {
    Fixed(Partition),
    FromCi(Scheme),
}

/// The most shards: GitHub runs at most 256 jobs per matrix, and more is surely a typo.
pub const MAX_SHARDS: u64 = 256;

/// GitLab's `parallel:` variables: the 1-based index of this job and the number of jobs.
pub const CI_NODE_INDEX: &str = "CI_NODE_INDEX";
pub const CI_NODE_TOTAL: &str = "CI_NODE_TOTAL";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PartitionError {
    #[error(
        "`{0}` is not a partition: write hash:M/N, count:M/N or time:M/N with 1 <= M <= N <= \
         {MAX_SHARDS}, like time:2/4, or SCHEME:auto to read the shard from \
         {CI_NODE_INDEX}/{CI_NODE_TOTAL} or a Slurm job array"
    )]
    Syntax(String),
    #[error(
        "--partition {scheme}:auto reads the shard from {CI_NODE_INDEX} and {CI_NODE_TOTAL} \
         (GitLab's `parallel:` sets them) or from a Slurm job array's SLURM_ARRAY_TASK_ID, but \
         {var} is {found}: set it, or give the shard as {scheme}:M/N"
    )]
    Env {
        scheme: &'static str,
        var: &'static str,
        found: String,
    },
    #[error(
        "--partition {scheme}:auto reads the shard from a Slurm job array's SLURM_ARRAY_TASK_ID \
         with SLURM_ARRAY_TASK_MIN/MAX or SLURM_ARRAY_TASK_COUNT, but {var} is {found}: submit \
         it as an array (sbatch --array=1-N), or give the shard as {scheme}:M/N"
    )]
    Slurm {
        scheme: &'static str,
        var: &'static str,
        found: String,
    },
    #[error(
        "--partition {scheme}:auto: this Slurm job array is not a range (SLURM_ARRAY_TASK_MIN={min}, \
         SLURM_ARRAY_TASK_MAX={max}, SLURM_ARRAY_TASK_COUNT={count}), so its tasks have no order \
         to be shards in: submit it as --array=1-N (a `%` limit is fine)"
    )]
    SlurmList {
        scheme: &'static str,
        min: u64,
        max: u64,
        count: String,
    },
    #[error(
        "--partition {scheme}:auto found both GitLab's {CI_NODE_TOTAL}/{CI_NODE_INDEX} and a Slurm \
         job array's SLURM_ARRAY_TASK_ID ({found}): a job is one or the other, and the two \
         may name different shards; unset the one that does not apply, or give the shard as \
         {scheme}:M/N"
    )]
    Both { scheme: &'static str, found: String },
}

impl FromStr for Partition {
    type Err = PartitionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.parse::<PartitionArg>()? {
            PartitionArg::Fixed(p) => Ok(p),
            PartitionArg::FromCi(_) => Err(PartitionError::Syntax(text.to_string())),
        }
    }
}

impl FromStr for PartitionArg {
    type Err = PartitionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || PartitionError::Syntax(text.to_string());
        let (scheme, rest) = text.split_once(':').ok_or_else(bad)?;
        let scheme = match scheme.trim() {
            "hash" => Scheme::Hash,
            "count" => Scheme::Count,
            "time" => Scheme::Time,
            _ => return Err(bad()),
        };
        if matches!(rest.trim(), "auto" | "auto/auto") {
            return Ok(PartitionArg::FromCi(scheme));
        }
        let (m, n) = rest.split_once('/').ok_or_else(bad)?;
        let shard: u64 = m.trim().parse().map_err(|_| bad())?;
        let total: u64 = n.trim().parse().map_err(|_| bad())?;
        Partition::new(scheme, shard, total)
            .map(PartitionArg::Fixed)
            .ok_or_else(bad)
    }
}

impl PartitionArg {
    /// The scheme, whether the shard is given or read from the CI's environment.
    pub fn scheme(&self) -> Scheme {
        match self {
            PartitionArg::Fixed(p) => p.scheme,
            PartitionArg::FromCi(scheme) => *scheme,
        }
    }

    /// The shard to keep; for `SCHEME:auto`, read from the environment through `var`, with a
    /// line that says where it was read.
    pub fn resolve(
        self,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<(Partition, Option<String>), PartitionError> {
        let scheme = match self {
            PartitionArg::Fixed(p) => return Ok((p, None)),
            PartitionArg::FromCi(scheme) => scheme,
        };
        let gitlab = [CI_NODE_TOTAL, CI_NODE_INDEX]
            .into_iter()
            .filter_map(|name| var(name).map(|v| format!("{name}={v}")))
            .collect::<Vec<_>>();
        if slurm::in_array(&var) {
            if !gitlab.is_empty() {
                let task = var(slurm::SLURM_ARRAY_TASK_ID).unwrap_or_default();
                return Err(PartitionError::Both {
                    scheme: scheme.name(),
                    found: format!(
                        "{}, {}={task}",
                        gitlab.join(", "),
                        slurm::SLURM_ARRAY_TASK_ID
                    ),
                });
            }
            return slurm::resolve(scheme, &var).map(|(p, note)| (p, Some(note)));
        }
        let read = |name: &'static str| -> Result<Option<u64>, PartitionError> {
            match var(name) {
                None => Ok(None),
                Some(text) => match text.trim().parse::<u64>() {
                    Ok(n) if (1..=MAX_SHARDS).contains(&n) => Ok(Some(n)),
                    _ => Err(PartitionError::Env {
                        scheme: scheme.name(),
                        var: name,
                        found: format!("`{text}`, not a number from 1 to {MAX_SHARDS}"),
                    }),
                },
            }
        };
        let unset = |name: &'static str| PartitionError::Env {
            scheme: scheme.name(),
            var: name,
            found: "not set".to_string(),
        };
        let total = read(CI_NODE_TOTAL)?.ok_or_else(|| unset(CI_NODE_TOTAL))?;
        // GitLab sets CI_NODE_INDEX only for jobs with `parallel:`; alone, a job is 1 of 1.
        let shard = match read(CI_NODE_INDEX)? {
            Some(i) => i,
            None if total == 1 => 1,
            None => return Err(unset(CI_NODE_INDEX)),
        };
        let partition =
            Partition::new(scheme, shard, total).ok_or_else(|| PartitionError::Env {
                scheme: scheme.name(),
                var: CI_NODE_INDEX,
                found: format!("{shard}, more than {CI_NODE_TOTAL}={total}"),
            })?;
        let note = format!(
            "--partition {}:auto is shard {shard} of {total}, read from the environment: \
             {CI_NODE_INDEX}={}, {CI_NODE_TOTAL}={total} (GitLab's `parallel:`)",
            scheme.name(),
            var(CI_NODE_INDEX).unwrap_or_else(|| "(not set: a job alone)".to_string()),
        );
        Ok((partition, Some(note)))
    }
}

impl std::fmt::Display for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}/{}", self.scheme.name(), self.shard, self.total)
    }
}

impl Partition {
    pub fn new(scheme: Scheme, shard: u64, total: u64) -> Option<Self> {
        (shard >= 1 && shard <= total && total <= MAX_SHARDS).then_some(Self {
            scheme,
            shard,
            total,
        })
    }

    /// Keeps the items of this `hash` or `count` shard; `name` gives the stable name an item is
    /// hashed by. A `time` shard needs the items' times: see `time_partition`.
    pub fn keep<T>(&self, items: Vec<T>, name: impl Fn(&T) -> &str) -> Vec<T> {
        debug_assert!(
            self.scheme != Scheme::Time,
            "time shards come from time_partition"
        );
        items
            .into_iter()
            .enumerate()
            .filter(|(i, item)| {
                let slot = match self.scheme {
                    Scheme::Hash => fnv1a(name(item).as_bytes()),
                    Scheme::Count | Scheme::Time => *i as u64,
                };
                slot % self.total == self.shard - 1
            })
            .map(|(_, item)| item)
            .collect()
    }
}

/// FNV-1a, 64 bit: stable across runs, machines and Rust versions (unlike std's hasher).
pub fn fnv1a(bytes: &[u8]) -> u64 {
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
        assert_eq!(
            "time:3/8".parse::<Partition>().map(|p| p.to_string()),
            Ok("time:3/8".to_string())
        );
        assert_eq!(
            "time:auto".parse::<PartitionArg>(),
            Ok(PartitionArg::FromCi(Scheme::Time))
        );
        assert_eq!(
            "hash:auto/auto".parse::<PartitionArg>(),
            Ok(PartitionArg::FromCi(Scheme::Hash))
        );
        for bad in [
            "hash:0/4",
            "hash:5/4",
            "hash:1/0",
            "mod:1/2",
            "hash:1",
            "1/2",
            "hash:a/b",
            "time:1/257",
            "time:auto/4",
            "time:99999999999999999999/1",
        ] {
            let err = bad.parse::<PartitionArg>().unwrap_err();
            assert!(err.to_string().contains(bad), "{bad}: {err}");
        }
    }

    #[test]
    fn auto_reads_gitlab_parallel_and_says_so() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let auto = PartitionArg::FromCi(Scheme::Time);
        let (p, note) = auto
            .resolve(env(&[("CI_NODE_INDEX", "2"), ("CI_NODE_TOTAL", "4")]))
            .unwrap();
        assert_eq!((p.shard, p.total, p.scheme), (2, 4, Scheme::Time));
        let note = note.unwrap();
        assert!(
            note.contains("CI_NODE_INDEX=2") && note.contains("CI_NODE_TOTAL=4"),
            "{note}"
        );
        let (p, _) = auto.resolve(env(&[("CI_NODE_TOTAL", "1")])).unwrap();
        assert_eq!((p.shard, p.total), (1, 1));
        for (pairs, want) in [
            (&[][..], "CI_NODE_TOTAL is not set"),
            (&[("CI_NODE_TOTAL", "3")][..], "CI_NODE_INDEX is not set"),
            (
                &[("CI_NODE_TOTAL", "3"), ("CI_NODE_INDEX", "4")][..],
                "more than CI_NODE_TOTAL=3",
            ),
            (&[("CI_NODE_TOTAL", "x")][..], "`x`"),
            (&[("CI_NODE_TOTAL", "0")][..], "`0`"),
        ] {
            let pairs: &'static [(&'static str, &'static str)] = Box::leak(pairs.to_vec().into());
            let err = auto.resolve(env(pairs)).unwrap_err().to_string();
            assert!(err.contains(want), "{pairs:?}: {err}");
        }
        let fixed: PartitionArg = "hash:1/2".parse().unwrap();
        assert_eq!(fixed.resolve(|_| None).unwrap().1, None);
    }

    #[test]
    fn auto_reads_a_slurm_array_and_refuses_both_at_once() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let auto = PartitionArg::FromCi(Scheme::Hash);
        let (p, note) = auto
            .resolve(env(&[
                ("SLURM_ARRAY_TASK_ID", "3"),
                ("SLURM_ARRAY_TASK_MIN", "1"),
                ("SLURM_ARRAY_TASK_MAX", "3"),
            ]))
            .unwrap();
        assert_eq!((p.scheme, p.shard, p.total), (Scheme::Hash, 3, 3));
        assert!(note.unwrap().contains("(a Slurm job array)"));
        let err = auto
            .resolve(env(&[
                ("SLURM_ARRAY_TASK_ID", "1"),
                ("SLURM_ARRAY_TASK_COUNT", "2"),
                ("CI_NODE_TOTAL", "4"),
                ("CI_NODE_INDEX", "2"),
            ]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("found both")
                && err.contains("CI_NODE_TOTAL=4, CI_NODE_INDEX=2, SLURM_ARRAY_TASK_ID=1")
                && err.contains("unset the one that does not apply"),
            "{err}"
        );
        // Neither: the message names both places it looks.
        let err = auto.resolve(env(&[])).unwrap_err().to_string();
        assert!(
            err.contains("CI_NODE_TOTAL is not set") && err.contains("SLURM_ARRAY_TASK_ID"),
            "{err}"
        );
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
