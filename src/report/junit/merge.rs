//! Shards' JUnit reports merged into one. Suites of the same name (an image split over shards)
//! become one; each suite keeps every distinct property of its parts (so each shard's `run-id`
//! is still there). Counts and times are recomputed from the cases, which are copied byte for
//! byte, so a strict report stays valid against junit-10.xsd. A case (classname and name)
//! reported twice is an error that names it, found before anything is written.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use super::read::ScannedReport;
use super::write::write_counts;
use super::{xml, Flavor};
use crate::record::Counts;

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

/// A merge, checked and ready to write.
pub struct Plan<'a> {
    suites: BTreeMap<&'a str, Suite>,
    flavor: Flavor,
}

/// Checks the reports merge (no case twice, flavours that mix) and groups their suites.
pub fn plan(reports: &[ScannedReport], asked: Option<Flavor>) -> Result<Plan<'_>, MergeError> {
    let flavor = flavor(reports, asked)?;
    Ok(Plan {
        suites: group(reports)?,
        flavor,
    })
}

impl Plan<'_> {
    /// Writes the merged report, copying each case from its file.
    pub fn write(&self, out: &mut impl Write, reports: &[ScannedReport]) -> std::io::Result<()> {
        write(out, reports, &self.suites, self.flavor == Flavor::Extended)
    }

    pub fn cases(&self) -> usize {
        self.suites.values().map(|s| s.counts.cases()).sum()
    }

    pub fn suites(&self) -> usize {
        self.suites.len()
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::junit::read::scan;

    const HEAD: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";

    /// A suite's name and its cases: `(name, what is inside the testcase, time)`.
    type ShardSuite<'a> = (&'a str, &'a [(&'a str, &'a str, &'a str)]);

    /// A shard's report: one suite per (name, cases), each case `(name, inner, time)`.
    fn shard(dir: &std::path::Path, file: &str, suites: &[ShardSuite<'_>]) -> PathBuf {
        let mut text = format!("{HEAD}<testsuites name=\"zoo-runner\" tests=\"0\" failures=\"0\" errors=\"0\" time=\"0\">\n");
        for (suite, cases) in suites {
            text.push_str(&format!(
                "  <testsuite name=\"{suite}\" tests=\"0\" failures=\"0\" errors=\"0\" skipped=\"0\" time=\"0\">\n    <properties>\n      <property name=\"run-id\" value=\"{file}\"/>\n    </properties>\n"
            ));
            for (name, inner, time) in *cases {
                text.push_str(&format!(
                    "    <testcase name=\"{name}\" classname=\"{suite}\" time=\"{time}\">{inner}</testcase>\n"
                ));
            }
            text.push_str("  </testsuite>\n");
        }
        text.push_str("</testsuites>\n");
        let path = dir.join(file);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn merged(reports: &[ScannedReport]) -> String {
        let plan = plan(reports, None).unwrap();
        let mut out = Vec::new();
        plan.write(&mut out, reports).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn one_suite_split_over_shards_becomes_one_with_its_counts_recomputed() {
        let dir = tempfile::tempdir().unwrap();
        let failure = "<failure type=\"failure\" message=\"exit code 1\">exit code 1</failure>";
        let a = shard(
            dir.path(),
            "a.xml",
            &[("docker:img:1", &[("m1", "", "1.500")])],
        );
        let b = shard(
            dir.path(),
            "b.xml",
            &[
                ("docker:img:1", &[("m2", failure, "2.000")]),
                (
                    "docker:img:2",
                    &[("m3", "<skipped type=\"skip\" message=\"gpu\"/>", "0")],
                ),
            ],
        );
        let reports = vec![scan(&a).unwrap(), scan(&b).unwrap()];
        let xml = merged(&reports);
        roxmltree::Document::parse(&xml).expect("well-formed");
        insta::assert_snapshot!(xml);
        let plan = plan(&reports, None).unwrap();
        assert_eq!((plan.cases(), plan.suites()), (3, 2));
    }

    #[test]
    fn a_case_in_two_shards_is_refused_naming_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = shard(dir.path(), "a.xml", &[("docker:img:1", &[("m1", "", "1")])]);
        let b = shard(dir.path(), "b.xml", &[("docker:img:1", &[("m1", "", "1")])]);
        let reports = vec![scan(&a).unwrap(), scan(&b).unwrap()];
        let err = plan(&reports, None).err().expect("refused").to_string();
        assert!(
            err.contains("docker::m1") && err.contains("a.xml") && err.contains("b.xml"),
            "{err}"
        );
    }

    #[test]
    fn strict_and_extended_do_not_mix_unless_asked() {
        let dir = tempfile::tempdir().unwrap();
        let strict = shard(dir.path(), "s.xml", &[("docker:img:1", &[("m1", "", "1")])]);
        let props = "<properties><property name=\"command\" value=\"x\"/></properties>";
        let extended = shard(
            dir.path(),
            "e.xml",
            &[("docker:img:1", &[("m2", props, "1")])],
        );
        let reports = vec![scan(&strict).unwrap(), scan(&extended).unwrap()];
        assert!(matches!(
            plan(&reports, None),
            Err(MergeError::MixedFlavors { .. })
        ));
        assert!(matches!(
            plan(&reports, Some(Flavor::Strict)),
            Err(MergeError::NotStrict { .. })
        ));
        assert!(plan(&reports, Some(Flavor::Extended)).is_ok());
    }
}
