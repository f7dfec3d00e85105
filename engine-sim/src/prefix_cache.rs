//! vLLM's prefix cache, reduced to what routing depends on: a fixed pool of blocks named by
//! their chained hashes, reuse of the longest cached prefix, reference counts while a
//! request runs, and LRU eviction of unreferenced blocks. A request is admitted with
//! [`PrefixCache::reserve`] (its cached prefix referenced, the rest promised), takes blocks
//! as its tokens are computed ([`PrefixCache::take_block`], which evicts: BlockRemoved) and
//! names them once full ([`PrefixCache::promote`]: BlockStored), as vLLM's block pool does.

use std::collections::{BTreeMap, HashMap};

/// No free or evictable block is left: the request must wait (vLLM keeps it queued).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("KV cache full: need {needed} blocks, {available} free or evictable")]
pub struct CacheFull {
    pub needed: usize,
    pub available: usize,
}

#[derive(Debug, Clone, Copy)]
struct Block {
    refs: u32,
    /// Logical time of last release; key into the eviction order while `refs == 0`.
    stamp: u64,
}

/// A pool of `capacity` blocks. Hashes are the u64 values vLLM publishes.
#[derive(Debug, Clone)]
pub struct PrefixCache {
    capacity: usize,
    blocks: HashMap<u64, Block>,
    /// Unreferenced cached blocks, oldest release first.
    evictable: BTreeMap<u64, u64>,
    clock: u64,
    /// Blocks held by running requests that are not (yet) full, so not hashed.
    anonymous: usize,
    /// Blocks promised to admitted requests and not taken yet ([`PrefixCache::reserve`]).
    reserved: usize,
    queries: u64,
    hits: u64,
}

