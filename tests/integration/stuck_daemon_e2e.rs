//! End to end, waits that must end: a daemon that never carries out a stop or a kill (a proxy
//! in front of the real daemon swallows them), and a stop that takes longer than the request
//! timeout. The testing knobs (`ZOO_RUNNER_STOP_SLACK`, `ZOO_RUNNER_REQUEST_TIMEOUT`) shorten
//! the runner's waits to seconds; every check of what is left goes to the real daemon.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use crate::helpers::daemon_proxy::{self, SwallowingProxy};
use crate::helpers::*;

const MODEL: &str = "stuck";
const CASE: &str = "docker::stuck";

/// A zoo of one model, `stuck`, served by the fixture image and running `command` (a TOML
/// value) with no network.
fn stuck_zoo(dir: &Path, command: &str) -> PathBuf {
    let catalog = dir.join("catalog");
    write_catalog(&catalog, &[(MODEL, FIXTURE_IMAGE)], None);
    let spec = dir.join("spec.toml");
    std::fs::write(
        &spec,
        format!(
            "catalog = {catalog:?}\ncommand = {command}\nnetwork = \"none\"\ntimeout = \"5m\"\n"
        ),
    )
    .unwrap();
    spec
}

/// Waits for a spawned runner at most `limit`; past it, kills the runner and fails the test.
fn finish_within(process: Child, limit: Duration) -> Run {
    let pid = process.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(finish(process));
    });
    match rx.recv_timeout(limit) {
        Ok(run) => run,
        Err(_) => {
            signal(pid, libc::SIGKILL);
            panic!("the runner was still waiting after {limit:?}: a wait without a deadline");
        }
    }
}

/// Removes, when the test ends however it ends, what a runner process left (a failing test
/// must not leave `sleep 600` running).
struct RemoveLeftovers(u32);

impl Drop for RemoveLeftovers {
    fn drop(&mut self) {
        let left = containers_of(self.0, None);
        if !left.is_empty() {
            let _ = Command::new("docker")
                .arg("rm")
                .arg("-f")
                .args(&left)
                .output();
        }
    }
}

/// The text of the case's `system-err`, empty when it has none.
fn system_err<'a>(case: roxmltree::Node<'a, '_>) -> &'a str {
    child(case, "system-err")
        .and_then(|n| n.text())
        .unwrap_or_default()
}

#[test]
fn a_container_the_daemon_will_not_stop_is_given_up_on_and_removed() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let dir = tempfile::tempdir().unwrap();
    let spec = stuck_zoo(dir.path(), "\"sleep 600\"");
    let proxy = SwallowingProxy::start(dir.path(), daemon_proxy::stop_and_kill);
    let host = proxy.host();
    let (process, report) = spawn_reported(
        &[
            "--spec",
            spec.to_str().unwrap(),
            "--exact",
            CASE,
            "--timeout",
            "2s",
            "--grace",
            "1s",
        ],
        &[("DOCKER_HOST", &host), ("ZOO_RUNNER_STOP_SLACK", "2s")],
    );
    let _cleanup = RemoveLeftovers(process.id());
    let pid = process.id();
    // Requests may take 120 s here (bollard's default): a stop that held up the wait until
    // its request timed out would take longer than this.
    let run = finish_within(process, Duration::from_secs(90));

    assert_eq!(run.code, 101, "{}", run.all());
    let swallowed = proxy.swallowed();
    for what in ["/stop", "/kill"] {
        assert!(
            swallowed
                .iter()
                .any(|r| r.starts_with("POST /containers/") && r.ends_with(what)),
            "the runner asked for a {what}, which the daemon never saw: {swallowed:?}\n{}",
            run.all()
        );
    }
    for said in [
        "docker::stuck timed out after 2s",
        "after its stop's grace period; the runner sent SIGKILL",
        "after the SIGKILL; the runner gave up on it",
    ] {
        assert!(run.stderr.contains(said), "{said}\n{}", run.all());
    }

    let doc = report.doc();
    let case = testcase(&doc, MODEL);
    let error = child(case, "error").expect("the case is an error");
    assert_eq!(error.attribute("type"), Some("timeout"), "{}", run.all());
    let message = child_message(case, "error");
    assert!(message.contains("timeout of 2s"), "{message}");
    assert!(message.contains("could not be stopped"), "{message}");
    // The grace period, then the slack after the stop and again after the SIGKILL.
    assert!(message.contains("still running 5s after"), "{message}");
    let err = system_err(case);
    assert!(err.contains("the runner sent SIGKILL"), "{err}");
    assert!(err.contains("the runner gave up on it"), "{err}");
    let time: f64 = case.attribute("time").unwrap().parse().unwrap();
    assert!(
        time >= 7.0,
        "the timeout (2s), the grace period (1s) and both slacks (2s each) were waited: {time}"
    );

    // Through the real daemon: the force removal reached it although stop and kill did not.
    assert!(
        containers_of(pid, None).is_empty(),
        "no container of the run is left: {:?}",
        containers_of(pid, None)
    );
}

