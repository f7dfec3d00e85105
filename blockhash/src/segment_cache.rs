//! Byte-bounded LRU of token ids per prompt segment.
//!
//! Agents and customer contexts resend the same thousands of tokens with every request.
//! The tokenizer works on the pieces between added tokens independently, so those pieces'
//! ids can be remembered and reused: a second request that repeats a 6,000-token context
//! only tokenizes what is new. Bounded in bytes (text + ids) because it lives inside every
//! Envoy wasm VM; eviction scans for the least recently used entry, which is cheap for the
//! few hundred long segments it holds and needs no extra structure.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Segments shorter than this are cheaper to tokenize than to remember.
const MIN_CACHED_BYTES: usize = 64;

#[derive(Debug)]
struct Entry {
    ids: Arc<[u32]>,
    last_used: u64,
    bytes: usize,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<Box<str>, Entry>,
    bytes: usize,
    clock: u64,
    hits: u64,
    misses: u64,
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SegmentCacheStats {
    pub entries: usize,
    pub bytes: usize,
    pub hits: u64,
    pub misses: u64,
}

/// Segment text -> token ids, at most `capacity_bytes` in total.
#[derive(Debug)]
pub struct SegmentCache {
    capacity_bytes: usize,
    state: Mutex<State>,
}

impl SegmentCache {
    pub fn new(capacity_bytes: usize) -> Self {
        Self {
            capacity_bytes,
            state: Mutex::new(State::default()),
        }
    }

    /// The ids of `segment`, from the cache or from `encode` (then remembered).
    pub fn get_or_encode<E>(
        &self,
        segment: &str,
        encode: impl FnOnce(&str) -> Result<Vec<u32>, E>,
    ) -> Result<Arc<[u32]>, E> {
        if segment.len() < MIN_CACHED_BYTES {
            return encode(segment).map(Arc::from);
        }
        if let Some(ids) = self.lookup(segment) {
            return Ok(ids);
        }
        let ids: Arc<[u32]> = Arc::from(encode(segment)?);
        self.insert(segment, ids.clone());
        Ok(ids)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the map inconsistent (no partial
        // updates), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lookup(&self, segment: &str) -> Option<Arc<[u32]>> {
        let mut st = self.lock();
        st.clock += 1;
        let now = st.clock;
        match st.entries.get_mut(segment) {
            Some(e) => {
                e.last_used = now;
                let ids = e.ids.clone();
                st.hits += 1;
                Some(ids)
            }
            None => {
                st.misses += 1;
                None
            }
        }
    }

    fn insert(&self, segment: &str, ids: Arc<[u32]>) {
        let bytes = segment.len() + ids.len() * 4 + 64;
        if bytes > self.capacity_bytes {
            return;
        }
        let mut st = self.lock();
        while st.bytes + bytes > self.capacity_bytes {
            let Some(oldest) = st
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(e) = st.entries.remove(&oldest) {
                st.bytes -= e.bytes;
            }
        }
        st.clock += 1;
        let last_used = st.clock;
        if let Some(old) = st.entries.insert(
            segment.into(),
            Entry {
                ids,
                last_used,
                bytes,
            },
        ) {
            st.bytes -= old.bytes;
        }
        st.bytes += bytes;
    }

    pub fn stats(&self) -> SegmentCacheStats {
        let st = self.lock();
        SegmentCacheStats {
            entries: st.entries.len(),
            bytes: st.bytes,
            hits: st.hits,
            misses: st.misses,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(s: &str) -> Result<Vec<u32>, ()> {
        Ok(s.bytes().map(u32::from).collect())
    }

    #[test]
    fn hits_after_first_encode_and_stays_within_its_bound() {
        // Each entry costs 300 text bytes + 300 ids * 4 + 64 = 1,564: two fit, three do not.
        let cache = SegmentCache::new(3_500);
        let a = "a".repeat(300);
        let b = "b".repeat(300);
        let c = "c".repeat(300);
        cache.get_or_encode(&a, encode).unwrap();
        cache
            .get_or_encode(&a, |_| Err(()))
            .expect("second lookup is a hit");
        cache.get_or_encode(&b, encode).unwrap();
        cache.get_or_encode(&a, encode).unwrap(); // a is now more recent than b
        cache.get_or_encode(&c, encode).unwrap(); // evicts b
        let st = cache.stats();
        assert!(st.bytes <= 3_500, "{st:?}");
        assert_eq!(st.entries, 2, "{st:?}");
        assert!(cache.get_or_encode(&a, |_| Err(())).is_ok());
        assert!(cache.get_or_encode(&b, |_| Err(())).is_err());
    }
}
