//! Glue between the plan, the runtimes and the report: one libtest-mimic trial per case. Each
//! trial runs its case on the shared tokio runtime (`block_on`, since libtest-mimic runs trials
//! on its own threads), applies retries and the spec's marks, and records the result.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libtest_mimic::{Completion, Failed, Trial};
use tokio::runtime::Handle;

use crate::caches::Caches;
use crate::cancel::Cancel;
use crate::plan::{Case, RuntimeKind};
use crate::record::{Attempt, Record, Status};
use crate::runtime::docker::DockerRuntime;
use crate::runtime::singularity::SingularityRuntime;
use crate::runtime::{Execution, Outcome, RunRequest};
use crate::spec::{CasePlan, Network};
use crate::verdict::judge;
use crate::versions::Versions;

/// A runtime ready to run cases, or why it is not (each of its cases then says so).
pub type Runtime<T> = Result<Arc<T>, String>;

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
    /// The spec's caches, unless `--no-cache`.
    pub caches: Option<Arc<Caches>>,
    /// `--offline`: every case with network `none`.
    pub offline: bool,
    pub apptainer_home: Option<String>,
    pub versions: Option<Arc<Versions>>,
}

pub struct Harness {
    pub handle: Handle,
    pub docker: Runtime<DockerRuntime>,
    pub singularity: Runtime<SingularityRuntime>,
    pub cancel: Cancel,
    pub settings: Settings,
    records: Arc<Mutex<Vec<Record>>>,
    something_failed: Arc<AtomicBool>,
}

impl Harness {
    pub fn new(
        handle: Handle,
        docker: Runtime<DockerRuntime>,
        singularity: Runtime<SingularityRuntime>,
        cancel: Cancel,
        settings: Settings,
    ) -> Arc<Self> {
        Arc::new(Self {
            handle,
            docker,
            singularity,
            cancel,
            settings,
            records: Arc::default(),
            something_failed: Arc::default(),
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

    fn run_case(&self, case: &Case) -> Result<Completion, Failed> {
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

        let mut earlier = Vec::new();
        let mut n = 1;
        let (mut last, properties) = loop {
            let (this, properties) = finish(self.execute(case, n), &case.plan);
            let retry = this.status.is_bad() && n <= self.settings.retries;
            if !retry || self.cancel.is_cancelled() {
                break (this, properties);
            }
            earlier.push(this);
            n += 1;
            eprintln!("zoo-runner: retrying {} (attempt {n})", case.name);
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
                eprintln!(
                    "zoo-runner: {} is flaky: passed after a failed attempt",
                    case.name
                );
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

    /// Runs one attempt (numbered from 1; `{attempt}` in the command becomes that number).
    fn execute(&self, case: &Case, attempt: u32) -> Execution {
        let s = &self.settings;
        let request = RunRequest {
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
            versions: s.versions.clone(),
        };
        match case.runtime {
            RuntimeKind::Docker => match &self.docker {
                Ok(docker) => self.handle.block_on(docker.run(&case.image, &request)),
                Err(why) => Execution::errored(why.as_str(), s.keep),
            },
            RuntimeKind::Singularity => match &self.singularity {
                Ok(sing) => self.handle.block_on(sing.run(case, &request)),
                Err(why) => Execution::errored(why.as_str(), s.keep),
            },
        }
    }

    fn record(&self, record: Record) {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(record);
    }
}

/// Ends an attempt: its output streams are closed (spooled on disk) and judged.
fn finish(exec: Execution, plan: &CasePlan) -> (Attempt, Vec<(String, String)>) {
    let stdout = exec.stdout.finish();
    let stderr = exec.stderr.finish();
    // Only a failure quotes the model, so only a failure reads its output back.
    let status = if matches!(exec.outcome, Outcome::Failed { .. }) {
        judge(&exec.outcome, &stdout.text(), &stderr.text(), plan)
    } else {
        judge(&exec.outcome, "", "", plan)
    };
    let attempt = Attempt {
        status,
        stdout,
        stderr,
        duration: exec.duration,
    };
    (attempt, exec.properties)
}
