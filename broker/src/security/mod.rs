//! Transport security of the broker (DESIGN.md §9, `docs/security.md`): CURVE on the MDP socket
//! and every bus socket, a ZAP handler admitting the keys of an allow list, a policy per key
//! enforced per message, protected mode, the request rate limit, and the audit trail.
//!
//! - [`CurveSettings`] (`curve.*`) and [`SecuritySettings`] (`security.*`): configuration.
//! - `policy` and `allow_list`: the allow-list file and what each key may do.
//! - `zap`: the ZAP handler; `gate`: the broker loop's per-message checks; `rate`: the rate
//!   limit; `audit`: counting, logging and publishing refusals; `protected`: which endpoints stay
//!   on this machine.
//! - [`Keys`]: the broker's key pair and the allow list, loaded at start; [`reload`]: the allow
//!   list again, on SIGHUP or when its file changes ([`FileStamp`]).

pub mod allow_list;
pub mod audit;
pub mod gate;
pub mod policy;
pub mod protected;
pub mod rate;
pub mod zap;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use plantd_worker_sdk::curve::{KeyPair, ServerCurve};
use serde::{Deserialize, Serialize};

use crate::error::BrokerError;
use allow_list::{AllowList, SharedAllowList};
use policy::Right;

/// The ZAP domain of the MDP socket (bus sockets: `bus::zap_domain`).
pub const MDP_ZAP_DOMAIN: &str = "plantd.mdp";

/// The `curve` section of the broker configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CurveSettings {
    /// The broker's secret key file (`NAME.key`, Z85, mode 0600). Setting it makes the MDP socket
    /// and every bus socket CURVE servers; its public key is what clients set as `server_key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_key_file: Option<PathBuf>,
    /// The allow list: `<z85 public key> <name> <policy>` lines (`docs/security.md`). Required
    /// with `secret_key_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorized_keys: Option<PathBuf>,
    /// How often the allow list file is checked for changes, in milliseconds (it is also
    /// reloaded on SIGHUP); `0`: on SIGHUP only.
    pub reload_interval_ms: u64,
}

impl Default for CurveSettings {
    fn default() -> Self {
        CurveSettings {
            secret_key_file: None,
            authorized_keys: None,
            reload_interval_ms: 2000,
        }
    }
}

impl CurveSettings {
    /// Whether CURVE is on.
    pub fn enabled(&self) -> bool {
        self.secret_key_file.is_some()
    }

    /// Rejects half a CURVE configuration.
    pub fn validate(&self) -> Result<(), BrokerError> {
        match (&self.secret_key_file, &self.authorized_keys) {
            (Some(_), None) => Err(BrokerError::Config(
                "curve.authorized_keys is required with curve.secret_key_file (the keys allowed \
                 to connect)"
                    .into(),
            )),
            (None, Some(_)) => Err(BrokerError::Config(
                "curve.authorized_keys needs curve.secret_key_file (the broker's own key)".into(),
            )),
            _ if self.reload_interval_ms > 86_400_000 => Err(BrokerError::Config(
                "curve.reload_interval_ms must be at most 86400000 (a day)".into(),
            )),
            _ => Ok(()),
        }
    }

    /// How often to look at the allow list file, if at all.
    pub fn reload_interval(&self) -> Option<Duration> {
        (self.reload_interval_ms > 0).then(|| Duration::from_millis(self.reload_interval_ms))
    }
}

/// The `security` section of the broker configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SecuritySettings {
    /// Allow binding a non-loopback MDP or bus endpoint without CURVE (plaintext, anyone who can
    /// reach the port may register any service). Warned about at startup and in `/healthz`.
    pub insecure: bool,
}

/// The broker's key pair and the allow list, loaded at start.
pub struct Keys {
    /// The broker's CURVE server settings.
    pub server: ServerCurve,
    /// The shared, reloadable allow list.
    pub allow: Arc<SharedAllowList>,
    path: PathBuf,
}

