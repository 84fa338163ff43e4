//! The spec's `versions` command (`pip freeze`, say): run once per runtime and image, before the
//! image's first case, with network `none` and no caches. Its output is the image's testsuite
//! property `versions` and is shown after the run, so that a failure can be traced to a package
//! that changed between two runs. The runtime runs it as any other request: it knows nothing of
//! it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;

use crate::config::units::show_duration;
use crate::record::RuntimeName;
use crate::run::verdict::{model_message, signal_name};
use crate::runtime::{Ended, Execution};

/// How long the command may run.
pub const TIMEOUT: Duration = Duration::from_secs(120);
/// Bytes of its output kept (head and tail each).
pub const KEEP: usize = 64 * 1024;
/// Lines of each image's output shown after the run.
const SHOWN_LINES: usize = 40;

type Key = (RuntimeName, String);

/// The command and, per runtime and image, what it printed. Shared by every case of a run.
#[derive(Debug)]
pub struct Versions {
    pub command: Vec<String>,
    found: Mutex<BTreeMap<Key, Arc<OnceCell<String>>>>,
}

impl Versions {
    pub fn new(command: Vec<String>) -> Versions {
        Versions {
            command,
            found: Mutex::default(),
        }
    }

    /// What the command printed in the image: `probe` runs it, unless it already ran (or is
    /// running) in this run.
    pub async fn once(
        &self,
        runtime: RuntimeName,
        image: &str,
        probe: impl std::future::Future<Output = String>,
    ) -> String {
        let slot = self
            .found
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((runtime, image.to_string()))
            .or_default()
            .clone();
        slot.get_or_init(|| probe).await.clone()
    }

    /// What each runtime and image printed, in order.
    pub fn results(&self) -> Vec<(Key, String)> {
        self.found
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(|(k, v)| v.get().map(|text| (k.clone(), text.clone())))
            .collect()
    }

    /// The lines shown after the run: each image's output, cut after [`SHOWN_LINES`] lines.
    pub fn summary(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for ((runtime, image), text) in self.results() {
            lines.push(format!(
                "versions in {runtime}:{image} (`{}`):",
                shell_words::join(&self.command)
            ));
            let all: Vec<&str> = text.lines().collect();
            lines.extend(all.iter().take(SHOWN_LINES).map(|l| format!("    {l}")));
            if all.len() > SHOWN_LINES {
                lines.push(format!(
                    "    ... {} more lines in the report (testsuite property `versions`)",
                    all.len() - SHOWN_LINES
                ));
            }
        }
        lines
    }
}

/// The text kept for a finished `versions` command: its output when it passed, else why not.
pub fn text_of(exec: Execution) -> String {
    let stdout = exec.stdout.finish().text();
    let stderr = exec.stderr.finish().text();
    let said = model_message(&stdout, &stderr)
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    match exec.ended {
        Ended::Exited { code: 0 } => stdout.trim_end().to_string(),
        Ended::Exited { code } => {
            format!("unknown: the versions command exited with {code}{said}")
        }
        Ended::Signalled { signal } => format!(
            "unknown: the versions command was killed by {}",
            signal_name(i64::from(signal))
        ),
        Ended::OutOfMemory { .. } => "unknown: the versions command ran out of memory".into(),
        Ended::Errored { error } => format!("unknown: {error}"),
        Ended::TimedOut { after, .. } => format!(
            "unknown: the versions command ran past {}",
            show_duration(after)
        ),
        Ended::Interrupted => "unknown: interrupted".to_string(),
        Ended::NotStarted { why } => format!("unknown: {why}"),
        Ended::Stuck { .. } => {
            "unknown: the versions command's container could not be stopped".to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{APPTAINER, DOCKER};

    #[tokio::test]
    async fn runs_once_per_image_and_runtime() {
        let versions = Versions::new(vec!["pip".into(), "freeze".into()]);
        let runs = std::sync::atomic::AtomicUsize::new(0);
        for _ in 0..3 {
            let text = versions
                .once(DOCKER, "img:1", async {
                    runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    "a==1\nb==2".to_string()
                })
                .await;
            assert_eq!(text, "a==1\nb==2");
        }
        versions
            .once(APPTAINER, "img:1", async { "a==1".to_string() })
            .await;
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(versions.results().len(), 2);
        let summary = versions.summary().join("\n");
        assert!(
            summary.contains("versions in docker:img:1 (`pip freeze`):\n    a==1\n    b==2"),
            "{summary}"
        );
    }
}
