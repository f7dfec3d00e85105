//! Which pod: the prefill work a pod saves, net of what its load costs. Pure logic.
//!
//! Everything is counted in prompt tokens, the unit both sides share: a cached prefix saves
//! its length in prefill tokens (lower-tier hits count by a weight, since they must be copied
//! back first); load costs tokens too, because a request waiting in a pod's queue delays ours
//! by about the prefill it will run first. So a long cached prefix beats a slightly shorter
//! queue, but not a pod drowning in work: past `spill_waiting` queued requests the best
//! cached pod is abandoned for the least-loaded one. Without any hit, the least-loaded pod
//! wins and ties break by the request's first key, so different new prefixes spread out
//! while the same one keeps landing on the same pod. Never random.

use crate::defaults;
use crate::index::PodMatch;
use crate::types::{PodId, PodLoad};

/// Weights of the decision; defaults are argued in docs/indexer.md.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct ScoringWeights {
    /// Worth of a block held on CPU/storage relative to the GPU (0..1).
    #[arg(long, default_value_t = defaults::LOWER_TIER_WEIGHT)]
    pub lower_tier_weight: f64,
    /// Tokens of delay one queued request adds.
    #[arg(long, default_value_t = defaults::WAITING_COST)]
    pub waiting_cost: f64,
    /// Tokens of delay one running request adds (it shares each step's budget).
    #[arg(long, default_value_t = defaults::RUNNING_COST)]
    pub running_cost: f64,
    /// Tokens of delay one in-flight decision adds (not yet visible in the pod's metrics).
    #[arg(long, default_value_t = defaults::IN_FLIGHT_COST)]
    pub in_flight_cost: f64,
    /// Tokens of cost at a full KV cache (the pod will evict or preempt).
    #[arg(long, default_value_t = defaults::KV_USAGE_COST)]
    pub kv_usage_cost: f64,
    /// Queued requests past which the best cached pod is abandoned for the least loaded.
    #[arg(long, default_value_t = defaults::SPILL_WAITING)]
    pub spill_waiting: f64,
    /// Worth of a cached prefix token against a token of load. 0 routes on load alone
    /// (least loaded, ties to the first pod, no key-based spread): the benchmark's
    /// load-only baseline, which must not get cache affinity through the back door.
    #[arg(long, default_value_t = defaults::CACHE_WEIGHT)]
    pub cache_weight: f64,
}

impl Default for ScoringWeights {
    fn default() -> Self {
        Self {
            lower_tier_weight: defaults::LOWER_TIER_WEIGHT,
            waiting_cost: defaults::WAITING_COST,
            running_cost: defaults::RUNNING_COST,
            in_flight_cost: defaults::IN_FLIGHT_COST,
            kv_usage_cost: defaults::KV_USAGE_COST,
            spill_waiting: defaults::SPILL_WAITING,
            cache_weight: defaults::CACHE_WEIGHT,
        }
    }
}

/// One candidate as scored, for the answer and for debugging.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Candidate {
    pub endpoint: String,
    pub dp_rank: u32,
    pub matched_blocks: usize,
    pub saved_tokens: f64,
    pub load_cost: f64,
    pub load: PodLoad,
}

/// Why a pod was chosen. Spelled by [`Reason::as_str`] alone, in the JSON answer and in
/// the `reason` label of `kvroute_route_decisions_total` alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Most prefill saved net of load.
    CacheHit,
    /// The best cached pod was overloaded.
    Spill,
    /// Nothing cached anywhere: least loaded.
    LeastLoaded,
}

impl Reason {
    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::CacheHit => "cache_hit",
            Reason::Spill => "spill",
            Reason::LeastLoaded => "least_loaded",
        }
    }
}

impl serde::Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub pod: PodId,
    pub matched_blocks: usize,
    pub reason: Reason,
    pub candidates: Vec<Candidate>,
}

/// Our decisions the pod's last scrape does not show yet: in flight beyond what it reports
/// waiting or running. A decision stays in flight until its response ends (a whole
/// generation); once the pod reports it, the queue weights price it, and charging it again
/// as in flight would count every decoding request twice, for minutes, until a long shared
/// prefix no longer outweighs a few decodes (the benchmark measured exactly that).
fn unseen_in_flight(load: &PodLoad) -> f64 {
    (f64::from(load.in_flight) - load.waiting - load.running).max(0.0)
}

