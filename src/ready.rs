//! When `plantd up` may say it is up: once every service's `/healthz` answers `200` (UP). A
//! service answers only after everything it binds is bound (the broker serves HTTP only once its
//! MDP socket and buses are bound) and while its checks pass (a worker is registered with the
//! broker, a database is writable), so a `200` from each is the readiness signal there is.

use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one `/healthz` request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between two rounds of polling.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A health endpoint to wait for.
#[derive(Clone, Debug)]
pub struct Target {
    /// The service (`broker`, `state`, ...).
    pub name: &'static str,
    /// Where its `/healthz` is reached from this host.
    pub addr: SocketAddr,
}

/// Not every service came up in time.
#[derive(Debug, Error)]
#[error("not up after {}s: {}", .within.as_secs(), describe(.waiting))]
pub struct NotReady {
    /// How long we waited.
    pub within: Duration,
    /// Each service not UP, with what its `/healthz` last said.
    pub waiting: Vec<(&'static str, SocketAddr, String)>,
}

fn describe(waiting: &[(&'static str, SocketAddr, String)]) -> String {
    waiting
        .iter()
        .map(|(name, addr, last)| format!("{name} (http://{addr}/healthz: {last})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Polls every target's `/healthz` until each has answered `200` once, or `within` has passed.
pub async fn wait_until_up(targets: &[Target], within: Duration) -> Result<(), NotReady> {
    let deadline = tokio::time::Instant::now() + within;
    let mut last: Vec<Option<String>> = vec![Some("not polled yet".into()); targets.len()];
    loop {
        for (target, last) in targets.iter().zip(last.iter_mut()) {
            if last.is_some() {
                *last = match healthz_status(target.addr).await {
                    Ok(200) => None,
                    Ok(status) => Some(format!("status {status}")),
                    Err(e) => Some(e),
                };
            }
        }
        if last.iter().all(Option::is_none) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            let waiting = targets
                .iter()
                .zip(last)
                .filter_map(|(t, last)| last.map(|last| (t.name, t.addr, last)))
                .collect();
            return Err(NotReady { within, waiting });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The HTTP status `GET /healthz` gets at `addr`, or why there was none.
pub async fn healthz_status(addr: SocketAddr) -> Result<u16, String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        // The status line is all we need; `Connection: close` ends the response.
        let mut head = Vec::new();
        stream.read_to_end(&mut head).await?;
        Ok::<_, std::io::Error>(head)
    };
    let head = match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(Ok(head)) => head,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("no answer".into()),
    };
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| "not an HTTP response".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_port_nobody_serves_is_reported_with_its_address() {
        // Bound but never accepting or answering: the connection is made, no response comes.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap();
        let error = wait_until_up(
            &[Target {
                name: "state",
                addr,
            }],
            Duration::from_millis(100),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            error.starts_with("not up after 0s: state (http://"),
            "{error}"
        );
        assert!(error.contains(&addr.to_string()), "{error}");
    }
}
