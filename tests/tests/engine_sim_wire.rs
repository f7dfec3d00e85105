//! The simulated engine's KV events against real vLLM 0.32's, message by message, over the
//! seed's whole captures (prompts, a block filled by generated tokens, evictions, a prefix
//! cache reset, a cache salt, a session id; hashes as ints and as 32-byte digests): the
//! engine runs with the capture's settings (seed 42, 160 blocks of 64 tokens) and gets the
//! same requests in the same order. Every message must
//! have the same topic and events as vLLM's; a prompt block's event is identical (hashes,
//! parent, tokens, extra keys, group: the payload's bytes are vLLM's own encoder's up to
//! the timestamp). Blocks filled by generated tokens hold the simulator's tokens, not the
//! real model's, so their hashes differ: they are checked against the shared crate's
//! hash of their own tokens, and followed under their new name through later evictions.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use kvroute_blockhash::{BlockHasher, HashConfig};
use kvroute_harness::ports::free_port;
use kvroute_harness::sim_engine::{seed_requests, KvLink, SimEngine, SimEngineArgs};
use kvroute_kvevents::{
    decode_message, encode_payload, BlockRemoved, BlockStored, EngineHash, KvEvent, KvMessage,
    WireGeneration,
};
use serde_json::Value;
use zeromq::{Socket, SocketRecv};

/// vLLM's messages, each with the request it was attributed to and its payload bytes.
fn captured(run: &str) -> Vec<(String, KvMessage, Vec<u8>)> {
    kvroute_testdata::vllm_capture(run)
        .messages
        .into_iter()
        .map(|m| {
            let msg = decode_message(&m.frame_refs()).unwrap();
            let request = m.entry["attributed_request"].as_str().unwrap_or("");
            (request.to_string(), msg, m.frames[2].clone())
        })
        .collect()
}

fn ints(hashes: &[EngineHash]) -> Vec<u64> {
    hashes.iter().map(EngineHash::as_u64).collect()
}

#[test]
fn kv_events_equal_real_vllm_032_frames_over_the_whole_capture() {
    same_events_as("sha256_cbor_seed42");
}

#[test]
fn digest_bytes_hashes_equal_real_vllm_032_frames_too() {
    // The same run with VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=0.
    same_events_as("sha256_cbor_seed42_byteshashes");
}

/// `--max-num-batched-tokens` of the engine the captures were made with (vLLM 0.32 on CPU,
/// its OpenAI server's default).
const CAPTURE_STEP_TOKENS: usize = 2048;

