//! `SCHEME:auto` in a Slurm job array: the shard is the task's place in the array.
//!
//! Slurm sets `SLURM_ARRAY_TASK_ID` in every task, with `SLURM_ARRAY_TASK_MIN`,
//! `SLURM_ARRAY_TASK_MAX`, `SLURM_ARRAY_TASK_STEP` and `SLURM_ARRAY_TASK_COUNT`. A range
//! (`--array=1-8`, `--array=0-7`, `--array=1-15:2`) maps its tasks in order onto shards 1..N.
//! Without MIN and MAX, the IDs are taken to run from 1 to `SLURM_ARRAY_TASK_COUNT`. A list
//! (`--array=1,4,9`) has no such order: it is refused.

use super::{Partition, PartitionError, Scheme, MAX_SHARDS};

pub const SLURM_ARRAY_TASK_ID: &str = "SLURM_ARRAY_TASK_ID";
pub const SLURM_ARRAY_TASK_MIN: &str = "SLURM_ARRAY_TASK_MIN";
pub const SLURM_ARRAY_TASK_MAX: &str = "SLURM_ARRAY_TASK_MAX";
pub const SLURM_ARRAY_TASK_STEP: &str = "SLURM_ARRAY_TASK_STEP";
pub const SLURM_ARRAY_TASK_COUNT: &str = "SLURM_ARRAY_TASK_COUNT";

/// True when this is a task of a Slurm job array.
pub fn in_array(var: &impl Fn(&str) -> Option<String>) -> bool {
    var(SLURM_ARRAY_TASK_ID).is_some()
}

