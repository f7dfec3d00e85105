//! Continuous batching as vLLM's V1 scheduler does it, without I/O: running sequences decode
//! one token per step, prefills are chunked to the step's token budget, waiting requests are
//! admitted FIFO while the KV cache has room. Each `step` returns its simulated duration and
//! the KV events it caused, so a server can sleep (time-scaled) and publish them, and a
//! benchmark can run the same model in virtual time.

use std::collections::VecDeque;

use crate::prefix_cache::PrefixCache;
use crate::timing::TimingModel;

pub type SeqId = u64;

#[derive(Debug, Clone)]
struct Seq {
    id: SeqId,
    hashes: Vec<u64>,
    prompt_tokens: usize,
    max_tokens: usize,
    /// Prompt tokens already in KV (cached or computed).
    computed: usize,
    cached: usize,
    generated: usize,
    extra_blocks: usize,
    /// Newly stored blocks not yet published (published as their chunk is computed), by
    /// index in `hashes`.
    pending_store: VecDeque<usize>,
}

/// A request that produced its first token in a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirstToken {
    pub id: SeqId,
    pub cached_tokens: usize,
}

/// A request that finished in a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    pub id: SeqId,
    pub prompt_tokens: usize,
    pub cached_tokens: usize,
    pub output_tokens: usize,
}

/// A block a step stored, with the request and position it came from: a server needs
/// them to publish vLLM's `BlockStored` (the block's tokens, its parent's hash).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredBlock {
    pub id: SeqId,
    /// Position of the block in the request's prompt (0 = first block).
    pub block_index: usize,
    pub hash: u64,
}

/// What one step did.
#[derive(Debug, Clone, Default)]
pub struct StepOutcome {
    pub duration: f64,
    pub prefill_tokens: usize,
    pub first_tokens: Vec<FirstToken>,
    /// Sequences that produced a token this step (first token included).
    pub decoded: Vec<SeqId>,
    pub finished: Vec<Finished>,
    /// KV events in publication order: evictions before the stores that caused them.
    pub removed: Vec<u64>,
    pub stored: Vec<u64>,
    /// `stored` with where each block came from, in the same order.
    pub stored_blocks: Vec<StoredBlock>,
}

impl StepOutcome {
    pub fn is_idle(&self) -> bool {
        self.prefill_tokens == 0 && self.decoded.is_empty()
    }
}

/// One engine: its cache, its queues and its timing model.
#[derive(Debug, Clone)]
pub struct Scheduler {
    pub timing: TimingModel,
    pub cache: PrefixCache,
    block_size: usize,
    waiting: VecDeque<Seq>,
    running: Vec<Seq>,
}

impl Scheduler {
    /// `kv_tokens` of capacity (vLLM's GPU blocks x block size).
    pub fn new(timing: TimingModel, kv_tokens: usize, block_size: usize) -> Self {
        let block_size = block_size.max(1);
        Self {
            timing,
            cache: PrefixCache::new(kv_tokens / block_size),
            block_size,
            waiting: VecDeque::new(),
            running: Vec::new(),
        }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty()
    }

    /// Whether a request of this size can ever be admitted (its prompt and output fit in
    /// the whole cache); one that cannot would wait forever, so servers refuse it.
    pub fn fits(&self, prompt_tokens: usize, max_tokens: usize) -> bool {
        (prompt_tokens + max_tokens.max(1)).div_ceil(self.block_size) <= self.cache.capacity()
    }

    /// vLLM's `/reset_prefix_cache`: only when no request runs or waits. True if cleared
    /// (the server then publishes `AllBlocksCleared`).
    pub fn reset_prefix_cache(&mut self) -> bool {
        self.is_idle() && self.cache.reset()
    }

    /// Queues a request whose full prompt blocks hash to `hashes` (chained, from the shared
    /// crate). `max_tokens` of output are generated.
    pub fn submit(&mut self, id: SeqId, hashes: Vec<u64>, prompt_tokens: usize, max_tokens: usize) {
        self.waiting.push_back(Seq {
            id,
            hashes,
            prompt_tokens,
            max_tokens: max_tokens.max(1),
            computed: 0,
            cached: 0,
            generated: 0,
            extra_blocks: 0,
            pending_store: VecDeque::new(),
        });
    }

