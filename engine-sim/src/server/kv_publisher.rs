//! KV events out, as vLLM's `ZmqEventPublisher` sends them: one PUB socket (bound for the
//! indexer to dial, or connected to the indexer's bound SUB), every batch as the frames
//! `[topic, seq (8-byte big-endian), msgpack [ts, events, dp_rank]]` written by the
//! kvevents encoder, sequence numbers from 0 with no gaps, and the last messages kept for
//! the replay socket. The engine loop hands batches over a channel and never waits on the
//! network. A connected PUB is re-dialed when the connection drops, as libzmq (and so
//! vLLM) does, so an indexer that restarts in the connect-to-indexer wiring hears the
//! engine again; batches published meanwhile are lost to it, as with vLLM, and stay in
//! the replay buffer.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use kvroute_kvevents::{encode_message, EventBatch, WireGeneration};
use tokio::sync::mpsc;
use zeromq::{Socket, SocketEvent, SocketOptions, SocketSend, ZmqMessage};

use crate::server::ServerError;

/// The largest message a peer may send to the engine's sockets (subscriptions to the PUB,
/// requests to the replay ROUTER, all a few bytes): a larger declared frame drops the
/// connection before anything is allocated.
pub const MAX_INBOUND_MESSAGE_BYTES: usize = 64 * 1024;

/// How often a connected PUB re-dials a lost indexer (libzmq's `ZMQ_RECONNECT_IVL`).
pub const RECONNECT_INTERVAL: Duration = Duration::from_millis(100);

/// Options of every ZeroMQ socket the engine opens.
pub fn socket_options() -> SocketOptions {
    let mut options = SocketOptions::default();
    options.max_message_size(Some(MAX_INBOUND_MESSAGE_BYTES));
    options
}

/// Which side of the ZeroMQ connection the engine takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvEndpoint {
    /// PUB binds (vLLM's `"endpoint": "tcp://*:5557"`); the indexer connects.
    Bind(String),
    /// PUB connects to the indexer's bound SUB (the seed's wiring), from this local
    /// address when given (the engine's own, as a pod's is).
    Connect(String, Option<IpAddr>),
}

/// Sent messages, newest last, for the replay socket.
pub type ReplayBuffer = Arc<Mutex<VecDeque<(u64, [Vec<u8>; 3])>>>;

/// Where the engine loop drops its batches. A sink without a socket discards them (an
/// engine started without KV events, as vLLM's default).
#[derive(Clone)]
pub struct KvSink {
    tx: Option<mpsc::UnboundedSender<EventBatch>>,
}

impl KvSink {
    pub fn disabled() -> Self {
        Self { tx: None }
    }

    pub fn publish(&self, batch: EventBatch) {
        if let Some(tx) = &self.tx {
            // The publisher only stops with the process.
            let _ = tx.send(batch);
        }
    }
}

pub struct KvPublisherConfig {
    pub endpoint: KvEndpoint,
    pub topic: String,
    pub generation: WireGeneration,
    pub replay_capacity: usize,
}

/// Opens the socket (a bind must succeed now; a connect is retried until the indexer
/// listens) and starts the publishing task.
pub async fn start(config: KvPublisherConfig) -> Result<(KvSink, ReplayBuffer), ServerError> {
    let mut socket = zeromq::PubSocket::with_options(socket_options());
    if let KvEndpoint::Bind(addr) = &config.endpoint {
        socket
            .bind(&bind_address(addr))
            .await
            .map_err(|e| ServerError::Zmq(format!("binding {addr}: {e}")))?;
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let buffer: ReplayBuffer = Arc::new(Mutex::new(VecDeque::new()));
    tokio::spawn(publish_loop(config, socket, rx, buffer.clone()));
    Ok((KvSink { tx: Some(tx) }, buffer))
}

/// libzmq (and so vLLM's configuration) binds `tcp://*:PORT` on every interface; the
/// zeromq crate wants an address.
pub fn bind_address(endpoint: &str) -> String {
    endpoint.replacen("tcp://*:", "tcp://0.0.0.0:", 1)
}

async fn publish_loop(
    config: KvPublisherConfig,
    mut socket: zeromq::PubSocket,
    mut rx: mpsc::UnboundedReceiver<EventBatch>,
    buffer: ReplayBuffer,
) {
    let (dial, local) = match &config.endpoint {
        KvEndpoint::Connect(addr, local) => (Some(addr.clone()), *local),
        KvEndpoint::Bind(_) => (None, None),
    };
    // A bound PUB is always up; a connected one is up once dialed, down when dropped.
    let mut events = socket.monitor();
    let mut up = dial.is_none();
    let mut warned = false;
    let mut redial = tokio::time::interval(RECONNECT_INTERVAL);
    let mut seq: u64 = 0;
    loop {
        tokio::select! {
            batch = rx.recv() => {
                let Some(batch) = batch else { return };
                let frames = encode_message(&config.topic, seq, &batch, config.generation);
                if config.replay_capacity > 0 {
                    if let Ok(mut b) = buffer.lock() {
                        if b.len() >= config.replay_capacity {
                            b.pop_front();
                        }
                        b.push_back((seq, frames.clone()));
                    }
                }
                if up {
                    let [topic, seq_frame, payload] = frames;
                    let mut msg = ZmqMessage::from(topic);
                    msg.push_back(seq_frame.into());
                    msg.push_back(payload.into());
                    if let Err(e) = socket.send(msg).await {
                        tracing::warn!(seq, "KV event batch not sent: {e}");
                    }
                }
                seq += 1;
            }
            event = events.next(), if up && dial.is_some() => {
                if matches!(event, Some(SocketEvent::Disconnected(_)) | None) {
                    tracing::warn!(topic = %config.topic, "KV-event connection lost, re-dialing");
                    up = false;
                }
            }
            _ = redial.tick(), if !up => {
                let Some(addr) = &dial else { continue };
                // A fresh socket: the old one's connection is gone. One attempt per tick,
                // bounded, so batches keep flowing (and being buffered) meanwhile.
                let mut options = socket_options();
                if let Some(ip) = local {
                    options.local_address(ip);
                }
                let mut fresh = zeromq::PubSocket::with_options(options);
                match tokio::time::timeout(RECONNECT_INTERVAL * 10, fresh.connect(addr)).await {
                    Ok(Ok(())) => {
                        events = fresh.monitor();
                        socket = fresh;
                        up = true;
                        warned = false;
                        tracing::info!(%addr, topic = %config.topic, "KV events connected");
                    }
                    Ok(Err(e)) if !warned => {
                        tracing::warn!(%addr, "KV-event socket cannot connect yet, retrying: {e}");
                        warned = true;
                    }
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_star_binds_every_interface() {
        assert_eq!(bind_address("tcp://*:5557"), "tcp://0.0.0.0:5557");
        assert_eq!(bind_address("tcp://10.0.0.5:5557"), "tcp://10.0.0.5:5557");
    }
}
