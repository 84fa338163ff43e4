//! A Docker container under the supervisor (`crate::supervise`), as a case's container runs:
//! stopped with Docker's stop (SIGTERM, the grace period,
//! then the daemon's own SIGKILL), killed with a kill request, waited for through the wait
//! endpoint. A daemon that never answers a request holds up nothing: the supervisor runs each
//! request beside the wait and its deadlines.

use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::query_parameters::{KillContainerOptionsBuilder, StopContainerOptionsBuilder};
use bollard::Docker;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;

use super::short;
use crate::config::units::show_duration;
use crate::supervise::{Control, Limits};

/// One container, for the supervisor.
pub struct Container<'a> {
    pub docker: &'a Docker,
    pub id: &'a str,
    /// How long the daemon gets to answer a request (said when it did not).
    pub request_timeout: Duration,
}

impl Container<'_> {
    /// The container's end: its exit code when the wait's reply gives one (a non-zero exit
    /// comes back from bollard as an error that carries no code); an error when the daemon
    /// could not be asked any more.
    pub async fn wait(&self) -> Result<Option<i64>, BollardError> {
        let mut waiting = Box::pin(self.docker.wait_container(self.id, None));
        match waiting.next().await {
            Some(Ok(reply)) => Ok(Some(reply.status_code)),
            Some(Err(BollardError::DockerContainerWaitError { .. })) | None => Ok(None),
            Some(Err(e)) => Err(e),
        }
    }
}

impl Control for Container<'_> {
    /// Docker's stop: SIGTERM, the grace period, then SIGKILL; answered once the container is
    /// gone.
    fn stop(&self, grace: Duration) -> BoxFuture<'_, Result<(), String>> {
        let options = StopContainerOptionsBuilder::default()
            .t(grace.as_secs().min(i32::MAX as u64) as i32)
            .build();
        Box::pin(async move {
            let result = self.docker.stop_container(self.id, Some(options)).await;
            request_result(result, self.request_timeout)
        })
    }

    fn kill(&self) -> BoxFuture<'_, Result<(), String>> {
        let options = KillContainerOptionsBuilder::default()
            .signal("SIGKILL")
            .build();
        Box::pin(async move {
            let result = self.docker.kill_container(self.id, Some(options)).await;
            request_result(result, self.request_timeout)
        })
    }

    /// Docker's stop kills by itself after the grace period: the runner's own kill comes only
    /// when the container is still there the slack after that.
    fn kill_after(&self, limits: &Limits) -> Duration {
        limits.grace.saturating_add(limits.slack)
    }
}

/// What to say about a stop or kill request: nothing when it worked or when its failure only
/// means the container is already gone or no longer running (404, 409).
fn request_result(result: Result<(), BollardError>, timeout: Duration) -> Result<(), String> {
    match result {
        Ok(())
        | Err(BollardError::DockerResponseServerError {
            status_code: 404 | 409,
            ..
        }) => Ok(()),
        Err(BollardError::RequestTimeoutError) => Err(format!(
            "the Docker daemon did not answer within {}",
            show_duration(timeout)
        )),
        Err(e) => Err(short(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn only_request_failures_that_matter_are_said() {
        let refused = |status_code| {
            Err(BollardError::DockerResponseServerError {
                status_code,
                message: "no".into(),
            })
        };
        assert_eq!(request_result(Ok(()), secs(3)), Ok(()));
        assert_eq!(request_result(refused(404), secs(3)), Ok(()), "gone");
        assert_eq!(request_result(refused(409), secs(3)), Ok(()), "not running");
        assert_eq!(
            request_result(Err(BollardError::RequestTimeoutError), secs(3)),
            Err("the Docker daemon did not answer within 3s".to_string())
        );
        let failed = request_result(refused(500), secs(3)).unwrap_err();
        assert!(failed.contains("HTTP 500"), "{failed}");
    }

    #[test]
    fn the_runner_kills_only_the_slack_after_dockers_own_kill() {
        let docker = Docker::connect_with_defaults().unwrap();
        let c = Container {
            docker: &docker,
            id: "x",
            request_timeout: secs(3),
        };
        let limits = Limits {
            timeout: None,
            grace: secs(10),
            slack: secs(30),
            slow: None,
            drain: secs(1),
        };
        assert_eq!(c.kill_after(&limits), secs(40));
    }
}
