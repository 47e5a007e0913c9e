//! Where the relay is, who we are on it, and where our key is: `config.json` in the state
//! directory, overridable by flags and environment variables.
//!
//! # Wire format
//! ```text
//! {"version": 1, "relay_url": "https://relay.example", "organisation_id": uuid,
//!  "api_key": "…" (optional), "key_file": "/path" (optional; default: the state directory's
//!  organisation-key.json)}
//! ```
//!
//! # Invariants
//! - The API key is a bearer secret: it lives in an owner-only file (see [`crate::state`]),
//!   prints as `[redacted]` and is zeroized when dropped. Services can leave it out of the file
//!   and pass `SECURETEXT_API_KEY` instead.
//! - The relay URL must be `https`, except on a loopback address (development and tests): the
//!   API key and every envelope travel in the request, and a plain-HTTP relay elsewhere would
//!   show them to the network.
//! - The organisation key file is read only through [`Config::load_key_file`], which refuses a
//!   file that others can access and one made for another organisation.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use shared::ids::OrganisationId;
use shared::keyfile::OrganisationKeyFile;
use zeroize::Zeroizing;

use crate::Error;
use crate::send::SendPolicy;
use crate::state::{StateDir, Versioned, read_private, read_versioned, write_json};

/// A relay API key (bearer token). Never printed; wiped when dropped.
#[derive(Clone)]
pub struct ApiKey(Zeroizing<String>);

impl ApiKey {
    /// Takes an API key as given by the relay operator (surrounding whitespace is ignored).
    pub fn new(text: &str) -> Result<Self, Error> {
        let text = text.trim();
        if text.is_empty() || text.len() > 512 || !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::Config(
                "the API key must be the printable token the relay operator gave you".into(),
            ));
        }
        Ok(Self(Zeroizing::new(text.to_owned())))
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

impl Serialize for ApiKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ApiKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Zeroizing::new(String::deserialize(deserializer)?);
        Self::new(&text).map_err(serde::de::Error::custom)
    }
}

/// A checked relay base URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RelayUrl(url::Url);

impl RelayUrl {
    /// Parses and checks a relay base URL: `https`, or `http` on a loopback address only;
    /// no credentials, query or fragment.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let url = url::Url::parse(text.trim())
            .map_err(|e| Error::Config(format!("relay URL {text:?}: {e}")))?;
        let loopback = match url.host() {
            Some(url::Host::Domain(name)) => name == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            "http" => {
                return Err(Error::Config(
                    "the relay URL must use https (plain http is allowed on loopback only)".into(),
                ));
            }
            other => return Err(Error::Config(format!("unsupported URL scheme {other:?}"))),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Error::Config(
                "the relay URL must not contain credentials".into(),
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(Error::Config(
                "the relay URL must not have a query or fragment".into(),
            ));
        }
        Ok(Self(url))
    }

    /// The URL of an API path (`/v1/...`, optionally with a `?query`), keeping any path
    /// prefix of the base URL.
    pub fn join(&self, path_and_query: &str) -> url::Url {
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path_and_query, None),
        };
        let mut url = self.0.clone();
        let base = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base}{path}"));
        url.set_query(query);
        url
    }
}

impl fmt::Display for RelayUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str().trim_end_matches('/'))
    }
}

impl TryFrom<String> for RelayUrl {
    type Error = Error;
    fn try_from(text: String) -> Result<Self, Error> {
        Self::parse(&text)
    }
}

impl From<RelayUrl> for String {
    fn from(url: RelayUrl) -> Self {
        url.to_string()
    }
}

/// The contents of `config.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Format of this file; 1.
    pub version: u8,
    /// The relay's base URL.
    pub relay_url: RelayUrl,
    /// The organisation the API key and the key file belong to.
    pub organisation_id: OrganisationId,
    /// The API key, unless supplied by the environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<ApiKey>,
    /// Where the organisation key file is, if not in the state directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Refuse first contacts without an identity check (`securetext policy`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_identity_check: bool,
}

impl Versioned for ConfigFile {
    fn version(&self) -> u8 {
        self.version
    }
}

/// Values given on the command line or in the environment; each wins over the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--relay` / `SECURETEXT_RELAY_URL`.
    pub relay_url: Option<RelayUrl>,
    /// `--api-key` / `SECURETEXT_API_KEY`.
    pub api_key: Option<ApiKey>,
    /// `--key-file` / `SECURETEXT_KEY_FILE`.
    pub key_file: Option<PathBuf>,
}

