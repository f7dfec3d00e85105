//! The continuous-batching timing model: one engine step costs
//! `a + b * prefill_tokens + c * running_sequences`, and a request's first token is seen
//! `first_token_overhead` after the step that finished its prefill (API server, sampling,
//! detokenizing and streaming in a real vLLM). Two named profiles: the seed's pods derived
//! from first principles (Qwen3-32B on 2 x H100, TP=2; docs/engine-sim.md shows the
//! arithmetic), the default; and the earlier single-instance calibration (4.3 s cold /
//! 0.6 s cached for 10,000 tokens), kept under its own name for comparison.

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

/// The engine profiles a fleet can run.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// Qwen3-32B, bf16, on 2 x H100 SXM with tensor parallelism 2: the seed's pods.
    #[default]
    Qwen3_32bTp2H100,
    /// The first calibration: the seed write-up's single-instance anecdote (10,000 tokens:
    /// 4.3 s cold, 0.6 s cached), 2,048-token steps.
    SeedSingleInstance,
}

impl Profile {
    pub fn timing(self) -> TimingModel {
        match self {
            Profile::Qwen3_32bTp2H100 => TimingModel::qwen3_32b_tp2_h100(),
            Profile::SeedSingleInstance => TimingModel::seed_single_instance(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Profile::Qwen3_32bTp2H100 => "qwen3-32b-tp2-h100",
            Profile::SeedSingleInstance => "seed-single-instance",
        }
    }
}

impl Default for TimingModel {
    fn default() -> Self {
        Profile::default().timing()
    }
}

/// Qwen3-32B's prefill compute per token: 2 FLOPs per non-embedding parameter (31.2 B)
/// plus causal attention at a ~5,000-token mean context (4 x 64 layers x 8,192 x 5,000).
pub const QWEN3_32B_FLOPS_PER_TOKEN: f64 = 2.0 * 31.2e9 + 4.0 * 64.0 * 8192.0 * 5000.0;
/// Two H100 SXM: 989 dense bf16 TFLOPS each.
pub const TP2_H100_PEAK_FLOPS: f64 = 2.0 * 989e12;
/// Achievable share of peak in large chunked-prefill steps with a TP=2 all-reduce per
/// layer (vLLM on Hopper measures 40-55 %).
pub const PREFILL_UTILIZATION: f64 = 0.45;

impl TimingModel {
    /// The seed's pods from first principles (docs/engine-sim.md): prefill at
    /// 0.45 x 1,979 TFLOPS / ~72 GFLOP per token = ~12,400 tokens/s; a decode step reads the
    /// 65.6 GB of bf16 weights (32.8 GB per GPU at ~2.5 TB/s achieved: ~13 ms, + ~1 ms of
    /// all-reduce and launch) and each sequence's KV (~7,300 tokens x 256 KiB, half per GPU:
    /// ~0.35 ms); vLLM's API-server defaults on 80 GB GPUs: 8,192 batched tokens per step,
    /// 1,024 sequences (KV capacity binds long before).
    pub fn qwen3_32b_tp2_h100() -> Self {
        Self {
            a: 0.014,
            b: 1.0 / (PREFILL_UTILIZATION * TP2_H100_PEAK_FLOPS / QWEN3_32B_FLOPS_PER_TOKEN),
            c: 0.000_35,
            first_token_overhead: 0.01,
            token_budget: 8192,
            max_running: 1024,
        }
    }

    /// Solved from the two seed figures with a = 15 ms and c = 0.25 ms fixed (a Qwen3-32B
    /// decode step of a few tens of ms): cached = o + a + 16b + c = 0.6 s (9,984 of 10,000
    /// tokens hit, 16 computed) and cold = o + 5a + 10,000b + 5c = 4.3 s (five 2,048-token
    /// chunks).
    pub fn seed_single_instance() -> Self {
        Self {
            a: 0.015,
            b: 0.000_364,
            c: 0.000_25,
            first_token_overhead: 0.58,
            token_budget: 2048,
            max_running: 256,
        }
    }

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
    fn the_old_profile_reproduces_the_seed_single_instance_ttft() {
        let t = TimingModel::seed_single_instance();
        let cold = t.solo_ttft(10_000);
        let cached = t.solo_ttft(10_000 - (10_000 / 64) * 64);
        assert!((cold - 4.3).abs() < 0.05, "cold {cold}");
        assert!((cached - 0.6).abs() < 0.02, "cached {cached}");
    }

    #[test]
    fn the_tp2_profile_follows_from_its_hardware() {
        let t = TimingModel::qwen3_32b_tp2_h100();
        let prefill_rate = 1.0 / t.b;
        assert!(
            (11_000.0..14_000.0).contains(&prefill_rate),
            "{prefill_rate}"
        );
        // The seed's prompt: 7,230 tokens cold in one 8,192-token step, well under a
        // second; with its 6,000-token system prompt cached, ~0.1 s.
        let cold = t.solo_ttft(7_230);
        let warm = t.solo_ttft(1_230);
        assert!((0.5..0.7).contains(&cold), "cold {cold}");
        assert!((0.08..0.15).contains(&warm), "warm {warm}");
        // A decode step of 40 long sequences: ~28 ms.
        assert!((t.step_time(40, 40) - 0.028).abs() < 0.005);
    }

    #[test]
    fn step_time_grows_with_prefill_and_batch() {
        let t = TimingModel::default();
        assert!(t.step_time(2048, 1) > t.step_time(0, 1));
        assert!(t.step_time(0, 100) > t.step_time(0, 1));
    }
}
