//! Which access token a command sends: `--token` (or `PLANTD_TOKEN`) if given, else the saved
//! login for the broker endpoint (`plant auth login`, or the one `plantd up` wrote), refreshed
//! through identity when it is about to expire. No saved login means no token: the service then
//! answers `UNAUTHENTICATED`, and the error tells the user to log in.

use plantd_worker_sdk::auth::credentials::{Credential, CredentialStore};
use serde_json::{json, Map, Value};

use crate::commands::identity::{self, IDENTITY_SERVICE};
use crate::context::{Access, Context};
use crate::error::CliError;

/// A saved access token this close to expiry (seconds) is refreshed before use.
const REFRESH_MARGIN_SECS: i64 = 60;

/// The token for requests to `ctx.endpoint`, refreshing the saved one if needed.
pub fn token(ctx: &Context) -> Result<Option<String>, CliError> {
    if let Some(token) = ctx.token.as_ref().filter(|t| !t.is_empty()) {
        return Ok(Some(token.clone()));
    }
    let mut store = CredentialStore::load_default().map_err(|e| CliError::Input(e.to_string()))?;
    let Some(saved) = store.get(&ctx.endpoint).cloned() else {
        return Ok(None);
    };
    if !saved.expires_within(REFRESH_MARGIN_SECS) {
        return Ok(Some(saved.access_token));
    }
    match refresh(ctx, &saved) {
        Ok(fresh) => {
            let token = fresh.access_token.clone();
            store
                .set(&ctx.endpoint, fresh)
                .map_err(|e| CliError::Input(e.to_string()))?;
            Ok(Some(token))
        }
        Err(e) => {
            eprintln!(
                "warning: the saved login for {} could not be refreshed ({e}); run `plant auth login`",
                ctx.endpoint
            );
            Ok(None)
        }
    }
}

/// Puts the token into a JSON request body unless it already has one.
pub fn attach(ctx: &Context, body: &mut Map<String, Value>) -> Result<(), CliError> {
    if !body.contains_key("token") {
        if let Some(token) = token(ctx)? {
            body.insert("token".into(), json!(token));
        }
    }
    Ok(())
}

/// Whether `service` is one of plantd's services that check tokens, to which `plant request`
/// adds the token by itself (other services get one only if the body carries it: a token is a
/// credential, not something to hand to any worker).
pub fn checks_tokens(service: &str) -> bool {
    matches!(
        service,
        "org.plantd.State" | "org.plantd.Logger" | "org.plantd.Identity"
    )
}

/// Puts the token into the last frame of a request when that frame is a JSON object without one.
pub fn attach_to_frames(ctx: &Context, frames: &mut [Vec<u8>]) -> Result<(), CliError> {
    let Some(last) = frames.last_mut() else {
        return Ok(());
    };
    let Ok(Value::Object(mut map)) = serde_json::from_slice::<Value>(last) else {
        return Ok(());
    };
    if map.contains_key("token") {
        return Ok(());
    }
    attach(ctx, &mut map)?;
    *last = Value::Object(map).to_string().into_bytes();
    Ok(())
}

/// Exchanges `saved`'s refresh token for a new pair (it works once: identity rotates it).
fn refresh(ctx: &Context, saved: &Credential) -> Result<Credential, CliError> {
    let data = identity::call(
        ctx,
        "auth",
        "refresh",
        json!({"refresh_token": saved.refresh_token}),
        Access::Write,
    )?;
    Credential::from_login_reply(&data, &saved.username).ok_or_else(|| {
        CliError::Input(format!(
            "{IDENTITY_SERVICE} sent an unexpected refresh reply"
        ))
    })
}
