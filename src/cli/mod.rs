//! The command line: our flags, with libtest-mimic's (`--list`, `--exact`, `--skip`,
//! `--test-threads`, a name filter, ...) flattened in beside them.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::app::cache::CacheRuntime;
use crate::app::merge::MergeConfig;
use crate::app::run::RunConfig;
use crate::app::Command as AppCommand;
use crate::config::units::{
    check_max_duration, parse_duration, parse_positive_duration, parse_size_within, UnitError,
    MAX_DURATION,
};
use crate::partition::{PartitionArg, MAX_SHARDS};
use crate::record::RuntimeName;
use crate::report::display::face::Format;
use crate::report::display::{Color, Face};
use crate::report::junit::Flavor;
use crate::run::stage::MAX_PULL_AHEAD;
use crate::select::filter::NameFilter;
use crate::select::inputs::Wanted;
pub use crate::select::inputs::DEFAULT_SPEC;

mod matrix;

/// The most test threads: each runs a container, and more than this is a typo.
pub const MAX_TEST_THREADS: usize = 256;
/// The most reruns of a failing case.
pub const MAX_RETRIES: u32 = 100;
/// The longest grace period between SIGTERM and SIGKILL.
pub const MAX_GRACE: Duration = Duration::from_secs(3600);
/// The most output kept at each end of a stream (held in memory while a case runs).
pub const MAX_KEEP: u64 = 1 << 30;

fn parse_timeout(text: &str) -> Result<Duration, UnitError> {
    parse_positive_duration(text, "--timeout", MAX_DURATION)
}

/// Caches may lie unused for years; more than ten is a typo.
const MAX_UNUSED_FOR: Duration = Duration::from_secs(10 * 366 * 24 * 3600);

fn parse_unused_for(text: &str) -> Result<Duration, UnitError> {
    parse_positive_duration(text, "--unused-for", MAX_UNUSED_FOR)
}

fn parse_download_timeout(text: &str) -> Result<Duration, UnitError> {
    parse_positive_duration(text, "--download-timeout", MAX_DURATION)
}

fn parse_max_job_time(text: &str) -> Result<Duration, UnitError> {
    parse_positive_duration(text, "--max-job-time", MAX_DURATION)
}

fn parse_slow_after(text: &str) -> Result<Duration, UnitError> {
    parse_positive_duration(text, "--slow-after", MAX_DURATION)
}

/// Zero is allowed here: SIGKILL right after SIGTERM.
fn parse_grace(text: &str) -> Result<Duration, UnitError> {
    check_max_duration(text, parse_duration(text)?, "--grace", MAX_GRACE)
}

fn parse_keep(text: &str) -> Result<u64, UnitError> {
    parse_size_within(text, "--keep-output", 1, MAX_KEEP)
}

fn parse_pull_ahead(text: &str) -> Result<usize, String> {
    let n: usize = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a whole number from 0 to {MAX_PULL_AHEAD}"))?;
    if n > MAX_PULL_AHEAD {
        return Err(format!(
            "`{text}` is too many: --pull-ahead can be at most {MAX_PULL_AHEAD} \
             (each image pulled ahead takes its size on disk)"
        ));
    }
    Ok(n)
}

fn parse_retries(text: &str) -> Result<u32, String> {
    let n: u32 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a whole number from 0 to {MAX_RETRIES}"))?;
    if n > MAX_RETRIES {
        return Err(format!(
            "`{text}` is too many: --retries can be at most {MAX_RETRIES}"
        ));
    }
    Ok(n)
}

fn parse_infra_retries(text: &str) -> Result<u32, String> {
    parse_retries(text).map_err(|e| e.replace("--retries", "--infra-retries"))
}

/// Checks on libtest's own flags, which come with their own parsers.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CliError {
    #[error("--test-threads 0 runs nothing: give 1 or more")]
    ZeroThreads,
    #[error("--test-threads {0} is too many: at most {MAX_TEST_THREADS} (each runs a container)")]
    TooManyThreads(usize),
    #[error("--logfile `{path}` cannot be created: {why}")]
    Logfile { path: String, why: String },
}

/// `--runtime`: one runtime by name, or `all` of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeChoice {
    /// As given (`docker`, `all`).
    pub text: String,
    pub names: Vec<RuntimeName>,
}

/// What `--runtime` takes when it is not given.
pub const DEFAULT_RUNTIME: &str = "docker";

fn parse_runtime(text: &str) -> Result<RuntimeChoice, String> {
    let names = match text.trim() {
        "all" => crate::runtime::NAMES.to_vec(),
        name => match crate::runtime::by_name(name) {
            Some(one) => vec![one],
            None => {
                return Err(format!(
                    "`{text}` is no runtime: give {}",
                    runtime_choices()
                ))
            }
        },
    };
    Ok(RuntimeChoice {
        text: text.trim().to_string(),
        names,
    })
}

fn default_runtime() -> RuntimeChoice {
    parse_runtime(DEFAULT_RUNTIME).unwrap_or(RuntimeChoice {
        text: DEFAULT_RUNTIME.into(),
        names: Vec::new(),
    })
}

/// `docker, singularity or all`.
fn runtime_choices() -> String {
    let names: Vec<&str> = crate::runtime::NAMES.iter().map(|n| n.as_str()).collect();
    format!("{} or all", names.join(", "))
}

const ABOUT: &str =
    "Runs each model's example prediction inside its container and reports, per model, what broke.";

/// Which cases: the flags a run and `matrix` share.
#[derive(Debug, Clone, Args)]
pub struct SelectionArgs {
    /// Test every model an image serves (one per group on shared images). Repeat or comma-list.
    #[arg(long, value_name = "IMAGE", value_delimiter = ',')]
    pub image: Vec<String>,

    /// Test exactly these models. Repeat or comma-list.
    #[arg(long, value_name = "MODEL", value_delimiter = ',')]
    pub model: Vec<String>,

