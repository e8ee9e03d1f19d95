//! `plant bench broker --sdk-client blocking|async`: the bench's echo load sent through the SDK's
//! own clients instead of raw DEALER sockets, so the run includes what the client costs (a socket
//! per request from a pool for the blocking client, request tags on one socket for the async one,
//! reply matching, timeouts, retries, connection monitoring).
//!
//! - `blocking`: one [`Client`] per bench client, shared by `--window` threads that each make one
//!   request at a time.
//! - `async`: one [`AsyncClient`] (one I/O thread) per bench client, with `--window` requests in
//!   flight at once on a current-thread tokio runtime.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use clap::ValueEnum;
use plantd_worker_sdk::client::{AsyncClient, Client, ClientError};
use plantd_worker_sdk::protocol::Dialect;
use tokio::task::JoinSet;

use super::load::{payload, run_clients, ClientOutcome, LoadReport, LoadSpec};

/// Which SDK client carries the bench's requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SdkClient {
    /// `Client`: `--window` threads per client, one request at a time each.
    Blocking,
    /// `AsyncClient`: `--window` requests in flight per client on one I/O thread.
    Async,
}

impl SdkClient {
    /// The name `--sdk-client` takes.
    pub fn name(self) -> &'static str {
        match self {
            SdkClient::Blocking => "blocking",
            SdkClient::Async => "async",
        }
    }
}

/// Runs the load of `spec` against `service` through SDK clients of `kind`.
pub fn run_load(
    kind: SdkClient,
    service: &str,
    dialect: Dialect,
    spec: &LoadSpec,
    progress: &AtomicU64,
) -> LoadReport {
    run_clients(spec, |id, total, deadline| {
        let run = Run {
            service,
            spec,
            id,
            total,
            deadline,
            progress,
        };
        match kind {
            SdkClient::Blocking => run.blocking(dialect),
            SdkClient::Async => run.asynchronous(dialect),
        }
    })
}

/// One bench client's share of the load.
struct Run<'a> {
    service: &'a str,
    spec: &'a LoadSpec,
    id: u64,
    total: u64,
    deadline: Option<Instant>,
    progress: &'a AtomicU64,
}

impl Run<'_> {
    /// Whether request number `seq` should still be sent.
    fn more(&self, seq: u64) -> bool {
        match self.deadline {
            Some(d) => Instant::now() < d,
            None => seq < self.total,
        }
    }

    /// Checks the reply to request `seq` sent at `sent` and records it.
    fn record(
        &self,
        outcome: &mut ClientOutcome,
        seq: u64,
        sent: Instant,
        reply: Result<Vec<Vec<u8>>, ClientError>,
    ) {
        match reply {
            Ok(frames) if frames == [payload(self.id, seq, self.spec.size)] => {
                let _ = outcome.histogram.record(sent.elapsed().as_micros() as u64);
                outcome.completed += 1;
                self.progress.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => outcome.fail("reply does not match its request".into()),
            Err(e) => outcome.fail(e.to_string()),
        }
    }

    fn blocking(&self, dialect: Dialect) -> ClientOutcome {
        let client = match Client::connect_with(&self.spec.endpoint, self.spec.curve.clone()) {
            Ok(c) => c
                .with_timeout(self.spec.reply_timeout)
                .with_dialect(dialect),
            Err(e) => {
                let mut outcome = ClientOutcome::new();
                outcome.fail(format!("client: {e}"));
                return outcome;
            }
        };
        let next = AtomicU64::new(0);
        std::thread::scope(|scope| {
            let threads: Vec<_> = (0..self.spec.window)
                .map(|_| {
                    let (client, next) = (&client, &next);
                    scope.spawn(move || {
                        let mut outcome = ClientOutcome::new();
                        loop {
                            let seq = next.fetch_add(1, Ordering::Relaxed);
                            if !self.more(seq) {
                                return outcome;
                            }
                            let body = vec![payload(self.id, seq, self.spec.size)];
                            let sent = Instant::now();
                            let reply = client.request(self.service, body);
                            self.record(&mut outcome, seq, sent, reply);
                        }
                    })
                })
                .collect();
            let mut outcome = ClientOutcome::new();
            for thread in threads {
                outcome.merge(thread.join().expect("bench client thread panicked"));
            }
            outcome
        })
    }

    fn asynchronous(&self, dialect: Dialect) -> ClientOutcome {
        let mut outcome = ClientOutcome::new();
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                outcome.fail(format!("runtime: {e}"));
                return outcome;
            }
        };
        let client = match AsyncClient::connect_with(&self.spec.endpoint, self.spec.curve.clone()) {
            Ok(c) => c
                .with_timeout(self.spec.reply_timeout)
                .with_dialect(dialect),
            Err(e) => {
                outcome.fail(format!("client: {e}"));
                return outcome;
            }
        };
        runtime.block_on(async {
            let mut tasks = JoinSet::new();
            let mut next = 0u64;
            loop {
                while tasks.len() < self.spec.window && self.more(next) {
                    let (client, seq) = (client.clone(), next);
                    let body = vec![payload(self.id, seq, self.spec.size)];
                    let service = self.service.to_owned();
                    tasks.spawn(async move {
                        let sent = Instant::now();
                        (seq, sent, client.request(&service, body).await)
                    });
                    next += 1;
                }
                match tasks.join_next().await {
                    Some(Ok((seq, sent, reply))) => self.record(&mut outcome, seq, sent, reply),
                    Some(Err(e)) => outcome.fail(format!("request task: {e}")),
                    None => return,
                }
            }
        });
        outcome
    }
}
