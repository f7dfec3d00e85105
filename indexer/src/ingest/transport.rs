//! The ZeroMQ sockets ingestion opens, and nothing else: a SUB socket bound for engines to
//! connect to or connected to one engine's PUB, and the DEALER that asks an engine's replay
//! ROUTER. Every message leaves here as owned frames, so transport limits (frame sizes, the
//! peer's address) are decided in this one file.

use std::net::IpAddr;
use std::time::Duration;

use futures_util::StreamExt;
use zeromq::{CodecError, Socket, SocketEvent, SocketOptions, SocketRecv, SocketSend, ZmqMessage};

/// The largest KV-event message (all frames) any socket accepts. The `zeromq` crate
/// reserved whatever a frame header declared before reading it (73 bytes declaring 2^40
/// aborted the process); the workspace's patched copy (`third_party/zeromq/PATCH.md`)
/// refuses a larger declaration before allocating and drops the peer. vLLM publishes one
/// batch per scheduler step, well under 1 MiB, so 8 MiB leaves wide headroom.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

fn options() -> SocketOptions {
    let mut options = SocketOptions::default();
    options.max_message_size(Some(MAX_MESSAGE_BYTES));
    options
}

/// One ZeroMQ message, frame by frame.
pub type Frames = Vec<Vec<u8>>;

/// Anything a socket refused.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("{0}")]
    Zmq(#[from] zeromq::ZmqError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl TransportError {
    /// A peer declared a message over [`MAX_MESSAGE_BYTES`] and was disconnected.
    pub fn is_oversized(&self) -> bool {
        matches!(
            self,
            Self::Zmq(zeromq::ZmqError::Codec(CodecError::MessageTooLarge { .. }))
        )
    }
}

fn frames_of(msg: &ZmqMessage) -> Frames {
    msg.iter().map(|f| f.to_vec()).collect()
}

/// A SUB socket subscribed to every topic.
pub struct Subscriber {
    socket: zeromq::SubSocket,
    /// A bound socket's events: connections refused during their handshake show only here.
    events: Option<futures_channel::mpsc::Receiver<SocketEvent>>,
}

impl Subscriber {
    /// Bound at `addr`, for engines to connect to.
    pub async fn bind(addr: &str) -> Result<Self, TransportError> {
        let mut socket = zeromq::SubSocket::with_options(options());
        let events = Some(socket.monitor());
        socket.bind(addr).await?;
        socket.subscribe("").await?;
        Ok(Self { socket, events })
    }

    /// Connected to one engine's PUB at `addr`.
    pub async fn connect(addr: &str) -> Result<Self, TransportError> {
        let mut socket = zeromq::SubSocket::with_options(options());
        socket.connect(addr).await?;
        socket.subscribe("").await?;
        Ok(Self {
            socket,
            events: None,
        })
    }

    /// The next message and the address of the peer it came from (when the transport has
    /// one); an error for a peer dropped (oversized or broken), on a bound socket also for
    /// a connection refused during its handshake.
    pub async fn recv(&mut self) -> Result<(Option<IpAddr>, Frames), TransportError> {
        fn received(
            r: zeromq::ZmqResult<(Option<std::net::SocketAddr>, ZmqMessage)>,
        ) -> Result<(Option<IpAddr>, Frames), TransportError> {
            let (peer, msg) = r?;
            Ok((peer.map(|a| a.ip().to_canonical()), frames_of(&msg)))
        }
        loop {
            let event = match &mut self.events {
                Some(events) => tokio::select! {
                    r = self.socket.recv_with_peer_addr() => return received(r),
                    event = events.next() => event,
                },
                None => return received(self.socket.recv_with_peer_addr().await),
            };
            match event {
                Some(SocketEvent::AcceptFailed(e)) => return Err(e.into()),
                Some(_) => {}
                // The monitor is gone: messages only.
                None => self.events = None,
            }
        }
    }
}

/// A DEALER connected to one engine's replay ROUTER; every wait is bounded.
pub struct ReplayChannel {
    socket: zeromq::DealerSocket,
    timeout: Duration,
}

impl ReplayChannel {
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Self, TransportError> {
        let mut socket = zeromq::DealerSocket::with_options(options());
        tokio::time::timeout(timeout, socket.connect(addr))
            .await
            .map_err(|_| TransportError::Timeout(timeout))??;
        Ok(Self { socket, timeout })
    }

    pub async fn send(&mut self, frames: Frames) -> Result<(), TransportError> {
        let mut frames = frames.into_iter();
        let mut msg = ZmqMessage::from(frames.next().unwrap_or_default());
        for f in frames {
            msg.push_back(f.into());
        }
        tokio::time::timeout(self.timeout, self.socket.send(msg))
            .await
            .map_err(|_| TransportError::Timeout(self.timeout))??;
        Ok(())
    }

    pub async fn recv(&mut self) -> Result<Frames, TransportError> {
        let msg = tokio::time::timeout(self.timeout, self.socket.recv())
            .await
            .map_err(|_| TransportError::Timeout(self.timeout))??;
        Ok(frames_of(&msg))
    }
}
