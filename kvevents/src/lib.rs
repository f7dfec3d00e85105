//! kvroute-kvevents: vLLM's KV-event wire format, in one place. No I/O.
//!
//! vLLM publishes each batch of KV-cache events as three ZeroMQ frames: the topic, an
//! 8-byte big-endian sequence number, and a msgpack payload `[ts, events, dp_rank]`. The
//! events changed shape between generations (0.10's tagged arrays, 0.3x's maps). Where to
//! change what:
//!
//! - [`wire`]: the field table of each wire generation, with its slot layout documented;
//!   a new vLLM wire version is a table here, read by both the decoder and the encoder.
//! - [`types`]: the decoded events, whatever generation carried them.
//! - [`decode`]: the tolerant, bounded decoder (unknown fields ignored, unusable events
//!   counted and skipped, never a panic, never an allocation the input merely declares).
//! - [`encode`]: the encoder, writing what vLLM writes (simulated engines, tests).
//! - [`replay`]: the replay socket's request and answer frames, for engine and subscriber.
//! - [`limits`]: the bounds of what vLLM can send, which the decoder enforces.

pub mod decode;
pub mod encode;
pub mod limits;
mod reader;
pub mod replay;
pub mod types;
pub mod wire;

pub use decode::{decode_message, decode_payload, DecodeError};
pub use encode::{encode_message, encode_payload};
pub use types::{BlockRemoved, BlockStored, EngineHash, EventBatch, KvEvent, KvMessage, Medium};
pub use wire::WireGeneration;

#[cfg(test)]
mod tests {
    use super::*;
    use rmpv::Value;

    fn stored() -> KvEvent {
        KvEvent::BlockStored(BlockStored {
            block_hashes: vec![EngineHash::Int(u64::MAX - 1), EngineHash::Int(7)],
            parent_block_hash: None,
            token_ids: (0..128).collect(),
            block_size: 64,
            lora_id: None,
            medium: Some(Medium::Gpu),
            lora_name: None,
            extra_keys: None,
            group_idx: Some(0),
            kv_cache_spec_kind: Some("full_attention".into()),
            session_id: None,
        })
    }

    #[test]
    fn both_generations_round_trip() {
        let batch = EventBatch {
            ts: 1.5,
            events: vec![
                stored(),
                KvEvent::BlockRemoved(BlockRemoved {
                    block_hashes: vec![EngineHash::Bytes(vec![9; 32])],
                    medium: Some(Medium::Cpu),
                    group_idx: Some(0),
                }),
                KvEvent::AllBlocksCleared,
            ],
            data_parallel_rank: Some(1),
            skipped_unknown: 0,
            skipped_invalid: 0,
        };
        for generation in [WireGeneration::V03xMaps, WireGeneration::V010Arrays] {
            let frames = encode_message("kv@10.0.0.1@m", 42, &batch, generation);
            let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
            let msg = decode_message(&refs).unwrap();
            assert_eq!((msg.topic.as_str(), msg.seq), ("kv@10.0.0.1@m", 42));
            let mut want = batch.clone();
            if generation == WireGeneration::V010Arrays {
                // 0.10 had no hybrid-model fields.
                for e in &mut want.events {
                    match e {
                        KvEvent::BlockStored(s) => {
                            s.group_idx = None;
                            s.kv_cache_spec_kind = None;
                        }
                        KvEvent::BlockRemoved(r) => r.group_idx = None,
                        KvEvent::AllBlocksCleared => {}
                    }
                }
            }
            assert_eq!(msg.batch, want, "{generation:?}");
        }
    }

    #[test]
    fn unknown_events_are_counted_and_skipped() {
        let value = Value::Array(vec![
            Value::F64(0.0),
            Value::Array(vec![
                Value::Map(vec![(Value::from("type"), Value::from("SomethingNew"))]),
                Value::Map(vec![
                    (Value::from("type"), Value::from("BlockRemoved")),
                    (
                        Value::from("block_hashes"),
                        Value::Array(vec![Value::from(5u64)]),
                    ),
                    (Value::from("new_field"), Value::from(true)),
                ]),
                Value::from("garbage"),
            ]),
        ]);
        let mut buf = Vec::new();
        rmpv::encode::write_value(&mut buf, &value).unwrap();
        let batch = decode_payload(&buf).unwrap();
        assert_eq!((batch.events.len(), batch.skipped_unknown), (1, 2));
        assert_eq!(batch.data_parallel_rank, None);
    }

    #[test]
    fn garbage_never_panics() {
        let frames = encode_message(
            "t",
            1,
            &EventBatch {
                events: vec![stored()],
                ..Default::default()
            },
            WireGeneration::V03xMaps,
        );
        let payload = &frames[2];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for round in 0..3000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut bytes = payload.clone();
            if round % 2 == 0 {
                bytes.truncate((state as usize) % (payload.len() + 1));
            } else {
                let i = (state as usize) % bytes.len();
                bytes[i] = (state >> 32) as u8;
            }
            let _ = decode_payload(&bytes);
            let _ = decode_message(&[b"t", &bytes[..bytes.len().min(8)], &bytes]);
        }
        assert!(decode_message(&[b"t"]).is_err());
        assert!(decode_message(&[b"t", b"123", payload]).is_err());
    }
}
