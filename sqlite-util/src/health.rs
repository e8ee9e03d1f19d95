//! [`DatabaseCheck`]: the `database` check of a service that keeps a SQLite file, told what
//! really happens to the file: every commit, the periodic write probe, every integrity check.
//!
//! The check is UP only while writes succeed and the last integrity check passed. A tiny probe
//! write can succeed where real writes fail (a full disk still takes a one-page update in a WAL
//! it can reuse), so after a failed write only a successful real write clears the failure at
//! once; a successful probe clears it only if no write failed since the probe before it.
//! Corruption is not healed by writes: only a passing integrity check clears it.

use std::sync::{Arc, Mutex};

use plantd_worker_sdk::health::Check;

/// The `database` health check of one SQLite file. Cheap to clone; clones share the state.
#[derive(Clone, Debug)]
pub struct DatabaseCheck {
    check: Check,
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    writes: Writes,
    /// Failed writes since the last probe, so a probe does not hide a fresh failure.
    failures_since_probe: u64,
    /// SQLite's complaint from the last integrity check, if it failed.
    integrity: Option<String>,
}

#[derive(Debug)]
enum Writes {
    /// Nothing committed yet.
    Unknown,
    Ok,
    Failed(String),
}

impl DatabaseCheck {
    /// Drives `check`, which is DOWN ("not yet checked") until the first write succeeds.
    pub fn new(check: Check) -> Self {
        let this = DatabaseCheck {
            check,
            state: Arc::new(Mutex::new(State {
                writes: Writes::Unknown,
                failures_since_probe: 0,
                integrity: None,
            })),
        };
        this.update(|_| {});
        this
    }

    /// A real write (a client's write, a batch of records) committed.
    pub fn write_succeeded(&self) {
        self.update(|s| {
            s.writes = Writes::Ok;
            s.failures_since_probe = 0;
        });
    }

    /// A write (real or probe) failed to reach the database: the check goes DOWN with `reason`.
    pub fn write_failed(&self, reason: impl Into<String>) {
        let reason = reason.into();
        self.update(|s| {
            s.writes = Writes::Failed(reason);
            s.failures_since_probe += 1;
        });
    }

    /// The periodic probe write committed. Clears an earlier write failure only if no write has
    /// failed since the previous probe.
    pub fn probe_succeeded(&self) {
        self.update(|s| {
            if s.failures_since_probe == 0 {
                s.writes = Writes::Ok;
            }
            s.failures_since_probe = 0;
        });
    }

    /// An integrity check passed.
    pub fn integrity_passed(&self) {
        self.update(|s| s.integrity = None);
    }

    /// An integrity check failed: DOWN with SQLite's complaint until a later check passes.
    pub fn integrity_failed(&self, complaint: impl Into<String>) {
        let complaint = complaint.into();
        self.update(|s| s.integrity = Some(complaint));
    }

    /// True while the check is UP.
    pub fn is_up(&self) -> bool {
        self.check.is_up()
    }

    fn update(&self, change: impl FnOnce(&mut State)) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut state);
        // Published under the lock, so concurrent updates reach the check in order.
        let mut problems = Vec::new();
        if let Some(complaint) = &state.integrity {
            problems.push(format!("integrity check failed: {complaint}"));
        }
        match &state.writes {
            Writes::Unknown => problems.push("not yet checked".to_owned()),
            Writes::Failed(reason) => problems.push(format!("write failed: {reason}")),
            Writes::Ok => {}
        }
        if problems.is_empty() {
            self.check.up();
        } else {
            self.check.down(problems.join("; "));
        }
    }
}

#[cfg(test)]
mod tests {
    use plantd_worker_sdk::health::Health;

    use super::*;

    fn check() -> (Health, DatabaseCheck) {
        let health = Health::new("test");
        let db = DatabaseCheck::new(health.check("database"));
        (health, db)
    }

    fn output(health: &Health) -> String {
        health.to_json()["checks"][0]["output"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    #[test]
    fn down_until_a_write_succeeds_and_after_one_fails() {
        let (health, db) = check();
        assert!(!db.is_up());
        assert_eq!(output(&health), "not yet checked");
        db.probe_succeeded();
        assert!(db.is_up());
        db.write_failed("database or disk is full");
        assert!(!db.is_up());
        assert!(output(&health).contains("database or disk is full"));
        db.write_succeeded();
        assert!(db.is_up());
    }

    #[test]
    fn a_probe_clears_a_failure_only_after_a_quiet_probe_interval() {
        let (_health, db) = check();
        db.probe_succeeded();
        db.write_failed("full");
        // The probe right after the failure proves little: still DOWN.
        db.probe_succeeded();
        assert!(!db.is_up());
        // No failure since that probe: the next one clears it.
        db.probe_succeeded();
        assert!(db.is_up());
    }

    #[test]
    fn corruption_outlives_successful_writes_until_a_check_passes() {
        let (health, db) = check();
        db.write_succeeded();
        db.integrity_failed("Page 7: btreeInitPage() returns error code 11");
        db.write_succeeded();
        db.probe_succeeded();
        assert!(!db.is_up());
        assert!(output(&health).contains("btreeInitPage"));
        db.integrity_passed();
        assert!(db.is_up());
    }
}
