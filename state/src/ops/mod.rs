//! The operations of `org.plantd.State`: request `[operation, json]` in, one JSON reply frame out.
//!
//! [`Dispatcher::handle`] never fails and never panics on input: every problem becomes an error
//! envelope with a stable code. Each operation lives in a small module of its own group.

mod admin;
mod entry;
mod many;
pub mod reply;
pub mod request;
mod scope;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::auth::{AccessRequest, AllowAll, Authorizer, Permission};
use crate::codes::{ErrorCode, OpError};
use crate::metrics::StateMetrics;
use crate::store::{StateStore, StoreError};
use request::Body;
pub use request::Limits;

/// The MDP service name.
pub const SERVICE_NAME: &str = "org.plantd.State";

/// Every operation, by canonical name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// `create-scope {service}`
    CreateScope,
    /// `delete-scope {service}`
    DeleteScope,
    /// `list-scopes {}` (empty body allowed)
    ListScopes,
    /// `list-keys {service}`
    ListKeys,
    /// `state-get {service, key}` (alias `get`)
    Get,
    /// `state-get-many {service, keys}`
    GetMany,
    /// `state-set {service, key, value}` (alias `set`)
    Set,
    /// `state-set-many {service, entries}`
    SetMany,
    /// `delete {service, key}`
    Delete,
    /// `health {[service]}`
    Health,
    /// `backup {path}`
    Backup,
}

impl Operation {
    /// Every operation.
    pub const ALL: [Operation; 11] = [
        Operation::CreateScope,
        Operation::DeleteScope,
        Operation::ListScopes,
        Operation::ListKeys,
        Operation::Get,
        Operation::GetMany,
        Operation::Set,
        Operation::SetMany,
        Operation::Delete,
        Operation::Health,
        Operation::Backup,
    ];

    /// Looks up an operation frame, aliases included.
    pub fn parse(name: &[u8]) -> Option<Operation> {
        Some(match name {
            b"create-scope" => Operation::CreateScope,
            b"delete-scope" => Operation::DeleteScope,
            b"list-scopes" => Operation::ListScopes,
            b"list-keys" => Operation::ListKeys,
            b"state-get" | b"get" => Operation::Get,
            b"state-get-many" => Operation::GetMany,
            b"state-set" | b"set" => Operation::Set,
            b"state-set-many" => Operation::SetMany,
            b"delete" => Operation::Delete,
            b"health" => Operation::Health,
            b"backup" => Operation::Backup,
            _ => return None,
        })
    }

    /// The canonical name (also the metrics label).
    pub fn name(self) -> &'static str {
        match self {
            Operation::CreateScope => "create-scope",
            Operation::DeleteScope => "delete-scope",
            Operation::ListScopes => "list-scopes",
            Operation::ListKeys => "list-keys",
            Operation::Get => "state-get",
            Operation::GetMany => "state-get-many",
            Operation::Set => "state-set",
            Operation::SetMany => "state-set-many",
            Operation::Delete => "delete",
            Operation::Health => "health",
            Operation::Backup => "backup",
        }
    }

    /// The permission the authorizer is asked for.
    pub fn permission(self) -> Permission {
        match self {
            Operation::CreateScope => Permission::ScopeCreate,
            Operation::DeleteScope => Permission::ScopeDelete,
            Operation::ListScopes => Permission::ScopeList,
            Operation::ListKeys | Operation::Get | Operation::GetMany => Permission::DataRead,
            Operation::Set | Operation::SetMany => Permission::DataWrite,
            Operation::Delete => Permission::DataDelete,
            Operation::Health => Permission::HealthRead,
            Operation::Backup => Permission::Admin,
        }
    }
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> Self {
        let code = match &e {
            StoreError::ScopeNotFound(_) => ErrorCode::ScopeNotFound,
            StoreError::ScopeExists(_) => ErrorCode::ScopeExists,
            StoreError::KeyNotFound { .. } => ErrorCode::KeyNotFound,
            StoreError::BackupTargetExists(_) => ErrorCode::InvalidRequest,
            // Not this backend's operation (`backup` on PostgreSQL): the request, not the store.
            StoreError::Unsupported(_) => ErrorCode::InvalidRequest,
            _ => {
                tracing::warn!(error = %e, "state storage error");
                ErrorCode::StorageError
            }
        };
        OpError::new(code, e.to_string())
    }
}

