//! Credential helpers (`docker-credential-NAME`), run the way the docker CLI runs them:
//! `docker-credential-NAME get` with the server address on stdin, which prints
//! `{"ServerURL": ..., "Username": ..., "Secret": ...}`. Unlike under the docker CLI, a helper
//! has a deadline ([`HelperRun`]) and ends with the run (Ctrl-C): it runs supervised, in a
//! process group of its own, its output (a secret) kept in memory only.

use std::ffi::OsStr;
use std::time::Duration;

use bollard::auth::DockerCredentials;
use serde::Deserialize;

use super::AuthError;
use crate::cancel::Cancel;
use crate::config::units::show_duration;
use crate::supervise::process::{self, block_on};
use crate::supervise::{Ending, Limits};

/// What a helper prints (with exit status 1) when it has nothing for the server: the docker
/// CLI then pulls without credentials.
const NOT_FOUND: &str = "credentials not found in native keychain";
/// The user name that says the secret is an identity token (an OAuth refresh token).
const TOKEN_USER: &str = "<token>";
/// How much of a failing helper's output goes into the error.
const OUTPUT_SHOWN: usize = 500;
/// How much of a helper's output is read: an answer is a few hundred bytes.
const OUTPUT_KEPT: usize = 64 * 1024;
/// How long a credential helper may take before it is stopped. The docker CLI waits for ever
/// (a helper may ask for a passphrase); a CI job cannot.
pub const HELPER_TIMEOUT: Duration = Duration::from_secs(60);

/// How credential helpers are run: stopped past `timeout` ([`HELPER_TIMEOUT`] in a run), and
/// when the run is interrupted.
#[derive(Debug, Clone)]
pub struct HelperRun {
    pub timeout: Duration,
    pub cancel: Cancel,
}

#[derive(Debug, Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// Who asks: which helper, for which registry, and where the helper was configured.
pub(super) struct Ask<'a> {
    pub helper: &'a str,
    pub registry: &'a str,
    pub server: &'a str,
    /// `credHelpers` or `credsStore`, and the file.
    pub configured_in: String,
    /// The PATH to find the helper on; the process's own when `None`.
    pub path_var: Option<&'a OsStr>,
    pub run: &'a HelperRun,
}

impl Ask<'_> {
    fn program(&self) -> String {
        format!("docker-credential-{}", self.helper.trim())
    }

    /// The registry's credentials, or `None` when the helper has none for it. Runs the helper
    /// to its end (from code that is not async: a blocking thread, or a test).
    pub fn get(&self) -> Result<Option<DockerCredentials>, AuthError> {
        let program = self.program();
        let mut command = tokio::process::Command::new(&program);
        command.arg("get");
        if let Some(path) = self.path_var {
            command.env("PATH", path);
        }
        let limits = Limits::helper(self.run.timeout);
        let input = Some(self.server.as_bytes().to_vec());
        let running =
            process::run_in_memory(command, input, OUTPUT_KEPT, &limits, &self.run.cancel);
        let io_error = |source| AuthError::HelperIo {
            program: program.clone(),
            registry: self.registry.to_string(),
            source,
        };
        let done = block_on(running)
            .map_err(io_error)?
            .map_err(|e| AuthError::HelperMissing {
                program: program.clone(),
                registry: self.registry.to_string(),
                configured_in: self.configured_in.clone(),
                source: e.source,
            })?;
        let status = match done.ending {
            Ending::Exited(status) => status,
            Ending::TimedOut { .. }
            | Ending::Stuck {
                timed_out: true, ..
            } => {
                return Err(AuthError::HelperTimedOut {
                    program,
                    registry: self.registry.to_string(),
                    after: show_duration(self.run.timeout),
                })
            }
            Ending::Interrupted { .. } | Ending::Stuck { .. } => {
                return Err(AuthError::HelperInterrupted {
                    program,
                    registry: self.registry.to_string(),
                })
            }
            Ending::Lost(why) => return Err(io_error(std::io::Error::other(why))),
        };
        let stdout = done.stdout.finish().text();
        if !status.success() {
            if stdout.trim() == NOT_FOUND {
                return Ok(None);
            }
            let stderr = done.stderr.finish().text();
            return Err(AuthError::HelperFailed {
                program,
                registry: self.registry.to_string(),
                status: status.to_string(),
                output: shorten(format!("{} {}", stdout.trim(), stderr.trim()).trim()),
            });
        }
        let answer: HelperAnswer =
            serde_json::from_str(&stdout).map_err(|source| AuthError::HelperAnswer {
                program: program.clone(),
                registry: self.registry.to_string(),
                source,
            })?;
        Ok(credentials_of(answer, self.server))
    }
}

fn credentials_of(answer: HelperAnswer, server: &str) -> Option<DockerCredentials> {
    if answer.username.is_empty() && answer.secret.is_empty() {
        return None;
    }
    let mut credentials = DockerCredentials {
        serveraddress: Some(server.to_string()),
        ..Default::default()
    };
    if answer.username == TOKEN_USER {
        credentials.identitytoken = Some(answer.secret);
    } else {
        credentials.username = Some(answer.username);
        credentials.password = Some(answer.secret);
    }
    Some(credentials)
}

/// At most `OUTPUT_SHOWN` bytes, cut on a character boundary.
fn shorten(text: &str) -> String {
    if text.len() <= OUTPUT_SHOWN {
        return text.to_string();
    }
    let mut end = OUTPUT_SHOWN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_user_means_the_secret_is_an_identity_token() {
        let token = credentials_of(
            HelperAnswer {
                username: TOKEN_USER.into(),
                secret: "refresh".into(),
            },
            "ghcr.io",
        )
        .unwrap();
        assert_eq!(token.identitytoken.as_deref(), Some("refresh"));
        assert_eq!(token.username, None);
        assert_eq!(token.password, None);
        let user = credentials_of(
            HelperAnswer {
                username: "u".into(),
                secret: "p".into(),
            },
            "ghcr.io",
        )
        .unwrap();
        assert_eq!(
            (user.username.as_deref(), user.password.as_deref()),
            (Some("u"), Some("p"))
        );
        assert_eq!(user.serveraddress.as_deref(), Some("ghcr.io"));
    }

    #[test]
    fn long_helper_output_is_cut_on_a_char_boundary() {
        let text = "é".repeat(OUTPUT_SHOWN);
        let short = shorten(&text);
        assert!(short.len() <= OUTPUT_SHOWN + 3, "{}", short.len());
        assert!(short.ends_with("..."));
        assert_eq!(shorten("short"), "short");
    }
}
