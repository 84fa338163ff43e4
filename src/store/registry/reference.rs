//! Which registry an image reference names, by Docker's normalization rules, and the names
//! the docker CLI files that registry's credentials under.

/// The registry of every image whose name has no registry host (`kipoi/kipoi-docker:tag`).
pub const DOCKER_HUB: &str = "docker.io";

/// The key of Docker Hub's entry in `config.json`, and the server address the docker CLI hands
/// a credential helper for Docker Hub.
pub const DOCKER_HUB_SERVER: &str = "https://index.docker.io/v1/";

/// The registry host of an image reference: the first path component when it is a host (it
/// holds a `.` or a `:`, is `localhost`, or has an upper-case letter, which a repository name
/// cannot), else Docker Hub (`docker.io`). Tags and digests do not matter. Docker Hub's legacy
/// name `index.docker.io` is Docker Hub too.
///
/// `127.0.0.1:5555/zoo/x:py3` -> `127.0.0.1:5555`; `kipoi/kipoi-docker:mmsplice` and `ubuntu`
/// -> `docker.io`.
pub fn registry_host(image: &str) -> String {
    let name = image.trim();
    // A digest holds no '/', but `name@sha256:...` with no '/' before it still names Docker Hub.
    let name = name.split_once('@').map_or(name, |(name, _)| name);
    match name.split_once('/') {
        Some((first, _)) if is_host(first) => normalize_host(first),
        _ => DOCKER_HUB.to_string(),
    }
}

fn is_host(component: &str) -> bool {
    component.contains(['.', ':'])
        || component == "localhost"
        || component.chars().any(|c| c.is_ascii_uppercase())
}

/// `index.docker.io` is Docker Hub's old name.
fn normalize_host(host: &str) -> String {
    if host == "index.docker.io" {
        DOCKER_HUB.to_string()
    } else {
        host.to_string()
    }
}

/// The host a `config.json` key names, as the docker CLI reads it: the keys may be bare hosts
/// (`127.0.0.1:5556`), URLs (`https://ghcr.io`, `http://host/v1/`), or Docker Hub's
/// `https://index.docker.io/v1/`.
pub fn host_of_key(key: &str) -> String {
    let key = key.trim();
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = rest.split_once('/').map_or(rest, |(host, _)| host);
    normalize_host(host)
}

/// The server address the docker CLI uses for a registry host: Docker Hub's URL for Docker
/// Hub, the host itself for any other registry.
pub fn server_address(host: &str) -> String {
    if host == DOCKER_HUB {
        DOCKER_HUB_SERVER.to_string()
    } else {
        host.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_without_a_host_is_docker_hub() {
        for image in [
            "ubuntu",
            "ubuntu:24.04",
            "kipoi/kipoi-docker:sharedpy3keras2tf2",
            "kipoi/kipoi-docker@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "library/ubuntu",
            "index.docker.io/kipoi/kipoi-docker:mmsplice",
            "docker.io/library/ubuntu:24.04",
            // No '/': `host:5000` is the repository `host` with the tag `5000`.
            "myhost:5000",
            "localhost",
        ] {
            assert_eq!(registry_host(image), DOCKER_HUB, "{image}");
        }
    }

    #[test]
    fn a_first_component_with_a_dot_a_colon_or_localhost_is_the_host() {
        let cases = [
            ("127.0.0.1:5555/zoo/x:py3", "127.0.0.1:5555"),
            ("127.0.0.1:5555/zoo/x@sha256:abcd", "127.0.0.1:5555"),
            ("ghcr.io/kipoi/kipoi-docker:mmsplice", "ghcr.io"),
            ("localhost/zoo", "localhost"),
            ("localhost:5000/zoo/x:1", "localhost:5000"),
            ("myhost:5000/zoo", "myhost:5000"),
            ("[::1]:5000/zoo:1", "[::1]:5000"),
            ("Registry/zoo", "Registry"),
            ("  quay.io/a/b:c  ", "quay.io"),
        ];
        for (image, host) in cases {
            assert_eq!(registry_host(image), host, "{image}");
        }
    }

    #[test]
    fn config_keys_name_their_host() {
        let cases = [
            ("127.0.0.1:5556", "127.0.0.1:5556"),
            ("http://127.0.0.1:5556/v1/", "127.0.0.1:5556"),
            ("https://ghcr.io", "ghcr.io"),
            ("https://index.docker.io/v1/", DOCKER_HUB),
            ("docker.io", DOCKER_HUB),
        ];
        for (key, host) in cases {
            assert_eq!(host_of_key(key), host, "{key}");
        }
    }

    #[test]
    fn docker_hub_has_the_cli_server_address() {
        assert_eq!(server_address(DOCKER_HUB), DOCKER_HUB_SERVER);
        assert_eq!(server_address("127.0.0.1:5556"), "127.0.0.1:5556");
    }
}
