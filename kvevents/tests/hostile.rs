//! The decoder against the hostile messages of the attack run (issue 10): deep nesting, an
//! array of nils, declared lengths with nothing behind them, small ints where hashes go,
//! block sizes and counts vLLM cannot send. Each must cost at most what the message's own
//! length allows (measured with a counting allocator, per thread), never recurse on the
//! input, and be counted: an unusable event in `skipped_invalid`, a message that cannot be
//! read at all as an error.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use kvroute_kvevents::limits::{MAX_BLOCK_SIZE, MAX_DECODED_BYTES_PER_BYTE, MIN_DECODE_BUDGET};
use kvroute_kvevents::{
    decode_payload, encode_payload, BlockStored, DecodeError, EngineHash, EventBatch, KvEvent,
    WireGeneration,
};
use rmpv::Value;

/// Counts the bytes live and the peak on the current thread (the decoder is synchronous).
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    // `try_with`: allocations during thread teardown are not ours to count.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        track(layout.size() as isize);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        track(-(layout.size() as isize));
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        track(new_size as isize - layout.size() as isize);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Decodes `payload`, returning the result and the peak bytes allocated while decoding.
fn decode_measured(payload: &[u8]) -> (Result<EventBatch, DecodeError>, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = decode_payload(payload);
    let peak = PEAK.with(Cell::get) - base;
    (out, peak.max(0) as usize)
}

fn budget(payload: &[u8]) -> usize {
    payload.len() * MAX_DECODED_BYTES_PER_BYTE + MIN_DECODE_BUDGET
}

fn msgpack(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, v).unwrap();
    out
}

fn s(x: &str) -> Value {
    Value::from(x)
}

/// A 0.3x BlockStored map with `extra` entries appended.
fn stored_map(block_size: u64, hashes: usize, tokens: usize, extra: Vec<(Value, Value)>) -> Value {
    let mut entries = vec![
        (s("type"), s("BlockStored")),
        (
            s("block_hashes"),
            Value::Array((0..hashes as u64).map(|h| Value::from(h + 1000)).collect()),
        ),
        (s("parent_block_hash"), Value::Nil),
        (
            s("token_ids"),
            Value::Array((0..tokens as u64).map(Value::from).collect()),
        ),
        (s("block_size"), Value::from(block_size)),
        (s("lora_id"), Value::Nil),
        (s("medium"), s("GPU")),
        (s("lora_name"), Value::Nil),
    ];
    entries.extend(extra);
    Value::Map(entries)
}

fn payload(events: Vec<Value>) -> Vec<u8> {
    msgpack(&Value::Array(vec![
        Value::F64(1.0),
        Value::Array(events),
        Value::Nil,
    ]))
}

/// The attack run's 341-byte message: an unknown field nested ~290 arrays deep. It used to
/// overflow the stack of debug builds (rmpv recursing); now it is skipped without recursion
/// and the event around it decodes, here on a thread with a 64 KiB stack.
#[test]
fn deep_nesting_is_skipped_without_recursion() {
    let mut deep = vec![0x91u8; 290];
    deep.push(0xc0);
    let mut event = msgpack(&stored_map(16, 1, 16, vec![]));
    // One more map entry: "x": <deep>.
    event[0] += 1;
    event.extend(msgpack(&s("x")));
    event.extend(&deep);
    let mut msg = vec![0x93, 0xcb];
    msg.extend(1.0f64.to_be_bytes());
    msg.push(0x91);
    msg.extend(&event);
    msg.push(0xc0);
    assert!(msg.len() < 700, "{}", msg.len());
    let batch = std::thread::Builder::new()
        .stack_size(64 * 1024)
        .spawn(move || decode_payload(&msg).unwrap())
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(batch.events.len(), 1);
    assert_eq!((batch.skipped_unknown, batch.skipped_invalid), (0, 0));

    // A million levels: still no recursion, a bounded cost, a clean answer.
    let mut deeper = vec![0x91u8; 1_000_000];
    deeper.push(0xc0);
    let mut msg = vec![0x92, 0x00, 0x91];
    msg.extend(&deeper);
    let (out, peak) = std::thread::Builder::new()
        .stack_size(64 * 1024)
        .spawn(move || decode_measured(&msg))
        .unwrap()
        .join()
        .unwrap();
    let batch = out.unwrap();
    assert_eq!((batch.events.len(), batch.skipped_unknown), (0, 1));
    assert!(peak < 1 << 20, "peak {peak}");
}

