//! Verifier tests against keys made here: signatures, forgeries, expiry, key rotation,
//! revocation, permission changes and the permission-matching rule.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use super::*;

/// A signing key and its JWK.
struct TestKey {
    encoding: EncodingKey,
    jwk: Jwk,
}

fn test_key() -> TestKey {
    let signing = SigningKey::generate(&mut rand::rngs::OsRng);
    let der = signing.to_pkcs8_der().unwrap();
    TestKey {
        encoding: EncodingKey::from_ed_der(der.as_bytes()),
        jwk: Jwk::ed25519(signing.verifying_key().as_bytes()),
    }
}

fn claims(user: u64, permissions: &[&str], exp_in: i64) -> Claims {
    let now = chrono::Utc::now().timestamp();
    Claims {
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        sub: user.to_string(),
        username: format!("user{user}"),
        sid: format!("session-{user}"),
        jti: format!("jti-{user}-{now}-{exp_in}"),
        iat: now,
        exp: now + exp_in,
        kind: TokenKind::User,
        akid: None,
        roles: vec![],
        permissions: permissions.iter().map(|s| s.to_string()).collect(),
        org_permissions: Default::default(),
        orgs: vec![],
    }
}

fn sign(key: &TestKey, claims: &Claims) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(key.jwk.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
}

/// An identity stand-in for unit tests: serves the keys and grants it is given, counts calls.
#[derive(Clone, Default)]
struct FixedIdentity {
    keys: Arc<Mutex<Option<Vec<Jwk>>>>,
    grants: Arc<Mutex<CurrentGrants>>,
    key_fetches: Arc<AtomicUsize>,
    grant_lookups: Arc<AtomicUsize>,
    /// The notice log, served two at a time.
    notices: Arc<Mutex<Vec<Notice>>>,
}

impl FixedIdentity {
    fn with_keys(keys: &[&TestKey]) -> Self {
        let me = FixedIdentity::default();
        me.set_keys(keys);
        me
    }
    fn set_keys(&self, keys: &[&TestKey]) {
        *self.keys.lock().unwrap() = Some(keys.iter().map(|k| k.jwk.clone()).collect());
    }
}

impl IdentitySource for FixedIdentity {
    fn public_keys(&self) -> Result<PublicKeys, AuthError> {
        self.key_fetches.fetch_add(1, Ordering::SeqCst);
        let keys = self.keys.lock().unwrap().clone();
        let keys = keys.ok_or_else(|| AuthError::Unavailable("identity is down".into()))?;
        Ok(PublicKeys {
            keys,
            access_token_ttl_secs: 900,
        })
    }
    fn current_grants(&self, _token: &str) -> Result<CurrentGrants, AuthError> {
        self.grant_lookups.fetch_add(1, Ordering::SeqCst);
        Ok(self.grants.lock().unwrap().clone())
    }
    fn notices(&self, after: u64) -> Result<NoticePage, AuthError> {
        let log = self.notices.lock().unwrap();
        let later: Vec<Notice> = log.iter().filter(|n| n.seq > after).cloned().collect();
        Ok(NoticePage {
            more: later.len() > 2,
            notices: later.into_iter().take(2).collect(),
            last_seq: log.last().map_or(0, |n| n.seq),
        })
    }
}

impl FixedIdentity {
    /// Appends a notice to the log, numbered after the last.
    fn notice(&self, topic: &str, data: serde_json::Value) {
        let mut log = self.notices.lock().unwrap();
        let seq = log.last().map_or(0, |n| n.seq) + 1;
        log.push(Notice {
            seq,
            topic: topic.into(),
            time_ms: chrono::Utc::now().timestamp_millis(),
            data,
        });
    }
}

