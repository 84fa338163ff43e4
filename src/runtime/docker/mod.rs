//! The Docker runtime, through the Engine API (bollard): ensure the image (pull once per run),
//! create a labelled container (tty off, so stdout and stderr stay apart), attach to it, start
//! it, stream its output into bounded captures while waiting with a timeout, then remove it, whatever happened.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::auth::DockerCredentials;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig, Mount};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    ListImagesOptionsBuilder, RemoveImageOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use futures_util::StreamExt;
use thiserror::Error;

pub mod pull;

pub use crate::engine::docker_host;
use crate::engine::labels::{self, LABEL_RUN, LABEL_RUNNER, RUNNER};
use crate::engine::{remove_container, short, Removed};

use self::pull::{PullFailure, PullStats};
use super::{
    outcome_of_cache_error, outcome_of_exit, LegacyExecution, LegacyOutcome, LegacyRunRequest,
};
use crate::cancel::{Cancel, Level};
use crate::capture::Captured;
use crate::config::knobs::Waits;
use crate::config::spec::Network;
use crate::config::units::{show_duration, show_size};
use crate::events::{self, Event};
use crate::identity::Identity;
use crate::run::versions;
use crate::select::plan::RuntimeKind;
use crate::store::caches::{self, Held};

/// How long the output stream may go on after the container has exited.
const DRAIN: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum DockerError {
    #[error(
        "cannot reach the Docker daemon at {host} (start one: `sudo dockerd &` or \
         `sudo systemctl start docker`; or point DOCKER_HOST at one)"
    )]
    Unreachable {
        host: String,
        #[source]
        source: BollardError,
    },
}

/// Why an image cannot be had. Cloned to every case of the image, hence reasons as text.
#[derive(Debug, Clone, Error)]
pub enum ImageError {
    #[error("failed to inspect image `{image}`: {reason}")]
    Inspect { image: String, reason: String },
    #[error("failed to pull image `{image}`: {reason}")]
    Pull { image: String, reason: String },
    /// A failed pull, described with the registry it came from.
    #[error("{0}")]
    Registry(String),
    #[error("cannot pull `{image}`: the login for registry {registry} cannot be read: {reason}")]
    Credentials {
        image: String,
        registry: String,
        reason: String,
    },
    #[error("the run was interrupted while `{image}` was being pulled")]
    Interrupted { image: String },
    #[error("image `{image}` is missing after its pull: {reason}")]
    MissingAfterPull { image: String, reason: String },
}

/// An image the daemon has: its id, and what pulling it took when this run pulled it.
#[derive(Debug, Clone)]
pub struct ImageReady {
    pub id: String,
    pub pulled: Option<PullStats>,
}

/// A container being created ahead for a case, and the image it is made from.
struct Ahead {
    image: String,
    task: tokio::task::JoinHandle<Result<String, BollardError>>,
}

/// A container removal running in the background; any number of waiters may wait for it.
type Removal = Shared<BoxFuture<'static, ()>>;

pub struct DockerRuntime {
    docker: Docker,
    run_id: String,
    version: String,
    cancel: Cancel,
    identity: Identity,
    /// Containers created for the next case while the case before it runs, by case name; the
    /// case takes its own, and those of cases that never ran are removed when their image is
    /// pruned, or by `finish`.
    ahead: Mutex<HashMap<String, Ahead>>,
    /// Removals of finished containers, done while the next case runs; a prune and `finish`
    /// wait for them (each without taking them from the others).
    removals: Mutex<Vec<Removal>>,
    /// Set when the daemon stopped answering mid-run: later cases error at once.
    lost: AtomicBool,
    waits: Waits,
    /// How long a request may take (`Waits::request_timeout` for this run's grace period).
    request_timeout: Duration,
}

