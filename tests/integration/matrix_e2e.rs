//! `zoo-runner matrix` and `--partition time`, with the built binary: the jobs' cases, listed by
//! running each job's argument string through a POSIX shell, are disjoint and together exactly
//! the selection's; time shards come within 5% of the mean on a generated Kipoi-shaped zoo of
//! 2,000+ cases and keep images together; bad inputs exit 2 with a message that says why.

use std::collections::{BTreeMap, BTreeSet};

use crate::helpers::zoo::{self, generate, list_through_shell, matrix, sh_quote, Job};
use crate::helpers::*;

/// Asserts the jobs' cases are disjoint, each job has some, and together they are `want`.
fn assert_cover(jobs: &[Job], want: &[String], env: &[(&str, &str)]) -> Vec<Vec<String>> {
    let names: BTreeSet<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names.len(), jobs.len(), "job names are unique: {jobs:?}");
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut shares = Vec::new();
    for job in jobs {
        let share = list_through_shell(&job.args, env);
        assert!(
            !share.is_empty(),
            "{} tests nothing: {}",
            job.name,
            job.args
        );
        for case in &share {
            if let Some(other) = seen.insert(case.clone(), job.name.clone()) {
                panic!("{case} is in both `{other}` and `{}`", job.name);
            }
        }
        shares.push(share);
    }
    let got: BTreeSet<&String> = seen.keys().collect();
    let want: BTreeSet<&String> = want.iter().collect();
    assert_eq!(got, want, "the jobs together are the selection");
    shares
}

#[test]
fn fixture_zoo_jobs_cover_the_selection() {
    let _daemon = daemon::shared();
    let selection = "--spec fixtures/spec.toml";
    let all = list_through_shell(selection, &[]);
    assert_eq!(all.len(), 6);
    let per_image = matrix(&["--spec", "fixtures/spec.toml", "--per-image"]);
    assert_eq!(per_image.len(), 2);
    assert_eq!(per_image[0].name, "local/kipoi-fixture:checked");
    assert_eq!(per_image[1].name, "local/kipoi-fixture:py3");
    assert_cover(&per_image, &all, &[]);
    for n in ["1", "2", "3"] {
        let jobs = matrix(&["--spec", "fixtures/spec.toml", "--shards", n]);
        assert_eq!(jobs.len().to_string(), n);
        assert!(jobs[0].name.starts_with("shard 1/"), "{jobs:?}");
        assert_cover(&jobs, &all, &[]);
    }
    // More shards than cases: one job per case, said on stderr.
    let jobs = matrix(&["--spec", "fixtures/spec.toml", "--shards", "8"]);
    assert_eq!(jobs.len(), 6);
    assert_cover(&jobs, &all, &[]);
    // The selection is part of every job: a model list and the runtime.
    let sel = [
        "--spec",
        "fixtures/spec.toml",
        "--model",
        "tiny_linear,tiny_fail_raise",
        "--runtime",
        "all",
    ];
    let want = list_through_shell(
        "--spec fixtures/spec.toml --model tiny_linear,tiny_fail_raise --runtime all",
        &[],
    );
    assert_eq!(want.len(), 4);
    let mut args = sel.to_vec();
    args.extend(["--shards", "2"]);
    assert_cover(&matrix(&args), &want, &[]);
}

