//! How fast frames decode, in block events per second: the indexer's budget is 2 M block
//! events/s including indexing, so decoding alone must leave most of it. Frames are
//! pre-encoded in vLLM 0.32's shape (one 2,048-token prefill chunk of 32 blocks per
//! BlockStored, one hash per BlockRemoved, as the real captures show) and the real
//! captured frames are decoded as well.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use kvroute_kvevents::{
    decode_message, encode_message, BlockRemoved, BlockStored, EngineHash, EventBatch, KvEvent,
    Medium, WireGeneration,
};

fn stored(r: u64, int_hashes: bool) -> KvEvent {
    let hash = |i: u64| {
        let v = (r * 32 + i).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        if int_hashes {
            EngineHash::Int(v)
        } else {
            let mut digest = vec![0u8; 24];
            digest.extend_from_slice(&v.to_be_bytes());
            EngineHash::Bytes(digest)
        }
    };
    KvEvent::BlockStored(BlockStored {
        block_hashes: (0..32).map(hash).collect(),
        parent_block_hash: (r > 0).then(|| hash(1_000_000)),
        token_ids: (0..2048u32)
            .map(|i| (i * 31 + r as u32 * 7) % 150_000)
            .collect(),
        block_size: 64,
        lora_id: None,
        medium: Some(Medium::Gpu),
        lora_name: None,
        extra_keys: Some(vec![None; 32]),
        group_idx: Some(0),
        kv_cache_spec_kind: Some("full_attention".into()),
        session_id: None,
    })
}

fn frames_of(events: Vec<KvEvent>, generation: WireGeneration) -> [Vec<u8>; 3] {
    let batch = EventBatch {
        ts: 1_764_049_000.123_456,
        events,
        data_parallel_rank: Some(0),
        skipped_unknown: 0,
        skipped_invalid: 0,
    };
    encode_message("kv@10.0.0.1:5557@Qwen3-32B", 7, &batch, generation)
}

fn block_count(frames: &[[Vec<u8>; 3]]) -> u64 {
    frames
        .iter()
        .map(|f| {
            let refs: Vec<&[u8]> = f.iter().map(Vec::as_slice).collect();
            decode_message(&refs)
                .map(|m| {
                    m.batch
                        .events
                        .iter()
                        .map(|e| match e {
                            KvEvent::BlockStored(s) => s.block_hashes.len() as u64,
                            KvEvent::BlockRemoved(r) => r.block_hashes.len() as u64,
                            KvEvent::AllBlocksCleared => 1,
                        })
                        .sum::<u64>()
                })
                .unwrap_or(0)
        })
        .sum()
}

fn bench_set(c: &mut Criterion, name: &str, frames: &[[Vec<u8>; 3]]) {
    let refs: Vec<[&[u8]; 3]> = frames
        .iter()
        .map(|[a, b, c]| [a.as_slice(), b.as_slice(), c.as_slice()])
        .collect();
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(block_count(frames)));
    group.bench_function(name, |b| {
        b.iter(|| {
            for f in &refs {
                let _ = black_box(decode_message(black_box(f)));
            }
        })
    });
    group.finish();
}

fn captured_frames(run: &str) -> Vec<[Vec<u8>; 3]> {
    let dir = kvroute_testdata::vllm_capture_dir(run).join("frames");
    let mut out = Vec::new();
    for n in 0.. {
        let read = |i: usize| std::fs::read(dir.join(format!("{n:06}.f{i}.bin")));
        match (read(0), read(1), read(2)) {
            (Ok(a), Ok(b), Ok(c)) => out.push([a, b, c]),
            _ => break,
        }
    }
    out
}

fn decode(c: &mut Criterion) {
    for (name, generation, ints) in [
        ("stored_32_blocks_int_v03x", WireGeneration::V03xMaps, true),
        (
            "stored_32_blocks_bytes_v03x",
            WireGeneration::V03xMaps,
            false,
        ),
        (
            "stored_32_blocks_int_v010",
            WireGeneration::V010Arrays,
            true,
        ),
    ] {
        let frames: Vec<_> = (0..64)
            .map(|r| frames_of(vec![stored(r, ints)], generation))
            .collect();
        bench_set(c, name, &frames);
    }
    // Eviction-heavy steps: one hash per BlockRemoved, then the chunk that caused them.
    let frames: Vec<_> = (0..64)
        .map(|r| {
            let mut events: Vec<KvEvent> = (0..32)
                .map(|i| {
                    KvEvent::BlockRemoved(BlockRemoved {
                        block_hashes: vec![EngineHash::Int(r * 1000 + i)],
                        medium: Some(Medium::Gpu),
                        group_idx: Some(0),
                    })
                })
                .collect();
            events.push(stored(r, true));
            frames_of(events, WireGeneration::V03xMaps)
        })
        .collect();
    bench_set(c, "removed_32_then_stored_32_v03x", &frames);
    for run in ["sha256_cbor_seed42", "sha256_cbor_seed42_byteshashes"] {
        let frames = captured_frames(run);
        if !frames.is_empty() {
            bench_set(c, &format!("vllm_0.32_capture_{run}"), &frames);
        }
    }
}

criterion_group!(benches, decode);
criterion_main!(benches);