/// Everything a command needs to talk to the relay as the organisation.
#[derive(Debug, Clone)]
pub struct Config {
    /// The state directory.
    pub state: StateDir,
    /// The relay's base URL.
    pub relay_url: RelayUrl,
    /// The API key.
    pub api_key: ApiKey,
    /// Our organisation.
    pub organisation_id: OrganisationId,
    /// The organisation key file.
    pub key_file: PathBuf,
    /// The organisation's sending rules.
    pub policy: SendPolicy,
}

impl Config {
    /// Loads `config.json` from `state` and applies `overrides`. Fails if no configuration
    /// exists (`securetext init` writes it) or the API key is given nowhere.
    pub fn load(state: StateDir, overrides: Overrides) -> Result<Self, Error> {
        let file: ConfigFile = read_versioned(&state.config_file())?.ok_or_else(|| {
            Error::Config(format!(
                "no configuration in {}; run `securetext init` first",
                state.path().display()
            ))
        })?;
        let api_key = overrides.api_key.or(file.api_key).ok_or_else(|| {
            Error::Config("no API key: set SECURETEXT_API_KEY or run `securetext init`".into())
        })?;
        let key_file = overrides
            .key_file
            .or(file.key_file)
            .unwrap_or_else(|| state.default_key_file());
        Ok(Self {
            relay_url: overrides.relay_url.unwrap_or(file.relay_url),
            api_key,
            organisation_id: file.organisation_id,
            key_file,
            policy: SendPolicy {
                require_identity_check: file.require_identity_check,
            },
            state,
        })
    }

    /// Sets the organisation's sending rules in `config.json`.
    pub fn set_policy(state: &StateDir, policy: SendPolicy) -> Result<(), Error> {
        let mut file: ConfigFile = read_versioned(&state.config_file())?.ok_or_else(|| {
            Error::Config(format!(
                "no configuration in {}; run `securetext init` first",
                state.path().display()
            ))
        })?;
        file.require_identity_check = policy.require_identity_check;
        Self::save(state, &file)
    }

    /// Writes `config.json` (owner-only).
    pub fn save(state: &StateDir, file: &ConfigFile) -> Result<(), Error> {
        write_json(&state.config_file(), file)
    }

    /// Reads the organisation key file, checking its permissions and that it belongs to the
    /// configured organisation. The private key stays sealed.
    pub fn load_key_file(&self) -> Result<OrganisationKeyFile, Error> {
        load_key_file(&self.key_file, self.organisation_id)
    }
}

/// Reads an organisation key file (see [`Config::load_key_file`]).
pub fn load_key_file(
    path: &Path,
    organisation_id: OrganisationId,
) -> Result<OrganisationKeyFile, Error> {
    let key_error = |reason: String| Error::KeyFile {
        path: path.to_owned(),
        reason,
    };
    let text = read_private(path)?.ok_or_else(|| {
        key_error("not found; run `securetext init`, or point --key-file at it".into())
    })?;
    let file = OrganisationKeyFile::from_json(&text).map_err(|e| key_error(e.to_string()))?;
    if file.organisation_id != organisation_id {
        return Err(key_error(format!(
            "made for organisation {}, but this configuration is for {organisation_id}",
            file.organisation_id
        )));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_urls_must_be_https_except_on_loopback() {
        for good in [
            "https://relay.example",
            "https://relay.example/prefix/",
            "http://127.0.0.1:8080",
            "http://localhost:3000",
            "http://[::1]:80",
        ] {
            RelayUrl::parse(good).unwrap();
        }
        for bad in [
            "http://relay.example",
            "http://10.0.0.1",
            "ftp://relay.example",
            "https://user:pw@relay.example",
            "https://relay.example/?x=1",
            "relay.example",
        ] {
            assert!(RelayUrl::parse(bad).is_err(), "{bad}");
        }
        let url = RelayUrl::parse("https://relay.example/prefix/").unwrap();
        assert_eq!(
            url.join("/v1/rewraps").as_str(),
            "https://relay.example/prefix/v1/rewraps"
        );
        assert_eq!(
            url.join("/v1/audit?after=3&limit=10").as_str(),
            "https://relay.example/prefix/v1/audit?after=3&limit=10"
        );
        assert_eq!(url.to_string(), "https://relay.example/prefix");
    }

    #[test]
    fn api_key_is_redacted() {
        let key = ApiKey::new(" secret-token \n").unwrap();
        assert_eq!(key.expose(), "secret-token");
        assert_eq!(format!("{key:?}"), "ApiKey([redacted])");
        assert!(ApiKey::new("").is_err());
        assert!(ApiKey::new("two words").is_err());
    }
}
