//! [`TokenVerifier`]: verifies access tokens locally with identity's public keys, remembers what it
//! verified until the token expires, and applies revocations and permission changes at once.
//!
//! Decisions never depend on the cache alone: a cached token is re-checked for expiry and for a
//! revoked session on every use, and a permission change for a user drops that user's entries and
//! makes the next use ask identity for the current grants (a token's `permissions` claim is what
//! held when it was issued).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey};

use super::{AuthError, Claims, IdentitySource, KeySet, Principal, AUDIENCE, ISSUER};

/// Clock skew allowed on `exp` (seconds).
const LEEWAY_SECS: i64 = 30;
/// An unknown `kid` makes the verifier refetch keys at most this often (by default), so forged
/// tokens cannot turn it into a flood of requests to identity.
const MIN_REFETCH: Duration = Duration::from_secs(2);
/// Cached tokens kept at most; past this, expired entries go, then everything.
const MAX_CACHED: usize = 10_000;
/// Tokens longer than this are refused unread.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Verifies identity access tokens. Cheap to clone (clones share keys, cache and revocations).
///
/// Calls may block for a round trip to identity (fetching keys, or current grants after a change),
/// so call it from a handler thread or `spawn_blocking`, not from an async task directly.
#[derive(Clone)]
pub struct TokenVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    source: Box<dyn IdentitySource>,
    /// Least time between two key fetches prompted by unknown `kid`s.
    min_refetch: Duration,
    keys: RwLock<Keys>,
    /// Held while fetching keys: one fetch at a time, and when the last one started.
    fetching: Mutex<Option<Instant>>,
    cache: Mutex<HashMap<String, Arc<Principal>>>,
    /// Revoked session ids, each with the Unix time after which no token of it can be alive.
    revoked: Mutex<HashMap<String, i64>>,
    /// Users whose grants changed, with the (identity) Unix time of the latest change.
    changed: Mutex<HashMap<u64, i64>>,
    /// Bumped on every change, so a lookup that raced one does not cache stale grants.
    generation: AtomicU64,
    events_connected: AtomicBool,
    revocations_received: AtomicU64,
    changes_received: AtomicU64,
    /// The last notice read from identity's log; held while catching up (one at a time).
    notice_seq: Mutex<u64>,
    /// Its value after the last catch-up, for [`stats`](TokenVerifier::stats), which must not
    /// wait for a catch-up's round trip.
    notice_seq_seen: AtomicU64,
    notices_caught_up: AtomicU64,
}

#[derive(Default)]
struct Keys {
    set: KeySet,
    /// Whether a fetch ever succeeded.
    loaded: bool,
    access_token_ttl_secs: u64,
}

/// What a verifier holds and has received, for health, metrics and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifierStats {
    /// Public keys held.
    pub keys: usize,
    /// Whether identity's keys were ever obtained.
    pub keys_loaded: bool,
    /// Tokens cached.
    pub cached: usize,
    /// Whether the revocation subscriber is connected to the event bus.
    pub events_connected: bool,
    /// Revocations applied (from the bus or the notice log) that were news to this verifier.
    pub revocations_received: u64,
    /// Permission changes applied that were news to this verifier.
    pub changes_received: u64,
    /// Notices that reached this verifier from identity's log before (or instead of) the bus.
    pub notices_caught_up: u64,
    /// The last notice read from identity's log.
    pub notice_seq: u64,
}

impl TokenVerifier {
    /// A verifier asking `source` for keys and grants. It fetches nothing until first needed (or
    /// until [`refresh_keys`](Self::refresh_keys)).
    pub fn new(source: impl IdentitySource + 'static) -> TokenVerifier {
        Self::with_refetch_interval(source, MIN_REFETCH)
    }

    /// Like [`new`](Self::new), refetching keys for an unknown `kid` at most every `interval`
    /// (default 2 s).
    pub fn with_refetch_interval(
        source: impl IdentitySource + 'static,
        interval: Duration,
    ) -> TokenVerifier {
        TokenVerifier {
            inner: Arc::new(Inner {
                source: Box::new(source),
                min_refetch: interval,
                keys: RwLock::new(Keys {
                    access_token_ttl_secs: 900,
                    ..Keys::default()
                }),
                fetching: Mutex::new(None),
                cache: Mutex::new(HashMap::new()),
                revoked: Mutex::new(HashMap::new()),
                changed: Mutex::new(HashMap::new()),
                generation: AtomicU64::new(0),
                events_connected: AtomicBool::new(false),
                revocations_received: AtomicU64::new(0),
                changes_received: AtomicU64::new(0),
                notice_seq: Mutex::new(0),
                notice_seq_seen: AtomicU64::new(0),
                notices_caught_up: AtomicU64::new(0),
            }),
        }
    }

    /// Verifies `token` and checks that it grants `permission` (see [`grants`](super::grants)).
    /// `None` or an empty token is `UNAUTHENTICATED`.
    pub fn authorize(
        &self,
        token: Option<&str>,
        permission: &str,
    ) -> Result<Arc<Principal>, AuthError> {
        self.authorize_with(token, permission, |p| p.has(permission))
    }