    /// Test the models of these groups. Repeat or comma-list.
    #[arg(
        long,
        alias = "model-group",
        value_name = "GROUP",
        value_delimiter = ','
    )]
    pub modelgroup: Vec<String>,

    /// On shared images, test every model rather than one per group.
    #[arg(long)]
    pub all_models: bool,

    /// Test the `-slim` variant of each image.
    #[arg(long)]
    pub slim: bool,

    /// Folder with the zoo's JSON catalogs (default: the one the spec names).
    #[arg(long, value_name = "DIR")]
    pub catalog: Option<PathBuf>,

    /// How a zoo's model is tested (TOML).
    #[arg(long, value_name = "FILE", default_value = DEFAULT_SPEC)]
    pub spec: PathBuf,

    /// Which runtime runs the cases (its name, or `all`).
    #[arg(long, value_name = "RUNTIME", value_parser = parse_runtime, default_value = DEFAULT_RUNTIME)]
    pub runtime: RuntimeChoice,

    /// Keep only the selected cases that run in these images (narrows; `matrix --per-image`
    /// gives each job one). Repeat or comma-list.
    #[arg(long, value_name = "IMAGE", value_delimiter = ',')]
    pub only_image: Vec<String>,

    /// Keep only the models whose files changed between REV and HEAD of --models-repo
    /// (narrows the other selection flags).
    #[arg(long, value_name = "REV", requires = "models_repo")]
    pub changed_since: Option<String>,

    /// A checkout of the zoo's models repository (for Kipoi, a clone of kipoi/models), for
    /// --changed-since.
    #[arg(long, value_name = "DIR", requires = "changed_since")]
    pub models_repo: Option<PathBuf>,

    /// Keep only the selected cases that failed, errored, timed out or did not run in this
    /// earlier JUnit report (a file, a merged report, or a folder searched for *.xml).
    #[arg(long, value_name = "REPORT")]
    pub rerun_failed: Option<PathBuf>,

    /// With --rerun-failed, also rerun the cases that passed there only after a failed attempt.
    #[arg(long, requires = "rerun_failed")]
    pub rerun_failed_include_flaky: bool,
}

impl SelectionArgs {
    /// The selection given before a subcommand joined with the one given after it (`zoo-runner
    /// --spec s.toml cache warm --model M`): lists add up, switches add up, and a flag with one
    /// value may be given on one side only (a default counts as not given).
    pub fn joined(mut self, after: SelectionArgs) -> Result<SelectionArgs, WarmError> {
        fn one<T: PartialEq + std::fmt::Debug>(
            flag: &'static str,
            before: T,
            after: T,
            unset: &T,
            show: impl Fn(&T) -> String,
        ) -> Result<T, WarmError> {
            match (before == *unset, after == *unset) {
                (_, true) => Ok(before),
                (true, false) => Ok(after),
                (false, false) if before == after => Ok(before),
                (false, false) => Err(WarmError::Twice {
                    flag,
                    before: show(&before),
                    after: show(&after),
                }),
            }
        }
        let path = |p: &PathBuf| p.display().to_string();
        let opt_path = |p: &Option<PathBuf>| p.as_ref().map(path).unwrap_or_default();
        self.image.extend(after.image);
        self.model.extend(after.model);
        self.modelgroup.extend(after.modelgroup);
        self.only_image.extend(after.only_image);
        self.all_models |= after.all_models;
        self.slim |= after.slim;
        self.rerun_failed_include_flaky |= after.rerun_failed_include_flaky;
        self.rerun_failed = one(
            "rerun-failed",
            self.rerun_failed,
            after.rerun_failed,
            &None,
            opt_path,
        )?;
        self.spec = one(
            "spec",
            self.spec,
            after.spec,
            &PathBuf::from(DEFAULT_SPEC),
            path,
        )?;
        self.catalog = one("catalog", self.catalog, after.catalog, &None, opt_path)?;
        self.runtime = one(
            "runtime",
            self.runtime,
            after.runtime,
            &default_runtime(),
            |r| r.text.clone(),
        )?;
        self.changed_since = one(
            "changed-since",
            self.changed_since,
            after.changed_since,
            &None,
            |r| r.clone().unwrap_or_default(),
        )?;
        self.models_repo = one(
            "models-repo",
            self.models_repo,
            after.models_repo,
            &None,
            opt_path,
        )?;
        Ok(self)
    }

    /// The selection as the planner takes it.
    pub fn wanted(&self) -> Wanted {
        Wanted {
            images: self.image.clone(),
            models: self.model.clone(),
            groups: self.modelgroup.clone(),
            all_models: self.all_models,
            slim: self.slim,
            catalog: self.catalog.clone(),
            spec: self.spec.clone(),
            runtimes: self.runtime.names.clone(),
            only_images: self.only_image.clone(),
            changed_since: self.changed_since.clone().zip(self.models_repo.clone()),
            rerun_failed: self.rerun_failed.clone(),
            rerun_include_flaky: self.rerun_failed_include_flaky,
        }
    }

    /// The flags that give this selection again, for a job's command line; defaults left out.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        let mut list = |flag: &str, values: &[String]| {
            if !values.is_empty() {
                args.push(flag.to_string());
                args.push(values.join(","));
            }
        };
        list("--image", &self.image);
        list("--model", &self.model);
        list("--modelgroup", &self.modelgroup);
        list("--only-image", &self.only_image);
        if self.all_models {
            args.push("--all-models".into());
        }
        if self.slim {
            args.push("--slim".into());
        }
        if let Some(dir) = &self.catalog {
            args.extend(["--catalog".into(), dir.display().to_string()]);
        }
        if self.spec != std::path::Path::new(DEFAULT_SPEC) {
            args.extend(["--spec".into(), self.spec.display().to_string()]);
        }
        if self.runtime != default_runtime() {
            args.extend(["--runtime".into(), self.runtime.text.clone()]);
        }
        if let (Some(rev), Some(repo)) = (&self.changed_since, &self.models_repo) {
            args.extend([
                "--changed-since".into(),
                rev.clone(),
                "--models-repo".into(),
                repo.display().to_string(),
            ]);
        }
        if let Some(report) = &self.rerun_failed {
            args.extend(["--rerun-failed".into(), report.display().to_string()]);
        }
        if self.rerun_failed_include_flaky {
            args.push("--rerun-failed-include-flaky".into());
        }
        args
    }
}

