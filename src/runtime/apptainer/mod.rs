//! The Singularity / Apptainer runtime: `BIN exec --cleanenv --pwd DIR SIF COMMAND...` with a
//! clean environment, once the case's SIF is ready ([`crate::run::sifs`]).
//!
//! Every process it starts (the `--version` probe, a case, the spec's `versions` command) runs
//! under the supervisor ([`crate::supervise::process`]): in a process group of its own, with a
//! deadline, stopped with the whole group on timeout or interruption (SIGTERM, then SIGKILL
//! after the grace period; at once on a second interruption), given up on if even that does not
//! end it, and its output read for at most [`DRAIN`] once it has ended: a process that left the
//! group (`setsid`) may hold the pipes open for ever, and the case must end all the same.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::future::{select, Either};
use thiserror::Error;
use tokio::process::Command;

use super::{outcome_of_exit, signal_name, LegacyExecution, LegacyOutcome, LegacyRunRequest};
use crate::cancel::Cancel;
use crate::config::units::show_duration;
use crate::error_chain::chain;
use crate::events::{self, Event};
use crate::run::sifs::{SifReady, SifStage, SifTotals, SifUnavailable};
use crate::run::versions;
use crate::select::plan::{Case, RuntimeKind};
use crate::store::caches::{self, CacheError, Caches, Held};
use crate::store::sif::{md5_file, SifCache};
use crate::supervise::process::{self, exit_signal};
use crate::supervise::{Ending, Limits};

