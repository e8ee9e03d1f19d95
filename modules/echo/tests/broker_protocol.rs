//! The real `plantd-module-echo` binary and the MDP version of its broker: configured for 0.1 it
//! serves behind an RFC 7 (0.1-only) broker written in Python, and a broker that never answers
//! its READY gets one `warn` naming the endpoint and the protocol, not silence and not a line per
//! retry.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use plantd_worker_sdk::protocol::{self, decode_routed, Dialect, Message, WorkerCommand};
use plantd_worker_sdk::testing::interop::{hex, python_ready, run_client, PythonPeer};
use plantd_worker_sdk::testing::{free_endpoint, free_port, service_command, wait_until};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(30);

/// An echo process, killed when dropped.
struct Echo(Child);

impl Echo {
    /// Starts the binary for `endpoint` with `env` on top of a loopback health port.
    fn spawn(endpoint: &str, dir: &std::path::Path, env: &[(&str, &str)]) -> (Echo, u16) {
        let health_port = free_port();
        let mut command: Command = service_command(
            env!("CARGO_BIN_EXE_plantd-module-echo"),
            dir,
            "PLANTD_ECHO_CONFIG",
        );
        command
            .env("PLANTD_ECHO_BROKER_ENDPOINT", endpoint)
            .env("PLANTD_ECHO_HEALTH_HOST", "127.0.0.1")
            .env("PLANTD_ECHO_HEALTH_PORT", health_port.to_string())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        (
            Echo(command.spawn().expect("spawn plantd-module-echo")),
            health_port,
        )
    }

    /// Its stderr, one line at a time, read on a thread of its own.
    fn log_lines(&mut self) -> mpsc::Receiver<String> {
        let stderr = self.0.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        rx
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn broker_connection_up(port: u16) -> bool {
    let Ok(response) = reqwest::blocking::get(format!("http://127.0.0.1:{port}/healthz")) else {
        return false;
    };
    let body: Value = response.json().unwrap_or_default();
    body["checks"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["name"] == "broker_connection" && c["status"] == "UP")
    })
}

