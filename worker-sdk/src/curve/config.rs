//! [`CurveConfig`]: the `curve` section of every plantd client and service configuration.
//!
//! ```yaml
//! curve:
//!   secret_key_file: /etc/plantd/keys/state.key   # this process's key pair (NAME.key)
//!   server_key_file: /etc/plantd/keys/broker.pub  # the broker's public key (or server_key: <z85>)
//! ```
//!
//! Environment: `PLANTD_<SERVICE>_CURVE__SECRET_KEY_FILE`, `..._CURVE__SERVER_KEY`,
//! `..._CURVE__SERVER_KEY_FILE`. Nothing set means CURVE off; a secret key without a server key
//! (or the reverse) is an error rather than a silent plaintext connection.
//!
//! A service adopts it with one field (`pub curve: CurveConfig`) and one call
//! (`.curve(config.curve.client()?)` on its worker builder, or [`CurveConfig::client`] for its bus
//! sockets).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{read_public_key, ClientCurve, CurveError, KeyPair, PublicKey};

/// Where a CURVE client finds its key pair and the broker's public key. Holds paths and public
/// keys only, so it is safe to print.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CurveConfig {
    /// This process's secret key file (`NAME.key`, Z85, mode 0600); its public key is derived.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_key_file: Option<PathBuf>,
    /// The broker's public key, Z85 (40 characters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_key: Option<String>,
    /// A file holding the broker's public key (`broker.pub`), instead of `server_key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_key_file: Option<PathBuf>,
}

impl CurveConfig {
    /// Whether any CURVE setting is given.
    pub fn is_set(&self) -> bool {
        self.secret_key_file.is_some()
            || self.server_key.is_some()
            || self.server_key_file.is_some()
    }

    /// Reads the keys: `None` when CURVE is off (nothing set), else the client settings. Half a
    /// configuration is an error, so a typo never falls back to plaintext.
    pub fn client(&self) -> Result<Option<ClientCurve>, CurveError> {
        if !self.is_set() {
            return Ok(None);
        }
        let server = self.server_public_key()?;
        let secret = self.secret_key_file.as_ref().ok_or_else(|| {
            CurveError::Incomplete(
                "curve.secret_key_file is required with a server key (generate one with \
                 `plant keys generate`)"
                    .into(),
            )
        })?;
        Ok(Some(ClientCurve::new(KeyPair::read(secret)?, server)))
    }

    /// The broker's public key from `server_key` or `server_key_file`.
    pub fn server_public_key(&self) -> Result<PublicKey, CurveError> {
        match (&self.server_key, &self.server_key_file) {
            (Some(_), Some(_)) => Err(CurveError::Incomplete(
                "set curve.server_key or curve.server_key_file, not both".into(),
            )),
            (Some(key), None) => PublicKey::from_z85(key, "curve.server_key"),
            (None, Some(path)) => read_public_key(path),
            (None, None) => Err(CurveError::Incomplete(
                "curve.server_key (or curve.server_key_file) is required with \
                 curve.secret_key_file: the broker's public key"
                    .into(),
            )),
        }
    }
}
