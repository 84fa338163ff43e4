//! What a failed pull means, from the Docker daemon's message, said so that the user knows
//! which registry and image it is about and what to do.
//!
//! The phrases matched are the daemon's own (Docker 28, against Debian's docker-registry 2.8;
//! the unit tests keep the messages as recorded), plus Docker Hub's "pull access denied" and
//! rate limit, which no registry here can produce. Each phrase holds a space or ": ", which an
//! image reference cannot, so an image name quoted in the message never matches by itself.

use std::fmt;

/// What went wrong, as far as the daemon's message tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullFailureKind {
    /// The registry wants a login and none was sent.
    NoCredentials,
    /// The registry refused the credentials that were sent.
    WrongCredentials,
    /// Docker Hub's answer for a repository that is missing or that the login may not pull.
    AccessDenied,
    /// The registry has no such repository, tag or digest.
    NotFound,
    /// The registry did not answer (refused, timed out, unknown host).
    Unreachable,
    /// The registry's pull rate limit is reached (HTTP 429).
    RateLimited,
    /// None of the above.
    Other,
}

/// A failed pull, ready to show: `Display` names the image and the registry and says what to
/// do, then quotes the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullFailure {
    pub kind: PullFailureKind,
    pub image: String,
    pub registry: String,
    pub daemon_message: String,
}

impl std::error::Error for PullFailure {}

/// Classifies the daemon's message for a failed pull of `image` from `registry` (see
/// [`super::registry_host`]). `sent_credentials`: whether the pull carried credentials; a
/// registry's "unauthorized" means a login is missing when none was sent.
pub fn describe_pull_failure(
    image: &str,
    registry: &str,
    sent_credentials: bool,
    daemon_message: &str,
) -> PullFailure {
    let mut kind = classify(daemon_message);
    if kind == PullFailureKind::WrongCredentials && !sent_credentials {
        kind = PullFailureKind::NoCredentials;
    }
    PullFailure {
        kind,
        image: image.to_string(),
        registry: registry.to_string(),
        daemon_message: daemon_message.trim().to_string(),
    }
}

fn classify(message: &str) -> PullFailureKind {
    use PullFailureKind::*;
    let m = message.to_lowercase();
    let has = |phrases: &[&str]| phrases.iter().any(|p| m.contains(p));
    if has(&["toomanyrequests: ", "429 too many requests"]) {
        RateLimited
    } else if has(&["no basic auth credentials"]) {
        NoCredentials
    } else if has(&[
        "pull access denied",
        "requested access to the resource is denied",
    ]) {
        AccessDenied
    } else if has(&[
        "unauthorized: ",
        "401 unauthorized",
        "incorrect username or password",
    ]) {
        WrongCredentials
    } else if has(&[
        "manifest unknown",
        "name unknown",
        "repository name not known",
        "not found: manifest",
    ]) {
        NotFound
    } else if has(&[
        "connection refused",
        "context deadline exceeded",
        "client.timeout exceeded",
        "i/o timeout",
        "no such host",
        "network is unreachable",
        "no route to host",
        "connection reset by peer",
        "tls handshake timeout",
    ]) {
        Unreachable
    } else {
        Other
    }
}

impl PullFailure {
    /// Whether trying again later may work: a rate limit (429, `toomanyrequests`), a server
    /// error (5xx), a timeout or a reset connection. A login, a name or a tag that is wrong
    /// stays wrong, and so does a registry that refuses connections or a host that does not
    /// exist.
    pub fn is_transient(&self) -> bool {
        let m = self.daemon_message.to_lowercase();
        self.kind == PullFailureKind::RateLimited
            || [
                "500 internal server error",
                "502 bad gateway",
                "503 service unavailable",
                "504 gateway timeout",
                "504 gateway time-out",
                "unexpected http status: 5",
                "context deadline exceeded",
                "i/o timeout",
                "tls handshake timeout",
                "connection reset by peer",
            ]
            .iter()
            .any(|p| m.contains(p))
    }
}

