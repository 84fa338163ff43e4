//! Test specs (`test-specs/*.toml`): how a zoo's model is tested.
//!
//! ```toml
//! catalog = "kipoi"                                # catalog folder, relative to this file
//! command = "kipoi test {model} --source=kipoi"    # split like a POSIX shell, or ["an", "array"]
//! workdir = "/models/{model}"                      # optional
//! network = "bridge"                               # none | host | bridge
//! timeout = "30m"                                  # more than 0, at most 30 days
//! memory = "8g"                                    # optional, at least 6 MiB
//! env = ["KIPOI_CACHE=/cache", "SOME_HOST_VAR"]    # nothing from the host unless named
//! shared_images = ["kipoi/kipoi-docker:sharedpy3keras2tf2"]
//! volumes = ["kipoi-models:/root/.kipoi/models"]   # mounted as they are: NAME or /host/path
//! caches = ["/root/.kipoi/models"]                 # kept between cases, one per image and path
//! apptainer_home = "/home/antspyuser"              # Apptainer: the image's home, not the host's
//! versions = "python -m pip freeze"                # run once per image, kept in the report
//! infra_failures = ["HTTP Error 429"]              # output that means the outside world failed
//!
//! [models.Basenji]                                 # a model, or a whole group
//! args = ["--batch_size=2"]
//! [models.DeepBind]
//! expect_failure = "example files live on sandbox.zenodo.org, which is gone"
//! ```
//!
//! Every value is checked while the file is read, so a bad one is an error with its line and
//! column before any container starts: numbers out of bounds, unknown `{placeholders}`, a
//! command that does not split, a volume whose source is a relative path. A model's own table
//! is merged key by key over its group's ([`RawRule::over`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::config::predictions::{Format, PredictionPlan, RawPredictions};
use crate::config::units::{parse_positive_duration, parse_size_within, UnitError, MAX_DURATION};

/// The timeout of a case when neither the spec nor the command line sets one.
/// The group of a model: the part before the first `/` (the whole name when there is none). A
/// spec's `[models.Group]` table applies to the whole group.
pub fn group_of(model: &str) -> &str {
    model.split('/').next().unwrap_or(model)
}

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
    #[serde(default, deserialize_with = "de_workdir")]
    workdir: Option<String>,
    #[serde(default)]
    network: Network,
    #[serde(default, deserialize_with = "de_timeout")]
    timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de_memory")]
    memory: Option<u64>,
    #[serde(default, deserialize_with = "de_env")]
    env: Vec<String>,
    #[serde(default)]
    shared_images: Vec<String>,
    #[serde(default, deserialize_with = "de_volumes")]
    volumes: Vec<String>,
    #[serde(default, deserialize_with = "de_caches")]
    caches: Vec<String>,
    #[serde(default, deserialize_with = "de_container_path")]
    apptainer_home: Option<String>,
    #[serde(default, deserialize_with = "de_versions")]
    versions: Option<Vec<String>>,
    /// Where a case writes its predictions and what they are compared with
    /// (`crate::config::predictions`).
    predictions: Option<toml::Spanned<RawPredictions>>,
    #[serde(default, deserialize_with = "de_infra_failures")]
    infra_failures: Vec<String>,
    #[serde(default)]
    models: BTreeMap<String, toml::Spanned<RawRule>>,
}

/// A `[models."..."]` table as written: every key optional, so a model's table can be merged
/// key by key over its group's.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default, deserialize_with = "de_args")]
    args: Option<Vec<String>>,
    skip: Option<String>,
    expect_failure: Option<String>,
    #[serde(default, deserialize_with = "de_timeout")]
    timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de_memory")]
    memory: Option<u64>,
    #[serde(default, deserialize_with = "de_workdir")]
    workdir: Option<String>,
    #[serde(default, deserialize_with = "de_some_command")]
    command: Option<Vec<String>>,
    predictions: Option<RawPredictions>,
}

impl RawRule {
    /// This table's keys over `base`'s: a key this table sets wins. `skip` and
    /// `expect_failure` count as one key (the mark), so a model's mark replaces its group's
    /// rather than adding a second one. `args` set here replace `base`'s (`args = []` drops
    /// them).
    fn over(&self, base: &RawRule) -> RawRule {
        let own_mark = self.skip.is_some() || self.expect_failure.is_some();
        let (skip, expect_failure) = if own_mark {
            (self.skip.clone(), self.expect_failure.clone())
        } else {
            (base.skip.clone(), base.expect_failure.clone())
        };
        RawRule {
            args: self.args.clone().or_else(|| base.args.clone()),
            skip,
            expect_failure,
            timeout: self.timeout.or(base.timeout),
            memory: self.memory.or(base.memory),
            workdir: self.workdir.clone().or_else(|| base.workdir.clone()),
            command: self.command.clone().or_else(|| base.command.clone()),
            predictions: match (&self.predictions, &base.predictions) {
                (Some(own), Some(group)) => Some(own.over(group)),
                (own, group) => own.clone().or_else(|| group.clone()),
            },
        }
    }
}

