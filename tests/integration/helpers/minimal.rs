//! Helpers for the tests of caches on minimal images and of parallel cases: the minimal fixture
//! images (fixtures/minimal-image: FROM scratch, a static busybox with a handful of applets and
//! no `chown`, a non-root user `zoo` 1000:1000) and the cache collision model they carry,
//! `/collide.sh` (it fails with git's words when two cases write its cache at once).

use std::process::Command;

use super::root;

/// USER zoo; the cache path /home/zoo/.keras is not in the image.
pub const MINIMAL_ABSENT: &str = "local/minimal-fixture:absent";
/// USER 1000:1000; /home/zoo/.keras is in the image, 1000:1000, mode 0750, with a keras.json.
pub const MINIMAL_PRESENT: &str = "local/minimal-fixture:present";
/// USER zoo; /home/zoo/.keras is in the image but belongs to root (0755).
pub const MINIMAL_ROOTDIR: &str = "local/minimal-fixture:rootdir";

/// Fails with a useful message when the minimal fixture images are missing.
pub fn require_minimal_images() {
    let out = Command::new("docker")
        .args(["image", "inspect", "-f", "{{.Id}}"])
        .args([MINIMAL_ABSENT, MINIMAL_PRESENT, MINIMAL_ROOTDIR])
        .output()
        .expect("the docker CLI runs");
    assert!(
        out.status.success(),
        "the minimal fixture images are missing; run `bash fixtures/build.sh`: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The collision model's text (fixtures/minimal-image/collide.sh), for images that do not
/// carry it (it runs as `sh -c TEXT collide CACHE MODEL HOLD REST`).
pub fn collide_script() -> String {
    std::fs::read_to_string(root().join("fixtures/minimal-image/collide.sh")).unwrap()
}

/// The git words the collision model fails with when its cache's lock file is there.
pub fn git_collision(cache: &str) -> String {
    format!("fatal: Unable to create '{cache}/models/.git/index.lock': File exists.")
}

/// The files of a Docker volume as `UID:GID MODE PATH` lines (numbers: the images do not share
/// names), read as root in a throwaway container of the keras fixture image (GNU stat).
pub fn owners_in_volume(volume: &str) -> String {
    let out = Command::new("docker")
        .args(["run", "--rm", "--network", "none", "--user", "0"])
        .args(["-v", &format!("{volume}:/v"), super::keras::KERAS_V1])
        .args([
            "sh",
            "-c",
            "cd /v && find . | sort | xargs stat -c '%u:%g %a %n'",
        ])
        .output()
        .expect("docker run runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text of a file in a Docker volume (empty when it is not there).
pub fn file_in_volume(volume: &str, file: &str) -> String {
    let out = Command::new("docker")
        .args(["run", "--rm", "--network", "none", "--user", "0"])
        .args(["-v", &format!("{volume}:/v"), super::keras::KERAS_V1])
        .args(["sh", "-c", &format!("cat /v/{file} 2>/dev/null || true")])
        .output()
        .expect("docker run runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
