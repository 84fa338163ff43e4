//! A SIF built from a Docker image, for models the catalog has no SIF for (`--sif-from-docker`):
//! `BIN pull TARGET SOURCE`, run by [`super::SifCache::build`] under the name's lock.
//!
//! - An image the local Docker daemon has is saved from it (`docker save`, through the Engine
//!   API) into `TARGET.tar` beside the target and pulled from `docker-archive:TARGET.tar`: that
//!   works for an image that exists only locally, and for an Apptainer that runs in a container
//!   and cannot reach the daemon, as long as it sees the cache folder.
//! - Any other image is pulled from its registry with `docker://IMAGE`.
//! - The pull runs in its own process group. Interrupted, the group gets SIGTERM, then SIGKILL
//!   after [`GRACE`]. Its output is kept (the last [`KEEP_LINES`] lines) for the error message,
//!   and reading it is bounded once the process is gone ([`DRAIN`]).

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use super::error::{io_error, SifError};

/// Time between SIGTERM and SIGKILL when an interrupted pull is stopped.
const GRACE: Duration = Duration::from_secs(10);
/// Enough for an interrupted pull to notice, stop its group and clean up.
pub const STOP_TIME: Duration = Duration::from_secs(GRACE.as_secs() + DRAIN.as_secs() + 3);
/// How long the output is still read after the process has ended.
const DRAIN: Duration = Duration::from_secs(2);
/// Lines of the pull's output kept for the error message.
const KEEP_LINES: usize = 12;
/// Longest silence of the daemon while it streams a saved image.
const EXPORT_SILENCE: Duration = Duration::from_secs(120);
/// How often a running pull is checked for interruption.
const POLL: Duration = Duration::from_millis(100);

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

/// Builds a SIF of `image` at `target` with the Apptainer/Singularity binary `bin`.
/// `handle` runs the Docker Engine API calls; `stop` interrupts.
pub fn pull(
    bin: &Path,
    image: &str,
    target: &Path,
    handle: &tokio::runtime::Handle,
    stop: &dyn Fn() -> bool,
) -> Result<(), SifError> {
    let archive = PathBuf::from(format!("{}.tar", target.display()));
    let _remove_archive = RemoveOnDrop(&archive);
    let source = if handle.block_on(daemon_has(image)) {
        crate::reporter::note(format!(
            "saving {image} from the Docker daemon for Apptainer"
        ));
        handle.block_on(save(image, &archive, stop))?;
        format!("docker-archive:{}", archive.display())
    } else {
        format!("docker://{image}")
    };
    crate::reporter::note(format!("building {} from {source}", target.display()));
    run_pull(bin, target, &source, stop)
}

/// True when the local daemon answers and has the image.
async fn daemon_has(image: &str) -> bool {
    let Ok(docker) = bollard::Docker::connect_with_defaults() else {
        return false;
    };
    docker.inspect_image(image).await.is_ok()
}

/// `docker save IMAGE > archive`, through the Engine API.
async fn save(image: &str, archive: &Path, stop: &dyn Fn() -> bool) -> Result<(), SifError> {
    let failed = |source: Box<dyn std::error::Error + Send + Sync>| SifError::Export {
        image: image.to_owned(),
        path: archive.to_path_buf(),
        source,
    };
    let docker = bollard::Docker::connect_with_defaults().map_err(|e| failed(e.into()))?;
    let mut file = File::create(archive).map_err(io_error("create", archive))?;
    let mut stream = docker.export_image(image);
    loop {
        if stop() {
            return Err(SifError::Interrupted {
                label: image.to_owned(),
            });
        }
        let next = tokio::time::timeout(EXPORT_SILENCE, stream.next())
            .await
            .map_err(|_| {
                failed(format!("the daemon sent nothing for {EXPORT_SILENCE:?}").into())
            })?;
        match next {
            None => break,
            Some(Ok(bytes)) => file.write_all(&bytes).map_err(io_error("write", archive))?,
            Some(Err(err)) => return Err(failed(err.into())),
        }
    }
    file.sync_all().map_err(io_error("write", archive))
}

