//! A test run, and the commands that dispatch from the command line: the glue of the stages
//! (select, partition, run, runtime, report).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use crate::app::cache as app_cache;
use crate::app::{matrix, merge};
use crate::config::knobs;
use crate::events;
use crate::report::{display, summary};
use crate::run::harness;
use crate::select::changed_since;
use crate::store::{caches, registry};
use crate::{capture, runtime};

use crate::cancel::Cancel;
use crate::cli::{CacheCommand, Cli, Command};
use crate::config::knobs::Waits;
use crate::config::spec::{Network, Spec};
use crate::error_chain::chain;
use crate::report::junit::ReportTarget;
use crate::run::harness::{image_of, Harness, Settings};
use crate::run::images::ImageStage;
use crate::run::record::{Attempt, Record, Status};
use crate::run::sifs::SifStage;
use crate::run::versions::Versions;
use crate::runtime::{Image, Options, SetupError, APPTAINER, DOCKER};
use crate::select::changed_since::GitRun;
use crate::select::inputs::{Inputs, PlanOptions};
use crate::select::plan::{Case, RuntimeKind};
use crate::store::caches::Caches;
use crate::store::sif::SifCache;

/// Exit codes besides libtest's 101 for failed tests.
const EXIT_DOCKER: u8 = 3;
/// Apptainer cannot be used (missing, broken, its `--version` fails): Docker's code, since it is
/// the same case: the runtime, not the models.
const EXIT_APPTAINER: u8 = 3;
/// The cases ran, but the JUnit report could not be written: their results are lost to CI.
const EXIT_REPORT_LOST: u8 = 4;
/// `--require-tests` and the selection holds no case: nothing was tested.
const EXIT_NO_TESTS: u8 = 5;

pub fn run(mut cli: Cli) -> anyhow::Result<ExitCode> {
    // From here on one display draws every event: it owns the terminal.
    events::install(display::global());
    let mut warming = false;
    if let Some(command) = cli.command.take() {
        match command {
            Command::Matrix(args) => {
                let git_timeout = knobs::helper_timeout(|name| std::env::var_os(name))?;
                return with_signals(|_, cancel| {
                    let git = GitRun {
                        timeout: git_timeout.unwrap_or(changed_since::GIT_TIMEOUT),
                        cancel: cancel.clone(),
                    };
                    let code = matrix::run(&args, git);
                    interrupted_early(cancel).map_or(code, Ok)
                });
            }
            Command::Merge(args) => return merge::run(&args),
            Command::Cache(args) => match args.command {
                CacheCommand::List { runtime } => {
                    return app_cache::list(&caches::prepare_dir(&cli.cache_dir())?, runtime)
                }
                CacheCommand::Prune {
                    all,
                    runtime,
                    unused_for,
                } => {
                    let dir = caches::prepare_dir(&cli.cache_dir())?;
                    let sif_dir = cli.sif_dir.clone().unwrap_or_else(SifCache::default_dir);
                    return app_cache::prune(&dir, &sif_dir, all, unused_for, runtime);
                }
                CacheCommand::Warm(warm) => {
                    cli = cli.into_warm(warm)?;
                    warming = true;
                }
            },
        }
    }
    cli.validate()?;
    if !cli.libtest.list {
        summary::check_target(cli.summary.as_deref())?;
    }
    let knobs = Knobs {
        waits: knobs::docker_waits(|name| std::env::var_os(name))?,
        helper_timeout: knobs::helper_timeout(|name| std::env::var_os(name))?,
    };
    with_signals(|rt, cancel| run_tests(&cli, warming, knobs, rt, cancel))
}

/// The testing knobs a run reads (`crate::config::knobs`).
#[derive(Debug, Clone, Copy)]
struct Knobs {
    waits: Waits,
    /// The deadline of credential helpers and git, when the knob sets it.
    helper_timeout: Option<std::time::Duration>,
}

