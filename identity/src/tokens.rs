//! Token material: Ed25519 signing keys (generated on first start, kept in the database), access
//! tokens signed as the SDK's [`Claims`], opaque refresh tokens and API keys (random, stored as
//! SHA-256), and [`StoreKeys`], the in-process key source of identity's own [`TokenVerifier`].
//!
//! There is no default secret anywhere: an empty database gets a fresh key pair.

use std::sync::{Arc, RwLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use plantd_worker_sdk::auth::{
    AuthError, Claims, CurrentGrants, IdentitySource, Jwk, PublicKeys, TokenVerifier,
};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::store::keys::{self, KeyRow};
use crate::store::{now_secs, Store, StoreError};

/// Prefix of every API key, so a leaked key is recognisable (and greppable) as one.
pub const API_KEY_PREFIX: &str = "pdk_";

/// `n` random bytes from the OS generator, base64url without padding.
pub fn random_token(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// 16 random bytes as 32 lowercase hex digits (session ids, `jti`).
pub fn random_hex() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of `secret`: how refresh tokens and API keys are stored and looked up. (A fast hash
/// is right here: they are 256-bit random values, not guessable passwords.)
pub fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A fresh refresh token: 32 random bytes, base64url.
pub fn new_refresh_token() -> String {
    random_token(32)
}

/// A fresh API key: [`API_KEY_PREFIX`] and 32 random bytes, base64url.
pub fn new_api_key() -> String {
    format!("{API_KEY_PREFIX}{}", random_token(32))
}

/// A freshly generated signing key created at `now`.
pub fn generate_key(now: i64) -> KeyRow {
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let public = ed25519_dalek::SigningKey::from_bytes(&secret)
        .verifying_key()
        .to_bytes();
    KeyRow {
        kid: Jwk::kid_for(&public),
        secret,
        public,
        created_at: now,
    }
}

/// Why a token could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The stored key could not be encoded for signing.
    #[error("cannot use the signing key: {0}")]
    Key(String),
    /// `jsonwebtoken` refused.
    #[error("cannot sign the token: {0}")]
    Jwt(#[from] jsonwebtoken::errors::Error),
    /// No key could be loaded or created.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The key that signs access tokens now.
struct ActiveKey {
    kid: String,
    encoding: EncodingKey,
}

/// Signs access tokens with the active key, and switches keys on rotation.
#[derive(Clone)]
pub struct Signer {
    active: Arc<RwLock<ActiveKey>>,
}

impl Signer {
    /// Loads the active key from `store`, generating and storing one if there is none.
    pub fn load(store: &Store) -> Result<Signer, SignError> {
        let row = match store.read(keys::active)? {
            Some(row) => row,
            None => {
                let row = generate_key(now_secs());
                let stored = row.clone();
                store.write(move |conn| {
                    // Another process may have raced us to it: keep whichever is there.
                    if keys::active(conn)?.is_none() {
                        keys::rotate(conn, &stored, stored.created_at, stored.created_at)?;
                    }
                    Ok(())
                })?;
                store.read(keys::active)?.unwrap_or(row)
            }
        };
        Ok(Signer {
            active: Arc::new(RwLock::new(active_key(&row)?)),
        })
    }

    /// Makes `row` the signing key from now on (after it is stored).
    pub fn switch_to(&self, row: &KeyRow) -> Result<(), SignError> {
        let key = active_key(row)?;
        *self.active.write().unwrap_or_else(|e| e.into_inner()) = key;
        Ok(())
    }

    /// The `kid` of the active key.
    pub fn kid(&self) -> String {
        self.active
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .kid
            .clone()
    }

    /// A signed JWT of `claims`: `{"alg":"EdDSA","typ":"JWT","kid":...}`.
    pub fn sign(&self, claims: &Claims) -> Result<String, SignError> {
        let active = self.active.read().unwrap_or_else(|e| e.into_inner());
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(active.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &active.encoding)?)
    }
}

fn active_key(row: &KeyRow) -> Result<ActiveKey, SignError> {
    let der = ed25519_dalek::SigningKey::from_bytes(&row.secret)
        .to_pkcs8_der()
        .map_err(|e| SignError::Key(e.to_string()))?;
    Ok(ActiveKey {
        kid: row.kid.clone(),
        encoding: EncodingKey::from_ed_der(der.as_bytes()),
    })
}

/// The `auth/public_keys` data: the active key and retired keys still listed.
pub fn public_keys(store: &Store, access_ttl_secs: u64) -> Result<PublicKeys, StoreError> {
    let rows = store.read(|conn| keys::listed(conn, now_secs()))?;
    Ok(PublicKeys {
        keys: rows.iter().map(|row| Jwk::ed25519(&row.public)).collect(),
        access_token_ttl_secs: access_ttl_secs,
    })
}

/// Identity's own key source: reads the keys straight from the store, so identity never calls
/// itself over MDP to check the tokens sent to it.
pub struct StoreKeys {
    store: Store,
    access_ttl_secs: u64,
}

impl StoreKeys {
    /// A verifier whose keys come from `store`.
    pub fn verifier(store: Store, access_ttl_secs: u64) -> TokenVerifier {
        // No refetch pacing: a lookup here is a local read, and a rotation must be seen at once.
        TokenVerifier::with_refetch_interval(
            StoreKeys {
                store,
                access_ttl_secs,
            },
            std::time::Duration::ZERO,
        )
    }
}

impl IdentitySource for StoreKeys {
    fn public_keys(&self) -> Result<PublicKeys, AuthError> {
        public_keys(&self.store, self.access_ttl_secs)
            .map_err(|e| AuthError::Unavailable(format!("cannot read the signing keys: {e}")))
    }

    /// Never needed: identity does not tell its own verifier about permission changes (it reads
    /// current grants from the database for every request instead), so the verifier never asks.
    fn current_grants(&self, _token: &str) -> Result<CurrentGrants, AuthError> {
        Err(AuthError::Unavailable(
            "identity reads current grants from its database".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_and_digests_fixed_size() {
        assert_ne!(new_refresh_token(), new_refresh_token());
        assert_eq!(new_refresh_token().len(), 43, "32 bytes base64url");
        assert!(new_api_key().starts_with(API_KEY_PREFIX));
        assert_eq!(random_hex().len(), 32);
        assert_eq!(digest("a"), digest("a"));
        assert_ne!(digest("a"), digest("b"));
    }

    #[test]
    fn a_generated_key_signs_tokens_that_name_its_kid() {
        let row = generate_key(0);
        let key = active_key(&row).unwrap();
        assert_eq!(key.kid, Jwk::kid_for(&row.public));
        assert_eq!(key.kid.len(), 16);
        assert!(format!("{row:?}").contains(&row.kid));
    }
}
