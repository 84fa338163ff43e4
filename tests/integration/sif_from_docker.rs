//! `--sif-from-docker`, end to end with the REAL Apptainer (Debian sid's, through the launcher
//! fixtures/apptainer/apptainer): the fixture image exists only in the local Docker daemon, so
//! the runner saves it from the daemon and builds the SIF from a `docker-archive:`. A pull that
//! fails carries Apptainer's own message into the report. No stand-in is used in this file.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::helpers::*;
use md5::{Digest, Md5};

fn apptainer() -> PathBuf {
    root().join("fixtures/apptainer/apptainer")
}

/// A catalog of the three fixture models on `image`, without any SIF.
fn catalog_without_sif(dir: &Path, image: &str) -> PathBuf {
    let cat = dir.join("catalog");
    write_catalog(
        &cat,
        &[
            ("tiny_linear", image),
            ("tiny_fail_expect", image),
            ("tiny_fail_raise", image),
        ],
        None,
    );
    cat
}

fn args<'a>(cat: &'a str, sif_dir: &'a str, bin: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec![
        "--spec",
        "fixtures/spec.toml",
        "--catalog",
        cat,
        "--runtime",
        "singularity",
        "--singularity-bin",
        bin,
        "--sif-dir",
        sif_dir,
    ];
    all.extend_from_slice(extra);
    all
}

#[test]
fn a_local_only_image_is_built_into_a_sif_and_runs() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let dir = tempfile::tempdir().unwrap();
    let cat = catalog_without_sif(dir.path(), FIXTURE_IMAGE);
    let sif_dir = dir.path().join("sifs");
    let bin = apptainer();
    let (cat, sif_dir_s, bin) = (
        cat.to_str().unwrap(),
        sif_dir.to_str().unwrap(),
        bin.to_str().unwrap(),
    );

    // Without the flag, the error says how to get a SIF.
    let (run, report) = run_reported(&args(cat, sif_dir_s, bin, &["tiny_linear"]), &[]);
    assert_eq!(run.code, 101, "{}", run.all());
    let message = child_message(testcase(&report.doc(), "tiny_linear"), "error").to_string();
    assert!(message.contains("--sif-from-docker"), "{message}");

    let (run, report) = run_reported(&args(cat, sif_dir_s, bin, &["--sif-from-docker"]), &[]);
    assert_eq!(run.code, 101, "{}", run.all());
    assert_status(&run, "singularity::tiny_linear", "ok");
    assert_status(&run, "singularity::tiny_fail_expect", "FAILED");
    assert_status(&run, "singularity::tiny_fail_raise", "FAILED");
    assert!(
        run.stderr.contains("docker-archive:"),
        "built from the daemon's copy: {}",
        run.all()
    );
    let doc = report.doc();
    let message = child_message(testcase(&doc, "tiny_fail_raise"), "failure");
    assert!(
        message.contains("RuntimeError: fixture: deliberate failure"),
        "{message}"
    );
    let version = property(&doc, "singularity-version");
    assert!(version.starts_with("apptainer version"), "{version}");
    // The build was a step of its own: timed and sized on the suite, not in a case's time.
    let built_size = std::fs::metadata(sif_dir.join("local_kipoi-fixture_py3.sif"))
        .unwrap()
        .len();
    assert_eq!(property(&doc, "pulled-bytes"), built_size.to_string());
    let seconds: f64 = property(&doc, "pull-seconds").parse().unwrap();
    assert!(seconds > 0.0, "{seconds}");
    assert!(
        run.stderr.contains("zoo-runner: fetched 1 SIF (")
            && run.stderr.contains("not counted in case times"),
        "{}",
        run.all()
    );

    // The built SIF is kept with its md5, and nothing else (no archive, no .part).
    assert_eq!(
        files_in(&sif_dir),
        [
            "local_kipoi-fixture_py3.sif",
            "local_kipoi-fixture_py3.sif.lock",
            "local_kipoi-fixture_py3.sif.md5"
        ]
    );
    let built = std::fs::read(sif_dir.join("local_kipoi-fixture_py3.sif")).unwrap();
    let md5: String = Md5::digest(&built)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let recorded =
        std::fs::read_to_string(sif_dir.join("local_kipoi-fixture_py3.sif.md5")).unwrap();
    assert_eq!(recorded.trim(), md5);

    // A second run checks and reuses it.
    let (run, _) = run_reported(
        &args(cat, sif_dir_s, bin, &["--sif-from-docker", "tiny_linear"]),
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(!run.stderr.contains("building"), "{}", run.all());
}

