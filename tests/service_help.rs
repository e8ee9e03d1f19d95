//! Every service binary's `--help` names its own variables (`PLANTD_STATE_HEALTH_PORT`), never the
//! `PLANTD_<SERVICE>_...` placeholder of the flags they share.

mod common;

use common::{isolated, workspace_binary};

#[test]
fn every_service_help_names_its_real_variables() {
    let dir = tempfile::tempdir().unwrap();
    for (binary, package, prefix) in [
        ("plantd-broker", "plantd-broker", "PLANTD_BROKER_"),
        ("plantd-state", "plantd-state", "PLANTD_STATE_"),
        ("plantd-logger", "plantd-logger", "PLANTD_LOGGER_"),
        ("plantd-module-echo", "plantd-module-echo", "PLANTD_ECHO_"),
        (
            "plantd-module-metric",
            "plantd-module-metric",
            "PLANTD_METRIC_",
        ),
        ("plantd-proxy", "plantd-proxy", "PLANTD_PROXY_"),
    ] {
        let output = isolated(workspace_binary(binary, package), dir.path())
            .arg("--help")
            .output()
            .expect("the binary runs");
        assert!(output.status.success(), "{binary} --help: {output:?}");
        let help = String::from_utf8(output.stdout).unwrap();
        for key in ["HEALTH_PORT", "LOG_LEVEL", "LOG_FORMAT", "CONFIG"] {
            assert!(
                help.contains(&format!("{prefix}{key}")),
                "{binary} --help does not name {prefix}{key}:\n{help}"
            );
        }
        assert!(!help.contains("<SERVICE>"), "{binary}:\n{help}");
    }
}
