//! Slurm, end to end on a REAL single-node cluster: Debian's slurmctld and slurmd with their own
//! munged, on 127.0.0.1, set up by fixtures/slurm.sh in a folder of the test's (a generated
//! slurm.conf, the node's CPUs and memory read from the machine by `slurmd -C`), and stopped by
//! their PIDs when the test ends, however it ends. The fixture zoo is submitted as the job array
//! `matrix --slurm` prints, its cases run in the REAL Apptainer through the launcher
//! fixtures/apptainer/apptainer, and the merge job's report is compared with one plain run's.
//! No stand-in is used in this file.
//!
//! Where Slurm cannot start (not root, packages missing, a daemon that will not come up), the
//! cluster test is skipped with the reason, written to the terminal past the test harness's
//! capture and to `target/tmp/slurm-skipped.txt`, which fixtures/test.sh shows at its end.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::helpers::*;

/// Upper bound for the jobs to end, so that a broken cluster fails the test instead of hanging
/// it. Not a speed check: they take a minute or so.
const PATIENCE: Duration = Duration::from_secs(900);
/// The fixture image whose 3 cases the array runs (one passes, two fail).
const PY3: &str = "local/kipoi-fixture:py3";

/// fixtures/slurm.sh's exit code for "Slurm cannot start on this machine".
const CANNOT_START: i32 = 77;

/// A cluster fixtures/slurm.sh started; stopped (its jobs cancelled, its daemons killed by their
/// PIDs) when dropped.
struct Cluster {
    dir: tempfile::TempDir,
}

impl Cluster {
    /// The cluster, or why Slurm cannot start here.
    fn start() -> Result<Cluster, String> {
        // munged wants its socket's folders open to all: a folder of its own under /tmp.
        let dir = tempfile::Builder::new()
            .prefix("zoo-slurm-")
            .tempdir_in("/tmp")
            .unwrap();
        let cluster = Cluster { dir };
        let out = Command::new("bash")
            .arg(root().join("fixtures/slurm.sh"))
            .arg("up")
            .arg(cluster.dir.path())
            .arg(free_port().to_string())
            .arg(free_port().to_string())
            // Clusters whose test process is gone (killed outright) are stopped first.
            .arg(std::process::id().to_string())
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        match out.status.code() {
            Some(0) => Ok(cluster),
            Some(CANNOT_START) => Err(said.trim().to_string()),
            _ => panic!("fixtures/slurm.sh up failed ({}):\n{said}", out.status),
        }
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("slurm.conf")
    }

