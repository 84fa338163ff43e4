//! The run loop. It takes the planned cases in order (image by image), runs up to `threads` at
//! once, each in its runtime through that runtime's stage (the image made ready first), with
//! retries, `--fail-fast` and the run's cancel; judges each attempt (the verdict) and sends
//! every step to the event stream, where the reporter draws it and keeps the records. It never
//! asks which runtime it holds: every runtime answers the same interface.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cancel::{Cancel, Level};
use crate::config::backoff::Backoff;
use crate::config::spec::Network;
use crate::events::{Event, Shown, Sink};
use crate::record::facts::ImageFacts;
use crate::record::{Attempt, Failure, Outcome, Record, RuntimeName};
use crate::run::predictions;
use crate::run::stage::{Stage, MAX_PULL_AHEAD};
use crate::run::verdict;
use crate::run::versions::{self, Versions};
use crate::runtime::{Image, PrepareError, Ready, RunRequest, Runtime};
use crate::select::plan::Case;
use crate::store::caches::Caches;
use crate::store::sif::SifSource;

/// Run-wide settings every case shares.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `NAME=value` pairs passed into every container.
    pub env: Vec<String>,
    pub network: Network,
    pub volumes: Vec<String>,
    pub grace: Duration,
    pub slow_period: Duration,
    pub keep: usize,
    pub retries: u32,
    /// The spec's `infra_failures`: output that means the outside world failed, not the model.
    pub infra_failures: Vec<String>,
    /// `--infra-retries`: how often such a case runs again, apart from `retries`.
    pub infra_retries: u32,
    /// The pauses before those reruns.
    pub infra_backoff: Backoff,
    pub fail_fast: bool,
    /// `--ignored` / `--include-ignored`: run the cases the spec marks `skip` too.
    pub run_skipped: bool,
    /// `--store-success-output`: keep the output of passing cases in the report too.
    pub store_success_output: bool,
    /// How many cases run at once (`--test-threads`).
    pub threads: usize,
    /// How many images are made ready ahead of the running one (`--pull-ahead`).
    pub pull_ahead: usize,
    /// The spec's caches, unless `--no-cache`.
    pub caches: Option<Arc<Caches>>,
    /// `--offline`: every case with network `none`.
    pub offline: bool,
    pub apptainer_home: Option<String>,
    pub versions: Option<Arc<Versions>>,
    /// Where the cases' output folders go, and `--save-predictions`/`--compare-predictions`.
    pub predictions: predictions::Options,
}

/// A runtime of the run: ready, or why not (its cases then say so).
pub type Available = Result<Arc<dyn Runtime>, Failure>;

pub struct Dispatcher {
    /// Each runtime's stage, or why the runtime cannot be used.
    stages: BTreeMap<RuntimeName, Result<Arc<Stage>, Failure>>,
    settings: Settings,
    cancel: Cancel,
    sink: Arc<dyn Sink>,
    /// Cases still to start, in order.
    queue: Mutex<VecDeque<Case>>,
    something_failed: AtomicBool,
    /// What is the same for every case of an image, once it is ready (and its `versions` ran).
    image_facts: Mutex<HashMap<(RuntimeName, String), Arc<ImageFacts>>>,
}

impl Dispatcher {
    /// A dispatcher for `cases` (in run order) on these runtimes. Each runtime's stage learns
    /// the images its cases will use.
    pub fn new(
        runtimes: BTreeMap<RuntimeName, Available>,
        cases: Vec<Case>,
        settings: Settings,
        cancel: Cancel,
        sink: Arc<dyn Sink>,
    ) -> Arc<Dispatcher> {
        let stages = runtimes
            .into_iter()
            .map(|(name, runtime)| {
                let images: Vec<Image> = cases
                    .iter()
                    .filter(|c| c.runtime == name && needs_image(c, settings.run_skipped))
                    .map(image_of)
                    .collect();
                let stage = runtime.map(|runtime| {
                    Stage::new(
                        runtime,
                        cancel.clone(),
                        &images,
                        settings.pull_ahead.min(MAX_PULL_AHEAD),
                    )
                });
                (name, stage)
            })
            .collect();
        Arc::new(Dispatcher {
            stages,
            settings,
            cancel,
            sink,
            queue: Mutex::new(cases.into()),
            something_failed: AtomicBool::new(false),
            image_facts: Mutex::default(),
        })
    }

