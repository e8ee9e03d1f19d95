//! `plant bench state`: state service throughput as ratios to plain echo traffic through the same
//! broker in the same run (absolute rates swing with the machine; ratios much less).
//!
//! Starts, in this process, a broker, an SDK echo worker and the state service (`plantd_state::run`
//! on a SQLite file in a temporary directory), each with `--sessions` worker sessions. Then
//! `--clients` blocking clients drive each phase back to back for `--seconds`: echo, `state-set`
//! on fresh keys, `state-get` on existing keys, echo again. The echo figure for the ratios is the
//! mean of the two echo phases, so drift during the run averages out. Every reply is checked.
//!
//! With `--auth` the same requests run against two systems in this process, interleaved phase by
//! phase: one state service with `auth.mode: off`, and one with `auth.mode: required` beside an
//! identity service, each request carrying the bootstrap admin's token. The figures are
//! required / off for `state-set` and `state-get`, from two rounds in ABBA order.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use plantd_worker_sdk::client::Client;
use plantd_worker_sdk::protocol::Dialect;
use plantd_worker_sdk::testing::free_port;
use plantd_worker_sdk::{Frames, HandlerError, Worker};
use serde_json::json;

use super::InProcessBroker;

/// The echo service the bench registers next to the state service.
const ECHO: &str = "bench.state.echo";
/// The state service's MDP name.
const STATE: &str = "org.plantd.State";

/// Options of `plant bench state`.
#[derive(Args, Debug, Clone)]
pub struct StateBenchArgs {
    /// Concurrent blocking clients per phase.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Length of each phase in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Worker sessions of the echo worker and of the state service.
    #[arg(long, default_value_t = 4)]
    pub sessions: usize,
    /// Requests each of those sessions may hold at once (credit extension; 1 is plain MDP).
    #[arg(long, default_value_t = 1)]
    pub credit: u32,
    /// Compare the state service with tokens required against the same with auth off.
    #[arg(long)]
    pub auth: bool,
}

/// What one phase measured.
struct Phase {
    name: &'static str,
    rate: f64,
    completed: u64,
    errors: u64,
    first_error: Option<String>,
}

