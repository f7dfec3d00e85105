//! From per-request records to the numbers the report prints: per QPS step, for the drain
//! after the last step, and over the whole run (warm-up left out): output tokens/s, P90 and
//! mean TTFT, inter-token latency, mean waiting queue, the prompt-token cache hit ratio and
//! the hit-ratio bound of the same requests, and how late the load generator sent. Live and
//! modelled runs go through the same code. Everything is in engine (virtual) seconds.

use crate::schedule::Step;

/// What one request did, in virtual seconds from the run's start.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RequestRecord {
    pub step: usize,
    /// When the schedule said to send it.
    pub scheduled: f64,
    /// When it was sent.
    pub arrival: f64,
    /// Arrival to the first non-empty content chunk.
    pub ttft: Option<f64>,
    /// When the last chunk arrived.
    pub end: Option<f64>,
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub output_tokens: u64,
    /// Prompt tokens the hit-ratio bound counts as cached for this request.
    pub bound_cached_tokens: u64,
    pub error: Option<String>,
}

/// The fleet's mean `vllm:num_requests_waiting` per engine at one instant.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct WaitSample {
    pub at: f64,
    pub mean_waiting: f64,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub qps: Option<f64>,
    pub requests: usize,
    pub completed: usize,
    pub errors: usize,
    pub output_tokens_per_s: f64,
    pub p90_ttft: f64,
    pub mean_ttft: f64,
    pub mean_waiting: f64,
    pub hit_ratio: f64,
    /// The schedule's hit-ratio upper bound over the same completed requests.
    #[serde(default)]
    pub hit_bound: f64,
    /// Mean and P90 over requests of (last token - first token) / (output tokens - 1).
    #[serde(default)]
    pub mean_itl: f64,
    #[serde(default)]
    pub p90_itl: f64,
    /// How late requests were sent against the schedule (P99 and worst, seconds).
    #[serde(default)]
    pub send_lag_p99: f64,
    #[serde(default)]
    pub send_lag_max: f64,
}

impl Summary {
    /// The hit ratio as a fraction of the bound (1 when nothing could hit).
    pub fn hit_vs_bound(&self) -> f64 {
        if self.hit_bound > 0.0 {
            self.hit_ratio / self.hit_bound
        } else {
            1.0
        }
    }
}

