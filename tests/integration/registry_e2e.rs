//! Pulls from real registries (Debian's `docker-registry` on loopback, `fixtures/registry.sh`):
//! each test pushes a stamped copy of the fixture image and removes it locally, so the runner's
//! pull is a real download. With and without a login, wrong logins, missing images and dead
//! registries; byte progress off a terminal; pull time kept out of case time; pull-ahead;
//! `--prune-images`, also when `--fail-fast` stops the run. One test puts a proxy in front of
//! the daemon that withholds the answer to one pull (`helpers::daemon_proxy`); one runs a
//! stand-in credential helper that never answers (a shell script, named so where it is made),
//! also for a pull ahead that `--fail-fast` gave up on.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::helpers::daemon_proxy;
use crate::helpers::registry::{
    auth_registry, is_local, open_registry, push_fixture, push_fixture_with, DockerConfig,
};
use crate::helpers::throttle::ThrottlingProxy;
use crate::helpers::*;

/// A spec whose cases run `true`, except `slow/*` models, which sleep 3 s.
fn write_zoo(dir: &Path, models: &[(&str, &str)]) -> String {
    write_catalog(&dir.join("catalog"), models, None);
    let spec = dir.join("spec.toml");
    let mut text = String::from(
        "catalog = \"catalog\"\ncommand = \"true\"\nnetwork = \"none\"\ntimeout = \"2m\"\n",
    );
    for (model, _) in models {
        if model.starts_with("slow") {
            text.push_str(&format!("[models.\"{model}\"]\ncommand = \"sleep 3\"\n"));
        }
    }
    std::fs::write(&spec, text).unwrap();
    spec.to_str().unwrap().to_string()
}

/// The value of property `name` on the testsuite of `image`.
fn suite_property<'a>(doc: &'a roxmltree::Document<'_>, image: &str, name: &str) -> &'a str {
    let suite = doc
        .descendants()
        .find(|n| {
            n.has_tag_name("testsuite") && n.attribute("name") == Some(&format!("docker:{image}"))
        })
        .unwrap_or_else(|| panic!("a testsuite for {image}"));
    suite
        .descendants()
        .find(|n| n.has_tag_name("property") && n.attribute("name") == Some(name))
        .and_then(|n| n.attribute("value"))
        .unwrap_or_else(|| panic!("property {name} on the testsuite of {image}"))
}

fn seconds(text: &str) -> f64 {
    text.parse().unwrap_or_else(|_| panic!("seconds: {text}"))
}

/// The runner with stdout and stderr into one pipe, as a CI log has them: the order of lines
/// is the order the reporter wrote them.
fn run_combined(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    let mut cmd = Command::new(bin());
    cmd.current_dir(root())
        .args(args)
        .stdin(Stdio::null())
        .stdout(writer.try_clone().unwrap())
        .stderr(writer);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("zoo-runner starts");
    drop(cmd);
    let mut text = String::new();
    use std::io::Read;
    let mut reader = reader;
    reader.read_to_string(&mut text).unwrap();
    let code = child.wait().unwrap().code().unwrap_or(-1);
    (code, text)
}

