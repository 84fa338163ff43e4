//! `--rerun-failed REPORT`: the fixture zoo run for real, then only what did not pass run again
//! (with `--retries` and a partition, and as a matrix); reports of another zoo refused (exit
//! 2); a report with nothing left to rerun exits 0, or 5 with `--require-tests`. And the empty
//! shard: a shard the partition left empty is not the user's mistake.

use std::path::Path;

use crate::helpers::*;

const SPEC: &str = "fixtures/spec.toml";
/// The fixture image of the reports below: 3 cases, one passes, two fail.
const PY3: &str = "local/kipoi-fixture:py3";

/// A report as the runner writes one: `(model, junit status element or "")` in one suite of
/// the fixture image.
fn report(path: &Path, cases: &[(&str, &str)]) {
    let mut xml = String::from(
        "<testsuites name=\"zoo-runner\" tests=\"0\" failures=\"0\" errors=\"0\">\n\
         <testsuite name=\"docker:local/kipoi-fixture:py3\" tests=\"0\" failures=\"0\" errors=\"0\">\n",
    );
    for (model, inner) in cases {
        xml.push_str(&format!(
            "<testcase name=\"{model}\" classname=\"docker:local/kipoi-fixture:py3\" \
             time=\"1.0\">{inner}</testcase>\n"
        ));
    }
    xml.push_str("</testsuite>\n</testsuites>\n");
    std::fs::write(path, xml).unwrap();
}

fn listed(run: &Run) -> Vec<String> {
    let mut names: Vec<String> = run
        .stdout
        .lines()
        .filter_map(|l| l.strip_suffix(": test").map(str::to_string))
        .collect();
    names.sort();
    names
}

#[test]
fn what_failed_runs_again_with_retries_and_partitions() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let (first, report) = run_reported(
        &["--spec", SPEC, "--image", PY3, "--test-threads", "3"],
        &[],
    );
    assert_eq!(first.code, 101, "{}", first.all());
    let dir = tempfile::tempdir().unwrap();
    // A folder, as a CI artifact download gives it.
    let artifact = dir.path().join("artifact/shard-1");
    std::fs::create_dir_all(&artifact).unwrap();
    std::fs::copy(report.path(), artifact.join("junit.xml")).unwrap();
    let folder = dir.path().join("artifact").display().to_string();

    let list = runner(&[
        "--spec",
        SPEC,
        "--image",
        PY3,
        "--rerun-failed",
        &folder,
        "--list",
    ]);
    assert_eq!(list.code, 0, "{}", list.all());
    assert_eq!(
        listed(&list),
        ["docker::tiny_fail_expect", "docker::tiny_fail_raise"]
    );
    assert!(
        list.stderr.contains(&format!(
            "zoo-runner: --rerun-failed `{folder}` (1 report(s)): 2 case(s) failed, errored, \
             timed out or did not run there; 1 passed"
        )),
        "{}",
        list.all()
    );
    // With a partition: the shards split the cases to rerun, not the zoo.
    let mut shards = Vec::new();
    for m in 1..=2 {
        let part = format!("count:{m}/2");
        let run = runner(&[
            "--spec",
            SPEC,
            "--image",
            PY3,
            "--rerun-failed",
            &folder,
            "--partition",
            &part,
            "--list",
        ]);
        assert_eq!(run.code, 0, "{}", run.all());
        assert_eq!(listed(&run).len(), 1, "{}", run.all());
        shards.extend(listed(&run));
    }
    shards.sort();
    assert_eq!(shards, listed(&list));

    // For real, with --retries: only the two failures run, twice each.
    let (again, second) = run_reported(
        &[
            "--spec",
            SPEC,
            "--image",
            PY3,
            "--rerun-failed",
            &folder,
            "--retries",
            "1",
        ],
        &[],
    );
    assert_eq!(again.code, 101, "{}", again.all());
    assert!(again.stdout.contains("running 2 tests"), "{}", again.all());
    assert_status(&again, "docker::tiny_fail_raise", "FAILED");
    let doc = second.doc();
    assert_eq!(doc.root_element().attribute("tests"), Some("2"));
    assert_eq!(elements(&doc, "rerunFailure").len(), 2, "{}", second.text());
}

