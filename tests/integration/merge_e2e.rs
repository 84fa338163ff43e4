//! `zoo-runner merge` and `--summary`, against the real Docker daemon and the fixture zoo: the
//! shards of a matrix, each run as its job would run it, merge into a report with the same
//! counts and cases as one unsharded run; the summary says what broke; a case reported twice is
//! an error that names it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::helpers::zoo::{matrix, sh_quote};
use crate::helpers::*;

const SPEC: &str = "fixtures/spec.toml";

/// (classname, name) -> the element that says how the case ended (`passed` when none).
fn outcomes(doc: &roxmltree::Document<'_>) -> BTreeMap<(String, String), String> {
    elements(doc, "testcase")
        .into_iter()
        .map(|c| {
            let status = ["failure", "error", "skipped"]
                .into_iter()
                .find(|t| child(c, t).is_some())
                .unwrap_or("passed");
            (
                (
                    c.attribute("classname").unwrap().to_string(),
                    c.attribute("name").unwrap().to_string(),
                ),
                status.to_string(),
            )
        })
        .collect()
}

fn counts<'a>(node: roxmltree::Node<'a, '_>) -> [Option<&'a str>; 3] {
    ["tests", "failures", "errors"].map(|a| node.attribute(a))
}

fn merge(args: &[&str]) -> Run {
    let mut all = vec!["merge"];
    all.extend_from_slice(args);
    runner(&all)
}

