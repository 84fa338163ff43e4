//! The runner's own prediction check, after a case's command exited 0: its predictions file
//! read from the case's output folder (mounted at `{output}`'s folder), compared with a
//! reference output by output, kept with `--save-predictions`. The reference is the
//! predictions an earlier run saved (`--compare-predictions DIR`), else the zoo's expected file
//! the spec names (copied out of the image by the dispatcher, in the case's image), else none:
//! then the file is only read.
//!
//! Saved predictions are one file per runtime and model: `DIR/RUNTIME/MODEL.EXT` (a model's
//! `/` makes folders).

pub mod compare;
pub mod read;

use std::path::{Path, PathBuf};

use std::time::Duration;

use crate::config::predictions::{PredictionPlan, CONTAINER_DIR};
use crate::config::spec::Network;
use crate::error_chain::chain;
use crate::record::predictions::{CheckResult, PredictionCheck, Reference};
use crate::run::verdict;
use crate::runtime::{Ended, Ready, RunRequest, Runtime};

/// How long copying the spec's reference out of the image may take.
const REFERENCE_COPY_TIMEOUT: Duration = Duration::from_secs(120);

/// What the run does with predictions besides the spec's check.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Where the cases' output folders are made (beside the report, removed with it).
    pub outputs: PathBuf,
    /// `--save-predictions DIR`.
    pub save: Option<PathBuf>,
    /// `--compare-predictions DIR`.
    pub compare: Option<PathBuf>,
}

/// The output folder of one attempt of a case: `OUTPUTS/CASE-ATTEMPT`, the case's name made
/// into one plain folder name.
pub fn output_dir(outputs: &Path, case_name: &str, attempt: u32) -> PathBuf {
    let plain: String = case_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    // Two names that differ only where `_` stands in stay apart.
    let hash = case_name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    outputs.join(format!("{plain}-{:08x}-{attempt}", hash as u32))
}

/// Makes an output folder that the container's user, whoever it is, can write in.
pub fn make_output_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))
}

/// The command that copies the spec's reference out of the image into the output folder.
pub fn copy_command(plan: &PredictionPlan) -> Option<Vec<String>> {
    let reference = plan.reference.clone()?;
    let copy = plan.reference_copy()?;
    Some(vec![
        "cp".into(),
        "--".into(),
        reference,
        format!("{CONTAINER_DIR}/{copy}"),
    ])
}

/// Where `--save-predictions DIR` keeps a model's predictions under a runtime.
pub fn saved_path(dir: &Path, runtime: &str, model: &str, file: &str) -> PathBuf {
    let mut path = dir.join(runtime);
    let parts: Vec<&str> = model.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        let plain = match *part {
            "" | "." | ".." => "_",
            other => other,
        };
        if i + 1 == parts.len() {
            let ending = crate::config::predictions::Format::ending(file);
            path.push(format!("{plain}{ending}"));
        } else {
            path.push(plain);
        }
    }
    path
}

/// The predictions saved for `model` in `dir`: this runtime's, else those of the one other
/// runtime that has them (so Apptainer's can be checked against Docker's). An error says what
/// is missing, naming the file.
pub fn saved_reference(
    dir: &Path,
    runtime: &str,
    model: &str,
    file: &str,
) -> Result<Reference, Unavailable> {
    let own = saved_path(dir, runtime, model, file);
    if own.is_file() {
        return Ok(Reference::Saved {
            path: own,
            runtime: runtime.to_string(),
        });
    }
    let others: Vec<(PathBuf, String)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = saved_path(dir, &name, model, file);
            (name != runtime && path.is_file()).then_some((path, name))
        })
        .collect();
    match others.as_slice() {
        [(path, other)] => Ok(Reference::Saved {
            path: path.clone(),
            runtime: other.clone(),
        }),
        _ => Err(Unavailable {
            file: own.display().to_string(),
            why: "no predictions were saved for this model there (--compare-predictions takes \
                  a folder that --save-predictions filled)"
                .into(),
        }),
    }
}

/// A reference that cannot be had: the file as the user knows it, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    pub file: String,
    pub why: String,
}

/// The case a check is for.
pub struct Subject<'a> {
    /// `runtime::model`, for messages.
    pub case: &'a str,
    pub model: &'a str,
    pub runtime: &'a str,
}