impl DockerRuntime {
    /// Connects as the docker CLI would (DOCKER_HOST, else the default socket), agrees on an API
    /// version, and checks the daemon answers.
    /// Requests may take as long as the longest stop (`grace`) and some.
    pub async fn connect(
        run_id: &str,
        grace: Duration,
        waits: Waits,
        cancel: Cancel,
    ) -> Result<Self, DockerError> {
        let unreachable = |source| DockerError::Unreachable {
            host: docker_host(),
            source,
        };
        let request_timeout = waits.request_timeout(grace);
        let docker = Docker::connect_with_defaults()
            .map_err(unreachable)?
            .with_timeout(request_timeout);
        let docker = docker.negotiate_version().await.map_err(unreachable)?;
        let version = docker.version().await.map_err(unreachable)?;
        Ok(Self {
            docker,
            run_id: run_id.to_string(),
            version: version.version.unwrap_or_else(|| "unknown".into()),
            cancel,
            identity: Identity::of_this_process(),
            ahead: Mutex::new(HashMap::new()),
            removals: Mutex::new(Vec::new()),
            lost: AtomicBool::new(false),
            waits,
            request_timeout,
        })
    }

    /// Creates the container of the case `req` names now, while the case before it runs, so
    /// that case starts sooner. At most one per case; `run` takes it.
    pub fn create_ahead(self: &Arc<Self>, image: &str, req: LegacyRunRequest) {
        // A case with caches mounts them only once it holds their lock: it creates its own.
        if self.daemon_lost() || req.caches.is_some() {
            return;
        }
        let mut ahead = self.ahead.lock().unwrap_or_else(|p| p.into_inner());
        if ahead.contains_key(&req.case_name) {
            return;
        }
        let me = Arc::clone(self);
        let name = req.case_name.clone();
        let made_from = image.to_string();
        let task = tokio::spawn(async move { me.create(&made_from, &req, Vec::new()).await });
        ahead.insert(
            name,
            Ahead {
                image: image.to_string(),
                task,
            },
        );
    }

    /// The container created ahead for this case, if any.
    async fn take_ahead(&self, case_name: &str) -> Option<Result<String, BollardError>> {
        let task = self
            .ahead
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(case_name)?;
        task.task.await.ok()
    }