impl Keys {
    /// Loads the broker's key and the allow list when CURVE is configured.
    pub fn load(settings: &CurveSettings) -> Result<Option<Keys>, BrokerError> {
        let (Some(secret), Some(path)) = (&settings.secret_key_file, &settings.authorized_keys)
        else {
            return Ok(None);
        };
        if !plantd_worker_sdk::curve::available() {
            return Err(BrokerError::Config(
                "curve.secret_key_file is set but this libzmq has no CURVE".into(),
            ));
        }
        let keys = KeyPair::read(secret)
            .map_err(|e| BrokerError::Config(format!("curve.secret_key_file: {e}")))?;
        let server = ServerCurve::new(keys);
        let list = AllowList::load(path)
            .map_err(|e| BrokerError::Config(format!("curve.authorized_keys: {e}")))?;
        Ok(Some(Keys {
            server,
            allow: SharedAllowList::new(list),
            path: path.clone(),
        }))
    }

    /// The allow list file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What a reload changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Keys listed now.
    pub keys: usize,
    /// Buses on which some key lost the right to subscribe (or was removed): their subscribers
    /// must be made to reconnect, since a subscription once made cannot be taken back.
    pub revoked_subscriptions: Vec<String>,
}

/// Reads the allow list again and swaps it in; a bad file keeps the current list.
pub fn reload(keys: &Keys, buses: &[String]) -> Result<Reloaded, String> {
    let list = AllowList::load(&keys.path)?;
    let count = list.len();
    let old = keys.allow.replace(list);
    let new = keys.allow.load();
    let revoked_subscriptions = buses
        .iter()
        .filter(|bus| {
            old.iter().any(|(key, entry)| {
                entry.policy.allows(Right::Subscribe, bus.as_bytes())
                    && !new
                        .get(key)
                        .is_some_and(|e| e.policy.allows(Right::Subscribe, bus.as_bytes()))
            })
        })
        .cloned()
        .collect();
    Ok(Reloaded {
        keys: count,
        revoked_subscriptions,
    })
}

/// What identifies a file's version: modification time, size and inode. Editors that write a
/// new file and rename it change the inode even within one mtime tick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileStamp(Option<(SystemTime, u64, u64)>);

impl FileStamp {
    /// The stamp of `path` now (`None` inside if it cannot be read).
    pub fn of(path: &Path) -> FileStamp {
        FileStamp(std::fs::metadata(path).ok().map(|m| {
            #[cfg(unix)]
            let inode = std::os::unix::fs::MetadataExt::ino(&m);
            #[cfg(not(unix))]
            let inode = 0;
            (
                m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                m.len(),
                inode,
            )
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plantd_worker_sdk::curve::write_key_pair;

    #[test]
    fn reload_swaps_the_list_and_reports_revoked_subscriptions() {
        let dir = tempfile::tempdir().unwrap();
        let (broker, secret, _) = write_key_pair(&dir.path().join("broker")).unwrap();
        let (a, _, _) = write_key_pair(&dir.path().join("a")).unwrap();
        let list = dir.path().join("authorized_keys");
        std::fs::write(
            &list,
            format!("{} a bus.subscribe=event,metric\n", a.public),
        )
        .unwrap();
        let keys = Keys::load(&CurveSettings {
            secret_key_file: Some(secret),
            authorized_keys: Some(list.clone()),
            ..Default::default()
        })
        .unwrap()
        .unwrap();
        assert_eq!(keys.allow.load().len(), 1);
        assert_eq!(keys.server.public_key(), broker.public);

        let stamp = FileStamp::of(&list);
        std::fs::write(&list, format!("{} a bus.subscribe=metric\n", a.public)).unwrap();
        let buses = ["state".to_owned(), "event".to_owned(), "metric".to_owned()];
        let reloaded = reload(&keys, &buses).unwrap();
        assert_eq!(reloaded.revoked_subscriptions, vec!["event".to_owned()]);
        assert_ne!(FileStamp::of(&list), stamp);

        std::fs::write(&list, "garbage\n").unwrap();
        assert!(reload(&keys, &buses).is_err());
        assert_eq!(
            keys.allow.load().len(),
            1,
            "a bad file keeps the current list"
        );
    }

    #[test]
    fn half_a_curve_configuration_is_refused() {
        let only_key = CurveSettings {
            secret_key_file: Some("k".into()),
            ..Default::default()
        };
        assert!(only_key.validate().is_err());
        let only_list = CurveSettings {
            authorized_keys: Some("l".into()),
            ..Default::default()
        };
        assert!(only_list.validate().is_err());
        CurveSettings::default().validate().unwrap();
    }
}
