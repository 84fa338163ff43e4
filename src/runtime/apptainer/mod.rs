//! The Singularity / Apptainer runtime: `BIN exec --cleanenv --pwd DIR SIF COMMAND...` with a
//! clean environment, once the case's SIF is ready ([`sifs`]).
//!
//! Every process it starts (the `--version` probe, a case, a probe request) runs under the
//! supervisor ([`crate::supervise::process`]): in a process group of its own, with a deadline,
//! stopped with the whole group on timeout or interruption (SIGTERM, then SIGKILL after the
//! grace period; at once on a second interruption), given up on after the same slack as a
//! Docker container if even that does not end it, and its output read for at most
//! [`Target::Process`]'s drain once it has ended: a process that left the group (`setsid`) may
//! hold the pipes open for ever, and the case must end all the same.

mod sifs;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::process::Command;

pub use self::sifs::{check_read_only_store, MissingFromStore, SifUnavailable};
use super::{
    cache_ended, tell, Ended, Execution, Image, Options, PrepareError, Ready, RunRequest, Runtime,
    SetupError, Words,
};
use crate::cancel::Cancel;
use crate::config::units::show_duration;
use crate::events;
use crate::record::facts::CaseFacts;
use crate::record::{Failure, RuntimeName};
use crate::store::caches::{self, CacheError, Caches, For, Held};
use crate::store::sif::{check_tmp_dir, md5_file, pull, InUse, SifCache};
use crate::supervise::detached::Detached;
use crate::supervise::process::{self, exit_signal};
use crate::supervise::{Ending, Limits, Target};

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

/// How long `BIN --version` may take. The fixture's launcher starts a container for it, which
/// takes seconds; a daemon that does not answer makes it hang.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes of `--version`'s output kept.
const PROBE_KEEP: usize = 4096;

pub struct SingularityRuntime {
    bin: PathBuf,
    version: String,
    cancel: Cancel,
    cache: Arc<SifCache>,
    sif_from_docker: bool,
    /// How long a process may take to go after its SIGKILL before it is given up on: a
    /// Docker container's stop slack.
    slack: Duration,
    /// `--prune-sifs`: each SIF this run fetched is removed after its last case.
    prune: bool,
    /// The SIFs this run has ready, each held ([`InUse`]) so that no other runner's prune
    /// removes it while its cases run; let go by [`Runtime::remove`] or at the end.
    held: std::sync::Mutex<std::collections::HashMap<PathBuf, InUse>>,
    /// The fetches (downloads, builds), which run on blocking threads: stopped by an
    /// interruption, and by [`Runtime::finish`] for one the run no longer waits for (made ready
    /// ahead for cases that did not run, `--fail-fast`).
    fetches: Detached,
}