impl ScoringWeights {
    pub fn load_cost(&self, load: &PodLoad) -> f64 {
        self.waiting_cost * load.waiting
            + self.running_cost * load.running
            + self.in_flight_cost * unseen_in_flight(load)
            + self.kv_usage_cost * load.kv_usage
    }

    fn saved_tokens(&self, m: Option<&PodMatch>, block_size: usize) -> (usize, f64) {
        match m {
            None => (0, 0.0),
            Some(m) => {
                let lower = m.any_tier_blocks.saturating_sub(m.gpu_blocks);
                let saved = (m.gpu_blocks as f64 + self.lower_tier_weight * lower as f64)
                    * block_size as f64
                    * self.cache_weight.max(0.0);
                (m.any_tier_blocks, saved)
            }
        }
    }

    /// Pick among `pods` (with their loads) given the index's matches. None if no pod.
    pub fn choose(
        &self,
        pods: &[(PodId, PodLoad)],
        matches: &[PodMatch],
        block_size: usize,
        first_key: Option<u64>,
    ) -> Option<Decision> {
        let candidates: Vec<Candidate> = pods
            .iter()
            .map(|(pod, load)| {
                let m = matches.iter().find(|m| &m.pod == pod);
                let (matched_blocks, saved_tokens) = self.saved_tokens(m, block_size);
                Candidate {
                    endpoint: pod.endpoint.to_string(),
                    dp_rank: pod.dp_rank,
                    matched_blocks,
                    saved_tokens,
                    load_cost: self.load_cost(load),
                    load: *load,
                }
            })
            .collect();
        if candidates.is_empty() {
            return None;
        }
        // Deterministic spread for ties: rotate the order by the request's first key.
        // Without cache weight the key must not pick the pod either (that would be affinity).
        let spread_key = if self.cache_weight > 0.0 {
            first_key
        } else {
            None
        };
        let offset = spread_key.unwrap_or(0) as usize % candidates.len();
        let order: Vec<usize> = (0..candidates.len())
            .map(|i| (i + offset) % candidates.len())
            .collect();
        let net = |i: usize| candidates[i].saved_tokens - candidates[i].load_cost;
        // Strict comparisons: among equals the first in the rotated order wins.
        let mut least_loaded = order[0];
        let mut best = order[0];
        for &i in &order[1..] {
            if candidates[i].load_cost < candidates[least_loaded].load_cost {
                least_loaded = i;
            }
            if net(i) > net(best) {
                best = i;
            }
        }
        // Spill only to a pod that is not overloaded itself: when every pod queues past the
        // threshold (the whole fleet is saturated), leaving the cache buys a cold prefill on
        // another full queue, more work for the fleet and no shorter wait (the benchmark
        // measured precise mode spilling two decisions in three that way).
        let overloaded = candidates[best].load.waiting >= self.spill_waiting
            && candidates[least_loaded].load.waiting < self.spill_waiting
            && candidates[least_loaded].load_cost < candidates[best].load_cost;
        let anything_cached = candidates.iter().any(|c| c.saved_tokens > 0.0);
        let (chosen, reason) = if candidates[best].saved_tokens > 0.0 && !overloaded {
            (best, Reason::CacheHit)
        } else if anything_cached {
            // The cache is somewhere, but its pods are too busy for it to pay.
            (least_loaded, Reason::Spill)
        } else {
            (least_loaded, Reason::LeastLoaded)
        };
        Some(Decision {
            pod: pods[chosen].0.clone(),
            matched_blocks: candidates[chosen].matched_blocks,
            reason,
            candidates,
        })
    }
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

    fn hit(n: u8, blocks: usize) -> PodMatch {
        PodMatch {
            pod: pod(n),
            gpu_blocks: blocks,
            any_tier_blocks: blocks,
        }
    }

    fn idle(n: u8) -> (PodId, PodLoad) {
        (pod(n), PodLoad::default())
    }

    #[test]
    fn the_longest_cached_prefix_wins_at_equal_load() {
        let w = ScoringWeights::default();
        let d = w
            .choose(
                &[idle(1), idle(2), idle(3)],
                &[hit(2, 90), hit(3, 10)],
                64,
                Some(7),
            )
            .unwrap();
        assert_eq!(
            (d.pod, d.matched_blocks, d.reason),
            (pod(2), 90, Reason::CacheHit)
        );
    }

