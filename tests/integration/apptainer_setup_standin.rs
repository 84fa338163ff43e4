//! Setting up the Apptainer runtime, end to end: a binary that is missing, not a program, or
//! whose `--version` fails or never answers; a `--sif-dir` that cannot be a folder. None of this
//! gets as far as running a case in a SIF, so this file uses STAND-IN scripts for the Apptainer
//! binary (named so in their text), installed with `install` by another process (a script this
//! multi-threaded test process wrote and then ran could fail with "text file busy"). The SIF is
//! a small file served from a `file:` URL with its md5; no stand-in ever reads it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::helpers::*;

/// Bound for a run, so a hang fails the test instead of blocking it. Not a speed check.
const PATIENCE: Duration = Duration::from_secs(120);

/// Installs `body` as an executable stand-in for Apptainer in `dir`.
fn standin(dir: &Path, name: &str, body: &str) -> PathBuf {
    let source = dir.join(format!("{name}.txt"));
    std::fs::write(
        &source,
        format!(
            "#!/bin/sh\n# STAND-IN for apptainer: see tests/integration/apptainer_setup_standin.rs\n{body}"
        ),
    )
    .unwrap();
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

/// A catalog of two fixture models whose SIF is a small local file.
fn catalog(dir: &Path) -> PathBuf {
    standin::catalog_with_fake_sif(dir, &["tiny_linear", "tiny_fail_raise"])
}

fn args(cat: &Path, sif_dir: &Path, bin: Option<&Path>) -> Vec<String> {
    let mut all: Vec<String> = [
        "--spec",
        "fixtures/spec.toml",
        "--catalog",
        cat.to_str().unwrap(),
        "--runtime",
        "singularity",
        "--sif-dir",
        sif_dir.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(bin) = bin {
        all.extend(["--singularity-bin".to_string(), bin.display().to_string()]);
    }
    all
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[test]
fn an_unusable_apptainer_exits_3_and_each_case_says_why() {
    let _daemon = daemon::shared();
    let dir = tempfile::tempdir().unwrap();
    let cat = catalog(dir.path());
    let sif_dir = dir.path().join("sifs");
    let folder = dir.path().join("a-folder");
    std::fs::create_dir_all(&folder).unwrap();
    let plain = dir.path().join("not-executable");
    std::fs::write(&plain, "#!/bin/sh\necho 'apptainer version 1.0'\n").unwrap();
    let failing = standin(
        dir.path(),
        "failing",
        "echo 'FATAL: the stand-in install is broken' >&2\nexit 1\n",
    );
    let missing = dir.path().join("no/such/apptainer");
    let empty_path = dir.path().join("empty-path");
    std::fs::create_dir_all(&empty_path).unwrap();

    /// The binary given (if any), the runner's environment, what the message must say.
    type Setup<'a> = (Option<&'a Path>, &'a [(&'a str, &'a str)], &'a str);
    let runs: [Setup; 5] = [
        (Some(&missing), &[], "does not exist"),
        (Some(&folder), &[], "is a folder, not a program"),
        (Some(&plain), &[], "is not executable"),
        (Some(&failing), &[], "FATAL: the stand-in install is broken"),
        (
            None,
            &[("PATH", empty_path.to_str().unwrap())],
            "neither `apptainer` nor `singularity` is on PATH",
        ),
    ];
    for (bin, env, want) in runs {
        let (run, report) = run_reported(&strs(&args(&cat, &sif_dir, bin)), env);
        assert_eq!(run.code, 3, "{want}: {}", run.all());
        assert!(run.stderr.contains(want), "{want}: {}", run.all());
        let doc = report.doc();
        let errors = elements(&doc, "error");
        assert_eq!(errors.len(), 2, "{want}: {}", report.text());
        for error in errors {
            let message = error.attribute("message").unwrap();
            assert!(message.contains(want), "{want}: {message}");
        }
    }
}

#[test]
fn a_sif_dir_that_is_a_file_is_an_input_error_naming_the_flag() {
    let _daemon = daemon::shared();
    let dir = tempfile::tempdir().unwrap();
    let cat = catalog(dir.path());
    let bin = standin(
        dir.path(),
        "apptainer",
        "echo 'apptainer version 0.0-standin'\n",
    );
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    for sif_dir in [file.clone(), file.join("below")] {
        let (run, report) = run_reported(&strs(&args(&cat, &sif_dir, Some(&bin))), &[]);
        assert_eq!(run.code, 2, "{}", run.all());
        assert!(
            run.stderr.contains("--sif-dir") && !run.stderr.contains("cache folder"),
            "{}",
            run.all()
        );
        assert!(!report.exists(), "an input error runs nothing");
    }
}

#[test]
fn a_version_probe_that_hangs_ends_with_the_run_on_sigterm() {
    let _daemon = daemon::shared();
    let dir = tempfile::tempdir().unwrap();
    let cat = catalog(dir.path());
    let pidfile = dir.path().join("probe-child.pid");
    // `--version` never answers, and its child ignores SIGTERM: only the group's SIGKILL ends
    // it. The runner is signalled by its pid alone, as a CI cancel does.
    let bin = standin(
        dir.path(),
        "apptainer",
        &format!(
            "trap '' TERM INT\nsleep 600 &\necho $! > '{}'\nwait\n",
            pidfile.display()
        ),
    );
    let (mut process, report) = spawn_reported(
        &strs(&args(&cat, &dir.path().join("sifs"), Some(&bin))),
        &[],
    );
    let started = Instant::now();
    while std::fs::read_to_string(&pidfile).map_or(true, |t| t.trim().is_empty()) {
        if started.elapsed() > PATIENCE || process.try_wait().unwrap().is_some() {
            let _ = process.kill();
            panic!("the probe never started: {}", finish(process).all());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(process.id(), libc::SIGTERM);
    let run = finish_within(process, PATIENCE, "the runner did not end after SIGTERM");
    assert_eq!(run.code, 143, "{}", run.all());
    let pid = standin::pid_in(&pidfile).expect("the probe's child wrote its pid");
    assert!(
        !standin::still_running(pid),
        "the probe's child {pid} was stopped with its group"
    );
    let doc = report.doc();
    let skipped = elements(&doc, "skipped");
    assert_eq!(skipped.len(), 2, "{}", report.text());
    assert!(
        skipped
            .iter()
            .all(|n| n.attribute("type") == Some("not-run")),
        "{}",
        report.text()
    );
}

#[test]
fn a_version_that_is_no_version_is_not_reported_as_one() {
    let _daemon = daemon::shared();
    let dir = tempfile::tempdir().unwrap();
    let cat = catalog(dir.path());
    // `--version` prints 300 random bytes; `exec` passes.
    let bin = standin(
        dir.path(),
        "apptainer",
        "if [ \"$1\" = --version ]; then head -c 300 /dev/urandom; exit 0; fi\necho passed\n",
    );
    let (run, report) = run_reported(
        &strs(&args(&cat, &dir.path().join("sifs"), Some(&bin))),
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stderr.contains("printed no version line"),
        "{}",
        run.all()
    );
    let doc = report.doc();
    assert_eq!(property(&doc, "singularity-version"), "unknown");
}
