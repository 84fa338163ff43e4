//! End to end, faults: cases that hang, flood, run out of memory, die by a signal or are flaky;
//! a runner interrupted (SIGINT, SIGTERM, twice), killed outright (SIGKILL), or cut off from its
//! daemon. Real containers from the fixture image (fixtures/faults/spec.toml); every check of
//! what is left behind goes through the daemon.

use std::os::unix::net::{UnixListener, UnixStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::helpers::*;

const FAULTS: &str = "fixtures/faults/spec.toml";

/// Waits until the case's container is running (a container can exist earlier: the runner
/// creates the next case's container while the case before it runs).
fn wait_for_container(pid: u32, case: &str) -> String {
    let start = Instant::now();
    loop {
        let out = Command::new("docker")
            .args([
                "ps",
                "-q",
                "--filter",
                &format!("label=org.zoo-runner.pid={pid}"),
                "--filter",
                &format!("label=org.zoo-runner.case={case}"),
                "--filter",
                "status=running",
            ])
            .output()
            .unwrap();
        if let Some(id) = String::from_utf8_lossy(&out.stdout).lines().next() {
            return id.to_string();
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no container for {case} appeared"
        );
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_hanging_case_times_out_is_stopped_and_keeps_its_output() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let (run, report) = run_reported(
        &[
            "--spec",
            FAULTS,
            "--exact",
            "docker::hang",
            "--timeout",
            "4s",
            "--grace",
            "1s",
            "--slow-after",
            "1s",
        ],
        &[],
    );
    assert_eq!(run.code, 101, "{}", run.all());
    assert!(
        run.stderr
            .contains("docker::hang has been running for over"),
        "{}",
        run.all()
    );
    assert!(
        run.stderr.contains("docker::hang timed out after 4s"),
        "{}",
        run.all()
    );
    let doc = report.doc();
    let case = testcase(&doc, "hang");
    let error = child(case, "error").expect("hang has an error element");
    assert_eq!(error.attribute("type"), Some("timeout"));
    let message = child_message(case, "error");
    assert!(message.contains("timeout of 4s"), "{message}");
    assert!(
        message.contains("SIGTERM did not stop it, so SIGKILL ended it"),
        "hang ignores SIGTERM: {message}"
    );
    assert!(child_text(case, "system-out").contains("hang: started"));
    assert!(child_text(case, "system-err").contains("stderr before the wait"));
    let time: f64 = case.attribute("time").unwrap().parse().unwrap();
    assert!(time >= 4.0, "ran until its timeout: {time}");
}

#[test]
fn out_of_memory_and_signals_are_errors_that_say_so() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let (run, report) = run_reported(&["--spec", FAULTS, "--model", "oom,signal_exit"], &[]);
    assert_eq!(run.code, 101, "{}", run.all());
    let doc = report.doc();
    let oom = child_message(testcase(&doc, "oom"), "error");
    assert!(
        oom.contains("out of memory") && oom.contains("kernel") && oom.contains("128.0 MiB"),
        "{oom}"
    );
    let sig = child_message(testcase(&doc, "signal_exit"), "error");
    assert!(sig.contains("SIGSEGV"), "{sig}");
    assert!(
        child(testcase(&doc, "oom"), "failure").is_none(),
        "an error, not a failure"
    );
}

#[test]
fn retries_report_a_flaky_case_with_every_attempt() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let (run, _) = run_reported(&["--spec", FAULTS, "--exact", "docker::flaky"], &[]);
    assert_eq!(
        run.code,
        101,
        "without retries the first attempt decides\n{}",
        run.all()
    );

    let (run, report) = run_reported(
        &[
            "--spec",
            FAULTS,
            "--exact",
            "docker::flaky",
            "--retries",
            "2",
            "--store-success-output",
        ],
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stderr.contains("docker::flaky is flaky"),
        "{}",
        run.all()
    );
    let doc = report.doc();
    let case = testcase(&doc, "flaky");
    let flaky = child(case, "flakyFailure").expect("the failed attempt is kept");
    let first = child_text(flaky, "system-out");
    assert!(first.contains("attempt 1 fails"), "{first}");
    let last = child_text(case, "system-out");
    assert!(last.contains("attempt 2 passes"), "{last}");
    assert_eq!(case_fact(case, "attempts"), Some("2"));
    assert!(child(case, "failure").is_none());
}

