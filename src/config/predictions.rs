//! The spec's `[predictions]` table: where a case writes its predictions, in which format,
//! what they are compared with, and how close is close enough.
//!
//! ```toml
//! command = "kipoi test {model} --source=kipoi -o {output}"
//! [predictions]
//! file = "predictions.h5"                  # {output} is this file in the case's output folder
//! reference = "/models/{model}/expect.h5"  # optional: the zoo's own expected file, in the image
//! decimal = 6                              # Kipoi's precision_decimal; or rtol / atol
//! [models."Some/model".predictions]        # a model's own reference or tolerance
//! atol = 1e-3
//! ```

use serde::Deserialize;

/// Where the case's output folder is inside the container (Docker: a bind mount; Apptainer:
/// a `--bind`). `{output}` is the predictions file in it.
pub const CONTAINER_DIR: &str = "/zoo-runner/output";

/// The name the reference gets when it is copied out of the image into the output folder.
pub const REFERENCE_STEM: &str = "zoo-runner-reference";

/// The formats the runner reads, known by the file's ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.h5`, `.hdf5`: every dataset, in nested groups (as kipoi's HDF5 writer makes them).
    Hdf5,
    /// `.tsv`, `.csv`: a header line, then one row per line; each column an output.
    Tsv,
    Csv,
    /// `.npy`: one array; `.npz`: a zip of named arrays.
    Npy,
    Npz,
    /// Anything else (`.txt`, `.json`, ...): text, compared line by line.
    Text,
}

impl Format {
    /// The format of a file name, by its ending.
    pub fn of(file: &str) -> Format {
        let ending = file
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())
            .unwrap_or_default();
        match ending.as_str() {
            "h5" | "hdf5" => Format::Hdf5,
            "tsv" => Format::Tsv,
            "csv" => Format::Csv,
            "npy" => Format::Npy,
            "npz" => Format::Npz,
            _ => Format::Text,
        }
    }

    /// The file ending a saved copy gets (with its dot), so its format reads back the same.
    pub fn ending(file: &str) -> String {
        match file.rsplit_once('.') {
            Some((_, e)) if !e.is_empty() && !e.contains('/') => format!(".{e}"),
            _ => String::new(),
        }
    }
}

/// How close a prediction must be to its reference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tolerance {
    /// numpy's `assert_allclose`: |actual − reference| <= atol + rtol·|reference|.
    Close { rtol: f64, atol: f64 },
    /// Kipoi's `precision_decimal` (numpy's `assert_almost_equal`):
    /// |reference − actual| < 1.5·10^−decimal.
    Decimal(u8),
}

/// Its numbers are finite (checked when they are read), so equality is an equivalence.
impl Eq for Tolerance {}

impl Default for Tolerance {
    /// numpy's `assert_allclose` defaults.
    fn default() -> Self {
        Tolerance::Close {
            rtol: 1e-7,
            atol: 0.0,
        }
    }
}

impl Tolerance {
    /// Whether `actual` is close enough to `reference` (both finite).
    pub fn accepts(self, actual: f64, reference: f64) -> bool {
        let diff = (actual - reference).abs();
        match self {
            Tolerance::Close { rtol, atol } => diff <= atol + rtol * reference.abs(),
            Tolerance::Decimal(d) => diff < 1.5 * 10f64.powi(-i32::from(d)),
        }
    }

    /// `rtol 1e-7, atol 0`, `decimal 6 (|reference − actual| < 1.5e-6)`.
    pub fn describe(self) -> String {
        match self {
            Tolerance::Close { rtol, atol } => {
                let short = |x: f64| {
                    if x == 0.0 {
                        "0".to_string()
                    } else {
                        format!("{x:e}")
                    }
                };
                format!("rtol {}, atol {}", short(rtol), short(atol))
            }
            Tolerance::Decimal(d) => format!("decimal {d}: |reference − actual| < 1.5e-{d}"),
        }
    }
}

/// A `[predictions]` table as written (top level, or a model's): every key optional, so a
/// model's table is merged key by key over the top level's.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPredictions {
    #[serde(default, deserialize_with = "de_file")]
    pub file: Option<String>,
    #[serde(default, deserialize_with = "de_reference")]
    pub reference: Option<String>,
    #[serde(default, deserialize_with = "de_tolerance")]
    pub rtol: Option<f64>,
    #[serde(default, deserialize_with = "de_tolerance")]
    pub atol: Option<f64>,
    #[serde(default, deserialize_with = "de_decimal")]
    pub decimal: Option<u8>,
    /// `check = false`: this model's predictions are not read (a model that writes none).
    pub check: Option<bool>,
}

impl RawPredictions {
    /// This table's keys over `base`'s. A tolerance is one key: a model that sets `decimal`
    /// drops the base's `rtol`/`atol`, and the other way round.
    pub fn over(&self, base: &RawPredictions) -> RawPredictions {
        let own_tolerance = self.decimal.is_some() || self.rtol.is_some() || self.atol.is_some();
        let tolerance_of = if own_tolerance { self } else { base };
        RawPredictions {
            file: self.file.clone().or_else(|| base.file.clone()),
            reference: self.reference.clone().or_else(|| base.reference.clone()),
            rtol: tolerance_of.rtol,
            atol: tolerance_of.atol,
            decimal: tolerance_of.decimal,
            check: self.check.or(base.check),
        }
    }