#[test]
fn odd_names_survive_the_shell_and_images_get_one_job_each() {
    let _daemon = daemon::shared();
    let zoo = generate(&[40, 25, 10, 3, 1], 11, true);
    let spec = zoo.spec();
    let all = list_through_shell(&format!("--spec {}", sh_quote(&spec)), &[]);
    assert_eq!(all.len(), zoo.models.len());
    assert!(all.iter().any(|n| n.contains("it's a model")));
    let jobs = matrix(&["--spec", &spec, "--per-image"]);
    let images: BTreeSet<&str> = zoo.models.values().map(|(i, _)| i.as_str()).collect();
    assert_eq!(jobs.len(), images.len());
    let shares = assert_cover(&jobs, &all, &[]);
    for (job, share) in jobs.iter().zip(&shares) {
        assert!(
            share.iter().all(|c| zoo::image_of(&zoo, c) == job.name),
            "{}: {share:?}",
            job.name
        );
    }
    // A selection narrowed to two images: one job each, and the jobs do not overlap.
    let two = "zoo/image-00:v1,zoo/odd image:v1";
    let want = list_through_shell(
        &format!("--spec {} --only-image {}", sh_quote(&spec), sh_quote(two)),
        &[],
    );
    let jobs = matrix(&["--spec", &spec, "--only-image", two, "--per-image"]);
    assert_eq!(jobs.len(), 2);
    assert_cover(&jobs, &want, &[]);
    // A model list with quotes, spaces and shell characters, passed on to every shard.
    let picked = "odd group/it's a model,Dollar$/`tick` \"q\" ;|&,G0/m0001";
    let want = list_through_shell(
        &format!("--spec {} --model {}", sh_quote(&spec), sh_quote(picked)),
        &[],
    );
    assert_eq!(want.len(), 3);
    let jobs = matrix(&["--spec", &spec, "--model", picked, "--shards", "2"]);
    assert_cover(&jobs, &want, &[]);
    // Run flags after `--` reach every job, and the jobs still parse.
    let jobs = matrix(&[
        "--spec",
        &spec,
        "--per-image",
        "--",
        "--retries",
        "1",
        "--junit",
        "out dir/j.xml",
    ]);
    assert!(jobs
        .iter()
        .all(|j| j.args.ends_with("--retries 1 --junit 'out dir/j.xml'")));
}

/// Sum of the earlier times of each shard's cases.
fn shard_seconds(zoo: &zoo::Zoo, shares: &[Vec<String>]) -> Vec<f64> {
    shares
        .iter()
        .map(|share| {
            share
                .iter()
                .map(|c| zoo.models[c.split_once("::").unwrap().1].1)
                .sum()
        })
        .collect()
}

#[test]
fn time_shards_are_within_5_percent_on_a_kipoi_shaped_zoo_and_keep_images_together() {
    let _daemon = daemon::shared();
    // The real catalog's image sizes: 2,169 models on 19 images.
    let sizes = [
        1383, 618, 87, 55, 4, 4, 3, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    ];
    let zoo = generate(&sizes, 5, false);
    let durations = zoo.write_durations("durations.xml");
    let spec = zoo.spec();
    let all = list_through_shell(&format!("--spec {}", sh_quote(&spec)), &[]);
    assert!(all.len() >= 2000, "{}", all.len());
    let total: f64 = zoo.models.values().map(|(_, s)| s).sum();
    let mut image_seconds: BTreeMap<&str, f64> = BTreeMap::new();
    for (image, secs) in zoo.models.values() {
        *image_seconds.entry(image).or_default() += secs;
    }
    for n in [2usize, 4, 8] {
        let jobs = matrix(&[
            "--spec",
            &spec,
            "--shards",
            &n.to_string(),
            "--durations",
            &durations,
        ]);
        assert_eq!(jobs.len(), n);
        let shares = assert_cover(&jobs, &all, &[]);
        let secs = shard_seconds(&zoo, &shares);
        let ratio = secs.iter().cloned().fold(0.0, f64::max) * n as f64 / total;
        // Hash shards of the same zoo, for comparison (printed with the failure).
        let hash: Vec<Vec<String>> = (1..=n)
            .map(|m| {
                list_through_shell(
                    &format!("--spec {} --partition hash:{m}/{n}", sh_quote(&spec)),
                    &[],
                )
            })
            .collect();
        let hash_secs = shard_seconds(&zoo, &hash);
        let hash_ratio = hash_secs.iter().cloned().fold(0.0, f64::max) * n as f64 / total;
        assert!(
            ratio <= 1.05,
            "{n} shards: longest/mean {ratio:.3} (hash {hash_ratio:.3}): {secs:?}"
        );
        // Images within a fair share in one job; and fewer pulls than hash shards take.
        let pulls = |shares: &[Vec<String>]| -> usize {
            shares
                .iter()
                .map(|s| {
                    s.iter()
                        .map(|c| zoo::image_of(&zoo, c))
                        .collect::<BTreeSet<_>>()
                        .len()
                })
                .sum()
        };
        for (image, secs) in &image_seconds {
            let holders = shares
                .iter()
                .filter(|s| s.iter().any(|c| zoo::image_of(&zoo, c) == *image))
                .count();
            if secs * (n as f64) <= total {
                assert_eq!(holders, 1, "{n} shards: {image} ({secs:.0}s) split");
            }
        }
        assert!(pulls(&shares) < pulls(&hash), "{n} shards");
    }
}

