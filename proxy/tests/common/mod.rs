//! Test harness: a real broker (with `event` and `metric` buses), real services (echo, state,
//! identity, test workers) and the real proxy, each through its own `run`, on free loopback
//! ports in one tokio runtime; the test thread speaks HTTP with a blocking `reqwest` client.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use plantd_broker::BrokerConfig;
use plantd_proxy::{BusEndpoints, ProxyConfig, ProxyError};
use plantd_worker_sdk::auth::AuthConfig;
use plantd_worker_sdk::testing::{free_endpoint, free_port, wait_until};
use plantd_worker_sdk::{Client, Frames, HandlerError, Shutdown, Worker, WorkerBuilder};
use serde_json::{json, Value};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

pub use plantd_worker_sdk::testing::WAIT_DEADLINE;

pub const ECHO: &str = "org.plantd.module.Echo";
pub const STATE: &str = "org.plantd.State";
pub const IDENTITY: &str = "org.plantd.Identity";

/// A broker, the services a test starts, and the proxy.
pub struct System {
    pub rt: Runtime,
    pub dir: tempfile::TempDir,
    pub endpoint: String,
    /// `event` then `metric`.
    pub buses: Vec<BusEndpoints>,
    /// Stops everything but the proxy.
    stop: Shutdown,
    proxy_stop: Shutdown,
    proxy_task: Option<JoinHandle<Result<(), ProxyError>>>,
    /// The proxy's configuration; `start_proxy` runs it.
    pub proxy: ProxyConfig,
    pub identity: Option<plantd_identity::IdentityConfig>,
    pub http: reqwest::blocking::Client,
}

impl System {
    /// A broker with default test settings.
    pub fn new() -> System {
        System::with_broker(|_| {})
    }

    /// A broker whose configuration `tweak` may change; nothing else runs yet.
    pub fn with_broker(tweak: impl FnOnce(&mut BrokerConfig)) -> System {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let endpoint = free_endpoint();
        let buses: Vec<BusEndpoints> = ["event", "metric"]
            .iter()
            .map(|name| BusEndpoints {
                name: (*name).into(),
                frontend: free_endpoint(),
                backend: free_endpoint(),
            })
            .collect();
        let mut broker = BrokerConfig {
            endpoint: endpoint.clone(),
            health_host: "127.0.0.1".into(),
            health_port: free_port(),
            heartbeat_interval_ms: 250,
            bus: plantd_broker::bus::BusSettings {
                buses: buses
                    .iter()
                    .map(|b| plantd_broker::bus::BusConfig {
                        name: b.name.clone(),
                        frontend: b.frontend.clone(),
                        backend: b.backend.clone(),
                        capture: None,
                    })
                    .collect(),
                ..plantd_broker::bus::BusSettings::default()
            },
            ..BrokerConfig::default()
        };
        tweak(&mut broker);
        let stop = Shutdown::new();
        let broker_stop = stop.clone();
        rt.spawn(async move {
            plantd_broker::run(broker, broker_stop)
                .await
                .expect("broker runs");
        });
        let proxy = ProxyConfig {
            broker_endpoint: endpoint.clone(),
            http_host: "127.0.0.1".into(),
            http_port: free_port(),
            health_host: "127.0.0.1".into(),
            health_port: free_port(),
            buses: buses.clone(),
            auth: AuthConfig::off(),
            ..ProxyConfig::default()
        };
        let http = reqwest::blocking::Client::builder()
            .timeout(WAIT_DEADLINE)
            .build()
            .unwrap();
        System {
            rt,
            dir,
            endpoint,
            buses,
            stop,
            proxy_stop: Shutdown::new(),
            proxy_task: None,
            proxy,
            identity: None,
            http,
        }
    }

    pub fn bus(&self, name: &str) -> &BusEndpoints {
        self.buses.iter().find(|b| b.name == name).unwrap()
    }

    /// Token checks against this system's identity, revocations from its event bus.
    pub fn auth(&self) -> AuthConfig {
        AuthConfig {
            event_endpoint: self.bus("event").backend.clone(),
            ..AuthConfig::default()
        }
    }

    /// A blocking MDP client of the broker.
    pub fn client(&self) -> Client {
        Client::connect(&self.endpoint)
            .unwrap()
            .with_timeout(Duration::from_secs(10))
    }

    /// Waits until `service` answers `body` through the broker (any reply counts).
    pub fn wait_for_service(&self, service: &str, body: Vec<Vec<u8>>) {
        let client = Client::connect(&self.endpoint)
            .unwrap()
            .with_timeout(Duration::from_millis(500));
        wait_until(&format!("{service} to answer"), || {
            client.request(service, body.clone()).is_ok()
        });
    }

