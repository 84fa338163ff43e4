//! Glue between the plan, the runtimes and the report: one libtest-mimic trial per case. Each
//! trial runs its case on the shared tokio runtime (`block_on`, since libtest-mimic runs trials
//! on its own threads), applies retries and the spec's marks, and records the result.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use libtest_mimic::{Completion, Failed, Trial};
use tokio::runtime::Handle;

use crate::cancel::Cancel;
use crate::config::spec::Network;
use crate::config::units::show_duration;
use crate::events;
use crate::record::facts::CaseFacts;
use crate::record::Failure;
use crate::run::images::ImageStage;
use crate::run::record::{Attempt, Record, Status};
use crate::run::sifs::SifStage;
use crate::run::verdict::judge;
use crate::run::versions::{self, Versions};
use crate::runtime::{Ended, Execution, Image, PrepareError, Ready, RunRequest, Runtime};
use crate::select::plan::{Case, RuntimeKind};
use crate::store::caches::Caches;
use crate::store::sif::SifSource;

/// A runtime ready to run cases, or why it is not (each of its cases then says so).
pub type Opened = Result<Arc<dyn Runtime>, String>;

/// Run-wide settings every case shares.
#[derive(Debug, Clone)]
pub struct Settings {
    pub env: Vec<String>,
    pub network: Network,
    pub volumes: Vec<String>,
    pub grace: Duration,
    pub slow_period: Duration,
    pub keep: usize,
    pub retries: u32,
    pub fail_fast: bool,
    /// `--ignored` / `--include-ignored`: run the cases the spec marks `skip` too.
    pub run_skipped: bool,
    /// `--store-success-output`: keep the output of passing cases in the report too.
    pub store_success_output: bool,
    /// Create the next case's container while a case runs: on one thread only, since with
    /// several the daemon is busy anyway and the next case is often taken by another thread.
    pub create_ahead: bool,
    /// The spec's caches, unless `--no-cache`.
    pub caches: Option<Arc<Caches>>,
    /// `--offline`: every case with network `none`.
    pub offline: bool,
    pub apptainer_home: Option<String>,
    pub versions: Option<Arc<Versions>>,
}

pub struct Harness {
    pub handle: Handle,
    pub docker: Opened,
    /// Makes each Docker image ready before its cases (absent when Docker is not up).
    pub images: Option<Arc<ImageStage>>,
    pub singularity: Opened,
    /// Makes each SIF ready before its cases (absent when Apptainer is not up).
    pub sifs: Option<Arc<SifStage>>,
    pub cancel: Cancel,
    pub settings: Settings,
    records: Arc<Mutex<Vec<Record>>>,
    something_failed: Arc<AtomicBool>,
    /// The cases in run order, and each one's place in it.
    order: OnceLock<(Vec<Case>, HashMap<String, usize>)>,
    /// Names of the cases a thread has started.
    started: Mutex<HashSet<String>>,
}

impl Harness {
    pub fn new(
        handle: Handle,
        docker: Opened,
        images: Option<Arc<ImageStage>>,
        singularity: Opened,
        sifs: Option<Arc<SifStage>>,
        cancel: Cancel,
        settings: Settings,
    ) -> Arc<Self> {
        Arc::new(Self {
            handle,
            docker,
            images,
            singularity,
            sifs,
            cancel,
            settings,
            records: Arc::default(),
            something_failed: Arc::default(),
            order: OnceLock::new(),
            started: Mutex::default(),
        })
    }

    pub fn trials(self: &Arc<Self>, cases: &[Case]) -> Vec<Trial> {
        cases
            .iter()
            .map(|case| {
                let me = Arc::clone(self);
                let case = case.clone();
                Trial::ignorable_test(case.name.clone(), move || me.run_case(&case))
            })
            .collect()
    }