/// What the process of a request could not do.
#[derive(Debug, Error)]
pub enum ProcessError {
    #[error("the case's SIF is not ready")]
    NoSif,
    #[error("the process ended oddly: {0}")]
    Odd(std::process::ExitStatus),
    #[error("lost track of the process: {0}")]
    Lost(String),
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

/// Where SIF builds take their scratch space, and what named it: `--tmp-dir`, else
/// `$APPTAINER_TMPDIR` (or `$SINGULARITY_TMPDIR`), as Apptainer itself reads them; `None`: the
/// SIF folder. Never `/tmp` by default: a big build fills a small one (apptainer#1380).
fn build_tmp_dir(
    flag: Option<&Path>,
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Option<(PathBuf, &'static str)> {
    if let Some(dir) = flag {
        return Some((dir.to_path_buf(), "--tmp-dir"));
    }
    [
        ("APPTAINER_TMPDIR", "$APPTAINER_TMPDIR"),
        ("SINGULARITY_TMPDIR", "$SINGULARITY_TMPDIR"),
    ]
    .into_iter()
    .find_map(|(key, what)| {
        env(key)
            .filter(|v| !v.is_empty())
            .map(|v| (PathBuf::from(v), what))
    })
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

/// Whether a host path cannot be given to `--bind` (which splits on `:` and `,`).
fn splits_a_bind(host: &Path) -> bool {
    host.to_string_lossy().contains([':', ','])
}

/// The case's output folder bound read-write where `{output}` points (a folder whose path
/// would split the bind is refused before: [`splits_a_bind`]).
fn output_bind(host: &Path) -> String {
    format!(
        "{}:{}:rw",
        host.display(),
        crate::config::predictions::CONTAINER_DIR
    )
}

impl SingularityRuntime {
    /// Opens the SIF folder (an input error when it cannot be used, or is read-only and lacks a
    /// SIF the selected cases need), then finds and checks the Apptainer/Singularity binary.
    pub async fn open(options: &Options) -> Result<Self, SetupError> {
        let input = |e| SetupError::Input(Failure::new(e));
        let tmp_root = build_tmp_dir(options.tmp_dir.as_deref(), |k| std::env::var_os(k));
        // Checked when given, or when it will be used; else a variable meant for something
        // else does not stop a run that builds nothing.
        if let Some((root, what)) = &tmp_root {
            if options.tmp_dir.is_some() || options.sif_from_docker {
                check_tmp_dir(root, what).map_err(|e| SetupError::Input(Failure::new(e)))?;
            }
        }
        let cache = SifCache::open(options.sif_dir.clone())
            .map_err(input)?
            .with_progress(true)
            .with_download_timeout(options.download_timeout)
            .with_tmp_dir(tmp_root.map(|(root, _)| root));
        if cache.is_read_only() {
            check_read_only_store(&cache, &options.images, options.sif_from_docker)
                .map_err(|e| SetupError::Input(Failure::new(e)))?;
            events::note(format!(
                "the SIF folder `{}` is read-only: its SIFs are used as they are, after an md5 \
                 check",
                cache.dir().display()
            ));
        }
        let unusable = |e| SetupError::Unusable(Failure::new(e));
        let bin = find_binary(options.apptainer_bin.as_deref()).map_err(unusable)?;
        let mut runtime = Self::new(bin, cache, options.sif_from_docker, options.cancel.clone())
            .await
            .map_err(|e| {
                if e.is_interrupted() {
                    SetupError::Interrupted
                } else {
                    SetupError::Unusable(Failure::new(e))
                }
            })?;
        runtime.slack = options.waits.stop_slack;
        runtime.prune = options.prune_sifs;
        Ok(runtime)
    }

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
        Ok(Self {
            bin,
            version,
            cache: Arc::new(cache),
            sif_from_docker,
            slack: crate::config::knobs::STOP_SLACK,
            prune: false,
            held: std::sync::Mutex::default(),
            fetches: Detached::new(&cancel),
            cancel,
        })
    }

    /// Runs the request in the ready SIF.
    async fn run_in_sif(&self, ready: &Ready, req: &RunRequest) -> Execution {
        let started = Instant::now();
        let Some(sif) = &ready.sif else {
            let error = Failure::new(ProcessError::NoSif);
            return Execution::before_start(Ended::Errored { error }, req);
        };
        // The case's caches, locked until it ends.
        let held = match &req.caches {
            Some(caches) => match self.take_caches(caches, ready, sif, req).await {
                Ok(held) => held,
                Err(e) => return Execution::before_start(cache_ended(e), req),
            },
            None => Held::default(),
        };
        let facts = CaseFacts {
            command: req.command.clone(),
            sif: Some(sif.clone()),
            caches: held.uses.clone(),
            ..CaseFacts::default()
        };
        if let Some(output) = req.output.as_deref().filter(|p| splits_a_bind(p)) {
            let error = Failure::message(format!(
                "the case's output folder `{}` holds `:` or `,`, which Apptainer's --bind \
                 splits on: give --junit a folder without them (the output folders are made \
                 beside the report)",
                output.display()
            ));
            return Execution::before_start(Ended::Errored { error }, req);
        }
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
        if let Some(output) = &req.output {
            args.extend(["--bind".into(), output_bind(output)]);
        }
        args.push(sif.display().to_string());
        args.extend(req.command.iter().cloned());

        let mut exec = self.run_process(&args, req).await;
        exec.duration = started.elapsed();
        exec.facts = facts;
        drop(held);
        exec
    }

    /// Locks (and makes, when missing) the case's cache folders, keyed by the SIF's md5: the
    /// catalog's, else the one recorded when the SIF was built, else the file's own.
    async fn take_caches(
        &self,
        caches: &Caches,
        ready: &Ready,
        sif: &Path,
        req: &RunRequest,
    ) -> Result<Held, CacheError> {
        let md5 = match &ready.facts.id {
            Some(md5) => md5.clone(),
            None => {
                let path = sif.to_path_buf();
                let read = tokio::task::spawn_blocking(move || md5_file(&path))
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
                read.map_err(|source| CacheError::ReadSif {
                    path: sif.to_path_buf(),
                    source,
                })?
            }
        };
        let case = For {
            case: &req.case_name,
            offline: req.offline,
        };
        caches::apptainer::prepare(caches, &ready.image.name, sif, &md5, case).await
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
    async fn run_process(&self, args: &[String], req: &RunRequest) -> Execution {
        let limits = Limits {
            timeout: Some(req.timeout),
            grace: req.grace,
            slack: self.slack,
            slow: Some(req.slow_period),
            drain: Target::Process.drain(),
        };
        let on_notice = tell(&req.case_name, req.timeout);
        let done = process::run(
            self.command(args),
            None,
            req.keep,
            &limits,
            &self.cancel,
            on_notice,
        )
        .await;
        let done = match done {
            Ok(done) => done,
            Err(e) => {
                let error = Failure::new(e);
                return Execution::before_start(Ended::Errored { error }, req);
            }
        };
        let mut stderr = done.stderr;
        let stuck = matches!(done.ending, Ending::Stuck { .. });
        if !done.drained && !stuck {
            stderr.push(
                format!(
                    "\nzoo-runner: stopped reading the output {} after the process ended: \
                     something it started left its process group and still holds the output \
                     open (it was not stopped)\n",
                    show_duration(limits.drain)
                )
                .as_bytes(),
            );
        }
        for note in &done.notes {
            stderr.push(format!("\nzoo-runner: {note}\n").as_bytes());
        }
        let ended = match done.ending {
            Ending::Exited(status) => match (status.code(), exit_signal(&status)) {
                (Some(code), _) => Ended::Exited {
                    code: i64::from(code),
                },
                (None, Some(signal)) => Ended::Signalled { signal },
                (None, None) => Ended::Errored {
                    error: Failure::new(ProcessError::Odd(status)),
                },
            },
            Ending::TimedOut { killed } => Ended::TimedOut {
                after: req.timeout,
                killed,
            },
            Ending::Interrupted { .. } => Ended::Interrupted,
            Ending::Stuck { timed_out, waited } => Ended::Stuck {
                timed_out: timed_out.then_some(req.timeout),
                waited,
                what: "process",
            },
            Ending::Lost(e) => Ended::Errored {
                error: Failure::new(ProcessError::Lost(e)),
            },
        };
        Execution {
            ended,
            stdout: done.stdout,
            stderr,
            duration: Duration::ZERO,
            facts: CaseFacts::default(),
        }
    }
}

#[async_trait::async_trait]
impl Runtime for SingularityRuntime {
    fn name(&self) -> RuntimeName {
        super::APPTAINER
    }

    fn version(&self) -> &str {
        &self.version
    }

    /// The SIF: its catalog name, or the Docker image it is built from.
    fn key(&self, image: &Image) -> String {
        Self::sif_key(image)
    }

    async fn prepare(&self, image: &Image) -> Result<Ready, PrepareError> {
        self.prepare_sif(image).await
    }

    async fn run(&self, ready: &Ready, request: &RunRequest) -> Execution {
        self.run_in_sif(ready, request).await
    }

    fn prunes(&self) -> bool {
        self.prune
    }

    /// Removes the SIF (`--prune-sifs`), unless another runner sharing the SIF folder uses it.
    async fn remove(&self, ready: &Ready) -> Result<(), Failure> {
        self.remove_sif(ready).await.map_err(Failure::new)
    }

    /// Stops the fetches still running (the stage gave up on them: their cases will not run),
    /// their processes' groups killed at once, and waits until their threads have ended, so
    /// that no `apptainer build` outlives the run.
    async fn finish(&self) {
        if !self.fetches.stop_all(Some(pull::STOP_TIME)).await {
            events::note(format!(
                "a SIF fetch did not stop within {} of being asked to; the run ends without it",
                show_duration(pull::STOP_TIME)
            ));
        }
    }

    fn words(&self) -> Words {
        Words {
            noun: "SIF",
            fetched: "fetched",
            prune_flag: "--prune-sifs",
        }
    }

    fn interrupted_while(&self, _image: &Image) -> String {
        "its SIF was being fetched; the case did not start".to_string()
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
    fn an_output_folder_is_bound_read_write_where_output_points() {
        assert_eq!(
            output_bind(Path::new("/r/.junit.xml.spool-x/outputs/c-1")),
            "/r/.junit.xml.spool-x/outputs/c-1:/zoo-runner/output:rw"
        );
        assert!(splits_a_bind(Path::new("/r/a:b/outputs")));
        assert!(splits_a_bind(Path::new("/r/a,b/outputs")));
        assert!(!splits_a_bind(Path::new("/r/a b/outputs")));
    }

    #[test]
    fn builds_take_their_space_from_the_flag_then_apptainers_variables_never_tmp() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(name, _)| *name == k)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        let both: &[(&str, &str)] = &[("APPTAINER_TMPDIR", "/a"), ("SINGULARITY_TMPDIR", "/s")];
        assert_eq!(
            build_tmp_dir(Some(Path::new("/flag")), env(both)),
            Some((PathBuf::from("/flag"), "--tmp-dir"))
        );
        assert_eq!(
            build_tmp_dir(None, env(both)),
            Some((PathBuf::from("/a"), "$APPTAINER_TMPDIR"))
        );
        assert_eq!(
            build_tmp_dir(
                None,
                env(&[("APPTAINER_TMPDIR", ""), ("SINGULARITY_TMPDIR", "/s")])
            ),
            Some((PathBuf::from("/s"), "$SINGULARITY_TMPDIR"))
        );
        assert_eq!(build_tmp_dir(None, env(&[])), None, "the SIF folder");
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
