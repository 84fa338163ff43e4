//! End to end, Singularity/Apptainer runtime: the fixture SIF (built by fixtures/sif/make-sif.sh)
//! is served by a real HTTP server on 127.0.0.1 that each test starts, downloaded and
//! md5-checked by the runner, and run by the REAL Apptainer (Debian sid) through the launcher
//! fixtures/apptainer/apptainer, which starts it inside a Docker container because Debian 12 has
//! no Apptainer package. No stand-in binary is used in this file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::helpers::http::{Reply, Server};
use crate::helpers::*;
use md5::{Digest, Md5};

const SIF_PATH: &str = "/sif/kipoi-fixture.sif";

fn fixture_sif() -> Arc<Vec<u8>> {
    let path = fixture_cache().join("kipoi-fixture.sif");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "fixture SIF {} is missing ({e}); run `bash fixtures/build.sh`",
            path.display()
        )
    });
    Arc::new(bytes)
}

fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn apptainer() -> String {
    root()
        .join("fixtures/apptainer/apptainer")
        .display()
        .to_string()
}

/// A catalog folder whose three fixture models share one SIF entry.
fn catalog(dir: &Path, url: &str, md5: &str, name: &str) -> PathBuf {
    let cat = dir.join("catalog");
    let entry = format!(r#"{{"url": "{url}", "name": "{name}", "md5": "{md5}"}}"#);
    let sif = format!(
        r#"{{"tiny_linear": {entry}, "tiny_fail_expect": {entry}, "tiny_fail_raise": {entry}}}"#
    );
    write_catalog(
        &cat,
        &[
            ("tiny_linear", FIXTURE_IMAGE),
            ("tiny_fail_expect", FIXTURE_IMAGE),
            ("tiny_fail_raise", FIXTURE_IMAGE),
        ],
        Some(&sif),
    );
    cat
}

/// The arguments of a Singularity run through the real Apptainer launcher, then `extra`; a
/// `--runtime` in `extra` replaces `--runtime singularity`.
fn singularity_args(
    spec: &str,
    catalog: Option<&Path>,
    sif_dir: &Path,
    extra: &[&str],
) -> Vec<String> {
    let mut args = vec!["--spec".to_string(), spec.to_string()];
    if let Some(cat) = catalog {
        args.extend(["--catalog".to_string(), cat.display().to_string()]);
    }
    if !extra.contains(&"--runtime") {
        args.extend(["--runtime".to_string(), "singularity".to_string()]);
    }
    args.extend([
        "--singularity-bin".to_string(),
        apptainer(),
        "--sif-dir".to_string(),
        sif_dir.display().to_string(),
    ]);
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// A catalog whose SIF entry is the fixture SIF served by `server`, with its right md5.
fn good_catalog(dir: &Path, server: &Server, sif: &[u8]) -> PathBuf {
    catalog(dir, &server.url(SIF_PATH), &md5_hex(sif), "kipoi-fixture")
}

struct SifRun {
    run: Run,
    report: Report,
    sif_dir: PathBuf,
    _dir: tempfile::TempDir,
}

fn run_singularity(server: &Server, md5: &str, extra: &[&str]) -> SifRun {
    let dir = tempfile::tempdir().unwrap();
    let cat = catalog(dir.path(), &server.url(SIF_PATH), md5, "kipoi-fixture");
    let sif_dir = dir.path().join("sifs");
    let args = singularity_args("fixtures/spec.toml", Some(&cat), &sif_dir, extra);
    let (run, report) = run_reported(&strs(&args), &[]);
    report.text(); // every run writes a well-formed report
    SifRun {
        run,
        report,
        sif_dir,
        _dir: dir,
    }
}

#[test]
fn real_apptainer_runs_the_fixture_models_from_a_verified_download() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let sif = fixture_sif();
    let server = Server::start();
    server.script(SIF_PATH, vec![Reply::File(Arc::clone(&sif))]);
    let sums = tempfile::tempdir().unwrap();
    let summary = sums.path().join("summary.md");
    let r = run_singularity(
        &server,
        &md5_hex(&sif),
        &["--summary", summary.to_str().unwrap()],
    );
    let run = &r.run;
    assert_eq!(run.code, 101, "{}", run.all());
    let text = std::fs::read_to_string(&summary).unwrap();
    assert!(
        text.contains("\nSIF downloads took") && text.contains("not counted in the case times"),
        "the summary's pull column counts the SIF download:\n{text}"
    );
    assert_status(run, "singularity::tiny_linear", "ok");
    assert_status(run, "singularity::tiny_fail_expect", "FAILED");
    assert_status(run, "singularity::tiny_fail_raise", "FAILED");
    assert_eq!(
        server.requests(SIF_PATH).len(),
        1,
        "one download for three cases"
    );
    assert!(r.sif_dir.join("kipoi-fixture.sif").is_file());

    let doc = r.report.doc();
    let suite = elements(&doc, "testsuite")[0];
    assert_eq!(
        suite.attribute("name"),
        Some("singularity:local/kipoi-fixture:py3")
    );
    let version = property(&doc, "singularity-version");
    assert!(version.starts_with("apptainer version"), "{version}");
    // The download is a step of its own, as a Docker pull is: on the suite, and in the last
    // lines, never in a case's time.
    assert_eq!(property(&doc, "pulled-bytes"), sif.len().to_string());
    let seconds: f64 = property(&doc, "pull-seconds").parse().unwrap();
    assert!(seconds > 0.0, "{seconds}");
    assert!(
        run.stderr.contains("zoo-runner: fetched 1 SIF (")
            && run.stderr.contains("not counted in case times"),
        "{}",
        run.all()
    );
    let message = child_message(testcase(&doc, "tiny_fail_raise"), "failure");
    assert!(
        message.contains("RuntimeError: fixture: deliberate failure"),
        "{message}"
    );
    let message = child_message(testcase(&doc, "tiny_fail_expect"), "failure");
    assert!(
        message.contains("Model predictions don't match"),
        "{message}"
    );

    // A second run reuses the cached file (after checking its md5): no request at all.
    let dir2 = tempfile::tempdir().unwrap();
    let cat = good_catalog(dir2.path(), &server, &sif);
    let (run, report) = run_reported(
        &strs(&singularity_args(
            "fixtures/spec.toml",
            Some(&cat),
            &r.sif_dir,
            &["--exact", "singularity::tiny_linear"],
        )),
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(
        server.requests(SIF_PATH).len(),
        1,
        "the cached SIF was reused"
    );
    assert_eq!(property(&report.doc(), "pulled-bytes"), "0");
    assert!(!run.stderr.contains("fetched 1 SIF"), "{}", run.all());
}

#[test]
fn a_wrong_md5_never_runs_and_names_both_sums() {
    let _daemon = daemon::shared();
    let sif = fixture_sif();
    let server = Server::start();
    server.script(SIF_PATH, vec![Reply::File(Arc::clone(&sif))]);
    let wrong = "0123456789abcdef0123456789abcdef";
    let r = run_singularity(&server, wrong, &["--exact", "singularity::tiny_linear"]);
    assert_eq!(r.run.code, 101, "{}", r.run.all());
    assert_eq!(
        server.requests(SIF_PATH).len(),
        2,
        "downloaded once more after the mismatch"
    );
    let doc = r.report.doc();
    let message = child_message(testcase(&doc, "tiny_linear"), "error");
    assert!(
        message.contains(wrong) && message.contains(&md5_hex(&sif)),
        "{message}"
    );
    assert!(
        !r.sif_dir.join("kipoi-fixture.sif").exists(),
        "a bad file is never used"
    );
    // Two bad downloads, one quarantined copy; and a second run still leaves one.
    let bad = |dir: &Path| -> Vec<String> {
        files_in(dir)
            .into_iter()
            .filter(|n| n.contains(".bad"))
            .collect()
    };
    assert_eq!(bad(&r.sif_dir), ["kipoi-fixture.sif.bad"]);
    let dir2 = tempfile::tempdir().unwrap();
    let cat = catalog(dir2.path(), &server.url(SIF_PATH), wrong, "kipoi-fixture");
    let (run, _) = run_reported(
        &strs(&singularity_args(
            "fixtures/spec.toml",
            Some(&cat),
            &r.sif_dir,
            &["--exact", "singularity::tiny_linear"],
        )),
        &[],
    );
    assert_eq!(run.code, 101, "{}", run.all());
    assert_eq!(bad(&r.sif_dir), ["kipoi-fixture.sif.bad"]);
    // `cache prune` removes it.
    let prune = runner(&[
        "--sif-dir",
        r.sif_dir.to_str().unwrap(),
        "cache",
        "prune",
        "--runtime",
        "singularity",
        "--cache-dir",
        dir2.path().join("caches").to_str().unwrap(),
    ]);
    assert_eq!(prune.code, 0, "{}", prune.all());
    assert!(
        prune.stdout.contains("removed 1 quarantined SIF(s)"),
        "{}",
        prune.all()
    );
    assert!(bad(&r.sif_dir).is_empty());
}

#[test]
fn a_missing_sif_is_an_error_naming_the_url() {
    let _daemon = daemon::shared();
    let server = Server::start();
    server.script(SIF_PATH, vec![Reply::Status(404)]);
    let r = run_singularity(&server, "0123456789abcdef0123456789abcdef", &[]);
    assert_eq!(r.run.code, 101, "{}", r.run.all());
    assert_eq!(server.requests(SIF_PATH).len(), 1, "404 is not retried");
    let doc = r.report.doc();
    let errors = elements(&doc, "error");
    assert_eq!(errors.len(), 3);
    let message = errors[0].attribute("message").unwrap();
    assert!(
        message.contains(&server.url(SIF_PATH)) && message.contains("404"),
        "{message}"
    );
}

#[test]
fn transient_faults_are_retried_and_cut_downloads_resume() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let sif = fixture_sif();
    let server = Server::start();
    server.script(
        SIF_PATH,
        vec![
            Reply::Status(503),
            Reply::Status(503),
            Reply::CutHalfWay(Arc::clone(&sif)),
            Reply::File(Arc::clone(&sif)),
        ],
    );
    let r = run_singularity(
        &server,
        &md5_hex(&sif),
        &["--exact", "singularity::tiny_linear"],
    );
    assert_eq!(r.run.code, 0, "{}", r.run.all());
    let requests = server.requests(SIF_PATH);
    assert_eq!(requests.len(), 4, "{requests:?}");
    assert_eq!(
        requests[3].as_deref(),
        Some(format!("bytes={}-", sif.len() / 2).as_str()),
        "the last request resumes where the cut one stopped"
    );
    // Its progress starts where it resumed, not at 0.
    let at_zero = r
        .run
        .stderr
        .lines()
        .filter(|l| l.starts_with("zoo-runner: kipoi-fixture.sif: 0 B of"))
        .count();
    assert_eq!(
        at_zero, 1,
        "only the first attempt starts at 0:\n{}",
        r.run.stderr
    );
    assert!(
        r.run
            .stderr
            .lines()
            .any(|l| l.starts_with("zoo-runner: kipoi-fixture.sif: ") && l.ends_with(", 50%")),
        "the resumed attempt starts at half:\n{}",
        r.run.stderr
    );
}

#[test]
fn a_name_that_is_not_a_plain_file_name_is_rejected() {
    let _daemon = daemon::shared();
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let cat = catalog(
        dir.path(),
        &server.url(SIF_PATH),
        "0123456789abcdef0123456789abcdef",
        "../escape",
    );
    let (run, report) = run_reported(
        &strs(&singularity_args(
            "fixtures/spec.toml",
            Some(&cat),
            &dir.path().join("sifs"),
            &["--exact", "singularity::tiny_linear"],
        )),
        &[],
    );
    assert_eq!(run.code, 101, "{}", run.all());
    assert!(server.requests(SIF_PATH).is_empty(), "nothing downloaded");
    let text = report.text();
    assert!(text.contains("../escape"), "{text}");
    assert!(!dir.path().join("escape.sif").exists());
}

#[test]
fn both_runtimes_run_side_by_side() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let sif = fixture_sif();
    let server = Server::start();
    server.script(SIF_PATH, vec![Reply::File(Arc::clone(&sif))]);
    let r = run_singularity(
        &server,
        &md5_hex(&sif),
        &["--runtime", "all", "tiny_linear"],
    );
    assert_eq!(r.run.code, 0, "{}", r.run.all());
    assert_status(&r.run, "docker::tiny_linear", "ok");
    assert_status(&r.run, "singularity::tiny_linear", "ok");
    let doc = r.report.doc();
    let suites: Vec<&str> = elements(&doc, "testsuite")
        .iter()
        .filter_map(|n| n.attribute("name"))
        .collect();
    assert_eq!(
        suites,
        [
            "docker:local/kipoi-fixture:py3",
            "singularity:local/kipoi-fixture:py3"
        ]
    );
}

