//! `credentials_in` on real config files in temporary folders, and credential helpers played by
//! a stand-in script (a stand-in for the third-party `docker-credential-*` binaries).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::*;

const AUTH_REGISTRY: &str = "127.0.0.1:5556";
const IMAGE: &str = "127.0.0.1:5556/zoo/tiny:py3";
const HUB_IMAGE: &str = "kipoi/kipoi-docker:mmsplice";

fn config_dir(json: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), json).unwrap();
    dir
}

fn basic(user: &str, password: &str) -> String {
    STANDARD.encode(format!("{user}:{password}"))
}

fn lookup(dir: &Path, image: &str) -> Result<Option<DockerCredentials>, AuthError> {
    credentials_in(dir, image, None, &run())
}

/// Helpers run with the run's deadline and a cancel nobody raises.
fn run() -> HelperRun {
    HelperRun {
        timeout: HELPER_TIMEOUT,
        cancel: crate::cancel::Cancel::new(),
    }
}

fn user_password(c: &DockerCredentials) -> (Option<&str>, Option<&str>) {
    (c.username.as_deref(), c.password.as_deref())
}

#[test]
fn no_config_file_means_no_credentials() {
    let dir = tempfile::tempdir().unwrap();
    assert!(lookup(dir.path(), IMAGE).unwrap().is_none());
    assert!(lookup(&dir.path().join("absent"), IMAGE).unwrap().is_none());
    let empty = config_dir("");
    assert!(lookup(empty.path(), IMAGE).unwrap().is_none());
}

#[test]
fn a_config_that_does_not_parse_names_the_file_and_the_position() {
    let dir = config_dir("{\n  \"auths\": {\n    \"127.0.0.1:5556\": {\"auth\": 12,}\n  }\n}\n");
    let err = lookup(dir.path(), IMAGE).unwrap_err();
    let AuthError::Parse { path, line, .. } = &err else {
        panic!("a parse error: {err:?}");
    };
    assert_eq!(path, &dir.path().join("config.json"));
    assert_eq!(*line, 3);
    let text = err.to_string();
    assert!(
        text.contains(&dir.path().join("config.json").display().to_string()),
        "{text}"
    );
    assert!(text.contains("line 3, column"), "{text}");
}

#[test]
fn a_config_folder_that_is_a_file_is_a_read_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("config.json")).unwrap();
    let err = lookup(dir.path(), IMAGE).unwrap_err();
    assert!(matches!(err, AuthError::Read { .. }), "{err:?}");
}

#[test]
fn auths_keys_match_by_host_whatever_their_form() {
    for key in [
        "127.0.0.1:5556",
        "http://127.0.0.1:5556",
        "http://127.0.0.1:5556/v1/",
        "https://127.0.0.1:5556/v2/",
    ] {
        let json = format!(
            r#"{{"auths": {{"{key}": {{"auth": "{}"}}, "other.example:1": {{"auth": "{}"}}}}}}"#,
            basic("zoo-tester", "right"),
            basic("someone", "else")
        );
        let dir = config_dir(&json);
        let c = lookup(dir.path(), IMAGE).unwrap().expect("credentials");
        assert_eq!(
            user_password(&c),
            (Some("zoo-tester"), Some("right")),
            "{key}"
        );
        assert_eq!(c.serveraddress.as_deref(), Some(AUTH_REGISTRY), "{key}");
        assert_eq!(
            c.auth, None,
            "the daemon gets the decoded user and password"
        );
    }
}

#[test]
fn docker_hub_images_use_the_index_key() {
    let json = format!(
        r#"{{"auths": {{"https://index.docker.io/v1/": {{"auth": "{}"}}, "127.0.0.1:5556": {{"auth": "{}"}}}}}}"#,
        basic("hub-user", "hub-pass"),
        basic("zoo-tester", "right")
    );
    let dir = config_dir(&json);
    let hub = lookup(dir.path(), HUB_IMAGE)
        .unwrap()
        .expect("hub credentials");
    assert_eq!(user_password(&hub), (Some("hub-user"), Some("hub-pass")));
    assert_eq!(hub.serveraddress.as_deref(), Some(DOCKER_HUB_SERVER));
    let local = lookup(dir.path(), IMAGE)
        .unwrap()
        .expect("local credentials");
    assert_eq!(user_password(&local), (Some("zoo-tester"), Some("right")));
    // A registry with no entry pulls anonymously.
    assert!(lookup(dir.path(), "127.0.0.1:5555/zoo/tiny:py3")
        .unwrap()
        .is_none());
}

