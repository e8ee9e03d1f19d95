//! The admin login `plantd up` gives the CLI: with auth required everywhere, the quick start's
//! `plant state ...` needs a token, so `up` logs in as the bootstrap admin (password from the file
//! identity wrote) and saves the tokens in the CLI's credentials file for this endpoint, unless a
//! login for it is already saved. The password itself is never printed or logged.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use plantd_worker_sdk::auth::credentials::{Credential, CredentialStore};
use plantd_worker_sdk::curve::ClientCurve;
use plantd_worker_sdk::Client;
use serde_json::{json, Value};

/// Identity's MDP name.
const IDENTITY_SERVICE: &str = "org.plantd.Identity";
/// The user identity creates on first start.
const ADMIN: &str = "admin";

/// What `up` needs to log the CLI in.
pub struct AdminLogin {
    password_file: PathBuf,
    endpoint: String,
    curve: Option<ClientCurve>,
}

impl AdminLogin {
    /// For the identity configured as `identity`, reached through the broker at `endpoint` (as a
    /// CURVE client with `curve`).
    pub fn new(
        identity: &plantd_identity::IdentityConfig,
        endpoint: &str,
        curve: Option<ClientCurve>,
    ) -> Self {
        AdminLogin {
            password_file: plantd_identity::admin_password_path(identity),
            endpoint: endpoint.to_owned(),
            curve,
        }
    }

    /// Logs in as admin and saves the tokens, unless a login for the endpoint is saved already.
    /// Returns the line to print.
    pub fn save_if_missing(&self) -> Result<String> {
        let mut store = CredentialStore::load_default()?;
        let path = store.path().display().to_string();
        if let Some(saved) = store.get(&self.endpoint) {
            return Ok(format!(
                "CLI login for {}: {} (kept, user {}); `plant auth login` changes it",
                self.endpoint, path, saved.username
            ));
        }
        let password = match std::fs::read_to_string(&self.password_file) {
            Ok(text) => text.trim_end_matches(['\r', '\n']).to_owned(),
            Err(_) => {
                return Ok(format!(
                    "no admin password file at {}: log the CLI in with `plant auth login`",
                    self.password_file.display()
                ))
            }
        };
        let client = Client::connect_with(&self.endpoint, self.curve.clone())?
            .with_timeout(Duration::from_secs(10));
        let body = json!({"identifier": ADMIN, "password": password});
        let reply = client
            .request(
                IDENTITY_SERVICE,
                vec![
                    b"auth".to_vec(),
                    b"login".to_vec(),
                    body.to_string().into_bytes(),
                ],
            )
            .context("identity did not answer the admin login")?;
        let envelope: Value = reply
            .first()
            .and_then(|frame| serde_json::from_slice(frame).ok())
            .ok_or_else(|| anyhow!("identity sent a malformed login reply"))?;
        if envelope["success"] != json!(true) {
            return Err(anyhow!(
                "identity refused the admin login: {} (the password in {} may have been changed)",
                envelope["error"]["code"].as_str().unwrap_or("ERROR"),
                self.password_file.display()
            ));
        }
        let credential = Credential::from_login_reply(&envelope["data"], ADMIN)
            .ok_or_else(|| anyhow!("identity sent an unexpected login reply"))?;
        store.set(&self.endpoint, credential)?;
        Ok(format!(
            "CLI logged in as {ADMIN} for {}: tokens in {path}; the admin password is in {}",
            self.endpoint,
            self.password_file.display()
        ))
    }
}
