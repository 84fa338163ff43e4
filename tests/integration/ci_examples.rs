//! The shipped CI examples, checked for real: `examples/ci/github-actions.yml` with actionlint
//! and check-jsonschema's `vendor.github-workflows` schema, `examples/ci/gitlab-ci.yml` with its
//! `vendor.gitlab-ci` schema (the test command, fixtures/test.sh, installs both from PyPI), and
//! every zoo-runner command in them run with the built binary: runs with `--list`, `matrix` as
//! it is (each of its jobs then listed, and again with the "rerun failed" path on a report of
//! failures), `merge` on reports made here. The GitLab pipeline also runs whole under
//! gitlab-ci-local (`gitlab_local.rs`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::helpers::*;

const GITHUB: &str = "examples/ci/github-actions.yml";
const GITLAB: &str = "examples/ci/gitlab-ci.yml";

fn tool(name: &str, args: &[&str]) -> Run {
    let out = Command::new(name)
        .current_dir(root())
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("{name} runs ({e}); `bash fixtures/test.sh` installs it from PyPI")
        });
    out.into()
}

#[test]
fn the_github_workflow_passes_actionlint_and_its_schema() {
    let run = tool("actionlint", &[GITHUB]);
    assert_eq!(run.code, 0, "actionlint:\n{}", run.all());
    let run = tool(
        "check-jsonschema",
        &["--builtin-schema", "vendor.github-workflows", GITHUB],
    );
    assert_eq!(run.code, 0, "check-jsonschema:\n{}", run.all());
}

#[test]
fn the_gitlab_pipeline_passes_its_schema() {
    let run = tool(
        "check-jsonschema",
        &["--builtin-schema", "vendor.gitlab-ci", GITLAB],
    );
    assert_eq!(run.code, 0, "check-jsonschema:\n{}", run.all());
}

/// The linters must fail on a broken file, or the two tests above prove nothing.
#[test]
fn the_linters_catch_a_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root().join(GITHUB)).unwrap();
    let broken = dir.path().join("broken.yml");
    std::fs::write(&broken, text.replace("runs-on:", "runs_on:")).unwrap();
    assert_ne!(tool("actionlint", &[broken.to_str().unwrap()]).code, 0);
    let gitlab = std::fs::read_to_string(root().join(GITLAB)).unwrap();
    let broken = dir.path().join("broken-gitlab.yml");
    std::fs::write(&broken, gitlab.replace("parallel: 4", "parallel: many")).unwrap();
    let run = tool(
        "check-jsonschema",
        &[
            "--builtin-schema",
            "vendor.gitlab-ci",
            broken.to_str().unwrap(),
        ],
    );
    assert_ne!(run.code, 0, "{}", run.all());
}

/// The zoo-runner commands of a CI file: every line (of a `run:` block or a `script:` list)
/// that starts with `zoo-runner`. A line that calls it anywhere else fails the test, so no
/// command escapes.
fn runner_commands(path: &str) -> Vec<String> {
    let text = std::fs::read_to_string(root().join(path)).unwrap();
    let mut found = Vec::new();
    for line in text.lines() {
        let code = line.trim_start();
        if code.starts_with('#') {
            continue;
        }
        let code = code.strip_prefix("- ").unwrap_or(code);
        let code = code.strip_prefix("run: ").unwrap_or(code);
        if code.starts_with("zoo-runner ") {
            found.push(code.to_string());
            continue;
        }
        for call in [
            "$(zoo-runner",
            "&& zoo-runner",
            "; zoo-runner",
            "| zoo-runner",
            "then zoo-runner",
        ] {
            assert!(
                !code.contains(call),
                "{path}: put each zoo-runner command on a line of its own: {line}"
            );
        }
    }
    found
}

/// A folder where the commands run, with `zoo-runner` on the PATH and the earlier times
/// (durations) where the examples keep them.
struct Workspace {
    dir: tempfile::TempDir,
    path_var: String,
}

