//! `--prune-sifs`, end to end: the fixture SIF is served by a real HTTP server on 127.0.0.1 that
//! each test starts, and the cases run in the REAL Apptainer through the launcher
//! fixtures/apptainer/apptainer. No stand-in is used in this file.
//!
//! Models of several groups (here: of two Docker images) that point at one SIF, as nine Kipoi
//! groups point at `kipoi-docker_sharedpy3keras2tf2-slim`, share its download and its removal:
//! it is downloaded once and removed after the last of their cases, never before.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::helpers::http::{Reply, Server};
use crate::helpers::*;
use md5::{Digest, Md5};

const SIF_PATH: &str = "/sif/kipoi-fixture.sif";
/// A second Docker image name for one of the fixture's groups: its cases run apart from the
/// others' (image by image), in the same SIF.
const OTHER_IMAGE: &str = "local/kipoi-fixture:another-group";

fn fixture_sif() -> Arc<Vec<u8>> {
    let path = fixture_cache().join("kipoi-fixture.sif");
    Arc::new(std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "fixture SIF {} is missing ({e}); run `bash fixtures/build.sh`",
            path.display()
        )
    }))
}

fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The three fixture models in two images, all pointing at the one served SIF.
fn shared_catalog(dir: &Path, server: &Server, md5: &str) -> PathBuf {
    let cat = dir.join("catalog");
    let entry = format!(
        r#"{{"url": "{}", "name": "kipoi-fixture", "md5": "{md5}"}}"#,
        server.url(SIF_PATH)
    );
    write_catalog(
        &cat,
        &[
            ("tiny_linear", FIXTURE_IMAGE),
            ("tiny_fail_expect", OTHER_IMAGE),
            ("tiny_fail_raise", FIXTURE_IMAGE),
        ],
        Some(&format!(
            r#"{{"tiny_linear": {entry}, "tiny_fail_expect": {entry}, "tiny_fail_raise": {entry}}}"#
        )),
    );
    cat
}

fn run_pruning(catalog: &Path, sif_dir: &Path) -> (Run, Report) {
    let apptainer = root().join("fixtures/apptainer/apptainer");
    run_reported(
        &[
            "--spec",
            "fixtures/spec.toml",
            "--catalog",
            catalog.to_str().unwrap(),
            "--runtime",
            "singularity",
            "--singularity-bin",
            apptainer.to_str().unwrap(),
            "--sif-dir",
            sif_dir.to_str().unwrap(),
            "--prune-sifs",
        ],
        &[],
    )
}

/// Every case ran in the SIF and said what the model did (none lost its SIF under it).
fn assert_cases_ran(run: &Run, report: &Report) {
    assert_eq!(run.code, 101, "{}", run.all());
    assert_status(run, "singularity::tiny_linear", "ok");
    let doc = report.doc();
    for (case, said) in [
        ("tiny_fail_expect", "Model predictions don't match"),
        (
            "tiny_fail_raise",
            "RuntimeError: fixture: deliberate failure",
        ),
    ] {
        let message = child_message(testcase(&doc, case), "failure");
        assert!(message.contains(said), "{case}: {message}");
    }
    assert!(
        elements(&doc, "error").is_empty(),
        "no case errored:\n{}",
        report.text()
    );
}

#[test]
fn a_sif_groups_share_is_downloaded_once_and_pruned_after_their_last_case() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let sif = fixture_sif();
    let server = Server::start();
    server.script(SIF_PATH, vec![Reply::File(Arc::clone(&sif))]);
    let dir = tempfile::tempdir().unwrap();
    let cat = shared_catalog(dir.path(), &server, &md5_hex(&sif));
    let sif_dir = dir.path().join("sifs");

    let (run, report) = run_pruning(&cat, &sif_dir);
    assert_cases_ran(&run, &report);
    // Two suites (two images), one SIF: downloaded once, removed once, after the last case.
    assert_eq!(elements(&report.doc(), "testsuite").len(), 2);
    assert_eq!(server.requests(SIF_PATH).len(), 1, "downloaded once");
    let removed = "zoo-runner: --prune-sifs: removed kipoi-fixture (this run fetched it)";
    // Removed once; and not before the last case, or a case would have lost its SIF.
    assert_eq!(run.stderr.matches(removed).count(), 1, "{}", run.all());
    // The SIF folder holds what it held before (nothing) but the name's lock file, which is
    // never deleted.
    assert_eq!(files_in(&sif_dir), ["kipoi-fixture.sif.lock"]);
    assert_eq!(
        containers_mounting(&sif_dir),
        "",
        "no launcher container left"
    );
}