#[test]
fn configured_for_0_1_the_echo_binary_serves_behind_an_rfc7_broker() {
    if !python_ready() {
        return;
    }
    let endpoint = free_endpoint();
    let _broker = PythonPeer::rfc7_broker(&endpoint);
    let dir = tempfile::tempdir().unwrap();
    // The Python broker heartbeats every 250 ms and forgets a worker silent for 5 of them.
    let (_echo, health_port) = Echo::spawn(
        &endpoint,
        dir.path(),
        &[
            ("PLANTD_ECHO_PROTOCOL", "0.1"),
            ("PLANTD_ECHO_HEARTBEAT_INTERVAL_MS", "250"),
            ("PLANTD_ECHO_HEARTBEAT_LIVENESS", "5"),
        ],
    );
    wait_until("the echo worker has sent READY", || {
        broker_connection_up(health_port)
    });
    // mmi.service, answered by the Python broker, proves the READY was understood.
    let known = run_client(&[
        "client01",
        &endpoint,
        "mmi.service",
        &hex(&[b"org.plantd.module.Echo"])[0],
    ]);
    assert_eq!(known, serde_json::json!(hex(&[b"200"])));
    let body: &[&[u8]] = &[b"echo", b"", b"\x00\xff"];
    let mut args = vec![
        "client01".to_string(),
        endpoint.clone(),
        plantd_module_echo::SERVICE.into(),
    ];
    args.extend(hex(body));
    let reply = run_client(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(reply, serde_json::json!(hex(body)));
}

/// A ROUTER where the broker should be, which reads everything and answers only when told to.
struct Standin {
    socket: zmq::Socket,
    _context: zmq::Context,
    /// Routing ids of every READY seen, in order.
    readies: Vec<Vec<u8>>,
}

impl Standin {
    fn bind(endpoint: &str) -> Standin {
        let context = zmq::Context::new();
        let socket = context.socket(zmq::ROUTER).unwrap();
        socket.set_linger(0).unwrap();
        socket.bind(endpoint).unwrap();
        Standin {
            socket,
            _context: context,
            readies: Vec::new(),
        }
    }

    /// Reads for up to `wait`; with `answer`, heartbeats every worker it has seen, as a broker
    /// would.
    fn pump(&mut self, wait: Duration, answer: bool) {
        if self
            .socket
            .poll(zmq::POLLIN, wait.as_millis() as i64)
            .unwrap()
            > 0
        {
            while let Ok(frames) = protocol::recv_frames(&self.socket, zmq::DONTWAIT) {
                if let Ok((id, _, Message::Worker(WorkerCommand::Ready { .. }))) =
                    decode_routed(frames)
                {
                    self.readies.push(id.to_vec());
                }
            }
        }
        if answer {
            for id in &self.readies {
                let mut frames = vec![protocol::Frame::from(&id[..])];
                let heartbeat = Message::Worker(WorkerCommand::Heartbeat);
                let to_worker = protocol::Direction::FromBroker;
                protocol::encode(Dialect::V02, to_worker, heartbeat, &mut frames).unwrap();
                // Ids of closed sessions are dropped by the ROUTER, which is what we want.
                let _ = protocol::send_frames(&self.socket, frames, zmq::DONTWAIT);
            }
        }
    }
}

/// The next log line (JSON) matching `wanted`, collecting every line read on the way.
fn next_line(
    lines: &mpsc::Receiver<String>,
    seen: &mut Vec<Value>,
    standin: &mut Standin,
    answer: bool,
    wanted: impl Fn(&Value) -> bool,
) -> Value {
    let end = Instant::now() + DEADLINE;
    loop {
        assert!(Instant::now() < end, "no such log line; got {seen:#?}");
        // Keep the stand-in serving (or ignoring) the worker while we wait.
        standin.pump(Duration::from_millis(50), answer);
        while let Ok(line) = lines.try_recv() {
            let line: Value = serde_json::from_str(&line).unwrap_or(Value::String(line));
            let found = wanted(&line);
            seen.push(line.clone());
            if found {
                return line;
            }
        }
    }
}

fn is_warn(line: &Value) -> bool {
    line["level"] == "warn"
}

#[test]
fn a_broker_that_never_answers_ready_gets_one_warn_per_silent_spell() {
    let endpoint = free_endpoint();
    let mut standin = Standin::bind(&endpoint);
    let dir = tempfile::tempdir().unwrap();
    // Two sessions, so "once" means once per endpoint, not once per session.
    let (mut echo, _) = Echo::spawn(
        &endpoint,
        dir.path(),
        &[
            ("PLANTD_ECHO_CONCURRENCY", "2"),
            ("PLANTD_ECHO_HEARTBEAT_INTERVAL_MS", "200"),
            ("PLANTD_ECHO_HEARTBEAT_LIVENESS", "2"),
            ("PLANTD_ECHO_LOG_FORMAT", "json"),
            ("PLANTD_ECHO_LOG_LEVEL", "info"),
        ],
    );
    let lines = echo.log_lines();
    let mut seen = Vec::new();

    // Silent: the first expiry is reported...
    let warn = next_line(&lines, &mut seen, &mut standin, false, is_warn);
    assert_eq!(warn["endpoint"], endpoint.as_str(), "{warn}");
    assert_eq!(warn["protocol"], "0.2", "{warn}");
    let message = warn["message"].as_str().unwrap();
    assert!(
        message.contains("never answered READY") && message.contains("MDP/0.2"),
        "{message}"
    );
    // ...and not the next ones: wait for three READYs per session (two expiries each).
    let end = Instant::now() + DEADLINE;
    while standin.readies.len() < 6 {
        assert!(Instant::now() < end, "the worker stopped reconnecting");
        standin.pump(Duration::from_millis(50), false);
    }
    // Answering: the worker says so, and every line before that is in `seen`, in order.
    next_line(&lines, &mut seen, &mut standin, true, |l| {
        l["message"] == "the broker answered"
    });
    let warns = seen.iter().filter(|l| is_warn(l)).count();
    assert_eq!(
        warns, 1,
        "one warn for a silent spell of 6 READYs: {seen:#?}"
    );

    // Silent again: a new spell, a new warn.
    let again = next_line(&lines, &mut seen, &mut standin, false, is_warn);
    assert_eq!(again["message"], warn["message"]);
}
