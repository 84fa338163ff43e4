//! `--changed-since REV --models-repo DIR`: the models whose files changed between REV and HEAD
//! of a checkout of the zoo's models repository (for Kipoi, a clone of kipoi/models), for
//! pull-request CI. Model names come from the catalog; a model's folder is its name as a path
//! (relative to DIR, which may also be a folder inside a larger repository).
//!
//! For each changed path (a rename counts as its old and its new path):
//! - inside the folder of one or more models: those models (a model named like its group,
//!   `Basenji`, owns the whole folder);
//! - inside a folder that holds (at REV or HEAD) a `model.yaml` but is no model of the catalog:
//!   a model that was deleted or renamed away; nothing to test, and the run says so;
//! - elsewhere in a group (a `model-template.yaml`, `models.tsv`, a group-level `model.yaml`,
//!   shared files): every model under the nearest folder that holds models;
//! - outside every group (the top-level README, CI files): nothing, and the run says so.
//!
//! git runs supervised ([`GitRun`]): a deadline, a process group of its own, stopped when the
//! run is interrupted.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

use crate::cancel::Cancel;
use crate::config::units::{show_duration, show_size};
use crate::supervise::process::{self, block_on};
use crate::supervise::{Ending, Limits};

/// The file that marks a model's folder in a Kipoi-like models repository.
const MODEL_FILE: &str = "model.yaml";
/// How long one git command may take.
pub const GIT_TIMEOUT: Duration = Duration::from_secs(120);
/// The most output of one git command read (a file list of a large repository is a few MB).
const GIT_OUTPUT_MAX: usize = 64 << 20;

/// How git runs: stopped past `timeout`, and when the run is interrupted (`cancel`).
#[derive(Debug, Clone)]
pub struct GitRun {
    pub timeout: Duration,
    pub cancel: Cancel,
}

impl Default for GitRun {
    /// The default deadline, and a cancel nobody raises.
    fn default() -> Self {
        GitRun {
            timeout: GIT_TIMEOUT,
            cancel: Cancel::new(),
        }
    }
}

#[derive(Debug, Error)]
pub enum ChangedError {
    #[error("--models-repo `{0}` is not a folder: give a checkout of the zoo's models repository")]
    NotAFolder(PathBuf),
    #[error(
        "--models-repo `{repo}` is not a git checkout ({why}): give a clone of the zoo's models \
         repository"
    )]
    NotARepo { repo: PathBuf, why: String },
    #[error("--changed-since `{0}` starts with `-`: give a commit, branch or tag")]
    Dashed(String),
    #[error("--changed-since: git could not be started; install git")]
    NoGit(#[source] std::io::Error),
    #[error(
        "--changed-since `{rev}`: git does not know this revision in `{repo}` ({why}); fetch it \
         first (a shallow clone has no history: `git fetch --deepen` or fetch-depth: 0)"
    )]
    UnknownRev {
        rev: String,
        repo: PathBuf,
        why: String,
    },
    #[error("--changed-since: `git {args}` failed in `{repo}`: {why}")]
    Git {
        args: String,
        repo: PathBuf,
        why: String,
    },
    #[error(
        "--changed-since: `git {args}` in `{repo}` did not finish within {after} and was stopped"
    )]
    GitTimedOut {
        args: String,
        repo: PathBuf,
        after: String,
    },
    #[error("--changed-since: interrupted while `git {args}` ran in `{repo}`; it was stopped")]
    Interrupted { args: String, repo: PathBuf },
}

/// What the changes select.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// The catalog models that changed files select.
    pub models: BTreeSet<String>,
    /// How many paths changed.
    pub paths: usize,
    /// Changed paths outside every group: they select nothing.
    pub outside: Vec<String>,
    /// Model folders no model of the catalog has (deleted or renamed away).
    pub gone: BTreeSet<String>,
}

impl Changes {
    /// One paragraph for stderr: what changed and what it selects.
    pub fn describe(&self, rev: &str) -> String {
        let mut text = format!(
            "--changed-since {rev}: {} changed file(s) select {} model(s)",
            self.paths,
            self.models.len()
        );
        if !self.models.is_empty() {
            text.push_str(&format!(": {}", some(self.models.iter())));
        }
        if !self.outside.is_empty() {
            text.push_str(&format!(
                "; {} file(s) outside every group select nothing: {}",
                self.outside.len(),
                some(self.outside.iter())
            ));
        }
        if !self.gone.is_empty() {
            text.push_str(&format!(
                "; model folder(s) that the catalog does not list (deleted or renamed?) select \
                 nothing: {}",
                some(self.gone.iter())
            ));
        }
        text
    }
}

/// Up to 10 names, then how many more.
fn some<'a>(names: impl ExactSizeIterator<Item = &'a String>) -> String {
    let total = names.len();
    let mut shown: Vec<&str> = names.take(10).map(String::as_str).collect();
    let more = total - shown.len();
    let more_text = format!("(+{more} more)");
    if more > 0 {
        shown.push(&more_text);
    }
    shown.join(", ")
}