#[test]
fn a_hanging_apptainer_case_is_killed_with_its_process_group() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let sif = fixture_sif();
    let server = Server::start();
    server.script(SIF_PATH, vec![Reply::File(Arc::clone(&sif))]);
    let dir = tempfile::tempdir().unwrap();
    let cat = good_catalog(dir.path(), &server, &sif);
    let spec = dir.path().join("hang.toml");
    std::fs::write(
        &spec,
        format!(
            "catalog = {:?}\ncommand = \"python3 /faults/hang.py\"\n",
            cat.display().to_string()
        ),
    )
    .unwrap();
    let sif_dir = dir.path().join("sifs");
    let (run, report) = run_reported(
        &strs(&singularity_args(
            spec.to_str().unwrap(),
            None,
            &sif_dir,
            &[
                "--exact",
                "singularity::tiny_linear",
                "--timeout",
                "5s",
                "--grace",
                "2s",
            ],
        )),
        &[],
    );
    assert_eq!(run.code, 101, "{}", run.all());
    let doc = report.doc();
    let case = testcase(&doc, "tiny_linear");
    assert_eq!(
        child(case, "error").unwrap().attribute("type"),
        Some("timeout")
    );
    assert!(child_text(case, "system-out").contains("hang: started"));
    // The launcher's container (the one that mounts this test's SIF folder) went with the
    // process group.
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("volume={}", sif_dir.display()),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let left = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(left.is_empty(), "launcher containers left: {left}");
}

