//! From the selection flags to the cases: loads the spec and the catalog it names, plans the
//! cases the selection asks for, narrows them (`--changed-since`, `--only-image`) and keeps one
//! shard (`--partition`). A run and `matrix` share it, so both see the same cases.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::config::spec::Spec;
use crate::partition::durations::Durations;
use crate::partition::time;
use crate::partition::{Partition, PartitionArg, Scheme};
use crate::record::RuntimeName;
use crate::select::catalog::Catalog;
use crate::select::changed_since::{self, GitRun};
use crate::select::plan::{self, Case, Selection};
use crate::select::rerun::Rerun;

/// The shipped default spec: the Kipoi zoo's.
pub const DEFAULT_SPEC: &str = "test-specs/kipoi.toml";

/// Which cases a run or a matrix asks for: the selection flags, as plain values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub images: Vec<String>,
    pub models: Vec<String>,
    pub groups: Vec<String>,
    pub all_models: bool,
    pub slim: bool,
    /// The catalog folder (default: the one the spec names).
    pub catalog: Option<PathBuf>,
    pub spec: PathBuf,
    pub runtimes: Vec<RuntimeName>,
    /// Keep only the cases of these images.
    pub only_images: Vec<String>,
    /// `--changed-since REV --models-repo DIR`.
    pub changed_since: Option<(String, PathBuf)>,
    /// `--rerun-failed REPORT`: the report whose cases that did not pass are kept (read by
    /// the app into `PlanOptions::rerun`).
    pub rerun_failed: Option<PathBuf>,
    /// `--rerun-failed-include-flaky`.
    pub rerun_include_flaky: bool,
}

/// What a selection names, checked: every error here is an input error (exit 2).
pub struct Inputs {
    pub spec: Spec,
    pub cases: Vec<Case>,
    /// How many cases the selection holds before `--partition` keeps its shard: a shard the
    /// partition left empty is no empty selection.
    pub selected: usize,
    /// `--rerun-failed` found nothing left to rerun: every selected case passed there.
    pub nothing_to_rerun: bool,
}

/// Per-run settings that change which cases are planned, or how: not part of the selection a
/// matrix hands out, because each job adds its own.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    pub timeout: Option<Duration>,
    pub partition: Option<PartitionArg>,
    /// `--durations`: the times of earlier reports, to balance a `time` partition.
    pub durations: Option<Durations>,
    /// libtest's `--ignored`: only what the spec marks skip.
    pub only_skipped: bool,
    /// How `--changed-since` runs git (deadline, the run's cancel).
    pub git: GitRun,
    /// `--rerun-failed`: what the earlier report says of each case.
    pub rerun: Option<Rerun>,
}

impl Inputs {
    pub fn load(selection: &Wanted, options: PlanOptions) -> anyhow::Result<Inputs> {
        let spec_path = resolve_default(&selection.spec, DEFAULT_SPEC);
        let spec = Spec::load(&spec_path)?;
        let catalog_dir = selection
            .catalog
            .clone()
            .or_else(|| spec.catalog.clone())
            .with_context(|| {
                format!(
                    "no catalog: pass --catalog DIR, or name one in `{}` (catalog = \"...\")",
                    spec_path.display()
                )
            })?;
        let catalog = Catalog::load(&catalog_dir)?;
        // The partition is checked (and read from the CI's environment) before planning.
        let partition = match options.partition {
            Some(arg) => {
                let (p, note) = arg.resolve(|name| std::env::var(name).ok())?;
                if let Some(note) = note {
                    crate::events::note(note);
                }
                Some(p)
            }
            None => None,
        };
        check_durations_use(options.durations.is_some(), partition.map(|p| p.scheme))?;
        let changed = selection.changed_since.is_some();
        let plan_selection = Selection {
            images: selection.images.clone(),
            models: selection.models.clone(),
            groups: selection.groups.clone(),
            // A changed model is tested even where a full sweep tests one model per group.
            all_models: selection.all_models || changed,
            slim: selection.slim,
            runtimes: selection.runtimes.clone(),
            timeout: options.timeout,
            partition: None,
        };
        let mut cases = plan::plan(&catalog, &spec, &plan_selection)?;
        if let Some((rev, repo)) = &selection.changed_since {
            let universe: BTreeSet<String> = catalog.models().map(str::to_string).collect();
            let changes = changed_since::changed_models(repo, rev, &universe, &options.git)?;
            crate::events::note(changes.describe(rev));
            cases.retain(|c| changes.models.contains(&c.model));
        }
        narrow_to_images(&mut cases, &selection.only_images)?;
        let mut nothing_to_rerun = false;
        if let Some(rerun) = &options.rerun {
            let (again, kept) = rerun.select(cases)?;
            crate::events::note(rerun.describe(&kept));
            nothing_to_rerun = again.is_empty();
            cases = again;
        }
        let selected = cases.len();
        if let Some(p) = partition {
            cases = keep_shard(cases, p, options.durations)?;
        }
        if options.only_skipped {
            cases.retain(|c| c.plan.skip.is_some());
        }
        Ok(Inputs {
            spec,
            cases,
            selected,
            nothing_to_rerun,
        })
    }
}

