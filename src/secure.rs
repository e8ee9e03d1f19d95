//! `plantd up --secure`: the whole system on CURVE, set up on the first run.
//!
//! In `<data dir>/keys/` it generates (once, never overwriting) a key pair for the broker and for
//! each service and the CLI (`NAME.key`, mode 0600, and `NAME.pub`), and an allow list giving each
//! key the policy its process needs. Every service then connects as a CURVE client of the broker,
//! and `$XDG_CONFIG_HOME/plantd/curve.json` gets the CLI's settings for the broker's endpoint, so
//! `plant` talks to it with no flag.
//! Tokens are required as without `--secure`: CURVE decides which processes may connect and what
//! each may register or call, tokens decide what each user may do.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use plantd_worker_sdk::curve::{write_key_pair, CurveConfig, CurveProfiles};

/// Each key `up --secure` makes, and its policy on the allow list.
const KEYS: [(&str, &str); 7] = [
    ("echo", "register=org.plantd.module.Echo"),
    (
        "state",
        "register=org.plantd.State;call=org.plantd.Identity;bus.publish=state;bus.subscribe=event",
    ),
    (
        "logger",
        "register=org.plantd.Logger;call=org.plantd.Identity;bus.subscribe=*",
    ),
    ("metric", "bus.publish=metric;bus.subscribe=metric"),
    ("identity", "register=org.plantd.Identity;bus.publish=event"),
    ("proxy", "call=*;bus.subscribe=*;bus.publish=*"),
    ("cli", "call=*;bus.publish=*;bus.subscribe=*"),
];

/// The key files of a secure system.
pub struct SecureKeys {
    dir: PathBuf,
    /// Whether this run generated them.
    pub created: bool,
}

impl SecureKeys {
    /// The keys in `<data_dir>/keys`, generated with the allow list if missing.
    pub fn prepare(data_dir: &Path) -> Result<SecureKeys> {
        let dir = data_dir.join("keys");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let mut created = false;
        let mut allow = String::from(
            "# Written by `plantd up --secure`: <public key> <name> <policy> (docs/security.md)\n",
        );
        for name in std::iter::once("broker").chain(KEYS.iter().map(|(n, _)| *n)) {
            let base = dir.join(name);
            if !base.with_extension("key").exists() {
                write_key_pair(&base).with_context(|| format!("cannot write the {name} key"))?;
                created = true;
            }
        }
        let list = dir.join("authorized_keys");
        if !list.exists() {
            for (name, policy) in KEYS {
                let public = plantd_worker_sdk::curve::read_public_key(
                    &dir.join(name).with_extension("pub"),
                )?;
                allow.push_str(&format!("{public} {name} {policy}\n"));
            }
            std::fs::write(&list, allow)
                .with_context(|| format!("cannot write {}", list.display()))?;
        }
        Ok(SecureKeys { dir, created })
    }

    /// The broker's `curve` settings.
    pub fn broker(&self) -> plantd_broker::security::CurveSettings {
        plantd_broker::security::CurveSettings {
            secret_key_file: Some(self.dir.join("broker.key")),
            authorized_keys: Some(self.dir.join("authorized_keys")),
            ..Default::default()
        }
    }

    /// The `curve` settings of the client or service `name`.
    pub fn client(&self, name: &str) -> CurveConfig {
        CurveConfig {
            secret_key_file: Some(self.dir.join(format!("{name}.key"))),
            server_key: None,
            server_key_file: Some(self.dir.join("broker.pub")),
        }
    }

    /// Writes the CLI's settings for `endpoint` to `curve.json`; returns its path.
    pub fn save_cli_profile(&self, endpoint: &str) -> Result<PathBuf> {
        let path = CurveProfiles::default_path()
            .context("set XDG_CONFIG_HOME or HOME for the CLI's CURVE settings")?;
        let mut profiles = CurveProfiles::load(&path)?;
        profiles
            .endpoints
            .insert(endpoint.to_owned(), self.client("cli"));
        profiles.save(&path)?;
        Ok(path)
    }

    /// Where the keys are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
