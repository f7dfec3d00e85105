//! When each request is sent, which prompt it carries and how long its answer is: Poisson
//! arrivals stepped through the QPS levels, each arrival a uniformly drawn (group, user), its
//! output length drawn from an exponential distribution of the configured mean and capped so
//! prompt + output fits `--max-model-len` (vLLM refuses the rest with a 400). The same
//! schedule drives the live run (scaled to wall time) and the virtual-time fleet model, so
//! both see exactly the same requests at the same (virtual) instants.

use kvroute_engine_sim::fleet::Rng;

/// One QPS level held for `seconds` of engine (virtual) time.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Step {
    pub qps: f64,
    pub seconds: f64,
    /// A warm-up step: reported on its own, left out of the whole-run figures.
    #[serde(default)]
    pub warmup: bool,
}

/// How output lengths are drawn.
#[derive(Debug, Clone, Copy)]
pub struct Outputs {
    /// Mean output tokens (exponential distribution, at least 1).
    pub mean: f64,
    /// vLLM's `--max-model-len`: prompt + output tokens never exceed it.
    pub max_model_len: usize,
}

#[derive(Debug, Clone, Copy)]
pub struct Scheduled {
    /// Virtual seconds from the run's start.
    pub at: f64,
    pub step: usize,
    /// Index into `Workload::prompts`.
    pub prompt: usize,
    /// Output tokens requested (`max_tokens`; the simulated engine generates them all).
    pub max_tokens: usize,
}

/// Step `i` starts at the sum of the previous steps' lengths.
pub fn step_starts(steps: &[Step]) -> Vec<f64> {
    steps
        .iter()
        .scan(0.0, |t, s| {
            let start = *t;
            *t += s.seconds;
            Some(start)
        })
        .collect()
}

/// The schedule of `steps` over prompts whose token counts are `prompt_tokens`.
pub fn build(
    steps: &[Step],
    prompt_tokens: &[usize],
    outputs: Outputs,
    seed: u64,
) -> Vec<Scheduled> {
    let mut rng = Rng::new(seed ^ 0x5EED_5C4E_D01E);
    // Its own stream, so output lengths do not shift the arrivals and prompts of a seed.
    let mut out_rng = Rng::new(seed ^ 0x0DD5_EED5_0F0F);
    let prompts = prompt_tokens.len();
    let mut out = Vec::new();
    for (i, (step, start)) in steps.iter().zip(step_starts(steps)).enumerate() {
        let mut t = start;
        loop {
            t += rng.exp(step.qps);
            if t >= start + step.seconds {
                break;
            }
            let prompt = rng.below(prompts);
            let room = outputs
                .max_model_len
                .saturating_sub(prompt_tokens[prompt])
                .max(1);
            let drawn = (out_rng.exp(1.0 / outputs.mean.max(1.0))).ceil() as usize;
            out.push(Scheduled {
                at: t,
                step: i,
                prompt,
                max_tokens: drawn.clamp(1, room),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_follow_the_steps_and_the_seed_fixes_everything() {
        let steps = [
            Step {
                qps: 5.0,
                seconds: 200.0,
                warmup: false,
            },
            Step {
                qps: 20.0,
                seconds: 100.0,
                warmup: false,
            },
        ];
        let outputs = Outputs {
            mean: 200.0,
            max_model_len: 8192,
        };
        let prompts = vec![7_230; 750];
        let a = build(&steps, &prompts, outputs, 1);
        let b = build(&steps, &prompts, outputs, 1);
        assert_eq!(a.len(), b.len());
        assert!(a
            .iter()
            .zip(&b)
            .all(|(x, y)| x.at == y.at && x.prompt == y.prompt && x.max_tokens == y.max_tokens));
        // Output lengths: mean near 200, never past --max-model-len.
        let mean = a.iter().map(|s| s.max_tokens as f64).sum::<f64>() / a.len() as f64;
        assert!((mean / 200.0 - 1.0).abs() < 0.1, "{mean}");
        assert!(a
            .iter()
            .all(|s| s.max_tokens >= 1 && 7_230 + s.max_tokens <= 8192));
        let n0 = a.iter().filter(|s| s.step == 0).count() as f64;
        let n1 = a.iter().filter(|s| s.step == 1).count() as f64;
        assert!((n0 / 1000.0 - 1.0).abs() < 0.15, "{n0}");
        assert!((n1 / 2000.0 - 1.0).abs() < 0.15, "{n1}");
        assert!(a.windows(2).all(|w| w[0].at <= w[1].at));
    }
}
