//! A process that leaves the case's process group and keeps its output open must not hang the
//! case. This does not reproduce with the fixture launcher (fixtures/apptainer/apptainer runs
//! Apptainer in a container, and the container's end closes every pipe), so this file uses a
//! STAND-IN script for the Apptainer binary: `--version` prints a version; `exec` starts
//! `setsid sleep 600` (a grandchild in its own session that inherits stdout and stderr), prints a
//! line and exits 1, as a real `apptainer exec` whose command did that would.
//! The SIF is a small file served from a `file:` URL with its md5; the stand-in never reads it.

use std::path::Path;
use std::time::Duration;

use crate::helpers::standin::KillOnDrop;
use crate::helpers::*;

/// Bound for the run, so a hang fails the test instead of blocking it. Not a speed check.
const PATIENCE: Duration = Duration::from_secs(120);

fn standin(dir: &Path, pidfile: &Path) -> std::path::PathBuf {
    let script = dir.join("apptainer-standin");
    install_script(
        &script,
        &format!(
            "#!/bin/sh\n# STAND-IN for apptainer: see tests/integration/apptainer_pipes_standin.rs\n\
             if [ \"$1\" = --version ]; then echo 'apptainer version 0.0-standin'; exit 0; fi\n\
             setsid sleep 600 &\n\
             echo $! > '{}'\n\
             echo 'stand-in: started a grandchild that left the group'\n\
             exit 1\n",
            pidfile.display()
        ),
    );
    script
}

#[test]
fn a_grandchild_holding_the_pipes_does_not_hang_the_case() {
    let _daemon = daemon::shared();
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("grandchild.pid");
    let _cleanup = KillOnDrop(&pidfile);
    let script = standin(dir.path(), &pidfile);
    let cat = standin::catalog_with_fake_sif(dir.path(), &["tiny_linear"]);
    let (process, report) = spawn_reported(
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
        ],
        &[],
    );
    let run = finish_within(
        process,
        PATIENCE,
        "the case hung on the grandchild's open pipes",
    );
    assert_eq!(run.code, 101, "{}", run.all());
    assert_status(&run, "singularity::tiny_linear", "FAILED");
    let doc = report.doc();
    let case = testcase(&doc, "tiny_linear");
    assert!(child(case, "failure").is_some(), "{}", report.text());
    assert!(
        child_text(case, "system-out").contains("stand-in: started a grandchild"),
        "{}",
        report.text()
    );
    let err = child_text(case, "system-err");
    assert!(
        err.contains("stopped reading the output") && err.contains("left its process group"),
        "{err}"
    );
}