#[test]
fn flaky_cases_only_when_asked_and_nothing_to_rerun_exits_0_or_5() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.xml");
    report(
        &path,
        &[
            (
                "tiny_linear",
                "<flakyFailure type=\"failure\" message=\"x\"/>",
            ),
            ("tiny_fail_expect", ""),
            ("tiny_fail_raise", ""),
        ],
    );
    let path = path.display().to_string();
    let flaky = runner(&[
        "--spec",
        SPEC,
        "--rerun-failed",
        &path,
        "--rerun-failed-include-flaky",
        "--list",
    ]);
    assert_eq!(listed(&flaky), ["docker::tiny_linear"], "{}", flaky.all());

    let (run, report_) = run_reported(&["--spec", SPEC, "--rerun-failed", &path], &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(report_.exists());
    let mut said = normalise::transcript(&["--spec", SPEC, "--rerun-failed", &path], &run);
    let (run, _) = run_reported(
        &["--spec", SPEC, "--rerun-failed", &path, "--require-tests"],
        &[],
    );
    assert_eq!(run.code, 5, "{}", run.all());
    said.push_str(&normalise::transcript(
        &["--spec", SPEC, "--rerun-failed", &path, "--require-tests"],
        &run,
    ));

    // A report of another zoo: an input error that says so, before anything runs.
    let other = dir.path().join("other.xml");
    report(&other, &[("SomeoneElse/model", "<failure message=\"x\"/>")]);
    let other = other.display().to_string();
    let (run, report_) = run_reported(&["--spec", SPEC, "--rerun-failed", &other], &[]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(!report_.exists());
    said.push_str(&normalise::transcript(
        &["--spec", SPEC, "--rerun-failed", &other],
        &run,
    ));
    let missing = dir.path().join("missing.xml").display().to_string();
    let run = runner(&["--spec", SPEC, "--rerun-failed", &missing]);
    assert_eq!(run.code, 2, "{}", run.all());
    said.push_str(&normalise::transcript(
        &["--spec", SPEC, "--rerun-failed", &missing],
        &run,
    ));
    normalise::run_output().bind(|| insta::assert_snapshot!("rerun_inputs", said));
}

#[test]
fn matrix_plans_the_jobs_of_what_failed() {
    let _daemon = daemon::shared();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.xml");
    report(
        &path,
        &[
            ("tiny_linear", ""),
            ("tiny_fail_expect", "<failure message=\"x\"/>"),
            ("tiny_fail_raise", "<error type=\"infra\" message=\"429\"/>"),
        ],
    );
    let path = path.display().to_string();
    let jobs = zoo::matrix(&["--spec", SPEC, "--rerun-failed", &path, "--shards", "4"]);
    assert_eq!(jobs.len(), 2, "no more jobs than cases: {jobs:?}");
    let mut union = Vec::new();
    for job in &jobs {
        assert!(job.args.contains("--rerun-failed"), "{}", job.args);
        union.extend(zoo::list_through_shell(&job.args, &[]));
    }
    union.sort();
    assert_eq!(
        union,
        ["docker::tiny_fail_expect", "docker::tiny_fail_raise"]
    );
}

/// GitLab's `parallel: 4` on a zoo of 3 cases: the fourth job's shard is empty, which is not
/// the user's mistake (exit 0 with a note, even with --require-tests); an empty selection
/// still fails.
#[test]
fn a_shard_the_partition_left_empty_passes_with_require_tests() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let args = [
        "--spec",
        SPEC,
        "--image",
        PY3,
        "--partition",
        "count:auto",
        "--require-tests",
    ];
    let env = [("CI_NODE_INDEX", "4"), ("CI_NODE_TOTAL", "4")];
    let (run, report_) = run_reported(&args, &env);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(report_.exists());
    assert!(
        run.stderr.contains(
            "zoo-runner: --partition left this shard no case: the selection's 3 case(s) went to \
             the other shards"
        ),
        "{}",
        run.all()
    );
    let (run, _) = run_reported(
        &[
            "--spec",
            SPEC,
            "--image",
            PY3,
            "--model",
            "tiny_linear",
            "--skip",
            "tiny",
            "--require-tests",
        ],
        &[],
    );
    assert_eq!(run.code, 5, "{}", run.all());
    assert!(
        run.stderr.contains(
            "error: --require-tests: a run that tests nothing fails (the selection is empty)"
        ),
        "{}",
        run.all()
    );
}
