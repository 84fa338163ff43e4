//! Work folders beside a report: `.NAME.spool-XXXXXX` (a run's spooled output and its report
//! until the rename) and `.NAME.merge-XXXXXX` (a merge's report until the rename). Each holds an
//! owner file that names the process that made it; a runner killed outright (SIGKILL) leaves its
//! folder behind, and a later runner writing beside it removes it.
//!
//! Leftovers are judged as containers are (see `runtime::identity`): only a folder whose owner
//! ran on this machine since its last boot and in this PID namespace, and whose process is gone
//! (no such pid, or a pid reused by a process that started later), is removed. A folder with no
//! owner file, or one that cannot be read, is left alone: nothing proves it is dead.

use std::fs::Permissions;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tempfile::{NamedTempFile, TempDir};

use crate::identity::process_start_time;
use crate::identity::Identity;

/// The owner file inside a work folder.
const OWNER_FILE: &str = "zoo-runner-owner";
/// Its first line, so that a file of another program is never taken for one.
const OWNER_MAGIC: &str = "zoo-runner work folder";
/// What a work folder's name holds after `.NAME`.
pub const SPOOL: &str = "spool";
pub const MERGE: &str = "merge";

/// The process that made a work folder.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owner {
    pid: u32,
    /// The process's start time (`/proc/PID/stat` field 22), so a reused pid does not count.
    start: String,
    identity: Identity,
}

impl Owner {
    fn this_process() -> Self {
        let pid = std::process::id();
        Self {
            pid,
            start: process_start_time(pid).unwrap_or_default(),
            identity: Identity::of_this_process(),
        }
    }

    fn to_text(&self) -> String {
        format!(
            "{OWNER_MAGIC}\npid={}\npid-start={}\nboot-id={}\npid-ns={}\n",
            self.pid, self.start, self.identity.boot_id, self.identity.pid_ns
        )
    }

    /// `None` for anything but a whole owner file.
    fn parse(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        if lines.next()? != OWNER_MAGIC {
            return None;
        }
        let mut field = |key: &str| {
            lines
                .next()?
                .strip_prefix(key)?
                .strip_prefix('=')
                .map(str::to_string)
        };
        let pid = field("pid")?.parse().ok()?;
        let start = field("pid-start")?;
        let boot_id = field("boot-id")?;
        let pid_ns = field("pid-ns")?;
        Some(Self {
            pid,
            start,
            identity: Identity { boot_id, pid_ns },
        })
    }

    /// True only when the owner is provably gone: same boot and PID namespace as `me` (else its
    /// pid means nothing here), and no process with its pid, or one that started at another
    /// time.
    fn is_dead(&self, me: &Identity) -> bool {
        let comparable = !me.boot_id.is_empty()
            && !me.pid_ns.is_empty()
            && self.identity.boot_id == me.boot_id
            && self.identity.pid_ns == me.pid_ns;
        if !comparable {
            return false;
        }
        match process_start_time(self.pid) {
            None => true,
            Some(start) => !self.start.is_empty() && start != self.start,
        }
    }
}

/// Makes `.NAME.KIND-XXXXXX` in `dir`, with this process's owner file in it. Removed when the
/// returned folder is dropped.
pub fn create(dir: &Path, name: &str, kind: &str) -> io::Result<TempDir> {
    let folder = tempfile::Builder::new()
        .prefix(&format!(".{name}.{kind}-"))
        .tempdir_in(dir)?;
    let mut owner = std::fs::File::create(folder.path().join(OWNER_FILE))?;
    owner.write_all(Owner::this_process().to_text().as_bytes())?;
    Ok(folder)
}

/// A file for the report in a work folder, renamed over the report when it is whole. Created
/// as any file is (mode 0666 less the umask), not 0600 as temporary files are: the report is
/// for others to read (a Jenkins agent, another user).
pub fn report_file(folder: &Path) -> io::Result<NamedTempFile> {
    tempfile::Builder::new()
        .prefix("report-")
        .suffix(".tmp")
        .permissions(Permissions::from_mode(0o666))
        .tempfile_in(folder)
}

/// What a sweep did.
#[derive(Debug, Default)]
pub struct Sweep {
    pub removed: Vec<PathBuf>,
    /// Failures, each a sentence; the sweep went on after each.
    pub problems: Vec<String>,
}

impl Sweep {
    /// Says on stderr what was removed and what could not be.
    pub fn say(&self) {
        if !self.removed.is_empty() {
            crate::events::note(format!(
                "removed {} work folder(s) that killed runs left beside the report",
                self.removed.len()
            ));
        }
        for problem in &self.problems {
            crate::events::line(format!("zoo-runner: warning: {problem}"));
        }
    }
}