    /// Runs one step: decode running sequences, continue/admit prefills within the budget.
    pub fn step(&mut self) -> StepOutcome {
        let mut out = StepOutcome::default();
        let mut budget = self.timing.token_budget.max(1);
        // Decodes first (one token each), then unfinished prefills, as vLLM's V1 does.
        let decoding: Vec<usize> = (0..self.running.len())
            .filter(|&i| self.running[i].computed >= self.running[i].prompt_tokens)
            .collect();
        budget = budget.saturating_sub(decoding.len());
        for i in 0..self.running.len() {
            if budget == 0 {
                break;
            }
            if self.running[i].computed < self.running[i].prompt_tokens {
                budget -= self.prefill_chunk(i, budget, &mut out);
            }
        }
        while budget > 0 && self.running.len() < self.timing.max_running {
            let Some(seq) = self.waiting.front() else {
                break;
            };
            // Blocks for the partial prompt block plus the whole output.
            let total = seq.prompt_tokens + seq.max_tokens;
            let extra = total
                .div_ceil(self.block_size)
                .saturating_sub(seq.hashes.len());
            let alloc =
                match self
                    .cache
                    .allocate(&seq.hashes, extra, self.block_size, seq.prompt_tokens)
                {
                    Ok(a) => a,
                    Err(_) => break,
                };
            let Some(mut seq) = self.waiting.pop_front() else {
                break;
            };
            out.removed.extend(alloc.removed);
            // vLLM looks hits up within the first prompt_tokens - 1 tokens (the last one
            // is always computed to sample from), in whole blocks.
            let cached = alloc
                .hit_blocks
                .min(seq.prompt_tokens.saturating_sub(1) / self.block_size)
                * self.block_size;
            seq.cached = cached;
            seq.computed = cached;
            seq.extra_blocks = extra;
            let stored: std::collections::HashSet<u64> = alloc.stored.into_iter().collect();
            seq.pending_store = seq
                .hashes
                .iter()
                .enumerate()
                .filter(|(_, h)| stored.contains(h))
                .map(|(i, _)| i)
                .collect();
            self.running.push(seq);
            let i = self.running.len() - 1;
            budget -= self.prefill_chunk(i, budget, &mut out);
        }
        for &i in &decoding {
            let seq = &mut self.running[i];
            seq.generated += 1;
            out.decoded.push(seq.id);
        }
        out.duration = if out.is_idle() {
            0.0
        } else {
            self.timing
                .step_time(out.prefill_tokens, self.running.len())
        };
        let mut k = 0;
        while k < self.running.len() {
            let s = &self.running[k];
            if s.computed >= s.prompt_tokens && s.generated >= s.max_tokens {
                let s = self.running.remove(k);
                self.cache.release(&s.hashes, s.extra_blocks);
                out.finished.push(Finished {
                    id: s.id,
                    prompt_tokens: s.prompt_tokens,
                    cached_tokens: s.cached,
                    output_tokens: s.generated,
                });
            } else {
                k += 1;
            }
        }
        out
    }

