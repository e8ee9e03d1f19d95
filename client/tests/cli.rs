//! The `plant` binary against a real broker and echo module started in this process, and against
//! a broker in a child process that is killed mid-request.

use std::collections::HashMap;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use plantd_broker::BrokerConfig;
use plantd_module_echo::EchoConfig;
use plantd_worker_sdk::client::Client;
use plantd_worker_sdk::testing::{free_endpoint, free_port, wait_until, WAIT_DEADLINE};
use plantd_worker_sdk::{Frames, HandlerError, Shutdown, Worker};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(20);
const ECHO: &str = "org.plantd.module.Echo";

/// One broker (short queue TTL, so unknown services fail fast) and one echo module, shared by
/// every test and kept until the process ends.
struct System {
    endpoint: String,
    _runtime: tokio::runtime::Runtime,
}

fn system() -> &'static System {
    static SYSTEM: OnceLock<System> = OnceLock::new();
    SYSTEM.get_or_init(|| {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let endpoint = free_endpoint();
        let shutdown = Shutdown::new();
        runtime.spawn(plantd_broker::run(
            BrokerConfig {
                endpoint: endpoint.clone(),
                health_host: "127.0.0.1".into(),
                health_port: free_port(),
                heartbeat_interval_ms: 100,
                heartbeat_liveness: 5,
                queue_ttl_ms: 300,
                // Several brokers run side by side in tests: no buses on the fixed default ports.
                bus: plantd_broker::bus::BusSettings::disabled(),
                ..BrokerConfig::default()
            },
            shutdown.clone(),
        ));
        runtime.spawn(plantd_module_echo::run(
            EchoConfig {
                broker_endpoint: endpoint.clone(),
                health_host: "127.0.0.1".into(),
                health_port: free_port(),
                heartbeat_interval_ms: 100,
                heartbeat_liveness: 5,
                ..EchoConfig::default()
            },
            shutdown,
        ));
        let client = Client::connect(&endpoint)
            .unwrap()
            .with_timeout(Duration::from_millis(500));
        let deadline = Instant::now() + DEADLINE;
        while !client.service_available(ECHO).unwrap_or(false) {
            assert!(Instant::now() < deadline, "echo module never registered");
            std::thread::sleep(Duration::from_millis(10));
        }
        System {
            endpoint,
            _runtime: runtime,
        }
    })
}

/// Runs `plant --endpoint <ours> args...`.
fn plant(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_plant"))
        .arg("--endpoint")
        .arg(&system().endpoint)
        .args(args)
        .env_remove("PLANTD_CLIENT_OUTPUT")
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn succeeded(output: &Output) -> String {
    assert!(
        output.status.success(),
        "plant failed: {}\n{}",
        output.status,
        stderr(output)
    );
    stdout(output)
}

/// Asserts a failure with exit code 1 and one `error:` line on stderr; returns that line.
fn failed(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(1), "stdout: {}", stdout(output));
    let err = stderr(output);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got {err:?}");
    assert!(lines[0].starts_with("error: "), "{err:?}");
    lines[0].to_owned()
}

fn json(output: &Output) -> Value {
    serde_json::from_str(&succeeded(output)).expect("stdout is JSON")
}

