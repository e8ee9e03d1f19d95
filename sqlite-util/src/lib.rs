//! SQLite helpers every plantd service that keeps a database shares, so each rule lives once.
//!
//! - [`open`]: opening the writer's and the readers' connections (private file, integrity check,
//!   WAL, durability, foreign keys).
//! - [`migrations`]: versioned schema migrations tracked in `PRAGMA user_version`.
//! - [`integrity`]: `PRAGMA quick_check`, at startup and on a schedule.
//! - [`health`]: [`DatabaseCheck`], the `database` check of `/healthz`, fed by real commits,
//!   write probes and integrity checks.
//! - [`testing`]: damaging a database file on purpose, for tests.

pub mod health;
pub mod integrity;
pub mod migrations;
pub mod open;
pub mod testing;

pub use health::DatabaseCheck;
pub use integrity::IntegrityError;
pub use open::{open_reader, open_writer, OpenError, WriterSettings};