/// A case's predictions, read from its output folder and compared with the saved ones
/// (`--compare-predictions`) or the spec's reference, copied out of the image with `cp` in the
/// case's image (the request's working directory, caches and volumes; no network).
pub async fn check_case(
    runtime: &dyn Runtime,
    ready: &Ready,
    request: &RunRequest,
    case: &Subject<'_>,
    plan: &PredictionPlan,
    dir: &Path,
    options: &Options,
) -> PredictionCheck {
    let (plan, dir) = (plan.clone(), dir.to_path_buf());
    let runtime_name = case.runtime;
    let reference = if let Some(saved) = &options.compare {
        Some(
            saved_reference(saved, runtime_name, case.model, &plan.file).map(|r| {
                let path = match &r {
                    Reference::Saved { path, .. } => path.clone(),
                    Reference::Expected { path } => PathBuf::from(path),
                };
                (r, path)
            }),
        )
    } else if let Some(command) = copy_command(&plan) {
        let copy = RunRequest {
            case_name: format!("{} (its reference)", case.case),
            command,
            network: Network::None,
            timeout: REFERENCE_COPY_TIMEOUT,
            memory: None,
            keep: 4096,
            ..request.clone()
        };
        let exec = runtime.run(ready, &copy).await;
        let stderr = exec.stderr.finish().text();
        match &exec.ended {
            Ended::Exited { code: 0 } => {
                let name = plan.reference_copy().unwrap_or_default();
                let path = plan.reference.clone().unwrap_or_default();
                Some(Ok((Reference::Expected { path }, dir.join(name))))
            }
            ended => {
                let said = stderr.trim();
                let how = verdict::ran(ended, "", &stderr).message();
                Some(Err(Unavailable {
                    file: plan.reference.clone().unwrap_or_default(),
                    why: if said.is_empty() || how.contains(said) {
                        format!("cannot copy it out of the image: `cp` {how}")
                    } else {
                        format!("cannot copy it out of the image: `cp` {how} ({said})")
                    },
                }))
            }
        }
    } else {
        None
    };
    let save = options
        .save
        .as_ref()
        .map(|d| saved_path(d, runtime_name, case.model, &plan.file));
    let file = plan.file.clone();
    let checked = tokio::task::spawn_blocking(move || check(&plan, &dir, reference, save)).await;
    checked.unwrap_or_else(|e| PredictionCheck {
        file: file.clone(),
        reference: None,
        tolerance: String::new(),
        result: CheckResult::Unusable {
            file: "the predictions".into(),
            why: format!("the check stopped: {e}"),
        },
        saved: None,
    })
}

/// Reads the case's predictions from `dir` and compares them with `reference` (a file on the
/// host, or why there is none to be had); saves them to `save` when asked.
pub fn check(
    plan: &PredictionPlan,
    dir: &Path,
    reference: Option<Result<(Reference, PathBuf), Unavailable>>,
    save: Option<PathBuf>,
) -> PredictionCheck {
    let mut found = PredictionCheck {
        file: plan.file.clone(),
        reference: None,
        tolerance: plan.tolerance.describe(),
        result: CheckResult::Read { outputs: 0 },
        saved: None,
    };
    let path = dir.join(&plan.file);
    let actual = match read::read(&path, plan.format) {
        Ok(outputs) => outputs,
        Err(e) => {
            // Said as the command knows the file (`{output}`), not by its folder on the host.
            let why = match e {
                read::ReadError::Missing { .. } => {
                    "it does not exist: the command wrote no predictions there".to_string()
                }
                other => chain(&other).replace(&format!("`{}` ", path.display()), "it "),
            };
            found.result = CheckResult::Unusable {
                file: plan.container_path(),
                why,
            };
            return found;
        }
    };
    if let Some(target) = save {
        match save_copy(&path, &target) {
            Ok(()) => found.saved = Some(target),
            Err(e) => crate::events::note(format!(
                "--save-predictions: cannot save `{}` to `{}`: {e}",
                plan.file,
                target.display()
            )),
        }
    }
    let (reference, on_host) = match reference {
        None => {
            found.result = CheckResult::Read {
                outputs: actual.len(),
            };
            return found;
        }
        Some(Err(Unavailable { file, why })) => {
            found.result = CheckResult::Unusable { file, why };
            return found;
        }
        Some(Ok(pair)) => pair,
    };
    let shown = match &reference {
        Reference::Expected { path } => path.clone(),
        Reference::Saved { path, .. } => path.display().to_string(),
    };
    found.reference = Some(reference);
    let expected = match read::read(&on_host, plan.format) {
        Ok(outputs) => outputs,
        Err(e) => {
            // The copy's name means nothing to a reader: the file is the reference's.
            let why = match e {
                read::ReadError::Missing { .. } => "it does not exist".to_string(),
                other => chain(&other).replace(&format!("`{}` ", on_host.display()), "it "),
            };
            found.result = CheckResult::Unusable { file: shown, why };
            return found;
        }
    };
    if let Some(why) = compare::foreign(&actual, &expected) {
        found.result = CheckResult::Unusable { file: shown, why };
        return found;
    }
    found.result = CheckResult::Compared {
        outputs: compare::compare(&actual, &expected, plan.tolerance),
    };
    found
}

