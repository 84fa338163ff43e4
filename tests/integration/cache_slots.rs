//! End to end, caches in slots under Docker: cases of one image run side by side with caches
//! on, each in a slot (a replica) of its own, and caches on images that have nothing to set
//! them up with (no shell tools, no `chown`).
//!
//! The model is the cache collision model of the minimal fixture images
//! (fixtures/minimal-image/collide.sh): it takes `models/.git/index.lock` in its cache with
//! O_EXCL, holds it a moment, and fails with git's words when the file is already there, as
//! kipoi's `git pull` in `~/.kipoi/models` does when two cases write one checkout at once. Each
//! test has its own cache folder. No stand-in is used in this file.

use crate::helpers::http::Reply;
use crate::helpers::keras::*;
use crate::helpers::minimal::*;
use crate::helpers::*;

const CACHE: &str = "/home/zoo/.keras";

/// A spec for the collision model on `models` (model, image): the lock held `hold` seconds,
/// the cache at [`CACHE`] (unless `extra` sets `caches`), and `extra` after that.
fn collide_spec(
    zoo: &KerasZoo,
    name: &str,
    models: &[(&str, &str)],
    hold: &str,
    extra: &str,
) -> String {
    zoo.spec(
        name,
        models,
        &format!(
            "command = \"sh /collide.sh {CACHE} {{model}} {hold} 0\"\n{}{extra}",
            if extra.contains("caches =") {
                String::new()
            } else {
                format!("caches = [\"{CACHE}\"]\n")
            }
        ),
    )
}

/// What this test guards: no two cases ever write one cache's files at the same moment, while
/// cases of one image run side by side.
///
/// The control run shows that the model fails when they do: its cache is one host folder
/// shared by every case (as the caches would be with the slots and their locks dropped), and at
/// two threads a case finds the other's `index.lock` and fails with git's words. With caches
/// on, the same cases at two threads all pass, because each holds a slot of its own: two
/// replicas of the cache, both used, each written by one case at a time.
#[test]
fn parallel_cases_with_caches_never_write_one_replica_at_once() {
    let _daemon = daemon::shared();
    require_minimal_images();
    let zoo = KerasZoo::new();
    let models = [
        ("c1", MINIMAL_ABSENT),
        ("c2", MINIMAL_ABSENT),
        ("c3", MINIMAL_ABSENT),
        ("c4", MINIMAL_ABSENT),
    ];

    // The control: one folder for every case, no caches.
    let shared = tempfile::tempdir().unwrap();
    let mut perms = std::fs::metadata(shared.path()).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o777);
    std::fs::set_permissions(shared.path(), perms).unwrap();
    let control = collide_spec(
        &zoo,
        "control",
        &models,
        "1.5",
        &format!(
            "caches = []\nvolumes = [\"{}:{CACHE}\"]",
            shared.path().display()
        ),
    );
    let (run, report) = zoo.run(&control, &["--test-threads", "2"]);
    assert_eq!(run.code, 101, "the shared folder collides: {}", run.all());
    assert!(
        report.text().contains(&git_collision(CACHE)),
        "a case failed with git's words: {}",
        report.text()
    );

    // With caches: every case passes, in two slots.
    let spec = collide_spec(&zoo, "s", &models, "1.5", "");
    let (run, report) = zoo.run(&spec, &["--test-threads", "2"]);
    assert_eq!(run.code, 0, "{}", run.all());
    for (model, _) in models {
        assert_status(&run, &format!("docker::{model}"), "ok");
    }
    let volumes = zoo.volumes();
    assert_eq!(volumes.len(), 2, "one replica per slot: {volumes:?}");
    assert!(volumes.iter().any(|v| v.ends_with("-s1")), "{volumes:?}");
    let doc = report.doc();
    let mut pulls = 0;
    for volume in &volumes {
        let lines = file_in_volume(volume, "models/pulls").lines().count();
        assert!(lines > 0, "both slots were used: {volume}");
        pulls += lines;
    }
    assert_eq!(pulls, 4, "every case wrote its replica once");
    // Each case names the replica it held among its facts.
    for (model, _) in models {
        let fact = case_fact(testcase(&doc, model), "cache").expect("a cache fact");
        assert!(
            volumes.iter().any(|v| fact == format!("{v} at {CACHE}")),
            "{fact}"
        );
    }
}

