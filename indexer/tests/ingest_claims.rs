//! What one message may not decide, without sockets: a real vLLM 0.32 capture
//! (testdata/vllm-0.32) fed through `Ingest::handle`, with single messages re-sequenced,
//! re-ranked or re-topiced (re-encoded by kvevents' encoder) to play a publisher that
//! claims what the engine did not: a restart that would wipe the engine, thousands of
//! data-parallel ranks, another model. Each claim needs the pod's next message to continue
//! it; the real engine's own changes still land, a message late.

use std::sync::Arc;

use kvroute_blockhash::{ExtraKeysStyle, HashConfig, HashScheme};
use kvroute_indexer::index::{BlockIndex, IndexOp, PodIndex};
use kvroute_indexer::ingest::{DropReason, Ingest, IngestConfig, Outcome, Source};
use kvroute_indexer::metrics::Metrics;
use kvroute_indexer::pods::PodRegistry;
use kvroute_indexer::types::PodId;
use kvroute_kvevents::{decode_message, encode_message, KvMessage, WireGeneration};

const ENGINE: &str = "127.0.0.1:8000";

struct Setup {
    ingest: Ingest,
    index: Arc<BlockIndex>,
    registry: Arc<PodRegistry>,
    metrics: Arc<Metrics>,
}

fn setup(config: IngestConfig) -> Setup {
    let index = Arc::new(BlockIndex::new(1 << 20));
    let registry = Arc::new(PodRegistry::new(None));
    let metrics = Arc::new(Metrics::new());
    let ingest = Ingest::new(
        config,
        index.clone(),
        registry.clone(),
        metrics.clone(),
        HashConfig {
            scheme: HashScheme::Sha256Cbor,
            block_size: 64,
            seed: Some("42".into()),
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

/// The captured messages, decoded.
fn captured() -> Vec<KvMessage> {
    kvroute_testdata::vllm_capture("sha256_cbor_seed42")
        .messages
        .iter()
        .map(|m| decode_message(&m.frame_refs()).unwrap())
        .collect()
}

fn feed(s: &Setup, msg: &KvMessage) -> Outcome {
    let frames = encode_message(&msg.topic, msg.seq, &msg.batch, WireGeneration::V03xMaps);
    let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    s.ingest.handle(Source::Dialed(ENGINE), &refs, false)
}

fn pod(rank: u32) -> PodId {
    PodId {
        endpoint: ENGINE.into(),
        dp_rank: rank,
    }
}

/// GPU blocks the index holds for the engine's rank 0.
fn held(s: &Setup) -> usize {
    s.index
        .blocks_per_pod()
        .get(&pod(0))
        .map(|(gpu, _)| *gpu)
        .unwrap_or(0)
}

#[test]
fn a_backwards_sequence_number_alone_cannot_wipe_an_engine() {
    let s = setup(IngestConfig::with_engines([ENGINE]));
    let stream = captured();
    for m in &stream[..10] {
        assert!(matches!(feed(&s, m), Outcome::Applied { .. }));
    }
    let before = held(&s);
    assert!(before > 0);
    // One message claiming a restart (sequence 0 again) is held, not applied.
    let mut forged = stream[0].clone();
    forged.batch.events.clear();
    assert_eq!(feed(&s, &forged), Outcome::Held);
    assert_eq!(held(&s), before);
    // The engine's stream goes on: the claim is discarded, counted, and the index holds
    // what it holds with no forgery at all.
    assert!(matches!(feed(&s, &stream[10]), Outcome::Applied { .. }));
    let reference = setup(IngestConfig::with_engines([ENGINE]));
    for m in &stream[..11] {
        feed(&reference, m);
    }
    assert_eq!(held(&s), held(&reference));
    assert_eq!(s.metrics.unconfirmed_claims.get(), 1);
    assert_eq!(s.metrics.seq_restarts.get(), 0);

    // A real restart: sequence 0, then 1. Confirmed by the second message, the pod is
    // cleared and re-learns from both.
    assert_eq!(feed(&s, &stream[0]), Outcome::Held);
    assert!(matches!(feed(&s, &stream[1]), Outcome::Applied { .. }));
    assert_eq!(s.metrics.seq_restarts.get(), 1);
    let relearned = held(&s);
    let fresh = setup(IngestConfig::with_engines([ENGINE]));
    feed(&fresh, &stream[0]);
    feed(&fresh, &stream[1]);
    assert_eq!(relearned, held(&fresh));
    s.index.apply(&pod(0), IndexOp::ClearPod);
}

#[test]
fn five_thousand_data_parallel_ranks_stay_bounded() {
    let mut config = IngestConfig::with_engines([ENGINE]);
    config.max_dp_ranks = 8;
    let s = setup(config);
    let stream = captured();
    for rank in 0..5_000u32 {
        for seq in 0..2 {
            let mut m = stream[0].clone();
            m.seq = seq;
            m.batch.data_parallel_rank = Some(rank);
            let outcome = feed(&s, &m);
            if rank >= 8 {
                assert_eq!(outcome, Outcome::Dropped(DropReason::RankLimit));
            }
        }
    }
    let pods = s.registry.all();
    assert_eq!(pods.len(), 8, "{pods:?}");
    assert!(pods.iter().all(|p| p.dp_rank < 8));
    assert_eq!(s.metrics.rank_limit_messages.get(), (5_000 - 8) * 2);
}

#[test]
fn a_new_rank_needs_two_messages_and_loses_neither() {
    let s = setup(IngestConfig::with_engines([ENGINE]));
    let stream = captured();
    let mut first = stream[0].clone();
    first.batch.data_parallel_rank = Some(3);
    assert_eq!(feed(&s, &first), Outcome::Held);
    assert!(!s.registry.all().contains(&pod(3)));
    let mut second = stream[1].clone();
    second.batch.data_parallel_rank = Some(3);
    assert!(matches!(feed(&s, &second), Outcome::Applied { .. }));
    assert!(s.registry.all().contains(&pod(3)));
    // Both messages' blocks are indexed for rank 3.
    let fresh = setup(IngestConfig::with_engines([ENGINE]));
    feed(&fresh, &stream[0]);
    feed(&fresh, &stream[1]);
    assert_eq!(
        s.index.blocks_per_pod().get(&pod(3)).map(|b| b.0),
        Some(held(&fresh))
    );
}

#[test]
fn a_model_change_needs_two_messages() {
    let s = setup(IngestConfig::with_engines([ENGINE]));
    let stream = captured();
    for m in &stream[..3] {
        feed(&s, m);
    }
    let model = stream[0].topic.rsplit('@').next().unwrap().to_owned();
    assert_eq!(s.registry.models(), vec![model.clone()]);
    let retopic = |m: &KvMessage| {
        let mut m = m.clone();
        m.topic = m.topic.replace(&model, "other-model");
        m
    };
    // One message naming another model: held; the next names the old one: discarded.
    assert_eq!(feed(&s, &retopic(&stream[3])), Outcome::Held);
    assert!(matches!(feed(&s, &stream[4]), Outcome::Applied { .. }));
    assert_eq!(s.registry.models(), vec![model.clone()]);
    assert_eq!(s.metrics.unconfirmed_claims.get(), 1);
    // Two in a row: the engine serves the other model now.
    assert_eq!(feed(&s, &retopic(&stream[5])), Outcome::Held);
    assert!(matches!(
        feed(&s, &retopic(&stream[6])),
        Outcome::Applied { .. }
    ));
    assert_eq!(s.registry.models(), vec!["other-model".to_string()]);
}
