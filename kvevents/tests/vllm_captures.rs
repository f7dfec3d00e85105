//! The decoder and encoder against real vLLM 0.32 frames (testdata/vllm-0.32): every
//! captured message decodes to what index.json says vLLM sent, and re-encodes to the same
//! bytes, for int hashes and for raw-bytes hashes.

use kvroute_kvevents::{decode_message, encode_payload, EngineHash, KvEvent, WireGeneration};
use serde_json::Value;

fn hash_json(h: &EngineHash) -> Value {
    match h {
        EngineHash::Int(v) => Value::from(*v),
        EngineHash::Bytes(b) => serde_json::json!({
            "$bytes_hex": b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        }),
    }
}

fn check_run(run: &str) {
    let mut events_checked = 0;
    for message in kvroute_testdata::vllm_capture(run).messages {
        let (entry, frames) = (&message.entry, &message.frames);
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        let msg = decode_message(&refs).unwrap();
        assert_eq!(msg.topic, entry["topic"].as_str().unwrap());
        assert_eq!(msg.seq, entry["seq"].as_u64().unwrap());
        let batch = &entry["batch"];
        // index.json rounds some timestamps in its last digit.
        assert!((msg.batch.ts - batch[0].as_f64().unwrap()).abs() < 1e-5);
        assert_eq!(
            msg.batch.data_parallel_rank,
            batch[2].as_u64().map(|v| v as u32)
        );
        assert_eq!(msg.batch.skipped_unknown, 0);
        let want = batch[1].as_array().unwrap();
        assert_eq!(msg.batch.events.len(), want.len());
        for (got, want) in msg.batch.events.iter().zip(want) {
            match got {
                KvEvent::BlockStored(s) => {
                    assert_eq!(want["type"], "BlockStored");
                    let hashes: Vec<Value> = s.block_hashes.iter().map(hash_json).collect();
                    assert_eq!(Value::Array(hashes), want["block_hashes"]);
                    assert_eq!(
                        s.parent_block_hash
                            .as_ref()
                            .map(hash_json)
                            .unwrap_or(Value::Null),
                        want["parent_block_hash"]
                    );
                    let ids: Vec<Value> = s.token_ids.iter().map(|t| Value::from(*t)).collect();
                    assert_eq!(Value::Array(ids), want["token_ids"]);
                    assert_eq!(Value::from(s.block_size), want["block_size"]);
                    assert_eq!(s.medium.map(|m| m.as_str()), want["medium"].as_str());
                }
                KvEvent::BlockRemoved(r) => {
                    assert_eq!(want["type"], "BlockRemoved");
                    let hashes: Vec<Value> = r.block_hashes.iter().map(hash_json).collect();
                    assert_eq!(Value::Array(hashes), want["block_hashes"]);
                }
                KvEvent::AllBlocksCleared => assert_eq!(want["type"], "AllBlocksCleared"),
            }
            events_checked += 1;
        }
        if entry["reencode_identical"] == Value::Bool(true) {
            assert_eq!(
                encode_payload(&msg.batch, WireGeneration::V03xMaps),
                frames[2],
                "{run} message {}: re-encoding differs",
                entry["index"]
            );
        }
    }
    assert!(events_checked > 20, "{run}: {events_checked} events");
}

#[test]
fn int_hash_captures_decode_and_reencode() {
    check_run("sha256_cbor_seed42");
}

#[test]
fn bytes_hash_captures_decode_and_reencode() {
    check_run("sha256_cbor_seed42_byteshashes");
}