#[test]
fn the_exact_server_key_wins_over_another_key_of_the_same_host() {
    let json = format!(
        r#"{{"auths": {{"http://127.0.0.1:5556/v1/": {{"auth": "{}"}}, "127.0.0.1:5556": {{"auth": "{}"}}}}}}"#,
        basic("old", "x"),
        basic("exact", "y")
    );
    let dir = config_dir(&json);
    let c = lookup(dir.path(), IMAGE).unwrap().unwrap();
    assert_eq!(user_password(&c), (Some("exact"), Some("y")));
}

#[test]
fn username_password_and_tokens_are_read_when_there_is_no_auth() {
    let dir = config_dir(
        r#"{"auths": {"127.0.0.1:5556": {"username": "u", "password": "p", "email": "u@example.org"},
                      "ghcr.io": {"identitytoken": "refresh-token"}}}"#,
    );
    let c = lookup(dir.path(), IMAGE).unwrap().unwrap();
    assert_eq!(user_password(&c), (Some("u"), Some("p")));
    assert_eq!(c.email.as_deref(), Some("u@example.org"));
    let token = lookup(dir.path(), "ghcr.io/kipoi/x:1").unwrap().unwrap();
    assert_eq!(token.identitytoken.as_deref(), Some("refresh-token"));
    assert_eq!(token.username, None);
    assert_eq!(token.serveraddress.as_deref(), Some("ghcr.io"));
}

