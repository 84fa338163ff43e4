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
        // The runner's own prediction check (the checked group's command writes them).
        assert_status(&run, &format!("{runtime}::checked/two_outputs"), "FAILED");
        assert_status(&run, &format!("{runtime}::checked/within_tolerance"), "ok");
        assert_status(&run, &format!("{runtime}::checked/dataloader"), "ok");
    }
    // The terminal lines of the README's first command: both runtimes' test lines, kipoi's
    // messages and the runner's diff of checked/two_outputs, the result line
    // (`6 passed; 6 failed`); on stderr the two SIFs' fetches (their sizes vary with the
    // SIFs' builds; the second is fetched while the first one's cases run, so their progress
    // lines interleave as they will: each SIF's own lines are kept in order) and the report.
    let mut settings = normalise::run_output();
    settings.add_filter(r"\b\d+(?:\.\d+)? (?:B|KiB|MiB|GiB)\b", "[SIZE]");
    settings.add_filter(r"\b\d+%", "[N]%");
    let stderr = by_sif(&run.stderr);
    settings.bind(|| {
        insta::assert_snapshot!("main_job_stdout", run.stdout);
        insta::assert_snapshot!("main_job_stderr", stderr);
    });

    let doc = report.doc();
    let suites: Vec<&str> = elements(&doc, "testsuite")
        .iter()
        .filter_map(|n| n.attribute("name"))
        .collect();
    assert_eq!(
        suites,
        [
            "docker:local/kipoi-fixture:checked",
            "docker:local/kipoi-fixture:py3",
            "singularity:local/kipoi-fixture:checked",
            "singularity:local/kipoi-fixture:py3"
        ]
    );
    // Each failure quotes kipoi, or the runner's diff of the predictions, under each runtime.
    let failures = elements(&doc, "failure");
    assert_eq!(failures.len(), 6, "{}", report.text());
    for failure in failures {
        let message = failure.attribute("message").unwrap_or_default();
        assert!(
            message.contains("Model predictions don't match")
                || message.contains("RuntimeError: fixture: deliberate failure")
                || message.contains("preds/b: 5 of 10 elements off"),
            "{message}"
        );
    }
    for sif in ["kipoi-fixture.sif", "kipoi-fixture-checked.sif"] {
        assert!(
            sif_dir.path().join(sif).is_file(),
            "{sif} went through the cache"
        );
    }
}

/// The runner's stderr with each SIF's fetch lines together, SIF by SIF in name order, where the
/// first one's lines were: two fetches at once interleave their lines in any order.
fn by_sif(stderr: &str) -> String {
    let sif_of = |line: &str| {
        line.strip_prefix("zoo-runner: ")
            .and_then(|rest| rest.split_once(".sif: "))
            .map(|(name, _)| name.to_string())
    };
    let mut fetches: std::collections::BTreeMap<String, Vec<&str>> = Default::default();
    let mut out: Vec<String> = Vec::new();
    let mut placed = false;
    for line in stderr.lines() {
        match sif_of(line) {
            Some(sif) => {
                fetches.entry(sif).or_default().push(line);
                if !placed {
                    out.push(String::from("[FETCHES]"));
                    placed = true;
                }
            }
            None => out.push(line.to_string()),
        }
    }
    let fetched: Vec<&str> = fetches.values().flatten().copied().collect();
    out.join("\n").replace("[FETCHES]", &fetched.join("\n"))
}
