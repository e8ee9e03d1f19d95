//! The unread load: one client pipelines `--requests` requests of `--size` bytes to an echo
//! service and never reads a reply, so the replies back up in the broker (up to its send
//! high-water mark for that client; the rest are dropped as unroutable). When every request has
//! been answered, the client leaves and the echo workers stop.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use plantd_worker_sdk::client::BrokerInfo;
use plantd_worker_sdk::protocol::{self, ClientCommand, Dialect, Direction, Frame, Message};
use plantd_worker_sdk::Client;
use serde_json::json;

use super::{counter_deltas, LoadOutcome, MemoryArgs};
use crate::commands::bench::peers::{self, EchoWorkers};
use crate::commands::bench::process::{counter, BrokerProcess};

const SERVICE: &str = "bench.memory.echo";

/// Give up on the load after this long.
const LOAD_DEADLINE: Duration = Duration::from_secs(600);

/// Runs the load against `broker`; returns when the client has left.
pub fn run(broker: &BrokerProcess, args: &MemoryArgs) -> Result<LoadOutcome> {
    let ctx = zmq::Context::new();
    let shape = EchoWorkers {
        threads: 2,
        sessions: 1,
        credit: plantd_worker_sdk::protocol::credit::MAX_CREDIT,
    };
    let workers = peers::mdp_echo_workers(
        &ctx,
        &broker.endpoint,
        SERVICE,
        Dialect::V02,
        shape,
        Duration::from_secs(1),
        None,
    )
    .context("cannot start the echo workers")?;
    let probe = Client::connect(&broker.endpoint)?
        .with_timeout(Duration::from_secs(5))
        .with_retries(1);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !probe.service_available(SERVICE).unwrap_or(false) {
        if Instant::now() > deadline {
            bail!("the echo workers did not register");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let start_info = probe.broker_info()?;
    let started = Instant::now();

    let client = ctx.socket(zmq::DEALER)?;
    client.set_linger(0)?;
    // Sending never blocks; receiving is never done.
    client.set_sndhwm(0)?;
    client.connect(&broker.endpoint)?;
    let body = vec![b'x'; args.size];
    for _ in 0..args.requests {
        let mut frames = Vec::with_capacity(4);
        let request = Message::Client(ClientCommand::Request {
            service: Frame::from(SERVICE),
            body: vec![Frame::from(&body[..])],
        });
        let _ = protocol::encode(Dialect::V02, Direction::ToBroker, request, &mut frames);
        protocol::send_frames(&client, frames, 0)?;
    }

    // Every request answered: relayed (or dropped as unroutable) or refused with an error.
    let answered = |info: &BrokerInfo| {
        let errors: u64 = info
            .counters
            .get("error_replies")
            .and_then(|v| v.as_object())
            .map(|m| m.values().filter_map(|v| v.as_u64()).sum())
            .unwrap_or(0);
        counter(info, "replies") + errors
    };
    let answered_at_start = answered(&start_info);
    let held_info = loop {
        if started.elapsed() > LOAD_DEADLINE {
            bail!("the broker did not answer the unread load within {LOAD_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
        let info = probe.broker_info()?;
        if answered(&info) - answered_at_start >= args.requests {
            break info;
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let held_kib = broker.rss_kib()?;
    // The client leaves without reading anything; then the workers go too.
    drop(client);
    drop(workers);
    let deltas = counter_deltas(&start_info, &held_info);
    let unroutable = counter(&held_info, "unroutable") - counter(&start_info, "unroutable");
    Ok(LoadOutcome {
        shape: format!(
            "1 client, {} pipelined requests of {} B never read, 2 echo workers",
            args.requests, args.size
        ),
        lines: vec![
            format!(
                "all answered in {seconds:.2} s; RSS while the replies were held {:.1} MB; \
                 {unroutable} replies dropped as unroutable",
                held_kib as f64 / 1024.0
            ),
            format!("counters: {}", serde_json::Value::Object(deltas.clone())),
        ],
        fields: json!({
            "requests": args.requests, "size": args.size, "load_secs": seconds,
            "held_rss_mb": held_kib as f64 / 1024.0, "unroutable": unroutable,
            "counters": deltas,
        }),
    })
}
