//! A fleet of simulated engines in virtual time, with the routing policies the benchmark
//! compares. Pure (no I/O, no wall clock): the same scheduler the HTTP engine runs, driven by
//! a discrete-event loop, so the seed's workload can be replayed in seconds and each policy's
//! cache hit ratio, TTFT and throughput compared side by side in one run.
//!
//! kvroute's policies call kvroute's own decision (`kvroute-scoring`: the same `choose` and
//! the same ledger of decisions in flight the indexer runs), fed as the indexer is fed: KV
//! events as they happen (precise), its own routing history (estimate), and each engine's
//! waiting/running/KV-usage gauges as scraped every `scrape_interval` seconds. So the model
//! cross-checks the product, not a look-alike of it.

use std::collections::{HashMap, HashSet, VecDeque};

use kvroute_scoring::{choose, Ledger, PodView, Request, Weights, CONFIRM_PER_DECISION};

use crate::scheduler::{Scheduler, SeqId};
use crate::timing::TimingModel;

/// How a request picks its engine: the benchmark's policies, live and modelled.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// kvroute precise: the indexer fed by the engines' KV events.
    Precise,
    /// kvroute estimate: the indexer's own routing history only (no events).
    Estimate,
    /// Envoy RANDOM.
    Random,
    /// Envoy ROUND_ROBIN.
    RoundRobin,
    /// Envoy LEAST_REQUEST: power of two choices on active requests.
    LeastRequest,
    /// kvroute with `--cache-weight 0`: least predicted wait, cache ignored.
    LoadOnly,
    /// A heuristic, not a bound: each request to the engine that really holds its longest
    /// prefix at arrival, load ignored (model only).
    LongestHolder,
}

impl Policy {
    pub const ALL: [Policy; 7] = [
        Policy::Precise,
        Policy::Estimate,
        Policy::Random,
        Policy::RoundRobin,
        Policy::LeastRequest,
        Policy::LoadOnly,
        Policy::LongestHolder,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Policy::Precise => "kvroute precise",
            Policy::Estimate => "kvroute estimate",
            Policy::Random => "random",
            Policy::RoundRobin => "round robin",
            Policy::LeastRequest => "least request",
            Policy::LoadOnly => "load only",
            Policy::LongestHolder => "longest holder (heuristic)",
        }
    }

    /// Stable file-name form (the CLI's spelling).
    pub fn slug(&self) -> &'static str {
        match self {
            Policy::Precise => "precise",
            Policy::Estimate => "estimate",
            Policy::Random => "random",
            Policy::RoundRobin => "round-robin",
            Policy::LeastRequest => "least-request",
            Policy::LoadOnly => "load-only",
            Policy::LongestHolder => "longest-holder",
        }
    }

    /// Whether the policy exists outside the model (a deployment can run it).
    pub fn is_live(&self) -> bool {
        *self != Policy::LongestHolder
    }
}

/// One request of the workload: arrival time, full-block hashes, sizes.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub at: f64,
    pub hashes: std::sync::Arc<Vec<u64>>,
    pub prompt_tokens: usize,
    pub max_tokens: usize,
}

/// What happened to one request, in virtual seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Outcome {
    /// Arrival to first token (None: never produced one).
    pub ttft: Option<f64>,
    /// When its last token was produced.
    pub end: Option<f64>,
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub output_tokens: u64,
}

/// Results of one run (one policy, one arrival sequence).
#[derive(Debug, Clone, Default)]
pub struct RunStats {
    pub requests: usize,
    pub output_tokens: u64,
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub ttfts: Vec<f64>,
    pub makespan: f64,
    /// Mean over arrivals of the fleet's mean waiting queue per engine.
    pub mean_waiting: f64,
    /// Per arrival, in arrival order.
    pub outcomes: Vec<Outcome>,
    /// (time, mean waiting per engine), sampled every `FleetConfig::sample_interval`.
    pub waiting_samples: Vec<(f64, f64)>,
}