/// The models that the changes between `rev` and HEAD in `repo` select, among `models`. Runs
/// git as `run` says, to its end: call it from code that is not async.
pub fn changed_models(
    repo: &Path,
    rev: &str,
    models: &BTreeSet<String>,
    run: &GitRun,
) -> Result<Changes, ChangedError> {
    let git = |args: &[&str]| git(repo, args, run);
    if !repo.is_dir() {
        return Err(ChangedError::NotAFolder(repo.to_path_buf()));
    }
    if rev.starts_with('-') {
        return Err(ChangedError::Dashed(rev.to_string()));
    }
    git(&["rev-parse", "--git-dir"]).map_err(|e| match e {
        ChangedError::Git { why, .. } => ChangedError::NotARepo {
            repo: repo.to_path_buf(),
            why,
        },
        other => other,
    })?;
    let commit = format!("{rev}^{{commit}}");
    let verified = git(&["rev-parse", "--verify", "--quiet", &commit]);
    match verified {
        Err(ChangedError::Git { why, .. }) => {
            return Err(ChangedError::UnknownRev {
                rev: rev.to_string(),
                repo: repo.to_path_buf(),
                why: if why.is_empty() {
                    "no such commit".to_string()
                } else {
                    why
                },
            })
        }
        other => other?,
    };
    let paths = split_z(&git(&[
        "diff",
        "--name-only",
        "-z",
        "--no-renames",
        "--relative",
        rev,
        "HEAD",
        "--",
    ])?);
    let mut marked = BTreeSet::new();
    for side in [rev, "HEAD"] {
        let files = split_z(&git(&["ls-tree", "-r", "-z", "--name-only", side])?);
        marked.extend(files.into_iter().filter_map(|f| model_folder_of(&f)));
    }
    Ok(select(&paths, models, &marked))
}

/// The folder a `model.yaml` marks, or `None` for another file.
fn model_folder_of(path: &str) -> Option<String> {
    path.strip_suffix(MODEL_FILE)
        .and_then(|dir| dir.strip_suffix('/'))
        .filter(|dir| !dir.is_empty())
        .map(str::to_string)
}

