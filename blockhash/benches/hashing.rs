//! Hashing the 112 full blocks of a 7,200-token prompt (target: <= 50 us on the host),
//! for each scheme vLLM may run, on real Qwen3 token ids (the prompts vLLM hashed in the
//! captured runs, concatenated) and on ids spread over the whole vocabulary (most need the
//! widest CBOR form). The CBOR encoding alone is measured too, to tell it from the digest.

use criterion::{criterion_group, criterion_main, Criterion};
use kvroute_blockhash::{BlockHasher, HashConfig, HashScheme};

const PROMPT_TOKENS: usize = 7_200;

/// The captured requests' prompt token ids, concatenated and cut to `PROMPT_TOKENS`.
fn real_token_ids() -> Vec<u32> {
    let doc = kvroute_testdata::vllm_requests();
    let ids: Vec<u32> = doc["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .filter_map(|r| r["prompt_token_ids"].as_array())
        .flatten()
        .filter_map(|v| v.as_u64())
        .map(|v| v as u32)
        .take(PROMPT_TOKENS)
        .collect();
    assert_eq!(
        ids.len(),
        PROMPT_TOKENS,
        "not enough captured prompt tokens"
    );
    ids
}

fn bench_hashing(c: &mut Criterion) {
    let inputs = [
        ("real_qwen3_ids", real_token_ids()),
        (
            "whole_vocab_ids",
            (0..PROMPT_TOKENS as u32)
                .map(|i| (i * 7919 + 13) % 151_936)
                .collect(),
        ),
    ];
    let mut group = c.benchmark_group("hash_112_blocks");
    for (input, tokens) in &inputs {
        for scheme in [
            HashScheme::Sha256Cbor,
            HashScheme::Sha256Cbor64Bit,
            HashScheme::XxhashCbor,
            HashScheme::Sha256,
            HashScheme::Xxhash,
        ] {
            let hasher = BlockHasher::new(HashConfig {
                scheme,
                block_size: 64,
                seed: Some("42".into()),
            });
            assert_eq!(hasher.event_values(tokens).len(), 112);
            group.bench_function(format!("{}/{input}", scheme.name()), |b| {
                b.iter(|| hasher.event_values(std::hint::black_box(tokens)))
            });
        }
        let hasher = BlockHasher::new(HashConfig::default());
        let none = hasher.none_hash();
        group.bench_function(format!("cbor_encoding_only/{input}"), |b| {
            b.iter(|| {
                std::hint::black_box(tokens)
                    .chunks_exact(64)
                    .map(|block| hasher.block_bytes(&none, block, None).len())
                    .sum::<usize>()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_hashing);
criterion_main!(benches);
