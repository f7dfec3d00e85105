//! The replay socket (vLLM's `replay_endpoint`): a subscriber that saw a sequence gap asks
//! for the missed batches instead of throwing its view of this engine away. A ROUTER
//! answers every buffered message from the asked sequence on, then an end marker; the
//! frames are `kvroute_kvevents::replay`'s, this module only serves them.

use kvroute_kvevents::{replay, WireGeneration};
use zeromq::{Socket, SocketRecv, SocketSend, ZmqMessage};

use crate::server::kv_publisher::ReplayBuffer;
use crate::server::ServerError;

/// Binds the ROUTER now and serves it in a task.
pub async fn start(
    addr: &str,
    buffer: ReplayBuffer,
    generation: WireGeneration,
) -> Result<(), ServerError> {
    // Requests are a few bytes: a peer declaring more is disconnected unread.
    let mut router =
        zeromq::RouterSocket::with_options(crate::server::kv_publisher::socket_options());
    router
        .bind(&crate::server::kv_publisher::bind_address(addr))
        .await
        .map_err(|e| ServerError::Zmq(format!("binding replay {addr}: {e}")))?;
    tokio::spawn(async move {
        loop {
            let request = match router.recv().await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("replay socket: {e}");
                    continue;
                }
            };
            let frames: Vec<Vec<u8>> = request.iter().map(|f| f.to_vec()).collect();
            let Some(replies) = answer(&frames, &buffer, generation) else {
                tracing::warn!(frames = frames.len(), "replay request not understood");
                continue;
            };
            for reply in replies {
                if let Err(e) = router.send(reply).await {
                    tracing::warn!("replay reply not sent: {e}");
                    break;
                }
            }
        }
    });
    Ok(())
}

/// The replies to one request, or `None` if it is not one.
fn answer(
    frames: &[Vec<u8>],
    buffer: &ReplayBuffer,
    generation: WireGeneration,
) -> Option<Vec<ZmqMessage>> {
    let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    let request = replay::parse_request(&refs).ok()?;
    let message = |frames: Vec<Vec<u8>>| {
        let mut frames = frames.into_iter();
        let mut msg = ZmqMessage::from(frames.next().unwrap_or_default());
        for f in frames {
            msg.push_back(f.into());
        }
        msg
    };
    let mut out: Vec<ZmqMessage> = match buffer.lock() {
        Ok(b) => b
            .iter()
            .filter(|(seq, _)| *seq >= request.start_seq)
            .map(|(_, m)| message(replay::answer(request.client, generation, m)))
            .collect(),
        Err(_) => Vec::new(),
    };
    out.push(message(replay::end(request.client, generation)));
    Some(out)
}
