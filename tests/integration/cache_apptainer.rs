//! End to end, model-data caches under Apptainer: the fixture SIF (fixtures/sif/make-sif.sh) run
//! by the REAL Apptainer (Debian sid) through the launcher fixtures/apptainer/apptainer. A cache
//! is a host folder per (SIF md5, path) under `--cache-dir`, bound at the path; with
//! `apptainer_home` the case's `$HOME` is the image's home (with what the image keeps there),
//! and the caches under it are bound there.

use std::path::Path;

use crate::helpers::*;

/// The fixture SIF and its md5.
fn fixture_sif() -> (std::path::PathBuf, String) {
    use md5::{Digest, Md5};
    let sif = fixture_cache().join("kipoi-fixture.sif");
    let bytes = std::fs::read(&sif).unwrap_or_else(|e| {
        panic!(
            "fixture SIF {} is missing ({e}); run `bash fixtures/build.sh`",
            sif.display()
        )
    });
    let md5 = Md5::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (sif, md5)
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[test]
fn apptainer_cache_folders_are_bound_reused_listed_and_pruned() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let (sif, md5) = fixture_sif();
    let dir = tempfile::tempdir().unwrap();
    let entry = format!(
        r#"{{"url": "file://{}", "name": "kipoi-fixture", "md5": "{md5}"}}"#,
        sif.display()
    );
    write_catalog(
        &dir.path().join("catalog"),
        &[("counter", FIXTURE_IMAGE)],
        Some(&format!(r#"{{"counter": {entry}}}"#)),
    );
    // Each run adds one to a count in each cache and prints it, with $HOME and whether the
    // image's own home is there (the fixture image keeps kipoi's config in /root/.kipoi; without
    // `apptainer_home` the launcher's Apptainer binds the host's /root over it).
    let spec = dir.path().join("spec.toml");
    std::fs::write(
        &spec,
        r#"catalog = "catalog"
command = ["sh", "-c", "echo HOME=$HOME; test -f $HOME/.kipoi/config.yaml && echo image-home=yes; for d in $HOME/.keras /data/cache; do n=$(cat $d/count 2>/dev/null || echo 0); echo $((n+1)) > $d/count; echo $d runs=$((n+1)); done"]
network = "none"
timeout = "2m"
caches = ["/root/.keras", "/data/cache"]
apptainer_home = "/root"
"#,
    )
    .unwrap();
    let cache_dir = dir.path().join("caches");
    let sif_dir = dir.path().join("sifs");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = [
            "--spec",
            spec.to_str().unwrap(),
            "--runtime",
            "singularity",
            "--singularity-bin",
            root()
                .join("fixtures/apptainer/apptainer")
                .to_str()
                .unwrap(),
            "--sif-dir",
            sif_dir.to_str().unwrap(),
            "--cache-dir",
            cache_dir.to_str().unwrap(),
            "--store-success-output",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        all.extend(extra.iter().map(|s| s.to_string()));
        all
    };
    for n in 1..=3 {
        // The third run is offline (`--net --network none`): the caches are still there.
        let extra: &[&str] = if n == 3 { &["--offline"] } else { &[] };
        let (run, report) = run_reported(&strs(&args(extra)), &[]);
        assert_eq!(run.code, 0, "{}", run.all());
        let doc = report.doc();
        let case = testcase(&doc, "counter");
        let out = child_text(case, "system-out");
        assert!(out.contains("HOME=/root\nimage-home=yes"), "{out}");
        assert!(
            out.contains(&format!("/root/.keras runs={n}"))
                && out.contains(&format!("/data/cache runs={n}")),
            "run {n}: {out}"
        );
        let fact = case_fact(case, "cache").expect("a cache fact");
        assert!(
            fact.starts_with(&cache_dir.join("apptainer").display().to_string()),
            "{fact}"
        );
    }
    // Host folders, named by the SIF's md5 and the path.
    let root = cache_dir.join("apptainer");
    let folders: Vec<String> = files_in(&root)
        .into_iter()
        .filter(|n| root.join(n).is_dir() && n != "homes")
        .collect();
    assert_eq!(folders.len(), 2, "{folders:?}");
    for folder in &folders {
        assert!(folder.starts_with(&md5[..12]), "{folder}");
        let count = std::fs::read_to_string(root.join(folder).join("count")).unwrap();
        assert_eq!(count.trim(), "3", "{folder}");
    }

    let cache = |sub: &[&str]| {
        let mut all = vec!["cache"];
        all.extend(sub);
        all.extend([
            "--runtime",
            "singularity",
            "--cache-dir",
            cache_dir.to_str().unwrap(),
        ]);
        runner(&all)
    };
    let list = cache(&["list"]);
    assert_eq!(list.code, 0, "{}", list.all());
    let rows: Vec<&str> = list
        .stdout
        .lines()
        .filter(|l| l.starts_with("singularity"))
        .collect();
    assert_eq!(rows.len(), 2, "{}", list.all());
    assert!(rows
        .iter()
        .any(|r| r.contains("/root/.keras") && r.contains(&md5[..12])));
    // The SIF is still there: nothing to prune.
    let prune = cache(&["prune"]);
    assert!(
        prune.stdout.contains("removed 0 cache(s)"),
        "{}",
        prune.all()
    );

    // The same SIF from a second SIF folder uses the same caches (they are keyed by its md5).
    // With the first copy gone, the second still keeps them: not `[SIF gone]`, not pruned.
    let sif_dir2 = dir.path().join("sifs2");
    let mut second = args(&[]);
    let at = second.iter().position(|a| a == "--sif-dir").unwrap();
    second[at + 1] = sif_dir2.display().to_string();
    let (run, report) = run_reported(&strs(&second), &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    let out = child_text(testcase(&report.doc(), "counter"), "system-out").to_string();
    assert!(out.contains("/data/cache runs=4"), "the same caches: {out}");
    std::fs::remove_file(sif_dir.join("kipoi-fixture.sif")).unwrap();
    let list = cache(&["list"]);
    assert!(!list.stdout.contains("[SIF gone]"), "{}", list.all());
    assert!(
        list.stdout
            .contains(&sif_dir2.join("kipoi-fixture.sif").display().to_string()),
        "{}",
        list.all()
    );
    let prune = cache(&["prune"]);
    assert!(
        prune.stdout.contains("removed 0 cache(s)"),
        "the second copy still uses them: {}",
        prune.all()
    );

    // By age: a cache no case has used for longer than --unused-for goes.
    let prune = cache(&["prune", "--unused-for", "30d"]);
    assert!(
        prune.stdout.contains("removed 0 cache(s)"),
        "{}",
        prune.all()
    );
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(40 * 24 * 3600);
    std::fs::File::options()
        .write(true)
        .open(root.join(format!("{}.lock", folders[0])))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let prune = cache(&["prune", "--unused-for", "30d"]);
    assert!(
        prune.stdout.contains("unused for over 30d (--unused-for)")
            && prune.stdout.contains("removed 1 cache(s)"),
        "{}",
        prune.all()
    );
    assert!(!root.join(&folders[0]).exists());

    // Once no SIF with their md5 is left, the caches go.
    std::fs::remove_file(sif_dir2.join("kipoi-fixture.sif")).unwrap();
    let list = cache(&["list"]);
    assert!(list.stdout.contains("[SIF gone]"), "{}", list.all());
    let prune = cache(&["prune"]);
    assert_eq!(prune.code, 0, "{}", prune.all());
    assert!(
        prune.stdout.contains("its SIF is gone") && prune.stdout.contains("removed 1 cache(s)"),
        "{}",
        prune.all()
    );
    assert!(folders.iter().all(|f| !Path::new(&root.join(f)).exists()));
}

/// What this test guards, under the real Apptainer: cases of one SIF run side by side with
/// caches on, each in a slot (a host folder) of its own, and no two ever write one folder at
/// the same moment. The model is the cache collision model (fixtures/minimal-image/collide.sh,
/// run by the SIF's `sh`): it fails with git's words when its cache's `index.lock` is already
/// there. The control run gives every case one shared host folder instead of caches (as the
/// caches would be with the slots and their locks dropped): at two threads a case fails so.
/// With caches, the same cases pass, in two slots.
#[test]
fn apptainer_cases_of_one_sif_run_side_by_side_with_caches() {
    let _daemon = daemon::shared();
    require_fixture_image();
    let (sif, md5) = fixture_sif();
    let dir = tempfile::tempdir().unwrap();
    let models = ["a1", "a2", "a3", "a4"];
    let entry = format!(
        r#"{{"url": "file://{}", "name": "kipoi-fixture", "md5": "{md5}"}}"#,
        sif.display()
    );
    let sifs: Vec<String> = models.iter().map(|m| format!("\"{m}\": {entry}")).collect();
    let pairs: Vec<(&str, &str)> = models.iter().map(|m| (*m, FIXTURE_IMAGE)).collect();
    write_catalog(
        &dir.path().join("catalog"),
        &pairs,
        Some(&format!("{{{}}}", sifs.join(", "))),
    );
    let cache = "/data/cache";
    let script = crate::helpers::minimal::collide_script();
    let spec = |name: &str, extra: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "catalog = \"catalog\"\ncommand = [\"sh\", \"-c\", '''{script}''', \"collide\", \
                 \"{cache}\", \"{{model}}\", \"1.5\", \"0\"]\nnetwork = \"none\"\n\
                 timeout = \"2m\"\n{extra}\n"
            ),
        )
        .unwrap();
        path.display().to_string()
    };
    let cache_dir = dir.path().join("caches");
    let run = |spec: &str| {
        let launcher = root().join("fixtures/apptainer/apptainer");
        run_reported(
            &[
                "--spec",
                spec,
                "--runtime",
                "singularity",
                "--singularity-bin",
                launcher.to_str().unwrap(),
                "--sif-dir",
                dir.path().join("sifs").to_str().unwrap(),
                "--cache-dir",
                cache_dir.to_str().unwrap(),
                "--test-threads",
                "2",
            ],
            &[],
        )
    };

    let shared = tempfile::tempdir().unwrap();
    let control = spec(
        "control.toml",
        &format!("volumes = [\"{}:{cache}\"]", shared.path().display()),
    );
    let (control_run, report) = run(&control);
    assert_eq!(control_run.code, 101, "{}", control_run.all());
    assert!(
        report
            .text()
            .contains(&crate::helpers::minimal::git_collision(cache)),
        "a case failed with git's words: {}",
        report.text()
    );

    let with_caches = spec("caches.toml", &format!("caches = [\"{cache}\"]"));
    let (cached, _) = run(&with_caches);
    assert_eq!(cached.code, 0, "{}", cached.all());
    for model in models {
        assert_status(&cached, &format!("singularity::{model}"), "ok");
    }
    let root = cache_dir.join("apptainer");
    let folders: Vec<String> = files_in(&root)
        .into_iter()
        .filter(|n| root.join(n).is_dir() && n != "homes")
        .collect();
    assert_eq!(folders.len(), 2, "one folder per slot: {folders:?}");
    let pulls: usize = folders
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(root.join(f).join("models/pulls")).unwrap();
            assert!(!text.is_empty(), "both slots were used: {f}");
            text.lines().count()
        })
        .sum();
    assert_eq!(pulls, 4, "every case wrote its folder once");
}
