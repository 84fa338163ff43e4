//! A test run: the inputs checked (exit 2 before anything runs), the runtimes opened, the cases
//! dispatched, then the JUnit report and the summary written from the run's records, and the
//! exit code that says how it went.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::cancel::Cancel;
use crate::capture;
use crate::config::knobs::{self, Waits};
use crate::config::spec::{Network, Spec};
use crate::events::{self, Sink};
use crate::partition::durations::Durations;
use crate::partition::PartitionArg;
use crate::record::facts::RunFacts;
use crate::record::{count, Attempt, Failure, Outcome, Record, RuntimeName};
use crate::report::display::{Display, Face};
use crate::report::junit::{names, Flavor, ReportTarget};
use crate::report::{summary, Reporter};
use crate::run::dispatcher::{Available, Dispatcher, Settings};
use crate::run::predictions;
use crate::run::verdict::signal_name;
use crate::run::versions::Versions;
use crate::runtime::{self, SetupError};
use crate::select::changed_since::{self, GitRun};
use crate::select::filter::NameFilter;
use crate::select::inputs::{self, Inputs, PlanOptions, Wanted};
use crate::select::order;
use crate::select::plan::Case;
use crate::store::caches::{self, Caches};
use crate::store::registry;
use crate::store::sif::SifCache;

use super::{EXIT_NO_TESTS, EXIT_REPORT_LOST, EXIT_RUNTIME};

/// Everything a test run takes from the command line, as plain values.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub wanted: Wanted,
    /// libtest's name filters.
    pub names: NameFilter,
    pub face: Face,
    /// `--list`: say what would run; with `list_json`, one JSON object per case.
    pub list: bool,
    pub list_json: bool,
    pub junit: PathBuf,
    pub junit_flavor: Flavor,
    pub summary: Option<PathBuf>,
    pub timeout: Option<Duration>,
    pub grace: Duration,
    pub slow_after: Duration,
    pub keep_output: usize,
    pub store_success_output: bool,
    pub retries: u32,
    /// `--infra-retries`: reruns of a case the outside world failed.
    pub infra_retries: u32,
    pub fail_fast: bool,
    pub threads: usize,
    pub pull_ahead: usize,
    pub prune_images: bool,
    /// `--prune-sifs`: remove each SIF this run downloaded or built after its last case.
    pub prune_sifs: bool,
    pub require_tests: bool,
    pub partition: Option<PartitionArg>,
    pub durations: Option<PathBuf>,
    /// libtest's `--ignored`: only the cases the spec marks `skip`.
    pub only_skipped: bool,
    /// `--ignored` or `--include-ignored`: run the cases the spec marks `skip`.
    pub run_skipped: bool,
    pub sif_dir: Option<PathBuf>,
    pub singularity_bin: Option<PathBuf>,
    pub sif_from_docker: bool,
    /// `--tmp-dir`: scratch space for SIF builds.
    pub tmp_dir: Option<PathBuf>,
    pub download_timeout: Duration,
    pub cache_dir: PathBuf,
    pub no_cache: bool,
    pub offline: bool,
    /// `cache warm`: a run whose point is to fill the caches.
    pub warming: bool,
    /// `--save-predictions DIR`: keep each case's predictions there.
    pub save_predictions: Option<PathBuf>,
    /// `--compare-predictions DIR`: compare each case's predictions with those saved there.
    pub compare_predictions: Option<PathBuf>,
}

/// The testing knobs a run reads (`crate::config::knobs`).
#[derive(Debug, Clone, Copy)]
struct Knobs {
    waits: Waits,
    /// The pauses before rerunning a case the outside world failed.
    infra_backoff: crate::config::backoff::Backoff,
    /// The deadline of credential helpers and git, when the knob sets it.
    helper_timeout: Option<Duration>,
}

