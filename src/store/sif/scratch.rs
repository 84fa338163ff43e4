//! Scratch space for a SIF build (`--sif-from-docker`): the image saved from the daemon, and
//! Apptainer's own build folder (`APPTAINER_TMPDIR`), which holds the whole unpacked image. Big
//! builds fail with "no space left on device" on a small `/tmp` (apptainer/apptainer#1380), so
//! the space comes from `--tmp-dir`, else `$APPTAINER_TMPDIR`, else the SIF folder itself (which
//! must hold the SIF anyway), and never from `/tmp`.
//!
//! Each build gets a folder of its own, `<root>/<name>.sif.build-<pid>-<n>`, removed when the
//! build ends however it ends. Under the name's lock no other build of that name runs, so a
//! folder of that name left by a killed run is removed before the next build.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use super::error::{io_error, SifError};

/// Why `--tmp-dir` (or `$APPTAINER_TMPDIR`) cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TmpDirError {
    #[error("{what} `{}` is a file, not a folder", .path.display())]
    NotAFolder { what: &'static str, path: PathBuf },
    #[error("cannot create {what} `{}`", .path.display())]
    Create {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write a file in {what} `{}`", .path.display())]
    NotWritable {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Checks a folder for builds' scratch space (`what` names where it came from, for messages):
/// made when missing, and written in once.
pub fn check_root(path: &Path, what: &'static str) -> Result<(), TmpDirError> {
    if path.is_file() {
        return Err(TmpDirError::NotAFolder {
            what,
            path: path.to_path_buf(),
        });
    }
    fs::create_dir_all(path).map_err(|source| TmpDirError::Create {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    tempfile::Builder::new()
        .prefix(".zoo-runner-probe-")
        .tempfile_in(path)
        .map(drop)
        .map_err(|source| TmpDirError::NotWritable {
            what,
            path: path.to_path_buf(),
            source,
        })
}

/// One build's scratch folder, removed when dropped.
#[derive(Debug)]
pub(super) struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// Makes `<root>/<label>.build-<pid>-<n>`, after removing the folders of that label a
    /// killed build left in `root`. Called under the name's lock.
    pub(super) fn new(root: &Path, label: &str) -> Result<Scratch, SifError> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let prefix = format!("{label}.build-");
        let entries = fs::read_dir(root).map_err(io_error("list the build folder", root))?;
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let old = entry.path();
                remove_all(&old).map_err(io_error("remove an unfinished build's folder", &old))?;
            }
        }
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = root.join(format!("{prefix}{}-{n}", std::process::id()));
        fs::create_dir(&path).map_err(io_error("create the build folder", &path))?;
        Ok(Scratch { path })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = remove_all(&self.path);
    }
}

/// Removes a folder and what it holds; Apptainer may leave read-only folders in it, which are
/// made writable first.
pub(super) fn remove_all(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            make_writable(path);
            fs::remove_dir_all(path)
        }
        other => other,
    }
}

fn make_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_dir() {
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o700));
        if let Ok(entries) = fs::read_dir(path) {
            for entry in entries.flatten() {
                make_writable(&entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_folder_goes_when_dropped_and_a_killed_ones_before_the_next() {
        let root = tempfile::tempdir().unwrap();
        let left = root.path().join("img.sif.build-1-0");
        fs::create_dir_all(left.join("rootfs/ro")).unwrap();
        fs::write(left.join("rootfs/ro/f"), "x").unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(left.join("rootfs/ro"), fs::Permissions::from_mode(0o555)).unwrap();
        let other = root.path().join("other.sif.build-1-0");
        fs::create_dir(&other).unwrap();
        let scratch = Scratch::new(root.path(), "img.sif").unwrap();
        assert!(!left.exists(), "a killed build's folder is removed");
        assert!(other.exists(), "another name's is not ours to judge");
        fs::write(scratch.path().join("big.tar"), "data").unwrap();
        let path = scratch.path().to_path_buf();
        assert!(path.starts_with(root.path()));
        drop(scratch);
        assert!(!path.exists());
    }

    #[test]
    fn a_root_is_made_checked_and_named_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let made = dir.path().join("a/b");
        check_root(&made, "--tmp-dir").unwrap();
        assert!(made.is_dir());
        let file = dir.path().join("file");
        fs::write(&file, "").unwrap();
        let err = check_root(&file, "--tmp-dir").unwrap_err().to_string();
        assert!(
            err.contains("--tmp-dir") && err.contains("is a file"),
            "{err}"
        );
        let err = check_root(&file.join("under"), "$APPTAINER_TMPDIR")
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot create $APPTAINER_TMPDIR"), "{err}");
    }
}
