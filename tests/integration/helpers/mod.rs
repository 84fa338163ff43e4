//! Shared helpers of the end-to-end tests: they run the built `zoo-runner` binary against the
//! real Docker daemon and the fixture images that `fixtures/build.sh` builds.

pub mod daemon;
pub mod daemon_proxy;
pub mod http;
pub mod keras;
pub mod minimal;
pub mod mounts;
pub mod normalise;
pub mod registry;
pub mod standin;
pub mod throttle;
pub mod zoo;

use std::cell::OnceCell;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub const FIXTURE_IMAGE: &str = "local/kipoi-fixture:py3";

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The built runner. Only a test that holds a turn at the daemon (`daemon::shared`) starts it.
pub fn bin() -> PathBuf {
    daemon::assert_turn();
    PathBuf::from(env!("CARGO_BIN_EXE_zoo-runner"))
}

/// Where fixtures/build.sh keeps what it builds (same rule as fixtures/lib.sh).
pub fn fixture_cache() -> PathBuf {
    if let Some(dir) = std::env::var_os("FIXTURE_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
        });
    base.join("zoo-runner-fixtures")
}

/// Fails the test with a useful message when the daemon or the fixture image is missing: these
/// tests are about real containers, never skipped silently.
pub fn require_fixture_image() {
    // The -slim tag too: a missing local image would make the daemon try a registry.
    let out = Command::new("docker")
        .args([
            "image",
            "inspect",
            "-f",
            "{{.Id}}",
            FIXTURE_IMAGE,
            &format!("{FIXTURE_IMAGE}-slim"),
        ])
        .output()
        .expect("the docker CLI runs");
    assert!(
        out.status.success(),
        "fixture image {FIXTURE_IMAGE} is missing or the daemon is down; run `bash fixtures/build.sh` \
         (the README's test command does): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn all(&self) -> String {
        format!("--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr)
    }
}

impl From<Output> for Run {
    fn from(out: Output) -> Self {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// The outcome libtest-mimic printed for a test (`ok`, `FAILED`, `ignored (...)`).
pub fn status_of<'a>(stdout: &'a str, name: &str) -> Option<&'a str> {
    stdout.lines().find_map(|line| {
        let rest = line.strip_prefix("test ")?.strip_prefix(name)?;
        rest.trim_start().strip_prefix("... ")
    })
}

/// Asserts the outcome libtest-mimic printed for a test, showing all output when it differs.
pub fn assert_status(run: &Run, name: &str, want: &str) {
    assert_eq!(
        status_of(&run.stdout, name),
        Some(want),
        "{name}\n{}",
        run.all()
    );
}

/// Runs the runner from the project root with the given arguments.
pub fn runner(args: &[&str]) -> Run {
    runner_env(args, &[])
}

pub fn runner_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(bin());
    cmd.current_dir(root()).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("zoo-runner starts").into()
}

/// A JUnit report path inside a fresh temporary folder.
pub fn junit_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("junit.xml")
}

/// Reads and strictly parses a JUnit file, and validates it against Jenkins' junit-10.xsd
/// (the default flavour must); returns its text (roxmltree borrows it).
pub fn read_junit(path: &Path) -> String {
    let text = read_junit_unvalidated(path);
    validate_junit(path);
    text
}

/// Reads and strictly parses a JUnit file that need not follow junit-10.xsd (the extended
/// flavour).
pub fn read_junit_unvalidated(path: &Path) -> String {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("JUnit file {} exists: {e}", path.display()));
    roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("JUnit parses: {e}\n{text}"));
    text
}