/// Docker refuses a memory limit under 6 MiB.
pub const MIN_MEMORY: u64 = 6 << 20;
/// Docker takes the limit as a signed 64-bit count of bytes: anything above turns negative.
pub const MAX_MEMORY: u64 = i64::MAX as u64;

/// Placeholders `command` knows; `workdir` knows all but `{attempt}` and `{output}`.
const COMMAND_PLACEHOLDERS: [&str; 4] = ["model", "group", "attempt", "output"];
const WORKDIR_PLACEHOLDERS: [&str; 2] = ["model", "group"];

/// A command is a string, split like a POSIX shell splits it, or an array of words taken as
/// they are.
struct CommandVisitor;

impl<'de> serde::de::Visitor<'de> for CommandVisitor {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a command: a string (split like a POSIX shell) or an array of words")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
        shell_words::split(text).map_err(|e| {
            E::custom(format!(
                "the command `{text}` does not split like a shell command: {e}"
            ))
        })
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut words = Vec::new();
        while let Some(word) = seq.next_element::<String>()? {
            words.push(word);
        }
        Ok(words)
    }
}

fn de_command<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let words = d.deserialize_any(CommandVisitor)?;
    if words.is_empty() {
        return Err(serde::de::Error::custom("the command is empty"));
    }
    for word in &words {
        check_placeholders(word, "command", &COMMAND_PLACEHOLDERS)
            .map_err(serde::de::Error::custom)?;
    }
    Ok(words)
}

fn de_some_command<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<String>>, D::Error> {
    de_command(d).map(Some)
}

/// Extra words after the command, taken as they are (no shell splitting), placeholders filled.
fn de_args<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let words = Vec::<String>::deserialize(d)?;
    for word in &words {
        check_placeholders(word, "args", &COMMAND_PLACEHOLDERS)
            .map_err(serde::de::Error::custom)?;
    }
    Ok(Some(words))
}

fn de_workdir<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    check_placeholders(&text, "workdir", &WORKDIR_PLACEHOLDERS)
        .map_err(serde::de::Error::custom)?;
    Ok(Some(text))
}

/// Fails on a `{name}` that is not one of `known`. `${NAME}` is left alone: that is the
/// shell's, in a `sh -c '...'` command. Braces around anything but a plain name (`{print $1}`)
/// are no placeholder either.
fn check_placeholders(text: &str, key: &str, known: &[&str]) -> Result<(), String> {
    let mut from = 0;
    while let Some(found) = text[from..].find('{') {
        let open = from + found;
        from = open + 1;
        let Some(len) = text[open + 1..].find('}') else {
            break;
        };
        let name = &text[open + 1..open + 1 + len];
        let is_name =
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        let shell = text[..open].ends_with('$');
        if is_name && !shell && !known.contains(&name) {
            let list: Vec<String> = known.iter().map(|k| format!("{{{k}}}")).collect();
            let mut message = format!(
                "unknown placeholder `{{{name}}}` in `{key}`: the known ones are {}",
                list.join(", ")
            );
            if !known.contains(&"attempt") {
                message.push_str(" (`{attempt}` is filled only in `command`)");
            }
            return Err(message);
        }
    }
    Ok(())
}

fn de_timeout<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    parse_positive_duration(&text, "`timeout`", MAX_DURATION)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn de_memory<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let text = String::deserialize(d)?;
    parse_size_within(&text, "`memory`", MIN_MEMORY, MAX_MEMORY)
        .map(Some)
        .map_err(|e| match e {
            // show_size would say "8589934592.0 GiB".
            UnitError::TooLarge { text, what, .. } => UnitError::TooLarge {
                text,
                what,
                max: format!("{MAX_MEMORY} bytes (just under 8 EiB)"),
            },
            other => other,
        })
        .map_err(serde::de::Error::custom)
}

/// `SOURCE:/container/path[:ro|:rw]`, SOURCE a Docker volume name or an absolute host path.
fn de_volumes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let entries = Vec::<String>::deserialize(d)?;
    for entry in &entries {
        check_volume(entry).map_err(serde::de::Error::custom)?;
    }
    Ok(entries)
}

