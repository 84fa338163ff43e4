//! The fixture registries that `fixtures/registry.sh` starts on loopback (Debian's
//! docker-registry): one open, one behind an htpasswd login. Their addresses and the login are
//! read from the fixture cache, where the script writes them. Helpers push a fixture image to
//! them under a name of the test's own, talk plain HTTP to them, and write docker CLI configs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::fixture_cache;

/// One fixture registry.
#[derive(Debug, Clone)]
pub struct Registry {
    /// `127.0.0.1:PORT`.
    pub address: String,
    /// The fixture login (user, password), for the registry that wants one.
    pub login: Option<(String, String)>,
}

/// The registry anyone may push to and pull from.
pub fn open_registry() -> Registry {
    Registry {
        address: read_fixture("open/address"),
        login: None,
    }
    .checked(200)
}

/// The registry that wants the fixture login (HTTP basic auth, htpasswd).
pub fn auth_registry() -> Registry {
    let credentials = read_fixture("auth/credentials");
    let (user, password) = credentials
        .split_once(':')
        .unwrap_or_else(|| panic!("registry/auth/credentials holds USER:PASSWORD: {credentials}"));
    Registry {
        address: read_fixture("auth/address"),
        login: Some((user.to_string(), password.to_string())),
    }
    .checked(401)
}

/// A file of `$FIXTURE_CACHE/registry/`, trimmed; fails the test, saying how to make it, when
/// it is missing.
fn read_fixture(name: &str) -> String {
    let path = fixture_cache().join("registry").join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| {
            panic!(
                "{} is missing ({e}): run `bash fixtures/registry.sh` (the README's test command does)",
                path.display()
            )
        })
        .trim()
        .to_string()
}

impl Registry {
    /// Fails the test unless the registry answers `/v2/` with `want` (anonymously).
    fn checked(self, want: u16) -> Registry {
        let reply = try_http_get(&self.address, "/v2/", None);
        match reply {
            Ok(reply) if reply.status == want => self,
            other => panic!(
                "the fixture registry on {} does not answer /v2/ with {want} ({other:?}): run \
                 `bash fixtures/registry.sh`",
                self.address
            ),
        }
    }

    /// The login as `(&user, &password)`.
    pub fn login(&self) -> Option<(&str, &str)> {
        self.login.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }
}

/// An HTTP reply: status, head (status line and headers) and body.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl HttpReply {
    /// The value of a header, its name matched without regard to case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then_some(value.trim())
        })
    }
}

/// `GET path` on a loopback registry over plain HTTP/1.1, with HTTP basic auth when `login` is
/// given.
pub fn http_get(address: &str, path: &str, login: Option<(&str, &str)>) -> HttpReply {
    try_http_get(address, path, login).unwrap_or_else(|e| panic!("GET http://{address}{path}: {e}"))
}

fn try_http_get(
    address: &str,
    path: &str,
    login: Option<(&str, &str)>,
) -> std::io::Result<HttpReply> {
    assert!(
        address.starts_with("127.0.0.1:"),
        "loopback only: {address}"
    );
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    let auth = login
        .map(|(u, p)| {
            format!(
                "Authorization: Basic {}\r\n",
                STANDARD.encode(format!("{u}:{p}"))
            )
        })
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\n{auth}Connection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("an HTTP status line: {head}"));
    Ok(HttpReply {
        status,
        head: head.to_string(),
        body: body.to_string(),
    })
}

/// A docker CLI config folder of the test's own (`DOCKER_CONFIG`), so that the host's
/// `~/.docker` is neither read nor written.
pub struct DockerConfig {
    dir: tempfile::TempDir,
}

impl DockerConfig {
    /// A config with no credentials.
    pub fn empty() -> DockerConfig {
        DockerConfig::with_json("{}")
    }

    /// A config whose `auths` hold `user:password` for `registry` (key: the bare host).
    pub fn with_login(registry: &str, user: &str, password: &str) -> DockerConfig {
        let auth = STANDARD.encode(format!("{user}:{password}"));
        DockerConfig::with_json(
            &serde_json::json!({"auths": {registry: {"auth": auth}}}).to_string(),
        )
    }

    /// The registry's fixture login.
    pub fn right(registry: &Registry) -> DockerConfig {
        let (user, password) = registry.login().expect("the registry has a login");
        DockerConfig::with_login(&registry.address, user, password)
    }

    /// The registry's fixture user with a wrong password.
    pub fn wrong(registry: &Registry) -> DockerConfig {
        let (user, password) = registry.login().expect("the registry has a login");
        DockerConfig::with_login(&registry.address, user, &format!("{password}-wrong"))
    }

    /// A config written by the docker CLI itself: `docker login` to the registry.
    pub fn logged_in(registry: &Registry) -> DockerConfig {
        let config = DockerConfig::empty();
        config.docker_login(registry);
        config
    }