impl RunStats {
    pub fn throughput(&self) -> f64 {
        if self.makespan > 0.0 {
            self.output_tokens as f64 / self.makespan
        } else {
            0.0
        }
    }
    pub fn hit_ratio(&self) -> f64 {
        if self.prompt_tokens == 0 {
            0.0
        } else {
            self.cached_tokens as f64 / self.prompt_tokens as f64
        }
    }
    pub fn mean_ttft(&self) -> f64 {
        if self.ttfts.is_empty() {
            return 0.0;
        }
        self.ttfts.iter().sum::<f64>() / self.ttfts.len() as f64
    }
    pub fn p90_ttft(&self) -> f64 {
        percentile(&self.ttfts, 0.9)
    }
}

pub fn percentile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let idx = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
    v[idx]
}

/// The hit-ratio upper bound of a schedule: each request's longest prefix shared with any
/// earlier request's prompt, caches unlimited, counted as the engine counts hits (whole
/// blocks, the last prompt token always computed). Per arrival: (prompt, cached) tokens.
/// No router can beat it: a block no earlier request computed cannot be in any cache.
pub fn hit_bound(arrivals: &[Arrival], block_size: usize) -> Vec<(u64, u64)> {
    let block_size = block_size.max(1);
    let mut seen: HashSet<u64> = HashSet::new();
    arrivals
        .iter()
        .map(|a| {
            let prefix = a.hashes.iter().take_while(|h| seen.contains(h)).count();
            let cacheable = a.prompt_tokens.saturating_sub(1) / block_size;
            seen.extend(a.hashes.iter().copied());
            (
                a.prompt_tokens as u64,
                (prefix.min(cacheable) * block_size) as u64,
            )
        })
        .collect()
}

/// Small deterministic PRNG (xorshift64*) so runs are reproducible without a dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn exp(&mut self, rate: f64) -> f64 {
        -(1.0 - self.unit()).ln() / rate
    }
}

/// The router's view of what each engine caches, built from events (precise) or from its
/// own routing decisions (estimate, LRU-capped at an assumed capacity).
struct EngineView {
    blocks: HashSet<u64>,
    lru: VecDeque<u64>,
    cap: usize,
}

impl EngineView {
    fn new(cap: usize) -> Self {
        Self {
            blocks: HashSet::new(),
            lru: VecDeque::new(),
            cap,
        }
    }
    fn prefix(&self, hashes: &[u64]) -> usize {
        hashes
            .iter()
            .take_while(|h| self.blocks.contains(h))
            .count()
    }
    fn touch_all(&mut self, hashes: &[u64]) {
        for &h in hashes {
            if self.blocks.insert(h) {
                self.lru.push_back(h);
            }
        }
        while self.blocks.len() > self.cap {
            match self.lru.pop_front() {
                Some(v) => {
                    self.blocks.remove(&v);
                }
                None => break,
            }
        }
    }
}

/// Fleet configuration.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub engines: usize,
    pub kv_tokens: usize,
    pub block_size: usize,
    pub timing: TimingModel,
    /// kvroute's weights (the indexer's flags).
    pub weights: Weights,
    /// How often the router scrapes each engine's gauges (the indexer's
    /// `--scrape-interval-ms`).
    pub scrape_interval: f64,
    /// How often the fleet's waiting queue is sampled for the report.
    pub sample_interval: f64,
    /// Capacity the estimate mode assumes per engine, in blocks.
    pub estimate_capacity_blocks: usize,
    pub seed: u64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            engines: 8,
            kv_tokens: 307_328,
            block_size: 64,
            timing: TimingModel::default(),
            weights: Weights::default(),
            scrape_interval: 1.0,
            sample_interval: 0.5,
            // GIE's approximate scorer assumes a fixed LRU size per server, unaware of the
            // engine's real capacity or of evictions: here 4x the real cache.
            estimate_capacity_blocks: 4 * 307_328 / 64,
            seed: 7,
        }
    }
}

/// The gauges a scrape reads: waiting, running, KV usage.
#[derive(Debug, Clone, Copy, Default)]
struct Gauges {
    waiting: f64,
    running: f64,
    kv_usage: f64,
}

fn gauges(e: &Scheduler) -> Gauges {
    Gauges {
        waiting: e.num_waiting() as f64,
        running: e.num_running() as f64,
        kv_usage: e.cache.usage(),
    }
}