    /// Verifies `token` and asks `allowed` whether its principal may go on; a refusal is
    /// `PERMISSION_DENIED` naming `permission`. For services with their own implication rules.
    pub fn authorize_with(
        &self,
        token: Option<&str>,
        permission: &str,
        allowed: impl FnOnce(&Principal) -> bool,
    ) -> Result<Arc<Principal>, AuthError> {
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| AuthError::Unauthenticated("a token is required".into()))?;
        let principal = self.verify(token)?;
        if allowed(&principal) {
            Ok(principal)
        } else {
            Err(AuthError::PermissionDenied {
                permission: permission.to_owned(),
            })
        }
    }

    /// Verifies `token`: signature, issuer, audience, expiry, revocation, and current grants.
    pub fn verify(&self, token: &str) -> Result<Arc<Principal>, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Unauthenticated("a token is required".into()));
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Unauthenticated("the token is too long".into()));
        }
        let now = unix_now();
        let cached = self.inner.cache.lock().unwrap().get(token).cloned();
        if let Some(principal) = cached {
            if now > principal.expires_at + LEEWAY_SECS {
                self.inner.cache.lock().unwrap().remove(token);
                return Err(AuthError::TokenExpired);
            }
            self.check_session(&principal.session_id)?;
            return Ok(principal);
        }

        let generation = self.inner.generation.load(Ordering::Acquire);
        let claims = self.decode(token)?;
        self.check_session(&claims.sid)?;
        let mut principal = Principal::from_claims(&claims).map_err(|_| {
            AuthError::Unauthenticated("the token's subject is not a user id".into())
        })?;
        let changed_since_issue = self
            .inner
            .changed
            .lock()
            .unwrap()
            .get(&principal.user_id)
            .is_some_and(|&at| at >= claims.iat);
        if changed_since_issue {
            let grants = self.inner.source.current_grants(token)?;
            principal.roles = grants.roles;
            principal.permissions = grants.permissions;
            principal.org_permissions = grants.org_permissions;
            principal.organizations = grants.organizations;
        }
        let principal = Arc::new(principal);
        // A change that arrived meanwhile may postdate what we just read: do not keep it.
        if self.inner.generation.load(Ordering::Acquire) == generation {
            self.remember(token, principal.clone(), now);
        }
        Ok(principal)
    }

    /// Ends every token of these sessions, now and for as long as one of them could live.
    /// Returns whether any of them was news (not already revoked here).
    pub fn revoke_sessions<S: AsRef<str>>(&self, sessions: &[S]) -> bool {
        let forget_at = unix_now() + self.ttl_secs() + 2 * LEEWAY_SECS;
        let mut revoked = self.inner.revoked.lock().unwrap();
        revoked.retain(|_, &mut until| until > unix_now());
        let ended: HashSet<&str> = sessions.iter().map(AsRef::as_ref).collect();
        let mut news = false;
        for sid in &ended {
            news |= revoked.insert((*sid).to_owned(), forget_at).is_none();
        }
        drop(revoked);
        if !news {
            return false;
        }
        self.inner
            .cache
            .lock()
            .unwrap()
            .retain(|_, p| !ended.contains(p.session_id.as_str()));
        self.inner
            .revocations_received
            .fetch_add(1, Ordering::Relaxed);
        true
    }

    /// The grants of these users changed at `at` (identity's Unix time): their tokens issued
    /// until then get their grants from identity on next use. Returns whether it was news (not
    /// older than every change already known for them).
    pub fn grants_changed(&self, users: &[u64], at: i64) -> bool {
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
        let mut changed = self.inner.changed.lock().unwrap();
        let horizon = unix_now() - self.ttl_secs() - 2 * LEEWAY_SECS;
        changed.retain(|_, &mut t| t > horizon);
        let mut news = false;
        for &user in users {
            // Times are whole seconds: a second change within the same one is news too.
            let known = changed.entry(user).or_insert(i64::MIN);
            news |= at >= *known;
            *known = (*known).max(at);
        }
        drop(changed);
        if !news {
            return false;
        }
        let users: HashSet<u64> = users.iter().copied().collect();
        self.inner
            .cache
            .lock()
            .unwrap()
            .retain(|_, p| !users.contains(&p.user_id));
        self.inner.changes_received.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Reads identity's notice log from where the last call stopped and applies every revocation
    /// and permission change in it, so news the bus lost (not yet subscribed, disconnected,
    /// restarted, dropped) still arrives. Returns how many notices were news.
    pub fn catch_up(&self) -> Result<usize, AuthError> {
        let mut seq = self.inner.notice_seq.lock().unwrap();
        let mut news = 0;
        loop {
            let page = self.inner.source.notices(*seq)?;
            if page.last_seq < *seq {
                // A different log (identity's database was replaced): read it from the start.
                *seq = 0;
                continue;
            }
            for notice in &page.notices {
                if self.apply_notice(&notice.topic, &notice.data, notice.time_ms.div_euclid(1000))
                    == Some(true)
                {
                    news += 1;
                }
                *seq = (*seq).max(notice.seq);
            }
            if !page.more || page.notices.is_empty() {
                break;
            }
        }
        self.inner.notice_seq_seen.store(*seq, Ordering::Relaxed);
        self.inner
            .notices_caught_up
            .fetch_add(news as u64, Ordering::Relaxed);
        Ok(news)
    }

    /// Fetches identity's public keys now, replacing those held.
    pub fn refresh_keys(&self) -> Result<usize, AuthError> {
        let mut last = self.inner.fetching.lock().unwrap();
        *last = Some(Instant::now());
        self.fetch_keys_locked()
    }

    /// What the verifier holds and has received.
    pub fn stats(&self) -> VerifierStats {
        let keys = self.inner.keys.read().unwrap();
        VerifierStats {
            keys: keys.set.len(),
            keys_loaded: keys.loaded,
            cached: self.inner.cache.lock().unwrap().len(),
            events_connected: self.inner.events_connected.load(Ordering::Relaxed),
            revocations_received: self.inner.revocations_received.load(Ordering::Relaxed),
            changes_received: self.inner.changes_received.load(Ordering::Relaxed),
            notices_caught_up: self.inner.notices_caught_up.load(Ordering::Relaxed),
            notice_seq: self.inner.notice_seq_seen.load(Ordering::Relaxed),
        }
    }

    pub(super) fn set_events_connected(&self, connected: bool) {
        self.inner
            .events_connected
            .store(connected, Ordering::Relaxed);
    }

    fn check_session(&self, sid: &str) -> Result<(), AuthError> {
        if self.inner.revoked.lock().unwrap().contains_key(sid) {
            Err(AuthError::TokenRevoked)
        } else {
            Ok(())
        }
    }

    fn ttl_secs(&self) -> i64 {
        let ttl = self.inner.keys.read().unwrap().access_token_ttl_secs;
        i64::try_from(ttl).unwrap_or(i64::MAX / 4)
    }

    fn decode(&self, token: &str) -> Result<Claims, AuthError> {
        let malformed = || AuthError::Unauthenticated("the token is malformed".into());
        let header = jsonwebtoken::decode_header(token).map_err(|_| malformed())?;
        if header.alg != Algorithm::EdDSA {
            return Err(AuthError::Unauthenticated(
                "the token is not signed with EdDSA".into(),
            ));
        }
        let kid = header
            .kid
            .ok_or_else(|| AuthError::Unauthenticated("the token names no key (kid)".into()))?;
        let key = self.key(&kid)?;
        let mut validation = jsonwebtoken::Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECS as u64;
        jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::TokenExpired,
                ErrorKind::InvalidSignature => {
                    AuthError::Unauthenticated("the token's signature is not valid".into())
                }
                ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => {
                    AuthError::Unauthenticated("the token was not issued for plantd".into())
                }
                _ => AuthError::Unauthenticated("the token is not valid".into()),
            })
    }

    /// The key `kid`, refetching once (at most every `min_refetch`) when it is unknown.
    fn key(&self, kid: &str) -> Result<DecodingKey, AuthError> {
        if let Some(key) = self.inner.keys.read().unwrap().set.get(kid) {
            return Ok(key.clone());
        }
        let mut last = self.inner.fetching.lock().unwrap();
        // Another thread may have fetched while we waited.
        if let Some(key) = self.inner.keys.read().unwrap().set.get(kid) {
            return Ok(key.clone());
        }
        let loaded = self.inner.keys.read().unwrap().loaded;
        let may_fetch = last.is_none_or(|at| at.elapsed() >= self.inner.min_refetch);
        if may_fetch {
            *last = Some(Instant::now());
            if let Err(e) = self.fetch_keys_locked() {
                if !loaded {
                    return Err(e);
                }
                tracing::warn!(error = %e, "cannot refetch identity's public keys; using those held");
            }
        } else if !loaded {
            return Err(AuthError::Unavailable(
                "identity's public keys have not been obtained yet".into(),
            ));
        }
        self.inner
            .keys
            .read()
            .unwrap()
            .set
            .get(kid)
            .cloned()
            .ok_or_else(|| {
                AuthError::Unauthenticated("the token is signed by an unknown key".into())
            })
    }

    /// Fetches keys; the caller holds `fetching`.
    fn fetch_keys_locked(&self) -> Result<usize, AuthError> {
        let fetched = self.inner.source.public_keys()?;
        let set = KeySet::from_jwks(&fetched.keys);
        let count = set.len();
        let mut keys = self.inner.keys.write().unwrap();
        keys.set = set;
        keys.loaded = true;
        keys.access_token_ttl_secs = fetched.access_token_ttl_secs;
        Ok(count)
    }

    fn remember(&self, token: &str, principal: Arc<Principal>, now: i64) {
        let mut cache = self.inner.cache.lock().unwrap();
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, p| p.expires_at + LEEWAY_SECS >= now);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(token.to_owned(), principal);
    }
}

/// Seconds since the Unix epoch.
pub(super) fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}