impl Workspace {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bin_dir = dir.path().join("bin");
        std::fs::create_dir(&bin_dir).unwrap();
        std::os::unix::fs::symlink(bin(), bin_dir.join("zoo-runner")).unwrap();
        let path_var = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let ws = Workspace { dir, path_var };
        // The default selection's cases, with made-up earlier times, as a runner report.
        let cases = ws.list("zoo-runner --list --format json");
        assert!(cases.len() > 50, "{cases:?}");
        let report = report_of(&cases, |i| 10.0 + (i % 17) as f64 * 30.0);
        for place in ["ci/durations/junit.xml", "durations/junit.xml"] {
            let p = ws.dir.path().join(place);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, &report).unwrap();
        }
        ws
    }

    fn sh(&self, command: &str, durations: &str) -> Run {
        self.sh_with(command, durations, &[])
    }

    /// Like [`Self::sh`], with more variables set.
    fn sh_with(&self, command: &str, durations: &str, vars: &[(&str, &str)]) -> Run {
        let out = Command::new("sh")
            .current_dir(self.dir.path())
            .arg("-c")
            .arg(command)
            .envs(vars.iter().copied())
            .env("PATH", &self.path_var)
            .env("DURATIONS", durations)
            .env("CI_NODE_INDEX", "2")
            .env("CI_NODE_TOTAL", "4")
            .env("CI_PROJECT_DIR", self.dir.path())
            // The GitLab example's variables, as its file sets them.
            .env("ZOO_SPEC", "test-specs/kipoi.toml")
            .env_remove("RERUN_FAILED")
            .env("GITHUB_OUTPUT", self.dir.path().join("github-output"))
            .env_remove("GITHUB_STEP_SUMMARY")
            .output()
            .unwrap();
        out.into()
    }

    /// The case names a `--list --format json` command prints.
    fn list(&self, command: &str) -> Vec<String> {
        let run = self.sh(command, "");
        assert_eq!(run.code, 0, "{command}\n{}", run.all());
        run.stdout
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["name"].as_str().unwrap().to_string()
            })
            .collect()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
}

/// A JUnit report, as the runner writes one, of cases (`runtime::model`) with the given times.
fn report_of(cases: &[String], secs: impl Fn(usize) -> f64) -> String {
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    xml.push_str(
        "<testsuites name=\"zoo-runner\" tests=\"0\" failures=\"0\" errors=\"0\" time=\"0\">\n",
    );
    xml.push_str("  <testsuite name=\"docker:img\" tests=\"0\" failures=\"0\" errors=\"0\" skipped=\"0\" time=\"0\">\n");
    for (i, case) in cases.iter().enumerate() {
        let (runtime, model) = case.split_once("::").unwrap();
        xml.push_str(&format!(
            "    <testcase name=\"{model}\" classname=\"{runtime}:img\" time=\"{:.3}\">\n    </testcase>\n",
            secs(i)
        ));
    }
    xml.push_str("  </testsuite>\n</testsuites>\n");
    xml
}

/// Runs a `merge` line on two reports made for each input it names, and checks its output.
fn run_merge(ws: &Workspace, command: &str) {
    let words = shell_words::split(command).unwrap();
    let mut inputs = Vec::new();
    let mut junit = None;
    let mut it = words.iter().skip(2);
    while let Some(word) = it.next() {
        match word.as_str() {
            "--junit" => junit = it.next().cloned(),
            "--summary" => {
                it.next();
            }
            other => inputs.push(other.to_string()),
        }
    }
    assert!(!inputs.is_empty(), "{command}");
    for (n, input) in inputs.iter().enumerate() {
        for shard in 0..2 {
            let file = ws.path(&format!("{input}/part-{n}-{shard}/junit.xml"));
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            let cases = [
                format!("docker::m{n}-{shard}"),
                format!("docker::k{n}-{shard}"),
            ];
            std::fs::write(file, report_of(&cases, |i| i as f64)).unwrap();
        }
    }
    let run = ws.sh(command, "");
    assert_eq!(run.code, 0, "{command}\n{}", run.all());
    let out = junit.expect("merge --junit");
    let text = read_junit(&ws.path(&out));
    let doc = roxmltree::Document::parse(&text).unwrap();
    assert_eq!(
        doc.root_element().attribute("tests"),
        Some((inputs.len() * 4).to_string().as_str())
    );
}