pub fn run(config: RunConfig) -> anyhow::Result<ExitCode> {
    // From here on one reporter draws every event: it owns the terminal.
    let progress_every = knobs::progress_every(|name| std::env::var_os(name))?;
    let display = Display::terminal(&config.face).map_err(|e| {
        anyhow::anyhow!(
            "--logfile `{}` cannot be created: {e}",
            config
                .face
                .logfile
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        )
    })?;
    let display = match progress_every {
        Some(every) => display.with_progress_every(every),
        None => display,
    };
    let reporter = Arc::new(Reporter::new(display));
    events::install(Arc::clone(&reporter) as Arc<dyn Sink>);
    if !config.list {
        summary::check_target(config.summary.as_deref())?;
        predictions::check_folders(
            config.save_predictions.as_deref(),
            config.compare_predictions.as_deref(),
        )
        .map_err(anyhow::Error::msg)?;
    }
    let knobs = Knobs {
        waits: knobs::docker_waits(|name| std::env::var_os(name))?,
        infra_backoff: knobs::infra_backoff(|name| std::env::var_os(name))?,
        helper_timeout: knobs::helper_timeout(|name| std::env::var_os(name))?,
    };
    super::with_signals(|rt, cancel| {
        let git = GitRun {
            timeout: knobs.helper_timeout.unwrap_or(changed_since::GIT_TIMEOUT),
            cancel: cancel.clone(),
        };
        let loaded = load(&config, git);
        if let Some(code) = super::interrupted_early(cancel) {
            return Ok(code);
        }
        let (
            Inputs {
                spec,
                mut cases,
                selected,
                nothing_to_rerun,
            },
            durations,
        ) = loaded?;
        if config.warming && spec.caches.is_empty() {
            anyhow::bail!(
                "`cache warm`: the spec `{}` names no `caches`, so there is nothing to fill",
                spec.path.display()
            );
        }
        // Image by image: an image's cases run together, so it is pulled once and can be
        // pruned after its last case.
        cases.sort_by(|a, b| (a.runtime, &a.image).cmp(&(b.runtime, &b.image)));
        // With earlier times, the slowest first (still image by image): the last cases to
        // start are short, so threads do not wait on a long one at the end.
        if let Some(d) = &durations {
            order::slowest_first(&mut cases, d);
        }
        let run = Run {
            config: &config,
            spec: &spec,
            selected,
            nothing_to_rerun,
            durations: durations.as_ref(),
            knobs,
            reporter: &reporter,
            cancel,
        };
        run.execute(cases, rt)
    })
}

/// The inputs: `--durations` read, the spec and catalog loaded, the cases planned.
fn load(config: &RunConfig, git: GitRun) -> anyhow::Result<(Inputs, Option<Durations>)> {
    inputs::check_durations_use(
        config.durations.is_some(),
        config.partition.map(|p| p.scheme()),
    )?;
    let durations = match &config.durations {
        Some(path) => Some(crate::report::junit::durations::load(path)?),
        None => None,
    };
    let inputs = Inputs::load(
        &config.wanted,
        PlanOptions {
            timeout: config.timeout,
            partition: config.partition,
            durations: durations.clone(),
            only_skipped: config.only_skipped,
            git,
            rerun: rerun_of(&config.wanted)?,
        },
    )?;
    Ok((inputs, durations.filter(Durations::has_times)))
}

/// `--rerun-failed REPORT`, read.
pub(super) fn rerun_of(wanted: &Wanted) -> anyhow::Result<Option<crate::select::rerun::Rerun>> {
    Ok(match &wanted.rerun_failed {
        Some(path) => Some(crate::report::junit::rerun::load(
            path,
            wanted.rerun_include_flaky,
        )?),
        None => None,
    })
}

/// One run, its inputs loaded.
struct Run<'a> {
    config: &'a RunConfig,
    spec: &'a Spec,
    /// The selection's cases before `--partition` kept a shard.
    selected: usize,
    /// `--rerun-failed` found nothing left to rerun.
    nothing_to_rerun: bool,
    /// `--durations`, when they recorded times: for the ETA.
    durations: Option<&'a Durations>,
    knobs: Knobs,
    reporter: &'a Arc<Reporter>,
    cancel: &'a Cancel,
}