fn parse_shards(text: &str) -> Result<u64, String> {
    let n: u64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a whole number from 1 to {MAX_SHARDS}"))?;
    match n {
        0 => Err("0 shards run nothing: give 1 or more".to_string()),
        n if n > MAX_SHARDS => Err(format!(
            "{n} is too many: GitHub runs at most {MAX_SHARDS} jobs per matrix"
        )),
        n => Ok(n),
    }
}

/// `zoo-runner matrix`: the jobs of a CI matrix, as JSON for GitHub's `fromJSON`.
#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("split").required(true).args(["per_image", "shards", "max_job_time"])))]
pub struct MatrixArgs {
    #[command(flatten)]
    pub selection: SelectionArgs,

    /// One job per image that the selection touches.
    #[arg(long)]
    pub per_image: bool,

    /// N jobs of about equal running time (`--partition time:M/N`), each image in one job
    /// unless it alone takes more than a fair share.
    #[arg(long, value_name = "N", value_parser = parse_shards)]
    pub shards: Option<u64>,

    /// As many jobs of about equal running time as it takes for each job's expected time (its
    /// cases and its pulls, by --durations) to fit this limit, e.g. 6h (GitHub-hosted runners).
    #[arg(long, value_name = "DURATION", value_parser = parse_max_job_time, requires = "durations")]
    pub max_job_time: Option<Duration>,

    /// Earlier JUnit reports (a file or a folder) whose times balance the shards; every job
    /// gets the same path, so the file must be there for each.
    #[arg(long, value_name = "PATH", conflicts_with = "per_image")]
    pub durations: Option<PathBuf>,

    /// Print a bash script that submits the shards to Slurm instead: a job array (each task
    /// reads its shard from SLURM_ARRAY_TASK_ID and writes its own report), then a merge job
    /// that waits for the array (afterany) and writes the merged report and the summary.
    #[arg(long, conflicts_with = "per_image")]
    pub slurm: bool,

    /// Run flags added to every job's arguments, after `--` (e.g. `-- --retries 1`).
    #[arg(last = true, value_name = "RUN FLAGS")]
    pub run_flags: Vec<String>,
}

/// `zoo-runner merge`: one JUnit report from the shards' reports.
#[derive(Debug, Clone, Args)]
pub struct MergeArgs {
    /// Where the merged JUnit report goes.
    #[arg(long, value_name = "PATH")]
    pub junit: PathBuf,

    /// Also write a Markdown summary here.
    #[arg(long, value_name = "PATH")]
    pub summary: Option<PathBuf>,

    /// The merged report's dialect (default: the inputs', which must agree): `extended` also
    /// merges strict and extended reports; `strict` refuses extended ones.
    #[arg(long, value_enum, value_name = "FLAVOR")]
    pub junit_flavor: Option<Flavor>,

    /// The shards' JUnit reports: files, or folders searched for `*.xml`.
    #[arg(value_name = "IN", required = true)]
    pub inputs: Vec<PathBuf>,
}

/// What `zoo-runner SUBCOMMAND` does besides running tests.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the jobs of a CI matrix as one line of JSON: {"include":[{"name","args"}]}.
    Matrix(Box<MatrixArgs>),
    /// Merge the shards' JUnit reports into one (counts recomputed, properties kept).
    Merge(MergeArgs),
    /// The model-data caches (the spec's `caches`): list, prune, warm.
    Cache(CacheArgs),
    /// The SIF folder (--sif-dir): list its SIFs, prune them.
    Sif(SifArgs),
}

#[derive(Debug, Args)]
pub struct SifArgs {
    #[command(subcommand)]
    pub command: SifCommand,

    /// The SIF folder, given after `sif` (`sif list --sif-dir D`); `--sif-dir` before `sif` is
    /// the same folder.
    #[arg(long, value_name = "DIR", global = true)]
    pub sif_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum SifCommand {
    /// Show each file of the SIF folder: SIFs (from the catalog or built) with their size,
    /// when a runner last took them and whether one uses them now, and what runs left.
    List,
    /// Remove quarantined copies, md5 records whose SIF is gone and killed builds' folders;
    /// SIFs a runner uses or fetches are kept.
    Prune {
        /// Remove every SIF of the folder (and unfinished downloads).
        #[arg(long)]
        all: bool,
        /// Also remove the SIFs (and unfinished downloads) no runner took for this long, e.g.
        /// 30d.
        #[arg(long, value_name = "DURATION", value_parser = parse_unused_for)]
        unused_for: Option<Duration>,
    },
}

#[derive(Debug, Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    pub command: CacheCommand,

    /// The cache folder, given after `cache` (`cache list --cache-dir D`); `--cache-dir` before
    /// `cache` is the run's own flag. Only `cache` and a run take it: `matrix` and `merge` use
    /// no cache.
    #[arg(long, value_name = "DIR", global = true)]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Show each cache of the cache folder: runtime, image, path, size, last used.
    List {
        /// Which caches: Docker volumes, Apptainer folders, or both.
        #[arg(long, value_enum, default_value_t = CacheRuntime::All)]
        runtime: CacheRuntime,
    },
    /// Remove the caches of images the Docker daemon no longer has, and of SIFs no longer
    /// known (no SIF file that used the cache is still there with its md5); a cache a running
    /// case holds is kept. Also removes the quarantined SIFs (`NAME.sif.bad`) of --sif-dir.
    Prune {
        /// Remove every cache of the cache folder.
        #[arg(long)]
        all: bool,
        /// Also remove the caches no case has used for this long, e.g. 30d.
        #[arg(long, value_name = "DURATION", value_parser = parse_unused_for)]
        unused_for: Option<Duration>,
        /// Which caches: Docker volumes, Apptainer folders, or both.
        #[arg(long, value_enum, default_value_t = CacheRuntime::All)]
        runtime: CacheRuntime,
    },
    /// Run the selection once with the network on, only to fill the caches, so that a later
    /// `--offline` run can pass. Run flags (--junit, --test-threads, ...) go before `cache`;
    /// selection flags before `cache` or after `warm`.
    Warm(Box<WarmArgs>),
}

