//! Download cache for the Singularity/Apptainer images (SIF) that Kipoi publishes
//! in its catalog as `{url, name, md5}`.
//!
//! The cache is one flat folder:
//!
//! - `<name>.sif`: a complete image; its md5 is checked again every time it is reused;
//! - `<name>.sif.part`: an unfinished download, resumed with an HTTP `Range` request;
//! - `<name>.sif.bad-<unix-seconds>[-k]`: a file whose md5 did not match, kept as
//!   evidence (never deleted by this module).
//!
//! Guarantees of [`SifCache::fetch`]:
//!
//! - the returned path is `<dir>/<name>.sif` and its md5 matched during that call;
//! - a download only gets the final name once it is complete and verified, so an
//!   interrupted run leaves at most a `.part` file behind;
//! - transient failures (HTTP 429 and 5xx, refused or reset connections, truncated
//!   bodies) are retried with exponential backoff; other HTTP errors fail at once;
//! - fetches of the same name from several threads of one process are serialised.
//!   Separate processes sharing a folder are not coordinated.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use md5::{Digest, Md5};

/// Size of the buffer used to read response bodies and to hash files.
const CHUNK: usize = 256 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest silence tolerated while reading a response.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound for a server's `Retry-After`, so a server cannot stall a test run.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// Upper bound for one backoff pause, however many attempts are configured.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A download whose md5 does not match is tried this many times in total.
const DOWNLOADS_PER_FETCH: u32 = 2;
/// Minimum time between two redraws of the progress line.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);

/// One image of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SifSource {
    pub url: String,
    /// File name without the `.sif` extension.
    pub name: String,
    /// Expected md5 as 32 hex digits, any case.
    pub md5: String,
}

/// How often and how patiently transient failures are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total number of tries, including the first one (0 is treated as 1).
    pub attempts: u32,
    /// Pause before the first retry; doubled for every further retry.
    pub first_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            first_backoff: Duration::from_millis(500),
        }
    }
}

impl RetryPolicy {
    /// Pause before retry number `retry` (0 = first retry): `first_backoff * 2^retry`,
    /// at most [`MAX_BACKOFF`].
    fn backoff(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry);
        self.first_backoff.saturating_mul(factor).min(MAX_BACKOFF)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SifError {
    #[error(
        "invalid image name `{name}`: expected a plain file name \
         (not empty, not `.` or `..`, no `/`, `\\`, NUL or leading `..`)"
    )]
    BadName { name: String },

    #[error("invalid md5 `{md5}` for image `{name}`: expected 32 hexadecimal characters")]
    BadMd5 { name: String, md5: String },

    #[error("failed to download `{url}`: server answered 404 Not Found; check the image url")]
    NotFound { url: String },

    #[error("failed to download `{url}`: server answered http status {status}")]
    Http { url: String, status: u16 },

    #[error("failed to download `{url}`: {reason}")]
    Request { url: String, reason: String },

    #[error("failed to download `{url}` after {attempts} attempts: {last}; try again later")]
    Transient {
        url: String,
        attempts: u32,
        last: String,
    },

    #[error(
        "md5 mismatch for `{url}`: expected {expected}, got {actual}; \
         the downloaded file was kept at `{}`",
        .path_of_bad_file.display()
    )]
    Md5Mismatch {
        url: String,
        expected: String,
        actual: String,
        path_of_bad_file: PathBuf,
    },

    #[error("cannot {action} `{}`: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Builds a `map_err` adapter that turns an `io::Error` into [`SifError::Io`].
fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SifError {
    let path = path.to_path_buf();
    move |source| SifError::Io {
        action,
        path,
        source,
    }
}

