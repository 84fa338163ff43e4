//! `--sif-from-docker` and a missing binary. No registry can be reached here, so the real
//! `apptainer pull docker://IMAGE` cannot run: this file uses a STAND-IN script for the binary.
//! The stand-in logs its arguments; on `pull TARGET docker://IMAGE` it copies the fixture SIF
//! to TARGET, and it hands every other call (`--version`, `exec`) to the real Apptainer
//! launcher, so the cases still run in the real Apptainer.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;

fn standin(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let log = dir.join("calls.log");
    let script = dir.join("apptainer-standin");
    let sif = fixture_cache().join("kipoi-fixture.sif");
    let real = root().join("fixtures/apptainer/apptainer");
    std::fs::write(
        &script,
        format!(
            "#!/usr/bin/env bash\n# stand-in: see tests/sif_from_docker_standin.rs\n\
             echo \"$*\" >> '{log}'\n\
             if [ \"$1\" = pull ]; then cp '{sif}' \"$2\"; exit 0; fi\n\
             exec '{real}' \"$@\"\n",
            log = log.display(),
            sif = sif.display(),
            real = real.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, log)
}

#[test]
fn an_image_without_a_sif_is_pulled_when_asked() {
    require_fixture_image();
    let dir = tempfile::tempdir().unwrap();
    let (script, log) = standin(dir.path());
    let sif_dir = dir.path().join("sifs");
    let common_args = [
        "--spec",
        "fixtures/spec.toml",
        "--runtime",
        "singularity",
        "--singularity-bin",
        script.to_str().unwrap(),
        "--sif-dir",
        sif_dir.to_str().unwrap(),
        "--exact",
        "singularity::tiny_linear",
    ];

    // The fixture catalog has no model-to-singularity.json.
    let (run, report) = run_reported(&common_args, &[]);
    assert_eq!(run.code, 101, "{}", run.all());
    let text = report.text();
    assert!(
        text.contains("--sif-from-docker"),
        "the error says how to get a SIF: {text}"
    );

    let mut args = common_args.to_vec();
    args.push("--sif-from-docker");
    let (run, _) = run_reported(&args, &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    let calls = std::fs::read_to_string(&log).unwrap();
    let target = sif_dir.join("local_kipoi-fixture_py3.sif");
    let want = format!("pull {} docker://{FIXTURE_IMAGE}", target.display());
    assert!(calls.lines().any(|l| l == want), "{calls}");
    assert!(
        calls
            .lines()
            .any(|l| l.starts_with("exec --cleanenv --pwd /models/tiny_linear")),
        "{calls}"
    );
}

#[test]
fn a_missing_binary_errors_each_case_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no/such/apptainer");
    let (run, report) = run_reported(
        &[
            "--spec",
            "fixtures/spec.toml",
            "--runtime",
            "singularity",
            "--singularity-bin",
            missing.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(run.code, 101, "{}", run.all());
    let text = report.text();
    let doc = report.doc();
    let errors = elements(&doc, "error");
    assert_eq!(errors.len(), 3);
    assert!(
        errors[0]
            .attribute("message")
            .unwrap()
            .contains(missing.to_str().unwrap()),
        "{text}"
    );
}