#[test]
fn an_interrupt_does_not_wait_for_a_stalled_download() {
    let _daemon = daemon::shared();
    let sif = fixture_sif();
    let server = Server::start();
    server.script(SIF_PATH, vec![Reply::Stall(Arc::clone(&sif))]);
    let dir = tempfile::tempdir().unwrap();
    let cat = good_catalog(dir.path(), &server, &sif);
    let (process, report) = spawn_reported(
        &strs(&singularity_args(
            "fixtures/spec.toml",
            Some(&cat),
            &dir.path().join("sifs"),
            &[],
        )),
        &[],
    );
    let start = std::time::Instant::now();
    while server.requests(SIF_PATH).is_empty() {
        assert!(start.elapsed().as_secs() < 60, "the download started");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let interrupted = std::time::Instant::now();
    signal(process.id(), libc::SIGINT);
    let run = finish(process);
    // The stalled server holds the connection for 60 s; the runner must not.
    assert!(
        interrupted.elapsed().as_secs() < 30,
        "{:?}\n{}",
        interrupted.elapsed(),
        run.all()
    );
    assert_eq!(run.code, 130, "{}", run.all());
    let text = report.text();
    let doc = report.doc();
    let skipped = elements(&doc, "skipped");
    assert_eq!(skipped.len(), 3, "{text}");
    assert!(
        skipped
            .iter()
            .all(|n| n.attribute("type") == Some("not-run")),
        "{text}"
    );
    // The case that waited for the download never started, and says so.
    assert!(
        skipped.iter().any(|n| n
            .attribute("message")
            .is_some_and(|m| m.contains("interrupted while its SIF was downloading"))),
        "{text}"
    );
}

#[test]
fn a_read_only_sif_store_is_used_as_it_is() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let sif = fixture_sif();
    let server = Server::start();
    server.script(SIF_PATH, vec![Reply::File(Arc::clone(&sif))]);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::copy(
        fixture_cache().join("kipoi-fixture.sif"),
        store.join("kipoi-fixture.sif"),
    )
    .unwrap();
    let ro = crate::helpers::mounts::ReadOnlyMount::of(&store, &dir.path().join("ro"));
    let cat = good_catalog(dir.path(), &server, &sif);
    let (run, report) = run_reported(
        &strs(&singularity_args(
            "fixtures/spec.toml",
            Some(&cat),
            &ro.path,
            &["--exact", "singularity::tiny_linear"],
        )),
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stderr.contains("is read-only"), "{}", run.all());
    assert!(server.requests(SIF_PATH).is_empty(), "nothing downloaded");
    assert_eq!(files_in(&store), ["kipoi-fixture.sif"], "nothing written");
    let doc = report.doc();
    assert_eq!(
        case_fact(testcase(&doc, "tiny_linear"), "sif"),
        Some(ro.path.join("kipoi-fixture.sif").to_str().unwrap())
    );

    // A SIF that is not there cannot be downloaded into it: an input error, before any case.
    let cat = catalog(
        &dir.path().join("other"),
        &server.url(SIF_PATH),
        &md5_hex(&sif),
        "absent",
    );
    let (run, report) = run_reported(
        &strs(&singularity_args(
            "fixtures/spec.toml",
            Some(&cat),
            &ro.path,
            &[],
        )),
        &[],
    );
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains("read-only")
            && run.stderr.contains("--sif-dir")
            && run.stderr.contains("absent"),
        "{}",
        run.all()
    );
    assert!(!report.exists());
    assert!(server.requests(SIF_PATH).is_empty());
}

#[test]
fn a_stalled_download_gives_up_at_the_download_timeout() {
    let _daemon = daemon::shared();
    let sif = fixture_sif();
    let server = Server::start();
    // A little of the file, then a minute of silence.
    server.script(SIF_PATH, vec![Reply::Stall(Arc::clone(&sif))]);
    let r = run_singularity(
        &server,
        &md5_hex(&sif),
        &[
            "--exact",
            "singularity::tiny_linear",
            "--download-timeout",
            "2s",
        ],
    );
    assert_eq!(r.run.code, 101, "{}", r.run.all());
    assert_eq!(
        server.requests(SIF_PATH).len(),
        1,
        "no attempt after the budget"
    );
    let doc = r.report.doc();
    let message = child_message(testcase(&doc, "tiny_linear"), "error");
    assert!(
        message.contains("after 2s (--download-timeout)") && message.contains(SIF_PATH),
        "{message}"
    );
    // What arrived is kept for the next run to resume.
    assert!(
        files_in(&r.sif_dir).iter().any(|n| n.contains(".part-")),
        "{:?}",
        files_in(&r.sif_dir)
    );
}