#[test]
fn a_genuine_token_verifies_and_grants_only_its_permissions() {
    let key = test_key();
    let verifier = TokenVerifier::new(FixedIdentity::with_keys(&[&key]));
    let token = sign(&key, &claims(7, &["state:data:read"], 600));
    let p = verifier.authorize(Some(&token), "state:data:read").unwrap();
    assert_eq!((p.user_id, p.username.as_str()), (7, "user7"));
    let denied = verifier
        .authorize(Some(&token), "state:data:write")
        .unwrap_err();
    assert_eq!(denied.code(), "PERMISSION_DENIED");
    assert!(denied.to_string().contains("state:data:write"), "{denied}");
    for missing in [None, Some("")] {
        let e = verifier.authorize(missing, "state:data:read").unwrap_err();
        assert_eq!(e.code(), "UNAUTHENTICATED");
    }
}

#[test]
fn forged_tokens_are_refused() {
    let key = test_key();
    let other = test_key();
    let verifier = TokenVerifier::new(FixedIdentity::with_keys(&[&key]));
    let good = claims(1, &["system:admin"], 600);

    // Signed by another key under the real key's kid.
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(key.jwk.kid.clone());
    let wrong_key = jsonwebtoken::encode(&header, &good, &other.encoding).unwrap();

    // `alg: none`, no signature.
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&good).unwrap());
    let none_header = URL_SAFE_NO_PAD.encode(format!(
        r#"{{"alg":"none","typ":"JWT","kid":"{}"}}"#,
        key.jwk.kid
    ));
    let alg_none = format!("{none_header}.{payload}.");

    // HS256 keyed with the public key (the classic algorithm-confusion attack).
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some(key.jwk.kid.clone());
    let public = URL_SAFE_NO_PAD.decode(&key.jwk.x).unwrap();
    let hs256 = jsonwebtoken::encode(&hs, &good, &EncodingKey::from_secret(&public)).unwrap();
    let hs256_b64 =
        jsonwebtoken::encode(&hs, &good, &EncodingKey::from_secret(key.jwk.x.as_bytes())).unwrap();

    // A genuine token with its claims edited afterwards.
    let genuine = sign(&key, &claims(2, &["state:data:read"], 600));
    let parts: Vec<&str> = genuine.split('.').collect();
    let mut edited = claims(2, &["system:admin"], 600);
    edited.jti = "x".into();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&edited).unwrap()),
        parts[2]
    );

    let mut wrong_issuer = good.clone();
    wrong_issuer.iss = "someone-else".into();
    let mut wrong_audience = good.clone();
    wrong_audience.aud = "elsewhere".into();

    for (what, token) in [
        ("wrong key", wrong_key),
        ("alg none", alg_none),
        ("hs256 with public key", hs256),
        ("hs256 with base64 public key", hs256_b64),
        ("tampered claims", tampered),
        ("wrong issuer", sign(&key, &wrong_issuer)),
        ("wrong audience", sign(&key, &wrong_audience)),
        ("garbage", "not.a.token".into()),
        ("huge", "a".repeat(100_000)),
    ] {
        let e = verifier.verify(&token).unwrap_err();
        assert_eq!(e.code(), "UNAUTHENTICATED", "{what}: {e}");
    }
    let expired = sign(&key, &claims(3, &["system:admin"], -120));
    assert_eq!(
        verifier.verify(&expired).unwrap_err(),
        AuthError::TokenExpired
    );
}

#[test]
fn an_unknown_kid_refetches_keys_once_then_refuses() {
    let old = test_key();
    let new = test_key();
    let identity = FixedIdentity::with_keys(&[&old]);
    let verifier =
        TokenVerifier::with_refetch_interval(identity.clone(), std::time::Duration::ZERO);
    assert!(verifier.verify(&sign(&old, &claims(1, &[], 600))).is_ok());
    assert_eq!(identity.key_fetches.load(Ordering::SeqCst), 1);

    // Identity rotated: a token under the new key makes the verifier refetch.
    identity.set_keys(&[&old, &new]);
    assert!(verifier.verify(&sign(&new, &claims(1, &[], 600))).is_ok());
    assert_eq!(identity.key_fetches.load(Ordering::SeqCst), 2);
    assert!(verifier.verify(&sign(&old, &claims(2, &[], 600))).is_ok());
    assert_eq!(
        identity.key_fetches.load(Ordering::SeqCst),
        2,
        "known kids need no fetch"
    );

    // A kid nobody has: refused; with the default interval a burst costs at most one fetch.
    let stranger = test_key();
    let verifier = TokenVerifier::new(identity.clone());
    assert!(verifier.verify(&sign(&old, &claims(1, &[], 600))).is_ok());
    let before = identity.key_fetches.load(Ordering::SeqCst);
    for _ in 0..50 {
        let e = verifier
            .verify(&sign(&stranger, &claims(1, &[], 600)))
            .unwrap_err();
        assert_eq!(e.code(), "UNAUTHENTICATED");
    }
    assert!(identity.key_fetches.load(Ordering::SeqCst) <= before + 1);
}