/// Runs `BIN pull TARGET SOURCE` to its end, or stops it when `stop()` turns true.
fn run_pull(
    bin: &Path,
    target: &Path,
    source: &str,
    stop: &dyn Fn() -> bool,
) -> Result<(), SifError> {
    use std::os::unix::process::CommandExt;
    let command = format!("{} pull {} {source}", bin.display(), target.display());
    let mut child = Command::new(bin)
        .arg("pull")
        .arg(target)
        .arg(source)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|source| SifError::PullStart {
            command: command.clone(),
            source,
        })?;
    let lines = collect_output(&mut child);
    let status = wait_or_stop(&mut child, stop);
    let output = drain(&lines);
    match status {
        Ok(Some(status)) if status.success() => Ok(()),
        Ok(Some(status)) => Err(SifError::Pull {
            command,
            status: status.to_string(),
            stderr: output,
        }),
        Ok(None) => Err(SifError::Interrupted {
            label: target
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }),
        Err(err) => Err(SifError::Pull {
            command,
            status: format!("lost track of it: {err}"),
            stderr: output,
        }),
    }
}

/// Reads stdout and stderr line by line on two threads into one channel.
fn collect_output(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let pipes: [Option<Box<dyn std::io::Read + Send>>; 2] = [
        child.stdout.take().map(|p| Box::new(p) as _),
        child.stderr.take().map(|p| Box::new(p) as _),
    ];
    for pipe in pipes.into_iter().flatten() {
        let tx = tx.clone();
        thread::spawn(move || {
            for line in BufReader::new(pipe).split(b'\n') {
                let Ok(line) = line else { break };
                if tx
                    .send(String::from_utf8_lossy(&line).into_owned())
                    .is_err()
                {
                    break;
                }
            }
        });
    }
    rx
}

/// The last [`KEEP_LINES`] lines, waiting at most [`DRAIN`] for the pipes to close: a process
/// that left the group may keep them open.
fn drain(lines: &mpsc::Receiver<String>) -> String {
    let until = Instant::now() + DRAIN;
    let mut kept = VecDeque::with_capacity(KEEP_LINES);
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                if kept.len() == KEEP_LINES {
                    kept.pop_front();
                }
                kept.push_back(line);
            }
            Err(_) => break,
        }
    }
    Vec::from(kept).join("\n")
}

/// The exit status, or `None` when `stop()` turned true and the group was stopped.
fn wait_or_stop(child: &mut Child, stop: &dyn Fn() -> bool) -> std::io::Result<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if stop() {
            stop_group(child);
            return Ok(None);
        }
        thread::sleep(POLL);
    }
}

/// SIGTERM to the group, up to [`GRACE`] for the leader to go, then SIGKILL to the group.
fn stop_group(child: &mut Child) {
    let pgid = child.id() as i32;
    signal_group(pgid, libc::SIGTERM);
    let until = Instant::now() + GRACE;
    while Instant::now() < until {
        if matches!(child.try_wait(), Ok(Some(_)) | Err(_)) {
            break;
        }
        thread::sleep(POLL);
    }
    signal_group(pgid, libc::SIGKILL);
    let _ = child.wait();
}

fn signal_group(pgid: i32, signal: i32) {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is touched.
    unsafe {
        libc::kill(-pgid, signal);
    }
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

    #[test]
    fn a_failed_pull_keeps_its_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fails");
        fs::write(
            &script,
            "#!/bin/sh\nfor i in $(seq 1 30); do echo \"line $i\" >&2; done\necho 'FATAL: no' >&2\nexit 255\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        let err =
            run_pull(&script, &dir.path().join("x.sif"), "docker://x", &|| false).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("exit status: 255"), "{text}");
        assert!(text.ends_with("FATAL: no"), "{text}");
        assert!(
            text.contains("line 30") && !text.contains("line 1\n"),
            "{text}"
        );
    }

    #[test]
    fn an_interrupted_pull_stops_its_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("hangs");
        let pidfile = dir.path().join("child.pid");
        fs::write(
            &script,
            format!(
                "#!/bin/sh\nsleep 600 &\necho $! > '{}'\nwait\n",
                pidfile.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        let watched = pidfile.clone();
        let stop = move || pidfile_exists(&watched);
        let err = run_pull(
            &script,
            Path::new("/nonexistent/x.sif"),
            "docker://x",
            &stop,
        )
        .unwrap_err();
        assert!(err.is_interrupted(), "{err}");
        let pid = fs::read_to_string(&pidfile).unwrap();
        // Gone, or a zombie nobody reaped yet: either way it no longer runs.
        let stat = fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
        let running = stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'));
        assert!(
            !running,
            "the pull's child {} was stopped with its group",
            pid.trim()
        );
    }

    fn pidfile_exists(path: &Path) -> bool {
        fs::read_to_string(path).is_ok_and(|t| !t.trim().is_empty())
    }
}
