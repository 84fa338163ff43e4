//! `zoo-runner matrix`: the jobs of a CI matrix, printed as one line of JSON for GitHub's
//! `fromJSON`: `{"include":[{"name":"...","args":"..."}, ...]}`.
//!
//! Each job's `args` is its whole argument string (the selection, its share, and the run flags
//! given after `--`), quoted so that a POSIX shell splits it back into the same words: the job
//! runs `zoo-runner ${{ matrix.args }}`. A job's share is `--only-image IMAGE` (`--per-image`) or
//! `--partition time:M/N` (`--shards N`), so the jobs' cases are disjoint and together are the
//! selection's. What each job gets is said on stderr.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context;
use clap::FromArgMatches;
use serde::Serialize;
use thiserror::Error;

use crate::cli::{Cli, MatrixArgs};
use crate::partition::durations::Durations;
use crate::partition::MAX_SHARDS;
use crate::select::changed_since::GitRun;
use crate::select::inputs::{self, Inputs, PlanOptions};
use crate::select::plan::Case;

#[derive(Debug, Error)]
pub enum MatrixError {
    #[error(
        "the selection touches {0} images: one job per image would be more than the \
         {MAX_SHARDS} jobs GitHub runs per matrix; use --shards N instead"
    )]
    TooManyJobs(usize),
    #[error("the run flags after `--` are not valid zoo-runner flags: {0}")]
    BadRunFlags(String),
    #[error(
        "the run flags after `--` must not change which cases run ({0}): put selection flags \
         (--model, --modelgroup, --image, --only-image) before `--`, and leave the share to the \
         matrix; libtest's FILTER, --skip, --exact, --ignored and --include-ignored are refused \
         there, since the jobs are planned without them"
    )]
    SelectionInRunFlags(String),
}

#[derive(Debug, Serialize)]
struct Job {
    name: String,
    args: String,
}

#[derive(Debug, Serialize)]
struct Matrix {
    include: Vec<Job>,
}

/// `git` is how `--changed-since` runs git.
pub fn run(args: &MatrixArgs, git: GitRun) -> anyhow::Result<ExitCode> {
    check_run_flags(&args.run_flags)?;
    let options = PlanOptions {
        git,
        ..PlanOptions::default()
    };
    let Inputs { cases, .. } = Inputs::load(&args.selection, options)?;
    let base = if args.per_image {
        // Each job's `--only-image` is one of the selection's: it replaces the list.
        let mut selection = args.selection.clone();
        selection.only_image.clear();
        selection.to_args()
    } else {
        args.selection.to_args()
    };
    let durations = match &args.durations {
        Some(path) => Some(crate::report::junit::durations::load(path)?),
        None => None,
    };
    if let (Some(d), Some(path)) = (&durations, &args.durations) {
        if !d.has_times() {
            eprintln!(
                "zoo-runner: matrix: `{}` records no case's time, so there is no median to \
                 count from: every case counts the same",
                path.display()
            );
        }
    }
    let jobs: Vec<(String, Vec<String>, Vec<&Case>)> = if args.per_image {
        per_image(&cases, &base)?
    } else {
        let wanted = args.shards.unwrap_or(1);
        let weights = durations.clone().unwrap_or_else(Durations::none);
        shards(&cases, &base, wanted, args.durations.as_deref(), &weights)
    };
    if cases.is_empty() {
        eprintln!("zoo-runner: matrix: the selection holds no case: no job");
    }
    let mut include = Vec::new();
    for (name, mut words, share) in jobs {
        words.extend(args.run_flags.iter().cloned());
        // Every job's command line must parse as a run does (a typo fails here, not in CI).
        parse_run(&words).map_err(MatrixError::BadRunFlags)?;
        describe(&name, &share, durations.as_ref().filter(|d| d.has_times()));
        include.push(Job {
            name,
            args: quote(&words),
        });
    }
    let line = serde_json::to_string(&Matrix { include }).context("the matrix as JSON")?;
    println!("{line}");
    Ok(ExitCode::SUCCESS)
}

/// One job per image the cases run in, in name order.
#[allow(clippy::type_complexity)]
fn per_image<'a>(
    cases: &'a [Case],
    base: &[String],
) -> Result<Vec<(String, Vec<String>, Vec<&'a Case>)>, MatrixError> {
    let mut by_image: BTreeMap<&str, Vec<&Case>> = BTreeMap::new();
    for case in cases {
        by_image.entry(case.image.as_str()).or_default().push(case);
    }
    if by_image.len() as u64 > MAX_SHARDS {
        return Err(MatrixError::TooManyJobs(by_image.len()));
    }
    Ok(by_image
        .into_iter()
        .map(|(image, share)| {
            let mut words = base.to_vec();
            words.extend(["--only-image".to_string(), image.to_string()]);
            (image.to_string(), words, share)
        })
        .collect())
}

/// N jobs of `--partition time:M/N`; fewer when the selection has fewer cases than N.
#[allow(clippy::type_complexity)]
fn shards<'a>(
    cases: &'a [Case],
    base: &[String],
    wanted: u64,
    durations_path: Option<&std::path::Path>,
    durations: &Durations,
) -> Vec<(String, Vec<String>, Vec<&'a Case>)> {
    let total = wanted.min(cases.len() as u64);
    if total < wanted {
        eprintln!(
            "zoo-runner: matrix: --shards {wanted}, but the selection has {} case(s): {total} \
             job(s)",
            cases.len()
        );
    }
    if total == 0 {
        return Vec::new();
    }
    let shard_of = inputs::time_shards(cases, total, durations);
    (1..=total)
        .map(|m| {
            let mut words = base.to_vec();
            words.extend(["--partition".to_string(), format!("time:{m}/{total}")]);
            if let Some(path) = durations_path {
                words.extend(["--durations".to_string(), path.display().to_string()]);
            }
            let share = cases
                .iter()
                .zip(&shard_of)
                .filter(|(_, s)| **s as u64 == m - 1)
                .map(|(c, _)| c)
                .collect();
            (format!("shard {m}/{total}"), words, share)
        })
        .collect()
}