#[test]
fn an_interrupted_case_the_daemon_will_not_stop_is_given_up_on_too() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let dir = tempfile::tempdir().unwrap();
    let spec = stuck_zoo(dir.path(), "\"sleep 600\"");
    let proxy = SwallowingProxy::start(dir.path(), daemon_proxy::stop_and_kill);
    let host = proxy.host();
    let (process, report) = spawn_reported(
        &[
            "--spec",
            spec.to_str().unwrap(),
            "--exact",
            CASE,
            "--grace",
            "1s",
        ],
        &[("DOCKER_HOST", &host), ("ZOO_RUNNER_STOP_SLACK", "2s")],
    );
    let _cleanup = RemoveLeftovers(process.id());
    let pid = process.id();
    let started = std::time::Instant::now();
    while containers_of(pid, Some(CASE)).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no container for {CASE} appeared"
        );
        thread::sleep(Duration::from_millis(200));
    }
    thread::sleep(Duration::from_millis(500));
    signal(pid, libc::SIGINT);
    let run = finish_within(process, Duration::from_secs(90));

    assert_eq!(run.code, 130, "{}", run.all());
    let swallowed = proxy.swallowed();
    assert!(
        swallowed.iter().any(|r| r.ends_with("/stop"))
            && swallowed.iter().any(|r| r.ends_with("/kill")),
        "{swallowed:?}\n{}",
        run.all()
    );
    let doc = report.doc();
    let case = testcase(&doc, MODEL);
    let message = child_message(case, "error");
    assert!(message.contains("interrupted"), "{message}");
    assert!(message.contains("could not be stopped"), "{message}");
    assert!(
        containers_of(pid, None).is_empty(),
        "no container of the run is left"
    );
}

#[test]
fn a_stop_longer_than_the_request_timeout_is_not_cut_off() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let dir = tempfile::tempdir().unwrap();
    let spec = stuck_zoo(dir.path(), r#"["sh", "-c", "trap '' TERM; sleep 600"]"#);
    // The stop lasts the whole 6 s grace period (SIGTERM is ignored), twice the 3 s the
    // requests would get if the grace period did not lengthen it.
    let (process, report) = spawn_reported(
        &[
            "--spec",
            spec.to_str().unwrap(),
            "--exact",
            CASE,
            "--timeout",
            "2s",
            "--grace",
            "6s",
        ],
        &[
            ("ZOO_RUNNER_REQUEST_TIMEOUT", "3s"),
            ("ZOO_RUNNER_STOP_SLACK", "2s"),
        ],
    );
    let _cleanup = RemoveLeftovers(process.id());
    let pid = process.id();
    let run = finish_within(process, Duration::from_secs(90));

    assert_eq!(run.code, 101, "{}", run.all());
    assert!(
        !run.stderr.contains("did not answer") && !run.stderr.contains("request failed"),
        "the stop request was not cut off\n{}",
        run.all()
    );
    let doc = report.doc();
    let case = testcase(&doc, MODEL);
    let error = child(case, "error").expect("the case is an error");
    assert_eq!(error.attribute("type"), Some("timeout"), "{}", run.all());
    let message = child_message(case, "error");
    assert!(message.contains("timeout of 2s"), "{message}");
    assert!(
        message.contains("SIGTERM did not stop it, so SIGKILL ended it"),
        "Docker's stop killed it (exit 137) at the end of the grace period: {message}"
    );
    let err = system_err(case);
    assert!(
        !err.contains("[zoo-runner:"),
        "nothing went wrong around the command: {err}"
    );
    let time: f64 = case.attribute("time").unwrap().parse().unwrap();
    assert!(
        time >= 8.0,
        "the stop took the grace period, longer than the request timeout: {time}"
    );
    assert!(
        containers_of(pid, None).is_empty(),
        "no container of the run is left"
    );
}

#[test]
fn a_bad_knob_stops_the_run_at_start_naming_the_variable() {
    let _daemon = daemon::shared();
    // Each message names the variable and quotes its value; no panic.
    let mut said = String::new();
    for (var, value) in [
        ("ZOO_RUNNER_STOP_SLACK", "soon"),
        ("ZOO_RUNNER_REQUEST_TIMEOUT", "200ms"),
    ] {
        let args = ["--spec", "fixtures/faults/spec.toml", "--list"];
        let run = runner_env(&args, &[(var, value)]);
        assert_eq!(run.code, 2, "{var}={value}\n{}", run.all());
        assert!(run.stdout.is_empty(), "nothing listed: {}", run.all());
        said.push_str(&normalise::transcript_with_env(
            &[(var, value)],
            &args,
            &run,
        ));
    }
    normalise::messages().bind(|| insta::assert_snapshot!("bad_knobs", said));
}
