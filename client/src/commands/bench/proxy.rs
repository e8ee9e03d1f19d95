//! `plant bench proxy`: echo through the HTTP proxy against the same echo over MDP, interleaved in
//! one run, with a bare axum "hello" route for context.
//!
//! Starts, in this process, a broker (free ports, no buses), an SDK echo worker and the proxy
//! (`plantd_proxy::run`, rate limits off), plus a bare axum server answering `POST /hello`. Then,
//! for `--rounds` rounds in ABC order, each phase runs `--seconds` with `--connections`
//! concurrent loops:
//! - **proxy**: `POST /api/v1/services/<echo>/echo` with a JSON body, each loop on its own
//!   HTTP/1.1 keep-alive connection (hyper's client connection, no pool in between);
//! - **direct**: the same `[echo, json]` frames with the SDK's `AsyncClient`, one shared client
//!   with that many requests in flight;
//! - **hello**: `POST /hello` on the bare axum server, the HTTP stack's own ceiling here.
//!
//! Every reply is checked. Reported: throughput and p50/p99 latency of each (all rounds
//! together), proxy/direct throughput, and whether the targets hold (proxy throughput ≥ 0.5×
//! direct, proxy p50 ≤ 2× direct p50 + 200 µs).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use plantd_worker_sdk::testing::free_port;
use plantd_worker_sdk::{AsyncClient, Frames, Shutdown, Worker};
use serde_json::json;

use super::InProcessBroker;

/// The echo service the bench registers.
const ECHO: &str = "bench.proxy.echo";

/// Options of `plant bench proxy`.
#[derive(Args, Debug, Clone)]
pub struct ProxyBenchArgs {
    /// Concurrent connections (HTTP) or requests in flight (MDP) in each phase.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Length of each phase in seconds.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Rounds of proxy, direct and hello phases.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Echo worker sessions (each holding up to `--credit` requests).
    #[arg(long, default_value_t = 4)]
    pub sessions: usize,
    /// Requests each echo session may hold at once.
    #[arg(long, default_value_t = 32)]
    pub credit: u32,
}

/// What the phases of one kind measured, all rounds together.
struct Tally {
    name: &'static str,
    completed: u64,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
    histogram: Histogram<u64>,
}

impl Tally {
    fn new(name: &'static str) -> Tally {
        Tally {
            name,
            completed: 0,
            errors: 0,
            first_error: None,
            elapsed: Duration::ZERO,
            histogram: Histogram::new(3).expect("histogram"),
        }
    }

    fn rate(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn p50_us(&self) -> f64 {
        self.histogram.value_at_quantile(0.5) as f64 / 1000.0
    }

    fn p99_us(&self) -> f64 {
        self.histogram.value_at_quantile(0.99) as f64 / 1000.0
    }
}

/// One loop's results within a phase.
struct LoopResult {
    completed: u64,
    errors: u64,
    first_error: Option<String>,
    histogram: Histogram<u64>,
}

/// The request body each call sends (and gets back).
fn body(i: u64) -> Vec<u8> {
    json!({"n": i, "pad": "0123456789abcdef0123456789abcdef"})
        .to_string()
        .into_bytes()
}

/// Runs `connections` loops of `call` for `seconds`; adds what they measured to `tally`.
async fn phase<F, Fut>(tally: &mut Tally, connections: usize, call: F) -> Result<()>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<LoopResult>> + Send + 'static,
{
    let started = Instant::now();
    let loops: Vec<_> = (0..connections).map(|i| tokio::spawn(call(i))).collect();
    for handle in loops {
        let result = handle.await.context("a load loop panicked")??;
        tally.completed += result.completed;
        tally.errors += result.errors;
        if tally.first_error.is_none() {
            tally.first_error = result.first_error;
        }
        tally.histogram.add(&result.histogram).expect("same bounds");
    }
    tally.elapsed += started.elapsed();
    Ok(())
}

/// One keep-alive HTTP/1.1 connection to `addr`.
async fn connect(addr: SocketAddr) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// Sends `POST path` with bodies from [`body`] on one connection until `stop`; each reply's body
/// must equal `expect(sent)`.
async fn http_loop(
    addr: SocketAddr,
    path: &'static str,
    stop: Arc<AtomicBool>,
    expect: fn(&[u8]) -> Vec<u8>,
) -> Result<LoopResult> {
    let mut sender = connect(addr).await?;
    let mut result = LoopResult {
        completed: 0,
        errors: 0,
        first_error: None,
        histogram: Histogram::new(3).expect("histogram"),
    };
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let sent = body(i);
        let wanted = expect(&sent);
        let request = hyper::Request::post(path)
            .header("host", "bench")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(sent)))?;
        let start = Instant::now();
        let outcome = async {
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let status = response.status();
            let bytes = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, bytes))
        }
        .await;
        match outcome {
            Ok((status, bytes)) if status.is_success() && bytes[..] == wanted[..] => {
                result.completed += 1;
                let _ = result.histogram.record(start.elapsed().as_nanos() as u64);
            }
            Ok((status, bytes)) => {
                result.errors += 1;
                result.first_error.get_or_insert_with(|| {
                    format!("{status}: {}", String::from_utf8_lossy(&bytes))
                });
            }
            Err(e) => {
                result.errors += 1;
                result.first_error.get_or_insert_with(|| e.to_string());
                // The connection is gone: carry on with a new one.
                sender = connect(addr).await?;
            }
        }
    }
    Ok(result)
}