    /// Runs every case, `threads` at a time, and returns their records in the order they
    /// ended. `filtered_out` is what the name filters left out (for the last line).
    pub async fn run(self: &Arc<Self>, filtered_out: usize) -> Vec<Arc<Record>> {
        let started = Instant::now();
        let (count, width) = {
            let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            let width = queue.iter().map(|c| c.name.chars().count()).max();
            (queue.len(), width.unwrap_or(0))
        };
        self.sink.event(Event::RunStarted {
            cases: count,
            filtered_out,
            name_width: width,
        });
        let records: Arc<Mutex<Vec<Arc<Record>>>> = Arc::default();
        let mut workers = Vec::new();
        for _ in 0..self.settings.threads.max(1) {
            let me = Arc::clone(self);
            let records = Arc::clone(&records);
            workers.push(tokio::spawn(async move {
                while let Some(case) = me.next_case() {
                    let record = me.run_case(&case).await;
                    records
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(record);
                }
            }));
        }
        for worker in workers {
            // A worker that panicked loses only its own case's record: the others go on.
            let _ = worker.await;
        }
        for stage in self.stages.values().flatten() {
            stage.finish().await;
        }
        self.sink.event(Event::RunFinished {
            elapsed: started.elapsed(),
        });
        let mut records = records.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *records)
    }

    fn next_case(&self) -> Option<Case> {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }

    /// Whether the run is stopping: interrupted, or `--fail-fast` after a failure.
    fn stopping(&self) -> bool {
        self.cancel.is_cancelled()
            || (self.settings.fail_fast && self.something_failed.load(Ordering::SeqCst))
    }

    async fn run_case(&self, case: &Case) -> Arc<Record> {
        self.sink.event(Event::CaseStarted {
            name: case.name.clone(),
        });
        let image = image_of(case);
        let stage = self.stages.get(&case.runtime);
        // However the case ends, its image learns of it (the last case's end prunes it).
        let _done = match stage {
            Some(Ok(stage)) if needs_image(case, self.settings.run_skipped) => Some(CaseDone {
                stage: Arc::clone(stage),
                image: image.clone(),
            }),
            _ => None,
        };
        if let Some(outcome) = self.not_to_run(case) {
            return self.finish(case, None, Vec::new(), Attempt::not_started(outcome));
        }
        let stage = match stage {
            Some(Ok(stage)) => stage,
            Some(Err(why)) => {
                let outcome = Outcome::Errored { error: why.clone() };
                return self.finish(case, None, Vec::new(), Attempt::not_started(outcome));
            }
            None => {
                let why = Failure::message(format!(
                    "no runtime `{}` was set up for this run",
                    case.runtime
                ));
                let outcome = Outcome::Errored { error: why };
                return self.finish(case, None, Vec::new(), Attempt::not_started(outcome));
            }
        };
        let ready = match stage.prepare(&image).await {
            Ok(ready) => ready,
            Err(e) => {
                let outcome = match e {
                    PrepareError::Interrupted { what } => Outcome::NotRun {
                        reason: format!("the run was interrupted while {what}"),
                    },
                    PrepareError::Failed(error) => Outcome::Errored { error },
                };
                return self.finish(case, None, Vec::new(), Attempt::not_started(outcome));
            }
        };
        let runtime = stage.runtime();
        self.expect_next(runtime.as_ref(), case, &ready);
        let facts = self.image_facts(runtime.as_ref(), case, &ready).await;

        let mut earlier = Vec::new();
        let mut n = 1;
        // Reruns taken so far: of model failures (--retries) and of the outside world's
        // (--infra-retries, after a pause).
        let (mut reruns, mut infra_reruns) = (0, 0);
        let mut last = loop {
            let request = self.request(case, n);
            let this = match request.output.as_deref().map(predictions::make_output_dir) {
                Some(Err(e)) => Attempt::not_started(Outcome::Errored {
                    error: Failure::message(format!(
                        "cannot make the case's output folder `{}`: {e}",
                        request.output.as_deref().unwrap_or(Path::new("")).display()
                    )),
                }),
                _ => {
                    let exec = runtime.run(&ready, &request).await;
                    self.attempt(runtime.as_ref(), &ready, case, &request, exec)
                        .await
                }
            };
            let s = &self.settings;
            let pause = if this.outcome.is_infra() {
                let pause =
                    (infra_reruns < s.infra_retries).then(|| s.infra_backoff.pause(infra_reruns));
                infra_reruns += 1;
                match pause {
                    Some(pause) => Some(pause),
                    None => break this,
                }
            } else if this.outcome.is_bad() && reruns < s.retries {
                reruns += 1;
                None
            } else {
                break this;
            };
            if self.cancel.is_cancelled() {
                break this;
            }
            earlier.push(this);
            n += 1;
            self.sink.event(Event::CaseRetrying {
                name: case.name.clone(),
                attempt: n,
                pause,
            });
            if let Some(pause) = pause {
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = self.cancel.reached(Level::Stop) => {}
                }
            }
        };
        if last.outcome == Outcome::Passed && !self.settings.store_success_output {
            // As cargo-nextest's JUnit: a pass keeps no output unless asked (failed earlier
            // attempts of a flaky case keep theirs).
            last.stdout.discard();
            last.stderr.discard();
        }
        self.finish(case, Some(facts), earlier, last)
    }

    /// Why a case does not run at all: marked skip, the run interrupted, or --fail-fast.
    fn not_to_run(&self, case: &Case) -> Option<Outcome> {
        if let Some(reason) = case
            .plan
            .skip
            .as_ref()
            .filter(|_| !self.settings.run_skipped)
        {
            Some(Outcome::Skipped {
                reason: reason.clone(),
            })
        } else if self.cancel.is_cancelled() {
            Some(Outcome::NotRun {
                reason: "the run was interrupted before this case started".into(),
            })
        } else if self.settings.fail_fast && self.something_failed.load(Ordering::SeqCst) {
            Some(Outcome::NotRun {
                reason: "--fail-fast: an earlier case failed".into(),
            })
        } else {
            None
        }
    }

    /// Records a case that ended, says so, and notes a failure for `--fail-fast`.
    fn finish(
        &self,
        case: &Case,
        image_facts: Option<Arc<ImageFacts>>,
        earlier: Vec<Attempt>,
        last: Attempt,
    ) -> Arc<Record> {
        let shown = self.shown(&last.outcome);
        // An interruption is no failure of the models: --fail-fast does not count it.
        if last.outcome.is_bad() {
            self.something_failed.store(true, Ordering::SeqCst);
        }
        let record = Arc::new(Record {
            name: case.name.clone(),
            model: case.model.clone(),
            runtime: case.runtime,
            image: case.image.clone(),
            image_facts,
            earlier,
            last,
        });
        self.sink.event(Event::CaseFinished {
            record: Arc::clone(&record),
            shown,
        });
        record
    }

    /// How the terminal shows an outcome. A case the interruption kept from running shows
    /// `FAILED`, so that an interrupted run never ends on `test result: ok`.
    fn shown(&self, outcome: &Outcome) -> Shown {
        match outcome {
            Outcome::Passed => Shown::Ok,
            Outcome::NotRun { .. } if self.cancel.is_cancelled() => Shown::Failed {
                message: outcome.summary(),
            },
            Outcome::Skipped { .. } | Outcome::ExpectedFailure { .. } | Outcome::NotRun { .. } => {
                Shown::Ignored {
                    reason: outcome.summary(),
                }
            }
            bad => Shown::Failed {
                message: bad.summary(),
            },
        }
    }

    /// On one thread, the next case is known: when it runs in the same image, the runtime
    /// may get ready for it while this one runs (Docker creates its container ahead).
    fn expect_next(&self, runtime: &dyn Runtime, case: &Case, ready: &Ready) {
        if self.settings.threads != 1 || self.stopping() {
            return;
        }
        let next = {
            let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            queue.front().cloned()
        };
        let Some(next) = next else { return };
        let same_image = next.runtime == case.runtime && runtime.key(&image_of(&next)) == ready.key;
        if same_image && needs_image(&next, self.settings.run_skipped) {
            let request = self.request(&next, 1);
            // The container made ahead mounts the case's output folder: it must be there.
            let made = request.output.as_deref().map(predictions::make_output_dir);
            if !matches!(made, Some(Err(_))) {
                runtime.expect(ready, &request);
            }
        }
    }

    /// The image's facts, with what the spec's `versions` command printed in it (run once per
    /// runtime and image, before its first case).
    async fn image_facts(
        &self,
        runtime: &dyn Runtime,
        case: &Case,
        ready: &Ready,
    ) -> Arc<ImageFacts> {
        let key = (case.runtime, ready.key.clone());
        if let Some(facts) = self
            .image_facts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Arc::clone(facts);
        }
        let versions = match &self.settings.versions {
            Some(versions) => {
                let probe = async {
                    let request = self.versions_request(case, &versions.command);
                    versions::text_of(runtime.run(ready, &request).await)
                };
                Some(versions.once(case.runtime, &case.image, probe).await)
            }
            None => None,
        };
        let facts = Arc::new(ImageFacts {
            versions,
            ..ready.facts.clone()
        });
        let mut all = self.image_facts.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(all.entry(key).or_insert(facts))
    }

    /// Ends an attempt: its output streams are closed (spooled on disk) and judged; a command
    /// that exited 0 has its predictions checked before the spec's marks apply.
    async fn attempt(
        &self,
        runtime: &dyn Runtime,
        ready: &Ready,
        case: &Case,
        request: &RunRequest,
        exec: crate::runtime::Execution,
    ) -> Attempt {
        let stdout = exec.stdout.finish();
        let stderr = exec.stderr.finish();
        // Only a failure quotes the model, so only a failure reads its output back.
        let failed_with = match exec.ended {
            crate::runtime::Ended::Exited { code } if code != 0 => {
                Some((code, stdout.text(), stderr.text()))
            }
            _ => None,
        };
        let ran = match &failed_with {
            Some((_, out, err)) => verdict::ran(&exec.ended, out, err),
            None => verdict::ran(&exec.ended, "", ""),
        };
        let mut facts = exec.facts;
        let ran = match (ran, &case.plan.predictions, &request.output) {
            (Outcome::Passed, Some(plan), Some(dir)) => {
                let subject = predictions::Subject {
                    case: &case.name,
                    model: &case.model,
                    runtime: case.runtime.as_str(),
                };
                let options = &self.settings.predictions;
                let check =
                    predictions::check_case(runtime, ready, request, &subject, plan, dir, options)
                        .await;
                let outcome = if check.failed() {
                    Outcome::Failed {
                        message: check.diff(),
                    }
                } else {
                    Outcome::Passed
                };
                facts.predictions = Some(check);
                outcome
            }
            (ran, _, _) => ran,
        };
        let mut outcome = verdict::marked(ran, &case.plan);
        // A failure whose output names the outside world (`infra_failures`) is an infra error.
        if let Some((code, out, err)) = &failed_with {
            outcome = verdict::infra(outcome, *code, out, err, &self.settings.infra_failures);
        }
        Attempt {
            outcome,
            stdout,
            stderr,
            duration: exec.duration,
            facts,
        }
    }

    /// What the runtime is asked to run for one attempt of a case (numbered from 1;
    /// `{attempt}` in the command becomes that number).
    fn request(&self, case: &Case, attempt: u32) -> RunRequest {
        let s = &self.settings;
        let output = case
            .plan
            .predictions
            .as_ref()
            .map(|_| predictions::output_dir(&s.predictions.outputs, &case.name, attempt));
        RunRequest {
            case_name: case.name.clone(),
            command: case
                .plan
                .command
                .iter()
                .map(|word| word.replace("{attempt}", &attempt.to_string()))
                .collect(),
            workdir: case.plan.workdir.clone(),
            env: s.env.clone(),
            network: s.network,
            volumes: s.volumes.clone(),
            timeout: case.plan.timeout,
            grace: s.grace,
            slow_period: s.slow_period,
            memory: case.plan.memory,
            keep: s.keep,
            caches: s.caches.clone(),
            offline: s.offline,
            apptainer_home: s.apptainer_home.clone(),
            output,
        }
    }

    /// The spec's `versions` command in the case's image, as its cases run but with network
    /// `none`, no caches and no memory limit.
    fn versions_request(&self, case: &Case, command: &[String]) -> RunRequest {
        RunRequest {
            case_name: format!("versions of {}", case.image),
            command: command.to_vec(),
            network: Network::None,
            timeout: versions::TIMEOUT,
            memory: None,
            keep: versions::KEEP,
            caches: None,
            output: None,
            ..self.request(case, 1)
        }
    }
}