/// Runs every runner command of a file; `durations` is what `$DURATIONS` holds there.
fn check_commands(path: &str, durations: &str) -> usize {
    let commands = runner_commands(path);
    let ws = Workspace::new();
    let everything: BTreeSet<String> = ws
        .list("zoo-runner --list --format json")
        .into_iter()
        .collect();
    let mut jobs: Vec<String> = Vec::new();
    for command in &commands {
        let mut words = command.split_whitespace().skip(1);
        match words.next() {
            Some("matrix") => {
                for d in ["", durations] {
                    let run = ws.sh(command, d);
                    assert_eq!(run.code, 0, "{command}\n{}", run.all());
                }
                let json = std::fs::read_to_string(ws.path("matrix.json")).unwrap();
                let v: serde_json::Value = serde_json::from_str(&json).unwrap();
                jobs = v["include"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|j| j["args"].as_str().unwrap().to_string())
                    .collect();
                assert!(!jobs.is_empty(), "{json}");
            }
            Some("merge") => run_merge(&ws, command),
            _ if command.contains("${{ matrix.args }}") => {
                assert!(!jobs.is_empty(), "{path}: the matrix comes first");
                let mut union = BTreeSet::new();
                for args in &jobs {
                    let line = command.replace("${{ matrix.args }}", args);
                    let listed = ws.list(&format!("{line} --list --format json"));
                    assert!(!listed.is_empty(), "{line}");
                    union.extend(listed);
                }
                assert_eq!(union, everything, "the jobs of {path} test the whole zoo");
            }
            _ => {
                assert!(!command.contains("${{"), "{path}: {command}");
                for d in ["", durations] {
                    let run = ws.sh(&format!("{command} --list --format json"), d);
                    assert_eq!(run.code, 0, "{command} (DURATIONS={d})\n{}", run.all());
                    assert!(!run.stdout.is_empty(), "{command}: lists its share");
                    if !d.is_empty() && command.contains("time:auto") {
                        assert!(run.stderr.contains("CI_NODE_INDEX=2"), "{}", run.stderr);
                    }
                }
            }
        }
    }
    commands.len()
}

#[test]
fn every_runner_command_of_the_github_workflow_runs() {
    let _daemon = daemon::shared();
    assert_eq!(
        check_commands(GITHUB, "ci/durations"),
        3,
        "matrix, share, merge"
    );
}

#[test]
fn every_runner_command_of_the_gitlab_pipeline_runs() {
    let _daemon = daemon::shared();
    assert_eq!(
        check_commands(GITLAB, "durations/junit.xml"),
        2,
        "share, merge"
    );
}

/// The GitHub workflow's "rerun failed" path: its matrix line, given the last merged report
/// (`RERUN`, set when the manual input is ticked), plans jobs for just the cases that did not
/// pass there.
#[test]
fn the_github_rerun_path_plans_jobs_for_what_failed() {
    let _daemon = daemon::shared();
    let ws = Workspace::new();
    let everything = ws.list("zoo-runner --list --format json");
    let failed: BTreeSet<String> = everything.iter().step_by(9).cloned().collect();
    let mut report = report_of(&everything, |_| 30.0);
    for case in &failed {
        let model = case.split_once("::").unwrap().1;
        let open =
            format!("<testcase name=\"{model}\" classname=\"docker:img\" time=\"30.000\">\n");
        assert!(report.contains(&open), "{open}");
        report = report.replace(
            &open,
            &format!("{open}      <failure type=\"failure\" message=\"boom\"/>\n"),
        );
    }
    let last = ws.path("ci/last/junit.xml");
    std::fs::create_dir_all(last.parent().unwrap()).unwrap();
    std::fs::write(&last, report).unwrap();
    let matrix = runner_commands(GITHUB)
        .into_iter()
        .find(|c| c.starts_with("zoo-runner matrix") && c.contains("$RERUN"))
        .expect("the matrix line takes $RERUN");
    let run = ws.sh_with(&matrix, "ci/durations", &[("RERUN", "ci/last")]);
    assert_eq!(run.code, 0, "{}", run.all());
    let json = std::fs::read_to_string(ws.path("matrix.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let mut union = BTreeSet::new();
    for job in v["include"].as_array().unwrap() {
        let args = job["args"].as_str().unwrap();
        assert!(args.contains("--rerun-failed ci/last"), "{args}");
        union.extend(ws.list(&format!("zoo-runner {args} --list --format json")));
    }
    assert_eq!(union, failed);
    let text = std::fs::read_to_string(root().join(GITHUB)).unwrap();
    assert!(
        text.contains("rerun_failed:") && text.contains("inputs.rerun_failed"),
        "a manual workflow_dispatch input"
    );
}

#[test]
fn examples_are_where_the_readme_says() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    for path in [GITHUB, GITLAB] {
        assert!(Path::new(&root().join(path)).is_file());
        assert!(readme.contains(path), "the README points at {path}");
    }
}
