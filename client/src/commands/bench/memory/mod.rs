//! `plant bench memory`: does the broker give memory back after a load? Each load runs against a
//! fresh broker child process ([`super::process`]) and reports its resident memory before the load
//! (idle), at its peak (the kernel's high-water mark), when the load ended, and after a settle
//! period, against the target `2 × before + 20 MB`.
//!
//! The loads (issue "Memory that never comes back"):
//! - [`garbage`]: many senders of malformed messages, a few of them very large frames; also
//!   reports the broker's CPU time and message rate for the malformed path.
//! - [`unread`]: one client pipelines many requests to an echo service and never reads a reply,
//!   then leaves.
//! - [`services`]: thousands of services registered by workers that then leave, until the broker
//!   forgets the services.

mod garbage;
mod services;
mod unread;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use serde_json::{json, Value};

use super::process::{BrokerBinary, BrokerProcess};

/// How often resident memory is sampled while the broker settles.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// The memory target of the issue: after a load, below twice the idle footprint plus this.
const TARGET_SLACK_KIB: u64 = 20 * 1024;

/// Which load to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Load {
    /// Malformed messages from many senders, some with frames of megabytes.
    Garbage,
    /// A client that pipelines requests and never reads the replies, then leaves.
    Unread,
    /// Services registered by workers that leave, until the broker forgets them.
    Services,
}

impl Load {
    fn name(self) -> &'static str {
        match self {
            Load::Garbage => "garbage",
            Load::Unread => "unread",
            Load::Services => "services",
        }
    }
}

/// Options of `plant bench memory`.
#[derive(Args, Debug, Clone)]
pub struct MemoryArgs {
    /// Loads to run, each against a fresh broker (comma-separated).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "garbage,unread,services"
    )]
    pub load: Vec<Load>,
    /// Seconds the idle broker runs before "before" is read.
    #[arg(long, default_value_t = 1.0)]
    pub idle: f64,
    /// Seconds the broker settles after the load ended before "after" is read.
    #[arg(long, default_value_t = 5.0)]
    pub settle: f64,
    /// Path of the plantd-broker binary (default: next to this `plant`, else this `plant` runs
    /// the broker library as `plant bench serve-broker`).
    #[arg(long)]
    pub broker_bin: Option<PathBuf>,
    /// Extra broker environment, KEY=VALUE (repeatable), e.g.
    /// PLANTD_BROKER_MAX_MESSAGE_SIZE=0.
    #[arg(long = "broker-env", value_parser = parse_env)]
    pub broker_env: Vec<(String, String)>,

    /// garbage: sender sockets.
    #[arg(long, default_value_t = 16, help_heading = "garbage load")]
    pub senders: usize,
    /// garbage: malformed messages in total.
    #[arg(long, default_value_t = 200_000, help_heading = "garbage load")]
    pub messages: u64,
    /// garbage: one message in this many carries a large frame (0: none).
    #[arg(long, default_value_t = 5_000, help_heading = "garbage load")]
    pub large_every: u64,
    /// garbage: smallest large frame, in MB.
    #[arg(long, default_value_t = 1, help_heading = "garbage load")]
    pub large_min_mb: u64,
    /// garbage: largest large frame, in MB.
    #[arg(long, default_value_t = 50, help_heading = "garbage load")]
    pub large_max_mb: u64,

    /// unread: pipelined requests the client sends and never reads replies to.
    #[arg(long, default_value_t = 100_000, help_heading = "unread load")]
    pub requests: u64,
    /// unread: request body bytes.
    #[arg(long, default_value_t = 1024, help_heading = "unread load")]
    pub size: usize,

    /// services: services registered (one worker each) and then abandoned.
    #[arg(long, default_value_t = 2_000, help_heading = "services load")]
    pub services: usize,
    /// services: the broker's `service_linger_ms` (how long a service whose workers left is
    /// kept), so that the services are forgotten within the run.
    #[arg(long, default_value_t = 1_000, help_heading = "services load")]
    pub linger_ms: u64,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// What a load reports besides memory: one line of text per fact, and the same as JSON fields.
pub struct LoadOutcome {
    /// The load's shape, one line.
    pub shape: String,
    /// Further lines of text output.
    pub lines: Vec<String>,
    /// Load-specific JSON fields.
    pub fields: Value,
}

/// Resident memory figures of one run, in KiB.
struct Rss {
    before: u64,
    peak: u64,
    end_of_load: u64,
    after: u64,
    /// Seconds from the end of the load until RSS first went below the target, if it did.
    under_target_after: Option<f64>,
}

impl Rss {
    fn target(&self) -> u64 {
        2 * self.before + TARGET_SLACK_KIB
    }
}