impl Dispatcher {
    /// The spec's `versions` command, and what it printed in each image.
    pub fn versions(&self) -> Option<Arc<Versions>> {
        self.settings.versions.clone()
    }

    /// What each runtime's stage fetched, one line each (`pulled 2 images (1.2 GiB) in 3m`).
    pub fn totals_lines(&self) -> Vec<String> {
        self.stages
            .values()
            .flatten()
            .filter_map(|stage| stage.totals_line())
            .collect()
    }
}

/// Whether a case will run in its image (so its stage counts it).
fn needs_image(case: &Case, run_skipped: bool) -> bool {
    case.plan.skip.is_none() || run_skipped
}

/// What a case runs in, as a runtime takes it.
pub fn image_of(case: &Case) -> Image {
    Image {
        name: case.image.clone(),
        sif: case.sif.as_ref().map(|entry| SifSource {
            url: entry.url.clone(),
            name: entry.name.clone(),
            md5: entry.md5.clone(),
        }),
    }
}

/// Tells the stage that a case of its image ended, however it ended.
struct CaseDone {
    stage: Arc<Stage>,
    image: Image,
}

impl Drop for CaseDone {
    fn drop(&mut self) {
        self.stage.case_done(&self.image);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::standin::{Asked, StandIn};
    use crate::runtime::DOCKER;

    /// The events a run sent, one line each.
    #[derive(Default)]
    struct Collect(Mutex<Vec<String>>);

    impl Sink for Collect {
        fn event(&self, event: Event) {
            let line = match event {
                Event::RunStarted {
                    cases,
                    filtered_out,
                    name_width,
                } => {
                    format!("run: {cases} cases, {filtered_out} filtered out, width {name_width}")
                }
                Event::CaseStarted { name } => format!("started {name}"),
                Event::CaseRetrying { name, attempt, .. } => {
                    format!("retrying {name} ({attempt})")
                }
                Event::CaseFinished { record, shown } => {
                    format!(
                        "finished {}: {shown:?} ({})",
                        record.name,
                        record.outcome().summary()
                    )
                }
                Event::RunFinished { .. } => "run finished".to_string(),
                other => format!("{other:?}"),
            };
            self.0.lock().unwrap().push(line);
        }
    }

    fn case(model: &str, image: &str, command: &[&str]) -> Case {
        let mut case = Case::for_test(model, image);
        case.plan.command = command.iter().map(|w| w.to_string()).collect();
        case.plan.timeout = Duration::from_secs(60);
        case
    }

    fn settings() -> Settings {
        Settings {
            env: Vec::new(),
            network: Network::None,
            volumes: Vec::new(),
            grace: Duration::from_secs(1),
            slow_period: Duration::from_secs(60),
            keep: 1024,
            retries: 0,
            infra_failures: vec!["HTTP Error 429".into()],
            infra_retries: 2,
            infra_backoff: Backoff::new(Duration::from_millis(1), Duration::from_millis(4)),
            fail_fast: false,
            run_skipped: false,
            store_success_output: false,
            threads: 1,
            pull_ahead: 1,
            caches: None,
            offline: false,
            apptainer_home: None,
            versions: None,
            predictions: predictions::Options::default(),
        }
    }

    async fn run(
        cases: Vec<Case>,
        settings: Settings,
        standin: Arc<StandIn>,
        cancel: Cancel,
    ) -> (Vec<Arc<Record>>, Vec<String>) {
        let sink = Arc::new(Collect::default());
        let runtimes = BTreeMap::from([(DOCKER, Ok(standin as Arc<dyn Runtime>))]);
        let dispatcher = Dispatcher::new(runtimes, cases, settings, cancel, sink.clone());
        let records = dispatcher.run(0).await;
        let events = sink.0.lock().unwrap().clone();
        (records, events)
    }

    #[tokio::test]
    async fn cases_run_in_order_with_retries_skips_and_failures_said() {
        let mut skipped = case("off", "img:2", &["pass"]);
        skipped.plan.skip = Some("needs a GPU".into());
        let cases = vec![
            case("ok", "img:1", &["pass"]),
            case("bad", "img:1", &["fail"]),
            skipped,
            case("flaky", "img:2", &["flaky", "{attempt}"]),
        ];
        let standin = Arc::new(StandIn::new(DOCKER));
        let retries = Settings {
            retries: 1,
            ..settings()
        };
        let (records, events) = run(cases, retries, standin.clone(), Cancel::new()).await;
        insta::assert_snapshot!(events.join("\n"));
        assert_eq!(records.len(), 4);
        let flaky = records.iter().find(|r| r.model == "flaky").unwrap();
        assert!(flaky.flaky() && flaky.attempts() == 2);
        let bad = records.iter().find(|r| r.model == "bad").unwrap();
        assert_eq!(
            bad.outcome(),
            &Outcome::Failed {
                message: "exit code 1: ERROR [kipoi] deliberate failure".into()
            }
        );
        assert!(bad.last.stdout.total() > 0, "a failure keeps its output");
        let ok = records.iter().find(|r| r.model == "ok").unwrap();
        assert!(ok.last.stdout.is_discarded(), "a pass keeps none");
        // Each image made ready once, before its first case; the skipped case asks for nothing.
        let prepares: Vec<Asked> = standin
            .asked()
            .into_iter()
            .filter(|a| matches!(a, Asked::Prepare(_)))
            .collect();
        assert_eq!(
            prepares,
            [
                Asked::Prepare("img:1".into()),
                Asked::Prepare("img:2".into())
            ]
        );
    }

    #[tokio::test]
    async fn fail_fast_runs_nothing_after_a_failure_and_a_broken_image_errors_its_cases() {
        let cases = vec![
            case("first", "img:1", &["fail"]),
            case("second", "img:1", &["pass"]),
        ];
        let standin = Arc::new(StandIn::new(DOCKER));
        let fail_fast = Settings {
            fail_fast: true,
            ..settings()
        };
        let (records, _) = run(cases, fail_fast, standin, Cancel::new()).await;
        assert_eq!(
            records[1].outcome(),
            &Outcome::NotRun {
                reason: "--fail-fast: an earlier case failed".into()
            }
        );

        let mut standin = StandIn::new(DOCKER);
        standin.broken_images = vec!["img:gone".into()];
        let cases = vec![
            case("a", "img:gone", &["pass"]),
            case("b", "img:1", &["pass"]),
        ];
        let (records, _) = run(cases, settings(), Arc::new(standin), Cancel::new()).await;
        assert_eq!(
            records[0].outcome().message(),
            "image `img:gone` is missing"
        );
        assert!(records[0].outcome().is_bad());
        assert_eq!(
            records[1].outcome(),
            &Outcome::Passed,
            "other images still run"
        );
    }

    #[tokio::test]
    async fn an_interrupted_run_starts_nothing_and_shows_failed() {
        let cancel = Cancel::new();
        cancel.raise(libc::SIGINT);
        let standin = Arc::new(StandIn::new(DOCKER));
        let cases = vec![case("a", "img:1", &["pass"])];
        let (records, events) = run(cases, settings(), standin.clone(), cancel).await;
        assert!(matches!(records[0].outcome(), Outcome::NotRun { .. }));
        assert!(
            events.iter().any(|e| e.contains("Failed")),
            "an interrupted run never ends on ok: {events:?}"
        );
        assert!(standin.asked().is_empty(), "{:?}", standin.asked());
    }

    #[tokio::test]
    async fn versions_run_once_per_image_and_land_in_its_facts() {
        let standin = Arc::new(StandIn::new(DOCKER));
        let with_versions = Settings {
            versions: Some(Arc::new(Versions::new(vec!["versions".into()]))),
            ..settings()
        };
        let cases = vec![case("a", "img:1", &["pass"]), case("b", "img:1", &["pass"])];
        let (records, _) = run(cases, with_versions, standin.clone(), Cancel::new()).await;
        let runs = standin
            .asked()
            .iter()
            .filter(|a| matches!(a, Asked::Run(r) if r.starts_with("versions of")))
            .count();
        assert_eq!(runs, 1);
        for r in &records {
            let facts = r.image_facts.as_ref().expect("the image was ready");
            assert_eq!(facts.versions.as_deref(), Some("pkg==1 in img:1"));
        }
    }

    #[tokio::test]
    async fn a_runtime_that_is_not_there_errors_its_cases() {
        let sink = Arc::new(Collect::default());
        let why = Failure::message("apptainer is not on PATH");
        let runtimes = BTreeMap::from([(DOCKER, Err(why.clone()))]);
        let dispatcher = Dispatcher::new(
            runtimes,
            vec![case("a", "img:1", &["pass"])],
            settings(),
            Cancel::new(),
            sink,
        );
        let records = dispatcher.run(0).await;
        assert_eq!(records[0].outcome(), &Outcome::Errored { error: why });
    }
}
