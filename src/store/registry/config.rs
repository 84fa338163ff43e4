//! The docker CLI's `config.json`: the parts that say where a registry's credentials are
//! (`auths`, `credsStore`, `credHelpers`). Every other key is left alone.

use std::collections::BTreeMap;
use std::path::Path;

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use serde::Deserialize;

use super::reference::host_of_key;
use super::AuthError;

#[derive(Debug, Default, Deserialize)]
pub(super) struct ConfigFile {
    #[serde(default)]
    pub auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    pub creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    pub cred_helpers: BTreeMap<String, String>,
}

/// One registry's entry under `auths`.
#[derive(Debug, Default, Clone, Deserialize)]
pub(super) struct AuthEntry {
    /// base64 of `user:password`.
    pub auth: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub identitytoken: Option<String>,
    pub registrytoken: Option<String>,
    pub email: Option<String>,
}

/// The parsed file, or `None` when there is no such file.
pub(super) fn load(path: &Path) -> Result<Option<ConfigFile>, AuthError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(AuthError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    // The docker CLI takes an empty file for an empty config.
    if text.trim().is_empty() {
        return Ok(Some(ConfigFile::default()));
    }
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| AuthError::Parse {
            path: path.to_path_buf(),
            line: source.line(),
            column: source.column(),
            source,
        })
}

impl ConfigFile {
    /// The credential helper for a registry host: its own in `credHelpers`, else the
    /// `credsStore` for all registries. An empty name means none.
    pub fn helper_for(&self, host: &str) -> Option<(&str, &'static str)> {
        let own = self
            .cred_helpers
            .iter()
            .find(|(key, _)| host_of_key(key) == host)
            .map(|(_, helper)| (helper.as_str(), "credHelpers"));
        own.or_else(|| {
            self.creds_store
                .as_deref()
                .map(|helper| (helper, "credsStore"))
        })
        .filter(|(helper, _)| !helper.trim().is_empty())
    }

    /// The `auths` entry of a registry host, with its key: the key that is the server address
    /// itself first (as the docker CLI looks), else the first key naming the same host.
    pub fn auth_for(&self, host: &str, server: &str) -> Option<(&str, &AuthEntry)> {
        self.auths
            .get_key_value(server)
            .or_else(|| self.auths.iter().find(|(key, _)| host_of_key(key) == host))
            .map(|(key, entry)| (key.as_str(), entry))
    }
}

/// `user:password` from the base64 `auth` value (padding optional, surrounding space ignored).
pub(super) fn decode_auth(auth: &str) -> Result<(String, String), String> {
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let bytes = LENIENT
        .decode(auth.trim())
        .map_err(|e| format!("not base64 ({e})"))?;
    let text = String::from_utf8(bytes).map_err(|_| "not UTF-8 once decoded".to_string())?;
    let (user, password) = text
        .split_once(':')
        .ok_or_else(|| "no `:` between user and password once decoded".to_string())?;
    Ok((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};

    #[test]
    fn auth_decodes_to_user_and_password_with_or_without_padding() {
        let encoded = STANDARD.encode("zoo-tester:pa:ss");
        assert!(encoded.ends_with('='), "the test needs padding: {encoded}");
        let want = ("zoo-tester".to_string(), "pa:ss".to_string());
        assert_eq!(decode_auth(&encoded), Ok(want.clone()));
        assert_eq!(
            decode_auth(&STANDARD_NO_PAD.encode("zoo-tester:pa:ss")),
            Ok(want)
        );
        assert_eq!(
            decode_auth(&format!(" {}\n", STANDARD.encode("u:"))),
            Ok(("u".into(), "".into()))
        );
    }

    #[test]
    fn auth_that_is_not_user_colon_password_says_why() {
        let no_colon = decode_auth(&STANDARD.encode("just-a-user")).unwrap_err();
        assert!(no_colon.contains("no `:`"), "{no_colon}");
        let not_base64 = decode_auth("***").unwrap_err();
        assert!(not_base64.contains("not base64"), "{not_base64}");
        let not_utf8 = decode_auth(&STANDARD.encode([0xff, 0xfe, b':'])).unwrap_err();
        assert!(not_utf8.contains("UTF-8"), "{not_utf8}");
    }
}
