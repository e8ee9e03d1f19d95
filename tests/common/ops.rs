//! What the operations tests share: external tools that may be missing locally (mandatory under
//! `PLANTD_REQUIRE_OPS=1`, which `.ci/run` sets after installing them), the environment that puts
//! a hand-run system (Procfile, systemd) on ports moved by an offset, and the check that a set of
//! `PLANTD_*` variables is read by the services (no unknown key).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{isolated, workspace_binary};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether the command `program args...` runs; when it does not, prints that `test` is skipped,
/// or panics if `PLANTD_REQUIRE_OPS` is set (then a missing tool must fail CI, not hide a test).
pub fn tool_ready(program: &str, args: &[&str], install: &str, test: &str) -> bool {
    let ok = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var_os("PLANTD_REQUIRE_OPS").is_none(),
            "PLANTD_REQUIRE_OPS is set but {program} is not available ({install})"
        );
        eprintln!("skipping {test}: {program} not found ({install})");
    }
    ok
}

/// A service binary and the environment prefixes its configuration reads.
pub struct ServiceBinary {
    /// The `PLANTD_<PREFIX>_` prefixes, the first being the current name.
    pub prefixes: &'static [&'static str],
    /// The binary.
    pub binary: &'static str,
    /// Its package.
    pub package: &'static str,
}

/// Every service binary on this branch.
pub const SERVICES: [ServiceBinary; 8] = [
    ServiceBinary {
        prefixes: &["BROKER"],
        binary: "plantd-broker",
        package: "plantd-broker",
    },
    ServiceBinary {
        prefixes: &["STATE"],
        binary: "plantd-state",
        package: "plantd-state",
    },
    ServiceBinary {
        prefixes: &["IDENTITY"],
        binary: "plantd-identity",
        package: "plantd-identity",
    },
    ServiceBinary {
        prefixes: &["LOGGER"],
        binary: "plantd-logger",
        package: "plantd-logger",
    },
    ServiceBinary {
        prefixes: &["PROXY"],
        binary: "plantd-proxy",
        package: "plantd-proxy",
    },
    ServiceBinary {
        prefixes: &["ECHO"],
        binary: "plantd-module-echo",
        package: "plantd-module-echo",
    },
    ServiceBinary {
        prefixes: &["METRIC", "MODULE_METRIC"],
        binary: "plantd-module-metric",
        package: "plantd-module-metric",
    },
    // Not in the Procfile or `plantd up` (it needs a NATS server): deploy/cluster runs it.
    ServiceBinary {
        prefixes: &["BRIDGE_NATS"],
        binary: "plantd-bridge-nats",
        package: "plantd-bridge-nats",
    },
];

/// Services in the deploy files whose crate is not in the workspace yet: their variables are not
/// checked, and the Procfile has their line commented out. None today; a service added to the
/// deploy files before its crate lands goes here (its `PLANTD_<PREFIX>_` prefix).
pub const PENDING: &[&str] = &[];

/// The service whose variables start `PLANTD_<prefix>_`, by the longest matching prefix (so
/// `PLANTD_MODULE_METRIC_X` is the metric module's, not a module service's).
fn service_of(name: &str) -> Option<&'static ServiceBinary> {
    SERVICES
        .iter()
        .flat_map(|s| s.prefixes.iter().map(move |p| (s, *p)))
        .filter(|(_, prefix)| name.starts_with(&format!("PLANTD_{prefix}_")))
        .max_by_key(|(_, prefix)| prefix.len())
        .map(|(s, _)| s)
}