#[test]
fn fail_fast_reports_the_rest_as_not_run() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let (run, report) = run_reported(
        &[
            "--spec",
            "fixtures/spec.toml",
            "--image",
            FIXTURE_IMAGE,
            "--fail-fast",
        ],
        &[],
    );
    assert_eq!(run.code, 101, "{}", run.all());
    assert_status(&run, "docker::tiny_fail_expect", "FAILED");
    assert_status(
        &run,
        "docker::tiny_fail_raise",
        "ignored (not run: --fail-fast: an earlier case failed)",
    );
    let doc = report.doc();
    let skipped = child(testcase(&doc, "tiny_fail_raise"), "skipped").unwrap();
    assert_eq!(skipped.attribute("type"), Some("not-run"));
}

/// Peak resident memory (VmHWM, kB) of a running process.
fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn a_two_gigabyte_log_flood_keeps_memory_bounded() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let (process, report) = spawn_reported(
        &[
            "--spec",
            FAULTS,
            "--exact",
            "docker::flood",
            "--keep-output",
            "64k",
        ],
        &[],
    );
    let pid = process.id();
    let peak = Arc::new(Mutex::new(0u64));
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (peak, done) = (Arc::clone(&peak), Arc::clone(&done));
        thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                if let Some(kb) = peak_rss_kb(pid) {
                    let mut p = peak.lock().unwrap();
                    *p = (*p).max(kb);
                }
                thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let run = finish(process);
    done.store(true, Ordering::SeqCst);
    watcher.join().unwrap();
    let peak_mib = *peak.lock().unwrap() / 1024;
    assert_eq!(run.code, 101, "{}", run.all());
    assert!(peak_mib > 0, "the peak was read");
    assert!(
        peak_mib < 256,
        "peak RSS {peak_mib} MiB under a 2 GiB flood"
    );
    let text = report.text();
    assert!(
        text.len() < 1 << 20,
        "the report stays small: {} bytes",
        text.len()
    );
    let doc = report.doc();
    let out = child_text(testcase(&doc, "flood"), "system-out");
    assert!(out.starts_with("flood: head marker"), "the head is kept");
    assert!(
        out.trim_end().ends_with("flood: tail marker"),
        "the tail is kept"
    );
    assert!(out.contains("bytes of output cut here"), "the cut is said");
}

/// An interrupted run: its exit, report, summary, pid and how long it took after the first
/// signal.
struct Interrupted {
    run: Run,
    report: String,
    summary: String,
    pid: u32,
    took: Duration,
}

/// Runs tiny_linear, then hang, then signal_exit; interrupts while hang runs.
fn interrupted_run(signals: &[i32], grace: &str) -> Interrupted {
    require_fixture_image();
    let summary_dir = tempfile::tempdir().unwrap();
    let summary = summary_dir.path().join("summary.md");
    let (process, report) = spawn_reported(
        &[
            "--spec",
            FAULTS,
            "--model",
            "tiny_linear,hang,signal_exit",
            "--grace",
            grace,
            "--summary",
            summary.to_str().unwrap(),
        ],
        &[],
    );
    let pid = process.id();
    wait_for_container(pid, "docker::hang");
    thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    for (i, sig) in signals.iter().enumerate() {
        if i > 0 {
            thread::sleep(Duration::from_millis(700));
        }
        signal(pid, *sig);
    }
    let run = finish(process);
    let took = started.elapsed();
    Interrupted {
        report: report.text().to_string(),
        summary: std::fs::read_to_string(&summary).unwrap_or_else(|e| panic!("{e}: {}", run.all())),
        run,
        pid,
        took,
    }
}

