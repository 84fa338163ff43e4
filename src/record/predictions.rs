//! What the runner found when it read a case's predictions and compared them with a
//! reference: per output (an HDF5 dataset, a column, an array), the same, or how it differs.
//! The run stage makes it (`crate::run::predictions`); the terminal, the JUnit report and the
//! summary render it with the lines made here, so they say the same.

use std::fmt::Write as _;
use std::path::PathBuf;

/// Indices shown per output that differs (as numpy's `assert_allclose` shows a few).
pub const FIRST_SHOWN: usize = 5;

/// A case's prediction check.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictionCheck {
    /// The predictions file the case wrote (`predictions.h5`).
    pub file: String,
    /// What they were compared with, if anything.
    pub reference: Option<Reference>,
    /// How close is close enough: `decimal 6: |reference − actual| < 1.5e-6`.
    pub tolerance: String,
    pub result: CheckResult,
    /// Where `--save-predictions` kept them.
    pub saved: Option<PathBuf>,
}

/// Its numbers are never NaN (differences are taken between finite values only).
impl Eq for PredictionCheck {}

/// A reference: the zoo's own expected file (named by the spec), or predictions saved by an
/// earlier run (`--compare-predictions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// The spec's `reference`, a file inside the image.
    Expected { path: String },
    /// Saved by `--save-predictions` under `runtime` (another runtime's when this one has none).
    Saved { path: PathBuf, runtime: String },
}