#[derive(Debug, Args)]
pub struct WarmArgs {
    #[command(flatten)]
    pub selection: SelectionArgs,
}

/// What `cache warm` cannot be combined with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WarmError {
    #[error("`cache warm` fills caches: it cannot run with --{0}")]
    Conflict(&'static str),
    #[error(
        "--{flag} is given before `cache` as `{before}` and after `warm` as `{after}`: give it once"
    )]
    Twice {
        flag: &'static str,
        before: String,
        after: String,
    },
}

#[derive(Debug, Parser)]
#[command(
    name = "zoo-runner",
    after_help = "Exit codes: 0 all passed; 101 a case failed, errored or timed out; 2 usage or \
                  input error (nothing ran); 3 the container runtime cannot be used (the Docker \
                  daemon could not be reached or was lost; Apptainer is missing, not a program, \
                  or its --version fails); 4 the cases ran but the JUnit report could not be \
                  written; 5 --require-tests and no case was selected; 130/143/129 interrupted \
                  by SIGINT/SIGTERM/SIGHUP."
)]
pub struct Cli {
    /// A subcommand; without one, `zoo-runner [FLAGS]` runs the tests.
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub selection: SelectionArgs,

    /// Where the JUnit XML report goes.
    #[arg(long, value_name = "PATH", default_value = "reports/junit.xml")]
    pub junit: PathBuf,

    /// Stop a case after this long (overrides the spec), e.g. 90s, 30m, 1h30m; at most 30d.
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    pub timeout: Option<Duration>,

    /// After a timeout or interruption, how long between SIGTERM and SIGKILL (0s to 1h).
    #[arg(long, value_name = "DURATION", value_parser = parse_grace, default_value = "10s")]
    pub grace: Duration,

    /// Report a case as slow after this long, and again each period.
    #[arg(long, value_name = "DURATION", value_parser = parse_slow_after, default_value = "60s")]
    pub slow_after: Duration,

    /// Bytes of each output stream kept at its head and at its tail, e.g. 64k, 1m (at most 1g).
    #[arg(long, value_name = "SIZE", value_parser = parse_keep, default_value = "64k")]
    pub keep_output: u64,

    /// Keep the output of passing cases in the report too (by default only cases that did not
    /// pass keep theirs).
    #[arg(long)]
    pub store_success_output: bool,

    /// JUnit dialect: `strict` validates against Jenkins' junit-10.xsd; `extended` adds
    /// per-case properties inside each testcase.
    #[arg(long, value_enum, value_name = "FLAVOR", default_value_t = Flavor::Strict)]
    pub junit_flavor: Flavor,

    /// Rerun a failed or errored case up to N more times (at most 100); a later pass is
    /// reported flaky.
    #[arg(long, value_name = "N", value_parser = parse_retries, default_value = "0")]
    pub retries: u32,

    /// Rerun a case whose output says the outside world failed (the spec's infra_failures: a
    /// throttled or unreachable download) up to N more times, after pauses that double (30s,
    /// 1m, ... with jitter); apart from --retries (at most 100).
    #[arg(long, value_name = "N", value_parser = parse_infra_retries, default_value = "2")]
    pub infra_retries: u32,

    /// Start no new case after the first failure; the rest are reported not run.
    #[arg(long)]
    pub fail_fast: bool,

    /// Pull the next N images while the current image's cases run (0: pull each image when its
    /// first case needs it).
    #[arg(long, value_name = "N", value_parser = parse_pull_ahead, default_value = "1")]
    pub pull_ahead: usize,

    /// Remove each image this run pulled after its last case (images that were there before
    /// the run are kept).
    #[arg(long)]
    pub prune_images: bool,

    /// Remove each SIF this run downloaded or built after its last case (SIFs that were in
    /// --sif-dir before the run, or that another runner uses, are kept).
    #[arg(long)]
    pub prune_sifs: bool,

    /// Fail (exit 5) when the selection, after filters and partition, holds no case.
    #[arg(long)]
    pub require_tests: bool,

    /// Keep one shard of the cases for a CI matrix: hash:M/N (stable by name), count:M/N, or
    /// time:M/N (balanced by --durations, images kept together); SCHEME:auto reads M and N from
    /// CI_NODE_INDEX/CI_NODE_TOTAL (GitLab's parallel:).
    #[arg(long, value_name = "SCHEME:M/N")]
    pub partition: Option<PartitionArg>,

    /// Earlier JUnit reports (a file or a folder) whose times balance --partition time:M/N.
    #[arg(long, value_name = "PATH")]
    pub durations: Option<PathBuf>,

    /// Also write a Markdown summary of the run here (default: append to $GITHUB_STEP_SUMMARY
    /// when it is set).
    #[arg(long, value_name = "PATH")]
    pub summary: Option<PathBuf>,

    /// Folder for downloaded SIF files (default: $SINGULARITY_PULL_FOLDER, else a user cache).
    #[arg(long, value_name = "DIR")]
    pub sif_dir: Option<PathBuf>,

    /// The apptainer or singularity binary (default: `apptainer`, else `singularity`, on PATH).
    #[arg(long, value_name = "PATH")]
    pub singularity_bin: Option<PathBuf>,

    /// For a model with no SIF in the catalog, build one with `pull docker://IMAGE`.
    #[arg(long)]
    pub sif_from_docker: bool,

    /// Scratch space for --sif-from-docker builds: the saved image and Apptainer's unpacked
    /// one (default: $APPTAINER_TMPDIR, else the SIF folder; never /tmp).
    #[arg(long, value_name = "DIR")]
    pub tmp_dir: Option<PathBuf>,

