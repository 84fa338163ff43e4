//! The labels on every container and volume the runner makes: whose they are (runner, run,
//! pid with its start time, boot id, PID namespace) and what for. A sweep judges a container
//! only by these (see `crate::identity`).

use std::collections::HashMap;

use crate::identity::{process_start_time, Identity};

/// Labels on every container the runner creates.
pub const LABEL_RUNNER: &str = "org.zoo-runner.runner";
pub const LABEL_RUN: &str = "org.zoo-runner.run";
pub const LABEL_PID: &str = "org.zoo-runner.pid";
pub const LABEL_PID_START: &str = "org.zoo-runner.pid-start";
pub const LABEL_CASE: &str = "org.zoo-runner.case";
/// The boot id of the machine the runner runs on.
pub const LABEL_BOOT: &str = "org.zoo-runner.boot-id";
/// The PID namespace the runner's pid is valid in.
pub const LABEL_PID_NS: &str = "org.zoo-runner.pid-ns";
pub const RUNNER: &str = "zoo-runner";

/// The labels of a container the runner creates for `case` in run `run_id`.
pub fn for_container(run_id: &str, identity: &Identity, case: &str) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_RUNNER.to_string(), RUNNER.to_string()),
        (LABEL_RUN.to_string(), run_id.to_string()),
        (LABEL_PID.to_string(), std::process::id().to_string()),
        (
            LABEL_PID_START.to_string(),
            process_start_time(std::process::id()).unwrap_or_default(),
        ),
        (LABEL_BOOT.to_string(), identity.boot_id.clone()),
        (LABEL_PID_NS.to_string(), identity.pid_ns.clone()),
        (LABEL_CASE.to_string(), case.to_string()),
    ])
}

/// True when the labels say the container was made by a runner with this identity (same boot,
/// same PID namespace): only then does its pid mean anything here.
pub fn made_here(identity: &Identity, labels: &HashMap<String, String>) -> bool {
    identity.is(
        labels.get(LABEL_BOOT).map(String::as_str),
        labels.get(LABEL_PID_NS).map(String::as_str),
    )
}

/// A run is alive when the process its labels name exists and started when the labels say (so a
/// reused pid does not count).
pub fn run_is_alive(labels: &HashMap<String, String>) -> bool {
    let Some(pid) = labels.get(LABEL_PID).and_then(|p| p.parse::<u32>().ok()) else {
        return false;
    };
    crate::identity::is_alive(pid, labels.get(LABEL_PID_START).map(String::as_str))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_a_dead_one_is_not() {
        let me = std::process::id();
        let start = process_start_time(me).expect("own start time");
        let labels = |pid: u32, start: &str| {
            HashMap::from([
                (LABEL_PID.to_string(), pid.to_string()),
                (LABEL_PID_START.to_string(), start.to_string()),
            ])
        };
        assert!(run_is_alive(&labels(me, &start)));
        assert!(
            !run_is_alive(&labels(me, "1")),
            "same pid, other start: reused"
        );
        // Beyond the kernel's pid_max: no such process.
        assert!(!run_is_alive(&labels(4_194_305, "")));
        assert!(!run_is_alive(&HashMap::new()));
    }
}