/// Docker's rule for a volume name: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`. Anything else that is not
/// an absolute path (`./data`, `data/x`) Docker refuses for every case, so it is refused here.
fn is_volume_name(source: &str) -> bool {
    let mut chars = source.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn check_volume(entry: &str) -> Result<(), String> {
    let parts: Vec<&str> = entry.split(':').collect();
    let (source, target) = match parts.as_slice() {
        [source, target] | [source, target, "ro" | "rw"] => (*source, *target),
        _ => {
            return Err(format!(
                "volume `{entry}` must be SOURCE:/container/path[:ro], SOURCE a volume name or \
                 an absolute host path"
            ))
        }
    };
    if !target.starts_with('/') {
        return Err(format!(
            "volume `{entry}`: the container path `{target}` must be absolute"
        ));
    }
    if !source.starts_with('/') && !is_volume_name(source) {
        return Err(format!(
            "volume `{entry}`: `{source}` is neither an absolute host path nor a volume name \
             ([a-zA-Z0-9][a-zA-Z0-9_.-]*); write a host folder as an absolute path"
        ));
    }
    Ok(())
}

/// A container path for a cache or a home: absolute, not `/`, and free of `:` and `,` (which
/// Docker's and Apptainer's mount syntax split on). A trailing `/` is dropped.
fn check_container_path(path: &str, key: &str) -> Result<String, String> {
    let trimmed = path.trim_end_matches('/');
    if !path.starts_with('/') {
        return Err(format!(
            "`{key}`: the container path `{path}` must be absolute"
        ));
    }
    if trimmed.is_empty() {
        return Err(format!(
            "`{key}`: `/` cannot be a cache or a home: name a folder"
        ));
    }
    if let Some(bad) = path
        .chars()
        .find(|c| matches!(c, ':' | ',') || c.is_control())
    {
        return Err(format!(
            "`{key}`: the container path `{path}` holds `{}`, which mount options split on",
            bad.escape_default()
        ));
    }
    if trimmed.split('/').any(|part| part == "..") {
        return Err(format!(
            "`{key}`: the container path `{path}` must not hold `..`"
        ));
    }
    Ok(trimmed.to_string())
}

fn de_caches<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let entries = Vec::<String>::deserialize(d)?;
    let mut paths: Vec<String> = Vec::new();
    for entry in &entries {
        let path = check_container_path(entry, "caches").map_err(serde::de::Error::custom)?;
        if let Some(other) = paths
            .iter()
            .find(|p| **p == path || is_under(&path, p) || is_under(p, &path))
        {
            return Err(serde::de::Error::custom(format!(
                "`caches`: `{entry}` and `{other}` overlap: one cache cannot hold another"
            )));
        }
        paths.push(path);
    }
    Ok(paths)
}

/// True when `path` lies strictly inside the folder `dir`.
fn is_under(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir)
        .is_some_and(|rest| rest.starts_with('/') && rest.len() > 1)
}

fn de_container_path<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    check_container_path(&text, "apptainer_home")
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// The `versions` command: like `command`, but run once per image, so no placeholder means
/// anything in it.
fn de_versions<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let words = d.deserialize_any(CommandVisitor)?;
    if words.is_empty() {
        return Err(serde::de::Error::custom("the `versions` command is empty"));
    }
    for word in &words {
        check_placeholders(word, "versions", &[]).map_err(|_| {
            serde::de::Error::custom(format!(
                "`versions` runs once per image, not per model: `{word}` holds a placeholder \
                 ({{model}}, {{group}} and {{attempt}} mean nothing there)"
            ))
        })?;
    }
    Ok(Some(words))
}

/// `{output}` and `[predictions]` go together: the placeholder needs the table (it names the
/// file), whose `file` is set at the top level; each tolerance is one kind. A case whose
/// command holds `{output}` has its predictions checked; the others do not (their command
/// writes none). Returns where the problem is written, and what it is.
fn check_outputs(raw: &RawSpec, text: &str) -> Result<(), (usize, String)> {
    let uses_output = |words: &[String]| words.iter().any(|w| w.contains("{output}"));
    let rule_uses = |rule: &RawRule| {
        rule.command.as_deref().is_some_and(uses_output)
            || rule.args.as_deref().is_some_and(uses_output)
    };
    let Some(table) = &raw.predictions else {
        let everywhere = raw
            .models
            .values()
            .map(|r| r.get_ref())
            .any(|r| rule_uses(r) || r.predictions.is_some());
        if uses_output(&raw.command) || everywhere {
            let offset = text
                .find("{output}")
                .or(text.find("predictions"))
                .unwrap_or(0);
            return Err((
                offset,
                "`{output}` and a model's `predictions` need a `[predictions]` table that names \
                 the `file` the command writes"
                    .into(),
            ));
        }
        return Ok(());
    };
    let top = table.get_ref();
    if top.file.is_none() {
        return Err((
            table.span().start,
            "`[predictions]` needs `file`: the name of the predictions file the command writes \
             at `{output}` (its ending says the format: .h5, .tsv, .csv, .npy, .npz)"
                .into(),
        ));
    }
    top.tolerance().map_err(|e| (table.span().start, e))?;
    for (name, rule) in &raw.models {
        if let Some(own) = &rule.get_ref().predictions {
            own.over(top).tolerance().map_err(|e| {
                (
                    rule.span().start,
                    format!("[models.\"{name}\".predictions]: {e}"),
                )
            })?;
        }
    }
    Ok(())
}