#[test]
fn a_pull_is_a_download_with_byte_progress_and_its_time_is_not_case_time() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let registry = open_registry();
    // 96 MiB of random data: the pull moves at least that much and takes longer than the
    // case (`true`) itself.
    let pushed = push_fixture_with(FIXTURE_IMAGE, &registry, "pulled", 96 << 20);
    let dir = tempfile::tempdir().unwrap();
    let spec = write_zoo(dir.path(), &[("quick", &pushed.image)]);
    let config = DockerConfig::empty();
    let summary = dir.path().join("summary.md");
    let (run, report) = run_reported(
        &["--spec", &spec, "--summary", summary.to_str().unwrap()],
        &[("DOCKER_CONFIG", config.env_value())],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        is_local(&pushed.image),
        "the runner pulled {}",
        pushed.image
    );
    let summary = std::fs::read_to_string(&summary).unwrap();
    assert!(
        summary.contains("Image pulls took") && summary.contains("not counted in the case times"),
        "the summary says how much time went into pulls: {summary}"
    );
    // Off a terminal: plain lines with readable byte counts, and a last line with the total.
    let progress: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with(&format!("zoo-runner: pull {}: ", pushed.image)))
        .collect();
    assert!(!progress.is_empty(), "progress lines: {}", run.all());
    assert!(
        progress
            .iter()
            .any(|l| l.contains("MiB of ") && l.contains('%')),
        "a line with bytes done, bytes in total and percent: {progress:?}"
    );
    assert!(
        run.stderr
            .contains(&format!("zoo-runner: pulled {}: ", pushed.image)),
        "{}",
        run.all()
    );
    assert!(
        run.stderr.contains("pulled 1 image (") && run.stderr.contains("not counted in case times"),
        "the final line says how much time went into pulls: {}",
        run.all()
    );
    let doc = report.doc();
    let bytes: u64 = suite_property(&doc, &pushed.image, "pulled-bytes")
        .parse()
        .unwrap();
    assert!(
        bytes >= 96 << 20,
        "pulled-bytes {bytes} counts the stamp layer"
    );
    let pull = seconds(suite_property(&doc, &pushed.image, "pull-seconds"));
    let case = seconds(testcase(&doc, "quick").attribute("time").unwrap());
    assert!(pull > 0.0, "pull-seconds {pull}");
    // Had the pull been charged to the case, the case would take longer than the pull.
    assert!(
        case < pull,
        "the case's time ({case}s) leaves out the pull ({pull}s)"
    );

    // Run again: the image is there now, so nothing is pulled and the properties say 0.
    let (again, report) =
        run_reported(&["--spec", &spec], &[("DOCKER_CONFIG", config.env_value())]);
    assert_eq!(again.code, 0, "{}", again.all());
    let doc = report.doc();
    assert_eq!(suite_property(&doc, &pushed.image, "pulled-bytes"), "0");
    assert_eq!(
        seconds(suite_property(&doc, &pushed.image, "pull-seconds")),
        0.0
    );
    assert!(
        !again.stderr.contains("zoo-runner: pulled "),
        "{}",
        again.all()
    );
}

#[test]
fn a_login_is_read_from_the_docker_config_and_a_bad_one_is_named() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let registry = auth_registry();
    let pushed = push_fixture(FIXTURE_IMAGE, &registry, "private");
    let dir = tempfile::tempdir().unwrap();
    let spec = write_zoo(
        dir.path(),
        &[("private", &pushed.image), ("local", FIXTURE_IMAGE)],
    );

    // No login: that image's case errors, naming registry and image; the local one runs.
    let none = DockerConfig::empty();
    let (run, report) = run_reported(&["--spec", &spec], &[("DOCKER_CONFIG", none.env_value())]);
    assert_eq!(run.code, 101, "{}", run.all());
    assert_status(&run, "docker::local", "ok");
    let doc = report.doc();
    let error = child_message(testcase(&doc, "private"), "error");
    assert!(
        error.contains(&registry.address)
            && error.contains(&pushed.image)
            && error.contains("wants a login"),
        "{error}"
    );
    assert!(!is_local(&pushed.image));

    // A wrong password: refused, said so.
    let wrong = DockerConfig::wrong(&registry);
    let (run, report) = run_reported(&["--spec", &spec], &[("DOCKER_CONFIG", wrong.env_value())]);
    assert_eq!(run.code, 101, "{}", run.all());
    let doc = report.doc();
    let error = child_message(testcase(&doc, "private"), "error");
    assert!(
        error.contains(&registry.address) && error.contains("refused the login"),
        "{error}"
    );

    // The right login (an `auths` entry, as `docker login` writes it): pulled, and it passes.
    let right = DockerConfig::right(&registry);
    let (run, _report) = run_reported(&["--spec", &spec], &[("DOCKER_CONFIG", right.env_value())]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_status(&run, "docker::private", "ok");
    assert!(is_local(&pushed.image));
}

