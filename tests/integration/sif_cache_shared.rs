//! Two runner processes sharing one SIF cache folder (`--sif-dir`), end to end: the fixture SIF
//! is served by a real HTTP server on 127.0.0.1 that this file starts. The server holds the
//! download half-way until the test opens a gate, so the two runs overlap for certain, whatever
//! the machine's speed. The cases run in the REAL Apptainer through the launcher
//! fixtures/apptainer/apptainer. No stand-in is used in this file.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::helpers::*;
use md5::{Digest, Md5};

/// Upper bound for anything to happen, so that a broken runner fails the test instead of
/// hanging it. Not a speed check: everything here takes seconds.
const PATIENCE: Duration = Duration::from_secs(240);

/// Serves one file; each response sends the first half, then waits for the gate.
struct GatedServer {
    port: u16,
    gets: Arc<AtomicUsize>,
    open: Arc<AtomicBool>,
}

impl GatedServer {
    fn start(body: Arc<Vec<u8>>) -> GatedServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let gets = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicBool::new(false));
        let (g, o) = (Arc::clone(&gets), Arc::clone(&open));
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (body, gets, open) = (Arc::clone(&body), Arc::clone(&g), Arc::clone(&o));
                thread::spawn(move || serve(stream, &body, &gets, &open));
            }
        });
        GatedServer { port, gets, open }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/kipoi-fixture.sif", self.port)
    }

    fn gets(&self) -> usize {
        self.gets.load(Ordering::SeqCst)
    }

    fn open_gate(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

fn serve(stream: TcpStream, body: &[u8], gets: &AtomicUsize, open: &AtomicBool) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
        line.clear();
    }
    gets.fetch_add(1, Ordering::SeqCst);
    let mut out = stream;
    // No range support: a resumed request would get the whole file again (and be counted).
    let _ = write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let half = body.len() / 2;
    if out.write_all(&body[..half]).is_err() {
        return;
    }
    let _ = out.flush();
    let waiting = Instant::now();
    while !open.load(Ordering::SeqCst) && waiting.elapsed() < PATIENCE {
        thread::sleep(Duration::from_millis(50));
    }
    let _ = out.write_all(&body[half..]);
    let _ = out.flush();
}

fn fixture_sif() -> Arc<Vec<u8>> {
    let path = fixture_cache().join("kipoi-fixture.sif");
    Arc::new(std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "fixture SIF {} is missing ({e}); run `bash fixtures/build.sh`",
            path.display()
        )
    }))
}

fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A catalog whose fixture models use the served SIF.
fn catalog(dir: &Path, url: &str, md5: &str) -> PathBuf {
    let cat = dir.join("catalog");
    let entry = format!(r#"{{"url": "{url}", "name": "kipoi-fixture", "md5": "{md5}"}}"#);
    write_catalog(
        &cat,
        &[("tiny_linear", FIXTURE_IMAGE)],
        Some(&format!(r#"{{"tiny_linear": {entry}}}"#)),
    );
    cat
}

/// A runner whose stderr is watched while it runs.
struct Watched {
    child: Child,
    stderr: Arc<Mutex<String>>,
    stdout: thread::JoinHandle<String>,
    report: Report,
}

impl Watched {
    fn start(catalog: &Path, sif_dir: &Path) -> Watched {
        let apptainer = root().join("fixtures/apptainer/apptainer");
        let (mut child, report) = spawn_reported(
            &[
                "--spec",
                "fixtures/spec.toml",
                "--catalog",
                catalog.to_str().unwrap(),
                "--runtime",
                "singularity",
                "--singularity-bin",
                apptainer.to_str().unwrap(),
                "--sif-dir",
                sif_dir.to_str().unwrap(),
            ],
            &[],
        );
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let sink = Arc::clone(&stderr);
        thread::spawn(move || {
            let mut line = Vec::new();
            while err.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&line));
                line.clear();
            }
        });
        let mut out = child.stdout.take().unwrap();
        let stdout = thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        Watched {
            child,
            stderr,
            stdout,
            report,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until the runner printed `text` on stderr (or fails after [`PATIENCE`]).
    fn wait_for(&mut self, text: &str) {
        let started = Instant::now();
        while !self.stderr().contains(text) {
            if started.elapsed() > PATIENCE || matches!(self.child.try_wait(), Ok(Some(_))) {
                let _ = self.child.kill();
                panic!("the runner never printed {text:?}:\n{}", self.stderr());
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the exit (killing it and failing after [`PATIENCE`]).
    fn finish(mut self) -> (Run, Report) {
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > PATIENCE {
                let _ = self.child.kill();
                panic!("the runner did not end:\n{}", self.stderr());
            }
            thread::sleep(Duration::from_millis(50));
        };
        let stdout = self.stdout.join().unwrap();
        // The stderr thread ends with the pipe; give it a moment to catch the last lines.
        thread::sleep(Duration::from_millis(200));
        let run = Run {
            code: status.code().unwrap_or(-1),
            stdout,
            stderr: self.stderr.lock().unwrap().clone(),
        };
        (run, self.report)
    }
}

/// Two runners on one cache folder: the first one's download is held half-way by the server,
/// and the second one is waiting for its lock.
struct Overlap {
    sif: Arc<Vec<u8>>,
    server: GatedServer,
    _dir: tempfile::TempDir,
    sif_dir: std::path::PathBuf,
    first: Watched,
    second: Watched,
}

impl Overlap {
    fn start() -> Overlap {
        require_fixture_image();
        let sif = fixture_sif();
        let server = GatedServer::start(Arc::clone(&sif));
        let dir = tempfile::tempdir().unwrap();
        let cat = catalog(dir.path(), &server.url(), &md5_hex(&sif));
        let sif_dir = dir.path().join("sifs");
        let first = Watched::start(&cat, &sif_dir);
        let started = Instant::now();
        while server.gets() == 0 {
            assert!(started.elapsed() < PATIENCE, "the first runner never asked");
            thread::sleep(Duration::from_millis(50));
        }
        let mut second = Watched::start(&cat, &sif_dir);
        second.wait_for("waiting for another runner");
        Overlap {
            sif,
            server,
            _dir: dir,
            sif_dir,
            first,
            second,
        }
    }
}

#[test]
fn two_runners_on_one_cache_download_once_and_both_pass() {
    let _daemon = daemon::shared();
    let Overlap {
        sif,
        server,
        _dir,
        sif_dir,
        first,
        second,
    } = Overlap::start();
    server.open_gate();

    for (who, runner) in [("first", first), ("second", second)] {
        let (run, report) = runner.finish();
        assert_eq!(run.code, 0, "{who}: {}", run.all());
        assert_status(&run, "singularity::tiny_linear", "ok");
        let doc = report.doc();
        assert!(child(testcase(&doc, "tiny_linear"), "error").is_none());
    }
    assert_eq!(server.gets(), 1, "the file was served once");
    let kept = std::fs::read(sif_dir.join("kipoi-fixture.sif")).unwrap();
    assert_eq!(md5_hex(&kept), md5_hex(&sif), "no corruption");
    assert_eq!(
        files_in(&sif_dir),
        ["kipoi-fixture.sif", "kipoi-fixture.sif.lock"],
        "no .part or .bad file left"
    );
    assert_eq!(
        containers_mounting(&sif_dir),
        "",
        "no launcher container left"
    );
}

#[test]
fn a_runner_waiting_for_the_lock_can_be_interrupted() {
    let _daemon = daemon::shared();
    let Overlap {
        server,
        _dir,
        sif_dir,
        first,
        second,
        ..
    } = Overlap::start();
    signal(second.child.id(), libc::SIGINT);
    let (run, report) = second.finish();
    assert_eq!(run.code, 130, "{}", run.all());
    let doc = report.doc();
    let skipped = child(testcase(&doc, "tiny_linear"), "skipped");
    assert_eq!(
        skipped.and_then(|n| n.attribute("type")),
        Some("not-run"),
        "{}",
        report.text()
    );

    // The first runner was not disturbed.
    server.open_gate();
    let (run, _) = first.finish();
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(server.gets(), 1);
    assert_eq!(
        files_in(&sif_dir),
        ["kipoi-fixture.sif", "kipoi-fixture.sif.lock"]
    );
}
