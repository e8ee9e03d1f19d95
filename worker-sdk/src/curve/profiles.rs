//! [`CurveProfiles`]: the CURVE settings `plant` uses per broker endpoint, in
//! `$XDG_CONFIG_HOME/plantd/curve.json` (else `~/.config/plantd/curve.json`), next to the saved
//! logins. `plantd up --secure` writes the entry of its endpoint, so `plant` talks to it with no
//! flag; `--server-key` and `--key` override it.
//!
//! ```json
//! {"endpoints": {"tcp://127.0.0.1:9797": {"secret_key_file": "/home/me/plantd-data/keys/cli.key",
//!                                          "server_key": "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"}}}
//! ```
//!
//! The file holds paths and public keys only; it is still written with mode 0600.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{CurveConfig, CurveError};

/// The CURVE settings of each broker endpoint `plant` knows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurveProfiles {
    /// Settings by endpoint, exactly as given to `--endpoint`.
    #[serde(default)]
    pub endpoints: BTreeMap<String, CurveConfig>,
}

impl CurveProfiles {
    /// `$XDG_CONFIG_HOME/plantd/curve.json`, else `$HOME/.config/plantd/curve.json`.
    pub fn default_path() -> Option<PathBuf> {
        let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => PathBuf::from(std::env::var_os("HOME")?).join(".config"),
        };
        Some(base.join("plantd").join("curve.json"))
    }

    /// Reads `path`; a missing file is an empty set of profiles.
    pub fn load(path: &Path) -> Result<CurveProfiles, CurveError> {
        let io = |source| CurveError::Io {
            path: path.to_owned(),
            source,
        };
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, e))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(CurveProfiles::default()),
            Err(e) => Err(io(e)),
        }
    }

    /// The settings for `endpoint`, if any.
    pub fn get(&self, endpoint: &str) -> Option<&CurveConfig> {
        self.endpoints.get(endpoint)
    }

    /// Writes the profiles to `path` (mode 0600, directories created), replacing it atomically.
    pub fn save(&self, path: &Path) -> Result<(), CurveError> {
        let io = |source| CurveError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let text = serde_json::to_vec_pretty(self)
            .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        let tmp = path.with_extension("json.tmp");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp).map_err(io)?;
        file.write_all(&text).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_round_trip_and_a_missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plantd/curve.json");
        assert_eq!(
            CurveProfiles::load(&path).unwrap(),
            CurveProfiles::default()
        );
        let mut profiles = CurveProfiles::default();
        profiles.endpoints.insert(
            "tcp://127.0.0.1:9797".into(),
            CurveConfig {
                secret_key_file: Some("/k/cli.key".into()),
                server_key_file: Some("/k/broker.pub".into()),
                server_key: None,
            },
        );
        profiles.save(&path).unwrap();
        let loaded = CurveProfiles::load(&path).unwrap();
        assert_eq!(loaded, profiles);
        assert!(loaded.get("tcp://127.0.0.1:9797").is_some());
        assert!(loaded.get("tcp://127.0.0.1:1").is_none());
    }
}