/// Replays `arrivals` (sorted by time) through a fleet routed by `policy`.
pub fn run(config: &FleetConfig, policy: Policy, arrivals: &[Arrival]) -> RunStats {
    let n = config.engines.max(1);
    let bs = config.block_size.max(1);
    let mut engines: Vec<Scheduler> = (0..n)
        .map(|_| Scheduler::new(config.timing, config.kv_tokens, bs))
        .collect();
    let mut busy_until = vec![f64::INFINITY; n];
    let mut views: Vec<EngineView> = (0..n)
        .map(|_| {
            EngineView::new(match policy {
                Policy::Estimate => config.estimate_capacity_blocks,
                _ => usize::MAX,
            })
        })
        .collect();
    let weights = match policy {
        Policy::LoadOnly => Weights {
            cache_weight: 0.0,
            ..config.weights.clone()
        },
        _ => config.weights.clone(),
    };
    let kvroute = matches!(
        policy,
        Policy::Precise | Policy::Estimate | Policy::LoadOnly
    );
    let mut ledger: Ledger<usize> = Ledger::new();
    let mut tickets: HashMap<SeqId, u64> = HashMap::new();
    let mut scraped = vec![Gauges::default(); n];
    let mut next_scrape = arrivals.first().map(|a| a.at).unwrap_or(0.0);
    let mut next_sample = next_scrape;
    let mut rng = Rng::new(config.seed);
    let mut rr = 0usize;
    let mut stats = RunStats {
        outcomes: arrivals
            .iter()
            .map(|a| Outcome {
                prompt_tokens: a.prompt_tokens as u64,
                ..Outcome::default()
            })
            .collect(),
        ..RunStats::default()
    };
    let mut waiting_sum = 0.0;
    let mut next = 0usize;
    let mut last_finish: f64 = 0.0;
    let first_arrival = arrivals.first().map(|a| a.at).unwrap_or(0.0);
    loop {
        let (ei, et) =
            busy_until
                .iter()
                .enumerate()
                .fold((usize::MAX, f64::INFINITY), |acc, (i, &t)| {
                    if t < acc.1 {
                        (i, t)
                    } else {
                        acc
                    }
                });
        let arrival_next = arrivals.get(next).map(|a| a.at).unwrap_or(f64::INFINITY);
        if ei == usize::MAX && arrival_next.is_infinite() {
            break;
        }
        let now = arrival_next.min(et);
        if next_sample <= now {
            let mean = engines.iter().map(|e| e.num_waiting()).sum::<usize>() as f64 / n as f64;
            stats.waiting_samples.push((next_sample, mean));
            next_sample += config.sample_interval;
            continue;
        }
        if kvroute && next_scrape <= now {
            for (i, e) in engines.iter().enumerate() {
                scraped[i] = gauges(e);
                ledger.observe_queue(&i, scraped[i].waiting, next_scrape);
            }
            next_scrape += config.scrape_interval;
            continue;
        }
        if arrival_next <= et {
            let a = &arrivals[next];
            let id = next as SeqId;
            next += 1;
            waiting_sum += engines.iter().map(|e| e.num_waiting()).sum::<usize>() as f64 / n as f64;
            let pick = match policy {
                Policy::Random => rng.below(n),
                Policy::RoundRobin => {
                    rr += 1;
                    rr % n
                }
                Policy::LeastRequest => {
                    let (x, y) = (rng.below(n), rng.below(n));
                    let la = engines[x].num_waiting() + engines[x].num_running();
                    let lb = engines[y].num_waiting() + engines[y].num_running();
                    if lb < la {
                        y
                    } else {
                        x
                    }
                }
                Policy::LongestHolder => {
                    let best = (0..n)
                        .map(|i| engines[i].cache.longest_prefix(&a.hashes))
                        .max()
                        .unwrap_or(0);
                    let holders: Vec<usize> = (0..n)
                        .filter(|&i| engines[i].cache.longest_prefix(&a.hashes) == best)
                        .collect();
                    holders[rng.below(holders.len())]
                }
                Policy::Precise | Policy::Estimate | Policy::LoadOnly => {
                    if policy != Policy::Estimate {
                        // Bounded as the indexer's router bounds it (a full check per
                        // decision made an overloaded 256-engine run quadratic).
                        ledger.confirm_some(
                            |&i, k| views[i].blocks.contains(&k),
                            CONFIRM_PER_DECISION,
                        );
                    }
                    // Without cache weight no prefix enters the price (nor the reason):
                    // skip finding them. Under load-only every engine's in-flight decisions
                    // carry every hot prefix, and matching them all made its run minutes.
                    let priced = weights.cache_weight > 0.0;
                    let held: HashMap<usize, usize> = if priced {
                        ledger.match_prefix(&a.hashes).into_iter().collect()
                    } else {
                        HashMap::new()
                    };
                    let pods: Vec<PodView> = (0..n)
                        .map(|i| {
                            let blocks = if priced {
                                views[i]
                                    .prefix(&a.hashes)
                                    .max(held.get(&i).copied().unwrap_or(0))
                            } else {
                                0
                            };
                            let pending = ledger.pending(&i);
                            PodView {
                                gpu_blocks: blocks,
                                any_tier_blocks: blocks,
                                pending_requests: pending.requests,
                                pending_tokens: pending.tokens,
                                waiting: scraped[i].waiting,
                                running: scraped[i].running,
                                kv_usage: scraped[i].kv_usage,
                            }
                        })
                        .collect();
                    // As the indexer sees a request: whole blocks.
                    let request = Request {
                        prompt_tokens: a.hashes.len() * bs,
                        block_size: bs,
                        first_key: a.hashes.first().copied(),
                    };
                    let d = choose(&weights, &pods, &request).map(|d| {
                        let saved = d.scores[d.pod].saved_tokens;
                        (d.pod, (request.prompt_tokens as f64 - saved).max(0.0))
                    });
                    let (pick, uncached) = d.unwrap_or((0, 0.0));
                    tickets.insert(id, ledger.start(&pick, &a.hashes, uncached, a.at));
                    pick
                }
            };
            if policy == Policy::Estimate {
                views[pick].touch_all(&a.hashes);
            }
            engines[pick].submit(id, a.hashes.to_vec(), a.prompt_tokens, a.max_tokens);
            if busy_until[pick].is_infinite() {
                busy_until[pick] = a.at;
            }
            continue;
        }
        // Engine `ei` starts a step at `et`.
        let e = &mut engines[ei];
        let out = e.step();
        let end = et + out.duration;
        if matches!(policy, Policy::Precise | Policy::LoadOnly) {
            for h in &out.removed {
                views[ei].blocks.remove(h);
            }
            for &h in &out.stored {
                views[ei].blocks.insert(h);
            }
        }
        for f in &out.first_tokens {
            let o = &mut stats.outcomes[f.id as usize];
            let ttft = end + e.timing.first_token_overhead - arrivals[f.id as usize].at;
            o.ttft = Some(ttft);
            stats.ttfts.push(ttft);
        }
        for f in &out.finished {
            stats.requests += 1;
            stats.output_tokens += f.output_tokens as u64;
            stats.prompt_tokens += f.prompt_tokens as u64;
            stats.cached_tokens += f.cached_tokens as u64;
            let o = &mut stats.outcomes[f.id as usize];
            o.end = Some(end);
            o.cached_tokens = f.cached_tokens as u64;
            o.output_tokens = f.output_tokens as u64;
            if let Some(t) = tickets.remove(&f.id) {
                ledger.complete(t);
            }
            last_finish = last_finish.max(end);
        }
        busy_until[ei] = if e.is_idle() {
            f64::INFINITY
        } else if out.is_idle() {
            // Blocked on cache with nothing running cannot happen with sane sizes; avoid a spin.
            end + e.timing.a
        } else {
            end
        };
    }
    stats.makespan = last_finish - first_arrival;
    stats.mean_waiting = if arrivals.is_empty() {
        0.0
    } else {
        waiting_sum / arrivals.len() as f64
    };
    stats
}