#[test]
fn a_missing_image_or_a_dead_registry_errors_that_image_only() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let registry = open_registry();
    let missing = format!("{}/zoo-runner-test/never-pushed:nope", registry.address);
    // Nothing listens on port 9 (discard) on loopback.
    let dead = "127.0.0.1:9/zoo-runner-test/anything:1";
    let dir = tempfile::tempdir().unwrap();
    let spec = write_zoo(
        dir.path(),
        &[
            ("missing/a", &missing),
            ("missing/b", &missing),
            ("dead", dead),
            ("local", FIXTURE_IMAGE),
        ],
    );
    let config = DockerConfig::empty();
    let (run, report) = run_reported(&["--spec", &spec], &[("DOCKER_CONFIG", config.env_value())]);
    assert_eq!(run.code, 101, "{}", run.all());
    assert_status(&run, "docker::local", "ok");
    let doc = report.doc();
    for model in ["missing/a", "missing/b"] {
        let error = child_message(testcase(&doc, model), "error");
        assert!(
            error.contains(&missing) && error.contains("has no such repository or tag"),
            "{model}: {error}"
        );
    }
    let error = child_message(testcase(&doc, "dead"), "error");
    assert!(
        error.contains(dead) && error.contains("127.0.0.1:9") && error.contains("does not answer"),
        "{error}"
    );
}

#[test]
fn the_next_image_is_pulled_while_the_current_images_cases_run() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let registry = open_registry();
    // Cases run image by image, in the order of their names: `a`, then `b`, then `c`.
    let a = push_fixture(FIXTURE_IMAGE, &registry, "ahead-a");
    let b = push_fixture(FIXTURE_IMAGE, &registry, "ahead-b");
    let c = push_fixture(FIXTURE_IMAGE, &registry, "ahead-c");
    let dir = tempfile::tempdir().unwrap();
    let spec = write_zoo(
        dir.path(),
        &[
            ("slow/a", &a.image),
            ("slow/b", &b.image),
            ("quick/c", &c.image),
        ],
    );
    let config = DockerConfig::empty();
    let junit = dir.path().join("j.xml");
    // Runs with `--pull-ahead N`; returns the log and where in it each image's pull ended
    // and a's case ended.
    let run = |ahead: &str| {
        let args = [
            "--spec",
            &spec,
            "--pull-ahead",
            ahead,
            "--junit",
            junit.to_str().unwrap(),
        ];
        let (code, log) = run_combined(&args, &[("DOCKER_CONFIG", config.env_value())]);
        assert_eq!(code, 0, "{log}");
        let at = |text: &str| log.find(text).unwrap_or_else(|| panic!("{text}: {log}"));
        let pulled = |image: &str| at(&format!("zoo-runner: pulled {image}"));
        let (b, c, a_ended) = (
            pulled(&b.image),
            pulled(&c.image),
            at("test docker::slow/a "),
        );
        (log, b, c, a_ended)
    };

    let (log, pulled_b, pulled_c, a_ended) = run("1");
    // b's pull lines came while `test docker::slow/a ... ` waited for its end: never inside it.
    assert_test_lines_whole(&log.lines().collect::<Vec<_>>());
    assert!(
        pulled_b < a_ended,
        "with --pull-ahead 1 (the default), b is pulled while a's 3 s case runs:\n{log}"
    );
    assert!(
        pulled_c > a_ended,
        "never more than one image ahead: c waits until a's cases are done:\n{log}"
    );

    let _ = Command::new("docker")
        .args(["image", "rm", &a.image, &b.image, &c.image])
        .output();
    let (log, pulled_b, _, a_ended) = run("0");
    assert!(
        pulled_b > a_ended,
        "--pull-ahead 0 pulls b only when its case needs it:\n{log}"
    );
}

