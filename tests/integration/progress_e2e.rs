//! Long runs, seen coming: off a terminal (a CI log) a plain progress line now and then (the
//! knob makes it every event here), none with `--format json`; and with `--durations`, a run
//! takes its slowest cases first, image by image.

use crate::helpers::*;

const SPEC: &str = "fixtures/spec.toml";
/// The fixture image whose 3 cases the durations below give times to.
const PY3: &str = "local/kipoi-fixture:py3";

/// Earlier times of the fixture zoo: tiny_fail_raise slowest, tiny_linear fastest.
fn durations(dir: &std::path::Path) -> String {
    let path = dir.join("durations.xml");
    let mut xml = String::from(
        "<testsuites name=\"zoo-runner\" tests=\"3\" failures=\"0\" errors=\"0\">\n\
         <testsuite name=\"docker:local/kipoi-fixture:py3\" tests=\"3\" failures=\"0\" errors=\"0\">\n",
    );
    for (model, secs) in [
        ("tiny_linear", 1.0),
        ("tiny_fail_expect", 5.0),
        ("tiny_fail_raise", 9.0),
    ] {
        xml.push_str(&format!(
            "<testcase name=\"{model}\" classname=\"docker:local/kipoi-fixture:py3\" time=\"{secs}\"/>\n"
        ));
    }
    xml.push_str("</testsuite>\n</testsuites>\n");
    std::fs::write(&path, xml).unwrap();
    path.display().to_string()
}

#[test]
fn a_ci_log_gets_progress_lines_and_durations_order_the_slowest_first() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let dir = tempfile::tempdir().unwrap();
    let durations = durations(dir.path());
    let every = [("ZOO_RUNNER_PROGRESS_EVERY", "1ms")];
    let (run, _) = run_reported(
        &["--spec", SPEC, "--image", PY3, "--durations", &durations],
        &every,
    );
    assert_eq!(run.code, 101, "{}", run.all());
    let order: Vec<&str> = run
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("test "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| name.starts_with("docker::"))
        .collect();
    assert_eq!(
        order,
        [
            "docker::tiny_fail_raise",
            "docker::tiny_fail_expect",
            "docker::tiny_linear"
        ],
        "{}",
        run.all()
    );
    let progress: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("zoo-runner: progress: "))
        .collect();
    assert!(
        progress.iter().any(|l| l
            .starts_with("zoo-runner: progress: 2 of 3 cases done (0 passed, 2 failed), ")
            && l.ends_with("left (by --durations)")),
        "{}",
        run.all()
    );
    assert!(!run.stdout.contains("progress"), "{}", run.stdout);

    // Plain output asked for: no progress lines.
    let (run, _) = run_reported(
        &["--spec", SPEC, "--image", PY3, "--format", "json"],
        &every,
    );
    assert_eq!(run.code, 101, "{}", run.all());
    assert!(!run.stderr.contains("progress"), "{}", run.all());
}
