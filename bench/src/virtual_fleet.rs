//! The virtual-time side: the same requests (same prompts, same block hashes, same virtual
//! arrival instants) replayed through engine-sim's fleet model under every policy, including
//! the offline oracle (each request to the engine that really holds its longest prefix,
//! load ignored) that bounds the hit ratio any router can reach. Seconds, not minutes: it
//! also runs the seed's full-scale workload as a cross-check of the live, scaled run.

use kvroute_engine_sim::fleet::{self, Arrival, FleetConfig, Policy};

use crate::schedule::Scheduled;
use crate::stats::Summary;
use crate::workload::Workload;

pub fn arrivals(workload: &Workload, schedule: &[Scheduled]) -> Vec<Arrival> {
    schedule
        .iter()
        .map(|s| {
            let p = &workload.prompts[s.prompt];
            Arrival {
                at: s.at,
                hashes: p.block_hashes.clone(),
                prompt_tokens: p.prompt_tokens,
                max_tokens: workload.spec.max_tokens,
            }
        })
        .collect()
}

/// One policy's run of the fleet model, in the report's terms.
pub fn run(config: &FleetConfig, policy: Policy, arrivals: &[Arrival]) -> Summary {
    let s = fleet::run(config, policy, arrivals);
    Summary {
        qps: None,
        requests: arrivals.len(),
        completed: s.requests,
        errors: 0,
        output_tokens_per_s: s.throughput(),
        p90_ttft: s.p90_ttft(),
        mean_ttft: s.mean_ttft(),
        mean_waiting: s.mean_waiting,
        hit_ratio: s.hit_ratio(),
    }
}
