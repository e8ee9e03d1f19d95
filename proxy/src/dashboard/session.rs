//! [`SessionStore`]: the dashboard's browser sessions, in the proxy's memory.
//!
//! A session id is 32 random bytes from the operating system (base64url), handed to the browser
//! only in the `HttpOnly` cookie and never logged. The store keys sessions by the SHA-256 of the
//! id, so the map never holds an id and a lookup's timing says nothing about one. Each session
//! holds the user's identity tokens (the browser never sees them), a CSRF token and the time it
//! was last used; idle sessions end after `session_idle_secs`, and past `max_sessions` a new
//! login ends the least recently used one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A session's identity tokens.
#[derive(Clone)]
pub struct Tokens {
    /// The access token sent to services as `token`.
    pub access: String,
    /// The refresh token, spent by `auth/refresh`.
    pub refresh: String,
    /// When the access token should be refreshed (a little before it expires).
    pub refresh_at: Instant,
}

/// One logged-in browser.
pub struct Session {
    /// Who logged in.
    pub username: String,
    /// The user's permissions (`auth/validate` at login), for the pages to show what is allowed.
    pub permissions: Vec<String>,
    /// The token every state-changing request must carry in `X-CSRF-Token`.
    pub csrf: String,
    /// Held across a refresh, so two requests never spend the same refresh token (identity
    /// would take the second as a stolen token and end the session).
    pub tokens: tokio::sync::Mutex<Tokens>,
    last_used: Mutex<Instant>,
}

impl Session {
    /// Whether `candidate` is this session's CSRF token, compared in constant time.
    pub fn csrf_matches(&self, candidate: &str) -> bool {
        let expected = self.csrf.as_bytes();
        let candidate = candidate.as_bytes();
        expected.len() == candidate.len() && bool::from(expected.ct_eq(candidate))
    }
}

/// Every live session.
pub struct SessionStore {
    sessions: Mutex<HashMap<[u8; 32], Arc<Session>>>,
    idle: Duration,
    max: usize,
}

/// 32 random bytes from the OS, base64url.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl SessionStore {
    /// An empty store whose sessions end after `idle` unused, holding at most `max`.
    pub fn new(idle: Duration, max: usize) -> SessionStore {
        SessionStore {
            sessions: Mutex::new(HashMap::new()),
            idle,
            max: max.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates a session and returns its id (for the cookie) and the session.
    pub fn create(
        &self,
        username: String,
        permissions: Vec<String>,
        tokens: Tokens,
    ) -> (String, Arc<Session>) {
        let id = random_token();
        let session = Arc::new(Session {
            username,
            permissions,
            csrf: random_token(),
            tokens: tokio::sync::Mutex::new(tokens),
            last_used: Mutex::new(Instant::now()),
        });
        let mut sessions = self.lock();
        self.expire(&mut sessions);
        while sessions.len() >= self.max {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, s)| *s.last_used.lock().unwrap_or_else(|e| e.into_inner()))
                .map(|(k, _)| *k);
            match oldest {
                Some(k) => sessions.remove(&k),
                None => break,
            };
        }
        sessions.insert(key(&id), session.clone());
        (id, session)
    }

    /// The live session with this id, marked as used now; `None` for an unknown or idle one.
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        let k = key(id);
        let mut sessions = self.lock();
        let session = sessions.get(&k)?.clone();
        let now = Instant::now();
        let mut last = session.last_used.lock().unwrap_or_else(|e| e.into_inner());
        if now.saturating_duration_since(*last) > self.idle {
            drop(last);
            sessions.remove(&k);
            return None;
        }
        *last = now;
        drop(last);
        Some(session)
    }

    /// Ends the session with this id; whether there was one.
    pub fn remove(&self, id: &str) -> bool {
        self.lock().remove(&key(id)).is_some()
    }

    /// How many sessions are held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets idle sessions.
    pub fn sweep(&self) {
        let mut sessions = self.lock();
        self.expire(&mut sessions);
    }

    fn expire(&self, sessions: &mut HashMap<[u8; 32], Arc<Session>>) {
        let now = Instant::now();
        sessions.retain(|_, s| {
            let last = *s.last_used.lock().unwrap_or_else(|e| e.into_inner());
            now.saturating_duration_since(last) <= self.idle
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens {
            access: "a".into(),
            refresh: "r".into(),
            refresh_at: Instant::now(),
        }
    }

    #[test]
    fn ids_are_random_and_only_known_ids_find_a_session() {
        let store = SessionStore::new(Duration::from_secs(60), 10);
        let (id, session) = store.create("admin".into(), vec![], tokens());
        let (other, _) = store.create("admin".into(), vec![], tokens());
        assert_ne!(id, other);
        assert_eq!(id.len(), 43, "32 bytes base64url");
        assert!(store.get(&id).is_some());
        assert!(store.get("forged").is_none());
        assert!(session.csrf_matches(&session.csrf.clone()));
        assert!(!session.csrf_matches("nope"));
        assert!(!session.csrf_matches(""));
        assert!(store.remove(&id));
        assert!(store.get(&id).is_none());
    }

    #[test]
    fn idle_sessions_end_and_the_store_is_bounded() {
        let store = SessionStore::new(Duration::ZERO, 10);
        let (id, _) = store.create("u".into(), vec![], tokens());
        std::thread::sleep(Duration::from_millis(5));
        assert!(store.get(&id).is_none(), "idle past the limit");

        let store = SessionStore::new(Duration::from_secs(60), 2);
        let (first, _) = store.create("u".into(), vec![], tokens());
        let (second, _) = store.create("u".into(), vec![], tokens());
        store.get(&second);
        let (third, _) = store.create("u".into(), vec![], tokens());
        assert_eq!(store.len(), 2);
        assert!(store.get(&third).is_some());
        assert!(store.get(&first).is_none() || store.get(&second).is_none());
    }
}
