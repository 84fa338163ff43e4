//! End to end, faults: cases that hang, flood, run out of memory, die by a signal or are flaky;
//! a runner interrupted (SIGINT, SIGTERM, twice), killed outright (SIGKILL), or cut off from its
//! daemon. Real containers from the fixture image (fixtures/faults/spec.toml); every check of
//! what is left behind goes through the daemon.

mod common;

use std::os::unix::net::{UnixListener, UnixStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const FAULTS: &str = "fixtures/faults/spec.toml";

/// A runner removes the containers of dead runs when it starts. The SIGKILL test needs a moment
/// in which no other runner of this file starts (it checks what a killed run left), so it takes
/// this lock for writing and every other test for reading.
static RUNNERS: RwLock<()> = RwLock::new(());

fn shared_slot() -> RwLockReadGuard<'static, ()> {
    RUNNERS.read().unwrap_or_else(|p| p.into_inner())
}

/// Containers (any state) created by the runner process `pid`, optionally for one case.
fn containers_of(pid: u32, case: Option<&str>) -> Vec<String> {
    let mut args = vec![
        "ps".to_string(),
        "-aq".into(),
        "--filter".into(),
        format!("label=org.zoo-runner.pid={pid}"),
    ];
    if let Some(case) = case {
        args.extend([
            "--filter".into(),
            format!("label=org.zoo-runner.case={case}"),
        ]);
    }
    let out = Command::new("docker").args(&args).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn wait_for_container(pid: u32, case: &str) -> String {
    let start = Instant::now();
    loop {
        if let Some(id) = containers_of(pid, Some(case)).into_iter().next() {
            return id;
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
    require_fixture_image();
    let _slot = shared_slot();
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
    assert!(child_message(case, "error").contains("timeout of 4s"));
    assert!(child_text(case, "system-out").contains("hang: started"));
    assert!(child_text(case, "system-err").contains("stderr before the wait"));
    let time: f64 = case.attribute("time").unwrap().parse().unwrap();
    assert!(time >= 4.0, "ran until its timeout: {time}");
}

#[test]
fn out_of_memory_and_signals_are_errors_that_say_so() {
    require_fixture_image();
    let _slot = shared_slot();
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
    require_fixture_image();
    let _slot = shared_slot();
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
    assert!(child(case, "failure").is_none());
}

#[test]
fn fail_fast_reports_the_rest_as_not_run() {
    require_fixture_image();
    let _slot = shared_slot();
    let (run, report) = run_reported(&["--spec", "fixtures/spec.toml", "--fail-fast"], &[]);
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
    require_fixture_image();
    let _slot = shared_slot();
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

/// Runs tiny_linear, then hang, then signal_exit; interrupts while hang runs.
fn interrupted_run(signals: &[i32], grace: &str) -> (Run, String, u32, Duration) {
    require_fixture_image();
    let _slot = shared_slot();
    let (process, report) = spawn_reported(
        &[
            "--spec",
            FAULTS,
            "--model",
            "tiny_linear,hang,signal_exit",
            "--grace",
            grace,
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
    let text = report.text().to_string();
    (run, text, pid, took)
}

fn assert_interrupted_report(text: &str) {
    let doc = roxmltree::Document::parse(text).unwrap();
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
    let (run, text, pid, _) = interrupted_run(&[libc::SIGINT], "2s");
    assert_eq!(run.code, 130, "{}", run.all());
    assert!(
        run.stderr
            .contains("interrupted; stopping running containers"),
        "{}",
        run.all()
    );
    assert_interrupted_report(&text);
    assert!(
        containers_of(pid, None).is_empty(),
        "no container of the run is left"
    );
}

#[test]
fn sigterm_exits_143_and_leaves_nothing() {
    let (run, text, pid, _) = interrupted_run(&[libc::SIGTERM], "2s");
    assert_eq!(run.code, 143, "{}", run.all());
    assert_interrupted_report(&text);
    assert!(
        containers_of(pid, None).is_empty(),
        "no container of the run is left"
    );
}

#[test]
fn a_second_interrupt_kills_at_once_and_still_removes() {
    // With a 300 s grace period only the second signal can end the run quickly.
    let (run, text, pid, took) = interrupted_run(&[libc::SIGINT, libc::SIGINT], "300s");
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
    assert_interrupted_report(&text);
    assert!(
        containers_of(pid, None).is_empty(),
        "no container of the run is left"
    );
}

#[test]
fn a_killed_run_is_cleaned_up_by_the_next_one_and_nothing_else_is_touched() {
    require_fixture_image();
    let _alone = RUNNERS.write().unwrap_or_else(|p| p.into_inner());
    // The killed run writes no report; `_report` keeps its folder until the end all the same.
    let (process, _report) = spawn_reported(&["--spec", FAULTS, "--exact", "docker::hang"], &[]);
    let pid = process.id();
    let left = wait_for_container(pid, "docker::hang");
    signal(pid, libc::SIGKILL);
    let _ = finish(process);
    assert_eq!(
        containers_of(pid, None),
        std::slice::from_ref(&left),
        "SIGKILL leaves the labelled container"
    );

    // Two containers the sweep must not touch: one without the runner's labels, and one
    // labelled by a run that is still alive (this test process).
    let tag = format!("zr-test-{}", std::process::id());
    let me = std::process::id().to_string();
    let my_start = std::fs::read_to_string(format!("/proc/{me}/stat")).unwrap();
    let my_start = my_start[my_start.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .nth(19)
        .unwrap()
        .to_string();
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
    let alive = create(&[
        "org.zoo-runner.runner=zoo-runner".into(),
        "org.zoo-runner.run=alive-run".into(),
        format!("org.zoo-runner.pid={me}"),
        format!("org.zoo-runner.pid-start={my_start}"),
    ]);

    let (run, _) = run_reported(&["--spec", FAULTS, "--exact", "docker::tiny_linear"], &[]);
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
        let path = dir.join("proxy.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<UnixStream>>> = Arc::default();
        let (cut2, open2) = (Arc::clone(&cut), Arc::clone(&open));
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if cut2.load(Ordering::SeqCst) {
                    continue; // dropped: the daemon is "gone"
                }
                let Ok(daemon) = UnixStream::connect("/var/run/docker.sock") else {
                    continue;
                };
                {
                    let mut open = open2.lock().unwrap();
                    open.push(client.try_clone().unwrap());
                    open.push(daemon.try_clone().unwrap());
                }
                pipe(client.try_clone().unwrap(), daemon.try_clone().unwrap());
                pipe(daemon, client);
            }
        });
        DaemonProxy { path, cut, open }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn pipe(mut from: UnixStream, mut to: UnixStream) {
    thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}

#[test]
fn losing_the_daemon_mid_run_is_an_error_with_its_own_exit_code() {
    require_fixture_image();
    let _slot = shared_slot();
    let dir = tempfile::tempdir().unwrap();
    let proxy = DaemonProxy::start(dir.path());
    let host = format!("unix://{}", proxy.path.display());
    let (process, report) = spawn_reported(
        &["--spec", FAULTS, "--model", "hang,tiny_linear"],
        &[("DOCKER_HOST", &host)],
    );
    let pid = process.id();
    let left = wait_for_container(pid, "docker::hang");
    thread::sleep(Duration::from_millis(500));
    proxy.cut();
    let run = finish(process);
    // The daemon was fine all along: clean up what the cut-off runner could not remove.
    let _ = Command::new("docker").args(["rm", "-f", &left]).output();
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(
        run.stderr.contains("Docker daemon was lost"),
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