/// The report has the cases that did not run as `not-run`; the summary says the run was
/// interrupted (by `signal`), that 2 of 3 cases did not run, and ranks only the case that ran
/// among the slowest.
///
/// The summary is the snapshot `snapshot`: `## zoo-runner (interrupted by SIGNAL): 1 passed, 0
/// failed, 0 errored, 2 skipped`, `**The run was interrupted (SIGNAL): 2 of 3 cases did not
/// run.**`, and only `docker::tiny_linear` among the slowest cases.
fn assert_interrupted_report(run: &Interrupted, signal: &str, snapshot: &str) {
    let summary = &run.summary;
    assert!(
        summary.contains(&format!("(interrupted by {signal})")),
        "{summary}"
    );
    normalise::run_output().bind(|| insta::assert_snapshot!(snapshot, summary));
    let doc = roxmltree::Document::parse(&run.report).unwrap();
    let ok = testcase(&doc, "tiny_linear");
    assert!(
        child(ok, "failure").is_none()
            && child(ok, "error").is_none()
            && child(ok, "skipped").is_none()
    );
    for model in ["hang", "signal_exit"] {
        let case = testcase(&doc, model);
        let skipped = child(case, "skipped").unwrap_or_else(|| panic!("{model} not run"));
        assert_eq!(skipped.attribute("type"), Some("not-run"), "{model}");
        assert!(
            child_message(case, "skipped").contains("interrupted"),
            "{model}"
        );
    }
}

#[test]
fn sigint_stops_the_running_container_and_still_writes_the_report() {
    let _daemon = daemon::shared();
    let interrupted = interrupted_run(&[libc::SIGINT], "2s");
    let (run, pid) = (&interrupted.run, interrupted.pid);
    assert_eq!(run.code, 130, "{}", run.all());
    assert!(
        !run.stdout.contains("test result: ok"),
        "an interrupted run does not say ok\n{}",
        run.all()
    );
    assert!(
        run.stderr
            .contains("interrupted; stopping running containers"),
        "{}",
        run.all()
    );
    assert_interrupted_report(&interrupted, "SIGINT", "interrupted_summary_sigint");
    assert!(
        containers_of(pid, None).is_empty(),
        "no container of the run is left"
    );
}

/// One signal while `hang` runs: the run exits with `code`, writes its report and leaves no
/// container.
fn assert_one_signal_ends_cleanly(signal: i32, code: i32, name: &str) {
    let interrupted = interrupted_run(&[signal], "2s");
    assert_eq!(interrupted.run.code, code, "{}", interrupted.run.all());
    let snapshot = format!("interrupted_summary_{}", name.to_lowercase());
    assert_interrupted_report(&interrupted, name, &snapshot);
    assert!(
        containers_of(interrupted.pid, None).is_empty(),
        "no container of the run is left"
    );
}

#[test]
fn sigterm_exits_143_and_leaves_nothing() {
    let _daemon = daemon::shared();
    assert_one_signal_ends_cleanly(libc::SIGTERM, 143, "SIGTERM");
}

#[test]
fn a_second_interrupt_kills_at_once_and_still_removes() {
    let _daemon = daemon::shared();
    // With a 300 s grace period only the second signal can end the run quickly.
    let interrupted = interrupted_run(&[libc::SIGINT, libc::SIGINT], "300s");
    let (run, pid, took) = (&interrupted.run, interrupted.pid, interrupted.took);
    assert_eq!(run.code, 130, "{}", run.all());
    assert!(
        run.stderr.contains("killing running containers now"),
        "{}",
        run.all()
    );
    assert!(
        took < Duration::from_secs(120),
        "the grace period was cut short: {took:?}"
    );
    assert_interrupted_report(&interrupted, "SIGINT", "interrupted_summary_second_sigint");
    assert!(
        containers_of(pid, None).is_empty(),
        "no container of the run is left"
    );
}

