//! Tests of the cache as a whole, against a scripted HTTP server on 127.0.0.1.
//! Tests of pure helpers live next to them (`download.rs`, `progress.rs`).

use super::*;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

// ---------- a scripted HTTP server on 127.0.0.1 ----------

/// What the server saw in one request.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    /// Value of the `Range` header, if any.
    range: Option<String>,
}

/// What the server does with one request.
enum Reply {
    /// 200 with the file, or 206/416 when a `Range: bytes=N-` header is present.
    File(Vec<u8>),
    /// Always 200 with the whole file: a server without range support.
    FileIgnoringRange(Vec<u8>),
    /// Announces all of `data` in Content-Length, then closes after `sent` bytes.
    Truncated { data: Vec<u8>, sent: usize },
    /// An empty response with this status and these extra headers.
    Status(u16, Vec<(&'static str, String)>),
    /// Announces all of `data`, sends `sent` bytes, then says nothing for `silence`.
    Stall {
        data: Vec<u8>,
        sent: usize,
        silence: Duration,
    },
}

struct Server {
    base: String,
    hits: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    /// `script(n, request)` chooses the reply to the n-th request (counting from 0).
    fn start(script: impl Fn(usize, &Seen) -> Reply + Send + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (thread_hits, thread_seen) = (Arc::clone(&hits), Arc::clone(&seen));
        // The thread lives until the test binary exits; it only blocks in accept().
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let Some(request) = read_request(&stream) else {
                    continue;
                };
                let n = thread_hits.fetch_add(1, Ordering::SeqCst);
                thread_seen.lock().unwrap().push(request.clone());
                send_reply(stream, &request, script(n, &request));
            }
        });
        Server { base, hits, seen }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn ranges(&self) -> Vec<Option<String>> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.range.clone())
            .collect()
    }
}

fn read_request(stream: &TcpStream) -> Option<Seen> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_owned();
    let mut range = None;
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("range") {
                range = Some(value.trim().to_owned());
            }
        }
    }
    Some(Seen { path, range })
}

fn send_reply(mut stream: TcpStream, request: &Seen, reply: Reply) {
    let (status, headers, body, sent) = match reply {
        Reply::File(data) => file_reply(data, request.range.as_deref()),
        Reply::FileIgnoringRange(data) => {
            let len = data.len();
            (200, vec![], data, len)
        }
        Reply::Truncated { data, sent } => (200, vec![], data, sent),
        Reply::Status(status, headers) => (status, headers, vec![], 0),
        Reply::Stall {
            data,
            sent,
            silence,
        } => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                data.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&data[..sent]);
            let _ = stream.flush();
            thread::sleep(silence);
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
    };
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        reason(status),
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    // The client may legitimately hang up early; errors are of no interest here.
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&body[..sent]);
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Both);
}

type Response = (u16, Vec<(&'static str, String)>, Vec<u8>, usize);

fn file_reply(data: Vec<u8>, range: Option<&str>) -> Response {
    let len = data.len();
    let Some(first) = range.and_then(|r| r.strip_prefix("bytes=")) else {
        return (200, vec![], data, len);
    };
    let first: usize = first.trim_end_matches('-').parse().unwrap();
    if first >= len {
        return (
            416,
            vec![("Content-Range", format!("bytes */{len}"))],
            vec![],
            0,
        );
    }
    let content_range = format!("bytes {first}-{}/{len}", len - 1);
    let rest = data[first..].to_vec();
    let sent = rest.len();
    (206, vec![("Content-Range", content_range)], rest, sent)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        403 => "Forbidden",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}

// ---------- helpers ----------

const SIZE: usize = 300 * 1024;

/// Deterministic pseudo-random bytes (xorshift64).
/// A server that always answers with the whole file (honouring Range).
fn serve_file(data: &[u8]) -> Server {
    let data = data.to_vec();
    Server::start(move |_, _| Reply::File(data.clone()))
}

fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn md5_hex(data: &[u8]) -> String {
    format!("{:x}", Md5::digest(data))
}

fn fast_retry(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        attempts,
        first_backoff: Duration::from_millis(1),
    }
}

fn cache(dir: &Path) -> SifCache {
    SifCache::new(dir).with_retry(fast_retry(5))
}

fn source(server: &Server, data: &[u8]) -> SifSource {
    SifSource {
        url: server.url("/images/img.sif"),
        name: "img".to_owned(),
        md5: md5_hex(data),
    }
}

/// Files in `dir` whose names start with `img.sif.bad` (this runner's `img.sif.bad`, older
/// runners' `img.sif.bad-TIME`).
fn bad_files(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("img.sif.bad")
        })
        .collect();
    found.sort();
    found
}

fn assert_verified(path: &Path, dir: &Path, data: &[u8]) {
    assert_eq!(path, dir.join("img.sif"));
    assert!(
        fs::read(path).unwrap() == data,
        "cached file differs from the payload"
    );
    let parts: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".part"))
        .collect();
    assert!(parts.is_empty(), ".part files left behind: {parts:?}");
}

// ---------- downloading and reuse ----------

