//! The global block index: key -> pods holding it (with medium), concurrent lookups while
//! ingesting, bounded memory, per-pod bookkeeping for clears.
//!
//! Keys are the u64 values the shared crate computes for a request
//! (`RequestKeys::block_hashes`), so lookups need no translation; ingestion maps engine
//! hashes to these keys when they differ. Each key holds two pod bitmasks (GPU, lower
//! tiers) instead of a list: a million blocks then cost ~60 bytes each whatever the number
//! of pods holding them, and a prefix match is a running AND over the request's keys. The
//! price is a ceiling of [`MAX_PODS`] engines per indexer (run one indexer per model pool
//! beyond that). Keys are hash values already, so the maps do not hash them again. Shards keep ingestion from
//! blocking lookups; each shard forgets its oldest keys first when over its share of the
//! bound.

use parking_lot::{Mutex, RwLock};
use std::collections::{HashMap, VecDeque};

use crate::types::PodId;

/// Where a cached block lives on its pod.
pub use kvroute_kvevents::Medium;

/// Engines one index can track (bits of a holder mask).
pub const MAX_PODS: usize = 64;
const SHARDS: usize = 16;

/// One index mutation, as ingestion produces them from KV events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexOp {
    Store {
        keys: Vec<u64>,
        medium: Medium,
    },
    Remove {
        keys: Vec<u64>,
        medium: Option<Medium>,
    },
    ClearPod,
}

/// How much of a request's prefix one pod holds.
#[derive(Debug, Clone, PartialEq)]
pub struct PodMatch {
    pub pod: PodId,
    /// Consecutive keys from the first one held on the GPU.
    pub gpu_blocks: usize,
    /// Consecutive keys from the first one held on any tier (>= gpu_blocks).
    pub any_tier_blocks: usize,
}

/// The one seam between the index and its users: ingestion writes through it, the router
/// and the HTTP status pages read through it, so neither depends on the index's layout.
pub trait PodIndex: Send + Sync {
    fn apply(&self, pod: &PodId, op: IndexOp);
    /// Every pod holding at least the first key, with its longest run from the start.
    fn match_prefix(&self, keys: &[u64]) -> Vec<PodMatch>;
    /// Forget a pod entirely (it vanished from discovery or was dropped as dead).
    fn drop_pod(&self, pod: &PodId);
    /// Keys held (by any pod).
    fn entries(&self) -> usize;
    /// Blocks held per pod, by medium (GPU, lower tiers), for `/v1/pods`.
    fn blocks_per_pod(&self) -> HashMap<PodId, (usize, usize)>;
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Holders {
    gpu: u64,
    lower: u64,
}

impl Holders {
    fn any(&self) -> u64 {
        self.gpu | self.lower
    }
}

/// Keys are uniform hash values: use them as their own hash.
#[derive(Default)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        // The shard index uses the low bits; spread the rest for the table.
        self.0 = v.rotate_right(4);
    }
}

type KeyMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<KeyHasher>>;

#[derive(Default)]
struct Shard {
    map: KeyMap<Holders>,
    /// Insertion order, for forgetting the oldest keys first. May hold keys removed since;
    /// compacted when it grows past twice the live keys.
    order: VecDeque<u64>,
}

/// Pod <-> bit slot.
#[derive(Default)]
struct Slots {
    by_pod: HashMap<PodId, usize>,
    pods: Vec<Option<PodId>>,
}

/// The key -> holders map, sharded.
pub struct BlockIndex {
    shards: Vec<RwLock<Shard>>,
    slots: RwLock<Slots>,
    max_entries_per_shard: usize,
    /// Serializes slot allocation with the clearing of a freed slot's bits.
    slot_lock: Mutex<()>,
    full_pods_dropped: std::sync::atomic::AtomicU64,
}

