//! The replay socket (vLLM's `replay_endpoint`): a subscriber that saw a sequence gap asks
//! for the missed batches instead of throwing its view of this engine away. A ROUTER takes
//! `[client, b"", start_seq]` and answers every buffered message from `start_seq` on, then
//! an end marker with sequence -1, in the generation's layout: vLLM 0.3x sends
//! `[topic, seq, payload]` (end `[b"", -1, b""]`), 0.10/0.11 sent `[seq, payload]`
//! (end `[-1, b""]`).

use kvroute_kvevents::WireGeneration;
use zeromq::{Socket, SocketRecv, SocketSend, ZmqMessage};

use crate::server::kv_publisher::ReplayBuffer;
use crate::server::ServerError;

/// Binds the ROUTER now and serves it in a task.
pub async fn start(
    addr: &str,
    buffer: ReplayBuffer,
    generation: WireGeneration,
) -> Result<(), ServerError> {
    let mut router = zeromq::RouterSocket::new();
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

/// The replies to one request `[client, b"", start]` (the empty delimiter optional).
fn answer(
    frames: &[Vec<u8>],
    buffer: &ReplayBuffer,
    generation: WireGeneration,
) -> Option<Vec<ZmqMessage>> {
    let (client, start) = match frames {
        [client, empty, start] if empty.is_empty() => (client, start),
        [client, start] => (client, start),
        _ => return None,
    };
    let start = u64::from_be_bytes(start.as_slice().try_into().ok()?);
    let reply = |parts: Vec<Vec<u8>>| {
        let mut msg = ZmqMessage::from(client.clone());
        msg.push_back(Vec::<u8>::new().into());
        for p in parts {
            msg.push_back(p.into());
        }
        msg
    };
    let with_topic = generation == WireGeneration::V03xMaps;
    let mut out: Vec<ZmqMessage> = match buffer.lock() {
        Ok(b) => b
            .iter()
            .filter(|(seq, _)| *seq >= start)
            .map(|(_, [topic, seq, payload])| {
                if with_topic {
                    reply(vec![topic.clone(), seq.clone(), payload.clone()])
                } else {
                    reply(vec![seq.clone(), payload.clone()])
                }
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    let end = (-1i64).to_be_bytes().to_vec();
    out.push(if with_topic {
        reply(vec![Vec::new(), end, Vec::new()])
    } else {
        reply(vec![end, Vec::new()])
    });
    Some(out)
}
