//! When each request is sent and which prompt it carries: Poisson arrivals stepped through
//! the QPS levels, each arrival a uniformly drawn (group, user). The same schedule drives the
//! live run (scaled to wall time) and the virtual-time fleet model, so both see exactly the
//! same requests at the same (virtual) instants.

use kvroute_engine_sim::fleet::Rng;

/// One QPS level held for `seconds` of engine (virtual) time.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Step {
    pub qps: f64,
    pub seconds: f64,
}

#[derive(Debug, Clone, Copy)]
pub struct Scheduled {
    /// Virtual seconds from the run's start.
    pub at: f64,
    pub step: usize,
    /// Index into `Workload::prompts`.
    pub prompt: usize,
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

pub fn build(steps: &[Step], prompts: usize, seed: u64) -> Vec<Scheduled> {
    let mut rng = Rng::new(seed ^ 0x5EED_5C4E_D01E);
    let mut out = Vec::new();
    for (i, (step, start)) in steps.iter().zip(step_starts(steps)).enumerate() {
        let mut t = start;
        loop {
            t += rng.exp(step.qps);
            if t >= start + step.seconds {
                break;
            }
            out.push(Scheduled {
                at: t,
                step: i,
                prompt: rng.below(prompts),
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
            },
            Step {
                qps: 20.0,
                seconds: 100.0,
            },
        ];
        let a = build(&steps, 750, 1);
        let b = build(&steps, 750, 1);
        assert_eq!(a.len(), b.len());
        assert!(a
            .iter()
            .zip(&b)
            .all(|(x, y)| x.at == y.at && x.prompt == y.prompt));
        let n0 = a.iter().filter(|s| s.step == 0).count() as f64;
        let n1 = a.iter().filter(|s| s.step == 1).count() as f64;
        assert!((n0 / 1000.0 - 1.0).abs() < 0.15, "{n0}");
        assert!((n1 / 2000.0 - 1.0).abs() < 0.15, "{n1}");
        assert!(a.windows(2).all(|w| w[0].at <= w[1].at));
    }
}