/// Runs operations against a store. Shared by every worker session.
pub struct Dispatcher {
    store: StateStore,
    limits: Limits,
    authorizer: Arc<dyn Authorizer>,
    metrics: StateMetrics,
    backup_dir: PathBuf,
}

impl Dispatcher {
    /// A dispatcher that allows everything, with default limits.
    pub fn new(store: StateStore, metrics: StateMetrics) -> Self {
        let backup_dir = crate::backup::BackupConfig::default().dir_for(store.path());
        Dispatcher {
            store,
            limits: Limits::default(),
            authorizer: Arc::new(AllowAll),
            metrics,
            backup_dir,
        }
    }

    /// Replaces the limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Replaces the authorizer.
    pub fn with_authorizer(mut self, authorizer: Arc<dyn Authorizer>) -> Self {
        self.authorizer = authorizer;
        self
    }

    /// Where relative `backup {path}` targets go.
    pub fn with_backup_dir(mut self, dir: PathBuf) -> Self {
        self.backup_dir = dir;
        self
    }

    /// The store behind this dispatcher.
    pub fn store(&self) -> &StateStore {
        &self.store
    }

    /// Handles one request (`[operation, json, ...]`; extra frames are ignored) and returns the
    /// reply frame. Blocks until writes are committed: call it off the async runtime.
    pub fn handle(&self, frames: &[Vec<u8>]) -> Vec<u8> {
        let started = Instant::now();
        let operation = frames.first().and_then(|f| Operation::parse(f));
        let result = match operation {
            Some(op) => {
                Body::parse(frames.get(1).map(Vec::as_slice)).and_then(|body| self.run(op, &body))
            }
            None => Err(unknown_operation(frames.first())),
        };
        let label = operation.map_or("unknown", Operation::name);
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.code.as_str(),
        };
        self.metrics
            .requests
            .with_label_values(&[label, outcome])
            .inc();
        self.metrics
            .request_duration
            .with_label_values(&[label])
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(data) => reply::success(&data),
            Err(e) => reply::failure(&e),
        }
    }

    fn run(&self, op: Operation, body: &Body<'_>) -> Result<Vec<u8>, OpError> {
        match op {
            Operation::CreateScope => scope::create(self, body),
            Operation::DeleteScope => scope::delete(self, body),
            Operation::ListScopes => scope::list(self, body),
            Operation::ListKeys => entry::list_keys(self, body),
            Operation::Get => entry::get(self, body),
            Operation::Set => entry::set(self, body),
            Operation::Delete => entry::delete(self, body),
            Operation::GetMany => many::get_many(self, body),
            Operation::SetMany => many::set_many(self, body),
            Operation::Health => admin::health(self, body),
            Operation::Backup => admin::backup(self, body),
        }
    }

    /// Reads the `service` field (the scope) within limits.
    fn scope_field(&self, body: &Body<'_>) -> Result<String, OpError> {
        body.required_str("service", self.limits.max_scope_bytes)
    }

    /// Asks the authorizer; the token is the body's optional `token` field.
    fn authorize(
        &self,
        op: Operation,
        scope: Option<&str>,
        body: &Body<'_>,
    ) -> Result<(), OpError> {
        let token = body.optional_str("token")?;
        self.authorizer
            .authorize(&AccessRequest {
                operation: op.name(),
                permission: op.permission(),
                scope,
                token: token.as_deref(),
            })
            .map_err(OpError::from)
    }
}

fn unknown_operation(frame: Option<&Vec<u8>>) -> OpError {
    match frame {
        None => OpError::new(
            ErrorCode::UnknownOperation,
            "the request has no operation frame",
        ),
        Some(name) => {
            let name = String::from_utf8_lossy(name);
            // Keep hostile input from bloating the reply.
            let shown: String = name.chars().take(64).collect();
            OpError::new(
                ErrorCode::UnknownOperation,
                format!("unknown operation '{shown}'"),
            )
        }
    }
}

#[cfg(test)]
mod tests;
