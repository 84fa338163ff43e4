//! End to end, Docker runtime: the built binary against the real daemon, the real kipoi in the
//! fixture image, and the fixture catalog (fixtures/catalog, fixtures/spec.toml).

use crate::helpers::*;
use std::path::Path;

const SPEC: &str = "fixtures/spec.toml";

/// A spec in `dir` for the fixture image with the given extra TOML, pointing at `catalog`.
fn write_spec(dir: &Path, catalog: &Path, command: &str, extra: &str) -> String {
    let path = dir.join("spec.toml");
    std::fs::write(
        &path,
        format!(
            "catalog = {catalog:?}\ncommand = {command:?}\nworkdir = \"/models/{{model}}\"\n\
             network = \"none\"\ntimeout = \"5m\"\n{extra}\n",
            catalog = catalog.display().to_string(),
        ),
    )
    .unwrap();
    path.display().to_string()
}

/// A spec for the fixture catalog (fixtures/catalog) with the given command and extra TOML.
fn fixture_spec(dir: &Path, command: &str, extra: &str) -> String {
    write_spec(dir, &root().join("fixtures/catalog"), command, extra)
}

#[test]
fn passing_and_broken_models_are_reported_truthfully() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("summary.md");
    // The tiny models' image (the checked group's has tests of its own: predictions_e2e).
    let (run, report) = run_reported(
        &[
            "--spec",
            SPEC,
            "--image",
            FIXTURE_IMAGE,
            "--summary",
            summary.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(run.code, 101, "a failed test exits 101\n{}", run.all());
    assert_status(&run, "docker::tiny_linear", "ok");
    assert_status(&run, "docker::tiny_fail_expect", "FAILED");
    assert_status(&run, "docker::tiny_fail_raise", "FAILED");
    // The whole terminal output, as `cargo test` shows it: the test lines, the failures with
    // kipoi's words, the result line (`1 passed; 2 failed`); and the runner's own lines.
    normalise::run_output().bind(|| {
        insta::assert_snapshot!("fixture_zoo_stdout", run.stdout);
        insta::assert_snapshot!("fixture_zoo_stderr", run.stderr);
    });
    // The summary (the slowest cases in the order of their times, checked against the report,
    // then sorted by name for the snapshot) and the report itself.
    let md = std::fs::read_to_string(&summary).unwrap();
    assert_eq!(
        normalise::slowest_cases(&md),
        normalise::slowest_in_report(Path::new(report.path())),
        "{md}"
    );
    normalise::run_output().bind(|| {
        insta::assert_snapshot!("fixture_zoo_summary", normalise::slowest_by_name(&md));
        insta::assert_snapshot!("fixture_zoo_junit", report.text());
    });

    let doc = report.doc();
    let ok = testcase(&doc, "tiny_linear");
    assert!(child(ok, "failure").is_none() && child(ok, "error").is_none());
    assert_eq!(
        ok.attribute("classname"),
        Some("docker:local/kipoi-fixture:py3")
    );
    let image_id = property(&doc, "image-id");
    assert!(image_id.starts_with("sha256:"), "{image_id}");

    let message = child_message(testcase(&doc, "tiny_fail_expect"), "failure");
    assert!(
        message.contains("Model predictions don't match"),
        "{message}"
    );

    let raise = testcase(&doc, "tiny_fail_raise");
    let message = child_message(raise, "failure");
    assert!(
        message.contains("RuntimeError: fixture: deliberate failure"),
        "{message}"
    );
    // stdout and stderr stay apart: kipoi logs on stdout, the traceback on stderr.
    let err = child_text(raise, "system-err");
    let out = child_text(raise, "system-out");
    assert!(err.contains("Traceback"), "{err}");
    assert!(!out.contains("Traceback") && out.contains("kipoi"), "{out}");
    assert!(!out.contains('\u{1b}'), "ANSI codes do not reach the XML");

    let suite = elements(&doc, "testsuite")[0];
    assert_eq!(suite.attribute("tests"), Some("3"));
    assert_eq!(suite.attribute("failures"), Some("2"));
    let run_id = property(&doc, "run-id");
    let left = containers_with_label(&format!("org.zoo-runner.run={run_id}"));
    assert!(
        left.is_empty(),
        "containers of the run are removed: {left:?}"
    );
}

#[test]
fn libtest_filters_select_what_they_say() {
    let _daemon = daemon::shared();
    require_fixture_image();
    // `--exact`: `1 passed; 0 failed`, `2 filtered out`; `--skip`: `running 1 test`.
    let exact = ["--spec", SPEC, "--exact", "docker::tiny_linear"];
    let (run, report) = run_reported(&exact, &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    let text = report.text();
    assert!(
        text.contains("tiny_linear") && !text.contains("tiny_fail"),
        "{text}"
    );
    let mut said = normalise::transcript(&[&exact[..], &["--junit", report.path()]].concat(), &run);

    let skip = [
        "--spec",
        SPEC,
        "--skip",
        "fail",
        "--skip",
        "checked/",
        "--test-threads",
        "2",
    ];
    let (run, report) = run_reported(&skip, &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    said.push_str(&normalise::transcript(
        &[&skip[..], &["--junit", report.path()]].concat(),
        &run,
    ));
    normalise::run_output().bind(|| insta::assert_snapshot!("libtest_filters", said));

    let (run, _) = run_reported(&["--spec", SPEC, "--list", "tiny_fail"], &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    let listed: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.ends_with(": test"))
        .collect();
    assert_eq!(
        listed,
        [
            "docker::tiny_fail_expect: test",
            "docker::tiny_fail_raise: test"
        ]
    );
}

#[test]
fn selection_flags_pick_models_groups_and_images() {
    let _daemon = daemon::shared();
    let list = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["--spec", SPEC, "--list"];
        all.extend_from_slice(args);
        let run = runner(&all);
        assert_eq!(run.code, 0, "{}", run.all());
        run.stdout
            .lines()
            .filter_map(|l| l.strip_suffix(": test"))
            .map(str::to_string)
            .collect()
    };
    // The tiny models and the checked group's (local/kipoi-fixture:checked).
    assert_eq!(list(&[]).len(), 6);
    assert_eq!(
        list(&["--model=tiny_fail_raise,tiny_linear"]),
        ["docker::tiny_fail_raise", "docker::tiny_linear"]
    );
    assert_eq!(
        list(&[
            "--modelgroup",
            "tiny_linear",
            "--modelgroup=tiny_fail_expect"
        ]),
        ["docker::tiny_linear", "docker::tiny_fail_expect"]
    );
    assert_eq!(list(&["--image", FIXTURE_IMAGE]).len(), 3);
    assert_eq!(
        list(&["--model", "tiny_linear", "--runtime", "all"]),
        ["docker::tiny_linear", "singularity::tiny_linear"]
    );
}

#[test]
fn unknown_names_are_usage_errors_with_suggestions() {
    let _daemon = daemon::shared();
    // Each names the unknown name and suggests the near ones (`did you mean ...?`).
    let cases = [
        ["--model", "tiny_lnear"],
        ["--modelgroup", "tiny_fail_rise"],
        ["--image", "local/kipoi-fixture:py2"],
    ];
    let mut said = String::new();
    for args in cases {
        let mut all = vec!["--spec", SPEC];
        all.extend(args);
        let (run, report) = run_reported(&all, &[]);
        assert_eq!(run.code, 2, "{}", run.all());
        assert!(
            !run.stdout.contains("running"),
            "nothing ran\n{}",
            run.all()
        );
        assert!(!report.exists(), "no report for a usage error");
        all.extend(["--junit", report.path()]);
        said.push_str(&normalise::transcript(&all, &run));
    }
    normalise::messages().bind(|| insta::assert_snapshot!("unknown_names", said));
}

#[test]
fn broken_catalog_and_spec_name_file_line_and_column() {
    let _daemon = daemon::shared();
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog");
    std::fs::create_dir_all(&catalog).unwrap();
    std::fs::write(
        catalog.join("model-to-docker.json"),
        "{\n  \"a\": \"img\"\n  \"b\": \"img\"\n}\n",
    )
    .unwrap();
    std::fs::write(catalog.join("docker-to-model.json"), "{}").unwrap();
    let catalog_args = ["--spec", SPEC, "--catalog", catalog.to_str().unwrap()];
    let run = runner(&catalog_args);
    assert_eq!(run.code, 2, "{}", run.all());
    // `model-to-docker.json`, `line 3, column 3`.
    let mut said = normalise::transcript(&catalog_args, &run);

    let spec = dir.path().join("bad.toml");
    std::fs::write(&spec, "command = \"kipoi test {model}\"\ntimeout = 5\n").unwrap();
    let spec_args = [
        "--spec",
        spec.to_str().unwrap(),
        "--catalog",
        "fixtures/catalog",
    ];
    let run = runner(&spec_args);
    assert_eq!(run.code, 2, "{}", run.all());
    // `bad.toml`, `line 2, column 11`.
    said.push_str(&normalise::transcript(&spec_args, &run));
    normalise::messages().bind(|| insta::assert_snapshot!("broken_catalog_and_spec", said));
}

#[test]
fn unreachable_daemon_has_its_own_exit_code_and_a_report() {
    let _daemon = daemon::shared();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("no-daemon.sock");
    let host = format!("unix://{}", socket.display());
    let (run, report) = run_reported(
        &["--spec", SPEC, "--image", FIXTURE_IMAGE],
        &[("DOCKER_HOST", &host)],
    );
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(
        run.stderr.contains("cannot reach the Docker daemon"),
        "{}",
        run.all()
    );
    assert!(
        run.stderr.contains("dockerd"),
        "says how to start one\n{}",
        run.all()
    );
    let doc = report.doc();
    let errors = elements(&doc, "error");
    assert_eq!(errors.len(), 3);
    // The cause is kept, in the terminal and in the report: "...: because <why>".
    let message = errors[0].attribute("message").unwrap();
    assert!(
        message.contains("cannot reach the Docker daemon") && message.contains(": because "),
        "{message}"
    );
    assert!(run.stderr.contains(": because "), "{}", run.all());
}

#[test]
fn an_image_that_cannot_be_had_errors_its_cases_only() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog");
    // A registry on a closed loopback port: the pull fails at once, and nothing leaves the host.
    let missing = "127.0.0.1:9/zoo-runner/missing:1";
    write_catalog(
        &catalog,
        &[("tiny_linear", FIXTURE_IMAGE), ("ghost", missing)],
        None,
    );
    let spec = write_spec(
        dir.path(),
        &catalog,
        "kipoi test /models/{model} --source=dir",
        "",
    );
    let (run, report) = run_reported(&["--spec", &spec], &[]);
    assert_eq!(run.code, 101, "{}", run.all());
    assert_status(&run, "docker::tiny_linear", "ok");
    assert_status(&run, "docker::ghost", "FAILED");
    let doc = report.doc();
    let message = child_message(testcase(&doc, "ghost"), "error");
    assert!(
        message.contains(missing) && message.contains("pull"),
        "{message}"
    );
}

#[test]
fn slim_runs_the_slim_tag() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let (run, report) = run_reported(&["--spec", SPEC, "--slim", "--model", "tiny_linear"], &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    let text = report.text();
    assert!(
        text.contains("classname=\"docker:local/kipoi-fixture:py3-slim\""),
        "{text}"
    );
}

#[test]
fn only_variables_the_spec_names_enter_the_container() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let dir = tempfile::tempdir().unwrap();
    let spec = fixture_spec(
        dir.path(),
        "env",
        "env = [\"ZR_FIXED=1\", \"ZR_FROM_HOST\"]",
    );
    let (run, report) = run_reported(
        &[
            "--spec",
            &spec,
            "--model",
            "tiny_linear",
            "--store-success-output",
        ],
        &[("ZR_FROM_HOST", "yes"), ("GITHUB_TOKEN", "host-secret")],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    let text = report.text();
    assert!(
        text.contains("ZR_FIXED=1") && text.contains("ZR_FROM_HOST=yes"),
        "{text}"
    );
    assert!(
        !text.contains("host-secret") && !text.contains("GITHUB_TOKEN"),
        "{text}"
    );
}

#[test]
fn garbled_output_still_makes_valid_xml() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let dir = tempfile::tempdir().unwrap();
    let spec = fixture_spec(dir.path(), "python3 /faults/garbled.py", "");
    let (run, report) = run_reported(&["--spec", &spec, "--model", "tiny_linear"], &[]);
    assert_eq!(run.code, 101, "exit code 3 is a failure\n{}", run.all());
    let doc = report.doc();
    let case = testcase(&doc, "tiny_linear");
    let out = child_text(case, "system-out");
    let err = child_text(case, "system-err");
    assert!(
        out.contains("red plain ]]> <tag> &") && out.contains("garbled: stdout only"),
        "{out}"
    );
    assert!(
        !out.contains("stderr only") && err.contains("garbled: stderr only"),
        "{err}"
    );
    assert!(
        out.contains('\u{fffd}'),
        "invalid UTF-8 became U+FFFD: {out}"
    );
    assert!(child_message(case, "failure").starts_with("exit code 3"));
}

