//! `plant bench state-postgres --dsn DSN`: the state service on PostgreSQL against the same service
//! on SQLite, in one run, interleaved.
//!
//! Starts, in this process, two brokers and a state service on each (`plantd_state::run`): one on
//! a SQLite file in a temporary directory (`store: sqlite`, the default durability), one on the
//! PostgreSQL database `--dsn` names (`store: postgres`; every commit flushed,
//! `synchronous_commit=on`). `--clients` blocking clients then drive `state-set` (fresh keys) and
//! `state-get` (existing keys) phases of `--seconds`, alternating the backends in ABBA order over
//! two rounds so drift during the run hits both alike. Every reply is checked. The figures are
//! PostgreSQL / SQLite for `state-set` and `state-get`. Use a scratch database: the keys stay.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use plantd_worker_sdk::client::Client;
use plantd_worker_sdk::protocol::Dialect;
use plantd_worker_sdk::testing::free_port;
use plantd_worker_sdk::Frames;
use serde_json::json;

use super::InProcessBroker;

/// The state service's MDP name.
const STATE: &str = "org.plantd.State";

/// Options of `plant bench state-postgres`.
#[derive(Args, Debug, Clone)]
pub struct StatePostgresArgs {
    /// PostgreSQL DSN of a scratch database (URL or key=value).
    #[arg(long, env = "PLANTD_BENCH_POSTGRES_DSN", hide_env_values = true)]
    pub dsn: String,
    /// Concurrent blocking clients per phase.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Length of each phase in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Worker sessions of each state service.
    #[arg(long, default_value_t = 4)]
    pub sessions: usize,
    /// Requests each of those sessions may hold at once (credit extension; 1 is plain MDP).
    #[arg(long, default_value_t = 1)]
    pub credit: u32,
}

/// What one phase measured.
struct Phase {
    name: &'static str,
    rate: f64,
    completed: u64,
    errors: u64,
    first_error: Option<String>,
}

/// `args.clients` threads for `args.seconds`, each sending `make(client, i)` back to back.
fn phase(
    name: &'static str,
    endpoint: &str,
    args: &StatePostgresArgs,
    make: impl Fn(usize, u64) -> Frames + Sync,
) -> Result<Phase> {
    let done = AtomicU64::new(0);
    let errors = AtomicU64::new(0);
    let first_error = Mutex::new(None::<String>);
    let stop = AtomicBool::new(false);
    let clients: Vec<Client> = (0..args.clients)
        .map(|_| Client::connect(endpoint).map(|c| c.with_timeout(Duration::from_secs(10))))
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    std::thread::scope(|s| {
        for (c, client) in clients.into_iter().enumerate() {
            let (done, errors, first_error, stop, make) =
                (&done, &errors, &first_error, &stop, &make);
            s.spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    match client.request(STATE, make(c, i)) {
                        Ok(reply)
                            if reply.len() == 1 && reply[0].starts_with(br#"{"success":true"#) =>
                        {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        other => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            let problem = match other {
                                Ok(reply) => format!(
                                    "unexpected reply {:?}",
                                    reply
                                        .first()
                                        .map(|f| String::from_utf8_lossy(f).into_owned())
                                ),
                                Err(e) => e.to_string(),
                            };
                            let mut first = first_error.lock().unwrap_or_else(|e| e.into_inner());
                            first.get_or_insert(format!("{name}: {problem}"));
                        }
                    }
                    i += 1;
                }
            });
        }
        // The measurement window itself, not a synchronisation.
        std::thread::sleep(Duration::from_secs_f64(args.seconds));
        stop.store(true, Ordering::Relaxed);
    });
    let completed = done.load(Ordering::Relaxed);
    Ok(Phase {
        name,
        rate: completed as f64 / started.elapsed().as_secs_f64(),
        completed,
        errors: errors.load(Ordering::Relaxed),
        first_error: first_error.into_inner().unwrap_or_else(|e| e.into_inner()),
    })
}

