//! The saved logins `plant` and `plantd up` share: `$XDG_CONFIG_HOME/plantd/credentials.json`
//! (`~/.config/plantd/credentials.json` without it), mode 0600, one [`Credential`] per broker
//! endpoint, as a kubeconfig holds one context per cluster.
//!
//! The file is rewritten whole through a 0600 temporary file and a rename, so a crash never
//! leaves half a file and the tokens are never readable by others, not even for a moment.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One broker endpoint's login.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    /// Who logged in.
    pub username: String,
    /// The current access token.
    pub access_token: String,
    /// The refresh token that gets the next pair (works once).
    pub refresh_token: String,
    /// When the access token expires (Unix seconds).
    pub expires_at: i64,
}

impl std::fmt::Debug for Credential {
    // Tokens stay out of debug output (and so out of logs).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// The credential in the `data` of an `auth/login` or `auth/refresh` reply
    /// (`{user: {username}, access_token, refresh_token, expires_at}`); `username` is used when
    /// the reply names none.
    pub fn from_login_reply(data: &Value, username: &str) -> Option<Credential> {
        let text = |key: &str| data.get(key).and_then(Value::as_str).map(str::to_owned);
        let expires_at = match data.get("expires_at")? {
            Value::Number(n) => n.as_i64()?,
            Value::String(s) => DateTime::parse_from_rfc3339(s).ok()?.timestamp(),
            _ => return None,
        };
        Some(Credential {
            username: data["user"]["username"]
                .as_str()
                .unwrap_or(username)
                .to_owned(),
            access_token: text("access_token")?,
            refresh_token: text("refresh_token")?,
            expires_at,
        })
    }

    /// True if the access token expires within `margin_secs`.
    pub fn expires_within(&self, margin_secs: i64) -> bool {
        self.expires_at - margin_secs <= Utc::now().timestamp()
    }
}

/// Why the credentials file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// Reading or writing failed.
    #[error("credentials file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not what this module writes.
    #[error("credentials file {path} is not valid: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Neither `XDG_CONFIG_HOME` nor `HOME` is set.
    #[error("cannot find a home for the credentials file: set XDG_CONFIG_HOME or HOME")]
    NoHome,
}

/// The credentials file: logins by broker endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialStore {
    /// Logins by broker endpoint.
    #[serde(default)]
    pub endpoints: BTreeMap<String, Credential>,
    #[serde(skip)]
    path: PathBuf,
}

impl CredentialStore {
    /// Where the file lives: `$XDG_CONFIG_HOME/plantd/credentials.json`, else
    /// `$HOME/.config/plantd/credentials.json`.
    pub fn default_path() -> Result<PathBuf, CredentialsError> {
        let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => PathBuf::from(
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .ok_or(CredentialsError::NoHome)?,
            )
            .join(".config"),
        };
        Ok(base.join("plantd").join("credentials.json"))
    }

    /// The file at `path`; empty if it does not exist.
    pub fn load(path: &Path) -> Result<CredentialStore, CredentialsError> {
        let io = |source| CredentialsError::Io {
            path: path.to_owned(),
            source,
        };
        let mut store = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice::<CredentialStore>(&bytes).map_err(|e| {
                CredentialsError::Invalid {
                    path: path.to_owned(),
                    message: e.to_string(),
                }
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => CredentialStore::default(),
            Err(e) => return Err(io(e)),
        };
        store.path = path.to_owned();
        Ok(store)
    }

    /// The file at [`default_path`](Self::default_path).
    pub fn load_default() -> Result<CredentialStore, CredentialsError> {
        Self::load(&Self::default_path()?)
    }

    /// The file this store reads and writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The login for `endpoint`.
    pub fn get(&self, endpoint: &str) -> Option<&Credential> {
        self.endpoints.get(endpoint)
    }

    /// Saves `credential` for `endpoint` and writes the file.
    pub fn set(&mut self, endpoint: &str, credential: Credential) -> Result<(), CredentialsError> {
        self.endpoints.insert(endpoint.to_owned(), credential);
        self.save()
    }

    /// Forgets `endpoint`'s login and writes the file; returns what was forgotten.
    pub fn remove(&mut self, endpoint: &str) -> Result<Option<Credential>, CredentialsError> {
        let removed = self.endpoints.remove(endpoint);
        self.save()?;
        Ok(removed)
    }

    /// Writes the file (0600, its directory 0700 when created) through a temporary file.
    pub fn save(&self) -> Result<(), CredentialsError> {
        let io = |source| CredentialsError::Io {
            path: self.path.clone(),
            source,
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        create_private_dir(dir).map_err(io)?;
        let mut file = tempfile::Builder::new()
            .prefix(".credentials")
            .permissions(private_file())
            .tempfile_in(dir)
            .map_err(io)?;
        let json = serde_json::to_vec_pretty(self).expect("credentials serialize");
        file.write_all(&json).map_err(io)?;
        file.as_file().sync_all().map_err(io)?;
        file.persist(&self.path).map_err(|e| io(e.error))?;
        Ok(())
    }
}

#[cfg(unix)]
fn private_file() -> std::fs::Permissions {
    use std::os::unix::fs::PermissionsExt;
    std::fs::Permissions::from_mode(0o600)
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_private_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plantd").join("credentials.json");
        let mut store = CredentialStore::load(&path).unwrap();
        assert!(store.endpoints.is_empty());
        let reply = serde_json::json!({"user": {"username": "admin"}, "access_token": "a",
            "refresh_token": "r", "token_type": "Bearer", "expires_at": "2030-01-01T00:00:00Z"});
        let credential = Credential::from_login_reply(&reply, "x").unwrap();
        assert_eq!(credential.username, "admin");
        assert!(!credential.expires_within(60));
        assert!(!format!("{credential:?}").contains("\"a\""));
        store
            .set("tcp://127.0.0.1:9797", credential.clone())
            .unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = CredentialStore::load(&path).unwrap();
        assert_eq!(again.get("tcp://127.0.0.1:9797"), Some(&credential));
        let mut again = again;
        assert!(again.remove("tcp://127.0.0.1:9797").unwrap().is_some());
        assert!(CredentialStore::load(&path).unwrap().endpoints.is_empty());
    }
}