#[test]
fn without_keys_nothing_is_allowed() {
    let key = test_key();
    let identity = FixedIdentity::default();
    let verifier = TokenVerifier::new(identity.clone());
    let e = verifier
        .verify(&sign(&key, &claims(1, &["system:admin"], 600)))
        .unwrap_err();
    assert_eq!(e.code(), "UNAVAILABLE", "{e}");
    // Once identity answers, the same token works.
    identity.set_keys(&[&key]);
    verifier.refresh_keys().unwrap();
    assert!(verifier
        .verify(&sign(&key, &claims(1, &["system:admin"], 600)))
        .is_ok());
}

#[test]
fn revoked_sessions_are_refused_even_when_cached() {
    let key = test_key();
    let verifier = TokenVerifier::new(FixedIdentity::with_keys(&[&key]));
    let c = claims(5, &["state:data:read"], 600);
    let token = sign(&key, &c);
    assert!(verifier.verify(&token).is_ok());
    let event = crate::bus::Event::new(
        "org.plantd.Identity",
        "identity.revoked",
        serde_json::json!({"sessions": [c.sid], "user_id": 5, "reason": "logout"}),
    );
    assert!(verifier.apply_event(events::REVOKED_TOPIC, &event));
    assert_eq!(
        verifier.verify(&token).unwrap_err(),
        AuthError::TokenRevoked
    );
    // Another token of the same session, never seen before: refused too.
    let mut again = c.clone();
    again.jti = "fresh".into();
    assert_eq!(
        verifier.verify(&sign(&key, &again)).unwrap_err(),
        AuthError::TokenRevoked
    );
    assert_eq!(verifier.stats().revocations_received, 1);
}

#[test]
fn a_revocation_the_bus_lost_arrives_from_the_notice_log() {
    let key = test_key();
    let identity = FixedIdentity::with_keys(&[&key]);
    let verifier = TokenVerifier::new(identity.clone());
    let (five, six) = (claims(5, &["a:b:c"], 600), claims(6, &["a:b:c"], 600));
    let (token5, token6) = (sign(&key, &five), sign(&key, &six));
    assert!(verifier.verify(&token5).is_ok());
    assert!(verifier.verify(&token6).is_ok());
    assert_eq!(verifier.catch_up().unwrap(), 0, "an empty log");

    // Three notices: more than one page. No bus event ever arrives.
    identity.notice(
        events::REVOKED_TOPIC,
        serde_json::json!({"sessions": [five.sid], "user_id": 5, "reason": "logout"}),
    );
    identity.notice(events::CHANGED_TOPIC, serde_json::json!({"user_ids": [77]}));
    identity.notice(
        events::REVOKED_TOPIC,
        serde_json::json!({"sessions": [six.sid], "user_id": 6, "reason": "deactivated"}),
    );
    assert_eq!(verifier.catch_up().unwrap(), 3);
    assert_eq!(
        verifier.verify(&token5).unwrap_err(),
        AuthError::TokenRevoked
    );
    assert_eq!(
        verifier.verify(&token6).unwrap_err(),
        AuthError::TokenRevoked
    );
    let stats = verifier.stats();
    assert_eq!((stats.notice_seq, stats.notices_caught_up), (3, 3));
    assert_eq!(stats.revocations_received, 2);
    assert_eq!(
        verifier.catch_up().unwrap(),
        0,
        "read from where it stopped"
    );

    // The bus delivers the first revocation late: applied, but not news.
    let late = crate::bus::Event::new(
        "org.plantd.Identity",
        "identity.revoked",
        serde_json::json!({"sessions": [five.sid], "user_id": 5, "reason": "logout"}),
    );
    assert!(verifier.apply_event(events::REVOKED_TOPIC, &late));
    assert_eq!(verifier.stats().revocations_received, 2);

    // Identity's database was replaced: its log starts again at 1, and is read from the start.
    let seven = claims(7, &["a:b:c"], 600);
    let token7 = sign(&key, &seven);
    assert!(verifier.verify(&token7).is_ok());
    identity.notices.lock().unwrap().clear();
    identity.notice(
        events::REVOKED_TOPIC,
        serde_json::json!({"sessions": [seven.sid], "user_id": 7, "reason": "logout"}),
    );
    assert_eq!(verifier.catch_up().unwrap(), 1);
    assert_eq!(
        verifier.verify(&token7).unwrap_err(),
        AuthError::TokenRevoked
    );
}