/// Runs `work` on an async runtime that catches SIGINT, SIGTERM and SIGHUP from its start:
/// whatever the runner starts from then on (git while the inputs load, a credential helper, a
/// case) is stopped on the first signal, and the run ends with 128 + its number.
fn with_signals(
    work: impl FnOnce(&tokio::runtime::Runtime, &Cancel) -> anyhow::Result<ExitCode>,
) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let cancel = Cancel::new();
    {
        let _guard = rt.enter();
        cancel
            .listen_for_signals()
            .context("failed to listen for SIGINT/SIGTERM/SIGHUP")?;
    }
    let code = work(&rt, &cancel);
    // A SIF download abandoned on Ctrl-C may still hold a blocking thread: don't wait for it.
    rt.shutdown_background();
    code
}

/// The exit code of a run interrupted before anything ran (while its inputs loaded): the
/// signal's, as the signal's default action would have given.
fn interrupted_early(cancel: &Cancel) -> Option<ExitCode> {
    let signal = cancel.signal()?;
    eprintln!("zoo-runner: interrupted while the inputs were loaded; nothing ran");
    Some(ExitCode::from((128 + signal) as u8))
}

fn run_tests(
    cli: &Cli,
    warming: bool,
    knobs: Knobs,
    rt: &tokio::runtime::Runtime,
    cancel: &Cancel,
) -> anyhow::Result<ExitCode> {
    // Inputs are checked before anything runs: errors here exit with 2.
    crate::select::inputs::check_durations_use(
        cli.durations.is_some(),
        cli.partition.map(|p| p.scheme()),
    )?;
    let durations = match &cli.durations {
        Some(path) => Some(crate::report::junit::durations::load(path)?),
        None => None,
    };
    let loaded = Inputs::load(
        &cli.selection,
        PlanOptions {
            timeout: cli.timeout,
            partition: cli.partition,
            durations,
            only_skipped: cli.libtest.ignored,
            git: GitRun {
                timeout: knobs.helper_timeout.unwrap_or(changed_since::GIT_TIMEOUT),
                cancel: cancel.clone(),
            },
        },
    );
    if let Some(code) = interrupted_early(cancel) {
        return Ok(code);
    }
    let Inputs { spec, mut cases } = loaded?;
    if warming && spec.caches.is_empty() {
        anyhow::bail!(
            "`cache warm`: the spec `{}` names no `caches`, so there is nothing to fill",
            spec.path.display()
        );
    }
    // Image by image: an image's cases run together, so it is pulled once and can be pruned
    // after its last case.
    cases.sort_by(|a, b| (a.runtime, &a.image).cmp(&(b.runtime, &b.image)));
    execute(cli, &spec, &cases, knobs, rt, cancel.clone())
}