impl Run<'_> {
    fn execute(&self, cases: Vec<Case>, rt: &tokio::runtime::Runtime) -> anyhow::Result<ExitCode> {
        let config = self.config;
        if config.list_json {
            for case in cases.iter().filter(|c| config.names.keeps(&c.name)) {
                println!("{}", list_line(case));
            }
            return Ok(ExitCode::SUCCESS);
        }
        let planned = cases.len();
        let kept: Vec<Case> = cases
            .iter()
            .filter(|c| config.names.keeps(&c.name))
            .cloned()
            .collect();
        let filtered_out = planned - kept.len();
        if config.list {
            let names: Vec<&str> = kept.iter().map(|c| c.name.as_str()).collect();
            self.reporter.display().list(&names);
            return Ok(ExitCode::SUCCESS);
        }

        // The cache folder is made (or refused) before any case runs.
        let caches = if config.no_cache || self.spec.caches.is_empty() {
            None
        } else {
            Some(Arc::new(Caches::new(
                &config.cache_dir,
                self.spec.caches.clone(),
                config.threads,
                self.cancel.clone(),
            )?))
        };
        // Everything that could keep the report from being written is checked before any case
        // runs; the cases' output is spooled next to it.
        let target = ReportTarget::prepare(&config.junit)?;
        capture::set_spool_dir(target.spool_dir().to_path_buf());
        // Each case's predictions land in a folder of its own beside its spooled output.
        // Absolute: it is mounted into containers (the report's folder may be relative).
        let outputs = target.spool_dir().join("outputs");
        let predictions = predictions::Options {
            outputs: std::path::absolute(&outputs).unwrap_or(outputs),
            save: config.save_predictions.clone(),
            compare: config.compare_predictions.clone(),
        };

        let mut notes = summary::Notes::default();
        if kept.is_empty() {
            if let Some(verdict) = self.nothing_selected(&cases, &mut notes) {
                return Ok(self
                    .write_report(target, &[], &RunFacts::default(), notes)
                    .unwrap_or(verdict));
            }
        }
        let mut facts = self.run_facts(caches.as_deref());

        // Only the runtimes a case will run in are opened.
        let mut runtimes: BTreeMap<RuntimeName, Available> = BTreeMap::new();
        let needed: Vec<RuntimeName> = {
            let mut names: Vec<RuntimeName> = kept
                .iter()
                .filter(|c| c.plan.skip.is_none() || config.run_skipped)
                .map(|c| c.runtime)
                .collect();
            names.dedup();
            names
        };
        let mut options = self.runtime_options(&facts.run_id, &kept);
        options.caches = caches.clone();
        for name in needed {
            match rt.block_on(runtime::open(name, &options)) {
                Ok(runtime) => {
                    facts
                        .runtime_versions
                        .push((name, runtime.version().to_string()));
                    runtimes.insert(name, Ok(runtime));
                }
                Err(SetupError::Input(why)) => anyhow::bail!("{why}"),
                Err(SetupError::Interrupted) => {
                    let why = Failure::message(format!(
                        "the run was interrupted while `{name}` was being set up"
                    ));
                    runtimes.insert(name, Err(why));
                }
                Err(SetupError::Unusable(why)) => {
                    events::line(format!("error: {why}"));
                    let records = errored(&kept, &why);
                    return Ok(self
                        .write_report(target, &records, &facts, notes)
                        .unwrap_or(ExitCode::from(EXIT_RUNTIME)));
                }
            }
        }

        let expected_ms = self.durations.map(|d| {
            Arc::new(
                kept.iter()
                    .map(|c| (c.name.clone(), d.weight(&c.name)))
                    .collect::<std::collections::BTreeMap<_, _>>(),
            )
        });
        self.reporter.event(events::Event::Estimates {
            threads: config.threads,
            expected_ms,
        });
        let dispatcher = Dispatcher::new(
            runtimes.clone(),
            kept,
            self.settings(caches.clone(), predictions),
            self.cancel.clone(),
            Arc::clone(self.reporter) as Arc<dyn Sink>,
        );
        let records = rt.block_on(dispatcher.run(filtered_out));
        if let Some(versions) = &dispatcher.versions() {
            for line in versions.summary() {
                events::note(line);
            }
        }
        self.after_run(caches.as_deref(), &records);
        for line in dispatcher.totals_lines() {
            events::note(line);
        }
        let mut lost = None;
        for runtime in runtimes.values().flatten() {
            rt.block_on(runtime.finish());
            lost = lost.or(runtime.lost());
        }
        notes.interrupted = self.cancel.signal().map(|s| signal_name(i64::from(s)));
        let failed = records.iter().any(|r| r.outcome().is_bad())
            || self.reporter.display().tally().failed > 0;
        let verdict = if let Some(signal) = self.cancel.signal() {
            ExitCode::from((128 + signal) as u8)
        } else if let Some(lost) = lost {
            events::line(format!("error: {lost}; see {}", config.junit.display()));
            ExitCode::from(EXIT_RUNTIME)
        } else if failed {
            ExitCode::from(101)
        } else {
            ExitCode::SUCCESS
        };
        Ok(self
            .write_report(target, &records, &facts, notes)
            .unwrap_or(verdict))
    }

    /// A run that tests nothing says why, and which it was: an empty selection, or nothing
    /// left to rerun, fails with `--require-tests` (exit 5); a shard that the partition left
    /// empty is not the user's mistake and exits 0 all the same. The exit code when the run
    /// ends here; else it goes on (and reports its zero cases).
    fn nothing_selected(&self, cases: &[Case], notes: &mut summary::Notes) -> Option<ExitCode> {
        let config = self.config;
        let rerun = config
            .wanted
            .rerun_failed
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let (why, the_users) = if self.nothing_to_rerun {
            (
                format!(
                    "nothing to rerun: no selected case failed, errored, timed out or did not \
                     run in --rerun-failed `{rerun}`"
                ),
                true,
            )
        } else if cases.is_empty() && self.selected > 0 && config.partition.is_some() {
            (
                format!(
                    "--partition left this shard no case: the selection's {} case(s) went to \
                     the other shards (more shards than the selection fills), so there is \
                     nothing to test here and nothing is wrong",
                    self.selected
                ),
                false,
            )
        } else {
            (why_nothing(config, cases), true)
        };
        notes.why_empty = Some(why.clone());
        if !the_users {
            events::note(why);
            return None;
        }
        if self.nothing_to_rerun {
            events::note(&why);
        } else {
            events::line(format!(
                "zoo-runner: warning: no case selected, nothing will be tested: {why}"
            ));
        }
        if config.require_tests {
            events::line(format!(
                "error: --require-tests: a run that tests nothing fails ({})",
                if self.nothing_to_rerun {
                    "nothing to rerun"
                } else {
                    "the selection is empty"
                }
            ));
            return Some(ExitCode::from(EXIT_NO_TESTS));
        }
        None
    }

    /// What every case shares.
    fn settings(&self, caches: Option<Arc<Caches>>, predictions: predictions::Options) -> Settings {
        let config = self.config;
        let spec = self.spec;
        Settings {
            env: spec.container_env(|name| std::env::var(name).ok()),
            network: if config.offline {
                Network::None
            } else {
                spec.network
            },
            volumes: spec.volumes.clone(),
            grace: config.grace,
            slow_period: config.slow_after,
            keep: config.keep_output,
            retries: config.retries,
            infra_failures: spec.infra_failures.clone(),
            infra_retries: config.infra_retries,
            infra_backoff: self.knobs.infra_backoff,
            fail_fast: config.fail_fast,
            run_skipped: config.run_skipped,
            store_success_output: config.store_success_output,
            threads: config.threads,
            pull_ahead: config.pull_ahead,
            caches,
            offline: config.offline,
            apptainer_home: spec.apptainer_home.clone(),
            versions: spec.versions.clone().map(|c| Arc::new(Versions::new(c))),
            predictions,
        }
    }

    /// What opening a runtime takes.
    fn runtime_options(&self, run_id: &str, cases: &[Case]) -> runtime::Options {
        let config = self.config;
        runtime::Options {
            run_id: run_id.to_string(),
            cancel: self.cancel.clone(),
            grace: config.grace,
            waits: self.knobs.waits,
            helper_timeout: self
                .knobs
                .helper_timeout
                .unwrap_or(registry::HELPER_TIMEOUT),
            apptainer_bin: config.singularity_bin.clone(),
            prune_images: config.prune_images,
            prune_sifs: config.prune_sifs,
            sif_dir: config.sif_dir.clone().unwrap_or_else(SifCache::default_dir),
            sif_from_docker: config.sif_from_docker,
            tmp_dir: config.tmp_dir.clone(),
            download_timeout: config.download_timeout,
            images: cases
                .iter()
                .filter(|c| c.plan.skip.is_none() || config.run_skipped)
                .map(crate::run::dispatcher::image_of)
                .collect(),
            caches: None,
        }
    }

    /// The run's facts, for every testsuite's properties.
    fn run_facts(&self, caches: Option<&Caches>) -> RunFacts {
        let config = self.config;
        let mut facts = RunFacts {
            run_id: new_run_id(),
            runner_version: env!("CARGO_PKG_VERSION").to_string(),
            spec: self.spec.path.display().to_string(),
            ..RunFacts::default()
        };
        if config.offline {
            events::note("offline run (--offline): every case runs with network `none`");
            facts.network =
                Some("none: offline run (--offline); a model that needs a download fails".into());
        }
        facts.caches = match caches {
            Some(c) => Some(format!(
                "{} in {}",
                self.spec.caches.join(", "),
                c.dir.display()
            )),
            None if config.no_cache && !self.spec.caches.is_empty() => {
                Some("off (--no-cache)".to_string())
            }
            None => None,
        };
        facts
    }

    /// After the run: how many caches it used, and for an offline run with failures, how to
    /// fill them.
    fn after_run(&self, caches: Option<&Caches>, records: &[Arc<Record>]) {
        if let Some(c) = caches {
            events::note(format!(
                "{} cache(s) used, in {} (`zoo-runner cache list` shows them)",
                c.used_count(),
                c.dir.display()
            ));
        }
        let bad = count(records.iter().map(|r| r.as_ref())).bad();
        if self.config.offline && bad > 0 {
            events::note(format!(
                "this run was offline: {bad} case(s) did not pass; those that need a download \
                 pass only once `zoo-runner cache warm` has filled their caches"
            ));
        }
    }

    /// Writes the report, then the summary (from the records, so a lost report does not lose
    /// it); on failure says so (with what the tests did) and gives the exit code that says the
    /// report is lost.
    fn write_report(
        &self,
        target: ReportTarget,
        records: &[Arc<Record>],
        facts: &RunFacts,
        mut notes: summary::Notes,
    ) -> Option<ExitCode> {
        let path = target.path().to_path_buf();
        let run = names::run_properties(facts);
        let lost = match target.write(records, &run, self.config.junit_flavor) {
            Ok(()) => {
                events::note(format!("JUnit report written to {}", path.display()));
                None
            }
            Err(e) => {
                let counts = count(records.iter().map(|r| r.as_ref()));
                let e = Failure::new(e);
                events::line(format!(
                    "error: {e}; the report is lost ({} of {} cases failed, errored or timed out)",
                    counts.bad(),
                    counts.cases()
                ));
                notes.report_lost = Some(e.to_string());
                Some(ExitCode::from(EXIT_REPORT_LOST))
            }
        };
        summary::after_run(self.config.summary.as_deref(), records, &notes);
        lost
    }
}

