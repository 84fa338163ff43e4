//! Test specs (`test-specs/*.toml`): how a zoo's model is tested.
//!
//! ```toml
//! catalog = "kipoi"                                # catalog folder, relative to this file
//! command = "kipoi test {model} --source=kipoi"    # {model}, {group}, {attempt} filled in
//! workdir = "/models/{model}"                      # optional
//! network = "bridge"                               # none | host | bridge
//! timeout = "30m"
//! env = ["KIPOI_CACHE=/cache", "SOME_HOST_VAR"]    # nothing from the host unless named
//! shared_images = ["kipoi/kipoi-docker:sharedpy3keras2tf2"]
//! volumes = ["kipoi-models:/root/.kipoi/models"]   # kept between cases: NAME or /host/path
//!
//! [models.Basenji]                                 # a model, or a whole group
//! args = ["--batch_size=2"]
//! [models.DeepBind]
//! expect_failure = "example files live on sandbox.zenodo.org, which is gone"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::catalog::group_of;
use crate::units::{parse_duration, parse_size};

/// The timeout of a case when neither the spec nor the command line sets one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

#[derive(Debug, Error)]
pub enum SpecError {
    #[error("failed to read test spec `{path}`: {reason}")]
    Read {
        path: PathBuf,
        /// Shown in the message, so not chained as a source as well.
        reason: std::io::Error,
    },
    #[error("test spec `{path}` is invalid at line {line}, column {column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

/// Which network a test container joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// No network at all: for models whose files are all in the image.
    None,
    /// The host's network: to reach a server on 127.0.0.1.
    Host,
    /// Docker's default network: what real zoo models need to download weights.
    #[default]
    Bridge,
}

impl Network {
    pub fn docker_mode(self) -> &'static str {
        match self {
            Network::None => "none",
            Network::Host => "host",
            Network::Bridge => "bridge",
        }
    }
}

/// What the file says. Values are checked while they are read, so a bad one is reported with
/// its line and column.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    catalog: Option<String>,
    #[serde(deserialize_with = "de_command")]
    command: Vec<String>,
    workdir: Option<String>,
    #[serde(default)]
    network: Network,
    #[serde(default, deserialize_with = "de_duration")]
    timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de_size")]
    memory: Option<u64>,
    #[serde(default, deserialize_with = "de_env")]
    env: Vec<String>,
    #[serde(default)]
    shared_images: Vec<String>,
    #[serde(default, deserialize_with = "de_volumes")]
    volumes: Vec<String>,
    #[serde(default)]
    models: BTreeMap<String, toml::Spanned<RawRule>>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    args: Vec<String>,
    skip: Option<String>,
    expect_failure: Option<String>,
    #[serde(default, deserialize_with = "de_duration")]
    timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de_size")]
    memory: Option<u64>,
    workdir: Option<String>,
    #[serde(default, deserialize_with = "de_some_command")]
    command: Option<Vec<String>>,
}

fn de_command<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let text = String::deserialize(d)?;
    let words = split_command(&text);
    if words.is_empty() {
        return Err(serde::de::Error::custom("the command is empty"));
    }
    Ok(words)
}

fn de_some_command<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<String>>, D::Error> {
    de_command(d).map(Some)
}

fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn de_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let text = String::deserialize(d)?;
    parse_size(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// `SOURCE:/container/path[:ro|:rw]`, SOURCE a Docker volume name or an absolute host path.
fn de_volumes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let entries = Vec::<String>::deserialize(d)?;
    for entry in &entries {
        let parts: Vec<&str> = entry.split(':').collect();
        let ok = match parts.as_slice() {
            [source, target] | [source, target, "ro" | "rw"] => {
                !source.is_empty() && target.starts_with('/')
            }
            _ => false,
        };
        if !ok {
            return Err(serde::de::Error::custom(format!(
                "volume `{entry}` must be SOURCE:/container/path[:ro], SOURCE a volume name or \
                 an absolute host path"
            )));
        }
    }
    Ok(entries)
}

fn de_env<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let entries = Vec::<String>::deserialize(d)?;
    for entry in &entries {
        let name = entry.split('=').next().unwrap_or_default();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(serde::de::Error::custom(format!(
                "env entry `{entry}` must be NAME or NAME=value"
            )));
        }
    }
    Ok(entries)
}