#[test]
fn a_permission_change_takes_effect_without_a_new_token() {
    let key = test_key();
    let identity = FixedIdentity::with_keys(&[&key]);
    let verifier = TokenVerifier::new(identity.clone());
    let token = sign(&key, &claims(9, &["state:data:read"], 600));
    assert!(verifier.authorize(Some(&token), "state:data:read").is_ok());
    assert!(verifier.authorize(Some(&token), "state:data:read").is_ok());
    assert_eq!(
        identity.grant_lookups.load(Ordering::SeqCst),
        0,
        "claims suffice"
    );

    identity.grants.lock().unwrap().permissions = vec!["state:data:write".into()];
    let event = crate::bus::Event::new(
        "org.plantd.Identity",
        "identity.changed",
        serde_json::json!({"user_ids": [9]}),
    );
    assert!(verifier.apply_event(events::CHANGED_TOPIC, &event));
    assert_eq!(
        verifier
            .authorize(Some(&token), "state:data:read")
            .unwrap_err()
            .code(),
        "PERMISSION_DENIED"
    );
    assert!(verifier.authorize(Some(&token), "state:data:write").is_ok());
    assert_eq!(
        identity.grant_lookups.load(Ordering::SeqCst),
        1,
        "asked once, then cached"
    );

    // Other users' tokens are untouched.
    let other = sign(&key, &claims(10, &["state:data:read"], 600));
    assert!(verifier.authorize(Some(&other), "state:data:read").is_ok());
    assert_eq!(identity.grant_lookups.load(Ordering::SeqCst), 1);
}

#[test]
fn malformed_events_are_ignored() {
    let verifier = TokenVerifier::new(FixedIdentity::default());
    let bad = crate::bus::Event::new("x", "identity.revoked", serde_json::json!({"sessions": 5}));
    assert!(!verifier.apply_event(events::REVOKED_TOPIC, &bad));
    assert!(!verifier.apply_event("org.plantd.other", &bad));
}

#[test]
fn grants_match_exactly_by_admin_or_by_wildcard() {
    let g = |names: &[&str], wanted| grants(names, wanted);
    assert!(g(&["state:data:read"], "state:data:read"));
    assert!(!g(&["state:data:read"], "state:data:write"));
    assert!(g(&["system:admin"], "identity:user:create"));
    assert!(g(&["state:*"], "state:scope:a:write"));
    assert!(g(&["state:scope:*"], "state:scope:a:write"));
    assert!(!g(&["state*"], "statex:data:read"));
    assert!(!g(&["stat:*"], "state:data:read"));
    assert!(!g(&["state:data:read*"], "state:data:readall"));
    assert!(!grants::<&str>(&[], "state:data:read"));
}