const WHERE_LOGINS_ARE: &str = "zoo-runner reads logins where the docker CLI keeps them: \
    $DOCKER_CONFIG/config.json, else ~/.docker/config.json, and their credential helpers";

impl fmt::Display for PullFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (image, registry) = (&self.image, &self.registry);
        match self.kind {
            PullFailureKind::NoCredentials => write!(
                f,
                "cannot pull `{image}`: registry {registry} wants a login and none was found \
                 for it: run `docker login {registry}` as the user running zoo-runner \
                 ({WHERE_LOGINS_ARE})"
            ),
            PullFailureKind::WrongCredentials => write!(
                f,
                "cannot pull `{image}`: registry {registry} refused the login for it (wrong or \
                 expired user, password or token): run `docker login {registry}` again"
            ),
            PullFailureKind::AccessDenied => write!(
                f,
                "cannot pull `{image}`: registry {registry} denies it: the repository does not \
                 exist there, or it is private and the login in use may not pull it; check the \
                 image name in the catalog, or run `docker login {registry}` with an account \
                 that can pull it"
            ),
            PullFailureKind::NotFound => write!(
                f,
                "cannot pull `{image}`: registry {registry} has no such repository or tag; \
                 check the image name and tag in the catalog against what the registry holds"
            ),
            PullFailureKind::Unreachable => write!(
                f,
                "cannot pull `{image}`: registry {registry} does not answer; check that it is \
                 up and that the Docker daemon's machine can reach it (network, DNS, proxy), \
                 then run again"
            ),
            PullFailureKind::RateLimited => write!(
                f,
                "cannot pull `{image}`: registry {registry} refuses more pulls for now (rate \
                 limit); wait, or run `docker login {registry}` for a higher limit"
            ),
            PullFailureKind::Other => write!(f, "cannot pull `{image}` from registry {registry}"),
        }?;
        write!(f, " (the Docker daemon said: {})", self.daemon_message)
    }
}

#[cfg(test)]
mod tests {
    use super::PullFailureKind::*;
    use super::*;

    /// The Docker daemon's messages (Docker 28.2, `docker pull` and the Engine API's
    /// `POST /images/create`, which answer alike), recorded against the fixture registries
    /// (`fixtures/registry.sh`): open on 127.0.0.1:5555, htpasswd on 127.0.0.1:5556.
    const RECORDED: &[(&str, bool, PullFailureKind)] = &[
        // Auth registry, no credentials (HTTP 500).
        (
            "Head \"http://127.0.0.1:5556/v2/zoo-fixture/probe/manifests/py3\": no basic auth credentials",
            false,
            NoCredentials,
        ),
        // Auth registry, wrong password (HTTP 500).
        ("unauthorized: authentication required", true, WrongCredentials),
        // Open registry: a tag, a repository, a digest it lacks (HTTP 404).
        (
            "manifest for 127.0.0.1:5555/zoo-fixture/probe:nope not found: manifest unknown: manifest unknown",
            false,
            NotFound,
        ),
        (
            "manifest for 127.0.0.1:5555/zoo-fixture/nothere:py3 not found: manifest unknown: manifest unknown",
            false,
            NotFound,
        ),
        (
            "manifest for 127.0.0.1:5555/zoo-fixture/probe@sha256:0000000000000000000000000000000000000000000000000000000000000000 not found: manifest unknown: manifest unknown",
            false,
            NotFound,
        ),
        // Auth registry with the right login, a tag it lacks (HTTP 404).
        (
            "manifest for 127.0.0.1:5556/zoo-fixture/probe:nope not found: manifest unknown: manifest unknown",
            true,
            NotFound,
        ),
        // Nothing listens on the port (HTTP 500).
        (
            "Get \"http://127.0.0.1:9/v2/\": dial tcp 127.0.0.1:9: connect: connection refused",
            false,
            Unreachable,
        ),
        // A listener that accepts and never answers: the daemon gives up after about 25 s.
        (
            "Get \"http://127.0.0.1:5599/v2/\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
            false,
            Unreachable,
        ),
    ];

