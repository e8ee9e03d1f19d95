//! `plantd up` as a user runs it: the real binary moved onto free loopback ports with its port
//! offset, driven with the real `plant` CLI, stopped with SIGINT.
//!
//! Covers the quick start (`plant echo hi`, SIGINT, exit 0), the state CLI round trip, two systems
//! side by side (`--port-offset`), `--print-ports`, and a taken port failing startup by name
//! without the "is up" banner.

mod common;

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use common::{free_port_offset, healthz, isolated, Plantd, DEFAULT_PORTS};
use serde_json::Value;

fn plant_json(plantd: &Plantd, args: &[&str]) -> Value {
    let mut all = vec!["--output", "json"];
    all.extend_from_slice(args);
    serde_json::from_str(&plantd.plant_ok(&all)).expect("JSON output")
}

#[test]
fn plantd_up_serves_echo_and_state_and_stops_cleanly_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let mut plantd = Plantd::start(dir.path(), &[], &[]);
    assert!(plantd.banner.starts_with("plantd "), "{}", plantd.banner);

    // The banner comes only once every service's /healthz is UP.
    for default in [8081, 8082, 8083, 8084, 8086, 8087] {
        let (status, body) = healthz(plantd.port(default)).expect("/healthz answers");
        assert_eq!(
            (status, &body["status"]),
            (200, &Value::from("UP")),
            "{body}"
        );
    }
    assert_eq!(plantd.plant_ok(&["echo", "hi"]).trim(), "hi");

    // Auth is required, and `up` logged the CLI in as admin: both files private, no password
    // in the banner.
    assert!(
        plantd.banner.contains("CLI logged in as admin"),
        "{}",
        plantd.banner
    );
    let password_file = dir.path().join("plantd-data").join("admin-password");
    let password = std::fs::read_to_string(&password_file).expect("admin-password written");
    assert!(!plantd.banner.contains(password.trim()) && !plantd.stderr().contains(password.trim()));
    let credentials = dir.path().join(".config/plantd/credentials.json");
    for file in [&password_file, &credentials] {
        let mode = std::fs::metadata(file)
            .expect("exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    }
    let whoami = plant_json(&plantd, &["auth", "whoami"]);
    assert_eq!(whoami["username"], "admin", "{whoami}");
    // The same service over raw MDP without a token is refused, by code.
    let raw = plantd_worker_sdk::Client::connect(&plantd.endpoint)
        .unwrap()
        .with_timeout(std::time::Duration::from_secs(10));
    let reply = raw
        .request(
            "org.plantd.State",
            vec![b"list-scopes".to_vec(), b"{}".to_vec()],
        )
        .expect("state answers");
    let reply: Value = serde_json::from_slice(&reply[0]).unwrap();
    assert_eq!(reply["error"]["code"], "UNAUTHENTICATED", "{reply}");

    // The state CLI round trip against the real service and its database in the data dir.
    plantd.plant_ok(&["state", "create-scope", "--scope", "plant.test"]);
    plantd.plant_ok(&[
        "state",
        "set",
        "--scope",
        "plant.test",
        "limit",
        r#"{"max": 5}"#,
    ]);
    plantd.plant_ok(&["state", "set", "--scope", "plant.test", "name", "pump 7"]);
    plantd.plant_ok(&[
        "state",
        "set",
        "--scope",
        "plant.test",
        "--string",
        "code",
        "42",
    ]);
    let got = plant_json(&plantd, &["state", "get", "--scope", "plant.test", "limit"]);
    assert_eq!(got["value"], serde_json::json!({"max": 5}));
    let got = plant_json(&plantd, &["state", "get", "--scope", "plant.test", "name"]);
    assert_eq!(got["value"], "pump 7");
    let got = plant_json(&plantd, &["state", "get", "--scope", "plant.test", "code"]);
    assert_eq!(got["value"], "42");
    let listed = plantd.plant_ok(&["state", "list", "--scope", "plant.test"]);
    for key in ["limit", "name", "code"] {
        assert!(listed.contains(key), "{listed}");
    }
    let scopes = plantd.plant_ok(&["state", "list-scopes"]);
    assert!(scopes.contains("plant.test"), "{scopes}");
    plantd.plant_ok(&["state", "delete", "--scope", "plant.test", "name"]);
    let missing = plantd.plant(&["state", "get", "--scope", "plant.test", "name"]);
    assert!(!missing.status.success());
    let error = String::from_utf8_lossy(&missing.stderr);
    assert!(error.contains("KEY_NOT_FOUND"), "{error}");

    // The same request as a raw `plant request`: --json values, and a refusal exits non-zero.
    let get = |key: &str| {
        let body = format!(r#"{{"service": "plant.test", "key": "{key}"}}"#);
        plantd.plant(&[
            "request",
            "org.plantd.State",
            "--json",
            r#""state-get""#,
            &body,
        ])
    };
    let found = get("limit");
    assert!(found.status.success(), "{found:?}");
    let reply: Value = serde_json::from_slice(&found.stdout).expect("one JSON frame");
    assert_eq!(reply["data"]["value"], serde_json::json!({"max": 5}));
    let refused = get("name");
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(error.starts_with("error: KEY_NOT_FOUND: "), "{error}");

    // SIGINT stops everything with exit code 0, and the databases are in the data directory.
    let status = plantd.interrupt();
    assert!(status.success(), "plantd exited with {status}");
    let data = dir.path().join("plantd-data");
    assert!(data.join("plantd-state.db").is_file());
    assert!(data.join("plantd-logger.db").is_file());
}

/// POSTs `body` to the HTTP proxy on `port`; the status and the JSON reply.
fn post_json(port: u16, path: &str, body: &Value) -> (u16, Value) {
    let response = reqwest::blocking::Client::new()
        .post(format!("http://127.0.0.1:{port}{path}"))
        .json(body)
        .send()
        .expect("the proxy answers");
    let status = response.status().as_u16();
    (status, response.json().expect("a JSON reply"))
}

#[test]
fn plantd_up_serves_the_http_api_on_the_proxy_port() {
    let dir = tempfile::tempdir().unwrap();
    let plantd = Plantd::start(dir.path(), &[], &[]);
    assert!(
        plantd
            .banner
            .contains(&format!("http://127.0.0.1:{}/api/v1", plantd.port(8080))),
        "{}",
        plantd.banner
    );
    for default in [8080, 8085] {
        let (status, body) = healthz(plantd.port(default)).expect("/healthz answers");
        assert_eq!(
            (status, &body["status"]),
            (200, &Value::from("UP")),
            "{body}"
        );
    }
    // What `curl -X POST .../org.plantd.module.Echo/echo -d '{...}'` does.
    let (status, reply) = post_json(
        plantd.port(8080),
        "/api/v1/services/org.plantd.module.Echo/echo",
        &serde_json::json!({"hello": "world"}),
    );
    assert_eq!(
        (status, reply),
        (200, serde_json::json!({"hello": "world"}))
    );
    // State requires a token under `up`: without one, the service's own error, as HTTP.
    let (status, reply) = post_json(
        plantd.port(8080),
        "/api/v1/services/org.plantd.State/list-scopes",
        &serde_json::json!({}),
    );
    assert_eq!(status, 401, "{reply}");
    assert_eq!(reply["error"]["code"], "UNAUTHENTICATED", "{reply}");
}

#[test]
fn a_second_system_runs_beside_the_first_with_a_port_offset() {
    let (first_dir, second_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = Plantd::start(first_dir.path(), &[], &[]);
    // Chosen while the first holds its ports, so the offsets cannot put them on each other.
    let second = Plantd::start(second_dir.path(), &[], &[]);
    assert_ne!(first.offset, second.offset);
    for plantd in [&first, &second] {
        assert_eq!(
            plantd.plant_ok(&["echo", "side by side"]).trim(),
            "side by side"
        );
        let info = plant_json(plantd, &["broker"]);
        // Loopback by default (protected mode).
        let mdp = format!("tcp://127.0.0.1:{}", 9797 + plantd.offset);
        assert_eq!(info["endpoint"], mdp.as_str(), "{info}");
        let buses = info["buses"].as_array().expect("buses");
        assert_eq!(buses.len(), 3, "{info}");
        for (bus, default) in buses.iter().zip([11000, 12000, 13000]) {
            let frontend = format!("tcp://127.0.0.1:{}", default + plantd.offset);
            assert_eq!(bus["frontend"], frontend.as_str(), "{info}");
        }
    }
}

#[test]
fn print_ports_lists_every_port_moved_by_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let ports = |offset: &str, by_env: bool| {
        let mut command = isolated(env!("CARGO_BIN_EXE_plantd"), dir.path());
        command.args(["up", "--print-ports"]);
        if by_env {
            command.env("PLANTD_UP_PORT_OFFSET", offset);
        } else {
            command.args(["--port-offset", offset]);
        }
        let output = command.output().expect("plantd runs");
        assert!(output.status.success(), "{output:?}");
        let text = String::from_utf8(output.stdout).unwrap();
        let mut ports: Vec<u16> = text
            .lines()
            .skip(1)
            .map(|line| line.split_whitespace().next().unwrap().parse().unwrap())
            .collect();
        ports.sort_unstable();
        (ports, text)
    };
    let mut defaults = DEFAULT_PORTS.to_vec();
    defaults.sort_unstable();
    let (unmoved, text) = ports("0", false);
    assert_eq!(unmoved, defaults, "{text}");
    for variable in [
        "PLANTD_UP_ENDPOINT",
        "PLANTD_BROKER_HEALTH_PORT",
        "PLANTD_BROKER_BUS__BUSES",
        "PLANTD_IDENTITY_HEALTH_PORT",
        "PLANTD_STATE_HEALTH_PORT",
        "PLANTD_LOGGER_HEALTH_PORT",
        "PLANTD_ECHO_HEALTH_PORT",
        "PLANTD_METRIC_HEALTH_PORT",
    ] {
        assert!(text.contains(variable), "{variable} missing from\n{text}");
    }
    let shifted: Vec<u16> = defaults.iter().map(|p| p + 1000).collect();
    assert_eq!(ports("1000", false).0, shifted);
    assert_eq!(ports("1000", true).0, shifted, "PLANTD_UP_PORT_OFFSET");

    let output = isolated(env!("CARGO_BIN_EXE_plantd"), dir.path())
        .args(["up", "--print-ports", "--port-offset", "60000"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("past 65535"), "{stderr}");
}

#[test]
fn a_taken_port_fails_startup_by_name_and_no_banner_is_printed() {
    let dir = tempfile::tempdir().unwrap();
    let offset = free_port_offset();
    let state_health = 8082 + offset;
    let _held = TcpListener::bind(("0.0.0.0", state_health)).unwrap();
    let output = isolated(env!("CARGO_BIN_EXE_plantd"), dir.path())
        .args(["up", "--port-offset", &offset.to_string()])
        .stdin(Stdio::null())
        .output()
        .expect("plantd runs");
    assert!(!output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains("is up"), "banner printed: {stdout}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("port {state_health} is taken")),
        "{stderr}"
    );
    assert!(stderr.contains("PLANTD_STATE_HEALTH_PORT"), "{stderr}");
    // Nothing was started, so nothing was half-created.
    assert!(!dir.path().join("plantd-data").exists());
}

#[test]
fn the_banner_waits_until_every_service_is_up() {
    let dir = tempfile::tempdir().unwrap();
    let plantd = Plantd::start(dir.path(), &[], &[]);
    // Up means up: the first request right after the banner finds echo registered (it is not
    // just queued until it registers).
    let service = plant_json(&plantd, &["service", "org.plantd.module.Echo"]);
    assert_eq!(service["available"], true);
    // The advice is runnable as printed: the cargo form, with the endpoint it is not the default.
    let advice = format!(
        "  cargo run --release -p plantd-client -- --endpoint {} echo hello\n",
        plantd.endpoint
    );
    assert!(plantd.banner.contains(&advice), "{}", plantd.banner);
}

/// `plant args...` against `plantd` with `input` on stdin.
fn plant_with_stdin(plantd: &Plantd, args: &[&str], input: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = isolated(common::plant_binary(), &plantd.dir)
        .args(["--endpoint", &plantd.endpoint, "--timeout", "10s"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("plant runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn plant_auth_logs_out_and_in_and_plant_identity_reaches_every_category() {
    let dir = tempfile::tempdir().unwrap();
    let plantd = Plantd::start(dir.path(), &[], &[]);
    let password = std::fs::read_to_string(dir.path().join("plantd-data/admin-password")).unwrap();

    plantd.plant_ok(&["auth", "logout"]);
    let refused = plantd.plant(&["state", "list-scopes"]);
    assert_eq!(refused.status.code(), Some(1));
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(error.contains("UNAUTHENTICATED"), "{error}");

    let wrong = plant_with_stdin(
        &plantd,
        &["auth", "login", "-u", "admin", "--password-stdin"],
        "nope\n",
    );
    assert_eq!(wrong.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("LOGIN_FAILED"));
    let login = plant_with_stdin(
        &plantd,
        &["auth", "login", "-u", "ADMIN", "--password-stdin"],
        &password,
    );
    assert!(login.status.success(), "{login:?}");
    plantd.plant_ok(&["state", "list-scopes"]);
    let token = plantd.plant_ok(&["auth", "token"]);
    assert_eq!(token.trim().split('.').count(), 3, "a JWT: {token}");

    // plant identity: a user created with the password on stdin, listed, then logged in as.
    let created = plant_with_stdin(
        &plantd,
        &[
            "identity",
            "user",
            "create",
            "username=alice",
            "email=alice@example.com",
            "--password-stdin",
        ],
        "a long enough passphrase\n",
    );
    assert!(created.status.success(), "{created:?}");
    let users = plant_json(&plantd, &["identity", "user", "list"]);
    assert!(users.to_string().contains("alice"), "{users}");
    let role = plant_json(
        &plantd,
        &[
            "identity",
            "role",
            "create",
            "name=lister",
            r#"permissions=["state:scope:list"]"#,
        ],
    );
    let role_id = role["role"]["id"].to_string();
    let user_id = plant_json(&plantd, &["identity", "user", "get", "username=alice"])["user"]["id"]
        .to_string();
    plantd.plant_ok(&[
        "identity",
        "user",
        "assign-role",
        &format!("user_id={user_id}"),
        &format!("role_id={role_id}"),
    ]);
    let audit = plantd.plant_ok(&["audit", "list", "--limit", "50"]);
    assert!(audit.contains("login"), "{audit}");
    let unknown = plantd.plant(&["identity", "user", "fly"]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("UNKNOWN_OPERATION"));

    // A token given with --token wins over the saved login: alice may list scopes only.
    let alice = plant_with_stdin(
        &plantd,
        &[
            "--output",
            "json",
            "identity",
            "auth",
            "login",
            "identifier=alice",
            "--password-stdin",
        ],
        "a long enough passphrase\n",
    );
    assert!(alice.status.success(), "{alice:?}");
    let alice: Value = serde_json::from_slice(&alice.stdout).unwrap();
    let alice_token = alice["access_token"].as_str().unwrap();
    plantd.plant_ok(&["--token", alice_token, "state", "list-scopes"]);
    let denied = plantd.plant(&["--token", alice_token, "state", "set", "k", "1"]);
    assert!(String::from_utf8_lossy(&denied.stderr).contains("PERMISSION_DENIED"));
}

#[test]
fn a_saved_login_about_to_expire_is_refreshed_before_use() {
    let dir = tempfile::tempdir().unwrap();
    // Access tokens shorter than plant's refresh margin: every command refreshes first.
    let plantd = Plantd::start(
        dir.path(),
        &[],
        &[("PLANTD_IDENTITY_TOKENS__ACCESS_TTL_SECS", "30")],
    );
    let credentials = dir.path().join(".config/plantd/credentials.json");
    let saved = |what: &str| -> String {
        let file: Value = serde_json::from_slice(&std::fs::read(&credentials).unwrap()).unwrap();
        file["endpoints"][&plantd.endpoint][what]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let first = saved("refresh_token");
    plantd.plant_ok(&["state", "list-scopes"]);
    let second = saved("refresh_token");
    assert_ne!(first, second, "the refresh token rotated");
    plantd.plant_ok(&["state", "list-scopes"]);
    assert_ne!(
        second,
        saved("refresh_token"),
        "and again: each one works once"
    );
    let mode = std::fs::metadata(&credentials)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn plantd_up_secure_runs_everything_on_curve_and_plant_needs_no_flag() {
    let dir = tempfile::tempdir().unwrap();
    let mut plantd = Plantd::start(dir.path(), &["--secure"], &[]);
    assert!(
        plantd.banner.contains("every socket encrypted"),
        "{}",
        plantd.banner
    );
    let keys = dir.path().join("plantd-data/keys");
    for name in [
        "broker", "echo", "state", "identity", "logger", "metric", "proxy", "cli",
    ] {
        let mode = std::fs::metadata(keys.join(format!("{name}.key")))
            .expect("key written")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}.key");
    }
    assert!(dir.path().join(".config/plantd/curve.json").is_file());
    // The HTTP proxy reaches the broker over CURVE with its own key.
    let (status, reply) = post_json(
        plantd.port(8080),
        "/api/v1/services/org.plantd.module.Echo/echo",
        &serde_json::json!({"secure": true}),
    );
    assert_eq!((status, reply), (200, serde_json::json!({"secure": true})));
    // plant finds its keys for this endpoint in curve.json: no flag.
    assert_eq!(plantd.plant_ok(&["echo", "hi"]).trim(), "hi");
    // Identity runs on CURVE too, and tokens are still required: up logged plant in as admin
    // through CURVE, and state verifies that token against identity.
    assert!(
        plantd.banner.contains("CLI logged in as admin"),
        "{}",
        plantd.banner
    );
    plantd.plant_ok(&["state", "set", "--scope", "secure", "k", "v"]);
    let got = plant_json(&plantd, &["state", "get", "--scope", "secure", "k"]);
    assert_eq!(got["value"], "v", "{got}");
    let forged = plantd.plant(&[
        "--token",
        "not.a.token",
        "state",
        "get",
        "--scope",
        "secure",
        "k",
    ]);
    let stderr = String::from_utf8_lossy(&forged.stderr);
    assert!(
        !forged.status.success() && stderr.contains("UNAUTHENTICATED"),
        "{forged:?}"
    );
    // A client without keys is told why it cannot get in, not left to time out.
    let error = plantd_worker_sdk::Client::connect(&plantd.endpoint)
        .unwrap()
        .with_timeout(std::time::Duration::from_secs(10))
        .broker_info()
        .unwrap_err();
    assert!(
        matches!(error, plantd_worker_sdk::ClientError::Authentication { .. }),
        "{error:?}"
    );
    assert!(plantd.interrupt().success());

    // The second run keeps the keys.
    let before = std::fs::read(keys.join("broker.key")).unwrap();
    let mut again = Plantd::start(dir.path(), &["--secure"], &[]);
    assert!(again.banner.contains("(kept)"), "{}", again.banner);
    assert_eq!(std::fs::read(keys.join("broker.key")).unwrap(), before);
    assert_eq!(again.plant_ok(&["echo", "again"]).trim(), "again");
    assert!(again.interrupt().success());
}