    /// How long fetching one SIF may take in all: every download attempt and the pauses
    /// between them, or a --sif-from-docker build (at most 30d). A stalled server is given up on
    /// sooner: 60s of silence per attempt, 5 attempts.
    #[arg(long, value_name = "DURATION", value_parser = parse_download_timeout, default_value = "2h")]
    pub download_timeout: Duration,

    /// Folder of the model-data caches: their locks, Apptainer folders, and the namespace of
    /// the Docker volumes (default: $XDG_CACHE_HOME/zoo-runner/caches or
    /// ~/.cache/zoo-runner/caches).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Run without the spec's caches: every case starts from the image alone.
    #[arg(long)]
    pub no_cache: bool,

    /// Run every case with network `none`: only what the image and the caches hold is there
    /// (fill the caches first with `cache warm`).
    #[arg(long)]
    pub offline: bool,

    /// Keep each case's predictions (the spec's `[predictions]`) under DIR, one file per
    /// runtime and model: DIR/RUNTIME/MODEL.EXT.
    #[arg(long, value_name = "DIR")]
    pub save_predictions: Option<PathBuf>,

    /// Compare each case's predictions with those --save-predictions kept in DIR (this
    /// runtime's, else another runtime's), instead of the spec's reference.
    #[arg(long, value_name = "DIR")]
    pub compare_predictions: Option<PathBuf>,

    #[command(flatten)]
    pub libtest: libtest_mimic::Arguments,
}

impl Cli {
    /// The clap command, with our own help layout: libtest-mimic's flattened arguments bring a
    /// help template of their own that would hide our name and description.
    pub fn command_with_help() -> clap::Command {
        use clap::CommandFactory;
        Cli::command()
            .help_template(
                "{name} {version}\n{about}\n\n{usage-heading} {usage}\n\n{all-args}{after-help}",
            )
            .version(env!("CARGO_PKG_VERSION"))
            .disable_version_flag(false)
            .about(ABOUT)
            .long_about(ABOUT)
            // libtest's own help texts say what they do for Rust tests; say what they do here.
            .mut_arg("ignored", |a| {
                a.help("Run only the cases the spec marks `skip` (they are reported as run)")
            })
            .mut_arg("include_ignored", |a| {
                a.help("Run every case, the ones the spec marks `skip` too")
            })
            .mut_arg("bench", |a| {
                a.help(
                    "Accepted for cargo habits: the cases run as usual (there are no benchmarks)",
                )
            })
            .mut_arg("test", |a| {
                a.help("Accepted for cargo habits: the cases run as usual")
            })
    }

    /// Parses the process's arguments; prints help or a usage error (exit 2) as clap does.
    pub fn parse_args() -> Self {
        let matches = Self::command_with_help().get_matches();
        Self::from_matches(&matches).unwrap_or_else(|e| e.exit())
    }

