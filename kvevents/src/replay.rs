//! The replay framing (vLLM's `replay_endpoint`), written once for both sides: the engine's
//! ROUTER (the simulated engines) and the subscriber's DEALER (the indexer). No I/O: the
//! callers move these frames over their own sockets.
//!
//! A subscriber that saw a sequence gap sends `[b"", start_seq]` (8 bytes big-endian); the
//! ROUTER sees it as `[client, b"", start_seq]` (the empty delimiter may be missing). The
//! engine answers every buffered message from `start_seq` on, then an end marker with
//! sequence -1, each prefixed `[client, b""]`, in its generation's layout:
//!
//! | generation   | message                 | end marker          |
//! |--------------|-------------------------|---------------------|
//! | 0.3x maps    | `[topic, seq, payload]` | `[b"", -1, b""]`    |
//! | 0.10 arrays  | `[seq, payload]`        | `[-1, b""]`         |

use crate::wire::WireGeneration;

/// The sequence number marking the end of a replay (-1 as 8 bytes big-endian).
pub const END_SEQ: [u8; 8] = (-1i64).to_be_bytes();

/// Why replay frames are not vLLM's.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReplayError {
    #[error("replay request of {0} frames, expected [client, b\"\", start_seq]")]
    RequestFrames(usize),
    #[error("replay answer of {0} frames, expected [topic, seq, payload] or [seq, payload]")]
    AnswerFrames(usize),
    #[error("replay sequence frame must be 8 bytes, got {0}")]
    SeqLength(usize),
}

/// The frames a subscriber's DEALER sends to ask for every message from `start_seq` on.
pub fn request(start_seq: u64) -> [Vec<u8>; 2] {
    [Vec::new(), start_seq.to_be_bytes().to_vec()]
}

/// A request as the engine's ROUTER received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// The ROUTER's identity frame for the asking client, to address the answers.
    pub client: &'a [u8],
    pub start_seq: u64,
}

/// Reads `[client, b"", start_seq]` (or `[client, start_seq]`).
pub fn parse_request<'a>(frames: &[&'a [u8]]) -> Result<Request<'a>, ReplayError> {
    let (client, start) = match frames {
        [client, [], start] => (*client, *start),
        [client, start] => (*client, *start),
        _ => return Err(ReplayError::RequestFrames(frames.len())),
    };
    let start: [u8; 8] = start
        .try_into()
        .map_err(|_| ReplayError::SeqLength(start.len()))?;
    Ok(Request {
        client,
        start_seq: u64::from_be_bytes(start),
    })
}

/// The ROUTER's answer carrying one buffered message `[topic, seq, payload]`, addressed to
/// `client`.
pub fn answer(client: &[u8], generation: WireGeneration, message: &[Vec<u8>; 3]) -> Vec<Vec<u8>> {
    let [topic, seq, payload] = message;
    match generation {
        WireGeneration::V03xMaps => envelope(client, [topic.as_slice(), seq, payload]),
        WireGeneration::V010Arrays => envelope(client, [seq.as_slice(), payload]),
    }
}

/// The ROUTER's end marker, addressed to `client`.
pub fn end(client: &[u8], generation: WireGeneration) -> Vec<Vec<u8>> {
    match generation {
        WireGeneration::V03xMaps => envelope(client, [&[][..], &END_SEQ, &[]]),
        WireGeneration::V010Arrays => envelope(client, [&END_SEQ[..], &[]]),
    }
}

fn envelope<const N: usize>(client: &[u8], parts: [&[u8]; N]) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(N + 2);
    out.push(client.to_vec());
    out.push(Vec::new());
    out.extend(parts.iter().map(|p| p.to_vec()));
    out
}

/// One answer as the subscriber's DEALER received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer<'a> {
    /// A replayed message as `[topic, seq, payload]`, ready for
    /// [`crate::decode_message`]. The topic is empty when the generation sends none (the
    /// model stays what the live stream said).
    Message { seq: u64, frames: [&'a [u8]; 3] },
    /// The end marker: nothing more follows.
    End,
}

/// Reads one answer. The ROUTER's empty delimiter frame, if the socket left it in, is
/// dropped; before a 0.10 `[seq, payload]` it reads as the empty topic it would mean.
pub fn parse_answer<'a>(frames: &[&'a [u8]]) -> Result<Answer<'a>, ReplayError> {
    let frames = match frames {
        [empty, rest @ ..] if empty.is_empty() && rest.len() >= 3 => rest,
        _ => frames,
    };
    let (topic, seq, payload): (&[u8], _, _) = match frames {
        [topic, seq, payload] => (topic, *seq, *payload),
        [seq, payload] => (&[], *seq, *payload),
        _ => return Err(ReplayError::AnswerFrames(frames.len())),
    };
    let seq_bytes: [u8; 8] = seq
        .try_into()
        .map_err(|_| ReplayError::SeqLength(seq.len()))?;
    if seq_bytes == END_SEQ {
        return Ok(Answer::End);
    }
    Ok(Answer::Message {
        seq: u64::from_be_bytes(seq_bytes),
        frames: [topic, seq, payload],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(frames: &[Vec<u8>]) -> Vec<&[u8]> {
        frames.iter().map(Vec::as_slice).collect()
    }

    #[test]
    fn request_round_trips_through_a_router_envelope() {
        let mut received = vec![b"client-7".to_vec()];
        received.extend(request(42));
        let req = parse_request(&refs(&received)).unwrap();
        assert_eq!((req.client, req.start_seq), (&b"client-7"[..], 42));
        // Without the empty delimiter, too.
        let bare = [&b"c"[..], &42u64.to_be_bytes()];
        assert_eq!(parse_request(&bare).unwrap().start_seq, 42);
        assert_eq!(
            parse_request(&[&b"c"[..], b"", b"123"]),
            Err(ReplayError::SeqLength(3))
        );
        assert_eq!(
            parse_request(&[&b"c"[..]]),
            Err(ReplayError::RequestFrames(1))
        );
    }

    #[test]
    fn answers_round_trip_in_both_generations() {
        let message = [
            b"kv@h@m".to_vec(),
            5u64.to_be_bytes().to_vec(),
            b"p".to_vec(),
        ];
        for (generation, topic) in [
            (WireGeneration::V03xMaps, &b"kv@h@m"[..]),
            (WireGeneration::V010Arrays, &b""[..]),
        ] {
            // What the DEALER receives: the ROUTER strips the client identity.
            let sent = answer(b"c", generation, &message);
            assert_eq!(sent[..2], [b"c".to_vec(), Vec::new()]);
            let got = parse_answer(&refs(&sent[1..])).unwrap();
            assert_eq!(
                got,
                Answer::Message {
                    seq: 5,
                    frames: [topic, &5u64.to_be_bytes(), b"p"]
                },
                "{generation:?}"
            );
            let got = parse_answer(&refs(&sent[2..])).unwrap();
            assert!(matches!(got, Answer::Message { seq: 5, .. }));
            let end_frames = end(b"c", generation);
            assert_eq!(parse_answer(&refs(&end_frames[1..])).unwrap(), Answer::End);
            assert_eq!(parse_answer(&refs(&end_frames[2..])).unwrap(), Answer::End);
        }
        assert_eq!(
            parse_answer(&[&b"x"[..]]),
            Err(ReplayError::AnswerFrames(1))
        );
    }
}
