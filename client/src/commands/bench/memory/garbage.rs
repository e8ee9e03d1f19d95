//! The garbage load: `--senders` DEALER sockets send `--messages` malformed messages between them
//! (random frames, truncated MDP headers, unknown commands, worker commands from peers that never
//! registered), and one in `--large-every` carries a frame of `--large-min-mb`..`--large-max-mb`.
//! Senders read whatever the broker sends back (DISCONNECTs) so that only the malformed path is
//! measured, not a reply backlog.
//!
//! The load has ended when every sender has sent everything and the broker's `messages_received`
//! counter stops moving (or reaches the count sent); the broker's CPU time and message rate over
//! that span are reported, for comparison with relayed traffic.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use plantd_worker_sdk::protocol::{self, Frame};
use plantd_worker_sdk::Client;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::{counter_deltas, LoadOutcome, MemoryArgs};
use crate::commands::bench::process::{counter, BrokerProcess};

/// How long the broker's received count may stand still before the backlog counts as drained
/// (messages lost with a sender the broker disconnected never arrive).
const QUIET: Duration = Duration::from_secs(1);

/// How often the broker's counters are read while the load runs.
const POLL: Duration = Duration::from_millis(100);

/// Give up on the load after this long.
const LOAD_DEADLINE: Duration = Duration::from_secs(600);

const MB: u64 = 1_000_000;

/// Runs the load against `broker` (the shape is validated by the caller); returns when the
/// broker has drained it.
pub fn run(broker: &BrokerProcess, args: &MemoryArgs) -> Result<LoadOutcome> {
    let large_max = (args.large_max_mb * MB) as usize;
    let template: Vec<u8> = if args.large_every > 0 {
        (0..large_max)
            .map(|i| (i as u8).wrapping_mul(151))
            .collect()
    } else {
        Vec::new()
    };
    let probe = Client::connect(&broker.endpoint)?
        .with_timeout(Duration::from_secs(5))
        .with_retries(1);
    let start_info = probe.broker_info()?;
    let received_at_start = counter(&start_info, "messages_received");
    let cpu_at_start = broker.cpu_seconds()?;
    let started = Instant::now();

    let stop = AtomicBool::new(false);
    let finished = AtomicUsize::new(0);
    let per_sender = args.messages.div_ceil(args.senders as u64);
    let mut probes = 0u64;
    let outcome = std::thread::scope(|scope| -> Result<_> {
        let handles: Vec<_> = (0..args.senders)
            .map(|id| {
                let count = per_sender.min(args.messages.saturating_sub(id as u64 * per_sender));
                let (stop, finished, template) = (&stop, &finished, &template[..]);
                scope.spawn(move || {
                    let sent =
                        send_garbage(&broker.endpoint, id, count, args, template, finished, stop);
                    // Also on failure, so the wait below ends.
                    if sent.is_err() {
                        finished.fetch_add(1, Ordering::Relaxed);
                    }
                    sent
                })
            })
            .collect();

        let mut last = (received_at_start, Instant::now(), cpu_at_start);
        let drained = loop {
            if started.elapsed() > LOAD_DEADLINE {
                stop.store(true, Ordering::Relaxed);
                bail!("the broker did not drain the garbage load within {LOAD_DEADLINE:?}");
            }
            std::thread::sleep(POLL);
            let info = probe.broker_info()?;
            probes += 1;
            // Every probe is one message more.
            let received = counter(&info, "messages_received").saturating_sub(probes);
            if received > last.0 {
                last = (received, Instant::now(), broker.cpu_seconds()?);
            }
            let all_sent = finished.load(Ordering::Relaxed) == args.senders;
            if all_sent
                && (received - received_at_start >= args.messages || last.1.elapsed() >= QUIET)
            {
                break last;
            }
        };
        stop.store(true, Ordering::Relaxed);
        let mut sent = 0;
        for h in handles {
            sent += h.join().expect("garbage sender panicked")?;
        }
        Ok((drained, sent))
    })?;
    let ((received, drained_at, cpu_at_end), sent) = outcome;
    let end_info = probe.broker_info()?;

    let received = received - received_at_start;
    let seconds = drained_at.duration_since(started).as_secs_f64().max(1e-9);
    let cpu = (cpu_at_end - cpu_at_start).max(0.0);
    let rate = received as f64 / seconds;
    let per_cpu = if cpu > 0.0 {
        received as f64 / cpu
    } else {
        0.0
    };
    let large = if args.large_every == 0 {
        "no large frames".to_owned()
    } else {
        format!(
            "1 in {} with a frame of {}–{} MB",
            args.large_every, args.large_min_mb, args.large_max_mb
        )
    };
    Ok(LoadOutcome {
        shape: format!(
            "{} senders, {} malformed messages ({large})",
            args.senders, args.messages
        ),
        lines: vec![
            format!(
                "broker CPU {cpu:.2} s for {received} messages received in {seconds:.2} s: \
                 {rate:.0} msg/s, {per_cpu:.0} msg per CPU second ({sent} sent)"
            ),
            format!(
                "counters: {}",
                serde_json::Value::Object(counter_deltas(&start_info, &end_info))
            ),
        ],
        fields: json!({
            "senders": args.senders, "messages": args.messages,
            "large_every": args.large_every,
            "large_mb": [args.large_min_mb, args.large_max_mb],
            "sent": sent, "received": received, "load_secs": seconds,
            "broker_cpu_secs": cpu, "messages_per_sec": rate,
            "messages_per_cpu_sec": per_cpu,
            "counters": counter_deltas(&start_info, &end_info),
        }),
    })
}

