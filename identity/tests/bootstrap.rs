//! Issue 12 test 7: the first start writes `admin-password` (mode 0600) exactly once and says
//! where, a second start leaves it alone, and no secret (password, access or refresh token, API
//! key, hash) appears in the logs of the real `plantd-identity` binary or in `--print-config`.
//! Also a password given in `bootstrap.admin_password_file`, and a weak one refused.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Stdio};

use common::{call, data, Harness};
use plantd_identity::IdentityError;
use plantd_worker_sdk::testing::free_port;
use serde_json::json;

/// The real binary against the harness's broker, logging at debug level into `log`.
fn spawn(h: &Harness, log: &Path) -> Child {
    let mut command = plantd_worker_sdk::testing::service_command(
        env!("CARGO_BIN_EXE_plantd-identity"),
        h.dir.path(),
        "PLANTD_IDENTITY_CONFIG",
    );
    command
        .env("PLANTD_IDENTITY_DB", h.db_path())
        .env("PLANTD_IDENTITY_BROKER_ENDPOINT", &h.endpoint)
        .env("PLANTD_IDENTITY_HEALTH_HOST", "127.0.0.1")
        .env("PLANTD_IDENTITY_HEALTH_PORT", free_port().to_string())
        .env("PLANTD_IDENTITY_HEARTBEAT_MS", "250")
        .env("PLANTD_IDENTITY_EVENT_ENDPOINT", &h.bus_frontend)
        .env("PLANTD_IDENTITY_LOG_LEVEL", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    command.spawn().expect("spawn plantd-identity")
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_first_start_writes_the_password_once_and_no_log_holds_a_secret() {
    let h = Harness::broker_only();
    let password_file = h.dir.path().join("admin-password");
    let first_log = h.dir.path().join("first.log");
    let child = spawn(&h, &first_log);
    h.wait_until_serving();

    assert_eq!(mode(&password_file), 0o600);
    assert_eq!(
        mode(&h.db_path()),
        0o600,
        "the database holds the signing key"
    );
    let password = std::fs::read_to_string(&password_file).unwrap();
    let password = password.trim_end().to_owned();
    assert!(password.len() >= 20, "a long random password");
    let written = std::fs::metadata(&password_file)
        .unwrap()
        .modified()
        .unwrap();

    // Make every kind of secret pass through the service.
    let client = h.client();
    let login = data(call(
        &client,
        "auth",
        "login",
        &json!({"identifier": "admin", "password": password}),
    ));
    let access = login["access_token"].as_str().unwrap().to_owned();
    let refresh = login["refresh_token"].as_str().unwrap().to_owned();
    let rotated = data(call(
        &client,
        "auth",
        "refresh",
        &json!({"refresh_token": refresh}),
    ));
    let key = data(call(
        &client,
        "api_key",
        "create",
        &json!({"token": access, "name": "k", "permissions": ["logger:read"]}),
    ))["api_key"]
        .as_str()
        .unwrap()
        .to_owned();
    data(call(&client, "auth", "token", &json!({"api_key": key})));
    let user = json!({"token": access, "username": "newbie", "email": "n@example.com", "password": "another long passphrase"});
    data(call(&client, "user", "create", &user));
    call(
        &client,
        "auth",
        "login",
        &json!({"identifier": "newbie", "password": "a wrong passphrase"}),
    );
    stop(child);

    let log = std::fs::read_to_string(&first_log).unwrap();
    assert!(
        log.contains(&password_file.display().to_string()),
        "the log says where:\n{log}"
    );
    assert!(log.contains("first start"), "{log}");
    let hash: String = rusqlite::Connection::open(h.db_path())
        .unwrap()
        .query_row(
            "SELECT password_hash FROM users WHERE username = 'admin'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    for (what, secret) in [
        ("admin password", password.as_str()),
        ("access token", access.as_str()),
        ("refresh token", refresh.as_str()),
        (
            "rotated refresh token",
            rotated["refresh_token"].as_str().unwrap(),
        ),
        ("API key", key.as_str()),
        ("new user's password", "another long passphrase"),
        ("wrong password", "a wrong passphrase"),
        ("password hash", hash.as_str()),
        ("any argon2 hash", "$argon2id$"),
    ] {
        assert!(!log.contains(secret), "the {what} is in the log");
    }

    // A second start: the file is neither rewritten nor replaced, and the password still works.
    let second_log = h.dir.path().join("second.log");
    let child = spawn(&h, &second_log);
    h.wait_until_serving();
    assert_eq!(
        std::fs::read_to_string(&password_file).unwrap().trim_end(),
        password
    );
    assert_eq!(
        std::fs::metadata(&password_file)
            .unwrap()
            .modified()
            .unwrap(),
        written
    );
    data(call(
        &client,
        "auth",
        "login",
        &json!({"identifier": "admin", "password": password}),
    ));
    stop(child);
    let log = std::fs::read_to_string(&second_log).unwrap();
    assert!(!log.contains("first start"), "{log}");
    assert!(!log.contains(&password));
}

#[test]
fn print_config_and_help_show_settings_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let output = plantd_worker_sdk::testing::service_command(
        env!("CARGO_BIN_EXE_plantd-identity"),
        dir.path(),
        "PLANTD_IDENTITY_CONFIG",
    )
    .env(
        "PLANTD_IDENTITY_BOOTSTRAP__ADMIN_PASSWORD_FILE",
        "/run/secrets/admin",
    )
    .env("PLANTD_IDENTITY_LOCKOUT__MAX_FAILURES", "7")
    .arg("--print-config")
    .output()
    .unwrap();
    assert!(output.status.success());
    let config: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(config["health_port"], 8083);
    assert_eq!(config["db"], "./plantd-identity.db");
    assert_eq!(config["event_endpoint"], "tcp://127.0.0.1:12000");
    assert_eq!(config["lockout"]["max_failures"], 7);
    assert_eq!(
        config["bootstrap"]["admin_password_file"],
        "/run/secrets/admin"
    );
    assert_eq!(config["tokens"]["access_ttl_secs"], 900);
    let text = String::from_utf8_lossy(&output.stdout).to_lowercase();
    assert!(
        !text.contains("secret\""),
        "no secret-valued setting: {text}"
    );
    assert!(
        !dir.path().join("plantd-identity.db").exists(),
        "printing starts nothing"
    );
}

#[test]
fn a_configured_password_file_is_used_and_a_weak_one_refused() {
    let mut h = Harness::broker_only();
    let file = h.dir.path().join("given-password");
    std::fs::write(&file, "a configured admin passphrase\n").unwrap();
    h.config.bootstrap.admin_password_file = Some(file.clone());
    assert_eq!(plantd_identity::admin_password_path(&h.config), file);
    h.start_identity();
    h.login("admin", "a configured admin passphrase");
    assert!(!h.dir.path().join("admin-password").exists());
    h.stop_identity();

    let dir = tempfile::tempdir().unwrap();
    let weak = dir.path().join("weak");
    std::fs::write(&weak, "password1\n").unwrap();
    let mut config = h.config.clone();
    config.db = dir.path().join("identity.db");
    config.bootstrap.admin_password_file = Some(weak);
    let result = h.rt.block_on(plantd_identity::run(
        config,
        plantd_identity::Shutdown::new(),
    ));
    let error = result.expect_err("a weak admin password must not start the service");
    assert!(matches!(error, IdentityError::Bootstrap(_)), "{error}");
    assert!(!error.to_string().contains("password1"), "{error}");
}