/// Downloads images into a folder and only hands out verified files.
#[derive(Debug)]
pub struct SifCache {
    dir: PathBuf,
    retry: RetryPolicy,
    progress: bool,
    agent: ureq::Agent,
    /// One lock per image name: concurrent fetches of one name would share the `.part` file.
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl SifCache {
    /// Uses `dir` as the cache folder; it is created if missing.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        // Best effort only: `fetch` creates it again and reports a failure properly.
        let _ = fs::create_dir_all(&dir);
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(CONNECT_TIMEOUT)
            .timeout_read(READ_TIMEOUT)
            .build();
        SifCache {
            dir,
            retry: RetryPolicy::default(),
            progress: false,
            agent,
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// `$SINGULARITY_PULL_FOLDER` if set and non-empty, else
    /// `$XDG_CACHE_HOME/zoo-runner/sif`, else `$HOME/.cache/zoo-runner/sif`
    /// (and the system temp folder if even `HOME` is missing).
    pub fn default_dir() -> PathBuf {
        default_dir_from(|key| std::env::var_os(key))
            .unwrap_or_else(|| std::env::temp_dir().join("zoo-runner").join("sif"))
    }

    #[cfg(test)]
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Draw a progress line on stderr while downloading (default: off).
    pub fn with_progress(mut self, on: bool) -> Self {
        self.progress = on;
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Returns the path of `<dir>/<name>.sif` after checking that its md5 matches
    /// `src.md5`, downloading it first if needed.
    pub fn fetch(&self, src: &SifSource) -> Result<PathBuf, SifError> {
        validate_name(&src.name)?;
        let expected = normalized_md5(src)?;

        let lock = self.name_lock(&src.name);
        // A panic in another fetch leaves nothing half-updated that we rely on:
        // every file state is re-checked below, so a poisoned lock is still usable.
        let _guard = lock.lock().unwrap_or_else(PoisonError::into_inner);

        fs::create_dir_all(&self.dir).map_err(io_error("create cache folder", &self.dir))?;
        let paths = CachePaths::new(&self.dir, &src.name);
        if self.reuse_cached(&paths, &expected)? {
            return Ok(paths.done);
        }
        self.download_verified(src, &expected, &paths)
    }

    fn name_lock(&self, name: &str) -> Arc<Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(locks.entry(name.to_owned()).or_default())
    }

    /// True if a cached file exists and matches; a mismatching one is moved aside.
    fn reuse_cached(&self, paths: &CachePaths, expected: &str) -> Result<bool, SifError> {
        if fs::symlink_metadata(&paths.done).is_err() {
            return Ok(false);
        }
        let actual = md5_file(&paths.done).map_err(io_error("read cached image", &paths.done))?;
        if actual == expected {
            return Ok(true);
        }
        let bad = move_aside(&paths.done, &paths.done)?;
        eprintln!(
            "warning: cached image `{}` has md5 {actual}, expected {expected}; \
             moved it to `{}` and downloading again",
            paths.done.display(),
            bad.display()
        );
        Ok(false)
    }

    /// Downloads into the `.part` file and renames it once its md5 matches.
    fn download_verified(
        &self,
        src: &SifSource,
        expected: &str,
        paths: &CachePaths,
    ) -> Result<PathBuf, SifError> {
        let mut round = 1;
        loop {
            self.download_with_retry(&src.url, &paths.part, &paths.label)?;
            let actual = md5_file(&paths.part).map_err(io_error("read download", &paths.part))?;
            if actual == expected {
                fs::rename(&paths.part, &paths.done)
                    .map_err(io_error("move finished download to", &paths.done))?;
                return Ok(paths.done.clone());
            }
            // Moving the file away also makes the next round start from zero
            // instead of resuming (the `.part` may stem from an older image).
            let bad = move_aside(&paths.part, &paths.done)?;
            if round == DOWNLOADS_PER_FETCH {
                return Err(SifError::Md5Mismatch {
                    url: src.url.clone(),
                    expected: expected.to_owned(),
                    actual,
                    path_of_bad_file: bad,
                });
            }
            eprintln!(
                "warning: download of `{}` has md5 {actual}, expected {expected}; \
                 kept it as `{}` and downloading again",
                src.url,
                bad.display()
            );
            round += 1;
        }
    }

    /// Runs [`Self::download_once`] until it succeeds, fails for good, or runs out of attempts.
    fn download_with_retry(&self, url: &str, part: &Path, label: &str) -> Result<(), SifError> {
        let attempts = self.retry.attempts.max(1);
        let mut last = String::new();
        for attempt in 0..attempts {
            match self.download_once(url, part, label) {
                Ok(()) => return Ok(()),
                Err(Failure::Fatal(err)) => return Err(err),
                Err(Failure::Retry {
                    reason,
                    retry_after,
                }) => {
                    last = reason;
                    if attempt + 1 < attempts {
                        thread::sleep(retry_after.unwrap_or_else(|| self.retry.backoff(attempt)));
                    }
                }
            }
        }
        Err(SifError::Transient {
            url: url.to_owned(),
            attempts,
            last,
        })
    }

    /// One HTTP exchange: continues an existing `.part` file if the server allows it.
    fn download_once(&self, url: &str, part: &Path, label: &str) -> Result<(), Failure> {
        let (response, offset) = self.request_rest(url, part)?;
        let start = match response.status() {
            200 => 0,
            206 => {
                let resumed_at = response
                    .header("Content-Range")
                    .and_then(content_range_start);
                if resumed_at != Some(offset) {
                    // We cannot trust how the pieces fit together: start over next attempt.
                    remove_if_exists(part)?;
                    return Err(Failure::Retry {
                        reason: format!(
                            "server resumed at an unexpected position \
                             (asked for byte {offset}, got {:?})",
                            response.header("Content-Range")
                        ),
                        retry_after: None,
                    });
                }
                offset
            }
            status => {
                return Err(Failure::Fatal(SifError::Http {
                    url: url.to_owned(),
                    status,
                }))
            }
        };
        let total = response
            .header("Content-Length")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|len| len + start);

        let mut file = open_part(part, start)?;
        let mut progress = Progress::new(self.progress, label, total);
        copy_body(
            response.into_reader(),
            &mut file,
            part,
            start,
            &mut progress,
        )
    }

    /// Sends the GET, asking only for the missing bytes when a `.part` file exists.
    /// Returns the response and the offset that was asked for.
    fn request_rest(&self, url: &str, part: &Path) -> Result<(ureq::Response, u64), Failure> {
        loop {
            let offset = file_len(part)?;
            let mut request = self
                .agent
                .get(url)
                // Byte ranges only make sense on the unencoded file.
                .set("Accept-Encoding", "identity");
            if offset > 0 {
                request = request.set("Range", &format!("bytes={offset}-"));
            }
            match request.call() {
                Ok(response) => return Ok((response, offset)),
                // 416: the server cannot continue our `.part`; drop it and ask for everything.
                Err(ureq::Error::Status(416, _)) if offset > 0 => remove_if_exists(part)?,
                Err(err) => return Err(classify(url, err)),
            }
        }
    }
}

/// Outcome of a failed download attempt.
enum Failure {
    /// Worth another attempt, possibly after the delay the server asked for.
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    Fatal(SifError),
}

impl From<SifError> for Failure {
    fn from(err: SifError) -> Self {
        Failure::Fatal(err)
    }
}

/// Sorts an error from ureq into "try again" and "give up".
fn classify(url: &str, err: ureq::Error) -> Failure {
    match err {
        ureq::Error::Status(404, _) => Failure::Fatal(SifError::NotFound {
            url: url.to_owned(),
        }),
        ureq::Error::Status(status, response) if status == 429 || (500..600).contains(&status) => {
            Failure::Retry {
                reason: format!("server answered {status} {}", response.status_text()),
                retry_after: response.header("Retry-After").and_then(parse_retry_after),
            }
        }
        ureq::Error::Status(status, _) => Failure::Fatal(SifError::Http {
            url: url.to_owned(),
            status,
        }),
        ureq::Error::Transport(transport) => {
            let reason = describe_transport(&transport);
            match transport.kind() {
                ureq::ErrorKind::ConnectionFailed | ureq::ErrorKind::Io => Failure::Retry {
                    reason,
                    retry_after: None,
                },
                _ => Failure::Fatal(SifError::Request {
                    url: url.to_owned(),
                    reason,
                }),
            }
        }
    }
}

/// A lowercase description of a transport error, without the URL (callers add it).
fn describe_transport(transport: &ureq::Transport) -> String {
    use ureq::ErrorKind as K;
    let mut text = match transport.kind() {
        K::InvalidUrl => "invalid url",
        K::UnknownScheme => "unsupported url scheme",
        K::Dns => "could not resolve the host name",
        K::ConnectionFailed => "could not connect",
        K::TooManyRedirects => "too many redirects",
        K::BadStatus => "malformed response status line",
        K::BadHeader => "malformed response header",
        K::Io => "network error",
        _ => "request failed",
    }
    .to_owned();
    if let Some(message) = transport.message() {
        text.push_str(": ");
        text.push_str(message);
    }
    if let Some(source) = std::error::Error::source(transport) {
        text.push_str(": ");
        text.push_str(&source.to_string());
    }
    text
}

/// Streams the body into `file`; a read error (reset, timeout, early close) is retryable
/// and the bytes written so far stay in the `.part` file for the next attempt to resume.
fn copy_body(
    mut body: impl Read,
    file: &mut File,
    part: &Path,
    mut written: u64,
    progress: &mut Progress,
) -> Result<(), Failure> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                return Err(Failure::Retry {
                    reason: format!("connection lost after {written} bytes: {err}"),
                    retry_after: None,
                })
            }
        };
        file.write_all(&buf[..n])
            .map_err(io_error("write to", part))?;
        written += n as u64;
        progress.update(written);
    }
    progress.finish(written);
    Ok(())
}