    /// Waits for every container removal still in flight, and removes the containers created
    /// ahead for cases that did not run.
    pub async fn finish(&self) {
        self.discard_ahead(|_| true).await;
        self.settle_removals().await;
        self.removals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Removes the containers created ahead that `unused` picks (cases that will not run):
    /// waits for their creation, then removes them in the background.
    async fn discard_ahead(&self, unused: impl Fn(&Ahead) -> bool) {
        let picked: Vec<Ahead> = self
            .ahead
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extract_if(|_, ahead| unused(ahead))
            .map(|(_, ahead)| ahead)
            .collect();
        for ahead in picked {
            if let Ok(Ok(id)) = ahead.task.await {
                self.remove_later(id);
            }
        }
    }

    /// Waits for every container removal in flight, including those another waiter waits for
    /// too (not for containers created ahead: those belong to cases still to come).
    async fn settle_removals(&self) {
        let pending: Vec<Removal> = self
            .removals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for removal in pending {
            removal.await;
        }
    }

    /// Notes that the daemon stopped answering when `e` says the connection failed (not that the
    /// daemon refused a request): the rest of the run is then not attempted.
    fn note_if_lost(&self, e: &BollardError) {
        if is_connection_error(e) {
            self.lost.store(true, Ordering::SeqCst);
        }
    }

    /// Why a request failed: a lost daemon says so, since no later case will run either.
    fn request_failed(&self, what: &str, e: &BollardError) -> String {
        if self.daemon_lost() {
            format!(
                "not run: lost the Docker daemon at {} (could not {what}): {}",
                docker_host(),
                short(e)
            )
        } else {
            format!("failed to {what}: {}", short(e))
        }
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    /// True once the daemon was lost during the run.
    pub fn daemon_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// The image's id when the daemon has it, `None` when it does not.
    pub async fn image_id(&self, image: &str) -> Result<Option<String>, ImageError> {
        match self.docker.inspect_image(image).await {
            Ok(info) => Ok(Some(info.id.unwrap_or_default())),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => {
                self.note_if_lost(&e);
                Err(ImageError::Inspect {
                    image: image.to_string(),
                    reason: short(&e),
                })
            }
        }
    }

    /// Pulls `image` (with progress on the reporter) and returns its id. The image stage calls
    /// this once per image, when the daemon does not have it.
    pub async fn pull_image(
        &self,
        image: &str,
        credentials: Option<DockerCredentials>,
    ) -> Result<ImageReady, ImageError> {
        let stats =
            pull::pull(&self.docker, image, credentials)
                .await
                .map_err(|PullFailure(reason)| ImageError::Pull {
                    image: image.to_string(),
                    reason,
                })?;
        match self.docker.inspect_image(image).await {
            Ok(info) => Ok(ImageReady {
                id: info.id.unwrap_or_default(),
                pulled: Some(stats),
            }),
            Err(e) => Err(ImageError::MissingAfterPull {
                image: image.to_string(),
                reason: short(&e),
            }),
        }
    }

    /// The ids of every image the daemon has (intermediate ones too).
    pub async fn image_ids(&self) -> Result<HashSet<String>, String> {
        let options = ListImagesOptionsBuilder::default().all(true).build();
        let images = self
            .docker
            .list_images(Some(options))
            .await
            .map_err(|e| short(&e))?;
        Ok(images.into_iter().map(|i| i.id).collect())
    }

    /// Removes an image this run pulled (`--prune-images`), once no container of the runner
    /// uses it: the containers created ahead for its cases that did not run are removed, and
    /// every removal in flight is waited for first.
    pub async fn remove_image(&self, image: &str) -> Result<(), String> {
        // The image's cases have all ended: a container made ahead for one of them is unused.
        self.discard_ahead(|ahead| ahead.image == image).await;
        self.settle_removals().await;
        let options = RemoveImageOptionsBuilder::default().build();
        self.docker
            .remove_image(image, Some(options), None)
            .await
            .map(|_| ())
            .map_err(|e| short(&e))
    }

    /// Removes what a pull of `image` that this run stopped (or that failed) left behind: the
    /// image itself, should the daemon have finished it, and dangling images of its repository
    /// (a tag gone, its digest kept). Only images whose id is not in `before` (what the daemon
    /// had before the run's first pull) are touched; without `before` only the image itself,
    /// which the daemon did not have when the pull began. Returns one line per image removed
    /// or not.
    pub async fn remove_stopped_pull(
        &self,
        image: &str,
        before: Option<&HashSet<String>>,
    ) -> Vec<Result<String, String>> {
        // Waits for the runner's own containers, as a prune does.
        self.discard_ahead(|ahead| ahead.image == image).await;
        self.settle_removals().await;
        // (what to remove: a name or an id; its id; what to call it)
        let mut left: Vec<(String, String, String)> = Vec::new();
        if let Ok(Some(id)) = self.image_id(image).await {
            if before.is_none_or(|b| !b.contains(&id)) {
                // By name: should someone have tagged it otherwise meanwhile, theirs stays.
                left.push((image.to_string(), id, image.to_string()));
            }
        }
        if let Some(before) = before {
            let repository = repository_of(image);
            let filters = HashMap::from([("dangling".to_string(), vec!["true".to_string()])]);
            let options = ListImagesOptionsBuilder::default()
                .filters(&filters)
                .build();
            let dangling = self
                .docker
                .list_images(Some(options))
                .await
                .unwrap_or_default();
            for found in dangling {
                let ours = found
                    .repo_digests
                    .iter()
                    .any(|d| repository_of(d) == repository);
                let listed = left.iter().any(|(_, id, _)| *id == found.id);
                if ours && !before.contains(&found.id) && !listed {
                    let what = format!("{repository} ({})", short_id(&found.id));
                    left.push((found.id.clone(), found.id, what));
                }
            }
        }
        let mut lines = Vec::new();
        for (target, _, what) in left {
            let options = RemoveImageOptionsBuilder::default().build();
            lines.push(
                match self.docker.remove_image(&target, Some(options), None).await {
                    Ok(_)
                    | Err(BollardError::DockerResponseServerError {
                        status_code: 404, ..
                    }) => Ok(format!("removed {what}, left by a pull this run stopped")),
                    Err(e) => Err(format!(
                        "could not remove {what}, left by a pull this run stopped: {}",
                        short(&e)
                    )),
                },
            );
        }
        lines
    }

    /// Runs one case in a fresh container and removes the container afterwards.
    pub async fn run(
        &self,
        image: &str,
        image_id: &str,
        req: &LegacyRunRequest,
    ) -> LegacyExecution {
        let started = Instant::now();
        if self.daemon_lost() {
            return LegacyExecution::errored(
                format!(
                    "not run: the Docker daemon at {} was lost earlier in this run",
                    docker_host()
                ),
                req.keep,
            );
        }
        if let Some(versions) = &req.versions {
            let probe = self.probe_versions(image, &versions.command, req);
            versions.once(RuntimeKind::Docker, image, probe).await;
        }
        // The case's caches, locked until it ends (`held` lives to the end of this function).
        let held = match &req.caches {
            Some(caches) => {
                let labels = self.labels(&format!("cache helper for {image}"));
                match caches::docker::prepare(caches, &self.docker, image, image_id, labels).await {
                    Ok(held) => held,
                    Err(e) => {
                        return LegacyExecution::before_start(outcome_of_cache_error(&e), req.keep)
                    }
                }
            }
            None => Held::default(),
        };
        let mut properties = vec![
            ("image".to_string(), image.to_string()),
            ("image-id".to_string(), image_id.to_string()),
            ("docker-version".to_string(), self.version.clone()),
            ("command".to_string(), req.command.join(" ")),
        ];
        properties.extend(held.facts.iter().cloned());
        let created = match self.take_ahead(&req.case_name).await {
            Some(created) => created,
            None => self.create(image, req, caches::docker::mounts(&held)).await,
        };
        let id = match created {
            Ok(id) => id,
            Err(e) => {
                self.note_if_lost(&e);
                let reason = if self.daemon_lost() {
                    format!(
                        "not run: lost the Docker daemon at {}: {}",
                        docker_host(),
                        short(&e)
                    )
                } else {
                    format!("failed to create a container from `{image}`: {}", short(&e))
                };
                let mut exec = LegacyExecution::errored(reason, req.keep);
                exec.properties = properties;
                return exec;
            }
        };
        properties.push(("container".to_string(), id.chars().take(12).collect()));
        let mut exec = self.run_container(&id, req).await;
        exec.duration = started.elapsed();
        drop(held);
        self.remove_later(id);
        exec.properties.splice(0..0, properties);
        exec
    }

    /// Runs the spec's `versions` command in a container of the image (network `none`, no
    /// caches) and returns what it printed, or why it printed nothing useful.
    async fn probe_versions(
        &self,
        image: &str,
        command: &[String],
        req: &LegacyRunRequest,
    ) -> String {
        let probe = LegacyRunRequest {
            case_name: format!("versions of {image}"),
            command: command.to_vec(),
            network: Network::None,
            timeout: versions::TIMEOUT,
            keep: versions::KEEP,
            caches: None,
            versions: None,
            ..req.clone()
        };
        let id = match self.create(image, &probe, Vec::new()).await {
            Ok(id) => id,
            Err(e) => return format!("unknown: cannot create a container: {}", short(&e)),
        };
        let exec = self.run_container(&id, &probe).await;
        self.remove_later(id);
        versions::text_of(exec)
    }

    /// The labels of every container the runner creates (`case` names what it is for).
    fn labels(&self, case: &str) -> HashMap<String, String> {
        labels::for_container(&self.run_id, &self.identity, case)
    }

    async fn create(
        &self,
        image: &str,
        req: &LegacyRunRequest,
        mounts: Vec<Mount>,
    ) -> Result<String, BollardError> {
        let labels = self.labels(&req.case_name);
        let host_config = HostConfig {
            network_mode: Some(req.network.docker_mode().to_string()),
            binds: Some(req.volumes.clone()),
            mounts: (!mounts.is_empty()).then_some(mounts),
            auto_remove: Some(false),
            memory: req.memory.map(|m| m as i64),
            // No swap beyond the limit, so the limit means what it says.
            memory_swap: req.memory.map(|m| m as i64),
            // Output is read through an attachment made before start; the daemon keeps no copy,
            // so a container that prints gigabytes costs no disk.
            log_config: Some(HostConfigLogConfig {
                typ: Some("none".into()),
                config: None,
            }),
            // An init process as PID 1 forwards signals and lets the command die of its own
            // signals (PID 1 ignores signals it has no handler for).
            init: Some(true),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            cmd: Some(req.command.clone()),
            // The image's entrypoint would wrap our command; the spec's command is the whole story.
            entrypoint: Some(vec![]),
            working_dir: req.workdir.clone(),
            env: Some(req.env.clone()),
            labels: Some(labels),
            tty: Some(false),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            host_config: Some(host_config),
            ..Default::default()
        };
        let created = self.docker.create_container(None, body).await?;
        Ok(created.id)
    }

    async fn run_container(&self, id: &str, req: &LegacyRunRequest) -> LegacyExecution {
        let mut stdout = Captured::new(req.keep);
        let mut stderr = Captured::new(req.keep);
        let failed = |reason: String, stdout, stderr| LegacyExecution {
            outcome: LegacyOutcome::Errored { reason },
            stdout,
            stderr,
            duration: Duration::ZERO,
            properties: Vec::new(),
        };
        // Attached before start, so nothing the command prints is missed.
        let options = AttachContainerOptionsBuilder::default()
            .stream(true)
            .stdout(true)
            .stderr(true)
            .build();
        let mut attached = match self.docker.attach_container(id, Some(options)).await {
            Ok(a) => a.output,
            Err(e) => {
                self.note_if_lost(&e);
                let reason = self.request_failed("attach to the container", &e);
                return failed(reason, stdout, stderr);
            }
        };
        if let Err(e) = self.docker.start_container(id, None).await {
            self.note_if_lost(&e);
            let reason = self.request_failed("start the container", &e);
            return failed(reason, stdout, stderr);
        }
        let started = Instant::now();
        let ((end, mut notes), log_error) = {
            let logs = async {
                let mut error = None;
                while let Some(item) = attached.next().await {
                    match item {
                        Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                            stdout.push(&message)
                        }
                        Ok(LogOutput::StdErr { message }) => stderr.push(&message),
                        Ok(LogOutput::StdIn { .. }) => {}
                        Err(e) => {
                            error = Some(short(&e));
                            break;
                        }
                    }
                }
                error
            };
            tokio::pin!(logs);
            tokio::select! {
                waited = self.wait(id, req, started) => {
                    // The output ends with the container; should it not (a daemon that keeps
                    // the stream open), it gets a bounded time after the exit. A container
                    // given up on is still running: its stream would not end.
                    let log_error = if matches!(waited.0, End::Stuck { .. }) {
                        None
                    } else {
                        match tokio::time::timeout(DRAIN, &mut logs).await {
                            Ok(e) => e,
                            Err(_) => Some(format!(
                                "the output stream stayed open {} after the container ended; \
                                 stopped reading",
                                show_duration(DRAIN)
                            )),
                        }
                    };
                    (waited, log_error)
                }
                // The stream ended first: the container has exited or is about to.
                log_error = &mut logs => (self.wait(id, req, started).await, log_error),
            }
        };
        if let Some(e) = log_error {
            notes.push(format!("reading the output failed: {e}"));
        }
        self.conclude(id, req, end, notes, stdout, stderr).await
    }

    async fn conclude(
        &self,
        id: &str,
        req: &LegacyRunRequest,
        end: End,
        notes: Vec<String>,
        stdout: Captured,
        mut stderr: Captured,
    ) -> LegacyExecution {
        let outcome = match end {
            End::TimedOut => LegacyOutcome::TimedOut {
                after: req.timeout,
                killed: self.exit_code(id).await == Some(137),
            },
            End::Interrupted => LegacyOutcome::Interrupted,
            End::Lost(e) => {
                self.lost.store(true, Ordering::SeqCst);
                LegacyOutcome::Errored {
                    reason: format!("lost the Docker daemon while the case ran: {e}"),
                }
            }
            End::Stuck { timed_out } => LegacyOutcome::Stuck {
                timed_out: timed_out.then_some(req.timeout),
                waited: req.grace + self.waits.stop_slack * 2,
            },
            // A clean exit needs no inspect (one request less per passing case); any other is
            // inspected, since the kernel's OOM kill shows only there.
            End::Exited(Some(0)) => LegacyOutcome::Passed,
            End::Exited(_) => self.judge_exit(id, req).await,
        };
        // What went wrong around the command, after its own output.
        for note in notes {
            stderr.push(format!("\n[zoo-runner: {note}]\n").as_bytes());
        }
        LegacyExecution {
            outcome,
            stdout,
            stderr,
            duration: Duration::ZERO,
            properties: Vec::new(),
        }
    }

    /// Waits for the container to exit, stopping it at its timeout or on interruption. Every
    /// wait has a deadline: a container still there `stop_slack` after its stop's grace period
    /// is killed, and one still there `stop_slack` after that is given up on (and removed by
    /// force). Also returns notes for the case's stderr: what went wrong while stopping it.
    async fn wait(&self, id: &str, req: &LegacyRunRequest, started: Instant) -> (End, Vec<String>) {
        let slack = self.waits.stop_slack;
        let mut waiting = Box::pin(self.docker.wait_container(id, None));
        let deadline = tokio::time::sleep_until(deadline_after(started, req.timeout));
        tokio::pin!(deadline);
        // The next whole period from the start: a wait begun late (the output ended first)
        // must not repeat the slow notes it missed.
        let periods = started.elapsed().as_nanos() / req.slow_period.as_nanos().max(1) + 1;
        let first = req
            .slow_period
            .saturating_mul(u32::try_from(periods).unwrap_or(u32::MAX));
        let mut slow = tokio::time::interval_at(deadline_after(started, first), req.slow_period);
        slow.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut stopped: Option<End> = None;
        // The stop or kill request in flight. A stuck daemon may never answer it, so it runs
        // beside the wait and the deadlines instead of holding them up.
        let mut request: Option<Request<'_>> = None;
        let mut give_up: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        let mut killed = false;
        let mut notes = Vec::new();
        loop {
            tokio::select! {
                item = waiting.next() => {
                    let end = match item {
                        // A non-zero exit comes back as an error from bollard, with its code.
                        Some(Ok(reply)) => stopped.unwrap_or(End::Exited(Some(reply.status_code))),
                        Some(Err(BollardError::DockerContainerWaitError { .. })) | None => {
                            stopped.unwrap_or(End::Exited(None))
                        }
                        Some(Err(e)) => stopped.unwrap_or(End::Lost(short(&e))),
                    };
                    return (end, notes);
                }
                _ = &mut deadline, if stopped.is_none() => {
                    events::note(format!(
                        "{} timed out after {}; stopping it",
                        req.case_name, show_duration(req.timeout)
                    ));
                    stopped = Some(End::TimedOut);
                    request = Some(self.stop_request(id, req.grace));
                    give_up = Some(Box::pin(tokio::time::sleep(req.grace.saturating_add(slack))));
                }
                _ = self.cancel.reached(Level::Stop), if stopped.is_none() => {
                    stopped = Some(End::Interrupted);
                    request = Some(self.stop_request(id, req.grace));
                    give_up = Some(Box::pin(tokio::time::sleep(req.grace.saturating_add(slack))));
                }
                // A second interruption kills at once.
                _ = self.cancel.reached(Level::Kill), if stopped.is_some() && !killed => {
                    killed = true;
                    request = Some(self.kill_request(id));
                    give_up = Some(Box::pin(tokio::time::sleep(slack)));
                }
                (what, result) = async { request.as_mut().expect("guarded").await }, if request.is_some() => {
                    request = None;
                    if let Some(note) = failed_request(what, result, self.request_timeout) {
                        events::note(format!("{}: {note}", req.case_name));
                        notes.push(note);
                    }
                }
                _ = async { give_up.as_mut().expect("guarded").await }, if give_up.is_some() => {
                    if killed {
                        let note = format!(
                            "the container was still running {} after the SIGKILL; \
                             the runner gave up on it and removes it by force",
                            show_duration(slack)
                        );
                        events::note(format!("{}: {note}", req.case_name));
                        notes.push(note);
                        let timed_out = matches!(stopped, Some(End::TimedOut));
                        return (End::Stuck { timed_out }, notes);
                    }
                    let note = format!(
                        "the container was still running {} after its stop's grace period; \
                         the runner sent SIGKILL",
                        show_duration(slack)
                    );
                    events::note(format!("{}: {note}", req.case_name));
                    notes.push(note);
                    killed = true;
                    request = Some(self.kill_request(id));
                    give_up = Some(Box::pin(tokio::time::sleep(slack)));
                }
                _ = slow.tick(), if stopped.is_none() => {
                    events::send(Event::SlowCase {
                        case: req.case_name.clone(),
                        running: started.elapsed(),
                    });
                }
            }
        }
    }

    /// Docker's stop: SIGTERM, the grace period, then SIGKILL; answered once the container is
    /// gone.
    fn stop_request<'a>(&'a self, id: &'a str, grace: Duration) -> Request<'a> {
        let options = StopContainerOptionsBuilder::default()
            .t(grace.as_secs().min(i32::MAX as u64) as i32)
            .build();
        Box::pin(async move { ("stop", self.docker.stop_container(id, Some(options)).await) })
    }

    fn kill_request<'a>(&'a self, id: &'a str) -> Request<'a> {
        let options = KillContainerOptionsBuilder::default()
            .signal("SIGKILL")
            .build();
        Box::pin(async move { ("kill", self.docker.kill_container(id, Some(options)).await) })
    }

    /// The exit code of a finished container (137 = 128 + SIGKILL), when it can be read.
    async fn exit_code(&self, id: &str) -> Option<i64> {
        let info = self.docker.inspect_container(id, None).await.ok()?;
        info.state?.exit_code
    }

    async fn judge_exit(&self, id: &str, req: &LegacyRunRequest) -> LegacyOutcome {
        let state = match self.docker.inspect_container(id, None).await {
            Ok(info) => info.state.unwrap_or_default(),
            Err(e) => {
                return LegacyOutcome::Errored {
                    reason: format!("failed to inspect the finished container: {}", short(&e)),
                }
            }
        };
        if state.oom_killed == Some(true) {
            let limit = req
                .memory
                .map(|m| format!("its memory limit of {}", show_size(m)))
                .unwrap_or_else(|| "the memory available".to_string());
            return LegacyOutcome::Errored {
                reason: format!("out of memory: the kernel killed the command at {limit}"),
            };
        }
        outcome_of_exit(state.exit_code.unwrap_or(-1))
    }

    /// Removes a finished container in the background, so the next case need not wait for it;
    /// a prune and `finish` wait for every such removal.
    fn remove_later(&self, id: String) {
        let docker = self.docker.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = remove_container(&docker, &id).await {
                events::note(format!(
                    "could not remove container {id}: {}; the next run will",
                    short(&e)
                ));
            }
        });
        let removal: Removal = async move {
            let _ = task.await;
        }
        .boxed()
        .shared();
        let mut removals = self.removals.lock().unwrap_or_else(|p| p.into_inner());
        removals.retain(|r| r.peek().is_none());
        removals.push(removal);
    }

    /// Removes containers left by runs whose runner process is provably gone (killed outright).
    /// Only containers carrying the runner's label, made on this machine since its last boot and
    /// in this PID namespace, are judged: a pid means nothing elsewhere, so containers of
    /// runners in other namespaces or on other hosts sharing the daemon are never touched. One
    /// failed removal does not end the sweep.
    pub async fn sweep_stale(&self) -> Sweep {
        let mut sweep = Sweep::default();
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{LABEL_RUNNER}={RUNNER}")],
        )]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers = match self.docker.list_containers(Some(options)).await {
            Ok(list) => list,
            Err(e) => {
                sweep.problems.push(format!(
                    "could not list containers of earlier runs: {}",
                    short(&e)
                ));
                return sweep;
            }
        };
        for container in containers {
            let labels = container.labels.unwrap_or_default();
            if labels.get(LABEL_RUN) == Some(&self.run_id)
                || !labels::made_here(&self.identity, &labels)
                || labels::run_is_alive(&labels)
            {
                continue;
            }
            let Some(id) = container.id else { continue };
            match remove_container(&self.docker, &id).await {
                Ok(Removed::Now) => sweep.removed += 1,
                // Another runner's sweep took it first.
                Ok(Removed::Elsewhere) => {}
                Err(e) => sweep.problems.push(format!(
                    "could not remove container {} of a killed run: {}",
                    id.chars().take(12).collect::<String>(),
                    short(&e)
                )),
            }
        }
        sweep
    }
}

