//! Identity's public signing keys: [`Jwk`] as `auth/public_keys` sends them (RFC 8037 OKP keys),
//! and [`KeySet`], the decoding keys a verifier holds, by `kid`.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::DecodingKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One public key in JWK form: `{"kty":"OKP","crv":"Ed25519","alg":"EdDSA","use":"sig","kid","x"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Always `OKP`.
    pub kty: String,
    /// Always `Ed25519`.
    pub crv: String,
    /// Always `EdDSA`.
    #[serde(default = "eddsa")]
    pub alg: String,
    /// Always `sig`.
    #[serde(rename = "use", default = "sig")]
    pub use_: String,
    /// The key id tokens name in their header.
    pub kid: String,
    /// The raw 32-byte public key, base64url without padding.
    pub x: String,
}

fn eddsa() -> String {
    "EdDSA".into()
}

fn sig() -> String {
    "sig".into()
}

impl Jwk {
    /// The JWK of a raw Ed25519 public key, with its [`kid`](Jwk::kid_for).
    pub fn ed25519(public_key: &[u8; 32]) -> Jwk {
        Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            alg: eddsa(),
            use_: sig(),
            kid: Jwk::kid_for(public_key),
            x: URL_SAFE_NO_PAD.encode(public_key),
        }
    }

    /// The key id of a public key: the first 16 hex digits of its SHA-256.
    pub fn kid_for(public_key: &[u8]) -> String {
        Sha256::digest(public_key)
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The decoding key, if this is a well-formed Ed25519 key.
    fn decoding_key(&self) -> Option<DecodingKey> {
        let bytes = URL_SAFE_NO_PAD.decode(&self.x).ok()?;
        let ok = self.kty == "OKP" && self.crv == "Ed25519" && self.alg == "EdDSA";
        (ok && bytes.len() == 32).then(|| DecodingKey::from_ed_der(&bytes))
    }
}

/// The `data` of an `auth/public_keys` reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKeys {
    /// Every key a live token may be signed with.
    pub keys: Vec<Jwk>,
    /// How long access tokens live, so verifiers know how long to remember a revocation.
    #[serde(default = "default_ttl")]
    pub access_token_ttl_secs: u64,
}

fn default_ttl() -> u64 {
    900
}

/// Decoding keys by `kid`.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, DecodingKey>,
}

impl KeySet {
    /// The usable keys of `jwks`; malformed entries and other algorithms are left out.
    pub fn from_jwks(jwks: &[Jwk]) -> KeySet {
        let keys = jwks
            .iter()
            .filter_map(|jwk| Some((jwk.kid.clone(), jwk.decoding_key()?)))
            .collect();
        KeySet { keys }
    }

    /// The key named `kid`.
    pub fn get(&self, kid: &str) -> Option<&DecodingKey> {
        self.keys.get(kid)
    }

    /// True if no key is held.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// How many keys are held.
    pub fn len(&self) -> usize {
        self.keys.len()
    }
}
