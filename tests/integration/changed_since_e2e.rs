//! `--changed-since REV --models-repo DIR` on a real git repository made here, shaped like
//! kipoi/models: a model named like its group, template groups without model folders, nested
//! groups, a rename and a deletion. The built binary lists what each change selects. And a
//! repository on which git hangs (its config includes a FIFO nobody writes to), for git's
//! deadline and for Ctrl-C while the inputs load.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use crate::helpers::*;

const SHARED: &str = "zoo/shared:v1";

/// The models of the catalog (HEAD's view) and their images.
const MODELS: [(&str, &str); 12] = [
    ("Basenji", "zoo/basenji:v1"),
    ("Tmpl/a", SHARED),
    ("Tmpl/b", SHARED),
    ("Tmpl/c", SHARED),
    ("Nest/sub/x", SHARED),
    ("Nest/sub/y", SHARED),
    ("Nest/z", "zoo/nest:v1"),
    ("Nest/deep/k", "zoo/nest:v1"),
    ("Own/m1", "zoo/own:v1"),
    ("Own/m2", "zoo/own:v1"),
    ("Own/ren2", "zoo/own:v1"),
    ("Other/q", "zoo/other:v1"),
];

/// The files of the base commit.
const BASE_FILES: [&str; 22] = [
    "README.md",
    ".github/workflows/ci.yml",
    "Basenji/model.yaml",
    "Basenji/dataloader.py",
    "Basenji/sub/helper.py",
    "Tmpl/model-template.yaml",
    "Tmpl/models.tsv",
    "Tmpl/example_files/a.csv",
    "Nest/README.md",
    "Nest/sub/model-template.yaml",
    "Nest/sub/models.tsv",
    "Nest/z/model.yaml",
    "Nest/z/model.py",
    "Nest/deep/k/model.yaml",
    "Own/m1/model.yaml",
    "Own/m1/model.py",
    "Own/m2/model.yaml",
    "Own/old/model.yaml",
    "Own/old/model.py",
    "Own/ren/model.yaml",
    "Own/ren/weights.txt",
    "Other/q/model.yaml",
];

