//! From an engine's published block hashes to index keys, per engine. Pure logic.
//!
//! The index is keyed by what the shared crate computes for a request. When an engine runs
//! the same scheme and seed, its published values *are* those keys ("native" mode): no
//! hashing at ingest, and a `BlockStored` whose parent was never seen (indexer restarted,
//! replay too short) is still indexed. When they differ (vLLM's default `sha256` pickles,
//! or another seed), the keys are recomputed from each event's token ids, chaining our own
//! full digests ("rekey" mode); that needs the parent's digest, so an engine-hash -> (key,
//! digest) map is kept and a block whose parent is unknown is an orphan, counted and
//! dropped. The mode is found by checking the first event that can be checked: a chain
//! from the root, or from a parent whose digest we know.
//!
//! That map is bounded: it keeps at most the share of `--max-entries` the caller passes
//! (the index keeps no more of the engine's blocks than that either), forgetting its oldest
//! first; a block whose parent was forgotten is then an orphan like any other.

use std::collections::{HashMap, VecDeque};

use kvroute_blockhash::{BlockDigest, BlockHasher, ExtraKeysStyle, HashConfig, RequestExtras};
use kvroute_kvevents::{BlockStored, EngineHash};

use crate::types::KeyMode;

/// What a `BlockStored` became.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredKeys {
    pub keys: Vec<u64>,
    pub orphans: u64,
    /// Entries of the re-key map forgotten to stay within its bound.
    pub evicted: u64,
    /// Set when this event decided (or changed) the engine's mode.
    pub mode_decided: Option<KeyMode>,
}

/// Per-engine key derivation state.
#[derive(Debug)]
pub struct EngineKeyer {
    base: HashConfig,
    style: ExtraKeysStyle,
    hashers: HashMap<usize, BlockHasher>,
    mode: KeyMode,
    /// Engine value -> (our key, our digest); kept while probing and in rekey mode.
    digests: HashMap<u64, (u64, BlockDigest)>,
    /// Insertion order of `digests`, oldest first; may name entries already removed
    /// (dropped lazily).
    order: VecDeque<u64>,
}

