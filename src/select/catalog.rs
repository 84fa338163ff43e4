//! The zoo's JSON catalogs, loaded into typed maps.
//!
//! A catalog folder holds:
//! - `model-to-docker.json` (or its old name `model-group-to-docker.json`): model group, or a
//!   single model, -> Docker image;
//! - `docker-to-model.json`: image -> every model it serves;
//! - `model-to-singularity.json` (optional): model group or model -> `{url, name, md5}` of a SIF.
//!
//! Lookups go exact key first (`MMSplice/mtsplice`), then the group (the part before the first
//! `/`). Loading knows nothing of running.
//!
//! Errors say what is wrong where: a folder that does not exist, a file it lacks, a syntax error
//! at its line and column, or a value of the wrong type at the value's line and column with its
//! key path (`img[1]`) and what the file should hold.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

/// File names of a catalog folder, current name first.
const MODEL_TO_DOCKER: [&str; 2] = ["model-to-docker.json", "model-group-to-docker.json"];
const DOCKER_TO_MODEL: &str = "docker-to-model.json";
const MODEL_TO_SINGULARITY: [&str; 2] = [
    "model-to-singularity.json",
    "model-group-to-singularity.json",
];

#[derive(Debug, Error)]
pub enum CatalogError {
    #[error("failed to read catalog file `{path}`: {reason}")]
    Read {
        path: PathBuf,
        /// Shown in the message, so not chained as a source as well.
        reason: std::io::Error,
    },
    #[error("catalog file `{path}` does not parse at line {line}, column {column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error(
        "catalog file `{path}` has a wrong value at line {line}, column {column} (key `{key}`): \
         {message}; {shape}"
    )]
    Type {
        path: PathBuf,
        line: usize,
        column: usize,
        /// Where the value sits, like `img[1]`; `.` for the whole file.
        key: String,
        message: String,
        /// What the file should hold.
        shape: &'static str,
    },
    #[error("catalog folder `{dir}` does not exist")]
    NoFolder { dir: PathBuf },
    #[error("catalog folder `{dir}` is not a folder")]
    NotAFolder { dir: PathBuf },
    #[error("catalog folder `{dir}` has no {wanted}")]
    Missing { dir: PathBuf, wanted: String },
}

/// What each catalog file holds, for type errors.
const MODEL_TO_DOCKER_SHAPE: &str =
    "the file maps each model group or model to an image name, like {\"HAL\": \"repo/image:tag\"}";
const DOCKER_TO_MODEL_SHAPE: &str =
    "the file maps each image name to a list of model names, like {\"repo/image:tag\": [\"HAL\"]}";
const MODEL_TO_SINGULARITY_SHAPE: &str = "the file maps each model group or model to \
     {\"url\": ..., \"name\": ..., \"md5\": ...}";

/// Where a SIF for a model group lives, as the catalog gives it. A relative `file:` URL
/// (`file:sifs/x.sif`) is resolved against the catalog folder when the catalog is loaded.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SifEntry {
    pub url: String,
    pub name: String,
    pub md5: String,
}

#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Model group or model -> image.
    model_to_image: BTreeMap<String, String>,
    /// Image -> models it serves, in catalog order.
    image_to_models: BTreeMap<String, Vec<String>>,
    /// Model group or model -> SIF.
    sif: BTreeMap<String, SifEntry>,
}

pub use crate::config::spec::group_of;

impl Catalog {
    pub fn load(dir: &Path) -> Result<Self, CatalogError> {
        if !dir.exists() {
            return Err(CatalogError::NoFolder {
                dir: dir.to_path_buf(),
            });
        }
        if !dir.is_dir() {
            return Err(CatalogError::NotAFolder {
                dir: dir.to_path_buf(),
            });
        }
        let m2d_path =
            first_existing(dir, &MODEL_TO_DOCKER).ok_or_else(|| CatalogError::Missing {
                dir: dir.to_path_buf(),
                wanted: MODEL_TO_DOCKER.join(" or "),
            })?;
        let model_to_image: BTreeMap<String, String> = read_json(&m2d_path, MODEL_TO_DOCKER_SHAPE)?;
        let d2m_path = dir.join(DOCKER_TO_MODEL);
        if !d2m_path.is_file() {
            return Err(CatalogError::Missing {
                dir: dir.to_path_buf(),
                wanted: DOCKER_TO_MODEL.to_string(),
            });
        }
        let image_to_models: BTreeMap<String, Vec<String>> =
            read_json(&d2m_path, DOCKER_TO_MODEL_SHAPE)?;
        let mut sif: BTreeMap<String, SifEntry> = match first_existing(dir, &MODEL_TO_SINGULARITY) {
            Some(path) => read_json(&path, MODEL_TO_SINGULARITY_SHAPE)?,
            None => BTreeMap::new(),
        };
        for entry in sif.values_mut() {
            entry.url = resolve_sif_url(&entry.url, dir);
        }
        Ok(Self {
            model_to_image,
            image_to_models,
            sif,
        })
    }

