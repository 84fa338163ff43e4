//! The HTTP side of the cache: one `ureq` agent, download attempts that resume a
//! `.part` file with a `Range` request, and the retry policy for transient failures.
//! A `file:` URL (an absolute path: the catalog resolves relative ones against its folder) is
//! copied the same way, so a local zoo's image goes through the same `.part`, md5 and rename.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use super::error::{io_error, SifError};
use super::progress::Progress;
use super::CHUNK;
use crate::config::backoff::Backoff;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest silence tolerated while reading a response.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound for a server's `Retry-After`, so a server cannot stall a test run.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// Upper bound for one backoff pause, however many attempts are configured.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How often and how patiently transient failures are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RetryPolicy {
    /// Total number of tries, including the first one (0 is treated as 1).
    pub(super) attempts: u32,
    /// Pause before the first retry; doubled for every further retry.
    pub(super) first_backoff: Duration,
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
    /// at most [`MAX_BACKOFF`], with jitter (half of it to all of it; `config::backoff`).
    fn backoff(&self, retry: u32) -> Duration {
        Backoff::new(self.first_backoff, MAX_BACKOFF).pause(retry)
    }
}

/// The default of `--download-timeout`: how long one SIF fetch (every attempt and pause) or
/// build may take in all.
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(2 * 60 * 60);

/// Downloads one URL into a `.part` file, retrying transient failures.
#[derive(Debug)]
pub(super) struct Downloader {
    agent: ureq::Agent,
    pub(super) retry: RetryPolicy,
    /// Draw a progress line on stderr while downloading.
    pub(super) progress: bool,
    /// How long one download may take in all, attempts and pauses included.
    pub(super) budget: Duration,
}

/// Where one download stands: its deadline, the bytes it received, why its last attempt failed.
struct Run<'a> {
    url: &'a str,
    part: &'a Path,
    label: &'a str,
    stop: &'a dyn Fn() -> bool,
    deadline: Instant,
    budget: Duration,
    received: u64,
    last: String,
}

impl Run<'_> {
    /// Time left before the deadline; an error once it has passed.
    fn left(&self) -> Result<Duration, SifError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(self.timed_out());
        }
        Ok(left)
    }

    fn timed_out(&self) -> SifError {
        SifError::DownloadTimeout {
            url: self.url.to_owned(),
            after: self.budget,
            last: self.last.clone(),
        }
    }
}

impl Downloader {
    pub(super) fn new() -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(CONNECT_TIMEOUT)
            .timeout_read(READ_TIMEOUT)
            .build();
        Downloader {
            agent,
            retry: RetryPolicy::default(),
            progress: false,
            budget: DEFAULT_BUDGET,
        }
    }

    /// Runs [`Self::download_once`] until it succeeds, fails for good, runs out of attempts or
    /// out of its budget. Returns the bytes received.
    pub(super) fn download_with_retry(
        &self,
        url: &str,
        part: &Path,
        label: &str,
        stop: &dyn Fn() -> bool,
    ) -> Result<u64, SifError> {
        let started = Instant::now();
        let mut run = Run {
            url,
            part,
            label,
            stop,
            deadline: started
                .checked_add(self.budget)
                .unwrap_or(started + Duration::from_secs(100 * 365 * 24 * 3600)),
            budget: self.budget,
            received: 0,
            last: String::new(),
        };
        if let Some(path) = file_url_path(url) {
            copy_local(&path, &mut run, self.progress)?;
            return Ok(run.received);
        }
        let attempts = self.retry.attempts.max(1);
        for attempt in 0..attempts {
            match self.download_once(&mut run) {
                Ok(()) => return Ok(run.received),
                Err(Failure::Fatal(err)) => return Err(err),
                Err(Failure::Retry {
                    reason,
                    retry_after,
                }) => {
                    run.last = reason;
                    if attempt + 1 < attempts {
                        let pause = retry_after.unwrap_or_else(|| self.retry.backoff(attempt));
                        if pause >= run.left()? {
                            return Err(run.timed_out());
                        }
                        sleep_unless_stopped(pause, stop, label)?;
                    }
                }
            }
        }
        Err(SifError::Transient {
            url: url.to_owned(),
            attempts,
            last: run.last,
        })
    }

    /// One HTTP exchange: continues an existing `.part` file if the server allows it.
    fn download_once(&self, run: &mut Run<'_>) -> Result<(), Failure> {
        let (url, part) = (run.url, run.part);
        let (response, offset) = self.request_rest(url, part, run.left()?)?;
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
        let mut progress = Progress::new(self.progress, run.label, start, total);
        copy_body(response.into_reader(), &mut file, start, &mut progress, run)
    }

    /// Sends the GET, asking only for the missing bytes when a `.part` file exists; the whole
    /// exchange, body included, ends by the download's deadline (`left` from now).
    /// Returns the response and the offset that was asked for.
    fn request_rest(
        &self,
        url: &str,
        part: &Path,
        left: Duration,
    ) -> Result<(ureq::Response, u64), Failure> {
        loop {
            let offset = file_len(part)?;
            let mut request = self
                .agent
                .get(url)
                .timeout(left)
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
/// and the bytes written so far stay in the `.part` file for the next attempt to resume. Past
/// the download's deadline it gives up for good (the `.part` file stays too).
fn copy_body(
    mut body: impl Read,
    file: &mut File,
    mut written: u64,
    progress: &mut Progress,
    run: &mut Run<'_>,
) -> Result<(), Failure> {
    let part = run.part;
    let mut buf = vec![0u8; CHUNK];
    loop {
        if (run.stop)() {
            return Err(Failure::Fatal(interrupted(part)));
        }
        run.left()?;
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                let reason = format!("connection lost after {written} bytes: {err}");
                if run.left().is_err() {
                    run.last = reason;
                    return Err(Failure::Fatal(run.timed_out()));
                }
                return Err(Failure::Retry {
                    reason,
                    retry_after: None,
                });
            }
        };
        file.write_all(&buf[..n])
            .map_err(io_error("write to", part))?;
        written += n as u64;
        run.received += n as u64;
        progress.update(written);
    }
    progress.finish(written);
    Ok(())
}

