//! Predictions compared with a reference, output by output: names (a missing or extra output
//! is a finding), shapes, types, then every element within the tolerance, NaN where the
//! reference has NaN. What differs is told as numpy's `assert_allclose` tells it: elements off,
//! the largest absolute and relative difference, the first indices with both values; text is
//! diffed line by line (`similar`).

use similar::TextDiff;

use super::read::{Data, Output, Outputs};
use crate::config::predictions::Tolerance;
use crate::record::predictions::{
    show_number, Mismatch, OutputDiff, OutputFinding, ValuesDiff, FIRST_SHOWN,
};

/// Lines of a text diff kept per output.
const DIFF_LINES: usize = 40;

/// Why the reference is no reference for these predictions: it shares fewer than half of the
/// outputs either has, or every output it shares has another shape (another model's file, most
/// likely). A model that gained or lost an output still compares, naming it.
pub fn foreign(actual: &Outputs, reference: &Outputs) -> Option<String> {
    let common: Vec<&String> = actual
        .keys()
        .filter(|k| reference.contains_key(*k))
        .collect();
    let union = actual.len() + reference.len() - common.len();
    let names = |o: &Outputs| o.keys().cloned().collect::<Vec<_>>().join(", ");
    if common.len() * 2 < union {
        return Some(format!(
            "it shares {} of the {union} outputs either has with the predictions (it has {}; \
             the predictions have {}): is it another model's?",
            common.len(),
            names(reference),
            names(actual)
        ));
    }
    let reshaped = common
        .iter()
        .all(|k| actual[*k].shape != reference[*k].shape);
    if reshaped && common.len() == actual.len().max(reference.len()) {
        return Some(format!(
            "every output has another shape than the predictions' ({}): is it another model's?",
            common
                .iter()
                .map(|k| format!(
                    "{k}: {:?} here, {:?} there",
                    reference[*k].shape, actual[*k].shape
                ))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    None
}

/// Every output of both, in name order.
pub fn compare(actual: &Outputs, reference: &Outputs, tolerance: Tolerance) -> Vec<OutputFinding> {
    let mut names: Vec<&String> = actual.keys().chain(reference.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            let diff = match (actual.get(name), reference.get(name)) {
                (Some(a), Some(r)) => output(a, r, tolerance),
                (None, _) => OutputDiff::Missing,
                (_, None) => OutputDiff::Extra,
            };
            OutputFinding {
                name: name.clone(),
                diff,
            }
        })
        .collect()
}

fn output(actual: &Output, reference: &Output, tolerance: Tolerance) -> OutputDiff {
    if actual.shape != reference.shape {
        return OutputDiff::Shape {
            actual: actual.shape.clone(),
            reference: reference.shape.clone(),
        };
    }
    if actual.dtype != reference.dtype {
        return OutputDiff::Dtype {
            actual: actual.dtype.clone(),
            reference: reference.dtype.clone(),
        };
    }
    match (&actual.data, &reference.data) {
        (Data::Numbers(a), Data::Numbers(r)) => numbers(a, r, actual, tolerance),
        (Data::Text(a), Data::Text(r)) => text(a, r),
        // Same type name, other kinds of data: cannot happen for one reader; say it as a type.
        _ => OutputDiff::Dtype {
            actual: actual.dtype.clone(),
            reference: reference.dtype.clone(),
        },
    }
}

fn numbers(a: &[f64], r: &[f64], output: &Output, tolerance: Tolerance) -> OutputDiff {
    let mut diff = ValuesDiff {
        shape: output.shape.clone(),
        dtype: output.dtype.clone(),
        off: 0,
        total: a.len() as u64,
        nan_mismatches: 0,
        max_abs: 0.0,
        max_rel: 0.0,
        first: Vec::new(),
    };
    for (i, (&x, &y)) in a.iter().zip(r).enumerate() {
        let same = match (x.is_nan(), y.is_nan()) {
            (true, true) => true,
            (true, false) | (false, true) => {
                diff.nan_mismatches += 1;
                false
            }
            // Infinities are equal when they are the same infinity.
            _ if x.is_infinite() || y.is_infinite() => x == y,
            _ => tolerance.accepts(x, y),
        };
        if same {
            continue;
        }
        diff.off += 1;
        if !x.is_nan() && !y.is_nan() {
            let abs = (x - y).abs();
            diff.max_abs = diff.max_abs.max(abs);
            let rel = if y == 0.0 {
                f64::INFINITY
            } else {
                abs / y.abs()
            };
            diff.max_rel = diff.max_rel.max(rel);
        }
        if diff.first.len() < FIRST_SHOWN {
            diff.first.push(Mismatch {
                index: index_of(i, &output.shape),
                actual: show_value(x, &output.dtype),
                reference: show_value(y, &output.dtype),
            });
        }
    }
    if diff.off == 0 {
        OutputDiff::Same {
            elements: diff.total,
        }
    } else {
        OutputDiff::Values(diff)
    }
}

/// A value as its type prints it: float32 with float32's digits (`5.1`, not
/// `5.099999904632568`).
fn show_value(x: f64, dtype: &str) -> String {
    if dtype == "float32" {
        format!("{}", x as f32)
    } else if (x.fract() == 0.0 && x.abs() < 1e15) || dtype == "float64" || dtype == "number" {
        format!("{x}")
    } else {
        show_number(x)
    }
}

/// The C-order index of element `flat` of an array of `shape`.
fn index_of(flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    let mut rest = flat;
    for (d, &n) in shape.iter().enumerate().rev() {
        if n > 0 {
            index[d] = rest % n;
            rest /= n;
        }
    }
    index
}

fn text(a: &[String], r: &[String]) -> OutputDiff {
    let off = a.iter().zip(r).filter(|(x, y)| x != y).count() as u64;
    if off == 0 {
        return OutputDiff::Same {
            elements: a.len() as u64,
        };
    }
    let old = r.join("\n") + "\n";
    let new = a.join("\n") + "\n";
    let unified = TextDiff::from_lines(&old, &new)
        .unified_diff()
        .context_radius(1)
        .header("reference", "predictions")
        .to_string();
    let mut lines: Vec<&str> = unified.lines().collect();
    let cut = lines.len().saturating_sub(DIFF_LINES);
    lines.truncate(DIFF_LINES);
    let mut diff = lines.join("\n");
    if cut > 0 {
        diff.push_str(&format!("\n... {cut} more diff lines"));
    }
    OutputDiff::Text {
        off,
        total: a.len() as u64,
        diff,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn floats(shape: &[usize], values: &[f64]) -> Output {
        Output {
            shape: shape.to_vec(),
            dtype: "float32".into(),
            data: Data::Numbers(values.to_vec()),
        }
    }

    fn outputs(list: &[(&str, Output)]) -> Outputs {
        list.iter()
            .map(|(n, o)| (n.to_string(), o.clone()))
            .collect::<BTreeMap<_, _>>()
    }

    #[test]
    fn every_output_is_compared_and_named() {
        let right = floats(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let actual = outputs(&[
            ("preds/a", right.clone()),
            ("preds/b", floats(&[2, 2], &[1.0, 2.0, 3.0, f64::NAN])),
            ("preds/extra", right.clone()),
        ]);
        let reference = outputs(&[
            ("preds/a", right.clone()),
            ("preds/b", floats(&[2, 2], &[2.0, 2.0, 3.0, 4.0])),
            ("preds/gone", right.clone()),
        ]);
        let found = compare(&actual, &reference, Tolerance::Decimal(6));
        let lines: Vec<String> = found.iter().map(|f| f.line()).collect();
        insta::assert_snapshot!(lines.join("\n"));
        let OutputDiff::Values(b) = &found[1].diff else {
            panic!("{found:?}")
        };
        assert_eq!((b.off, b.nan_mismatches), (2, 1));
        assert_eq!(b.first[0].index, [0, 0]);
        assert_eq!(b.first[1].index, [1, 1]);
        assert_eq!((b.max_abs, b.max_rel), (1.0, 0.5));
    }

    #[test]
    fn within_the_tolerance_is_the_same_and_nan_matches_nan() {
        let actual = outputs(&[("p", floats(&[3], &[1.0 + 1e-7, f64::NAN, f64::INFINITY]))]);
        let reference = outputs(&[("p", floats(&[3], &[1.0, f64::NAN, f64::INFINITY]))]);
        let found = compare(&actual, &reference, Tolerance::Decimal(6));
        assert_eq!(found[0].diff, OutputDiff::Same { elements: 3 });
        let strict = compare(&actual, &reference, Tolerance::default());
        assert!(strict[0].differs(), "{strict:?}");
    }

    #[test]
    fn shapes_types_and_text_differ_readably() {
        let actual = outputs(&[
            ("shape", floats(&[3], &[1.0, 2.0, 3.0])),
            (
                "type",
                Output {
                    dtype: "float64".into(),
                    ..floats(&[1], &[1.0])
                },
            ),
            (
                "label",
                Output {
                    shape: vec![3],
                    dtype: "string".into(),
                    data: Data::Text(vec!["a".into(), "B".into(), "c".into()]),
                },
            ),
        ]);
        let reference = outputs(&[
            ("shape", floats(&[2], &[1.0, 2.0])),
            ("type", floats(&[1], &[1.0])),
            (
                "label",
                Output {
                    shape: vec![3],
                    dtype: "string".into(),
                    data: Data::Text(vec!["a".into(), "b".into(), "c".into()]),
                },
            ),
        ]);
        let found = compare(&actual, &reference, Tolerance::default());
        let text: Vec<String> = found
            .iter()
            .map(|f| match &f.diff {
                OutputDiff::Text { diff, .. } => format!("{}\n{diff}", f.line()),
                _ => f.line(),
            })
            .collect();
        insta::assert_snapshot!(text.join("\n"));
    }

    #[test]
    fn another_models_file_is_told_apart() {
        let a = outputs(&[("preds", floats(&[5, 3], &[0.0; 15]))]);
        let b = outputs(&[("scores", floats(&[5, 3], &[0.0; 15]))]);
        assert!(foreign(&a, &b).unwrap().contains("another model's"));
        // One output more is a change to name, not another model.
        let more = outputs(&[
            ("preds", floats(&[5, 3], &[0.0; 15])),
            ("extra", floats(&[5], &[0.0; 5])),
        ]);
        assert_eq!(foreign(&more, &a), None);
        let c = outputs(&[("preds", floats(&[7, 2], &[0.0; 14]))]);
        assert!(foreign(&a, &c).unwrap().contains("another shape"));
        assert_eq!(foreign(&a, &a), None);
    }
}