/// The seed's shared-prefix workload shape.
#[derive(Debug, Clone)]
pub struct Workload {
    pub groups: usize,
    pub users_per_group: usize,
    pub system_tokens: usize,
    pub question_tokens: usize,
    pub output_tokens: usize,
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            groups: 150,
            users_per_group: 5,
            system_tokens: 6_000,
            question_tokens: 1_200,
            output_tokens: 1_000,
        }
    }
}

impl Workload {
    /// Deterministic token ids for group `g`'s system prompt or a question: synthesized from
    /// a seed rather than tokenized, so generating the workload costs no tokenizer time.
    pub fn tokens(seed: u64, len: usize) -> Vec<u32> {
        let mut rng = Rng::new(seed);
        (0..len)
            .map(|_| 1_000 + (rng.next_u64() % 140_000) as u32)
            .collect()
    }

    /// Poisson arrivals at `qps` for `seconds`, starting at `start`. `hash` maps a prompt's
    /// tokens to its block hashes (the shared crate's chain).
    pub fn arrivals(
        &self,
        qps: f64,
        seconds: f64,
        start: f64,
        rng: &mut Rng,
        hash: &dyn Fn(&[u32]) -> Vec<u64>,
    ) -> Vec<Arrival> {
        let mut out = Vec::new();
        let mut t = start;
        let mut serial = 0u64;
        loop {
            t += rng.exp(qps);
            if t >= start + seconds {
                break;
            }
            let g = rng.below(self.groups);
            let u = rng.below(self.users_per_group);
            serial += 1;
            let mut prompt = Self::tokens(g as u64 + 1, self.system_tokens);
            let qseed = ((g as u64) << 40) ^ ((u as u64) << 32) ^ (start.to_bits() >> 8) ^ serial;
            prompt.extend(Self::tokens(qseed | (1 << 63), self.question_tokens));
            out.push(Arrival {
                at: t,
                hashes: std::sync::Arc::new(hash(&prompt)),
                prompt_tokens: prompt.len(),
                max_tokens: self.output_tokens,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvroute_blockhash::{BlockHasher, HashConfig};

    #[test]
    fn the_bound_counts_prefixes_shared_with_earlier_prompts_only() {
        let a = |at: f64, hashes: Vec<u64>, prompt_tokens: usize| Arrival {
            at,
            hashes: std::sync::Arc::new(hashes),
            prompt_tokens,
            max_tokens: 1,
        };
        // Block size 4: the first is all new; the second shares 2 blocks; the third repeats
        // the second exactly but its last token is always computed (3 of 3 blocks hit
        // would need 13 tokens).
        let arrivals = [
            a(0.0, vec![1, 2, 3], 13),
            a(1.0, vec![1, 2, 9], 12),
            a(2.0, vec![1, 2, 9], 12),
        ];
        assert_eq!(hit_bound(&arrivals, 4), vec![(13, 0), (12, 8), (12, 8)]);
    }

    #[test]
    fn precise_routing_keeps_shared_prefixes_on_one_engine() {
        let hasher = BlockHasher::new(HashConfig::default());
        let w = Workload {
            groups: 12,
            users_per_group: 2,
            system_tokens: 1_280,
            question_tokens: 200,
            output_tokens: 20,
        };
        let arrivals = w.arrivals(4.0, 20.0, 0.0, &mut Rng::new(3), &|t| {
            hasher.event_values(t)
        });
        let cfg = FleetConfig {
            engines: 4,
            ..FleetConfig::default()
        };
        let precise = run(&cfg, Policy::Precise, &arrivals);
        let random = run(&cfg, Policy::Random, &arrivals);
        let bound = hit_bound(&arrivals, cfg.block_size);
        let (prompt, cached) = bound
            .iter()
            .fold((0, 0), |(p, c), (bp, bc)| (p + bp, c + bc));
        let bound = cached as f64 / prompt as f64;
        assert_eq!(precise.requests, arrivals.len());
        assert!(precise.hit_ratio() <= bound + 1e-9);
        assert!(
            precise.hit_ratio() >= 0.9 * bound,
            "precise {} bound {bound}",
            precise.hit_ratio()
        );
        assert!(precise.hit_ratio() > random.hit_ratio());
        assert!(random.hit_ratio() <= bound + 1e-9);
    }
}
