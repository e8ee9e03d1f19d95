//! The static deployment artefacts, each validated by the tool made for it and checked against the
//! code: `docker-compose.yml` (Compose Specification schema, `check-jsonschema`), `deploy/systemd`
//! (`systemd-analyze verify`, with the binaries at the paths the units name), `deploy/kubernetes`
//! (the Kubernetes schemas, `kubernetes-validate --strict`), `deploy/prometheus` (`promtool check`),
//! and the Dockerfile. Every `PLANTD_*` name they set is loaded by the service it belongs to, so
//! a name no service reads fails here (the unknown-key check of the services themselves).
//!
//! The tools are skipped with a message when missing locally, and mandatory under
//! `PLANTD_REQUIRE_OPS=1` (`.ci/run` installs them).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::ops::{self, SERVICES};
use common::workspace_binary;
use serde_yaml::Value;

/// Every service of DESIGN.md §3 with its default health port, as the deploy files name it.
const ALL: [(&str, u16); 7] = [
    ("broker", 8081),
    ("state", 8082),
    ("identity", 8083),
    ("logger", 8084),
    ("proxy", 8085),
    ("echo", 8086),
    ("metric", 8087),
];

fn read(path: &str) -> String {
    std::fs::read_to_string(ops::repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> Value {
    serde_yaml::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Runs `program args...` in the repository, failing with its output unless it succeeds and
/// prints nothing on stderr when `quiet_stderr`.
fn run_ok(program: &str, args: &[&str], quiet_stderr: bool) {
    let output = Command::new(program)
        .args(args)
        .current_dir(ops::repo())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && (!quiet_stderr || stderr.trim().is_empty()),
        "{program} {args:?}: {}\n{}{stderr}",
        output.status,
        String::from_utf8_lossy(&output.stdout)
    );
}

/// A YAML map's string entries.
fn string_map(value: &Value) -> BTreeMap<String, String> {
    value
        .as_mapping()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => serde_yaml::to_string(other).unwrap().trim().to_owned(),
                    };
                    (k.as_str().unwrap().to_owned(), v)
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn compose_file_passes_the_compose_specification_schema() {
    if !ops::tool_ready(
        "check-jsonschema",
        &["--version"],
        "pip install check-jsonschema",
        "the compose schema check",
    ) {
        return;
    }
    run_ok(
        "check-jsonschema",
        &[
            "--builtin-schema",
            "vendor.compose-spec",
            "docker-compose.yml",
        ],
        false,
    );
}

#[test]
fn compose_runs_every_service_healthy_on_names_the_services_read() {
    let compose = yaml("docker-compose.yml");
    let services = &compose["services"];
    let mut all_env = BTreeMap::new();
    for (name, health) in ALL {
        let service = &services[name];
        assert!(service.is_mapping(), "compose has no {name}");
        let env = string_map(&service["environment"]);
        let prefix = format!("PLANTD_{}_", name.to_uppercase());
        assert!(
            env.keys().any(|k| k.starts_with(&prefix)),
            "{name}: no {prefix}*"
        );
        // The image's HEALTHCHECK and compose's both hit /healthz on the service's health port.
        assert_eq!(env["HEALTH_PORT"], health.to_string(), "{name}");
        assert_eq!(
            env.get(&format!("{prefix}HEALTH_PORT")),
            Some(&health.to_string()),
            "{name}"
        );
        let test = serde_yaml::to_string(&service["healthcheck"]["test"]).unwrap();
        assert!(
            test.contains(&format!("http://127.0.0.1:{health}/healthz")),
            "{name}: {test}"
        );
        if name != "broker" {
            assert_eq!(
                service["depends_on"]["broker"]["condition"], "service_healthy",
                "{name}"
            );
        }
        for (dependency, condition) in string_map(&service["depends_on"]) {
            assert!(
                condition.contains("service_healthy"),
                "{name} → {dependency}"
            );
        }
        // Published on the host's loopback only.
        for port in service["ports"].as_sequence().into_iter().flatten() {
            assert!(
                port.as_str().unwrap().starts_with("127.0.0.1:"),
                "{name}: {port:?}"
            );
        }
        all_env.extend(env);
    }
    // The broker binds every interface of its container, so it must choose CURVE or plaintext
    // explicitly (protected mode would refuse to start otherwise).
    let broker = string_map(&services["broker"]["environment"]);
    assert!(broker["PLANTD_BROKER_ENDPOINT"].contains("0.0.0.0"));
    assert!(
        broker
            .get("PLANTD_BROKER_SECURITY__INSECURE")
            .map(String::as_str)
            == Some("true")
            || broker.contains_key("PLANTD_BROKER_CURVE__SECRET_KEY_FILE")
    );
    // The databases live on named volumes.
    for name in ["state", "identity", "logger"] {
        let volume = format!("{name}-data");
        assert!(compose["volumes"]
            .as_mapping()
            .unwrap()
            .contains_key(volume.as_str()));
        let mounts = serde_yaml::to_string(&services[name]["volumes"]).unwrap();
        assert!(
            mounts.contains(&format!("{volume}:/data")),
            "{name}: {mounts}"
        );
    }
    // Monitoring is optional.
    for name in ["prometheus", "grafana"] {
        assert_eq!(services[name]["profiles"][0], "monitoring", "{name}");
    }
    ops::assert_services_read(&all_env, &["HEALTH_PORT"], "docker-compose.yml");
}

#[test]
fn dockerfile_builds_every_binary_and_runs_them_unprivileged_with_a_healthcheck() {
    let dockerfile = read("Dockerfile");
    for needle in [
        "cargo build --release --locked --workspace --bins",
        "USER plantd",
        "VOLUME [\"/data\"]",
        "HEALTHCHECK",
        "/healthz",
    ] {
        assert!(dockerfile.contains(needle), "Dockerfile lacks {needle:?}");
    }
    let expose = dockerfile
        .lines()
        .find(|l| l.starts_with("EXPOSE "))
        .expect("EXPOSE");
    for port in [9797, 11000, 11001, 12000, 12001, 13000, 13001, 8080]
        .into_iter()
        .chain(ALL.map(|(_, p)| p))
    {
        assert!(
            expose.split_whitespace().any(|p| p == port.to_string()),
            "EXPOSE lacks {port}"
        );
    }
    let ignore = read(".dockerignore");
    assert!(ignore.lines().any(|l| l.trim() == "target/"), "{ignore}");
}

/// The binary a unit's `ExecStart=` names for `service`.
fn unit_binary(service: &str) -> String {
    match service {
        "echo" | "metric" => format!("plantd-module-{service}"),
        other => format!("plantd-{other}"),
    }
}

#[test]
fn systemd_units_have_the_required_settings_and_their_env_files_are_read() {
    for (service, _) in ALL {
        let unit = read(&format!("deploy/systemd/plantd-{service}.service"));
        let mut want = vec![
            "User=plantd".to_owned(),
            format!("EnvironmentFile=/etc/plantd/{service}.env"),
            format!("ExecStart=/usr/local/bin/{}", unit_binary(service)),
            format!("StateDirectory=plantd/{service}"),
            "Restart=on-failure".to_owned(),
            "NoNewPrivileges=yes".to_owned(),
            "ProtectSystem=strict".to_owned(),
            "ProtectHome=yes".to_owned(),
            "PrivateTmp=yes".to_owned(),
        ];
        if service != "broker" {
            want.push("After=network-online.target plantd-broker.service".into());
            want.push("Wants=network-online.target plantd-broker.service".into());
        }
        for line in want {
            assert!(
                unit.lines().any(|l| l == line),
                "plantd-{service}.service lacks {line}"
            );
        }
        let env = ops::env_file(&ops::repo().join(format!("deploy/systemd/env/{service}.env")));
        let prefix = format!("PLANTD_{}_", service.to_uppercase());
        assert!(
            env.keys().all(|k| k.starts_with(&prefix)),
            "{service}: {env:?}"
        );
        ops::assert_services_read(&env, &[], &format!("deploy/systemd/env/{service}.env"));
    }
}

/// Hard-links (or copies) `from` to `to`.
fn place(from: &Path, to: &Path) {
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to).unwrap();
    }
}