/// `--durations` balances a `time` partition, and orders a run's cases and gives its ETA; a
/// `hash` or `count` partition takes no times, so with one it is an input error, found before
/// the reports are read.
pub fn check_durations_use(given: bool, scheme: Option<Scheme>) -> anyhow::Result<()> {
    if given && scheme.is_some_and(|s| s != Scheme::Time) {
        anyhow::bail!(
            "--durations balances only --partition time:M/N (or time:auto), not hash or count: \
             use a time partition, or drop --durations"
        );
    }
    Ok(())
}

/// `--only-image`: the cases that run in one of these images. An image no case runs in is an
/// error, with the images the selection does use.
fn narrow_to_images(cases: &mut Vec<Case>, images: &[String]) -> anyhow::Result<()> {
    if images.is_empty() {
        return Ok(());
    }
    let used: BTreeSet<&str> = cases.iter().map(|c| c.image.as_str()).collect();
    for image in images {
        let image = image.trim();
        if image.is_empty() {
            anyhow::bail!("`--only-image` got an empty image (as in `a,,b` or a trailing comma)");
        }
        if !used.contains(image) && !cases.is_empty() {
            let close = plan::closest(image, used.iter().copied());
            anyhow::bail!(
                "--only-image `{image}`: no selected case runs in it{}",
                match close.first() {
                    Some(c) => format!("; did you mean `{c}`?"),
                    None => format!(
                        " (the selection's images: {})",
                        used.iter().copied().collect::<Vec<_>>().join(", ")
                    ),
                }
            );
        }
    }
    cases.retain(|c| images.iter().any(|i| i.trim() == c.image));
    Ok(())
}

/// The cases of one shard.
fn keep_shard(
    cases: Vec<Case>,
    p: Partition,
    durations: Option<Durations>,
) -> anyhow::Result<Vec<Case>> {
    if p.scheme != Scheme::Time {
        return Ok(p.keep(cases, |c| c.name.as_str()));
    }
    let durations = match durations {
        Some(d) => {
            let path = d.path.clone();
            let known = cases.iter().filter(|c| d.is_known(&c.name)).count();
            match d.median_ms() {
                Some(median) => crate::events::note(format!(
                    "--partition {p}: {} report(s) in `{}` give times for {known} \
                     of the {} planned cases; the others count as the median, {}",
                    d.files,
                    path.display(),
                    cases.len(),
                    crate::config::units::show_duration(std::time::Duration::from_millis(median))
                )),
                None => crate::events::note(format!(
                    "--partition {p}: {} report(s) in `{}` record no case's time, \
                     so there is no median to count from: every case counts the same (images \
                     are still kept together)",
                    d.files,
                    path.display()
                )),
            }
            d
        }
        None => {
            crate::events::note(format!(
                "--partition {p} without --durations: every case counts the same \
                 (images are still kept together)"
            ));
            Durations::none()
        }
    };
    let shard_of = time_shards(&cases, p.total, &durations);
    Ok(cases
        .into_iter()
        .zip(shard_of)
        .filter(|(_, s)| *s as u64 == p.shard - 1)
        .map(|(c, _)| c)
        .collect())
}

/// The 0-based time shard of each case.
pub fn time_shards(cases: &[Case], total: u64, durations: &Durations) -> Vec<usize> {
    let items: Vec<time::Item> = cases
        .iter()
        .map(|c| time::Item {
            image: &c.image,
            weight: durations.weight(&c.name),
        })
        .collect();
    time::assign(&items, total as usize)
}

/// The shipped default spec is found from the source tree when run from elsewhere.
fn resolve_default(given: &Path, default: &str) -> PathBuf {
    if given == Path::new(default) && !given.exists() {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join(default);
        if shipped.exists() {
            return shipped;
        }
    }
    given.to_path_buf()
}
