//! `plant` with CURVE: `plant keys generate`, `--server-key`/`--key`, the `curve.json` profile
//! `plantd up --secure` writes, and the one-line error a refused key gets; against a CURVE broker
//! and a CURVE echo module started in this process.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use plantd_broker::security::CurveSettings;
use plantd_broker::BrokerConfig;
use plantd_module_echo::EchoConfig;
use plantd_worker_sdk::client::Client;
use plantd_worker_sdk::curve::{read_public_key, CurveConfig, CurveProfiles, KeyPair};
use plantd_worker_sdk::testing::{free_endpoint, free_port, wait_until};
use plantd_worker_sdk::Shutdown;

fn plant(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_plant"))
        .args(args)
        .env("XDG_CONFIG_HOME", home)
        .env_remove("PLANTD_CLIENT_OUTPUT")
        .env_remove("PLANTD_CLIENT_SERVER_KEY")
        .env_remove("PLANTD_CLIENT_KEY")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn keys_talk_to_a_curve_broker_by_flag_or_profile_and_a_refused_key_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("config");
    let keys = |name: &str| dir.path().join(name);

    // plant keys generate: NAME.key (0600) and NAME.pub, the public key on stdout, no overwrite.
    let mut public = std::collections::HashMap::new();
    for name in ["broker", "echo", "cli", "stranger"] {
        let out = plant(
            &home,
            &["keys", "generate", "--out", keys(name).to_str().unwrap()],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let printed = text(&out.stdout).trim().to_owned();
        assert_eq!(
            read_public_key(&keys(&format!("{name}.pub")))
                .unwrap()
                .to_z85(),
            printed
        );
        public.insert(name, printed);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(keys("cli.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = plant(
        &home,
        &["keys", "generate", "--out", keys("cli").to_str().unwrap()],
    );
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(
        text(&again.stderr).lines().count(),
        1,
        "{}",
        text(&again.stderr)
    );

    let allow = dir.path().join("authorized_keys");
    std::fs::write(
        &allow,
        format!(
            "{} echo register=org.plantd.module.Echo\n{} cli call=*\n",
            public["echo"], public["cli"]
        ),
    )
    .unwrap();
    let endpoint = free_endpoint();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let shutdown = Shutdown::new();
    runtime.spawn(plantd_broker::run(
        BrokerConfig {
            endpoint: endpoint.clone(),
            health_host: "127.0.0.1".into(),
            health_port: free_port(),
            bus: plantd_broker::bus::BusSettings::disabled(),
            curve: CurveSettings {
                secret_key_file: Some(keys("broker.key")),
                authorized_keys: Some(allow),
                reload_interval_ms: 0,
            },
            ..BrokerConfig::default()
        },
        shutdown.clone(),
    ));
    runtime.spawn(plantd_module_echo::run(
        EchoConfig {
            broker_endpoint: endpoint.clone(),
            health_host: "127.0.0.1".into(),
            health_port: free_port(),
            curve: CurveConfig {
                secret_key_file: Some(keys("echo.key")),
                server_key: Some(public["broker"].clone()),
                server_key_file: None,
            },
            ..EchoConfig::default()
        },
        shutdown.clone(),
    ));
    let broker_public = read_public_key(&keys("broker.pub")).unwrap();
    let probe = Client::connect_with(
        &endpoint,
        Some(plantd_worker_sdk::curve::ClientCurve::new(
            KeyPair::read(&keys("cli.key")).unwrap(),
            broker_public,
        )),
    )
    .unwrap()
    .with_timeout(Duration::from_secs(5));
    wait_until("the CURVE echo module is registered", || {
        probe
            .service_available("org.plantd.module.Echo")
            .unwrap_or(false)
    });

    // By flag: --server-key as a file (or Z85 text) and --key.
    for server_key in [
        keys("broker.pub").display().to_string(),
        public["broker"].clone(),
    ] {
        let out = plant(
            &home,
            &[
                "--endpoint",
                &endpoint,
                "--server-key",
                &server_key,
                "--key",
                keys("cli.key").to_str().unwrap(),
                "echo",
                "hello",
            ],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout).trim(), "hello");
    }

    // A key the broker does not know: one line, naming the endpoint, no timeout.
    let out = plant(
        &home,
        &[
            "--endpoint",
            &endpoint,
            "--server-key",
            &public["broker"],
            "--key",
            keys("stranger.key").to_str().unwrap(),
            "--timeout",
            "20s",
            "services",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("authentication failed") && err.contains(&endpoint),
        "{err}"
    );

    // Without keys against a CURVE broker: a security mismatch, said so.
    let out = plant(
        &home,
        &["--endpoint", &endpoint, "--timeout", "20s", "services"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("CURVE"), "{}", text(&out.stderr));

    // By profile: curve.json for that endpoint, as `plantd up --secure` writes it.
    let mut profiles = CurveProfiles::default();
    profiles.endpoints.insert(
        endpoint.clone(),
        CurveConfig {
            secret_key_file: Some(keys("cli.key")),
            server_key: None,
            server_key_file: Some(keys("broker.pub")),
        },
    );
    profiles.save(&home.join("plantd/curve.json")).unwrap();
    let out = plant(&home, &["--endpoint", &endpoint, "echo", "profile"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "profile");
    shutdown.cancel();
}
