//! Where a verifier gets identity's public keys, a user's current permissions and the notice log
//! of revocations and permission changes: [`IdentitySource`], and [`MdpIdentity`], which asks
//! `org.plantd.Identity` through the broker.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{AuthError, PublicKeys};
use crate::client::Client;
use crate::curve::ClientCurve;

/// A user's current grants, as `auth/validate` reports them from identity's data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CurrentGrants {
    /// Role names.
    pub roles: Vec<String>,
    /// Global permissions.
    pub permissions: Vec<String>,
    /// Permissions per organization id.
    pub org_permissions: BTreeMap<String, Vec<String>>,
    /// Organization ids.
    pub organizations: Vec<u64>,
}

/// The `data` of an `auth/validate` reply.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validation {
    /// Whether the token is valid now.
    pub valid: bool,
    /// Why not (`TOKEN_EXPIRED`, `TOKEN_REVOKED`, `UNAUTHENTICATED`), when invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Details, when invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<u64>,
    /// The user's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Role names.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Global permissions.
    #[serde(default)]
    pub permissions: Vec<String>,
    /// Permissions per organization id.
    #[serde(default)]
    pub org_permissions: BTreeMap<String, Vec<String>>,
    /// Organization ids.
    #[serde(default)]
    pub organizations: Vec<u64>,
    /// When the token expires (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

impl Validation {
    /// The grants of a valid answer, or the refusal of an invalid one.
    pub fn into_grants(self) -> Result<CurrentGrants, AuthError> {
        if !self.valid {
            let code = self.code.as_deref().unwrap_or("UNAUTHENTICATED");
            let message = self.message.as_deref().unwrap_or("the token is not valid");
            return Err(AuthError::from_code(code, message));
        }
        Ok(CurrentGrants {
            roles: self.roles,
            permissions: self.permissions,
            org_permissions: self.org_permissions,
            organizations: self.organizations,
        })
    }
}

/// One entry of identity's notice log (`auth/notices`): a revocation or a permission change, with
/// the topic and `data` of the bus event that carried the same news.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    /// Its place in the log; later notices have higher numbers.
    pub seq: u64,
    /// `org.plantd.identity.revoked` or `org.plantd.identity.changed`.
    pub topic: String,
    /// When identity wrote it (Unix ms).
    pub time_ms: i64,
    /// A [`Revoked`](super::events::Revoked) or a [`Changed`](super::events::Changed).
    pub data: Value,
}

/// The `data` of an `auth/notices` reply.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NoticePage {
    /// Notices after the number asked for, oldest first.
    pub notices: Vec<Notice>,
    /// The newest notice's number in the log (0: empty).
    pub last_seq: u64,
    /// Whether more notices follow the last one listed.
    #[serde(default)]
    pub more: bool,
}

/// Where keys and current grants come from. Calls may block (a network round trip); the verifier
/// makes them rarely: at start, on an unknown `kid`, and after a permission change.
pub trait IdentitySource: Send + Sync {
    /// Every public key a live token may be signed with.
    fn public_keys(&self) -> Result<PublicKeys, AuthError>;
    /// The current grants behind `token`, or why it is refused.
    fn current_grants(&self, token: &str) -> Result<CurrentGrants, AuthError>;
    /// The notice log after `after`, oldest first. A source without a log (tests, tools) has
    /// none.
    fn notices(&self, after: u64) -> Result<NoticePage, AuthError> {
        let _ = after;
        Ok(NoticePage::default())
    }
}

/// Asks identity over MDP: `[auth, public_keys, {}]`, `[auth, validate, {token}]` and
/// `[auth, notices, {after}]`.
#[derive(Clone)]
pub struct MdpIdentity {
    client: Client,
    service: String,
}

impl MdpIdentity {
    /// A source asking `service` (normally `org.plantd.Identity`) through the broker at
    /// `endpoint` (as a CURVE client with `curve`), each call waiting at most `timeout`.
    pub fn connect(
        endpoint: &str,
        service: &str,
        timeout: Duration,
        curve: Option<ClientCurve>,
    ) -> Result<Self, AuthError> {
        let client = Client::connect_with(endpoint, curve)
            .map_err(|e| AuthError::Unavailable(format!("cannot reach the broker: {e}")))?
            .with_timeout(timeout);
        Ok(MdpIdentity {
            client,
            service: service.to_owned(),
        })
    }

    fn call<T: DeserializeOwned>(&self, operation: &str, body: Value) -> Result<T, AuthError> {
        let frames = vec![
            b"auth".to_vec(),
            operation.as_bytes().to_vec(),
            body.to_string().into_bytes(),
        ];
        let unavailable = |what: String| AuthError::Unavailable(format!("identity {what}"));
        let reply = self
            .client
            .request(&self.service, frames)
            .map_err(|e| unavailable(format!("did not answer auth/{operation}: {e}")))?;
        let envelope: Value = reply
            .first()
            .and_then(|frame| serde_json::from_slice(frame).ok())
            .ok_or_else(|| unavailable(format!("sent a malformed auth/{operation} reply")))?;
        if envelope["success"] != Value::Bool(true) {
            let code = envelope["error"]["code"].as_str().unwrap_or("");
            let message = envelope["error"]["message"].as_str().unwrap_or("");
            return Err(unavailable(format!(
                "refused auth/{operation}: {code} {message}"
            )));
        }
        serde_json::from_value(envelope["data"].clone())
            .map_err(|e| unavailable(format!("sent an unexpected auth/{operation} reply: {e}")))
    }
}

impl IdentitySource for MdpIdentity {
    fn public_keys(&self) -> Result<PublicKeys, AuthError> {
        self.call("public_keys", serde_json::json!({}))
    }

    fn current_grants(&self, token: &str) -> Result<CurrentGrants, AuthError> {
        self.call::<Validation>("validate", serde_json::json!({ "token": token }))?
            .into_grants()
    }

    fn notices(&self, after: u64) -> Result<NoticePage, AuthError> {
        self.call("notices", serde_json::json!({ "after": after }))
    }
}
