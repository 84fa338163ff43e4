//! A read-only view of a folder, as an HPC site's shared SIF store is: a bind mount remounted
//! read-only (the tests run as root, for whom permission bits do not make a folder read-only).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Unmounted when dropped.
pub struct ReadOnlyMount {
    pub path: PathBuf,
}

impl ReadOnlyMount {
    /// `source` seen read-only at `at` (created when missing).
    pub fn of(source: &Path, at: &Path) -> ReadOnlyMount {
        std::fs::create_dir_all(at).unwrap();
        mount(&["--bind", source.to_str().unwrap(), at.to_str().unwrap()]);
        let view = ReadOnlyMount {
            path: at.to_path_buf(),
        };
        mount(&["-o", "remount,bind,ro", at.to_str().unwrap()]);
        view
    }
}

fn mount(args: &[&str]) {
    let out = Command::new("mount").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "mount {args:?} (the tests run as root): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}
