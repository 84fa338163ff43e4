//! The JUnit report: where it goes (checked before any case runs), and how it is written
//! (streamed into a temporary file in a work folder beside the target, then renamed, so a reader
//! never sees half a report). The XML itself is in `write`, its escaping in `xml`, reading
//! reports back (merge, --durations) in `read`; the work folders (and the sweep of those killed
//! runs left) in `crate::report::workdir`.

pub mod durations;
pub mod merge;
pub mod names;
pub mod read;
pub mod rerun;
pub mod write;
pub(crate) mod xml;

use crate::report::workdir;

use std::io::BufWriter;
use std::path::{Path, PathBuf};

use tempfile::{NamedTempFile, TempDir};
use thiserror::Error;

pub use write::Flavor;

use std::sync::Arc;

use crate::record::Record;

#[derive(Debug, Error)]
pub enum ReportError {
    #[error("cannot write the JUnit report to `{path}`: {why}")]
    Unwritable { path: PathBuf, why: String },
    #[error("failed to write the JUnit report `{path}`")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The report's place, claimed before the run: its folder exists, and a work folder beside the
/// target holds the cases' spooled output and the temporary file the report is written to.
#[derive(Debug)]
pub struct ReportTarget {
    path: PathBuf,
    /// In `spool`; declared first, so it goes before its folder.
    tmp: NamedTempFile,
    spool: TempDir,
}

impl ReportTarget {
    /// Fails now, with a reason, when the report could not be written at the end: a path that is
    /// a folder, a parent that is a file, a read-only place.
    pub fn prepare(path: &Path) -> Result<Self, ReportError> {
        let unwritable = |why: String| ReportError::Unwritable {
            path: path.to_path_buf(),
            why,
        };
        if path.is_dir() {
            return Err(unwritable("it is a folder; give a file path".into()));
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| unwritable("it has no file name".into()))?;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| {
            unwritable(format!("cannot create its folder `{}`: {e}", dir.display()))
        })?;
        workdir::sweep(dir).say();
        let spool = workdir::create(dir, name, workdir::SPOOL).map_err(|e| {
            unwritable(format!(
                "cannot create the output spool folder in `{}`: {e}",
                dir.display()
            ))
        })?;
        let tmp = workdir::report_file(spool.path())
            .map_err(|e| unwritable(format!("cannot create a file in `{}`: {e}", dir.display())))?;
        Ok(Self {
            path: path.to_path_buf(),
            tmp,
            spool,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the cases' output is spooled until the report is written.
    pub fn spool_dir(&self) -> &Path {
        self.spool.path()
    }

    /// Streams the report into the temporary file, syncs it, and renames it into place.
    pub fn write(
        self,
        records: &[Arc<Record>],
        run: &[(String, String)],
        flavor: Flavor,
    ) -> Result<(), ReportError> {
        let failed = |source| ReportError::Write {
            path: self.path.clone(),
            source,
        };
        let file = self.tmp.reopen().map_err(failed)?;
        let mut out = BufWriter::with_capacity(256 * 1024, file);
        write::write(&mut out, records, run, flavor).map_err(failed)?;
        let file = out.into_inner().map_err(|e| failed(e.into_error()))?;
        file.sync_all().map_err(failed)?;
        let path = self.path.clone();
        self.tmp
            .persist(&path)
            .map_err(|e| failed(e.error))
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Outcome;

    #[test]
    fn written_atomically_and_parseable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/junit.xml");
        let target = ReportTarget::prepare(&path).unwrap();
        let spool = target.spool_dir().to_path_buf();
        assert!(spool.is_dir());
        let records = vec![write::tests::record("ok", vec![Outcome::Passed])];
        target.write(&records, &[], Flavor::Strict).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        roxmltree::Document::parse(&text).unwrap();
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "junit.xml")
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        assert!(!spool.exists(), "the spool folder goes with the target");
    }

    /// The umask of this process, as the kernel reports it.
    fn umask() -> u32 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
        u32::from_str_radix(line["Umask:".len()..].trim(), 8).unwrap()
    }

    /// The report is for others to read (a Jenkins agent, another user): it gets the mode any
    /// new file gets (0644 under umask 022), not a temporary file's 0600, even where it
    /// replaces a file.
    #[test]
    fn the_report_gets_the_umask_s_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junit.xml");
        std::fs::write(&path, "earlier").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let records = vec![write::tests::record("ok", vec![Outcome::Passed])];
        ReportTarget::prepare(&path)
            .unwrap()
            .write(&records, &[], Flavor::Strict)
            .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o666 & !umask(), "{mode:o}");
    }

    #[test]
    fn unwritable_places_are_refused_up_front() {
        let dir = tempfile::tempdir().unwrap();
        let err = ReportTarget::prepare(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is a folder"), "{err}");
        let file = dir.path().join("plain");
        std::fs::write(&file, "x").unwrap();
        let err = ReportTarget::prepare(&file.join("junit.xml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot create its folder"), "{err}");
    }
}
