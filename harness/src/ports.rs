//! Free loopback ports for test processes, so parallel tests never collide.

use std::net::TcpListener;

/// A port that was free a moment ago on 127.0.0.1 (the OS picks it).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