    pub fn with_json(json: &str) -> DockerConfig {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), json).unwrap();
        DockerConfig { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The folder as text, for `("DOCKER_CONFIG", config.env_value())`.
    pub fn env_value(&self) -> &str {
        self.dir.path().to_str().expect("a UTF-8 temporary path")
    }

    /// Runs the docker CLI with this config.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .env("DOCKER_CONFIG", self.path())
            .args(args)
            .output()
            .expect("the docker CLI runs")
    }

    /// `docker login` to the registry with its fixture login; fails the test if refused.
    pub fn docker_login(&self, registry: &Registry) {
        let (user, password) = registry.login().expect("the registry has a login");
        let mut child = Command::new("docker")
            .env("DOCKER_CONFIG", self.path())
            .args([
                "login",
                "--username",
                user,
                "--password-stdin",
                &registry.address,
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("docker login starts");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(password.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert_success(&out, &format!("docker login {}", registry.address));
    }
}

/// An image pushed to a fixture registry and absent from the daemon: pulling it downloads it.
/// Dropping it removes the local image of that name again (if a test pulled it); the registry
/// keeps its copy (a tag per test run, a repository per test name).
#[derive(Debug)]
pub struct Pushed {
    /// `127.0.0.1:PORT/zoo-runner-test/NAME:TAG`.
    pub image: String,
    /// `zoo-runner-test/NAME`.
    pub repository: String,
    /// Unique to this push.
    pub tag: String,
}

impl Drop for Pushed {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["image", "rm", &self.image])
            .output();
    }
}

/// Pushes `local_image` (say [`super::FIXTURE_IMAGE`]) to `registry` as
/// `zoo-runner-test/NAME:<unique tag>`, with one extra layer of its own (a file
/// `/zoo-runner-stamp` that names the push), then removes it from the daemon: a pull downloads
/// at least that layer, and the daemon reuses the layers of `local_image` it already has, as on
/// any host. `name` is the test's own (lower-case letters, digits, `-`, `_`, `.`).
pub fn push_fixture(local_image: &str, registry: &Registry, name: &str) -> Pushed {
    push_fixture_with(local_image, registry, name, 0)
}

/// Like [`push_fixture`], with `payload` bytes of random (incompressible) data in the stamp
/// layer, so that pulling it downloads that much and takes measurable time.
pub fn push_fixture_with(
    local_image: &str,
    registry: &Registry,
    name: &str,
    payload: usize,
) -> Pushed {
    assert!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c)),
        "a repository name: {name}"
    );
    static SERIAL: AtomicUsize = AtomicUsize::new(0);
    // One push at a time in a test binary: the first push of the fixture's big layer to a
    // registry compresses it, and two at once would both do it.
    static PUSHING: Mutex<()> = Mutex::new(());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let tag = format!(
        "t{}-{}-{nanos}",
        std::process::id(),
        SERIAL.fetch_add(1, Ordering::SeqCst)
    );
    let repository = format!("zoo-runner-test/{name}");
    let image = format!("{}/{repository}:{tag}", registry.address);
    let pushed = Pushed {
        image: image.clone(),
        repository,
        tag,
    };

    let config = DockerConfig::empty();
    commit_with_stamp(&config, local_image, &image, payload);
    {
        let _one_at_a_time = PUSHING.lock().unwrap_or_else(|p| p.into_inner());
        if registry.login.is_some() {
            config.docker_login(registry);
        }
        let out = config.docker(&["push", &image]);
        assert_success(&out, &format!("docker push {image}"));
    }
    let out = config.docker(&["image", "rm", &image]);
    assert_success(&out, &format!("docker image rm {image}"));
    assert!(
        !is_local(&image),
        "{image} is still in the daemon after its removal"
    );
    pushed
}

/// `local_image` plus a layer holding `/zoo-runner-stamp`, committed as `image`.
fn commit_with_stamp(config: &DockerConfig, local_image: &str, image: &str, payload: usize) {
    let out = config.docker(&["create", local_image]);
    assert_success(&out, &format!("docker create {local_image}"));
    let container = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let stamp = tempfile::tempdir().unwrap();
    let file = stamp.path().join("zoo-runner-stamp");
    let mut stamp_bytes = format!("{image}\n").into_bytes();
    if payload > 0 {
        use std::io::Read;
        let mut random = vec![0u8; payload];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut random))
            .expect("/dev/urandom is readable");
        stamp_bytes.extend(random);
    }
    std::fs::write(&file, stamp_bytes).unwrap();
    let copied = config.docker(&[
        "cp",
        file.to_str().unwrap(),
        &format!("{container}:/zoo-runner-stamp"),
    ]);
    let committed = config.docker(&["commit", &container, image]);
    let _ = config.docker(&["rm", "-f", &container]);
    assert_success(&copied, "docker cp of the stamp");
    assert_success(&committed, &format!("docker commit {image}"));
}

/// Whether the daemon has the image.
pub fn is_local(image: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", "-f", "{{.Id}}", image])
        .output()
        .expect("docker image inspect runs")
        .status
        .success()
}

fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
