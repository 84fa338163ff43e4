//! A unix-socket proxy in front of the real Docker daemon that swallows the requests a test
//! picks: it neither forwards them nor answers them, as a daemon stuck on them would. Or, in
//! its other mode, forwards them but withholds their answers: the daemon does the work, and the
//! client never hears back, as over a connection that stalls. Every other request goes through
//! to the daemon unchanged.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// Where the real daemon listens (the docker CLI's default, as the other tests use).
const DAEMON: &str = "/var/run/docker.sock";

/// Picks the requests to swallow, from the method and the path without its API version
/// prefix or query (`POST`, `/containers/ID/stop`).
pub type Swallow = fn(method: &str, path: &str) -> bool;

/// Picks the requests whose answers to withhold, from the method and the whole request target
/// (path and query: `/v1.41/images/create?fromImage=...`).
pub type Withhold = fn(method: &str, target: &str) -> bool;

/// What the proxy does to the requests it picks.
#[derive(Clone, Copy)]
enum Rule {
    Swallow(Swallow),
    Withhold(Withhold),
}

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
        SwallowingProxy::listen(dir, Rule::Swallow(swallow))
    }

    /// Listens on `dir/proxy.sock`, forwarding every request, but dropping the answers to
    /// those `withhold` picks (they count as swallowed).
    pub fn withholding_answers(dir: &Path, withhold: Withhold) -> SwallowingProxy {
        SwallowingProxy::listen(dir, Rule::Withhold(withhold))
    }

    fn listen(dir: &Path, rule: Rule) -> SwallowingProxy {
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
                let withheld = Arc::new(AtomicBool::new(false));
                forward_requests(
                    client.try_clone().unwrap(),
                    daemon.try_clone().unwrap(),
                    rule,
                    Arc::clone(&swallowed),
                    Arc::clone(&withheld),
                );
                forward_answers(daemon, client, withheld);
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
/// so a request starts a read. A request whose answer is withheld is forwarded, and
/// `withheld` set before it is, so that none of its answer reaches the client.
fn forward_requests(
    mut client: UnixStream,
    mut daemon: UnixStream,
    rule: Rule,
    swallowed: Arc<Mutex<Vec<String>>>,
    withheld: Arc<AtomicBool>,
) {
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let mut holding = false;
        while let Ok(k @ 1..) = client.read(&mut buf) {
            if holding {
                continue;
            }
            if let Some((method, path, target)) = request_line(&buf[..k]) {
                match rule {
                    Rule::Swallow(swallow) if swallow(&method, &path) => {
                        swallowed.lock().unwrap().push(format!("{method} {path}"));
                        holding = true;
                        continue;
                    }
                    Rule::Withhold(withhold) if withhold(&method, &target) => {
                        swallowed.lock().unwrap().push(format!("{method} {path}"));
                        withheld.store(true, Ordering::SeqCst);
                    }
                    _ => {}
                }
            }
            if daemon.write_all(&buf[..k]).is_err() {
                break;
            }
        }
        let _ = daemon.shutdown(std::net::Shutdown::Write);
    });
}

/// Copies the daemon's answers to the client; once `withheld` is set, reads them to the end
/// and drops them.
fn forward_answers(mut daemon: UnixStream, mut client: UnixStream, withheld: Arc<AtomicBool>) {
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(k @ 1..) = daemon.read(&mut buf) {
            if withheld.load(Ordering::SeqCst) {
                continue;
            }
            if client.write_all(&buf[..k]).is_err() {
                break;
            }
        }
        let _ = client.shutdown(std::net::Shutdown::Write);
    });
}

/// The method, path and whole target of an HTTP request that starts `chunk`: the path without
/// its query and without an API version prefix (`/v1.47`).
fn request_line(chunk: &[u8]) -> Option<(String, String, String)> {
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
    Some((method.to_string(), path.to_string(), target.to_string()))
}

/// Swallows `docker stop` and `docker kill` of any container: a daemon that cannot stop one.
pub fn stop_and_kill(method: &str, path: &str) -> bool {
    method == "POST"
        && path.starts_with("/containers/")
        && (path.ends_with("/stop") || path.ends_with("/kill"))
}