    /// The parsed command line. Flags before `matrix` or `merge` are refused (they would be
    /// dropped silently); `cache` takes the run's flags before it (`--cache-dir`, and the run
    /// flags of `cache warm`).
    pub fn from_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        use clap::FromArgMatches;
        if let Some(sub @ ("matrix" | "merge")) = matches.subcommand_name() {
            let command = Self::command_with_help();
            // Flags given on the command line, by their `--long` name (groups are no flags).
            let given: Vec<String> = command
                .get_arguments()
                .filter(|arg| {
                    matches
                        .try_contains_id(arg.get_id().as_str())
                        .unwrap_or(false)
                        && matches.value_source(arg.get_id().as_str())
                            == Some(clap::parser::ValueSource::CommandLine)
                })
                .map(|arg| match arg.get_long() {
                    Some(long) => format!("--{long}"),
                    None => arg.get_id().to_string().to_uppercase(),
                })
                .collect();
            if !given.is_empty() {
                let message = format!(
                    "arguments before `{sub}` would be ignored ({}): put them after it \
                     (`zoo-runner {sub} ...`)\n",
                    given.join(", ")
                );
                return Err(command
                    .clone()
                    .error(clap::error::ErrorKind::ArgumentConflict, message));
            }
        }
        let mut cli = Self::from_arg_matches(matches)?;
        // `--cache-dir` after `cache` (or after its subcommand) is the same folder.
        if let Some(Command::Cache(args)) = &mut cli.command {
            if let Some(dir) = args.cache_dir.take() {
                cli.cache_dir = Some(dir);
            }
        }
        // So is `--sif-dir` after `sif`.
        if let Some(Command::Sif(args)) = &mut cli.command {
            if let Some(dir) = args.sif_dir.take() {
                cli.sif_dir = Some(dir);
            }
        }
        Ok(cli)
    }

    /// How many cases run at once: `--test-threads`, else one (containers are heavy).
    pub fn threads(&self) -> usize {
        self.libtest.test_threads.unwrap_or(1)
    }

    /// What the command line asks for, as the app takes it, after the checks clap cannot make
    /// (libtest-mimic's flags bring their own parsers).
    pub fn into_command(mut self) -> anyhow::Result<AppCommand> {
        let mut warming = false;
        match self.command.take() {
            Some(Command::Matrix(args)) => {
                return Ok(AppCommand::Matrix(Box::new(matrix::config(*args)?)))
            }
            Some(Command::Merge(args)) => {
                return Ok(AppCommand::Merge(MergeConfig {
                    junit: args.junit,
                    summary: args.summary,
                    junit_flavor: args.junit_flavor,
                    inputs: args.inputs,
                }))
            }
            Some(Command::Cache(args)) => match args.command {
                CacheCommand::List { runtime } => {
                    return Ok(AppCommand::CacheList {
                        dir: self.cache_dir(),
                        runtime,
                    })
                }
                CacheCommand::Prune {
                    all,
                    runtime,
                    unused_for,
                } => {
                    return Ok(AppCommand::CachePrune {
                        dir: self.cache_dir(),
                        sif_dir: self
                            .sif_dir
                            .clone()
                            .unwrap_or_else(crate::store::sif::SifCache::default_dir),
                        all,
                        unused_for,
                        runtime,
                    })
                }
                CacheCommand::Warm(warm) => {
                    self = self.into_warm(*warm)?;
                    warming = true;
                }
            },
            Some(Command::Sif(args)) => {
                let dir = self
                    .sif_dir
                    .clone()
                    .unwrap_or_else(crate::store::sif::SifCache::default_dir);
                return Ok(match args.command {
                    SifCommand::List => AppCommand::SifList { dir },
                    SifCommand::Prune { all, unused_for } => AppCommand::SifPrune {
                        dir,
                        all,
                        unused_for,
                    },
                });
            }
            None => {}
        }
        self.validate()?;
        Ok(AppCommand::Run(Box::new(self.run_config(warming))))
    }

    fn run_config(self, warming: bool) -> RunConfig {
        let libtest = &self.libtest;
        let format = match (libtest.quiet, libtest.format) {
            (true, _) => Format::Terse,
            (false, Some(libtest_mimic::FormatSetting::Terse)) => Format::Terse,
            (false, Some(libtest_mimic::FormatSetting::Json)) => Format::Json,
            (false, _) => Format::Pretty,
        };
        let color = match libtest.color {
            Some(libtest_mimic::ColorSetting::Always) => Color::Always,
            Some(libtest_mimic::ColorSetting::Never) => Color::Never,
            _ => Color::Auto,
        };
        RunConfig {
            wanted: self.selection.wanted(),
            names: NameFilter {
                filter: libtest.filter.clone(),
                exact: libtest.exact,
                skip: libtest.skip.clone(),
            },
            face: Face {
                format,
                color,
                logfile: libtest.logfile.clone().map(PathBuf::from),
            },
            list: libtest.list,
            list_json: libtest.list && libtest.format == Some(libtest_mimic::FormatSetting::Json),
            junit: self.junit.clone(),
            junit_flavor: self.junit_flavor,
            summary: self.summary.clone(),
            timeout: self.timeout,
            grace: self.grace,
            slow_after: self.slow_after,
            keep_output: usize::try_from(self.keep_output).unwrap_or(usize::MAX),
            store_success_output: self.store_success_output,
            retries: self.retries,
            infra_retries: self.infra_retries,
            fail_fast: self.fail_fast,
            threads: self.threads(),
            pull_ahead: self.pull_ahead,
            prune_images: self.prune_images,
            prune_sifs: self.prune_sifs,
            require_tests: self.require_tests,
            partition: self.partition,
            durations: self.durations.clone(),
            only_skipped: libtest.ignored,
            run_skipped: self.run_skipped(),
            sif_dir: self.sif_dir.clone(),
            singularity_bin: self.singularity_bin.clone(),
            sif_from_docker: self.sif_from_docker,
            tmp_dir: self.tmp_dir.clone(),
            download_timeout: self.download_timeout,
            cache_dir: self.cache_dir(),
            no_cache: self.no_cache,
            offline: self.offline,
            warming,
            save_predictions: self.save_predictions.clone(),
            compare_predictions: self.compare_predictions.clone(),
        }
    }

    /// The cache folder: `--cache-dir`, else the default.
    pub fn cache_dir(&self) -> PathBuf {
        self.cache_dir
            .clone()
            .unwrap_or_else(crate::store::caches::default_dir)
    }

    /// Turns this run into `cache warm`: the warm subcommand's selection, caches on, network on.
    pub fn into_warm(mut self, warm: WarmArgs) -> Result<Cli, WarmError> {
        if self.offline {
            return Err(WarmError::Conflict("offline"));
        }
        if self.no_cache {
            return Err(WarmError::Conflict("no-cache"));
        }
        self.selection = self.selection.joined(warm.selection)?;
        Ok(self)
    }

    /// The numbers libtest-mimic's own flags take, checked as a run checks them (a matrix checks
    /// its jobs' flags with this, without touching files).
    pub fn validate_numbers(&self) -> Result<(), CliError> {
        match self.libtest.test_threads {
            Some(0) => Err(CliError::ZeroThreads),
            Some(n) if n > MAX_TEST_THREADS => Err(CliError::TooManyThreads(n)),
            _ => Ok(()),
        }
    }

    /// `--ignored` or `--include-ignored`: run the cases the spec marks `skip`.
    pub fn run_skipped(&self) -> bool {
        self.libtest.ignored || self.libtest.include_ignored
    }

    /// Checks what clap's parsers cannot (libtest-mimic's flags bring their own), before
    /// anything runs.
    pub fn validate(&self) -> Result<(), CliError> {
        self.validate_numbers()?;
        if let Some(path) = &self.libtest.logfile {
            // Found now, before the plan is made, rather than when the display opens it.
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| CliError::Logfile {
                    path: path.clone(),
                    why: e.to_string(),
                })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        try_parse(args).unwrap()
    }

    fn try_parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let matches = Cli::command_with_help()
            .try_get_matches_from(std::iter::once("zoo-runner").chain(args.iter().copied()))?;
        Cli::from_matches(&matches)
    }

    #[test]
    fn lists_and_repeats_both_work() {
        let cli = parse(&[
            "--model=KipoiSplice/4,Basenji",
            "--model",
            "HAL",
            "--modelgroup=HAL,Basset",
        ]);
        assert_eq!(cli.selection.model, ["KipoiSplice/4", "Basenji", "HAL"]);
        assert_eq!(cli.selection.modelgroup, ["HAL", "Basset"]);
    }

    #[test]
    fn libtest_flags_sit_beside_ours() {
        let cli = parse(&[
            "--list",
            "--exact",
            "docker::HAL",
            "--skip",
            "Basset",
            "--test-threads",
            "2",
            "--slim",
        ]);
        assert!(cli.libtest.list && cli.libtest.exact && cli.selection.slim);
        assert_eq!(cli.libtest.filter.as_deref(), Some("docker::HAL"));
        assert_eq!(cli.libtest.skip, ["Basset"]);
        assert_eq!(cli.threads(), 2);
        assert_eq!(parse(&[]).threads(), 1);
    }

    #[test]
    fn bad_numbers_are_refused_naming_the_flag() {
        let refused = [
            (&["--timeout", "0s"][..], "--timeout"),
            (&["--timeout", "31d"][..], "--timeout"),
            (&["--timeout", "99999999999999999999h"][..], "too large"),
            (&["--slow-after", "0s"][..], "--slow-after"),
            (&["--slow-after", "0"][..], "--slow-after"),
            (&["--download-timeout", "0s"][..], "--download-timeout"),
            (&["--download-timeout", "31d"][..], "--download-timeout"),
            (
                &["--download-timeout", "99999999999999999999h"][..],
                "too large",
            ),
            (&["--grace", "2h"][..], "--grace"),
            (&["--keep-output", "0"][..], "--keep-output"),
            (&["--keep-output", "2g"][..], "--keep-output"),
            (&["--keep-output", "99999999999999999999g"][..], "too large"),
            (&["--retries", "101"][..], "--retries"),
            (&["--retries", "many"][..], "--retries"),
            (&["--infra-retries", "101"][..], "--infra-retries"),
            (&["--pull-ahead", "17"][..], "--pull-ahead"),
            (&["--pull-ahead=-1"][..], "--pull-ahead"),
            (
                &["--pull-ahead", "99999999999999999999999"][..],
                "--pull-ahead",
            ),
            (&["--partition", "hash:0/0"][..], "--partition"),
        ];
        for (args, want) in refused {
            let err = try_parse(args).unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{args:?}"
            );
            assert_eq!(err.exit_code(), 2, "{args:?}");
            let text = err.to_string();
            assert!(text.contains(want), "{args:?}: {text}");
        }
        assert_eq!(
            parse(&["--test-threads", "0"]).validate(),
            Err(CliError::ZeroThreads)
        );
        assert_eq!(
            parse(&["--test-threads", "100000"]).validate(),
            Err(CliError::TooManyThreads(100000))
        );
        assert_eq!(parse(&["--test-threads", "4"]).validate(), Ok(()));
        let err = parse(&["--logfile", "/nonexistent-dir/run.log"])
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("--logfile"), "{err}");
    }

    #[test]
    fn bench_runs_the_cases_and_ignored_flags_say_what_they_do() {
        let config = parse(&["--bench"]).run_config(false);
        assert_eq!(
            config.names,
            NameFilter::default(),
            "--bench must not turn every case into an ignored one"
        );
        let help = Cli::command_with_help().render_long_help().to_string();
        assert!(
            help.contains("Run only the cases the spec marks `skip`"),
            "{help}"
        );
        assert!(help.contains("Run every case, the ones the spec marks `skip` too"));
    }

    #[test]
    fn durations_and_sizes_parse() {
        let cli = parse(&[
            "--timeout",
            "1h30m",
            "--keep-output",
            "1m",
            "--runtime",
            "all",
        ]);
        assert_eq!(cli.timeout, Some(Duration::from_secs(5400)));
        assert_eq!(cli.keep_output, 1 << 20);
        assert_eq!(cli.selection.runtime.names.len(), 2);
        assert!(try_parse(&["--timeout", "soon"]).is_err());
        assert_eq!(parse(&["--grace", "0s"]).grace, Duration::ZERO);
        assert!(matches!(
            parse(&["--partition", "hash:1/3"]).partition,
            Some(PartitionArg::Fixed(p)) if p.total == 3
        ));
        assert!(try_parse(&["--partition", "hash:4/3"]).is_err());
        let version = try_parse(&["--version"]).unwrap_err();
        assert_eq!(version.kind(), clap::error::ErrorKind::DisplayVersion);
        let help = Cli::command_with_help().render_long_help().to_string();
        assert!(
            help.contains(ABOUT)
                && !help.contains("Command line arguments")
                && help.contains("--modelgroup")
                && help.contains("--exact")
        );
    }
}

