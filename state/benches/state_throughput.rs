//! State service throughput through the broker, as ratios to plain echo traffic through the same
//! broker in the same run (absolute numbers swing with the machine; ratios much less).
//!
//! One process runs a broker, an echo worker and the state service (each with the same number of
//! worker sessions), then drives each phase with N concurrent blocking clients for a fixed time:
//! echo, state-set (fresh keys), state-get (existing keys), echo again. The echo figure used for
//! the ratios is the mean of the two echo phases, so drift during the run is averaged out.
//!
//! ```text
//! cargo bench -p plantd-state --bench state_throughput -- [--clients 32] [--seconds 5] [--sessions 4]
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use plantd_broker::BrokerConfig;
use plantd_state::StateConfig;
use plantd_worker_sdk::client::Client;
use plantd_worker_sdk::testing::{free_endpoint, free_port};
use plantd_worker_sdk::{Frames, HandlerError, Shutdown, Worker};

struct Options {
    clients: usize,
    seconds: u64,
    sessions: usize,
}

fn options() -> Options {
    let mut o = Options {
        clients: 32,
        seconds: 5,
        sessions: 4,
    };
    let args: Vec<String> = std::env::args().collect();
    // `cargo test --all-targets` runs this binary without `--bench`: a one-second smoke run keeps
    // the bench compiling and working without timing anything in CI.
    if !args.iter().any(|a| a == "--bench") {
        o.seconds = 1;
    }
    let mut i = 1;
    while i < args.len() {
        let value = || args.get(i + 1).and_then(|v| v.parse().ok());
        match args[i].as_str() {
            "--clients" => o.clients = value().unwrap_or(o.clients as u64) as usize,
            "--seconds" => o.seconds = value().unwrap_or(o.seconds),
            "--sessions" => o.sessions = value().unwrap_or(o.sessions as u64) as usize,
            _ => {} // `cargo bench` passes `--bench`; ignore what we do not know.
        }
        i += 1;
    }
    o
}

/// Runs `clients` threads for `seconds`, each sending `make(client, i)` requests back to back, and
/// returns completed requests per second. Every reply is checked with `check`.
fn phase(
    name: &str,
    endpoint: &str,
    service: &'static str,
    o: &Options,
    make: impl Fn(usize, u64) -> Frames + Sync,
    check: impl Fn(&Frames) -> bool + Sync,
) -> f64 {
    let done = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    std::thread::scope(|s| {
        for c in 0..o.clients {
            let (done, stop, make, check) = (&done, &stop, &make, &check);
            let client = Client::connect(endpoint)
                .expect("client")
                .with_timeout(Duration::from_secs(10));
            s.spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let reply = client.request(service, make(c, i)).expect("request");
                    assert!(
                        check(&reply),
                        "{name}: unexpected reply {:?}",
                        String::from_utf8_lossy(&reply[0])
                    );
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            });
        }
        std::thread::sleep(Duration::from_secs(o.seconds));
        stop.store(true, Ordering::Relaxed);
    });
    let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    println!("{name:<10} {rate:>10.0} req/s");
    rate
}

fn main() {
    let o = options();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoint = free_endpoint();
    let shutdown = Shutdown::new();

    let mut broker = BrokerConfig {
        endpoint: endpoint.clone(),
        health_host: "127.0.0.1".into(),
        health_port: free_port(),
        log_level: "warn".into(),
        // Several brokers run side by side in tests: no buses on the fixed default ports.
        bus: plantd_broker::bus::BusSettings::disabled(),
        ..BrokerConfig::default()
    };
    broker.bus.enabled = false;
    rt.spawn(plantd_broker::run(broker, shutdown.clone()));

    let echo = Worker::builder("bench.Echo")
        .endpoint(endpoint.clone())
        .concurrency(o.sessions)
        .handler(|request: Frames| -> Result<Frames, HandlerError> { Ok(request) })
        .build()
        .expect("echo worker");
    rt.spawn(echo.run(shutdown.clone()));

    let state = StateConfig {
        db: dir.path().join("bench-state.db"),
        broker_endpoint: endpoint.clone(),
        concurrency: o.sessions,
        health_host: "127.0.0.1".into(),
        health_port: free_port(),
        bus_endpoint: String::new(),
        ..StateConfig::default()
    };
    rt.spawn(plantd_state::run(state, shutdown.clone()));

    let probe = Client::connect(&endpoint)
        .expect("client")
        .with_timeout(Duration::from_millis(500));
    let deadline = Instant::now() + Duration::from_secs(30);
    while probe.service_available("org.plantd.State").ok() != Some(true)
        || probe.service_available("bench.Echo").ok() != Some(true)
    {
        assert!(Instant::now() < deadline, "services did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }

    println!(
        "state throughput: {} clients, {} s per phase, {} sessions per service, nproc {}",
        o.clients,
        o.seconds,
        o.sessions,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let body = |c: usize, i: u64, with_value: bool| -> Vec<u8> {
        let key = format!("c{c}-{}", i % 1000);
        if with_value {
            format!(r#"{{"service":"bench","key":"{key}","value":{{"n":{i},"s":"some text"}}}}"#)
        } else {
            format!(r#"{{"service":"bench","key":"{key}"}}"#)
        }
        .into_bytes()
    };
    let success = |reply: &Frames| reply.len() == 1 && reply[0].starts_with(br#"{"success":true"#);

    let echo1 = phase(
        "echo",
        &endpoint,
        "bench.Echo",
        &o,
        |c, i| vec![b"echo".to_vec(), body(c, i, true)],
        |r| r.len() == 2,
    );
    let set = phase(
        "state-set",
        &endpoint,
        "org.plantd.State",
        &o,
        |c, i| vec![b"state-set".to_vec(), body(c, i, true)],
        success,
    );
    // Every client wrote keys c{c}-0.. during the set phase; read back the ones that exist.
    let get = phase(
        "state-get",
        &endpoint,
        "org.plantd.State",
        &o,
        |c, i| vec![b"state-get".to_vec(), body(c, i % 20, false)],
        success,
    );
    let echo2 = phase(
        "echo",
        &endpoint,
        "bench.Echo",
        &o,
        |c, i| vec![b"echo".to_vec(), body(c, i, true)],
        |r| r.len() == 2,
    );
    let echo = (echo1 + echo2) / 2.0;
    println!("ratio state-set/echo {:.2} (target >= 0.40)", set / echo);
    println!("ratio state-get/echo {:.2} (target >= 0.60)", get / echo);
    shutdown.cancel();
    // Give the services a moment to disconnect cleanly; the runtime drop ends the rest.
    std::thread::sleep(Duration::from_millis(200));
}