/// The shard of this array task, and the line that says where it was read.
pub fn resolve(
    scheme: Scheme,
    var: &impl Fn(&str) -> Option<String>,
) -> Result<(Partition, String), PartitionError> {
    let bad = |name: &'static str, found: String| PartitionError::Slurm {
        scheme: scheme.name(),
        var: name,
        found,
    };
    let read = |name: &'static str| -> Result<Option<u64>, PartitionError> {
        match var(name) {
            None => Ok(None),
            Some(text) => text
                .trim()
                .parse::<u64>()
                .map(Some)
                .map_err(|_| bad(name, format!("`{text}`, not a whole number"))),
        }
    };
    let id =
        read(SLURM_ARRAY_TASK_ID)?.ok_or_else(|| bad(SLURM_ARRAY_TASK_ID, "not set".into()))?;
    let count = read(SLURM_ARRAY_TASK_COUNT)?;
    let step = read(SLURM_ARRAY_TASK_STEP)?.unwrap_or(1).max(1);
    let (shard, total, read_from) = match (read(SLURM_ARRAY_TASK_MIN)?, read(SLURM_ARRAY_TASK_MAX)?)
    {
        (Some(min), Some(max)) => {
            let span = max.checked_sub(min).ok_or_else(|| {
                bad(
                    SLURM_ARRAY_TASK_MAX,
                    format!("{max}, less than SLURM_ARRAY_TASK_MIN={min}"),
                )
            })?;
            let total = span / step + 1;
            // A list (`--array=1,4,9`) has fewer tasks than its range holds, or IDs off the steps.
            let off_range = id < min || id > max || (id - min) % step != 0;
            if count.is_some_and(|c| c != total) || span % step != 0 || off_range {
                return Err(PartitionError::SlurmList {
                    scheme: scheme.name(),
                    min,
                    max,
                    count: count.map_or_else(|| "not set".to_string(), |c| c.to_string()),
                });
            }
            let from = format!(
                "{SLURM_ARRAY_TASK_ID}={id}, {SLURM_ARRAY_TASK_MIN}={min}, \
                 {SLURM_ARRAY_TASK_MAX}={max}{}",
                if step > 1 {
                    format!(", {SLURM_ARRAY_TASK_STEP}={step}")
                } else {
                    String::new()
                }
            );
            ((id - min) / step + 1, total, from)
        }
        _ => {
            let total = count.ok_or_else(|| {
                bad(
                    SLURM_ARRAY_TASK_COUNT,
                    format!("not set, nor {SLURM_ARRAY_TASK_MIN} and {SLURM_ARRAY_TASK_MAX}"),
                )
            })?;
            if id == 0 || id > total {
                return Err(bad(
                    SLURM_ARRAY_TASK_ID,
                    format!(
                        "{id}: without {SLURM_ARRAY_TASK_MIN}/{SLURM_ARRAY_TASK_MAX}, the tasks \
                         must be numbered 1 to {SLURM_ARRAY_TASK_COUNT}={total}"
                    ),
                ));
            }
            (
                id,
                total,
                format!("{SLURM_ARRAY_TASK_ID}={id}, {SLURM_ARRAY_TASK_COUNT}={total}"),
            )
        }
    };
    let partition = Partition::new(scheme, shard, total).ok_or_else(|| {
        bad(
            SLURM_ARRAY_TASK_COUNT,
            format!("{total} tasks, more than the {MAX_SHARDS} shards a partition may have"),
        )
    })?;
    let note = format!(
        "--partition {}:auto is shard {shard} of {total}, read from the environment: \
         {read_from} (a Slurm job array)",
        scheme.name()
    );
    Ok((partition, note))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        let pairs = pairs.to_vec();
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn shard(pairs: &[(&'static str, &'static str)]) -> Result<(u64, u64), String> {
        resolve(Scheme::Time, &env(pairs))
            .map(|(p, _)| (p.shard, p.total))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_range_maps_its_tasks_in_order_onto_shards() {
        let (p, note) = resolve(
            Scheme::Time,
            &env(&[
                ("SLURM_ARRAY_TASK_ID", "2"),
                ("SLURM_ARRAY_TASK_MIN", "1"),
                ("SLURM_ARRAY_TASK_MAX", "3"),
                ("SLURM_ARRAY_TASK_COUNT", "3"),
            ]),
        )
        .unwrap();
        assert_eq!((p.scheme, p.shard, p.total), (Scheme::Time, 2, 3));
        assert_eq!(
            note,
            "--partition time:auto is shard 2 of 3, read from the environment: \
             SLURM_ARRAY_TASK_ID=2, SLURM_ARRAY_TASK_MIN=1, SLURM_ARRAY_TASK_MAX=3 (a Slurm job \
             array)"
        );
        // 0-based arrays, steps, and a Slurm that sets only the count.
        let zero = [
            ("SLURM_ARRAY_TASK_ID", "0"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_MAX", "7"),
        ];
        assert_eq!(shard(&zero), Ok((1, 8)));
        let stepped = [
            ("SLURM_ARRAY_TASK_ID", "5"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_MAX", "7"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ];
        assert_eq!(shard(&stepped), Ok((3, 4)));
        let counted = [
            ("SLURM_ARRAY_TASK_ID", "4"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ];
        assert_eq!(shard(&counted), Ok((4, 4)));
    }

    #[test]
    fn what_cannot_be_a_shard_is_refused_with_the_variable() {
        for (pairs, want) in [
            (
                &[
                    ("SLURM_ARRAY_TASK_ID", "4"),
                    ("SLURM_ARRAY_TASK_MIN", "1"),
                    ("SLURM_ARRAY_TASK_MAX", "9"),
                    ("SLURM_ARRAY_TASK_COUNT", "3"),
                ][..],
                "not a range",
            ),
            (
                &[
                    ("SLURM_ARRAY_TASK_ID", "2"),
                    ("SLURM_ARRAY_TASK_MIN", "1"),
                    ("SLURM_ARRAY_TASK_MAX", "7"),
                    ("SLURM_ARRAY_TASK_STEP", "2"),
                ][..],
                "not a range",
            ),
            (
                &[
                    ("SLURM_ARRAY_TASK_ID", "x"),
                    ("SLURM_ARRAY_TASK_COUNT", "3"),
                ][..],
                "SLURM_ARRAY_TASK_ID is `x`",
            ),
            (
                &[
                    ("SLURM_ARRAY_TASK_ID", "0"),
                    ("SLURM_ARRAY_TASK_COUNT", "3"),
                ][..],
                "numbered 1 to SLURM_ARRAY_TASK_COUNT=3",
            ),
            (
                &[("SLURM_ARRAY_TASK_ID", "1")][..],
                "SLURM_ARRAY_TASK_COUNT is not set",
            ),
            (
                &[
                    ("SLURM_ARRAY_TASK_ID", "1"),
                    ("SLURM_ARRAY_TASK_MIN", "1"),
                    ("SLURM_ARRAY_TASK_MAX", "300"),
                ][..],
                "more than the 256 shards",
            ),
            (
                &[
                    ("SLURM_ARRAY_TASK_ID", "1"),
                    ("SLURM_ARRAY_TASK_MIN", "5"),
                    ("SLURM_ARRAY_TASK_MAX", "1"),
                ][..],
                "less than SLURM_ARRAY_TASK_MIN=5",
            ),
        ] {
            let err = shard(pairs).unwrap_err();
            assert!(err.contains(want), "{pairs:?}: {err}");
            assert!(err.contains("time:auto"), "{err}");
        }
    }
}
