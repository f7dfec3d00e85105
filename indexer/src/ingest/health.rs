//! Health of engines that went silent: an engine whose last event is older than
//! `--silence-timeout-secs` is asked `GET /health`, and dropped with its blocks if it does
//! not answer.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Ingest;

/// How long one `/health` check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The HTTP client of the health checks; built at start so a failure stops the daemon
/// instead of silently disabling the checks.
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder().timeout(CHECK_TIMEOUT).build()
}

/// Check silent engines every half silence timeout until shutdown.
pub async fn health_loop(
    ingest: Arc<Ingest>,
    client: reqwest::Client,
    mut shutdown: watch::Receiver<bool>,
) {
    let timeout = Duration::from_secs(ingest.config.silence_timeout_secs.max(1));
    let mut tick = tokio::time::interval(timeout / 2);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        for pod in ingest.registry.silent_for(timeout) {
            let url = format!("http://{}/health", pod.endpoint);
            let healthy = matches!(client.get(&url).send().await, Ok(r) if r.status().is_success());
            if !healthy {
                tracing::warn!(%pod, "silent and not healthy: dropped");
                ingest.drop_endpoint(&pod.endpoint);
            }
        }
    }
}
