//! `zoo_runner::store::registry` against the real Docker daemon and the fixture registries: credentials
//! read from config files (one written by `docker login` itself) open the auth registry, and
//! the daemon's own messages for a failed pull, through bollard's `create_image` as the runner
//! pulls, are described as what they are.

use bollard::auth::DockerCredentials;
use bollard::query_parameters::CreateImageOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt;

use crate::helpers::registry::{
    auth_registry, is_local, open_registry, push_fixture, DockerConfig,
};
use crate::helpers::{require_fixture_image, FIXTURE_IMAGE};
use zoo_runner::cancel;
use zoo_runner::store::registry::{
    self, credentials_in, describe_pull_failure, registry_host, PullFailureKind,
};

/// Pulls as the runner does; the daemon's message when the pull fails.
async fn pull(image: &str, credentials: Option<DockerCredentials>) -> Result<(), String> {
    let docker = Docker::connect_with_defaults().expect("a Docker client");
    let options = CreateImageOptionsBuilder::default()
        .from_image(image)
        .build();
    let mut progress = docker.create_image(Some(options), None, credentials);
    while let Some(item) = progress.next().await {
        match item {
            Ok(info) => {
                if let Some(message) = info.error_detail.and_then(|d| d.message) {
                    return Err(message);
                }
            }
            Err(bollard::errors::Error::DockerResponseServerError { message, .. }) => {
                return Err(message)
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

/// The credentials `config` holds for `image`, as the runner will read them.
fn credentials(config: &DockerConfig, image: &str) -> Option<DockerCredentials> {
    let helpers = registry::HelperRun {
        timeout: registry::HELPER_TIMEOUT,
        cancel: cancel::Cancel::new(),
    };
    credentials_in(config.path(), image, None, &helpers).expect("the config reads")
}

/// Pulls `image` with the credentials of `config` and returns how the failure is described.
async fn failed_pull(config: &DockerConfig, image: &str) -> registry::PullFailure {
    let credentials = credentials(config, image);
    let sent = credentials.is_some();
    let message = pull(image, credentials).await.expect_err("the pull fails");
    let failure = describe_pull_failure(image, &registry_host(image), sent, &message);
    let text = failure.to_string();
    assert!(text.contains(&format!("`{image}`")), "{text}");
    assert!(text.contains(&registry_host(image)), "{text}");
    assert!(text.contains(&message), "{text}");
    failure
}

#[tokio::test]
async fn the_login_from_a_config_file_opens_the_auth_registry() {
    require_fixture_image();
    let registry = auth_registry();
    let pushed = push_fixture(FIXTURE_IMAGE, &registry, "pull-with-login");

    let none = failed_pull(&DockerConfig::empty(), &pushed.image).await;
    assert_eq!(none.kind, PullFailureKind::NoCredentials, "{none}");
    let wrong = failed_pull(&DockerConfig::wrong(&registry), &pushed.image).await;
    assert_eq!(wrong.kind, PullFailureKind::WrongCredentials, "{wrong}");
    assert!(!is_local(&pushed.image));

    // The config as `docker login` writes it.
    let config = DockerConfig::logged_in(&registry);
    let found = credentials(&config, &pushed.image).expect("credentials after docker login");
    let (user, password) = registry.login().unwrap();
    assert_eq!(found.username.as_deref(), Some(user));
    assert_eq!(found.password.as_deref(), Some(password));
    pull(&pushed.image, Some(found))
        .await
        .expect("the pull with the login succeeds");
    assert!(is_local(&pushed.image));
}

#[tokio::test]
async fn a_tag_or_repository_the_registry_lacks_is_not_found() {
    let open = open_registry();
    let auth = auth_registry();
    let config = DockerConfig::right(&auth);
    for image in [
        format!("{}/zoo-runner-test/never-pushed:py3", open.address),
        format!("{}/zoo-runner-test/never-pushed:py3", auth.address),
    ] {
        let failure = failed_pull(&config, &image).await;
        assert_eq!(failure.kind, PullFailureKind::NotFound, "{failure}");
    }
}

#[tokio::test]
async fn a_registry_that_does_not_answer_is_unreachable() {
    // A loopback port held, for the whole test, by a socket that is bound but does not listen:
    // nothing accepts there (a connection is refused), and no other test's server can take the
    // port meanwhile (a port merely freed could be, with every test of the binary running).
    let holder = tokio::net::TcpSocket::new_v4().unwrap();
    holder.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = holder.local_addr().unwrap().port();
    let image = format!("127.0.0.1:{port}/zoo-runner-test/nowhere:py3");
    let failure = failed_pull(&DockerConfig::empty(), &image).await;
    assert_eq!(failure.kind, PullFailureKind::Unreachable, "{failure}");
    drop(holder);
}
