//! The runner's own prediction check, end to end: the real kipoi in the fixture images built by
//! fixtures/checked-image/build.sh (local/kipoi-fixture:checked and its -next tag, which changes
//! one dataloader), under Docker and the real Apptainer (their SIFs, made by
//! fixtures/sif/make-sif.sh). kipoi writes the predictions with its HDF5 writer (`-o {output}`);
//! the runner reads every output and compares it with the model's test.expect, or with the
//! predictions an earlier run saved.

use crate::helpers::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const SPEC: &str = "fixtures/spec.toml";
const CHECKED: &str = "local/kipoi-fixture:checked";
const NEXT: &str = "local/kipoi-fixture:checked-next";

/// Fails with a useful message when the checked images or their SIFs are missing.
fn require_checked_fixtures() {
    require_fixture_image();
    let out = Command::new("docker")
        .args(["image", "inspect", "-f", "{{.Id}}", CHECKED, NEXT])
        .output()
        .expect("the docker CLI runs");
    assert!(
        out.status.success(),
        "{CHECKED} or {NEXT} is missing: run `bash fixtures/build.sh`"
    );
    for sif in [checked_sif(), next_sif()] {
        assert!(
            sif.is_file(),
            "{} is missing: run `bash fixtures/build.sh`",
            sif.display()
        );
    }
}

fn checked_sif() -> PathBuf {
    fixture_cache().join("kipoi-fixture-checked.sif")
}

fn next_sif() -> PathBuf {
    fixture_cache().join("kipoi-fixture-checked-next.sif")
}

/// `args` under both runtimes (the real Apptainer through the fixture's launcher), with a SIF
/// folder of their own.
fn both<'a>(sif_dir: &'a Path, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend([
        "--runtime",
        "all",
        "--singularity-bin",
        "fixtures/apptainer/apptainer",
        "--sif-dir",
        sif_dir.to_str().unwrap(),
    ]);
    all
}

/// fixtures/spec.toml with its catalog replaced by `catalog`, and `extra` TOML appended.
fn spec_with(dir: &Path, catalog: &Path, extra: &str) -> String {
    let text = std::fs::read_to_string(root().join(SPEC)).unwrap();
    let text = text.replace(
        "catalog = \"catalog\"",
        &format!("catalog = {:?}", catalog.display().to_string()),
    );
    let path = dir.join("spec.toml");
    std::fs::write(&path, format!("{text}\n{extra}")).unwrap();
    path.display().to_string()
}

/// The failure message of `model`'s testcase in the suite of `runtime`.
fn failure_of(report: &Report, runtime: &str, model: &str) -> String {
    let doc = report.doc();
    let case = doc
        .descendants()
        .find(|n| {
            n.has_tag_name("testcase")
                && n.attribute("name") == Some(model)
                && n.attribute("classname")
                    .is_some_and(|c| c.starts_with(&format!("{runtime}:")))
        })
        .unwrap_or_else(|| panic!("{runtime}:{model} in the report"));
    child_message(case, "failure").to_string()
}

