//! The README's first command, the main job: the fixture zoo under both runtimes. Docker runs the
//! fixture image; Apptainer (the REAL one, Debian sid's, through the launcher
//! fixtures/apptainer/apptainer) runs the fixture SIF that the fixture catalog lists in
//! model-to-singularity.json, written by fixtures/build.sh with the SIF's real md5 and served as
//! a `file:` URL beside the catalog. Only the SIF cache folder is a temporary one here.

use crate::helpers::*;

#[test]
fn the_main_job_shows_both_runtimes_side_by_side() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let listed = root().join("fixtures/catalog/model-to-singularity.json");
    assert!(
        listed.is_file(),
        "{} is missing: `bash fixtures/build.sh` writes it for the SIF it builds",
        listed.display()
    );
    let sif_dir = tempfile::tempdir().unwrap();
    let (run, report) = run_reported(
        &[
            "--spec",
            "fixtures/spec.toml",
            "--runtime",
            "all",
            "--singularity-bin",
            "fixtures/apptainer/apptainer",
            "--sif-dir",
            sif_dir.path().to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(run.code, 101, "{}", run.all());
    for runtime in ["docker", "singularity"] {
        assert_status(&run, &format!("{runtime}::tiny_linear"), "ok");
        assert_status(&run, &format!("{runtime}::tiny_fail_expect"), "FAILED");
        assert_status(&run, &format!("{runtime}::tiny_fail_raise"), "FAILED");
    }
    // The terminal lines of the README's first command: both runtimes' test lines, kipoi's
    // messages, the result line (`2 passed; 4 failed`); on stderr the SIF's fetch (its size
    // and the percentages of its quarter lines vary with the SIF's build) and the report.
    let mut settings = normalise::run_output();
    settings.add_filter(r"\b\d+(?:\.\d+)? (?:B|KiB|MiB|GiB)\b", "[SIZE]");
    settings.add_filter(r"\b\d+%", "[N]%");
    settings.bind(|| {
        insta::assert_snapshot!("main_job_stdout", run.stdout);
        insta::assert_snapshot!("main_job_stderr", run.stderr);
    });

    let doc = report.doc();
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
    // Each failure quotes kipoi, under each runtime.
    let failures = elements(&doc, "failure");
    assert_eq!(failures.len(), 4, "{}", report.text());
    for failure in failures {
        let message = failure.attribute("message").unwrap_or_default();
        assert!(
            message.contains("Model predictions don't match")
                || message.contains("RuntimeError: fixture: deliberate failure"),
            "{message}"
        );
    }
    assert!(
        sif_dir.path().join("kipoi-fixture.sif").is_file(),
        "the SIF went through the cache"
    );
}
