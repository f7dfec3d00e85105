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

/// A Prometheus histogram summed over every label set (and over pages, with `add`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// (upper bound, cumulative count), ascending; `+Inf` last.
    pub buckets: Vec<(f64, f64)>,
    pub sum: f64,
    pub count: f64,
}

impl Histogram {
    /// `metric`'s `_bucket`, `_sum` and `_count` series in Prometheus text, None if absent.
    pub fn parse(text: &str, metric: &str) -> Option<Histogram> {
        let mut h = Histogram::default();
        let mut seen = false;
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(metric) else {
                continue;
            };
            let value = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
            let Some(value) = value else { continue };
            if let Some(labels) = rest.strip_prefix("_bucket{") {
                let Some(le) = labels
                    .split("le=\"")
                    .nth(1)
                    .and_then(|t| t.split('"').next())
                    .and_then(|t| t.parse::<f64>().ok())
                else {
                    continue;
                };
                h.add_bucket(le, value);
            } else if rest.starts_with("_sum") {
                h.sum += value;
            } else if rest.starts_with("_count") {
                h.count += value;
            } else {
                continue;
            }
            seen = true;
        }
        seen.then_some(h)
    }

    fn add_bucket(&mut self, le: f64, cumulative: f64) {
        match self.buckets.iter_mut().find(|(b, _)| *b == le) {
            Some((_, c)) => *c += cumulative,
            None => {
                self.buckets.push((le, cumulative));
                self.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
        }
    }

    /// Adds another page's histogram of the same metric (same buckets).
    pub fn add(&mut self, other: &Histogram) {
        for &(le, c) in &other.buckets {
            self.add_bucket(le, c);
        }
        self.sum += other.sum;
        self.count += other.count;
    }

    pub fn mean(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count)
    }

    /// The `q` quantile, interpolated linearly inside its bucket as Prometheus's
    /// `histogram_quantile` does (so it is only as fine as the buckets).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.buckets.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let (mut lower, mut below) = (0.0, 0.0);
        for &(le, cumulative) in &self.buckets {
            if cumulative >= rank {
                if le.is_infinite() {
                    return Some(lower);
                }
                let inside = cumulative - below;
                let at = if inside > 0.0 {
                    (rank - below) / inside
                } else {
                    1.0
                };
                return Some(lower + (le - lower) * at);
            }
            (lower, below) = (le, cumulative);
        }
        Some(lower)
    }
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

    #[test]
    fn reads_a_real_vllm_ttft_histogram_and_interpolates_quantiles() {
        let page = kvroute_testdata::vllm_metrics_page();
        let h = Histogram::parse(&page, "vllm:time_to_first_token_seconds").expect("histogram");
        // The captured engine had answered 3 requests: 1 by 40 ms, 2 by 60 ms, 3 by 250 ms.
        assert_eq!(h.count, 3.0);
        assert_eq!(h.buckets.len(), 23);
        assert!((h.mean().unwrap() - 0.1703033447265625 / 3.0).abs() < 1e-12);
        // The median (rank 1.5) lies halfway through the (0.04, 0.06] bucket.
        assert!((h.quantile(0.5).unwrap() - 0.05).abs() < 1e-9);
        assert!((h.quantile(1.0).unwrap() - 0.25).abs() < 1e-9);
        let mut twice = h.clone();
        twice.add(&h);
        assert_eq!(twice.count, 6.0);
        assert_eq!(twice.buckets.len(), 23);
        assert!((twice.quantile(0.5).unwrap() - 0.05).abs() < 1e-9);
        assert_eq!(Histogram::parse(&page, "vllm:no_such_histogram"), None);
    }
}