impl Reference {
    pub fn describe(&self) -> String {
        match self {
            Reference::Expected { path } => format!("the expected file `{path}`"),
            Reference::Saved { path, runtime } => {
                format!(
                    "the predictions saved under {runtime} (`{}`)",
                    path.display()
                )
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum CheckResult {
    /// Read, with nothing to compare them with: how many outputs they hold.
    Read { outputs: usize },
    /// Compared: every output, the same ones too.
    Compared { outputs: Vec<OutputFinding> },
    /// A file could not be used (missing, unreadable, or another model's): which, and why.
    Unusable { file: String, why: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutputFinding {
    /// The output's name: an HDF5 dataset's path (`preds/b`), a column, an NPZ array.
    pub name: String,
    pub diff: OutputDiff,
}

#[derive(Debug, Clone, PartialEq)]
pub enum OutputDiff {
    /// Within the tolerance, element by element (NaN where the reference has NaN).
    Same { elements: u64 },
    /// Numbers off.
    Values(ValuesDiff),
    /// Text off (strings, or a text file): a unified diff.
    Text { off: u64, total: u64, diff: String },
    /// Not the reference's shape.
    Shape {
        actual: Vec<usize>,
        reference: Vec<usize>,
    },
    /// Not the reference's type (`float32` for `float64`).
    Dtype { actual: String, reference: String },
    /// In the reference, not in the predictions.
    Missing,
    /// In the predictions, not in the reference.
    Extra,
}

/// How a numeric output differs, as numpy's `assert_allclose` tells it.
#[derive(Debug, Clone, PartialEq)]
pub struct ValuesDiff {
    pub shape: Vec<usize>,
    pub dtype: String,
    /// Elements off, of `total`; NaN on one side only counts as off.
    pub off: u64,
    pub total: u64,
    /// Elements NaN on one side only.
    pub nan_mismatches: u64,
    /// Largest |actual − reference| and |actual − reference| / |reference| among the finite
    /// elements off.
    pub max_abs: f64,
    pub max_rel: f64,
    /// The first elements off, in order.
    pub first: Vec<Mismatch>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub index: Vec<usize>,
    pub actual: String,
    pub reference: String,
}

impl PredictionCheck {
    /// The predictions differ from their reference, or could not be used: the case fails.
    pub fn failed(&self) -> bool {
        match &self.result {
            CheckResult::Read { .. } => false,
            CheckResult::Unusable { .. } => true,
            CheckResult::Compared { outputs } => outputs.iter().any(|o| o.differs()),
        }
    }

    /// The outputs that differ.
    pub fn changed(&self) -> Vec<&OutputFinding> {
        match &self.result {
            CheckResult::Compared { outputs } => outputs.iter().filter(|o| o.differs()).collect(),
            _ => Vec::new(),
        }
    }

    /// One line: what was read, against what, and how it came out. The summary finds the
    /// cases whose predictions changed by its first word (`changed`).
    pub fn headline(&self) -> String {
        let against = self
            .reference
            .as_ref()
            .map(|r| format!(" against {}", r.describe()))
            .unwrap_or_default();
        match &self.result {
            CheckResult::Read { outputs } => format!(
                "read `{}`: {outputs} output(s); no reference to compare them with",
                self.file
            ),
            CheckResult::Unusable { file, why } => format!("unusable: `{file}`: {why}"),
            CheckResult::Compared { outputs } => {
                let changed = outputs.iter().filter(|o| o.differs()).count();
                if changed == 0 {
                    format!(
                        "same: {} output(s) of `{}`{against} ({})",
                        outputs.len(),
                        self.file,
                        self.tolerance
                    )
                } else {
                    let names: Vec<&str> = self.changed().iter().map(|o| o.name.as_str()).collect();
                    format!(
                        "changed: {changed} of {} output(s) of `{}` differ{against} ({}): {}",
                        outputs.len(),
                        self.file,
                        self.tolerance,
                        names.join(", ")
                    )
                }
            }
        }
    }

    /// One line per output that differs, for the report's facts and the summary.
    pub fn changed_lines(&self) -> Vec<String> {
        self.changed().iter().map(|o| o.line()).collect()
    }

    /// The whole diff, for the failure message: the headline, then each output that differs
    /// with its first elements off (or its text diff).
    pub fn diff(&self) -> String {
        let mut text = format!("predictions {}", self.headline());
        for output in self.changed() {
            let _ = write!(text, "\n{}", output.line());
            match &output.diff {
                OutputDiff::Values(v) if !v.first.is_empty() => {
                    let _ = write!(text, "\n  first elements off (index: actual vs reference):");
                    for m in &v.first {
                        let _ = write!(
                            text,
                            "\n    {}: {} vs {}",
                            show_index(&m.index),
                            m.actual,
                            m.reference
                        );
                    }
                }
                OutputDiff::Text { diff, .. } => {
                    for line in diff.lines() {
                        let _ = write!(text, "\n    {line}");
                    }
                }
                _ => {}
            }
        }
        text
    }
}

impl OutputFinding {
    pub fn differs(&self) -> bool {
        !matches!(self.diff, OutputDiff::Same { .. })
    }

    /// `preds/b: 15 of 15 elements off (100.0%), max abs diff 1, max rel diff 0.5`.
    pub fn line(&self) -> String {
        let name = &self.name;
        match &self.diff {
            OutputDiff::Same { elements } => format!("{name}: same ({elements} elements)"),
            OutputDiff::Values(v) => {
                let mut line = format!(
                    "{name}: {} of {} elements off ({}), max abs diff {}, max rel diff {} \
                     ({}, shape {})",
                    v.off,
                    v.total,
                    percent(v.off, v.total),
                    show_number(v.max_abs),
                    show_number(v.max_rel),
                    v.dtype,
                    show_shape(&v.shape)
                );
                if v.nan_mismatches > 0 {
                    let _ = write!(line, "; {} NaN on one side only", v.nan_mismatches);
                }
                line
            }
            OutputDiff::Text { off, total, .. } => format!(
                "{name}: {off} of {total} text lines differ ({})",
                percent(*off, *total)
            ),
            OutputDiff::Shape { actual, reference } => format!(
                "{name}: shape {} where the reference has {}",
                show_shape(actual),
                show_shape(reference)
            ),
            OutputDiff::Dtype { actual, reference } => {
                format!("{name}: type {actual} where the reference has {reference}")
            }
            OutputDiff::Missing => {
                format!("{name}: missing (the reference has it, the predictions do not)")
            }
            OutputDiff::Extra => {
                format!("{name}: extra (the predictions have it, the reference does not)")
            }
        }
    }
}

/// `12.5%`, `0.1%`, and `<0.1%` for a few elements among millions.
fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "0%".into();
    }
    let p = part as f64 * 100.0 / whole as f64;
    if p > 0.0 && p < 0.1 {
        "<0.1%".into()
    } else {
        format!("{p:.1}%")
    }
}

/// Numbers as short as they read: `1`, `0.5`, `1.5e-7`, `inf`.
pub fn show_number(x: f64) -> String {
    if x == 0.0 || (1e-4..1e6).contains(&x.abs()) {
        let short = format!("{:.6}", x);
        let short = short.trim_end_matches('0').trim_end_matches('.');
        short.to_string()
    } else if x.is_finite() {
        format!("{x:.3e}")
    } else {
        format!("{x}")
    }
}

/// `(5, 3)`, `(5,)`, `()`.
pub fn show_shape(shape: &[usize]) -> String {
    match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn show_index(index: &[usize]) -> String {
    format!(
        "[{}]",
        index
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(outputs: Vec<OutputFinding>) -> PredictionCheck {
        PredictionCheck {
            file: "predictions.h5".into(),
            reference: Some(Reference::Expected {
                path: "/models/m/expect.h5".into(),
            }),
            tolerance: "decimal 6: |reference − actual| < 1.5e-6".into(),
            result: CheckResult::Compared { outputs },
            saved: None,
        }
    }

    #[test]
    fn a_diff_names_each_output_off_with_its_first_elements() {
        let c = check(vec![
            OutputFinding {
                name: "preds/a".into(),
                diff: OutputDiff::Same { elements: 15 },
            },
            OutputFinding {
                name: "preds/b".into(),
                diff: OutputDiff::Values(ValuesDiff {
                    shape: vec![5, 3],
                    dtype: "float32".into(),
                    off: 15,
                    total: 15,
                    nan_mismatches: 1,
                    max_abs: 1.0,
                    max_rel: 0.25,
                    first: vec![Mismatch {
                        index: vec![0, 0],
                        actual: "5.1".into(),
                        reference: "6.1".into(),
                    }],
                }),
            },
            OutputFinding {
                name: "preds/c".into(),
                diff: OutputDiff::Missing,
            },
        ]);
        assert!(c.failed());
        insta::assert_snapshot!(c.diff());
        assert!(c.headline().starts_with("changed: 2 of 3"));
    }

    #[test]
    fn numbers_read_short() {
        assert_eq!(show_number(1.0), "1");
        assert_eq!(show_number(0.25), "0.25");
        assert_eq!(show_number(1.5e-7), "1.500e-7");
        assert_eq!(show_number(f64::INFINITY), "inf");
        assert_eq!(show_shape(&[5]), "(5,)");
        assert_eq!(show_shape(&[5, 3]), "(5, 3)");
        assert_eq!(percent(1, 3_000_000), "<0.1%");
        assert_eq!(percent(15, 15), "100.0%");
    }
}