    /// A Slurm command on this cluster.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.env("SLURM_CONF", self.conf());
        command
    }

    /// Each job of `id` (one per task of an array): its fields as `scontrol show job -o` gives
    /// them, by task (0 for a plain job).
    fn jobs(&self, id: &str) -> BTreeMap<u64, BTreeMap<String, String>> {
        let out = self
            .command("scontrol")
            .args(["show", "job", "-o", id])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let mut jobs = BTreeMap::new();
        for line in text.lines().filter(|l| l.starts_with("JobId=")) {
            let fields: BTreeMap<String, String> = line
                .split_whitespace()
                .filter_map(|w| w.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let task = fields
                .get("ArrayTaskId")
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            jobs.insert(task, fields);
        }
        jobs
    }

    /// Waits until every job of `id` has ended; returns their states by task.
    fn wait_for(&self, id: &str) -> BTreeMap<u64, BTreeMap<String, String>> {
        let started = Instant::now();
        loop {
            let jobs = self.jobs(id);
            let running = jobs.is_empty()
                || jobs.values().any(|j| {
                    matches!(
                        j.get("JobState").map(String::as_str),
                        Some("PENDING" | "RUNNING" | "CONFIGURING" | "COMPLETING" | "SUSPENDED")
                    )
                });
            if !running {
                return jobs;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "job {id} did not end: {jobs:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The daemons' logs' last lines, for a failure's message.
    fn logs(&self) -> String {
        ["slurmctld.log", "slurmd.log"]
            .iter()
            .map(|name| {
                let text = std::fs::read_to_string(self.dir.path().join("log").join(name))
                    .unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                format!(
                    "{name}:\n{}",
                    lines[lines.len().saturating_sub(20)..].join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(root().join("fixtures/slurm.sh"))
            .arg("down")
            .arg(self.dir.path())
            .status();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Says, past the harness's capture, that the cluster test did not run and why; and leaves the
/// reason where fixtures/test.sh looks at its end.
fn skip(reason: &str) {
    let line = format!("\n*** SKIPPED slurm_e2e: no real Slurm test on this machine: {reason}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    let marker = Path::new(env!("CARGO_TARGET_TMPDIR")).join("slurm-skipped.txt");
    let _ = std::fs::write(marker, format!("{reason}\n"));
}

fn launcher() -> String {
    root()
        .join("fixtures/apptainer/apptainer")
        .display()
        .to_string()
}

/// Each testcase of a JUnit file as (classname, name, outcome), in document order.
fn cases(path: &Path) -> Vec<(String, String, &'static str)> {
    let text = read_junit(path);
    let doc = roxmltree::Document::parse(&text).unwrap();
    doc.descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .map(|n| {
            let outcome = ["failure", "error", "skipped"]
                .into_iter()
                .find(|tag| n.children().any(|c| c.has_tag_name(*tag)))
                .unwrap_or("passed");
            (
                n.attribute("classname").unwrap_or_default().to_string(),
                n.attribute("name").unwrap_or_default().to_string(),
                outcome,
            )
        })
        .collect()
}

/// The fixture zoo's array script, `matrix --slurm` over `shards` shards under Apptainer.
fn array_script(dir: &Path, shards: u64) -> PathBuf {
    let shards = shards.to_string();
    let launcher = launcher();
    let run = runner(&[
        "matrix",
        "--slurm",
        "--shards",
        &shards,
        "--spec",
        "fixtures/spec.toml",
        "--image",
        PY3,
        "--runtime",
        "singularity",
        "--",
        "--singularity-bin",
        &launcher,
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    let path = dir.join(format!("zoo-{shards}.sh"));
    std::fs::write(&path, &run.stdout).unwrap();
    path
}

/// Submits a script `matrix --slurm` printed, with the settings a user edits given in the
/// environment; returns the array's and the merge job's ids.
fn submit(
    cluster: &Cluster,
    script: &Path,
    reports: &Path,
    extra: &[(&str, &str)],
) -> (String, String) {
    let mut command = cluster.command("bash");
    command
        .arg(script)
        .current_dir(root())
        .env("ZOO_RUNNER", bin())
        .env("ZOO_REPORTS", reports)
        .env("ZOO_MEM", "1G")
        .env("ZOO_CPUS", "1")
        .env("ZOO_TIME", "0:20:00");
    for (k, v) in extra {
        command.env(k, v);
    }
    let out = command.output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "submitting failed:\n{said}");
    // "submitted the array 1 (3 task(s)) and the merge job 2, which waits for it"
    let line = said
        .lines()
        .find(|l| l.starts_with("submitted the array "))
        .unwrap_or_else(|| panic!("no submission line:\n{said}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let array = words[3].to_string();
    let merge = words[words.iter().position(|w| *w == "job").unwrap() + 1]
        .trim_end_matches(',')
        .to_string();
    (array, merge)
}

fn state(job: &BTreeMap<String, String>) -> (&str, &str) {
    (
        job.get("JobState").map_or("?", String::as_str),
        job.get("ExitCode").map_or("?", String::as_str),
    )
}

#[test]
fn the_fixture_zoo_as_a_slurm_array_merges_into_one_plain_run_even_when_tasks_fail() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let cluster = match Cluster::start() {
        Ok(cluster) => cluster,
        Err(reason) => return skip(&reason),
    };
    let work = tempfile::tempdir().unwrap();
    let sif_dir = work.path().join("sifs");
    let launcher = launcher();

    // One plain run: what the array must add up to.
    let (plain, plain_report) = run_reported(
        &[
            "--spec",
            "fixtures/spec.toml",
            "--image",
            PY3,
            "--runtime",
            "singularity",
            "--singularity-bin",
            &launcher,
            "--sif-dir",
            sif_dir.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(plain.code, 101, "{}", plain.all());
    let mut want = cases(Path::new(plain_report.path()));
    want.sort();
    assert_eq!(want.len(), 3, "{want:?}");

    // The array of 3 (the shared SIF cache given as ZOO_SIF_DIR), and beside it one of 2 that
    // runs a task at a time (ZOO_MAX_RUNNING=1), whose second task is cancelled before it starts.
    let three = work.path().join("three");
    let (array, merge) = submit(
        &cluster,
        &array_script(work.path(), 3),
        &three,
        &[("ZOO_SIF_DIR", sif_dir.to_str().unwrap())],
    );
    let two = work.path().join("two");
    let (array2, merge2) = submit(
        &cluster,
        &array_script(work.path(), 2),
        &two,
        &[
            ("ZOO_SIF_DIR", sif_dir.to_str().unwrap()),
            ("ZOO_MAX_RUNNING", "1"),
        ],
    );
    let cancel = cluster
        .command("scancel")
        .arg(format!("{array2}_2"))
        .status()
        .unwrap();
    assert!(cancel.success());

    let logs = |dir: &Path| {
        let mut text = String::new();
        for entry in std::fs::read_dir(dir.join("logs"))
            .into_iter()
            .flatten()
            .flatten()
        {
            text.push_str(&format!(
                "== {}\n{}\n",
                entry.path().display(),
                std::fs::read_to_string(entry.path()).unwrap_or_default()
            ));
        }
        text
    };

    // The merge ran after the whole array, though tasks failed (their models fail: exit 101).
    let merged = cluster.wait_for(&merge);
    assert_eq!(state(&merged[&0]), ("COMPLETED", "0:0"), "{}", logs(&three));
    let tasks = cluster.wait_for(&array);
    assert_eq!(tasks.len(), 3, "{tasks:?}");
    let states: Vec<(&str, &str)> = tasks.values().map(state).collect();
    assert!(states.contains(&("FAILED", "101:0")), "{states:?}");
    assert!(states.contains(&("COMPLETED", "0:0")), "{states:?}");
    // Each task read its shard from Slurm, and wrote its own report.
    let log_text = logs(&three);
    for m in 1..=3 {
        assert!(
            log_text.contains(&format!(
                "--partition time:auto is shard {m} of 3, read from the environment: \
                 SLURM_ARRAY_TASK_ID={m}, SLURM_ARRAY_TASK_MIN=1, SLURM_ARRAY_TASK_MAX=3 \
                 (a Slurm job array)"
            )),
            "{log_text}"
        );
        assert!(three.join(format!("shards/shard-{m}.xml")).is_file());
    }
    // The merged report is the plain run's: the same cases, each once, with the same outcomes.
    let mut got = cases(&three.join("junit.xml"));
    got.sort();
    assert_eq!(got, want, "{log_text}");
    let summary = std::fs::read_to_string(three.join("summary.md")).unwrap();
    assert!(summary.contains("1 passed, 2 failed"), "{summary}");

    // The array of 2 with a task that never ran: the merge still ran, merged what there was,
    // named the missing shard, and failed so that it shows.
    let merged2 = cluster.wait_for(&merge2);
    let tasks2 = cluster.wait_for(&array2);
    // Cancelled while pending, task 2 never ran: Slurm keeps no record of it.
    assert_eq!(
        tasks2.keys().copied().collect::<Vec<_>>(),
        [1],
        "{tasks2:?}"
    );
    assert!(!two.join("shards/shard-2.xml").exists());
    assert_eq!(state(&merged2[&0]), ("FAILED", "1:0"), "{}", logs(&two));
    let merge_log = std::fs::read_to_string(two.join("logs/merge.out")).unwrap();
    assert!(
        merge_log.contains("zoo-runner: shard(s) 2 of 2 wrote no report"),
        "{merge_log}"
    );
    let first = cases(&two.join("shards/shard-1.xml"));
    assert!(!first.is_empty() && first.len() < 3, "{first:?}");
    assert_eq!(cases(&two.join("junit.xml")), first);
}

/// `--partition time:auto` in each task of an array gives the same shards as `time:M/N`, with
/// Slurm's variables as sbatch sets them (no cluster needed); with GitLab's too, it refuses.
#[test]
fn auto_partitions_read_slurm_arrays_like_fixed_shards() {
    let _daemon = daemon::shared();
    let zoo = crate::helpers::zoo::generate(&[30, 20, 5], 7, false);
    let spec = zoo.spec();
    let list = |partition: &str, env: &[(&str, &str)]| {
        let mut command = Command::new(bin());
        command
            .current_dir(root())
            .args(["--spec", &spec, "--partition", partition, "--list"]);
        for var in ["CI_NODE_INDEX", "CI_NODE_TOTAL", "SLURM_ARRAY_TASK_ID"] {
            command.env_remove(var);
        }
        command.envs(env.iter().copied());
        let run: Run = command.output().unwrap().into();
        run
    };
    for m in 1..=3 {
        let fixed = list(&format!("time:{m}/3"), &[]);
        // A 0-based array, as `--array=0-2` numbers its tasks.
        let id = (m - 1).to_string();
        let auto = list(
            "time:auto",
            &[
                ("SLURM_ARRAY_TASK_ID", &id),
                ("SLURM_ARRAY_TASK_MIN", "0"),
                ("SLURM_ARRAY_TASK_MAX", "2"),
                ("SLURM_ARRAY_TASK_COUNT", "3"),
            ],
        );
        assert_eq!(auto.code, 0, "{}", auto.all());
        assert_eq!(auto.stdout, fixed.stdout, "shard {m}");
        assert!(
            auto.stderr.contains(&format!(
                "is shard {m} of 3, read from the environment: SLURM_ARRAY_TASK_ID={id}"
            )),
            "{}",
            auto.stderr
        );
    }
    let both = list(
        "time:auto",
        &[
            ("SLURM_ARRAY_TASK_ID", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "2"),
            ("CI_NODE_INDEX", "1"),
            ("CI_NODE_TOTAL", "2"),
        ],
    );
    assert_eq!(both.code, 2, "{}", both.all());
    assert!(both.stderr.contains("found both"), "{}", both.stderr);
}

/// examples/slurm/ holds what `matrix --slurm` prints for the command in its header, so it never
/// goes stale; and it is valid bash.
#[test]
fn the_example_slurm_script_is_what_matrix_prints() {
    let _daemon = daemon::shared();
    let example = root().join("examples/slurm/kipoi-array.sh");
    let text = std::fs::read_to_string(&example).unwrap();
    let made_by = text
        .lines()
        .find_map(|l| l.strip_prefix("# Made by: zoo-runner "))
        .expect("the example says how it was made");
    let words = shell_words::split(made_by).unwrap();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let run = runner(&words);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(
        run.stdout, text,
        "regenerate it: zoo-runner {made_by} > examples/slurm/kipoi-array.sh"
    );
    let syntax = Command::new("bash")
        .arg("-n")
        .arg(&example)
        .status()
        .unwrap();
    assert!(syntax.success());
    // The cluster's settings are variables at the top, each settable from the environment.
    for var in ["ZOO_PARTITION", "ZOO_ACCOUNT", "ZOO_TIME", "ZOO_MEM"] {
        assert!(
            text.contains(&format!("{var}=\"${{{var}:-")),
            "{var} is a marked setting"
        );
    }
}
