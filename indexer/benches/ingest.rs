//! Ingestion throughput in block events per second, one core: pre-encoded frames in vLLM
//! 0.32's shape (one 2,048-token prefill chunk = 32 blocks per BlockStored, as the real
//! captures show) decoded, keyed and applied to the real `BlockIndex`. The target is 2 M
//! block events/s. Three cases side by side: native keys from 0.3x maps, native keys from
//! 0.10-style arrays, and rekey mode (the engine's seed differs, so every block is re-hashed
//! from its token ids with sha256 over CBOR: that mode's cost is the hashing).

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use kvroute_blockhash::{BlockHasher, ExtraKeysStyle, HashConfig, HashScheme};
use kvroute_indexer::index::{BlockIndex, PodIndex};
use kvroute_indexer::ingest::{Ingest, IngestConfig, Source};
use kvroute_indexer::metrics::Metrics;
use kvroute_indexer::pods::PodRegistry;
use kvroute_kvevents::{
    encode_message, BlockStored, EngineHash, EventBatch, KvEvent, Medium, WireGeneration,
};

const EVENTS: u32 = 200;
const BLOCKS_PER_EVENT: u32 = 32;
const BLOCK_SIZE: u32 = 64;

fn hash_config(seed: &str) -> HashConfig {
    HashConfig {
        scheme: HashScheme::Sha256Cbor,
        block_size: BLOCK_SIZE as usize,
        seed: Some(seed.into()),
    }
}

/// Frames as an engine with seed "42" publishes them.
fn frames(generation: WireGeneration) -> Vec<[Vec<u8>; 3]> {
    let hasher = BlockHasher::new(hash_config("42"));
    (0..EVENTS)
        .map(|r| {
            let tokens: Vec<u32> = (0..BLOCK_SIZE * BLOCKS_PER_EVENT)
                .map(|i| (i * 31 + r * 7919) % 150_000)
                .collect();
            let values = hasher.event_values(&tokens);
            let event = KvEvent::BlockStored(BlockStored {
                block_hashes: values.iter().map(|v| EngineHash::Int(*v)).collect(),
                parent_block_hash: None,
                token_ids: tokens,
                block_size: BLOCK_SIZE,
                lora_id: None,
                medium: Some(Medium::Gpu),
                lora_name: None,
                extra_keys: None,
                group_idx: Some(0),
                kv_cache_spec_kind: Some("full_attention".into()),
                session_id: None,
            });
            let batch = EventBatch {
                ts: 0.0,
                events: vec![event],
                data_parallel_rank: Some(0),
                skipped_unknown: 0,
                skipped_invalid: 0,
            };
            encode_message("kv@10.0.0.1@m", u64::from(r), &batch, generation)
        })
        .collect()
}

fn ingest(seed: &str) -> (Ingest, Arc<BlockIndex>) {
    let index = Arc::new(BlockIndex::new(1 << 20));
    let ingest = Ingest::new(
        IngestConfig::with_engines(["10.0.0.1"]),
        index.clone(),
        Arc::new(PodRegistry::new(None)),
        Arc::new(Metrics::new()),
        hash_config(seed),
        ExtraKeysStyle::Tagged,
    )
    .expect("valid ingestion config");
    (ingest, index)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Elements(u64::from(EVENTS * BLOCKS_PER_EVENT)));
    group.sample_size(20);
    let cases = [
        ("native_v03x_maps", WireGeneration::V03xMaps, "42"),
        ("native_v010_arrays", WireGeneration::V010Arrays, "42"),
        ("rekey_v03x_maps", WireGeneration::V03xMaps, "7"),
    ];
    for (name, generation, seed) in cases {
        let frames = frames(generation);
        group.bench_function(name, |b| {
            b.iter_batched(
                || ingest(seed),
                |(ingest, index)| {
                    for f in &frames {
                        let refs: Vec<&[u8]> = f.iter().map(Vec::as_slice).collect();
                        ingest.handle(Source::Dialed("10.0.0.1:8000"), &refs, false);
                    }
                    assert_eq!(index.entries(), (EVENTS * BLOCKS_PER_EVENT) as usize);
                    (ingest, index)
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
