//! Stopping on the signals scripts and service managers send: SIGINT
//! (Ctrl-C), SIGTERM and SIGHUP. Whoever owns a child (the local chain)
//! awaits [`terminated`] beside its work, so the child is stopped on any of
//! them; when the parent dies without a signal, the child's watchdog stops
//! it (see `tollgate_devnet`).

/// Resolves on the first SIGINT, SIGTERM or SIGHUP.
pub async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let wait = |kind: SignalKind| async move {
            match signal(kind) {
                Ok(mut stream) => {
                    stream.recv().await;
                }
                // Cannot listen for it: never resolves (the others still do).
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = wait(SignalKind::interrupt()) => {}
            _ = wait(SignalKind::terminate()) => {}
            _ = wait(SignalKind::hangup()) => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
