//! Hashing the 112 full blocks of a 7,200-token prompt (target: <= 50 us on the host),
//! for each scheme vLLM may run.

use criterion::{criterion_group, criterion_main, Criterion};
use kvroute_blockhash::{BlockHasher, HashConfig, HashScheme};

fn bench_hashing(c: &mut Criterion) {
    let tokens: Vec<u32> = (0..7_200u32).map(|i| (i * 7919 + 13) % 151_936).collect();
    let mut group = c.benchmark_group("hash_112_blocks");
    for scheme in [
        HashScheme::Sha256Cbor,
        HashScheme::Sha256Cbor64Bit,
        HashScheme::XxhashCbor,
    ] {
        let hasher = BlockHasher::new(HashConfig {
            scheme,
            block_size: 64,
            seed: None,
        });
        assert_eq!(hasher.event_values(&tokens).len(), 112);
        group.bench_function(scheme.name(), |b| {
            b.iter(|| hasher.event_values(std::hint::black_box(&tokens)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_hashing);
criterion_main!(benches);
