//! The decision: the pod with the shortest predicted time to first token, in prefill tokens.
//!
//! A pod makes our request wait for the prefill already queued before it (the uncached
//! prompt tokens of requests sent there and not yet prefilled, plus what its scraped queue
//! shows beyond those), then runs our own uncached tokens; running sequences slow every step
//! a little. Everything is counted in prompt tokens, the unit a cached prefix saves, so a
//! pod's cache and its queue are weighed on one scale and no per-request constant can
//! outweigh a whole prefix. The choice also charges the uncached tokens a second time
//! (`fleet_work_weight`): they are prefill every later request on that pod waits behind, so
//! a saturated fleet keeps its hits instead of trading them for a momentarily shorter queue.
//! A bounded-load guard (docs/indexer.md argues it against a temperature) keeps one hot
//! prefix from burying a pod: a pod whose queued work exceeds `hot_spot_factor` times the
//! fleet's mean plus `hot_spot_slack_tokens` takes no new request while another pod can.
//! Without any cache weight the key-based tie spread is off too, so the load-only baseline
//! gets no affinity through the back door.

/// Default of [`Weights::lower_tier_weight`].
pub const LOWER_TIER_WEIGHT: f64 = 0.5;
/// Default of [`Weights::unseen_waiting_tokens`].
pub const UNSEEN_WAITING_TOKENS: f64 = 512.0;
/// Default of [`Weights::decode_slowdown`].
pub const DECODE_SLOWDOWN: f64 = 0.000_6;
/// Default of [`Weights::kv_full_tokens`].
pub const KV_FULL_TOKENS: f64 = 1024.0;
/// Default of [`Weights::fleet_work_weight`].
pub const FLEET_WORK_WEIGHT: f64 = 1.0;
/// Default of [`Weights::hot_spot_factor`].
pub const HOT_SPOT_FACTOR: f64 = 2.0;
/// Default of [`Weights::hot_spot_slack_tokens`].
pub const HOT_SPOT_SLACK_TOKENS: f64 = 8192.0;
/// Default of [`Weights::cache_weight`].
pub const CACHE_WEIGHT: f64 = 1.0;

/// The decision's weights; each flag's reason is its doc, argued in docs/indexer.md.
#[derive(Debug, Clone, PartialEq, clap::Args, serde::Serialize, serde::Deserialize)]
pub struct Weights {
    /// Share of a CPU/storage-tier hit's prefill that is saved (0..1): the block must be
    /// copied back to the GPU first, which costs part of what recomputing would.
    #[arg(long, default_value_t = LOWER_TIER_WEIGHT)]
    pub lower_tier_weight: f64,
    /// Prefill tokens priced per request a pod's scraped queue shows beyond the ones this
    /// router sent and knows the size of (other routers' traffic, or ours the scrape has not
    /// caught up with). Small on purpose: in a cache-aware fleet most of a queued prompt
    /// hits, and a guess must never outweigh a measured prefix (it is 8 blocks).
    #[arg(long, default_value_t = UNSEEN_WAITING_TOKENS)]
    pub unseen_waiting_tokens: f64,
    /// Fraction by which each running sequence stretches prefill: it takes one token of
    /// every step's budget and adds its KV reads to the step (Qwen3-32B on 2 x H100: ~0.35 ms
    /// per sequence + one budget token, against ~0.68 s for an 8,192-token prefill step).
    #[arg(long, default_value_t = DECODE_SLOWDOWN)]
    pub decode_slowdown: f64,
    /// Prefill tokens of delay at a full KV cache (`vllm:kv_cache_usage_perc` = 1): the pod
    /// cannot admit us until a running request frees blocks. Priced linearly in usage.
    #[arg(long, default_value_t = KV_FULL_TOKENS)]
    pub kv_full_tokens: f64,
    /// Weight of our own uncached tokens counted again as the delay they add to every later
    /// request on that pod. 0 chooses by our own predicted TTFT alone; 1 also charges the
    /// work we impose, which keeps a saturated fleet's hits (every miss is prefill the whole
    /// pod then waits for).
    #[arg(long, default_value_t = FLEET_WORK_WEIGHT)]
    pub fleet_work_weight: f64,
    /// Bounded load: a pod whose queued prefill exceeds this multiple of the fleet's mean
    /// (plus the slack below) takes no new request while another pod is within the bound.
    #[arg(long, default_value_t = HOT_SPOT_FACTOR)]
    pub hot_spot_factor: f64,
    /// Queued prefill tokens always allowed above the bound: one longest prompt
    /// (`--max-model-len` 8,192), so an idle fleet's first burst is not scattered.
    #[arg(long, default_value_t = HOT_SPOT_SLACK_TOKENS)]
    pub hot_spot_slack_tokens: f64,
    /// Worth of a cached prefix token against a token of queued work. 0 routes on load
    /// alone (least predicted wait, ties to the first pod, no key-based spread): the
    /// benchmark's load-only baseline.
    #[arg(long, default_value_t = CACHE_WEIGHT)]
    pub cache_weight: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            lower_tier_weight: LOWER_TIER_WEIGHT,
            unseen_waiting_tokens: UNSEEN_WAITING_TOKENS,
            decode_slowdown: DECODE_SLOWDOWN,
            kv_full_tokens: KV_FULL_TOKENS,
            fleet_work_weight: FLEET_WORK_WEIGHT,
            hot_spot_factor: HOT_SPOT_FACTOR,
            hot_spot_slack_tokens: HOT_SPOT_SLACK_TOKENS,
            cache_weight: CACHE_WEIGHT,
        }
    }
}

