//! The Singularity / Apptainer runtime: fetch the model's SIF (verified, cached, once per run per
//! file; or built from the Docker image with `--sif-from-docker`), then
//! `BIN exec --cleanenv --pwd DIR SIF COMMAND...` in its own process group, with a clean
//! environment, streaming its output into bounded captures. On timeout or interruption the whole
//! process group gets SIGTERM, then SIGKILL after the grace period. Once the process has ended,
//! its output is read for at most [`DRAIN`]: a process that left the group (`setsid`) may hold
//! the pipes open for ever, and the case must end all the same.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::sync::OnceCell;

use super::{outcome_of_exit, signal_name, Execution, Outcome, RunRequest};
use crate::caches::{self, CacheError, Caches, Held};
use crate::cancel::{Cancel, Level};
use crate::capture::Captured;
use crate::error_chain::chain;
use crate::plan::{Case, RuntimeKind};
use crate::reporter::{self, Event};
use crate::sif_cache::{md5_file, pull, SifCache, SifError, SifSource};
use crate::units::show_duration;
use crate::versions;

#[derive(Debug, Error)]
pub enum SingularityError {
    #[error(
        "neither `apptainer` nor `singularity` is on PATH; install one, or pass \
         --singularity-bin PATH"
    )]
    NotFound,
    #[error("`{bin}` does not run: {reason}")]
    Broken { bin: PathBuf, reason: String },
}

/// How long the output pipes are still read after the process has ended (or was killed).
const DRAIN: Duration = Duration::from_secs(2);

/// Why a case has no SIF to run. Shared by every case of the file, hence `Arc`.
#[derive(Debug, Clone, Error)]
pub enum SifUnavailable {
    #[error(
        "the catalog has no SIF for `{model}` (model-to-singularity.json); pass \
         --sif-from-docker to build one from `{image}`"
    )]
    NotInCatalog { model: String, image: String },
    #[error(transparent)]
    Fetch(Arc<SifError>),
    #[error("the SIF fetch task failed")]
    Task(#[source] Arc<tokio::task::JoinError>),
}

type SifSlot = Arc<OnceCell<Result<PathBuf, SifUnavailable>>>;

pub struct SingularityRuntime {
    bin: PathBuf,
    version: String,
    cache: Arc<SifCache>,
    sif_from_docker: bool,
    cancel: Cancel,
    /// SIF name -> its verified path (or why there is none); filled once per run.
    sifs: Mutex<HashMap<String, SifSlot>>,
}