fn execute(
    cli: &Cli,
    spec: &Spec,
    cases: &[Case],
    knobs: Knobs,
    rt: &tokio::runtime::Runtime,
    cancel: Cancel,
) -> anyhow::Result<ExitCode> {
    let mut args = cli.harness_args();
    // libtest's lines go through a pipe to the reporter: colour is decided by where they end.
    if args.color.is_none()
        && std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none()
    {
        args.color = Some(libtest_mimic::ColorSetting::Always);
    }
    let versions = spec.versions.clone().map(|c| Arc::new(Versions::new(c)));
    let mut settings = Settings {
        env: spec.container_env(|name| std::env::var(name).ok()),
        network: if cli.offline {
            Network::None
        } else {
            spec.network
        },
        caches: None,
        offline: cli.offline,
        apptainer_home: spec.apptainer_home.clone(),
        versions: versions.clone(),
        volumes: spec.volumes.clone(),
        grace: cli.grace,
        slow_period: cli.slow_after,
        keep: usize::try_from(cli.keep_output).unwrap_or(usize::MAX),
        retries: cli.retries,
        fail_fast: cli.fail_fast,
        run_skipped: cli.run_skipped(),
        store_success_output: cli.store_success_output,
        create_ahead: args.test_threads == Some(1),
    };
    if args.list && args.format == Some(libtest_mimic::FormatSetting::Json) {
        print_json_list(&args, cases);
        return Ok(ExitCode::SUCCESS);
    }
    if args.list {
        let harness = Harness::new(
            rt.handle().clone(),
            unused(),
            None,
            unused(),
            None,
            cancel,
            settings,
        );
        let _listed = libtest_mimic::run(&args, harness.trials(cases));
        return Ok(ExitCode::SUCCESS);
    }

    // The cache folder is made (or refused) before any case runs.
    let caches = if cli.no_cache || spec.caches.is_empty() {
        None
    } else {
        let dir = cli.cache_dir();
        Some(Arc::new(Caches::new(
            &dir,
            spec.caches.clone(),
            cancel.clone(),
        )?))
    };
    settings.caches = caches.clone();

    // Everything that could keep the report from being written is checked before any case
    // runs; the cases' output is spooled next to it.
    let target = ReportTarget::prepare(&cli.junit)?;
    capture::set_spool_dir(target.spool_dir().to_path_buf());

    // Only what the filters keep decides which runtimes must be up.
    let selected = kept_by_filters(&args, cases);
    // What the summary says besides the cases.
    let mut notes = summary::Notes::default();
    if selected.is_empty() {
        let why = why_nothing(cli, cases);
        eprintln!("zoo-runner: warning: no case selected, nothing will be tested: {why}");
        notes.why_empty = Some(why);
        if cli.require_tests {
            eprintln!("error: --require-tests: a run that tests nothing fails");
            let verdict = ExitCode::from(EXIT_NO_TESTS);
            return Ok(write_report(target, &[], &[], cli, notes).unwrap_or(verdict));
        }
    }
    let needs = |kind| {
        selected
            .iter()
            .any(|c| c.runtime == kind && (c.plan.skip.is_none() || cli.run_skipped()))
    };
    let run_id = new_run_id();
    let mut extra = vec![
        ("run-id".to_string(), run_id.clone()),
        (
            "zoo-runner-version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        ("spec".to_string(), spec.path.display().to_string()),
    ];
    extra.extend(run_facts(cli, spec, caches.as_deref()));
    // What either runtime needs to open; `images` are those of its selected cases.
    let options = |kind: RuntimeKind| {
        let mut images: Vec<Image> = Vec::new();
        for case in selected
            .iter()
            .filter(|c| c.runtime == kind && (c.plan.skip.is_none() || cli.run_skipped()))
        {
            let image = image_of(case);
            if !images.contains(&image) {
                images.push(image);
            }
        }
        Options {
            run_id: run_id.clone(),
            cancel: cancel.clone(),
            grace: cli.grace,
            waits: knobs.waits,
            helper_timeout: knobs.helper_timeout.unwrap_or(registry::HELPER_TIMEOUT),
            prune_images: cli.prune_images,
            apptainer_bin: cli.singularity_bin.clone(),
            sif_dir: cli.sif_dir.clone().unwrap_or_else(SifCache::default_dir),
            sif_from_docker: cli.sif_from_docker,
            download_timeout: cli.download_timeout,
            images,
        }
    };
    let docker = if needs(RuntimeKind::Docker) {
        match rt.block_on(runtime::open(DOCKER, &options(RuntimeKind::Docker))) {
            Ok(d) => {
                extra.push(("docker-version".to_string(), d.version().to_string()));
                Ok(d)
            }
            Err(SetupError::Input(e)) => return Err(anyhow::Error::msg(e.to_string())),
            Err(SetupError::Unusable(e)) => {
                eprintln!("error: {e}");
                let reason = format!("not run: {e}");
                let records = errored_records(&selected, &reason);
                return Ok(write_report(target, &records, &extra, cli, notes)
                    .unwrap_or(EXIT_DOCKER.into()));
            }
            Err(SetupError::Interrupted) => Err(interrupted_setup()),
        }
    } else {
        unused()
    };
    let singularity = if needs(RuntimeKind::Singularity) {
        match rt.block_on(runtime::open(APPTAINER, &options(RuntimeKind::Singularity))) {
            Ok(s) => {
                extra.push(("singularity-version".to_string(), s.version().to_string()));
                Ok(s)
            }
            // The cases see the interruption too, and are reported not run.
            Err(SetupError::Interrupted) => Err(interrupted_setup()),
            Err(SetupError::Input(e)) => return Err(anyhow::Error::msg(e.to_string())),
            Err(SetupError::Unusable(e)) => {
                eprintln!("error: {e}");
                let records = errored_records(&selected, &format!("not run: {e}"));
                return Ok(write_report(target, &records, &extra, cli, notes)
                    .unwrap_or(EXIT_APPTAINER.into()));
            }
        }
    } else {
        unused()
    };
    let sif_stage = singularity
        .as_ref()
        .ok()
        .map(|s| Arc::new(SifStage::new(Arc::clone(s))));

    let stage = docker.as_ref().ok().map(|d| {
        let images: Vec<&str> = selected
            .iter()
            .filter(|c| Harness::needs_image(c, cli.run_skipped()))
            .map(|c| c.image.as_str())
            .collect();
        ImageStage::new(
            Arc::clone(d),
            rt.handle().clone(),
            &images,
            cli.pull_ahead,
            cli.prune_images,
        )
    });
    let harness = Harness::new(
        rt.handle().clone(),
        docker.clone(),
        stage.clone(),
        singularity,
        sif_stage.clone(),
        cancel.clone(),
        settings,
    );
    harness.set_run_order(selected.iter().map(|c| (*c).clone()).collect());
    let conclusion = {
        // From here the reporter owns the terminal: libtest's lines reach it whole.
        let _relay = display::relay::start();
        libtest_mimic::run(&args, harness.trials(cases))
    };
    let mut records = harness.take_records();
    if let Some(versions) = &versions {
        versions.attach(&mut records);
        for line in versions.summary() {
            eprintln!("zoo-runner: {line}");
        }
    }
    print_cache_summary(cli, caches.as_deref(), &records);
    let failed = conclusion.has_failed() || records.iter().any(|r| r.status().is_bad());
    // Removals and prunes still in flight end before the verdict.
    if let Some(stage) = &stage {
        rt.block_on(stage.finish());
        if let Some(line) = stage.totals().line() {
            eprintln!("zoo-runner: {line}");
        }
    }
    if let Some(line) = sif_stage.and_then(|s| s.totals().line()) {
        eprintln!("zoo-runner: {line}");
    }
    if let Ok(d) = &docker {
        rt.block_on(d.finish());
    }
    let lost = docker.as_ref().ok().and_then(|d| d.lost());
    notes.interrupted = cancel.signal().map(signal_name);
    let verdict = if let Some(signal) = cancel.signal() {
        ExitCode::from((128 + signal) as u8)
    } else if let Some(lost) = lost {
        eprintln!("error: {lost}; see {}", cli.junit.display());
        ExitCode::from(EXIT_DOCKER)
    } else if failed {
        ExitCode::from(101)
    } else {
        ExitCode::SUCCESS
    };
    Ok(write_report(target, &records, &extra, cli, notes).unwrap_or(verdict))
}

/// `SIGINT`, for the summary.
fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGINT => "SIGINT".to_string(),
        libc::SIGTERM => "SIGTERM".to_string(),
        libc::SIGHUP => "SIGHUP".to_string(),
        other => format!("signal {other}"),
    }
}

