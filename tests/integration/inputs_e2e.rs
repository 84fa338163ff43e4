//! End to end, inputs a user typed: bad numbers and an unwritable report place are refused
//! with exit 2 and a message naming the flag, before any container starts (checked through
//! the daemon by the runner's pid label).

use crate::helpers::*;

const FAULTS: &str = "fixtures/faults/spec.toml";

/// Runs the runner on one quick case with `extra` flags; returns the run, its pid, whether a
/// report was written, and the command with what it said (a transcript for a snapshot).
fn refused_run(extra: &[&str]) -> (Run, u32, bool, String) {
    let mut args = vec!["--spec", FAULTS, "--exact", "docker::tiny_linear"];
    args.extend_from_slice(extra);
    let (process, report) = spawn_reported(&args, &[]);
    let pid = process.id();
    let run = finish(process);
    args.extend(["--junit", report.path()]);
    let said = normalise::transcript(&args, &run);
    (run, pid, report.exists(), said)
}

#[test]
fn bad_numbers_are_refused_before_any_container() {
    let _daemon = daemon::shared();
    require_fixture_image();
    // Each message names the flag (`too large` for an hour count that overflows).
    let cases: [&[&str]; 9] = [
        &["--test-threads", "0"],
        &["--test-threads", "100000"],
        &["--slow-after", "0s"],
        &["--timeout", "0s"],
        &["--timeout", "99999999999999999999s"],
        &["--timeout", "18446744073709551615h"],
        &["--grace", "3h"],
        &["--keep-output", "0"],
        &["--retries", "1000"],
    ];
    let mut said = String::new();
    for flags in cases {
        let (run, pid, reported, transcript) = refused_run(flags);
        assert_eq!(run.code, 2, "{flags:?}\n{}", run.all());
        assert!(
            containers_of(pid, None).is_empty(),
            "{flags:?}: a container was made"
        );
        assert!(!reported, "{flags:?}: nothing ran, so no report");
        said.push_str(&transcript);
    }
    normalise::messages().bind(|| insta::assert_snapshot!("bad_numbers", said));
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
    // `is a folder`; `cannot create its folder`.
    let mut said = String::new();
    for junit in [folder.as_str(), under_file.to_str().unwrap()] {
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
        assert!(
            containers_of(pid, None).is_empty(),
            "{junit}: a container was made"
        );
        said.push_str(&normalise::transcript(&args, &run));
    }
    normalise::messages().bind(|| insta::assert_snapshot!("unwritable_report_places", said));
}

#[test]
fn a_logfile_that_cannot_be_created_is_refused_before_any_container() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let (run, pid, reported, said) = refused_run(&["--logfile", "no-such-dir/run.log"]);
    assert_eq!(run.code, 2, "{}", run.all());
    // Names `--logfile`; no panic.
    normalise::messages()
        .bind(|| insta::assert_snapshot!("a_logfile_that_cannot_be_created", said));
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
    assert!(report.exists());
    // `no case selected`, and `did you mean `--exact docker::tiny_linear``.
    let mut said = normalise::transcript(&[&exact[..], &["--junit", report.path()]].concat(), &run);

    let mut required = exact.to_vec();
    required.push("--require-tests");
    let (run, report) = run_reported(&required, &[]);
    assert_eq!(run.code, 5, "{}", run.all());
    assert_eq!(report.doc().root_element().attribute("tests"), Some("0"));

    let (run, _) = run_reported(&["--spec", FAULTS, "tiny_linea"], &[]);
    assert_eq!(run.code, 0, "a substring filter still runs: {}", run.all());
    let nothing = ["--spec", FAULTS, "zzz-nothing", "--require-tests"];
    let (run, report) = run_reported(&nothing, &[]);
    assert_eq!(run.code, 5, "{}", run.all());
    // The filter matched none of the planned cases: `--list` shows them.
    said.push_str(&normalise::transcript(
        &[&nothing[..], &["--junit", report.path()]].concat(),
        &run,
    ));
    normalise::run_output().bind(|| insta::assert_snapshot!("empty_selections", said));
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
    // One JSON object a line, with every field a consumer reads.
    normalise::messages().bind(|| insta::assert_snapshot!("list_format_json", run.stdout));
}
