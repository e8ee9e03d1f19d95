//! A complete plantd worker: serves `org.example.Greeter`, answering `[name]` with
//! `["hello <name>"]`, until Ctrl-C. Run it with `cargo run --example greeter` beside a broker.

use plantd_worker_sdk::{Frames, HandlerError, Shutdown, Worker};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Like the bundled services' PLANTD_<SERVICE>_BROKER_ENDPOINT.
    let endpoint = std::env::var("PLANTD_GREETER_BROKER_ENDPOINT")
        .unwrap_or_else(|_| "tcp://127.0.0.1:9797".into());
    let worker = Worker::builder("org.example.Greeter")
        .endpoint(endpoint)
        .concurrency(4)
        .handler(greet)
        .build()?;
    // Ctrl-C or SIGTERM cancels `shutdown`; `run` then tells the broker goodbye and returns.
    let shutdown = Shutdown::new();
    plantd_worker_sdk::signal::cancel_on_signal(shutdown.clone());
    worker.run(shutdown).await?;
    Ok(())
}

/// Called for each request, on a thread of its session (so it may block).
fn greet(request: Frames) -> Result<Frames, HandlerError> {
    let name = request
        .first()
        .ok_or_else(|| HandlerError::new("send a name"))?;
    Ok(vec![[b"hello ".as_slice(), name].concat()])
}