fn mb(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Runs `plant bench memory`.
pub fn run(args: MemoryArgs, json_out: bool) -> Result<()> {
    if args.load.is_empty() {
        bail!("--load needs at least one of garbage, unread, services");
    }
    if args.idle < 0.0 || args.settle < 0.0 {
        bail!("--idle and --settle must not be negative");
    }
    if args.senders == 0 || args.messages == 0 || args.requests == 0 || args.services == 0 {
        bail!("--senders, --messages, --requests and --services must be at least 1");
    }
    if args.large_every > 0 && !(1..=args.large_max_mb).contains(&args.large_min_mb) {
        bail!("--large-min-mb must be between 1 and --large-max-mb");
    }
    let binary = BrokerBinary::locate(args.broker_bin.as_deref())?;
    let mut runs = Vec::new();
    for &load in &args.load {
        let (rss, outcome) = run_one(load, &args, &binary)?;
        if !json_out {
            print_text(load, &rss, &outcome, &binary, args.settle);
        }
        runs.push(run_json(load, &rss, outcome));
    }
    if json_out {
        println!(
            "{}",
            json!({
                "mode": "memory", "broker": binary.describe(),
                "idle_secs": args.idle, "settle_secs": args.settle, "runs": runs,
            })
        );
    }
    Ok(())
}

fn run_one(load: Load, args: &MemoryArgs, binary: &BrokerBinary) -> Result<(Rss, LoadOutcome)> {
    let mut env = Vec::new();
    if load == Load::Services {
        env.push((
            "PLANTD_BROKER_SERVICE_LINGER_MS".to_owned(),
            args.linger_ms.to_string(),
        ));
        // The bench's workers never heartbeat: keep them registered until they leave.
        env.push((
            "PLANTD_BROKER_HEARTBEAT_LIVENESS".to_owned(),
            "100".to_owned(),
        ));
    }
    env.extend(args.broker_env.iter().cloned());
    let mut broker = BrokerProcess::spawn(binary, &env)?;
    broker.wait_ready(Duration::from_secs(20))?;
    // The idle footprint: measured, not a synchronisation.
    std::thread::sleep(Duration::from_secs_f64(args.idle));
    let before = broker.rss_kib()?;

    let outcome = match load {
        Load::Garbage => garbage::run(&broker, args)?,
        Load::Unread => unread::run(&broker, args)?,
        Load::Services => services::run(&broker, args)?,
    };

    let ended = Instant::now();
    let end_of_load = broker.rss_kib()?;
    let target = 2 * before + TARGET_SLACK_KIB;
    let mut under_target_after = (end_of_load < target).then_some(0.0);
    let mut after = end_of_load;
    let settle = Duration::from_secs_f64(args.settle);
    while ended.elapsed() < settle {
        std::thread::sleep(SAMPLE_EVERY.min(settle.saturating_sub(ended.elapsed())));
        after = broker.rss_kib()?;
        if after < target && under_target_after.is_none() {
            under_target_after = Some(ended.elapsed().as_secs_f64());
        }
    }
    let rss = Rss {
        before,
        peak: broker.peak_rss_kib()?,
        end_of_load,
        after,
        under_target_after,
    };
    Ok((rss, outcome))
}

fn print_text(load: Load, rss: &Rss, outcome: &LoadOutcome, binary: &BrokerBinary, settle: f64) {
    println!("memory {}: {}", load.name(), outcome.shape);
    println!("  broker {}", binary.describe());
    println!(
        "  RSS before {:.1} MB, peak {:.1} MB, end of load {:.1} MB, after {settle} s {:.1} MB",
        mb(rss.before),
        mb(rss.peak),
        mb(rss.end_of_load),
        mb(rss.after)
    );
    let verdict = match rss.under_target_after {
        Some(secs) if rss.after < rss.target() => format!("met ({secs:.1} s after the load)"),
        Some(secs) => format!("not met at the end (was below {secs:.1} s after the load)"),
        None => "not met".to_owned(),
    };
    println!(
        "  target < {:.1} MB (2 × before + 20 MB): {verdict}",
        mb(rss.target())
    );
    for line in &outcome.lines {
        println!("  {line}");
    }
}

fn run_json(load: Load, rss: &Rss, outcome: LoadOutcome) -> Value {
    let mut run = json!({
        "load": load.name(),
        "shape": outcome.shape,
        "rss_mb": {
            "before": mb(rss.before), "peak": mb(rss.peak),
            "end_of_load": mb(rss.end_of_load), "after": mb(rss.after),
        },
        "target_mb": mb(rss.target()),
        "target_met": rss.after < rss.target(),
        "under_target_after_secs": rss.under_target_after,
    });
    if let (Some(run), Value::Object(fields)) = (run.as_object_mut(), outcome.fields) {
        run.extend(fields);
    }
    run
}

/// Counter deltas between two `mmi.broker` replies, for the counters that moved (nested maps
/// such as `error_replies` are flattened as `error_replies.503`).
fn counter_deltas(
    before: &plantd_worker_sdk::client::BrokerInfo,
    after: &plantd_worker_sdk::client::BrokerInfo,
) -> serde_json::Map<String, Value> {
    fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, u64)>) {
        match value {
            Value::Number(n) => out.extend(n.as_u64().map(|n| (prefix.to_owned(), n))),
            Value::Object(map) => {
                for (k, v) in map {
                    flatten(&format!("{prefix}.{k}"), v, out);
                }
            }
            _ => {}
        }
    }
    let flat = |info: &plantd_worker_sdk::client::BrokerInfo| {
        let mut out = Vec::new();
        for (k, v) in &info.counters {
            flatten(k, v, &mut out);
        }
        out
    };
    let old: std::collections::HashMap<String, u64> = flat(before).into_iter().collect();
    flat(after)
        .into_iter()
        .filter_map(|(k, v)| {
            let delta = v.saturating_sub(old.get(&k).copied().unwrap_or(0));
            (delta > 0).then(|| (k, json!(delta)))
        })
        .collect()
}