/// The error of a fetch stopped by the run's interruption; `path` is a `.part` or the image.
fn interrupted(path: &Path) -> SifError {
    let label = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    SifError::Interrupted { label }
}

/// Sleeps `pause`, waking early to give up when `stop()` turns true.
fn sleep_unless_stopped(
    pause: Duration,
    stop: &dyn Fn() -> bool,
    label: &str,
) -> Result<(), SifError> {
    let until = Instant::now() + pause;
    loop {
        if stop() {
            return Err(SifError::Interrupted {
                label: label.to_owned(),
            });
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// The path of a `file:` URL: `file:///abs`, `file://localhost/abs` or `file:/abs`. Other
/// URLs (and relative `file:` paths, which the catalog resolves before) give `None`.
pub(super) fn file_url_path(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("file:")?;
    let path = match rest.strip_prefix("//") {
        Some(after) if after.starts_with('/') => after,
        Some(after) => after.strip_prefix("localhost")?,
        None => rest,
    };
    path.starts_with('/')
        .then(|| std::path::PathBuf::from(path))
}

/// Copies a local image into the `.part` file, continuing an existing one like a Range request.
fn copy_local(source: &Path, run: &mut Run<'_>, show: bool) -> Result<(), SifError> {
    let part = run.part;
    let mut input = File::open(source).map_err(io_error("open image source", source))?;
    let total = input
        .metadata()
        .map_err(io_error("inspect image source", source))?
        .len();
    let have = file_len(part)?;
    // A leftover longer than the source cannot be its beginning.
    let start = if have <= total { have } else { 0 };
    input
        .seek(SeekFrom::Start(start))
        .map_err(io_error("read image source", source))?;
    let mut file = open_part(part, start)?;
    let mut progress = Progress::new(show, run.label, start, Some(total));
    match copy_body(input, &mut file, start, &mut progress, run) {
        Ok(()) => Ok(()),
        Err(Failure::Fatal(err)) => Err(err),
        // Only a read error of the source ends up here: it is not a network fault.
        Err(Failure::Retry { reason, .. }) => Err(SifError::Request {
            url: format!("file://{}", source.display()),
            reason,
        }),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_parsed_and_capped() {
        assert_eq!(parse_retry_after("0"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after(" 5 "), Some(Duration::from_secs(5)));
        assert_eq!(parse_retry_after("120"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn backoff_doubles_is_capped_and_jittered() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.attempts, 5);
        let within = |retry: u32, ceiling: Duration| {
            let pause = policy.backoff(retry);
            assert!(
                pause >= ceiling / 2 && pause <= ceiling,
                "{retry}: {pause:?}"
            );
        };
        within(0, Duration::from_millis(500));
        within(1, Duration::from_secs(1));
        within(3, Duration::from_secs(4));
        within(7, Duration::from_secs(60));
        within(200, MAX_BACKOFF);
    }

    #[test]
    fn content_range_start_is_parsed() {
        assert_eq!(content_range_start("bytes 100-299/300"), Some(100));
        assert_eq!(content_range_start("bytes */300"), None);
        assert_eq!(content_range_start("items 1-2/3"), None);
    }
}