/// Every case errored, for the same reason (a runtime that cannot be used).
fn errored(cases: &[Case], why: &Failure) -> Vec<Arc<Record>> {
    cases
        .iter()
        .map(|c| {
            Arc::new(Record {
                name: c.name.clone(),
                model: c.model.clone(),
                runtime: c.runtime,
                image: c.image.clone(),
                image_facts: None,
                earlier: Vec::new(),
                last: Attempt::not_started(Outcome::Errored { error: why.clone() }),
            })
        })
        .collect()
}

/// `--list --format json`: one JSON object per case, for CI scripts.
fn list_line(case: &Case) -> serde_json::Value {
    serde_json::json!({
        "type": "test",
        "name": case.name,
        "model": case.model,
        "runtime": case.runtime.as_str(),
        "image": case.image,
        "skip": case.plan.skip,
    })
}

/// Why the filters left nothing of the planned cases, with what the user likely meant.
fn why_nothing(config: &RunConfig, cases: &[Case]) -> String {
    if cases.is_empty() {
        return "the selection (and --partition) planned no case".to_string();
    }
    let Some(filter) = config.names.filter.as_deref() else {
        return format!("--skip left none of the {} planned cases", cases.len());
    };
    let exact = config.names.exact;
    let prefixed: Vec<&str> = cases
        .iter()
        .filter(|c| c.model == filter || (!exact && c.model.contains(filter)))
        .map(|c| c.name.as_str())
        .take(3)
        .collect();
    if exact && !prefixed.is_empty() {
        format!(
            "`--exact {filter}` matches no test name, and test names start with their runtime: \
             did you mean `--exact {}`? (or `--model {filter}`)",
            prefixed[0]
        )
    } else if !prefixed.is_empty() {
        format!(
            "the filter `{filter}` matched none of the {} planned cases; it names a model: \
             try `--model {filter}`",
            cases.len()
        )
    } else {
        format!(
            "the filter `{filter}` matched none of the {} planned cases (`--list` shows them)",
            cases.len()
        )
    }
}

/// Unique per run: the runner's pid and the start time.
fn new_run_id() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    format!("{}-{millis}", std::process::id())
}

/// The default cache folder, for the command line's default.
pub fn default_cache_dir() -> PathBuf {
    caches::default_dir()
}