#[test]
fn systemd_analyze_verifies_every_unit_with_the_binaries_where_the_units_name_them() {
    if !ops::tool_ready(
        "systemd-analyze",
        &["--version"],
        "apt-get install systemd",
        "systemd-analyze verify",
    ) {
        return;
    }
    // A root holding the system's own units (the targets ours refer to), the binaries at
    // /usr/local/bin as the units name them, and our units.
    let root = tempfile::tempdir().unwrap();
    let units = root.path().join("etc/systemd/system");
    let bin = root.path().join("usr/local/bin");
    std::fs::create_dir_all(&units).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    let system = Path::new("/usr/lib/systemd/system");
    let their = root.path().join("usr/lib/systemd/system");
    std::fs::create_dir_all(&their).unwrap();
    for entry in std::fs::read_dir(system).unwrap().flatten() {
        let path = entry.path();
        if path.is_file() && !path.is_symlink() {
            std::fs::copy(&path, their.join(entry.file_name())).unwrap();
        }
    }
    for service in &SERVICES {
        place(
            &workspace_binary(service.binary, service.package),
            &bin.join(service.binary),
        );
    }
    // A service whose crate is not on this branch yet gets an empty stand-in, so its unit is
    // still verified (remove it from PENDING when it lands and the real binary is placed above).
    for pending in ops::PENDING {
        let stand_in = bin.join(format!("plantd-{}", pending.to_lowercase()));
        std::fs::write(&stand_in, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            &stand_in,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
    }
    let root_arg = format!("--root={}", root.path().display());
    for (service, _) in ALL {
        let name = format!("plantd-{service}.service");
        std::fs::copy(
            ops::repo().join("deploy/systemd").join(&name),
            units.join(&name),
        )
        .unwrap();
        let unit = format!("/etc/systemd/system/{name}");
        // Any warning (an unknown directive, say) is a failure too: verify exits 0 on those.
        run_ok("systemd-analyze", &["verify", &root_arg, &unit], true);
    }
}

/// Every document of every manifest under deploy/kubernetes.
fn manifests() -> Vec<(PathBuf, Value)> {
    let dir = ops::repo().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = <Value as serde::Deserialize>::deserialize(doc).unwrap();
            if !value.is_null() {
                docs.push((file.clone(), value));
            }
        }
    }
    docs
}