#[test]
fn version_prints_the_crate_version() {
    let output = Command::new(env!("CARGO_BIN_EXE_plant"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        succeeded(&output).trim(),
        format!("plant {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn echo_prints_the_message_or_the_json_payload() {
    assert_eq!(succeeded(&plant(&["echo", "hello there"])), "hello there\n");
    let payload = json(&plant(&["--output", "json", "echo", "hi"]));
    assert_eq!(payload["message"], "hi");
    assert_eq!(payload["service"], "org.plantd.Client");
}

#[test]
fn request_sends_text_json_and_file_frames() {
    assert_eq!(
        succeeded(&plant(&["request", ECHO, "a", "", "b"])),
        "a\n\nb\n"
    );

    let reply = json(&plant(&[
        "request",
        ECHO,
        "--json",
        r#"{"k":1}"#,
        "[2]",
        "-o",
        "json",
    ]));
    assert_eq!(reply, serde_json::json!([{"k": 1}, [2]]));
    // Each --json argument is a JSON value: a string goes as its text, the rest as compact JSON.
    assert_eq!(
        succeeded(&plant(&[
            "request",
            ECHO,
            "--json",
            r#""state-get""#,
            r#"{ "service": "demo", "key": "k" }"#,
            "5"
        ])),
        "state-get\n{\"service\":\"demo\",\"key\":\"k\"}\n5\n"
    );

    let file = std::env::temp_dir().join(format!("plant-cli-test-{}.bin", std::process::id()));
    std::fs::write(&file, b"\xff\x00binary").unwrap();
    let reply = json(&plant(&[
        "request",
        ECHO,
        "text",
        "--file",
        file.to_str().unwrap(),
        "--output",
        "json",
    ]));
    std::fs::remove_file(&file).unwrap();
    assert_eq!(reply[0], "text");
    assert!(reply[1]["base64"].is_string());

    let error = failed(&plant(&["request", ECHO, "--json", "not json"]));
    assert!(error.contains("frame 1 is not valid JSON"), "{error}");
}

#[test]
fn services_service_workers_and_broker_describe_the_system() {
    let text = succeeded(&plant(&["services"]));
    assert!(text.starts_with("SERVICE"), "{text}");
    let header: Vec<&str> = text.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["SERVICE", "WORKERS", "IDLE", "QUEUED", "REQUESTS", "ERRORS"]
    );
    assert!(text.contains(ECHO), "{text}");
    let services = json(&plant(&["services", "-o", "json"]));
    let echo = services
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == ECHO)
        .expect("echo listed");
    assert_eq!(echo["workers"], 1);

    assert_eq!(
        succeeded(&plant(&["service", ECHO])),
        format!("{ECHO}: available\n")
    );
    let status = json(&plant(&["service", ECHO, "-o", "json"]));
    assert_eq!(status["available"], true);

    let text = succeeded(&plant(&["workers", ECHO]));
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.starts_with("ID"), "{text}");
    let workers = json(&plant(&["workers", ECHO, "-o", "json"]));
    assert_eq!(workers[0]["service"], ECHO);
    assert_eq!(workers[0]["dialect"], "0.2");

    let text = succeeded(&plant(&["broker"]));
    assert!(text.starts_with("version"), "{text}");
    let info = json(&plant(&["broker", "--output", "json"]));
    assert!(info["version"].is_string());
    assert!(info["workers"].as_u64().unwrap() >= 1);
}

#[test]
fn unknown_services_exit_non_zero_with_a_message() {
    let nobody = "error: no such service: org.plantd.Nobody (no worker is registered for it)";
    assert_eq!(
        failed(&plant(&["request", "org.plantd.Nobody", "x"])),
        nobody
    );

    let output = plant(&["service", "org.plantd.Nobody"]);
    assert_eq!(failed(&output), nobody);
    assert_eq!(stdout(&output), "");

    assert_eq!(failed(&plant(&["workers", "org.plantd.Nobody"])), nobody);
}

#[test]
fn a_request_to_a_missing_service_is_reported_after_the_cli_timeout_not_the_brokers() {
    // This broker keeps a request for a service without workers queued for its default 30 s;
    // after its own 500 ms, plant asks mmi.service and says what is wrong.
    let endpoint = free_endpoint();
    let _broker = KillableBroker::start(&endpoint);
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_plant"))
        .args(["--endpoint", &endpoint, "--timeout", "500ms"])
        .args(["request", "org.plantd.Nobody", "x"])
        .output()
        .unwrap();
    // The request is still queued at the broker: plant says so rather than that it failed.
    assert_eq!(
        failed(&output),
        "error: no such service: org.plantd.Nobody (no worker is registered for it; the request \
         stays queued at the broker until its queue_ttl_ms, 30 s by default, and a worker \
         registering meanwhile still carries it out)"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}: the broker's queue time, not the CLI's",
        started.elapsed()
    );
}

