//! The names of the facts in a JUnit report, in one place: which fact is a testsuite property
//! (the same for every case of an image), which is a line of a testcase's `system-out` (and,
//! in the extended flavour, a testcase property), and what each is called.

use crate::config::units::show_duration;
use crate::record::facts::RunFacts;
use crate::record::predictions::PredictionCheck;
use crate::record::Record;

/// Testsuite properties that come from the image, in the order they are written.
pub const IMAGE: &str = "image";
pub const IMAGE_ID: &str = "image-id";
pub const PULL_SECONDS: &str = "pull-seconds";
pub const PULLED_BYTES: &str = "pulled-bytes";
pub const VERSIONS: &str = "versions";

/// Per-case facts.
pub const COMMAND: &str = "command";
pub const CONTAINER: &str = "container";
pub const SIF: &str = "sif";
pub const SIF_MD5: &str = "sif-md5";
pub const CACHE: &str = "cache";
pub const ATTEMPTS: &str = "attempts";
/// The prediction check: its headline, then each output that differs (with its first elements
/// off), one fact line each; `merge` and the summary read them back from `system-out`.
pub const PREDICTIONS: &str = "predictions";
pub const PREDICTIONS_SAVED: &str = "predictions-saved";

/// The run's own facts, on every testsuite.
pub const RUN_ID: &str = "run-id";
pub const RUNNER_VERSION: &str = "zoo-runner-version";
pub const SPEC: &str = "spec";
pub const NETWORK: &str = "network";
pub const CACHES: &str = "caches";

/// `docker-version`, `singularity-version`: a runtime's version.
pub fn runtime_version(runtime: &str) -> String {
    format!("{runtime}-version")
}

/// The run's facts as properties.
pub fn run_properties(run: &RunFacts) -> Vec<(String, String)> {
    let mut props = vec![
        (RUN_ID.to_string(), run.run_id.clone()),
        (RUNNER_VERSION.to_string(), run.runner_version.clone()),
        (SPEC.to_string(), run.spec.clone()),
    ];
    if let Some(network) = &run.network {
        props.push((NETWORK.to_string(), network.clone()));
    }
    if let Some(caches) = &run.caches {
        props.push((CACHES.to_string(), caches.clone()));
    }
    for (runtime, version) in &run.runtime_versions {
        props.push((runtime_version(runtime.as_str()), version.clone()));
    }
    props
}

/// A record's image facts as testsuite properties: the image, its id (a SIF's md5 is a case
/// fact instead), the runtime's version, what making it ready took (0 when it was there),
/// and what the spec's `versions` command printed.
pub fn image_properties(r: &Record) -> Vec<(String, String)> {
    let mut props = vec![(IMAGE.to_string(), r.image.clone())];
    let Some(facts) = &r.image_facts else {
        return props;
    };
    if let (Some(id), None) = (&facts.id, &facts.sif) {
        props.push((IMAGE_ID.to_string(), id.clone()));
    }
    if let Some(version) = &facts.runtime_version {
        props.push((runtime_version(r.runtime.as_str()), version.clone()));
    }
    let fetched = facts.fetched.unwrap_or_default();
    props.push((
        PULL_SECONDS.to_string(),
        format!("{:.3}", fetched.elapsed.as_secs_f64()),
    ));
    props.push((PULLED_BYTES.to_string(), fetched.bytes.to_string()));
    if let Some(versions) = &facts.versions {
        props.push((VERSIONS.to_string(), versions.clone()));
    }
    props
}

/// A record's per-case facts, in the order its `system-out` says them.
pub fn case_facts(r: &Record) -> Vec<(String, String)> {
    let facts = &r.last.facts;
    let mut lines = Vec::new();
    if let Some(sif) = &facts.sif {
        lines.push((SIF.to_string(), sif.display().to_string()));
    }
    if !facts.command.is_empty() {
        lines.push((COMMAND.to_string(), facts.command.join(" ")));
    }
    for cache in &facts.caches {
        let mut line = format!("{} at {}", cache.source, cache.path);
        if cache.waited.as_secs() >= 1 {
            line.push_str(&format!(" (waited {} for it)", show_duration(cache.waited)));
        }
        lines.push((CACHE.to_string(), line));
    }
    if let Some(container) = &facts.container {
        lines.push((CONTAINER.to_string(), container.clone()));
    }
    if let Some(image) = &r.image_facts {
        if let (Some(md5), Some(_)) = (&image.id, &image.sif) {
            lines.push((SIF_MD5.to_string(), md5.clone()));
        }
    }
    if r.attempts() > 1 {
        lines.push((ATTEMPTS.to_string(), r.attempts().to_string()));
    }
    if let Some(check) = &facts.predictions {
        for line in prediction_lines(check) {
            lines.push((PREDICTIONS.to_string(), line));
        }
        if let Some(saved) = &check.saved {
            lines.push((PREDICTIONS_SAVED.to_string(), saved.display().to_string()));
        }
    }
    lines
}

/// What a report says of a prediction check, line by line: the headline, then the diff of
/// each output that differs.
pub fn prediction_lines(check: &PredictionCheck) -> Vec<String> {
    let diff = check.diff();
    let mut lines: Vec<String> = diff.lines().map(str::to_string).collect();
    // The diff's first line is the headline, after "predictions ".
    if let Some(first) = lines.first_mut() {
        *first = check.headline();
    }
    lines
}

/// Whether prediction lines read back say the predictions changed (the summary lists those).
pub fn predictions_changed(lines: &[String]) -> bool {
    lines.first().is_some_and(|l| l.starts_with("changed"))
}