#[test]
fn two_runners_sharing_a_cache_folder_take_free_slots_or_wait() {
    let _daemon = daemon::shared();
    require_minimal_images();
    let zoo = KerasZoo::new();
    let models = [
        ("r1", MINIMAL_ABSENT),
        ("r2", MINIMAL_ABSENT),
        ("r3", MINIMAL_ABSENT),
    ];
    let spec = collide_spec(&zoo, "s", &models, "1", "");
    let dir = zoo.cache_dir().display().to_string();
    let args = ["--spec", &spec, "--cache-dir", &dir, "--test-threads", "2"];
    let (a, report_a) = spawn_reported(&args, &[]);
    let (b, report_b) = spawn_reported(&args, &[]);
    let (a, b) = (finish(a), finish(b));
    for (run, report) in [(&a, &report_a), (&b, &report_b)] {
        assert_eq!(run.code, 0, "{}", run.all());
        assert!(!report.text().contains("index.lock"), "{}", report.text());
    }
    let volumes = zoo.volumes();
    assert_eq!(
        volumes.len(),
        2,
        "at most --test-threads slots: {volumes:?}"
    );
    let pulls: usize = volumes
        .iter()
        .map(|v| file_in_volume(v, "models/pulls").lines().count())
        .sum();
    assert_eq!(pulls, 6, "six cases in all, each in a slot of its own");
}

/// Offline runs wait for each model's own slot (its data is there and nowhere else); a run with
/// fewer threads still finds each model's data in the slot it used; `cache list` shows every
/// slot and the disk they take in all, and `prune --all` removes every slot and the record.
#[test]
fn each_model_finds_its_data_in_its_own_slot_offline_and_with_fewer_threads() {
    let _daemon = daemon::shared();
    require_minimal_images();
    let zoo = KerasZoo::new();
    let names = ["d1", "d2", "d3", "d4"];
    for name in names {
        zoo.server.script(
            &format!("/data/{name}.dat"),
            vec![Reply::File(std::sync::Arc::new(
                format!("data of {name}\n").into_bytes(),
            ))],
        );
    }
    let models: Vec<(&str, &str)> = names.iter().map(|n| (*n, MINIMAL_ABSENT)).collect();
    let spec = collide_spec(
        &zoo,
        "s",
        &models,
        "1",
        &format!("env = [\"DATA_URL={}/data\"]", zoo.url()),
    );
    let requests = || -> usize {
        names
            .iter()
            .map(|n| zoo.requests(&format!("/data/{n}.dat")))
            .sum()
    };
    let report = Report::new();
    let dir = zoo.cache_dir().display().to_string();
    let warm = runner(&[
        "--junit",
        report.path(),
        "--test-threads",
        "2",
        "--spec",
        &spec,
        "cache",
        "warm",
        "--cache-dir",
        &dir,
    ]);
    assert_eq!(warm.code, 0, "{}", warm.all());
    assert_eq!(requests(), 4);
    assert_eq!(zoo.volumes().len(), 2);

    for threads in [
        &["--offline", "--test-threads", "2"][..],
        &["--test-threads", "1"],
    ] {
        let mut args = threads.to_vec();
        args.push("--store-success-output");
        let (run, report) = zoo.run(&spec, &args);
        assert_eq!(run.code, 0, "{args:?}: {}", run.all());
        assert_eq!(requests(), 4, "{args:?}: nothing fetched again");
        let doc = report.doc();
        for name in names {
            let out = child_text(testcase(&doc, name), "system-out");
            assert!(out.contains("using cached"), "{args:?} {name}: {out}");
        }
    }
    assert_eq!(zoo.volumes().len(), 2, "no slot added");

    let list = zoo.cache(&["list"]);
    assert_eq!(list.code, 0, "{}", list.all());
    let rows: Vec<&str> = list
        .stdout
        .lines()
        .filter(|l| l.starts_with("docker"))
        .collect();
    assert_eq!(rows.len(), 2, "{}", list.stdout);
    assert!(
        rows[0].contains(&format!("{CACHE}  0 ")) && rows[1].contains(&format!("{CACHE}  1 ")),
        "the slot column: {}",
        list.stdout
    );
    assert!(
        list.stdout.contains("2 cache(s) in ") && list.stdout.contains(" in all"),
        "{}",
        list.stdout
    );

    let homes = zoo.cache_dir().join("docker/homes");
    assert_eq!(
        files_in(&homes)
            .iter()
            .filter(|f| f.ends_with(".json"))
            .count(),
        1
    );
    let prune = zoo.cache(&["prune", "--all"]);
    assert!(
        prune.stdout.contains("removed 2 cache(s)"),
        "{}",
        prune.all()
    );
    assert!(zoo.volumes().is_empty());
    assert!(
        files_in(&homes).iter().all(|f| !f.ends_with(".json")),
        "the record of the slots goes with the caches: {:?}",
        files_in(&homes)
    );
}

