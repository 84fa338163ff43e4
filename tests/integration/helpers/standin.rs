//! What the tests with a STAND-IN Apptainer share: a catalog whose SIF is a small local file the
//! stand-in never reads, and the processes the stand-ins leave behind (their pid written to a
//! file), which a test checks are gone and kills whatever happened.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};

use super::{write_catalog, FIXTURE_IMAGE};

/// A catalog in `dir/catalog` of `models` on the fixture image, all sharing one SIF: a small
/// file `dir/tiny.sif` served from a `file:` URL with its real md5.
pub fn catalog_with_fake_sif(dir: &Path, models: &[&str]) -> PathBuf {
    let image = dir.join("tiny.sif");
    std::fs::write(&image, b"not a real image: no stand-in reads it").unwrap();
    let md5: String = Md5::digest(std::fs::read(&image).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let cat = dir.join("catalog");
    let entry = format!(r#"{{"url": "file:../tiny.sif", "name": "tiny", "md5": "{md5}"}}"#);
    let docker: Vec<(&str, &str)> = models.iter().map(|m| (*m, FIXTURE_IMAGE)).collect();
    let sifs: Vec<String> = models
        .iter()
        .map(|m| format!(r#""{m}": {entry}"#))
        .collect();
    write_catalog(&cat, &docker, Some(&format!("{{{}}}", sifs.join(", "))));
    cat
}

/// The pid a stand-in wrote to `file`, once it is there.
pub fn pid_in(file: &Path) -> Option<i32> {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|t| t.trim().parse().ok())
}

/// Kills the process whose pid is in the file when the test ends, whatever happened.
pub struct KillOnDrop<'a>(pub &'a Path);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(pid) = pid_in(self.0) {
            // SAFETY: kill(2) on the pid a stand-in this test started wrote.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// Whether `pid` runs now (gone, or a zombie nobody reaped yet, does not).
pub fn runs(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(") ")
        .is_some_and(|(_, rest)| !rest.starts_with('Z'))
}

/// Whether `pid` still runs once a SIGKILL sent to it has had up to 10 s to land: a bound for a
/// signal on a loaded machine, not a speed check.
pub fn still_running(pid: i32) -> bool {
    let asked = Instant::now();
    while runs(pid) {
        if asked.elapsed() > Duration::from_secs(10) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