/// Sends `[echo, json]` with `client` until `stop`; each reply must be the request.
async fn mdp_loop(client: AsyncClient, stop: Arc<AtomicBool>) -> Result<LoopResult> {
    let mut result = LoopResult {
        completed: 0,
        errors: 0,
        first_error: None,
        histogram: Histogram::new(3).expect("histogram"),
    };
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let frames: Frames = vec![b"echo".to_vec(), body(i)];
        let start = Instant::now();
        match client.request(ECHO, frames.clone()).await {
            Ok(reply) if reply == frames => {
                result.completed += 1;
                let _ = result.histogram.record(start.elapsed().as_nanos() as u64);
            }
            Ok(reply) => {
                result.errors += 1;
                result
                    .first_error
                    .get_or_insert_with(|| format!("unexpected reply {reply:?}"));
            }
            Err(e) => {
                result.errors += 1;
                result.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    Ok(result)
}

/// Runs `run` with a stop flag raised after `seconds`.
async fn timed<F, Fut>(tally: &mut Tally, args: &ProxyBenchArgs, run: F) -> Result<()>
where
    F: Fn(Arc<AtomicBool>) -> Fut,
    Fut: std::future::Future<Output = Result<LoopResult>> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let timer = {
        let stop = stop.clone();
        let seconds = args.seconds;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
            stop.store(true, Ordering::Relaxed);
        })
    };
    phase(tally, args.connections, |_| run(stop.clone())).await?;
    timer.await?;
    Ok(())
}

/// `plant bench proxy`.
pub fn run(args: ProxyBenchArgs, json_output: bool) -> Result<()> {
    if args.connections == 0 || args.seconds <= 0.0 || args.rounds == 0 || args.sessions == 0 {
        bail!("--connections, --seconds, --rounds and --sessions must be positive");
    }
    let mut broker = InProcessBroker::start(None)?;
    let endpoint = broker.endpoint.clone();
    let worker = Worker::builder(ECHO)
        .endpoint(endpoint.clone())
        .concurrency(args.sessions)
        .credit(args.credit.max(1))
        .handler(|body: Frames| Ok(body))
        .build()?;
    let worker_stop = broker.shutdown.clone();
    broker.spawn(async move { worker.run(worker_stop).await });

    // The proxy and the hello server get a runtime of their own, as a process of their own would.
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let servers_stop = Shutdown::new();

    let (http_port, health_port) = (free_port(), free_port());
    let proxy = plantd_proxy::ProxyConfig {
        broker_endpoint: endpoint.clone(),
        http_port,
        health_host: "127.0.0.1".into(),
        health_port,
        buses: Vec::new(),
        rate_limit: plantd_proxy::config::RateLimitConfig {
            per_address_per_second: 0,
            per_address_burst: 0,
            per_token_per_second: 0,
            per_token_burst: 0,
        },
        max_in_flight: args.connections * 4,
        auth: plantd_worker_sdk::auth::AuthConfig::off(),
        ..Default::default()
    };
    let proxy_task = servers.spawn(plantd_proxy::run(proxy, servers_stop.clone()));

    let hello_port = free_port();
    let hello_addr: SocketAddr = ([127, 0, 0, 1], hello_port).into();
    let listener = servers.block_on(tokio::net::TcpListener::bind(hello_addr))?;
    let hello = axum::Router::new().route("/hello", axum::routing::post(|| async { "hello" }));
    let hello_stop = servers_stop.clone();
    let hello_task = servers.spawn(async move {
        axum::serve(listener, hello)
            .with_graceful_shutdown(async move { hello_stop.cancelled().await })
            .await
    });

    // The load runs on a runtime of its own, like a separate client process would.
    let load = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let client = AsyncClient::connect(&endpoint)?.with_timeout(Duration::from_secs(10));
    let proxy_addr: SocketAddr = ([127, 0, 0, 1], http_port).into();
    let tallies = load.block_on(async {
        wait_ready(&client, proxy_addr).await?;
        let mut proxy = Tally::new("proxy");
        let mut direct = Tally::new("direct");
        let mut hello = Tally::new("hello");
        for _ in 0..args.rounds {
            timed(&mut proxy, &args, |stop| {
                http_loop(
                    proxy_addr,
                    "/api/v1/services/bench.proxy.echo/echo",
                    stop,
                    <[u8]>::to_vec,
                )
            })
            .await?;
            timed(&mut direct, &args, |stop| mdp_loop(client.clone(), stop)).await?;
            timed(&mut hello, &args, |stop| {
                http_loop(hello_addr, "/hello", stop, |_| b"hello".to_vec())
            })
            .await?;
        }
        anyhow::Ok([proxy, direct, hello])
    })?;
    drop(load);
    servers_stop.cancel();
    servers.block_on(async {
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            let _ = proxy_task.await;
            let _ = hello_task.await;
        })
        .await;
    });
    drop(broker);
    report(&args, &tallies, json_output)
}

