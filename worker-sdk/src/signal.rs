//! Process signals: every plantd binary stops cleanly on SIGINT (Ctrl-C) or SIGTERM.

/// Resolves when the process receives SIGINT or SIGTERM.
pub async fn wait_for_shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Spawns a task that cancels `shutdown` on SIGINT or SIGTERM. Call inside a tokio runtime.
pub fn cancel_on_signal(shutdown: crate::Shutdown) {
    tokio::spawn(async move {
        wait_for_shutdown_signal().await;
        shutdown.cancel();
    });
}