    /// Everything recorded so far, in the order cases finished; the harness keeps none.
    pub fn take_records(&self) -> Vec<Record> {
        std::mem::take(&mut *self.records.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Whether a case will run a container of its image (so the image stage counts it).
    pub fn needs_image(case: &Case, run_skipped: bool) -> bool {
        case.runtime == RuntimeKind::Docker && (case.plan.skip.is_none() || run_skipped)
    }

    fn run_case(&self, case: &Case) -> Result<Completion, Failed> {
        self.started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(case.name.clone());
        // However the case ends, its image learns of it (the last case's end prunes it).
        let _image_done = self
            .images
            .as_ref()
            .filter(|_| Self::needs_image(case, self.settings.run_skipped))
            .map(|stage| ImageDone {
                stage: Arc::clone(stage),
                image: case.image.clone(),
            });
        let not_run = if let Some(reason) = case
            .plan
            .skip
            .as_ref()
            .filter(|_| !self.settings.run_skipped)
        {
            Some(Status::Skipped {
                reason: reason.clone(),
            })
        } else if self.cancel.is_cancelled() {
            Some(Status::NotRun {
                reason: "the run was interrupted before this case started".into(),
            })
        } else if self.settings.fail_fast && self.something_failed.load(Ordering::SeqCst) {
            Some(Status::NotRun {
                reason: "--fail-fast: an earlier case failed".into(),
            })
        } else {
            None
        };
        if let Some(status) = not_run {
            let interrupted = matches!(status, Status::NotRun { .. }) && self.cancel.is_cancelled();
            let summary = status.summary();
            self.record(Record::new(
                case,
                Vec::new(),
                Attempt::not_started(status),
                Vec::new(),
            ));
            // An interrupted run must not end on libtest's "test result: ok".
            if interrupted {
                return Err(Failed::from(summary));
            }
            return Ok(Completion::ignored_with(summary));
        }

        let ready = match self.prepare_image(case) {
            Ok(ready) => ready,
            Err((status, properties)) => {
                let summary = status.summary();
                let interrupted = matches!(status, Status::NotRun { .. });
                self.record(Record::new(
                    case,
                    Vec::new(),
                    Attempt::not_started(status),
                    properties,
                ));
                if !interrupted {
                    self.something_failed.store(true, Ordering::SeqCst);
                }
                return Err(Failed::from(summary));
            }
        };
        if let Some(ready) = &ready {
            self.create_next_ahead(case, ready);
        }
        let sif = match self.prepare_sif(case) {
            Ok(sif) => sif,
            Err((status, properties)) => {
                let summary = status.summary();
                let interrupted = matches!(status, Status::NotRun { .. });
                self.record(Record::new(
                    case,
                    Vec::new(),
                    Attempt::not_started(status),
                    properties,
                ));
                if !interrupted {
                    self.something_failed.store(true, Ordering::SeqCst);
                }
                return Err(Failed::from(summary));
            }
        };
        let ready = ready.or(sif);
        let mut earlier = Vec::new();
        let mut n = 1;
        let (mut last, properties) = loop {
            let exec = self.execute(case, n, ready.as_ref());
            let facts = exec.facts.clone();
            let this = finish(exec, case);
            let properties = properties(case, ready.as_ref(), &facts);
            let retry = this.status.is_bad() && n <= self.settings.retries;
            if !retry || self.cancel.is_cancelled() {
                break (this, properties);
            }
            earlier.push(this);
            n += 1;
            events::note(format!("retrying {} (attempt {n})", case.name));
        };
        let status = last.status.clone();
        if status == Status::Passed && !self.settings.store_success_output {
            // As cargo-nextest's JUnit: a pass keeps no output unless asked (failed earlier
            // attempts of a flaky case keep theirs).
            last.stdout.discard();
            last.stderr.discard();
        }
        let flaky = !earlier.is_empty() && status == Status::Passed;
        self.record(Record::new(case, earlier, last, properties));
        match status {
            Status::Passed if flaky => {
                events::note(format!(
                    "{} is flaky: passed after a failed attempt",
                    case.name
                ));
                Ok(Completion::Completed)
            }
            Status::Passed => Ok(Completion::Completed),
            Status::NotRun { .. } if self.cancel.is_cancelled() => {
                Err(Failed::from(status.summary()))
            }
            Status::Skipped { .. } | Status::ExpectedFailure { .. } | Status::NotRun { .. } => {
                Ok(Completion::ignored_with(status.summary()))
            }
            bad => {
                self.something_failed.store(true, Ordering::SeqCst);
                Err(Failed::from(bad.summary()))
            }
        }
    }

    /// A Docker case's image, ready before the case's time starts; or the status the case ends
    /// with when its image cannot be had (with the image named in its facts).
    #[allow(clippy::type_complexity)]
    fn prepare_image(&self, case: &Case) -> Result<Option<Ready>, (Status, Vec<(String, String)>)> {
        let Some(stage) = self
            .images
            .as_ref()
            .filter(|_| case.runtime == RuntimeKind::Docker)
        else {
            return Ok(None);
        };
        match self.handle.block_on(stage.prepare(&case.image)) {
            Ok(ready) => Ok(Some(ready)),
            Err(e) => {
                let facts = vec![("image".to_string(), case.image.clone())];
                Err((not_ready(e, &format!("`{}`", case.image), ""), facts))
            }
        }
    }

    /// A Singularity case's SIF, ready before the case's time starts (a download or a build is
    /// a step of its own); or the status the case ends with when there is none.
    #[allow(clippy::type_complexity)]
    fn prepare_sif(&self, case: &Case) -> Result<Option<Ready>, (Status, Vec<(String, String)>)> {
        if case.runtime != RuntimeKind::Singularity {
            return Ok(None);
        }
        // Without a runtime the attempt says why.
        let Some(stage) = &self.sifs else {
            return Ok(None);
        };
        match self.handle.block_on(stage.prepare(&image_of(case))) {
            Ok(ready) => Ok(Some(ready)),
            Err(e) => Err((
                not_ready(e, "its SIF", "; the case did not start"),
                Vec::new(),
            )),
        }
    }

    /// Runs one attempt (numbered from 1; `{attempt}` in the command becomes that number).
    fn execute(&self, case: &Case, attempt: u32, ready: Option<&Ready>) -> Execution {
        let request = self.request(case, attempt);
        let (runtime, stage) = match case.runtime {
            RuntimeKind::Docker => (&self.docker, "the image stage"),
            RuntimeKind::Singularity => (&self.singularity, "the SIF stage"),
        };
        let errored = |text: String| {
            let error = Failure::message(text);
            Execution::before_start(Ended::Errored { error }, &request)
        };
        match (runtime, ready) {
            (Ok(runtime), Some(ready)) => {
                self.probe_versions(case, runtime, ready);
                self.handle.block_on(runtime.run(ready, &request))
            }
            (Ok(_), None) => errored(format!("{stage} was not set up")),
            (Err(why), _) => errored(why.clone()),
        }
    }

    /// Runs the spec's `versions` command once per runtime and image, before the image's first
    /// case: a probe request (network `none`, no caches, its own timeout).
    fn probe_versions(&self, case: &Case, runtime: &Arc<dyn Runtime>, ready: &Ready) {
        let Some(versions) = &self.settings.versions else {
            return;
        };
        let probe = RunRequest {
            case_name: format!("versions of {}", case.image),
            command: versions.command.clone(),
            network: Network::None,
            timeout: versions::TIMEOUT,
            keep: versions::KEEP,
            caches: None,
            ..self.request(case, 1)
        };
        let run = async { versions::text_of(runtime.run(ready, &probe).await) };
        self.handle
            .block_on(versions.once(case.runtime, &case.image, run));
    }

    /// What the runtime is asked to run for one attempt of a case.
    fn request(&self, case: &Case, attempt: u32) -> RunRequest {
        let s = &self.settings;
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
        }
    }

    /// Creates the container of the case after this one in run order while this one runs,
    /// when that case will run on the same (ready) image and no thread has started it yet.
    fn create_next_ahead(&self, case: &Case, ready: &Ready) {
        let (Ok(docker), Some(order)) = (&self.docker, self.order.get()) else {
            return;
        };
        if !self.settings.create_ahead {
            return;
        }
        let (order, places) = order;
        let Some(next) = places.get(&case.name).and_then(|&at| order.get(at + 1)) else {
            return;
        };
        let started = self.started.lock().unwrap_or_else(|p| p.into_inner());
        let stopping = self.cancel.is_cancelled()
            || (self.settings.fail_fast && self.something_failed.load(Ordering::SeqCst));
        if next.image != case.image
            || !Self::needs_image(next, self.settings.run_skipped)
            || started.contains(&next.name)
            || stopping
        {
            return;
        }
        let _enter = self.handle.enter();
        docker.expect(ready, &self.request(next, 1));
    }

    /// The order libtest runs the cases in (after its filters): the next case's container is
    /// created while the current one runs.
    pub fn set_run_order(&self, cases: Vec<Case>) {
        let places = cases
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        let _ = self.order.set((cases, places));
    }

    fn record(&self, record: Record) {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(record);
    }
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

/// Why a case did not start: its image (or SIF) could not be made ready. `what` names it
/// ("`IMAGE`", "its SIF"); `after` ends an interruption's sentence.
fn not_ready(e: PrepareError, what: &str, after: &str) -> Status {
    match e {
        PrepareError::Interrupted { what: doing } => Status::NotRun {
            reason: format!("the run was interrupted while {what} was {doing}{after}"),
        },
        PrepareError::Failed(failure) => Status::Errored {
            message: failure.to_string(),
        },
    }
}

/// The report's properties of one attempt, from the facts the runtime gave (until the report
/// reads the typed facts itself).
fn properties(case: &Case, ready: Option<&Ready>, facts: &CaseFacts) -> Vec<(String, String)> {
    let mut properties: Vec<(String, String)> = Vec::new();
    let mut add = |k: &str, v: String| properties.push((k.to_string(), v));
    let version = ready.and_then(|r| r.facts.runtime_version.clone());
    let caches = |add: &mut dyn FnMut(&str, String)| {
        for cache in &facts.caches {
            let mut fact = format!("{} at {}", cache.source, cache.path);
            if cache.waited >= Duration::from_secs(1) {
                fact.push_str(&format!(" (waited {} for it)", show_duration(cache.waited)));
            }
            add("cache", fact);
        }
    };
    match case.runtime {
        RuntimeKind::Docker => {
            add("image", case.image.clone());
            if let Some(ready) = ready {
                add("image-id", ready.facts.id.clone().unwrap_or_default());
            }
            if let Some(version) = version {
                add("docker-version", version);
            }
            add("command", facts.command.join(" "));
            caches(&mut add);
            if let Some(container) = &facts.container {
                add("container", container.clone());
            }
        }
        RuntimeKind::Singularity => {
            if let Some(sif) = &facts.sif {
                add("sif", sif.display().to_string());
            }
            if let Some(version) = version {
                add("singularity-version", version);
            }
            add("command", facts.command.join(" "));
            caches(&mut add);
            if let Some(md5) = ready
                .filter(|_| case.sif.is_some())
                .and_then(|r| r.facts.id.clone())
            {
                add("sif-md5", md5);
            }
        }
    }
    if let Some(ready) = ready {
        // `pull-seconds` and `pulled-bytes`: 0 when it was there already. They become
        // properties of the image's testsuite.
        let (seconds, bytes) = ready
            .facts
            .fetched
            .map(|f| (f.elapsed.as_secs_f64(), f.bytes))
            .unwrap_or_default();
        add("pull-seconds", format!("{seconds:.3}"));
        add("pulled-bytes", bytes.to_string());
    }
    properties
}

/// Tells the image stage that a case of its image ended, however it ended.
struct ImageDone {
    stage: Arc<ImageStage>,
    image: String,
}

impl Drop for ImageDone {
    fn drop(&mut self) {
        self.stage.case_done(&self.image);
    }
}

/// Ends an attempt: its output streams are closed (spooled on disk) and judged.
fn finish(exec: Execution, case: &Case) -> Attempt {
    let stdout = exec.stdout.finish();
    let stderr = exec.stderr.finish();
    // Only a failure quotes the model, so only a failure reads its output back.
    let failed =
        matches!(exec.ended, Ended::Exited { code } if code != 0 && !(129..=192).contains(&code));
    let status = if failed {
        judge(
            &exec.ended,
            case.runtime,
            &stdout.text(),
            &stderr.text(),
            &case.plan,
        )
    } else {
        judge(&exec.ended, case.runtime, "", "", &case.plan)
    };
    Attempt {
        status,
        stdout,
        stderr,
        duration: exec.duration,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reason says why the case did not run; "not run: " is the summary's, said once.
    #[test]
    fn a_case_not_run_for_its_pull_says_not_run_once() {
        let interrupted = PrepareError::Interrupted {
            what: "being pulled",
        };
        let line = not_ready(interrupted, "`img:1`", "").summary();
        assert_eq!(
            line,
            "not run: the run was interrupted while `img:1` was being pulled"
        );
        let interrupted = PrepareError::Interrupted {
            what: "downloading",
        };
        let line = not_ready(interrupted, "its SIF", "; the case did not start").summary();
        assert_eq!(
            line,
            "not run: the run was interrupted while its SIF was downloading; the case did not \
             start"
        );
    }
}
