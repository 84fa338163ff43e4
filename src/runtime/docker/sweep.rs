//! The sweep: containers left by runs whose runner process is provably gone (killed outright)
//! are removed when a run opens the Docker runtime.

use std::collections::HashMap;

use bollard::query_parameters::ListContainersOptionsBuilder;

use super::DockerRuntime;
use crate::engine::labels::{self, LABEL_RUN, LABEL_RUNNER, RUNNER};
use crate::engine::{remove_container, short, Removed};

/// What a sweep did.
#[derive(Debug, Default)]
pub struct Sweep {
    pub removed: usize,
    /// Failures, each a sentence; the sweep went on after each.
    pub problems: Vec<String>,
}

impl DockerRuntime {
    /// Removes containers left by runs whose runner process is provably gone (killed outright).
    /// Only containers carrying the runner's label, made on this machine since its last boot and
    /// in this PID namespace, are judged: a pid means nothing elsewhere, so containers of
    /// runners in other namespaces or on other hosts sharing the daemon are never touched. One
    /// failed removal does not end the sweep.
    pub(super) async fn sweep_stale(&self) -> Sweep {
        let mut sweep = Sweep::default();
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{LABEL_RUNNER}={RUNNER}")],
        )]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers = match self.docker.list_containers(Some(options)).await {
            Ok(list) => list,
            Err(e) => {
                sweep.problems.push(format!(
                    "could not list containers of earlier runs: {}",
                    short(&e)
                ));
                return sweep;
            }
        };
        for container in containers {
            let labels = container.labels.unwrap_or_default();
            if labels.get(LABEL_RUN) == Some(&self.run_id)
                || !labels::made_here(&self.identity, &labels)
                || labels::run_is_alive(&labels)
            {
                continue;
            }
            let Some(id) = container.id else { continue };
            match remove_container(&self.docker, &id).await {
                Ok(Removed::Now) => sweep.removed += 1,
                // Another runner's sweep took it first.
                Ok(Removed::Elsewhere) => {}
                Err(e) => sweep.problems.push(format!(
                    "could not remove container {} of a killed run: {}",
                    id.chars().take(12).collect::<String>(),
                    short(&e)
                )),
            }
        }
        sweep
    }
}
