//! Ingestion against real vLLM 0.32 frames, without sockets: the captured stream applied in
//! order must leave the index holding exactly what vLLM held, keyed so that the request's
//! own computed keys match; with the engines' seed the keys are vLLM's values ("native"),
//! with another seed they are recomputed from token ids ("rekey") and still match.

use std::sync::Arc;

use kvroute_blockhash::{BlockHasher, ExtraKeysStyle, HashConfig, HashScheme};
use kvroute_indexer::index::{BlockIndex, IndexOp, PodIndex};
use kvroute_indexer::ingest::{DropReason, Ingest, IngestConfig, Outcome, Source};
use kvroute_indexer::metrics::Metrics;
use kvroute_indexer::pods::PodRegistry;
use kvroute_indexer::types::{KeyMode, PodId};

fn config(engines: &[&str]) -> IngestConfig {
    IngestConfig::with_engines(engines.iter().copied())
}

struct Setup {
    ingest: Ingest,
    index: Arc<BlockIndex>,
    registry: Arc<PodRegistry>,
    metrics: Arc<Metrics>,
}

fn setup(seed: &str) -> Setup {
    let index = Arc::new(BlockIndex::new(1 << 20));
    let registry = Arc::new(PodRegistry::new(None));
    let metrics = Arc::new(Metrics::new());
    let ingest = Ingest::new(
        config(&["127.0.0.1"]),
        index.clone(),
        registry.clone(),
        metrics.clone(),
        HashConfig {
            scheme: HashScheme::Sha256Cbor,
            block_size: 64,
            seed: Some(seed.into()),
        },
        ExtraKeysStyle::Tagged,
    )
    .expect("valid ingestion config");
    Setup {
        ingest,
        index,
        registry,
        metrics,
    }
}

/// Captured messages (frames) in order, with the request each is attributed to.
fn captured(run: &str) -> Vec<(Vec<Vec<u8>>, String)> {
    kvroute_testdata::vllm_capture(run)
        .messages
        .into_iter()
        .map(|m| {
            let attributed = m.entry["attributed_request"].as_str().unwrap_or("");
            (m.frames, attributed.to_owned())
        })
        .collect()
}

fn keys_for(name: &str, seed: &str) -> Vec<u64> {
    BlockHasher::new(HashConfig {
        scheme: HashScheme::Sha256Cbor,
        block_size: 64,
        seed: Some(seed.into()),
    })
    .event_values(&kvroute_testdata::vllm_request_token_ids(name))
}

fn pod() -> PodId {
    PodId {
        endpoint: "127.0.0.1:8000".into(),
        dp_rank: 0,
    }
}

/// Feed the stream up to (not including) the first message attributed to `stop_at`.
fn feed_until(s: &Setup, run: &str, stop_at: &str) {
    for (frames, attributed) in captured(run) {
        if attributed == stop_at {
            break;
        }
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        let out = s
            .ingest
            .handle(Source::Dialed("127.0.0.1:8000"), &refs, false);
        assert!(matches!(out, Outcome::Applied { .. }), "{out:?}");
    }
}

fn matched(s: &Setup, keys: &[u64]) -> usize {
    s.index
        .match_prefix(keys)
        .iter()
        .find(|m| m.pod == pod())
        .map(|m| m.gpu_blocks)
        .unwrap_or(0)
}

#[test]
fn native_mode_with_the_engines_seed() {
    for run in ["sha256_cbor_seed42", "sha256_cbor_seed42_byteshashes"] {
        let s = setup("42");
        feed_until(&s, run, "evict_0");
        assert_eq!(s.registry.key_mode(&pod()), KeyMode::Native, "{run}");
        // round2 was served with 128 of its tokens cached: two full blocks known before it,
        // and its own blocks after it.
        assert_eq!(matched(&s, &keys_for("round2", "42")), 4, "{run}");
        assert_eq!(
            matched(&s, &keys_for("plain_a", "42")),
            keys_for("plain_a", "42").len()
        );
    }
}

#[test]
fn evictions_remove_blocks_as_vllm_did() {
    let s = setup("42");
    // After the six eviction requests vLLM had evicted round1 (it was recomputed with 0
    // cached tokens afterwards).
    feed_until(&s, "sha256_cbor_seed42", "round1_after_evict");
    assert_eq!(matched(&s, &keys_for("round1", "42")), 0);
    assert!(s.metrics.encode().contains("block_removed"));
}

#[test]
fn rekey_mode_with_another_seed_still_matches_our_keys() {
    let s = setup("7");
    feed_until(&s, "sha256_cbor_seed42", "evict_0");
    assert_eq!(s.registry.key_mode(&pod()), KeyMode::Rekey);
    let ours = keys_for("round2", "7");
    assert_eq!(matched(&s, &ours), 4);
    // vLLM's own values are not keys in this mode.
    assert_eq!(matched(&s, &keys_for("round2", "42")), 0);
}

