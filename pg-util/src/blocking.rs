//! [`BlockingRuntime`]: a small tokio runtime of a store's own, with a blocking `run`, so a
//! service's synchronous threads (writer threads, MDP handler threads) can use an async
//! PostgreSQL pool without depending on the caller's runtime.

use std::future::Future;
use std::sync::Mutex;

/// A private multi-threaded runtime. Dropping it never blocks (the runtime is shut down in the
/// background), so it may be dropped anywhere, async code included.
#[derive(Debug)]
pub struct BlockingRuntime {
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
}

/// The runtime is gone (the store is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the database runtime has stopped")]
pub struct Stopped;

impl BlockingRuntime {
    /// A runtime with `threads` workers named `name`.
    pub fn new(name: &str, threads: usize) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name(name)
            .enable_all()
            .build()?;
        Ok(BlockingRuntime {
            handle: runtime.handle().clone(),
            runtime: Mutex::new(Some(runtime)),
        })
    }

    /// The runtime's handle (to spawn tasks or enter it).
    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    /// Runs `future` on the runtime and blocks this thread until it is done. Works from any
    /// thread, but blocks it: call it from blocking code, not from an async task.
    pub fn run<T, F>(&self, future: F) -> Result<T, Stopped>
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(future.await);
        });
        rx.recv().map_err(|_| Stopped)
    }
}

impl Drop for BlockingRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self
            .runtime
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            runtime.shutdown_background();
        }
    }
}