#[test]
fn ctrl_c_during_a_build_stops_apptainer_and_leaves_nothing() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let dir = tempfile::tempdir().unwrap();
    let cat = catalog_without_sif(dir.path(), FIXTURE_IMAGE);
    let sif_dir = dir.path().join("sifs");
    let bin = apptainer();
    let (mut process, report) = spawn_reported(
        &args(
            cat.to_str().unwrap(),
            sif_dir.to_str().unwrap(),
            bin.to_str().unwrap(),
            &["--sif-from-docker"],
        ),
        &[],
    );
    // Bounds so that a broken runner fails the test instead of hanging it; not speed checks.
    let patience = Duration::from_secs(240);
    // The pull has started once the launcher's container mounts the cache folder.
    let started = Instant::now();
    while containers_mounting(&sif_dir).is_empty() {
        if started.elapsed() > patience || process.try_wait().unwrap().is_some() {
            let _ = process.kill();
            panic!("the pull never started: {}", finish(process).all());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    signal(process.id(), libc::SIGINT);
    let run = finish_within(process, patience, "the runner did not end after Ctrl-C");
    assert_eq!(run.code, 130, "{}", run.all());
    assert_eq!(
        containers_mounting(&sif_dir),
        "",
        "apptainer's container was stopped"
    );
    assert_eq!(
        files_in(&sif_dir),
        ["local_kipoi-fixture_py3.sif.lock"],
        "no half-built image, archive or md5 record is left"
    );
    let doc = report.doc();
    let skipped = elements(&doc, "skipped");
    assert_eq!(skipped.len(), 3, "{}", report.text());
    // The case waiting for the build says so, not "interrupted while running": it never
    // started.
    let building = skipped
        .iter()
        .filter(|n| {
            n.attribute("message")
                .is_some_and(|m| m.contains("interrupted while its SIF was being built"))
        })
        .count();
    assert_eq!(building, 1, "{}", report.text());
}

#[test]
fn a_failed_pull_reports_apptainers_own_message() {
    let _daemon = daemon::shared();
    // Not in the daemon, so it is pulled from its registry: one on a closed loopback port, inside
    // the launcher's network namespace. Apptainer fails at once and says why.
    let image = "localhost:1/zoo-runner-test/absent:1";
    let dir = tempfile::tempdir().unwrap();
    let cat = catalog_without_sif(dir.path(), image);
    let sif_dir = dir.path().join("sifs");
    let bin = apptainer();
    let (run, report) = run_reported(
        &args(
            cat.to_str().unwrap(),
            sif_dir.to_str().unwrap(),
            bin.to_str().unwrap(),
            &["--sif-from-docker"],
        ),
        &[],
    );
    assert_eq!(run.code, 101, "{}", run.all());
    let doc = report.doc();
    let errors = elements(&doc, "error");
    assert_eq!(errors.len(), 3, "{}", report.text());
    let message = errors[0].attribute("message").unwrap();
    assert!(
        message.contains(&format!("pull {}", sif_dir.display()))
            && message.contains(&format!("docker://{image}")),
        "the command: {message}"
    );
    assert!(
        message.contains("FATAL") && message.contains("connection refused"),
        "apptainer's own words: {message}"
    );
    assert_eq!(
        files_in(&sif_dir),
        ["localhost_1_zoo-runner-test_absent_1.sif.lock"],
        "nothing half-built is left"
    );
}

#[test]
fn a_missing_binary_errors_each_case_with_the_reason() {
    let _daemon = daemon::shared();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no/such/apptainer");
    let (run, report) = run_reported(
        &[
            "--spec",
            "fixtures/spec.toml",
            "--image",
            FIXTURE_IMAGE,
            "--runtime",
            "singularity",
            "--singularity-bin",
            missing.to_str().unwrap(),
        ],
        &[],
    );
    // The runtime cannot be used, not the models failed: Docker's exit code for that.
    assert_eq!(run.code, 3, "{}", run.all());
    let text = report.text();
    let doc = report.doc();
    let errors = elements(&doc, "error");
    assert_eq!(errors.len(), 3);
    assert!(
        errors[0]
            .attribute("message")
            .unwrap()
            .contains(missing.to_str().unwrap()),
        "{text}"
    );
}

/// What a watcher saw in a build's scratch space while the runner ran.
#[derive(Debug, Default)]
struct Seen {
    /// The build's own folder (`NAME.sif.build-PID-N`) was there.
    build_folder: bool,
    /// The image saved from the daemon was in it.
    archive: bool,
    /// Apptainer's own temporary folder (`build-temp-*`) was in it: it was told to use it.
    apptainer_temp: bool,
    /// The most bytes seen in it at once.
    peak_bytes: u64,
}

fn bytes_under(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .map(|entries| entries.flatten().map(|e| bytes_under(&e.path())).sum())
        .unwrap_or(0)
}

/// Watches `root` from a thread until `done` is set.
fn watch(
    root: PathBuf,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Seen> {
    std::thread::spawn(move || {
        let mut seen = Seen::default();
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            for entry in std::fs::read_dir(&root).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !name.starts_with("local_kipoi-fixture_py3.sif.build-") {
                    continue;
                }
                seen.build_folder = true;
                for inner in std::fs::read_dir(entry.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    let inner = inner.file_name().to_string_lossy().into_owned();
                    seen.archive |= inner == "image.tar";
                    seen.apptainer_temp |= inner.starts_with("build-temp-");
                }
                seen.peak_bytes = seen.peak_bytes.max(bytes_under(&entry.path()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        seen
    })
}

#[test]
fn a_build_takes_its_space_from_the_tmp_dir_and_prune_sifs_leaves_nothing() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let dir = tempfile::tempdir().unwrap();
    let cat = catalog_without_sif(dir.path(), FIXTURE_IMAGE);
    let sif_dir = dir.path().join("sifs");
    let tmp = dir.path().join("scratch");
    let bin = apptainer();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = watch(tmp.clone(), std::sync::Arc::clone(&done));
    let (run, report) = run_reported(
        &args(
            cat.to_str().unwrap(),
            sif_dir.to_str().unwrap(),
            bin.to_str().unwrap(),
            &[
                "--sif-from-docker",
                "--tmp-dir",
                tmp.to_str().unwrap(),
                "--prune-sifs",
            ],
        ),
        &[],
    );
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = watcher.join().unwrap();
    assert_eq!(run.code, 101, "{}", run.all());
    assert_status(&run, "singularity::tiny_linear", "ok");
    assert!(
        elements(&report.doc(), "error").is_empty(),
        "{}",
        report.text()
    );
    eprintln!("scratch space seen: {seen:?}");
    assert!(
        seen.build_folder && seen.archive && seen.apptainer_temp,
        "the saved image and Apptainer's own files were in --tmp-dir: {seen:?}\n{}",
        run.all()
    );
    // The scratch space is gone, and so is the SIF (--prune-sifs) with its md5 record: the SIF
    // folder holds nothing but the name's lock file, which is never deleted.
    assert_eq!(files_in(&tmp), Vec::<String>::new());
    assert_eq!(files_in(&sif_dir), ["local_kipoi-fixture_py3.sif.lock"]);
    assert!(
        run.stderr
            .contains("--prune-sifs: removed docker://local/kipoi-fixture:py3"),
        "{}",
        run.all()
    );
}
