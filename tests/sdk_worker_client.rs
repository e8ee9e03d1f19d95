//! The SDK's worker and client APIs against the real broker (`plantd_broker::run`) on loopback:
//! round trips, streaming, handler failures, long handlers, reconnects, several brokers,
//! concurrency, MMI helpers and typed errors.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use plantd_broker::{BrokerConfig, BrokerError};
use plantd_worker_sdk::client::{AsyncClient, Client, ClientError, Reply};
use plantd_worker_sdk::health::Health;
use plantd_worker_sdk::testing::{free_endpoint, free_port};
use plantd_worker_sdk::worker::WorkerError;
use plantd_worker_sdk::{Frames, HandlerError, Responder, Shutdown, Worker, WorkerBuilder};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

/// Generous bound for anything that should happen quickly; never waited for on success.
const DEADLINE: Duration = Duration::from_secs(20);
const HEARTBEAT: Duration = Duration::from_millis(100);

/// A runtime for the services of one test; the test thread plays the client.
struct Harness {
    runtime: Runtime,
}

struct Running<E> {
    shutdown: Shutdown,
    task: JoinHandle<Result<(), E>>,
}

impl<E: std::fmt::Debug> Running<E> {
    fn stop(self, harness: &Harness) {
        self.shutdown.cancel();
        harness
            .runtime
            .block_on(async { tokio::time::timeout(DEADLINE, self.task).await })
            .expect("did not stop in time")
            .expect("task panicked")
            .map_err(|e| format!("{e:?}"))
            .or_else(|e| {
                if e.contains("health server stopped unexpectedly") {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .expect("ended with an error");
    }
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

    /// Starts a broker on `endpoint` and waits until it answers MMI.
    fn broker_on(
        &self,
        endpoint: &str,
        tweak: impl FnOnce(&mut BrokerConfig),
    ) -> Running<BrokerError> {
        let mut config = BrokerConfig {
            endpoint: endpoint.to_owned(),
            health_host: "127.0.0.1".into(),
            health_port: free_port(),
            heartbeat_interval_ms: HEARTBEAT.as_millis() as u64,
            heartbeat_liveness: 5,
            // Several brokers run side by side in tests: no buses on the fixed default ports.
            bus: plantd_broker::bus::BusSettings::disabled(),
            ..BrokerConfig::default()
        };
        tweak(&mut config);
        let shutdown = Shutdown::new();
        let task = self
            .runtime
            .spawn(plantd_broker::run(config, shutdown.clone()));
        let client = Client::connect(endpoint)
            .unwrap()
            .with_timeout(Duration::from_millis(200));
        wait_until("broker answers MMI", || client.broker_info().is_ok());
        Running { shutdown, task }
    }

    fn broker(&self, tweak: impl FnOnce(&mut BrokerConfig)) -> (String, Running<BrokerError>) {
        let endpoint = free_endpoint();
        let broker = self.broker_on(&endpoint, tweak);
        (endpoint, broker)
    }

    fn worker(&self, builder: WorkerBuilder) -> Running<WorkerError> {
        let worker = builder.build().unwrap();
        let shutdown = Shutdown::new();
        let task = self.runtime.spawn(worker.run(shutdown.clone()));
        Running { shutdown, task }
    }
}

/// A worker builder with test heartbeats and quick reconnects.
fn worker(service: &str, endpoint: &str) -> WorkerBuilder {
    Worker::builder(service)
        .endpoint(endpoint)
        .heartbeat(HEARTBEAT)
        .liveness(5)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
}

fn client(endpoint: &str) -> Client {
    Client::connect(endpoint)
        .unwrap()
        .with_timeout(Duration::from_secs(10))
}

use plantd_worker_sdk::testing::wait_until;

fn wait_for_workers(client: &Client, service: &str, count: usize) {
    wait_until(&format!("{service} has {count} workers"), || {
        client
            .workers(service)
            .is_ok_and(|workers| workers.len() == count)
    });
}

fn frames(parts: &[&[u8]]) -> Frames {
    parts.iter().map(|p| p.to_vec()).collect()
}

#[test]
fn round_trip_keeps_frames_and_reports_health() {
    let harness = Harness::new();
    let (endpoint, broker) = harness.broker(|_| {});
    let health = Health::new("test");
    let check = health.check("broker_connection");
    let worker = harness.worker(
        worker("test.Echo", &endpoint)
            .connection_check(check.clone())
            .handler(Ok),
    );
    let client = client(&endpoint);
    wait_for_workers(&client, "test.Echo", 1);
    wait_until("connection check is UP", || check.is_up());

    let body = frames(&[b"first", b"", b"\x00\x01\xff binary", b"last"]);
    assert_eq!(client.request("test.Echo", body.clone()).unwrap(), body);
    assert_eq!(client.request("test.Echo", vec![]).unwrap(), Frames::new());

    worker.stop(&harness);
    assert!(!check.is_up(), "check still UP after the worker stopped");
    broker.stop(&harness);
}

#[test]
fn streaming_replies_arrive_in_order() {
    let harness = Harness::new();
    let (endpoint, broker) = harness.broker(|_| {});
    let worker = harness.worker(worker("test.Stream", &endpoint).streaming_handler(
        |body: Frames, out: &Responder| {
            for i in 1..=3 {
                out.partial(vec![format!("part {i}").into_bytes()])?;
            }
            Ok(body)
        },
    ));
    let client = client(&endpoint);
    wait_for_workers(&client, "test.Stream", 1);

    let replies: Vec<Reply> = client
        .request_stream("test.Stream", frames(&[b"done"]))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        replies,
        vec![
            Reply::Partial(frames(&[b"part 1"])),
            Reply::Partial(frames(&[b"part 2"])),
            Reply::Partial(frames(&[b"part 3"])),
            Reply::Final(frames(&[b"done"])),
        ]
    );
    // A plain request sees only the FINAL.
    assert_eq!(
        client.request("test.Stream", frames(&[b"x"])).unwrap(),
        frames(&[b"x"])
    );
    worker.stop(&harness);
    broker.stop(&harness);
}

#[test]
fn handler_errors_and_panics_are_worker_errors_and_the_worker_goes_on() {
    let harness = Harness::new();
    let (endpoint, broker) = harness.broker(|_| {});
    let worker = harness.worker(worker("test.Flaky", &endpoint).handler(|body: Frames| {
        match body.first().map(Vec::as_slice) {
            Some(b"fail") => Err(HandlerError::new("no such thing")),
            Some(b"panic") => panic!("handler exploded"),
            _ => Ok(body),
        }
    }));
    let client = client(&endpoint);
    wait_for_workers(&client, "test.Flaky", 1);

    match client.request("test.Flaky", frames(&[b"fail"])) {
        Err(ClientError::Worker(message)) => assert_eq!(message, "no such thing"),
        other => panic!("expected a worker error, got {other:?}"),
    }
    match client.request("test.Flaky", frames(&[b"panic"])) {
        Err(ClientError::Worker(message)) => assert!(message.contains("handler exploded")),
        other => panic!("expected a worker error, got {other:?}"),
    }
    assert_eq!(
        client.request("test.Flaky", frames(&[b"ok"])).unwrap(),
        frames(&[b"ok"])
    );
    worker.stop(&harness);
    broker.stop(&harness);
}

#[test]
fn a_long_handler_keeps_its_registration() {
    let harness = Harness::new();
    let (endpoint, broker) = harness.broker(|c| c.heartbeat_liveness = 3);
    let worker = harness.worker(worker("test.Slow", &endpoint).liveness(3).handler(|body| {
        thread::sleep(HEARTBEAT * 10);
        Ok(body)
    }));
    let client = client(&endpoint);
    wait_for_workers(&client, "test.Slow", 1);
    let before = client.workers("test.Slow").unwrap()[0].id.clone();

    assert_eq!(
        client
            .request("test.Slow", frames(&[b"take your time"]))
            .unwrap(),
        frames(&[b"take your time"])
    );
    let after = client.workers("test.Slow").unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(
        after[0].id, before,
        "the worker re-registered during the handler"
    );
    assert_eq!(after[0].requests, 1);
    worker.stop(&harness);
    broker.stop(&harness);
}

#[test]
fn worker_registers_again_after_a_broker_restart() {
    let harness = Harness::new();
    let (endpoint, broker) = harness.broker(|_| {});
    let worker = harness.worker(worker("test.Phoenix", &endpoint).handler(Ok));
    let client = client(&endpoint);
    wait_for_workers(&client, "test.Phoenix", 1);
    broker.stop(&harness);

    let broker = harness.broker_on(&endpoint, |_| {});
    let client = self::client(&endpoint);
    wait_for_workers(&client, "test.Phoenix", 1);
    assert_eq!(
        client.request("test.Phoenix", frames(&[b"again"])).unwrap(),
        frames(&[b"again"])
    );
    worker.stop(&harness);
    broker.stop(&harness);
}

#[test]
fn one_worker_serves_two_brokers() {
    let harness = Harness::new();
    let (a, broker_a) = harness.broker(|_| {});
    let (b, broker_b) = harness.broker(|_| {});
    let worker = harness.worker(worker("test.Both", &a).endpoint(&b).handler(Ok));
    for endpoint in [&a, &b] {
        let client = client(endpoint);
        wait_for_workers(&client, "test.Both", 1);
        assert_eq!(
            client
                .request("test.Both", frames(&[endpoint.as_bytes()]))
                .unwrap(),
            frames(&[endpoint.as_bytes()])
        );
    }
    worker.stop(&harness);
    broker_a.stop(&harness);
    broker_b.stop(&harness);
}

#[test]
fn concurrent_threads_on_one_client_each_get_their_own_reply() {
    let harness = Harness::new();
    let (endpoint, broker) = harness.broker(|_| {});
    let worker = harness.worker(worker("test.Echo", &endpoint).concurrency(4).handler(Ok));
    let client = client(&endpoint);
    wait_for_workers(&client, "test.Echo", 4);

    let threads: Vec<_> = (0..16)
        .map(|t| {
            let client = client.clone();
            thread::spawn(move || {
                for i in 0..50 {
                    let payload = format!("thread {t} request {i}").into_bytes();
                    let reply = client.request("test.Echo", vec![payload.clone()]).unwrap();
                    assert_eq!(reply, vec![payload]);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    worker.stop(&harness);
    broker.stop(&harness);
}

#[test]
fn async_client_runs_many_requests_at_once() {
    let harness = Harness::new();
    let (endpoint, broker) = harness.broker(|_| {});
    let worker = harness.worker(
        worker("test.Async", &endpoint)
            .concurrency(4)
            .async_handler(|body: Frames| async move {
                tokio::time::sleep(Duration::from_millis(2)).await;
                Ok(body)
            }),
    );
    wait_for_workers(&client(&endpoint), "test.Async", 4);

    let client = AsyncClient::connect(&endpoint)
        .unwrap()
        .with_timeout(Duration::from_secs(10));
    let replies = harness.runtime.block_on(async {
        let tasks: Vec<_> = (0..200u32)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(async move {
                    let payload = i.to_be_bytes().to_vec();
                    let reply = client.request("test.Async", vec![payload.clone()]).await;
                    (payload, reply)
                })
            })
            .collect();
        let mut replies = Vec::new();
        for task in tasks {
            replies.push(task.await.unwrap());
        }
        replies
    });
    let mut seen = HashSet::new();
    for (payload, reply) in replies {
        assert_eq!(reply.unwrap(), vec![payload.clone()]);
        seen.insert(payload);
    }
    assert_eq!(seen.len(), 200);
    assert!(harness
        .runtime
        .block_on(client.service_available("test.Async"))
        .unwrap());
    worker.stop(&harness);
    broker.stop(&harness);
}

#[test]
fn one_session_with_credit_holds_several_requests_at_once() {
    let harness = Harness::new();
    let (endpoint, broker) = harness.broker(|_| {});
    // Each handler waits until four are running: only a session holding four requests at once
    // gets past the barrier.
    let barrier = Arc::new(tokio::sync::Barrier::new(4));
    let worker = harness.worker(worker("test.Credit", &endpoint).credit(4).async_handler(
        move |body: Frames| {
            let barrier = barrier.clone();
            async move {
                tokio::time::timeout(DEADLINE, barrier.wait())
                    .await
                    .map_err(|_| HandlerError::new("fewer than four requests held at once"))?;
                Ok(body)
            }
        },
    ));
    let blocking = client(&endpoint);
    wait_for_workers(&blocking, "test.Credit", 1);
    let info = blocking.workers("test.Credit").unwrap();
    assert_eq!(info[0].credit, 4);

    let client = AsyncClient::connect(&endpoint)
        .unwrap()
        .with_timeout(DEADLINE);
    let replies = harness.runtime.block_on(async {
        let tasks: Vec<_> = (0..8u8)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(async move { (i, client.request("test.Credit", vec![vec![i]]).await) })
            })
            .collect();
        let mut replies = Vec::new();
        for task in tasks {
            replies.push(task.await.unwrap());
        }
        replies
    });
    for (i, reply) in replies {
        assert_eq!(reply.unwrap(), vec![vec![i]]);
    }
    worker.stop(&harness);
    broker.stop(&harness);
}

#[test]
fn a_sync_handler_with_credit_takes_its_requests_in_turn() {
    let harness = Harness::new();
    let (endpoint, broker) = harness.broker(|_| {});
    let running = Arc::new(AtomicBool::new(false));
    let overlap = Arc::new(AtomicBool::new(false));
    let (r, o) = (running.clone(), overlap.clone());
    let worker = harness.worker(worker("test.CreditSync", &endpoint).credit(3).handler(
        move |body: Frames| {
            if r.swap(true, Ordering::SeqCst) {
                o.store(true, Ordering::SeqCst);
            }
            thread::sleep(Duration::from_millis(1));
            r.store(false, Ordering::SeqCst);
            Ok(body)
        },
    ));
    let client = client(&endpoint);
    wait_for_workers(&client, "test.CreditSync", 1);
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let client = client.clone();
            thread::spawn(move || {
                for i in 0..10 {
                    let payload = format!("{t}/{i}").into_bytes();
                    let reply = client.request("test.CreditSync", vec![payload.clone()]);
                    assert_eq!(reply.unwrap(), vec![payload]);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(
        !overlap.load(Ordering::SeqCst),
        "a sync handler never runs twice at once on one session"
    );
    worker.stop(&harness);
    broker.stop(&harness);
}

#[test]
fn credit_out_of_range_is_refused_at_build() {
    for credit in [0, plantd_worker_sdk::protocol::credit::MAX_CREDIT + 1] {
        let built = Worker::builder("test.Bad")
            .endpoint("tcp://127.0.0.1:1")
            .credit(credit)
            .handler(Ok)
            .build();
        assert!(
            matches!(built, Err(WorkerError::InvalidSetting(_))),
            "credit {credit}"
        );
    }
}

#[test]
fn mmi_helpers_describe_the_broker() {
    let harness = Harness::new();
    let (endpoint, broker) = harness.broker(|_| {});
    let worker = harness.worker(worker("test.Known", &endpoint).concurrency(2).handler(Ok));
    let client = client(&endpoint);
    wait_for_workers(&client, "test.Known", 2);

    assert!(client.service_available("test.Known").unwrap());
    assert!(!client.service_available("test.Unknown").unwrap());
    let services = client.services().unwrap();
    let known = services
        .iter()
        .find(|s| s.name == "test.Known")
        .expect("service listed");
    assert_eq!((known.workers, known.queued), (2, 0));
    let workers = client.workers("test.Known").unwrap();
    assert_eq!(workers.len(), 2);
    assert!(workers
        .iter()
        .all(|w| w.service == "test.Known" && w.dialect == "0.2" && !w.id.is_empty()));
    assert!(matches!(
        client.workers("test.Unknown"),
        Err(ClientError::NotFound)
    ));
    let info = client.broker_info().unwrap();
    assert!(!info.version.is_empty());
    assert_eq!(info.workers, 2);
    worker.stop(&harness);
    broker.stop(&harness);
}

#[test]
fn broker_error_replies_become_typed_errors() {
    let harness = Harness::new();
    let (endpoint, broker) = harness.broker(|c| {
        c.queue_limit = 1;
        c.queue_ttl_ms = 3000;
    });
    let release = Arc::new(AtomicBool::new(false));
    let handler_release = release.clone();
    let worker = harness.worker(worker("test.Busy", &endpoint).handler(move |body| {
        let deadline = Instant::now() + DEADLINE;
        while !handler_release.load(Ordering::SeqCst) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        Ok(body)
    }));
    let client = client(&endpoint);
    wait_for_workers(&client, "test.Busy", 1);

    // A request for a service that never had a worker expires as 404.
    let not_found = {
        let client = client.clone();
        thread::spawn(move || client.request("test.Nobody", vec![]))
    };
    // One request keeps the only worker busy, one waits in the queue (and expires: 504), and one
    // more finds the queue full (503).
    let busy = {
        let client = client.clone();
        thread::spawn(move || client.request("test.Busy", frames(&[b"1"])))
    };
    wait_until("the worker is busy", || {
        client
            .workers("test.Busy")
            .is_ok_and(|w| w.iter().any(|w| w.state == "busy"))
    });
    let queued = {
        let client = client.clone();
        thread::spawn(move || client.request("test.Busy", frames(&[b"2"])))
    };
    wait_until("one request is queued", || {
        client
            .services()
            .is_ok_and(|s| s.iter().any(|s| s.name == "test.Busy" && s.queued == 1))
    });
    assert!(matches!(
        client.request("test.Busy", frames(&[b"3"])),
        Err(ClientError::QueueFull)
    ));
    assert!(matches!(queued.join().unwrap(), Err(ClientError::Expired)));
    assert!(matches!(
        not_found.join().unwrap(),
        Err(ClientError::NotFound)
    ));
    release.store(true, Ordering::SeqCst);
    assert_eq!(busy.join().unwrap().unwrap(), frames(&[b"1"]));
    worker.stop(&harness);
    broker.stop(&harness);
}

#[test]
fn timeout_with_retries_and_no_broker_gives_up_in_bounded_time() {
    let endpoint = free_endpoint();
    let client = Client::connect(&endpoint)
        .unwrap()
        .with_timeout(Duration::from_millis(200))
        .with_retries(2);
    let started = Instant::now();
    assert!(matches!(
        client.request("test.Anything", vec![]),
        Err(ClientError::Timeout)
    ));
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(600),
        "gave up after {elapsed:?}"
    );
    assert!(elapsed < DEADLINE, "took {elapsed:?}");
}
