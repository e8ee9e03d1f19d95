//! The health of each plantd process, for the overview: the proxy asks every `/healthz` URL in
//! `dashboard.health` (which `plantd up` fills with its own processes) once per poll, all at
//! once, each with a short timeout.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::config::HealthTarget;

/// One process's health as the overview shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProcessHealth {
    /// The process's name.
    pub name: String,
    /// Its `/healthz` URL.
    pub url: String,
    /// `UP`, `DOWN` or `UNREACHABLE`.
    pub status: String,
    /// The checks it reported (`{name: {status, ...}}`), when it answered.
    pub checks: Value,
    /// Why it is unreachable.
    pub error: Option<String>,
}

/// Asks every target's `/healthz`, at once.
pub async fn check_all(
    http: &reqwest::Client,
    targets: &[HealthTarget],
    timeout: Duration,
) -> Vec<ProcessHealth> {
    let checks = targets.iter().map(|t| check(http, t, timeout));
    futures_util::future::join_all(checks).await
}

async fn check(http: &reqwest::Client, target: &HealthTarget, timeout: Duration) -> ProcessHealth {
    let unreachable = |error: String| ProcessHealth {
        name: target.name.clone(),
        url: target.url.clone(),
        status: "UNREACHABLE".into(),
        checks: Value::Null,
        error: Some(error),
    };
    let response = match http.get(&target.url).timeout(timeout).send().await {
        Ok(response) => response,
        Err(e) => return unreachable(e.without_url().to_string()),
    };
    let code = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let status = match body["status"].as_str() {
        Some(status) => status.to_owned(),
        None if code.is_success() => "UP".into(),
        None => "DOWN".into(),
    };
    ProcessHealth {
        name: target.name.clone(),
        url: target.url.clone(),
        status,
        checks: body.get("checks").cloned().unwrap_or(Value::Null),
        error: None,
    }
}
