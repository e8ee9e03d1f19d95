//! `plantd up --only` / `--except`: only the chosen services run (the broker always), and the
//! banner gives the health URL of each one that does.

mod common;

use common::{healthz, isolated, Plantd};

#[test]
fn only_runs_the_named_services_and_the_broker_with_their_health_urls() {
    let dir = tempfile::tempdir().unwrap();
    let mut plantd = Plantd::start(dir.path(), &["--only", "state,echo"], &[]);
    for (name, default) in [("broker", 8081), ("state", 8082), ("echo", 8086)] {
        let url = format!("http://127.0.0.1:{}/healthz", plantd.port(default));
        let row = plantd
            .banner
            .lines()
            .find(|l| l.starts_with(&format!("  {name:<8} ")))
            .unwrap_or_else(|| panic!("no {name} row in:\n{}", plantd.banner));
        assert!(row.contains(&url), "{row}");
        assert_eq!(healthz(plantd.port(default)).map(|(s, _)| s), Some(200));
    }
    for (name, default) in [("identity", 8083), ("logger", 8084), ("metric", 8087)] {
        assert!(
            !plantd
                .banner
                .lines()
                .any(|l| l.starts_with(&format!("  {name:<8} "))),
            "{name} runs:\n{}",
            plantd.banner
        );
        assert!(healthz(plantd.port(default)).is_none(), "{name} answers");
    }
    assert!(plantd.banner.contains("identity is not running"));
    assert_eq!(plantd.plant_ok(&["echo", "only"]).trim(), "only");
    assert!(plantd.interrupt().success());
}

#[test]
fn except_leaves_services_out_but_never_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let output = isolated(env!("CARGO_BIN_EXE_plantd"), dir.path())
        .args(["up", "--except", "broker"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("the broker always runs"), "{stderr}");

    let output = isolated(env!("CARGO_BIN_EXE_plantd"), dir.path())
        .args(["up", "--only", "stat"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("no service \"stat\""));

    let mut plantd = Plantd::start(dir.path(), &["--except", "logger,metric"], &[]);
    for default in [8081, 8082, 8083, 8086] {
        assert_eq!(healthz(plantd.port(default)).map(|(s, _)| s), Some(200));
    }
    for default in [8084, 8087] {
        assert!(healthz(plantd.port(default)).is_none());
    }
    assert!(plantd.interrupt().success());
}
