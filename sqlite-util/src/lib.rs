//! SQLite helpers every plantd service that keeps a database shares, so each rule lives once.
//!
//! - [`migrations`]: versioned schema migrations tracked in `PRAGMA user_version`.

pub mod migrations;
