//! Asking an engine's replay socket (vLLM's `replay_endpoint`, a ROUTER) for the messages
//! it still buffers from a sequence number on, and applying them as if they had arrived
//! live. vLLM answers each buffered message, then an end marker with sequence -1; the
//! frames are `kvroute_kvevents::replay`'s, shared with the simulated engines.

use std::time::Duration;

use kvroute_kvevents::replay::{parse_answer, request, Answer};

use super::transport::ReplayChannel;
use super::{Ingest, Source};

/// How long a replay socket may take to connect and between two answers.
pub const REPLAY_TIMEOUT: Duration = Duration::from_secs(2);

/// Replay `from..to` (`to` excluded) from `tcp://host:port` into `ingest` for `endpoint`.
pub async fn replay(
    ingest: &Ingest,
    endpoint: &str,
    host: &str,
    port: u16,
    from: u64,
    to: u64,
) -> anyhow::Result<()> {
    let mut channel =
        ReplayChannel::connect(&format!("tcp://{host}:{port}"), REPLAY_TIMEOUT).await?;
    channel.send(request(from).into()).await?;
    loop {
        let frames = channel.recv().await?;
        let frames: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        match parse_answer(&frames)? {
            Answer::Message { seq, frames } if seq < to => {
                ingest.handle(Source::Dialed(endpoint), &frames, true);
            }
            _ => return Ok(()),
        }
    }
}
