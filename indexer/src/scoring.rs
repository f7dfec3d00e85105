//! Which pod: the indexer's inputs put into the shared pure decision (`kvroute-scoring`).
//!
//! The decision itself (predicted time to first token in prefill tokens, the hot-spot guard,
//! the weights and their reasons) lives in `kvroute-scoring`, so the simulator's fleet model
//! runs the same code. This module only assembles, per pod, what the index and the ledger
//! of decisions know (`PodMatch`, `Pending`) and what its metrics said (`PodLoad`), and turns
//! the answer back into pods and the candidates `/v1/route` reports.

use kvroute_api::ANSWER_CANDIDATES;
use kvroute_scoring::{choose, Pending, PodView, Request, Score};
pub use kvroute_scoring::{Reason, Weights as ScoringWeights};

use crate::index::PodMatch;
use crate::types::{PodId, PodLoad};

// Candidates travel in the route answer: defined with it, in the contract.
pub use kvroute_api::Candidate;

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub pod: PodId,
    /// Its place among the pods given to [`decide`].
    pub index: usize,
    pub matched_blocks: usize,
    /// Prompt tokens the chosen pod does not hold: the prefill this decision queues there.
    pub uncached_tokens: f64,
    pub reason: Reason,
    pub candidates: Vec<Candidate>,
}

/// What a decision knows of each pod, in columns (entry `i` of each is pod `i`), built
/// once per decision without a lookup per pod: the scoring reads `views` as they are.
#[derive(Debug, Default)]
pub struct Inputs<'a> {
    pub pods: Vec<&'a PodId>,
    pub loads: Vec<PodLoad>,
    pub pending: Vec<Pending>,
    pub views: Vec<PodView>,
}

impl<'a> Inputs<'a> {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            pods: Vec::with_capacity(n),
            loads: Vec::with_capacity(n),
            pending: Vec::with_capacity(n),
            views: Vec::with_capacity(n),
        }
    }

    /// A pod, its load as scraped, its pending work from the ledger, and the request's
    /// prefix it holds (`None`: nothing).
    pub fn push(
        &mut self,
        pod: &'a PodId,
        load: PodLoad,
        pending: Pending,
        held: Option<&PodMatch>,
    ) {
        self.views.push(PodView {
            gpu_blocks: held.map_or(0, |m| m.gpu_blocks),
            any_tier_blocks: held.map_or(0, |m| m.any_tier_blocks),
            pending_requests: pending.requests,
            pending_tokens: pending.tokens,
            waiting: load.waiting,
            running: load.running,
            kv_usage: load.kv_usage,
        });
        self.pods.push(pod);
        self.loads.push(load);
        self.pending.push(pending);
    }
}

/// Pick among the pods of `inputs` for a request of `keys`.
pub fn decide(
    weights: &ScoringWeights,
    inputs: &Inputs<'_>,
    keys: &[u64],
    block_size: usize,
) -> Option<Decision> {
    let request = Request {
        prompt_tokens: keys.len() * block_size,
        block_size,
        first_key: keys.first().copied(),
    };
    let d = choose(weights, &inputs.views, &request)?;
    let candidates: Vec<Candidate> = answer_order(&d.scores, d.pod)
        .into_iter()
        .map(|i| {
            let (pod, pending, score) = (inputs.pods[i], &inputs.pending[i], &d.scores[i]);
            Candidate {
                endpoint: pod.endpoint.to_string(),
                dp_rank: pod.dp_rank,
                matched_blocks: inputs.views[i].any_tier_blocks,
                saved_tokens: score.saved_tokens,
                queued_tokens: score.queued_tokens,
                ttft_tokens: score.ttft_tokens,
                load_cost: score.cost,
                pending_requests: pending.requests,
                pending_tokens: pending.tokens,
                load: PodLoad {
                    in_flight: pending.in_flight,
                    ..inputs.loads[i]
                },
            }
        })
        .collect();
    let chosen = &candidates[0];
    Some(Decision {
        pod: inputs.pods[d.pod].clone(),
        index: d.pod,
        matched_blocks: chosen.matched_blocks,
        uncached_tokens: (request.prompt_tokens as f64 - chosen.saved_tokens).max(0.0),
        reason: d.reason,
        candidates,
    })
}