#[cfg(test)]
mod cache_command_tests {
    use super::*;

    fn try_parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let matches = Cli::command_with_help()
            .try_get_matches_from(std::iter::once("zoo-runner").chain(args.iter().copied()))?;
        Cli::from_matches(&matches)
    }

    #[test]
    fn arguments_before_matrix_or_merge_are_refused_naming_them() {
        let err =
            try_parse(&["--spec", "x.toml", "--model", "m", "matrix", "--per-image"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let text = err.to_string();
        assert!(
            text.contains("--spec") && text.contains("--model"),
            "{text}"
        );
        assert!(
            !text.contains("SelectionArgs"),
            "groups are not flags: {text}"
        );
        let err = try_parse(&["FILTER", "merge", "--junit", "o.xml", "in.xml"]).unwrap_err();
        assert!(err.to_string().contains("FILTER"), "{err}");
        // After the subcommand they are its own; `cache` keeps the run's flags before it.
        assert!(try_parse(&["matrix", "--spec", "x.toml", "--per-image"]).is_ok());
        assert!(try_parse(&["--cache-dir", "/c", "cache", "list"]).is_ok());
    }

    /// `matrix` and `merge` use no cache: their help does not offer `--cache-dir`, and they
    /// refuse it; a run and every `cache` subcommand take it.
    #[test]
    fn only_runs_and_cache_commands_take_the_cache_folder() {
        let mut command = Cli::command_with_help();
        for sub in ["matrix", "merge"] {
            let help = command
                .find_subcommand_mut(sub)
                .unwrap()
                .render_long_help()
                .to_string();
            assert!(!help.contains("--cache-dir"), "{sub}: {help}");
        }
        let cache = command.find_subcommand_mut("cache").unwrap();
        assert!(cache.render_long_help().to_string().contains("--cache-dir"));
        let list = cache.find_subcommand_mut("list").unwrap();
        assert!(list.render_long_help().to_string().contains("--cache-dir"));
        let err =
            try_parse(&["merge", "--cache-dir", "/c", "--junit", "o.xml", "in.xml"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::UnknownArgument);
        assert!(try_parse(&["matrix", "--per-image", "--cache-dir", "/c"]).is_err());
        let cli = try_parse(&["cache", "--cache-dir", "/e", "list"]).unwrap();
        assert_eq!(cli.cache_dir(), PathBuf::from("/e"));
        let cli = try_parse(&["cache", "warm", "--cache-dir", "/w"]).unwrap();
        assert_eq!(cli.cache_dir(), PathBuf::from("/w"));
        assert_eq!(
            try_parse(&["--cache-dir", "/r"]).unwrap().cache_dir(),
            PathBuf::from("/r")
        );
    }

    fn cache_command(cli: Cli) -> CacheCommand {
        match cli.command {
            Some(Command::Cache(args)) => args.command,
            other => panic!("not `cache`: {other:?}"),
        }
    }

    #[test]
    fn cache_subcommands_parse_with_the_cache_folder_before_or_after() {
        let cli = try_parse(&["cache", "list", "--cache-dir", "/c"]).unwrap();
        assert_eq!(cli.cache_dir(), PathBuf::from("/c"));
        assert!(matches!(
            cache_command(cli),
            CacheCommand::List {
                runtime: CacheRuntime::All
            }
        ));
        let cli = try_parse(&["--cache-dir", "/d", "cache", "prune", "--all"]).unwrap();
        assert_eq!(cli.cache_dir(), PathBuf::from("/d"));
        assert!(matches!(
            cache_command(cli),
            CacheCommand::Prune { all: true, .. }
        ));
        let cli = try_parse(&["cache", "prune", "--runtime", "singularity"]).unwrap();
        assert!(matches!(
            cache_command(cli),
            CacheCommand::Prune {
                all: false,
                runtime: CacheRuntime::Singularity,
                unused_for: None,
            }
        ));
        assert!(
            try_parse(&["cache"]).is_err(),
            "a cache subcommand is required"
        );
        assert!(try_parse(&["cache", "list", "--runtime", "podman"]).is_err());
        // A bare run is still a run.
        assert!(try_parse(&[]).unwrap().command.is_none());
    }

    #[test]
    fn warm_takes_its_selection_after_it_and_refuses_offline_and_no_cache() {
        let warm = |args: &[&str]| {
            let mut cli = try_parse(args).unwrap();
            match cli.command.take() {
                Some(Command::Cache(CacheArgs {
                    command: CacheCommand::Warm(w),
                    ..
                })) => cli.into_warm(*w),
                other => panic!("{other:?}"),
            }
        };
        let cli = warm(&[
            "--test-threads",
            "4",
            "cache",
            "warm",
            "--model",
            "A,B",
            "--spec",
            "s.toml",
        ])
        .unwrap();
        assert_eq!(cli.selection.model, ["A", "B"]);
        assert_eq!(cli.selection.spec, PathBuf::from("s.toml"));
        assert_eq!(cli.threads(), 4);
        assert_eq!(
            warm(&["--offline", "cache", "warm"]).unwrap_err(),
            WarmError::Conflict("offline")
        );
        assert_eq!(
            warm(&["--no-cache", "cache", "warm"]).unwrap_err(),
            WarmError::Conflict("no-cache")
        );
        // Run-wide flags before `cache` are taken as well (people put them first).
        let cli = warm(&[
            "--spec",
            "test-specs/antspynet.toml",
            "--model",
            "A",
            "cache",
            "warm",
            "--model",
            "B",
            "--runtime",
            "all",
        ])
        .unwrap();
        assert_eq!(
            cli.selection.spec,
            PathBuf::from("test-specs/antspynet.toml")
        );
        assert_eq!(cli.selection.model, ["A", "B"]);
        assert_eq!(cli.selection.runtime.text, "all");
        // The same flag on both sides with two values is refused, naming it.
        let err = warm(&["--spec", "a.toml", "cache", "warm", "--spec", "b.toml"]).unwrap_err();
        assert!(
            matches!(&err, WarmError::Twice { flag: "spec", .. }),
            "{err}"
        );
        assert!(err.to_string().contains("a.toml") && err.to_string().contains("b.toml"));
        assert!(warm(&["--spec", "a.toml", "cache", "warm", "--spec", "a.toml"]).is_ok());
    }
}

#[cfg(test)]
mod readme_tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The `--flags` named in the first column of the flag table of docs/usage.md.
    fn readme_flags() -> BTreeSet<String> {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/usage.md"))
            .expect("docs/usage.md is readable");
        let table = readme
            .split("### Flags")
            .nth(1)
            .and_then(|rest| rest.split("\n### ").next())
            .expect("docs/usage.md has a ### Flags section");
        let mut flags = BTreeSet::new();
        for row in table.lines().filter(|l| l.starts_with("| `")) {
            let first = row.split(" | ").next().unwrap_or_default();
            for word in first.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
                if let Some(name) = word.strip_prefix("--").filter(|n| !n.is_empty()) {
                    flags.insert(name.to_string());
                }
            }
        }
        flags
    }

    /// Every long flag `--help` shows.
    fn help_flags() -> BTreeSet<String> {
        Cli::command_with_help()
            .get_arguments()
            .filter(|a| !a.is_hide_set())
            .filter_map(|a| a.get_long().map(str::to_string))
            .chain(["help".to_string(), "version".to_string()])
            .collect()
    }

    #[test]
    fn the_readme_flag_table_and_help_name_the_same_flags() {
        let readme = readme_flags();
        let help = help_flags();
        let undocumented: Vec<_> = help.difference(&readme).collect();
        let unknown: Vec<_> = readme.difference(&help).collect();
        assert!(
            undocumented.is_empty() && unknown.is_empty(),
            "in --help but not in the flag table of docs/usage.md: {undocumented:?}; \
             in docs/usage.md but not in --help: {unknown:?}"
        );
    }
}