/// Checks that every `PLANTD_*` variable in `vars` is a key some service reads, by loading each
/// service's configuration (`--print-config`) with its variables set: an unknown key fails the
/// load. `own` lists the variables that are not service configuration (a Procfile's
/// `PLANTD_BIN`); `what` names the file in failures. `vars` not starting `PLANTD_` are ignored.
pub fn assert_services_read(vars: &BTreeMap<String, String>, own: &[&str], what: &str) {
    let mut by_service: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    for (name, value) in vars {
        if !name.starts_with("PLANTD_") || own.contains(&name.as_str()) {
            continue;
        }
        if PENDING
            .iter()
            .any(|p| name.starts_with(&format!("PLANTD_{p}_")))
        {
            continue;
        }
        let service = service_of(name)
            .unwrap_or_else(|| panic!("{what}: {name} belongs to no plantd service"));
        by_service
            .entry(service.binary)
            .or_default()
            .push((name, value));
    }
    let dir = tempfile::tempdir().unwrap();
    for service in &SERVICES {
        let vars = by_service.remove(service.binary).unwrap_or_default();
        let output = isolated(
            workspace_binary(service.binary, service.package),
            dir.path(),
        )
        .arg("--print-config")
        .envs(vars.iter().copied())
        .output()
        .expect("the service binary runs");
        assert!(
            output.status.success(),
            "{what}: {} refuses its variables {:?}:\n{}",
            service.binary,
            vars.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Default ports of a hand-run system, as `(name, default)`: what [`moved_env`] moves.
const MDP: u16 = 9797;
const BUSES: [(&str, u16, u16); 3] = [
    ("state", 11000, 11001),
    ("event", 12000, 12001),
    ("metric", 13000, 13001),
];

/// The health port of each service binary at its default, by prefix.
pub const HEALTH_PORTS: [(&str, u16); 7] = [
    ("BROKER", 8081),
    ("STATE", 8082),
    ("IDENTITY", 8083),
    ("LOGGER", 8084),
    ("PROXY", 8085),
    ("ECHO", 8086),
    ("METRIC", 8087),
];

/// The environment that moves every port of a system of separate processes (the broker, its
/// buses, each health port, and every service's view of them) up by `offset`: what an operator
/// sets to run a second system beside the first.
pub fn moved_env(offset: u16) -> BTreeMap<String, String> {
    let at = |port: u16| format!("tcp://127.0.0.1:{}", port + offset);
    let mut env = BTreeMap::new();
    let mut set = |name: &str, value: String| {
        env.insert(name.to_owned(), value);
    };
    set("PLANTD_BROKER_ENDPOINT", at(MDP));
    let buses: Vec<String> = BUSES
        .iter()
        .map(|(name, front, back)| {
            format!(
                "{{name=\"{name}\",frontend=\"{}\",backend=\"{}\"}}",
                at(*front),
                at(*back)
            )
        })
        .collect();
    set("PLANTD_BROKER_BUS__BUSES", format!("[{}]", buses.join(",")));
    for svc in ["STATE", "IDENTITY", "LOGGER", "PROXY", "ECHO"] {
        set(&format!("PLANTD_{svc}_BROKER_ENDPOINT"), at(MDP));
    }
    set("PLANTD_PROXY_HTTP_PORT", (8080 + offset).to_string());
    set("PLANTD_PROXY_AUTH__EVENT_ENDPOINT", at(12001));
    let proxy_buses: Vec<String> = BUSES
        .iter()
        .map(|(name, front, back)| {
            format!(
                "{{name=\"{name}\",frontend=\"{}\",backend=\"{}\"}}",
                at(*front),
                at(*back)
            )
        })
        .collect();
    set("PLANTD_PROXY_BUSES", format!("[{}]", proxy_buses.join(",")));
    set("PLANTD_STATE_BUS_ENDPOINT", at(11000));
    set("PLANTD_STATE_AUTH__EVENT_ENDPOINT", at(12001));
    set("PLANTD_LOGGER_AUTH__EVENT_ENDPOINT", at(12001));
    set("PLANTD_IDENTITY_EVENT_ENDPOINT", at(12000));
    let subscriptions: Vec<String> = BUSES
        .iter()
        .map(|(name, _, back)| format!("{{name=\"{name}\",endpoint=\"{}\"}}", at(*back)))
        .collect();
    set(
        "PLANTD_LOGGER_BUSES",
        format!("[{}]", subscriptions.join(",")),
    );
    set("PLANTD_METRIC_BUS_FRONTEND", at(13000));
    set("PLANTD_METRIC_BUS_BACKEND", at(13001));
    for (svc, port) in HEALTH_PORTS {
        set(
            &format!("PLANTD_{svc}_HEALTH_PORT"),
            (port + offset).to_string(),
        );
    }
    env
}

/// `KEY=value` lines of a dotenv or systemd environment file (comments and blank lines skipped).
pub fn env_file(path: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("{}: not KEY=value: {l}", path.display()));
            (k.trim().to_owned(), v.trim().trim_matches('"').to_owned())
        })
        .collect()
}
