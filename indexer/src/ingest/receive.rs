//! The one receive path: frames off a subscriber into [`Ingest::handle`], a gap replayed
//! first when the engine offers replay. The bound socket and each dialed engine differ
//! only in how the socket is opened and what a broken stream means.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::engines::EngineSpec;
use super::replay::replay;
use super::transport::{Subscriber, TransportError};
use super::{Ingest, Outcome, Source};

/// How long to wait before dialing an engine that was not reachable again.
const REDIAL_DELAY: Duration = Duration::from_millis(500);

/// Why [`pump`] returned.
enum Ended {
    Shutdown,
    Broken(TransportError),
}

/// Feed every message from `socket` until shutdown or a receive error.
async fn pump(
    ingest: &Ingest,
    socket: &mut Subscriber,
    dialed: Option<&str>,
    shutdown: &mut watch::Receiver<bool>,
) -> Ended {
    loop {
        let frames = tokio::select! {
            _ = shutdown.changed() => return Ended::Shutdown,
            r = socket.recv() => match r {
                Ok(frames) => frames,
                Err(e) => return Ended::Broken(e),
            },
        };
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        let source = match dialed {
            Some(endpoint) => Source::Dialed(endpoint),
            None => Source::Bound,
        };
        feed(ingest, source, &refs).await;
    }
}

/// A peer dropped for declaring an oversized message is counted.
pub(super) fn count_oversized(ingest: &Ingest, error: &TransportError) {
    if error.is_oversized() {
        ingest.metrics.oversized_messages.inc();
    }
}

/// Apply one message, replaying a gap first when the engine offers it.
async fn feed(ingest: &Ingest, source: Source<'_>, frames: &[&[u8]]) {
    if let Outcome::NeedsReplay {
        endpoint,
        host,
        from,
        to,
    } = ingest.handle(source, frames, false)
    {
        ingest.metrics.replays.inc();
        if let Some(port) = ingest.config.replay_port {
            if let Err(e) = replay(ingest, &endpoint, &host, port, from, to).await {
                if let Some(e) = e.downcast_ref::<TransportError>() {
                    count_oversized(ingest, e);
                }
                tracing::warn!(%host, "replay failed: {e}");
            }
        }
        ingest.handle(source, frames, true);
    }
}

/// The indexer binds; engines connect and their topics say who they are.
pub async fn bind_loop(ingest: Arc<Ingest>, addr: String, mut shutdown: watch::Receiver<bool>) {
    let mut socket = match Subscriber::bind(&addr).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(%addr, "cannot bind the KV-event socket: {e}");
            return;
        }
    };
    tracing::info!(%addr, "listening for KV events");
    // One engine's broken connection is not the socket's end: keep receiving.
    while let Ended::Broken(e) = pump(&ingest, &mut socket, None, &mut shutdown).await {
        count_oversized(&ingest, &e);
        tracing::warn!("KV-event receive error: {e}");
    }
}

/// The indexer dials one engine's PUB, and dials again whenever the stream breaks, for as
/// long as the engine is allowed.
pub async fn connect_loop(
    ingest: Arc<Ingest>,
    spec: EngineSpec,
    mut shutdown: watch::Receiver<bool>,
) {
    let addr = format!("tcp://{}:{}", spec.host, spec.zmq_port);
    loop {
        let mut socket = tokio::select! {
            _ = shutdown.changed() => return,
            r = Subscriber::connect(&addr) => match r {
                Ok(s) => s,
                Err(e) => {
                    count_oversized(&ingest, &e);
                    tracing::debug!(%addr, "engine not reachable yet: {e}");
                    tokio::select! {
                        _ = shutdown.changed() => return,
                        _ = tokio::time::sleep(REDIAL_DELAY) => continue,
                    }
                }
            },
        };
        tracing::info!(%addr, "subscribed to engine");
        match pump(&ingest, &mut socket, Some(&spec.endpoint), &mut shutdown).await {
            Ended::Shutdown => return,
            Ended::Broken(e) => {
                count_oversized(&ingest, &e);
                tracing::warn!(%addr, "engine stream broken, reconnecting: {e}");
            }
        }
        if !ingest.is_allowed_endpoint(&spec.endpoint) {
            return;
        }
    }
}