#[test]
fn spec_marks_skip_and_expected_failure() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let dir = tempfile::tempdir().unwrap();
    let spec = fixture_spec(
        dir.path(),
        "kipoi test /models/{model} --source=dir",
        "[models.tiny_fail_raise]\nexpect_failure = \"raises on purpose\"\n\
         [models.tiny_fail_expect]\nskip = \"not today\"\n",
    );
    let (run, report) = run_reported(&["--spec", &spec, "--image", FIXTURE_IMAGE], &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    // `ignored (expected failure: raises on purpose)`, `ignored (skipped: not today)`.
    normalise::run_output()
        .bind(|| insta::assert_snapshot!("skip_and_expected_failure", run.stdout));
    let doc = report.doc();
    let xfail = child_message(testcase(&doc, "tiny_fail_raise"), "skipped");
    assert!(xfail.contains("RuntimeError"), "kipoi's words are kept");
    let skip = child(testcase(&doc, "tiny_fail_expect"), "skipped").unwrap();
    assert_eq!(skip.attribute("message"), Some("not today"));
}

#[test]
fn ignored_flags_run_what_the_spec_skips() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let dir = tempfile::tempdir().unwrap();
    let spec = fixture_spec(
        dir.path(),
        "kipoi test /models/{model} --source=dir",
        "[models.tiny_fail_expect]\nskip = \"not today\"\n",
    );
    let (run, _) = run_reported(&["--spec", &spec, "--ignored"], &[]);
    assert_eq!(run.code, 101, "{}", run.all());
    assert!(run.stdout.contains("running 1 test"), "{}", run.all());
    assert_status(&run, "docker::tiny_fail_expect", "FAILED");

    let (run, _) = run_reported(
        &["--spec", &spec, "--include-ignored", "--skip", "raise"],
        &[],
    );
    assert_eq!(run.code, 101, "{}", run.all());
    assert_status(&run, "docker::tiny_linear", "ok");
    assert_status(&run, "docker::tiny_fail_expect", "FAILED");
}

#[test]
fn spec_volumes_are_kept_between_cases() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let dir = tempfile::tempdir().unwrap();
    let volume = format!("zoo-runner-test-{}", std::process::id());
    let spec = fixture_spec(
        dir.path(),
        "ls /cache",
        &format!(
            "volumes = [\"{volume}:/cache\"]\n\
             [models.tiny_linear]\ncommand = \"touch /cache/left-by-tiny_linear\"\n"
        ),
    );
    let (run, report) = run_reported(
        &[
            "--spec",
            &spec,
            "--model",
            "tiny_linear,tiny_fail_raise",
            "--store-success-output",
        ],
        &[],
    );
    let _ = std::process::Command::new("docker")
        .args(["volume", "rm", "-f", &volume])
        .output();
    assert_eq!(run.code, 0, "{}", run.all());
    let doc = report.doc();
    let listed = child_text(testcase(&doc, "tiny_fail_raise"), "system-out");
    assert_eq!(
        listed.trim().lines().last(),
        Some("left-by-tiny_linear"),
        "the second case sees the first's file: {listed}"
    );
}
