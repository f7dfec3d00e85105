//! How every kvroute binary starts and stops, written once: logs to stderr filtered by
//! `RUST_LOG` (default `info`), a multi-threaded tokio runtime, and a shutdown future that
//! completes on SIGTERM or ctrl-c. Daemons take that future as an argument (their libraries
//! never wait for signals themselves), so tests and benches stop them with their own.

use std::future::Future;
use std::process::ExitCode;

/// Logs to stderr, filtered by `RUST_LOG` (default `info`). Once per process.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Logging, then `main` on a fresh multi-threaded runtime (`worker_threads` or one per
/// core); an error is printed as `{name}: {error:#}` and exits with failure.
pub fn run<F>(name: &str, worker_threads: Option<usize>, main: F) -> ExitCode
where
    F: Future<Output = anyhow::Result<()>>,
{
    init_logging();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = worker_threads {
        builder.worker_threads(n);
    }
    let result = builder
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the runtime: {e}"))
        .and_then(|runtime| runtime.block_on(main));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGTERM (what Kubernetes and process supervisors send) or ctrl-c.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