/// Runs `clients` threads for `seconds`, each sending `make(client, i)` back to back to `service`;
/// every reply must pass `check`.
fn phase(
    name: &'static str,
    endpoint: &str,
    service: &str,
    args: &StateBenchArgs,
    make: impl Fn(usize, u64) -> Frames + Sync,
    check: impl Fn(&Frames) -> bool + Sync,
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
            let (done, errors, first_error, stop, make, check) =
                (&done, &errors, &first_error, &stop, &make, &check);
            s.spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let problem = match client.request(service, make(c, i)) {
                        Ok(reply) if check(&reply) => None,
                        Ok(reply) => Some(format!(
                            "unexpected reply {:?}",
                            reply
                                .first()
                                .map(|f| String::from_utf8_lossy(f).into_owned())
                        )),
                        Err(e) => Some(e.to_string()),
                    };
                    match problem {
                        None => {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(problem) => {
                            errors.fetch_add(1, Ordering::Relaxed);
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

/// The phases as the JSON report lists them.
fn phase_list(phases: &[Phase]) -> Vec<serde_json::Value> {
    phases
        .iter()
        .map(|p| json!({"phase": p.name, "requests_per_sec": p.rate, "completed": p.completed, "errors": p.errors}))
        .collect()
}

/// An error naming the first failure if any request of any phase failed.
fn no_errors(phases: &[Phase]) -> Result<()> {
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

/// A state request body for key `c{client}-{n}`, with a value for `state-set`.
fn body(client: usize, n: u64, with_value: bool) -> Vec<u8> {
    body_with_token(client, n, with_value, None)
}

/// [`body`], carrying `token` if given.
fn body_with_token(client: usize, n: u64, with_value: bool, token: Option<&str>) -> Vec<u8> {
    let key = format!("c{client}-{}", n % 1000);
    let token = token
        .map(|t| format!(r#","token":"{t}""#))
        .unwrap_or_default();
    if with_value {
        format!(r#"{{"service":"bench","key":"{key}","value":{{"n":{n},"s":"some text"}}{token}}}"#)
    } else {
        format!(r#"{{"service":"bench","key":"{key}"{token}}}"#)
    }
    .into_bytes()
}

fn success(reply: &Frames) -> bool {
    reply.len() == 1 && reply[0].starts_with(br#"{"success":true"#)
}

/// Runs `plant bench state`.
pub fn run(args: StateBenchArgs, json: bool) -> Result<()> {
    if args.clients == 0 || args.sessions == 0 || args.seconds <= 0.0 {
        bail!("--clients, --sessions and --seconds must be positive");
    }
    if args.auth {
        return run_auth(args, json);
    }
    // Declared first so it is removed last, after the services on it have stopped.
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let mut broker = InProcessBroker::start(None)?;
    let endpoint = broker.endpoint.clone();
    let echo = Worker::builder(ECHO)
        .endpoint(endpoint.clone())
        .concurrency(args.sessions)
        .credit(args.credit)
        .handler(|request: Frames| -> Result<Frames, HandlerError> { Ok(request) })
        .build()?;
    let stop = broker.shutdown.clone();
    broker.spawn(echo.run(stop.clone()));
    let state = state_config(
        &args,
        &endpoint,
        dir.path(),
        plantd_worker_sdk::auth::AuthConfig::off(),
    );
    broker.spawn(plantd_state::run(state, stop));
    // Our own in-process broker, so the native dialect.
    super::wait_for_service(&endpoint, ECHO, Dialect::V02, None)?;
    super::wait_for_service(&endpoint, STATE, Dialect::V02, None)?;

    let echo_phase = |name| {
        phase(
            name,
            &endpoint,
            ECHO,
            &args,
            |c, i| vec![b"echo".to_vec(), body(c, i, true)],
            |r| r.len() == 2,
        )
    };
    let phases = [
        echo_phase("echo")?,
        phase(
            "state-set",
            &endpoint,
            STATE,
            &args,
            |c, i| vec![b"state-set".to_vec(), body(c, i, true)],
            success,
        )?,
        // Every client wrote keys c{c}-0.. in the set phase; read back ones that exist.
        phase(
            "state-get",
            &endpoint,
            STATE,
            &args,
            |c, i| vec![b"state-get".to_vec(), body(c, i % 20, false)],
            success,
        )?,
        echo_phase("echo")?,
    ];
    let echo = (phases[0].rate + phases[3].rate) / 2.0;
    let (set, get) = (phases[1].rate / echo, phases[2].rate / echo);
    if json {
        let list = phase_list(&phases);
        println!(
            "{}",
            json!({
                "mode": "state", "clients": args.clients, "seconds": args.seconds,
                "sessions": args.sessions, "credit": args.credit, "phases": list,
                "echo_requests_per_sec": echo,
                "set_ratio": set, "get_ratio": get,
            })
        );
    } else {
        println!(
            "state: {} clients, {} s per phase, {} sessions × credit {} per service",
            args.clients, args.seconds, args.sessions, args.credit
        );
        for p in &phases {
            println!("  {:<10} {:>9.0} req/s", p.name, p.rate);
        }
        println!("  state-set / echo {set:.2}×, state-get / echo {get:.2}×");
    }
    no_errors(&phases)
}

/// The state service's configuration for a bench on `endpoint`, its database in `dir`.
fn state_config(
    args: &StateBenchArgs,
    endpoint: &str,
    dir: &std::path::Path,
    auth: plantd_worker_sdk::auth::AuthConfig,
) -> plantd_state::StateConfig {
    plantd_state::StateConfig {
        db: dir.join("bench-state.db"),
        broker_endpoint: endpoint.to_owned(),
        concurrency: args.sessions,
        credit: args.credit,
        health_host: "127.0.0.1".into(),
        health_port: free_port(),
        bus_endpoint: String::new(),
        auth,
        log_level: "warn".into(),
        ..plantd_state::StateConfig::default()
    }
}

/// `plant bench state --auth`: tokens required against auth off, interleaved.
fn run_auth(args: StateBenchArgs, json: bool) -> Result<()> {
    use plantd_worker_sdk::auth::AuthConfig;
    let off_dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let on_dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let mut off = InProcessBroker::start(None)?;
    let mut on = InProcessBroker::start(None)?;
    off.spawn(plantd_state::run(
        state_config(&args, &off.endpoint, off_dir.path(), AuthConfig::off()),
        off.shutdown.clone(),
    ));
    let identity = plantd_identity::IdentityConfig {
        db: on_dir.path().join("bench-identity.db"),
        broker_endpoint: on.endpoint.clone(),
        health_host: "127.0.0.1".into(),
        health_port: free_port(),
        event_endpoint: String::new(),
        log_level: "warn".into(),
        ..plantd_identity::IdentityConfig::default()
    };
    let password_file = plantd_identity::admin_password_path(&identity);
    on.spawn(plantd_identity::run(identity, on.shutdown.clone()));
    let required = AuthConfig {
        // No bus in the bench: revocations would arrive there; verification is the same.
        event_endpoint: String::new(),
        ..AuthConfig::default()
    };
    on.spawn(plantd_state::run(
        state_config(&args, &on.endpoint, on_dir.path(), required),
        on.shutdown.clone(),
    ));
    for endpoint in [&off.endpoint, &on.endpoint] {
        super::wait_for_service(endpoint, STATE, Dialect::V02, None)?;
    }
    super::wait_for_service(&on.endpoint, "org.plantd.Identity", Dialect::V02, None)?;
    let token = admin_token(&on.endpoint, &password_file)?;

    let run_phase = |name, endpoint: &str, token: Option<&str>, set: bool| {
        phase(
            name,
            endpoint,
            STATE,
            &args,
            |c, i| {
                if set {
                    vec![b"state-set".to_vec(), body_with_token(c, i, true, token)]
                } else {
                    vec![
                        b"state-get".to_vec(),
                        body_with_token(c, i % 20, false, token),
                    ]
                }
            },
            success,
        )
    };
    // Two rounds in ABBA order (off first, then required first), so drift during the run and
    // whatever one phase leaves behind for the next (a WAL checkpoint) hit both alike.
    let mut phases = Vec::new();
    for round in 0..2 {
        for set in [true, false] {
            let (name_off, name_on) = if set {
                ("set off", "set required")
            } else {
                ("get off", "get required")
            };
            let off_phase = || run_phase(name_off, &off.endpoint, None, set);
            let on_phase = || run_phase(name_on, &on.endpoint, Some(&token), set);
            if round == 0 {
                phases.push(off_phase()?);
                phases.push(on_phase()?);
            } else {
                phases.push(on_phase()?);
                phases.push(off_phase()?);
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
    let set = mean("set required") / mean("set off");
    let get = mean("get required") / mean("get off");
    if json {
        let list = phase_list(&phases);
        println!(
            "{}",
            json!({
                "mode": "state-auth", "clients": args.clients, "seconds": args.seconds,
                "sessions": args.sessions, "credit": args.credit, "phases": list,
                "set_ratio": set, "get_ratio": get,
            })
        );
    } else {
        println!(
            "state, auth required vs off: {} clients, {} s per phase, {} sessions × credit {}",
            args.clients, args.seconds, args.sessions, args.credit
        );
        for p in &phases {
            println!("  {:<13} {:>9.0} req/s", p.name, p.rate);
        }
        println!("  state-set required / off {set:.2}×, state-get required / off {get:.2}×");
    }
    no_errors(&phases)
}

/// Logs in as the bootstrap admin whose password identity wrote to `password_file`.
fn admin_token(endpoint: &str, password_file: &std::path::Path) -> Result<String> {
    let password = std::fs::read_to_string(password_file)
        .with_context(|| format!("cannot read {}", password_file.display()))?;
    let body = json!({"identifier": "admin", "password": password.trim_end()});
    let reply = Client::connect(endpoint)?
        .with_timeout(Duration::from_secs(10))
        .request(
            "org.plantd.Identity",
            vec![
                b"auth".to_vec(),
                b"login".to_vec(),
                body.to_string().into_bytes(),
            ],
        )?;
    let reply: serde_json::Value =
        serde_json::from_slice(reply.first().map(Vec::as_slice).unwrap_or_default())
            .context("identity sent a reply that is not JSON")?;
    reply["data"]["access_token"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("admin login failed: {reply}"))
}