/// The request being routed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Request {
    /// Prompt tokens (the indexer knows whole blocks only: blocks x block size).
    pub prompt_tokens: usize,
    pub block_size: usize,
    /// The request's first block key: ties between equal pods rotate by it, so different
    /// new prefixes spread while the same one keeps landing on the same pod.
    pub first_key: Option<u64>,
}

/// What the router knows of one pod for this request.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct PodView {
    /// Consecutive blocks of the request from the first held on the GPU.
    pub gpu_blocks: usize,
    /// The same on any tier (>= `gpu_blocks`).
    pub any_tier_blocks: usize,
    /// Requests this router sent here that are not prefilled yet, and their uncached tokens.
    pub pending_requests: u32,
    pub pending_tokens: f64,
    /// vLLM's `num_requests_waiting`, `num_requests_running`, `kv_cache_usage_perc`.
    pub waiting: f64,
    pub running: f64,
    pub kv_usage: f64,
}

/// One pod's price, for the answer and for debugging.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Score {
    /// Prompt tokens the pod's cache saves (lower tiers by their weight).
    pub saved_tokens: f64,
    /// Prefill tokens queued before ours.
    pub queued_tokens: f64,
    /// Predicted time to first token, in prefill tokens.
    pub ttft_tokens: f64,
    /// What the choice minimizes: the predicted TTFT plus the work we add to the pod.
    pub cost: f64,
}

// The reason travels in the route answer and the metrics: defined once, in the contract.
pub use kvroute_api::Reason;

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Index into the pods given to [`choose`].
    pub pod: usize,
    pub reason: Reason,
    pub scores: Vec<Score>,
}

impl Weights {
    fn saved_tokens(&self, pod: &PodView, request: &Request) -> f64 {
        let lower = pod.any_tier_blocks.saturating_sub(pod.gpu_blocks) as f64;
        let blocks = pod.gpu_blocks as f64 + self.lower_tier_weight * lower;
        (blocks * request.block_size as f64 * self.cache_weight.max(0.0))
            .min(request.prompt_tokens as f64)
    }

    /// Prefill tokens queued before a request routed to `pod`.
    pub fn queued_tokens(&self, pod: &PodView) -> f64 {
        let unseen = (pod.waiting - f64::from(pod.pending_requests)).max(0.0);
        pod.pending_tokens + self.unseen_waiting_tokens * unseen
    }