/// kipoi compares the first output of a dict and stops (kipoi-utils' compare_numpy_dict takes
/// the None of a successful assert for a mismatch), so it passes checked/two_outputs, whose
/// test.expect is wrong in its second output; the runner compares every output and fails it,
/// naming preds/b. checked/within_tolerance, 1e-6 off, passes within precision_decimal 6, and
/// fails an exact comparison.
#[test]
fn every_output_is_compared_where_kipoi_compares_the_first_only() {
    let _daemon = daemon::shared();
    require_checked_fixtures();
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("summary.md");
    let models = "--model=checked/two_outputs,checked/within_tolerance";
    let args = both(
        dir.path(),
        &[
            "--spec",
            SPEC,
            models,
            "--summary",
            summary.to_str().unwrap(),
        ],
    );
    let (run, report) = run_reported(&args, &[]);
    assert_eq!(run.code, 101, "{}", run.all());
    for runtime in ["docker", "singularity"] {
        assert_status(&run, &format!("{runtime}::checked/two_outputs"), "FAILED");
        assert_status(&run, &format!("{runtime}::checked/within_tolerance"), "ok");
        let message = failure_of(&report, runtime, "checked/two_outputs");
        assert!(
            message.contains("1 of 3 output(s)")
                && message.contains("preds/b: 5 of 10 elements off")
                && !message.contains("preds/a:"),
            "{message}"
        );
    }
    let md = std::fs::read_to_string(&summary).unwrap();
    let predictions = md
        .split("### Predictions")
        .nth(1)
        .and_then(|s| s.split("### Slowest").next())
        .unwrap_or_else(|| panic!("a Predictions section\n{md}"));
    normalise::run_output().bind(|| {
        insta::assert_snapshot!("two_outputs_stdout", run.stdout);
        insta::assert_snapshot!("two_outputs_summary_predictions", predictions);
    });
    let doc = report.doc();
    let close = testcase(&doc, "checked/within_tolerance");
    let fact = case_fact(close, "predictions").unwrap_or_default();
    assert!(fact.starts_with("same: 2 output(s)"), "{fact}");

    // kipoi's own check, on the same image: it passes the wrong second output.
    let own = tempfile::tempdir().unwrap();
    let spec = spec_with(
        own.path(),
        &root().join("fixtures/catalog"),
        "[models.\"checked/two_outputs\"]\ncommand = \"kipoi test /models/{model} --source=dir\"",
    );
    let args = both(
        own.path(),
        &["--spec", &spec, "--model", "checked/two_outputs"],
    );
    let (run, _) = run_reported(&args, &[]);
    assert_eq!(run.code, 0, "kipoi's check passes it\n{}", run.all());
    assert!(
        run.stdout.contains("test docker::checked/two_outputs"),
        "{}",
        run.all()
    );

    // An exact comparison (numpy's default, rtol 1e-7) fails what decimal 6 passes.
    let exact = tempfile::tempdir().unwrap();
    let spec = spec_with(
        exact.path(),
        &root().join("fixtures/catalog"),
        "[models.\"checked/within_tolerance\".predictions]\nrtol = 1e-7",
    );
    let (run, report) = run_reported(
        &["--spec", &spec, "--model", "checked/within_tolerance"],
        &[],
    );
    assert_eq!(run.code, 101, "{}", run.all());
    let message = failure_of(&report, "docker", "checked/within_tolerance");
    assert!(
        message.contains("rtol 1e-7, atol 0)") && message.contains("preds: "),
        "{message}"
    );
}

