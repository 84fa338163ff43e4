//! A SIF built from a Docker image, for models the catalog has no SIF for (`--sif-from-docker`):
//! `BIN pull TARGET SOURCE`, run by [`super::SifCache::build`] under the name's lock.
//!
//! - An image the local Docker daemon has is saved from it (`docker save`, through the Engine
//!   API) into `image.tar` in the build's scratch folder and pulled from
//!   `docker-archive:SCRATCH/image.tar`: that works for an image that exists only locally, and
//!   for an Apptainer that runs in a container and cannot reach the daemon, as long as it sees
//!   the scratch folder.
//! - Apptainer's own temporary files (the unpacked image, as big as the image) go into the
//!   scratch folder too: `APPTAINER_TMPDIR` (and `SINGULARITY_TMPDIR`) name it, never `/tmp`.
//! - Any other image is pulled from its registry with `docker://IMAGE`.
//! - The pull runs under the supervisor ([`crate::supervise::process`]), in its own process
//!   group: past its deadline (`--download-timeout`) or on the run's interruption the group gets
//!   SIGTERM, then SIGKILL after [`GRACE`] (at once on a second interruption). Its output is kept
//!   (the last [`KEEP_LINES`] lines) for the error message, and read for at most a process's
//!   drain ([`Target::Process`]) once the process is gone.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;

use super::error::{io_error, SifError};
use crate::cancel::Cancel;
use crate::supervise::process;
use crate::supervise::{until, Cut, Ending, Limits, Target};

/// Time between SIGTERM and SIGKILL when a pull is stopped.
const GRACE: Duration = Duration::from_secs(10);
/// How long a pull may still take to go after its SIGKILL before it is given up on.
const SLACK: Duration = Duration::from_secs(5);
/// Enough for an interrupted pull to be stopped, killed, given up on and cleaned up after.
pub const STOP_TIME: Duration =
    Duration::from_secs(GRACE.as_secs() + SLACK.as_secs() + Target::Process.drain().as_secs() + 3);
/// Lines of the pull's output kept for the error message.
const KEEP_LINES: usize = 12;
/// Bytes of each output stream kept (its tail holds the lines shown).
const KEEP_BYTES: usize = 16 * 1024;
/// Longest silence of the daemon while it streams a saved image.
const EXPORT_SILENCE: Duration = Duration::from_secs(120);
/// Longest wait for the daemon to say whether it has the image.
const INSPECT_TIME: Duration = Duration::from_secs(60);