    /// Docker Hub's answers, from its documentation and public reports; no registry here gives
    /// them.
    const DOCKER_HUB_MESSAGES: &[(&str, bool, PullFailureKind)] = &[
        (
            "pull access denied for kipoi/nothere, repository does not exist or may require 'docker login': denied: requested access to the resource is denied",
            false,
            AccessDenied,
        ),
        (
            "toomanyrequests: You have reached your pull rate limit. You may increase the limit by authenticating and upgrading: https://www.docker.com/increase-rate-limit",
            false,
            RateLimited,
        ),
        ("unauthorized: incorrect username or password", true, WrongCredentials),
    ];

    #[test]
    fn recorded_daemon_messages_are_classified() {
        for (message, sent, want) in RECORDED.iter().chain(DOCKER_HUB_MESSAGES) {
            let failure = describe_pull_failure("img", "reg", *sent, message);
            assert_eq!(failure.kind, *want, "{message}");
        }
    }

    #[test]
    fn rate_limits_server_errors_and_timeouts_are_worth_another_pull() {
        let transient =
            |message: &str| describe_pull_failure("img", "reg", false, message).is_transient();
        assert!(transient(DOCKER_HUB_MESSAGES[1].0), "toomanyrequests");
        assert!(transient(RECORDED[RECORDED.len() - 1].0), "a timeout");
        assert!(transient(
            "received unexpected HTTP status: 503 Service Unavailable"
        ));
        assert!(transient("Get \"https://r/v2/\": 502 Bad Gateway"));
        for (message, _, kind) in RECORDED.iter().chain(DOCKER_HUB_MESSAGES) {
            if !matches!(kind, RateLimited) && !message.contains("deadline") {
                assert!(!transient(message), "{message}");
            }
        }
    }

    #[test]
    fn unauthorized_without_credentials_means_a_login_is_missing() {
        // Token registries (Docker Hub, ghcr.io) say "unauthorized" to an anonymous pull.
        let failure = describe_pull_failure(
            "img",
            "ghcr.io",
            false,
            "unauthorized: authentication required",
        );
        assert_eq!(failure.kind, NoCredentials);
    }

    #[test]
    fn an_image_name_alone_does_not_decide_the_kind() {
        let message = "Get \"http://127.0.0.1:9/v2/unauthorized/manifest-unknown/\": something new";
        let failure = describe_pull_failure(
            "127.0.0.1:9/unauthorized/manifest-unknown:1",
            "127.0.0.1:9",
            true,
            message,
        );
        assert_eq!(failure.kind, Other);
    }

    #[test]
    fn every_message_names_the_image_and_registry_and_quotes_the_daemon() {
        let image = "127.0.0.1:5556/zoo/x:py3";
        let registry = "127.0.0.1:5556";
        for (message, sent, kind) in RECORDED.iter().chain(DOCKER_HUB_MESSAGES) {
            let text = describe_pull_failure(image, registry, *sent, message).to_string();
            assert!(text.contains(&format!("`{image}`")), "{text}");
            assert!(text.contains(&format!("registry {registry}")), "{text}");
            assert!(
                text.ends_with(&format!("(the Docker daemon said: {message})")),
                "{text}"
            );
            let advice = match kind {
                NoCredentials | WrongCredentials | AccessDenied | RateLimited => "docker login",
                NotFound => "check the image name and tag",
                Unreachable => "does not answer",
                Other => "",
            };
            assert!(text.contains(advice), "{kind:?}: {text}");
        }
    }

    #[test]
    fn an_unknown_message_is_other_and_kept_whole() {
        let failure = describe_pull_failure("a/b", "docker.io", false, "  something new  ");
        assert_eq!(failure.kind, Other);
        assert_eq!(
            failure.to_string(),
            "cannot pull `a/b` from registry docker.io (the Docker daemon said: something new)"
        );
    }
}
