//! Continuous batching as vLLM's V1 scheduler does it, without I/O: running sequences decode
//! one token per step, prefills are chunked to the step's token budget, waiting requests are
//! admitted FIFO while the KV cache has room for their prompt. Output blocks are allocated
//! as decoding needs them, as vLLM allocates them; when none is left, the request admitted
//! last is preempted (its blocks freed, recomputed later from the front of the queue), as
//! vLLM's V1 preempts. Each `step` returns its simulated duration and
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
    /// Blocks promised at admission (its prompt's) and not taken yet.
    promised: usize,
    /// Blocks it holds: `hashes[..hashed]` (cached or full), then unhashed ones.
    held: usize,
    hashed: usize,
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
    /// Requests preempted so far (vLLM's `num_preemptions`).
    preemptions: u64,
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
            preemptions: 0,
        }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Requests preempted so far (vLLM's `num_preemptions`).
    pub fn preemptions(&self) -> u64 {
        self.preemptions
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
        self.total_blocks(prompt_tokens, max_tokens) <= self.cache.capacity()
    }

    /// Blocks a request holds at most: KV for its prompt and every output token but the
    /// last (sampled, never computed).
    fn total_blocks(&self, prompt_tokens: usize, max_tokens: usize) -> usize {
        prompt_tokens
            .saturating_add(max_tokens.max(1) - 1)
            .div_ceil(self.block_size)
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
            promised: 0,
            held: 0,
            hashed: 0,
        });
    }

    /// Runs one step: decode running sequences, continue/admit prefills within the budget.
    /// Blocks that generated tokens fill are not hashed (see [`Scheduler::step_with`]).
    pub fn step(&mut self) -> StepOutcome {
        self.step_with(&mut |_, _| None)
    }

    /// [`Scheduler::step`], where a block that decoding fills (prompt tail plus generated
    /// tokens) is cached as vLLM caches it: `decode_block_hash(id, block_index)` gives its
    /// hash (the caller knows the tokens), the block is stored or shared, and reported in
    /// `stored` like prompt blocks. `None` leaves it an unhashed block of the request.
    pub fn step_with(
        &mut self,
        decode_block_hash: &mut dyn FnMut(SeqId, usize) -> Option<u64>,
    ) -> StepOutcome {
        let mut out = StepOutcome::default();
        let mut budget = self.timing.token_budget.max(1);
        // Decodes first (one token each), then unfinished prefills, as vLLM's V1 does.
        let decoding: Vec<usize> = (0..self.running.len())
            .filter(|&i| self.running[i].computed >= self.running[i].prompt_tokens)
            .collect();
        budget = budget.saturating_sub(decoding.len());
        let block_size = self.block_size;
        let decoding = self.make_room_for_decodes(decoding);
        for &i in &decoding {
            let seq = &mut self.running[i];
            seq.generated += 1;
            out.decoded.push(seq.id);
            // This step computes the KV of the previous token: prompt + generated - 1
            // tokens. A block they need is taken now, and a block they fill is cached now
            // (vLLM allocates and caches when it schedules the step).
            let kv = seq.prompt_tokens + seq.generated - 1;
            Self::take_blocks(&mut self.cache, seq, kv, block_size, &mut out.removed);
            if kv / block_size > seq.hashes.len() && seq.hashed == seq.hashes.len() {
                let block_index = seq.hashes.len();
                if let Some(hash) = decode_block_hash(seq.id, block_index) {
                    seq.hashes.push(hash);
                    Self::hash_full_blocks(&mut self.cache, seq, kv, block_size, &mut out);
                }
            }
        }
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
            // The prompt's blocks (the first output token's KV is the prompt's last).
            let total = seq
                .prompt_tokens
                .div_ceil(self.block_size)
                .max(seq.hashes.len());
            let hit =
                match self
                    .cache
                    .reserve(&seq.hashes, total, self.block_size, seq.prompt_tokens)
                {
                    Ok(hit) => hit,
                    Err(_) => break,
                };
            let Some(mut seq) = self.waiting.pop_front() else {
                break;
            };
            // vLLM looks hits up within the first prompt_tokens - 1 tokens (the last one
            // is always computed to sample from), in whole blocks.
            let cached =
                hit.min(seq.prompt_tokens.saturating_sub(1) / self.block_size) * self.block_size;
            // A preempted request keeps the hits of its first admission (vLLM reports those).
            if seq.generated == 0 {
                seq.cached = cached;
            }
            seq.computed = cached;
            seq.promised = total.saturating_sub(hit);
            seq.held = hit;
            seq.hashed = hit;
            self.running.push(seq);
            let i = self.running.len() - 1;
            budget -= self.prefill_chunk(i, budget, &mut out);
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
                self.cache
                    .release_request(&s.hashes[..s.hashed], s.held - s.hashed, s.promised);
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

    /// Takes the blocks `seq` needs to hold `tokens` tokens of KV (evicting as needed):
    /// promised ones first, then spare ones (callers made sure there are enough).
    fn take_blocks(
        cache: &mut PrefixCache,
        seq: &mut Seq,
        tokens: usize,
        block_size: usize,
        removed: &mut Vec<u64>,
    ) {
        let need = tokens.div_ceil(block_size);
        while seq.held < need {
            if seq.promised > 0 {
                cache.take_block(removed);
                seq.promised -= 1;
            } else {
                cache.take_spare_block(removed);
            }
            seq.held += 1;
        }
    }

    /// Blocks the decoding sequence `i` needs beyond what it holds and was promised.
    fn decode_shortfall(&self, i: usize) -> usize {
        let seq = &self.running[i];
        let kv = seq.prompt_tokens + seq.generated;
        kv.div_ceil(self.block_size)
            .saturating_sub(seq.held + seq.promised)
    }

    /// Preempts the requests admitted last until this step's decodes have the blocks they
    /// need, as vLLM's V1 does; returns the decoding indices still running.
    fn make_room_for_decodes(&mut self, mut decoding: Vec<usize>) -> Vec<usize> {
        loop {
            let short: usize = decoding.iter().map(|&i| self.decode_shortfall(i)).sum();
            if short <= self.cache.spare_blocks() || self.running.len() <= 1 {
                return decoding;
            }
            let victim = self.running.len() - 1;
            let mut seq = self.running.remove(victim);
            self.cache.release_request(
                &seq.hashes[..seq.hashed],
                seq.held - seq.hashed,
                seq.promised,
            );
            seq.computed = 0;
            seq.held = 0;
            seq.hashed = 0;
            seq.promised = 0;
            self.waiting.push_front(seq);
            self.preemptions += 1;
            decoding.retain(|&i| i != victim);
        }
    }

    /// Caches the blocks of `seq` that `tokens` computed tokens fill and that have a hash
    /// (a block already cached by someone else is shared instead).
    fn hash_full_blocks(
        cache: &mut PrefixCache,
        seq: &mut Seq,
        tokens: usize,
        block_size: usize,
        out: &mut StepOutcome,
    ) {
        while seq.hashed < seq.hashes.len().min(seq.held) && (seq.hashed + 1) * block_size <= tokens
        {
            let block_index = seq.hashed;
            for hash in cache.promote(&[seq.hashes[block_index]]) {
                out.stored.push(hash);
                out.stored_blocks.push(StoredBlock {
                    id: seq.id,
                    block_index,
                    hash,
                });
            }
            seq.hashed += 1;
        }
    }

    /// Computes up to `budget` prompt tokens of running sequence `i`; returns tokens used.
    fn prefill_chunk(&mut self, i: usize, budget: usize, out: &mut StepOutcome) -> usize {
        let block_size = self.block_size;
        let seq = &mut self.running[i];
        let n = (seq.prompt_tokens - seq.computed).min(budget);
        seq.computed += n;
        out.prefill_tokens += n;
        Self::take_blocks(
            &mut self.cache,
            seq,
            seq.computed,
            block_size,
            &mut out.removed,
        );
        Self::hash_full_blocks(&mut self.cache, seq, seq.computed, block_size, out);
        if seq.computed >= seq.prompt_tokens && seq.generated == 0 {
            // The step that finishes a prefill samples the first token (a preempted
            // request's recompute does not: it already streamed its tokens).
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
        let mut s = Scheduler::new(TimingModel::seed_single_instance(), 307_328, 64);
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
        let mut s = Scheduler::new(TimingModel::seed_single_instance(), 307_328, 64);
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
    fn eviction_is_lru_of_unreferenced_blocks_when_a_block_is_needed() {
        // Room for 4 blocks of 4 tokens. p1 (2 full blocks, one more for its output) leaves
        // 2 cached blocks and 2 free; p2 takes the 2 free ones for its prompt, and its
        // output's block evicts p1's tail (freed tail first) in the step that needs it.
        let mut s = Scheduler::new(TimingModel::default(), 16, 4);
        let p1: Vec<u32> = (0..8).collect();
        let p2: Vec<u32> = (100..108).collect();
        let h1 = hashes_bs(&p1, 4);
        s.submit(1, h1.clone(), 8, 5);
        drain(&mut s);
        s.submit(2, hashes_bs(&p2, 4), 8, 5);
        let first = s.step();
        assert_eq!(first.removed, Vec::<u64>::new());
        assert_eq!(first.stored, hashes_bs(&p2, 4));
        let second = s.step();
        assert_eq!(second.removed, vec![h1[1]]);
        drain(&mut s);
        assert_eq!(s.cache.longest_prefix(&h1), 1);
        assert_eq!(s.cache.used_blocks(), 0);
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
        assert!(s.fits(16, 1));
        assert!(!s.fits(16, 2));
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

    #[test]
    fn blocks_filled_by_generated_tokens_are_stored_then_evictable() {
        // 4-token blocks: a 6-token prompt (one full block) generating 7 tokens fills block 1
        // when 8 tokens are computed (3rd token) and block 2 at 12 (7th token).
        let mut s = Scheduler::new(TimingModel::default(), 64, 4);
        let prompt: Vec<u32> = (0..6).collect();
        s.submit(1, hashes_bs(&prompt, 4), 6, 7);
        let mut asked = Vec::new();
        let mut stored = Vec::new();
        while !s.is_idle() {
            let out = s.step_with(&mut |id, k| {
                asked.push((id, k));
                Some(1000 + k as u64)
            });
            stored.extend(out.stored_blocks.iter().map(|b| (b.block_index, b.hash)));
        }
        assert_eq!(asked, vec![(1, 1), (1, 2)]);
        assert_eq!(stored[1..], [(1, 1001), (2, 1002)]);
        assert!(s.cache.contains(1002));
        assert_eq!(s.cache.used_blocks(), 0, "every block released");
        // Without hashes (step), the same request stores only its prompt block.
        let mut plain = Scheduler::new(TimingModel::default(), 64, 4);
        plain.submit(1, hashes_bs(&prompt, 4), 6, 7);
        let mut n = 0;
        while !plain.is_idle() {
            n += plain.step().stored.len();
        }
        assert_eq!(n, 1);
        assert_eq!(plain.cache.used_blocks(), 0);
    }

    #[test]
    fn output_blocks_are_taken_as_decoding_needs_them_and_the_last_admitted_is_preempted() {
        // 6 blocks of 4 tokens. Two 8-token prompts (2 blocks each) are both admitted: their
        // output is not reserved. Each needs 4 blocks by its 9th token, 8 in all, so the one
        // admitted last is preempted, recomputed after, and still streams 9 tokens.
        let mut s = Scheduler::new(TimingModel::default(), 24, 4);
        s.submit(1, hashes_bs(&(0..8).collect::<Vec<_>>(), 4), 8, 9);
        s.submit(2, hashes_bs(&(100..108).collect::<Vec<_>>(), 4), 8, 9);
        let first = s.step();
        assert_eq!((s.num_running(), first.first_tokens.len()), (2, 2));
        let mut firsts = 0;
        let mut done = Vec::new();
        while !s.is_idle() {
            let out = s.step();
            firsts += out.first_tokens.len();
            done.extend(out.finished);
        }
        assert!(s.preemptions() >= 1);
        assert_eq!(firsts, 0, "a recompute streams no second first token");
        assert_eq!(done.iter().map(|f| f.id).collect::<Vec<_>>(), vec![1, 2]);
        assert!(done.iter().all(|f| f.output_tokens == 9));
        assert_eq!(s.cache.used_blocks(), 0);
    }

    fn hashes_bs(tokens: &[u32], bs: usize) -> Vec<u64> {
        BlockHasher::new(HashConfig {
            block_size: bs,
            ..HashConfig::default()
        })
        .event_values(tokens)
    }
}