impl BlockIndex {
    /// An index that keeps at most about `max_entries` keys.
    pub fn new(max_entries: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            slots: RwLock::new(Slots::default()),
            max_entries_per_shard: (max_entries / SHARDS).max(1),
            slot_lock: Mutex::new(()),
            full_pods_dropped: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn shard(&self, key: u64) -> &RwLock<Shard> {
        // Keys are hash values already: their low bits are uniform.
        &self.shards[(key as usize) % SHARDS]
    }

    fn slot_of(&self, pod: &PodId) -> Option<usize> {
        self.slots.read().by_pod.get(pod).copied()
    }

    fn slot_or_assign(&self, pod: &PodId) -> Option<usize> {
        if let Some(slot) = self.slot_of(pod) {
            return Some(slot);
        }
        let _guard = self.slot_lock.lock();
        let mut slots = self.slots.write();
        if let Some(slot) = slots.by_pod.get(pod) {
            return Some(*slot);
        }
        let free = slots.pods.iter().position(Option::is_none);
        let slot = match free {
            Some(s) => s,
            None if slots.pods.len() < MAX_PODS => {
                slots.pods.push(None);
                slots.pods.len() - 1
            }
            None => {
                self.full_pods_dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return None;
            }
        };
        slots.pods[slot] = Some(pod.clone());
        slots.by_pod.insert(pod.clone(), slot);
        Some(slot)
    }

    fn store(&self, slot: usize, keys: &[u64], medium: Medium) {
        let bit = 1u64 << slot;
        // One lock per shard touched, not per key.
        let mut by_shard: [Vec<u64>; SHARDS] = Default::default();
        for &key in keys {
            by_shard[(key as usize) % SHARDS].push(key);
        }
        for (i, keys) in by_shard.iter().enumerate().filter(|(_, k)| !k.is_empty()) {
            let mut shard = self.shards[i].write();
            let shard = &mut *shard;
            for &key in keys {
                let holders = match shard.map.get_mut(&key) {
                    Some(h) => h,
                    None => {
                        shard.order.push_back(key);
                        shard.map.entry(key).or_default()
                    }
                };
                match medium {
                    Medium::Gpu => holders.gpu |= bit,
                    Medium::Cpu | Medium::Storage => holders.lower |= bit,
                }
            }
            self.enforce_bound(shard);
        }
    }

    fn enforce_bound(&self, shard: &mut Shard) {
        while shard.map.len() > self.max_entries_per_shard {
            match shard.order.pop_front() {
                Some(old) => {
                    shard.map.remove(&old);
                }
                None => break,
            }
        }
        if shard.order.len() > 2 * shard.map.len() + 1024 {
            let map = &shard.map;
            let mut seen = std::collections::HashSet::<u64, std::hash::BuildHasherDefault<KeyHasher>>::with_capacity_and_hasher(
                map.len(),
                Default::default(),
            );
            shard
                .order
                .retain(|k| map.contains_key(k) && seen.insert(*k));
        }
    }

    fn remove(&self, slot: usize, keys: &[u64], medium: Option<Medium>) {
        let bit = !(1u64 << slot);
        for &key in keys {
            let mut shard = self.shard(key).write();
            if let Some(h) = shard.map.get_mut(&key) {
                match medium {
                    Some(Medium::Gpu) => h.gpu &= bit,
                    Some(Medium::Cpu | Medium::Storage) => h.lower &= bit,
                    None => {
                        h.gpu &= bit;
                        h.lower &= bit;
                    }
                }
                if h.any() == 0 {
                    shard.map.remove(&key);
                }
            }
        }
    }

    fn clear_slot(&self, slot: usize) {
        let bit = !(1u64 << slot);
        for shard in &self.shards {
            let mut shard = shard.write();
            shard.map.retain(|_, h| {
                h.gpu &= bit;
                h.lower &= bit;
                h.any() != 0
            });
        }
    }

    /// Engines that could not be tracked because [`MAX_PODS`] were already.
    pub fn pods_refused(&self) -> u64 {
        self.full_pods_dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl PodIndex for BlockIndex {
    fn apply(&self, pod: &PodId, op: IndexOp) {
        match op {
            IndexOp::Store { keys, medium } => {
                if let Some(slot) = self.slot_or_assign(pod) {
                    self.store(slot, &keys, medium);
                }
            }
            IndexOp::Remove { keys, medium } => {
                if let Some(slot) = self.slot_of(pod) {
                    self.remove(slot, &keys, medium);
                }
            }
            IndexOp::ClearPod => {
                if let Some(slot) = self.slot_of(pod) {
                    self.clear_slot(slot);
                }
            }
        }
    }

    fn match_prefix(&self, keys: &[u64]) -> Vec<PodMatch> {
        let mut alive_any = u64::MAX;
        let mut alive_gpu = u64::MAX;
        let mut gpu_run = [0usize; MAX_PODS];
        let mut any_run = [0usize; MAX_PODS];
        for (i, &key) in keys.iter().enumerate() {
            let h = self
                .shard(key)
                .read()
                .map
                .get(&key)
                .copied()
                .unwrap_or_default();
            let (ended_any, ended_gpu) = (alive_any & !h.any(), alive_gpu & !h.gpu);
            record_ends(ended_any, i, &mut any_run);
            record_ends(ended_gpu, i, &mut gpu_run);
            alive_any &= h.any();
            alive_gpu &= h.gpu;
            if alive_any == 0 {
                break;
            }
        }
        record_ends(alive_any, keys.len(), &mut any_run);
        record_ends(alive_gpu, keys.len(), &mut gpu_run);
        let slots = self.slots.read();
        slots
            .pods
            .iter()
            .enumerate()
            .filter_map(|(slot, pod)| {
                let pod = pod.as_ref()?;
                (any_run[slot] > 0).then(|| PodMatch {
                    pod: pod.clone(),
                    gpu_blocks: gpu_run[slot],
                    any_tier_blocks: any_run[slot],
                })
            })
            .collect()
    }

    fn drop_pod(&self, pod: &PodId) {
        let _guard = self.slot_lock.lock();
        let slot = self.slots.write().by_pod.remove(pod);
        if let Some(slot) = slot {
            self.clear_slot(slot);
            self.slots.write().pods[slot] = None;
        }
    }

    fn blocks_per_pod(&self) -> HashMap<PodId, (usize, usize)> {
        let slots = self.slots.read();
        let mut counts = vec![(0usize, 0usize); slots.pods.len()];
        for shard in &self.shards {
            for h in shard.read().map.values() {
                for (slot, c) in counts.iter_mut().enumerate() {
                    let bit = 1u64 << slot;
                    if h.gpu & bit != 0 {
                        c.0 += 1;
                    }
                    if h.lower & bit != 0 {
                        c.1 += 1;
                    }
                }
            }
        }
        slots
            .pods
            .iter()
            .zip(counts)
            .filter_map(|(p, c)| p.clone().map(|p| (p, c)))
            .collect()
    }

    fn entries(&self) -> usize {
        self.shards.iter().map(|s| s.read().map.len()).sum()
    }
}

/// Pods in `ended` held the prefix up to (not including) key `at`.
fn record_ends(mut ended: u64, at: usize, runs: &mut [usize; MAX_PODS]) {
    while ended != 0 {
        let slot = ended.trailing_zeros() as usize;
        ended &= ended - 1;
        if slot < MAX_PODS && runs[slot] == 0 {
            runs[slot] = at;
        }
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

    fn store(index: &BlockIndex, p: &PodId, keys: &[u64], medium: Medium) {
        index.apply(
            p,
            IndexOp::Store {
                keys: keys.to_vec(),
                medium,
            },
        );
    }

    fn runs(index: &BlockIndex, keys: &[u64]) -> Vec<(String, usize, usize)> {
        let mut v: Vec<_> = index
            .match_prefix(keys)
            .into_iter()
            .map(|m| (m.pod.to_string(), m.gpu_blocks, m.any_tier_blocks))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn longest_consecutive_run_from_the_first_key_per_pod() {
        let index = BlockIndex::new(1_000);
        store(&index, &pod(1), &[1, 2, 3, 4], Medium::Gpu);
        store(&index, &pod(2), &[1, 2], Medium::Gpu);
        store(&index, &pod(2), &[4], Medium::Gpu); // a hole at 3: does not count
        store(&index, &pod(3), &[2, 3], Medium::Gpu); // no first block: no match
        store(&index, &pod(3), &[1], Medium::Cpu);
        assert_eq!(
            runs(&index, &[1, 2, 3, 4, 5]),
            vec![
                ("10.0.0.1:8000".into(), 4, 4),
                ("10.0.0.2:8000".into(), 2, 2),
                ("10.0.0.3:8000".into(), 0, 3),
            ]
        );
    }

    #[test]
    fn remove_clear_and_drop() {
        let index = BlockIndex::new(1_000);
        store(&index, &pod(1), &[1, 2, 3], Medium::Gpu);
        store(&index, &pod(2), &[1, 2, 3], Medium::Gpu);
        index.apply(
            &pod(1),
            IndexOp::Remove {
                keys: vec![2],
                medium: None,
            },
        );
        assert_eq!(runs(&index, &[1, 2, 3])[0].1, 1);
        index.apply(&pod(2), IndexOp::ClearPod);
        assert_eq!(runs(&index, &[1, 2, 3]).len(), 1);
        index.drop_pod(&pod(1));
        assert!(runs(&index, &[1, 2, 3]).is_empty());
        assert_eq!(index.entries(), 0);
    }

    #[test]
    fn the_oldest_keys_go_first_when_full() {
        let index = BlockIndex::new(SHARDS * 4);
        let keys: Vec<u64> = (0..(SHARDS as u64 * 8)).collect();
        store(&index, &pod(1), &keys, Medium::Gpu);
        assert!(index.entries() <= SHARDS * 4);
        // The newest keys survive.
        let last = *keys.last().unwrap();
        assert_eq!(runs(&index, &[last]).len(), 1);
        assert!(runs(&index, &[0]).is_empty());
    }
}
