//! An Apptainer case whose process even SIGKILL does not end is given up on, and the run ends:
//! the same bounded give-up as a Docker container the daemon will not stop. Such a process
//! cannot be made with the fixture launcher, so this file uses a STAND-IN script for the
//! Apptainer binary: `--version` prints a version; `exec` becomes perl (keeping its pid, the
//! leader of the case's process group), which moves itself out of that group into the runner's
//! (`setpgid`), so the group's SIGTERM and SIGKILL never reach it, writes its pid, and sleeps.
//! The SIF is a small file served from a `file:` URL with its md5; the stand-in never reads it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::helpers::standin::{pid_in, still_running, KillOnDrop};
use crate::helpers::*;

/// Bound for the run, so a hang fails the test instead of blocking it. Not a speed check.
const PATIENCE: Duration = Duration::from_secs(120);

fn standin(dir: &Path, pidfile: &Path) -> PathBuf {
    let script = dir.join("apptainer-standin");
    install_script(
        &script,
        &format!(
            "#!/bin/sh\n# STAND-IN for apptainer: see tests/integration/apptainer_giveup_standin.rs\n\
             if [ \"$1\" = --version ]; then echo 'apptainer version 0.0-standin'; exit 0; fi\n\
             echo 'stand-in: leaving the process group'\n\
             exec perl -e 'setpgrp(0, getpgrp(getppid())) or die \"setpgid: $!\"; \
             open(my $f, \">\", \"{}.part\") or die; print $f \"$$\\n\"; close $f; \
             rename(\"{0}.part\", \"{0}\") or die; sleep 600'\n",
            pidfile.display()
        ),
    );
    script
}

#[test]
fn a_process_out_of_reach_of_sigkill_is_given_up_on_and_the_run_ends() {
    let _daemon = daemon::shared();
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("standin.pid");
    let _cleanup = KillOnDrop(&pidfile);
    let script = standin(dir.path(), &pidfile);
    let cat = standin::catalog_with_fake_sif(dir.path(), &["tiny_linear"]);
    let (mut process, report) = spawn_reported(
        &[
            "--spec",
            "fixtures/spec.toml",
            "--catalog",
            cat.to_str().unwrap(),
            "--runtime",
            "singularity",
            "--singularity-bin",
            script.to_str().unwrap(),
            "--sif-dir",
            dir.path().join("sifs").to_str().unwrap(),
            "--grace",
            "1s",
        ],
        &[("ZOO_RUNNER_STOP_SLACK", "2s")],
    );
    // Interrupted only once the stand-in is out of its group's reach.
    let started = Instant::now();
    let standin = loop {
        if let Some(pid) = pid_in(&pidfile) {
            break pid;
        }
        if started.elapsed() > PATIENCE || process.try_wait().unwrap().is_some() {
            let _ = process.kill();
            panic!(
                "the stand-in never left its group: {}",
                finish(process).all()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    signal(process.id(), libc::SIGINT);
    let run = finish_within(
        process,
        PATIENCE,
        "the runner waited on the stand-in without a bound",
    );

    assert_eq!(run.code, 130, "{}", run.all());
    assert!(
        run.stderr.contains(
            "singularity::tiny_linear: still running 2s after the SIGKILL; the runner gave up on it"
        ),
        "said as it happened: {}",
        run.all()
    );
    let doc = report.doc();
    let case = testcase(&doc, "tiny_linear");
    let message = child_message(case, "error");
    assert_eq!(
        message,
        "interrupted while running; the process could not be stopped: still running 3s after \
         SIGTERM and a SIGKILL, so the runner gave up on it",
        "the grace period, then the slack after the SIGKILL"
    );
    assert!(
        child_text(case, "system-out").contains("stand-in: leaving the process group"),
        "{}",
        report.text()
    );
    let err = child_text(case, "system-err");
    assert!(err.contains("the runner gave up on it"), "{err}");
    assert!(
        !err.contains("stopped reading the output"),
        "a process given up on is not said to have left its group's output open: {err}"
    );
    assert!(
        !still_running(standin),
        "once given up on, the stand-in is killed by its pid"
    );
}
