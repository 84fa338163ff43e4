//! A flaky download is not a broken model: a case whose output matches the spec's
//! `infra_failures` is an error of kind `infra`, rerun after a pause (`--infra-retries`) apart
//! from `--retries`, and counted apart in the summary. The data comes from a real HTTP server
//! on 127.0.0.1 (helpers/http.rs) that the fakenet model of the keras fixture image fetches.

use crate::helpers::http::Reply;
use crate::helpers::keras::{data_file, KerasZoo, KERAS_V1};
use crate::helpers::*;

/// Short pauses for the test (the default first pause is 30 s).
const BACKOFF: (&str, &str) = ("ZOO_RUNNER_INFRA_BACKOFF", "300ms");

#[test]
fn a_throttled_download_passes_after_backoff_and_one_that_stays_down_is_an_infra_error() {
    let _daemon = daemon::shared();
    let zoo = KerasZoo::new();
    // Throttled, then unavailable, then the file.
    zoo.server.script(
        "/v1/flaky.dat",
        vec![
            Reply::Status(429),
            Reply::Status(503),
            Reply::File(data_file(1, "flaky", 4096)),
        ],
    );
    // Always throttled.
    zoo.server.script("/v1/down.dat", vec![Reply::Status(429)]);
    let spec = zoo.spec(
        "infra",
        &[("flaky", KERAS_V1), ("down", KERAS_V1)],
        "infra_failures = [\"HTTP Error 429\", \"HTTP Error 503\"]",
    );
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("summary.md");
    let summary_arg = summary.display().to_string();
    let cache = zoo.cache_dir().display().to_string();
    let (run, report) = run_reported(
        &[
            "--spec",
            &spec,
            "--cache-dir",
            &cache,
            "--summary",
            &summary_arg,
        ],
        &[BACKOFF],
    );
    assert_eq!(run.code, 101, "{}", run.all());
    assert_status(&run, "docker::flaky", "ok");
    assert_status(&run, "docker::down", "FAILED");
    // Every attempt reached the server: the first two answered 429 and 503.
    assert_eq!(zoo.requests("/v1/flaky.dat"), 3);
    assert_eq!(
        zoo.requests("/v1/down.dat"),
        3,
        "the default --infra-retries 2"
    );
    assert!(
        run.stderr
            .contains("zoo-runner: docker::flaky could not fetch its data; retrying in"),
        "{}",
        run.all()
    );

    let doc = report.doc();
    // The report shows the attempts: each outside failure as a flakyError of type infra.
    let flaky = testcase(&doc, "flaky");
    let earlier: Vec<(&str, &str)> = flaky
        .children()
        .filter(|n| n.has_tag_name("flakyError"))
        .map(|n| {
            (
                n.attribute("type").unwrap(),
                n.attribute("message").unwrap(),
            )
        })
        .collect();
    assert_eq!(earlier.len(), 2, "{}", report.text());
    assert!(earlier.iter().all(|(ty, _)| *ty == "infra"), "{earlier:?}");
    assert!(earlier[0].1.contains("HTTP Error 429"), "{earlier:?}");
    assert!(earlier[1].1.contains("HTTP Error 503"), "{earlier:?}");
    // The one that stayed down is an error (not a failure) of type infra.
    let down = testcase(&doc, "down");
    assert!(child(down, "failure").is_none(), "{}", report.text());
    let error = child(down, "error").expect("an error");
    assert_eq!(error.attribute("type"), Some("infra"));
    assert!(
        error
            .attribute("message")
            .unwrap()
            .starts_with("its data could not be fetched (exit code 1)"),
        "{}",
        report.text()
    );
    let text = std::fs::read_to_string(&summary).unwrap();
    assert!(
        text.contains("**1 model could not fetch its data:**"),
        "{text}"
    );
}

/// `--infra-retries 0` reruns nothing, and `--retries` does not rerun an outside failure.
#[test]
fn infra_retries_are_apart_from_retries() {
    let _daemon = daemon::shared();
    let zoo = KerasZoo::new();
    zoo.server.script("/v1/down.dat", vec![Reply::Status(503)]);
    let spec = zoo.spec(
        "infra0",
        &[("down", KERAS_V1)],
        "infra_failures = [\"HTTP Error 503\"]",
    );
    let (run, report) = zoo_run(&zoo, &spec, &["--infra-retries", "0", "--retries", "2"]);
    assert_eq!(run.code, 101, "{}", run.all());
    assert_eq!(zoo.requests("/v1/down.dat"), 1, "{}", run.all());
    let doc = report.doc();
    assert_eq!(
        child(testcase(&doc, "down"), "error").and_then(|e| e.attribute("type")),
        Some("infra")
    );
}

fn zoo_run(zoo: &KerasZoo, spec: &str, args: &[&str]) -> (Run, Report) {
    let cache = zoo.cache_dir().display().to_string();
    let mut all = vec!["--spec", spec, "--cache-dir", &cache];
    all.extend(args);
    run_reported(&all, &[BACKOFF])
}
