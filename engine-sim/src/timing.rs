//! The continuous-batching timing model: one engine step costs
//! `a + b * prefill_tokens + c * running_sequences`, and a request's first token is seen
//! `first_token_overhead` after the step that finished its prefill (API server, sampling,
//! detokenizing and streaming in a real vLLM). Calibrated so a 10,000-token prompt alone has a
//! TTFT of ~4.3 s cold and ~0.6 s with its prefix cached: the seed's single-instance figure.

/// Step-time constants, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimingModel {
    /// Fixed cost of one step (kernel launches, scheduling).
    pub a: f64,
    /// Cost per prompt token computed in the step.
    pub b: f64,
    /// Cost per running sequence (each decodes one token per step).
    pub c: f64,
    /// Latency added to every first token, outside the engine loop.
    pub first_token_overhead: f64,
    /// Tokens (prefill + one per decoding sequence) one step may compute: vLLM's
    /// `max_num_batched_tokens`, which is also its prefill chunk size.
    pub token_budget: usize,
    /// vLLM's `max_num_seqs`.
    pub max_running: usize,
}

impl Default for TimingModel {
    /// Solved from the two seed figures with a = 15 ms and c = 0.25 ms fixed (a Qwen3-32B decode
    /// step of a few tens of ms): cached = o + a + 16b + c = 0.6 s (9,984 of 10,000 tokens hit,
    /// 16 computed) and cold = o + 5a + 10,000b + 5c = 4.3 s (five 2,048-token chunks).
    fn default() -> Self {
        Self {
            a: 0.015,
            b: 0.000_364,
            c: 0.000_25,
            first_token_overhead: 0.58,
            token_budget: 2048,
            max_running: 256,
        }
    }
}

impl TimingModel {
    pub fn step_time(&self, prefill_tokens: usize, running: usize) -> f64 {
        self.a + self.b * prefill_tokens as f64 + self.c * running as f64
    }

    /// TTFT of one prompt on an otherwise idle engine, `computed` of its tokens not cached.
    pub fn solo_ttft(&self, computed: usize) -> f64 {
        let budget = self.token_budget.max(1);
        let computed = computed.max(1);
        let steps = computed.div_ceil(budget);
        self.first_token_overhead + steps as f64 * (self.a + self.c) + self.b * computed as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_reproduce_the_seed_single_instance_ttft() {
        let t = TimingModel::default();
        let cold = t.solo_ttft(10_000);
        let cached = t.solo_ttft(10_000 - (10_000 / 64) * 64);
        assert!((cold - 4.3).abs() < 0.05, "cold {cold}");
        assert!((cached - 0.6).abs() < 0.02, "cached {cached}");
    }

    #[test]
    fn step_time_grows_with_prefill_and_batch() {
        let t = TimingModel::default();
        assert!(t.step_time(2048, 1) > t.step_time(0, 1));
        assert!(t.step_time(0, 100) > t.step_time(0, 1));
    }
}
