//! The simulated engine's KV events against real vLLM 0.32's, frame by frame: the seed's
//! requests sent to a `kvroute-engine-sim` (seed 42, as the capture's engine) give, for
//! every block vLLM stored from a prompt, the same topic, the same events (hashes, parent,
//! token ids, block size, medium, extra keys, group) and the same payload bytes as vLLM's
//! own msgspec encoder wrote. (vLLM also stores blocks filled by generated tokens; the
//! simulator does not, so those captured messages are skipped.)

use std::net::Ipv4Addr;
use std::time::Duration;

use kvroute_kvevents::{decode_message, encode_payload, KvEvent, KvMessage, WireGeneration};
use kvroute_tests::paths;
use kvroute_tests::ports::free_port;
use kvroute_tests::sim_engine::{seed_requests, KvLink, SimEngine, SimEngineArgs};
use serde_json::Value;
use zeromq::{Socket, SocketRecv};

fn captured() -> Vec<(String, KvMessage, Vec<u8>)> {
    let dir = paths::repo_root().join("testdata/vllm-0.32/sha256_cbor_seed42");
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    index
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let frames: Vec<Vec<u8>> = e["frames"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| std::fs::read(dir.join(f.as_str().unwrap())).unwrap())
                .collect();
            let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
            let msg = decode_message(&refs).unwrap();
            let request = e["attributed_request"].as_str().unwrap_or("").to_string();
            (request, msg, frames[2].clone())
        })
        .collect()
}

#[test]
fn prompt_block_events_equal_real_vllm_032_frames() {
    let dir = std::env::temp_dir();
    let zmq = free_port().unwrap();
    let engine = SimEngine::start(
        &SimEngineArgs::qwen3(Ipv4Addr::LOCALHOST, free_port().unwrap())
            .kv(KvLink::Bind(format!("tcp://127.0.0.1:{zmq}")))
            .time_scale(50.0)
            .hash_seed("42"),
        &dir,
    )
    .unwrap();
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

    // The requests up to the first eviction: every block they store is new to the cache.
    let names = ["round1", "round2", "plain_a", "plain_b_repeat", "evict_0"];
    let requests = seed_requests().unwrap();
    for name in names {
        let r = requests.iter().find(|r| r["name"] == name).unwrap();
        let answer = engine
            .post(r["endpoint"].as_str().unwrap(), &r["request"])
            .unwrap();
        assert_eq!(answer.status, 200);
    }
    let mut published = Vec::new();
    rt.block_on(async {
        while let Ok(Ok(msg)) = tokio::time::timeout(Duration::from_millis(500), sub.recv()).await {
            let frames: Vec<Vec<u8>> = msg.iter().map(|f| f.to_vec()).collect();
            published.push(frames);
        }
    });

    // vLLM's messages for these requests, without those storing a block that generated
    // tokens filled (its tokens are not a block-aligned run of the request's prompt).
    let real: Vec<(KvMessage, Vec<u8>)> = captured()
        .into_iter()
        .filter(|(request, _, _)| names.contains(&request.as_str()))
        .filter(|(request, msg, _)| {
            let prompt: Vec<u64> = requests
                .iter()
                .find(|r| r["name"] == request.as_str())
                .and_then(|r| r["prompt_token_ids"].as_array())
                .map(|ids| ids.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default();
            msg.batch.events.iter().all(|e| match e {
                KvEvent::BlockStored(s) => {
                    let tokens: Vec<u64> = s.token_ids.iter().map(|t| u64::from(*t)).collect();
                    prompt
                        .chunks(64)
                        .collect::<Vec<_>>()
                        .windows(s.block_hashes.len())
                        .any(|w| w.concat() == tokens)
                }
                _ => true,
            })
        })
        .map(|(_, msg, payload)| (msg, payload))
        .collect();
    assert!(
        real.len() >= 4,
        "{} prompt messages in the capture",
        real.len()
    );
    assert_eq!(
        published.len(),
        real.len(),
        "the engine published {} messages",
        published.len()
    );
    for (i, (frames, (vllm, vllm_payload))) in published.iter().zip(&real).enumerate() {
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        let ours = decode_message(&refs).unwrap();
        assert_eq!(ours.topic, vllm.topic, "message {i}");
        assert_eq!(ours.seq, i as u64, "sequence numbers from 0 without gaps");
        assert_eq!(ours.batch.events, vllm.batch.events, "message {i}");
        assert_eq!(ours.batch.data_parallel_rank, vllm.batch.data_parallel_rank);
        // Same bytes as vLLM's own encoder once the timestamp is the same (re-encoding the
        // captured batch as is gives the captured bytes, so the encoder is vLLM's).
        assert_eq!(
            &encode_payload(&vllm.batch, WireGeneration::V03xMaps),
            vllm_payload
        );
        let mut same_time = vllm.batch.clone();
        same_time.ts = ours.batch.ts;
        assert_eq!(
            frames[2],
            encode_payload(&same_time, WireGeneration::V03xMaps),
            "message {i}"
        );
    }
}
