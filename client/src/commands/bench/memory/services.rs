//! The services load: `--services` workers each register a service of their own, then all send
//! DISCONNECT and close. The load has ended when the broker has forgotten the services (after its
//! `service_linger_ms`, which the bench sets to `--linger-ms`), or when that should long have
//! happened.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use plantd_worker_sdk::protocol::{self, Dialect, Direction, Frame, Message, WorkerCommand};
use plantd_worker_sdk::Client;
use serde_json::json;

use super::LoadOutcome;
use super::MemoryArgs;
use crate::commands::bench::peers::ContextPool;
use crate::commands::bench::process::BrokerProcess;

/// How long to wait for registrations and departures.
const STEP_DEADLINE: Duration = Duration::from_secs(120);

/// Beyond the linger: the broker forgets services on its heartbeat tick (2.5 s by default).
const FORGET_SLACK: Duration = Duration::from_secs(15);

/// How long a closing worker socket may take to deliver its DISCONNECT.
const CLOSE_LINGER_MS: i32 = 2000;

/// Runs the load against `broker`; returns when the services are forgotten.
pub fn run(broker: &BrokerProcess, args: &MemoryArgs) -> Result<LoadOutcome> {
    let probe = Client::connect(&broker.endpoint)?
        .with_timeout(Duration::from_secs(5))
        .with_retries(1);
    let started = Instant::now();
    let mut pool = ContextPool::default();
    let mut workers = Vec::with_capacity(args.services);
    for i in 0..args.services {
        let socket = pool.socket(zmq::DEALER)?;
        socket.set_linger(CLOSE_LINGER_MS)?;
        socket.connect(&broker.endpoint)?;
        send(
            &socket,
            WorkerCommand::Ready {
                service: Frame::from(format!("bench.memory.service.{i:05}").as_str()),
                credit: 1,
            },
        )?;
        workers.push(socket);
    }
    wait(&probe, "every service is registered", |info| {
        info.services >= args.services as u64 && info.workers >= args.services as u64
    })?;
    let registered_in = started.elapsed().as_secs_f64();
    let registered_kib = broker.rss_kib()?;

    for socket in &workers {
        send(socket, WorkerCommand::Disconnect)?;
    }
    // Closing every socket and context waits (up to the linger) for the DISCONNECTs to go out.
    drop(workers);
    drop(pool);
    wait(&probe, "every worker has left", |info| info.workers == 0)?;
    let left = Instant::now();
    let forget_by = Duration::from_millis(args.linger_ms) + FORGET_SLACK;
    let forgotten = loop {
        let info = probe.broker_info()?;
        if info.services == 0 {
            break true;
        }
        if left.elapsed() > forget_by {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let forgotten_in = left.elapsed().as_secs_f64();
    let forgotten_text = if forgotten {
        format!("forgotten {forgotten_in:.1} s after their workers left")
    } else {
        format!(
            "NOT forgotten {forgotten_in:.1} s after their workers left (does this broker know \
             service_linger_ms?)"
        )
    };
    Ok(LoadOutcome {
        shape: format!(
            "{} services, one worker each, abandoned (linger {} ms)",
            args.services, args.linger_ms
        ),
        lines: vec![format!(
            "registered in {registered_in:.2} s, RSS then {:.1} MB; {forgotten_text}",
            registered_kib as f64 / 1024.0
        )],
        fields: json!({
            "services": args.services, "linger_ms": args.linger_ms,
            "registered_rss_mb": registered_kib as f64 / 1024.0,
            "forgotten": forgotten, "forgotten_after_secs": forgotten_in,
        }),
    })
}

fn send(socket: &zmq::Socket, command: WorkerCommand) -> Result<()> {
    let mut frames = Vec::with_capacity(4);
    let _ = protocol::encode(
        Dialect::V02,
        Direction::ToBroker,
        Message::Worker(command),
        &mut frames,
    );
    protocol::send_frames(socket, frames, 0)?;
    Ok(())
}

fn wait(
    probe: &Client,
    what: &str,
    done: impl Fn(&plantd_worker_sdk::client::BrokerInfo) -> bool,
) -> Result<()> {
    let deadline = Instant::now() + STEP_DEADLINE;
    loop {
        if done(&probe.broker_info()?) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out waiting until {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
