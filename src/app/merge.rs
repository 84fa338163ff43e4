//! `zoo-runner merge --junit OUT [--summary PATH] IN...`: one JUnit report from the shards'
//! reports (files, or folders of them).
//!
//! Suites of the same name (an image split over shards) become one; each suite keeps every
//! distinct property of its parts (so each shard's `run-id` is still there). Counts and times are
//! recomputed from the cases, which are copied byte for byte, so a strict report stays valid
//! against junit-10.xsd. A case (classname and name) reported twice is an error that names it.
//! The report is written into a temporary file in a work folder beside OUT and renamed, as a
//! run's is.

use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::error_chain::chain;
use crate::report::junit::merge::{self, MergeError};
use crate::report::junit::read;
use crate::report::junit::Flavor;
use crate::report::summary;
use crate::report::workdir;

/// What `merge` takes from the command line.
#[derive(Debug, Clone)]
pub struct MergeConfig {
    /// Where the merged report goes.
    pub junit: PathBuf,
    pub summary: Option<PathBuf>,
    /// The merged report's dialect; by default the inputs', which must agree.
    pub junit_flavor: Option<Flavor>,
    /// Report files, or folders searched for `*.xml`.
    pub inputs: Vec<PathBuf>,
}

pub fn run(args: &MergeConfig) -> anyhow::Result<ExitCode> {
    summary::check_target(args.summary.as_deref())?;
    let out_dir = parent_of(&args.junit);
    let out_name = args
        .junit
        .file_name()
        .ok_or_else(|| MergeError::Unwritable {
            path: args.junit.clone(),
            why: "it has no file name".into(),
        })?;
    if args.junit.is_dir() {
        return Err(MergeError::Unwritable {
            path: args.junit.clone(),
            why: "it is a folder; give a file path".into(),
        }
        .into());
    }
    // The output of an earlier merge found in an input folder is not an input; OUT named as an
    // input (a running total merged into itself) is: it is read before the rename replaces it.
    let out_abs = std::path::absolute(&args.junit).unwrap_or_else(|_| args.junit.clone());
    let mut files = Vec::new();
    for input in &args.inputs {
        let folder = input.is_dir();
        for file in read::report_files(input)? {
            let abs = std::path::absolute(&file).unwrap_or_else(|_| file.clone());
            if folder && abs == out_abs {
                crate::events::note(format!(
                    "merge: `{}` is the output; not read as an input",
                    file.display()
                ));
                continue;
            }
            files.push(file);
        }
    }
    let reports = files
        .iter()
        .map(|f| read::scan(f))
        .collect::<Result<Vec<_>, _>>()?;
    // Checked before anything is written: a case reported twice, flavours that do not mix.
    let plan = merge::plan(&reports, args.junit_flavor)?;

    std::fs::create_dir_all(&out_dir).map_err(|e| MergeError::Unwritable {
        path: args.junit.clone(),
        why: format!("cannot create its folder `{}`: {e}", out_dir.display()),
    })?;
    workdir::sweep(&out_dir).say();
    let cannot_create = |e| MergeError::Unwritable {
        path: args.junit.clone(),
        why: format!("cannot create a file in `{}`: {e}", out_dir.display()),
    };
    let work = workdir::create(&out_dir, &out_name.to_string_lossy(), workdir::MERGE)
        .map_err(cannot_create)?;
    let tmp = workdir::report_file(work.path()).map_err(cannot_create)?;
    let failed = |source| MergeError::Write {
        path: args.junit.clone(),
        source,
    };
    let mut out = BufWriter::with_capacity(256 * 1024, tmp.reopen().map_err(failed)?);
    plan.write(&mut out, &reports).map_err(failed)?;
    let file = out.into_inner().map_err(|e| failed(e.into_error()))?;
    file.sync_all().map_err(failed)?;
    tmp.persist(&args.junit).map_err(|e| failed(e.error))?;

    crate::events::note(format!(
        "merged {} report(s), {} case(s) in {} suite(s), into {}",
        reports.len(),
        plan.cases(),
        plan.suites(),
        args.junit.display()
    ));
    // The report is written: a summary that cannot be written is said, and changes nothing.
    let text = summary::render(&summary::from_reports(&reports), &summary::Notes::default());
    match summary::write(args.summary.as_deref(), &text) {
        Ok(Some(path)) => crate::events::note(format!("summary written to {}", path.display())),
        Ok(None) => {}
        Err(e) => crate::events::line(format!("error: {}", chain(&e))),
    }
    Ok(ExitCode::SUCCESS)
}

fn parent_of(path: &Path) -> PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}
