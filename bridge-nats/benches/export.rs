//! Export rate of one bridge: how fast messages published on a bus reach NATS, with JetStream
//! (each acked by the stream) against core NATS (fire and forget), in one interleaved run.
//!
//! For each mode a site (a real broker with its buses) and a bridge on it run against one
//! Debian `nats-server` (JetStream on). A round publishes `--messages` messages (64-byte bodies)
//! on the metric bus at once, within the bridge's queue, and times until the bridge counts them
//! all exported; any dropped message fails the run.
//!
//! `cargo bench -p plantd-bridge-nats --bench export` measures (5,000 messages, 5 rounds per
//! mode; `--messages N`, `--rounds N`). Without `--bench`, which is how `cargo test --all-targets`
//! runs it, one small untimed round per mode checks that everything arrives. Skipped (with a
//! message) where `nats-server` is missing, unless `PLANTD_REQUIRE_NATS` is set.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Bridge, NatsServer, Site};
use plantd_worker_sdk::bus::Publisher;
use plantd_worker_sdk::testing::wait_until;
use plantd_worker_sdk::Shutdown;

/// One mode under test.
struct Lane {
    name: &'static str,
    _site: Site,
    bridge: Bridge,
    publisher: Publisher,
}

impl Lane {
    fn exported(&self) -> f64 {
        self.bridge.metric(
            "plantd_bridge_nats_messages_total",
            &[("direction", "export")],
        )
    }

    fn dropped(&self) -> f64 {
        self.bridge.metric(
            "plantd_bridge_nats_dropped_total",
            &[("direction", "export")],
        )
    }

    /// Publishes `n` messages and returns how long until all were exported.
    fn round(&self, n: usize, tag: usize) -> Duration {
        let before = self.exported();
        let body = [0x5au8; 64];
        let started = Instant::now();
        for i in 0..n {
            self.publisher
                .publish(&format!("org.plantd.metric.bench.{tag}.{i}"), &body)
                .expect("publish");
        }
        wait_until(&format!("{}: all {n} exported", self.name), || {
            self.exported() - before >= n as f64 || self.dropped() > 0.0
        });
        let took = started.elapsed();
        assert_eq!(self.dropped(), 0.0, "{}: messages were dropped", self.name);
        took
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut measure, mut messages, mut rounds) = (false, 5_000usize, 5usize);
    while let Some(arg) = args.next() {
        let mut number = |what: &str| -> usize {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{what} takes a number"))
        };
        match arg.as_str() {
            "--bench" => measure = true,
            "--messages" => messages = number("--messages"),
            "--rounds" => rounds = number("--rounds"),
            _ => {}
        }
    }
    if !measure {
        (messages, rounds) = (200, 1);
    }
    let Some(nats) = NatsServer::start(true) else {
        eprintln!("SKIPPED: nats-server not found");
        return;
    };
    let runtime = common::runtime();
    let shutdown = Shutdown::new();
    let _stop = shutdown.clone().drop_guard();
    let lanes: Vec<Lane> = [("jetstream", true), ("core", false)]
        .into_iter()
        .map(|(name, jetstream)| {
            let site = Site::start(&runtime, &shutdown);
            let config = Bridge::config(&format!("bench-{name}"), &site, &nats, jetstream);
            let bridge = Bridge::start(&runtime, &shutdown, config);
            let publisher = site.publisher();
            let lane = Lane {
                name,
                _site: site,
                bridge,
                publisher,
            };
            // Ready once a probe went all the way out.
            wait_until(&format!("{name}: a probe exported"), || {
                lane.publisher
                    .publish("org.plantd.metric.bench.probe", b"probe")
                    .expect("publish");
                lane.exported() >= 1.0
            });
            lane
        })
        .collect();

    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); lanes.len()];
    for round in 0..rounds {
        for (lane, rates) in lanes.iter().zip(&mut rates) {
            let took = lane.round(messages, round);
            rates.push(messages as f64 / took.as_secs_f64());
        }
    }
    if !measure {
        println!("export smoke run: every message exported in both modes (nothing timed)");
        return;
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for (lane, rates) in lanes.iter().zip(&rates) {
        let shown: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
        println!(
            "{:>9}: median {:>7.0} messages/s  (rounds: {})",
            lane.name,
            median(rates),
            shown.join(", ")
        );
    }
    println!(
        "jetstream / core: {:.2}x",
        median(&rates[0]) / median(&rates[1])
    );
}