    /// Computes up to `budget` prompt tokens of running sequence `i`; returns tokens used.
    fn prefill_chunk(&mut self, i: usize, budget: usize, out: &mut StepOutcome) -> usize {
        let block_size = self.block_size;
        let seq = &mut self.running[i];
        let n = (seq.prompt_tokens - seq.computed).min(budget);
        seq.computed += n;
        out.prefill_tokens += n;
        while let Some(&block_index) = seq.pending_store.front() {
            if (block_index + 1) * block_size > seq.computed {
                break;
            }
            let hash = seq.hashes[block_index];
            out.stored.push(hash);
            out.stored_blocks.push(StoredBlock {
                id: seq.id,
                block_index,
                hash,
            });
            seq.pending_store.pop_front();
        }
        if seq.computed >= seq.prompt_tokens {
            // The step that finishes a prefill samples the first token.
            seq.generated = 1;
            out.first_tokens.push(FirstToken {
                id: seq.id,
                cached_tokens: seq.cached,
            });
            out.decoded.push(seq.id);
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvroute_blockhash::{BlockHasher, HashConfig};

    fn hashes(tokens: &[u32]) -> Vec<u64> {
        BlockHasher::new(HashConfig::default()).event_values(tokens)
    }

    /// Runs until `id`'s first token; returns the simulated TTFT.
    fn ttft(s: &mut Scheduler, id: SeqId) -> (f64, usize) {
        let mut t = 0.0;
        for _ in 0..10_000 {
            let o = s.step();
            t += o.duration;
            if let Some(f) = o.first_tokens.iter().find(|f| f.id == id) {
                return (t + s.timing.first_token_overhead, f.cached_tokens);
            }
        }
        panic!("no first token");
    }

    fn drain(s: &mut Scheduler) -> Vec<Finished> {
        let mut done = Vec::new();
        while !s.is_idle() {
            done.extend(s.step().finished);
        }
        done
    }

    #[test]
    fn scheduler_reproduces_the_calibrated_cold_and_cached_ttft() {
        let prompt: Vec<u32> = (0..10_000u32).map(|i| 1000 + i % 30_000).collect();
        let mut s = Scheduler::new(TimingModel::default(), 307_328, 64);
        s.submit(1, hashes(&prompt), prompt.len(), 4);
        let (cold, cached0) = ttft(&mut s, 1);
        drain(&mut s);
        s.submit(2, hashes(&prompt), prompt.len(), 4);
        let (warm, cached) = ttft(&mut s, 2);
        assert_eq!(cached0, 0);
        assert_eq!(cached, 9_984);
        assert!((cold - 4.3).abs() < 0.05, "cold {cold}");
        assert!((warm - 0.6).abs() < 0.02, "warm {warm}");
    }

    #[test]
    fn long_prompts_are_stored_in_budget_sized_chunks() {
        let prompt: Vec<u32> = (0..5_000u32).collect();
        let h = hashes(&prompt);
        let mut s = Scheduler::new(TimingModel::default(), 307_328, 64);
        s.submit(1, h.clone(), prompt.len(), 2);
        let a = s.step();
        let b = s.step();
        let c = s.step();
        assert_eq!(a.stored, h[..32].to_vec());
        assert_eq!(b.stored, h[32..64].to_vec());
        assert_eq!(c.stored, h[64..].to_vec());
        assert_eq!(c.first_tokens.len(), 1);
        let positions: Vec<usize> = b.stored_blocks.iter().map(|s| s.block_index).collect();
        assert_eq!(positions, (32..64).collect::<Vec<_>>());
        assert!(b
            .stored_blocks
            .iter()
            .all(|s| s.id == 1 && s.hash == h[s.block_index]));
    }

    #[test]
    fn eviction_is_lru_of_unreferenced_blocks_and_published_before_the_store() {
        // Room for 4 blocks of 4 tokens; each request has 2 full blocks and needs 1 more for output.
        let mut s = Scheduler::new(TimingModel::default(), 16, 4);
        let p1: Vec<u32> = (0..8).collect();
        let p2: Vec<u32> = (100..108).collect();
        s.submit(1, hashes_bs(&p1, 4), 8, 1);
        drain(&mut s);
        s.submit(2, hashes_bs(&p2, 4), 8, 1);
        let out = s.step();
        // p1's tail block is evicted first (freed tail first), before p2's blocks are stored.
        let h1 = hashes_bs(&p1, 4);
        assert_eq!(out.removed, vec![h1[1]]);
        assert_eq!(out.stored, hashes_bs(&p2, 4));
        drain(&mut s);
        assert_eq!(s.cache.longest_prefix(&h1), 1);
    }

    #[test]
    fn a_full_cache_keeps_requests_waiting() {
        let mut s = Scheduler::new(TimingModel::default(), 16, 4);
        s.submit(1, hashes_bs(&(0..12).collect::<Vec<_>>(), 4), 12, 4);
        s.submit(2, hashes_bs(&(50..62).collect::<Vec<_>>(), 4), 12, 4);
        s.step();
        assert_eq!(s.num_running(), 1);
        assert_eq!(s.num_waiting(), 1);
        let done = drain(&mut s);
        assert_eq!(done.len(), 2);
        assert_eq!(done[0].output_tokens, 4);
    }

    #[test]
    fn hit_ratio_counters_follow_shared_prefixes() {
        let mut s = Scheduler::new(TimingModel::default(), 307_328, 64);
        let sys: Vec<u32> = (0..640).collect();
        let mut a = sys.clone();
        a.extend(1000..1100);
        let mut b = sys.clone();
        b.extend(2000..2100);
        s.submit(1, hashes(&a), a.len(), 1);
        drain(&mut s);
        s.submit(2, hashes(&b), b.len(), 1);
        let done = drain(&mut s);
        assert_eq!(done[0].cached_tokens, 640);
        assert_eq!(s.cache.counters(), (1480, 640));
    }

    #[test]
    fn reset_clears_an_idle_cache_and_is_refused_while_running() {
        let mut s = Scheduler::new(TimingModel::default(), 16, 4);
        let h = hashes_bs(&(0..8).collect::<Vec<_>>(), 4);
        s.submit(1, h.clone(), 8, 2);
        s.step();
        assert!(!s.reset_prefix_cache());
        drain(&mut s);
        assert_eq!(s.cache.longest_prefix(&h), 2);
        assert!(s.reset_prefix_cache());
        assert_eq!(s.cache.longest_prefix(&h), 0);
        assert!(s.fits(8, 8));
        assert!(!s.fits(16, 1));
    }

    #[test]
    fn a_block_aligned_prompt_recomputes_its_last_block() {
        let mut s = Scheduler::new(TimingModel::default(), 307_328, 64);
        let prompt: Vec<u32> = (0..640).collect();
        for id in 1..=2 {
            s.submit(id, hashes(&prompt), prompt.len(), 1);
        }
        let done = drain(&mut s);
        assert_eq!(done[1].cached_tokens, 576);
        assert_eq!(s.cache.counters(), (1280, 576));
    }

    fn hashes_bs(tokens: &[u32], bs: usize) -> Vec<u64> {
        BlockHasher::new(HashConfig {
            block_size: bs,
            ..HashConfig::default()
        })
        .event_values(tokens)
    }
}