/// A request body for key `c{client}-{n % 1000}`, with a value for `state-set`.
fn body(client: usize, n: u64, with_value: bool) -> Vec<u8> {
    let key = format!("c{client}-{}", n % 1000);
    if with_value {
        format!(r#"{{"service":"bench","key":"{key}","value":{{"n":{n},"s":"some text"}}}}"#)
    } else {
        format!(r#"{{"service":"bench","key":"{key}"}}"#)
    }
    .into_bytes()
}

/// Runs `plant bench state-postgres`.
pub fn run(args: StatePostgresArgs, json: bool) -> Result<()> {
    if args.clients == 0 || args.sessions == 0 || args.seconds <= 0.0 {
        bail!("--clients, --sessions and --seconds must be positive");
    }
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let mut sqlite = InProcessBroker::start(None)?;
    let mut postgres = InProcessBroker::start(None)?;
    let config = |endpoint: &str| plantd_state::StateConfig {
        db: dir.path().join("bench-state.db"),
        broker_endpoint: endpoint.to_owned(),
        concurrency: args.sessions,
        credit: args.credit,
        health_host: "127.0.0.1".into(),
        health_port: free_port(),
        bus_endpoint: String::new(),
        auth: plantd_worker_sdk::auth::AuthConfig::off(),
        log_level: "warn".into(),
        ..plantd_state::StateConfig::default()
    };
    sqlite.spawn(plantd_state::run(
        config(&sqlite.endpoint),
        sqlite.shutdown.clone(),
    ));
    let on_postgres = plantd_state::StateConfig {
        store: plantd_state::store::Backend::Postgres,
        postgres: plantd_pg_util::PostgresConfig::with_dsn(args.dsn.clone()),
        ..config(&postgres.endpoint)
    };
    postgres.spawn(plantd_state::run(on_postgres, postgres.shutdown.clone()));
    for endpoint in [&sqlite.endpoint, &postgres.endpoint] {
        super::wait_for_service(endpoint, STATE, Dialect::V02, None)?;
    }

    let run_phase = |name, endpoint: &str, set: bool| {
        phase(name, endpoint, &args, |c, i| {
            if set {
                vec![b"state-set".to_vec(), body(c, i, true)]
            } else {
                vec![b"state-get".to_vec(), body(c, i % 20, false)]
            }
        })
    };
    let mut phases = Vec::new();
    for round in 0..2 {
        for set in [true, false] {
            let (a, b) = if set {
                ("set sqlite", "set postgres")
            } else {
                ("get sqlite", "get postgres")
            };
            let on_sqlite = || run_phase(a, &sqlite.endpoint, set);
            let on_pg = || run_phase(b, &postgres.endpoint, set);
            if round == 0 {
                phases.push(on_sqlite()?);
                phases.push(on_pg()?);
            } else {
                phases.push(on_pg()?);
                phases.push(on_sqlite()?);
            }
        }
    }
    let mean = |name: &str| {
        let rates: Vec<f64> = phases
            .iter()
            .filter(|p| p.name == name)
            .map(|p| p.rate)
            .collect();
        rates.iter().sum::<f64>() / rates.len() as f64
    };
    let set = mean("set postgres") / mean("set sqlite");
    let get = mean("get postgres") / mean("get sqlite");
    if json {
        let list: Vec<_> = phases
            .iter()
            .map(|p| json!({"phase": p.name, "requests_per_sec": p.rate, "completed": p.completed, "errors": p.errors}))
            .collect();
        println!(
            "{}",
            json!({
                "mode": "state-postgres", "clients": args.clients, "seconds": args.seconds,
                "sessions": args.sessions, "credit": args.credit, "phases": list,
                "set_ratio": set, "get_ratio": get,
            })
        );
    } else {
        println!(
            "state, PostgreSQL vs SQLite: {} clients, {} s per phase, {} sessions × credit {}",
            args.clients, args.seconds, args.sessions, args.credit
        );
        for p in &phases {
            println!("  {:<13} {:>9.0} req/s", p.name, p.rate);
        }
        println!(
            "  state-set postgres / sqlite {set:.2}× (target ≥ 0.5×), state-get postgres / sqlite {get:.2}×"
        );
    }
    let errors: u64 = phases.iter().map(|p| p.errors).sum();
    if errors > 0 {
        let first = phases.iter().find_map(|p| p.first_error.clone());
        bail!(
            "{errors} requests failed: {}",
            first.as_deref().unwrap_or("unknown")
        );
    }
    Ok(())
}