/// One sender: `count` malformed messages, then (counted in `finished`) reading replies until
/// `stop`. Returns how many messages it handed to libzmq.
fn send_garbage(
    endpoint: &str,
    id: usize,
    count: u64,
    args: &MemoryArgs,
    template: &[u8],
    finished: &AtomicUsize,
    stop: &AtomicBool,
) -> Result<u64> {
    let ctx = zmq::Context::new();
    let socket = ctx.socket(zmq::DEALER)?;
    socket.set_linger(0)?;
    socket.connect(endpoint)?;
    let mut rng = StdRng::seed_from_u64(0x6a7b_a6e0 + id as u64);
    let drain = |socket: &zmq::Socket| while socket.recv_msg(zmq::DONTWAIT).is_ok() {};
    let mut sent = 0;
    for i in 0..count {
        let global = i * args.senders as u64 + id as u64;
        let large = args.large_every > 0 && global % args.large_every == args.large_every - 1;
        let frames = if large {
            let size = rng.gen_range(args.large_min_mb * MB..=args.large_max_mb * MB) as usize;
            large_message(&mut rng, &template[..size.min(template.len())])
        } else {
            small_message(&mut rng)
        };
        protocol::send_frames(&socket, frames, 0)?;
        sent += 1;
        if i % 64 == 0 {
            drain(&socket);
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
    }
    finished.fetch_add(1, Ordering::Relaxed);
    while !stop.load(Ordering::Relaxed) {
        drain(&socket);
        let _ = socket.poll(zmq::POLLIN, 50);
    }
    Ok(sent)
}

/// A header (valid or not) and one big frame where the command should be: malformed in every
/// dialect.
fn large_message(rng: &mut StdRng, big: &[u8]) -> Vec<Frame> {
    const HEADERS: [&[u8]; 4] = [b"MDPC02", b"MDPW02", b"MDPC01", b"MDPX99"];
    vec![
        Frame::from(HEADERS[rng.gen_range(0..HEADERS.len())]),
        Frame::from(big),
    ]
}

/// One small malformed message: random frames, a truncated MDP message, an unknown command, or a
/// worker command from a peer that never registered.
fn small_message(rng: &mut StdRng) -> Vec<Frame> {
    let noise = |rng: &mut StdRng| -> Frame {
        let len = rng.gen_range(0..64);
        Frame::from((0..len).map(|_| rng.gen::<u8>()).collect::<Vec<u8>>())
    };
    let f = |b: &[u8]| Frame::from(b);
    match rng.gen_range(0..4) {
        // Random frames.
        0 => (0..rng.gen_range(1..6)).map(|_| noise(rng)).collect(),
        // Truncated MDP: header only, header and command without service or client.
        1 => match rng.gen_range(0..5) {
            0 => vec![f(b"MDPC0")],
            1 => vec![f(b"MDPC02")],
            2 => vec![f(b""), f(b"MDPW01")],
            3 => vec![f(b"MDPC02"), f(&[0x01])],
            _ => vec![f(b"MDPW02"), f(&[0x04])],
        },
        // Unknown commands.
        2 => match rng.gen_range(0..3) {
            0 => vec![f(b"MDPC02"), f(&[0x09]), f(b"svc"), noise(rng)],
            1 => vec![f(b"MDPW02"), f(&[0x7f])],
            _ => vec![f(b""), f(b"MDPW02"), f(b"BOGUS"), noise(rng)],
        },
        // Worker commands from an unregistered peer (answered with DISCONNECT) and a READY
        // with an invalid credit frame.
        _ => match rng.gen_range(0..3) {
            0 => vec![f(b"MDPW02"), f(&[0x05])],
            1 => vec![f(b"MDPW02"), f(&[0x04]), f(b"client"), f(b""), noise(rng)],
            _ => vec![f(b"MDPW02"), f(&[0x01]), f(b"svc"), f(b"credit=0")],
        },
    }
}
