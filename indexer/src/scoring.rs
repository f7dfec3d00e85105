//! Which pod: the indexer's inputs put into the shared pure decision (`kvroute-scoring`).
//!
//! The decision itself (predicted time to first token in prefill tokens, the hot-spot guard,
//! the weights and their reasons) lives in `kvroute-scoring`, so the simulator's fleet model
//! runs the same code. This module only assembles, per pod, what the index and the ledger
//! of decisions know (`PodMatch`, `Pending`) and what its metrics said (`PodLoad`), and turns
//! the answer back into pods and the candidates `/v1/route` reports.

use kvroute_api::ANSWER_CANDIDATES;
use kvroute_scoring::{choose_into, Pending, PodView, Request, Score};
pub use kvroute_scoring::{Reason, Weights as ScoringWeights};

use crate::index::PodMatch;
use crate::types::{PodId, PodLoad, PodSlot};

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

/// What a decision knows of each pod, in columns (entry `i` of each is the `i`th pod
/// pushed), built once per decision without a lookup per pod: the scoring reads `views` as
/// they are. Only what every pod's price needs is copied; the few pods the answer lists are
/// looked up again. Kept between decisions (cleared, not freed): at 1,024 engines the
/// columns are ~100 KB, allocated and first touched anew on every decision otherwise.
#[derive(Debug, Default)]
pub struct Inputs {
    /// Each pod's place in the pods given to [`decide`].
    members: Vec<u32>,
    views: Vec<PodView>,
    scores: Vec<Score>,
}

impl Inputs {
    /// Empty columns, their memory kept.
    pub fn clear(&mut self) {
        self.members.clear();
        self.views.clear();
        self.scores.clear();
    }

    /// The pod at `member` of the pods given to [`decide`]: its load as scraped, its
    /// pending work from the ledger, and the request's prefix it holds (`None`: nothing).
    #[inline]
    pub fn push(
        &mut self,
        member: usize,
        load: &PodLoad,
        pending: &Pending,
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
        self.members.push(member as u32);
    }
}

/// Pick among the pods pushed into `inputs` (places in `pods`) for a request of `keys`;
/// `detail` gives a slot's load and pending work for the pods the answer lists.
/// [`Decision::index`] is the chosen pod's place in `pods`.
pub fn decide(
    weights: &ScoringWeights,
    inputs: &mut Inputs,
    pods: &[(PodId, PodSlot)],
    keys: &[u64],
    block_size: usize,
    detail: impl Fn(PodSlot) -> (PodLoad, Pending),
) -> Option<Decision> {
    let request = Request {
        prompt_tokens: keys.len() * block_size,
        block_size,
        first_key: keys.first().copied(),
    };
    let (chosen, reason) = choose_into(weights, &inputs.views, &request, &mut inputs.scores)?;
    let candidates: Vec<Candidate> = answer_order(&inputs.scores, chosen)
        .into_iter()
        .map(|i| {
            let (pod, slot) = &pods[inputs.members[i] as usize];
            let (load, pending) = detail(*slot);
            let score = &inputs.scores[i];
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
                    ..load
                },
            }
        })
        .collect();
    let index = inputs.members[chosen] as usize;
    let first = &candidates[0];
    Some(Decision {
        pod: pods[index].0.clone(),
        index,
        matched_blocks: first.matched_blocks,
        uncached_tokens: (request.prompt_tokens as f64 - first.saved_tokens).max(0.0),
        reason,
        candidates,
    })
}

/// The pods the answer lists: the chosen one, then the cheapest others (equal costs in pod
/// order), at most [`ANSWER_CANDIDATES`]. One pass over the fleet keeping the few cheapest
/// in order: most pods cost one comparison with the dearest kept, and nothing the size of
/// the fleet is allocated.
fn answer_order(scores: &[Score], chosen: usize) -> Vec<usize> {
    let keep = ANSWER_CANDIDATES - 1;
    let mut cheapest: Vec<usize> = Vec::with_capacity(ANSWER_CANDIDATES);
    for (i, score) in scores.iter().enumerate() {
        let cost = score.cost;
        let dearer_than_all_kept = cheapest.len() == keep
            && cheapest
                .last()
                .is_some_and(|&last| cost.total_cmp(&scores[last].cost).is_ge());
        if i == chosen || dearer_than_all_kept {
            continue;
        }
        let at = cheapest.partition_point(|&j| scores[j].cost.total_cmp(&cost).is_le());
        cheapest.insert(at, i);
        cheapest.truncate(keep);
    }
    std::iter::once(chosen).chain(cheapest).collect()
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
        let members: Vec<(PodId, PodSlot)> = pods
            .iter()
            .enumerate()
            .map(|(i, (p, _, _))| (p.clone(), PodSlot(i as u32)))
            .collect();
        for (i, (p, load, pending)) in pods.iter().enumerate() {
            inputs.push(i, load, pending, matches.iter().find(|m| m.pod == *p));
        }
        let detail = |slot: PodSlot| {
            let (_, load, pending) = pods[slot.0 as usize];
            (load, pending)
        };
        let w = ScoringWeights::default();
        decide(&w, &mut inputs, &members, &keys, 64, detail).unwrap()
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
    fn the_answer_order_is_a_full_sort_cut_short() {
        // Costs with many ties and a NaN-free spread; the chosen pod anywhere.
        for n in [1usize, 2, 7, 8, 9, 100, 1024] {
            let scores: Vec<Score> = (0..n)
                .map(|i| Score {
                    saved_tokens: 0.0,
                    queued_tokens: 0.0,
                    ttft_tokens: 0.0,
                    cost: ((i * 7919) % 13) as f64,
                })
                .collect();
            for chosen in [0, n / 2, n - 1] {
                let mut sorted: Vec<usize> = (0..n).filter(|&i| i != chosen).collect();
                sorted.sort_by(|&a, &b| scores[a].cost.total_cmp(&scores[b].cost));
                sorted.truncate(ANSWER_CANDIDATES - 1);
                let expected: Vec<usize> = std::iter::once(chosen).chain(sorted).collect();
                assert_eq!(answer_order(&scores, chosen), expected, "{n} pods");
            }
        }
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
