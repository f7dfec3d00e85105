//! Asking an engine's replay socket (vLLM's `replay_endpoint`, a ROUTER) for the messages
//! it still buffers from a sequence number on, and applying them as if they had arrived
//! live. vLLM answers each buffered message, then an end marker with sequence -1.

use std::time::Duration;

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
    // DEALER to ROUTER: an empty delimiter, then the 8-byte big-endian start sequence.
    channel
        .send(vec![Vec::new(), from.to_be_bytes().to_vec()])
        .await?;
    loop {
        let frames = channel.recv().await?;
        let mut frames: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        // The ROUTER's empty delimiter frame, if the socket left it in.
        if frames.len() > 3 && frames[0].is_empty() {
            frames.remove(0);
        }
        // vLLM 0.3x replays [topic, seq, payload] (end: [b"", -1, b""]); 0.10/0.11
        // replayed [seq, payload] (end: [-1, b""]).
        let (topic, seq, payload) = match frames.as_slice() {
            [topic, seq, payload] => (*topic, *seq, *payload),
            // No topic: the model stays what the live stream said.
            [seq, payload] => (&[][..], *seq, *payload),
            _ => anyhow::bail!("replay message of {} frames", frames.len()),
        };
        if seq == (-1i64).to_be_bytes() {
            return Ok(());
        }
        let n = u64::from_be_bytes(seq.try_into().unwrap_or([0xff; 8]));
        if n >= to {
            return Ok(());
        }
        ingest.handle(Source::Dialed(endpoint), &[topic, seq, payload], true);
    }
}