/// `--singularity-bin`, else `apptainer`, else `singularity`, on PATH.
pub fn find_binary(choice: Option<&Path>) -> Result<PathBuf, SingularityError> {
    if let Some(bin) = choice {
        return Ok(bin.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    ["apptainer", "singularity"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
        .ok_or(SingularityError::NotFound)
}

impl SingularityRuntime {
    /// Checks the binary runs (`BIN --version`) and keeps its version for the report.
    pub async fn new(
        bin: PathBuf,
        cache: SifCache,
        sif_from_docker: bool,
        cancel: Cancel,
    ) -> Result<Self, SingularityError> {
        let broken = |reason: String| SingularityError::Broken {
            bin: bin.clone(),
            reason,
        };
        let output = Command::new(&bin)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| broken(e.to_string()))?;
        if !output.status.success() {
            return Err(broken(format!(
                "`--version` exited with {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        let version = String::from_utf8_lossy(&output.stdout).trim().to_string();
        Ok(Self {
            bin,
            version,
            cache: Arc::new(cache),
            sif_from_docker,
            cancel,
            sifs: Mutex::new(HashMap::new()),
        })
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub async fn run(&self, case: &Case, req: &RunRequest) -> Execution {
        let started = Instant::now();
        // A download can take long: an interruption does not wait for it (it sees the
        // interruption too, and what it leaves is resumed next time). A build from Docker has a
        // process group to stop: that is waited for, so it does not outlive the run.
        let fetching = self.sif_for(case);
        tokio::pin!(fetching);
        let sif = tokio::select! {
            ready = &mut fetching => match ready {
                Ok(path) => path,
                Err(e) => return Execution::errored(chain(&e), req.keep),
            },
            _ = self.cancel.reached(Level::Stop) => {
                if case.sif.is_none() {
                    let _ = tokio::time::timeout(pull::STOP_TIME, &mut fetching).await;
                }
                return Execution::before_start(Outcome::Interrupted, req.keep)
            }
        };
        if let Some(versions) = &req.versions {
            let probe = self.probe_versions(&sif, &versions.command, req);
            versions
                .once(RuntimeKind::Singularity, &case.image, probe)
                .await;
        }
        // The case's caches, locked until it ends.
        let held = match &req.caches {
            Some(caches) => match self.take_caches(caches, case, &sif).await {
                Ok(held) => held,
                Err(e @ CacheError::Interrupted { .. }) => {
                    return Execution::before_start(super::outcome_of_cache_error(&e), req.keep)
                }
                Err(e) => return Execution::errored(e.to_string(), req.keep),
            },
            None => Held::default(),
        };
        let binds = caches::apptainer::bind_args(&held, req.apptainer_home.as_deref());
        let mut args: Vec<String> = vec!["exec".into(), "--cleanenv".into()];
        if req.offline {
            // A network namespace with only a loopback interface.
            args.extend(["--net".into(), "--network".into(), "none".into()]);
        }
        if let Some(dir) = &req.workdir {
            args.extend(["--pwd".into(), dir.clone()]);
        }
        for pair in &req.env {
            args.extend(["--env".into(), pair.clone()]);
        }
        // Host folders only: Docker volume names mean nothing to Apptainer (which binds $HOME,
        // the usual cache place, by itself).
        for volume in req.volumes.iter().filter(|v| v.starts_with('/')) {
            args.extend(["--bind".into(), volume.clone()]);
        }
        args.extend(binds);
        args.push(sif.display().to_string());
        args.extend(req.command.iter().cloned());

        let mut exec = self.run_process(&args, req).await;
        exec.duration = started.elapsed();
        exec.properties = vec![
            ("sif".into(), sif.display().to_string()),
            ("singularity-version".into(), self.version.clone()),
            ("command".into(), req.command.join(" ")),
        ];
        exec.properties.extend(held.facts.iter().cloned());
        drop(held);
        if let Some(src) = &case.sif {
            exec.properties.push(("sif-md5".into(), src.md5.clone()));
        }
        exec
    }

    /// Locks (and makes, when missing) the case's cache folders, keyed by the SIF's md5: the
    /// catalog's, else the one recorded when the SIF was built, else the file's own.
    async fn take_caches(
        &self,
        caches: &Caches,
        case: &Case,
        sif: &Path,
    ) -> Result<Held, CacheError> {
        let recorded = PathBuf::from(format!("{}.md5", sif.display()));
        let md5 = match &case.sif {
            Some(entry) => entry.md5.to_ascii_lowercase(),
            None => match std::fs::read_to_string(&recorded) {
                Ok(text) => text.trim().to_ascii_lowercase(),
                Err(_) => {
                    let path = sif.to_path_buf();
                    tokio::task::spawn_blocking(move || md5_file(&path))
                        .await
                        .map_err(|e| CacheError::Apptainer(e.to_string()))?
                        .map_err(|e| {
                            CacheError::Apptainer(format!(
                                "cannot read `{}` to key its caches: {e}",
                                sif.display()
                            ))
                        })?
                }
            },
        };
        caches::apptainer::prepare(caches, &case.image, sif, &md5).await
    }

    /// Runs the spec's `versions` command in the SIF and returns what it printed, or why it
    /// printed nothing useful.
    async fn probe_versions(&self, sif: &Path, command: &[String], req: &RunRequest) -> String {
        let probe = RunRequest {
            case_name: format!("versions of {}", sif.display()),
            command: command.to_vec(),
            timeout: versions::TIMEOUT,
            keep: versions::KEEP,
            caches: None,
            versions: None,
            ..req.clone()
        };
        let mut args: Vec<String> = vec!["exec".into(), "--cleanenv".into()];
        if req.offline {
            args.extend(["--net".into(), "--network".into(), "none".into()]);
        }
        args.push(sif.display().to_string());
        args.extend(command.iter().cloned());
        versions::text_of(self.run_process(&args, &probe).await)
    }

    /// The verified SIF of a case: downloaded from the catalog's URL, or pulled from the Docker
    /// image when asked to. Once per run per file, however many cases share it.
    async fn sif_for(&self, case: &Case) -> Result<PathBuf, SifUnavailable> {
        let key = match &case.sif {
            Some(entry) => entry.name.clone(),
            None if self.sif_from_docker => format!("docker://{}", case.image),
            None => {
                return Err(SifUnavailable::NotInCatalog {
                    model: case.model.clone(),
                    image: case.image.clone(),
                })
            }
        };
        let slot = {
            let mut sifs = self.sifs.lock().unwrap_or_else(|p| p.into_inner());
            sifs.entry(key).or_default().clone()
        };
        slot.get_or_init(|| async {
            let cache = Arc::clone(&self.cache);
            let cancel = self.cancel.clone();
            let task = match &case.sif {
                Some(entry) => {
                    let source = SifSource {
                        url: entry.url.clone(),
                        name: entry.name.clone(),
                        md5: entry.md5.clone(),
                    };
                    tokio::task::spawn_blocking(move || {
                        cache.fetch_until(&source, &|| cancel.is_cancelled())
                    })
                }
                None => {
                    let bin = self.bin.clone();
                    let image = case.image.clone();
                    let handle = tokio::runtime::Handle::current();
                    tokio::task::spawn_blocking(move || {
                        let stop = || cancel.is_cancelled();
                        cache.build(&pull::sif_name(&image), &stop, |target| {
                            pull::pull(&bin, &image, target, &handle, &stop)
                        })
                    })
                }
            };
            task.await
                .map_err(|e| SifUnavailable::Task(Arc::new(e)))?
                .map_err(|e| SifUnavailable::Fetch(Arc::new(e)))
        })
        .await
        .clone()
    }

    async fn run_process(&self, args: &[String], req: &RunRequest) -> Execution {
        let mut stdout = Captured::new(req.keep);
        let mut stderr = Captured::new(req.keep);
        let mut command = Command::new(&self.bin);
        command
            .args(args)
            // Nothing of the host's environment but what apptainer itself needs to start.
            .env_clear()
            .envs(
                ["PATH", "HOME", "USER", "TMPDIR"]
                    .iter()
                    .filter_map(|k| std::env::var(k).ok().map(|v| (*k, v))),
            )
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                return Execution::errored(
                    format!("failed to start `{}`: {e}", self.bin.display()),
                    req.keep,
                )
            }
        };
        let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
            return Execution::errored("the child process has no output pipes", req.keep);
        };
        let (end, drained) = {
            let reading = async {
                tokio::join!(pump(out, &mut stdout), pump(err, &mut stderr));
            };
            read_while(reading, self.wait(&mut child, req), DRAIN).await
        };
        if !drained {
            stderr.push(
                format!(
                    "\nzoo-runner: stopped reading the output {} after the process ended: \
                     something it started left its process group and still holds the output \
                     open (it was not stopped)\n",
                    show_duration(DRAIN)
                )
                .as_bytes(),
            );
        }
        let outcome = match end {
            Ok(End::Exited(status)) => match (status.code(), status_signal(&status)) {
                (Some(code), _) => outcome_of_exit(code as i64),
                (None, Some(sig)) => Outcome::Errored {
                    reason: format!("the process was killed by {}", signal_name(sig as i64)),
                },
                (None, None) => Outcome::Errored {
                    reason: format!("the process ended oddly: {status}"),
                },
            },
            Ok(End::TimedOut { killed }) => Outcome::TimedOut {
                after: req.timeout,
                killed,
            },
            Ok(End::Interrupted) => Outcome::Interrupted,
            Err(e) => Outcome::Errored {
                reason: format!("lost track of the process: {e}"),
            },
        };
        Execution {
            outcome,
            stdout,
            stderr,
            duration: Duration::ZERO,
            properties: Vec::new(),
        }
    }

    async fn wait(&self, child: &mut Child, req: &RunRequest) -> std::io::Result<End> {
        let started = Instant::now();
        let deadline = tokio::time::sleep(req.timeout);
        tokio::pin!(deadline);
        let mut slow = tokio::time::interval_at(
            tokio::time::Instant::now() + req.slow_period,
            req.slow_period,
        );
        let pgid = child.id().map(|id| id as i32);
        loop {
            tokio::select! {
                status = child.wait() => return Ok(End::Exited(status?)),
                _ = &mut deadline => {
                    reporter::note(format!(
                        "{} timed out after {}; stopping it",
                        req.case_name, show_duration(req.timeout)
                    ));
                    let killed = self.stop_group(child, pgid, req.grace).await;
                    return Ok(End::TimedOut { killed });
                }
                _ = self.cancel.reached(Level::Stop) => {
                    self.stop_group(child, pgid, req.grace).await;
                    return Ok(End::Interrupted);
                }
                _ = slow.tick() => reporter::send(Event::SlowCase {
                    case: req.case_name.clone(),
                    running: started.elapsed(),
                }),
            }
        }
    }

    /// SIGTERM to the whole process group, the grace period, then SIGKILL; a second
    /// interruption skips the wait.
    /// Returns true when SIGTERM was not enough (the grace period ran out, or a second
    /// interruption asked for a kill).
    async fn stop_group(&self, child: &mut Child, pgid: Option<i32>, grace: Duration) -> bool {
        let Some(pgid) = pgid else { return false };
        signal_group(pgid, libc::SIGTERM);
        let ended_by_term = tokio::select! {
            _ = child.wait() => true,
            _ = tokio::time::sleep(grace) => false,
            _ = self.cancel.reached(Level::Kill) => false,
        };
        // The leader may be gone while others of its group live on: kill the group regardless.
        signal_group(pgid, libc::SIGKILL);
        let _ = child.wait().await;
        !ended_by_term
    }
}

enum End {
    Exited(std::process::ExitStatus),
    TimedOut { killed: bool },
    Interrupted,
}

fn signal_group(pgid: i32, signal: i32) {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is touched.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

fn status_signal(status: &std::process::ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    status.signal()
}

/// Drives `reading` while `work` runs, then gives `reading` at most `drain` more. Returns what
/// `work` gave and whether `reading` finished.
async fn read_while<W: std::future::Future>(
    reading: impl std::future::Future<Output = ()>,
    work: W,
    drain: Duration,
) -> (W::Output, bool) {
    tokio::pin!(reading);
    tokio::pin!(work);
    let mut read_all = false;
    let result = loop {
        tokio::select! {
            () = &mut reading, if !read_all => read_all = true,
            result = &mut work => break result,
        }
    };
    let read_all = read_all || tokio::time::timeout(drain, &mut reading).await.is_ok();
    (result, read_all)
}

/// Copies a pipe into a bounded capture until it closes.
async fn pump(mut reader: impl AsyncRead + Unpin, into: &mut Captured) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => into.push(&buf[..n]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_binary_wins() {
        let chosen = find_binary(Some(Path::new("/opt/x/apptainer"))).unwrap();
        assert_eq!(chosen, PathBuf::from("/opt/x/apptainer"));
    }
}
