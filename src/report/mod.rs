//! The JUnit report: where it goes (checked before any case runs), and how it is written
//! (streamed into a temporary file beside the target, then renamed, so a reader never sees half
//! a report). The XML itself is in `junit`, its escaping in `xml`.

pub mod junit;
pub(crate) mod xml;

use std::io::BufWriter;
use std::path::{Path, PathBuf};

use tempfile::{NamedTempFile, TempDir};
use thiserror::Error;

pub use junit::Flavor;

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

/// The report's place, claimed before the run: its folder exists, a temporary file beside the
/// target could be created, and the spool folder for the cases' output sits next to it.
#[derive(Debug)]
pub struct ReportTarget {
    path: PathBuf,
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
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}.tmp-"))
            .tempfile_in(dir)
            .map_err(|e| unwritable(format!("cannot create a file in `{}`: {e}", dir.display())))?;
        let spool = tempfile::Builder::new()
            .prefix(&format!(".{name}.spool-"))
            .tempdir_in(dir)
            .map_err(|e| {
                unwritable(format!(
                    "cannot create the output spool folder in `{}`: {e}",
                    dir.display()
                ))
            })?;
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
        records: &[Record],
        run: &[(String, String)],
        flavor: Flavor,
    ) -> Result<(), ReportError> {
        let failed = |source| ReportError::Write {
            path: self.path.clone(),
            source,
        };
        let file = self.tmp.reopen().map_err(failed)?;
        let mut out = BufWriter::with_capacity(256 * 1024, file);
        junit::write(&mut out, records, run, flavor).map_err(failed)?;
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
    use crate::record::Status;

    #[test]
    fn written_atomically_and_parseable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/junit.xml");
        let target = ReportTarget::prepare(&path).unwrap();
        let spool = target.spool_dir().to_path_buf();
        assert!(spool.is_dir());
        let records = vec![junit::tests::record("ok", vec![Status::Passed])];
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
