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
use serde::Serialize;
use thiserror::Error;

use crate::partition::durations::Durations;
use crate::partition::MAX_SHARDS;
use crate::select::changed_since::GitRun;
use crate::select::inputs::{self, Inputs, PlanOptions, Wanted};
use crate::select::plan::Case;

#[derive(Debug, Error)]
pub enum MatrixError {
    #[error(
        "the selection touches {0} images: one job per image would be more than the \
         {MAX_SHARDS} jobs GitHub runs per matrix; use --shards N instead"
    )]
    TooManyJobs(usize),
    #[error("a job's arguments are not valid zoo-runner flags: {0}")]
    BadJob(String),
    #[error(
        "--max-job-time {limit}: the selection does not fit: even {jobs} jobs (the most, \
         one per case or GitHub's {MAX_SHARDS}) leave the longest at about {longest} with its \
         pulls; raise --max-job-time, or test fewer models per matrix (--image, --modelgroup, \
         --model, --changed-since)"
    )]
    DoesNotFit {
        limit: String,
        jobs: u64,
        longest: String,
    },
    #[error("the selection holds no case: there is no Slurm array to submit")]
    NothingForSlurm,
}

/// What `matrix` takes from the command line, as plain values.
#[derive(Debug, Clone)]
pub struct MatrixConfig {
    pub wanted: Wanted,
    /// The selection as words of a job's command line (without `--only-image` for
    /// `--per-image`, whose jobs each get one).
    pub selection_words: Vec<String>,
    pub per_image: bool,
    pub shards: Option<u64>,
    /// `--max-job-time`: the number of shards is the least whose jobs fit it.
    pub max_job_time: Option<std::time::Duration>,
    pub durations: Option<std::path::PathBuf>,
    /// The run flags added to every job (after `--`).
    pub run_words: Vec<String>,
    /// Parses a job's whole command line as a run would, so a typo fails here and not in
    /// every CI job.
    pub check_job: fn(&[String]) -> Result<(), String>,
    /// `--slurm`: print an sbatch script (an array over the shards, then a merge job) instead
    /// of the JSON; it holds the command line that made it.
    pub slurm: Option<String>,
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

/// Prints the jobs of the matrix.
pub fn run(config: MatrixConfig) -> anyhow::Result<ExitCode> {
    let git_timeout = crate::config::knobs::helper_timeout(|name| std::env::var_os(name))?;
    super::with_signals(|_, cancel| {
        let git = GitRun {
            timeout: git_timeout.unwrap_or(crate::select::changed_since::GIT_TIMEOUT),
            cancel: cancel.clone(),
        };
        let code = plan(&config, git);
        super::interrupted_early(cancel).map_or(code, Ok)
    })
}

/// `git` is how `--changed-since` runs git.
fn plan(args: &MatrixConfig, git: GitRun) -> anyhow::Result<ExitCode> {
    let options = PlanOptions {
        git,
        rerun: super::run::rerun_of(&args.wanted)?,
        ..PlanOptions::default()
    };
    let Inputs { cases, .. } = Inputs::load(&args.wanted, options)?;
    let base = args.selection_words.clone();
    let durations = match &args.durations {
        Some(path) => Some(crate::report::junit::durations::load(path)?),
        None => None,
    };
    if let (Some(d), Some(path)) = (&durations, &args.durations) {
        if !d.has_times() {
            crate::events::note(format!(
                "matrix: `{}` records no case's time, so there is no median to \
                 count from: every case counts the same",
                path.display()
            ));
        }
    }
    let jobs: Vec<(String, Vec<String>, Vec<&Case>)> = if args.per_image {
        per_image(&cases, &base)?
    } else {
        let weights = durations.clone().unwrap_or_else(Durations::none);
        let wanted = match args.max_job_time {
            Some(limit) => fit(&cases, &weights, limit)?,
            None => args.shards.unwrap_or(1),
        };
        shards(&cases, &base, wanted, args.durations.as_deref(), &weights)
    };
    if cases.is_empty() {
        crate::events::note("matrix: the selection holds no case: no job");
    }
    if let Some(made_by) = &args.slurm {
        return slurm(args, made_by, &jobs, durations.as_ref());
    }
    let mut include = Vec::new();
    for (name, mut words, share) in jobs {
        words.extend(args.run_words.iter().cloned());
        // Every job's command line must parse as a run does (a typo fails here, not in CI).
        (args.check_job)(&words).map_err(MatrixError::BadJob)?;
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

/// The sbatch script of the shards: one array task per shard, each reading its shard from
/// Slurm (`--partition time:auto`).
fn slurm(
    args: &MatrixConfig,
    made_by: &str,
    jobs: &[(String, Vec<String>, Vec<&Case>)],
    durations: Option<&Durations>,
) -> anyhow::Result<ExitCode> {
    if jobs.is_empty() {
        return Err(MatrixError::NothingForSlurm.into());
    }
    let mut words = args.selection_words.clone();
    words.extend(["--partition".to_string(), "time:auto".to_string()]);
    if let Some(path) = &args.durations {
        words.extend(["--durations".to_string(), path.display().to_string()]);
    }
    words.extend(args.run_words.iter().cloned());
    // As a task runs it: the script adds each task's own report.
    let mut task = words.clone();
    task.extend(["--junit".to_string(), "shard-1.xml".to_string()]);
    (args.check_job)(&task).map_err(MatrixError::BadJob)?;
    for (name, _, share) in jobs {
        describe(name, share, durations.filter(|d| d.has_times()));
    }
    let script = super::sbatch::script(&super::sbatch::Sbatch {
        made_by,
        shards: jobs.len() as u64,
        task_args: &quote(&words),
    });
    print!("{script}");
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
        crate::events::note(format!(
            "matrix: --shards {wanted}, but the selection has {} case(s): {total} \
             job(s)",
            cases.len()
        ));
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

/// A shard's expected time: its cases' and one pull of each image it touches.
fn expected_ms(share: &[&Case], d: &Durations) -> u64 {
    let mut suites: Vec<String> = share
        .iter()
        .map(|c| format!("{}:{}", c.runtime, c.image))
        .collect();
    suites.sort_unstable();
    suites.dedup();
    let cases: u64 = share.iter().map(|c| d.weight(&c.name)).sum();
    cases + suites.iter().map(|s| d.pull_ms(s)).sum::<u64>()
}

/// `--max-job-time`: the fewest time shards whose every job is expected to fit the limit, its
/// pulls included (said on stderr). A case whose recorded time alone (with its image's pull)
/// exceeds the limit is warned about by name, and a job that holds only such cases counts as
/// fitting, since no number of jobs helps it. No more jobs than cases, nor than `MAX_SHARDS`.
fn fit(cases: &[Case], d: &Durations, limit: std::time::Duration) -> Result<u64, MatrixError> {
    use crate::config::units::show_duration;
    let show = |ms: u64| show_duration(std::time::Duration::from_millis(ms));
    let limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
    let alone = |c: &Case| expected_ms(&[c], d);
    let over: Vec<&Case> = cases.iter().filter(|c| alone(c) > limit_ms).collect();
    for c in &over {
        crate::events::line(format!(
            "zoo-runner: warning: matrix: {} alone is expected to take about {} (its recorded \
             time, and its image's pull), more than --max-job-time {}: its job will run over \
             (give it a longer --timeout in the spec, or leave it out)",
            c.name,
            show(alone(c)),
            show_duration(limit)
        ));
    }
    let most = (cases.len() as u64).clamp(1, MAX_SHARDS);
    let total: u64 = cases.iter().map(|c| d.weight(&c.name)).sum();
    let least = total.div_ceil(limit_ms.max(1)).clamp(1, most);
    let mut longest = 0;
    for n in least..=most {
        let shard_of = inputs::time_shards(cases, n, d);
        longest = 0;
        let mut fits = true;
        for m in 0..n as usize {
            let share: Vec<&Case> = cases
                .iter()
                .zip(&shard_of)
                .filter(|(_, s)| **s == m)
                .map(|(c, _)| c)
                .collect();
            let ms = expected_ms(&share, d);
            let only_over =
                !share.is_empty() && share.iter().all(|c| over.iter().any(|o| o.name == c.name));
            if !only_over {
                longest = longest.max(ms);
            }
            fits &= ms <= limit_ms || only_over;
        }
        if fits {
            crate::events::note(format!(
                "matrix: --max-job-time {}: {n} job(s), the longest expected to take about {} \
                 with its pulls{}",
                show_duration(limit),
                show(longest),
                if over.is_empty() {
                    ""
                } else {
                    " (but those of the models named above)"
                }
            ));
            return Ok(n);
        }
    }
    Err(MatrixError::DoesNotFit {
        limit: show_duration(limit),
        jobs: most,
        longest: show(longest),
    })
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
        let show = |ms| crate::config::units::show_duration(std::time::Duration::from_millis(ms));
        let ms: u64 = share.iter().map(|c| d.weight(&c.name)).sum();
        line.push_str(&format!("; about {} by --durations", show(ms)));
        let pulls = expected_ms(share, d) - ms;
        if pulls > 0 {
            line.push_str(&format!(", and {} of pulls", show(pulls)));
        }
    }
    crate::events::line(line);
}

/// POSIX-shell quoting of each word, joined by spaces.
pub fn quote(words: &[String]) -> String {
    words
        .iter()
        .map(|w| shell_words::quote(w).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
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
}
