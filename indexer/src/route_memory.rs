//! Estimate mode's memory: what the indexer routed, remembered as if the pod held it.
//!
//! Engines that publish no KV events leave the route taken as the only knowledge there is,
//! so each decision is remembered for a long TTL (`--estimate-ttl-secs`). Precise mode does
//! not use it: its blind spot (a pod publishes `BlockStored` only after prefill) is covered
//! by the ledger of decisions in flight, whose keys count as held until the request ends.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::index::PodMatch;
use crate::types::PodId;

#[derive(Debug)]
struct Holding {
    pod: PodId,
    until: Instant,
}

/// Key -> pods that were sent it recently.
#[derive(Debug)]
pub struct RouteMemory {
    ttl: Duration,
    max_keys: usize,
    keys: Mutex<HashMap<u64, Vec<Holding>>>,
}

impl RouteMemory {
    pub fn new(ttl: Duration, max_keys: usize) -> Self {
        Self {
            ttl,
            max_keys,
            keys: Mutex::new(HashMap::new()),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Remember that `keys` were routed to `pod`.
    pub fn record(&self, pod: &PodId, keys: &[u64]) {
        if self.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let until = now + self.ttl;
        let mut map = self.keys.lock();
        if map.len() + keys.len() > self.max_keys {
            map.retain(|_, hs| {
                hs.retain(|h| h.until > now);
                !hs.is_empty()
            });
        }
        for &key in keys {
            if map.len() >= self.max_keys && !map.contains_key(&key) {
                break;
            }
            let holders = map.entry(key).or_default();
            match holders.iter_mut().find(|h| &h.pod == pod) {
                Some(h) => h.until = until,
                None => holders.push(Holding {
                    pod: pod.clone(),
                    until,
                }),
            }
        }
    }

    /// Longest run of `keys` from the first that each pod was recently sent.
    pub fn match_prefix(&self, keys: &[u64]) -> Vec<PodMatch> {
        let now = Instant::now();
        let map = self.keys.lock();
        let mut runs: Vec<PodMatch> = Vec::new();
        let Some(first) = keys.first().and_then(|k| map.get(k)) else {
            return runs;
        };
        for h in first.iter().filter(|h| h.until > now) {
            let n = keys
                .iter()
                .take_while(|k| {
                    map.get(k)
                        .is_some_and(|hs| hs.iter().any(|x| x.pod == h.pod && x.until > now))
                })
                .count();
            runs.push(PodMatch {
                pod: h.pod.clone(),
                gpu_blocks: n,
                any_tier_blocks: n,
            });
        }
        runs
    }

    /// Forget a pod (dropped from the fleet).
    pub fn forget_pod(&self, pod: &PodId) {
        let mut map = self.keys.lock();
        map.retain(|_, hs| {
            hs.retain(|h| &h.pod != pod);
            !hs.is_empty()
        });
    }
}

/// The longer of two views of the same pod's prefix.
pub fn merge_matches(mut indexed: Vec<PodMatch>, remembered: Vec<PodMatch>) -> Vec<PodMatch> {
    for r in remembered {
        match indexed.iter_mut().find(|m| m.pod == r.pod) {
            Some(m) => {
                m.gpu_blocks = m.gpu_blocks.max(r.gpu_blocks);
                m.any_tier_blocks = m.any_tier_blocks.max(r.any_tier_blocks);
            }
            None => indexed.push(r),
        }
    }
    indexed
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

    #[test]
    fn remembers_until_the_ttl() {
        let m = RouteMemory::new(Duration::from_millis(50), 1000);
        m.record(&pod(1), &[1, 2, 3]);
        let got = m.match_prefix(&[1, 2, 9]);
        assert_eq!((got.len(), got[0].gpu_blocks), (1, 2));
        std::thread::sleep(Duration::from_millis(80));
        assert!(m.match_prefix(&[1, 2]).is_empty());
    }
}
