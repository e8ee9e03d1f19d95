//! The operations of `org.plantd.Identity`: request `[category, operation, json]` in, one JSON
//! reply frame out.
//!
//! [`Identity::handle`] never fails and never panics on input: every problem becomes an error
//! envelope with a stable code. It blocks (argon2id, commits), so it runs on a worker handler
//! thread, never on a session's I/O thread. Each category lives in a module of its own;
//! [`caller`] authenticates and authorizes, [`request`] reads bodies.

mod api_keys;
mod audit;
mod auth;
pub mod caller;
mod health;
mod orgs;
pub mod reply;
pub mod request;
mod roles;
mod users;

use std::time::Instant;

use plantd_worker_sdk::auth::{AuthError, TokenVerifier};
use plantd_worker_sdk::health::Health;
use serde_json::Value;

use crate::codes::{ErrorCode, OpError};
use crate::config::{IdentityConfig, LockoutConfig, PasswordPolicy, TokenConfig};
use crate::events::Events;
use crate::limits::{SourceLimiter, UnknownLockout};
use crate::metrics::IdentityMetrics;
use crate::password::Hasher;
use crate::store::audit::AuditRecord;
use crate::store::{now_ms, Store, StoreError};
use crate::tokens::Signer;
use request::Body;

/// The MDP service name.
pub const SERVICE_NAME: &str = "org.plantd.Identity";

/// Every operation, by category.
pub const OPERATIONS: &[(&str, &[&str])] = &[
    (
        "auth",
        &[
            "login",
            "refresh",
            "logout",
            "validate",
            "change_password",
            "public_keys",
            "notices",
            "token",
            "rotate_key",
        ],
    ),
    (
        "user",
        &[
            "create",
            "get",
            "update",
            "delete",
            "list",
            "activate",
            "deactivate",
            "verify_email",
            "assign_role",
            "unassign_role",
            "assign_organization",
            "unassign_organization",
        ],
    ),
    (
        "organization",
        &["create", "get", "update", "delete", "list", "members"],
    ),
    (
        "role",
        &[
            "create",
            "get",
            "update",
            "delete",
            "list",
            "check_permission",
        ],
    ),
    ("api_key", &["create", "list", "revoke"]),
    ("audit", &["list"]),
    ("health", &["check"]),
];

/// The longest `ip_address` a proxy may forward.
const MAX_SOURCE_CHARS: usize = 64;

/// One request: its body and where it came from.
pub struct Request {
    /// The JSON body.
    pub body: Body,
    /// The `ip_address` the proxy forwarded, else the MDP client address (`mdp:<hex>`).
    pub source: String,
}

/// The settings operations need.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Token lifetimes.
    pub tokens: TokenConfig,
    /// Lockout rule.
    pub lockout: LockoutConfig,
    /// Password policy.
    pub password: PasswordPolicy,
}

impl Settings {
    /// The operation settings of `config`.
    pub fn of(config: &IdentityConfig) -> Self {
        Settings {
            tokens: config.tokens.clone(),
            lockout: config.lockout.clone(),
            password: config.password.clone(),
        }
    }
}

/// Everything the operations share. One per service, shared by every worker session.
pub struct Identity {
    pub(crate) store: Store,
    pub(crate) settings: Settings,
    pub(crate) hasher: Hasher,
    pub(crate) signer: Signer,
    pub(crate) verifier: TokenVerifier,
    pub(crate) events: Events,
    pub(crate) metrics: IdentityMetrics,
    pub(crate) limiter: SourceLimiter,
    pub(crate) unknown: UnknownLockout,
    pub(crate) health: Health,
    pub(crate) started: Instant,
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => OpError::new(ErrorCode::NotFound, m),
            StoreError::Conflict(m) => OpError::new(ErrorCode::Conflict, m),
            other => {
                tracing::warn!(error = %other, "identity storage error");
                OpError::new(ErrorCode::StorageError, other.to_string())
            }
        }
    }
}

impl From<AuthError> for OpError {
    fn from(e: AuthError) -> Self {
        let code = match e {
            AuthError::TokenExpired => ErrorCode::TokenExpired,
            AuthError::TokenRevoked => ErrorCode::TokenRevoked,
            AuthError::PermissionDenied { .. } => ErrorCode::PermissionDenied,
            // In-process, "unavailable" means the key table could not be read.
            AuthError::Unavailable(_) => ErrorCode::StorageError,
            AuthError::Unauthenticated(_) => ErrorCode::Unauthenticated,
        };
        OpError::new(code, e.to_string())
    }
}