/// How one model is treated beyond the common command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelRule {
    pub args: Vec<String>,
    pub skip: Option<String>,
    pub expect_failure: Option<String>,
    pub timeout: Option<Duration>,
    pub memory: Option<u64>,
    pub workdir: Option<String>,
    pub command: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub path: PathBuf,
    /// Catalog folder the spec points at (already resolved against the spec's folder).
    pub catalog: Option<PathBuf>,
    pub command: Vec<String>,
    pub workdir: Option<String>,
    pub network: Network,
    pub timeout: Duration,
    pub memory: Option<u64>,
    /// `NAME` (copied from the host when set) or `NAME=value`.
    pub env: Vec<String>,
    pub shared_images: Vec<String>,
    /// Mounted in every container and kept between cases and runs (a cache, typically).
    pub volumes: Vec<String>,
    models: BTreeMap<String, ModelRule>,
}

/// The command a case runs, with what the spec says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasePlan {
    pub command: Vec<String>,
    pub workdir: Option<String>,
    pub timeout: Duration,
    pub memory: Option<u64>,
    pub skip: Option<String>,
    pub expect_failure: Option<String>,
}

impl Spec {
    pub fn load(path: &Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|reason| SpecError::Read {
            path: path.to_path_buf(),
            reason,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, SpecError> {
        let at = |offset: usize, message: String| {
            let (line, column) = line_and_column(text, offset);
            SpecError::Parse {
                path: path.to_path_buf(),
                line,
                column,
                message,
            }
        };
        let raw: RawSpec = toml::from_str(text).map_err(|e| {
            let offset = e.span().map(|span| span.start).unwrap_or(0);
            at(offset, e.message().trim().to_string())
        })?;
        let mut models = BTreeMap::new();
        for (name, spanned) in raw.models {
            let rule = spanned.get_ref();
            if rule.skip.is_some() && rule.expect_failure.is_some() {
                return Err(at(
                    spanned.span().start,
                    format!(
                        "[models.\"{name}\"] sets both `skip` and `expect_failure`: choose one"
                    ),
                ));
            }
            let rule = spanned.into_inner();
            models.insert(
                name,
                ModelRule {
                    args: rule.args,
                    skip: rule.skip,
                    expect_failure: rule.expect_failure,
                    timeout: rule.timeout,
                    memory: rule.memory,
                    workdir: rule.workdir,
                    command: rule.command,
                },
            );
        }
        let base = path.parent().unwrap_or(Path::new("."));
        Ok(Self {
            path: path.to_path_buf(),
            catalog: raw.catalog.as_deref().map(|c| base.join(c)),
            command: raw.command,
            workdir: raw.workdir.filter(|w| !w.is_empty()),
            network: raw.network,
            timeout: raw.timeout.unwrap_or(DEFAULT_TIMEOUT),
            memory: raw.memory,
            env: raw.env,
            shared_images: raw.shared_images,
            volumes: raw.volumes,
            models,
        })
    }

    /// The rule for a model: its own entry if there is one, else its group's.
    pub fn rule_for(&self, model: &str) -> ModelRule {
        self.models
            .get(model)
            .or_else(|| self.models.get(group_of(model)))
            .cloned()
            .unwrap_or_default()
    }

    pub fn is_shared_image(&self, image: &str) -> bool {
        let bare = image.strip_suffix("-slim").unwrap_or(image);
        self.shared_images.iter().any(|s| s == bare)
    }

    /// Everything needed to run one model: command, working directory, limits, marks.
    /// `timeout_override` (from the command line) wins over the spec.
    pub fn plan_for(&self, model: &str, timeout_override: Option<Duration>) -> CasePlan {
        let rule = self.rule_for(model);
        let fill = |t: &str| {
            t.replace("{model}", model)
                .replace("{group}", group_of(model))
        };
        let template = rule.command.as_ref().unwrap_or(&self.command);
        let mut command: Vec<String> = template.iter().map(|t| fill(t)).collect();
        command.extend(rule.args.iter().cloned());
        CasePlan {
            command,
            workdir: rule
                .workdir
                .as_ref()
                .or(self.workdir.as_ref())
                .map(|w| fill(w)),
            timeout: timeout_override.or(rule.timeout).unwrap_or(self.timeout),
            memory: rule.memory.or(self.memory),
            skip: rule.skip,
            expect_failure: rule.expect_failure,
        }
    }

    /// `NAME=value` pairs for the container: literal entries, and host variables named by the
    /// spec that are set on the host. Nothing else of the host's environment gets in.
    pub fn container_env(&self, host: impl Fn(&str) -> Option<String>) -> Vec<String> {
        self.env
            .iter()
            .filter_map(|entry| {
                if entry.contains('=') {
                    Some(entry.clone())
                } else {
                    host(entry).map(|value| format!("{entry}={value}"))
                }
            })
            .collect()
    }
}

/// Splits a command template on whitespace. Placeholders are filled per word afterwards, so a
/// model name can never split into two arguments.
fn split_command(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_string).collect()
}

/// 1-based line and column of a byte offset.
pub fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
catalog = "kipoi"
command = "kipoi test {model} --source=kipoi"
timeout = "30m"
env = ["FIXED=1", "FROM_HOST", "UNSET_ON_HOST"]
shared_images = ["img:shared"]

[models.Basenji]
args = ["--batch_size=2"]

[models.DeepBind]
expect_failure = "dead links"

[models."DeepBind/x"]
skip = "too big"
timeout = "2h"
memory = "2g"
workdir = "/w/{model}"
"#;