#[test]
fn fetch_downloads_and_verifies() {
    let data = payload(SIZE, 1);
    let server = serve_file(&data);
    let dir = tempfile::tempdir().unwrap();
    let path = cache(dir.path()).fetch(&source(&server, &data)).unwrap();
    assert_verified(&path, dir.path(), &data);
    assert_eq!(server.hits(), 1);
    assert_eq!(server.ranges(), vec![None]);
    assert_eq!(server.seen.lock().unwrap()[0].path, "/images/img.sif");
}

#[test]
fn new_creates_missing_folder() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a").join("b");
    let cache = SifCache::new(&nested);
    assert!(nested.is_dir());
    assert_eq!(cache.dir, nested);
}

#[test]
fn second_fetch_reuses_cached_file_without_requests() {
    let data = payload(SIZE, 2);
    let server = serve_file(&data);
    let dir = tempfile::tempdir().unwrap();
    let src = source(&server, &data);
    let cache = cache(dir.path());
    cache.fetch(&src).unwrap();
    let again = cache.fetch(&src).unwrap();
    // A fresh cache on the same folder, as in a later run, reuses it too.
    let later = SifCache::new(dir.path()).fetch(&src).unwrap();
    assert_eq!(server.hits(), 1);
    assert_verified(&again, dir.path(), &data);
    assert_eq!(later, again);
}

#[test]
fn md5_is_compared_case_insensitively() {
    let data = payload(SIZE, 3);
    let server = serve_file(&data);
    let dir = tempfile::tempdir().unwrap();
    let mut src = source(&server, &data);
    src.md5 = src.md5.to_ascii_uppercase();
    let cache = cache(dir.path());
    cache.fetch(&src).unwrap();
    cache.fetch(&src).unwrap();
    assert_eq!(server.hits(), 1);
    assert!(bad_files(dir.path()).is_empty());
}

#[test]
fn corrupted_cached_file_is_moved_aside_and_redownloaded() {
    let data = payload(SIZE, 4);
    let server = serve_file(&data);
    let dir = tempfile::tempdir().unwrap();
    let src = source(&server, &data);
    let cache = cache(dir.path());
    let path = cache.fetch(&src).unwrap();

    let mut corrupted = fs::read(&path).unwrap();
    corrupted[1000] ^= 0xff;
    fs::write(&path, &corrupted).unwrap();

    let path = cache.fetch(&src).unwrap();
    assert_eq!(server.hits(), 2);
    assert_eq!(server.ranges(), vec![None, None]);
    assert_verified(&path, dir.path(), &data);
    let bad = bad_files(dir.path());
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(
        fs::read(&bad[0]).unwrap() == corrupted,
        "evidence was altered"
    );
}

// ---------- md5 mismatches ----------

#[test]
fn md5_mismatch_twice_keeps_evidence_and_names_both_hashes() {
    let good = payload(SIZE, 5);
    let wrong = payload(SIZE, 6);
    let server = Server::start({
        let wrong = wrong.clone();
        move |_, _| Reply::File(wrong.clone())
    });
    let dir = tempfile::tempdir().unwrap();
    let src = source(&server, &good);
    let err = cache(dir.path()).fetch(&src).unwrap_err();

    let message = err.to_string();
    let SifError::Md5Mismatch {
        url,
        expected,
        actual,
        path_of_bad_file,
    } = err
    else {
        panic!("expected Md5Mismatch, got {message}");
    };
    assert_eq!(url, src.url);
    assert_eq!(expected, md5_hex(&good));
    assert_eq!(actual, md5_hex(&wrong));
    assert!(
        message.contains(&expected) && message.contains(&actual),
        "{message}"
    );
    assert!(fs::read(&path_of_bad_file).unwrap() == wrong);

    assert_eq!(server.hits(), 2);
    // The second download started from scratch rather than resuming.
    assert_eq!(server.ranges(), vec![None, None]);
    // One copy is kept as evidence, not one per download: a SIF is GBs.
    assert_eq!(bad_files(dir.path()), [dir.path().join("img.sif.bad")]);
    assert_eq!(path_of_bad_file, dir.path().join("img.sif.bad"));
    assert!(!dir.path().join("img.sif").exists());
    assert!(!dir.path().join("img.sif.part").exists());
}

#[test]
fn bad_first_download_is_replaced_by_a_fresh_second_one() {
    let good = payload(SIZE, 7);
    let wrong = payload(SIZE, 8);
    let server = Server::start({
        let (good, wrong) = (good.clone(), wrong.clone());
        move |n, _| Reply::File(if n == 0 { wrong.clone() } else { good.clone() })
    });
    let dir = tempfile::tempdir().unwrap();
    let path = cache(dir.path()).fetch(&source(&server, &good)).unwrap();
    assert_verified(&path, dir.path(), &good);
    assert_eq!(server.hits(), 2);
    assert_eq!(server.ranges(), vec![None, None]);
    let bad = bad_files(dir.path());
    assert_eq!(bad.len(), 1);
    assert!(fs::read(&bad[0]).unwrap() == wrong);
}

// ---------- HTTP errors ----------

#[test]
fn not_found_fails_at_once() {
    let server = Server::start(|_, _| Reply::Status(404, vec![]));
    let dir = tempfile::tempdir().unwrap();
    let src = source(&server, b"anything");
    let err = cache(dir.path()).fetch(&src).unwrap_err();
    assert!(
        matches!(&err, SifError::NotFound { url } if *url == src.url),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&src.url) && message.contains("404"),
        "{message}"
    );
    assert_eq!(server.hits(), 1);
}

