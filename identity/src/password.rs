//! Passwords: argon2id hashing (PHC strings, OWASP parameters m=19 MiB, t=2, p=1) and the policy
//! of NIST SP 800-63B: a length range and a list of common passwords, no composition rules.
//!
//! Hashing takes tens of milliseconds of CPU by design, so callers run it on a handler thread or
//! the blocking pool, never on a worker session's I/O thread (heartbeats must keep flowing).
//! [`Hasher::verify_dummy`] spends the same work when a login names no user, so an unknown user
//! and a wrong password cannot be told apart by timing.

use std::collections::HashSet;
use std::sync::OnceLock;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::config::PasswordPolicy;

/// OWASP's argon2id memory cost, in KiB (19 MiB).
pub const MEMORY_KIB: u32 = 19_456;
/// Iterations.
pub const ITERATIONS: u32 = 2;
/// Lanes.
pub const PARALLELISM: u32 = 1;

/// The bundled common passwords: lowercase, one a line, `#` comments.
const COMMON: &str = include_str!("common-passwords.txt");

/// Why a password or hash could not be processed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The password breaks the policy; the message says which rule, never the password.
    #[error("{0}")]
    Weak(String),
    /// Hashing failed (bad parameters: a bug).
    #[error("password hashing failed: {0}")]
    Hash(String),
}

fn common() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| {
        COMMON
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .collect()
    })
}

/// How many entries the bundled common-password list has.
pub fn common_count() -> usize {
    common().len()
}

/// Checks `password` against `policy`: length in characters (Unicode scalar values, as NIST
/// counts them) and the common-password list (compared in lowercase). `context` lists words the
/// password must not be (the username, the email).
pub fn check(
    policy: &PasswordPolicy,
    password: &str,
    context: &[&str],
) -> Result<(), PasswordError> {
    let length = password.chars().count();
    if length < policy.min_length {
        return Err(PasswordError::Weak(format!(
            "the password must have at least {} characters",
            policy.min_length
        )));
    }
    if length > policy.max_length {
        return Err(PasswordError::Weak(format!(
            "the password must have at most {} characters",
            policy.max_length
        )));
    }
    let lower = password.to_lowercase();
    if common().contains(lower.as_str()) {
        return Err(PasswordError::Weak(
            "the password is on the list of commonly used passwords".into(),
        ));
    }
    if context
        .iter()
        .any(|word| !word.is_empty() && lower == word.to_lowercase())
    {
        return Err(PasswordError::Weak(
            "the password must not be the username or email".into(),
        ));
    }
    Ok(())
}

/// Hashes and verifies passwords with fixed argon2id parameters.
pub struct Hasher {
    argon2: Argon2<'static>,
    /// A hash of a random password, verified against when a login names no user.
    dummy: String,
}

impl Hasher {
    /// A hasher with the OWASP parameters; hashes one random password for [`Self::verify_dummy`].
    pub fn new() -> Result<Self, PasswordError> {
        let params = Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None)
            .map_err(|e| PasswordError::Hash(e.to_string()))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut hasher = Hasher {
            argon2,
            dummy: String::new(),
        };
        hasher.dummy = hasher.hash(&crate::tokens::random_token(24))?;
        Ok(hasher)
    }

    /// The PHC string of `password` with a fresh random salt.
    pub fn hash(&self, password: &str) -> Result<String, PasswordError> {
        self.argon2
            .hash_password(password.as_bytes())
            .map(|hash| hash.to_string())
            .map_err(|e| PasswordError::Hash(e.to_string()))
    }

    /// True if `password` matches the PHC string `phc`. A malformed `phc` matches nothing.
    pub fn verify(&self, password: &str, phc: &str) -> bool {
        match PasswordHash::new(phc) {
            Ok(parsed) => self
                .argon2
                .verify_password(password.as_bytes(), &parsed)
                .is_ok(),
            Err(_) => false,
        }
    }

    /// Spends the work of one verification and returns false: the unknown-user path of login.
    pub fn verify_dummy(&self, password: &str) -> bool {
        let _ = self.verify(password, &self.dummy);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_is_length_and_common_list_only() {
        let policy = PasswordPolicy::default();
        assert!(check(&policy, "short", &[]).is_err());
        assert!(check(&policy, &"x".repeat(129), &[]).is_err());
        assert!(
            check(&policy, "Password1", &[]).is_err(),
            "common, any case"
        );
        assert!(check(&policy, "12345678", &[]).is_err());
        assert!(check(&policy, "alice-smith", &["alice-smith"]).is_err());
        // No composition rules: all lowercase letters and spaces are fine.
        check(&policy, "correct horse battery staple", &[]).unwrap();
        // Length counts characters, not bytes.
        check(&policy, "ñandú-çà", &[]).unwrap();
        assert!(common_count() > 2000, "{}", common_count());
    }

    #[test]
    fn hashes_are_argon2id_phc_with_owasp_parameters_and_verify() {
        let hasher = Hasher::new().unwrap();
        let phc = hasher.hash("correct horse battery staple").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(hasher.verify("correct horse battery staple", &phc));
        assert!(!hasher.verify("correct horse battery stapler", &phc));
        assert!(!hasher.verify("anything", "not a phc string"));
        assert_ne!(phc, hasher.hash("correct horse battery staple").unwrap());
        assert!(!hasher.verify_dummy("whatever"));
    }
}
