//! The decoder and encoder against frames written by vLLM's own msgspec classes
//! (scripts/gen_kv_frames.py -> testdata/kv-frames): vLLM 0.10.1 and 0.11 tagged arrays,
//! 0.32 maps, int and bytes hashes. The captures cover only 0.32's maps; these prove the
//! older generation decodes as vLLM meant it and that our encoder writes the same bytes.

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

fn hashes_json(hs: &[EngineHash]) -> Value {
    Value::Array(hs.iter().map(hash_json).collect())
}

/// Returns the number of events checked.
fn check_run(run: &str) -> usize {
    let data = kvroute_testdata::generated_frames(run);
    let index = &data.meta;
    let generation = match index["generation"].as_str().unwrap() {
        "V010Arrays" => WireGeneration::V010Arrays,
        "V03xMaps" => WireGeneration::V03xMaps,
        other => panic!("{run}: unknown generation {other}"),
    };
    let int_hashes = index["int_hashes"].as_bool().unwrap();
    let mut checked = 0;
    for message in &data.messages {
        let (entry, frames) = (&message.entry, &message.frames);
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        let msg = decode_message(&refs).unwrap();
        assert_eq!(msg.topic, entry["topic"].as_str().unwrap());
        assert_eq!(msg.seq, entry["seq"].as_u64().unwrap());
        let batch = &entry["batch"];
        assert_eq!(msg.batch.ts, batch[0].as_f64().unwrap());
        assert_eq!(
            msg.batch.data_parallel_rank,
            batch[2].as_u64().map(|v| v as u32)
        );
        assert_eq!(msg.batch.skipped_unknown, 0, "{run}");
        let want = batch[1].as_array().unwrap();
        assert_eq!(msg.batch.events.len(), want.len());
        for (got, want) in msg.batch.events.iter().zip(want) {
            match got {
                KvEvent::BlockStored(s) => {
                    assert_eq!(want["type"], "BlockStored");
                    assert_eq!(hashes_json(&s.block_hashes), want["block_hashes"]);
                    assert!(s
                        .block_hashes
                        .iter()
                        .all(|h| matches!(h, EngineHash::Int(_)) == int_hashes));
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
                    assert_eq!(
                        s.medium.map(|m| m.as_str()),
                        want.get("medium").and_then(Value::as_str)
                    );
                    assert_eq!(
                        s.group_idx.map(u64::from),
                        want.get("group_idx").and_then(Value::as_u64)
                    );
                    assert_eq!(
                        s.kv_cache_spec_kind.as_deref(),
                        want.get("kv_cache_spec_kind").and_then(Value::as_str)
                    );
                }
                KvEvent::BlockRemoved(r) => {
                    assert_eq!(want["type"], "BlockRemoved");
                    assert_eq!(hashes_json(&r.block_hashes), want["block_hashes"]);
                    assert_eq!(
                        r.medium.map(|m| m.as_str()),
                        want.get("medium").and_then(Value::as_str)
                    );
                }
                KvEvent::AllBlocksCleared => assert_eq!(want["type"], "AllBlocksCleared"),
            }
            checked += 1;
        }
        assert_eq!(
            encode_payload(&msg.batch, generation),
            frames[2],
            "{run} message {}: re-encoding differs from vLLM's",
            entry["index"]
        );
    }
    checked
}

#[test]
fn vllm_0_10_1_arrays_without_medium() {
    assert_eq!(check_run("vllm-0.10.1.1_int_hashes"), 7);
}

#[test]
fn vllm_0_11_arrays_int_and_bytes_hashes() {
    assert_eq!(check_run("vllm-0.11.0_int_hashes"), 7);
    assert_eq!(check_run("vllm-0.11.0_bytes_hashes"), 7);
}

#[test]
fn vllm_0_32_maps_int_and_bytes_hashes() {
    assert_eq!(check_run("vllm-0.32.0_int_hashes"), 7);
    assert_eq!(check_run("vllm-0.32.0_bytes_hashes"), 7);
}