pub fn percentile(values: &[f64], q: f64) -> f64 {
    kvroute_engine_sim::fleet::percentile(values, q)
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

/// Mean TTFT of every request that got a first token, warm-up included (to set beside
/// the engines' own histogram, which cannot tell the warm-up apart).
pub fn mean_ttft(records: &[RequestRecord]) -> Option<f64> {
    let ttfts: Vec<f64> = records.iter().filter_map(|r| r.ttft).collect();
    (!ttfts.is_empty()).then(|| mean(&ttfts))
}

/// Inter-token latency of one request, if it streamed two tokens or more.
fn itl(r: &RequestRecord) -> Option<f64> {
    let (ttft, end) = (r.ttft?, r.end?);
    (r.output_tokens > 1).then(|| (end - r.arrival - ttft).max(0.0) / (r.output_tokens - 1) as f64)
}

fn summarize(records: &[&RequestRecord], waits: &[f64], throughput: f64) -> Summary {
    let ttfts: Vec<f64> = records.iter().filter_map(|r| r.ttft).collect();
    let itls: Vec<f64> = records.iter().filter_map(|r| itl(r)).collect();
    let lags: Vec<f64> = records
        .iter()
        .map(|r| (r.arrival - r.scheduled).max(0.0))
        .collect();
    let completed: Vec<&&RequestRecord> = records
        .iter()
        .filter(|r| r.error.is_none() && r.end.is_some())
        .collect();
    let prompt: u64 = completed.iter().map(|r| r.prompt_tokens).sum();
    let cached: u64 = completed.iter().map(|r| r.cached_tokens).sum();
    let bound: u64 = completed.iter().map(|r| r.bound_cached_tokens).sum();
    let ratio = |n: u64| {
        if prompt == 0 {
            0.0
        } else {
            n as f64 / prompt as f64
        }
    };
    Summary {
        qps: None,
        requests: records.len(),
        completed: completed.len(),
        errors: records.iter().filter(|r| r.error.is_some()).count(),
        output_tokens_per_s: throughput,
        p90_ttft: percentile(&ttfts, 0.9),
        mean_ttft: mean(&ttfts),
        mean_waiting: mean(waits),
        hit_ratio: ratio(cached),
        hit_bound: ratio(bound),
        mean_itl: mean(&itls),
        p90_itl: percentile(&itls, 0.9),
        send_lag_p99: percentile(&lags, 0.99),
        send_lag_max: lags.iter().copied().fold(0.0, f64::max),
    }
}

/// Output tokens generated inside `[from, to)`: each request's tokens are spread evenly
/// between its first token and its end (streams carry no per-token clock worth keeping).
fn tokens_within(records: &[RequestRecord], from: f64, to: f64) -> f64 {
    records
        .iter()
        .filter_map(|r| {
            let (ttft, end) = (r.ttft?, r.end?);
            let first = r.arrival + ttft;
            if r.output_tokens == 0 {
                return None;
            }
            if end <= first {
                return ((from..to).contains(&end)).then_some(r.output_tokens as f64);
            }
            let overlap = (end.min(to) - first.max(from)).max(0.0);
            Some(r.output_tokens as f64 * overlap / (end - first))
        })
        .sum()
}

/// A run's figures: per step, the drain, and the whole run.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Figures {
    pub steps: Vec<Summary>,
    /// From the end of the last step to the last response: the backlog draining (its
    /// throughput and queue over that window; no request arrives in it).
    pub drain: Summary,
    /// How long the drain lasted (engine seconds).
    pub drain_seconds: f64,
    /// Every step but warm-up (throughput: their output over first arrival to last end, as
    /// the seed's benchmark reports it).
    pub overall: Summary,
}

