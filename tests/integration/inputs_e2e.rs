//! End to end, inputs a user typed: bad numbers and an unwritable report place are refused
//! with exit 2 and a message naming the flag, before any container starts (checked through
//! the daemon by the runner's pid label).

use crate::helpers::*;

const FAULTS: &str = "fixtures/faults/spec.toml";

/// Runs the runner on one quick case with `extra` flags; returns the run, its pid and whether
/// a report was written.
fn refused_run(extra: &[&str]) -> (Run, u32, bool) {
    let mut args = vec!["--spec", FAULTS, "--exact", "docker::tiny_linear"];
    args.extend_from_slice(extra);
    let (process, report) = spawn_reported(&args, &[]);
    let pid = process.id();
    let run = finish(process);
    (run, pid, report.exists())
}

#[test]
fn bad_numbers_are_refused_before_any_container() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let cases: [(&[&str], &str); 9] = [
        (&["--test-threads", "0"], "--test-threads"),
        (&["--test-threads", "100000"], "--test-threads"),
        (&["--slow-after", "0s"], "--slow-after"),
        (&["--timeout", "0s"], "--timeout"),
        (&["--timeout", "99999999999999999999s"], "--timeout"),
        (&["--timeout", "18446744073709551615h"], "too large"),
        (&["--grace", "3h"], "--grace"),
        (&["--keep-output", "0"], "--keep-output"),
        (&["--retries", "1000"], "--retries"),
    ];
    for (flags, want) in cases {
        let (run, pid, reported) = refused_run(flags);
        assert_eq!(run.code, 2, "{flags:?}\n{}", run.all());
        assert!(run.stderr.contains(want), "{flags:?}\n{}", run.all());
        assert!(
            containers_of(pid, None).is_empty(),
            "{flags:?}: a container was made"
        );
        assert!(!reported, "{flags:?}: nothing ran, so no report");
    }
}

#[test]
fn an_unwritable_report_place_is_refused_before_any_container() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "x").unwrap();
    let under_file = file.join("junit.xml");
    let folder = dir.path().to_str().unwrap().to_string();
    for (junit, want) in [
        (folder.as_str(), "is a folder"),
        (under_file.to_str().unwrap(), "cannot create its folder"),
    ] {
        let args = [
            "--spec",
            FAULTS,
            "--exact",
            "docker::tiny_linear",
            "--junit",
            junit,
        ];
        let process = spawn_runner(&args, &[]);
        let pid = process.id();
        let run = finish(process);
        assert_eq!(run.code, 2, "{junit}\n{}", run.all());
        assert!(run.stderr.contains(want), "{junit}\n{}", run.all());
        assert!(
            containers_of(pid, None).is_empty(),
            "{junit}: a container was made"
        );
    }
}

#[test]
fn a_logfile_that_cannot_be_created_is_refused_before_any_container() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let (run, pid, reported) = refused_run(&["--logfile", "no-such-dir/run.log"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("--logfile"), "{}", run.all());
    assert!(!run.stderr.contains("panicked"), "{}", run.all());
    assert!(containers_of(pid, None).is_empty());
    assert!(!reported);
}

#[test]
fn bench_runs_the_cases_instead_of_ignoring_them() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let (run, report) = run_reported(
        &[
            "--spec",
            FAULTS,
            "--exact",
            "docker::signal_exit",
            "--bench",
        ],
        &[],
    );
    assert_eq!(run.code, 101, "the case ran and failed\n{}", run.all());
    let doc = report.doc();
    assert!(child(testcase(&doc, "signal_exit"), "error").is_some());
}

#[test]
fn an_empty_selection_says_so_and_fails_with_require_tests() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let exact = ["--spec", FAULTS, "--exact", "tiny_linear"];
    let (run, report) = run_reported(&exact, &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stderr.contains("no case selected")
            && run
                .stderr
                .contains("did you mean `--exact docker::tiny_linear`"),
        "{}",
        run.all()
    );
    assert!(report.exists());

    let mut required = exact.to_vec();
    required.push("--require-tests");
    let (run, report) = run_reported(&required, &[]);
    assert_eq!(run.code, 5, "{}", run.all());
    assert_eq!(report.doc().root_element().attribute("tests"), Some("0"));

    let (run, _) = run_reported(&["--spec", FAULTS, "tiny_linea"], &[]);
    assert_eq!(run.code, 0, "a substring filter still runs: {}", run.all());
    let (run, _) = run_reported(&["--spec", FAULTS, "zzz-nothing", "--require-tests"], &[]);
    assert_eq!(run.code, 5, "{}", run.all());
    assert!(run.stderr.contains("`--list` shows them"), "{}", run.all());
}

#[test]
fn list_honours_format_json() {
    let _daemon = daemon::shared();
    let run = runner(&[
        "--spec",
        FAULTS,
        "--list",
        "--format",
        "json",
        "--model",
        "tiny_linear,hang",
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    let lines: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let names: Vec<&str> = lines.iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["docker::tiny_linear", "docker::hang"]);
    assert_eq!(lines[0]["image"], "local/kipoi-fixture:py3");
}
