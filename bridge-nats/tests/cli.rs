//! The `plantd-bridge-nats` binary: `--print-config` keeps credentials out, and bad
//! configuration stops it at once with an error naming the setting (no NATS server needed).

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use plantd_worker_sdk::testing::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_plantd-bridge-nats");

fn command(dir: &std::path::Path) -> Command {
    let mut command =
        plantd_worker_sdk::testing::service_command(BIN, dir, "PLANTD_BRIDGE_NATS_CONFIG");
    command.env("PLANTD_BRIDGE_NATS_HEALTH_PORT", free_port().to_string());
    command
}

/// Runs `command` to completion, killing it if it takes longer than 30 s (a hang is a failure).
fn run(command: &mut Command) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let end = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            panic!(
                "plantd-bridge-nats did not exit: {:?}",
                child.wait_with_output()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

#[test]
fn print_config_never_shows_credentials() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bridge-nats.yaml"),
        "bridge_id: site-a\nnats:\n  user: bridge\n  password: file-pa55word\n",
    )
    .unwrap();
    let output = run(command(dir.path())
        .env("PLANTD_BRIDGE_NATS_NATS__PASSWORD", "env-pa55word")
        .env("PLANTD_BRIDGE_NATS_NATS__TOKEN", "t0ken-value")
        .env("PLANTD_BRIDGE_NATS_NATS__NKEY_SEED", "SUAseedseedseed")
        .arg("--print-config"));
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    for secret in ["pa55word", "t0ken-value", "SUAseed"] {
        assert!(!text.contains(secret), "{secret} shown: {text}");
    }
    let config: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(config["bridge_id"], "site-a");
    assert_eq!(
        config["nats"]["user"], "bridge",
        "the user name is no secret"
    );
    for key in ["password", "token", "nkey_seed"] {
        assert_eq!(config["nats"][key], "<redacted>", "{key}");
    }
    assert!(config["health_port"].as_u64().is_some());
    assert_eq!(config["mapping"]["subject_prefix"], "plantd.");
}

#[test]
fn bad_configuration_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[(&str, &str)], &str); 5] = [
        (
            &[("PLANTD_BRIDGE_NATS_JETSTREAM__STREAM", "PLANTD")],
            "jetstream needs a fixed bridge_id",
        ),
        (
            &[("PLANTD_BRIDGE_NATS_NATS__URLL", "nats://x:4222")],
            "unknown configuration key: nats.urll",
        ),
        (
            &[(
                "PLANTD_BRIDGE_NATS_BUSES",
                r#"[{name="metric",frontend="tcp://127.0.0.1:13000",import=["plantd.metric"]}]"#,
            )],
            "must be empty or end with '.'",
        ),
        (
            &[
                ("PLANTD_BRIDGE_NATS_NATS__TOKEN", "t0ken-value"),
                ("PLANTD_BRIDGE_NATS_NATS__CREDENTIALS_FILE", "/x.creds"),
            ],
            "at most one of",
        ),
        (
            &[(
                "PLANTD_BRIDGE_NATS_NATS__URL",
                "nats://bob:hunter2@127.0.0.1:1",
            )],
            "must not carry credentials",
        ),
    ];
    for (env, needle) in cases {
        let mut command = command(dir.path());
        command.envs(env.iter().copied());
        let output = run(&mut command);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{env:?} was accepted: {output:?}");
        assert!(stderr.contains(needle), "{needle:?} not in: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            !stderr.contains("hunter2") && !stderr.contains("t0ken-value"),
            "{stderr}"
        );
    }
}