/// Maps changed paths to models (see the module's rules). `marked` holds the folders that
/// carry a `model.yaml` at either end.
pub fn select(paths: &[String], models: &BTreeSet<String>, marked: &BTreeSet<String>) -> Changes {
    let mut changes = Changes {
        paths: paths.len(),
        ..Default::default()
    };
    let inside = |path: &str, folder: &str| {
        path.strip_prefix(folder)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    for path in paths {
        let owners: Vec<&String> = models.iter().filter(|m| inside(path, m)).collect();
        if !owners.is_empty() {
            changes.models.extend(owners.into_iter().cloned());
            continue;
        }
        // The nearest enclosing folder that holds models, and on the way up any model folder
        // that the catalog does not know.
        let mut folder = parent(path);
        let mut found = false;
        while let Some(dir) = folder {
            let under: Vec<&String> = models.iter().filter(|m| inside(m, dir)).collect();
            if !under.is_empty() {
                changes.models.extend(under.into_iter().cloned());
                found = true;
                break;
            }
            if marked.contains(dir) {
                changes.gone.insert(dir.to_string());
                found = true;
                break;
            }
            folder = parent(dir);
        }
        if !found {
            changes.outside.push(path.clone());
        }
    }
    changes
}

/// `a/b/c` -> `a/b`; a top-level name has no folder.
fn parent(path: &str) -> Option<&str> {
    path.rsplit_once('/')
        .map(|(dir, _)| dir)
        .filter(|d| !d.is_empty())
}

fn split_z(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect()
}

/// Runs git in `repo` (supervised, as `run` says) and returns its stdout; its stderr is the
/// error's reason.
fn git(repo: &Path, args: &[&str], run: &GitRun) -> Result<Vec<u8>, ChangedError> {
    let mut command = tokio::process::Command::new("git");
    command
        .arg("-C")
        .arg(repo)
        .args(args)
        // No pager, no prompt, and no locale-dependent quoting of the output.
        .env("GIT_PAGER", "cat")
        .env("GIT_TERMINAL_PROMPT", "0");
    let failed = |why: String| ChangedError::Git {
        args: args.join(" "),
        repo: repo.to_path_buf(),
        why,
    };
    let limits = Limits::helper(run.timeout);
    let running = process::run(command, None, GIT_OUTPUT_MAX, &limits, &run.cancel, |_| {});
    let done = block_on(running)
        .map_err(|e| failed(format!("cannot wait for it: {e}")))?
        .map_err(|e| ChangedError::NoGit(e.source))?;
    let status = match done.ending {
        Ending::Exited(status) => status,
        Ending::TimedOut { .. }
        | Ending::Stuck {
            timed_out: true, ..
        } => {
            return Err(ChangedError::GitTimedOut {
                args: args.join(" "),
                repo: repo.to_path_buf(),
                after: show_duration(run.timeout),
            })
        }
        Ending::Interrupted { .. } | Ending::Stuck { .. } => {
            return Err(ChangedError::Interrupted {
                args: args.join(" "),
                repo: repo.to_path_buf(),
            })
        }
        Ending::Lost(why) => return Err(failed(why)),
    };
    if !status.success() {
        return Err(failed(done.stderr.finish().text().trim().to_string()));
    }
    if done.stdout.cut() > 0 {
        return Err(failed(format!(
            "it printed more than the {} the runner reads",
            show_size(2 * GIT_OUTPUT_MAX as u64)
        )));
    }
    let mut out = Vec::new();
    done.stdout
        .finish()
        .reader()
        .and_then(|mut r| r.read_to_end(&mut out))
        .map_err(|e| failed(format!("reading its output failed: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A git repository whose config includes a FIFO nobody writes to: real git blocks for ever
    /// opening it, as it reads its config at its start.
    fn hanging_repo() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join(".git/hang.fifo");
        let sh = |script: &str| {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(script)
                .current_dir(dir.path())
                .output()
                .unwrap();
            assert!(out.status.success(), "{script}: {out:?}");
        };
        sh("git init -q && mkfifo .git/hang.fifo && git config include.path hang.fifo");
        (dir, fifo)
    }

    /// True while a process has the FIFO open to read (git, blocked on it): opening it to
    /// write without blocking fails with ENXIO when nobody reads.
    fn read_by_someone(fifo: &Path) -> bool {
        use std::os::unix::fs::OpenOptionsExt;
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(fifo)
        {
            Ok(_) => true,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::ENXIO), "{e}");
                false
            }
        }
    }

    #[test]
    fn a_git_that_does_not_finish_is_stopped_at_its_deadline() {
        let (dir, fifo) = hanging_repo();
        let run = GitRun {
            timeout: Duration::from_millis(500),
            cancel: Cancel::new(),
        };
        let err = changed_models(dir.path(), "HEAD", &set(&["a"]), &run).unwrap_err();
        assert!(matches!(err, ChangedError::GitTimedOut { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("`git rev-parse --git-dir`") && text.contains("within 500ms"),
            "{text}"
        );
        assert!(!read_by_someone(&fifo), "git is gone");
    }

    #[test]
    fn an_interruption_stops_git() {
        let (dir, fifo) = hanging_repo();
        let cancel = Cancel::new();
        let run = GitRun {
            timeout: GIT_TIMEOUT,
            cancel: cancel.clone(),
        };
        let ctrl_c = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            cancel.raise(libc::SIGINT);
        });
        let err = changed_models(dir.path(), "HEAD", &set(&["a"]), &run).unwrap_err();
        ctrl_c.join().unwrap();
        assert!(matches!(err, ChangedError::Interrupted { .. }), "{err:?}");
        assert!(!read_by_someone(&fifo), "git is gone");
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn paths(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn paths_map_to_models_by_folder_then_group() {
        let models = set(&[
            "Basenji",
            "Tmpl/a",
            "Tmpl/b",
            "Nest/sub/x",
            "Nest/sub/y",
            "Nest/z",
            "Own/m1",
        ]);
        let marked = set(&["Own/m1", "Own/old", "Nest/z"]);
        let pick = |p: &[&str]| select(&paths(p), &models, &marked);
        assert_eq!(pick(&["Basenji/deep/file.py"]).models, set(&["Basenji"]));
        assert_eq!(pick(&["Own/m1/model.yaml"]).models, set(&["Own/m1"]));
        assert_eq!(
            pick(&["Tmpl/model-template.yaml"]).models,
            set(&["Tmpl/a", "Tmpl/b"])
        );
        assert_eq!(
            pick(&["Nest/sub/models.tsv"]).models,
            set(&["Nest/sub/x", "Nest/sub/y"])
        );
        assert_eq!(
            pick(&["Nest/README.md"]).models,
            set(&["Nest/sub/x", "Nest/sub/y", "Nest/z"])
        );
        assert_eq!(
            pick(&["Tmpl/example_files/in.csv"]).models,
            set(&["Tmpl/a", "Tmpl/b"]),
            "a group's shared folder"
        );
        let gone = pick(&["Own/old/model.yaml"]);
        assert!(gone.models.is_empty() && gone.gone == set(&["Own/old"]));
        let outside = pick(&["README.md", ".github/workflows/ci.yml"]);
        assert!(outside.models.is_empty());
        assert_eq!(outside.outside.len(), 2);
        assert!(outside.describe("main").contains("outside every group"));
        // A prefix is no folder: `Basenji2/x` is not Basenji's.
        assert!(!pick(&["Basenji2/x"]).models.contains("Basenji"));
    }
}