/// Per step (requests by the step they arrived in; throughput and queue by the step's
/// window), the drain after the last step, and the whole run without warm-up.
pub fn figures(steps: &[Step], records: &[RequestRecord], waits: &[WaitSample]) -> Figures {
    let starts = crate::schedule::step_starts(steps);
    let per_step = steps
        .iter()
        .enumerate()
        .map(|(i, step)| {
            let (from, to) = (starts[i], starts[i] + step.seconds);
            // The step's own throughput over its window, its own requests for the rest.
            let rs: Vec<&RequestRecord> = records.iter().filter(|r| r.step == i).collect();
            let ws: Vec<f64> = waits
                .iter()
                .filter(|w| (from..to).contains(&w.at))
                .map(|w| w.mean_waiting)
                .collect();
            let mut s = summarize(&rs, &ws, tokens_within(records, from, to) / step.seconds);
            s.qps = Some(step.qps);
            s
        })
        .collect();
    let steady: Vec<&RequestRecord> = records
        .iter()
        .filter(|r| steps.get(r.step).is_none_or(|s| !s.warmup))
        .collect();
    let warmup_end = steps
        .iter()
        .zip(&starts)
        .filter(|(s, _)| s.warmup)
        .map(|(s, start)| start + s.seconds)
        .fold(0.0, f64::max);
    let first = steady
        .iter()
        .map(|r| r.arrival)
        .fold(f64::INFINITY, f64::min);
    let last = records.iter().filter_map(|r| r.end).fold(0.0, f64::max);
    let output: u64 = steady
        .iter()
        .filter(|r| r.error.is_none())
        .map(|r| r.output_tokens)
        .sum();
    let throughput = if last > first {
        output as f64 / (last - first)
    } else {
        0.0
    };
    let ws: Vec<f64> = waits
        .iter()
        .filter(|w| w.at >= warmup_end)
        .map(|w| w.mean_waiting)
        .collect();
    let overall = summarize(&steady, &ws, throughput);
    let steps_end = starts
        .last()
        .zip(steps.last())
        .map_or(0.0, |(start, s)| start + s.seconds);
    let drain_waits: Vec<f64> = waits
        .iter()
        .filter(|w| w.at >= steps_end)
        .map(|w| w.mean_waiting)
        .collect();
    let drain_tokens = tokens_within(records, steps_end, f64::INFINITY);
    let drain = summarize(
        &[],
        &drain_waits,
        if last > steps_end {
            drain_tokens / (last - steps_end)
        } else {
            0.0
        },
    );
    Figures {
        steps: per_step,
        drain,
        drain_seconds: (last - steps_end).max(0.0),
        overall,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(step: usize, arrival: f64, ttft: f64, end: f64, out: u64, cached: u64) -> RequestRecord {
        RequestRecord {
            step,
            scheduled: arrival,
            arrival,
            ttft: Some(ttft),
            end: Some(end),
            prompt_tokens: 100,
            cached_tokens: cached,
            output_tokens: out,
            bound_cached_tokens: 100,
            error: None,
        }
    }

    #[test]
    fn steps_split_requests_by_arrival_and_tokens_by_time() {
        let steps = [
            Step {
                qps: 1.0,
                seconds: 10.0,
                warmup: false,
            },
            Step {
                qps: 2.0,
                seconds: 10.0,
                warmup: false,
            },
        ];
        // Generates 100 tokens over [5, 15): half in each step's window.
        let records = [
            rec(0, 4.0, 1.0, 15.0, 100, 50),
            rec(1, 12.0, 2.0, 20.0, 60, 100),
        ];
        let waits = [
            WaitSample {
                at: 1.0,
                mean_waiting: 2.0,
            },
            WaitSample {
                at: 11.0,
                mean_waiting: 4.0,
            },
        ];
        let f = figures(&steps, &records, &waits);
        let (steps_out, all) = (&f.steps, &f.overall);
        assert!((steps_out[0].output_tokens_per_s - 5.0).abs() < 1e-9);
        assert!((steps_out[1].output_tokens_per_s - 11.0).abs() < 1e-9);
        assert_eq!(steps_out[0].hit_ratio, 0.5);
        assert_eq!(steps_out[1].mean_waiting, 4.0);
        assert!((all.output_tokens_per_s - 160.0 / 16.0).abs() < 1e-9);
        assert_eq!(all.hit_ratio, 0.75);
        assert_eq!(all.mean_ttft, 1.5);
        assert_eq!(all.hit_vs_bound(), 0.75);
        // ITL: 100 tokens over [5, 15) is 10/99 s each; 60 over [14, 20) is 6/59.
        assert!((all.mean_itl - (10.0 / 99.0 + 6.0 / 59.0) / 2.0).abs() < 1e-9);
        // The drain: nothing after the last step ends at 20.
        assert_eq!(f.drain.output_tokens_per_s, 0.0);
    }

    #[test]
    fn warm_up_is_reported_apart_and_the_drain_after_the_steps() {
        let steps = [
            Step {
                qps: 1.0,
                seconds: 10.0,
                warmup: true,
            },
            Step {
                qps: 2.0,
                seconds: 10.0,
                warmup: false,
            },
        ];
        let mut late = rec(1, 12.0, 2.0, 30.0, 160, 0);
        late.scheduled = 11.5;
        let records = [rec(0, 1.0, 1.0, 4.0, 10, 0), late];
        let f = figures(&steps, &records, &[]);
        assert_eq!(f.steps[0].requests, 1);
        assert_eq!(f.overall.requests, 1, "warm-up left out of the whole run");
        assert_eq!(f.overall.hit_ratio, 0.0);
        assert!((f.overall.send_lag_max - 0.5).abs() < 1e-9);
        // 160 tokens over [14, 30): 100 of them in the drain [20, 30).
        assert!((f.drain.output_tokens_per_s - 10.0).abs() < 1e-9);
    }
}