    fn sample() -> Spec {
        Spec::parse(Path::new("/specs/kipoi.toml"), SAMPLE).unwrap()
    }

    #[test]
    fn command_is_filled_per_model_with_extras() {
        let spec = sample();
        let plan = spec.plan_for("Basenji", None);
        assert_eq!(
            plan.command,
            [
                "kipoi",
                "test",
                "Basenji",
                "--source=kipoi",
                "--batch_size=2"
            ]
        );
        assert_eq!(plan.timeout, Duration::from_secs(1800));
        let plan = spec.plan_for("HAL", Some(Duration::from_secs(5)));
        assert_eq!(plan.command, ["kipoi", "test", "HAL", "--source=kipoi"]);
        assert_eq!(plan.timeout, Duration::from_secs(5));
        assert_eq!(spec.catalog.as_deref(), Some(Path::new("/specs/kipoi")));
    }

    #[test]
    fn exact_rule_wins_over_group_rule() {
        let spec = sample();
        let group = spec.plan_for("DeepBind/y", None);
        assert_eq!(group.expect_failure.as_deref(), Some("dead links"));
        assert_eq!(group.skip, None);
        let exact = spec.plan_for("DeepBind/x", None);
        assert_eq!(exact.skip.as_deref(), Some("too big"));
        assert_eq!(exact.expect_failure, None);
        assert_eq!(exact.timeout, Duration::from_secs(7200));
        assert_eq!(exact.memory, Some(2 << 30));
        assert_eq!(exact.workdir.as_deref(), Some("/w/DeepBind/x"));
    }

    #[test]
    fn only_named_host_variables_get_in() {
        let spec = sample();
        let host = |name: &str| match name {
            "FROM_HOST" => Some("yes".to_string()),
            "GITHUB_TOKEN" => Some("secret".to_string()),
            _ => None,
        };
        assert_eq!(spec.container_env(host), ["FIXED=1", "FROM_HOST=yes"]);
    }

    #[test]
    fn shared_images_match_slim_too() {
        let spec = sample();
        assert!(spec.is_shared_image("img:shared"));
        assert!(spec.is_shared_image("img:shared-slim"));
        assert!(!spec.is_shared_image("img:other"));
    }

    #[test]
    fn parse_errors_name_line_and_column() {
        let text = "command = \"kipoi test {model}\"\ntimeout = 30\n";
        let err = Spec::parse(Path::new("s.toml"), text).unwrap_err();
        match &err {
            SpecError::Parse { line, column, .. } => assert_eq!((*line, *column), (2, 11)),
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("s.toml"));
        let text = "command = \"x\"\nbogus = 1\n";
        let err = Spec::parse(Path::new("s.toml"), text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("bogus"), "{err}");
    }

    #[test]
    fn invalid_values_are_explained_with_their_position() {
        let cases = [
            (
                "command = \"\"",
                "line 1, column 11",
                "the command is empty",
            ),
            (
                "command = \"x\"\ntimeout = \"soon\"",
                "line 2, column 11",
                "not a duration",
            ),
            (
                "command = \"x\"\nmemory = \"lots\"",
                "line 2, column 10",
                "not a size",
            ),
            (
                "command = \"x\"\nenv = [\"A B\"]",
                "line 2, column 7",
                "NAME or NAME=value",
            ),
            (
                "command = \"x\"\n[models.A]\ntimeout = \"1x\"",
                "line 3, column 11",
                "not a duration",
            ),
            (
                "command = \"x\"\n[models.A]\nskip = \"a\"\nexpect_failure = \"b\"",
                "line 2, column 1",
                "choose one",
            ),
        ];
        for (text, position, want) in cases {
            let err = Spec::parse(Path::new("s.toml"), text)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(want) && err.contains(position),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn shipped_specs_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let kipoi = Spec::load(&root.join("test-specs/kipoi.toml")).unwrap();
        assert_eq!(
            kipoi.plan_for("Basenji", None).command,
            [
                "kipoi",
                "test",
                "Basenji",
                "--source=kipoi",
                "--batch_size=2"
            ]
        );
        assert!(kipoi.env.is_empty());
        Spec::load(&root.join("fixtures/spec.toml")).unwrap();
    }
}