impl Identity {
    /// Handles one request `[category, operation, json]` from MDP client `client` (the address
    /// the broker handed the worker) and returns the reply frame.
    pub fn handle(&self, client: &[u8], frames: &[Vec<u8>]) -> Vec<u8> {
        let started = Instant::now();
        let category = frames
            .first()
            .map(|f| String::from_utf8_lossy(f).into_owned());
        let operation = frames
            .get(1)
            .map(|f| String::from_utf8_lossy(f).into_owned());
        let known = match (&category, &operation) {
            (Some(c), Some(o)) => OPERATIONS
                .iter()
                .find(|(cat, _)| cat == c)
                .and_then(|(cat, ops)| ops.iter().find(|op| *op == o).map(|op| (*cat, *op))),
            _ => None,
        };
        let result = match known {
            Some((cat, op)) => Body::parse(frames.get(2).map(Vec::as_slice))
                .and_then(|body| {
                    let source = source_of(&body, client)?;
                    Ok(Request { body, source })
                })
                .and_then(|request| self.run(cat, op, &request)),
            None => Err(unknown_operation(category.as_deref(), operation.as_deref())),
        };
        let label = known.map_or_else(|| "unknown".to_owned(), |(c, o)| format!("{c}/{o}"));
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.code.as_str(),
        };
        self.metrics
            .requests
            .with_label_values(&[&label, outcome])
            .inc();
        self.metrics
            .request_duration
            .with_label_values(&[&label])
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(data) => reply::success(data),
            Err(e) => reply::failure(&e),
        }
    }

    fn run(&self, category: &str, operation: &str, req: &Request) -> Result<Value, OpError> {
        match category {
            "auth" => auth::run(self, operation, req),
            "user" => users::run(self, operation, req),
            "organization" => orgs::run(self, operation, req),
            "role" => roles::run(self, operation, req),
            "api_key" => api_keys::run(self, operation, req),
            "audit" => audit::run(self, operation, req),
            _ => health::run(self, operation, req),
        }
    }

    /// An audit row of `req` at this moment.
    pub(crate) fn record(
        &self,
        req: &Request,
        actor: impl Into<String>,
        action: &str,
        target: impl Into<String>,
        outcome: &str,
    ) -> AuditRecord {
        let time_ms = now_ms();
        AuditRecord {
            time: crate::store::audit::time_of(time_ms),
            actor: actor.into(),
            action: action.to_owned(),
            target: target.into(),
            outcome: outcome.to_owned(),
            source: req.source.clone(),
            time_ms,
        }
    }

    /// Runs `f` in a write transaction and stores `row` in the same one (so the change and its
    /// audit row commit together), then publishes the row. `f` may complete the row (a target
    /// known only once a row is inserted).
    pub(crate) fn write_audited<T, F>(&self, row: AuditRecord, f: F) -> Result<T, OpError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection, &mut AuditRecord) -> Result<T, StoreError>
            + Send
            + 'static,
    {
        let (value, row) = self.store.write(move |conn| {
            let mut row = row;
            let value = f(conn, &mut row)?;
            crate::store::audit::insert(conn, &row)?;
            Ok((value, row))
        })?;
        self.events.audit(&row);
        Ok(value)
    }

    /// Stores `record` on its own and publishes it. A failure to store it is logged, not
    /// returned: the event it describes has already been decided.
    pub(crate) fn audit(&self, record: AuditRecord) {
        let stored = record.clone();
        match self
            .store
            .write(move |conn| crate::store::audit::insert(conn, &stored))
        {
            Ok(()) => self.events.audit(&record),
            Err(e) => {
                tracing::error!(error = %e, action = %record.action, "cannot store an audit row")
            }
        }
    }
}

/// The request's source: a forwarded `ip_address`, else the MDP client address.
fn source_of(body: &Body, client: &[u8]) -> Result<String, OpError> {
    if let Some(ip) = body.opt_str("ip_address", MAX_SOURCE_CHARS)? {
        if !ip.is_empty() {
            return Ok(ip);
        }
    }
    let hex: String = client.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("mdp:{hex}"))
}

fn unknown_operation(category: Option<&str>, operation: Option<&str>) -> OpError {
    // Keep hostile input from bloating the reply.
    let shown = |s: &str| s.chars().take(64).collect::<String>();
    let message = match (category, operation) {
        (None, _) => "the request has no category frame".to_owned(),
        (Some(c), None) => format!("the request has no operation frame after '{}'", shown(c)),
        (Some(c), Some(o)) => format!("unknown operation '{}/{}'", shown(c), shown(o)),
    };
    OpError::new(ErrorCode::UnknownOperation, message)
}

/// Every operation as `category/operation`.
pub fn operation_names() -> Vec<String> {
    OPERATIONS
        .iter()
        .flat_map(|(c, ops)| ops.iter().map(move |o| format!("{c}/{o}")))
        .collect()
}