    /// Starts the echo module and waits until it answers.
    pub fn start_echo(&self) {
        let config = plantd_module_echo::EchoConfig {
            broker_endpoint: self.endpoint.clone(),
            health_host: "127.0.0.1".into(),
            health_port: free_port(),
            concurrency: 2,
            heartbeat_interval_ms: 250,
            ..Default::default()
        };
        let stop = self.stop.clone();
        self.rt.spawn(async move {
            plantd_module_echo::run(config, stop)
                .await
                .expect("echo runs");
        });
        self.wait_for_service(ECHO, vec![b"ping".to_vec()]);
    }

    /// Starts the state service with `auth` and waits until it answers.
    pub fn start_state(&self, auth: AuthConfig) {
        let config = plantd_state::StateConfig {
            db: self.dir.path().join("state.db"),
            broker_endpoint: self.endpoint.clone(),
            heartbeat_ms: 250,
            health_host: "127.0.0.1".into(),
            health_port: free_port(),
            bus_endpoint: String::new(),
            auth,
            ..Default::default()
        };
        let stop = self.stop.clone();
        self.rt.spawn(async move {
            plantd_state::run(config, stop).await.expect("state runs");
        });
        self.wait_for_service(STATE, vec![b"list-scopes".to_vec(), b"{}".to_vec()]);
    }

    /// Starts identity and waits until it answers.
    pub fn start_identity(&mut self) {
        let config = plantd_identity::IdentityConfig {
            db: self.dir.path().join("identity.db"),
            broker_endpoint: self.endpoint.clone(),
            heartbeat_ms: 250,
            health_host: "127.0.0.1".into(),
            health_port: free_port(),
            event_endpoint: self.bus("event").frontend.clone(),
            rate_limit: plantd_identity::config::RateLimitConfig {
                per_minute: 100_000,
                burst: 10_000,
            },
            ..Default::default()
        };
        self.identity = Some(config.clone());
        let stop = self.stop.clone();
        self.rt.spawn(async move {
            plantd_identity::run(config, stop)
                .await
                .expect("identity runs");
        });
        self.wait_for_service(
            IDENTITY,
            vec![b"health".to_vec(), b"check".to_vec(), b"{}".to_vec()],
        );
    }

    /// Runs a test worker built by `builder` (its endpoint and heartbeat are set here) and
    /// waits until the broker lists it.
    pub fn start_worker(&self, builder: WorkerBuilder) {
        let worker = builder
            .endpoint(self.endpoint.clone())
            .heartbeat(Duration::from_millis(250))
            .build()
            .unwrap();
        let service = worker.service().to_owned();
        let stop = self.stop.clone();
        self.rt
            .spawn(async move { worker.run(stop).await.expect("worker runs") });
        let client = self.client();
        wait_until(&format!("a worker of {service}"), || {
            client.service_available(&service).unwrap_or(false)
        });
    }

    /// Runs a worker of `test.Slow` that echoes each request only once let go: the receiver
    /// tells when it took a request, a send on the sender lets one request go.
    pub fn start_slow_worker(&self) -> (mpsc::Receiver<()>, mpsc::Sender<()>) {
        let (started_tx, started_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let (started_tx, go_rx) = (Mutex::new(started_tx), Mutex::new(go_rx));
        self.start_worker(Worker::builder("test.Slow").handler(move |body: Frames| {
            // The test may have stopped listening by now.
            let _ = started_tx.lock().unwrap().send(());
            go_rx
                .lock()
                .unwrap()
                .recv()
                .map_err(|_| HandlerError::new("test gone"))?;
            Ok(body)
        }));
        (started_rx, go_tx)
    }

    /// Starts the proxy with `self.proxy` and waits until its `/healthz` is UP (it has reached
    /// the broker).
    pub fn start_proxy(&mut self) {
        assert!(self.proxy_task.is_none(), "proxy already running");
        self.proxy_stop = Shutdown::new();
        let (config, stop) = (self.proxy.clone(), self.proxy_stop.clone());
        self.proxy_task = Some(self.rt.spawn(plantd_proxy::run(config, stop)));
        let url = self.url("/healthz");
        wait_until("the proxy to be UP", || {
            self.http
                .get(&url)
                .send()
                .is_ok_and(|r| r.status().as_u16() == 200)
        });
    }

    /// Stops the proxy and returns what `run` returned.
    pub fn stop_proxy(&mut self) -> Result<(), ProxyError> {
        self.proxy_stop.cancel();
        let task = self.proxy_task.take().expect("proxy running");
        self.rt.block_on(task).expect("proxy task")
    }

    /// The proxy's shutdown signal (to stop it from another thread).
    pub fn proxy_shutdown(&self) -> Shutdown {
        self.proxy_stop.clone()
    }

    /// Waits for the proxy task to end (after its shutdown was cancelled elsewhere).
    pub fn join_proxy(&mut self) -> Result<(), ProxyError> {
        let task = self.proxy_task.take().expect("proxy running");
        self.rt.block_on(task).expect("proxy task")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.proxy.http_port)
    }