    /// `pod`'s price for `request`.
    pub fn score(&self, pod: &PodView, request: &Request) -> Score {
        let saved_tokens = self.saved_tokens(pod, request);
        // vLLM always computes at least the last prompt token (it samples from it).
        let own = (request.prompt_tokens as f64 - saved_tokens).max(1.0);
        let queued_tokens = self.queued_tokens(pod);
        let slowdown = 1.0 + self.decode_slowdown * pod.running.max(0.0);
        let ttft_tokens =
            slowdown * (queued_tokens + own) + self.kv_full_tokens * pod.kv_usage.clamp(0.0, 1.0);
        Score {
            saved_tokens,
            queued_tokens,
            ttft_tokens,
            cost: ttft_tokens + self.fleet_work_weight * own,
        }
    }
}

/// Picks among `pods` for `request`; None without pods.
pub fn choose(weights: &Weights, pods: &[PodView], request: &Request) -> Option<Decision> {
    let mut scores = Vec::with_capacity(pods.len());
    let (pod, reason) = choose_into(weights, pods, request, &mut scores)?;
    Some(Decision {
        pod,
        reason,
        scores,
    })
}

/// [`choose`], its scores written into `scores` (cleared first): the chosen pod's index and
/// why. For a caller deciding often over a large fleet, which keeps the buffer.
pub fn choose_into(
    weights: &Weights,
    pods: &[PodView],
    request: &Request,
    scores: &mut Vec<Score>,
) -> Option<(usize, Reason)> {
    if pods.is_empty() {
        return None;
    }
    scores.clear();
    scores.extend(pods.iter().map(|p| weights.score(p, request)));
    let n = pods.len();
    // Deterministic spread for ties: rotate the order by the request's first key. Without
    // cache weight the key must not pick the pod either (that would be affinity).
    let spread_key = if weights.cache_weight > 0.0 {
        request.first_key
    } else {
        None
    };
    let offset = (spread_key.unwrap_or(0) % n as u64) as usize;
    let mean_queued = scores.iter().map(|s| s.queued_tokens).sum::<f64>() / n as f64;
    let bound = weights.hot_spot_factor * mean_queued + weights.hot_spot_slack_tokens;
    // The pod with the least queued work is always within the bound (it is at most the
    // mean), so the filtered choice below always finds one. The rotated order is two
    // ranges, not an index modulo n per pod (a division each: a fifth of the scan).
    let mut best: Option<usize> = None;
    for i in (offset..n).chain(0..offset) {
        let s = &scores[i];
        if s.queued_tokens > bound {
            continue;
        }
        if best.is_none_or(|b| s.cost < scores[b].cost) {
            best = Some(i);
        }
    }
    let chosen = best.unwrap_or(0);
    let most_saved = scores.iter().map(|s| s.saved_tokens).fold(0.0, f64::max);
    let reason = if most_saved <= 0.0 {
        Reason::LeastLoaded
    } else if scores[chosen].saved_tokens >= most_saved {
        Reason::CacheHit
    } else {
        Reason::Spill
    };
    Some((chosen, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BS: usize = 64;

    fn request(blocks: usize) -> Request {
        Request {
            prompt_tokens: blocks * BS,
            block_size: BS,
            first_key: Some(7),
        }
    }

    fn cached(blocks: usize) -> PodView {
        PodView {
            gpu_blocks: blocks,
            any_tier_blocks: blocks,
            ..PodView::default()
        }
    }

    fn queued(pod: PodView, requests: u32, tokens: f64) -> PodView {
        PodView {
            pending_requests: requests,
            pending_tokens: tokens,
            waiting: f64::from(requests),
            ..pod
        }
    }

    #[test]
    fn the_longest_cached_prefix_wins_at_equal_load() {
        let w = Weights::default();
        let d = choose(&w, &[cached(0), cached(90), cached(10)], &request(112)).unwrap();
        assert_eq!((d.pod, d.reason), (1, Reason::CacheHit));
    }

    #[test]
    fn queued_requests_cost_their_uncached_tokens_not_a_flat_price() {
        // The cached pod has 40 requests queued, each a cache hit (1,200 uncached tokens):
        // 48,000 tokens of work. The cold pod's one queued request is a 7,200-token miss.
        // Ours saves 6,000 tokens on the cached pod. Flat per-request pricing (2,048 each)
        // would send us away; pricing work keeps us on the cache only while the queue is
        // smaller than the prefill we save twice over (ours and the pod's later requests).
        let w = Weights::default();
        let hot = queued(cached(94), 4, 4.0 * 1_200.0);
        let cold = queued(cached(0), 1, 7_200.0);
        let d = choose(&w, &[hot, cold], &request(112)).unwrap();
        assert_eq!((d.pod, d.reason), (0, Reason::CacheHit));
        let buried = queued(cached(94), 40, 40.0 * 1_200.0);
        let d = choose(&w, &[buried, cold], &request(112)).unwrap();
        assert_eq!((d.pod, d.reason), (1, Reason::Spill));
    }

    #[test]
    fn no_per_request_constant_outweighs_a_whole_cached_prefix() {
        // Scrape-lagged queue lengths differing by three requests the router knows nothing
        // about must not beat a 6,000-token prefix.
        let w = Weights::default();
        let mut hot = cached(94);
        hot.waiting = 3.0;
        let d = choose(&w, &[hot, cached(0)], &request(112)).unwrap();
        assert_eq!(d.pod, 0);
        assert!(w.unseen_waiting_tokens < (94 * BS) as f64);
    }

    #[test]
    fn decode_load_slows_a_pod_in_proportion() {
        let w = Weights::default();
        let mut busy = cached(0);
        busy.running = 200.0;
        let s_busy = w.score(&busy, &request(10));
        let s_idle = w.score(&cached(0), &request(10));
        let ratio = s_busy.ttft_tokens / s_idle.ttft_tokens;
        assert!((ratio - (1.0 + 200.0 * DECODE_SLOWDOWN)).abs() < 1e-9);
        let d = choose(&w, &[busy, cached(0)], &request(10)).unwrap();
        assert_eq!((d.pod, d.reason), (1, Reason::LeastLoaded));
    }

    #[test]
    fn the_hot_spot_guard_bounds_a_pods_queue() {
        // Eight pods; the cached one is far past twice the mean queued work.
        let w = Weights {
            fleet_work_weight: 1e9,
            ..Weights::default()
        };
        let mut pods = vec![queued(cached(0), 1, 2_000.0); 8];
        pods[3] = queued(cached(112), 30, 40_000.0);
        let d = choose(&w, &pods, &request(112)).unwrap();
        assert_ne!(d.pod, 3, "bounded load overrides even an overwhelming hit");
        assert_eq!(d.reason, Reason::Spill);
        pods[3] = queued(cached(112), 3, 6_000.0);
        assert_eq!(choose(&w, &pods, &request(112)).unwrap().pod, 3);
    }

    #[test]
    fn without_hits_ties_spread_by_first_key_and_repeat() {
        let w = Weights::default();
        let pods = [cached(0); 4];
        let pick = |k: u64| {
            choose(
                &w,
                &pods,
                &Request {
                    first_key: Some(k),
                    ..request(10)
                },
            )
            .unwrap()
            .pod
        };
        let chosen: std::collections::HashSet<usize> = (0..4).map(pick).collect();
        assert_eq!(chosen.len(), 4);
        assert_eq!(pick(2), pick(2));
    }

    #[test]
    fn cache_weight_zero_routes_on_load_alone() {
        let w = Weights {
            cache_weight: 0.0,
            ..Weights::default()
        };
        let d = choose(
            &w,
            &[queued(cached(93), 1, 100.0), cached(0)],
            &request(100),
        )
        .unwrap();
        assert_eq!((d.pod, d.reason), (1, Reason::LeastLoaded));
        for k in 0..6u64 {
            let r = Request {
                first_key: Some(k),
                ..request(10)
            };
            assert_eq!(choose(&w, &[cached(0); 3], &r).unwrap().pod, 0);
        }
    }

    #[test]
    fn lower_tiers_count_by_their_weight() {
        let w = Weights::default();
        let cpu = PodView {
            gpu_blocks: 0,
            any_tier_blocks: 10,
            ..PodView::default()
        };
        let d = choose(&w, &[cpu, cached(6)], &request(20)).unwrap();
        assert_eq!(d.pod, 1, "6 GPU blocks beat 10 CPU blocks at weight 0.5");
    }
}
