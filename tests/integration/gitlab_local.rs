//! The shipped GitLab pipeline (examples/ci/gitlab-ci.yml), run for real under gitlab-ci-local
//! (4.65.0 from npm, installed by fixtures/test.sh) with its shell executor, on the fixture zoo:
//! the build job (given the runner built here), `parallel: 4` test jobs on a zoo of 3 cases (the
//! fourth shard is empty, and passes), the report job's merge and summary, then a second
//! pipeline that reruns only what failed in the merged report. The example's variables make this
//! possible without changing the file: `ZOO_SPEC`, `ZOO_DIND_IMAGE` (empty: no service, so
//! nothing is pulled), `DOCKER_HOST` (this machine's daemon) and `ZOO_RUNNER_BIN`.

use std::path::Path;
use std::process::Command;

use crate::helpers::*;

const GITLAB: &str = "examples/ci/gitlab-ci.yml";

/// A git project with the example as its `.gitlab-ci.yml` and the fixture zoo under `zoo/`.
fn project(dir: &Path) {
    std::fs::copy(root().join(GITLAB), dir.join(".gitlab-ci.yml")).unwrap();
    let zoo = dir.join("zoo");
    std::fs::create_dir_all(zoo.join("catalog")).unwrap();
    std::fs::copy(root().join("fixtures/spec.toml"), zoo.join("spec.toml")).unwrap();
    // The fixture catalog's first image only: its 3 cases (one passes, two fail), so that
    // `parallel: 4` leaves a shard empty.
    let image = "local/kipoi-fixture:py3";
    let read = |file: &str| -> serde_json::Map<String, serde_json::Value> {
        let text = std::fs::read_to_string(root().join("fixtures/catalog").join(file)).unwrap();
        serde_json::from_str(&text).unwrap()
    };
    let mut by_image = read("docker-to-model.json");
    by_image.retain(|name, _| name == image);
    let mut by_model = read("model-to-docker.json");
    by_model.retain(|_, value| value == image);
    for (file, map) in [
        ("docker-to-model.json", by_image),
        ("model-to-docker.json", by_model),
    ] {
        let text = serde_json::to_string_pretty(&map).unwrap();
        std::fs::write(zoo.join("catalog").join(file), text).unwrap();
    }
    std::fs::write(dir.join(".gitignore"), ".gitlab-ci-local/\n").unwrap();
    for args in [
        &["init", "-q", "."][..],
        &["add", "-A"][..],
        &[
            "-c",
            "user.name=zoo",
            "-c",
            "user.email=zoo@localhost",
            "commit",
            "-qm",
            "the example",
        ][..],
    ] {
        let out = Command::new("git")
            .current_dir(dir)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
    }
}

/// Runs the pipeline; its whole log.
fn pipeline(dir: &Path, extra: &[&str]) -> String {
    let mut cmd = Command::new("gitlab-ci-local");
    cmd.current_dir(dir)
        .args([
            "--force-shell-executor",
            "--shell-isolation",
            "--no-color",
            "--ignore-predefined-vars",
            "CI_PROJECT_DIR",
        ])
        .arg("--variable")
        .arg(format!("CI_PROJECT_DIR={}", dir.display()))
        .args([
            "--variable",
            "DOCKER_HOST=unix:///var/run/docker.sock",
            "--variable",
            "ZOO_DIND_IMAGE=",
            "--variable",
            "ZOO_SPEC=zoo/spec.toml",
        ])
        .arg("--variable")
        .arg(format!("ZOO_RUNNER_BIN={}", bin().display()));
    for v in extra {
        cmd.args(["--variable", v]);
    }
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("gitlab-ci-local runs ({e}); `bash fixtures/test.sh` installs it from npm")
    });
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Test jobs whose models fail fail the pipeline; the report job runs all the same.
    assert!(!out.status.success(), "two fixture models fail:\n{log}");
    log
}

fn verdict<'a>(log: &'a str, job: &str) -> Option<&'a str> {
    log.lines().find_map(|l| {
        let l = l.trim();
        let (word, rest) = l.split_once(' ')?;
        (rest.trim() == job && (word == "PASS" || word == "FAIL")).then_some(word)
    })
}

#[test]
fn the_gitlab_pipeline_runs_its_shards_merges_and_reruns_what_failed() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let dir = tempfile::tempdir().unwrap();
    project(dir.path());

    let log = pipeline(dir.path(), &[]);
    assert_eq!(verdict(&log, "build"), Some("PASS"), "{log}");
    assert_eq!(verdict(&log, "report"), Some("PASS"), "{log}");
    let passed = (1..=4)
        .filter(|i| verdict(&log, &format!("test: [{i}/4]")) == Some("PASS"))
        .count();
    assert_eq!(
        passed, 2,
        "the passing model's job and the empty shard's:\n{log}"
    );
    assert!(
        log.contains("--partition left this shard no case"),
        "the empty shard says so:\n{log}"
    );
    let merged = dir.path().join("durations/junit.xml");
    let text = read_junit(&merged);
    let doc = roxmltree::Document::parse(&text).unwrap();
    assert_eq!(doc.root_element().attribute("tests"), Some("3"), "{text}");
    assert_eq!(
        doc.root_element().attribute("failures"),
        Some("2"),
        "{text}"
    );
    let summary = std::fs::read_to_string(dir.path().join("reports/summary.md")).unwrap();
    assert!(
        summary.starts_with("## zoo-runner: 1 passed, 2 failed, 0 errored"),
        "{summary}"
    );

    // Rerun what failed in the last merged report.
    let log = pipeline(dir.path(), &["RERUN_FAILED=durations/junit.xml"]);
    assert_eq!(verdict(&log, "report"), Some("PASS"), "{log}");
    assert!(
        log.contains(
            "--rerun-failed `durations/junit.xml` (1 report(s)): 2 case(s) failed, errored, \
             timed out or did not run there; 1 passed"
        ),
        "{log}"
    );
    let text = read_junit(&merged);
    let doc = roxmltree::Document::parse(&text).unwrap();
    assert_eq!(doc.root_element().attribute("tests"), Some("2"), "{text}");
    let names: Vec<&str> = elements(&doc, "testcase")
        .iter()
        .filter_map(|c| c.attribute("name"))
        .collect();
    assert!(!names.contains(&"tiny_linear"), "{names:?}");
    // --retries 1 from the example: each rerun case ran twice.
    assert_eq!(elements(&doc, "rerunFailure").len(), 2, "{text}");
}