/// The cache name of an image's SIF: `local/kipoi-fixture:py3` -> `local_kipoi-fixture_py3`.
pub fn sif_name(image: &str) -> String {
    image
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Builds a SIF of `image` at `target` with the Apptainer/Singularity binary `bin`, within
/// `timeout` in all, using `scratch` (a folder of its own) for its temporary files. `handle`
/// runs the Docker Engine API calls and the pull; `cancel` stops it.
pub fn pull(
    bin: &Path,
    image: &str,
    target: &Path,
    scratch: &Path,
    handle: &tokio::runtime::Handle,
    cancel: &Cancel,
    timeout: Duration,
) -> Result<(), SifError> {
    let started = std::time::Instant::now();
    let archive = scratch.join("image.tar");
    let _remove_archive = RemoveOnDrop(&archive);
    let interrupted = || SifError::Interrupted {
        label: label_of(target),
    };
    let has = handle.block_on(until(daemon_has(image), Some(INSPECT_TIME), cancel));
    let source = match has {
        Err(Cut::Interrupted) => return Err(interrupted()),
        Ok(true) => {
            crate::events::note(format!(
                "saving {image} from the Docker daemon for Apptainer"
            ));
            handle.block_on(save(image, &archive, cancel))?;
            format!("docker-archive:{}", archive.display())
        }
        Ok(false) | Err(Cut::TimedOut) => format!("docker://{image}"),
    };
    crate::events::note(format!(
        "building {} from {source} (temporary files in {})",
        target.display(),
        scratch.display()
    ));
    let left = timeout.saturating_sub(started.elapsed());
    run_pull(
        bin,
        target,
        &source,
        scratch,
        cancel,
        left.max(Duration::from_millis(1)),
        timeout,
    )
}

/// True when the local daemon answers and has the image.
async fn daemon_has(image: &str) -> bool {
    let Ok(docker) = bollard::Docker::connect_with_defaults() else {
        return false;
    };
    docker.inspect_image(image).await.is_ok()
}

/// `docker save IMAGE > archive`, through the Engine API.
async fn save(image: &str, archive: &Path, cancel: &Cancel) -> Result<(), SifError> {
    let failed = |source: Box<dyn std::error::Error + Send + Sync>| SifError::Export {
        image: image.to_owned(),
        path: archive.to_path_buf(),
        source,
    };
    let docker = bollard::Docker::connect_with_defaults().map_err(|e| failed(e.into()))?;
    let mut file = File::create(archive).map_err(io_error("create", archive))?;
    let mut stream = docker.export_image(image);
    loop {
        let next = match until(stream.next(), Some(EXPORT_SILENCE), cancel).await {
            Ok(next) => next,
            Err(Cut::Interrupted) => {
                return Err(SifError::Interrupted {
                    label: image.to_owned(),
                })
            }
            Err(Cut::TimedOut) => {
                return Err(failed(
                    format!("the daemon sent nothing for {EXPORT_SILENCE:?}").into(),
                ))
            }
        };
        match next {
            None => break,
            Some(Ok(bytes)) => file.write_all(&bytes).map_err(io_error("write", archive))?,
            Some(Err(err)) => return Err(failed(err.into())),
        }
    }
    file.sync_all().map_err(io_error("write", archive))
}

/// Runs `BIN pull TARGET SOURCE` under the supervisor, with its temporary files in `scratch`:
/// to its end, or stopped past `left` (the part of the build's `budget` not yet spent) or on
/// the run's interruption.
fn run_pull(
    bin: &Path,
    target: &Path,
    source: &str,
    scratch: &Path,
    cancel: &Cancel,
    left: Duration,
    budget: Duration,
) -> Result<(), SifError> {
    let command_line = format!("{} pull {} {source}", bin.display(), target.display());
    let mut command = tokio::process::Command::new(bin);
    command
        .arg("pull")
        .arg(target)
        .arg(source)
        .env("APPTAINER_TMPDIR", scratch)
        .env("SINGULARITY_TMPDIR", scratch);
    let limits = Limits {
        timeout: Some(left),
        grace: GRACE,
        slack: SLACK,
        slow: None,
        drain: Target::Process.drain(),
    };
    let start_failed = |source| SifError::PullStart {
        command: command_line.clone(),
        source,
    };
    let done = process::block_on(process::run(
        command,
        None,
        KEEP_BYTES,
        &limits,
        cancel,
        |_| {},
    ))
    .map_err(start_failed)?
    .map_err(|e| start_failed(e.source))?;
    let mut output = last_lines(done.stdout, done.stderr);
    if !done.drained {
        output.push_str(&format!(
            "\n(zoo-runner stopped reading its output {} after it ended: something it started \
             left its process group and holds the output open)",
            crate::config::units::show_duration(limits.drain)
        ));
    }
    match done.ending {
        Ending::Exited(status) if status.success() => Ok(()),
        Ending::Exited(status) => Err(SifError::Pull {
            command: command_line,
            status: status.to_string(),
            stderr: output,
        }),
        Ending::TimedOut { .. }
        | Ending::Stuck {
            timed_out: true, ..
        } => Err(SifError::BuildTimeout {
            command: command_line,
            after: budget,
            stderr: output,
        }),
        Ending::Interrupted { .. } | Ending::Stuck { .. } => Err(SifError::Interrupted {
            label: label_of(target),
        }),
        Ending::Lost(err) => Err(SifError::Pull {
            command: command_line,
            status: format!("lost track of it: {err}"),
            stderr: output,
        }),
    }
}

/// The last [`KEEP_LINES`] lines of what the pull printed: stdout's, then stderr's (where
/// Apptainer says why it failed).
fn last_lines(stdout: crate::capture::Captured, stderr: crate::capture::Captured) -> String {
    let text = format!("{}\n{}", stdout.finish().text(), stderr.finish().text());
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(KEEP_LINES)..].join("\n")
}