#[test]
fn a_sif_that_was_in_the_folder_before_the_run_is_never_pruned() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let sif = fixture_sif();
    let server = Server::start();
    server.script(SIF_PATH, vec![Reply::File(Arc::clone(&sif))]);
    let dir = tempfile::tempdir().unwrap();
    let cat = shared_catalog(dir.path(), &server, &md5_hex(&sif));
    let sif_dir = dir.path().join("sifs");
    std::fs::create_dir_all(&sif_dir).unwrap();
    let kept = sif_dir.join("kipoi-fixture.sif");
    std::fs::write(&kept, sif.as_slice()).unwrap();
    let before = std::fs::metadata(&kept).unwrap().modified().unwrap();

    let (run, report) = run_pruning(&cat, &sif_dir);
    assert_cases_ran(&run, &report);
    assert!(server.requests(SIF_PATH).is_empty(), "nothing downloaded");
    assert!(!run.stderr.contains("--prune-sifs"), "{}", run.all());
    assert_eq!(
        std::fs::metadata(&kept).unwrap().modified().unwrap(),
        before
    );
    assert_eq!(md5_hex(&std::fs::read(&kept).unwrap()), md5_hex(&sif));
    assert_eq!(
        files_in(&sif_dir),
        ["kipoi-fixture.sif", "kipoi-fixture.sif.lock"]
    );
}

/// `sif list` and `sif prune` on a SIF folder as runs leave it: a SIF, a built one with its md5
/// record, an unfinished download, a quarantined copy, an md5 record whose SIF is gone.
#[test]
fn sif_list_shows_the_folder_and_sif_prune_keeps_what_may_be_of_use() {
    let _daemon = daemon::shared();
    let dir = tempfile::tempdir().unwrap();
    let sifs = dir.path().join("sifs");
    std::fs::create_dir_all(&sifs).unwrap();
    let md5 = "0123456789abcdef0123456789abcdef";
    for (file, text) in [
        ("kipoi-fixture.sif", "x".repeat(3000)),
        ("kipoi-fixture.sif.lock", String::new()),
        ("local_img.sif", "y".repeat(2048)),
        ("local_img.sif.md5", md5.to_string()),
        ("other.sif.part-123-0", "z".repeat(100)),
        ("other.sif.bad", "w".repeat(10)),
        ("gone.sif.md5", md5.to_string()),
    ] {
        std::fs::write(sifs.join(file), text).unwrap();
    }
    let sif_dir = sifs.to_str().unwrap();
    let mut settings = normalise::messages();
    settings.add_filter(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "[DATE]");

    let list = runner(&["sif", "list", "--sif-dir", sif_dir]);
    assert_eq!(list.code, 0, "{}", list.all());
    settings.bind(|| insta::assert_snapshot!("sif_list", list.stdout));

    // Without a flag: only what is of no use; the unfinished download is resumed next time.
    let prune = runner(&["--sif-dir", sif_dir, "sif", "prune"]);
    assert_eq!(prune.code, 0, "{}", prune.all());
    settings.bind(|| insta::assert_snapshot!("sif_prune", prune.stdout));
    assert_eq!(
        files_in(&sifs),
        [
            "kipoi-fixture.sif",
            "kipoi-fixture.sif.lock",
            "local_img.sif",
            "local_img.sif.md5",
            "other.sif.part-123-0"
        ]
    );
    // Nothing here was used a day ago or more; --all takes every SIF, and the download too.
    let prune = runner(&["sif", "prune", "--unused-for", "1d", "--sif-dir", sif_dir]);
    assert!(
        prune.stdout.starts_with("removed 0 file(s)"),
        "{}",
        prune.all()
    );
    let prune = runner(&["sif", "prune", "--all", "--sif-dir", sif_dir]);
    assert_eq!(prune.code, 0, "{}", prune.all());
    assert_eq!(
        files_in(&sifs),
        ["kipoi-fixture.sif.lock", "local_img.sif.lock"]
    );
    let list = runner(&["sif", "list", "--sif-dir", sif_dir]);
    assert_eq!(list.stdout, format!("no SIFs in {sif_dir}\n"));
}