/// The run's facts about caches and the network, for every testsuite's properties.
fn run_facts(cli: &Cli, spec: &Spec, caches: Option<&Caches>) -> Vec<(String, String)> {
    let mut facts = Vec::new();
    if cli.offline {
        eprintln!("zoo-runner: offline run (--offline): every case runs with network `none`");
        facts.push((
            "network".to_string(),
            "none: offline run (--offline); a model that needs a download fails".to_string(),
        ));
    }
    match caches {
        Some(c) => facts.push((
            "caches".to_string(),
            format!("{} in {}", spec.caches.join(", "), c.dir.display()),
        )),
        None if cli.no_cache && !spec.caches.is_empty() => {
            facts.push(("caches".to_string(), "off (--no-cache)".to_string()))
        }
        None => {}
    }
    facts
}

/// After the run: how many caches it used, and for an offline run with failures, how to fill
/// them.
fn print_cache_summary(cli: &Cli, caches: Option<&Caches>, records: &[Record]) {
    if let Some(c) = caches {
        eprintln!(
            "zoo-runner: {} cache(s) used, in {} (`zoo-runner cache list` shows them)",
            c.used_count(),
            c.dir.display()
        );
    }
    let bad = records.iter().filter(|r| r.status().is_bad()).count();
    if cli.offline && bad > 0 {
        eprintln!(
            "zoo-runner: this run was offline: {bad} case(s) did not pass; those that need a \
             download pass only once `zoo-runner cache warm` has filled their caches"
        );
    }
}

