//! Load per pod: the indexer's own decisions in flight and each pod's vLLM metrics (read
//! from a scraped page here; the scraping itself is `ingest::health`'s, which also learns
//! from a failed scrape that the engine is gone).
//!
//! Metrics lag and do not say how much work a queued request is; the indexer's own
//! decisions say both. They live in a `kvroute_scoring::Ledger` (shared with the simulator's
//! fleet model): each decision's uncached tokens count as pending prefill until the pod
//! stores its last block or the scraped FIFO queue shows it admitted, and its keys count as
//! held until the filter reports the request complete, or after a TTL in case that report
//! is lost.

use std::time::{Duration, Instant};

use kvroute_scoring::{Ledger, Pending};
use parking_lot::{Mutex, MutexGuard};

use crate::index::PodMatch;
use crate::pods::PodRegistry;
use crate::types::PodId;

/// In-flight decisions, by ticket.
#[derive(Debug)]
pub struct InFlight {
    ttl: Duration,
    /// Origin of the ledger's seconds.
    epoch: Instant,
    ledger: Mutex<Ledger<PodId>>,
}

impl InFlight {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            epoch: Instant::now(),
            ledger: Mutex::new(Ledger::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Ledger<PodId>> {
        self.ledger.lock()
    }

    fn seconds(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.epoch).as_secs_f64()
    }

    /// Runs `decide` with the ledger locked, so concurrent decisions see each other's
    /// pending work; `decide` gets the ledger and the current time in its seconds.
    pub fn with_ledger<R>(&self, decide: impl FnOnce(&mut Ledger<PodId>, f64) -> R) -> R {
        let now = self.seconds(Instant::now());
        decide(&mut self.lock(), now)
    }

    /// A decision was sent to `pod`: count it on the pod's load.
    pub fn started(&self, pod: &PodId, registry: &PodRegistry) {
        registry.set_load(pod, |l| l.in_flight += 1);
    }

    /// A decision sent to `pod` that queues `uncached_tokens` of prefill; returns its ticket.
    pub fn start(
        &self,
        pod: &PodId,
        keys: &[u64],
        uncached_tokens: f64,
        registry: &PodRegistry,
    ) -> u64 {
        let ticket = self.with_ledger(|l, now| l.start(pod, keys, uncached_tokens, now));
        self.started(pod, registry);
        ticket
    }

    /// The request behind `ticket` finished; false if unknown (already expired or done).
    pub fn complete(&self, ticket: u64, registry: &PodRegistry) -> bool {
        let done = self.lock().complete(ticket);
        match done {
            Some(pod) => {
                registry.set_load(&pod, |l| l.in_flight = l.in_flight.saturating_sub(1));
                true
            }
            None => false,
        }
    }

    /// Release decisions older than the TTL; returns how many.
    pub fn expire(&self, registry: &PodRegistry) -> usize {
        let now = self.seconds(Instant::now());
        let expired = self.lock().expire(now - self.ttl.as_secs_f64());
        for pod in &expired {
            registry.set_load(pod, |l| l.in_flight = l.in_flight.saturating_sub(1));
        }
        expired.len()
    }

    /// A scrape of `pod` sent at `at` saw `waiting` queued.
    pub fn observe_queue(&self, pod: &PodId, waiting: f64, at: Instant) {
        let at = self.seconds(at);
        self.lock().observe_queue(pod, waiting, at);
    }

    pub fn pending(&self, pod: &PodId) -> Pending {
        self.lock().pending(pod)
    }

    /// The pods that in-flight decisions will have filled with a prefix of `keys`.
    pub fn match_prefix(&self, keys: &[u64]) -> Vec<PodMatch> {
        ledger_matches(&self.lock(), keys)
    }
}

/// The ledger's holdings as index matches (on the GPU: a running request's blocks are).
pub fn ledger_matches(ledger: &Ledger<PodId>, keys: &[u64]) -> Vec<PodMatch> {
    ledger
        .match_prefix(keys)
        .into_iter()
        .map(|(pod, n)| PodMatch {
            pod,
            gpu_blocks: n,
            any_tier_blocks: n,
        })
        .collect()
}

/// The vLLM gauges that load is made of, from a Prometheus text page, and when the
/// engine's process started (a new start time: the engine restarted, its cache is empty).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EngineGauges {
    pub waiting: f64,
    pub running: f64,
    pub kv_usage: f64,
    pub process_start_time: Option<f64>,
}

/// Sum each gauge over its label sets (one per model/engine in the page).
pub fn parse_vllm_metrics(text: &str) -> EngineGauges {
    let mut g = EngineGauges::default();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        let Some(value) = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.trim().parse::<f64>().ok())
        else {
            continue;
        };
        match name {
            "vllm:num_requests_waiting" => g.waiting += value,
            "vllm:num_requests_running" => g.running += value,
            // Renamed from gpu_cache_usage_perc in newer vLLM; accept both.
            "vllm:kv_cache_usage_perc" | "vllm:gpu_cache_usage_perc" => {
                g.kv_usage = g.kv_usage.max(value)
            }
            "process_start_time_seconds" => g.process_start_time = Some(value),
            _ => {}
        }
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vllm_gauges() {
        let page = "# HELP vllm:num_requests_waiting x\n\
            vllm:num_requests_waiting{model_name=\"Qwen3-32B\",engine=\"0\"} 3.0\n\
            vllm:num_requests_running{model_name=\"Qwen3-32B\",engine=\"0\"} 5.0\n\
            vllm:kv_cache_usage_perc{model_name=\"Qwen3-32B\"} 0.42\n\
            vllm:prefix_cache_hits_total{model_name=\"Qwen3-32B\"} 100.0\n\
            process_start_time_seconds 1.7649e+09\n";
        assert_eq!(
            parse_vllm_metrics(page),
            EngineGauges {
                waiting: 3.0,
                running: 5.0,
                kv_usage: 0.42,
                process_start_time: Some(1.7649e9),
            }
        );
    }

    #[test]
    fn tickets_count_until_complete_or_expired() {
        let reg = PodRegistry::new(Some("m".into()));
        let pod = PodId {
            endpoint: "10.0.0.1:8000".into(),
            dp_rank: 0,
        };
        reg.add(pod.clone());
        let f = InFlight::new(Duration::from_millis(30));
        let t = f.start(&pod, &[1, 2], 640.0, &reg);
        f.start(&pod, &[1], 64.0, &reg);
        assert_eq!(reg.pods_for_model("m")[0].1.in_flight, 2);
        assert_eq!(f.pending(&pod).tokens, 704.0);
        assert_eq!(f.match_prefix(&[1, 2])[0].gpu_blocks, 2);
        assert!(f.complete(t, &reg));
        assert!(!f.complete(t, &reg));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(f.expire(&reg), 1);
        assert_eq!(reg.pods_for_model("m")[0].1.in_flight, 0);
    }
}