#[test]
fn prune_images_removes_what_the_run_pulled_and_keeps_what_was_there() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let registry = open_registry();
    // 4 MiB, so the daemon reports the layer's size (a tiny layer may come with none).
    let pulled = push_fixture_with(FIXTURE_IMAGE, &registry, "pruned", 4 << 20);
    let dir = tempfile::tempdir().unwrap();
    let spec = write_zoo(
        dir.path(),
        &[
            ("pulled/one", &pulled.image),
            ("pulled/two", &pulled.image),
            ("kept", FIXTURE_IMAGE),
        ],
    );
    let config = DockerConfig::empty();
    let (run, report) = run_reported(
        &["--spec", &spec, "--prune-images"],
        &[("DOCKER_CONFIG", config.env_value())],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    // Both cases of the pulled image ran on it before it went.
    assert_status(&run, "docker::pulled/one", "ok");
    assert_status(&run, "docker::pulled/two", "ok");
    assert!(
        run.stderr
            .contains(&format!("--prune-images: removed {}", pulled.image)),
        "{}",
        run.all()
    );
    assert!(
        !is_local(&pulled.image),
        "the pulled image is gone after the run"
    );
    assert!(
        is_local(FIXTURE_IMAGE),
        "an image there before the run is kept"
    );
    let doc = report.doc();
    assert_ne!(suite_property(&doc, &pulled.image, "pulled-bytes"), "0");
}

/// The repository of the image whose pull answer the proxy withholds (unique to that test).
const WITHHELD_REPOSITORY: &str = "prune-failfast-b";

/// Picks the pull of [`WITHHELD_REPOSITORY`] (its name is in the query).
fn the_ahead_pull(method: &str, target: &str) -> bool {
    method == "POST" && target.contains("/images/create") && target.contains(WITHHELD_REPOSITORY)
}