/// Opens the `.part` file for appending at `start`, or truncated when `start` is 0.
fn open_part(part: &Path, start: u64) -> Result<File, SifError> {
    let mut options = OpenOptions::new();
    if start == 0 {
        options.write(true).create(true).truncate(true);
    } else {
        options.append(true);
    }
    options
        .open(part)
        .map_err(io_error("open download file", part))
}

/// Length of `path`, or 0 if it does not exist.
fn file_len(path: &Path) -> Result<u64, SifError> {
    match fs::metadata(path) {
        Ok(meta) => Ok(meta.len()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(err) => Err(io_error("inspect download file", path)(err)),
    }
}

fn remove_if_exists(path: &Path) -> Result<(), SifError> {
    match fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => {
            Err(io_error("remove stale download", path)(err))
        }
        _ => Ok(()),
    }
}

/// Renames `from` to `<done>.bad-<unix-seconds>`, adding `-1`, `-2`, ... rather than
/// overwriting an earlier piece of evidence. Returns the new path.
fn move_aside(from: &Path, done: &Path) -> Result<PathBuf, SifError> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut suffix = 0u32;
    let target = loop {
        let mut name: OsString = done.as_os_str().to_owned();
        name.push(format!(".bad-{secs}"));
        if suffix > 0 {
            name.push(format!("-{suffix}"));
        }
        let candidate = PathBuf::from(name);
        if fs::symlink_metadata(&candidate).is_err() {
            break candidate;
        }
        suffix += 1;
    };
    fs::rename(from, &target).map_err(io_error("move bad file aside to", &target))?;
    Ok(target)
}

