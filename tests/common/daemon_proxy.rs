//! A unix-socket proxy in front of the real Docker daemon that swallows the requests a test
//! picks: it neither forwards them nor answers them, as a daemon stuck on them would. Every
//! other request goes through to the daemon unchanged.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;

/// Where the real daemon listens (the docker CLI's default, as the other tests use).
const DAEMON: &str = "/var/run/docker.sock";

/// Picks the requests to swallow, from the method and the path without its API version
/// prefix or query (`POST`, `/containers/ID/stop`).
pub type Swallow = fn(method: &str, path: &str) -> bool;

pub struct SwallowingProxy {
    path: PathBuf,
    /// `METHOD /path` of each swallowed request, in order.
    swallowed: Arc<Mutex<Vec<String>>>,
    /// Both ends of every connection, shut down when the proxy goes.
    open: Arc<Mutex<Vec<UnixStream>>>,
}

impl SwallowingProxy {
    /// Listens on `dir/proxy.sock`.
    pub fn start(dir: &Path, swallow: Swallow) -> SwallowingProxy {
        let path = dir.join("proxy.sock");
        let listener = UnixListener::bind(&path).expect("the proxy socket binds");
        let proxy = SwallowingProxy {
            path,
            swallowed: Arc::default(),
            open: Arc::default(),
        };
        let (swallowed, open) = (Arc::clone(&proxy.swallowed), Arc::clone(&proxy.open));
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(daemon) = UnixStream::connect(DAEMON) else {
                    continue; // the client sees its connection closed
                };
                {
                    let mut open = open.lock().unwrap();
                    open.push(client.try_clone().unwrap());
                    open.push(daemon.try_clone().unwrap());
                }
                forward_requests(
                    client.try_clone().unwrap(),
                    daemon.try_clone().unwrap(),
                    swallow,
                    Arc::clone(&swallowed),
                );
                forward_answers(daemon, client);
            }
        });
        proxy
    }

    /// The value for `DOCKER_HOST`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    /// `METHOD /path` of each request swallowed so far.
    pub fn swallowed(&self) -> Vec<String> {
        self.swallowed.lock().unwrap().clone()
    }
}

impl Drop for SwallowingProxy {
    fn drop(&mut self) {
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Copies the client's requests to the daemon until one is to be swallowed; from then on the
/// connection's bytes are read and dropped, so the client waits for an answer that never
/// comes. The client sends each request only once the last one is answered (no pipelining),
/// so a request starts a read.
fn forward_requests(
    mut client: UnixStream,
    mut daemon: UnixStream,
    swallow: Swallow,
    swallowed: Arc<Mutex<Vec<String>>>,
) {
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let mut holding = false;
        while let Ok(k @ 1..) = client.read(&mut buf) {
            if holding {
                continue;
            }
            if let Some((method, path)) = request_line(&buf[..k]) {
                if swallow(&method, &path) {
                    swallowed.lock().unwrap().push(format!("{method} {path}"));
                    holding = true;
                    continue;
                }
            }
            if daemon.write_all(&buf[..k]).is_err() {
                break;
            }
        }
        let _ = daemon.shutdown(std::net::Shutdown::Write);
    });
}

fn forward_answers(mut daemon: UnixStream, mut client: UnixStream) {
    thread::spawn(move || {
        let _ = std::io::copy(&mut daemon, &mut client);
        let _ = client.shutdown(std::net::Shutdown::Write);
    });
}

/// The method and path of an HTTP request that starts `chunk`: the path without its query and
/// without an API version prefix (`/v1.47`).
fn request_line(chunk: &[u8]) -> Option<(String, String)> {
    let line_end = chunk.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&chunk[..line_end]).ok()?;
    let mut words = line.split(' ');
    let (method, target, version) = (words.next()?, words.next()?, words.next()?);
    if !version.starts_with("HTTP/") || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let path = target.split('?').next().unwrap_or(target);
    let path = match path.strip_prefix("/v") {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => {
            &rest[rest.find('/').unwrap_or(rest.len())..]
        }
        _ => path,
    };
    Some((method.to_string(), path.to_string()))
}

/// Swallows `docker stop` and `docker kill` of any container: a daemon that cannot stop one.
pub fn stop_and_kill(method: &str, path: &str) -> bool {
    method == "POST"
        && path.starts_with("/containers/")
        && (path.ends_with("/stop") || path.ends_with("/kill"))
}
