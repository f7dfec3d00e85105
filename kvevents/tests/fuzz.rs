//! Property fuzzing of the event decoder (proptest, stable Rust): byte-level inputs and
//! structured ones (valid batches of either generation, then truncated, bit-flipped or
//! spliced). The decoder must never panic, must stay inside its memory budget, and must
//! read back exactly what the encoder wrote. The suite runs a few hundred cases in
//! seconds; `scripts/fuzz.sh` runs many more (`KVROUTE_FUZZ_CASES`).

use kvroute_kvevents::{
    decode_message, decode_payload, encode_message, encode_payload, BlockRemoved, BlockStored,
    EngineHash, EventBatch, KvEvent, Medium, WireGeneration,
};
use proptest::prelude::*;
use rmpv::Value;

/// Cases per property: a quick run in the suite, more from `scripts/fuzz.sh`.
fn config() -> ProptestConfig {
    let cases = std::env::var("KVROUTE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn hash() -> impl Strategy<Value = EngineHash> {
    prop_oneof![
        any::<u64>().prop_map(EngineHash::Int),
        proptest::collection::vec(any::<u8>(), 32).prop_map(EngineHash::Bytes),
    ]
}

fn medium() -> impl Strategy<Value = Option<Medium>> {
    proptest::option::of(prop_oneof![
        Just(Medium::Gpu),
        Just(Medium::Cpu),
        Just(Medium::Storage)
    ])
}

fn stored() -> impl Strategy<Value = KvEvent> {
    (
        proptest::collection::vec(hash(), 1..6),
        proptest::option::of(hash()),
        prop_oneof![Just(1u32), Just(16), Just(64)],
        proptest::option::of(any::<i64>()),
        medium(),
        proptest::option::of("[a-z-]{1,12}"),
        any::<bool>(),
        proptest::option::of(0u32..4),
        proptest::option::of(prop_oneof![
            Just("full_attention".to_owned()),
            Just("sliding_window".to_owned())
        ]),
    )
        .prop_map(
            |(
                block_hashes,
                parent,
                block_size,
                lora_id,
                medium,
                lora_name,
                salted,
                group,
                kind,
            )| {
                let n = block_hashes.len();
                KvEvent::BlockStored(BlockStored {
                    token_ids: (0..n as u32 * block_size).map(|t| t * 7919).collect(),
                    extra_keys: salted.then(|| {
                        let mut k = vec![None; n];
                        k[0] = Some(Value::Array(vec![Value::from("salt")]));
                        k
                    }),
                    block_hashes,
                    parent_block_hash: parent,
                    block_size,
                    lora_id,
                    medium,
                    lora_name,
                    group_idx: group,
                    kv_cache_spec_kind: kind,
                    session_id: None,
                })
            },
        )
}

fn event() -> impl Strategy<Value = KvEvent> {
    prop_oneof![
        4 => stored(),
        3 => (proptest::collection::vec(hash(), 0..6), medium(), proptest::option::of(0u32..4))
            .prop_map(|(block_hashes, medium, group_idx)| KvEvent::BlockRemoved(BlockRemoved {
                block_hashes,
                medium,
                group_idx
            })),
        1 => Just(KvEvent::AllBlocksCleared),
    ]
}

fn batch() -> impl Strategy<Value = EventBatch> {
    (
        proptest::collection::vec(event(), 0..8),
        proptest::option::of(0u32..8),
        -1e9f64..1e9,
    )
        .prop_map(|(events, rank, ts)| EventBatch {
            ts,
            events,
            data_parallel_rank: rank,
            ..Default::default()
        })
}

fn generation() -> impl Strategy<Value = WireGeneration> {
    prop_oneof![
        Just(WireGeneration::V010Arrays),
        Just(WireGeneration::V03xMaps)
    ]
}

/// What survives a generation: 0.10's arrays have no slots for the 0.3x-only fields.
fn as_carried(mut batch: EventBatch, generation: WireGeneration) -> EventBatch {
    if generation == WireGeneration::V010Arrays {
        for e in &mut batch.events {
            match e {
                KvEvent::BlockStored(s) => {
                    s.extra_keys = None;
                    s.group_idx = None;
                    s.kv_cache_spec_kind = None;
                    s.session_id = None;
                }
                KvEvent::BlockRemoved(r) => r.group_idx = None,
                KvEvent::AllBlocksCleared => {}
            }
        }
    }
    batch
}

/// A damaged copy of `bytes`.
#[derive(Debug, Clone)]
enum Damage {
    Truncate(usize),
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Splice(usize, usize),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<usize>().prop_map(Damage::Truncate),
        (any::<usize>(), 1u8..=255).prop_map(|(i, x)| Damage::Flip(i, x)),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(i, b)| Damage::Insert(i, b)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Damage::Splice(a, b)),
    ]
}

fn apply(bytes: &[u8], damage: &[Damage]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for d in damage {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
        match d {
            Damage::Truncate(i) => out.truncate(at(*i, out.len())),
            Damage::Flip(i, x) if !out.is_empty() => {
                let i = i % out.len();
                out[i] ^= x;
            }
            Damage::Flip(..) => {}
            Damage::Insert(i, b) => {
                let i = at(*i, out.len());
                out.splice(i..i, b.iter().copied());
            }
            Damage::Splice(a, b) => {
                // Repeat a slice of the message: duplicated headers and counts.
                let (a, b) = (at(*a, out.len()), at(*b, out.len()));
                let (a, b) = (a.min(b), a.max(b));
                let piece = out[a..b].to_vec();
                out.splice(b..b, piece);
            }
        }
    }
    out
}

/// Anything the decoder accepts re-encodes to a message that decodes to the same events.
fn stable(batch: &EventBatch) {
    for generation in [WireGeneration::V010Arrays, WireGeneration::V03xMaps] {
        let again = decode_payload(&encode_payload(batch, generation)).expect("re-encoded");
        let want = as_carried(batch.clone(), generation);
        assert_eq!(again.events, want.events, "{generation:?}");
        assert_eq!(again.data_parallel_rank, batch.data_parallel_rank);
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(batch) = decode_payload(&bytes) {
            stable(&batch);
        }
        let _ = decode_message(&[b"kv@h@m", &bytes[..bytes.len().min(8)], &bytes]);
    }

    #[test]
    fn valid_batches_round_trip(batch in batch(), generation in generation()) {
        let frames = encode_message("kv@10.0.0.1@m", 7, &batch, generation);
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        let msg = decode_message(&refs).expect("a valid batch decodes");
        prop_assert_eq!(msg.seq, 7);
        prop_assert_eq!(msg.batch, as_carried(batch, generation));
    }

    #[test]
    fn damaged_batches_never_panic(
        batch in batch(),
        generation in generation(),
        damage in proptest::collection::vec(damage(), 1..4),
    ) {
        let bytes = apply(&encode_payload(&batch, generation), &damage);
        if let Ok(got) = decode_payload(&bytes) {
            stable(&got);
        }
    }
}