impl PrefixCache {
    pub fn new(capacity_blocks: usize) -> Self {
        Self {
            capacity: capacity_blocks,
            blocks: HashMap::new(),
            evictable: BTreeMap::new(),
            clock: 0,
            anonymous: 0,
            reserved: 0,
            queries: 0,
            hits: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Blocks not available to a new request (referenced hashed blocks + anonymous ones).
    pub fn used_blocks(&self) -> usize {
        self.blocks.len() - self.evictable.len() + self.anonymous
    }

    /// `vllm:kv_cache_usage_perc`: fraction of blocks held by running requests.
    pub fn usage(&self) -> f64 {
        if self.capacity == 0 {
            return 0.0;
        }
        self.used_blocks() as f64 / self.capacity as f64
    }

    /// Prefix-cache queries and hits in tokens, as vLLM's counters count them.
    pub fn counters(&self) -> (u64, u64) {
        (self.queries, self.hits)
    }

    /// Length in blocks of the longest cached prefix of `hashes` (no side effects).
    pub fn longest_prefix(&self, hashes: &[u64]) -> usize {
        hashes
            .iter()
            .take_while(|h| self.blocks.contains_key(h))
            .count()
    }

    pub fn contains(&self, hash: u64) -> bool {
        self.blocks.contains_key(&hash)
    }

    fn free_blocks(&self) -> usize {
        self.capacity
            .saturating_sub(self.blocks.len() + self.anonymous)
    }

    fn evictable_contains(&self, h: u64) -> bool {
        self.blocks.get(&h).is_some_and(|b| b.refs == 0)
    }

    fn make_room(&mut self, removed: &mut Vec<u64>) {
        if self.free_blocks() > 0 {
            return;
        }
        if let Some((_, victim)) = self.evictable.pop_first() {
            self.blocks.remove(&victim);
            removed.push(victim);
        }
    }

    /// vLLM's `reset_prefix_cache`: drops every cached block, refused (false) while a
    /// running request holds blocks, as vLLM refuses it.
    pub fn reset(&mut self) -> bool {
        if self.used_blocks() > 0 {
            return false;
        }
        self.blocks.clear();
        self.evictable.clear();
        true
    }

    /// Admits a request whose full prompt blocks hash to `hashes` and which will hold
    /// `total_blocks` blocks at most: the longest cached prefix is referenced now (its
    /// length is returned), the rest is only promised, and taken block by block with
    /// [`PrefixCache::take_block`] as the request's tokens are computed, which is when vLLM
    /// allocates them and evicts for them. Counts the lookup as vLLM's counters do.
    pub fn reserve(
        &mut self,
        hashes: &[u64],
        total_blocks: usize,
        block_size: usize,
        prompt_tokens: usize,
    ) -> Result<usize, CacheFull> {
        let hit = self.longest_prefix(hashes);
        let hit_evictable = hashes[..hit]
            .iter()
            .filter(|h| self.evictable_contains(**h))
            .count();
        let needed = total_blocks.saturating_sub(hit);
        let available = (self.free_blocks() + self.evictable.len())
            .saturating_sub(hit_evictable + self.reserved);
        if needed > available {
            return Err(CacheFull { needed, available });
        }
        for h in &hashes[..hit] {
            if let Some(b) = self.blocks.get_mut(h) {
                if b.refs == 0 {
                    self.evictable.remove(&b.stamp);
                }
                b.refs += 1;
            }
        }
        self.reserved += needed;
        self.queries += prompt_tokens as u64;
        // As vLLM counts them: whole blocks within all but the last prompt token.
        self.hits +=
            (hit.min(prompt_tokens.saturating_sub(1) / block_size.max(1)) * block_size) as u64;
        Ok(hit)
    }

    /// Takes one promised block for a request's next tokens (unhashed until full, see
    /// [`PrefixCache::promote`]), evicting the least recently freed block if none is free.
    pub fn take_block(&mut self, removed: &mut Vec<u64>) {
        self.reserved = self.reserved.saturating_sub(1);
        self.make_room(removed);
        self.anonymous += 1;
    }

    /// Blocks a running request may still take beyond its promise: free or evictable ones
    /// nobody was promised.
    pub fn spare_blocks(&self) -> usize {
        (self.free_blocks() + self.evictable.len()).saturating_sub(self.reserved)
    }

    /// Takes one block nobody was promised (a decode growing past its prompt), evicting the
    /// least recently freed block if none is free.
    pub fn take_spare_block(&mut self, removed: &mut Vec<u64>) {
        self.make_room(removed);
        self.anonymous += 1;
    }

    /// A finished request: its hashed blocks (`hashes`, each once per reference) become
    /// evictable when no one else holds them, tail first as vLLM frees them; its `unhashed`
    /// blocks are freed and its `unused` promises dropped.
    pub fn release_request(&mut self, hashes: &[u64], unhashed: usize, unused: usize) {
        self.reserved = self.reserved.saturating_sub(unused);
        self.release(hashes, unhashed);
    }

    /// Turns anonymous blocks into hashed ones as decoding fills them (vLLM publishes
    /// these as BlockStored too). Returns the newly stored hashes.
    pub fn promote(&mut self, hashes: &[u64]) -> Vec<u64> {
        let mut stored = Vec::new();
        for &h in hashes {
            if self.anonymous == 0 {
                break;
            }
            self.anonymous -= 1;
            match self.blocks.get_mut(&h) {
                Some(b) => {
                    if b.refs == 0 {
                        self.evictable.remove(&b.stamp);
                    }
                    b.refs += 1;
                }
                None => {
                    self.blocks.insert(h, Block { refs: 1, stamp: 0 });
                    stored.push(h);
                }
            }
        }
        stored
    }

    /// A finished request drops its references; blocks whose count reaches zero become
    /// evictable. vLLM frees a request's blocks tail first, so the tail is evicted before
    /// the shared prefix.
    pub fn release(&mut self, hashes: &[u64], extra_blocks: usize) {
        self.anonymous = self.anonymous.saturating_sub(extra_blocks);
        // allocate referenced every occurrence once, so release drops one per occurrence.
        for &h in hashes.iter().rev() {
            if let Some(b) = self.blocks.get_mut(&h) {
                b.refs = b.refs.saturating_sub(1);
                if b.refs == 0 {
                    self.clock += 1;
                    b.stamp = self.clock;
                    self.evictable.insert(self.clock, h);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promises_count_against_later_admissions_and_evictions_come_when_blocks_are_taken() {
        let mut cache = PrefixCache::new(4);
        let mut removed = Vec::new();
        // A request of 2 blocks, cached and released: 2 evictable, 2 free.
        assert_eq!(cache.reserve(&[1, 2], 2, 4, 8), Ok(0));
        for h in [1, 2] {
            cache.take_block(&mut removed);
            assert_eq!(cache.promote(&[h]), vec![h]);
        }
        cache.release_request(&[1, 2], 0, 0);
        // Another promises 3 blocks: nothing is evicted until it takes them.
        assert_eq!(cache.reserve(&[7, 8, 9], 3, 4, 12), Ok(0));
        assert!(removed.is_empty());
        // Only 1 block is left unpromised: a 2-block request must wait.
        assert_eq!(
            cache.reserve(&[20, 21], 2, 4, 8),
            Err(CacheFull {
                needed: 2,
                available: 1
            })
        );
        for _ in 0..3 {
            cache.take_block(&mut removed);
        }
        // Two free blocks first, then the least recently freed: block 2 (freed tail first).
        assert_eq!(removed, vec![2]);
        assert_eq!(cache.longest_prefix(&[1, 2]), 1);
        assert_eq!(cache.counters(), (20, 0));
    }
}
