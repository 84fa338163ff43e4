//! The fixture registries (`fixtures/registry.sh`) work: the open one takes a push and serves
//! it, the other wants the fixture login and takes nothing else. All on loopback.

use crate::helpers::registry::{
    auth_registry, http_get, is_local, open_registry, push_fixture, DockerConfig,
};
use crate::helpers::{require_fixture_image, FIXTURE_IMAGE};

#[test]
fn open_registry_lists_and_serves_a_pushed_fixture_image() {
    require_fixture_image();
    let registry = open_registry();
    let pushed = push_fixture(FIXTURE_IMAGE, &registry, "fixture-open");

    let catalog = http_get(&registry.address, "/v2/_catalog?n=1000", None);
    assert_eq!(catalog.status, 200, "{catalog:?}");
    let repositories: serde_json::Value = serde_json::from_str(&catalog.body).unwrap();
    assert!(
        repositories["repositories"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r == pushed.repository.as_str())),
        "{}",
        catalog.body
    );
    let tags = http_get(
        &registry.address,
        &format!("/v2/{}/tags/list", pushed.repository),
        None,
    );
    let tags: serde_json::Value = serde_json::from_str(&tags.body).unwrap();
    assert!(
        tags["tags"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == pushed.tag.as_str())),
        "{tags}"
    );

    // A pull without any login downloads it (the stamp layer at least).
    assert!(!is_local(&pushed.image));
    let out = DockerConfig::empty().docker(&["pull", &pushed.image]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("Pull complete"), "{said}");
    assert!(is_local(&pushed.image));
}

#[test]
fn auth_registry_answers_401_without_the_login_and_200_with_it() {
    let registry = auth_registry();
    let (user, password) = registry.login().unwrap();

    let anonymous = http_get(&registry.address, "/v2/", None);
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    let challenge = anonymous.header("www-authenticate").unwrap_or_default();
    assert!(challenge.starts_with("Basic realm="), "{anonymous:?}");

    let wrong = http_get(&registry.address, "/v2/", Some((user, "not-the-password")));
    assert_eq!(wrong.status, 401, "{wrong:?}");
    let stranger = http_get(&registry.address, "/v2/", Some(("stranger", password)));
    assert_eq!(stranger.status, 401, "{stranger:?}");

    let right = http_get(&registry.address, "/v2/", Some((user, password)));
    assert_eq!(right.status, 200, "{right:?}");
}

#[test]
fn auth_registry_serves_a_pushed_image_to_the_login_only() {
    require_fixture_image();
    let registry = auth_registry();
    let pushed = push_fixture(FIXTURE_IMAGE, &registry, "fixture-auth");
    let path = format!("/v2/{}/tags/list", pushed.repository);
    assert_eq!(http_get(&registry.address, &path, None).status, 401);
    let tags = http_get(&registry.address, &path, registry.login());
    assert_eq!(tags.status, 200, "{tags:?}");
    assert!(tags.body.contains(&pushed.tag), "{}", tags.body);

    for (config, what) in [
        (DockerConfig::empty(), "no login"),
        (DockerConfig::wrong(&registry), "a wrong password"),
    ] {
        let out = config.docker(&["pull", &pushed.image]);
        assert!(!out.status.success(), "pulled with {what}");
        assert!(!is_local(&pushed.image), "pulled with {what}");
    }
    let out = DockerConfig::right(&registry).docker(&["pull", &pushed.image]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(is_local(&pushed.image));
}
