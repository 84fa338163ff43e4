//! A SIF built ahead for cases that will not run (`--fail-fast` stopped the run) is stopped with
//! the run: no `apptainer build` outlives the runner. A build that takes minutes cannot be made
//! on demand with the fixture launcher, so this file uses a STAND-IN script for the Apptainer
//! binary: `--version` prints a version; `pull TARGET docker://local/ahead-fast:1` writes a
//! small file with a SIF header at TARGET at once; `pull … docker://local/ahead-slow:1` starts
//! `sleep 600`, writes its pid and waits; anything else (`exec`) waits for that pid (so the
//! build ahead has started) and fails, so the first case fails and `--fail-fast` stops the run
//! while the second image's SIF is being built ahead. The images are names only:
//! the daemon has neither, so the runner hands the stand-in a `docker://` source.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::helpers::standin::{pid_in, still_running, KillOnDrop};
use crate::helpers::*;

/// Bound for the run, so a hang fails the test instead of blocking it. Not a speed check.
const PATIENCE: Duration = Duration::from_secs(120);

fn standin(dir: &Path, pidfile: &Path) -> PathBuf {
    let script = dir.join("apptainer-standin");
    install_script(
        &script,
        &format!(
            "#!/bin/sh\n# STAND-IN for apptainer: see tests/integration/apptainer_ahead_standin.rs\n\
             case \"$1\" in\n\
             --version) echo 'apptainer version 0.0-standin'; exit 0;;\n\
             pull) case \"$3\" in\n\
               *ahead-slow*) sleep 600 & echo $! > '{pid}'; wait;;\n\
               *) printf '%-32sSIF_MAGIC\\000' stand-in > \"$2\"; exit 0;;\n\
             esac;;\n\
             *) i=0; while [ ! -s '{pid}' ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done\n\
                echo \"stand-in: $1 fails\"; exit 1;;\n\
             esac\n",
            pid = pidfile.display()
        ),
    );
    script
}

#[test]
fn a_sif_built_ahead_for_cases_fail_fast_stopped_is_stopped_with_the_run() {
    let _daemon = daemon::shared();
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("build.pid");
    let _cleanup = KillOnDrop(&pidfile);
    let script = standin(dir.path(), &pidfile);
    let cat = dir.path().join("catalog");
    write_catalog(
        &cat,
        &[
            ("tiny_linear", "local/ahead-fast:1"),
            ("tiny_fail_raise", "local/ahead-slow:1"),
        ],
        None,
    );
    let sif_dir = dir.path().join("sifs");
    let (process, report) = spawn_reported(
        &[
            "--spec",
            "fixtures/spec.toml",
            "--catalog",
            cat.to_str().unwrap(),
            "--runtime",
            "singularity",
            "--sif-from-docker",
            "--singularity-bin",
            script.to_str().unwrap(),
            "--sif-dir",
            sif_dir.to_str().unwrap(),
            "--fail-fast",
            "--test-threads",
            "1",
            "--pull-ahead",
            "1",
        ],
        &[],
    );
    let run = finish_within(
        process,
        PATIENCE,
        "the run waited on the build ahead without a bound",
    );

    assert_eq!(run.code, 101, "{}", run.all());
    assert_status(&run, "singularity::tiny_linear", "FAILED");
    let doc = report.doc();
    let not_run = testcase(&doc, "tiny_fail_raise");
    assert_eq!(
        child(not_run, "skipped").and_then(|n| n.attribute("message")),
        Some("--fail-fast: an earlier case failed"),
        "{}",
        report.text()
    );
    // The build ahead had started (its pid is there) and is gone with the run.
    let pid = pid_in(&pidfile).unwrap_or_else(|| {
        panic!(
            "the second image's SIF was never built ahead: {}",
            run.all()
        )
    });
    assert!(
        !still_running(pid),
        "the build ahead ({pid}) outlived the run: {}",
        run.all()
    );
    // The first image's SIF is built and kept; of the second, nothing half-made is left (no
    // `.part` file, no build folder): its lock file only.
    let files: Vec<String> = std::fs::read_dir(&sif_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files.contains(&"local_ahead-fast_1.sif".to_string()),
        "{files:?}"
    );
    let slow: Vec<&String> = files
        .iter()
        .filter(|name| name.contains("ahead-slow") && !name.ends_with(".lock"))
        .collect();
    assert!(slow.is_empty(), "{slow:?}");
}
