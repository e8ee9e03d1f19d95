//! Every metric name the alert rules (`deploy/prometheus/alerts.yml`) and the Grafana dashboard
//! (`deploy/grafana/plantd.json`) query is one the running services really export: checked
//! against a live `/metrics` of every service under `plantd up`, after the traffic that makes
//! per-label series appear.

mod common;

use std::collections::BTreeSet;

use common::ops;
use common::Plantd;

/// The `plantd_*` names in a PromQL text.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("plantd_") {
        let start = i + at;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(text.len(), |n| start + n);
        if boundary {
            names.insert(text[start..end].to_owned());
        }
        i = end;
    }
    names
}

/// The sample names in a Prometheus text exposition.
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_metric_in_the_alert_rules_and_the_dashboard_is_exported() {
    let rules = std::fs::read_to_string(ops::repo().join("deploy/prometheus/alerts.yml")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(ops::repo().join("deploy/grafana/plantd.json")).unwrap(),
    )
    .unwrap();
    let mut queries = String::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            queries.push_str(target["expr"].as_str().unwrap());
            queries.push('\n');
        }
    }
    let used: BTreeSet<String> = metric_names(&rules)
        .into_iter()
        .chain(metric_names(&queries))
        .collect();
    assert!(used.len() > 15, "{used:?}");

    let dir = tempfile::tempdir().unwrap();
    let mut plantd = Plantd::start(dir.path(), &[], &[]);
    // Traffic: the echo worker, state reads and writes (and their commits), a login.
    plantd.plant_ok(&["echo", "metrics"]);
    plantd.plant_ok(&["state", "create-scope", "--scope", "ops.metrics"]);
    plantd.plant_ok(&["state", "set", "--scope", "ops.metrics", "k", "1"]);
    plantd.plant_ok(&["state", "get", "--scope", "ops.metrics", "k"]);
    plantd.plant_ok(&["auth", "whoami"]);
    let mut live = BTreeSet::new();
    for default in [8081, 8082, 8083, 8084, 8086, 8087] {
        let url = format!("http://127.0.0.1:{}/metrics", plantd.port(default));
        let text = reqwest::blocking::get(&url).unwrap().text().unwrap();
        live.extend(exported(&text));
    }
    // The proxy exports its own (issue 14); none of its metrics is queried here yet.
    let missing: Vec<&String> = used.iter().filter(|n| !live.contains(*n)).collect();
    assert!(missing.is_empty(), "queried but not exported: {missing:?}");
    assert!(plantd.interrupt().success());
}