/// Fails the test unless `xmllint` finds the file valid against the vendored junit-10.xsd.
pub fn validate_junit(path: &Path) {
    let schema = root().join("fixtures/junit-10.xsd");
    let out = Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(&schema)
        .arg(path)
        .output()
        .expect("xmllint runs (Debian's libxml2-utils; the README's test command installs it)");
    assert!(
        out.status.success(),
        "{} is not valid against junit-10.xsd:\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Where a run writes its JUnit report: `junit.xml` in a temporary folder that lives as long
/// as this value. The report is read (and strictly parsed) on first use only.
pub struct Report {
    _dir: tempfile::TempDir,
    path: String,
    text: OnceCell<String>,
}

impl Default for Report {
    fn default() -> Self {
        Self::new()
    }
}

impl Report {
    pub fn new() -> Report {
        let dir = tempfile::tempdir().unwrap();
        let path = junit_path(&dir).to_str().unwrap().to_string();
        Report {
            _dir: dir,
            path,
            text: OnceCell::new(),
        }
    }

    /// The value for `--junit`.
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn exists(&self) -> bool {
        Path::new(&self.path).exists()
    }

    /// The report's text; panics when there is no report or it is not well-formed XML.
    pub fn text(&self) -> &str {
        self.text.get_or_init(|| read_junit(Path::new(&self.path)))
    }

    pub fn doc(&self) -> roxmltree::Document<'_> {
        roxmltree::Document::parse(self.text()).unwrap()
    }
}

/// Runs the runner like `runner_env`, with `--junit <fresh temporary folder>/junit.xml`
/// appended to `args`.
pub fn run_reported(args: &[&str], env: &[(&str, &str)]) -> (Run, Report) {
    with_report(args, |all| runner_env(all, env))
}

/// Calls `start` with `args` and `--junit <fresh temporary folder>/junit.xml`.
fn with_report<T>(args: &[&str], start: impl FnOnce(&[&str]) -> T) -> (T, Report) {
    let report = Report::new();
    let mut all = args.to_vec();
    all.extend(["--junit", report.path()]);
    (start(&all), report)
}

/// The testcase element named `name` of a parsed report.
pub fn testcase<'a, 'b>(doc: &'a roxmltree::Document<'b>, name: &str) -> roxmltree::Node<'a, 'b> {
    doc.descendants()
        .find(|n| n.has_tag_name("testcase") && n.attribute("name") == Some(name))
        .unwrap_or_else(|| panic!("testcase {name} in report"))
}

pub fn child<'a, 'b>(node: roxmltree::Node<'a, 'b>, tag: &str) -> Option<roxmltree::Node<'a, 'b>> {
    node.children().find(|n| n.has_tag_name(tag))
}

/// Every element `tag` of a parsed report, in document order.
pub fn elements<'a, 'b>(
    doc: &'a roxmltree::Document<'b>,
    tag: &str,
) -> Vec<roxmltree::Node<'a, 'b>> {
    doc.descendants().filter(|n| n.has_tag_name(tag)).collect()
}

/// The value of the report property `name` (`image-id`, `run-id`, ...).
pub fn property<'a>(doc: &'a roxmltree::Document<'_>, name: &str) -> &'a str {
    doc.descendants()
        .find(|n| n.has_tag_name("property") && n.attribute("name") == Some(name))
        .and_then(|n| n.attribute("value"))
        .unwrap_or_else(|| panic!("property {name} in report"))
}

/// `node`'s child `tag`, panicking with both names when it is missing.
fn required_child<'a, 'b>(node: roxmltree::Node<'a, 'b>, tag: &str) -> roxmltree::Node<'a, 'b> {
    child(node, tag).unwrap_or_else(|| {
        let name = node.attribute("name").unwrap_or(node.tag_name().name());
        panic!("{name} has a <{tag}> element")
    })
}

/// The `message` attribute of `node`'s `failure`, `error` or `skipped` child (`tag`).
pub fn child_message<'a>(node: roxmltree::Node<'a, '_>, tag: &str) -> &'a str {
    required_child(node, tag)
        .attribute("message")
        .unwrap_or_else(|| panic!("<{tag}> has a message"))
}

/// The prefix of the per-case fact lines the runner writes at the head of `system-out`.
pub const FACT_PREFIX: &str = "[zoo-runner] ";

/// The container's own output in `node`'s `system-out` or `system-err` child (`tag`): the
/// runner's fact lines at the head of `system-out` (and the blank line after them) left out.
pub fn child_text<'a>(node: roxmltree::Node<'a, '_>, tag: &str) -> &'a str {
    let mut text = child_text_whole(node, tag);
    while let Some(line_end) = text.find('\n').filter(|_| text.starts_with(FACT_PREFIX)) {
        text = &text[line_end + 1..];
    }
    if text.len() < child_text_whole(node, tag).len() {
        text = text.strip_prefix('\n').unwrap_or(text);
    }
    text
}

/// The whole text of `node`'s `system-out` or `system-err` child (`tag`), fact lines included.
pub fn child_text_whole<'a>(node: roxmltree::Node<'a, '_>, tag: &str) -> &'a str {
    required_child(node, tag)
        .text()
        .unwrap_or_else(|| panic!("<{tag}> has text"))
}

/// The value of a per-case fact (`command`, `container`, `sif`, ...) at the head of the case's
/// `system-out`.
pub fn case_fact<'a>(node: roxmltree::Node<'a, '_>, name: &str) -> Option<&'a str> {
    child_text_whole(node, "system-out")
        .lines()
        .take_while(|l| l.starts_with(FACT_PREFIX))
        .find_map(|l| {
            l.strip_prefix(FACT_PREFIX)?
                .strip_prefix(name)?
                .strip_prefix(": ")
        })
}

/// Writes a catalog folder: model -> image pairs; every image lists its models.
pub fn write_catalog(dir: &Path, models: &[(&str, &str)], sif: Option<&str>) {
    std::fs::create_dir_all(dir).unwrap();
    let m2d: serde_json::Map<String, serde_json::Value> = models
        .iter()
        .map(|(m, i)| (m.to_string(), serde_json::Value::from(*i)))
        .collect();
    let mut d2m: serde_json::Map<String, serde_json::Value> = serde_json::Map::new();
    for (m, i) in models {
        let list = d2m
            .entry(i.to_string())
            .or_insert_with(|| serde_json::Value::Array(vec![]));
        list.as_array_mut()
            .unwrap()
            .push(serde_json::Value::from(*m));
    }
    std::fs::write(
        dir.join("model-to-docker.json"),
        serde_json::to_string_pretty(&m2d).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("docker-to-model.json"),
        serde_json::to_string_pretty(&d2m).unwrap(),
    )
    .unwrap();
    if let Some(sif) = sif {
        std::fs::write(dir.join("model-to-singularity.json"), sif).unwrap();
    }
}

/// Ids of containers carrying a label (all states).
pub fn containers_with_label(label: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("label={label}"),
        ])
        .output()
        .expect("docker ps runs");
    assert!(
        out.status.success(),
        "docker ps: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Starts the runner from the project root without waiting for it.
pub fn spawn_runner(args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(bin());
    cmd.current_dir(root())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("zoo-runner starts")
}

/// Starts the runner like `spawn_runner`, with `--junit <fresh temporary folder>/junit.xml`
/// appended to `args`.
pub fn spawn_reported(args: &[&str], env: &[(&str, &str)]) -> (Child, Report) {
    with_report(args, |all| spawn_runner(all, env))
}

/// Waits for a spawned runner to end by itself, then collects it like [`finish`]. `patience`
/// bounds the wait so that a hang fails the test instead of blocking it (not a speed check):
/// past it the runner is killed and the test fails with `hang` and the runner's output.
pub fn finish_within(mut child: Child, patience: std::time::Duration, hang: &str) -> Run {
    let started = std::time::Instant::now();
    while child
        .try_wait()
        .expect("the runner can be waited on")
        .is_none()
    {
        if started.elapsed() > patience {
            let _ = child.kill();
            panic!("{hang}:\n{}", finish(child).all());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    finish(child)
}

/// Collects a spawned runner's exit code and output.
pub fn finish(mut child: Child) -> Run {
    let mut stdout = String::new();
    let mut stderr = String::new();
    let out = child.stdout.take();
    let err = child.stderr.take();
    let t = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut e) = err {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    if let Some(mut o) = out {
        let _ = o.read_to_string(&mut stdout);
    }
    stderr.push_str(&t.join().unwrap());
    let status = child.wait().unwrap();
    Run {
        code: status.code().unwrap_or(-1),
        stdout,
        stderr,
    }
}

/// Sends a signal to a process the test spawned.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a child process we spawned.
    let rc = unsafe { libc::kill(pid as i32, sig) };
    assert_eq!(rc, 0, "signal delivered");
}

/// The names in a folder, sorted.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Containers (the Apptainer launcher's, say) still mounting `dir`, as `docker ps -aq` lists
/// them; empty when none.
pub fn containers_mounting(dir: &Path) -> String {
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("volume={}", dir.display()),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Short ids of the containers (any state) made by the runner process `pid`, optionally for
/// one case only.
pub fn containers_of(pid: u32, case: Option<&str>) -> Vec<String> {
    let mut args = vec![
        "ps".to_string(),
        "-aq".into(),
        "--filter".into(),
        format!("label=org.zoo-runner.pid={pid}"),
    ];
    if let Some(case) = case {
        args.extend([
            "--filter".into(),
            format!("label=org.zoo-runner.case={case}"),
        ]);
    }
    let out = Command::new("docker").args(&args).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Writes an executable script at `path`. The file is written under another name and put in
/// place by the `install` program (another process), so no descriptor of this multi-threaded
/// test process ever has the script open for writing: a thread that forks while it is open
/// would make the script's exec fail with "text file busy" (ETXTBSY).
pub fn install_script(path: &Path, text: &str) {
    let source = path.with_extension("src");
    std::fs::write(&source, text).expect("write the script's source");
    let status = Command::new("install")
        .args(["-m", "755"])
        .arg(&source)
        .arg(path)
        .status()
        .expect("the install program runs");
    assert!(status.success(), "install {} failed", path.display());
    let _ = std::fs::remove_file(&source);
}
