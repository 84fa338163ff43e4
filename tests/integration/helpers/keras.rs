//! Helpers for the cache tests: the ANTsPyNet-like fixture images (fixtures/keras-image), their
//! data files, and a zoo of them written to a temporary folder with its own cache folder.
//!
//! The "model" in those images (fakenet.py) downloads `/vV/NAME.dat` from `FAKENET_URL` into
//! `~/.keras/ANTsXNet/NAME.dat` when the file is missing; the tests serve it with the real HTTP
//! server on 127.0.0.1 of `common::http`, so their containers use network `host`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use md5::{Digest, Md5};

use super::http::{Reply, Server};
use super::{run_reported, runner, write_catalog, Report, Run};

pub const KERAS_V1: &str = "local/keras-fixture:v1";
pub const KERAS_V2: &str = "local/keras-fixture:v2";

/// Fails with a useful message when the fixture images are missing.
pub fn require_keras_images() {
    let out = Command::new("docker")
        .args(["image", "inspect", "-f", "{{.Id}}", KERAS_V1, KERAS_V2])
        .output()
        .expect("the docker CLI runs");
    assert!(
        out.status.success(),
        "fixture images {KERAS_V1} and {KERAS_V2} are missing or the daemon is down; run \
         `bash fixtures/build.sh`: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The data file fakenet.py of image version `version` expects for `name` (the format
/// fixtures/keras-image/serve.py serves too): a header line and `size` bytes.
pub fn data_file(version: u32, name: &str, size: usize) -> Arc<Vec<u8>> {
    let payload: Vec<u8> = (0..size)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(version as u8))
        .collect();
    let md5: String = Md5::digest(&payload)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut file = format!("fakenet-data version={version} name={name} md5={md5}\n").into_bytes();
    file.extend(payload);
    Arc::new(file)
}

/// A fixture zoo in a temporary folder: a catalog, a spec, and a cache folder of its own (so
/// tests running at once never share a cache). Its caches are pruned when it is dropped.
pub struct KerasZoo {
    pub dir: tempfile::TempDir,
    pub server: Server,
}

impl Default for KerasZoo {
    fn default() -> Self {
        Self::new()
    }
}

impl KerasZoo {
    pub fn new() -> KerasZoo {
        require_keras_images();
        KerasZoo {
            dir: tempfile::tempdir().unwrap(),
            server: Server::start(),
        }
    }

    /// Serves the data file of `version` for `name` (64 KiB).
    pub fn serve(&self, version: u32, name: &str) -> String {
        let path = format!("/v{version}/{name}.dat");
        self.server.script(
            &path,
            vec![Reply::File(data_file(version, name, 64 * 1024))],
        );
        path
    }

    /// The server's address, for `FAKENET_URL`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port)
    }

    /// How many times `path` was asked for.
    pub fn requests(&self, path: &str) -> usize {
        self.server.requests(path).len()
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("caches")
    }

    /// Writes `NAME.toml` and its catalog `NAME-catalog/` ((model, image) pairs); `extra` is
    /// added after a head that runs fakenet.py with network `host`, the server's URL in `env`
    /// and the cache `/home/modeluser/.keras`, unless `extra` sets `command`, `env` or `caches`
    /// itself (before its first table).
    pub fn spec(&self, name: &str, models: &[(&str, &str)], extra: &str) -> String {
        let catalog = format!("{name}-catalog");
        write_catalog(&self.dir.path().join(&catalog), models, None);
        let sets = |key: &str| {
            extra
                .lines()
                .take_while(|l| !l.starts_with('['))
                .any(|l| l.starts_with(&format!("{key} =")))
        };
        let command = if sets("command") {
            String::new()
        } else {
            "command = \"python3 /opt/fakenet/fakenet.py {model}\"\n".to_string()
        };
        let caches = if sets("caches") {
            String::new()
        } else {
            "caches = [\"/home/modeluser/.keras\"]\n".to_string()
        };
        let env = if sets("env") {
            String::new()
        } else {
            format!("env = [\"FAKENET_URL={}\"]\n", self.url())
        };
        let text = format!(
            "catalog = \"{catalog}\"\n{command}network = \"host\"\ntimeout = \"2m\"\n\
             {env}{caches}{extra}\n"
        );
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    /// Runs the runner with `--spec spec --cache-dir <ours>` and `args`, with a fresh report.
    pub fn run(&self, spec: &str, args: &[&str]) -> (Run, Report) {
        let dir = self.cache_dir().display().to_string();
        let mut all = vec!["--spec", spec, "--cache-dir", &dir];
        all.extend(args);
        run_reported(&all, &[])
    }

    /// `zoo-runner cache SUBCOMMAND ... --cache-dir <ours>`.
    pub fn cache(&self, args: &[&str]) -> Run {
        let dir = self.cache_dir().display().to_string();
        let mut all = vec!["cache"];
        all.extend(args);
        all.extend(["--cache-dir", &dir]);
        runner(&all)
    }

    /// The Docker cache volumes of this zoo's cache folder.
    pub fn volumes(&self) -> Vec<String> {
        volumes_labelled(&format!(
            "org.zoo-runner.cache.dir={}",
            std::fs::canonicalize(self.cache_dir())
                .unwrap_or_else(|_| self.cache_dir())
                .display()
        ))
    }
}

impl Drop for KerasZoo {
    fn drop(&mut self) {
        if self.cache_dir().exists() {
            let _ = self.cache(&["prune", "--all"]);
        }
    }
}

/// Names of the Docker volumes carrying a label.
pub fn volumes_labelled(label: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["volume", "ls", "-q", "--filter", &format!("label={label}")])
        .output()
        .expect("docker volume ls runs");
    assert!(out.status.success());
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

/// Lists the files of a Docker volume, as root in a throwaway container of `image` with no
/// network, as `OWNER PATH` lines.
pub fn files_of_volume(volume: &str, image: &str) -> String {
    let out = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            "--user",
            "0",
            "-v",
            &format!("{volume}:/v"),
            image,
            "sh",
            "-c",
            "cd /v && find . | sort | while read f; do echo \"$(stat -c %U \"$f\") $f\"; done",
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

/// A throwaway image with an ID of its own, made from `base` (a label only, so it is instant).
pub fn derived_image(base: &str, tag: &str) -> String {
    let mut child = Command::new("docker")
        .args(["build", "-q", "-t", tag, "-"])
        .env("DOCKER_BUILDKIT", "0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("docker build runs");
    use std::io::Write;
    let dockerfile = format!("FROM {base}\nLABEL zoo-runner.test={tag}\n");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(dockerfile.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Removes an image tag (and the image, when nothing else uses it).
pub fn remove_image(tag: &str) {
    let _ = Command::new("docker")
        .args(["image", "rm", "-f", tag])
        .output();
}

/// Removes an image tag when the test ends, whatever happened (a failed assertion included).
pub struct RemoveOnDrop(pub String);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        remove_image(&self.0);
    }
}

/// The `docker image inspect` id of an image.
pub fn image_id(image: &str) -> String {
    let out = Command::new("docker")
        .args(["image", "inspect", "-f", "{{.Id}}", image])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