/// The files that belong to one image name.
struct CachePaths {
    done: PathBuf,
    part: PathBuf,
    /// `<name>.sif`, shown in the progress line.
    label: String,
}

impl CachePaths {
    fn new(dir: &Path, name: &str) -> Self {
        let label = format!("{name}.sif");
        CachePaths {
            done: dir.join(&label),
            part: dir.join(format!("{label}.part")),
            label,
        }
    }
}

/// Lowercase hex md5 of a file, read in fixed-size chunks.
pub fn md5_file(path: &Path) -> Result<String, io::Error> {
    let mut file = File::open(path)?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        }
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// Accepts only plain file names, so a catalog entry cannot write outside the cache.
pub fn validate_name(name: &str) -> Result<(), SifError> {
    let bad = name.is_empty()
        || name == "."
        || name.starts_with("..")
        || name.contains(['/', '\\', '\0']);
    if bad {
        return Err(SifError::BadName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// The expected md5 in lowercase, or [`SifError::BadMd5`].
fn normalized_md5(src: &SifSource) -> Result<String, SifError> {
    let md5 = &src.md5;
    if md5.len() == 32 && md5.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(md5.to_ascii_lowercase())
    } else {
        Err(SifError::BadMd5 {
            name: src.name.clone(),
            md5: md5.clone(),
        })
    }
}

/// The default folder from the environment, or `None` when not even `HOME` is set.
fn default_dir_from(env: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let non_empty = |key: &str| env(key).filter(|value| !value.is_empty());
    if let Some(dir) = non_empty("SINGULARITY_PULL_FOLDER") {
        return Some(PathBuf::from(dir));
    }
    let cache = non_empty("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| non_empty("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(cache.join("zoo-runner").join("sif"))
}

/// Seconds form of `Retry-After`, capped; the HTTP-date form falls back to our backoff.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs = value.trim().parse::<u64>().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// First byte of a `Content-Range: bytes <first>-<last>/<total>` header.
fn content_range_start(value: &str) -> Option<u64> {
    let range = value.trim().strip_prefix("bytes ")?;
    let (first, _) = range.split_once('-')?;
    first.trim().parse().ok()
}

/// The `\r`-redrawn progress line on stderr.
struct Progress<'a> {
    enabled: bool,
    label: &'a str,
    total: Option<u64>,
    last_draw: Option<Instant>,
}

impl<'a> Progress<'a> {
    fn new(enabled: bool, label: &'a str, total: Option<u64>) -> Self {
        Progress {
            enabled,
            label,
            total,
            last_draw: None,
        }
    }

    fn update(&mut self, done: u64) {
        let due = self
            .last_draw
            .is_none_or(|at| at.elapsed() >= PROGRESS_INTERVAL);
        if due {
            self.draw(done);
        }
    }

    fn finish(&mut self, done: u64) {
        self.draw(done);
    }

    fn draw(&mut self, done: u64) {
        if self.enabled {
            eprint!("\r{}", progress_line(self.label, done, self.total));
            self.last_draw = Some(Instant::now());
        }
    }
}

impl Drop for Progress<'_> {
    /// Ends the line, also when the download failed half-way.
    fn drop(&mut self) {
        if self.last_draw.is_some() {
            eprintln!();
        }
    }
}

fn progress_line(label: &str, done: u64, total: Option<u64>) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let done_mib = done as f64 / MIB;
    match total {
        Some(total) if total > 0 => {
            let percent = (u128::from(done) * 100 / u128::from(total)).min(100);
            let total_mib = total as f64 / MIB;
            format!("{label}: {percent:>3}% ({done_mib:.1} of {total_mib:.1} MiB)")
        }
        _ => format!("{label}: {done_mib:.1} MiB"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicUsize, Ordering};

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

    /// Files in `dir` whose names start with `img.sif.bad-`.
    fn bad_files(dir: &Path) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("img.sif.bad-")
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
        assert!(!dir.join("img.sif.part").exists(), ".part file left behind");
    }

    // ---------- downloading and reuse ----------

    #[test]
    fn fetch_downloads_and_verifies() {
        let data = payload(SIZE, 1);
        let server = Server::start({
            let data = data.clone();
            move |_, _| Reply::File(data.clone())
        });
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
        assert_eq!(cache.dir(), nested);
    }

    #[test]
    fn second_fetch_reuses_cached_file_without_requests() {
        let data = payload(SIZE, 2);
        let server = Server::start({
            let data = data.clone();
            move |_, _| Reply::File(data.clone())
        });
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
        let server = Server::start({
            let data = data.clone();
            move |_, _| Reply::File(data.clone())
        });
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
        let server = Server::start({
            let data = data.clone();
            move |_, _| Reply::File(data.clone())
        });
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
        // Both bad downloads are kept, neither overwrote the other.
        assert_eq!(bad_files(dir.path()).len(), 2);
        assert!(bad_files(dir.path()).contains(&path_of_bad_file));
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
        let server = Server::start({
            let data = data.clone();
            move |_, _| Reply::File(data.clone())
        });
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("img.sif.part"), &data[..100_000]).unwrap();
        let path = cache(dir.path())
            .with_progress(true)
            .fetch(&source(&server, &data))
            .unwrap();
        assert_verified(&path, dir.path(), &data);
        assert_eq!(server.ranges(), vec![Some("bytes=100000-".to_owned())]);
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
        let server = Server::start({
            let data = data.clone();
            move |_, _| Reply::File(data.clone())
        });
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

    #[test]
    fn retry_after_is_parsed_and_capped() {
        assert_eq!(parse_retry_after("0"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after(" 5 "), Some(Duration::from_secs(5)));
        assert_eq!(parse_retry_after("120"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.attempts, 5);
        assert_eq!(policy.backoff(0), Duration::from_millis(500));
        assert_eq!(policy.backoff(1), Duration::from_secs(1));
        assert_eq!(policy.backoff(3), Duration::from_secs(4));
        assert_eq!(policy.backoff(7), Duration::from_secs(60));
        assert_eq!(policy.backoff(200), MAX_BACKOFF);
    }

    #[test]
    fn content_range_start_is_parsed() {
        assert_eq!(content_range_start("bytes 100-299/300"), Some(100));
        assert_eq!(content_range_start("bytes */300"), None);
        assert_eq!(content_range_start("items 1-2/3"), None);
    }

    #[test]
    fn progress_line_shows_percent_and_mib() {
        let mib = 1024 * 1024;
        assert_eq!(
            progress_line("img.sif", mib / 2, Some(mib)),
            "img.sif:  50% (0.5 of 1.0 MiB)"
        );
        assert_eq!(progress_line("img.sif", 3 * mib, None), "img.sif: 3.0 MiB");
    }
}
