//! From per-request records to the numbers the report prints: per QPS step and over the
//! whole run, output tokens/s, P90 and mean TTFT, mean waiting queue and the prompt-token
//! cache hit ratio. Everything is in engine (virtual) seconds, whatever the time scale.

use crate::schedule::Step;

/// What one request did, in virtual seconds from the run's start.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RequestRecord {
    pub step: usize,
    pub arrival: f64,
    /// Arrival to the first non-empty content chunk.
    pub ttft: Option<f64>,
    /// When the last chunk arrived.
    pub end: Option<f64>,
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub output_tokens: u64,
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

fn summarize(records: &[&RequestRecord], waits: &[f64], throughput: f64) -> Summary {
    let ttfts: Vec<f64> = records.iter().filter_map(|r| r.ttft).collect();
    let completed: Vec<&&RequestRecord> = records
        .iter()
        .filter(|r| r.error.is_none() && r.end.is_some())
        .collect();
    let prompt: u64 = completed.iter().map(|r| r.prompt_tokens).sum();
    let cached: u64 = completed.iter().map(|r| r.cached_tokens).sum();
    Summary {
        qps: None,
        requests: records.len(),
        completed: completed.len(),
        errors: records.iter().filter(|r| r.error.is_some()).count(),
        output_tokens_per_s: throughput,
        p90_ttft: percentile(&ttfts, 0.9),
        mean_ttft: mean(&ttfts),
        mean_waiting: mean(waits),
        hit_ratio: if prompt == 0 {
            0.0
        } else {
            cached as f64 / prompt as f64
        },
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

/// Per step (requests by the step they arrived in; throughput and queue by the step's
/// window) and over the whole run (throughput: all output over first arrival to last end,
/// as the seed's benchmark reports it).
pub fn per_step_and_overall(
    steps: &[Step],
    records: &[RequestRecord],
    waits: &[WaitSample],
) -> (Vec<Summary>, Summary) {
    let starts = crate::schedule::step_starts(steps);
    let per_step = steps
        .iter()
        .enumerate()
        .map(|(i, step)| {
            let (from, to) = (starts[i], starts[i] + step.seconds);
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
    let first = records
        .iter()
        .map(|r| r.arrival)
        .fold(f64::INFINITY, f64::min);
    let last = records.iter().filter_map(|r| r.end).fold(0.0, f64::max);
    let output: u64 = records
        .iter()
        .filter(|r| r.error.is_none())
        .map(|r| r.output_tokens)
        .sum();
    let throughput = if last > first {
        output as f64 / (last - first)
    } else {
        0.0
    };
    let all: Vec<&RequestRecord> = records.iter().collect();
    let ws: Vec<f64> = waits.iter().map(|w| w.mean_waiting).collect();
    (per_step, summarize(&all, &ws, throughput))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(step: usize, arrival: f64, ttft: f64, end: f64, out: u64, cached: u64) -> RequestRecord {
        RequestRecord {
            step,
            arrival,
            ttft: Some(ttft),
            end: Some(end),
            prompt_tokens: 100,
            cached_tokens: cached,
            output_tokens: out,
            error: None,
        }
    }

    #[test]
    fn steps_split_requests_by_arrival_and_tokens_by_time() {
        let steps = [
            Step {
                qps: 1.0,
                seconds: 10.0,
            },
            Step {
                qps: 2.0,
                seconds: 10.0,
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
        let (steps_out, all) = per_step_and_overall(&steps, &records, &waits);
        assert!((steps_out[0].output_tokens_per_s - 5.0).abs() < 1e-9);
        assert!((steps_out[1].output_tokens_per_s - 11.0).abs() < 1e-9);
        assert_eq!(steps_out[0].hit_ratio, 0.5);
        assert_eq!(steps_out[1].mean_waiting, 4.0);
        assert!((all.output_tokens_per_s - 160.0 / 16.0).abs() < 1e-9);
        assert_eq!(all.hit_ratio, 0.75);
        assert_eq!(all.mean_ttft, 1.5);
    }
}