/// extra_keys are the one field built as a value: deeper than the limit, the event is
/// invalid (counted), not a recursion.
#[test]
fn deep_extra_keys_make_the_event_invalid() {
    let mut deep = Value::Nil;
    for _ in 0..200 {
        deep = Value::Array(vec![deep]);
    }
    let event = stored_map(16, 1, 16, vec![(s("extra_keys"), Value::Array(vec![deep]))]);
    let batch = decode_payload(&payload(vec![event])).unwrap();
    assert_eq!((batch.events.len(), batch.skipped_invalid), (0, 1));
}

/// An unknown field holding an array of nils costs nothing (it used to cost 42x its size
/// as an rmpv tree); extra_keys of nils are bounded by the block count.
#[test]
fn arrays_of_nils_cost_no_more_than_the_budget() {
    let nils = |n: usize| Value::Array(vec![Value::Nil; n]);
    let msg = payload(vec![stored_map(
        16,
        1,
        16,
        vec![(s("junk"), nils(2_000_000))],
    )]);
    let (out, peak) = decode_measured(&msg);
    assert_eq!(out.unwrap().events.len(), 1);
    assert!(peak < 64 * 1024, "peak {peak} for {} bytes", msg.len());

    let msg = payload(vec![stored_map(
        16,
        1,
        16,
        vec![(s("extra_keys"), nils(2_000_000))],
    )]);
    // One extra-keys entry per block is vLLM's; two million cost more than the message may:
    // refused before allocating them.
    let (out, peak) = decode_measured(&msg);
    assert!(matches!(out, Err(DecodeError::TooCostly(_))), "{out:?}");
    assert!(peak < 64 * 1024, "peak {peak}");
    // A few more entries than blocks: invalid, counted.
    let msg = payload(vec![stored_map(
        16,
        1,
        16,
        vec![(s("extra_keys"), nils(3))],
    )]);
    let batch = decode_payload(&msg).unwrap();
    assert_eq!((batch.events.len(), batch.skipped_invalid), (0, 1));

    // Nils where events go: refused whole before allocating the events.
    let msg = payload(vec![Value::Nil; 2_000_000]);
    let (out, peak) = decode_measured(&msg);
    assert!(matches!(out, Err(DecodeError::TooCostly(_))), "{out:?}");
    assert!(peak < 64 * 1024, "peak {peak}");
}

/// Small ints where hashes and token ids go: the dearest a byte can be made to decode.
#[test]
fn small_ints_cost_no_more_than_the_budget() {
    let ones = |n: usize| Value::Array(vec![Value::from(1u8); n]);
    let hashes = Value::Map(vec![
        (s("type"), s("BlockRemoved")),
        (s("block_hashes"), ones(1_000_000)),
    ]);
    let msg = payload(vec![hashes]);
    let (out, peak) = decode_measured(&msg);
    assert!(matches!(out, Err(DecodeError::TooCostly(_))), "{out:?}");
    assert!(peak <= budget(&msg), "peak {peak} for {} bytes", msg.len());

    let tokens = Value::Map(vec![
        (s("type"), s("BlockStored")),
        (s("block_hashes"), ones(1)),
        (s("token_ids"), ones(1_000_000)),
        (s("block_size"), Value::from(MAX_BLOCK_SIZE)),
    ]);
    let msg = payload(vec![tokens]);
    let (out, peak) = decode_measured(&msg);
    // 1 M tokens cannot be one block's: invalid, and within budget on the way.
    assert_eq!(out.unwrap().skipped_invalid, 1);
    assert!(peak <= budget(&msg), "peak {peak} for {} bytes", msg.len());
}

/// Lengths declared with nothing behind them (2^32-1 elements in a few bytes).
#[test]
fn declared_lengths_are_checked_against_the_bytes_left() {
    let huge_array = [0xdd, 0xff, 0xff, 0xff, 0xff];
    let huge_map = [0xdf, 0xff, 0xff, 0xff, 0xff];
    let huge_str = [0xdb, 0xff, 0xff, 0xff, 0xff];
    for body in [&huge_array[..], &huge_map, &huge_str] {
        // As the events array.
        let mut msg = vec![0x92, 0x00];
        msg.extend(body);
        let (out, peak) = decode_measured(&msg);
        assert!(out.is_err());
        assert!(peak < 4096, "peak {peak}");
        // As an event, and as a field of one.
        let mut msg = vec![0x92, 0x00, 0x91];
        msg.extend(body);
        let (out, peak) = decode_measured(&msg);
        assert!(out.is_err());
        assert!(peak < 4096, "peak {peak}");
        let mut event = msgpack(&Value::Map(vec![
            (s("type"), s("BlockRemoved")),
            (s("block_hashes"), Value::Nil),
        ]));
        event.truncate(event.len() - 1);
        event.extend(body);
        let mut msg = vec![0x92, 0x00, 0x91];
        msg.extend(&event);
        let (out, peak) = decode_measured(&msg);
        assert!(out.is_err());
        assert!(peak < 4096, "peak {peak}");
    }
}

