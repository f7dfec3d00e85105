//! Which pod: the indexer's inputs put into the shared pure decision (`kvroute-scoring`).
//!
//! The decision itself (predicted time to first token in prefill tokens, the hot-spot guard,
//! the weights and their reasons) lives in `kvroute-scoring`, so the simulator's fleet model
//! runs the same code. This module only assembles, per pod, what the index and the ledger
//! of decisions know (`PodMatch`, `Pending`) and what its metrics said (`PodLoad`), and turns
//! the answer back into pods and the candidates `/v1/route` reports.

use kvroute_scoring::{choose, Pending, PodView, Request};
pub use kvroute_scoring::{Reason, Weights as ScoringWeights};

use crate::index::PodMatch;
use crate::types::{PodId, PodLoad};

// Candidates travel in the route answer: defined with it, in the contract.
pub use kvroute_api::Candidate;

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub pod: PodId,
    pub matched_blocks: usize,
    /// Prompt tokens the chosen pod does not hold: the prefill this decision queues there.
    pub uncached_tokens: f64,
    pub reason: Reason,
    pub candidates: Vec<Candidate>,
}

/// Pick among `pods` (loads as scraped, `pending` from the ledger) given the matches.
pub fn decide(
    weights: &ScoringWeights,
    pods: &[(PodId, PodLoad, Pending)],
    matches: &[PodMatch],
    keys: &[u64],
    block_size: usize,
) -> Option<Decision> {
    let views: Vec<PodView> = pods
        .iter()
        .map(|(pod, load, pending)| {
            let m = matches.iter().find(|m| &m.pod == pod);
            PodView {
                gpu_blocks: m.map_or(0, |m| m.gpu_blocks),
                any_tier_blocks: m.map_or(0, |m| m.any_tier_blocks),
                pending_requests: pending.requests,
                pending_tokens: pending.tokens,
                waiting: load.waiting,
                running: load.running,
                kv_usage: load.kv_usage,
            }
        })
        .collect();
    let request = Request {
        prompt_tokens: keys.len() * block_size,
        block_size,
        first_key: keys.first().copied(),
    };
    let d = choose(weights, &views, &request)?;
    let candidates: Vec<Candidate> = pods
        .iter()
        .zip(&views)
        .zip(&d.scores)
        .map(|(((pod, load, pending), view), score)| Candidate {
            endpoint: pod.endpoint.to_string(),
            dp_rank: pod.dp_rank,
            matched_blocks: view.any_tier_blocks,
            saved_tokens: score.saved_tokens,
            queued_tokens: score.queued_tokens,
            ttft_tokens: score.ttft_tokens,
            load_cost: score.cost,
            pending_requests: pending.requests,
            pending_tokens: pending.tokens,
            load: PodLoad {
                in_flight: pending.in_flight,
                ..*load
            },
        })
        .collect();
    let chosen = &candidates[d.pod];
    Some(Decision {
        pod: pods[d.pod].0.clone(),
        matched_blocks: chosen.matched_blocks,
        uncached_tokens: (request.prompt_tokens as f64 - chosen.saved_tokens).max(0.0),
        reason: d.reason,
        candidates,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(n: u8) -> PodId {
        PodId {
            endpoint: format!("10.0.0.{n}:8000").into(),
            dp_rank: 0,
        }
    }

    #[test]
    fn the_chosen_pod_and_its_uncached_work_come_back_as_pods() {
        let pods: Vec<(PodId, PodLoad, Pending)> = (1..=3)
            .map(|n| (pod(n), PodLoad::default(), Pending::default()))
            .collect();
        let matches = [PodMatch {
            pod: pod(2),
            gpu_blocks: 90,
            any_tier_blocks: 90,
        }];
        let keys: Vec<u64> = (0..100).collect();
        let d = decide(&ScoringWeights::default(), &pods, &matches, &keys, 64).unwrap();
        assert_eq!(
            (d.pod, d.matched_blocks, d.reason, d.uncached_tokens),
            (pod(2), 90, Reason::CacheHit, 640.0)
        );
        assert_eq!(d.candidates.len(), 3);
        assert_eq!(d.candidates[1].saved_tokens, 5_760.0);
    }
}