/// Polls `done` every 100 ms while the runner `child` runs, for at most two minutes; else
/// stops the runner and fails the test with `what` and the runner's output.
fn wait_for(child: &mut std::process::Child, what: &str, mut done: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !done() {
        let ended = child.try_wait().unwrap().is_some();
        if ended || std::time::Instant::now() > until {
            signal(child.id(), libc::SIGINT);
            let out = finish(std::mem::replace(
                child,
                Command::new("true").spawn().unwrap(),
            ));
            panic!("waited for {what} in vain:\n{}", out.all());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A spec in `dir` for the catalog in `dir/catalog` whose cases run `true`, but `a/fails`,
/// which fails once the test opens its gate: writes the file `open` in the returned folder
/// (mounted read-only at /gate).
fn gated_spec(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let gate = dir.join("gate");
    std::fs::create_dir(&gate).unwrap();
    let spec = dir.join("spec.toml");
    std::fs::write(
        &spec,
        format!(
            "catalog = \"catalog\"\ncommand = \"true\"\nnetwork = \"none\"\ntimeout = \"2m\"\n\
             volumes = [\"{}:/gate:ro\"]\n\
             [models.\"a/fails\"]\n\
             command = \"sh -c 'while [ ! -e /gate/open ]; do sleep 0.1; done; exit 1'\"\n",
            gate.display()
        ),
    )
    .unwrap();
    (spec, gate)
}

#[test]
fn prune_images_with_fail_fast_leaves_the_disk_as_it_was() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let registry = open_registry();
    // Cases run image by image, in the order of the images' names: `failing`'s two cases
    // first, then `ahead`'s one, whose image is pulled while `failing`'s first case runs.
    let failing = push_fixture(FIXTURE_IMAGE, &registry, "prune-failfast-a");
    let ahead = push_fixture(FIXTURE_IMAGE, &registry, WITHHELD_REPOSITORY);
    let dir = tempfile::tempdir().unwrap();
    write_catalog(
        &dir.path().join("catalog"),
        &[
            ("a/fails", &failing.image),
            ("a/next", &failing.image),
            ("b/never", &ahead.image),
        ],
        None,
    );
    // `a/fails` fails once the test opens its gate (a file in a mounted folder).
    let (spec, gate) = gated_spec(dir.path());
    // The daemon pulls `ahead` to its end, but the runner never hears back: the pull is still
    // going for the runner when --fail-fast ends the run.
    let proxy = daemon_proxy::SwallowingProxy::withholding_answers(dir.path(), the_ahead_pull);
    let config = DockerConfig::empty();
    let host = proxy.host();
    let (mut child, report) = spawn_reported(
        &[
            "--spec",
            spec.to_str().unwrap(),
            "--test-threads",
            "1",
            "--fail-fast",
            "--prune-images",
        ],
        &[
            ("DOCKER_CONFIG", config.env_value()),
            ("DOCKER_HOST", &host),
        ],
    );
    let pid = child.id();
    // `a/next`'s container is made while `a/fails` runs, and the daemon has `ahead`.
    wait_for(&mut child, "the container made ahead for a/next", || {
        !containers_of(pid, Some("docker::a/next")).is_empty()
    });
    wait_for(
        &mut child,
        "the daemon to finish the pull of `ahead`",
        || is_local(&ahead.image),
    );
    std::fs::write(gate.join("open"), "").unwrap();
    let run = finish(child);
    assert_eq!(run.code, 101, "{}", run.all());
    assert_status(&run, "docker::a/fails", "FAILED");
    assert_eq!(proxy.swallowed().len(), 1, "{:?}", proxy.swallowed());
    assert!(!run.stderr.contains("could not remove"), "{}", run.all());
    assert!(
        run.stderr
            .contains(&format!("--prune-images: removed {}", failing.image)),
        "{}",
        run.all()
    );
    assert!(!is_local(&failing.image), "{}", run.all());
    assert!(
        !is_local(&ahead.image),
        "the image of the stopped pull is gone: {}",
        run.all()
    );
    assert!(containers_of(pid, None).is_empty());
    let images = Command::new("docker")
        .args(["images", "-a", "--digests", "--format", "{{.Repository}}"])
        .output()
        .unwrap();
    let images = String::from_utf8_lossy(&images.stdout);
    assert!(
        !images.contains("prune-failfast"),
        "nothing of either image is left, tagged or not:\n{images}"
    );
    assert!(
        is_local(FIXTURE_IMAGE),
        "an image there before the run is kept"
    );
    report.text();
}

#[test]
fn a_throttled_pull_is_tried_again_after_a_pause_and_its_case_runs() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let registry = open_registry();
    let pushed = push_fixture(FIXTURE_IMAGE, &registry, "throttled");
    // The registry's first manifest answer is a rate limit (HTTP 429, TOOMANYREQUESTS).
    let proxy = ThrottlingProxy::start(&registry.address, 1);
    let image = pushed.image.replacen(&registry.address, &proxy.address, 1);
    let dir = tempfile::tempdir().unwrap();
    let spec = write_zoo(dir.path(), &[("throttled", &image)]);
    let config = DockerConfig::empty();
    let (run, report) = run_reported(
        &["--spec", &spec, "--prune-images"],
        &[("DOCKER_CONFIG", config.env_value())],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(proxy.throttled(), 1, "{}", run.all());
    // The pull's line says why it failed, the next one that it is tried again.
    let lines: Vec<&str> = run.stderr.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains(&format!("pull of {image}: trying again in ")))
        .unwrap_or_else(|| panic!("no retry said: {}", run.all()));
    assert!(lines[at].ends_with("(1 of 3)"), "{}", lines[at]);
    assert!(
        at > 0 && lines[at - 1].contains(&format!("pull of {image} failed: toomanyrequests: ")),
        "{}",
        run.all()
    );
    let doc = report.doc();
    let bytes = suite_property(&doc, &image, "pulled-bytes");
    assert!(
        bytes.parse::<u64>().is_ok_and(|b| b > 0),
        "the second try pulled the image: {}",
        report.text()
    );
    // The pull's time holds the pause (`trying again in 3.4s`): it is not case time either.
    let pause: f64 = lines[at]
        .split("trying again in ")
        .nth(1)
        .and_then(|rest| rest.split("s (").next())
        .and_then(|secs| secs.parse().ok())
        .unwrap_or_else(|| panic!("a pause in seconds: {}", lines[at]));
    let pull: f64 = suite_property(&doc, &image, "pull-seconds")
        .parse()
        .unwrap();
    assert!(
        pull >= pause - 0.05,
        "pull-seconds {pull} < the pause {pause}"
    );
    assert!(!is_local(&image), "--prune-images removed it");
}

/// A folder holding a stand-in `docker-credential-hang` (a stand-in for a third-party
/// credential helper that never answers: it ignores SIGTERM, starts a `sleep` that does too,
/// saves that sleep's pid beside itself as `sleep-pid`, and waits).
fn hanging_helper() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("helper.src");
    std::fs::write(
        &source,
        "#!/bin/sh\n# stand-in for a docker credential helper that never answers\n\
         trap '' TERM\nsleep 600 &\necho $! > \"$(dirname \"$0\")/sleep-pid\"\nwait\n",
    )
    .unwrap();
    // Installed by another process: no descriptor of this test process has it open for
    // writing when it runs ("text file busy").
    let installed = Command::new("install")
        .arg("-m755")
        .arg(&source)
        .arg(dir.path().join("docker-credential-hang"))
        .status()
        .unwrap();
    assert!(installed.success());
    dir
}