/// The file name of `path`, for messages.
fn label_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Removes a temporary file when dropped, whatever happened.
struct RemoveOnDrop<'a>(&'a Path);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        let _ = fs::remove_file(self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn names_are_plain_file_names() {
        assert_eq!(
            sif_name("local/kipoi-fixture:py3"),
            "local_kipoi-fixture_py3"
        );
        assert_eq!(
            sif_name("kipoi/kipoi-docker:sharedpy3keras2tf2-slim"),
            "kipoi_kipoi-docker_sharedpy3keras2tf2-slim"
        );
        assert!(super::super::validate_name(&sif_name("a/../../b")).is_ok());
    }

    /// A STAND-IN for the Apptainer binary: a shell script installed by another process
    /// (`install`), so that no descriptor of this multi-threaded test process has it open for
    /// writing when it is run ("text file busy").
    fn standin(dir: &Path, name: &str, script: &str) -> std::path::PathBuf {
        let source = dir.join(format!("{name}.src"));
        fs::write(&source, script).unwrap();
        let installed = dir.join(name);
        let status = Command::new("install")
            .arg("-m")
            .arg("755")
            .arg(&source)
            .arg(&installed)
            .status()
            .unwrap();
        assert!(status.success());
        installed
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_failed_pull_keeps_its_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let script = standin(
            dir.path(),
            "fails",
            "#!/bin/sh\nfor i in $(seq 1 30); do echo \"line $i\" >&2; done\necho 'FATAL: no' >&2\nexit 255\n",
        );
        let cancel = Cancel::new();
        let err = run_pull(
            &script,
            &dir.path().join("x.sif"),
            "docker://x",
            dir.path(),
            &cancel,
            HOUR,
            HOUR,
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("exit status: 255"), "{text}");
        assert!(text.ends_with("FATAL: no"), "{text}");
        assert!(
            text.contains("line 30") && !text.contains("line 1\n"),
            "{text}"
        );
    }

    #[test]
    fn a_pull_that_cannot_start_keeps_the_os_error() {
        let dir = tempfile::tempdir().unwrap();
        let cancel = Cancel::new();
        let err = run_pull(
            &dir.path().join("no-such-apptainer"),
            &dir.path().join("x.sif"),
            "docker://x",
            dir.path(),
            &cancel,
            HOUR,
            HOUR,
        )
        .unwrap_err();
        let text = crate::error_chain::chain(&err);
        assert!(
            text.contains("failed to start") && text.contains("No such file or directory"),
            "{text}"
        );
    }

    #[test]
    fn an_interrupted_pull_stops_its_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("child.pid");
        // The child ignores SIGTERM: only the group's SIGKILL ends it.
        let script = standin(
            dir.path(),
            "hangs",
            &format!(
                "#!/bin/sh\ntrap '' TERM\nsleep 600 &\necho $! > '{}'\nwait\n",
                pidfile.display()
            ),
        );
        let cancel = Cancel::new();
        let watched = pidfile.clone();
        let raiser = cancel.clone();
        let watcher = std::thread::spawn(move || {
            while !pidfile_exists(&watched) {
                std::thread::sleep(Duration::from_millis(20));
            }
            // A double Ctrl-C: stopped, then killed at once (not after the 10 s grace).
            raiser.raise(libc::SIGINT);
            raiser.raise(libc::SIGINT);
        });
        let err = run_pull(
            &script,
            Path::new("/nonexistent/x.sif"),
            "docker://x",
            dir.path(),
            &cancel,
            HOUR,
            HOUR,
        )
        .unwrap_err();
        watcher.join().unwrap();
        assert!(err.is_interrupted(), "{err}");
        let pid = fs::read_to_string(&pidfile).unwrap();
        assert!(
            !crate::supervise::process::still_running(&pid),
            "the pull's child {} was stopped with its group",
            pid.trim()
        );
    }

    #[test]
    fn a_pull_past_its_deadline_is_stopped_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("child.pid");
        let script = standin(
            dir.path(),
            "slow",
            &format!(
                "#!/bin/sh\nsleep 600 &\necho $! > '{}'\nwait\n",
                pidfile.display()
            ),
        );
        let cancel = Cancel::new();
        let err = run_pull(
            &script,
            &dir.path().join("x.sif"),
            "docker://x",
            dir.path(),
            &cancel,
            Duration::from_millis(500),
            Duration::from_secs(7),
        )
        .unwrap_err();
        assert!(matches!(err, SifError::BuildTimeout { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("--download-timeout") && text.contains("7s"),
            "{text}"
        );
        let pid = fs::read_to_string(&pidfile).unwrap();
        assert!(
            !crate::supervise::process::still_running(&pid),
            "its child went with its group"
        );
    }

    #[test]
    fn apptainer_is_told_to_keep_its_temporary_files_in_the_scratch_folder() {
        let dir = tempfile::tempdir().unwrap();
        let scratch = dir.path().join("scratch");
        fs::create_dir(&scratch).unwrap();
        // `BIN pull TARGET SOURCE`: the stand-in writes what it was told into TARGET.
        let script = standin(
            dir.path(),
            "tells",
            "#!/bin/sh\nprintf '%s\\n%s\\n' \"$APPTAINER_TMPDIR\" \"$SINGULARITY_TMPDIR\" > \"$2\"\n",
        );
        let target = dir.path().join("x.sif");
        let cancel = Cancel::new();
        run_pull(
            &script,
            &target,
            "docker://x",
            &scratch,
            &cancel,
            HOUR,
            HOUR,
        )
        .unwrap();
        let told = fs::read_to_string(&target).unwrap();
        let want = format!("{0}\n{0}\n", scratch.display());
        assert_eq!(told, want);
    }

    fn pidfile_exists(path: &Path) -> bool {
        fs::read_to_string(path).is_ok_and(|t| !t.trim().is_empty())
    }
}
