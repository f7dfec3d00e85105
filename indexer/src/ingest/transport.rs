//! The ZeroMQ sockets ingestion opens, and nothing else: a SUB socket bound for engines to
//! connect to or connected to one engine's PUB, and the DEALER that asks an engine's replay
//! ROUTER. Every message leaves here as owned frames, so transport limits (frame sizes, the
//! peer's address) are decided in this one file.

use std::time::Duration;

use zeromq::{Socket, SocketRecv, SocketSend, ZmqMessage};

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

fn frames_of(msg: &ZmqMessage) -> Frames {
    msg.iter().map(|f| f.to_vec()).collect()
}

/// A SUB socket subscribed to every topic.
pub struct Subscriber(zeromq::SubSocket);

impl Subscriber {
    /// Bound at `addr`, for engines to connect to.
    pub async fn bind(addr: &str) -> Result<Self, TransportError> {
        let mut socket = zeromq::SubSocket::new();
        socket.bind(addr).await?;
        socket.subscribe("").await?;
        Ok(Self(socket))
    }

    /// Connected to one engine's PUB at `addr`.
    pub async fn connect(addr: &str) -> Result<Self, TransportError> {
        let mut socket = zeromq::SubSocket::new();
        socket.connect(addr).await?;
        socket.subscribe("").await?;
        Ok(Self(socket))
    }

    pub async fn recv(&mut self) -> Result<Frames, TransportError> {
        Ok(frames_of(&self.0.recv().await?))
    }
}

/// A DEALER connected to one engine's replay ROUTER; every wait is bounded.
pub struct ReplayChannel {
    socket: zeromq::DealerSocket,
    timeout: Duration,
}

impl ReplayChannel {
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Self, TransportError> {
        let mut socket = zeromq::DealerSocket::new();
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