    /// The key a model resolves through: itself if listed, else its group if listed.
    fn key_for<'a, V>(map: &'a BTreeMap<String, V>, model: &str) -> Option<(&'a str, &'a V)> {
        map.get_key_value(model)
            .or_else(|| map.get_key_value(group_of(model)))
            .map(|(k, v)| (k.as_str(), v))
    }

    /// The Docker image a model runs in.
    pub fn image_for(&self, model: &str) -> Option<&str> {
        Self::key_for(&self.model_to_image, model).map(|(_, v)| v.as_str())
    }

    /// The SIF a model runs in, if the catalog has one.
    pub fn sif_for(&self, model: &str) -> Option<&SifEntry> {
        Self::key_for(&self.sif, model).map(|(_, v)| v)
    }

    /// Every model an image serves (docker-to-model.json), in catalog order.
    pub fn models_of_image(&self, image: &str) -> Option<&[String]> {
        self.image_to_models.get(image).map(Vec::as_slice)
    }

    /// Every image named in either file.
    pub fn images(&self) -> Vec<&str> {
        let mut all: Vec<&str> = self
            .image_to_models
            .keys()
            .map(String::as_str)
            .chain(self.model_to_image.values().map(String::as_str))
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// The images docker-to-model.json lists models for.
    pub fn served_images(&self) -> impl Iterator<Item = &str> {
        self.image_to_models.keys().map(String::as_str)
    }

    /// Every model named in docker-to-model.json.
    pub fn models(&self) -> impl Iterator<Item = &str> {
        self.image_to_models
            .values()
            .flat_map(|models| models.iter().map(String::as_str))
    }

    /// Every group named in model-to-docker.json (keys and the groups of single-model keys).
    pub fn groups(&self) -> Vec<&str> {
        let set: std::collections::BTreeSet<&str> =
            self.model_to_image.keys().map(|k| group_of(k)).collect();
        set.into_iter().collect()
    }

    /// True when the catalog knows the group (as a key, or as the group of a key).
    pub fn has_group(&self, group: &str) -> bool {
        self.model_to_image.keys().any(|k| group_of(k) == group)
    }

    /// Every model of a group that the catalog lists, in catalog order. A group that maps to an
    /// image but has no models listed yields the group name itself (a single-model group).
    pub fn models_of_group(&self, group: &str) -> Vec<String> {
        let listed: Vec<String> = self
            .model_to_image
            .iter()
            .filter(|(k, _)| group_of(k) == group)
            .flat_map(|(_, image)| self.models_of_image(image).unwrap_or_default())
            .filter(|m| group_of(m) == group)
            .cloned()
            .collect();
        let mut seen = std::collections::BTreeSet::new();
        let unique: Vec<String> = listed
            .into_iter()
            .filter(|m| seen.insert(m.clone()))
            .collect();
        if unique.is_empty() && self.model_to_image.contains_key(group) {
            vec![group.to_string()]
        } else {
            unique
        }
    }
}

/// `file:REL` (no leading `/`) becomes `file://<absolute catalog folder>/REL`; any other URL
/// is kept as it is.
fn resolve_sif_url(url: &str, dir: &Path) -> String {
    match url.strip_prefix("file:") {
        Some(rest) if !rest.starts_with('/') => {
            let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
            format!("file://{}", dir.join(rest).display())
        }
        _ => url.to_string(),
    }
}

fn first_existing(dir: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

fn read_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    shape: &'static str,
) -> Result<T, CatalogError> {
    let text = std::fs::read_to_string(path).map_err(|reason| CatalogError::Read {
        path: path.to_path_buf(),
        reason,
    })?;
    let syntax = |e: serde_json::Error| CatalogError::Parse {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        message: strip_position(&e.to_string()),
    };
    let mut de = serde_json::Deserializer::from_str(&text);
    let value = match serde_path_to_error::deserialize(&mut de) {
        Ok(value) => value,
        Err(e) if e.inner().classify() == serde_json::error::Category::Data => {
            let (line, column) = value_start(&text, e.inner().line(), e.inner().column());
            return Err(CatalogError::Type {
                path: path.to_path_buf(),
                line,
                column,
                key: e.path().to_string(),
                message: strip_position(&e.inner().to_string()),
                shape,
            });
        }
        Err(e) => return Err(syntax(e.into_inner())),
    };
    de.end().map_err(syntax)?;
    Ok(value)
}