#[test]
fn merged_shards_count_as_one_unsharded_run() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let (whole, whole_report) = run_reported(&["--spec", SPEC], &[]);
    assert_eq!(whole.code, 101, "{}", whole.all());

    let dir = tempfile::tempdir().unwrap();
    let jobs = matrix(&["--spec", SPEC, "--shards", "2"]);
    assert_eq!(jobs.len(), 2);
    for (i, job) in jobs.iter().enumerate() {
        // Each job as CI runs it: the matrix's argument string through a shell.
        let junit = dir.path().join(format!("shards/shard-{i}/junit.xml"));
        let out = Command::new("sh")
            .current_dir(root())
            .arg("-c")
            .arg(format!(
                "exec \"$ZOO_RUNNER\" {} --junit {}",
                job.args,
                sh_quote(junit.to_str().unwrap())
            ))
            .env("ZOO_RUNNER", bin())
            .env_remove("GITHUB_STEP_SUMMARY")
            .output()
            .unwrap();
        let run: Run = out.into();
        assert!(
            run.code == 0 || run.code == 101,
            "{}: {}",
            job.name,
            run.all()
        );
        read_junit(&junit);
    }
    let merged = dir.path().join("out/merged.xml");
    let summary = dir.path().join("summary.md");
    let run = merge(&[
        "--junit",
        merged.to_str().unwrap(),
        "--summary",
        summary.to_str().unwrap(),
        dir.path().join("shards").to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    let text = read_junit(&merged);
    let doc = roxmltree::Document::parse(&text).unwrap();
    let whole_doc = whole_report.doc();
    assert_eq!(counts(doc.root_element()), counts(whole_doc.root_element()));
    let suites = elements(&doc, "testsuite");
    let whole_suites = elements(&whole_doc, "testsuite");
    assert_eq!(suites.len(), whole_suites.len(), "one suite per image");
    for (a, b) in suites.iter().zip(&whole_suites) {
        assert_eq!(a.attribute("name"), b.attribute("name"));
        assert_eq!(counts(*a), counts(*b));
        assert_eq!(a.attribute("skipped"), b.attribute("skipped"));
    }
    assert_eq!(outcomes(&doc), outcomes(&whole_doc));
    // Properties kept: both shards' run ids, the image id once.
    let run_ids: Vec<&str> = elements(&doc, "property")
        .into_iter()
        .filter(|p| p.attribute("name") == Some("run-id"))
        .filter_map(|p| p.attribute("value"))
        .collect();
    assert_eq!(run_ids.len(), 2, "{text}");
    assert_ne!(run_ids[0], run_ids[1]);
    assert_eq!(property(&doc, "image-id"), property(&whole_doc, "image-id"));
    // The cases' own content is copied whole: kipoi's message and the per-case facts.
    let raise = testcase(&doc, "tiny_fail_raise");
    assert!(child_message(raise, "failure").contains("RuntimeError"));
    assert!(case_fact(raise, "command").is_some());
    // Byte for byte: each case of the merged report is the shard's, character references
    // (kipoi's `\r` progress lines as `&#13;`) included.
    let shard_texts: String = (0..2)
        .map(|i| read_junit(&dir.path().join(format!("shards/shard-{i}/junit.xml"))))
        .collect();
    for case in elements(&doc, "testcase") {
        let raw = &text[case.range()];
        assert!(shard_texts.contains(raw), "copied as it was: {raw}");
    }

    // The merged summary: the image's counts, each failure with kipoi's words, the slowest
    // cases (in the order of their times in the merged report; by name in the snapshot).
    let md = std::fs::read_to_string(&summary).unwrap();
    assert_eq!(
        normalise::slowest_cases(&md),
        normalise::slowest_in_report(&merged),
        "{md}"
    );
    normalise::run_output().bind(|| {
        insta::assert_snapshot!("merged_summary", normalise::slowest_by_name(&md));
        insta::assert_snapshot!("merge_stderr", run.stderr);
    });

    // One shard given twice: an error that names a case, and no report.
    let shard = dir.path().join("shards/shard-0/junit.xml");
    let again = dir.path().join("again.xml");
    let args = [
        "merge",
        "--junit",
        again.to_str().unwrap(),
        shard.to_str().unwrap(),
        shard.to_str().unwrap(),
    ];
    let run = runner(&args);
    assert_eq!(run.code, 2, "{}", run.all());
    // Which case is named: the first of shard 1's (`reported twice`).
    normalise::messages().bind(|| {
        insta::assert_snapshot!(
            "merge_of_a_shard_given_twice",
            normalise::transcript(&args, &run)
        );
    });
    assert!(!again.exists());
    // A merge written into its input folder does not read its earlier output as an input.
    let shards = dir.path().join("shards");
    let inside = shards.join("merged.xml");
    for _ in 0..2 {
        let run = merge(&[
            "--junit",
            inside.to_str().unwrap(),
            shards.to_str().unwrap(),
        ]);
        assert_eq!(run.code, 0, "{}", run.all());
        let text = read_junit(&inside);
        let doc = roxmltree::Document::parse(&text).unwrap();
        assert_eq!(doc.root_element().attribute("tests"), Some("6"));
    }
}

#[test]
fn a_run_appends_its_summary_to_the_github_step_summary() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let dir = tempfile::tempdir().unwrap();
    let step = dir.path().join("step-summary.md");
    std::fs::write(&step, "earlier step output\n").unwrap();
    let step_env = step.to_str().unwrap();
    let args = ["--spec", SPEC, "--exact", "docker::tiny_fail_expect"];
    let (run, _report) = run_reported(&args, &[("GITHUB_STEP_SUMMARY", step_env)]);
    assert_eq!(run.code, 101, "{}", run.all());
    // Appended after the earlier step's output: the counts, and the failure in kipoi's words.
    let md = std::fs::read_to_string(&step).unwrap();
    normalise::run_output().bind(|| {
        insta::assert_snapshot!("step_summary_of_one_failure", md);
    });

    // --summary wins: the step summary is left alone.
    let own = dir.path().join("own.md");
    let mut with_own = args.to_vec();
    with_own.extend(["--summary", own.to_str().unwrap()]);
    let before = std::fs::read_to_string(&step).unwrap();
    let (run, _report) = run_reported(&with_own, &[("GITHUB_STEP_SUMMARY", step_env)]);
    assert_eq!(run.code, 101, "{}", run.all());
    assert_eq!(std::fs::read_to_string(&step).unwrap(), before);
    assert!(Path::new(&own).exists());
    // --list writes no report, so no summary either.
    let run = runner_env(
        &["--spec", SPEC, "--list"],
        &[("GITHUB_STEP_SUMMARY", step_env)],
    );
    assert_eq!(run.code, 0);
    assert_eq!(std::fs::read_to_string(&step).unwrap(), before);
}

#[test]
fn merge_inputs_that_are_not_reports_exit_2() {
    let _daemon = daemon::shared();
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.xml");
    std::fs::write(&text, "shard 1 passed").unwrap();
    let out = dir.path().join("m.xml");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    // Each says what is wrong with the input: not a JUnit report, no `*.xml` file, does not
    // exist; and no input at all is a usage error.
    let mut said = String::new();
    for input in [
        Some(text.to_str().unwrap()),
        Some(empty.to_str().unwrap()),
        Some("/nonexistent/shards"),
        None,
    ] {
        let mut args = vec!["merge", "--junit", out.to_str().unwrap()];
        args.extend(input);
        let run = runner(&args);
        assert_eq!(run.code, 2, "{input:?}: {}", run.all());
        assert!(!out.exists());
        said.push_str(&normalise::transcript(&args, &run));
    }
    normalise::messages().bind(|| {
        insta::assert_snapshot!("merge_inputs_that_are_not_reports", said);
    });
}

