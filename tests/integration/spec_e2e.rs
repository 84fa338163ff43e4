//! End to end, test specs: commands split like a POSIX shell (or given as arrays) reach a real
//! container word for word; spaces in comma lists are trimmed; bad spec values and a missing
//! catalog folder stop the runner with exit 2 before any container starts. Specs and catalogs
//! are written to temporary folders; cases run in the fixture image with network `none`.

use std::path::Path;

use crate::helpers::*;

/// Writes `spec.toml` (with `text` after a common head) and a catalog beside it.
fn write_spec(dir: &Path, models: &[&str], text: &str) -> String {
    let pairs: Vec<(&str, &str)> = models.iter().map(|m| (*m, FIXTURE_IMAGE)).collect();
    write_catalog(&dir.join("catalog"), &pairs, None);
    let path = dir.join("spec.toml");
    let head = "catalog = \"catalog\"\nnetwork = \"none\"\ntimeout = \"2m\"\n";
    std::fs::write(&path, format!("{head}{text}")).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn quoted_commands_run_word_for_word() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(
        dir.path(),
        &["Shell/a", "Shell/b"],
        r#"command = "sh -c 'echo first {model}; echo \"second {group}\"'"
[models."Shell/b"]
command = ["python3", "-c", "import sys; print('argv', sys.argv[1:])", "{model}", "two words"]
"#,
    );
    // Spaces after the comma are trimmed: both models run.
    let (run, report) = run_reported(
        &[
            "--spec",
            &spec,
            "--model",
            "Shell/a, Shell/b",
            "--store-success-output",
        ],
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert_status(&run, "docker::Shell/a", "ok");
    assert_status(&run, "docker::Shell/b", "ok");
    let doc = report.doc();
    let a = child_text(testcase(&doc, "Shell/a"), "system-out");
    assert_eq!(a.trim_end(), "first Shell/a\nsecond Shell");
    let b = child_text(testcase(&doc, "Shell/b"), "system-out");
    assert_eq!(b.trim_end(), "argv ['Shell/b', 'two words']");
}

#[test]
fn bad_spec_values_stop_the_run_before_any_container() {
    let _daemon = daemon::shared();
    // Each names the spec's line and column and what is wrong: `at least 6.0 MiB`, `timeout`,
    // `./data` is neither an absolute host path..., `unknown placeholder `{modl}``, `missing
    // closing quote`. The snapshot shows each spec with its line numbers.
    let cases = [
        "command = \"x\"\nmemory = \"1m\"\n",
        "command = \"x\"\n[models.Shell]\ntimeout = \"0s\"\n",
        "command = \"x\"\nvolumes = [\"./data:/data\"]\n",
        "command = \"kipoi test {modl}\"\n",
        "command = \"sh -c 'echo a\"\n",
    ];
    let mut said = String::new();
    for text in cases {
        let dir = tempfile::tempdir().unwrap();
        let spec = write_spec(dir.path(), &["Shell/a"], text);
        let args = ["--spec", spec.as_str()];
        let child = spawn_runner(&args, &[]);
        let pid = child.id();
        let run = finish(child);
        assert_eq!(run.code, 2, "{text}\n{}", run.all());
        let label = format!("org.zoo-runner.pid={pid}");
        assert!(containers_with_label(&label).is_empty(), "{text}");
        said.push_str("--- spec.toml\n");
        for (n, line) in std::fs::read_to_string(&spec).unwrap().lines().enumerate() {
            said.push_str(&format!("{:>2} | {line}\n", n + 1));
        }
        said.push_str(&normalise::transcript(&args, &run));
    }
    normalise::messages().bind(|| insta::assert_snapshot!("bad_spec_values", said));
}

#[test]
fn catalog_errors_say_what_is_wrong_where() {
    let _daemon = daemon::shared();
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), &["Shell/a"], "command = \"x\"\n");
    let gone = dir.path().join("no-such-catalog");
    let args = ["--spec", spec.as_str(), "--catalog", gone.to_str().unwrap()];
    let run = runner(&args);
    assert_eq!(run.code, 2, "{}", run.all());
    // The folder `no-such-catalog` `does not exist`.
    let mut said = normalise::transcript(&args, &run);
    let catalog = dir.path().join("catalog");
    std::fs::write(catalog.join("docker-to-model.json"), "{\n  \"img\": 5\n}\n").unwrap();
    let args = ["--spec", spec.as_str()];
    let run = runner(&args);
    assert_eq!(run.code, 2, "{}", run.all());
    // The file, `line 2, column 10`, `key `img``.
    said.push_str(&normalise::transcript(&args, &run));
    normalise::messages().bind(|| insta::assert_snapshot!("catalog_errors", said));
}

#[test]
fn an_empty_list_item_is_refused_naming_the_flag() {
    let _daemon = daemon::shared();
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), &["Shell/a", "Shell/b"], "command = \"x\"\n");
    let run = runner(&["--spec", &spec, "--model", "Shell/a,,Shell/b"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains("`--model` got an empty model"),
        "{}",
        run.all()
    );
}