/// A job's share on stderr: cases, images, and the expected time when durations are known.
fn describe(name: &str, share: &[&Case], durations: Option<&Durations>) {
    let mut images: Vec<&str> = share.iter().map(|c| c.image.as_str()).collect();
    images.sort_unstable();
    images.dedup();
    let shown: Vec<&str> = images.iter().copied().take(5).collect();
    let more = images.len() - shown.len();
    let mut line = format!(
        "zoo-runner: matrix: {name}: {} case(s) in {} image(s): {}",
        share.len(),
        images.len(),
        shown.join(", ")
    );
    if more > 0 {
        line.push_str(&format!(" (+{more} more)"));
    }
    if let Some(d) = durations {
        let ms: u64 = share.iter().map(|c| d.weight(&c.name)).sum();
        line.push_str(&format!(
            "; about {} by --durations",
            crate::config::units::human_time(ms)
        ));
    }
    eprintln!("{line}");
}

/// POSIX-shell quoting of each word, joined by spaces.
pub fn quote(words: &[String]) -> String {
    words
        .iter()
        .map(|w| shell_words::quote(w).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A job's words parsed as a run parses them, with the checks a run makes on its numbers before
/// anything runs (`--test-threads 0` would fail every job).
fn parse_run(words: &[String]) -> Result<Cli, String> {
    let matches = Cli::command_with_help()
        .try_get_matches_from(
            std::iter::once("zoo-runner".to_string()).chain(words.iter().cloned()),
        )
        .map_err(|e| e.to_string())?;
    let cli = Cli::from_arg_matches(&matches).map_err(|e| e.to_string())?;
    if cli.command.is_some() {
        return Err("a subcommand cannot be part of a job's arguments".to_string());
    }
    cli.validate_numbers().map_err(|e| e.to_string())?;
    Ok(cli)
}

/// The flags after `--` are run flags only: no selection, partition or durations.
fn check_run_flags(flags: &[String]) -> Result<(), MatrixError> {
    if flags.is_empty() {
        return Ok(());
    }
    let cli = parse_run(flags).map_err(MatrixError::BadRunFlags)?;
    let mut found = cli.selection.to_args();
    if cli.partition.is_some() {
        found.push("--partition".into());
    }
    if cli.durations.is_some() {
        found.push("--durations".into());
    }
    // libtest's narrowing flags would make the jobs' shares (planned without them) uneven or
    // empty: the matrix refuses them rather than plan jobs that test nothing.
    let libtest = &cli.libtest;
    if let Some(filter) = &libtest.filter {
        found.push(format!("--FILTER `{filter}`"));
    }
    for (given, flag) in [
        (!libtest.skip.is_empty(), "--skip"),
        (libtest.exact, "--exact"),
        (libtest.ignored, "--ignored"),
        (libtest.include_ignored, "--include-ignored"),
    ] {
        if given {
            found.push(flag.into());
        }
    }
    let flags_only: Vec<String> = found
        .into_iter()
        .filter(|w| w.starts_with("--"))
        .map(|w| match w.strip_prefix("--FILTER ") {
            Some(filter) => format!("the name filter {filter}"),
            None => w,
        })
        .collect();
    if flags_only.is_empty() {
        Ok(())
    } else {
        Err(MatrixError::SelectionInRunFlags(flags_only.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_a_posix_shell() {
        let words: Vec<String> = [
            "--model",
            "a b,it's,$HOME,`x`,\"q\",*;|&<>",
            "--spec",
            "plain/path.toml",
            "",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let quoted = quote(&words);
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf '%s\\0' {quoted}"))
            .output()
            .unwrap();
        let back: Vec<String> = out
            .stdout
            .split(|b| *b == 0)
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect();
        // printf's output ends with a NUL: one empty piece after the last word.
        assert_eq!(&back[..back.len() - 1], &words[..], "{quoted}");
    }

    #[test]
    fn run_flags_may_not_select() {
        let flags = |f: &[&str]| f.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(check_run_flags(&flags(&["--retries", "1", "--timeout", "45m"])).is_ok());
        let err = check_run_flags(&flags(&["--model", "x"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--model"), "{err}");
        let err = check_run_flags(&flags(&["--partition", "hash:1/2"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--partition"), "{err}");
        let err = check_run_flags(&flags(&["--retrys", "1"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--retrys"), "{err}");
        // libtest's narrowing flags: the jobs are planned without them.
        for (narrowing, named) in [
            (&["--exact", "docker::Solo"][..], "--exact"),
            (&["--skip", "A/m"][..], "--skip"),
            (&["A/m"][..], "the name filter `A/m`"),
            (&["--ignored"][..], "--ignored"),
            (&["--include-ignored"][..], "--include-ignored"),
        ] {
            let err = check_run_flags(&flags(narrowing)).unwrap_err().to_string();
            assert!(err.contains(named), "{narrowing:?}: {err}");
        }
        // Numbers a run refuses before it starts are refused here, for every job at once.
        for threads in ["0", "999"] {
            let err = check_run_flags(&flags(&["--test-threads", threads]))
                .unwrap_err()
                .to_string();
            assert!(err.contains("--test-threads"), "{threads}: {err}");
        }
        assert!(check_run_flags(&flags(&["--test-threads", "4"])).is_ok());
    }
}
