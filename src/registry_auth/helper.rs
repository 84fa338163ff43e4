//! Credential helpers (`docker-credential-NAME`), run the way the docker CLI runs them:
//! `docker-credential-NAME get` with the server address on stdin, which prints
//! `{"ServerURL": ..., "Username": ..., "Secret": ...}`.

use std::ffi::OsStr;
use std::io::Write;
use std::process::{Command, Stdio};

use bollard::auth::DockerCredentials;
use serde::Deserialize;

use super::AuthError;

/// What a helper prints (with exit status 1) when it has nothing for the server: the docker
/// CLI then pulls without credentials.
const NOT_FOUND: &str = "credentials not found in native keychain";
/// The user name that says the secret is an identity token (an OAuth refresh token).
const TOKEN_USER: &str = "<token>";
/// How much of a failing helper's output goes into the error.
const OUTPUT_SHOWN: usize = 500;

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
}

impl Ask<'_> {
    fn program(&self) -> String {
        format!("docker-credential-{}", self.helper.trim())
    }

    /// The registry's credentials, or `None` when the helper has none for it.
    pub fn get(&self) -> Result<Option<DockerCredentials>, AuthError> {
        let program = self.program();
        let mut command = Command::new(&program);
        command
            .arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(path) = self.path_var {
            command.env("PATH", path);
        }
        let mut child = command.spawn().map_err(|source| AuthError::HelperMissing {
            program: program.clone(),
            registry: self.registry.to_string(),
            configured_in: self.configured_in.clone(),
            source,
        })?;
        if let Some(mut stdin) = child.stdin.take() {
            // A helper that exits without reading closes the pipe; its exit status tells.
            let _ = stdin.write_all(self.server.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|source| AuthError::HelperIo {
                program: program.clone(),
                registry: self.registry.to_string(),
                source,
            })?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            if stdout.trim() == NOT_FOUND {
                return Ok(None);
            }
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(AuthError::HelperFailed {
                program,
                registry: self.registry.to_string(),
                status: out.status.to_string(),
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