/// Writes the report, then the summary (from the records, so a lost report does not lose it);
/// on failure says so (with what the tests did) and gives the exit code that says the report
/// is lost.
fn write_report(
    target: ReportTarget,
    records: &[Record],
    extra: &[(String, String)],
    cli: &Cli,
    mut notes: summary::Notes,
) -> Option<ExitCode> {
    let path = target.path().to_path_buf();
    let lost = match target.write(records, extra, cli.junit_flavor) {
        Ok(()) => {
            eprintln!("zoo-runner: JUnit report written to {}", path.display());
            None
        }
        Err(e) => {
            let bad = records.iter().filter(|r| r.status().is_bad()).count();
            eprintln!(
                "error: {}; the report is lost ({} of {} cases failed, errored or timed out)",
                chain(&e),
                bad,
                records.len()
            );
            notes.report_lost = Some(chain(&e));
            Some(ExitCode::from(EXIT_REPORT_LOST))
        }
    };
    summary::after_run(cli.summary.as_deref(), records, &notes);
    lost
}

/// The cases libtest's name filters (FILTER, `--exact`, `--skip`) keep.
fn kept_by_filters<'a>(args: &libtest_mimic::Arguments, cases: &'a [Case]) -> Vec<&'a Case> {
    cases
        .iter()
        .filter(|c| !args.is_filtered_out(&libtest_mimic::Trial::test(c.name.clone(), || Ok(()))))
        .collect()
}

/// `--list --format json`: one JSON object per selected case, for CI scripts (libtest-mimic
/// lists in its plain format only).
fn print_json_list(args: &libtest_mimic::Arguments, cases: &[Case]) {
    for case in kept_by_filters(args, cases) {
        let line = serde_json::json!({
            "type": "test",
            "name": case.name,
            "model": case.model,
            "runtime": case.runtime.name(),
            "image": case.image,
            "skip": case.plan.skip,
        });
        println!("{line}");
    }
}

/// Why the filters left nothing of the planned cases, with what the user likely meant.
fn why_nothing(cli: &Cli, cases: &[Case]) -> String {
    if cases.is_empty() {
        return "the selection (and --partition) planned no case".to_string();
    }
    let Some(filter) = cli.libtest.filter.as_deref() else {
        return format!("--skip left none of the {} planned cases", cases.len());
    };
    let prefixed: Vec<&str> = cases
        .iter()
        .filter(|c| c.model == filter || (!cli.libtest.exact && c.model.contains(filter)))
        .map(|c| c.name.as_str())
        .take(3)
        .collect();
    if cli.libtest.exact && !prefixed.is_empty() {
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

/// Why a runtime was not opened: the run was interrupted first (its cases say so).
fn interrupted_setup() -> String {
    "the run was interrupted while the runtime was set up".to_string()
}

/// A runtime no selected case needs.
fn unused() -> harness::Opened {
    Err("this runtime was not set up: no selected case needed it".to_string())
}

fn errored_records(cases: &[&Case], reason: &str) -> Vec<Record> {
    cases
        .iter()
        .map(|c| {
            let status = Status::Errored {
                message: reason.to_string(),
            };
            Record::new(c, Vec::new(), Attempt::not_started(status), Vec::new())
        })
        .collect()
}