/// Removes the work folders in `dir` whose owner is provably dead (any report's: each is
/// known by its owner file, not by its name alone).
pub fn sweep(dir: &Path) -> Sweep {
    let mut sweep = Sweep::default();
    let me = Identity::of_this_process();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return sweep;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let ours = name.starts_with('.')
            && [SPOOL, MERGE]
                .iter()
                .any(|kind| name.contains(&format!(".{kind}-")));
        // A symlink is never followed, let alone removed through.
        if !ours || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = entry.path();
        let owner = std::fs::read_to_string(path.join(OWNER_FILE))
            .ok()
            .and_then(|text| Owner::parse(&text));
        if !owner.is_some_and(|o| o.is_dead(&me)) {
            continue;
        }
        match std::fs::remove_dir_all(&path) {
            Ok(()) => sweep.removed.push(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => sweep.problems.push(format!(
                "could not remove `{}`, left by a killed run: {e}",
                path.display()
            )),
        }
    }
    sweep
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder as a runner with `owner` would have left it.
    fn left_by(dir: &Path, name: &str, owner: Option<&Owner>) -> PathBuf {
        let path = dir.join(name);
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("spooled-output"), "x").unwrap();
        if let Some(owner) = owner {
            std::fs::write(path.join(OWNER_FILE), owner.to_text()).unwrap();
        }
        path
    }

    /// A process that really ran here and is gone: a child that exited and was reaped.
    fn dead_owner() -> Owner {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let start = process_start_time(pid).unwrap_or_else(|| "1".into());
        child.wait().unwrap();
        Owner {
            pid,
            start,
            identity: Identity::of_this_process(),
        }
    }

    #[test]
    fn the_owner_file_reads_back() {
        let me = Owner::this_process();
        assert_eq!(Owner::parse(&me.to_text()), Some(me.clone()));
        assert_eq!(Owner::parse("pid=1\n"), None, "no magic line");
        let cut = me.to_text();
        assert_eq!(Owner::parse(&cut[..cut.len() / 2]), None, "cut short");
    }

    #[test]
    fn only_leftovers_of_dead_runners_of_this_boot_and_namespace_go() {
        let dir = tempfile::tempdir().unwrap();
        let dead = dead_owner();
        let reused = Owner {
            pid: std::process::id(),
            start: "1".into(),
            ..Owner::this_process()
        };
        let other_ns = Owner {
            identity: Identity {
                pid_ns: "pid:[1]".into(),
                ..dead.identity.clone()
            },
            ..dead.clone()
        };
        let other_boot = Owner {
            identity: Identity {
                boot_id: "another-boot".into(),
                ..dead.identity.clone()
            },
            ..dead.clone()
        };
        let gone = left_by(dir.path(), ".junit.xml.spool-dead01", Some(&dead));
        let gone_merge = left_by(dir.path(), ".m.xml.merge-dead02", Some(&dead));
        let gone_reused = left_by(dir.path(), ".junit.xml.spool-reuse", Some(&reused));
        let kept = [
            left_by(
                dir.path(),
                ".junit.xml.spool-alive",
                Some(&Owner::this_process()),
            ),
            left_by(dir.path(), ".junit.xml.spool-otherns", Some(&other_ns)),
            left_by(dir.path(), ".junit.xml.spool-otherboot", Some(&other_boot)),
            left_by(dir.path(), ".junit.xml.spool-noowner", None),
            left_by(dir.path(), ".git", Some(&dead)),
        ];
        let old_tmp = dir.path().join(".junit.xml.tmp-abc123");
        std::fs::write(&old_tmp, "half a report").unwrap();

        let sweep = sweep(dir.path());
        assert!(sweep.problems.is_empty(), "{:?}", sweep.problems);
        assert_eq!(sweep.removed.len(), 3, "{:?}", sweep.removed);
        for path in [gone, gone_merge, gone_reused] {
            assert!(!path.exists(), "{}", path.display());
        }
        for path in kept.iter().chain([&old_tmp]) {
            assert!(path.exists(), "{} is not provably dead", path.display());
        }
    }

    #[test]
    fn a_work_folder_names_its_owner_and_goes_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let folder = create(dir.path(), "junit.xml", SPOOL).unwrap();
        let path = folder.path().to_path_buf();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(".junit.xml.spool-"), "{name}");
        let owner = std::fs::read_to_string(path.join(OWNER_FILE)).unwrap();
        assert_eq!(Owner::parse(&owner), Some(Owner::this_process()));
        assert!(sweep(dir.path()).removed.is_empty(), "alive: kept");
        drop(folder);
        assert!(!path.exists());
    }
}
