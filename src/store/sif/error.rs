//! What can go wrong while fetching an image.

use std::io;
use std::path::{Path, PathBuf};

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

    #[error("stopped fetching `{label}`: the run was interrupted")]
    Interrupted { label: String },

    #[error(
        "gave up on `{url}` after {} (--download-timeout){}; what arrived is kept and the \
         next run resumes it",
        crate::config::units::show_duration(*.after),
        last_reason(.last)
    )]
    DownloadTimeout {
        url: String,
        after: std::time::Duration,
        /// Why the last attempt ended, if one failed.
        last: String,
    },

    #[error(
        "`{command}` did not finish within {} (--download-timeout) and was stopped{}",
        crate::config::units::show_duration(*.after),
        stderr_tail(.stderr)
    )]
    BuildTimeout {
        command: String,
        after: std::time::Duration,
        stderr: String,
    },

    #[error(
        "`{name}` is not in the read-only SIF folder `{}` (--sif-dir), and nothing can be \
         {what} there: put it there first, or pass a writable --sif-dir",
        .dir.display()
    )]
    ReadOnly {
        dir: PathBuf,
        name: String,
        /// `downloaded` or `built`.
        what: &'static str,
    },

    #[error(
        "`{}` in the read-only SIF folder (--sif-dir) has md5 {actual}, expected {expected}; it \
         cannot be replaced there: fix the store, or pass a writable --sif-dir",
        .path.display()
    )]
    ReadOnlyMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },

    #[error(
        "gave up waiting for {} to finish fetching into `{}` after {}; \
         if no runner is working on it, that process is stuck: stop it",
        .holder,
        .path.display(),
        crate::config::units::show_duration(*.waited)
    )]
    LockWait {
        /// The lock file.
        path: PathBuf,
        holder: crate::store::lock::Holder,
        waited: std::time::Duration,
    },

    #[error("`{}` is not a SIF image (no SIF header)", .path.display())]
    NotSif { path: PathBuf },

    #[error(
        "failed to save image `{image}` from the Docker daemon into `{}`",
        .path.display()
    )]
    Export {
        image: String,
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error("failed to start `{command}`")]
    PullStart {
        command: String,
        #[source]
        source: io::Error,
    },

    #[error("`{command}` failed ({status}){}", stderr_tail(.stderr))]
    Pull {
        command: String,
        status: String,
        /// The last lines it printed on stderr.
        stderr: String,
    },

    #[error(transparent)]
    Lock(#[from] crate::store::lock::LockError),

    #[error("cannot {action} `{}`", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl SifError {
    /// True when the fetch stopped because the run was interrupted.
    pub fn is_interrupted(&self) -> bool {
        matches!(self, SifError::Interrupted { .. })
    }
}

/// Builds a `map_err` adapter that turns an `io::Error` into [`SifError::Io`].
pub(super) fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SifError {
    let path = path.to_path_buf();
    move |source| SifError::Io {
        action,
        path,
        source,
    }
}

/// `: the last attempt ended: <why>`, or nothing when no attempt failed.
fn last_reason(last: &str) -> String {
    if last.is_empty() {
        String::new()
    } else {
        format!(" (the last attempt: {last})")
    }
}

/// `: its last output:\n<lines>` or nothing when it printed nothing.
fn stderr_tail(stderr: &str) -> String {
    let text = stderr.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!("; it said:\n{text}")
    }
}