#[test]
fn time_partition_reads_the_shard_from_gitlab_parallel() {
    let _daemon = daemon::shared();
    let zoo = generate(&[30, 20, 5], 3, false);
    let durations = zoo.write_durations("d.xml");
    let base = format!(
        "--spec {} --durations {}",
        sh_quote(&zoo.spec()),
        sh_quote(&durations)
    );
    for m in 1..=3 {
        let fixed = list_through_shell(&format!("{base} --partition time:{m}/3"), &[]);
        let index = m.to_string();
        let env = [("CI_NODE_INDEX", index.as_str()), ("CI_NODE_TOTAL", "3")];
        let auto = list_through_shell(&format!("{base} --partition time:auto"), &env);
        assert_eq!(auto, fixed, "shard {m}");
    }
    let run = runner_env(
        &[
            "--spec",
            &zoo.spec(),
            "--partition",
            "time:auto/auto",
            "--list",
        ],
        &[("CI_NODE_INDEX", "2"), ("CI_NODE_TOTAL", "3")],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stderr.contains("CI_NODE_INDEX=2") && run.stderr.contains("CI_NODE_TOTAL=3"),
        "says where it read the shard: {}",
        run.stderr
    );
    // Outside GitLab: an input error that names the variables.
    let mut cmd = std::process::Command::new(bin());
    cmd.current_dir(root())
        .args(["--spec", &zoo.spec(), "--partition", "time:auto", "--list"])
        .env_remove("CI_NODE_INDEX")
        .env_remove("CI_NODE_TOTAL");
    let run: Run = cmd.output().unwrap().into();
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains("CI_NODE_TOTAL is not set"),
        "{}",
        run.stderr
    );
}

#[test]
fn bad_inputs_exit_2_and_say_why() {
    let _daemon = daemon::shared();
    let zoo = generate(&[5, 3], 1, false);
    let spec = zoo.spec();
    let not_junit = zoo.path("durations.csv");
    std::fs::write(&not_junit, "model,seconds\nG0/m0000,12\n").unwrap();
    let not_junit = not_junit.display().to_string();
    let html = zoo.path("page.xml");
    std::fs::write(&html, "<html><body>no report</body></html>").unwrap();
    let html = html.display().to_string();
    let missing = zoo.path("nope.xml").display().to_string();
    // Each message says why: the flag, the file, or what the value would do.
    let cases: Vec<Vec<&str>> = vec![
        vec!["matrix", "--spec", &spec, "--shards", "0"], // "0 shards"
        vec!["matrix", "--spec", &spec, "--shards", "257"], // "at most 256"
        vec!["matrix", "--spec", &spec, "--shards", "-1"], // "--shards"
        vec!["matrix", "--spec", &spec],                  // "--per-image"
        vec!["matrix", "--spec", &spec, "--per-image", "--shards", "2"], // "cannot be used with"
        vec![
            "matrix",
            "--spec",
            &spec,
            "--shards",
            "2",
            "--durations",
            &not_junit,
        ], // "not a JUnit report"
        vec![
            "matrix",
            "--spec",
            &spec,
            "--shards",
            "2",
            "--durations",
            &html,
        ], // "root element is `html`"
        vec![
            "matrix",
            "--spec",
            &spec,
            "--shards",
            "2",
            "--durations",
            &missing,
        ], // "does not exist"
        vec![
            "matrix",
            "--spec",
            &spec,
            "--per-image",
            "--",
            "--model",
            "G0/m0000",
        ], // "must not change which cases run"
        vec![
            "matrix",
            "--spec",
            &spec,
            "--per-image",
            "--",
            "--retrys",
            "1",
        ], // "--retrys"
        // libtest's narrowing flags after `--` (the jobs are planned without them).
        vec![
            "matrix",
            "--spec",
            &spec,
            "--per-image",
            "--",
            "--exact",
            "docker::G0/m0000",
        ], // "--exact"
        vec![
            "matrix", "--spec", &spec, "--shards", "3", "--", "--skip", "G0/m0000",
        ], // "--skip"
        // A run would refuse these numbers in every job: the matrix does it once.
        vec![
            "matrix",
            "--spec",
            &spec,
            "--shards",
            "2",
            "--",
            "--test-threads",
            "0",
        ], // "--test-threads 0"
        vec![
            "matrix",
            "--spec",
            &spec,
            "--per-image",
            "--",
            "--test-threads",
            "999",
        ], // "--test-threads 999"
        vec![
            "--spec",
            &spec,
            "--partition",
            "time:1/2",
            "--durations",
            &not_junit,
            "--list",
        ], // "not a JUnit report"
        vec![
            "--spec",
            &spec,
            "--partition",
            "hash:1/2",
            "--durations",
            &html,
            "--list",
        ], // "--durations balances only --partition time"
        vec!["--spec", &spec, "--partition", "time:0/2", "--list"], // "not a partition"
        vec!["--spec", &spec, "--only-image", "zoo/image-9:v1", "--list"], // "no selected case runs in it"
        vec![
            "--spec",
            &spec,
            "--summary",
            zoo.dir.path().to_str().unwrap(),
        ], // "is a folder"
    ];
    let mut said = String::new();
    for args in cases {
        let run = runner(&args);
        assert_eq!(run.code, 2, "{args:?}\n{}", run.all());
        assert!(
            run.stdout.is_empty(),
            "{args:?}: nothing on stdout: {}",
            run.stdout
        );
        said.push_str(&normalise::transcript(&args, &run));
    }
    normalise::messages().bind(|| insta::assert_snapshot!("bad_inputs", said));
}

