//! `cargo bench -p plantd-identity --bench identity`: `auth/validate` and `auth/login` requests
//! per second through a real broker, and the time of one argon2id hash. A benchmark, not a test:
//! it prints numbers (recorded in `docs/benchmarks.md`) and asserts nothing about speed.
//!
//! Options (after `--`): `--secs N` per measurement (default 5), `--clients N` concurrent
//! clients (default 8), `--sessions N` identity worker sessions (default 4).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use plantd_identity::config::RateLimitConfig;
use plantd_identity::password::Hasher;
use plantd_worker_sdk::client::Client;
use serde_json::{json, Value};

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Harness, SERVICE};

struct Options {
    secs: u64,
    clients: usize,
    sessions: usize,
}

fn options() -> Options {
    let mut options = Options {
        secs: 5,
        clients: 8,
        sessions: 4,
    };
    let args: Vec<String> = std::env::args().collect();
    for pair in args.windows(2) {
        let value = || pair[1].parse().expect("a number");
        match pair[0].as_str() {
            "--secs" => options.secs = value() as u64,
            "--clients" => options.clients = value(),
            "--sessions" => options.sessions = value(),
            _ => {}
        }
    }
    options
}

fn request(client: &Client, operation: &str, body: &Value) -> Value {
    let reply = client
        .request(
            SERVICE,
            vec![
                b"auth".to_vec(),
                operation.as_bytes().to_vec(),
                body.to_string().into_bytes(),
            ],
        )
        .expect("identity answers");
    serde_json::from_slice(&reply[0]).expect("JSON reply")
}

/// Runs `clients` threads, each sending `body(i)` for `secs`, and returns requests per second.
fn rate(
    endpoint: &str,
    clients: usize,
    secs: u64,
    operation: &str,
    body: impl Fn() -> Value + Send + Sync + 'static,
) -> f64 {
    let body = Arc::new(body);
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (body, done, stop) = (body.clone(), done.clone(), stop.clone());
            let endpoint = endpoint.to_owned();
            let operation = operation.to_owned();
            std::thread::spawn(move || {
                let client = Client::connect(&endpoint)
                    .unwrap()
                    .with_timeout(Duration::from_secs(30));
                while !stop.load(Ordering::Relaxed) {
                    let reply = request(&client, &operation, &body());
                    assert_eq!(reply["success"], true, "{reply}");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    // `cargo bench` passes `--bench`; anything else is ours.
    let options = options();
    let hasher = Hasher::new().unwrap();
    let mut times: Vec<Duration> = (0..20)
        .map(|_| {
            let started = Instant::now();
            hasher.hash("correct horse battery staple").unwrap();
            started.elapsed()
        })
        .collect();
    times.sort();
    println!(
        "argon2id hash (m=19456 KiB, t=2, p=1): median {:.1} ms, min {:.1} ms, max {:.1} ms (20 hashes, one thread)",
        times[10].as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times[19].as_secs_f64() * 1e3,
    );

    // The integration tests' harness: a real broker and identity on free loopback ports.
    let mut h = Harness::broker_only();
    h.config.concurrency = options.sessions;
    h.config.rate_limit = RateLimitConfig {
        per_minute: 0,
        burst: 0,
    };
    h.start_identity();
    let password = h.admin_password();
    let token = h.admin_token();
    let endpoint = h.endpoint.clone();

    println!(
        "identity: {} worker sessions, {} clients, {} s per measurement, 2 cores",
        options.sessions, options.clients, options.secs
    );
    let validate = json!({"token": token});
    let per_sec = rate(
        &endpoint,
        options.clients,
        options.secs,
        "validate",
        move || validate.clone(),
    );
    println!("auth/validate: {per_sec:.0} req/s");
    let credentials = json!({"identifier": "admin", "password": password});
    let per_sec = rate(
        &endpoint,
        options.clients,
        options.secs,
        "login",
        move || credentials.clone(),
    );
    println!("auth/login: {per_sec:.1} req/s");
    drop(h);
}