/// What a sweep did.
#[derive(Debug, Default)]
pub struct Sweep {
    pub removed: usize,
    /// Failures, each a sentence; the sweep went on after each.
    pub problems: Vec<String>,
}

/// The repository an image reference or a repo digest names, as the daemon writes it
/// (`127.0.0.1:5555/zoo/x:1` and `127.0.0.1:5555/zoo/x@sha256:...` -> `127.0.0.1:5555/zoo/x`;
/// Docker Hub's `docker.io/library/` prefixes left out).
fn repository_of(reference: &str) -> String {
    let name = reference.split('@').next().unwrap_or(reference);
    let name = match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => name,
    };
    let name = name
        .strip_prefix("docker.io/")
        .or_else(|| name.strip_prefix("index.docker.io/"))
        .unwrap_or(name);
    name.strip_prefix("library/").unwrap_or(name).to_string()
}

/// The first 12 hex digits of an image id, as the docker CLI shows it.
fn short_id(id: &str) -> String {
    id.trim_start_matches("sha256:").chars().take(12).collect()
}

/// A stop or kill request to the daemon, named for messages.
type Request<'a> = futures_util::future::BoxFuture<'a, (&'static str, Result<(), BollardError>)>;

/// What to say about a stop or kill request (`what`) that failed; `None` when the failure only
/// means the container is already gone or no longer running (404, 409).
fn failed_request(
    what: &str,
    result: Result<(), BollardError>,
    timeout: Duration,
) -> Option<String> {
    match result {
        Ok(())
        | Err(BollardError::DockerResponseServerError {
            status_code: 404 | 409,
            ..
        }) => None,
        Err(BollardError::RequestTimeoutError) => Some(format!(
            "the Docker daemon did not answer the {what} request within {}",
            show_duration(timeout)
        )),
        Err(e) => Some(format!("the {what} request failed: {}", short(&e))),
    }
}

/// True when the request never got an answer from the daemon (as opposed to an answer that
/// refuses it).
fn is_connection_error(e: &BollardError) -> bool {
    !matches!(
        e,
        BollardError::DockerResponseServerError { .. }
            | BollardError::DockerContainerWaitError { .. }
            | BollardError::JsonDataError { .. }
            | BollardError::JsonSerdeError { .. }
    )
}

enum End {
    /// The command ended; the exit code when the wait's reply gave it.
    Exited(Option<i64>),
    TimedOut,
    Interrupted,
    Lost(String),
    /// Still there after its stop, a SIGKILL and two deadlines; `timed_out` when the stop was
    /// for its timeout (else for an interruption).
    Stuck {
        timed_out: bool,
    },
}

/// `start + after` on tokio's clock, or a far future where that would overflow.
fn deadline_after(start: Instant, after: Duration) -> tokio::time::Instant {
    let start = tokio::time::Instant::from_std(start);
    start
        .checked_add(after)
        .unwrap_or_else(|| start + Duration::from_secs(100 * 365 * 24 * 3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn repositories_of_references_and_digests_agree() {
        let local = "127.0.0.1:5555/zoo/x";
        assert_eq!(repository_of("127.0.0.1:5555/zoo/x:t1"), local);
        assert_eq!(repository_of("127.0.0.1:5555/zoo/x@sha256:ab"), local);
        assert_eq!(repository_of("127.0.0.1:5555/zoo/x"), local);
        assert_eq!(repository_of("docker.io/library/busybox:1"), "busybox");
        assert_eq!(repository_of("busybox@sha256:ab"), "busybox");
        assert_eq!(
            repository_of("kipoi/kipoi-docker:mmsplice"),
            "kipoi/kipoi-docker"
        );
    }

    #[test]
    fn only_stop_failures_that_matter_are_noted() {
        let refused = |status_code| {
            Err(BollardError::DockerResponseServerError {
                status_code,
                message: "no".into(),
            })
        };
        assert_eq!(failed_request("stop", Ok(()), secs(3)), None);
        assert_eq!(failed_request("stop", refused(404), secs(3)), None, "gone");
        assert_eq!(
            failed_request("kill", refused(409), secs(3)),
            None,
            "not running"
        );
        let timed_out = failed_request("stop", Err(BollardError::RequestTimeoutError), secs(3))
            .expect("a timeout is noted");
        assert!(
            timed_out.contains("did not answer the stop request within 3s"),
            "{timed_out}"
        );
        let failed = failed_request("kill", refused(500), secs(3)).expect("noted");
        assert!(
            failed.contains("kill request failed") && failed.contains("HTTP 500"),
            "{failed}"
        );
    }
}
