//! `zoo-runner matrix`'s command line: its selection as the planner takes it and as the words of
//! a job, and the run flags after `--` checked once, as a run would check them, before any job
//! is printed.

use clap::FromArgMatches;
use thiserror::Error;

use super::{Cli, MatrixArgs};
use crate::app::matrix::MatrixConfig;

#[derive(Debug, Error)]
pub enum MatrixFlagsError {
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

/// The matrix as the app takes it.
pub fn config(args: MatrixArgs) -> Result<MatrixConfig, MatrixFlagsError> {
    check_run_flags(&args.run_flags)?;
    let selection_words = if args.per_image {
        // Each job's `--only-image` is one of the selection's: it replaces the list.
        let mut selection = args.selection.clone();
        selection.only_image.clear();
        selection.to_args()
    } else {
        args.selection.to_args()
    };
    let slurm = args.slurm.then(|| made_by(&args));
    Ok(MatrixConfig {
        slurm,
        wanted: args.selection.wanted(),
        selection_words,
        per_image: args.per_image,
        shards: args.shards,
        max_job_time: args.max_job_time,
        durations: args.durations,
        run_words: args.run_flags,
        check_job: |words| parse_run(words).map(drop),
    })
}

/// The `matrix --slurm` command line, for the script's header.
fn made_by(args: &MatrixArgs) -> String {
    let mut words = vec!["matrix".to_string(), "--slurm".to_string()];
    if let Some(n) = args.shards {
        words.extend(["--shards".to_string(), n.to_string()]);
    }
    words.extend(args.selection.to_args());
    if let Some(path) = &args.durations {
        words.extend(["--durations".to_string(), path.display().to_string()]);
    }
    if !args.run_flags.is_empty() {
        words.push("--".to_string());
        words.extend(args.run_flags.iter().cloned());
    }
    format!("zoo-runner {}", crate::app::matrix::quote(&words))
}

/// A job's words parsed as a run parses them, with the checks a run makes on its numbers before
/// anything runs (`--test-threads 0` would fail every job).
pub(super) fn parse_run(words: &[String]) -> Result<Cli, String> {
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
fn check_run_flags(flags: &[String]) -> Result<(), MatrixFlagsError> {
    if flags.is_empty() {
        return Ok(());
    }
    let cli = parse_run(flags).map_err(MatrixFlagsError::BadRunFlags)?;
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
        Err(MatrixFlagsError::SelectionInRunFlags(flags_only.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