fn git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["-c", "user.name=zoo", "-c", "user.email=zoo@localhost"])
        .args([
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn write(repo: &Path, file: &str, text: &str) {
    let path = repo.join(file);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

struct Fixture {
    _dir: tempfile::TempDir,
    repo: std::path::PathBuf,
    spec: String,
    base: String,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("models");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    for file in BASE_FILES {
        write(&repo, file, &format!("{file} v1\n"));
    }
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "base"]);
    let base = git(&repo, &["rev-parse", "HEAD"]);
    let catalog = dir.path().join("catalog");
    write_catalog(&catalog, &MODELS, None);
    let spec = dir.path().join("spec.toml");
    std::fs::write(
        &spec,
        format!(
            "catalog = {:?}\ncommand = \"true\"\nnetwork = \"none\"\nshared_images = [{SHARED:?}]\n",
            catalog.display().to_string()
        ),
    )
    .unwrap();
    Fixture {
        spec: spec.display().to_string(),
        repo,
        base,
        _dir: dir,
    }
}

impl Fixture {
    /// Starts a change from the base commit; `change` edits the work tree, then it is committed.
    fn change(&self, change: impl FnOnce(&Path)) {
        git(&self.repo, &["checkout", "-q", "--detach", &self.base]);
        change(&self.repo);
        git(&self.repo, &["add", "-A"]);
        git(
            &self.repo,
            &["commit", "-q", "--allow-empty", "-m", "change"],
        );
    }

    /// The models `--list --changed-since BASE` selects (with `extra` flags), and stderr.
    fn selected(&self, extra: &[&str]) -> (BTreeSet<String>, String) {
        let mut args = vec![
            "--spec",
            &self.spec,
            "--changed-since",
            &self.base,
            "--models-repo",
            self.repo.to_str().unwrap(),
            "--list",
        ];
        args.extend_from_slice(extra);
        let run = runner(&args);
        assert_eq!(run.code, 0, "{}", run.all());
        let models = run
            .stdout
            .lines()
            .filter_map(|l| l.strip_suffix(": test"))
            .map(|n| n.trim_start_matches("docker::").to_string())
            .collect();
        (models, run.stderr)
    }
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn edit(file: &'static str) -> impl FnOnce(&Path) {
    move |repo| write(repo, file, "changed\n")
}

#[test]
fn each_kind_of_change_selects_its_models() {
    let _daemon = daemon::shared();
    let f = fixture();
    let expectations: [(&str, &str, &[&str]); 7] = [
        // A model named like its group owns the whole folder, subfolders included.
        ("a group-named model", "Basenji/sub/helper.py", &["Basenji"]),
        // Template groups: no folder per model; the template selects them all, on a shared
        // image too (not one per group).
        (
            "a template",
            "Tmpl/models.tsv",
            &["Tmpl/a", "Tmpl/b", "Tmpl/c"],
        ),
        (
            "a group's shared files",
            "Tmpl/example_files/a.csv",
            &["Tmpl/a", "Tmpl/b", "Tmpl/c"],
        ),
        (
            "a nested template group",
            "Nest/sub/model-template.yaml",
            &["Nest/sub/x", "Nest/sub/y"],
        ),
        (
            "the outer group of nested ones",
            "Nest/README.md",
            &["Nest/sub/x", "Nest/sub/y", "Nest/z", "Nest/deep/k"],
        ),
        ("a model's folder", "Nest/z/model.py", &["Nest/z"]),
        (
            "a deep model's folder",
            "Nest/deep/k/model.yaml",
            &["Nest/deep/k"],
        ),
    ];
    for (what, file, want) in expectations {
        f.change(edit(file));
        let (got, stderr) = f.selected(&[]);
        assert_eq!(got, set(want), "{what}: {file}\n{stderr}");
        assert!(
            stderr.contains("--changed-since"),
            "the run says what changed: {stderr}"
        );
    }
}

#[test]
fn renames_deletions_and_files_outside_groups() {
    let _daemon = daemon::shared();
    let f = fixture();
    // A model folder renamed: the new model runs; the old name is no model any more.
    f.change(|repo| {
        git(repo, &["mv", "Own/ren", "Own/ren2"]);
    });
    let (got, stderr) = f.selected(&[]);
    assert_eq!(got, set(&["Own/ren2"]), "{stderr}");
    assert!(
        stderr.contains("Own/ren") && stderr.contains("deleted or renamed"),
        "{stderr}"
    );

    // A model deleted: nothing to test, and the run says why.
    f.change(|repo| {
        git(repo, &["rm", "-q", "-r", "Own/old"]);
    });
    let (got, stderr) = f.selected(&[]);
    assert!(got.is_empty(), "{got:?}");
    assert!(stderr.contains("Own/old"), "{stderr}");

    // Files outside every group select nothing, and the run names them.
    f.change(|repo| {
        write(repo, "README.md", "new\n");
        write(repo, ".github/workflows/ci.yml", "new\n");
    });
    let (got, stderr) = f.selected(&[]);
    assert!(got.is_empty(), "{got:?}");
    assert!(
        stderr.contains("outside every group select nothing")
            && stderr.contains("README.md")
            && stderr.contains(".github/workflows/ci.yml"),
        "{stderr}"
    );

    // Several changes at once: the union of what each selects.
    f.change(|repo| {
        write(repo, "Own/m1/model.py", "new\n");
        write(repo, "Nest/sub/models.tsv", "new\n");
        write(repo, "README.md", "new\n");
        git(repo, &["rm", "-q", "-r", "Own/old"]);
    });
    let (got, _) = f.selected(&[]);
    assert_eq!(got, set(&["Own/m1", "Nest/sub/x", "Nest/sub/y"]));

    // With other selection flags: the intersection.
    let (got, _) = f.selected(&["--modelgroup", "Own"]);
    assert_eq!(got, set(&["Own/m1"]));
    let (got, _) = f.selected(&["--image", SHARED]);
    assert_eq!(
        got,
        set(&["Nest/sub/x", "Nest/sub/y"]),
        "changed models of a shared image"
    );
    let (got, _) = f.selected(&["--model", "Other/q,Own/m2"]);
    assert!(got.is_empty());
    let (got, _) = f.selected(&["--only-image", "zoo/own:v1"]);
    assert_eq!(got, set(&["Own/m1"]));
}

#[test]
fn unknown_revisions_and_bad_repositories_exit_2() {
    let _daemon = daemon::shared();
    let f = fixture();
    let spec = f.spec.as_str();
    let repo = f.repo.to_str().unwrap();
    let not_repo = tempfile::tempdir().unwrap();
    // `does not know this revision` (twice), `starts with `-``, `is not a git checkout`, and
    // `--models-repo` missing.
    let cases: [&[&str]; 5] = [
        &["--changed-since", "no-such-branch", "--models-repo", repo],
        &[
            "--changed-since",
            "0123456789abcdef0123456789abcdef01234567",
            "--models-repo",
            repo,
        ],
        &["--changed-since=-p", "--models-repo", repo],
        &[
            "--changed-since",
            "HEAD",
            "--models-repo",
            not_repo.path().to_str().unwrap(),
        ],
        &["--changed-since", "HEAD"],
    ];
    let mut said = String::new();
    for flags in cases {
        let mut args = vec!["--spec", spec, "--list"];
        args.extend_from_slice(flags);
        let run = runner(&args);
        assert_eq!(run.code, 2, "{flags:?}\n{}", run.all());
        assert!(run.stdout.is_empty(), "{flags:?}: {}", run.stdout);
        said.push_str(&normalise::transcript(&args, &run));
    }
    normalise::messages().bind(|| insta::assert_snapshot!("bad_revisions_and_repositories", said));
    // The matrix takes it too, and passes it on to every job.
    let jobs = crate::helpers::zoo::matrix(&[
        "--spec",
        spec,
        "--changed-since",
        &f.base,
        "--models-repo",
        repo,
        "--per-image",
    ]);
    assert!(jobs.is_empty(), "nothing changed since the base: {jobs:?}");
    f.change(edit("Nest/z/model.py"));
    let jobs = crate::helpers::zoo::matrix(&[
        "--spec",
        spec,
        "--changed-since",
        &f.base,
        "--models-repo",
        repo,
        "--per-image",
    ]);
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].name, "zoo/nest:v1");
    let listed = crate::helpers::zoo::list_through_shell(&jobs[0].args, &[]);
    assert_eq!(listed, ["docker::Nest/z"]);
}