/// Caches on images that carry nothing to set them up with: FROM scratch and a busybox with a
/// handful of applets, no `chown` (the premise is checked first), a non-root user. No program
/// of the image is run to prepare the volumes.
/// - The path is absent (USER zoo, a name): the volume is given to 1000:1000.
/// - The path is present and the user's (USER 1000:1000): its owner, mode and files come with
///   it, as Docker copies them into the new volume.
/// - The path is present but root's (USER zoo): given to 1000:1000, its mode kept.
#[test]
fn caches_need_nothing_in_the_image() {
    let _daemon = daemon::shared();
    require_minimal_images();
    let premise = std::process::Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            MINIMAL_ABSENT,
            "chown",
            "0",
            "/tmp",
        ])
        .output()
        .unwrap();
    assert!(
        !premise.status.success()
            && String::from_utf8_lossy(&premise.stderr).contains("executable file not found"),
        "the image has no chown: {}",
        String::from_utf8_lossy(&premise.stderr)
    );
    let zoo = KerasZoo::new();
    let models = [
        ("absent", MINIMAL_ABSENT),
        ("present", MINIMAL_PRESENT),
        ("rootdir", MINIMAL_ROOTDIR),
    ];
    let spec = collide_spec(&zoo, "s", &models, "0", "");
    for pass in ["fetched", "using cached"] {
        let (run, report) = zoo.run(&spec, &["--test-threads", "3", "--store-success-output"]);
        assert_eq!(run.code, 0, "{}", run.all());
        let doc = report.doc();
        for (model, _) in models {
            let out = child_text(testcase(&doc, model), "system-out");
            assert!(out.contains(pass), "{model}: {out}");
        }
    }
    let volumes = zoo.volumes();
    assert_eq!(volumes.len(), 3, "one per image: {volumes:?}");
    let owners = |image: &str| {
        let short = &image_id(image)[7..19];
        let volume = volumes.iter().find(|v| v.contains(short)).unwrap();
        owners_in_volume(volume)
    };
    let absent = owners(MINIMAL_ABSENT);
    assert!(
        absent.starts_with("1000:1000 755 .\n"),
        "given to zoo:\n{absent}"
    );
    let present = owners(MINIMAL_PRESENT);
    assert!(
        present.starts_with("1000:1000 750 .\n") && present.contains("1000:1000 644 ./keras.json"),
        "the image's folder, as it was:\n{present}"
    );
    let rootdir = owners(MINIMAL_ROOTDIR);
    assert!(
        rootdir.starts_with("1000:1000 755 .\n"),
        "given to zoo:\n{rootdir}"
    );
    for listing in [&absent, &present, &rootdir] {
        assert!(listing.contains("1000:1000 644 ./data/"), "{listing}");
    }
}
