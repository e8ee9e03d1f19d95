//! [`AuthConfig`]: the `auth:` section of every service that verifies tokens, and how it starts a
//! verifier.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{events, AuthError, MdpIdentity, TokenVerifier};
use crate::curve::ClientCurve;
use crate::Shutdown;

/// Whether a service checks tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Every request needs a valid token with the operation's permission (the default).
    #[default]
    Required,
    /// No checks: anyone who reaches the broker may do anything. For tests and closed setups.
    Off,
}

/// How a service verifies tokens (`PLANTD_<SERVICE>_AUTH__MODE`, `..._AUTH__EVENT_ENDPOINT`, ...).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    /// `required` (default) or `off`.
    pub mode: AuthMode,
    /// The identity service to fetch keys and current grants from.
    pub identity_service: String,
    /// The `event` bus backend where identity's revocations arrive; empty disables them (tokens
    /// then stay valid until they expire).
    pub event_endpoint: String,
    /// How often to refetch identity's public keys (seconds).
    pub key_refresh_secs: u64,
    /// How long one call to identity may take (milliseconds).
    pub timeout_ms: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: AuthMode::Required,
            identity_service: "org.plantd.Identity".into(),
            event_endpoint: "tcp://127.0.0.1:12001".into(),
            key_refresh_secs: 300,
            timeout_ms: 2_000,
        }
    }
}

impl AuthConfig {
    /// This configuration with checks off.
    pub fn off() -> Self {
        AuthConfig {
            mode: AuthMode::Off,
            ..AuthConfig::default()
        }
    }

    /// Whether tokens are checked.
    pub fn is_required(&self) -> bool {
        self.mode == AuthMode::Required
    }

    /// Under `required`, a verifier asking identity through the broker at `broker_endpoint` (or
    /// several, comma-separated, failing over among them like any client), fed
    /// by the event bus, until `shutdown`; `None` under `off`. With `curve`, both connections are
    /// CURVE clients with the service's own keys (the broker's allow list must let it call
    /// identity and subscribe to the event bus).
    pub fn start(
        &self,
        broker_endpoint: &str,
        curve: Option<&ClientCurve>,
        shutdown: Shutdown,
    ) -> Result<Option<TokenVerifier>, AuthError> {
        if !self.is_required() {
            return Ok(None);
        }
        let source = MdpIdentity::connect(
            broker_endpoint,
            &self.identity_service,
            Duration::from_millis(self.timeout_ms.max(1)),
            curve.cloned(),
        )?;
        let verifier = TokenVerifier::new(source);
        events::listen(
            verifier.clone(),
            &self.event_endpoint,
            curve,
            Duration::from_secs(self.key_refresh_secs.max(1)),
            shutdown,
        )?;
        Ok(Some(verifier))
    }
}
