//! Change notifications: what the writer announces after every commit.
//!
//! The writer thread calls [`ChangePublisher::publish`] once per committed batch, after the commit
//! and after the replies are released. Implementations must never block or fail the write path:
//! queue and drop (and count) when behind. The bus-backed implementation lives in `bus_publisher`.

use serde::Serialize;

/// One committed change. Scope-level changes (`create-scope`, `delete-scope`) carry no key.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StateChange {
    /// The scope that changed.
    pub scope: String,
    /// The key that changed, or `None` for a scope-level change.
    pub key: Option<String>,
    /// The new value as JSON text (`None` for deletions and scope creation).
    #[serde(skip)]
    pub value_json: Option<String>,
    /// True for `delete` and `delete-scope`.
    pub deleted: bool,
    /// Commit time, milliseconds since the Unix epoch.
    pub time_ms: i64,
}

impl StateChange {
    /// The bus topic of this change: `org.plantd.state.<scope>`.
    pub fn topic(&self) -> String {
        format!("{TOPIC_PREFIX}{}", self.scope)
    }
}

/// Prefix of every state-change topic on the `state` bus.
pub const TOPIC_PREFIX: &str = "org.plantd.state.";

/// Receives committed changes. Called on the writer thread: return quickly, never block.
pub trait ChangePublisher: Send + Sync {
    /// False when nobody listens, so the writer can skip building the changes at all.
    fn enabled(&self) -> bool {
        true
    }

    /// Announces the changes of one commit, in commit order.
    fn publish(&self, changes: Vec<StateChange>);
}

/// Publishes nothing (no bus configured).
#[derive(Clone, Copy, Debug, Default)]
pub struct NullPublisher;

impl ChangePublisher for NullPublisher {
    fn enabled(&self) -> bool {
        false
    }

    fn publish(&self, _changes: Vec<StateChange>) {}
}