/// Reports that record no time (an empty `<testsuites/>`) have no median: the run and the
/// matrix say so, and make up no time.
#[test]
fn durations_without_any_time_make_up_none() {
    let _daemon = daemon::shared();
    let zoo = generate(&[3, 2], 7, false);
    let spec = zoo.spec();
    let empty = zoo.path("empty.xml");
    std::fs::write(&empty, "<testsuites/>\n").unwrap();
    let empty = empty.display().to_string();
    // The run: the reports `record no case's time`, so there is `no median to count from`
    // (and nothing `count as the median`). The matrix: the same, and no expected time per
    // job (`by --durations`).
    let mut said = String::new();
    for args in [
        &[
            "--spec",
            &spec,
            "--partition",
            "time:1/2",
            "--durations",
            &empty,
            "--list",
        ][..],
        &[
            "matrix",
            "--spec",
            &spec,
            "--shards",
            "2",
            "--durations",
            &empty,
        ],
    ] {
        let run = runner(args);
        assert_eq!(run.code, 0, "{}", run.all());
        said.push_str(&normalise::transcript(args, &run));
    }
    normalise::messages().bind(|| insta::assert_snapshot!("durations_without_any_time", said));
}

/// What `--list` (both formats) and `matrix` print, and the matrix's notes on stderr: the
/// lines that CI jobs and scripts read, on the fixture zoo and on a generated zoo with
/// earlier times (each job's expected time).
#[test]
fn list_and_matrix_lines_keep_their_shape() {
    let _daemon = daemon::shared();
    let zoo = generate(&[5, 3, 1], 2, false);
    let spec = zoo.spec();
    let durations = zoo.write_durations("durations.xml");
    let commands: [&[&str]; 9] = [
        &["--spec", "fixtures/spec.toml", "--list"],
        &["--spec", "fixtures/spec.toml", "--list", "tiny_fail"],
        &[
            "--spec",
            "fixtures/spec.toml",
            "--runtime",
            "all",
            "--list",
            "--format",
            "json",
        ],
        &["matrix", "--spec", "fixtures/spec.toml", "--per-image"],
        &["matrix", "--spec", "fixtures/spec.toml", "--shards", "2"],
        &["matrix", "--spec", "fixtures/spec.toml", "--shards", "8"],
        &["matrix", "--spec", &spec, "--per-image"],
        &[
            "matrix",
            "--spec",
            &spec,
            "--shards",
            "2",
            "--durations",
            &durations,
        ],
        &[
            "--spec",
            &spec,
            "--partition",
            "time:2/2",
            "--durations",
            &durations,
            "--list",
        ],
    ];
    let mut said = String::new();
    for args in commands {
        let run = runner(args);
        assert_eq!(run.code, 0, "{args:?}\n{}", run.all());
        said.push_str(&normalise::transcript(args, &run));
    }
    normalise::messages().bind(|| insta::assert_snapshot!("list_and_matrix_lines", said));
}