/// True while the process whose pid is in `file` runs (a zombie does not).
fn still_running(file: &Path) -> bool {
    standin::pid_in(file).is_some_and(standin::still_running)
}

#[test]
fn a_credential_helper_that_never_answers_has_a_deadline_and_ends_with_the_run() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let registry = open_registry();
    let pushed = push_fixture(FIXTURE_IMAGE, &registry, "helper-hangs");
    let dir = tempfile::tempdir().unwrap();
    let spec = write_zoo(dir.path(), &[("hangs", &pushed.image)]);
    let helper = hanging_helper();
    let config = DockerConfig::with_json(r#"{"credsStore": "hang"}"#);
    let path = format!("{}:/usr/bin:/bin", helper.path().display());
    let sleep_pid = helper.path().join("sleep-pid");
    let env = [
        ("DOCKER_CONFIG", config.env_value()),
        ("PATH", path.as_str()),
    ];

    // Past its deadline (shortened by the testing knob) the helper is stopped, and the case
    // errors naming it.
    let mut shortened = env.to_vec();
    shortened.push(("ZOO_RUNNER_HELPER_TIMEOUT", "1s"));
    let (run, report) = run_reported(&["--spec", &spec], &shortened);
    assert_eq!(run.code, 101, "{}", run.all());
    let doc = report.doc();
    let error = child_message(testcase(&doc, "hangs"), "error");
    assert!(
        error.contains("`docker-credential-hang`")
            && error.contains(&registry.address)
            && error.contains("did not answer within 1s"),
        "{error}"
    );
    assert!(!still_running(&sleep_pid), "the helper's sleep is gone");
    std::fs::remove_file(&sleep_pid).unwrap();

    // Ctrl-C while the helper hangs (no deadline near): the run ends with 130, and so does
    // the helper with what it started.
    let (mut child, _report) = spawn_reported(&["--spec", &spec], &env);
    wait_for(&mut child, "the helper to start", || sleep_pid.exists());
    signal(child.id(), libc::SIGINT);
    let run = finish(child);
    assert_eq!(run.code, 130, "{}", run.all());
    assert!(!still_running(&sleep_pid), "the helper's sleep is gone");
}

