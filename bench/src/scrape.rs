//! The waiting queue as the seed's table reports it: every engine's
//! `vllm:num_requests_waiting` scraped at a fixed virtual period for the whole run, averaged
//! over the engines at each instant (later averaged over instants per step).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::watch;

use crate::loadgen::Clock;
use crate::stats::WaitSample;

/// Sum of every sample of `metric` (all label sets) in Prometheus text, None if absent.
pub fn gauge(text: &str, metric: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(metric) else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        let value = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if let Some(v) = value {
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}

/// Scrapes `engines` every `period` (wall) until `stop` turns true.
pub async fn sample_waiting(
    client: reqwest::Client,
    engines: Vec<SocketAddr>,
    period: Duration,
    clock: Clock,
    mut stop: watch::Receiver<bool>,
) -> Vec<WaitSample> {
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        let at = clock.now();
        let mut total = 0.0;
        let mut seen = 0usize;
        for e in &engines {
            let url = format!("http://{e}/metrics");
            let Ok(r) = client.get(&url).send().await else {
                continue;
            };
            let Ok(text) = r.text().await else { continue };
            if let Some(w) = gauge(&text, "vllm:num_requests_waiting") {
                total += w;
                seen += 1;
            }
        }
        if seen > 0 {
            samples.push(WaitSample {
                at,
                mean_waiting: total / seen as f64,
            });
        }
    }
    samples
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_label_sets_and_ignores_prefixed_names() {
        let text = "# TYPE vllm:num_requests_waiting gauge\n\
                    vllm:num_requests_waiting{engine=\"0\",model_name=\"Qwen3-32B\"} 3\n\
                    vllm:num_requests_waiting_total 9\n\
                    vllm:num_requests_running{engine=\"0\"} 5\n";
        assert_eq!(gauge(text, "vllm:num_requests_waiting"), Some(3.0));
        assert_eq!(gauge(text, "vllm:num_requests_swapped"), None);
    }
}