    pub fn health_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.proxy.health_port)
    }

    /// POSTs `body` (raw bytes) with an optional bearer token; the status and the JSON body.
    pub fn post_raw(&self, path: &str, body: Vec<u8>, token: Option<&str>) -> (u16, Value) {
        let mut request = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().expect("POST");
        status_and_json(response)
    }

    /// POSTs JSON; the status and the JSON body.
    pub fn post(&self, path: &str, body: Value, token: Option<&str>) -> (u16, Value) {
        self.post_raw(path, body.to_string().into_bytes(), token)
    }

    /// GETs a JSON route.
    pub fn get(&self, path: &str) -> (u16, Value) {
        status_and_json(self.http.get(self.url(path)).send().expect("GET"))
    }

    /// Logs in through the proxy; the access token.
    pub fn login(&self, username: &str, password: &str) -> String {
        let (status, reply) = self.post(
            "/api/v1/services/org.plantd.Identity/auth/login",
            json!({"identifier": username, "password": password}),
            None,
        );
        assert_eq!(status, 200, "login: {reply}");
        reply["data"]["access_token"].as_str().unwrap().to_owned()
    }

    /// The bootstrap admin's access token, through the proxy.
    pub fn admin_token(&self) -> String {
        let config = self.identity.as_ref().expect("identity started");
        let path = plantd_identity::admin_password_path(config);
        let password = std::fs::read_to_string(path).unwrap();
        self.login("admin", password.trim_end())
    }

    /// A new user holding a role with `permissions` (created through the proxy as `admin`);
    /// their access token.
    pub fn user_with(&self, admin: &str, username: &str, permissions: &[&str]) -> String {
        let identity = |category: &str, op: &str, body: Value| {
            let (status, reply) = self.post(
                &format!("/api/v1/services/org.plantd.Identity/{category}/{op}"),
                body,
                Some(admin),
            );
            assert_eq!(status, 200, "{category}/{op}: {reply}");
            reply["data"].clone()
        };
        let password = "a long enough passphrase";
        let user = identity(
            "user",
            "create",
            json!({"username": username, "email": format!("{username}@example.com"), "password": password}),
        )["user"]["id"]
            .as_i64()
            .unwrap();
        if !permissions.is_empty() {
            let role = identity(
                "role",
                "create",
                json!({"name": format!("{username}-role"), "permissions": permissions}),
            )["role"]["id"]
                .as_i64()
                .unwrap();
            identity(
                "user",
                "assign_role",
                json!({"user_id": user, "role_id": role}),
            );
        }
        self.login(username, password)
    }
}

impl Drop for System {
    fn drop(&mut self) {
        self.proxy_stop.cancel();
        if let Some(task) = self.proxy_task.take() {
            let _ = self.rt.block_on(task);
        }
        self.stop.cancel();
    }
}

/// The status and JSON body of a response (panics if the body is not JSON).
pub fn status_and_json(response: reqwest::blocking::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().expect("body");
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {text:?}"));
    (status, value)
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub event: String,
    pub data: Value,
}

/// Reads server-sent events one at a time from a streaming response.
pub struct SseReader {
    lines: std::io::Lines<BufReader<Box<dyn Read + Send>>>,
}

impl SseReader {
    pub fn new(response: reqwest::blocking::Response) -> SseReader {
        let reader: Box<dyn Read + Send> = Box::new(response);
        SseReader {
            lines: BufReader::new(reader).lines(),
        }
    }

    /// The next event (comments and keep-alives skipped); `None` at the end of the stream.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        let (mut event, mut data) = (String::from("message"), String::new());
        let mut seen = false;
        loop {
            let line = match self.lines.next() {
                Some(Ok(line)) => line,
                _ => return None,
            };
            if line.is_empty() {
                if seen {
                    let data = serde_json::from_str(&data)
                        .unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {data:?}"));
                    return Some(SseEvent { event, data });
                }
                continue;
            }
            if let Some(value) = line.strip_prefix("event:") {
                event = value.trim().to_owned();
                seen = true;
            } else if let Some(value) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(value.strip_prefix(' ').unwrap_or(value));
                seen = true;
            }
        }
    }
}
