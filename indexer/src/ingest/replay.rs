//! Asking an engine's replay socket (vLLM's `replay_endpoint`, a ROUTER) for the messages
//! it still buffers from a sequence number on. vLLM answers each buffered message, then an
//! end marker with sequence -1; the frames are `kvroute_kvevents::replay`'s, shared with
//! the simulated engines. Two uses: a gap in the live stream (`from..to`), and re-learning
//! an engine after the indexer (re)started or (re)connected (everything from 0).

use std::time::Duration;

use kvroute_kvevents::replay::{parse_answer, request, Answer};

use super::transport::{Frames, ReplayChannel};

/// How long a replay socket may take to connect and between two answers.
pub const REPLAY_TIMEOUT: Duration = Duration::from_secs(2);
/// Attempts of a replay (a gap or a re-learning) before the engine is learned from live
/// events only.
pub const REPLAY_ATTEMPTS: u32 = 3;
/// Pause between two attempts.
const RETRY_DELAY: Duration = Duration::from_millis(500);
/// How long one whole answer may take: an engine dribbling its buffer cannot hold its live
/// messages back longer (vLLM sends its 10,000 buffered steps in well under a second).
const REPLAY_DEADLINE: Duration = Duration::from_secs(10);
/// Most messages one replay answer is read for (vLLM buffers 10,000 steps by default).
const MAX_REPLAYED: usize = 100_000;

/// The sequence number of a live-layout message `[topic, seq, payload]`.
pub fn seq_of(frames: &Frames) -> Option<u64> {
    Some(u64::from_be_bytes(
        frames.get(1)?.as_slice().try_into().ok()?,
    ))
}

/// Messages `from..to` (`to` excluded; None: all) from `tcp://host:port`, each in the live
/// layout `[topic, seq, payload]` (an empty topic when the engine's generation sends none:
/// the model then stays what the live stream said).
pub async fn fetch(
    host: &str,
    port: u16,
    from: u64,
    to: Option<u64>,
) -> anyhow::Result<Vec<Frames>> {
    let mut channel =
        ReplayChannel::connect(&format!("tcp://{host}:{port}"), REPLAY_TIMEOUT).await?;
    channel.send(request(from).into()).await?;
    let mut out = Vec::new();
    while out.len() < MAX_REPLAYED {
        let frames = channel.recv().await?;
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        match parse_answer(&refs)? {
            Answer::Message { seq, frames } if to.is_none_or(|to| seq < to) => {
                out.push(frames.iter().map(|f| f.to_vec()).collect());
            }
            _ => break,
        }
    }
    Ok(out)
}

/// [`fetch`] `from..to`, each attempt bounded by [`REPLAY_DEADLINE`], tried
/// [`REPLAY_ATTEMPTS`] times; `failed` is told every failure. Empty if every attempt failed.
pub async fn fetch_with_retries(
    host: &str,
    port: u16,
    from: u64,
    to: Option<u64>,
    failed: impl Fn(&anyhow::Error),
) -> Vec<Frames> {
    for attempt in 1..=REPLAY_ATTEMPTS {
        let error = match tokio::time::timeout(REPLAY_DEADLINE, fetch(host, port, from, to)).await {
            Ok(Ok(history)) => return history,
            Ok(Err(e)) => e,
            Err(_) => anyhow::anyhow!("no complete answer within {REPLAY_DEADLINE:?}"),
        };
        tracing::warn!(%host, port, from, attempt, "replay failed: {error}");
        failed(&error);
        if attempt < REPLAY_ATTEMPTS {
            tokio::time::sleep(RETRY_DELAY).await;
        }
    }
    Vec::new()
}