    #[test]
    fn a_long_prefix_outweighs_a_little_load_but_not_an_overload() {
        let w = ScoringWeights::default();
        let busy = |waiting: f64| PodLoad {
            waiting,
            running: 4.0,
            ..Default::default()
        };
        let d = w
            .choose(&[(pod(1), busy(2.0)), idle(2)], &[hit(1, 93)], 64, None)
            .unwrap();
        assert_eq!((d.pod.clone(), d.reason), (pod(1), Reason::CacheHit));
        let d = w
            .choose(&[(pod(1), busy(40.0)), idle(2)], &[hit(1, 93)], 64, None)
            .unwrap();
        assert_eq!((d.pod, d.reason), (pod(2), Reason::Spill));
    }

    #[test]
    fn without_hits_the_least_loaded_and_ties_spread_by_first_key() {
        let w = ScoringWeights::default();
        let loaded = PodLoad {
            in_flight: 3,
            ..Default::default()
        };
        let d = w
            .choose(
                &[(pod(1), loaded), idle(2), (pod(3), loaded)],
                &[],
                64,
                Some(0),
            )
            .unwrap();
        assert_eq!((d.pod, d.reason), (pod(2), Reason::LeastLoaded));
        let pods = [idle(1), idle(2), idle(3), idle(4)];
        let chosen: std::collections::HashSet<_> = (0..4u64)
            .map(|k| w.choose(&pods, &[], 64, Some(k)).unwrap().pod)
            .collect();
        assert_eq!(chosen.len(), 4, "ties spread over pods");
        let again = w.choose(&pods, &[], 64, Some(2)).unwrap().pod;
        assert_eq!(again, w.choose(&pods, &[], 64, Some(2)).unwrap().pod);
    }

    #[test]
    fn no_spill_when_every_pod_is_overloaded() {
        let w = ScoringWeights::default();
        let queued = |waiting: f64| PodLoad {
            waiting,
            ..Default::default()
        };
        let d = w
            .choose(
                &[(pod(1), queued(20.0)), (pod(2), queued(18.0))],
                &[hit(1, 93)],
                64,
                None,
            )
            .unwrap();
        assert_eq!((d.pod, d.reason), (pod(1), Reason::CacheHit));
    }

    #[test]
    fn in_flight_decisions_the_metrics_already_show_are_not_charged_twice() {
        let w = ScoringWeights::default();
        let unseen = PodLoad {
            in_flight: 3,
            ..Default::default()
        };
        let seen = PodLoad {
            in_flight: 3,
            running: 2.0,
            waiting: 1.0,
            ..Default::default()
        };
        assert_eq!(w.load_cost(&unseen), 3.0 * w.in_flight_cost);
        assert_eq!(
            w.load_cost(&seen),
            2.0 * w.running_cost + 1.0 * w.waiting_cost
        );
    }

    #[test]
    fn cache_weight_zero_routes_on_load_alone() {
        let w = ScoringWeights {
            cache_weight: 0.0,
            ..ScoringWeights::default()
        };
        let one_in_flight = PodLoad {
            in_flight: 1,
            ..Default::default()
        };
        let d = w
            .choose(&[(pod(1), one_in_flight), idle(2)], &[hit(1, 93)], 64, None)
            .unwrap();
        assert_eq!((d.pod, d.reason), (pod(2), Reason::LeastLoaded));
        // Equal loads: the first pod, whatever the request's key (no key affinity).
        let pods = [idle(1), idle(2), idle(3)];
        for k in 0..6u64 {
            assert_eq!(w.choose(&pods, &[], 64, Some(k)).unwrap().pod, pod(1));
        }
    }

    #[test]
    fn lower_tiers_count_by_their_weight() {
        let w = ScoringWeights::default();
        let cpu = PodMatch {
            pod: pod(1),
            gpu_blocks: 0,
            any_tier_blocks: 10,
        };
        let d = w
            .choose(&[idle(1), idle(2)], &[cpu, hit(2, 6)], 64, None)
            .unwrap();
        assert_eq!(
            d.pod,
            pod(2),
            "6 GPU blocks beat 10 CPU blocks at weight 0.5"
        );
    }
}