/// serde_json places a type error on the last character it read: the value itself for a
/// number or a string, but the character before it (a space, `:`, or column 0 for the whole
/// file) when it refused the value on sight, as with a list where a map belongs. This moves such
/// a position on to the value.
fn value_start(text: &str, line: usize, column: usize) -> (usize, usize) {
    let Some(line_text) = text.lines().nth(line.saturating_sub(1)) else {
        return (line, column.max(1));
    };
    let chars: Vec<char> = line_text.chars().collect();
    let at = |col: usize| chars.get(col.wrapping_sub(1)).copied();
    let before_value = column == 0 || at(column).is_some_and(|c| c.is_whitespace() || c == ':');
    if !before_value {
        return (line, column);
    }
    // Scan forward, across lines if need be, to the first character that can start a value.
    let mut col = column;
    for (n, l) in text.lines().enumerate().skip(line.saturating_sub(1)) {
        let chars: Vec<char> = l.chars().collect();
        let from = if n + 1 == line { col } else { 0 };
        if let Some(i) = chars
            .iter()
            .skip(from)
            .position(|c| !c.is_whitespace() && *c != ':')
        {
            return (n + 1, from + i + 1);
        }
        col = 0;
    }
    (line, column.max(1))
}

/// serde_json appends " at line L column C" to its messages; we print the position ourselves.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    fn sample() -> (tempfile::TempDir, Catalog) {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "model-to-docker.json",
            r#"{"HAL": "img:shared", "Basset": "img:shared",
                "MMSplice/mtsplice": "img:mtsplice", "MMSplice/deltaLogitPSI": "img:mmsplice",
                "Solo": "img:solo"}"#,
        );
        write(
            dir.path(),
            "docker-to-model.json",
            r#"{"img:shared": ["HAL", "Basset/a", "Basset/b"],
                "img:mtsplice": ["MMSplice/mtsplice"],
                "img:mmsplice": ["MMSplice/deltaLogitPSI", "MMSplice/pathogenicity"]}"#,
        );
        write(
            dir.path(),
            "model-to-singularity.json",
            r#"{"HAL": {"url": "http://127.0.0.1/x.sif", "name": "x", "md5": "00"}}"#,
        );
        let cat = Catalog::load(dir.path()).unwrap();
        (dir, cat)
    }

    #[test]
    fn lookups_go_exact_key_then_group() {
        let (_d, cat) = sample();
        let cases = [
            ("MMSplice/mtsplice", Some("img:mtsplice")),
            ("MMSplice/deltaLogitPSI", Some("img:mmsplice")),
            ("HAL", Some("img:shared")),
            ("Basset/a", Some("img:shared")),
            ("Nope/x", None),
        ];
        for (model, want) in cases {
            assert_eq!(cat.image_for(model), want, "{model}");
        }
        assert_eq!(cat.sif_for("HAL").map(|s| s.name.as_str()), Some("x"));
        assert!(cat.sif_for("Basset").is_none());
    }

    #[test]
    fn groups_and_their_models() {
        let (_d, cat) = sample();
        assert_eq!(cat.models_of_group("Basset"), vec!["Basset/a", "Basset/b"]);
        assert_eq!(
            cat.models_of_group("MMSplice"),
            vec![
                "MMSplice/deltaLogitPSI",
                "MMSplice/pathogenicity",
                "MMSplice/mtsplice"
            ]
        );
        assert_eq!(cat.models_of_group("Solo"), vec!["Solo"]);
        assert!(cat.models_of_group("Nope").is_empty());
        let groups = cat.groups();
        assert_eq!(groups, vec!["Basset", "HAL", "MMSplice", "Solo"]);
        assert!(cat.has_group("MMSplice") && !cat.has_group("MMS"));
    }

    #[test]
    fn relative_file_urls_resolve_against_the_catalog_folder() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "model-to-docker.json",
            r#"{"A": "img", "B": "img", "C": "img"}"#,
        );
        write(
            dir.path(),
            "docker-to-model.json",
            r#"{"img": ["A", "B", "C"]}"#,
        );
        write(
            dir.path(),
            "model-to-singularity.json",
            r#"{"A": {"url": "file:sifs/a.sif", "name": "a", "md5": "00"},
                "B": {"url": "file:///abs/b.sif", "name": "b", "md5": "00"},
                "C": {"url": "https://zenodo.org/c.sif", "name": "c", "md5": "00"}}"#,
        );
        let cat = Catalog::load(dir.path()).unwrap();
        let want = format!("file://{}/sifs/a.sif", dir.path().display());
        assert_eq!(cat.sif_for("A").unwrap().url, want);
        assert_eq!(cat.sif_for("B").unwrap().url, "file:///abs/b.sif");
        assert_eq!(cat.sif_for("C").unwrap().url, "https://zenodo.org/c.sif");
    }

    #[test]
    fn old_file_name_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "model-group-to-docker.json", r#"{"A": "img"}"#);
        write(dir.path(), "docker-to-model.json", r#"{"img": ["A/1"]}"#);
        let cat = Catalog::load(dir.path()).unwrap();
        assert_eq!(cat.image_for("A/1"), Some("img"));
    }

    #[test]
    fn parse_error_names_file_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "model-to-docker.json",
            "{\n  \"A\": \"img\",\n  \"B\" \"x\"\n}",
        );
        write(dir.path(), "docker-to-model.json", "{}");
        let err = Catalog::load(dir.path()).unwrap_err();
        match &err {
            CatalogError::Parse { line, column, .. } => assert_eq!((*line, *column), (3, 7)),
            other => panic!("unexpected {other:?}"),
        }
        let text = err.to_string();
        assert!(text.contains("model-to-docker.json") && text.contains("line 3, column 7"));
    }

    #[test]
    fn missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "model-to-docker.json", "{}");
        let err = Catalog::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("docker-to-model.json"), "{err}");
    }

    #[test]
    fn a_missing_or_odd_folder_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("nope");
        let err = Catalog::load(&gone).unwrap_err();
        assert!(matches!(err, CatalogError::NoFolder { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("does not exist") && text.contains("nope") && !text.contains("has no"),
            "{text}"
        );
        let file = dir.path().join("file");
        write(dir.path(), "file", "{}");
        let err = Catalog::load(&file).unwrap_err().to_string();
        assert!(err.contains("is not a folder"), "{err}");
        // An existing, empty folder still names the file it lacks.
        let err = Catalog::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("has no model-to-docker.json"), "{err}");
    }

    #[test]
    fn type_errors_give_the_value_position_and_key() {
        // (file, its text, position, key, what the message says)
        let cases = [
            (
                "docker-to-model.json",
                "{\"img\": 5}",
                "line 1, column 9",
                "key `img`",
                "integer `5`, expected a sequence",
            ),
            (
                "docker-to-model.json",
                "{\n  \"a\": [\"x\"],\n  \"img\": [\"m\", 7]\n}",
                "line 3, column 16",
                "key `img[1]`",
                "expected a string",
            ),
            (
                "docker-to-model.json",
                "{\"img\":\n   {\"m\": 1}}",
                "line 2, column 4",
                "key `img`",
                "map, expected a sequence",
            ),
            (
                "docker-to-model.json",
                "[\"img\"]",
                "line 1, column 1",
                "key `.`",
                "expected a map",
            ),
            (
                "model-to-docker.json",
                "{\"A\": \"img\", \"B\": [\"img\"]}",
                "line 1, column 19",
                "key `B`",
                "an image name",
            ),
            (
                "model-to-singularity.json",
                "{\"A\": {\"url\": \"u\", \"name\": 3, \"md5\": \"x\"}}",
                "line 1, column 28",
                "key `A.name`",
                "{\"url\": ..., \"name\": ..., \"md5\": ...}",
            ),
        ];
        for (file, text, position, key, want) in cases {
            let dir = tempfile::tempdir().unwrap();
            write(dir.path(), "model-to-docker.json", r#"{"A": "img"}"#);
            write(dir.path(), "docker-to-model.json", r#"{"img": ["A"]}"#);
            write(dir.path(), file, text);
            let err = Catalog::load(dir.path()).unwrap_err();
            assert!(matches!(err, CatalogError::Type { .. }), "{text}: {err:?}");
            let err = err.to_string();
            assert!(
                err.contains(file)
                    && err.contains(position)
                    && err.contains(key)
                    && err.contains(want),
                "{text}: {err}"
            );
            assert!(!err.contains("column 0"), "{err}");
        }
    }

    #[test]
    fn trailing_text_is_a_syntax_error() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "model-to-docker.json", "{\"A\": \"img\"} x");
        write(dir.path(), "docker-to-model.json", "{}");
        let err = Catalog::load(dir.path()).unwrap_err();
        assert!(
            matches!(
                err,
                CatalogError::Parse {
                    line: 1,
                    column: 14,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn real_kipoi_catalog_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("test-specs/kipoi");
        let cat = Catalog::load(&dir).unwrap();
        assert_eq!(
            cat.image_for("Basenji"),
            Some("kipoi/kipoi-docker:sharedpy3keras2tf1")
        );
        assert_eq!(
            cat.image_for("MMSplice/mtsplice"),
            Some("kipoi/kipoi-docker:mmsplice-mtsplice")
        );
        assert!(cat.models().count() > 2000);
        assert!(cat.sif_for("HAL").is_some());
    }
}