/// `infra_failures`: words of a failed case's output that mean the outside world failed (a
/// download throttled or cut), compared without case; none may be empty (it would match all).
fn de_infra_failures<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let entries = Vec::<String>::deserialize(d)?;
    if entries.iter().any(|e| e.trim().is_empty()) {
        return Err(serde::de::Error::custom(
            "`infra_failures` holds an empty pattern, which every output would match",
        ));
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
#[derive(Debug, Clone, Default)]
pub struct ModelRule {
    pub args: Vec<String>,
    pub skip: Option<String>,
    pub expect_failure: Option<String>,
    pub timeout: Option<Duration>,
    pub memory: Option<u64>,
    pub workdir: Option<String>,
    pub command: Option<Vec<String>>,
    pub predictions: Option<RawPredictions>,
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
    /// Mounted in every container as they are (`SOURCE:/path[:ro]`): what users mount themselves.
    pub volumes: Vec<String>,
    /// Container paths kept between cases and runs, one cache per image and path (see
    /// `crate::store::caches`); absolute, without a trailing `/`.
    pub caches: Vec<String>,
    /// Apptainer only: the image's home folder, used as `$HOME` instead of the host user's.
    pub apptainer_home: Option<String>,
    /// A command run once per image whose output (the packages inside) goes into the report.
    pub versions: Option<Vec<String>>,
    /// The `[predictions]` table, when the spec checks predictions.
    predictions: Option<RawPredictions>,
    /// Words of a failed case's output that mean the outside world failed, not the model.
    pub infra_failures: Vec<String>,
    models: BTreeMap<String, RawRule>,
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
    /// Where the case writes its predictions and what they are compared with; `None` when the
    /// spec has no `[predictions]` table (or the model's says `check = false`).
    pub predictions: Option<PredictionPlan>,
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
        check_outputs(&raw, text).map_err(|(offset, message)| at(offset, message))?;
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
            models.insert(name, spanned.into_inner());
        }
        if let Some(cache) = raw.caches.iter().find(|c| {
            raw.volumes
                .iter()
                .any(|v| v.split(':').nth(1) == Some(c.as_str()))
        }) {
            let offset = text.find("caches").unwrap_or(0);
            return Err(at(
                offset,
                format!(
                    "`{cache}` is both in `caches` and a `volumes` target: keep it in one of them"
                ),
            ));
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
            caches: raw.caches,
            apptainer_home: raw.apptainer_home,
            versions: raw.versions,
            predictions: raw.predictions.map(toml::Spanned::into_inner),
            infra_failures: raw.infra_failures,
            models,
        })
    }

    /// The rule for a model: its own table merged key by key over its group's (see
    /// [`RawRule::over`]), or whichever of the two exists.
    pub fn rule_for(&self, model: &str) -> ModelRule {
        let group = group_of(model);
        let group_rule = (group != model).then(|| self.models.get(group)).flatten();
        let rule = match (self.models.get(model), group_rule) {
            (Some(own), Some(base)) => own.over(base),
            (Some(one), None) | (None, Some(one)) => one.clone(),
            (None, None) => RawRule::default(),
        };
        ModelRule {
            args: rule.args.unwrap_or_default(),
            skip: rule.skip,
            expect_failure: rule.expect_failure,
            timeout: rule.timeout,
            memory: rule.memory,
            workdir: rule.workdir,
            command: rule.command,
            predictions: rule.predictions,
        }
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
        // Only a command that writes predictions (`{output}`) has them checked.
        let writes = template
            .iter()
            .chain(&rule.args)
            .any(|w| w.contains("{output}"));
        let predictions = self.predictions_for(&rule, model).filter(|_| writes);
        let output = predictions.as_ref().map(PredictionPlan::container_path);
        let fill_command = |t: &str| match &output {
            Some(path) => fill(t).replace("{output}", path),
            None => fill(t),
        };
        let mut command: Vec<String> = template.iter().map(|t| fill_command(t)).collect();
        command.extend(rule.args.iter().map(|a| fill_command(a)));
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
            predictions,
        }
    }

    /// A model's prediction check: its `[models.X.predictions]` over the top level's (the
    /// tolerance was checked when the spec was read).
    fn predictions_for(&self, rule: &ModelRule, model: &str) -> Option<PredictionPlan> {
        let top = self.predictions.as_ref()?;
        let raw = match &rule.predictions {
            Some(own) => own.over(top),
            None => top.clone(),
        };
        if raw.check == Some(false) {
            return None;
        }
        let file = raw.file.clone()?;
        let fill = |t: &str| {
            t.replace("{model}", model)
                .replace("{group}", group_of(model))
        };
        Some(PredictionPlan {
            format: Format::of(&file),
            file,
            reference: raw.reference.as_deref().map(fill),
            tolerance: raw.tolerance().unwrap_or_default(),
        })
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

    /// Parses `text` and returns the error message, failing when it parses.
    fn refused(text: &str) -> String {
        match Spec::parse(Path::new("s.toml"), text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn infra_failures_are_words_none_empty() {
        let spec = Spec::parse(
            Path::new("s.toml"),
            "command = \"x\"\ninfra_failures = [\"HTTP Error 429\"]\n",
        )
        .unwrap();
        assert_eq!(spec.infra_failures, ["HTTP Error 429"]);
        let err = refused("command = \"x\"\ninfra_failures = [\"a\", \" \"]\n");
        assert!(
            err.contains("line 2") && err.contains("empty pattern"),
            "{err}"
        );
    }

    #[test]
    fn numeric_keys_are_bounded_and_named() {
        // (text, position of the value, what the message must say)
        let cases = [
            (
                "timeout = \"0s\"",
                "line 2, column 11",
                "`timeout` must be more than",
            ),
            ("timeout = \"0\"", "line 2, column 11", "is zero"),
            (
                "timeout = \"31d\"",
                "line 2, column 11",
                "`timeout` can be at most 720h",
            ),
            (
                "timeout = \"99999999999999999999s\"",
                "line 2, column 11",
                "too large",
            ),
            (
                "timeout = \"5124095576030432h\"",
                "line 2, column 11",
                "too large",
            ),
            (
                "memory = \"0\"",
                "line 2, column 10",
                "`memory` must be more than",
            ),
            (
                "memory = \"1m\"",
                "line 2, column 10",
                "`memory` must be at least 6.0 MiB",
            ),
            (
                "memory = \"6291455\"",
                "line 2, column 10",
                "at least 6.0 MiB",
            ),
            (
                "memory = \"8589934592g\"",
                "line 2, column 10",
                "`memory` can be at most 9223372036854775807 bytes",
            ),
            (
                "memory = \"99999999999999999999g\"",
                "line 2, column 10",
                "too large",
            ),
            (
                "[models.A]\ntimeout = \"0ms\"",
                "line 3, column 11",
                "`timeout` must be more",
            ),
            (
                "[models.A]\ntimeout = \"100000h\"",
                "line 3, column 11",
                "at most",
            ),
            (
                "[models.\"A/b\"]\nmemory = \"5m\"",
                "line 3, column 10",
                "at least 6.0 MiB",
            ),
            (
                "[models.A]\nmemory = \"9223372036854775808\"",
                "line 3, column 10",
                "at most",
            ),
        ];
        for (tail, position, want) in cases {
            let text = format!("command = \"x\"\n{tail}");
            let err = refused(&text);
            assert!(
                err.contains(want) && err.contains(position) && err.contains("s.toml"),
                "{tail}: {err}"
            );
        }
        let text = "command = \"x\"\ntimeout = \"720h\"\nmemory = \"6m\"\n\
                    [models.A]\nmemory = \"9223372036854775807\"\ntimeout = \"1ms\"";
        let spec = Spec::parse(Path::new("s.toml"), text).unwrap();
        assert_eq!(spec.timeout, MAX_DURATION);
        assert_eq!(spec.memory, Some(MIN_MEMORY));
        let plan = spec.plan_for("A", None);
        assert_eq!(plan.memory, Some(i64::MAX as u64));
        assert_eq!(plan.timeout, Duration::from_millis(1));
    }

    #[test]
    fn volume_sources_are_names_or_absolute_paths() {
        let refused_volumes = [
            (
                "./data:/x",
                "`./data` is neither an absolute host path nor a volume name",
            ),
            ("data/x:/y", "`data/x` is neither"),
            ("../up:/y:ro", "`../up` is neither"),
            ("~/cache:/y", "`~/cache` is neither"),
            ("-v:/y", "`-v` is neither"),
            (".hidden:/y", "`.hidden` is neither"),
            (
                "name:relative",
                "container path `relative` must be absolute",
            ),
            (":/y", "`` is neither"),
            ("a:/b:rx", "must be SOURCE:/container/path[:ro]"),
            ("justone", "must be SOURCE:/container/path[:ro]"),
        ];
        for (volume, want) in refused_volumes {
            let text = format!("command = \"x\"\nvolumes = [\"{volume}\"]");
            let err = refused(&text);
            assert!(
                err.contains(want) && err.contains("line 2, column 11"),
                "{volume}: {err}"
            );
        }
        let fine = [
            "kipoi-models:/root/.kipoi/models",
            "a:/x",
            "v1_cache.2-b:/x:ro",
            "/srv/data:/data:rw",
            "/:/host",
        ];
        for volume in fine {
            let text = format!("command = \"x\"\nvolumes = [\"{volume}\"]");
            let spec = Spec::parse(Path::new("s.toml"), &text).unwrap();
            assert_eq!(spec.volumes, [volume]);
        }
    }

    #[test]
    fn caches_are_absolute_container_paths_that_do_not_overlap() {
        let text = "command = \"x\"\ncaches = [\"/root/.kipoi/models/\", \"/home/u/.keras\"]\n\
                    apptainer_home = \"/home/u\"\nversions = \"python -m pip freeze\"";
        let spec = Spec::parse(Path::new("s.toml"), text).unwrap();
        assert_eq!(spec.caches, ["/root/.kipoi/models", "/home/u/.keras"]);
        assert_eq!(spec.apptainer_home.as_deref(), Some("/home/u"));
        assert_eq!(
            spec.versions.as_deref(),
            Some(&["python", "-m", "pip", "freeze"].map(String::from)[..])
        );
        let none = Spec::parse(Path::new("s.toml"), "command = \"x\"").unwrap();
        assert!(none.caches.is_empty() && none.versions.is_none() && none.apptainer_home.is_none());
        let cases = [
            (
                "caches = [\"data\"]",
                "line 2, column 10",
                "`data` must be absolute",
            ),
            (
                "caches = [\"/\"]",
                "line 2, column 10",
                "`/` cannot be a cache",
            ),
            ("caches = [\"/a:b\"]", "line 2, column 10", "holds `:`"),
            ("caches = [\"/a,b\"]", "line 2, column 10", "holds `,`"),
            (
                "caches = [\"/a/../b\"]",
                "line 2, column 10",
                "must not hold `..`",
            ),
            (
                "caches = [\"/a\", \"/a/b\"]",
                "line 2, column 10",
                "overlap",
            ),
            ("caches = [\"/a/\", \"/a\"]", "line 2, column 10", "overlap"),
            (
                "caches = \"/a\"",
                "line 2, column 10",
                "expected a sequence",
            ),
            (
                "apptainer_home = \"home\"",
                "line 2, column 18",
                "must be absolute",
            ),
            (
                "versions = \"\"",
                "line 2, column 12",
                "`versions` command is empty",
            ),
            (
                "versions = \"pip show {model}\"",
                "line 2, column 12",
                "once per image",
            ),
            (
                "volumes = [\"v:/c\"]\ncaches = [\"/c\"]",
                "line 3, column 1",
                "both in `caches` and a `volumes` target",
            ),
        ];
        for (tail, position, want) in cases {
            let err = refused(&format!("command = \"x\"\n{tail}"));
            assert!(
                err.contains(want) && err.contains(position),
                "{tail}: {err}"
            );
        }
        // Neighbours that only share a prefix do not overlap.
        let text = "command = \"x\"\ncaches = [\"/a/b\", \"/a/bc\"]";
        assert_eq!(
            Spec::parse(Path::new("s.toml"), text).unwrap().caches.len(),
            2
        );
    }

    #[test]
    fn unknown_placeholders_are_refused_where_they_are_written() {
        let cases = [
            (
                "command = \"kipoi test {modl}\"",
                "line 1, column 11",
                "`{modl}` in `command`",
            ),
            (
                "command = [\"run\", \"{Model}\"]",
                "line 1, column 11",
                "`{Model}` in `command`",
            ),
            (
                "command = \"x\"\nworkdir = \"/m/{grp}\"",
                "line 2, column 11",
                "`{grp}` in `workdir`",
            ),
            (
                "command = \"x\"\nworkdir = \"/m/{attempt}\"",
                "line 2, column 11",
                "filled only in `command`",
            ),
            (
                "command = \"x\"\n[models.A]\ncommand = \"sh -c 'echo {mdl}'\"",
                "line 3, column 11",
                "`{mdl}` in `command`",
            ),
            (
                "command = \"x\"\n[models.A]\nworkdir = \"{x}\"",
                "line 3, column 11",
                "`{x}` in `workdir`",
            ),
            (
                "command = \"x\"\n[models.A]\nargs = [\"--ok={attempt}\", \"--m={mod}\"]",
                "line 3, column 8",
                "`{mod}` in `args`",
            ),
        ];
        for (text, position, want) in cases {
            let err = refused(text);
            assert!(
                err.contains(want) && err.contains(position),
                "{text}: {err}"
            );
            assert!(err.contains("{model}, {group}"), "{err}");
        }
        // Known ones, `${NAME}` for the shell, and braces around no plain name all pass.
        let text = "command = \"sh -c 'echo ${HOME} {model} {group} {attempt} | awk \\\"{print $1}\\\"'\"\n\
                    workdir = \"/m/{group}/{model}\"";
        let spec = Spec::parse(Path::new("s.toml"), text).unwrap();
        let plan = spec.plan_for("G/m", None);
        assert_eq!(
            plan.command,
            [
                "sh",
                "-c",
                "echo ${HOME} G/m G {attempt} | awk \"{print $1}\""
            ]
        );
        assert_eq!(plan.workdir.as_deref(), Some("/m/G/G/m"));
    }

    #[test]
    fn commands_split_like_a_posix_shell_or_come_as_words() {
        let text = "command = \"sh -c 'echo a; echo b' \\\"two words\\\" x\\\\ y\"";
        let spec = Spec::parse(Path::new("s.toml"), text).unwrap();
        assert_eq!(
            spec.plan_for("M", None).command,
            ["sh", "-c", "echo a; echo b", "two words", "x y"]
        );
        let text = "command = [\"sh\", \"-c\", \"echo '{model}'; echo b\"]";
        let spec = Spec::parse(Path::new("s.toml"), text).unwrap();
        assert_eq!(
            spec.plan_for("G/m", None).command,
            ["sh", "-c", "echo 'G/m'; echo b"]
        );
        // A placeholder is filled inside its word: a name with a space stays one argument.
        let text = "command = \"kipoi test {model}\"";
        let spec = Spec::parse(Path::new("s.toml"), text).unwrap();
        assert_eq!(
            spec.plan_for("odd name", None).command,
            ["kipoi", "test", "odd name"]
        );
        let cases = [
            (
                "command = \"sh -c 'echo a\"",
                "line 1, column 11",
                "does not split like a shell",
            ),
            ("command = []", "line 1, column 11", "the command is empty"),
            (
                "command = \"   \"",
                "line 1, column 11",
                "the command is empty",
            ),
            (
                "command = 3",
                "line 1, column 11",
                "a string (split like a POSIX shell)",
            ),
            (
                "command = [\"a\", 3]",
                "line 1, column 17",
                "expected a string",
            ),
            (
                "command = \"x\"\n[models.A]\ncommand = \"a 'b\"",
                "line 3, column 11",
                "does not split like a shell",
            ),
        ];
        for (text, position, want) in cases {
            let err = refused(text);
            assert!(
                err.contains(want) && err.contains(position),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn a_model_table_is_merged_key_by_key_over_its_group() {
        let text = r#"
command = "run {model}"
timeout = "10m"
[models.G]
expect_failure = "dead links"
args = ["--group-arg"]
timeout = "1h"
memory = "1g"
workdir = "/g"
[models."G/args"]
args = ["--own={group}"]
[models."G/noargs"]
args = []
[models."G/skip"]
skip = "too big"
[models."G/cmd"]
command = "other {model}"
memory = "2g"
[models.H]
skip = "no GPU"
[models."H/pass"]
expect_failure = "broken"
"#;
        let spec = Spec::parse(Path::new("s.toml"), text).unwrap();
        // Adding args keeps the group's mark, limits and workdir; the model's args replace the
        // group's.
        let plan = spec.plan_for("G/args", None);
        assert_eq!(plan.command, ["run", "G/args", "--own=G"]);
        assert_eq!(plan.expect_failure.as_deref(), Some("dead links"));
        assert_eq!(plan.timeout, Duration::from_secs(3600));
        assert_eq!(plan.memory, Some(1 << 30));
        assert_eq!(plan.workdir.as_deref(), Some("/g"));
        assert_eq!(spec.plan_for("G/noargs", None).command, ["run", "G/noargs"]);
        // A model's mark replaces the group's (never both).
        let plan = spec.plan_for("G/skip", None);
        assert_eq!(plan.skip.as_deref(), Some("too big"));
        assert_eq!(plan.expect_failure, None);
        assert_eq!(plan.command, ["run", "G/skip", "--group-arg"]);
        let plan = spec.plan_for("H/pass", None);
        assert_eq!(plan.skip, None);
        assert_eq!(plan.expect_failure.as_deref(), Some("broken"));
        // The model's own command gets the group's args unless it sets its own.
        let plan = spec.plan_for("G/cmd", None);
        assert_eq!(plan.command, ["other", "G/cmd", "--group-arg"]);
        assert_eq!(plan.memory, Some(2 << 30));
        assert_eq!(plan.expect_failure.as_deref(), Some("dead links"));
        // A model with no table of its own takes the group's; others take the top level.
        let plan = spec.plan_for("G/plain", None);
        assert_eq!(plan.command, ["run", "G/plain", "--group-arg"]);
        assert_eq!(spec.plan_for("Z/x", None).timeout, Duration::from_secs(600));
        // `--timeout` still wins over both tables.
        let plan = spec.plan_for("G/args", Some(Duration::from_secs(5)));
        assert_eq!(plan.timeout, Duration::from_secs(5));
    }

    #[test]
    fn predictions_and_output_go_together() {
        let cases = [
            (
                "command = \"run -o {output}\"",
                "line 1, column 19",
                "need a `[predictions]` table",
            ),
            (
                "command = \"run {output}\"\n[predictions]\ndecimal = 6",
                "line 2, column 1",
                "needs `file`",
            ),
            (
                "command = \"run {output}\"\n[predictions]\nfile = \"p.h5\"\ndecimal = 6\natol = 1",
                "line 2, column 1",
                "choose one",
            ),
            (
                "command = \"x\"\n[predictions]\nfile = \"../p.h5\"",
                "line 3, column 8",
                "plain file name",
            ),
            (
                "command = \"x\"\n[predictions]\nfile = \"p.h5\"\ndecimal = 16",
                "line 4, column 11",
                "0 to 15",
            ),
            (
                "command = \"x\"\n[predictions]\nfile = \"p.h5\"\natol = -1.0",
                "line 4, column 8",
                "0 or more",
            ),
            (
                "command = \"x\"\n[predictions]\nfile = \"p.h5\"\n[models.A.predictions]\nrtol = 1\ndecimal = 2",
                "line 4, column 9",
                "[models.\"A\".predictions]: `decimal` and `rtol`/`atol`",
            ),
        ];
        for (text, position, want) in cases {
            let err = refused(text);
            assert!(
                err.contains(want) && err.contains(position),
                "{text}: {err}"
            );
        }
        // A model's table over the top level's; `{output}` filled, `{model}` in the reference.
        let text = "command = \"kipoi test {model} -o {output}\"\n[predictions]\n\
                    file = \"p.tsv\"\nreference = \"/m/{model}/expect.tsv\"\ndecimal = 5\n\
                    [models.\"G/m\".predictions]\natol = 0.5\n\
                    [models.off.predictions]\ncheck = false";
        let spec = Spec::parse(Path::new("s.toml"), text).unwrap();
        let plan = spec.plan_for("G/m", None);
        assert_eq!(
            plan.command,
            ["kipoi", "test", "G/m", "-o", "/zoo-runner/output/p.tsv"]
        );
        let check = plan.predictions.unwrap();
        assert_eq!(check.reference.as_deref(), Some("/m/G/m/expect.tsv"));
        assert_eq!(check.format, crate::config::predictions::Format::Tsv);
        assert_eq!(
            check.tolerance,
            crate::config::predictions::Tolerance::Close {
                rtol: 0.0,
                atol: 0.5
            }
        );
        assert_eq!(
            spec.plan_for("other", None).predictions.unwrap().tolerance,
            crate::config::predictions::Tolerance::Decimal(5)
        );
        assert_eq!(spec.plan_for("off", None).predictions, None);
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
                "-o",
                "/zoo-runner/output/predictions.h5",
                "--batch_size=2"
            ]
        );
        let check = kipoi
            .plan_for("Basenji", None)
            .predictions
            .expect("checked");
        assert_eq!(check.file, "predictions.h5");
        assert_eq!(check.reference, None);
        assert_eq!(
            check.tolerance,
            crate::config::predictions::Tolerance::Decimal(6)
        );
        assert!(kipoi.env.is_empty());
        assert_eq!(kipoi.caches, ["/root/.kipoi/models"]);
        assert!(kipoi.volumes.is_empty() && kipoi.versions.is_some());
        for pattern in [
            "HTTP Error 429",
            "503 Service Unavailable",
            "Connection reset by peer",
        ] {
            assert!(
                kipoi.infra_failures.iter().any(|p| p == pattern),
                "{pattern}"
            );
        }
        // The second zoo, by spec alone: every function has its own example command.
        let ants = Spec::load(&root.join("test-specs/antspynet.toml")).unwrap();
        assert_eq!(ants.caches, ["/home/antspyuser/.keras"]);
        assert_eq!(ants.apptainer_home.as_deref(), Some("/home/antspyuser"));
        let catalog =
            crate::select::catalog::Catalog::load(&root.join("test-specs/antspynet")).unwrap();
        let functions = catalog.models_of_image("cookpa/antspynet:latest").unwrap();
        assert!(functions.len() >= 4, "{functions:?}");
        for function in functions {
            let plan = ants.plan_for(function, None);
            assert_eq!(plan.command[..2], ["python", "-c"], "{function}");
            assert!(
                plan.command[2].contains(&format!("antspynet.{function}(")),
                "{function}: {}",
                plan.command[2]
            );
            assert_eq!(catalog.image_for(function), Some("cookpa/antspynet:latest"));
        }
        let fixtures = Spec::load(&root.join("fixtures/spec.toml")).unwrap();
        // The checked group writes its predictions; the others are left to kipoi's check.
        let checked = fixtures.plan_for("checked/two_outputs", None);
        assert_eq!(
            checked.predictions.as_ref().map(|p| p.reference.clone()),
            Some(Some("expect.h5".into()))
        );
        assert!(checked
            .command
            .contains(&"/zoo-runner/output/predictions.h5".to_string()));
        assert_eq!(fixtures.plan_for("tiny_linear", None).predictions, None);
        let faults = Spec::load(&root.join("fixtures/faults/spec.toml")).unwrap();
        assert_eq!(
            faults.plan_for("flaky", None).command,
            ["python3", "/faults/flaky.py", "{attempt}"]
        );
        assert_eq!(faults.plan_for("oom", None).memory, Some(128 << 20));
    }
}