/// block_size 0 turned cache routing off for the pod, 2^32-1 made the hasher reserve
/// ~21.5 GB: both are events vLLM cannot send, skipped and counted; so are more token ids
/// than the blocks hold and more extra-keys entries than blocks.
#[test]
fn out_of_bounds_events_are_counted_and_skipped() {
    let good = stored_map(16, 2, 32, vec![]);
    for bad in [
        stored_map(0, 2, 32, vec![]),
        stored_map(u64::from(u32::MAX), 2, 32, vec![]),
        stored_map(u64::from(MAX_BLOCK_SIZE) + 1, 2, 32, vec![]),
        stored_map(u64::MAX, 2, 32, vec![]),
        stored_map(16, 2, 33, vec![]),
        stored_map(
            16,
            2,
            32,
            vec![(s("extra_keys"), Value::Array(vec![Value::Nil; 3]))],
        ),
    ] {
        for generation_arrays in [false, true] {
            let bad = if generation_arrays {
                as_v010(&bad)
            } else {
                bad.clone()
            };
            let batch =
                decode_payload(&payload(vec![good.clone(), bad.clone(), good.clone()])).unwrap();
            assert_eq!(batch.events.len(), 2, "{bad:?}");
            assert_eq!((batch.skipped_invalid, batch.skipped_unknown), (1, 0));
        }
    }
    // The bounds themselves are valid.
    for block_size in [1, MAX_BLOCK_SIZE] {
        let batch = decode_payload(&payload(vec![stored_map(
            u64::from(block_size),
            1,
            1,
            vec![],
        )]))
        .unwrap();
        assert_eq!(batch.events.len(), 1);
    }
}

/// A 0.3x BlockStored map rewritten as vLLM 0.10's positional array (extra_keys, which 0.10
/// lacked, stays out).
fn as_v010(map: &Value) -> Value {
    let Value::Map(entries) = map else {
        unreachable!()
    };
    let get = |k: &str| {
        entries
            .iter()
            .find(|(n, _)| n.as_str() == Some(k))
            .map(|(_, v)| v.clone())
            .unwrap_or(Value::Nil)
    };
    if get("extra_keys") != Value::Nil {
        return map.clone();
    }
    Value::Array(vec![
        s("BlockStored"),
        get("block_hashes"),
        get("parent_block_hash"),
        get("token_ids"),
        get("block_size"),
        get("lora_id"),
        get("medium"),
    ])
}

/// Real-shaped batches decode within the budget with room to spare: the bound never
/// refuses what vLLM sends.
#[test]
fn real_batches_fit_the_budget() {
    let stored = |b: u64| {
        KvEvent::BlockStored(BlockStored {
            block_hashes: (0..32)
                .map(|i| EngineHash::Int((b * 32 + i).wrapping_mul(0x9e37_79b9_7f4a_7c15)))
                .collect(),
            parent_block_hash: None,
            token_ids: (0..512).collect(),
            block_size: 16,
            lora_id: None,
            medium: None,
            lora_name: None,
            extra_keys: Some(vec![None; 32]),
            group_idx: None,
            kv_cache_spec_kind: None,
            session_id: None,
        })
    };
    for generation in [WireGeneration::V010Arrays, WireGeneration::V03xMaps] {
        for events in [
            vec![KvEvent::AllBlocksCleared; 10_000],
            (0..100).map(stored).collect(),
        ] {
            let batch = EventBatch {
                events,
                ..Default::default()
            };
            let msg = encode_payload(&batch, generation);
            let (out, peak) = decode_measured(&msg);
            let got = out.unwrap();
            assert_eq!(got.events.len(), batch.events.len());
            assert!(
                peak <= budget(&msg),
                "{generation:?}: peak {peak} for {} bytes",
                msg.len()
            );
        }
    }
}