    /// The tolerance the table sets (`decimal`, or `rtol`/`atol` with numpy's defaults for the
    /// one not given); an error when it sets both kinds.
    pub fn tolerance(&self) -> Result<Tolerance, String> {
        match (self.decimal, self.rtol, self.atol) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(
                "`decimal` and `rtol`/`atol` are two ways to say the tolerance: choose one".into(),
            ),
            (Some(d), None, None) => Ok(Tolerance::Decimal(d)),
            (None, None, None) => Ok(Tolerance::default()),
            (None, rtol, atol) => Ok(Tolerance::Close {
                rtol: rtol.unwrap_or(0.0),
                atol: atol.unwrap_or(0.0),
            }),
        }
    }
}

/// What a case's prediction check is: the file, its format, the reference and the tolerance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PredictionPlan {
    /// The file's name in the output folder (`{output}` is `CONTAINER_DIR/file`).
    pub file: String,
    pub format: Format,
    /// The zoo's own expected file inside the image, placeholders filled; a relative path is
    /// taken from the case's working directory.
    pub reference: Option<String>,
    pub tolerance: Tolerance,
}

impl PredictionPlan {
    /// `{output}`: the predictions file inside the container.
    pub fn container_path(&self) -> String {
        format!("{CONTAINER_DIR}/{}", self.file)
    }

    /// The name the reference gets in the output folder when it is copied out of the image.
    pub fn reference_copy(&self) -> Option<String> {
        let reference = self.reference.as_deref()?;
        Some(format!("{REFERENCE_STEM}{}", Format::ending(reference)))
    }
}

/// A plain file name: no folder, nothing a shell or a mount would split on.
fn de_file<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let file = String::deserialize(d)?;
    let plain = !file.is_empty()
        && file != "."
        && file != ".."
        && !file.starts_with(REFERENCE_STEM)
        && file
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !plain {
        return Err(serde::de::Error::custom(format!(
            "`file = \"{file}\"` must be a plain file name ([A-Za-z0-9._-], not starting \
             `{REFERENCE_STEM}`): the predictions file in the case's output folder"
        )));
    }
    Ok(Some(file))
}

fn de_reference<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    if text.trim().is_empty() {
        return Err(serde::de::Error::custom("`reference` is empty"));
    }
    Ok(Some(text))
}

fn de_tolerance<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let value = f64::deserialize(d)?;
    if !value.is_finite() || value < 0.0 {
        return Err(serde::de::Error::custom(format!(
            "a tolerance must be a finite number, 0 or more, not {value}"
        )));
    }
    Ok(Some(value))
}

/// Kipoi's `precision_decimal`: 0 to 15 (an f64 holds no more decimals).
fn de_decimal<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u8>, D::Error> {
    let value = i64::deserialize(d)?;
    match u8::try_from(value) {
        Ok(v) if v <= 15 => Ok(Some(v)),
        _ => Err(serde::de::Error::custom(format!(
            "`decimal` must be 0 to 15 (decimal places), not {value}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_by_ending() {
        assert_eq!(Format::of("p.h5"), Format::Hdf5);
        assert_eq!(Format::of("p.HDF5"), Format::Hdf5);
        assert_eq!(Format::of("p.tsv"), Format::Tsv);
        assert_eq!(Format::of("p.csv"), Format::Csv);
        assert_eq!(Format::of("p.npy"), Format::Npy);
        assert_eq!(Format::of("p.npz"), Format::Npz);
        assert_eq!(Format::of("p.txt"), Format::Text);
        assert_eq!(Format::of("noending"), Format::Text);
        assert_eq!(Format::ending("/m/expect.h5"), ".h5");
        assert_eq!(Format::ending("/m.d/expect"), "");
    }

    #[test]
    fn tolerances_read_as_numpy_and_kipoi_read_them() {
        let kipoi = Tolerance::Decimal(6);
        assert!(kipoi.accepts(1.0 + 1.4e-6, 1.0));
        assert!(!kipoi.accepts(1.0 + 1.6e-6, 1.0));
        let close = Tolerance::Close {
            rtol: 1e-3,
            atol: 0.0,
        };
        assert!(close.accepts(1000.9, 1000.0));
        assert!(!close.accepts(1.01, 1.0));
        assert!(Tolerance::default().accepts(1.0, 1.0));
        assert_eq!(Tolerance::default().describe(), "rtol 1e-7, atol 0");
        assert!(!Tolerance::default().accepts(1.0 + 1e-6, 1.0));
    }

    #[test]
    fn a_model_table_sets_its_tolerance_whole() {
        let base = RawPredictions {
            file: Some("p.h5".into()),
            decimal: Some(6),
            ..RawPredictions::default()
        };
        let own = RawPredictions {
            atol: Some(0.5),
            ..RawPredictions::default()
        };
        let merged = own.over(&base);
        assert_eq!(merged.file.as_deref(), Some("p.h5"));
        assert_eq!(
            merged.tolerance().unwrap(),
            Tolerance::Close {
                rtol: 0.0,
                atol: 0.5
            }
        );
        let both = RawPredictions {
            decimal: Some(3),
            rtol: Some(0.1),
            ..RawPredictions::default()
        };
        assert!(both.tolerance().unwrap_err().contains("choose one"));
    }
}
