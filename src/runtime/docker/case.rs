//! One request in a fresh container: its caches taken, its container created (or taken from
//! those created ahead), attached to, started and waited for under the supervisor while its
//! output streams into bounded captures; then removed in the background, whatever happened.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig, Mount};
use bollard::query_parameters::AttachContainerOptionsBuilder;
use bollard::Docker;
use futures_util::future::FutureExt;
use futures_util::StreamExt;
use thiserror::Error;

use super::{docker_host, DockerRuntime, Removal};
use crate::capture::Captured;
use crate::config::units::show_duration;
use crate::engine::container::Container;
use crate::engine::{remove_container, short};
use crate::events;
use crate::record::facts::CaseFacts;
use crate::record::Failure;
use crate::runtime::{cache_ended, tell, Ended, Execution, Ready, RunRequest};
use crate::store::caches::{self, owners, For, Held};
use crate::supervise::{supervise_reading, Ending, Limits, Target};

/// Why a case's container did not run to its end.
#[derive(Debug, Error)]
pub enum CaseError {
    #[error("not run: the Docker daemon at {host} was lost earlier in this run")]
    LostEarlier { host: String },
    #[error("not run: lost the Docker daemon at {host} (could not {what})")]
    Lost {
        host: String,
        what: String,
        #[source]
        source: BollardError,
    },
    #[error("failed to {what}")]
    Request {
        what: String,
        #[source]
        source: BollardError,
    },
    #[error("lost the Docker daemon while the case ran")]
    LostWhileRunning(#[source] BollardError),
    #[error("failed to inspect the finished container")]
    InspectFinished(#[source] BollardError),
}

/// A container being created ahead for a case, and the image it is made from.
pub(super) struct Ahead {
    pub image: String,
    task: tokio::task::JoinHandle<Result<String, BollardError>>,
}

impl DockerRuntime {
    /// Runs one request in a fresh container of the ready image and removes the container
    /// afterwards (in the background).
    pub(super) async fn run_case(&self, ready: &Ready, req: &RunRequest) -> Execution {
        let started = Instant::now();
        let image = ready.key.as_str();
        let image_id = ready.facts.id.clone().unwrap_or_default();
        if self.daemon_lost() {
            let error = Failure::new(CaseError::LostEarlier {
                host: docker_host(),
            });
            return Execution::before_start(Ended::Errored { error }, req);
        }
        // The case's caches, locked until it ends (`held` lives to the end of this function).
        let held = match &req.caches {
            Some(caches) => {
                let helper = self.cache_helper(image);
                let case = For {
                    case: &req.case_name,
                    offline: req.offline,
                };
                match caches::docker::prepare(caches, &self.docker, image, &image_id, case, &helper)
                    .await
                {
                    Ok(held) => held,
                    Err(e) => return Execution::before_start(cache_ended(e), req),
                }
            }
            None => Held::default(),
        };
        let mut facts = CaseFacts {
            command: req.command.clone(),
            caches: held.uses.clone(),
            ..CaseFacts::default()
        };
        let created = match self.take_ahead(&req.case_name).await {
            Some(created) => created,
            None => {
                let labels = self.labels(&req.case_name);
                create(
                    &self.docker,
                    image,
                    req,
                    labels,
                    caches::docker::mounts(&held),
                )
                .await
            }
        };
        let id = match created {
            Ok(id) => id,
            Err(e) => {
                let error = self.request_failed(format!("create a container from `{image}`"), e);
                let mut exec = Execution::before_start(Ended::Errored { error }, req);
                exec.facts = facts;
                return exec;
            }
        };
        facts.container = Some(id.chars().take(12).collect());
        // New volumes, filled as the container was created, are given to the image's user
        // before it starts.
        if let Err(e) = owners::settle(&self.docker, &id, &held, self.request_timeout).await {
            let mut exec = Execution::before_start(cache_ended(e), req);
            exec.facts = facts;
            self.remove_later(id);
            return exec;
        }
        let mut exec = self.run_container(&id, req).await;
        exec.duration = started.elapsed();
        exec.facts = facts;
        drop(held);
        self.remove_later(id);
        exec
    }

    /// The helper container that reads an image's files for its caches.
    pub(super) fn cache_helper(&self, image: &str) -> owners::Helper {
        owners::Helper {
            labels: self.labels(&format!("cache helper for {image}")),
            request_timeout: self.request_timeout,
        }
    }

    /// Why a request failed: a lost daemon says so, since no later case will run either.
    fn request_failed(&self, what: String, source: BollardError) -> Failure {
        self.note_if_lost(&source);
        if self.daemon_lost() {
            Failure::new(CaseError::Lost {
                host: docker_host(),
                what,
                source,
            })
        } else {
            Failure::new(CaseError::Request { what, source })
        }
    }

    /// Attaches to the container, starts it, and waits for it under the supervisor while its
    /// output is read.
    async fn run_container(&self, id: &str, req: &RunRequest) -> Execution {
        let mut stdout = Captured::new(req.keep);
        let mut stderr = Captured::new(req.keep);
        // Attached before start, so nothing the command prints is missed.
        let options = AttachContainerOptionsBuilder::default()
            .stream(true)
            .stdout(true)
            .stderr(true)
            .build();
        let mut attached = match self.docker.attach_container(id, Some(options)).await {
            Ok(a) => a.output,
            Err(e) => {
                let error = self.request_failed("attach to the container".into(), e);
                return Execution::before_start(Ended::Errored { error }, req);
            }
        };
        if let Err(e) = self.docker.start_container(id, None).await {
            let error = self.request_failed("start the container".into(), e);
            return Execution::before_start(Ended::Errored { error }, req);
        }
        let started = tokio::time::Instant::now();
        let container = Container {
            docker: &self.docker,
            id,
            request_timeout: self.request_timeout,
        };
        let limits = Limits {
            timeout: Some(req.timeout),
            grace: req.grace,
            slack: self.waits.stop_slack,
            slow: Some(req.slow_period),
            drain: Target::Container.drain(),
        };
        let mut read_error = None;
        let watched = {
            let reading = async {
                while let Some(item) = attached.next().await {
                    match item {
                        Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                            stdout.push(&message)
                        }
                        Ok(LogOutput::StdErr { message }) => stderr.push(&message),
                        Ok(LogOutput::StdIn { .. }) => {}
                        Err(e) => {
                            read_error = Some(short(&e));
                            break;
                        }
                    }
                }
            };
            let on_notice = tell(&req.case_name, req.timeout);
            supervise_reading(
                reading,
                container.wait(),
                &container,
                &limits,
                &self.cancel,
                started,
                on_notice,
            )
            .await
        };
        let mut notes = watched.notes;
        let stuck = matches!(watched.ending, Ending::Stuck { .. });
        if let Some(e) = read_error {
            notes.push(format!("reading the output failed: {e}"));
        } else if !watched.drained && !stuck {
            // The output ends with the container; this daemon kept the stream open.
            notes.push(format!(
                "the output stream stayed open {} after the container ended; stopped reading",
                show_duration(limits.drain)
            ));
        }
        let ended = self.conclude(id, req, watched.ending).await;
        // What went wrong around the command, after its own output.
        for note in notes {
            stderr.push(format!("\n[zoo-runner: {note}]\n").as_bytes());
        }
        Execution {
            ended,
            stdout,
            stderr,
            duration: Duration::ZERO,
            facts: CaseFacts::default(),
        }
    }

    /// How the container ended, as the report needs it.
    async fn conclude(
        &self,
        id: &str,
        req: &RunRequest,
        ending: Ending<Option<i64>, BollardError>,
    ) -> Ended {
        match ending {
            // A clean exit needs no inspect (one request less per passing case); any other is
            // inspected, since the kernel's OOM kill shows only there.
            Ending::Exited(Some(0)) => Ended::Exited { code: 0 },
            Ending::Exited(_) => self.judge_exit(id, req).await,
            // Docker's stop kills by itself after the grace period (exit 137).
            Ending::TimedOut { killed } => Ended::TimedOut {
                after: req.timeout,
                killed: killed || self.exit_code(id).await == Some(137),
            },
            Ending::Interrupted { .. } => Ended::Interrupted,
            Ending::Stuck { timed_out, waited } => Ended::Stuck {
                timed_out: timed_out.then_some(req.timeout),
                waited,
                what: "container",
            },
            Ending::Lost(source) => {
                self.lost.store(true, std::sync::atomic::Ordering::SeqCst);
                Ended::Errored {
                    error: Failure::new(CaseError::LostWhileRunning(source)),
                }
            }
        }
    }

    /// The exit code of a finished container (137 = 128 + SIGKILL), when it can be read.
    async fn exit_code(&self, id: &str) -> Option<i64> {
        let info = self.docker.inspect_container(id, None).await.ok()?;
        info.state?.exit_code
    }

    async fn judge_exit(&self, id: &str, req: &RunRequest) -> Ended {
        let state = match self.docker.inspect_container(id, None).await {
            Ok(info) => info.state.unwrap_or_default(),
            Err(e) => {
                return Ended::Errored {
                    error: Failure::new(CaseError::InspectFinished(e)),
                }
            }
        };
        if state.oom_killed == Some(true) {
            return Ended::OutOfMemory { limit: req.memory };
        }
        Ended::Exited {
            code: state.exit_code.unwrap_or(-1),
        }
    }

    /// Creates the container of the case `req` names now, while the case before it runs, so
    /// that case starts sooner. At most one per case; the case takes it. Needs the run's async
    /// runtime (the caller enters it).
    pub(super) fn create_ahead(&self, ready: &Ready, req: &RunRequest) {
        // A case with caches mounts them only once it holds their lock: it creates its own.
        if self.daemon_lost() || req.caches.is_some() {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut ahead = self.ahead.lock().unwrap_or_else(|p| p.into_inner());
        if ahead.contains_key(&req.case_name) {
            return;
        }
        let docker = self.docker.clone();
        let image = ready.key.clone();
        let labels = self.labels(&req.case_name);
        let (made_from, request) = (image.clone(), req.clone());
        let task = handle
            .spawn(async move { create(&docker, &made_from, &request, labels, Vec::new()).await });
        ahead.insert(req.case_name.clone(), Ahead { image, task });
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

    /// Removes the containers created ahead that `unused` picks (cases that will not run):
    /// waits for their creation, then removes them in the background.
    pub(super) async fn discard_ahead(&self, unused: impl Fn(&Ahead) -> bool) {
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
    pub(super) async fn settle_removals(&self) {
        let pending: Vec<Removal> = self
            .removals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for removal in pending {
            removal.await;
        }
    }

    /// Removes a finished container in the background, so the next case need not wait for it;
    /// an image's removal and `finish` wait for every such removal.
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
}

/// The case's output folder, bound read-write where `{output}` points (a mount, not a bind
/// string, so no character of the host path is taken for syntax).
fn output_mount(host: &std::path::Path) -> Mount {
    Mount {
        target: Some(crate::config::predictions::CONTAINER_DIR.to_string()),
        source: Some(host.display().to_string()),
        typ: Some(bollard::models::MountType::BIND),
        read_only: Some(false),
        ..Mount::default()
    }
}

/// Creates the container of one request, labelled `labels`, with the caches' `mounts`.
async fn create(
    docker: &Docker,
    image: &str,
    req: &RunRequest,
    labels: HashMap<String, String>,
    mounts: Vec<Mount>,
) -> Result<String, BollardError> {
    let mut mounts = mounts;
    if let Some(output) = &req.output {
        mounts.push(output_mount(output));
    }
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
    let created = docker.create_container(None, body).await?;
    Ok(created.id)
}