#[test]
fn a_killed_run_is_cleaned_up_by_the_next_one_and_nothing_else_is_touched() {
    // A runner that starts sweeps what killed runs left: no other may start meanwhile.
    let _daemon = daemon::alone();
    require_fixture_image();
    // The killed run writes no report, but leaves its work folder (spooled output) beside it.
    let (process, killed) = spawn_reported(&["--spec", FAULTS, "--exact", "docker::hang"], &[]);
    let pid = process.id();
    let left = wait_for_container(pid, "docker::hang");
    signal(pid, libc::SIGKILL);
    let _ = finish(process);
    assert_eq!(
        containers_of(pid, None),
        std::slice::from_ref(&left),
        "SIGKILL leaves the labelled container"
    );
    let report_dir = std::path::Path::new(killed.path()).parent().unwrap();
    let leftovers = files_in(report_dir);
    assert!(
        leftovers.len() == 1 && leftovers[0].starts_with(".junit.xml.spool-"),
        "SIGKILL leaves the work folder: {leftovers:?}"
    );
    // A live runner's work folder beside it (this test process's) must stay.
    let alive_dir = report_dir.join(".junit.xml.spool-alive");
    std::fs::create_dir(&alive_dir).unwrap();
    std::fs::copy(
        report_dir.join(&leftovers[0]).join("zoo-runner-owner"),
        alive_dir.join("zoo-runner-owner"),
    )
    .unwrap();
    let owner = std::fs::read_to_string(alive_dir.join("zoo-runner-owner")).unwrap();
    let me = std::process::id().to_string();
    let my_start = std::fs::read_to_string(format!("/proc/{me}/stat")).unwrap();
    let my_start = my_start[my_start.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .nth(19)
        .unwrap()
        .to_string();
    let owner: String = owner
        .lines()
        .map(|l| match l.split_once('=') {
            Some(("pid", _)) => format!("pid={me}\n"),
            Some(("pid-start", _)) => format!("pid-start={my_start}\n"),
            _ => format!("{l}\n"),
        })
        .collect();
    std::fs::write(alive_dir.join("zoo-runner-owner"), owner).unwrap();

    // Two containers the sweep must not touch: one without the runner's labels, and one
    // labelled by a run that is still alive (this test process).
    let tag = format!("zr-test-{}", std::process::id());
    let create = |labels: &[String]| -> String {
        let mut args = vec![
            "create".to_string(),
            "--network".into(),
            "none".into(),
            "--label".into(),
            format!("zr-test={tag}"),
        ];
        for l in labels {
            args.extend(["--label".into(), l.clone()]);
        }
        args.extend([FIXTURE_IMAGE.to_string(), "true".into()]);
        let out = Command::new("docker").args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let foreign = create(&[]);
    let (boot, ns) = identity_labels();
    let alive = create(&[
        "org.zoo-runner.runner=zoo-runner".into(),
        "org.zoo-runner.run=alive-run".into(),
        format!("org.zoo-runner.pid={me}"),
        format!("org.zoo-runner.pid-start={my_start}"),
        format!("org.zoo-runner.boot-id={boot}"),
        format!("org.zoo-runner.pid-ns={ns}"),
    ]);

    // The next run writes its report where the killed one would have.
    let run = runner(&[
        "--spec",
        FAULTS,
        "--exact",
        "docker::tiny_linear",
        "--junit",
        killed.path(),
    ]);
    let remaining = containers_with_label(&format!("zr-test={tag}"));
    let _ = Command::new("docker")
        .args(["rm", "-f", &foreign, &alive])
        .output();
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stderr.contains("left by earlier runs"), "{}", run.all());
    assert!(
        containers_of(pid, None).is_empty(),
        "the dead run's container is removed"
    );
    assert_eq!(
        remaining.len(),
        2,
        "foreign and live containers are untouched: {remaining:?}"
    );
    assert_eq!(
        files_in(report_dir),
        [".junit.xml.spool-alive", "junit.xml"],
        "the killed run's work folder is removed, the live one's kept"
    );
    assert!(
        run.stderr.contains("work folder(s) that killed runs left"),
        "{}",
        run.all()
    );
}

/// A unix-socket proxy in front of the real daemon that the test can cut, so the runner loses
/// its daemon mid-run while the daemon itself stays up for everyone else.
struct DaemonProxy {
    path: std::path::PathBuf,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<UnixStream>>>,
}

impl DaemonProxy {
    fn start(dir: &std::path::Path) -> DaemonProxy {
        Self::start_cutting_at_start(dir, usize::MAX)
    }

    /// A proxy that also cuts by itself when the runner starts its `n`th container: the
    /// daemon is then lost between two cases (the one before has ended), not during a wait.
    fn start_cutting_at_start(dir: &std::path::Path, n: usize) -> DaemonProxy {
        let path = dir.join("proxy.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let proxy = DaemonProxy {
            path,
            cut: Arc::default(),
            open: Arc::default(),
        };
        let me = proxy.handle();
        let starts = Arc::new(AtomicUsize::new(0));
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if me.cut.load(Ordering::SeqCst) {
                    continue; // dropped: the daemon is "gone"
                }
                let Ok(daemon) = UnixStream::connect("/var/run/docker.sock") else {
                    continue;
                };
                {
                    let mut open = me.open.lock().unwrap();
                    open.push(client.try_clone().unwrap());
                    open.push(daemon.try_clone().unwrap());
                }
                let (me2, starts2) = (me.handle(), Arc::clone(&starts));
                let watch = move |chunk: &[u8]| {
                    // `POST /v1.xx/containers/ID/start HTTP/1.1`
                    let line = chunk.split(|&b| b == b'\n').next().unwrap_or_default();
                    let start =
                        line.starts_with(b"POST ") && line.windows(7).any(|w| w == b"/start ");
                    if start && starts2.fetch_add(1, Ordering::SeqCst) + 1 >= n {
                        me2.cut();
                        return false;
                    }
                    true
                };
                pipe(
                    client.try_clone().unwrap(),
                    daemon.try_clone().unwrap(),
                    watch,
                );
                pipe(daemon, client, |_| true);
            }
        });
        proxy
    }

    fn handle(&self) -> DaemonProxy {
        DaemonProxy {
            path: self.path.clone(),
            cut: Arc::clone(&self.cut),
            open: Arc::clone(&self.open),
        }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Copies `from` to `to` while `pass` says a chunk may go through.
fn pipe(
    mut from: UnixStream,
    mut to: UnixStream,
    mut pass: impl FnMut(&[u8]) -> bool + Send + 'static,
) {
    thread::spawn(move || {
        use std::io::{Read, Write};
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(k @ 1..) = from.read(&mut buf) {
            if !pass(&buf[..k]) || to.write_all(&buf[..k]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}

#[test]
fn losing_the_daemon_mid_run_is_an_error_with_its_own_exit_code() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let dir = tempfile::tempdir().unwrap();
    let proxy = DaemonProxy::start(dir.path());
    let host = format!("unix://{}", proxy.path.display());
    let (process, report) = spawn_reported(
        &["--spec", FAULTS, "--model", "hang,tiny_linear"],
        &[("DOCKER_HOST", &host)],
    );
    let pid = process.id();
    wait_for_container(pid, "docker::hang");
    thread::sleep(Duration::from_millis(500));
    proxy.cut();
    let run = finish(process);
    // The daemon was fine all along: clean up what the cut-off runner could not remove (the
    // running case's container, and the next case's, created ahead).
    for left in containers_of(pid, None) {
        let _ = Command::new("docker").args(["rm", "-f", &left]).output();
    }
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(
        run.stderr.contains("was lost during the run"),
        "{}",
        run.all()
    );
    let doc = report.doc();
    let message = child_message(testcase(&doc, "hang"), "error");
    assert!(message.contains("lost the Docker daemon"), "{message}");
    assert!(
        child(testcase(&doc, "tiny_linear"), "error").is_some(),
        "the next case errors too"
    );
}

#[test]
fn losing_the_daemon_between_cases_is_exit_3_not_a_failure_per_case() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let dir = tempfile::tempdir().unwrap();
    let proxy = DaemonProxy::start_cutting_at_start(dir.path(), 2);
    let host = format!("unix://{}", proxy.path.display());
    let (run, report) = run_reported(
        &[
            "--spec",
            FAULTS,
            "--model",
            "tiny_linear,signal_exit,oom",
            "--test-threads",
            "1",
        ],
        &[("DOCKER_HOST", &host)],
    );
    assert!(
        proxy.cut.load(Ordering::SeqCst),
        "the proxy cut at the second start"
    );
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(
        run.stderr.contains("was lost during the run"),
        "{}",
        run.all()
    );
    let doc = report.doc();
    let cases = elements(&doc, "testcase");
    assert_eq!(cases.len(), 3);
    let passed = cases
        .iter()
        .filter(|c| c.children().all(|n| !n.has_tag_name("error")))
        .count();
    assert_eq!(passed, 1, "the first case ran before the cut");
    for case in cases.iter().filter(|c| child(**c, "error").is_some()) {
        let message = child_message(*case, "error");
        assert!(
            message.contains("lost the Docker daemon") || message.contains("was lost earlier"),
            "{message}"
        );
    }
    // The daemon was fine all along: remove the next case's container, created ahead, that
    // the cut-off runner could not remove.
    for left in containers_with_label(&format!("org.zoo-runner.run={}", property(&doc, "run-id"))) {
        let _ = Command::new("docker").args(["rm", "-f", &left]).output();
    }
}

#[test]
fn sighup_is_treated_like_sigterm() {
    let _daemon = daemon::shared();
    assert_one_signal_ends_cleanly(libc::SIGHUP, 129, "SIGHUP");
}

/// The labels a runner in this process's boot and PID namespace would put on a container.
fn identity_labels() -> (String, String) {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap()
        .trim()
        .to_string();
    let ns = std::fs::read_link("/proc/self/ns/pid")
        .unwrap()
        .to_string_lossy()
        .into_owned();
    (boot, ns)
}

#[test]
fn a_runner_in_another_pid_namespace_leaves_a_live_run_alone() {
    let _daemon = daemon::shared();
    require_fixture_image();
    assert!(
        Command::new("unshare").arg("--version").output().is_ok(),
        "unshare (util-linux) is needed"
    );
    // Run A, outside: a case that runs until stopped.
    let (a, a_report) = spawn_reported(
        &["--spec", FAULTS, "--exact", "docker::hang", "--grace", "1s"],
        &[],
    );
    let a_pid = a.id();
    let a_container = wait_for_container(a_pid, "docker::hang");
    // Run B, in a new PID namespace, where A's pid does not exist.
    let b = Command::new("unshare")
        .args(["-p", "-f", "--mount-proc"])
        .arg(bin())
        .args([
            "--spec",
            FAULTS,
            "--exact",
            "docker::tiny_linear",
            "--junit",
        ])
        .arg(dir_of(&a_report).join("b.xml"))
        .current_dir(root())
        .output()
        .expect("unshare runs the runner");
    let b: Run = b.into();
    let still_there = containers_of(a_pid, Some("docker::hang"));
    signal(a_pid, libc::SIGINT);
    let a = finish(a);
    assert_eq!(b.code, 0, "{}", b.all());
    assert!(!b.stderr.contains("left by earlier runs"), "{}", b.all());
    assert_eq!(still_there, [a_container], "run B removed nothing of run A");
    assert_eq!(a.code, 130, "{}", a.all());
    let doc = a_report.doc();
    assert_eq!(
        child(testcase(&doc, "hang"), "skipped").and_then(|s| s.attribute("type")),
        Some("not-run"),
        "run A's case was stopped by A's own interruption, not killed by B"
    );
}

fn dir_of(report: &Report) -> std::path::PathBuf {
    std::path::Path::new(report.path())
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn a_dead_run_in_another_namespace_or_boot_is_not_judged() {
    // A runner that starts sweeps what killed runs left: no other may start meanwhile.
    let _daemon = daemon::alone();
    require_fixture_image();
    let (boot, ns) = identity_labels();
    let tag = format!("zr-ns-test-{}", std::process::id());
    // Pids beyond the kernel's pid_max: dead wherever they are looked up.
    let create = |boot: &str, ns: &str| -> String {
        let out = Command::new("docker")
            .args(["create", "--network", "none", "--label"])
            .arg(format!("zr-test={tag}"))
            .args(["--label", "org.zoo-runner.runner=zoo-runner"])
            .args(["--label", "org.zoo-runner.run=dead-run"])
            .args(["--label", "org.zoo-runner.pid=4194305"])
            .arg("--label")
            .arg(format!("org.zoo-runner.boot-id={boot}"))
            .arg("--label")
            .arg(format!("org.zoo-runner.pid-ns={ns}"))
            .args([FIXTURE_IMAGE, "true"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let other_ns = create(&boot, "pid:[1]");
    let other_boot = create("00000000-0000-0000-0000-000000000000", &ns);
    let ours = create(&boot, &ns);
    let (run, _) = run_reported(&["--spec", FAULTS, "--exact", "docker::tiny_linear"], &[]);
    let remaining = containers_with_label(&format!("zr-test={tag}"));
    let _ = Command::new("docker")
        .args(["rm", "-f", &other_ns, &other_boot, &ours])
        .output();
    assert_eq!(run.code, 0, "{}", run.all());
    let short = |id: &str| id[..12].to_string();
    let mut remaining: Vec<String> = remaining.iter().map(|id| short(id)).collect();
    remaining.sort();
    let mut want = vec![short(&other_ns), short(&other_boot)];
    want.sort();
    assert_eq!(
        remaining, want,
        "only the dead run of our own namespace is swept"
    );
}

#[test]
fn a_report_lost_after_the_run_has_its_own_exit_code() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("reports/junit.xml");
    let summary = dir.path().join("summary.md");
    let process = spawn_runner(
        &[
            "--spec",
            FAULTS,
            "--exact",
            "docker::hang",
            "--timeout",
            "3s",
            "--grace",
            "1s",
            "--junit",
            junit.to_str().unwrap(),
            "--summary",
            summary.to_str().unwrap(),
        ],
        &[],
    );
    let pid = process.id();
    wait_for_container(pid, "docker::hang");
    // The report's folder goes away while the case runs (a cleaned workspace, a full disk).
    std::fs::remove_dir_all(junit.parent().unwrap()).unwrap();
    let run = finish(process);
    assert_eq!(run.code, 4, "{}", run.all());
    assert!(
        run.stderr
            .contains("the report is lost (1 of 1 cases failed"),
        "{}",
        run.all()
    );
    // The summary is made from the run's records: it is still written, and says what happened.
    // `**The JUnit report was lost:**`, and `**`docker::hang`** timed out`.
    let md = std::fs::read_to_string(&summary).unwrap_or_else(|e| panic!("{e}: {}", run.all()));
    normalise::run_output().bind(|| insta::assert_snapshot!("summary_of_a_lost_report", md));
    assert!(
        containers_of(pid, None).is_empty(),
        "nothing is left behind"
    );
}

#[test]
fn passing_cases_keep_no_output_unless_asked() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let models = ["--spec", FAULTS, "--model", "tiny_linear,signal_exit"];
    let (run, report) = run_reported(&models, &[]);
    assert_eq!(run.code, 101, "{}", run.all());
    let doc = report.doc();
    let passed = testcase(&doc, "tiny_linear");
    let out = child_text_whole(passed, "system-out");
    assert!(
        out.contains("bytes of output not kept: the case passed"),
        "{out}"
    );
    assert!(!out.contains("INFO"), "kipoi's log is not kept: {out}");
    assert!(case_fact(passed, "command").is_some_and(|c| c.starts_with("kipoi test")));
    let failed = testcase(&doc, "signal_exit");
    assert!(
        !child_text(failed, "system-out").is_empty(),
        "a failure keeps its output"
    );

    let mut asked = models.to_vec();
    asked.push("--store-success-output");
    let (run, report) = run_reported(&asked, &[]);
    assert_eq!(run.code, 101, "{}", run.all());
    let doc = report.doc();
    let out = child_text(testcase(&doc, "tiny_linear"), "system-out");
    assert!(
        out.contains("INFO"),
        "kipoi's log is kept when asked: {out}"
    );
}

#[test]
fn a_timeout_that_sigterm_ends_says_so() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.toml");
    let catalog = root().join("fixtures/faults/catalog");
    std::fs::write(
        &spec,
        format!(
            "catalog = {catalog:?}\ncommand = \"sleep 600\"\nnetwork = \"none\"\ntimeout = \"2s\"\n"
        ),
    )
    .unwrap();
    let (run, report) = run_reported(
        &[
            "--spec",
            spec.to_str().unwrap(),
            "--exact",
            "docker::tiny_linear",
            "--grace",
            "30s",
        ],
        &[],
    );
    assert_eq!(run.code, 101, "{}", run.all());
    let doc = report.doc();
    let message = child_message(testcase(&doc, "tiny_linear"), "error");
    assert!(message.contains("SIGTERM stopped it"), "{message}");
}