/// A maintainer's release check: predictions saved on the current image, then compared on the
/// new one. checked/dataloader's dataloader changed in the -next tag (its inputs doubled);
/// kipoi's own check feeds the stored inputs to the model and cannot see it, the comparison
/// does, under both runtimes, and the summary (of the run, and of `merge`) says by how much.
#[test]
fn a_dataloader_changed_between_two_image_tags_is_caught() {
    let _daemon = daemon::shared();
    require_checked_fixtures();
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("saved");
    let save = both(
        dir.path(),
        &[
            "--spec",
            SPEC,
            "--model",
            "checked/dataloader",
            "--save-predictions",
            saved.to_str().unwrap(),
        ],
    );
    let (run, _) = run_reported(&save, &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    for runtime in ["docker", "singularity"] {
        let file = saved.join(runtime).join("checked/dataloader.h5");
        assert!(file.is_file(), "{} saved\n{}", file.display(), run.all());
    }

    // The new image version: the model's catalog entry names the -next tag and its SIF.
    let catalog = dir.path().join("catalog");
    write_catalog(&catalog, &[("checked/dataloader", NEXT)], None);
    let out = Command::new("bash")
        .arg(root().join("fixtures/sif/catalog-entry.sh"))
        .arg(next_sif())
        .arg(&catalog)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let spec = spec_with(dir.path(), &catalog, "");
    let summary = dir.path().join("summary.md");
    let compare = both(
        dir.path(),
        &[
            "--spec",
            &spec,
            "--compare-predictions",
            saved.to_str().unwrap(),
            "--summary",
            summary.to_str().unwrap(),
        ],
    );
    let (run, report) = run_reported(&compare, &[]);
    assert_eq!(run.code, 101, "{}", run.all());
    for runtime in ["docker", "singularity"] {
        assert_status(&run, &format!("{runtime}::checked/dataloader"), "FAILED");
        let message = failure_of(&report, runtime, "checked/dataloader");
        assert!(
            message.contains(&format!("the predictions saved under {runtime}"))
                && message.contains("inputs: 20 of 20 elements off")
                && message.contains("preds: 15 of 15 elements off"),
            "{message}"
        );
    }
    let md = std::fs::read_to_string(&summary).unwrap();
    assert!(md.contains("### Predictions (2 changed)"), "{md}");

    // `merge` keeps the section: it reads the facts back from the report.
    let merged = dir.path().join("merged.xml");
    let merged_md = dir.path().join("merged.md");
    let run_merge = runner(&[
        "merge",
        "--junit",
        merged.to_str().unwrap(),
        "--summary",
        merged_md.to_str().unwrap(),
        report.path(),
    ]);
    assert_eq!(run_merge.code, 0, "{}", run_merge.all());
    let merged_text = std::fs::read_to_string(&merged_md).unwrap();
    let section = |md: &str| {
        md.split("### Predictions")
            .nth(1)
            .and_then(|s| s.split("### Slowest").next())
            .map(str::to_string)
            .unwrap_or_default()
    };
    assert_eq!(section(&merged_text), section(&md));
    normalise::run_output().bind(|| {
        insta::assert_snapshot!("dataloader_changed_predictions", section(&md));
    });

    // kipoi's own check on the new image passes: it never looks at the dataloader.
    let own = tempfile::tempdir().unwrap();
    let spec = spec_with(
        own.path(),
        &catalog,
        "[models.\"checked/dataloader\"]\ncommand = \"kipoi test /models/{model} --source=dir\"",
    );
    let (run, _) = run_reported(&["--spec", &spec], &[]);
    assert_eq!(run.code, 0, "kipoi's check misses it\n{}", run.all());
}

/// What cannot be compared fails with a message that names the file: no predictions written, a
/// file that does not parse, a reference that is another model's, a reference that is not in
/// the image, nothing saved for the model.
#[test]
fn predictions_that_cannot_be_compared_fail_naming_the_file() {
    let _daemon = daemon::shared();
    require_checked_fixtures();
    let dir = tempfile::tempdir().unwrap();
    let extra = r#"
[models."checked/within_tolerance"]
command = "sh -c ': {output}'"
[models."checked/dataloader"]
command = "sh -c 'echo not hdf5 > {output}'"
[models."checked/two_outputs".predictions]
reference = "/models/checked/dataloader/expect.h5"
"#;
    let spec = spec_with(dir.path(), &root().join("fixtures/catalog"), extra);
    let (run, report) = run_reported(
        &[
            "--spec",
            &spec,
            "--model",
            "checked/two_outputs,checked/within_tolerance,checked/dataloader",
        ],
        &[],
    );
    assert_eq!(run.code, 101, "{}", run.all());
    let messages: Vec<String> = [
        "checked/within_tolerance",
        "checked/dataloader",
        "checked/two_outputs",
    ]
    .iter()
    .map(|m| format!("{m}: {}", failure_of(&report, "docker", m)))
    .collect();

    // A reference the image does not hold, and a model nothing was saved for.
    let extra =
        "[models.\"checked/two_outputs\".predictions]\nreference = \"/models/gone/expect.h5\"";
    let other = tempfile::tempdir().unwrap();
    let spec = spec_with(other.path(), &root().join("fixtures/catalog"), extra);
    let (run, report) = run_reported(&["--spec", &spec, "--model", "checked/two_outputs"], &[]);
    assert_eq!(run.code, 101, "{}", run.all());
    let gone = failure_of(&report, "docker", "checked/two_outputs");
    let empty = other.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (run, report) = run_reported(
        &[
            "--spec",
            SPEC,
            "--model",
            "checked/dataloader",
            "--compare-predictions",
            empty.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(run.code, 101, "{}", run.all());
    let unsaved = failure_of(&report, "docker", "checked/dataloader");
    let all = format!(
        "{}\nchecked/two_outputs (gone): {gone}\nchecked/dataloader (unsaved): {unsaved}",
        messages.join("\n")
    );
    normalise::run_output().bind(|| insta::assert_snapshot!("unusable_predictions", all));

    // A folder to compare with that is not there is an input error before anything runs.
    let missing = other.path().join("missing");
    let run = runner(&[
        "--spec",
        SPEC,
        "--compare-predictions",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains("--compare-predictions") && run.stderr.contains("missing"),
        "{}",
        run.all()
    );
}