#[test]
fn reset_clears_and_restart_clears() {
    let s = setup("42");
    feed_until(&s, "sha256_cbor_seed42", "round1_after_reset");
    // /reset_prefix_cache: AllBlocksCleared arrived at the next engine step.
    assert_eq!(matched(&s, &keys_for("plain_a", "42")), 0);

    let s = setup("42");
    feed_until(&s, "sha256_cbor_seed42", "evict_0");
    assert!(s.index.entries() > 0);
    // The same stream again from seq 0: the engine restarted. One message claiming it is
    // held; the next (seq 1) confirms it.
    let stream = captured("sha256_cbor_seed42");
    for (frames, _) in &stream[..2] {
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        s.ingest
            .handle(Source::Dialed("127.0.0.1:8000"), &refs, false);
    }
    assert_eq!(matched(&s, &keys_for("plain_a", "42")), 0);
    assert!(s
        .metrics
        .encode()
        .contains("kvroute_kv_seq_restarts_total 1"));
}

#[test]
fn a_gap_without_replay_relearns_and_unknown_publishers_are_dropped() {
    let s = setup("42");
    let stream = captured("sha256_cbor_seed42");
    let feed = |i: usize| {
        let refs: Vec<&[u8]> = stream[i].0.iter().map(Vec::as_slice).collect();
        s.ingest
            .handle(Source::Dialed("127.0.0.1:8000"), &refs, false)
    };
    feed(0);
    feed(1);
    feed(3); // seq 2 lost
    assert!(s.metrics.encode().contains("kvroute_kv_seq_gaps_total 1"));
    assert!(s.registry.snapshot(&Default::default())[0].stale);

    // Bound socket: a topic naming a host that is not a known engine.
    let mut frames = stream[0].0.clone();
    frames[0] = b"kv@10.66.6.6@Qwen3-32B".to_vec();
    let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    assert_eq!(
        s.ingest.handle(Source::Bound { peer: None }, &refs, false),
        Outcome::Dropped(DropReason::UnknownPublisher)
    );
    let garbage: [&[u8]; 3] = [b"kv@127.0.0.1@m", &[0u8; 8], b"\xc1\xc1"];
    assert_eq!(
        s.ingest
            .handle(Source::Bound { peer: None }, &garbage, false),
        Outcome::Dropped(DropReason::Malformed)
    );
    // The model comes from the topic.
    assert_eq!(s.registry.models(), vec!["Qwen3-32B".to_string()]);
    s.index.apply(&pod(), IndexOp::ClearPod);
}

/// The attack run's block sizes (issue 10): 0 turned cache routing off for the pod,
/// 2^32-1 made the hasher reserve ~21.5 GB. Such events are skipped and counted; the
/// pod's block size and its indexed blocks stay what vLLM's own events made them.
#[test]
fn block_sizes_vllm_cannot_send_are_counted_and_never_applied() {
    use kvroute_kvevents::{decode_message, encode_message, KvEvent, WireGeneration};

    let s = setup("42");
    feed_until(&s, "sha256_cbor_seed42", "evict_0");
    let entries = s.index.entries();
    let block_size = |s: &Setup| {
        s.registry
            .snapshot(&Default::default())
            .into_iter()
            .find(|p| p.endpoint == "127.0.0.1:8000")
            .and_then(|p| p.block_size)
    };
    let before = block_size(&s);
    assert!(before.is_some());
    // A real BlockStored from the capture, its block size rewritten, sent as the next
    // message of the same stream.
    let captured = captured("sha256_cbor_seed42");
    let (frames, _) = captured
        .iter()
        .find(|(f, _)| {
            let refs: Vec<&[u8]> = f.iter().map(Vec::as_slice).collect();
            decode_message(&refs).is_ok_and(|m| {
                m.batch
                    .events
                    .iter()
                    .any(|e| matches!(e, KvEvent::BlockStored(_)))
            })
        })
        .unwrap();
    let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    let template = decode_message(&refs).unwrap();
    let mut seq = s
        .registry
        .snapshot(&Default::default())
        .into_iter()
        .find_map(|p| p.last_seq)
        .unwrap();
    for bad in [0, u32::MAX] {
        let mut batch = template.batch.clone();
        for e in &mut batch.events {
            if let KvEvent::BlockStored(stored) = e {
                stored.block_size = bad;
            }
        }
        seq += 1;
        let frames = encode_message(&template.topic, seq, &batch, WireGeneration::V03xMaps);
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        let out = s
            .ingest
            .handle(Source::Dialed("127.0.0.1:8000"), &refs, false);
        assert!(matches!(out, Outcome::Applied { events: 0 }), "{out:?}");
    }
    assert_eq!(block_size(&s), before);
    assert_eq!(s.index.entries(), entries);
    assert!(s
        .metrics
        .encode()
        .contains("kvroute_kv_invalid_events_total 2"));
}