/// Waits until echo answers through the broker and through the proxy.
async fn wait_ready(client: &AsyncClient, proxy: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let first_error = Mutex::new(String::new());
    loop {
        let direct = client.request(ECHO, vec![b"echo".to_vec(), body(0)]).await;
        let through = async {
            let mut sender = connect(proxy).await?;
            let request = hyper::Request::post("/api/v1/services/bench.proxy.echo/echo")
                .header("host", "bench")
                .body(Full::new(Bytes::from(body(0))))?;
            let response = sender.send_request(request).await?;
            anyhow::Ok(response.status().is_success())
        }
        .await;
        match (direct, through) {
            (Ok(_), Ok(true)) => return Ok(()),
            (d, t) => *first_error.lock().unwrap() = format!("{d:?} / {t:?}"),
        }
        if Instant::now() > deadline {
            bail!(
                "echo did not answer through the broker and the proxy: {}",
                first_error.lock().unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn report(args: &ProxyBenchArgs, tallies: &[Tally; 3], json_output: bool) -> Result<()> {
    let [proxy, direct, hello] = tallies;
    let ratio = proxy.rate() / direct.rate().max(1e-9);
    let p50_bound = 2.0 * direct.p50_us() + 200.0;
    let throughput_ok = ratio >= 0.5;
    let latency_ok = proxy.p50_us() <= p50_bound;
    if json_output {
        let phase = |t: &Tally| {
            json!({"name": t.name, "requests": t.completed, "errors": t.errors,
                   "rate": t.rate(), "p50_us": t.p50_us(), "p99_us": t.p99_us()})
        };
        println!(
            "{}",
            json!({
                "connections": args.connections, "seconds": args.seconds, "rounds": args.rounds,
                "phases": tallies.iter().map(phase).collect::<Vec<_>>(),
                "proxy_vs_direct_throughput": ratio,
                "proxy_p50_bound_us": p50_bound,
                "throughput_target_met": throughput_ok,
                "latency_target_met": latency_ok,
            })
        );
    } else {
        println!(
            "echo, {} concurrent, {} rounds × {} s per phase, interleaved (proxy, direct, hello)",
            args.connections, args.rounds, args.seconds
        );
        println!(
            "{:<8} {:>12} {:>10} {:>10} {:>8}",
            "path", "req/s", "p50 µs", "p99 µs", "errors"
        );
        for t in tallies {
            println!(
                "{:<8} {:>12.0} {:>10.0} {:>10.0} {:>8}",
                t.name,
                t.rate(),
                t.p50_us(),
                t.p99_us(),
                t.errors
            );
        }
        println!(
            "proxy/direct throughput {ratio:.2} (target ≥ 0.50: {}); proxy p50 {:.0} µs vs \
             2 × direct + 200 = {p50_bound:.0} µs ({}); hello/proxy throughput {:.2}",
            if throughput_ok { "met" } else { "MISSED" },
            proxy.p50_us(),
            if latency_ok { "met" } else { "MISSED" },
            hello.rate() / proxy.rate().max(1e-9),
        );
    }
    for t in tallies {
        if t.errors > 0 {
            bail!(
                "{} {} requests failed: {}",
                t.errors,
                t.name,
                t.first_error.as_deref().unwrap_or("unknown")
            );
        }
    }
    Ok(())
}