fn same_events_as(capture: &str) {
    let config = kvroute_testdata::vllm_capture_dir(capture).join("run_config.json");
    let run: Value = serde_json::from_slice(&std::fs::read(config).unwrap()).unwrap();
    let bytes_hashes = run["VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES"] == "0";
    let block_size = run["block_size"].as_u64().unwrap() as usize;
    let capacity = run["num_gpu_blocks_override"].as_u64().unwrap() as usize * block_size;
    let dir = std::env::temp_dir();
    let zmq = free_port().unwrap();
    let mut args = SimEngineArgs::qwen3(Ipv4Addr::LOCALHOST, free_port().unwrap())
        .kv(KvLink::Bind(format!("tcp://127.0.0.1:{zmq}")))
        .time_scale(50.0)
        .hash_seed(run["PYTHONHASHSEED"].as_str().unwrap())
        .arg("--kv-capacity-tokens", &capacity.to_string())
        // The captured engine's step budget: it decides how a
        // prompt is chunked, so how many event messages each request's blocks take.
        .arg("--max-num-batched-tokens", &CAPTURE_STEP_TOKENS.to_string());
    if bytes_hashes {
        args.extra.push("--kv-bytes-hashes".into());
    }
    let engine = SimEngine::start(&args, &dir).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut sub = zeromq::SubSocket::new();
    rt.block_on(async {
        sub.connect(&format!("tcp://127.0.0.1:{zmq}"))
            .await
            .unwrap();
        sub.subscribe("").await.unwrap();
    });
    std::thread::sleep(Duration::from_millis(300));

    let requests = seed_requests().unwrap();
    for r in &requests {
        let path = r["endpoint"].as_str().unwrap();
        let body = if path == "/reset_prefix_cache" {
            Value::Null
        } else {
            r["request"].clone()
        };
        let answer = kvroute_harness::http::post_json(
            engine.addr,
            path,
            if body.is_null() {
                Vec::new()
            } else {
                body.to_string().into_bytes()
            }
            .as_slice(),
        )
        .unwrap();
        assert_eq!(answer.status, 200, "{}", r["name"]);
    }
    let mut published = Vec::new();
    rt.block_on(async {
        while let Ok(Ok(msg)) = tokio::time::timeout(Duration::from_millis(500), sub.recv()).await {
            published.push(msg.iter().map(|f| f.to_vec()).collect::<Vec<Vec<u8>>>());
        }
    });

    let real = captured(capture);
    assert_eq!(
        published.len(),
        real.len(),
        "the engine published {} messages, vLLM {}",
        published.len(),
        real.len()
    );
    let hasher = BlockHasher::new(HashConfig {
        seed: Some(run["PYTHONHASHSEED"].as_str().unwrap().to_string()),
        ..HashConfig::default()
    });
    // vLLM's name of a block generated tokens filled -> the simulator's.
    let mut renamed: HashMap<u64, EngineHash> = HashMap::new();
    let mut decode_blocks = 0;
    for (i, (frames, (request, vllm, vllm_payload))) in published.iter().zip(&real).enumerate() {
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        let ours = decode_message(&refs).unwrap();
        let context = format!("message {i} ({request})");
        assert_eq!(ours.topic, vllm.topic, "{context}");
        assert_eq!(ours.seq, i as u64, "sequence numbers from 0 without gaps");
        assert_eq!(ours.batch.data_parallel_rank, vllm.batch.data_parallel_rank);
        assert_eq!(
            ours.batch.events.len(),
            vllm.batch.events.len(),
            "{context}"
        );
        let prompt: Vec<u32> = requests
            .iter()
            .find(|r| r["name"] == request.as_str())
            .and_then(|r| r["prompt_token_ids"].as_array())
            .map(|ids| {
                ids.iter()
                    .filter_map(|t| t.as_u64())
                    .map(|t| t as u32)
                    .collect()
            })
            .unwrap_or_default();
        let mut identical = true;
        for (o, v) in ours.batch.events.iter().zip(&vllm.batch.events) {
            match (o, v) {
                (KvEvent::BlockStored(o), KvEvent::BlockStored(v)) if o != v => {
                    identical = false;
                    decode_blocks += 1;
                    check_decode_block(o, v, &prompt, &hasher, &mut renamed, &context);
                }
                (KvEvent::BlockRemoved(o), KvEvent::BlockRemoved(v)) if o != v => {
                    identical = false;
                    let translated = BlockRemoved {
                        block_hashes: v
                            .block_hashes
                            .iter()
                            .map(|h| {
                                renamed
                                    .get(&h.as_u64())
                                    .cloned()
                                    .unwrap_or_else(|| h.clone())
                            })
                            .collect(),
                        ..v.clone()
                    };
                    assert_eq!(o, &translated, "{context}");
                }
                (o, v) => {
                    assert!(
                        o == v || matches!(o, KvEvent::BlockStored(_) | KvEvent::BlockRemoved(_))
                    );
                    assert_eq!(
                        std::mem::discriminant(o),
                        std::mem::discriminant(v),
                        "{context}"
                    );
                }
            }
        }
        if identical {
            // Same bytes as vLLM's own encoder once the timestamp is the same (re-encoding
            // the captured batch as is gives the captured bytes: the encoder is vLLM's).
            assert_eq!(
                &encode_payload(&vllm.batch, WireGeneration::V03xMaps),
                vllm_payload
            );
            let mut same_time = vllm.batch.clone();
            same_time.ts = ours.batch.ts;
            assert_eq!(
                frames[2],
                encode_payload(&same_time, WireGeneration::V03xMaps),
                "{context}"
            );
        }
    }
    assert!(decode_blocks >= 1, "no block filled by generated tokens");
}

/// A block filled by generated tokens: vLLM's but for the generated tokens (and so the
/// hash), which must be the shared crate's hash of the simulator's tokens.
fn check_decode_block(
    ours: &BlockStored,
    vllm: &BlockStored,
    prompt: &[u32],
    hasher: &BlockHasher,
    renamed: &mut HashMap<u64, EngineHash>,
    context: &str,
) {
    assert_eq!(ours.block_hashes.len(), 1, "{context}");
    assert_eq!(vllm.block_hashes.len(), 1, "{context}");
    let same_but_tokens = BlockStored {
        block_hashes: vllm.block_hashes.clone(),
        token_ids: vllm.token_ids.clone(),
        ..ours.clone()
    };
    assert_eq!(&same_but_tokens, vllm, "{context}");
    let bs = ours.block_size as usize;
    let start = prompt.len() / bs * bs;
    // The prompt's tail is the same; what follows is generated.
    assert_eq!(
        ours.token_ids[..prompt.len() - start],
        vllm.token_ids[..prompt.len() - start],
        "{context}"
    );
    let mut sequence = prompt[..start].to_vec();
    sequence.extend(&ours.token_ids);
    let expected = *hasher.event_values(&sequence).last().unwrap();
    assert_eq!(ints(&ours.block_hashes), vec![expected], "{context}");
    renamed.insert(vllm.block_hashes[0].as_u64(), ours.block_hashes[0].clone());
}