/// The pods the answer lists: the chosen one, then the cheapest others, at most
/// [`ANSWER_CANDIDATES`]; linear in the fleet (only the few listed are sorted).
fn answer_order(scores: &[Score], chosen: usize) -> Vec<usize> {
    let by_cost = |a: &usize, b: &usize| scores[*a].cost.total_cmp(&scores[*b].cost);
    let mut others: Vec<usize> = (0..scores.len()).filter(|&i| i != chosen).collect();
    let keep = others.len().min(ANSWER_CANDIDATES - 1);
    if keep < others.len() {
        others.select_nth_unstable_by(keep, by_cost);
        others.truncate(keep);
    }
    others.sort_by(by_cost);
    std::iter::once(chosen).chain(others).collect()
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

    /// The decision for a 100-block request whose first 90 blocks pod `n` holds.
    fn decide_with_90_of_100_blocks_on(pods: &[(PodId, PodLoad, Pending)], n: u8) -> Decision {
        let matches = [PodMatch {
            pod: pod(n),
            gpu_blocks: 90,
            any_tier_blocks: 90,
        }];
        let keys: Vec<u64> = (0..100).collect();
        let mut inputs = Inputs::default();
        for (p, load, pending) in pods {
            inputs.push(p, *load, *pending, matches.iter().find(|m| m.pod == *p));
        }
        decide(&ScoringWeights::default(), &inputs, &keys, 64).unwrap()
    }

    #[test]
    fn the_chosen_pod_and_its_uncached_work_come_back_as_pods() {
        let pods: Vec<(PodId, PodLoad, Pending)> = (1..=3)
            .map(|n| (pod(n), PodLoad::default(), Pending::default()))
            .collect();
        let d = decide_with_90_of_100_blocks_on(&pods, 2);
        assert_eq!(
            (d.pod, d.matched_blocks, d.reason, d.uncached_tokens),
            (pod(2), 90, Reason::CacheHit, 640.0)
        );
        assert_eq!(d.candidates.len(), 3);
        // The chosen pod first, its cached prefix saved.
        assert_eq!(d.candidates[0].endpoint, "10.0.0.2:8000");
        assert_eq!(d.candidates[0].saved_tokens, 5_760.0);
    }

    #[test]
    fn the_answer_lists_the_chosen_pod_then_the_cheapest_few() {
        let pods: Vec<(PodId, PodLoad, Pending)> = (1..=40)
            .map(|n| {
                let load = PodLoad {
                    waiting: f64::from(n % 7),
                    ..PodLoad::default()
                };
                (pod(n), load, Pending::default())
            })
            .collect();
        let d = decide_with_90_of_100_blocks_on(&pods, 33);
        assert_eq!(d.pod, pod(33));
        assert_eq!(d.candidates.len(), ANSWER_CANDIDATES);
        assert_eq!(d.candidates[0].endpoint, "10.0.0.33:8000");
        let costs: Vec<f64> = d.candidates[1..].iter().map(|c| c.load_cost).collect();
        assert!(costs.windows(2).all(|w| w[0] <= w[1]), "{costs:?}");
        // They are the cheapest of the others: no pod left out costs less.
        let request = Request {
            prompt_tokens: 6400,
            block_size: 64,
            first_key: Some(0),
        };
        let mut others: Vec<f64> = pods
            .iter()
            .filter(|(p, _, _)| p != &pod(33))
            .map(|(_, l, _)| {
                let view = PodView {
                    waiting: l.waiting,
                    ..PodView::default()
                };
                ScoringWeights::default().score(&view, &request).cost
            })
            .collect();
        others.sort_by(f64::total_cmp);
        assert_eq!(costs, others[..ANSWER_CANDIDATES - 1]);
    }
}
