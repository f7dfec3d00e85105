//! Load per pod: the indexer's own in-flight decisions and each pod's vLLM metrics.
//!
//! Metrics lag: a pod scraped a second ago does not show the requests just sent to it.
//! Counting in-flight decisions closes that gap; they are released when the filter reports
//! the request complete, or after a TTL in case that report is lost.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};

use crate::pods::PodRegistry;
use crate::types::PodId;

/// In-flight decisions, by ticket.
#[derive(Debug)]
pub struct InFlight {
    next: AtomicU64,
    ttl: Duration,
    tickets: Mutex<HashMap<u64, (PodId, Instant)>>,
}

impl InFlight {
    pub fn new(ttl: Duration) -> Self {
        Self {
            next: AtomicU64::new(1),
            ttl,
            tickets: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, (PodId, Instant)>> {
        self.tickets.lock()
    }

    /// A decision was sent to `pod`: count it and return its ticket.
    pub fn start(&self, pod: &PodId, registry: &PodRegistry) -> u64 {
        let ticket = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(ticket, (pod.clone(), Instant::now()));
        registry.set_load(pod, |l| l.in_flight += 1);
        ticket
    }

    /// The request behind `ticket` finished; false if unknown (already expired or done).
    pub fn complete(&self, ticket: u64, registry: &PodRegistry) -> bool {
        let done = self.lock().remove(&ticket);
        match done {
            Some((pod, _)) => {
                registry.set_load(&pod, |l| l.in_flight = l.in_flight.saturating_sub(1));
                true
            }
            None => false,
        }
    }

    /// Release decisions older than the TTL; returns how many.
    pub fn expire(&self, registry: &PodRegistry) -> usize {
        let ttl = self.ttl;
        let mut expired = Vec::new();
        self.lock().retain(|_, (pod, at)| {
            let keep = at.elapsed() < ttl;
            if !keep {
                expired.push(pod.clone());
            }
            keep
        });
        for pod in &expired {
            registry.set_load(pod, |l| l.in_flight = l.in_flight.saturating_sub(1));
        }
        expired.len()
    }
}

/// The vLLM gauges that load is made of, from a Prometheus text page.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EngineGauges {
    pub waiting: f64,
    pub running: f64,
    pub kv_usage: f64,
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
            _ => {}
        }
    }
    g
}

/// Scrape every known pod's `/metrics` each `interval` until `shutdown` fires.
pub async fn scrape_loop(
    registry: Arc<PodRegistry>,
    in_flight: Arc<InFlight>,
    interval: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let client = match reqwest::Client::builder().timeout(interval).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("metrics scraper disabled: {e}");
            return;
        }
    };
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        in_flight.expire(&registry);
        let mut endpoints: Vec<Arc<str>> = registry.all().into_iter().map(|p| p.endpoint).collect();
        endpoints.dedup();
        for endpoint in endpoints {
            let url = format!("http://{endpoint}/metrics");
            let gauges = match client.get(&url).send().await {
                Ok(r) if r.status().is_success() => match r.text().await {
                    Ok(t) => parse_vllm_metrics(&t),
                    Err(_) => continue,
                },
                _ => continue,
            };
            for pod in registry
                .all()
                .into_iter()
                .filter(|p| p.endpoint == endpoint)
            {
                registry.set_load(&pod, |l| {
                    l.waiting = gauges.waiting;
                    l.running = gauges.running;
                    l.kv_usage = gauges.kv_usage;
                });
            }
        }
    }
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
            vllm:prefix_cache_hits_total{model_name=\"Qwen3-32B\"} 100.0\n";
        assert_eq!(
            parse_vllm_metrics(page),
            EngineGauges {
                waiting: 3.0,
                running: 5.0,
                kv_usage: 0.42
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
        let t = f.start(&pod, &reg);
        f.start(&pod, &reg);
        assert_eq!(reg.pods_for_model("m")[0].1.in_flight, 2);
        assert!(f.complete(t, &reg));
        assert!(!f.complete(t, &reg));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(f.expire(&reg), 1);
        assert_eq!(reg.pods_for_model("m")[0].1.in_flight, 0);
    }
}
