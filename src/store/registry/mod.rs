//! Registry credentials, found where and how the docker CLI finds them, for the pulls the
//! runner asks the daemon for (bollard's `create_image` takes them; the daemon reads none of
//! the client's files itself). And the message shown when a pull fails.
//!
//! Where: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`; no file means no
//! credentials. How, for the registry an image names ([`registry_host`]):
//!
//! 1. a helper in `credHelpers` for that registry, else the `credsStore` helper, is run as
//!    `docker-credential-NAME get` with the server address on stdin;
//! 2. otherwise its entry in `auths` (keyed by a bare host, a URL, or Docker Hub's
//!    `https://index.docker.io/v1/`): `auth` (base64 `user:password`), or `username` and
//!    `password`, and `identitytoken`.
//!
//! Not done: the default store the docker CLI picks when a config holds no credentials at all
//! and a `pass` or `secretservice` helper is installed, and the `DOCKER_AUTH_CONFIG` variable.
//! Unlike under the docker CLI, a helper has a deadline ([`HelperRun`], a minute by default) and
//! is stopped when the run is interrupted.

mod config;
mod helper;
mod pull_failure;
mod reference;
#[cfg(test)]
mod tests;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use bollard::auth::DockerCredentials;
use thiserror::Error;

// Also read by tests/registry_pull_messages.rs, which compiles this module on its own.
pub use helper::{HelperRun, HELPER_TIMEOUT};
#[allow(unused_imports)]
pub use pull_failure::{describe_pull_failure, PullFailure, PullFailureKind};
#[allow(unused_imports)]
pub use reference::{registry_host, server_address, DOCKER_HUB, DOCKER_HUB_SERVER};

#[derive(Debug, Error)]
pub enum AuthError {
    #[error("cannot read the docker config `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the docker config `{}` does not parse at line {line}, column {column}: fix it, or point \
         DOCKER_CONFIG at a folder with another config.json",
        path.display()
    )]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "the `auth` of `{key}` in the docker config `{}` is not base64 of `user:password` \
         ({reason}): run `docker login {registry}` again",
        path.display()
    )]
    BadAuth {
        path: PathBuf,
        key: String,
        registry: String,
        reason: String,
    },
    #[error(
        "the credential helper `{program}` for registry {registry} (set by {configured_in}) \
         cannot be run: install it on the PATH, or remove it from that config"
    )]
    HelperMissing {
        program: String,
        registry: String,
        configured_in: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the credential helper `{program}` for registry {registry} did not answer within {after} \
         and was stopped; run `{program} get` by hand to see why (a helper that waits for a \
         passphrase or a login cannot get one in a CI job)"
    )]
    HelperTimedOut {
        program: String,
        registry: String,
        after: String,
    },
    #[error(
        "the credential helper `{program}` for registry {registry} was stopped: the run was \
         interrupted"
    )]
    HelperInterrupted { program: String, registry: String },
    #[error("the credential helper `{program}` for registry {registry} could not be read")]
    HelperIo {
        program: String,
        registry: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the credential helper `{program}` failed for registry {registry} ({status}): {output}; \
         run `{program} get` by hand to see why, or `docker login {registry}` again"
    )]
    HelperFailed {
        program: String,
        registry: String,
        status: String,
        output: String,
    },
    #[error(
        "the credential helper `{program}` gave registry {registry} an answer that is not its \
         JSON (ServerURL, Username, Secret)"
    )]
    HelperAnswer {
        program: String,
        registry: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The folder of the docker CLI's `config.json`: `$DOCKER_CONFIG`, else `~/.docker`; `None`
/// when neither variable is set.
pub fn docker_config_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| PathBuf::from(home).join(".docker"))
}

/// The credentials the docker CLI would use to pull `image`, from its config folder
/// ([`docker_config_dir`]) and the credential helpers on the PATH. `None`: pull anonymously.
/// Runs a helper process when the config names one, as `run` says: call it off the async
/// threads.
pub fn credentials_for(
    image: &str,
    run: &HelperRun,
) -> Result<Option<DockerCredentials>, AuthError> {
    match docker_config_dir() {
        Some(dir) => credentials_in(&dir, image, None, run),
        None => Ok(None),
    }
}

/// Like [`credentials_for`], from `config_dir/config.json`, with credential helpers looked up
/// on `path_var` (the process's PATH when `None`).
pub fn credentials_in(
    config_dir: &Path,
    image: &str,
    path_var: Option<&OsStr>,
    run: &HelperRun,
) -> Result<Option<DockerCredentials>, AuthError> {
    let path = config_dir.join("config.json");
    let Some(file) = config::load(&path)? else {
        return Ok(None);
    };
    let host = registry_host(image);
    let server = server_address(&host);
    if let Some((helper, key)) = file.helper_for(&host) {
        return helper::Ask {
            helper,
            registry: &host,
            server: &server,
            configured_in: format!("`{key}` in `{}`", path.display()),
            path_var,
            run,
        }
        .get();
    }
    let Some((key, entry)) = file.auth_for(&host, &server) else {
        return Ok(None);
    };
    let mut credentials = DockerCredentials {
        serveraddress: Some(server.clone()),
        email: entry.email.clone().filter(|e| !e.is_empty()),
        identitytoken: entry.identitytoken.clone().filter(|t| !t.is_empty()),
        registrytoken: entry.registrytoken.clone().filter(|t| !t.is_empty()),
        ..Default::default()
    };
    match entry.auth.as_deref().filter(|a| !a.trim().is_empty()) {
        Some(auth) => {
            let (user, password) =
                config::decode_auth(auth).map_err(|reason| AuthError::BadAuth {
                    path: path.clone(),
                    key: key.to_string(),
                    registry: host.clone(),
                    reason,
                })?;
            credentials.username = Some(user);
            credentials.password = Some(password);
        }
        None => {
            credentials.username = entry.username.clone().filter(|u| !u.is_empty());
            credentials.password = entry.password.clone().filter(|p| !p.is_empty());
        }
    }
    let any = credentials.username.is_some()
        || credentials.password.is_some()
        || credentials.identitytoken.is_some()
        || credentials.registrytoken.is_some();
    Ok(any.then_some(credentials))
}