/// Copies the file into place through a temporary file beside it, so a reader never sees half.
fn save_copy(from: &Path, to: &Path) -> std::io::Result<()> {
    let dir = to.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::fs::copy(from, tmp.path())?;
    tmp.persist(to).map_err(|e| e.error)?;
    Ok(())
}

/// `--save-predictions` and `--compare-predictions` are checked before any case runs: a folder
/// to fill that cannot be made or written in, a folder to read that is not there.
pub fn check_folders(save: Option<&Path>, compare: Option<&Path>) -> Result<(), String> {
    if let Some(dir) = save {
        std::fs::create_dir_all(dir)
            .and_then(|()| tempfile::tempfile_in(dir).map(drop))
            .map_err(|e| format!("--save-predictions `{}`: {e}", dir.display()))?;
    }
    if let Some(dir) = compare {
        if !dir.is_dir() {
            return Err(format!(
                "--compare-predictions `{}` is not a folder: give the folder an earlier \
                 --save-predictions filled",
                dir.display()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::predictions::{Format, Tolerance};
    use crate::run::predictions::read::tests::npy_f4;

    fn plan(reference: Option<&str>) -> PredictionPlan {
        PredictionPlan {
            file: "p.npy".into(),
            format: Format::Npy,
            reference: reference.map(str::to_string),
            tolerance: Tolerance::Decimal(6),
        }
    }

    #[test]
    fn saved_predictions_are_one_file_per_runtime_and_model() {
        let dir = Path::new("/s");
        assert_eq!(
            saved_path(dir, "docker", "KipoiSplice/4", "predictions.h5"),
            Path::new("/s/docker/KipoiSplice/4.h5")
        );
        assert_eq!(
            saved_path(dir, "singularity", "../x", "p.tsv"),
            Path::new("/s/singularity/_/x.tsv")
        );
        let a = output_dir(Path::new("/o"), "docker::a/b", 1);
        let b = output_dir(Path::new("/o"), "docker::a_b", 1);
        assert_ne!(a, b);
        assert!(a.to_string_lossy().starts_with("/o/docker__a_b-"));
    }

    #[test]
    fn another_runtimes_saved_predictions_serve_when_this_one_has_none() {
        let dir = tempfile::tempdir().unwrap();
        let err = saved_reference(dir.path(), "singularity", "m", "p.h5").unwrap_err();
        assert!(err.file.ends_with("singularity/m.h5"), "{err:?}");
        let docker = saved_path(dir.path(), "docker", "m", "p.h5");
        std::fs::create_dir_all(docker.parent().unwrap()).unwrap();
        std::fs::write(&docker, "x").unwrap();
        let found = saved_reference(dir.path(), "singularity", "m", "p.h5").unwrap();
        assert_eq!(
            found,
            Reference::Saved {
                path: docker,
                runtime: "docker".into()
            }
        );
    }

    #[test]
    fn a_check_reads_compares_and_saves() {
        let out = tempfile::tempdir().unwrap();
        let saved = tempfile::tempdir().unwrap();
        std::fs::write(out.path().join("p.npy"), npy_f4(&[2], &[1.0, 2.0], false)).unwrap();
        let reference = out.path().join("ref.npy");
        std::fs::write(&reference, npy_f4(&[2], &[1.0, 3.0], false)).unwrap();
        let target = saved_path(saved.path(), "docker", "G/m", "p.npy");
        let r = Reference::Expected {
            path: "/models/m/expect.npy".into(),
        };
        let found = check(
            &plan(Some("/models/m/expect.npy")),
            out.path(),
            Some(Ok((r.clone(), reference.clone()))),
            Some(target.clone()),
        );
        assert!(found.failed(), "{found:?}");
        assert_eq!(found.saved.as_deref(), Some(target.as_path()));
        assert!(target.is_file());
        assert!(
            found.diff().contains("array: 1 of 2 elements off"),
            "{}",
            found.diff()
        );

        // No predictions file: a failure that names it.
        let empty = tempfile::tempdir().unwrap();
        let found = check(&plan(None), empty.path(), None, None);
        assert!(found.failed());
        assert!(
            found.headline().contains("/zoo-runner/output/p.npy")
                && found.headline().contains("does not exist")
                && !found
                    .headline()
                    .contains(&empty.path().display().to_string()),
            "{}",
            found.headline()
        );

        // A reference that does not parse is named as the spec names it.
        std::fs::write(&reference, "garbage").unwrap();
        let found = check(
            &plan(Some("/models/m/expect.npy")),
            out.path(),
            Some(Ok((r, reference))),
            None,
        );
        assert!(
            found.headline().contains("`/models/m/expect.npy`")
                && found.headline().contains("magic"),
            "{}",
            found.headline()
        );
    }
}