#[test]
fn a_credential_helper_of_a_pull_ahead_that_fail_fast_gave_up_on_ends_with_the_run() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let registry = open_registry();
    let pushed = push_fixture(FIXTURE_IMAGE, &registry, "helper-ahead");
    // Cases run image by image in the order of the images' names: the local image (no pull, no
    // helper) sorts before the registry's `127.0.0.1:…`, so its failing case runs while the
    // pushed image is pulled ahead, its helper hanging.
    let local = format!("0zoo-runner-test/helper-ahead:{}", std::process::id());
    let tagged = Command::new("docker")
        .args(["tag", FIXTURE_IMAGE, &local])
        .status()
        .unwrap();
    assert!(tagged.success());
    let _local = crate::helpers::keras::RemoveOnDrop(local.clone());
    let dir = tempfile::tempdir().unwrap();
    write_catalog(
        &dir.path().join("catalog"),
        &[("a/fails", &local), ("b/never", &pushed.image)],
        None,
    );
    // `a/fails` fails once the test opens its gate: when the helper hangs.
    let (spec, gate) = gated_spec(dir.path());
    let helper = hanging_helper();
    let config = DockerConfig::with_json(r#"{"credsStore": "hang"}"#);
    let path = format!("{}:/usr/bin:/bin", helper.path().display());
    let sleep_pid = helper.path().join("sleep-pid");
    // A deadline far beyond the test's patience: only being stopped ends the helper in time.
    let env = [
        ("DOCKER_CONFIG", config.env_value()),
        ("PATH", path.as_str()),
        ("ZOO_RUNNER_HELPER_TIMEOUT", "30m"),
    ];
    let (mut process, report) = spawn_reported(
        &[
            "--spec",
            spec.to_str().unwrap(),
            "--fail-fast",
            "--pull-ahead",
            "1",
        ],
        &env,
    );
    wait_for(&mut process, "the helper to start", || sleep_pid.exists());
    std::fs::write(gate.join("open"), b"").unwrap();
    let run = finish_within(
        process,
        std::time::Duration::from_secs(120),
        "the run waited on the helper of a pull nobody needed",
    );
    assert_eq!(run.code, 101, "{}", run.all());
    let doc = report.doc();
    assert_eq!(
        child(testcase(&doc, "b/never"), "skipped").and_then(|n| n.attribute("message")),
        Some("--fail-fast: an earlier case failed"),
        "{}",
        report.text()
    );
    assert!(!still_running(&sleep_pid), "the helper's sleep is gone");
}

/// Removes ANSI escape sequences (colours, cursor moves, line clears) from a terminal
/// transcript.
fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'[') {
            chars.next();
            // Parameters and intermediates, then one final byte in @..~.
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            chars.next();
        }
    }
    out
}

/// Every `test X ... outcome` line of a log is whole: nothing the reporter said landed inside.
fn assert_test_lines_whole(segments: &[&str]) {
    for line in segments.iter().filter(|l| l.starts_with("test docker::")) {
        let outcome = line.rsplit(" ... ").next().unwrap_or_default();
        assert!(
            line.contains(" ... ") && !line.contains("zoo-runner:"),
            "a torn test line: {line:?}"
        );
        assert!(!outcome.is_empty(), "{line:?}");
    }
}

#[test]
fn on_a_terminal_the_running_case_and_pulls_are_drawn_without_tearing_test_lines() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let registry = open_registry();
    let pushed = push_fixture(FIXTURE_IMAGE, &registry, "terminal");
    let dir = tempfile::tempdir().unwrap();
    let spec = write_zoo(
        dir.path(),
        &[("slow/a", FIXTURE_IMAGE), ("quick/b", &pushed.image)],
    );
    let config = DockerConfig::empty();
    let junit = dir.path().join("j.xml");
    let command = format!(
        "{} --spec {spec} --junit {}",
        bin().display(),
        junit.display()
    );
    // `script` gives the runner a pseudo-terminal for stdout and stderr, as a person has.
    let out = Command::new("script")
        .args(["-qefc", &command, "/dev/null"])
        .current_dir(root())
        .env("TERM", "xterm-256color")
        .env("DOCKER_CONFIG", config.env_value())
        .stdin(Stdio::null())
        .output()
        .expect("script (util-linux) runs");
    let transcript = strip_ansi(&String::from_utf8_lossy(&out.stdout));
    assert!(out.status.success(), "{transcript}");
    let segments: Vec<&str> = transcript
        .split(['\n', '\r'])
        .map(str::trim_end)
        .filter(|s| !s.is_empty())
        .collect();
    assert!(
        segments.contains(&"test docker::slow/a  ... ok"),
        "the finished line is whole: {segments:#?}"
    );
    assert!(
        segments
            .iter()
            .any(|s| s.starts_with("test docker::slow/a  ...")
                && s.ends_with('s')
                && !s.ends_with("... ok")),
        "while it runs, the case shows as a live line with its time: {segments:#?}"
    );
    assert_test_lines_whole(&segments);
    assert!(
        transcript.contains(&format!("pulled {}", pushed.image)),
        "{transcript}"
    );
}
