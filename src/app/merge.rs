//! `zoo-runner merge --junit OUT [--summary PATH] IN...`: one JUnit report from the shards'
//! reports (files, or folders of them).
//!
//! Suites of the same name (an image split over shards) become one; each suite keeps every
//! distinct property of its parts (so each shard's `run-id` is still there). Counts and times are
//! recomputed from the cases, which are copied byte for byte, so a strict report stays valid
//! against junit-10.xsd. A case (classname and name) reported twice is an error that names it.
//! The report is written into a temporary file in a work folder beside OUT and renamed, as a
//! run's is.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use thiserror::Error;

use crate::error_chain::chain;
use crate::record::Counts;
use crate::report::junit::read::{self, ScannedReport};
use crate::report::junit::write::write_counts;
use crate::report::junit::{xml, Flavor};
use crate::report::summary;
use crate::report::workdir;

#[derive(Debug, Error)]
pub enum MergeError {
    #[error(
        "case `{case}` (classname `{classname}`) is reported twice: in `{first}` and in \
         `{second}`; the shards' reports must not overlap (was one report given twice?)"
    )]
    Duplicate {
        case: String,
        classname: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error(
        "`{extended}` is an extended JUnit report ({why}) and `{strict}` a strict one: merged, \
         the report would not validate against junit-10.xsd; give --junit-flavor extended for an \
         extended report, or run every shard with the same --junit-flavor"
    )]
    MixedFlavors {
        extended: PathBuf,
        why: &'static str,
        strict: PathBuf,
    },
    #[error(
        "--junit-flavor strict: `{path}` is an extended JUnit report ({why}), and merge copies \
         cases as they are; give --junit-flavor extended, or leave this report out"
    )]
    NotStrict { path: PathBuf, why: &'static str },
    #[error("cannot write the merged report to `{path}`: {why}")]
    Unwritable { path: PathBuf, why: String },
    #[error("failed to write the merged report `{path}`")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One suite of the merged report: its parts' properties and where its cases are.
#[derive(Default)]
struct Suite {
    properties: Vec<(String, String)>,
    /// (report index, suite index, case index)
    cases: Vec<(usize, usize, usize)>,
    counts: Counts,
}

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
    let flavor = flavor(&reports, args.junit_flavor)?;
    let suites = group(&reports)?;

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
    write(&mut out, &reports, &suites, flavor == Flavor::Extended).map_err(failed)?;
    let file = out.into_inner().map_err(|e| failed(e.into_error()))?;
    file.sync_all().map_err(failed)?;
    tmp.persist(&args.junit).map_err(|e| failed(e.error))?;

    let cases: usize = suites.values().map(|s| s.counts.cases()).sum();
    crate::events::note(format!(
        "merged {} report(s), {cases} case(s) in {} suite(s), into {}",
        reports.len(),
        suites.len(),
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

/// The merged report's flavour. Cases are copied as they are, so it is the inputs': strict
/// when they all are, extended when they all are or when `--junit-flavor extended` asks for
/// it. A mix without that, or an extended input under `--junit-flavor strict`, is refused: its
/// cases would make a "strict" report fail junit-10.xsd.
fn flavor(reports: &[ScannedReport], asked: Option<Flavor>) -> Result<Flavor, MergeError> {
    let extended = reports.iter().find_map(|r| r.extended.map(|why| (r, why)));
    let strict = reports.iter().find(|r| r.extended.is_none());
    match (asked, extended, strict) {
        (Some(Flavor::Extended), _, _) => Ok(Flavor::Extended),
        (_, None, _) => Ok(Flavor::Strict),
        (Some(Flavor::Strict), Some((r, why)), _) => Err(MergeError::NotStrict {
            path: r.path.clone(),
            why,
        }),
        (None, Some(_), None) => Ok(Flavor::Extended),
        (None, Some((r, why)), Some(s)) => Err(MergeError::MixedFlavors {
            extended: r.path.clone(),
            why,
            strict: s.path.clone(),
        }),
    }
}

fn parent_of(path: &Path) -> PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// The merged suites by name; a case found twice is an error.
fn group(reports: &[ScannedReport]) -> Result<BTreeMap<&str, Suite>, MergeError> {
    let mut suites: BTreeMap<&str, Suite> = BTreeMap::new();
    let mut seen: HashMap<(&str, &str), usize> = HashMap::new();
    for (r, report) in reports.iter().enumerate() {
        for (s, suite) in report.suites.iter().enumerate() {
            let merged = suites.entry(suite.name.as_str()).or_default();
            for p in &suite.properties {
                if !merged.properties.contains(p) {
                    merged.properties.push(p.clone());
                }
            }
            for (c, case) in suite.cases.iter().enumerate() {
                if let Some(&first) = seen.get(&(case.classname.as_str(), case.name.as_str())) {
                    return Err(MergeError::Duplicate {
                        case: case.case_name(),
                        classname: case.classname.clone(),
                        first: reports[first].path.clone(),
                        second: report.path.clone(),
                    });
                }
                seen.insert((case.classname.as_str(), case.name.as_str()), r);
                let time = Duration::from_millis(case.time_ms.unwrap_or(0));
                merged.counts.add(&case.outcome, case.flaky, time);
                merged.cases.push((r, s, c));
            }
        }
    }
    Ok(suites)
}

fn write(
    out: &mut impl Write,
    reports: &[ScannedReport],
    suites: &BTreeMap<&str, Suite>,
    extended: bool,
) -> std::io::Result<()> {
    let mut total = Counts::default();
    for s in suites.values() {
        total.sum(&s.counts);
    }
    out.write_all(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"zoo-runner\"")?;
    // junit-10.xsd has no `skipped` on the root; the extended flavour writes one.
    write_counts(out, &total, extended)?;
    out.write_all(b">\n")?;
    let mut files: Vec<Option<File>> = (0..reports.len()).map(|_| None).collect();
    for (name, suite) in suites {
        out.write_all(b"  <testsuite name=\"")?;
        xml::attr(out, name)?;
        out.write_all(b"\"")?;
        write_counts(out, &suite.counts, true)?;
        out.write_all(b">\n")?;
        if !suite.properties.is_empty() {
            out.write_all(b"    <properties>\n")?;
            for (k, v) in &suite.properties {
                out.write_all(b"      <property name=\"")?;
                xml::attr(out, k)?;
                out.write_all(b"\" value=\"")?;
                xml::attr(out, v)?;
                out.write_all(b"\"/>\n")?;
            }
            out.write_all(b"    </properties>\n")?;
        }
        for &(r, s, c) in &suite.cases {
            let range = &reports[r].suites[s].cases[c].range;
            let file = match &mut files[r] {
                Some(f) => f,
                slot => slot.insert(File::open(&reports[r].path)?),
            };
            file.seek(SeekFrom::Start(range.start))?;
            out.write_all(b"    ")?;
            let copied = std::io::copy(&mut Read::by_ref(file).take(range.end - range.start), out)?;
            if copied != range.end - range.start {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "`{}` changed while it was merged",
                        reports[r].path.display()
                    ),
                ));
            }
            out.write_all(b"\n")?;
        }
        out.write_all(b"  </testsuite>\n")?;
    }
    out.write_all(b"</testsuites>\n")
}