/// A real report of the runner, made without Docker: every model of the zoo is marked `skip`
/// by the spec. Run under umask 022, through `sh`, as a CI step would.
fn skipped_report(dir: &Path, name: &str, models: &[(&str, &str)], flags: &[&str]) -> PathBuf {
    let zoo = dir.join(format!("{name}-zoo"));
    write_catalog(&zoo.join("catalog"), models, None);
    let mut spec = String::from("catalog = \"catalog\"\ncommand = \"true\"\nnetwork = \"none\"\n");
    for (model, _) in models {
        spec.push_str(&format!("[models.{model:?}]\nskip = \"not today\"\n"));
    }
    std::fs::write(zoo.join("spec.toml"), spec).unwrap();
    let junit = dir.join(format!("{name}.xml"));
    let spec = zoo.join("spec.toml");
    let mut args = vec![
        "--spec",
        spec.to_str().unwrap(),
        "--junit",
        junit.to_str().unwrap(),
    ];
    args.extend_from_slice(flags);
    let run = umask_022(&args, &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    junit
}

/// The runner under umask 022 (through `sh`), with `env` set and no step summary unless given.
fn umask_022(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new("sh");
    cmd.current_dir(root())
        .arg("-c")
        .arg("umask 022 && exec \"$ZOO_RUNNER\" \"$@\"")
        .arg("sh")
        .args(args)
        .env("ZOO_RUNNER", bin())
        .env_remove("GITHUB_STEP_SUMMARY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap().into()
}

fn case_names(path: &Path) -> Vec<String> {
    let text = read_junit(path);
    let doc = roxmltree::Document::parse(&text).unwrap();
    let mut names: Vec<String> = elements(&doc, "testcase")
        .iter()
        .map(|c| c.attribute("name").unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// A running total merged into itself (`merge --junit inc.xml inc.xml new.xml`) keeps what it
/// held: an input named as such is read before the output replaces it.
#[test]
fn a_running_total_merged_into_itself_keeps_its_cases() {
    let _daemon = daemon::shared();
    let dir = tempfile::tempdir().unwrap();
    let a = skipped_report(
        dir.path(),
        "a",
        &[("a1", "zoo/a:1"), ("a2", "zoo/a:1")],
        &[],
    );
    let b = skipped_report(dir.path(), "b", &[("b1", "zoo/b:1")], &[]);
    let inc = dir.path().join("inc.xml");
    let run = merge(&["--junit", inc.to_str().unwrap(), a.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(case_names(&inc), ["a1", "a2"]);
    let run = merge(&[
        "--junit",
        inc.to_str().unwrap(),
        inc.to_str().unwrap(),
        b.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        !run.stderr.contains("not read as an input"),
        "{}",
        run.stderr
    );
    assert_eq!(case_names(&inc), ["a1", "a2", "b1"], "nothing dropped");
    // Found by searching a folder, OUT is still left out (with a note).
    let folder = dir.path().join("shards");
    std::fs::create_dir(&folder).unwrap();
    std::fs::copy(&b, folder.join("b.xml")).unwrap();
    let out = folder.join("total.xml");
    std::fs::copy(&inc, &out).unwrap();
    let run = merge(&["--junit", out.to_str().unwrap(), folder.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stderr.contains("is the output; not read as an input"),
        "{}",
        run.stderr
    );
    assert_eq!(case_names(&out), ["b1"]);
}

/// Reports are for others to read (a Jenkins agent, another user): under umask 022 a run's
/// report and a merged one are 0644, like the summary, even where they replace a file.
#[test]
fn reports_get_the_umask_s_mode() {
    let _daemon = daemon::shared();
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let a = skipped_report(dir.path(), "a", &[("a1", "zoo/a:1")], &[]);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&a), 0o644, "{:o}", mode(&a));
    let merged = dir.path().join("merged.xml");
    let summary = dir.path().join("summary.md");
    std::fs::write(&merged, "earlier").unwrap();
    std::fs::set_permissions(&merged, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = umask_022(
        &[
            "merge",
            "--junit",
            merged.to_str().unwrap(),
            "--summary",
            summary.to_str().unwrap(),
            a.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(mode(&merged), 0o644, "{:o}", mode(&merged));
    assert_eq!(mode(&summary), 0o644);
    assert_eq!(
        files_in(dir.path()),
        ["a-zoo", "a.xml", "merged.xml", "summary.md"],
        "no work folder is left"
    );
}

/// `GITHUB_STEP_SUMMARY` that cannot be written, after the merged report is: said on stderr
/// (its cause once), and merge still exits 0, as a run does.
#[test]
fn a_step_summary_that_cannot_be_written_does_not_fail_the_merge() {
    let _daemon = daemon::shared();
    let dir = tempfile::tempdir().unwrap();
    let a = skipped_report(dir.path(), "a", &[("a1", "zoo/a:1")], &[]);
    let merged = dir.path().join("merged.xml");
    let step = dir.path().join("no-such-folder/step.md");
    let run = runner_env(
        &[
            "merge",
            "--junit",
            merged.to_str().unwrap(),
            a.to_str().unwrap(),
        ],
        &[("GITHUB_STEP_SUMMARY", step.to_str().unwrap())],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(case_names(&merged), ["a1"]);
    // `cannot write the summary`, with its cause once.
    normalise::messages().bind(|| {
        insta::assert_snapshot!("a_step_summary_that_cannot_be_written", run.stderr);
    });
    assert_eq!(
        run.stderr.matches("os error 2").count(),
        1,
        "{}",
        run.stderr
    );
}

/// A strict and an extended report merged would no longer validate: refused (exit 2, nothing
/// written) unless `--junit-flavor extended` asks for an extended report.
#[test]
fn strict_and_extended_reports_do_not_merge_into_an_invalid_one() {
    let _daemon = daemon::shared();
    let dir = tempfile::tempdir().unwrap();
    let strict = skipped_report(dir.path(), "s", &[("s1", "zoo/s:1")], &[]);
    let strict2 = skipped_report(dir.path(), "t", &[("t1", "zoo/t:1")], &[]);
    let extended = skipped_report(
        dir.path(),
        "e",
        &[("e1", "zoo/e:1")],
        &["--junit-flavor", "extended"],
    );
    let out = dir.path().join("out.xml");
    let (s, t, e, o) = (
        strict.to_str().unwrap(),
        strict2.to_str().unwrap(),
        extended.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    // Refused, naming the extended report (`e.xml`) and how to ask for an extended one.
    let mut said = String::new();
    for args in [
        vec!["merge", "--junit", o, s, e],
        vec!["merge", "--junit", o, "--junit-flavor", "strict", e],
    ] {
        let run = runner(&args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.all());
        assert!(!out.exists(), "{args:?}: nothing written");
        said.push_str(&normalise::transcript(&args, &run));
    }
    normalise::messages().bind(|| {
        insta::assert_snapshot!("strict_and_extended_reports_refused", said);
    });
    // Two strict reports stay strict (read_junit validates against junit-10.xsd).
    let run = merge(&["--junit", o, s, t]);
    assert_eq!(run.code, 0, "{}", run.all());
    let text = read_junit(&out);
    let doc = roxmltree::Document::parse(&text).unwrap();
    assert_eq!(doc.root_element().attribute("skipped"), None);
    // Asked for, the mix is an extended report.
    let run = merge(&["--junit", o, "--junit-flavor", "extended", s, e]);
    assert_eq!(run.code, 0, "{}", run.all());
    let text = read_junit_unvalidated(&out);
    let doc = roxmltree::Document::parse(&text).unwrap();
    assert_eq!(doc.root_element().attribute("skipped"), Some("2"));
}

/// A run that selects nothing writes a summary that says why, not an empty table.
#[test]
fn an_empty_selection_has_a_summary_that_says_why() {
    let _daemon = daemon::shared();
    let dir = tempfile::tempdir().unwrap();
    let zoo = dir.path().join("zoo");
    write_catalog(&zoo.join("catalog"), &[("a1", "zoo/a:1")], None);
    let spec = zoo.join("spec.toml");
    std::fs::write(&spec, "catalog = \"catalog\"\ncommand = \"true\"\n").unwrap();
    let summary = dir.path().join("summary.md");
    let junit = dir.path().join("junit.xml");
    let run = runner(&[
        "--spec",
        spec.to_str().unwrap(),
        "--skip",
        "a1",
        "--junit",
        junit.to_str().unwrap(),
        "--summary",
        summary.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    // `**No case ran, so nothing was tested:** --skip left none of the 1 planned`, and no
    // table of images.
    let md = std::fs::read_to_string(&summary).unwrap();
    normalise::run_output().bind(|| {
        insta::assert_snapshot!("summary_of_an_empty_selection", md);
    });
}