impl EngineKeyer {
    pub fn new(base: HashConfig, style: ExtraKeysStyle) -> Self {
        Self {
            base,
            style,
            hashers: HashMap::new(),
            mode: KeyMode::Probing,
            digests: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn mode(&self) -> KeyMode {
        self.mode
    }

    /// Everything the engine had is gone (cleared, restarted): re-learn from scratch.
    pub fn reset(&mut self) {
        self.digests.clear();
        self.order.clear();
        if self.mode == KeyMode::Rekey {
            // Keep re-keying: the engine's scheme did not change with a restart.
            return;
        }
        self.mode = KeyMode::Probing;
    }

    fn hasher(&mut self, block_size: usize) -> &BlockHasher {
        let base = &self.base;
        self.hashers.entry(block_size).or_insert_with(|| {
            BlockHasher::new(HashConfig {
                block_size,
                ..base.clone()
            })
        })
    }

    /// Entries of the re-key map (engine hash -> our key and digest).
    pub fn digests_held(&self) -> usize {
        self.digests.len()
    }

    /// Remembers `engine` -> `ours`, forgetting the oldest entries past `max`; returns how
    /// many were forgotten.
    fn remember(&mut self, engine: u64, ours: BlockDigest, max: usize) -> u64 {
        if self
            .digests
            .insert(engine, (ours.event_value(), ours))
            .is_none()
        {
            self.order.push_back(engine);
        }
        let mut evicted = 0;
        while self.digests.len() > max.max(1) {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if self.digests.remove(&oldest).is_some() {
                evicted += 1;
            }
        }
        // Removed entries leave the order lazily; compact once they outnumber the rest.
        if self.order.len() > 2 * self.digests.len() + 64 {
            let live = &self.digests;
            self.order.retain(|e| live.contains_key(e));
        }
        evicted
    }

    /// Keys of a stored event's blocks; the re-key map keeps at most `max_digests`.
    pub fn on_stored(&mut self, ev: &BlockStored, max_digests: usize) -> StoredKeys {
        let engine: Vec<u64> = ev.block_hashes.iter().map(EngineHash::as_u64).collect();
        if self.mode == KeyMode::Native {
            return StoredKeys {
                keys: engine,
                ..Default::default()
            };
        }
        let parent = match &ev.parent_block_hash {
            None => Some(None),
            Some(p) => self.digests.get(&p.as_u64()).map(|(_, d)| Some(*d)),
        };
        let Some(parent) = parent else {
            // Parent unknown: natively the engine's values still key the index; re-keyed
            // they cannot be computed.
            return match self.mode {
                KeyMode::Rekey => StoredKeys {
                    orphans: engine.len() as u64,
                    ..Default::default()
                },
                _ => StoredKeys {
                    keys: engine,
                    ..Default::default()
                },
            };
        };
        let ours = self.recompute(ev, parent.as_ref());
        let mut out = StoredKeys::default();
        if self.mode == KeyMode::Probing && !ours.is_empty() {
            let agree = ours.iter().zip(&engine).all(|(d, e)| d.event_value() == *e);
            self.mode = if agree {
                KeyMode::Native
            } else {
                KeyMode::Rekey
            };
            out.mode_decided = Some(self.mode);
        }
        match self.mode {
            KeyMode::Native => {
                self.digests.clear();
                self.order.clear();
                out.keys = engine;
            }
            _ => {
                for (e, d) in engine.iter().zip(&ours) {
                    out.evicted += self.remember(*e, *d, max_digests);
                }
                out.keys = ours.iter().map(BlockDigest::event_value).collect();
            }
        }
        out
    }

    /// Our digests for the event's blocks, chained from `parent` (None: the root).
    fn recompute(&mut self, ev: &BlockStored, parent: Option<&BlockDigest>) -> Vec<BlockDigest> {
        let block_size = ev.block_size as usize;
        if block_size == 0 {
            return Vec::new();
        }
        let n = ev.block_hashes.len().min(ev.token_ids.len() / block_size);
        let tokens = &ev.token_ids[..n * block_size];
        let extras = self.extras_of(ev);
        let style = self.style;
        let first_block_is_root = ev.parent_block_hash.is_none();
        self.hasher(block_size).chain(parent, tokens, &|i| {
            // The cache salt sits on the request's first block only.
            let index = if first_block_is_root { i } else { i + 1 };
            extras.block_extra_keys(index, style)
        })
    }

    /// The request extras an event's (untagged) extra keys stand for.
    fn extras_of(&self, ev: &BlockStored) -> RequestExtras {
        let mut extras = RequestExtras {
            lora_name: ev.lora_name.clone(),
            ..Default::default()
        };
        if ev.parent_block_hash.is_none() {
            let first = ev
                .extra_keys
                .as_ref()
                .and_then(|per_block| per_block.first())
                .and_then(|k| k.as_ref());
            if let Some(rmpv::Value::Array(items)) = first {
                extras.cache_salt = items
                    .iter()
                    .filter_map(|v| v.as_str())
                    .find(|s| Some(*s) != ev.lora_name.as_deref())
                    .map(str::to_owned);
            }
        }
        extras
    }

    /// Keys of removed blocks.
    pub fn on_removed(&mut self, hashes: &[EngineHash]) -> Vec<u64> {
        hashes
            .iter()
            .filter_map(|h| {
                let e = h.as_u64();
                match self.mode {
                    KeyMode::Native => Some(e),
                    _ => self.digests.remove(&e).map(|(k, _)| k).or(
                        // Probing: the value may have been indexed natively.
                        (self.mode == KeyMode::Probing).then_some(e),
                    ),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvroute_blockhash::HashScheme;

    fn stored(hash: u64, parent: Option<u64>, block: u32) -> BlockStored {
        BlockStored {
            block_hashes: vec![EngineHash::Int(hash)],
            parent_block_hash: parent.map(EngineHash::Int),
            token_ids: vec![block; 16],
            block_size: 16,
            lora_id: None,
            medium: None,
            lora_name: None,
            extra_keys: None,
            group_idx: None,
            kv_cache_spec_kind: None,
            session_id: None,
        }
    }

    /// An engine seeded differently (every value re-keyed) storing a 2,000-block chain:
    /// the map holds its share and no more, the forgotten entries counted, and the newest
    /// blocks still chain.
    #[test]
    fn the_rekey_map_keeps_its_share() {
        let config = HashConfig {
            scheme: HashScheme::Sha256Cbor,
            block_size: 16,
            seed: None,
        };
        let mut keyer = EngineKeyer::new(config, ExtraKeysStyle::Tagged);
        let share = 100;
        let mut evicted = 0;
        let mut parent = None;
        for i in 0..2_000u64 {
            // Engine values unrelated to ours: the first event decides rekey mode.
            let value = 0xdead_0000 + i;
            let out = keyer.on_stored(&stored(value, parent, i as u32), share);
            assert_eq!(out.keys.len(), 1, "block {i} chains from its parent");
            evicted += out.evicted;
            assert!(keyer.digests_held() <= share);
            parent = Some(value);
        }
        assert_eq!(keyer.mode(), KeyMode::Rekey);
        assert_eq!(keyer.digests_held(), share);
        assert_eq!(evicted, 2_000 - share as u64);
        // A block whose parent was forgotten is an orphan.
        let out = keyer.on_stored(&stored(1, Some(0xdead_0000), 7), share);
        assert_eq!((out.keys.len(), out.orphans), (0, 1));
    }
}
