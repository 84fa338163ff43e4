//! The command line: our flags, with libtest-mimic's (`--list`, `--exact`, `--skip`,
//! `--test-threads`, a name filter, ...) flattened in beside them.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::partition::Partition;
use crate::plan::RuntimeKind;
use crate::units::{parse_duration, parse_size};

/// The Kipoi test spec, as shipped with the runner.
pub const DEFAULT_SPEC: &str = "test-specs/kipoi.toml";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuntimeChoice {
    Docker,
    Singularity,
    All,
}

impl RuntimeChoice {
    pub fn kinds(self) -> Vec<RuntimeKind> {
        match self {
            RuntimeChoice::Docker => vec![RuntimeKind::Docker],
            RuntimeChoice::Singularity => vec![RuntimeKind::Singularity],
            RuntimeChoice::All => vec![RuntimeKind::Docker, RuntimeKind::Singularity],
        }
    }
}

const ABOUT: &str =
    "Runs each model's example prediction inside its container and reports, per model, what broke.";

#[derive(Debug, Parser)]
#[command(
    name = "zoo-runner",
    after_help = "Exit codes: 0 all passed; 101 a test failed; 2 usage or input error; \
                  3 the Docker daemon could not be reached (or was lost); 130/143 interrupted."
)]
pub struct Cli {
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

    /// Where the JUnit XML report goes.
    #[arg(long, value_name = "PATH", default_value = "reports/junit.xml")]
    pub junit: PathBuf,

    /// Which runtime runs the cases.
    #[arg(long, value_enum, default_value_t = RuntimeChoice::Docker)]
    pub runtime: RuntimeChoice,

    /// Stop a case after this long (overrides the spec), e.g. 90s, 30m, 1h30m.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// After a timeout or interruption, how long between SIGTERM and SIGKILL.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    pub grace: Duration,

    /// Report a case as slow after this long, and again each period.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "60s")]
    pub slow_after: Duration,

    /// Bytes of each output stream kept at its head and at its tail, e.g. 64k, 1m.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "64k")]
    pub keep_output: u64,

    /// Rerun a failed or errored case up to N more times; a later pass is reported flaky.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub retries: u32,

    /// Start no new case after the first failure; the rest are reported not run.
    #[arg(long)]
    pub fail_fast: bool,

    /// Keep one shard of the cases for a CI matrix: hash:M/N (stable by name) or count:M/N.
    #[arg(long, value_name = "SCHEME:M/N")]
    pub partition: Option<Partition>,

    /// Folder for downloaded SIF files (default: $SINGULARITY_PULL_FOLDER, else a user cache).
    #[arg(long, value_name = "DIR")]
    pub sif_dir: Option<PathBuf>,

    /// The apptainer or singularity binary (default: `apptainer`, else `singularity`, on PATH).
    #[arg(long, value_name = "PATH")]
    pub singularity_bin: Option<PathBuf>,

    /// For a model with no SIF in the catalog, build one with `pull docker://IMAGE`.
    #[arg(long)]
    pub sif_from_docker: bool,

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
    }

    /// Parses the process's arguments; prints help or a usage error (exit 2) as clap does.
    pub fn parse_args() -> Self {
        use clap::FromArgMatches;
        let matches = Self::command_with_help().get_matches();
        Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }

    /// libtest-mimic's arguments, with our default of one test thread (containers are heavy).
    /// Spec-skipped cases are ignored at run time (so the reason shows), not flagged ignored:
    /// `--ignored` is applied by the plan instead (see `main`), and libtest must not filter on it.
    pub fn harness_args(&self) -> libtest_mimic::Arguments {
        let mut args = self.libtest.clone();
        args.test_threads = Some(args.test_threads.unwrap_or(1));
        args.ignored = false;
        args
    }

    /// `--ignored` or `--include-ignored`: run the cases the spec marks `skip`.
    pub fn run_skipped(&self) -> bool {
        self.libtest.ignored || self.libtest.include_ignored
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        try_parse(args).unwrap()
    }

    fn try_parse(args: &[&str]) -> Result<Cli, clap::Error> {
        use clap::FromArgMatches;
        let matches = Cli::command_with_help()
            .try_get_matches_from(std::iter::once("zoo-runner").chain(args.iter().copied()))?;
        Cli::from_arg_matches(&matches)
    }

    #[test]
    fn lists_and_repeats_both_work() {
        let cli = parse(&[
            "--model=KipoiSplice/4,Basenji",
            "--model",
            "HAL",
            "--modelgroup=HAL,Basset",
        ]);
        assert_eq!(cli.model, ["KipoiSplice/4", "Basenji", "HAL"]);
        assert_eq!(cli.modelgroup, ["HAL", "Basset"]);
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
        assert!(cli.libtest.list && cli.libtest.exact && cli.slim);
        assert_eq!(cli.libtest.filter.as_deref(), Some("docker::HAL"));
        assert_eq!(cli.libtest.skip, ["Basset"]);
        assert_eq!(cli.harness_args().test_threads, Some(2));
        assert_eq!(parse(&[]).harness_args().test_threads, Some(1));
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
        assert_eq!(cli.runtime.kinds().len(), 2);
        assert!(try_parse(&["--timeout", "soon"]).is_err());
        assert_eq!(
            parse(&["--partition", "hash:1/3"])
                .partition
                .map(|p| p.total),
            Some(3)
        );
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
