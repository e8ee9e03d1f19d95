//! The allow list (`curve.authorized_keys`): which CURVE keys may connect, under which name and
//! with which [`Policy`]; and [`SharedAllowList`], the current list that the ZAP handler, the
//! broker loop and the bus proxies read while the reloader swaps in new ones.
//!
//! File format, one key per line:
//!
//! ```text
//! # <z85 public key (40 chars)>            <name>   <policy>
//! Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID  state    register=org.plantd.State;bus.publish=state
//! ```
//!
//! - Fields are separated by whitespace; the policy is the rest of the line (`policy.rs`).
//! - Blank lines and lines starting with `#` are ignored. (`#` is a Z85 character, but the last
//!   of the alphabet, which a 32-byte key's encoding cannot start with.)
//! - Names are `[A-Za-z0-9._-]+`; they appear in logs, metrics and audit events. A key listed
//!   twice, or a name given to two keys, is an error: the whole file is refused, and a reload
//!   keeps the previous list.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use plantd_worker_sdk::curve::PublicKey;

use super::policy::Policy;

/// One listed key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its name (logs, metrics, audit events).
    pub name: Arc<str>,
    /// What it may do.
    pub policy: Policy,
}

/// Every key allowed to connect, by its Z85 text (the ZAP `User-Id` the handler gives it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowList {
    entries: HashMap<Box<str>, Entry>,
}

impl AllowList {
    /// Parses the file format (module docs); errors name the line.
    pub fn parse(text: &str) -> Result<AllowList, String> {
        let mut list = AllowList::default();
        for (number, line) in text.lines().enumerate() {
            let at = |reason: String| format!("line {}: {reason}", number + 1);
            let line = line.trim();
            let mut fields = line.splitn(2, char::is_whitespace);
            let Some(key) = fields.next().filter(|k| !k.is_empty()) else {
                continue;
            };
            if key.starts_with('#') {
                continue;
            }
            let rest = fields.next().unwrap_or("").trim_start();
            let mut rest = rest.splitn(2, char::is_whitespace);
            let name = rest
                .next()
                .filter(|n| !n.is_empty())
                .ok_or_else(|| at("expected <z85 public key> <name> <policy>".to_owned()))?;
            let policy = rest.next().unwrap_or("").trim();
            // Parsing checks the key; the error never repeats it (it may be a secret pasted in
            // the wrong file).
            let public =
                PublicKey::from_z85(key, "the first field").map_err(|e| at(e.to_string()))?;
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            {
                return Err(at(format!("name {name:?} may only use A-Z a-z 0-9 . _ -")));
            }
            let policy = Policy::parse(policy).map_err(|e| at(format!("policy: {e}")))?;
            if list.entries.values().any(|e| &*e.name == name) {
                return Err(at(format!("name {name:?} is given to two keys")));
            }
            let entry = Entry {
                name: name.into(),
                policy,
            };
            if list
                .entries
                .insert(public.to_z85().into_boxed_str(), entry)
                .is_some()
            {
                return Err(at(format!("the key of {name:?} is listed twice")));
            }
        }
        Ok(list)
    }

    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<AllowList, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        AllowList::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The entry of the key whose Z85 text is `user_id`.
    pub fn get(&self, user_id: &str) -> Option<&Entry> {
        self.entries.get(user_id)
    }

    /// Listed keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is listed (then nobody can connect).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every entry, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(k, e)| (&**k, e))
    }
}

/// The current allow list, swapped whole on reload. Readers keep a [`View`] that costs one
/// atomic load per use while the list is unchanged.
#[derive(Debug, Default)]
pub struct SharedAllowList {
    current: RwLock<Arc<AllowList>>,
    generation: AtomicU64,
}

impl SharedAllowList {
    /// A shared list starting as `list`.
    pub fn new(list: AllowList) -> Arc<Self> {
        Arc::new(SharedAllowList {
            current: RwLock::new(Arc::new(list)),
            generation: AtomicU64::new(0),
        })
    }

    /// The current list.
    pub fn load(&self) -> Arc<AllowList> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the list; returns the previous one.
    pub fn replace(&self, list: AllowList) -> Arc<AllowList> {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        let old = std::mem::replace(&mut *current, Arc::new(list));
        self.generation.fetch_add(1, Ordering::Release);
        old
    }

    /// A reader's cached view.
    pub fn view(self: &Arc<Self>) -> View {
        View {
            cached: self.load(),
            generation: self.generation.load(Ordering::Acquire),
            shared: self.clone(),
        }
    }
}

/// One reader's copy of the current list, refreshed when the list changes.
#[derive(Debug)]
pub struct View {
    shared: Arc<SharedAllowList>,
    cached: Arc<AllowList>,
    generation: u64,
}

impl View {
    /// The current list (refreshed first if a reload happened since the last call).
    pub fn current(&mut self) -> &AllowList {
        let generation = self.shared.generation.load(Ordering::Acquire);
        if generation != self.generation {
            self.cached = self.shared.load();
            self.generation = generation;
        }
        &self.cached
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::policy::Right;
    use plantd_worker_sdk::curve::KeyPair;

    fn key() -> String {
        KeyPair::generate().unwrap().public.to_z85()
    }

    #[test]
    fn lines_parse_with_comments_and_blanks() {
        let (a, b) = (key(), key());
        let text = format!(
            "# keys\n\n{a}  state   register=org.plantd.State;bus.publish=state\n  {b}\tcli call=*\n#\n"
        );
        let list = AllowList::parse(&text).unwrap();
        assert_eq!(list.len(), 2);
        let state = list.get(&a).unwrap();
        assert_eq!(&*state.name, "state");
        assert!(state.policy.allows(Right::Register, b"org.plantd.State"));
        assert!(list.get(&b).unwrap().policy.allows(Right::Call, b"x"));
        assert!(list.get(&key()).is_none());
    }

    #[test]
    fn bad_files_are_refused_whole_without_echoing_keys() {
        let a = key();
        for (text, why) in [
            (format!("{a}\n"), "expected"),
            (format!("{a} name\n"), "policy"),
            (format!("{a} na me call=*\n"), "policy"),
            (format!("{a} n@me call=*\n"), "may only use"),
            (format!("{a} one call=*\n{a} two call=*\n"), "listed twice"),
            (
                format!("{a} one call=*\n{} one call=*\n", key()),
                "two keys",
            ),
            ("not-a-key name call=*\n".to_owned(), "not a CURVE key"),
        ] {
            let e = AllowList::parse(&text).unwrap_err();
            assert!(e.contains(why), "{text:?}: {e}");
            assert!(!e.contains(&a), "the key is not echoed: {e}");
        }
    }

    #[test]
    fn views_follow_replacements() {
        let shared = SharedAllowList::new(AllowList::default());
        let mut view = shared.view();
        assert_eq!(view.current().len(), 0);
        shared.replace(AllowList::parse(&format!("{} x call=*", key())).unwrap());
        assert_eq!(view.current().len(), 1);
    }
}