#[derive(Debug, Error)]
pub enum SingularityError {
    #[error(
        "neither `apptainer` nor `singularity` is on PATH; install one, or pass \
         --singularity-bin PATH"
    )]
    NotFound,
    #[error("--singularity-bin `{}` {what}", .bin.display())]
    Unusable { bin: PathBuf, what: String },
    #[error("`{} --version` could not be started", .bin.display())]
    Start {
        bin: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{} --version` {reason}", .bin.display())]
    Broken { bin: PathBuf, reason: String },
    #[error("interrupted while `{} --version` ran", .bin.display())]
    Interrupted { bin: PathBuf },
}

impl SingularityError {
    pub fn is_interrupted(&self) -> bool {
        matches!(self, SingularityError::Interrupted { .. })
    }
}

/// How long the output pipes are still read after the process has ended (or was killed).
const DRAIN: Duration = Duration::from_secs(2);
/// How long a case's process may take to go after its SIGKILL before it is given up on.
const SLACK: Duration = Duration::from_secs(10);
/// How long `BIN --version` may take. The fixture's launcher starts a container for it, which
/// takes seconds; a daemon that does not answer makes it hang.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes of `--version`'s output kept.
const PROBE_KEEP: usize = 4096;

pub struct SingularityRuntime {
    bin: PathBuf,
    version: String,
    cancel: Cancel,
    sifs: SifStage,
}

/// `--singularity-bin` (a bare name is looked up on PATH), else `apptainer`, else
/// `singularity`, on PATH; checked to be an executable file.
pub fn find_binary(choice: Option<&Path>) -> Result<PathBuf, SingularityError> {
    let on_path = |name: &Path| {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| is_executable_file(candidate))
    };
    let Some(bin) = choice else {
        return ["apptainer", "singularity"]
            .iter()
            .find_map(|name| on_path(Path::new(name)))
            .ok_or(SingularityError::NotFound);
    };
    let unusable = |what: &str| SingularityError::Unusable {
        bin: bin.to_path_buf(),
        what: what.to_string(),
    };
    let bare = bin.components().count() == 1 && !bin.as_os_str().to_string_lossy().contains('/');
    if bare {
        return on_path(bin).ok_or_else(|| unusable("is not on PATH"));
    }
    match std::fs::metadata(bin) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(unusable("does not exist")),
        Err(e) => Err(unusable(&format!("cannot be read: {e}"))),
        Ok(meta) if meta.is_dir() => Err(unusable("is a folder, not a program")),
        Ok(meta) if meta.permissions().mode() & 0o111 == 0 => {
            Err(unusable("is not executable (it has no x permission)"))
        }
        Ok(_) => Ok(bin.to_path_buf()),
    }
}

fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs `BIN --version` under the supervisor (stopped past `timeout`, or on the run's
/// interruption) and returns its version line, if it printed one.
async fn probe_version(
    bin: &Path,
    timeout: Duration,
    cancel: &Cancel,
) -> Result<Option<String>, SingularityError> {
    let mut command = Command::new(bin);
    command.arg("--version");
    probe(command, bin, timeout, cancel).await
}

/// [`probe_version`] with the command given (`bin` names it in messages).
async fn probe(
    command: Command,
    bin: &Path,
    timeout: Duration,
    cancel: &Cancel,
) -> Result<Option<String>, SingularityError> {
    let done = process::run(
        command,
        None,
        PROBE_KEEP,
        &Limits::helper(timeout),
        cancel,
        |_| {},
    )
    .await
    .map_err(|e| SingularityError::Start {
        bin: bin.to_path_buf(),
        source: e.source,
    })?;
    let broken = |reason: String| SingularityError::Broken {
        bin: bin.to_path_buf(),
        reason,
    };
    match &done.ending {
        Ending::Exited(status) if status.success() => {}
        Ending::Exited(status) => {
            let said = done.stderr.finish().text();
            let said = said.trim();
            return Err(broken(if said.is_empty() {
                format!("exited with {status}")
            } else {
                format!("exited with {status}: {said}")
            }));
        }
        Ending::TimedOut { .. }
        | Ending::Stuck {
            timed_out: true, ..
        } => {
            return Err(broken(format!(
                "did not answer within {}, and was stopped",
                show_duration(timeout)
            )))
        }
        Ending::Interrupted { .. } | Ending::Stuck { .. } => {
            return Err(SingularityError::Interrupted {
                bin: bin.to_path_buf(),
            })
        }
        Ending::Lost(e) => return Err(broken(format!("could not be waited for: {e}"))),
    }
    Ok(version_line(&done.stdout.finish().text()))
}

/// The first line of `--version`'s output when it looks like a version (`apptainer version
/// 1.4.5`, `singularity-ce version 4.1.0`): short, printable, with a number like 1.4 in it.
fn version_line(stdout: &str) -> Option<String> {
    let line = stdout.lines().next()?.trim();
    let printable = !line.is_empty()
        && line.len() <= 120
        && line.chars().all(|c| c.is_ascii_graphic() || c == ' ');
    let numbered = line.split([' ', '-', '_', '+']).any(|word| {
        let mut parts = word.trim_start_matches('v').split('.');
        let digits = |p: Option<&str>| {
            p.is_some_and(|p| p.bytes().next().is_some_and(|b| b.is_ascii_digit()))
        };
        let first = parts.next();
        first.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            && digits(parts.next())
    });
    (printable && numbered).then(|| line.to_string())
}

impl SingularityRuntime {
    /// Checks the binary runs (`BIN --version`, within [`PROBE_TIMEOUT`]) and keeps its
    /// version for the report.
    pub async fn new(
        bin: PathBuf,
        cache: SifCache,
        sif_from_docker: bool,
        cancel: Cancel,
    ) -> Result<Self, SingularityError> {
        let version = match probe_version(&bin, PROBE_TIMEOUT, &cancel).await? {
            Some(version) => version,
            None => {
                events::line(format!(
                    "warning: `{} --version` printed no version line; the report says `unknown`",
                    bin.display()
                ));
                "unknown".to_string()
            }
        };
        let sifs = SifStage::new(bin.clone(), cache, sif_from_docker, cancel.clone());
        Ok(Self {
            bin,
            version,
            cancel,
            sifs,
        })
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    /// The case's SIF, ready: a step before the case, whose time is not the case's.
    pub async fn prepare(&self, case: &Case) -> Result<SifReady, SifUnavailable> {
        self.sifs.prepare(case).await
    }

    /// What the run's SIF stage downloaded or built.
    pub fn sif_totals(&self) -> SifTotals {
        self.sifs.totals()
    }

    /// Runs the case in its SIF (made ready by [`Self::prepare`]).
    pub async fn run(&self, case: &Case, req: &LegacyRunRequest, sif: &Path) -> LegacyExecution {
        let started = Instant::now();
        if let Some(versions) = &req.versions {
            let probe = self.probe_versions(sif, &versions.command, req);
            versions
                .once(RuntimeKind::Singularity, &case.image, probe)
                .await;
        }
        // The case's caches, locked until it ends.
        let held = match &req.caches {
            Some(caches) => match self.take_caches(caches, case, sif).await {
                Ok(held) => held,
                Err(e @ CacheError::Interrupted { .. }) => {
                    return LegacyExecution::before_start(
                        super::outcome_of_cache_error(&e),
                        req.keep,
                    )
                }
                Err(e) => return LegacyExecution::errored(e.to_string(), req.keep),
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
    async fn probe_versions(
        &self,
        sif: &Path,
        command: &[String],
        req: &LegacyRunRequest,
    ) -> String {
        let probe = LegacyRunRequest {
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

    /// `BIN ARGS...` with nothing of the host's environment but what Apptainer itself needs to
    /// start.
    fn command(&self, args: &[String]) -> Command {
        let mut command = Command::new(&self.bin);
        command
            .args(args)
            .env_clear()
            .envs(
                ["PATH", "HOME", "USER", "TMPDIR"]
                    .iter()
                    .filter_map(|k| std::env::var(k).ok().map(|v| (*k, v))),
            )
            .env("LANG", "C.UTF-8");
        command
    }

    /// Runs `BIN ARGS...` under the supervisor within the request's timeout, grace period and
    /// slow notices, and says how it ended.
    async fn run_process(&self, args: &[String], req: &LegacyRunRequest) -> LegacyExecution {
        let limits = Limits {
            timeout: Some(req.timeout),
            grace: req.grace,
            slack: SLACK,
            slow: Some(req.slow_period),
            drain: DRAIN,
        };
        let case = req.case_name.clone();
        let running = process::run(
            self.command(args),
            None,
            req.keep,
            &limits,
            &self.cancel,
            |running| {
                events::send(Event::SlowCase {
                    case: case.clone(),
                    running,
                })
            },
        );
        // Said when the deadline comes, while the supervisor stops it.
        let timeout_note = async {
            tokio::time::sleep(req.timeout).await;
            events::note(format!(
                "{} timed out after {}; stopping it",
                req.case_name,
                show_duration(req.timeout)
            ));
            std::future::pending::<std::convert::Infallible>().await
        };
        let done = match select(Box::pin(running), Box::pin(timeout_note)).await {
            Either::Left((done, _)) => done,
            Either::Right((never, _)) => match never {},
        };
        let done = match done {
            Ok(done) => done,
            Err(e) => return LegacyExecution::errored(chain(&e), req.keep),
        };
        let mut stderr = done.stderr;
        if !done.drained {
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
        for note in &done.notes {
            stderr.push(format!("\nzoo-runner: {note}\n").as_bytes());
        }
        let outcome = match done.ending {
            Ending::Exited(status) => match (status.code(), exit_signal(&status)) {
                (Some(code), _) => outcome_of_exit(code as i64),
                (None, Some(sig)) => LegacyOutcome::Errored {
                    reason: format!("the process was killed by {}", signal_name(sig as i64)),
                },
                (None, None) => LegacyOutcome::Errored {
                    reason: format!("the process ended oddly: {status}"),
                },
            },
            Ending::TimedOut { killed } => LegacyOutcome::TimedOut {
                after: req.timeout,
                killed,
            },
            Ending::Interrupted { .. } => LegacyOutcome::Interrupted,
            Ending::Stuck {
                timed_out: true, ..
            } => LegacyOutcome::TimedOut {
                after: req.timeout,
                killed: true,
            },
            Ending::Stuck { waited, .. } => LegacyOutcome::Errored {
                reason: format!(
                    "interrupted, and the process could not be stopped: still running {} \
                     after SIGTERM and a SIGKILL, so the runner gave up on it",
                    show_duration(waited)
                ),
            },
            Ending::Lost(e) => LegacyOutcome::Errored {
                reason: format!("lost track of the process: {e}"),
            },
        };
        LegacyExecution {
            outcome,
            stdout: done.stdout,
            stderr,
            duration: Duration::ZERO,
            properties: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_binary_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("apptainer");
        let err = find_binary(Some(&missing)).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        let err = find_binary(Some(dir.path())).unwrap_err();
        assert!(err.to_string().contains("is a folder"), "{err}");
        std::fs::write(&missing, "#!/bin/sh\n").unwrap();
        let err = find_binary(Some(&missing)).unwrap_err();
        assert!(
            err.to_string().contains("--singularity-bin") && err.to_string().contains("executable"),
            "{err}"
        );
        std::fs::set_permissions(&missing, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_binary(Some(&missing)).unwrap(), missing);
        // A bare name is looked up on PATH.
        assert!(find_binary(Some(Path::new("sh"))).unwrap().is_absolute());
        let err = find_binary(Some(Path::new("no-such-apptainer-here"))).unwrap_err();
        assert!(err.to_string().contains("not on PATH"), "{err}");
    }

    #[test]
    fn only_a_version_line_is_taken() {
        assert_eq!(
            version_line("apptainer version 1.4.5\n").as_deref(),
            Some("apptainer version 1.4.5")
        );
        assert_eq!(
            version_line("singularity-ce version 4.1.0-jammy\nmore\n").as_deref(),
            Some("singularity-ce version 4.1.0-jammy")
        );
        assert_eq!(
            version_line("singularity version v3.8.7\n").as_deref(),
            Some("singularity version v3.8.7")
        );
        assert_eq!(version_line(""), None);
        assert_eq!(version_line("hello world\n"), None);
        assert_eq!(version_line(&"1.2 ".repeat(100)), None, "too long");
        // 300 random bytes (xorshift), read as the runner reads output.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let noise: Vec<u8> = (0..300)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        assert_eq!(version_line(&String::from_utf8_lossy(&noise)), None);
    }

    /// A STAND-IN for a `--version` that never answers: `sh SCRIPT` (run by `sh`, never
    /// written and then run by this process: "text file busy").
    fn hanging(dir: &Path, script: &str) -> Command {
        let file = dir.join("hangs.sh");
        std::fs::write(&file, script).unwrap();
        let mut command = Command::new("sh");
        command.arg(file).arg("--version");
        command
    }

    #[tokio::test]
    async fn a_version_probe_that_never_answers_is_stopped_at_its_deadline() {
        let cancel = Cancel::new();
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let command = hanging(
            dir.path(),
            &format!("sleep 600 & echo $! > '{}'; wait\n", pidfile.display()),
        );
        let err = probe(
            command,
            Path::new("stand-in"),
            Duration::from_millis(500),
            &cancel,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, SingularityError::Broken { .. })
                && err.to_string().contains("did not answer within 500ms"),
            "{err}"
        );
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        // Gone, or a zombie nobody reaped yet: either way it no longer runs, once the SIGKILL
        // has landed (a bound for a signal on a loaded machine, not a speed check).
        let running = || {
            let stat =
                std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        };
        let killed = Instant::now();
        while running() && killed.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!running(), "the probe's child went with its group");
    }

    #[tokio::test]
    async fn a_version_probe_ends_on_an_interruption() {
        let cancel = Cancel::new();
        let dir = tempfile::tempdir().unwrap();
        let command = hanging(dir.path(), "trap '' TERM\nsleep 600\n");
        let raiser = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            raiser.raise(libc::SIGTERM);
            tokio::time::sleep(Duration::from_millis(100)).await;
            raiser.raise(libc::SIGINT);
        });
        let err = probe(
            command,
            Path::new("stand-in"),
            Duration::from_secs(600),
            &cancel,
        )
        .await
        .unwrap_err();
        assert!(err.is_interrupted(), "{err}");
    }
}