#[test]
fn kubernetes_manifests_pass_the_kubernetes_schemas() {
    if !ops::tool_ready(
        "kubernetes-validate",
        &["--version"],
        "pip install kubernetes-validate",
        "the Kubernetes schema check",
    ) {
        return;
    }
    let files: Vec<String> = manifests()
        .into_iter()
        .map(|(f, _)| f.display().to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut args = vec!["--strict", "--quiet"];
    args.extend(files.iter().map(String::as_str));
    run_ok("kubernetes-validate", &args, false);
}

#[test]
fn kubernetes_runs_every_service_probed_limited_and_on_several_brokers() {
    let docs = manifests();
    let find = |kind: &str, name: &str| {
        docs.iter()
            .map(|(_, d)| d)
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    let brokers = find("StatefulSet", "plantd-broker")["spec"]["replicas"]
        .as_u64()
        .unwrap();
    assert!(brokers >= 2, "several broker replicas (DESIGN.md §8)");
    let mut all_env = BTreeMap::new();
    for (service, health) in ALL {
        let name = format!("plantd-{service}");
        let stateful = ["broker", "state", "identity", "logger"].contains(&service);
        let workload = find(
            if stateful {
                "StatefulSet"
            } else {
                "Deployment"
            },
            &name,
        );
        if ["state", "identity", "logger"].contains(&service) {
            assert_eq!(
                workload["spec"]["replicas"], 1,
                "{name}: SQLite has one writer"
            );
            let claims = &workload["spec"]["volumeClaimTemplates"];
            assert_eq!(claims[0]["metadata"]["name"], "data", "{name}");
        }
        let container = &workload["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["command"][0], unit_binary(service).as_str());
        for probe in ["readinessProbe", "livenessProbe"] {
            assert_eq!(
                container[probe]["httpGet"]["path"], "/healthz",
                "{name} {probe}"
            );
        }
        let ports = container["ports"].as_sequence().unwrap();
        assert!(
            ports
                .iter()
                .any(|p| p["name"] == "health" && p["containerPort"] == health),
            "{name}: health port {health}"
        );
        for side in ["requests", "limits"] {
            for resource in ["cpu", "memory"] {
                assert!(
                    !container["resources"][side][resource].is_null(),
                    "{name}: no {side}.{resource}"
                );
            }
        }
        let env = string_map(&find("ConfigMap", &name)["data"]);
        // A worker registers with every broker replica; a client (the proxy) fails over among
        // them all.
        let key = format!("PLANTD_{}_BROKER_ENDPOINT", service.to_uppercase());
        if let Some(endpoints) = env.get(&key) {
            for i in 0..brokers {
                assert!(
                    endpoints.contains(&format!("plantd-broker-{i}.plantd-broker:9797")),
                    "{name}: {endpoints}"
                );
            }
        }
        all_env.extend(env);
    }
    ops::assert_services_read(&all_env, &[], "deploy/kubernetes ConfigMaps");
    // No key material is committed: the Secret holds placeholders only.
    let secret = find("Secret", "plantd-curve");
    for (key, value) in string_map(&secret["stringData"]) {
        assert!(
            value.starts_with("REPLACE-ME"),
            "{key} is not a placeholder"
        );
    }
    assert!(secret["data"].is_null());
}

#[test]
fn promtool_checks_the_scrape_config_and_the_alert_rules() {
    if !ops::tool_ready(
        "promtool",
        &["--version"],
        "apt-get install prometheus",
        "promtool check",
    ) {
        return;
    }
    run_ok(
        "promtool",
        &["check", "config", "deploy/prometheus/prometheus.yml"],
        false,
    );
    run_ok(
        "promtool",
        &["check", "rules", "deploy/prometheus/alerts.yml"],
        false,
    );
}

#[test]
fn prometheus_scrapes_every_service_and_the_rules_cover_the_issues_list() {
    let config = yaml("deploy/prometheus/prometheus.yml");
    let targets = serde_yaml::to_string(&config["scrape_configs"]).unwrap();
    for (service, health) in ALL {
        assert!(
            targets.contains(&format!("{service}:{health}")),
            "no scrape target for {service}"
        );
    }
    let rules = read("deploy/prometheus/alerts.yml");
    for alert in [
        "PlantdBrokerDown",
        "PlantdNoWorkers",
        "PlantdQueueDepthHigh",
        "PlantdBrokerErrorRate",
        "PlantdServiceErrorRate",
        "PlantdRequestsExpired",
        "PlantdStateCommitSlow",
        "PlantdLoggerFallingBehind",
    ] {
        assert!(rules.contains(&format!("alert: {alert}")), "no {alert}");
    }
}

/// Every document of every manifest under deploy/cluster/kubernetes.
fn cluster_manifests() -> Vec<(PathBuf, Value)> {
    let dir = ops::repo().join("deploy/cluster/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .flat_map(|file| {
            let text = std::fs::read_to_string(&file).unwrap();
            serde_yaml::Deserializer::from_str(&text)
                .map(|doc| <Value as serde::Deserialize>::deserialize(doc).unwrap())
                .filter(|v| !v.is_null())
                .map(|v| (file.clone(), v))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn the_cluster_deployment_passes_the_compose_and_kubernetes_schemas() {
    if ops::tool_ready(
        "check-jsonschema",
        &["--version"],
        "pip install check-jsonschema",
        "the compose schema check",
    ) {
        run_ok(
            "check-jsonschema",
            &[
                "--builtin-schema",
                "vendor.compose-spec",
                "deploy/cluster/docker-compose.yml",
            ],
            false,
        );
    }
    if ops::tool_ready(
        "kubernetes-validate",
        &["--version"],
        "pip install kubernetes-validate",
        "the Kubernetes schema check",
    ) {
        let files: std::collections::BTreeSet<String> = cluster_manifests()
            .into_iter()
            .map(|(f, _)| f.display().to_string())
            .collect();
        let mut args = vec!["--strict", "--quiet"];
        args.extend(files.iter().map(String::as_str));
        run_ok("kubernetes-validate", &args, false);
    }
}

#[test]
fn the_cluster_deployment_runs_three_brokers_state_twice_on_postgres_and_a_bridge_per_broker() {
    // Compose: three brokers; every worker and the proxy list all three; state twice and the
    // logger on PostgreSQL with the password from a file; one bridge per broker, ids distinct.
    let compose = yaml("deploy/cluster/docker-compose.yml");
    let services = compose["services"].as_mapping().unwrap();
    let name_of = |k: &Value| k.as_str().unwrap().to_owned();
    let brokers: Vec<String> = services
        .keys()
        .map(name_of)
        .filter(|n| n.starts_with("broker-"))
        .collect();
    assert_eq!(brokers.len(), 3, "{brokers:?}");
    let mut all_env = BTreeMap::new();
    let mut bridge_ids = std::collections::BTreeSet::new();
    for (name, service) in services {
        let name = name_of(name);
        let env = string_map(&service["environment"]);
        for (key, value) in &env {
            // Every client and worker lists all three (the brokers' own endpoint is their bind).
            if key.ends_with("_BROKER_ENDPOINT") && key != "PLANTD_BROKER_ENDPOINT" {
                for broker in &brokers {
                    assert!(
                        value.contains(&format!("tcp://{broker}:9797")),
                        "{name}: {value}"
                    );
                }
            }
            assert!(
                !key.ends_with("PASSWORD") && !value.contains("password="),
                "{name}: a password in the compose file ({key})"
            );
        }
        if name.starts_with("state-") || name == "logger" {
            let prefix = if name == "logger" { "LOGGER" } else { "STATE" };
            assert_eq!(env[&format!("PLANTD_{prefix}_STORE")], "postgres", "{name}");
            assert!(env.contains_key(&format!("PLANTD_{prefix}_POSTGRES__PASSWORD_FILE")));
        }
        if name.starts_with("bridge-") {
            assert!(bridge_ids.insert(env["PLANTD_BRIDGE_NATS_BRIDGE_ID"].clone()));
        }
        all_env.extend(env);
    }
    assert!(
        services
            .keys()
            .filter(|k| name_of(k).starts_with("state-"))
            .count()
            >= 2
    );
    assert_eq!(bridge_ids.len(), 3);
    ops::assert_services_read(&all_env, &[], "deploy/cluster/docker-compose.yml");

    // Kubernetes: the same shape beside deploy/kubernetes.
    let docs = cluster_manifests();
    let find = |kind: &str, name: &str| {
        docs.iter()
            .map(|(_, d)| d)
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    assert_eq!(find("Deployment", "plantd-state")["spec"]["replicas"], 2);
    let mut all_env = BTreeMap::new();
    for (_, doc) in &docs {
        if doc["kind"] == "ConfigMap" && doc["metadata"]["name"] != "plantd-postgres-init" {
            all_env.extend(string_map(&doc["data"]));
        }
    }
    for i in 0..3 {
        let env = string_map(&find("ConfigMap", &format!("plantd-bridge-{i}"))["data"]);
        assert!(
            env["PLANTD_BRIDGE_NATS_BUSES"].contains(&format!("plantd-broker-{i}.plantd-broker")),
            "bridge {i} serves broker {i}"
        );
    }
    ops::assert_services_read(&all_env, &[], "deploy/cluster/kubernetes ConfigMaps");
    let secret = find("Secret", "plantd-postgres");
    for (_, value) in secret["stringData"].as_mapping().unwrap() {
        assert!(
            value.as_str().unwrap().starts_with("REPLACE-ME"),
            "placeholders only"
        );
    }
}