#[test]
fn an_empty_entry_is_no_credentials() {
    // What `docker login` leaves in `auths` when a credential store holds the secret.
    let dir = config_dir(r#"{"auths": {"127.0.0.1:5556": {}}, "psFormat": "table"}"#);
    assert!(lookup(dir.path(), IMAGE).unwrap().is_none());
}

#[test]
fn an_auth_that_is_not_user_colon_password_names_the_key_and_file() {
    let json = format!(
        r#"{{"auths": {{"http://127.0.0.1:5556": {{"auth": "{}"}}}}}}"#,
        STANDARD.encode("no-colon")
    );
    let dir = config_dir(&json);
    let err = lookup(dir.path(), IMAGE).unwrap_err();
    assert!(matches!(err, AuthError::BadAuth { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("`http://127.0.0.1:5556`"), "{text}");
    assert!(text.contains(&dir.path().display().to_string()), "{text}");
    assert!(text.contains("docker login 127.0.0.1:5556"), "{text}");
}

/// A folder with a stand-in `docker-credential-NAME` (a stand-in for a third-party credential
/// helper): it saves what it read on stdin and its arguments beside itself, then prints
/// `stdout` and exits with `code`.
struct StandInHelper {
    dir: tempfile::TempDir,
    name: String,
}

impl StandInHelper {
    fn new(name: &str, stdout: &str, code: i32) -> StandInHelper {
        let script = format!(
            "#!/bin/sh\n# stand-in for a docker credential helper\n\
             printf '%s' \"$*\" > \"$(dirname \"$0\")/args-{name}\"\n\
             cat > \"$(dirname \"$0\")/stdin-{name}\"\n\
             printf '%s' '{stdout}'\nexit {code}\n"
        );
        StandInHelper::with_script(name, &script)
    }

    /// A stand-in helper that never answers: it ignores SIGTERM, starts a `sleep` that does too
    /// (its pid saved beside it as `sleep-NAME`), and waits for it.
    fn hanging(name: &str) -> StandInHelper {
        StandInHelper::with_script(
            name,
            &format!(
                "#!/bin/sh\n# stand-in for a docker credential helper that never answers\n\
                 trap '' TERM\nsleep 600 &\necho $! > \"$(dirname \"$0\")/sleep-{name}\"\nwait\n"
            ),
        )
    }

    fn with_script(name: &str, script: &str) -> StandInHelper {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join(format!("{name}.src"));
        std::fs::write(&source, script).unwrap();
        // Installed by another process, so that no descriptor of this (multi-threaded) test
        // process has the script open for writing when it runs ("text file busy").
        let status = Command::new("install")
            .arg("-m")
            .arg("755")
            .arg(&source)
            .arg(dir.path().join(format!("docker-credential-{name}")))
            .status()
            .unwrap();
        assert!(status.success());
        StandInHelper {
            dir,
            name: name.to_string(),
        }
    }

    /// True while the process whose pid the helper saved in `file` runs (a zombie does not).
    /// Whether what the helper started (its pid in `file`) still runs; a helper stopped before
    /// it started anything has nothing left running.
    fn still_running(&self, file: &str) -> bool {
        std::fs::read_to_string(self.file(file))
            .is_ok_and(|pid| crate::supervise::process::still_running(&pid))
    }

    fn path_var(&self) -> OsString {
        let mut path = self.dir.path().as_os_str().to_owned();
        path.push(":/usr/bin:/bin");
        path
    }

    /// What the helper read on stdin and its arguments, or `None` when it never ran.
    fn asked(&self) -> Option<(String, String)> {
        let read = |what: &str| -> Option<String> {
            std::fs::read_to_string(self.file(&format!("{what}-{}", self.name))).ok()
        };
        Some((read("stdin")?, read("args")?))
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

const HELPER_ANSWER: &str =
    r#"{"ServerURL":"ignored","Username":"helper-user","Secret":"helper-secret"}"#;

#[test]
fn cred_helpers_are_asked_with_the_server_address_on_stdin() {
    let helper = StandInHelper::new("standin", HELPER_ANSWER, 0);
    let dir =
        config_dir(r#"{"credHelpers": {"127.0.0.1:5556": "standin", "docker.io": "standin"}}"#);
    let path = helper.path_var();
    let c = credentials_in(dir.path(), IMAGE, Some(&path), &run())
        .unwrap()
        .expect("credentials from the helper");
    assert_eq!(
        user_password(&c),
        (Some("helper-user"), Some("helper-secret"))
    );
    assert_eq!(c.serveraddress.as_deref(), Some(AUTH_REGISTRY));
    assert_eq!(helper.asked(), Some((AUTH_REGISTRY.into(), "get".into())));
    credentials_in(dir.path(), HUB_IMAGE, Some(&path), &run())
        .unwrap()
        .unwrap();
    assert_eq!(
        helper.asked(),
        Some((DOCKER_HUB_SERVER.into(), "get".into()))
    );
}

#[test]
fn a_token_user_from_a_helper_gives_an_identity_token() {
    let helper = StandInHelper::new(
        "standin",
        r#"{"ServerURL":"127.0.0.1:5556","Username":"<token>","Secret":"refresh"}"#,
        0,
    );
    let dir = config_dir(r#"{"credsStore": "standin"}"#);
    let c = credentials_in(dir.path(), IMAGE, Some(&helper.path_var()), &run())
        .unwrap()
        .unwrap();
    assert_eq!(c.identitytoken.as_deref(), Some("refresh"));
    assert_eq!(c.username, None);
}

#[test]
fn creds_store_serves_every_registry_and_a_cred_helper_wins_over_it() {
    let store = StandInHelper::new("store", HELPER_ANSWER, 0);
    let json = format!(
        r#"{{"credsStore": "store", "credHelpers": {{"ghcr.io": "own"}},
            "auths": {{"127.0.0.1:5556": {{"auth": "{}"}}}}}}"#,
        basic("file-user", "file-pass")
    );
    let dir = config_dir(&json);
    // The store wins over `auths`, as under the docker CLI.
    let c = credentials_in(dir.path(), IMAGE, Some(&store.path_var()), &run())
        .unwrap()
        .unwrap();
    assert_eq!(
        user_password(&c),
        (Some("helper-user"), Some("helper-secret"))
    );
    // ghcr.io has its own helper, which is not on this PATH: the store is not asked instead.
    let err =
        credentials_in(dir.path(), "ghcr.io/a/b:1", Some(&store.path_var()), &run()).unwrap_err();
    assert!(
        matches!(&err, AuthError::HelperMissing { program, .. } if program == "docker-credential-own"),
        "{err:?}"
    );
}

#[test]
fn a_missing_helper_names_the_helper_the_registry_and_the_config() {
    let empty = tempfile::tempdir().unwrap();
    let dir = config_dir(r#"{"credsStore": "nowhere"}"#);
    let err =
        credentials_in(dir.path(), IMAGE, Some(empty.path().as_os_str()), &run()).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, AuthError::HelperMissing { .. }), "{err:?}");
    assert!(text.contains("`docker-credential-nowhere`"), "{text}");
    assert!(text.contains("registry 127.0.0.1:5556"), "{text}");
    assert!(text.contains("`credsStore`"), "{text}");
    assert!(text.contains("config.json"), "{text}");
}

#[test]
fn a_failing_helper_names_the_helper_the_registry_and_what_it_said() {
    let helper = StandInHelper::new("standin", "keychain is locked", 3);
    let dir = config_dir(r#"{"credsStore": "standin"}"#);
    let err = credentials_in(dir.path(), IMAGE, Some(&helper.path_var()), &run()).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, AuthError::HelperFailed { .. }), "{err:?}");
    assert!(text.contains("`docker-credential-standin`"), "{text}");
    assert!(text.contains("registry 127.0.0.1:5556"), "{text}");
    assert!(text.contains("keychain is locked"), "{text}");
    assert!(text.contains("exit status: 3"), "{text}");
}

#[test]
fn a_helper_without_credentials_for_the_server_means_an_anonymous_pull() {
    let helper = StandInHelper::new("standin", "credentials not found in native keychain", 1);
    let dir = config_dir(r#"{"credsStore": "standin"}"#);
    let got = credentials_in(dir.path(), IMAGE, Some(&helper.path_var()), &run()).unwrap();
    assert!(got.is_none());
    assert!(helper.asked().is_some(), "the helper was asked");
}

#[test]
fn a_helper_answer_that_is_not_json_is_an_error() {
    let helper = StandInHelper::new("standin", "user=x secret=y", 0);
    let dir = config_dir(r#"{"credHelpers": {"127.0.0.1:5556": "standin"}}"#);
    let err = credentials_in(dir.path(), IMAGE, Some(&helper.path_var()), &run()).unwrap_err();
    assert!(matches!(err, AuthError::HelperAnswer { .. }), "{err:?}");
    assert!(err.to_string().contains("registry 127.0.0.1:5556"), "{err}");
}

#[test]
fn a_helper_that_never_answers_is_stopped_at_its_deadline_with_what_it_started() {
    let helper = StandInHelper::hanging("hang");
    let dir = config_dir(r#"{"credsStore": "hang"}"#);
    let run = HelperRun {
        timeout: std::time::Duration::from_millis(500),
        cancel: crate::cancel::Cancel::new(),
    };
    let err = credentials_in(dir.path(), IMAGE, Some(&helper.path_var()), &run).unwrap_err();
    assert!(matches!(err, AuthError::HelperTimedOut { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("`docker-credential-hang`"), "{text}");
    assert!(text.contains("registry 127.0.0.1:5556"), "{text}");
    assert!(text.contains("did not answer within 500ms"), "{text}");
    // It ignored SIGTERM: SIGKILL to its process group took it and its `sleep`.
    assert!(
        !helper.still_running("sleep-hang"),
        "the helper's sleep is gone"
    );
}

#[test]
fn an_interruption_stops_a_helper_that_never_answers() {
    let helper = StandInHelper::hanging("hang");
    let dir = config_dir(r#"{"credHelpers": {"127.0.0.1:5556": "hang"}}"#);
    let cancel = crate::cancel::Cancel::new();
    let run = HelperRun {
        timeout: HELPER_TIMEOUT,
        cancel: cancel.clone(),
    };
    let ctrl_c = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        cancel.raise(libc::SIGINT);
    });
    let err = credentials_in(dir.path(), IMAGE, Some(&helper.path_var()), &run).unwrap_err();
    ctrl_c.join().unwrap();
    assert!(
        matches!(err, AuthError::HelperInterrupted { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("`docker-credential-hang`"),
        "{err}"
    );
    assert!(
        !helper.still_running("sleep-hang"),
        "the helper's sleep is gone"
    );
}