#[test]
fn an_unreachable_broker_is_reported_quickly() {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_plant"))
        .args([
            "--endpoint",
            &free_endpoint(),
            "--timeout",
            "300ms",
            "echo",
            "hi",
        ])
        .output()
        .unwrap();
    let error = failed(&output);
    assert!(error.contains("unreachable"), "{error}");
    assert!(started.elapsed() < DEADLINE);

    let output = Command::new(env!("CARGO_BIN_EXE_plant"))
        .args([
            "--endpoint",
            &free_endpoint(),
            "--timeout",
            "200ms",
            "services",
        ])
        .output()
        .unwrap();
    assert!(failed(&output).contains("unreachable"));
}

#[test]
fn bad_arguments_are_rejected() {
    let output = Command::new(env!("CARGO_BIN_EXE_plant"))
        .args(["--timeout", "soon", "services"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let output = Command::new(env!("CARGO_BIN_EXE_plant"))
        .args(["--endpoint", "nonsense", "services"])
        .output()
        .unwrap();
    assert!(failed(&output).contains("invalid broker endpoint"));
}

/// Set in the child process: the endpoint its broker binds.
const CHILD_ENDPOINT: &str = "PLANTD_TEST_BROKER_CHILD_ENDPOINT";

/// Not a test: the body of the broker child process that [`KillableBroker`] starts (this test
/// binary, run with a filter selecting only this function). Without the variable it does nothing.
#[test]
#[ignore = "runs only as the broker child process of the other tests"]
fn broker_child_process() {
    let Ok(endpoint) = std::env::var(CHILD_ENDPOINT) else {
        return;
    };
    let config = BrokerConfig {
        endpoint,
        health_host: "127.0.0.1".into(),
        health_port: free_port(),
        heartbeat_interval_ms: 100,
        heartbeat_liveness: 5,
        bus: plantd_broker::bus::BusSettings::disabled(),
        ..BrokerConfig::default()
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // Runs until the parent kills this process.
    runtime
        .block_on(plantd_broker::run(config, Shutdown::new()))
        .unwrap();
}

/// A broker in a child process, killed with SIGKILL (no goodbye replies: its connections just
/// drop) by [`kill`](Self::kill) or on drop.
struct KillableBroker(Child);

impl KillableBroker {
    /// Starts a broker on `endpoint` and waits until it answers MMI.
    fn start(endpoint: &str) -> KillableBroker {
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["broker_child_process", "--exact", "--ignored", "--quiet"])
            .env(CHILD_ENDPOINT, endpoint)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start the broker child process");
        let mut broker = KillableBroker(child);
        let probe = Client::connect(endpoint)
            .unwrap()
            .with_timeout(Duration::from_millis(200));
        wait_until("the broker answers MMI", || {
            assert!(broker.0.try_wait().unwrap().is_none(), "broker exited");
            probe.broker_info().is_ok()
        });
        broker
    }

    /// SIGKILL, and wait until the process is gone.
    fn kill(mut self) {
        self.kill_now();
    }

    fn kill_now(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for KillableBroker {
    fn drop(&mut self) {
        self.kill_now();
    }
}

/// A stand-in `org.plantd.State` worker that holds the first request of each operation until
/// [`release`](Self::release) (so it is in flight when the broker dies) and answers later ones
/// at once with `{"value": "v"}`.
#[derive(Clone, Default)]
struct HoldingState {
    state: Arc<(Mutex<Holding>, Condvar)>,
}

#[derive(Default)]
struct Holding {
    /// Requests seen, by operation.
    arrivals: HashMap<String, usize>,
    released: bool,
}

impl HoldingState {
    fn handler(&self) -> impl Fn(Frames) -> Result<Frames, HandlerError> {
        let this = self.clone();
        move |body| {
            let operation = String::from_utf8_lossy(&body[0]).into_owned();
            let (lock, changed) = &*this.state;
            let mut state = lock.lock().unwrap();
            let arrivals = state.arrivals.entry(operation).or_default();
            *arrivals += 1;
            let first = *arrivals == 1;
            changed.notify_all();
            if first {
                let _ = changed
                    .wait_timeout_while(state, WAIT_DEADLINE, |s| !s.released)
                    .unwrap();
            }
            let reply = json!({"success": true, "data": {"value": "v"}});
            Ok(vec![reply.to_string().into_bytes()])
        }
    }

    fn arrivals(&self, operation: &str) -> usize {
        let state = self.state.0.lock().unwrap();
        state.arrivals.get(operation).copied().unwrap_or(0)
    }

    fn release(&self) {
        self.state.0.lock().unwrap().released = true;
        self.state.1.notify_all();
    }
}

/// Starts `plant --endpoint <endpoint> args...` without waiting for it.
fn spawn_plant(endpoint: &str, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_plant"))
        .arg("--endpoint")
        .arg(endpoint)
        .args(args)
        .env_remove("PLANTD_CLIENT_OUTPUT")
        .env_remove("PLANTD_CLIENT_RETRIES")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `plant` to exit: well before its 60 s timeout, so only the broker's death (or the
/// reply after its restart) can have ended it.
fn finish(mut child: Child) -> Output {
    wait_until("plant exits", || child.try_wait().unwrap().is_some());
    child.wait_with_output().unwrap()
}

#[test]
fn a_read_survives_a_broker_restart_and_a_write_is_not_resent() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let endpoint = free_endpoint();
    let broker = KillableBroker::start(&endpoint);
    let state = HoldingState::default();
    let worker = Worker::builder("org.plantd.State")
        .endpoint(&endpoint)
        .heartbeat(Duration::from_millis(100))
        .liveness(5)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .handler(state.handler())
        .build()
        .unwrap();
    let shutdown = Shutdown::new();
    let worker = runtime.spawn(worker.run(shutdown.clone()));
    let probe = Client::connect(&endpoint)
        .unwrap()
        .with_timeout(Duration::from_millis(500));
    wait_until("the state worker is registered", || {
        probe.service_available("org.plantd.State").unwrap_or(false)
    });

    // A read held by the worker when the broker dies is resent and answered after the restart.
    let get = spawn_plant(&endpoint, &["--timeout", "60s", "state", "get", "k"]);
    wait_until("the get reached the worker", || {
        state.arrivals("state-get") == 1
    });
    broker.kill();
    let broker = KillableBroker::start(&endpoint);
    let output = finish(get);
    assert!(output.status.success(), "{}", stderr(&output));
    let data: Value = serde_json::from_slice(&output.stdout).expect("stdout is JSON");
    assert_eq!(data["value"], "v");
    assert_eq!(
        state.arrivals("state-get"),
        2,
        "sent twice: once per broker"
    );

    // A write held when the broker dies is not resent: plant reports the disconnect and exits.
    let set = spawn_plant(&endpoint, &["--timeout", "60s", "state", "set", "k", "w"]);
    wait_until("the set reached the worker", || {
        state.arrivals("state-set") == 1
    });
    broker.kill();
    let error = failed(&finish(set));
    assert!(error.contains("broker disconnected"), "{error}");
    assert!(
        error.contains("may or may not have been carried out"),
        "{error}"
    );
    let _broker = KillableBroker::start(&endpoint);
    assert_eq!(state.arrivals("state-set"), 1, "the write was resent");

    state.release();
    shutdown.cancel();
    runtime
        .block_on(async { tokio::time::timeout(WAIT_DEADLINE, worker).await })
        .expect("worker did not stop")
        .unwrap()
        .unwrap();
}