#[test]
fn other_client_errors_fail_at_once() {
    let server = Server::start(|_, _| Reply::Status(403, vec![]));
    let dir = tempfile::tempdir().unwrap();
    let src = source(&server, b"anything");
    let err = cache(dir.path()).fetch(&src).unwrap_err();
    assert!(
        matches!(&err, SifError::Http { url, status: 403 } if *url == src.url),
        "{err:?}"
    );
    assert_eq!(server.hits(), 1);
}

#[test]
fn retries_503_then_succeeds() {
    let data = payload(SIZE, 9);
    let server = Server::start({
        let data = data.clone();
        move |n, _| match n {
            0 | 1 => Reply::Status(503, vec![]),
            _ => Reply::File(data.clone()),
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let path = cache(dir.path()).fetch(&source(&server, &data)).unwrap();
    assert_verified(&path, dir.path(), &data);
    assert_eq!(server.hits(), 3);
}

#[test]
fn honours_retry_after_on_429() {
    let data = payload(SIZE, 10);
    let server = Server::start({
        let data = data.clone();
        move |n, _| match n {
            0 => Reply::Status(429, vec![("Retry-After", "0".to_owned())]),
            _ => Reply::File(data.clone()),
        }
    });
    let dir = tempfile::tempdir().unwrap();
    // Without Retry-After the pause would be 30 s.
    let cache = SifCache::new(dir.path()).with_retry(RetryPolicy {
        attempts: 3,
        first_backoff: Duration::from_secs(30),
    });
    let started = Instant::now();
    let path = cache.fetch(&source(&server, &data)).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_verified(&path, dir.path(), &data);
    assert_eq!(server.hits(), 2);
}

#[test]
fn always_503_gives_transient_error_after_all_attempts() {
    let server = Server::start(|_, _| Reply::Status(503, vec![]));
    let dir = tempfile::tempdir().unwrap();
    let src = source(&server, b"anything");
    let err = SifCache::new(dir.path())
        .with_retry(fast_retry(3))
        .fetch(&src)
        .unwrap_err();
    let message = err.to_string();
    match err {
        SifError::Transient {
            url,
            attempts,
            last,
        } => {
            assert_eq!(url, src.url);
            assert_eq!(attempts, 3);
            assert!(last.contains("503"), "{last}");
        }
        other => panic!("expected Transient, got {other:?}"),
    }
    assert!(message.contains(&src.url), "{message}");
    assert_eq!(server.hits(), 3);
    assert!(!dir.path().join("img.sif").exists());
}

#[test]
fn refused_connection_is_retried_then_reported() {
    // Bind and drop to get a loopback port that nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let src = SifSource {
        url: format!("http://127.0.0.1:{port}/img.sif"),
        name: "img".to_owned(),
        md5: md5_hex(b"x"),
    };
    let err = SifCache::new(dir.path())
        .with_retry(fast_retry(2))
        .fetch(&src)
        .unwrap_err();
    assert!(
        matches!(&err, SifError::Transient { attempts: 2, last, .. } if last.contains("connect")),
        "{err:?}"
    );
}

// ---------- resuming ----------

#[test]
fn truncated_download_resumes_with_range() {
    let data = payload(SIZE, 11);
    let half = SIZE / 2;
    let server = Server::start({
        let data = data.clone();
        move |n, _| match n {
            0 => Reply::Truncated {
                data: data.clone(),
                sent: half,
            },
            _ => Reply::File(data.clone()),
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let path = cache(dir.path()).fetch(&source(&server, &data)).unwrap();
    assert_verified(&path, dir.path(), &data);
    assert_eq!(server.ranges(), vec![None, Some(format!("bytes={half}-"))]);
}

#[test]
fn leftover_part_file_is_resumed() {
    let data = payload(SIZE, 12);
    let server = serve_file(&data);
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("img.sif.part"), &data[..100_000]).unwrap();
    let fetched = cache(dir.path())
        .with_progress(true)
        .fetch_until(&source(&server, &data), &|| false)
        .unwrap();
    assert_verified(&fetched.path, dir.path(), &data);
    assert_eq!(server.ranges(), vec![Some("bytes=100000-".to_owned())]);
    assert_eq!(
        fetched.bytes,
        (SIZE - 100_000) as u64,
        "only what came over the wire counts"
    );
    assert!(!fetched.reused);
}

// ---------- the download's budget (--download-timeout) ----------

#[test]
fn a_stalled_server_is_given_up_on_at_the_download_timeout() {
    let data = payload(SIZE, 40);
    let server = Server::start({
        let data = data.clone();
        move |_, _| Reply::Stall {
            data: data.clone(),
            sent: 1000,
            silence: Duration::from_secs(20),
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let err = cache(dir.path())
        .with_download_timeout(Duration::from_millis(700))
        .fetch(&source(&server, &data))
        .unwrap_err();
    assert!(matches!(err, SifError::DownloadTimeout { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("700ms") && text.contains("--download-timeout") && text.contains("resumes"),
        "{text}"
    );
    // What arrived stays for the next run to resume.
    let parts: Vec<u64> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().contains(".part"))
        .map(|e| e.metadata().unwrap().len())
        .collect();
    assert_eq!(parts, [1000]);
    assert_eq!(server.hits(), 1, "no attempt after the budget ran out");
}

#[test]
fn a_pause_longer_than_what_is_left_of_the_budget_is_not_taken() {
    let data = payload(1000, 41);
    let server = Server::start(|_, _| Reply::Status(503, vec![("Retry-After", "30".to_owned())]));
    let dir = tempfile::tempdir().unwrap();
    let err = cache(dir.path())
        .with_download_timeout(Duration::from_secs(5))
        .fetch(&source(&server, &data))
        .unwrap_err();
    assert!(matches!(err, SifError::DownloadTimeout { .. }), "{err}");
    assert!(
        err.to_string().contains("503"),
        "names the last failure: {err}"
    );
    assert_eq!(server.hits(), 1);
}

// ---------- what a fetch says it did ----------

#[test]
fn a_fetch_says_what_it_downloaded_and_a_reuse_says_nothing() {
    let data = payload(SIZE, 42);
    let server = serve_file(&data);
    let dir = tempfile::tempdir().unwrap();
    let cache = cache(dir.path());
    let first = cache
        .fetch_until(&source(&server, &data), &|| false)
        .unwrap();
    assert_eq!((first.bytes, first.reused), (SIZE as u64, false));
    let again = cache
        .fetch_until(&source(&server, &data), &|| false)
        .unwrap();
    assert_eq!((again.bytes, again.reused), (0, true));
}

#[test]
fn a_catalog_name_ending_in_sif_gets_no_second_extension() {
    let data = payload(1000, 43);
    let server = serve_file(&data);
    let dir = tempfile::tempdir().unwrap();
    let mut src = source(&server, &data);
    src.name = "img.sif".to_owned();
    let path = cache(dir.path()).fetch(&src).unwrap();
    assert_eq!(path, dir.path().join("img.sif"));
    assert!(!dir.path().join("img.sif.sif").exists());
    assert!(cache(dir.path()).holds("img.sif", false));
}

// ---------- one quarantined copy per name ----------

#[test]
fn repeated_mismatches_keep_one_quarantined_copy_and_older_ones_go() {
    let good = payload(SIZE, 50);
    let wrong = payload(SIZE, 52);
    let server = Server::start({
        let wrong = wrong.clone();
        move |_, _| Reply::File(wrong.clone())
    });
    let dir = tempfile::tempdir().unwrap();
    // What older runners left: one file per bad download.
    fs::write(dir.path().join("img.sif.bad-1700000000"), b"old").unwrap();
    fs::write(dir.path().join("img.sif.bad-1700000000-1"), b"old").unwrap();
    // Another name's evidence, and files that only look alike, are not this name's.
    fs::write(dir.path().join("other.sif.bad"), b"x").unwrap();
    fs::write(dir.path().join("img.sif.bad-notes.txt"), b"x").unwrap();
    let src = source(&server, &good);
    for _ in 0..3 {
        let err = cache(dir.path()).fetch(&src).unwrap_err();
        assert!(matches!(err, SifError::Md5Mismatch { .. }), "{err}");
    }
    assert_eq!(server.hits(), 6);
    assert_eq!(
        bad_files(dir.path()),
        [
            dir.path().join("img.sif.bad"),
            dir.path().join("img.sif.bad-notes.txt")
        ],
        "three runs of two downloads each leave one copy"
    );
    assert!(fs::read(dir.path().join("img.sif.bad")).unwrap() == wrong);
    // `cache prune` finds every name's quarantined copy, and nothing else.
    assert_eq!(
        quarantined(dir.path()).unwrap(),
        [
            dir.path().join("img.sif.bad"),
            dir.path().join("other.sif.bad")
        ]
    );
    assert!(quarantined(&dir.path().join("absent")).unwrap().is_empty());
}

// ---------- a read-only store ----------

/// A read-only view of a folder: a bind mount remounted read-only (the tests run as root),
/// unmounted when dropped.
struct ReadOnlyMount {
    path: PathBuf,
}

impl ReadOnlyMount {
    fn of(source: &Path, at: &Path) -> ReadOnlyMount {
        fs::create_dir_all(at).unwrap();
        let run = |args: &[&str]| {
            let out = std::process::Command::new("mount")
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "mount {args:?} (the tests run as root): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&["--bind", source.to_str().unwrap(), at.to_str().unwrap()]);
        let mount = ReadOnlyMount {
            path: at.to_path_buf(),
        };
        run(&["-o", "remount,bind,ro", at.to_str().unwrap()]);
        mount
    }
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.path)
            .status();
    }
}

#[test]
fn a_read_only_store_serves_a_verified_sif_and_refuses_what_is_missing() {
    let data = payload(SIZE, 46);
    let server = serve_file(&data);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    fs::create_dir_all(&store).unwrap();
    fs::write(store.join("img.sif"), &data).unwrap();
    let mount = ReadOnlyMount::of(&store, &dir.path().join("ro"));
    let ro = mount.path.clone();

    let cache = SifCache::open(&ro).unwrap().with_retry(fast_retry(5));
    assert!(cache.is_read_only());
    let fetched = cache
        .fetch_until(&source(&server, &data), &|| false)
        .unwrap();
    assert_eq!(fetched.path, ro.join("img.sif"));
    assert!(fetched.reused);
    assert_eq!(server.hits(), 0);
    assert_eq!(files(&store), ["img.sif"], "no lock file, nothing written");

    // Missing: it cannot be downloaded there.
    let mut missing = source(&server, &data);
    missing.name = "absent".to_owned();
    let err = cache.fetch_until(&missing, &|| false).unwrap_err();
    assert!(matches!(err, SifError::ReadOnly { .. }), "{err}");
    assert!(err.to_string().contains("--sif-dir"), "{err}");
    assert_eq!(server.hits(), 0);
    assert!(!cache.holds("absent", false) && cache.holds("img", false));

    // A wrong one cannot be replaced: an error naming both sums, and the file is left alone.
    let mut wrong = source(&server, &data);
    wrong.md5 = "0123456789abcdef0123456789abcdef".to_owned();
    let err = cache.fetch_until(&wrong, &|| false).unwrap_err();
    assert!(matches!(err, SifError::ReadOnlyMismatch { .. }), "{err}");
    assert!(
        err.to_string().contains(&md5_hex(&data)) && err.to_string().contains(&wrong.md5),
        "{err}"
    );
    assert_eq!(files(&store), ["img.sif"]);

    // A built SIF is used with its md5 record, and is never built there.
    drop(mount);
    fs::write(store.join("built.sif"), fake_sif(b"b")).unwrap();
    fs::write(store.join("built.sif.md5"), md5_hex(&fake_sif(b"b"))).unwrap();
    let mount = ReadOnlyMount::of(&store, &dir.path().join("ro"));
    let cache = SifCache::open(&mount.path).unwrap();
    let never = |_: &Path, _: &Path| -> Result<(), SifError> {
        panic!("nothing is built in a read-only store")
    };
    let built = cache.build("built", &|| false, never).unwrap();
    assert_eq!(built.path, mount.path.join("built.sif"));
    let err = cache.build("other", &|| false, never).unwrap_err();
    assert!(
        matches!(err, SifError::ReadOnly { what: "built", .. }),
        "{err}"
    );
}

#[test]
fn a_sif_dir_that_is_a_file_is_refused_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    fs::write(&file, b"x").unwrap();
    let err = SifCache::open(&file).unwrap_err();
    assert!(err.to_string().contains("--sif-dir"), "{err}");
    let err = SifCache::open(file.join("below")).unwrap_err();
    assert!(
        crate::error_chain::chain(&err).contains("--sif-dir"),
        "{err}"
    );
    let fresh = SifCache::open(dir.path().join("a/b")).unwrap();
    assert!(!fresh.is_read_only() && dir.path().join("a/b").is_dir());
    assert!(
        files(&dir.path().join("a/b")).is_empty(),
        "the probe file is gone"
    );
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn server_without_range_support_restarts_from_zero() {
    let data = payload(SIZE, 13);
    let server = Server::start({
        let data = data.clone();
        move |_, _| Reply::FileIgnoringRange(data.clone())
    });
    let dir = tempfile::tempdir().unwrap();
    // Garbage that would break the md5 if the 200 body were appended to it.
    fs::write(dir.path().join("img.sif.part"), vec![0xAA; 1000]).unwrap();
    let path = cache(dir.path()).fetch(&source(&server, &data)).unwrap();
    assert_verified(&path, dir.path(), &data);
    assert_eq!(server.ranges(), vec![Some("bytes=1000-".to_owned())]);
    assert!(bad_files(dir.path()).is_empty());
}

#[test]
fn range_not_satisfiable_restarts_from_zero() {
    let data = payload(SIZE, 14);
    let server = serve_file(&data);
    let dir = tempfile::tempdir().unwrap();
    // Longer than the real file, so the server answers 416.
    let too_long = SIZE + 10;
    fs::write(dir.path().join("img.sif.part"), vec![0; too_long]).unwrap();
    let path = cache(dir.path()).fetch(&source(&server, &data)).unwrap();
    assert_verified(&path, dir.path(), &data);
    assert_eq!(
        server.ranges(),
        vec![Some(format!("bytes={too_long}-")), None]
    );
}

// ---------- input validation ----------

#[test]
fn bad_names_are_rejected_without_request_or_disk_access() {
    let server = Server::start(|_, _| Reply::Status(500, vec![]));
    let dir = tempfile::tempdir().unwrap();
    let cache = cache(dir.path());
    for name in [
        "../x", "a/b", "", "..", ".", "a\\b", "x\0y", "..hidden", "/abs",
    ] {
        let src = SifSource {
            url: server.url("/img.sif"),
            name: name.to_owned(),
            md5: md5_hex(b"x"),
        };
        match cache.fetch(&src) {
            Err(SifError::BadName { name: got }) => assert_eq!(got, name),
            other => panic!("name {name:?} gave {other:?}"),
        }
    }
    assert_eq!(server.hits(), 0);
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn plain_names_are_accepted() {
    for name in [
        "Basset",
        "DeepSEA.v0.94",
        "kipoi-docker_shared-env",
        "a..b",
        ".hidden",
    ] {
        assert!(validate_name(name).is_ok(), "{name}");
    }
}

#[test]
fn bad_md5_is_rejected_without_request() {
    let server = Server::start(|_, _| Reply::Status(500, vec![]));
    let dir = tempfile::tempdir().unwrap();
    let cache = cache(dir.path());
    let not_hex = "z".repeat(32);
    let too_long = "a".repeat(33);
    for md5 in ["", "abc", not_hex.as_str(), too_long.as_str()] {
        let src = SifSource {
            url: server.url("/img.sif"),
            name: "img".to_owned(),
            md5: md5.to_owned(),
        };
        let err = cache.fetch(&src).unwrap_err();
        assert!(
            matches!(&err, SifError::BadMd5 { md5: got, .. } if got == md5),
            "{err:?}"
        );
    }
    assert_eq!(server.hits(), 0);
}

// ---------- concurrency ----------

#[test]
fn concurrent_fetches_of_same_name_download_once() {
    let data = payload(SIZE, 15);
    let server = Server::start({
        let data = data.clone();
        move |_, _| {
            // Keep the first download busy so the second thread arrives meanwhile.
            thread::sleep(Duration::from_millis(200));
            Reply::File(data.clone())
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let cache = cache(dir.path());
    let src = source(&server, &data);
    let results: Vec<_> = thread::scope(|scope| {
        let handles: Vec<_> = (0..2).map(|_| scope.spawn(|| cache.fetch(&src))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for result in results {
        assert_verified(&result.unwrap(), dir.path(), &data);
    }
    assert_eq!(server.hits(), 1);
}

#[test]
fn a_fetch_waits_for_the_lock_held_by_another_process_then_reuses_its_file() {
    let data = payload(SIZE, 16);
    let server = serve_file(&data);
    let dir = tempfile::tempdir().unwrap();
    let src = source(&server, &data);
    // Another process's lock: a separate open file holding the flock, as `flock(1)` would.
    let held = File::create(dir.path().join("img.sif.lock")).unwrap();
    held.lock().unwrap();
    let cache = cache(dir.path());
    thread::scope(|scope| {
        let waiting = scope.spawn(|| cache.fetch(&src));
        thread::sleep(Duration::from_millis(300));
        assert!(!waiting.is_finished(), "the fetch waits for the lock");
        assert_eq!(server.hits(), 0);
        // The holder finishes its download and lets go.
        fs::write(dir.path().join("img.sif"), &data).unwrap();
        drop(held);
        assert_verified(&waiting.join().unwrap().unwrap(), dir.path(), &data);
    });
    assert_eq!(server.hits(), 0, "the other process's file was reused");
}

#[test]
fn waiting_for_the_lock_stops_when_interrupted() {
    let data = payload(1000, 17);
    let server = serve_file(&data);
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path()).unwrap();
    let held = File::create(dir.path().join("img.sif.lock")).unwrap();
    held.lock().unwrap();
    let asked = Instant::now();
    let stop = || asked.elapsed() > Duration::from_millis(300);
    let err = cache(dir.path())
        .fetch_until(&source(&server, &data), &stop)
        .unwrap_err();
    assert!(err.is_interrupted(), "{err}");
    assert_eq!(server.hits(), 0);
}

#[test]
fn waiting_for_the_lock_is_bounded() {
    let data = payload(1000, 18);
    let server = serve_file(&data);
    let dir = tempfile::tempdir().unwrap();
    let held = File::create(dir.path().join("img.sif.lock")).unwrap();
    held.lock().unwrap();
    let err = cache(dir.path())
        .with_lock_wait(Duration::from_millis(200))
        .fetch(&source(&server, &data))
        .unwrap_err();
    let text = crate::error_chain::chain(&err);
    assert!(matches!(err, SifError::LockWait { .. }), "{text}");
    assert!(
        text.contains("img.sif.lock") && text.contains("stuck"),
        "{text}"
    );
}

#[test]
fn an_interrupted_download_keeps_its_part_for_the_next_fetch() {
    let data = payload(SIZE, 19);
    let server = serve_file(&data);
    let dir = tempfile::tempdir().unwrap();
    let err = cache(dir.path())
        .fetch_until(&source(&server, &data), &|| true)
        .unwrap_err();
    assert!(err.is_interrupted(), "{err}");
    assert!(!dir.path().join("img.sif").exists());
    // A leftover of a dead process (unique name) and one of an old runner: the longest is
    // resumed, the other removed.
    fs::write(dir.path().join("img.sif.part-99999-0"), &data[..50_000]).unwrap();
    fs::write(dir.path().join("img.sif.part"), &data[..10]).unwrap();
    let path = cache(dir.path()).fetch(&source(&server, &data)).unwrap();
    assert_verified(&path, dir.path(), &data);
    assert!(server
        .ranges()
        .last()
        .unwrap()
        .as_deref()
        .is_some_and(|r| r.starts_with("bytes=")));
}

#[test]
fn a_file_url_is_copied_and_verified_like_a_download() {
    let data = payload(SIZE, 20);
    let dir = tempfile::tempdir().unwrap();
    let origin = dir.path().join("zoo").join("img-origin.sif");
    fs::create_dir_all(origin.parent().unwrap()).unwrap();
    fs::write(&origin, &data).unwrap();
    let cache_dir = dir.path().join("cache");
    let mut src = SifSource {
        url: format!("file://{}", origin.display()),
        name: "img".to_owned(),
        md5: md5_hex(&data),
    };
    let path = cache(&cache_dir).fetch(&src).unwrap();
    assert_verified(&path, &cache_dir, &data);

    src.md5 = "0123456789abcdef0123456789abcdef".to_owned();
    let err = cache(&cache_dir).fetch(&src).unwrap_err();
    assert!(matches!(err, SifError::Md5Mismatch { .. }), "{err}");

    src.url = format!("file://{}", dir.path().join("nope.sif").display());
    let err = cache(&dir.path().join("c2")).fetch(&src).unwrap_err();
    let text = crate::error_chain::chain(&err);
    assert!(
        text.contains("nope.sif") && text.contains("No such file"),
        "{text}"
    );
}

#[test]
fn file_urls_are_recognised() {
    use super::download::file_url_path;
    let abs = Some(PathBuf::from("/a/b.sif"));
    assert_eq!(file_url_path("file:///a/b.sif"), abs);
    assert_eq!(file_url_path("file://localhost/a/b.sif"), abs);
    assert_eq!(file_url_path("file:/a/b.sif"), abs);
    assert_eq!(file_url_path("file:b.sif"), None);
    assert_eq!(file_url_path("file://otherhost/a"), None);
    assert_eq!(file_url_path("http://127.0.0.1/a"), None);
}

/// A fake SIF: the 32-byte launch line, the magic, then `body`.
fn fake_sif(body: &[u8]) -> Vec<u8> {
    let mut bytes = b"#!/usr/bin/env run-singularity\n\0SIF_MAGIC\0".to_vec();
    bytes.extend_from_slice(body);
    bytes
}

#[test]
fn a_built_image_is_checked_recorded_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache(dir.path());
    let builds = AtomicUsize::new(0);
    let make = |target: &Path, _scratch: &Path| {
        builds.fetch_add(1, Ordering::SeqCst);
        fs::write(target, fake_sif(b"one")).map_err(error::io_error("write", target))
    };
    let built = cache.build("img", &|| false, make).unwrap();
    assert!(!built.reused);
    assert_eq!(built.bytes, fake_sif(b"one").len() as u64);
    let path = built.path;
    assert_eq!(fs::read(&path).unwrap(), fake_sif(b"one"));
    let recorded = fs::read_to_string(dir.path().join("img.sif.md5")).unwrap();
    assert_eq!(recorded, md5_hex(&fake_sif(b"one")));
    let again = cache.build("img", &|| false, make).unwrap();
    assert_eq!(builds.load(Ordering::SeqCst), 1, "reused");
    assert!(again.reused && again.bytes == 0, "{again:?}");

    // Changed behind our back: moved aside and built again.
    fs::write(&path, fake_sif(b"changed")).unwrap();
    cache.build("img", &|| false, make).unwrap();
    assert_eq!(builds.load(Ordering::SeqCst), 2);
    assert_eq!(bad_files(dir.path()).len(), 1);
}

#[test]
fn a_build_that_is_not_a_sif_or_fails_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache(dir.path());
    let err = cache
        .build("img", &|| false, |target: &Path, _scratch: &Path| {
            fs::write(target, b"<html>not an image</html>")
                .map_err(error::io_error("write", target))
        })
        .unwrap_err();
    assert!(matches!(err, SifError::NotSif { .. }), "{err}");
    let err = cache
        .build("img", &|| false, |target: &Path, _scratch: &Path| {
            fs::write(target, b"half").unwrap();
            Err(SifError::Interrupted {
                label: "img".to_owned(),
            })
        })
        .unwrap_err();
    assert!(err.is_interrupted());
    let mut left: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["img.sif.lock"], "only the lock file stays");
}

// ---------- pure helpers ----------

#[test]
fn md5_file_matches_known_vectors_and_streams() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    fs::write(&path, b"").unwrap();
    assert_eq!(md5_file(&path).unwrap(), "d41d8cd98f00b204e9800998ecf8427e");
    fs::write(&path, b"abc").unwrap();
    assert_eq!(md5_file(&path).unwrap(), "900150983cd24fb0d6963f7d28e17f72");
    // Larger than one chunk, so several reads are combined.
    let big = payload(2 * CHUNK + 7, 16);
    fs::write(&path, &big).unwrap();
    assert_eq!(md5_file(&path).unwrap(), md5_hex(&big));
    assert!(md5_file(&dir.path().join("missing")).is_err());
}

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
    let map: HashMap<String, OsString> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), OsString::from(v)))
        .collect();
    move |key| map.get(key).cloned()
}

#[test]
fn default_dir_prefers_singularity_pull_folder() {
    let env = env_of(&[
        ("SINGULARITY_PULL_FOLDER", "/pull"),
        ("XDG_CACHE_HOME", "/xdg"),
        ("HOME", "/home/u"),
    ]);
    assert_eq!(default_dir_from(env), Some(PathBuf::from("/pull")));
}

#[test]
fn default_dir_uses_xdg_cache_home_when_pull_folder_is_empty() {
    let env = env_of(&[
        ("SINGULARITY_PULL_FOLDER", ""),
        ("XDG_CACHE_HOME", "/xdg"),
        ("HOME", "/home/u"),
    ]);
    assert_eq!(
        default_dir_from(env),
        Some(PathBuf::from("/xdg/zoo-runner/sif"))
    );
}

#[test]
fn default_dir_falls_back_to_home() {
    let env = env_of(&[("XDG_CACHE_HOME", ""), ("HOME", "/home/u")]);
    assert_eq!(
        default_dir_from(env),
        Some(PathBuf::from("/home/u/.cache/zoo-runner/sif"))
    );
    assert_eq!(default_dir_from(env_of(&[])), None);
}

// ---------- removing a SIF (--prune-sifs) ----------

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_sif_is_removed_only_once_no_runner_holds_it() {
    let data = payload(SIZE, 60);
    let server = serve_file(&data);
    let dir = tempfile::tempdir().unwrap();
    let cache = cache(dir.path());
    let mut fetched = cache
        .fetch_until(&source(&server, &data), &|| false)
        .unwrap();
    assert!(fetched.in_use.is_some(), "a fetch holds what it hands out");
    // This runner still holds it (another open file, as another runner's would be).
    assert_eq!(cache.remove("img", &|| false).unwrap(), Removal::InUse);
    assert_verified(&fetched.path, dir.path(), &data);
    drop(fetched.in_use.take());
    assert_eq!(
        cache.remove("img", &|| false).unwrap(),
        Removal::Removed { bytes: SIZE as u64 }
    );
    // The lock file stays: lock files are never deleted.
    assert_eq!(names_in(dir.path()), ["img.sif.lock"]);
    assert_eq!(cache.remove("img", &|| false).unwrap(), Removal::Gone);
    // The next fetch downloads it again.
    cache
        .fetch_until(&source(&server, &data), &|| false)
        .unwrap();
    assert_eq!(server.hits(), 2);
}

#[test]
fn a_sif_another_process_holds_is_kept() {
    let data = payload(SIZE, 61);
    let server = serve_file(&data);
    let dir = tempfile::tempdir().unwrap();
    let cache = cache(dir.path());
    let path = cache.fetch(&source(&server, &data)).unwrap();
    // Another process holds it shared, as another runner would: util-linux `flock` on a
    // descriptor of the shell, which then becomes `sleep` (one process, killed below).
    let mut other = std::process::Command::new("sh")
        .arg("-c")
        .arg("exec 9<\"$1\" && flock --shared 9 && exec sleep 600")
        .arg("sh")
        .arg(&path)
        .spawn()
        .unwrap();
    let started = Instant::now();
    let held = loop {
        let file = File::open(&path).unwrap();
        match file.try_lock() {
            Err(fs::TryLockError::WouldBlock) => break true,
            _ if started.elapsed() > Duration::from_secs(30) => break false,
            _ => thread::sleep(Duration::from_millis(20)),
        }
    };
    let kept = cache.remove("img", &|| false).unwrap();
    let _ = other.kill();
    let _ = other.wait();
    assert!(held, "`flock --shared` took the lock");
    assert_eq!(kept, Removal::InUse);
    assert!(path.is_file());
    assert!(matches!(
        cache.remove("img", &|| false).unwrap(),
        Removal::Removed { .. }
    ));
}

#[test]
fn a_built_sif_goes_with_its_md5_record() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache(dir.path());
    let make = |target: &Path, _scratch: &Path| {
        fs::write(target, fake_sif(b"x")).map_err(error::io_error("write", target))
    };
    drop(cache.build("img", &|| false, make).unwrap());
    assert_eq!(
        names_in(dir.path()),
        ["img.sif", "img.sif.lock", "img.sif.md5"]
    );
    assert!(matches!(
        cache.remove("img", &|| false).unwrap(),
        Removal::Removed { .. }
    ));
    assert_eq!(names_in(dir.path()), ["img.sif.lock"]);
}

#[test]
fn a_build_takes_its_scratch_space_from_the_tmp_dir_and_leaves_none() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let sifs = dir.path().join("sifs");
    let seen = Mutex::new(None);
    let make = |target: &Path, scratch: &Path| {
        *seen.lock().unwrap() = Some(scratch.to_path_buf());
        fs::write(scratch.join("image.tar"), b"a big archive").unwrap();
        fs::write(target, fake_sif(b"x")).map_err(error::io_error("write", target))
    };
    drop(
        cache(&sifs)
            .with_tmp_dir(Some(tmp.path().to_path_buf()))
            .build("img", &|| false, make)
            .unwrap(),
    );
    let scratch = seen.lock().unwrap().clone().unwrap();
    assert_eq!(scratch.parent(), Some(tmp.path()), "{}", scratch.display());
    assert!(scratch
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("img.sif.build-"));
    assert!(!scratch.exists(), "removed after the build");
    assert_eq!(names_in(tmp.path()), Vec::<String>::new());
    assert_eq!(names_in(&sifs), ["img.sif", "img.sif.lock", "img.sif.md5"]);

    // Without a tmp dir, the SIF folder gives the space (never /tmp), and keeps nothing of it.
    let seen_default = Mutex::new(None);
    let make = |target: &Path, scratch: &Path| {
        *seen_default.lock().unwrap() = Some(scratch.to_path_buf());
        fs::write(target, fake_sif(b"y")).map_err(error::io_error("write", target))
    };
    drop(cache(&sifs).build("other", &|| false, make).unwrap());
    let scratch = seen_default.lock().unwrap().clone().unwrap();
    assert_eq!(scratch.parent(), Some(sifs.as_path()));
    assert!(!scratch.exists());
}
