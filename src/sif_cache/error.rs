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

    #[error("cannot {action} `{}`: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
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
