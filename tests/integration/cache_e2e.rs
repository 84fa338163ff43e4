//! End to end, model-data caches under Docker: the ANTsPyNet-like fixture images
//! (local/keras-fixture:v1 and :v2, fixtures/keras-image) run a "model" as the non-root user
//! `modeluser` that downloads its data at run time into ~/.keras from a real HTTP server on
//! 127.0.0.1 that each test starts (containers use network `host` to reach it), and fails
//! without it. Each test has its own cache folder (`--cache-dir`), which namespaces the Docker
//! volumes, and prunes them at the end. No stand-in is used in this file.

use crate::helpers::keras::*;
use crate::helpers::*;

#[test]
fn a_cache_is_kept_across_runs_and_across_repulls_of_one_image_id() {
    let _daemon = daemon::shared();
    let zoo = KerasZoo::new();
    let tag = format!("local/keras-fixture:repull-{}", std::process::id());
    derived_image(KERAS_V1, &tag);
    let _image = RemoveOnDrop(tag.clone());
    let path = zoo.serve(1, "brain");
    let spec = zoo.spec("s", &[("brain", &tag)], "");

    let (run, report) = zoo.run(&spec, &["--store-success-output"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(zoo.requests(&path), 1, "the first run downloads");
    let doc = report.doc();
    let case = testcase(&doc, "brain");
    let volumes = zoo.volumes();
    assert_eq!(volumes.len(), 1, "{volumes:?}");
    let fact = case_fact(case, "cache").expect("a cache fact");
    assert_eq!(fact, format!("{} at /home/modeluser/.keras", volumes[0]));
    assert!(child_text(case, "system-out").contains("downloaded"));

    // Again: the data is in the cache.
    let (run, report) = zoo.run(&spec, &["--store-success-output"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(zoo.requests(&path), 1, "the second run downloads nothing");
    let out = child_text(testcase(&report.doc(), "brain"), "system-out").to_string();
    assert!(out.contains("using cached"), "{out}");

    // The image leaves the daemon and comes back with the same ID, as a re-pull of an
    // unchanged image does (no registry here: `docker save`, `docker image rm`, `docker load`).
    let id = image_id(&tag);
    let saved = zoo.dir.path().join("image.tar");
    let saved = saved.to_str().unwrap();
    docker(&["save", "-o", saved, &tag]);
    remove_image(&tag);
    assert!(image_id(&id).is_empty(), "the image is gone");
    docker(&["load", "-i", saved]);
    assert_eq!(image_id(&tag), id);
    let (run, _) = zoo.run(&spec, &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(zoo.requests(&path), 1, "no download after the re-pull");
    assert_eq!(zoo.volumes(), volumes);

    // `cache list` shows it: runtime, image, path, a size in KiB, created and last used, the
    // volume. Its columns are as wide as the widest name, which varies: spaces collapsed.
    let list = zoo.cache(&["list"]);
    assert_eq!(list.code, 0, "{}", list.all());
    let mut settings = normalise::messages();
    settings.add_filter(&normalise::escape(&volumes[0]), "[VOLUME]");
    settings.add_filter(&normalise::escape(&tag), "[TAG]");
    settings.add_filter(r"\([0-9a-f]{12}\)", "([SHORT-ID])");
    settings.add_filter(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "[DATE]");
    settings.add_filter(r"\b\d+(?:\.\d+)? KiB\b", "[N] KiB");
    settings.add_filter(r" {2,}", "  ");
    settings.bind(|| insta::assert_snapshot!("cache_list", list.stdout));
}

/// Runs the docker CLI, failing the test when it fails.
fn docker(args: &[&str]) {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_new_image_version_never_sees_the_old_versions_file() {
    let _daemon = daemon::shared();
    let zoo = KerasZoo::new();
    let v1 = zoo.serve(1, "brain");
    let v2 = zoo.serve(2, "brain");
    let first = zoo.spec("v1", &[("brain", KERAS_V1)], "");
    let second = zoo.spec("v2", &[("brain", KERAS_V2)], "");
    let (run, _) = zoo.run(&first, &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    // Version 2 keeps its data under the same file name; with version 1's file it would fail
    // ("holds the data of version 1").
    let (run, report) = zoo.run(&second, &["--store-success-output"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!((zoo.requests(&v1), zoo.requests(&v2)), (1, 1));
    let out = child_text(testcase(&report.doc(), "brain"), "system-out").to_string();
    assert!(out.contains("data version 2"), "{out}");
    assert_eq!(zoo.volumes().len(), 2, "one volume per image ID");
    // And each keeps its own: both run again without a download.
    let (run, _) = zoo.run(&first, &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    let (run, _) = zoo.run(&second, &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!((zoo.requests(&v1), zoo.requests(&v2)), (1, 1));
}

#[test]
fn a_non_root_user_writes_its_cache_whether_or_not_the_image_has_the_path() {
    let _daemon = daemon::shared();
    let zoo = KerasZoo::new();
    zoo.serve(1, "inside");
    zoo.serve(1, "absent");
    // ~/.keras is in the image, owned by root and not writable by modeluser (as in ANTsPyNet's
    // image), with a keras.json in it; /opt/absent/keras is not in the image at all.
    let spec = zoo.spec(
        "s",
        &[("inside", KERAS_V1), ("absent", KERAS_V1)],
        r#"caches = ["/home/modeluser/.keras", "/opt/absent/keras"]
[models.inside]
command = ["sh", "-c", "cat ~/.keras/keras.json && exec python3 /opt/fakenet/fakenet.py inside"]
[models.absent]
command = ["sh", "-c", "KERAS_HOME=/opt/absent/keras exec python3 /opt/fakenet/fakenet.py absent"]
"#,
    );
    let (run, report) = zoo.run(&spec, &["--store-success-output"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let doc = report.doc();
    let inside = child_text(testcase(&doc, "inside"), "system-out").to_string();
    assert!(
        inside.contains("\"image_version\": \"1\""),
        "the image's own content is in the cache: {inside}"
    );
    let volumes = zoo.volumes();
    assert_eq!(volumes.len(), 2, "{volumes:?}");
    let keras = volumes
        .iter()
        .find(|v| v.contains("home_modeluser_.keras"))
        .unwrap();
    let files = files_of_volume(keras, KERAS_V1);
    assert!(
        files.contains("modeluser .\n"),
        "given to the user:\n{files}"
    );
    assert!(
        files.contains("root ./keras.json"),
        "kept its owner:\n{files}"
    );
    assert!(files.contains("modeluser ./ANTsXNet/inside.dat"), "{files}");
    let absent = volumes
        .iter()
        .find(|v| v.contains("opt_absent_keras"))
        .unwrap();
    let files = files_of_volume(absent, KERAS_V1);
    assert!(files.contains("modeluser ./ANTsXNet/absent.dat"), "{files}");
}

#[test]
fn parallel_cases_and_two_runners_on_one_cache_corrupt_nothing() {
    let _daemon = daemon::shared();
    let zoo = KerasZoo::new();
    // Four models that all need one file, written slowly (4 KiB chunks, 30 ms apart: about half
    // a second) and in place, as keras writes it: a reader during the write sees a partial file
    // and fails as corrupt, and two writers interleave.
    let path = zoo.serve(1, "shared");
    let models = [
        ("p1", KERAS_V1),
        ("p2", KERAS_V1),
        ("p3", KERAS_V1),
        ("p4", KERAS_V1),
    ];
    let spec = zoo.spec(
        "s",
        &models,
        &format!(
            "command = \"python3 /opt/fakenet/fakenet.py shared\"\n\
             env = [\"FAKENET_URL={}\", \"FAKENET_SLOW=0.03\"]",
            zoo.url()
        ),
    );

    let dir = zoo.cache_dir().display().to_string();
    let args = ["--spec", &spec, "--cache-dir", &dir, "--test-threads", "4"];
    let (a, report_a) = spawn_reported(&args, &[]);
    let (b, report_b) = spawn_reported(&args, &[]);
    let (a, b) = (finish(a), finish(b));
    for (run, report) in [(&a, &report_a), (&b, &report_b)] {
        assert_eq!(run.code, 0, "{}", run.all());
        for (model, _) in models {
            assert_status(run, &format!("docker::{model}"), "ok");
        }
        report.text();
    }
    // Each slot (a replica of the cache, at most --test-threads of them) downloads the file
    // once, written by one case at a time.
    let volumes = zoo.volumes();
    assert!((1..=4).contains(&volumes.len()), "{volumes:?}");
    assert_eq!(
        zoo.requests(&path),
        volumes.len(),
        "one download per slot for eight cases"
    );
    for volume in &volumes {
        let files = files_of_volume(volume, KERAS_V1);
        assert!(files.contains("./ANTsXNet/shared.dat"), "{files}");
    }
}

#[test]
fn offline_passes_after_a_warm_run_and_fails_with_the_models_message_after_prune_all() {
    let _daemon = daemon::shared();
    let zoo = KerasZoo::new();
    let path = zoo.serve(1, "brain");
    let spec = zoo.spec("s", &[("brain", KERAS_V1)], "");
    let dir = zoo.cache_dir().display().to_string();

    let report = Report::new();
    // As the README writes it: run-wide flags (the spec too) before `cache warm`.
    let warm = runner(&[
        "--junit",
        report.path(),
        "--spec",
        &spec,
        "cache",
        "warm",
        "--cache-dir",
        &dir,
    ]);
    assert_eq!(warm.code, 0, "{}", warm.all());
    assert_status(&warm, "docker::brain", "ok");
    assert!(warm.stderr.contains("1 cache(s) used"), "{}", warm.all());
    assert_eq!(zoo.requests(&path), 1);

    let (run, report) = zoo.run(&spec, &["--offline"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stderr.contains("offline run"), "{}", run.all());
    assert_eq!(zoo.requests(&path), 1, "offline: nothing fetched");
    let doc = report.doc();
    assert!(property(&doc, "network").contains("offline"));

    let prune = zoo.cache(&["prune", "--all"]);
    assert_eq!(prune.code, 0, "{}", prune.all());
    assert!(
        prune.stdout.contains("removed 1 cache(s)"),
        "{}",
        prune.all()
    );
    assert!(zoo.volumes().is_empty());

    let (run, report) = zoo.run(&spec, &["--offline"]);
    assert_eq!(run.code, 101, "{}", run.all());
    assert_eq!(
        zoo.requests(&path),
        1,
        "offline: no request reached the server"
    );
    let doc = report.doc();
    let message = child_message(testcase(&doc, "brain"), "failure");
    assert!(
        message.contains(&format!(
            "Exception: URL fetch failure on {}",
            zoo.server.url(&path)
        )),
        "the model's own message: {message}"
    );
    assert!(property(&doc, "network").contains("offline run"));
    assert!(run.stderr.contains("this run was offline"), "{}", run.all());
}

#[test]
fn prune_removes_the_caches_of_images_the_daemon_no_longer_has() {
    let _daemon = daemon::shared();
    let zoo = KerasZoo::new();
    zoo.serve(1, "brain");
    let gone = format!("local/keras-fixture:gone-{}", std::process::id());
    derived_image(KERAS_V1, &gone);
    let _image = RemoveOnDrop(gone.clone());
    let kept = zoo.spec("kept", &[("brain", KERAS_V1)], "");
    let removed = zoo.spec("gone", &[("brain", &gone)], "");
    for spec in [&kept, &removed] {
        let (run, _) = zoo.run(spec, &[]);
        assert_eq!(run.code, 0, "{}", run.all());
    }
    let before = zoo.volumes();
    assert_eq!(before.len(), 2);
    // The image is still there: nothing to prune.
    let prune = zoo.cache(&["prune"]);
    assert!(
        prune.stdout.contains("removed 0 cache(s)"),
        "{}",
        prune.all()
    );
    remove_image(&gone);
    let list = zoo.cache(&["list"]);
    assert!(list.stdout.contains("[image gone]"), "{}", list.all());
    let prune = zoo.cache(&["prune"]);
    assert_eq!(prune.code, 0, "{}", prune.all());
    assert!(
        prune.stdout.contains("its image is gone") && prune.stdout.contains("removed 1 cache(s)"),
        "{}",
        prune.all()
    );
    let after = zoo.volumes();
    assert_eq!(after.len(), 1);
    assert!(after[0].contains(&crate::helpers::keras::image_id(KERAS_V1)[7..19]));
}

#[test]
fn no_cache_runs_from_the_image_alone() {
    let _daemon = daemon::shared();
    let zoo = KerasZoo::new();
    let path = zoo.serve(1, "brain");
    // Without a cache ~/.keras is the image's, which modeluser cannot write (as in ANTsPyNet's
    // image); KERAS_HOME points the model at a writable place.
    let spec = zoo.spec(
        "s",
        &[("brain", KERAS_V1)],
        "[models.brain]\ncommand = [\"sh\", \"-c\", \"KERAS_HOME=/tmp/k exec python3 \
         /opt/fakenet/fakenet.py brain\"]",
    );
    for n in 1..=2 {
        let (run, report) = zoo.run(&spec, &["--no-cache"]);
        assert_eq!(run.code, 0, "{}", run.all());
        assert_eq!(zoo.requests(&path), n, "every run downloads");
        assert!(property(&report.doc(), "caches").contains("--no-cache"));
    }
    assert!(zoo.volumes().is_empty());
}

#[test]
fn versions_run_once_per_image_and_reach_the_report_and_the_summary() {
    let _daemon = daemon::shared();
    let zoo = KerasZoo::new();
    for v in [1, 2] {
        for name in ["a", "b"] {
            zoo.serve(v, name);
        }
    }
    let probe = tempfile::tempdir().unwrap();
    let mut perms = std::fs::metadata(probe.path()).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o777);
    std::fs::set_permissions(probe.path(), perms).unwrap();
    // The command notes each time it runs in a host folder.
    let spec = zoo.spec(
        "s",
        &[("a", KERAS_V1), ("b", KERAS_V1), ("v2/a", KERAS_V2), ("v2/b", KERAS_V2)],
        &format!(
            "command = [\"sh\", \"-c\", \"exec python3 /opt/fakenet/fakenet.py $(basename {{model}})\"]\n\
             volumes = [\"{}:/probe\"]\n\
             versions = \"sh -c 'echo run >> /probe/runs; python -m pip freeze'\"",
            probe.path().display()
        ),
    );
    let (run, report) = zoo.run(&spec, &["--test-threads", "2"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let runs = std::fs::read_to_string(probe.path().join("runs")).unwrap();
    assert_eq!(runs.lines().count(), 2, "once per image, not per case");
    let doc = report.doc();
    for (image, want) in [(KERAS_V1, "fakenet==1.0.0"), (KERAS_V2, "fakenet==2.0.0")] {
        let suite = elements(&doc, "testsuite")
            .into_iter()
            .find(|s| s.attribute("name") == Some(&format!("docker:{image}")))
            .unwrap();
        let versions: Vec<&str> = suite
            .descendants()
            .filter(|n| n.has_tag_name("property") && n.attribute("name") == Some("versions"))
            .filter_map(|n| n.attribute("value"))
            .collect();
        assert_eq!(versions.len(), 1, "{image}: {versions:?}");
        assert!(versions[0].contains(want), "{image}: {}", versions[0]);
        assert!(
            run.stderr.contains(&format!("versions in docker:{image}")),
            "{}",
            run.all()
        );
    }
    assert!(run.stderr.contains("    fakenet==2.0.0"), "{}", run.all());
}

#[test]
fn bad_cache_settings_stop_the_run_before_any_container() {
    let _daemon = daemon::shared();
    let zoo = KerasZoo::new();
    let spec = zoo.spec("s", &[("brain", KERAS_V1)], "");
    let bad = zoo.spec(
        "bad",
        &[("brain", KERAS_V1)],
        "caches = [\"relative/path\"]",
    );
    let args = ["--spec", bad.as_str()];
    let child = spawn_runner(&args, &[]);
    let pid = child.id();
    let run = finish(child);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(containers_of(pid, None).is_empty());
    // `relative/path` must be absolute, at line 6.
    let mut said = normalise::transcript(&args, &run);
    // A cache folder that cannot be made: the message names --cache-dir.
    let file = zoo.dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let under = file.join("caches").display().to_string();
    let args = ["--spec", spec.as_str(), "--cache-dir", &under];
    let child = spawn_runner(&args, &[]);
    let pid = child.id();
    let run = finish(child);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(containers_of(pid, None).is_empty());
    said.push_str(&normalise::transcript(&args, &run));
    normalise::messages().bind(|| insta::assert_snapshot!("bad_cache_settings", said));
}

#[test]
fn a_runner_stopped_while_waiting_for_a_cache_lock_says_its_case_never_started() {
    let _daemon = daemon::shared();
    use std::io::BufRead;
    let zoo = KerasZoo::new();
    zoo.serve(1, "brain");
    let spec = zoo.spec("s", &[("brain", KERAS_V1)], "");
    // A first run makes the cache and its lock file.
    let (run, _) = zoo.run(&spec, &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    // This test holds every cache lock, as another runner's running case would.
    let locks = zoo.cache_dir().join("docker");
    let held: Vec<std::fs::File> = files_in(&locks)
        .iter()
        .filter(|name| name.ends_with(".lock"))
        .map(|name| {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(locks.join(name))
                .unwrap();
            file.try_lock().expect("nobody holds the lock");
            file
        })
        .collect();
    assert_eq!(held.len(), 1, "one cache, one lock");

    let dir = zoo.cache_dir().display().to_string();
    let (mut child, report) = spawn_reported(&["--spec", &spec, "--cache-dir", &dir], &[]);
    // Waits until the runner says it waits for the lock; then Ctrl-C.
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(stderr).lines();
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("to finish with the cache") {
            break;
        }
    }
    assert!(seen.contains("waiting for"), "{seen}");
    signal(child.id(), libc::SIGINT);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let run = finish(child);
    assert_eq!(run.code, 130, "{}\n{seen}{}", run.stdout, rest.join("\n"));
    drop(held);
    let doc = report.doc();
    let skipped = child_message(testcase(&doc, "brain"), "skipped");
    assert!(
        skipped.contains("interrupted while waiting for the lock of the cache")
            && skipped.contains("before it started")
            && !skipped.contains("while running"),
        "{skipped}"
    );
}

/// A folder nobody may write in, root included (the runner runs as root here, and root ignores
/// file modes, so `chmod` would not do): made immutable with `chattr +i` (needs
/// CAP_LINUX_IMMUTABLE and a filesystem with attributes), else covered by a read-only tmpfs
/// (needs CAP_SYS_ADMIN). Undone when dropped.
struct Unwritable {
    dir: std::path::PathBuf,
    undo: [&'static str; 2],
}

impl Unwritable {
    fn make(dir: &std::path::Path) -> Unwritable {
        std::fs::create_dir_all(dir).unwrap();
        let run = |program: &str, args: &[&str]| {
            std::process::Command::new(program)
                .args(args)
                .arg(dir)
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if run("chattr", &["+i"]) {
            return Unwritable {
                dir: dir.to_path_buf(),
                undo: ["chattr", "-i"],
            };
        }
        assert!(
            run("mount", &["-t", "tmpfs", "-o", "ro", "tmpfs"]),
            "this test needs root: neither `chattr +i` nor a read-only tmpfs mount worked on {} \
             (plain chmod does not stop root, who runs the runner here)",
            dir.display()
        );
        Unwritable {
            dir: dir.to_path_buf(),
            undo: ["umount", ""],
        }
    }
}

impl Drop for Unwritable {
    fn drop(&mut self) {
        let mut undo = std::process::Command::new(self.undo[0]);
        if !self.undo[1].is_empty() {
            undo.arg(self.undo[1]);
        }
        let _ = undo.arg(&self.dir).status();
    }
}

#[test]
fn a_cache_folder_that_cannot_be_written_stops_the_run_before_any_container() {
    let _daemon = daemon::shared();
    let zoo = KerasZoo::new();
    let spec = zoo.spec("s", &[("brain", KERAS_V1)], "");
    let locked = Unwritable::make(&zoo.cache_dir());
    let dir = zoo.cache_dir().display().to_string();
    let (child, _report) = spawn_reported(&["--spec", &spec, "--cache-dir", &dir], &[]);
    let pid = child.id();
    let run = finish(child);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains("cannot write in the cache folder")
            && run.stderr.contains(&dir)
            && run.stderr.contains("--cache-dir"),
        "{}",
        run.all()
    );
    assert!(!run.stdout.contains("test docker::"), "{}", run.all());
    assert!(containers_of(pid, None).is_empty());
    drop(locked);
}
