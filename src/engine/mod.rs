//! The Docker Engine API as every Docker user of the runner needs it (the runtime, the caches,
//! `cache list|prune`): where the daemon is, the labels on what the runner makes, a container
//! under the supervisor ([`container`]), container removal that another runner may be doing
//! too, and bollard's errors in a line.

pub mod archive;
pub mod container;
pub mod labels;
pub mod tar;

use std::time::{Duration, Instant};

use bollard::errors::Error as BollardError;
use bollard::query_parameters::RemoveContainerOptionsBuilder;
use bollard::Docker;

use crate::error_chain::chain;

/// Where the docker CLI would connect.
pub fn docker_host() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".to_string())
}

/// How long a removal of a container waits for another one already under way (another
/// runner's sweep) to end before it tries again itself.
const REMOVAL_WAIT: Duration = Duration::from_secs(60);

/// How a container's removal ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    /// This request removed it.
    Now,
    /// Someone else did (another runner's sweep): it was gone already, or their removal,
    /// under way when ours came, has ended.
    Elsewhere,
}

/// Removes a container (and its anonymous volumes). One already gone, or whose removal someone
/// else has under way (HTTP 409 "already in progress"), is no error: the latter is waited for,
/// so that the container is gone when this returns.
pub async fn remove_container(docker: &Docker, id: &str) -> Result<Removed, BollardError> {
    match remove_once(docker, id).await {
        Err(e) if is_removal_in_progress(&e) => {}
        other => return other,
    }
    let deadline = Instant::now() + REMOVAL_WAIT;
    while Instant::now() < deadline {
        match docker.inspect_container(id, None).await {
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(Removed::Elsewhere),
            Err(e) => return Err(e),
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    // Their removal did not end (it may have failed): ours, once more.
    remove_once(docker, id).await
}

async fn remove_once(docker: &Docker, id: &str) -> Result<Removed, BollardError> {
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(id, Some(options)).await {
        Ok(()) => Ok(Removed::Now),
        Err(BollardError::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(Removed::Elsewhere),
        Err(e) => Err(e),
    }
}

/// The daemon's answer when another removal of the container is under way.
fn is_removal_in_progress(e: &BollardError) -> bool {
    matches!(e, BollardError::DockerResponseServerError { status_code: 409, message }
        if message.contains("already in progress"))
}

/// bollard's errors can be long (whole JSON bodies); keep what a person needs, with the causes
/// of transport errors ("error trying to connect: because No such file or directory").
pub fn short(e: &BollardError) -> String {
    match e {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => format!("{message} (HTTP {status_code})"),
        other => chain(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn two_removals_at_once_both_end_with_the_container_gone() {
        // 30000 files in its own layer: removing it takes long enough (a third of a second on
        // an idle machine) that the second removal comes while the first is under way, and
        // the daemon answers it 409 "already in progress".
        let name = format!("zoo-runner-unit-removal-{}", std::process::id());
        let made = std::process::Command::new("docker")
            .args([
                "run",
                "--name",
                &name,
                "--network",
                "none",
                "local/kipoi-fixture:py3",
            ])
            .args(["sh", "-c", "mkdir /d && cd /d && seq 1 30000 | xargs touch"])
            .output()
            .expect("the docker CLI runs");
        assert!(
            made.status.success(),
            "a container of the fixture image (bash fixtures/build.sh makes it): {}",
            String::from_utf8_lossy(&made.stderr)
        );
        let docker = Docker::connect_with_defaults().unwrap();
        let (a, b) = tokio::join!(
            remove_container(&docker, &name),
            remove_container(&docker, &name)
        );
        let mut ends = [a.unwrap(), b.unwrap()];
        ends.sort_by_key(|e| *e == Removed::Elsewhere);
        assert_eq!(ends, [Removed::Now, Removed::Elsewhere]);
        let gone = docker.inspect_container(&name, None).await;
        assert!(
            matches!(
                gone,
                Err(BollardError::DockerResponseServerError {
                    status_code: 404,
                    ..
                })
            ),
            "{gone:?}"
        );
    }
}
