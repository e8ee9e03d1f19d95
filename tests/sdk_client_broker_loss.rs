//! The SDK clients when the broker dies with requests in flight (hardening issue, item 5).
//!
//! The broker runs in a child process of this test binary (`plantd_broker::run`, see
//! [`broker_child_process`]) so it can be killed with SIGKILL: no goodbye replies, the connections
//! just drop, as when a broker crashes. The worker is a real SDK `Worker` in this process whose
//! handler holds requests until the test lets them go, so a request is provably in flight (held by
//! the worker) when the broker dies. Request timeouts are 60 s: a result that arrives before that
//! came from the disconnect, not from a timeout.

use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use plantd_broker::BrokerConfig;
use plantd_worker_sdk::client::{AsyncClient, Client, ClientError, RetryPolicy};
use plantd_worker_sdk::testing::{free_endpoint, free_port, wait_until, WAIT_DEADLINE};
use plantd_worker_sdk::worker::WorkerError;
use plantd_worker_sdk::{Frames, Shutdown, Worker};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

/// Far longer than any test waits: nothing here may end by a timeout.
const LONG: Duration = Duration::from_secs(60);
const HEARTBEAT: Duration = Duration::from_millis(100);
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
        heartbeat_interval_ms: HEARTBEAT.as_millis() as u64,
        heartbeat_liveness: 5,
        // Several brokers run side by side in tests: no buses on the fixed default ports.
        bus: plantd_broker::bus::BusSettings::disabled(),
        ..BrokerConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // Runs until the parent kills this process.
    runtime
        .block_on(plantd_broker::run(config, Shutdown::new()))
        .unwrap();
}

/// A broker in a child process, killed with SIGKILL (by [`kill`](Self::kill) or on drop).
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
            assert!(
                broker.0.try_wait().unwrap().is_none(),
                "broker child exited"
            );
            probe.broker_info().is_ok()
        });
        broker
    }

    /// SIGKILL, and wait until the process is gone (its connections are closed by then).
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

/// A handler that holds every request until [`release`](Self::release), counting arrivals.
#[derive(Clone, Default)]
struct Hold {
    state: Arc<(Mutex<HoldState>, Condvar)>,
}

#[derive(Default)]
struct HoldState {
    arrivals: usize,
    released: bool,
}

impl Hold {
    /// The worker handler: records the request, waits for the release, echoes the body.
    fn handler(&self) -> impl Fn(Frames) -> Result<Frames, plantd_worker_sdk::HandlerError> {
        let hold = self.clone();
        move |body| {
            let (lock, changed) = &*hold.state;
            let mut state = lock.lock().unwrap();
            state.arrivals += 1;
            changed.notify_all();
            let (_state, _) = changed
                .wait_timeout_while(state, WAIT_DEADLINE, |s| !s.released)
                .unwrap();
            Ok(body)
        }
    }

    fn arrivals(&self) -> usize {
        self.state.0.lock().unwrap().arrivals
    }

    fn wait_for_arrivals(&self, count: usize) {
        wait_until(&format!("{count} requests reached the worker"), || {
            self.arrivals() >= count
        });
    }

    /// Lets every held request (and every later one) through.
    fn release(&self) {
        let (lock, changed) = &*self.state;
        lock.lock().unwrap().released = true;
        changed.notify_all();
    }
}

/// A runtime for the worker; the test thread plays the client.
struct Harness {
    runtime: Runtime,
}

struct RunningWorker {
    shutdown: Shutdown,
    task: JoinHandle<Result<(), WorkerError>>,
}

impl Harness {
    fn new() -> Harness {
        Harness {
            runtime: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    /// A worker of `service` on `endpoint` (quick heartbeats and reconnects), `sessions` sessions.
    fn worker(&self, service: &str, endpoint: &str, sessions: usize, hold: &Hold) -> RunningWorker {
        let worker = Worker::builder(service)
            .endpoint(endpoint)
            .heartbeat(HEARTBEAT)
            .liveness(5)
            .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
            .concurrency(sessions)
            .handler(hold.handler())
            .build()
            .unwrap();
        let shutdown = Shutdown::new();
        let task = self.runtime.spawn(worker.run(shutdown.clone()));
        RunningWorker { shutdown, task }
    }

    fn stop(&self, worker: RunningWorker) {
        worker.shutdown.cancel();
        self.runtime
            .block_on(async { tokio::time::timeout(WAIT_DEADLINE, worker.task).await })
            .expect("worker did not stop in time")
            .expect("worker task panicked")
            .expect("worker ended with an error");
    }
}

fn wait_for_workers(endpoint: &str, service: &str, count: usize) {
    let client = Client::connect(endpoint)
        .unwrap()
        .with_timeout(Duration::from_millis(500));
    wait_until(&format!("{service} has {count} workers"), || {
        client
            .workers(service)
            .is_ok_and(|workers| workers.len() == count)
    });
}

/// Runs `request` on a thread; its result, or a panic if it takes longer than the wait deadline
/// (half the request timeout: only a disconnect can have ended it).
fn in_background<T: Send + 'static>(request: impl FnOnce() -> T + Send + 'static) -> Pending<T> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(request());
    });
    Pending(rx)
}