/// Makes real git hang in `repo`: its config includes a FIFO nobody writes to, which git opens
/// (and blocks on) as it reads its config at its start.
fn make_git_hang(repo: &Path) {
    let fifo = repo.join(".git/hang.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    git(repo, &["config", "include.path", "hang.fifo"]);
}

/// The pids of the git processes running in `repo` (by their `-C REPO` argument).
fn gits_in(repo: &Path) -> Vec<String> {
    let wanted = repo.to_str().unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let words: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let is_git = words.first().is_some_and(|w| w.ends_with(b"git"));
            let here = words.contains(&wanted.as_bytes());
            (is_git && here).then(|| entry.file_name().to_string_lossy().into_owned())
        })
        .collect()
}

/// Waits (at most two minutes) until git runs in `repo`; fails with the runner's output if
/// the runner ends first.
fn wait_for_git(child: &mut std::process::Child, repo: &Path) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while gits_in(repo).is_empty() {
        if child.try_wait().unwrap().is_some() || std::time::Instant::now() > until {
            let _ = child.kill();
            let out = finish(std::mem::replace(
                child,
                Command::new("true").spawn().unwrap(),
            ));
            panic!("git never ran in {}:\n{}", repo.display(), out.all());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_git_that_hangs_has_a_deadline_and_a_signal_while_inputs_load_ends_the_run() {
    let _daemon = daemon::shared();
    let f = fixture();
    make_git_hang(&f.repo);
    let repo = f.repo.to_str().unwrap();
    let selection = [
        "--spec",
        f.spec.as_str(),
        "--changed-since",
        f.base.as_str(),
        "--models-repo",
        repo,
    ];
    let listing: Vec<&str> = selection.iter().copied().chain(["--list"]).collect();

    // Past its deadline (shortened by the testing knob) git is stopped: an input error.
    let run = runner_env(&listing, &[("ZOO_RUNNER_HELPER_TIMEOUT", "1s")]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains("`git rev-parse --git-dir`")
            && run.stderr.contains("did not finish within 1s"),
        "{}",
        run.all()
    );
    assert!(gits_in(&f.repo).is_empty(), "git is gone");

    // Ctrl-C while git hangs (no deadline near): the run ends with 130 at once, git with it.
    let mut child = spawn_runner(&listing, &[]);
    wait_for_git(&mut child, &f.repo);
    signal(child.id(), libc::SIGINT);
    let run = finish(child);
    assert_eq!(run.code, 130, "{}", run.all());
    assert!(
        run.stderr
            .contains("interrupted while the inputs were loaded"),
        "{}",
        run.all()
    );
    assert!(run.stdout.is_empty(), "nothing listed: {}", run.stdout);
    assert!(gits_in(&f.repo).is_empty(), "git is gone");

    // `matrix` loads the same inputs: SIGTERM ends it with 143, git with it.
    let matrix: Vec<&str> = ["matrix"]
        .into_iter()
        .chain(selection)
        .chain(["--per-image"])
        .collect();
    let mut child = spawn_runner(&matrix, &[]);
    wait_for_git(&mut child, &f.repo);
    signal(child.id(), libc::SIGTERM);
    let run = finish(child);
    assert_eq!(run.code, 143, "{}", run.all());
    assert!(gits_in(&f.repo).is_empty(), "git is gone");
}
