//! Token verification: the one place a plantd process checks an identity access token.
//!
//! Identity (`org.plantd.Identity`) signs Ed25519 JWT access tokens ([`Claims`]). A service
//! protects itself with a [`TokenVerifier`]: it fetches identity's public keys over MDP once (and
//! again on an unknown `kid`), verifies each token locally, caches what it verified until the token
//! expires, and applies the revocations and permission changes identity publishes on the `event`
//! bus ([`events`]) as soon as they arrive. Expiry is the backstop, not the mechanism.
//!
//! ```no_run
//! use plantd_worker_sdk::auth::{AuthConfig, TokenVerifier};
//! # fn demo(shutdown: plantd_worker_sdk::Shutdown) -> Result<(), plantd_worker_sdk::auth::AuthError> {
//! let verifier = AuthConfig::default().start("tcp://127.0.0.1:9797", None, shutdown)?.expect("mode required");
//! // In a handler, with the request's `token` field:
//! let principal = verifier.authorize(Some("eyJ..."), "greeter:hello:call")?;
//! println!("hello, {}", principal.username);
//! # Ok(()) }
//! ```
//!
//! - [`Claims`], [`Principal`]: what a token says and who the verifier found behind it.
//! - [`grants`]: the one permission-matching rule (`system:admin`, `prefix:*` wildcards).
//! - [`IdentitySource`], [`MdpIdentity`]: where keys and current permissions come from.
//! - [`AuthConfig`]: the `auth:` section every verifying service shares (`mode: required|off`).
//! - [`credentials`]: the saved logins of `plant` and `plantd up`, per broker endpoint.

mod claims;
mod config;
pub mod credentials;
mod error;
pub mod events;
mod keys;
mod source;
mod verifier;

pub use claims::{Claims, Principal, TokenKind, AUDIENCE, ISSUER};
pub use config::{AuthConfig, AuthMode};
pub use error::AuthError;
pub use keys::{Jwk, KeySet, PublicKeys};
pub use source::{CurrentGrants, IdentitySource, MdpIdentity, Notice, NoticePage, Validation};
pub use verifier::{TokenVerifier, VerifierStats};

/// The permission that grants every other.
pub const SYSTEM_ADMIN: &str = "system:admin";

/// True if the permission names in `granted` allow `wanted`: a name equal to it, `system:admin`,
/// or a wildcard `prefix:*` whose `prefix:` starts `wanted` (`state:*` covers `state:data:read`).
/// Services add their own implications on top (state: writing a scope implies reading it).
pub fn grants<S: AsRef<str>>(granted: &[S], wanted: &str) -> bool {
    granted.iter().any(|g| grant_covers(g.as_ref(), wanted))
}

/// True if the single granted name `granted` allows `wanted` (see [`grants`]).
pub fn grant_covers(granted: &str, wanted: &str) -> bool {
    granted == wanted
        || granted == SYSTEM_ADMIN
        || granted
            .strip_suffix('*')
            .is_some_and(|prefix| prefix.ends_with(':') && wanted.starts_with(prefix))
}

#[cfg(test)]
mod tests;