struct Pending<T>(mpsc::Receiver<T>);

impl<T> Pending<T> {
    fn result(self) -> T {
        self.0
            .recv_timeout(WAIT_DEADLINE)
            .expect("the request was still waiting (it would only have ended by its timeout)")
    }
}

#[test]
fn without_retries_a_request_held_when_the_broker_dies_fails_as_broker_disconnected() {
    let harness = Harness::new();
    let endpoint = free_endpoint();
    let broker = KillableBroker::start(&endpoint);
    let hold = Hold::default();
    let worker = harness.worker("test.Held", &endpoint, 1, &hold);
    wait_for_workers(&endpoint, "test.Held", 1);

    let client = Client::connect(&endpoint).unwrap().with_timeout(LONG);
    let pending = in_background(move || client.request("test.Held", vec![b"once".to_vec()]));
    hold.wait_for_arrivals(1);
    broker.kill();

    let error = pending.result().expect_err("no reply can come");
    assert!(
        matches!(error, ClientError::BrokerDisconnected),
        "got {error:?}"
    );
    assert!(error.to_string().contains("broker disconnected"), "{error}");
    assert_eq!(hold.arrivals(), 1);
    hold.release();
    harness.stop(worker);
}

#[test]
fn without_retries_every_async_request_in_flight_fails_when_the_broker_dies() {
    let harness = Harness::new();
    let endpoint = free_endpoint();
    let broker = KillableBroker::start(&endpoint);
    let hold = Hold::default();
    let worker = harness.worker("test.HeldMany", &endpoint, 3, &hold);
    wait_for_workers(&endpoint, "test.HeldMany", 3);

    let client = AsyncClient::connect(&endpoint).unwrap().with_timeout(LONG);
    let requests: Vec<_> = (0..3u8)
        .map(|i| {
            let client = client.clone();
            harness
                .runtime
                .spawn(async move { client.request("test.HeldMany", vec![vec![i]]).await })
        })
        .collect();
    hold.wait_for_arrivals(3);
    broker.kill();

    for request in requests {
        let result = harness
            .runtime
            .block_on(async { tokio::time::timeout(WAIT_DEADLINE, request).await })
            .expect("the request was still waiting (it would only have ended by its timeout)")
            .unwrap();
        assert!(
            matches!(result, Err(ClientError::BrokerDisconnected)),
            "got {result:?}"
        );
    }
    hold.release();
    harness.stop(worker);
}

#[test]
fn with_retries_a_request_survives_a_broker_restart() {
    let harness = Harness::new();
    let endpoint = free_endpoint();
    let broker = KillableBroker::start(&endpoint);
    let hold = Hold::default();
    let worker = harness.worker("test.Phoenix", &endpoint, 1, &hold);
    wait_for_workers(&endpoint, "test.Phoenix", 1);

    // One resend allowed, and an attempt timeout no test waits out: only the disconnect can
    // trigger the resend.
    let client = Client::connect(&endpoint)
        .unwrap()
        .with_retry_policy(RetryPolicy::new(2, LONG));
    let pending = in_background(move || client.request("test.Phoenix", vec![b"again".to_vec()]));
    hold.wait_for_arrivals(1);
    broker.kill();
    // The held first attempt is let go (its reply has nowhere to go); the resend passes through.
    hold.release();
    let _broker = KillableBroker::start(&endpoint);

    assert_eq!(pending.result().unwrap(), vec![b"again".to_vec()]);
    assert_eq!(hold.arrivals(), 2, "the request was resent exactly once");
    harness.stop(worker);
}

#[test]
fn with_retries_used_up_by_broker_deaths_the_request_fails_as_broker_disconnected() {
    let harness = Harness::new();
    let endpoint = free_endpoint();
    let broker = KillableBroker::start(&endpoint);
    let hold = Hold::default();
    let worker = harness.worker("test.Doomed", &endpoint, 1, &hold);
    wait_for_workers(&endpoint, "test.Doomed", 1);

    let client = AsyncClient::connect(&endpoint)
        .unwrap()
        .with_retry_policy(RetryPolicy::new(2, LONG));
    let request = harness
        .runtime
        .spawn(async move { client.request("test.Doomed", vec![b"x".to_vec()]).await });
    hold.wait_for_arrivals(1);
    broker.kill();
    // The resend waits on a fresh socket for the broker to come back, reaches the worker once it
    // has registered again, and is held there too when the broker dies a second time.
    let broker = KillableBroker::start(&endpoint);
    hold.wait_for_arrivals(2);
    broker.kill();

    let result = harness
        .runtime
        .block_on(async { tokio::time::timeout(WAIT_DEADLINE, request).await })
        .expect("the request was still waiting (it would only have ended by its timeout)")
        .unwrap();
    assert!(
        matches!(result, Err(ClientError::BrokerDisconnected)),
        "got {result:?}"
    );
    assert_eq!(hold.arrivals(), 2, "two attempts, no more");
    hold.release();
    harness.stop(worker);
}
