//! The one receive path: frames off a subscriber into [`Ingest::handle`], a gap handed to
//! a replay of its own when the engine offers replay. The bound socket and each dialed engine differ
//! only in how the socket is opened and what a broken stream means.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::engines::EngineSpec;
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
    ingest: &Arc<Ingest>,
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
        let (peer, frames) = frames;
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        let source = match dialed {
            Some(endpoint) => Source::Dialed(endpoint),
            None => Source::Bound { peer },
        };
        feed(ingest, source, &refs);
    }
}

/// A peer dropped for declaring an oversized message is counted.
pub(super) fn count_oversized(ingest: &Ingest, error: &TransportError) {
    if error.is_oversized() {
        ingest.metrics.oversized_messages.inc();
    }
}

/// Apply one message. A gap is replayed in its own task when the engine offers replay:
/// this message and that engine's next ones wait for its history, no other engine waits.
fn feed(ingest: &Arc<Ingest>, source: Source<'_>, frames: &[&[u8]]) {
    if let Outcome::NeedsReplay { endpoint, from, .. } = ingest.handle(source, frames, false) {
        ingest.replay_gap(endpoint.into(), from, frames);
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
/// long as the engine is allowed. A broken stream takes the engine out of routing until it
/// answers its health check again; a stream dialed again may come from a restarted engine,
/// so the engine's index entry is emptied; every stream dialed starts by re-learning what
/// the engine still buffers.
pub async fn connect_loop(
    ingest: Arc<Ingest>,
    spec: EngineSpec,
    mut shutdown: watch::Receiver<bool>,
) {
    let addr = format!("tcp://{}:{}", spec.host, spec.zmq_port);
    let mut dialed_before = false;
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
        if dialed_before {
            ingest.engine_restarted(&spec.endpoint, "its event stream was dialed again");
        }
        dialed_before = true;
        ingest.relearn(spec.endpoint.clone());
        match pump(&ingest, &mut socket, Some(&spec.endpoint), &mut shutdown).await {
            Ended::Shutdown => return,
            Ended::Broken(e) => {
                count_oversized(&ingest, &e);
                tracing::warn!(%addr, "engine stream broken, reconnecting: {e}");
                if ingest.config.health_checked() {
                    ingest.engine_failed(&spec.endpoint, format!("KV-event stream broken: {e}"));
                }
            }
        }
        if !ingest.is_allowed_endpoint(&spec.endpoint) {
            return;
        }
    }
}
