//! The virtual-time side: the same requests (same prompts, same block hashes, same output
//! lengths, same virtual arrival instants) replayed through engine-sim's fleet model under
//! every policy, including the longest-holder heuristic, and the schedule's hit-ratio upper
//! bound. Seconds, not minutes: it also runs the seed's full scale for several seeds, engine
//! profiles and output lengths.

use kvroute_engine_sim::fleet::{self, Arrival, FleetConfig};

use crate::policy::Policy;
use crate::report::PolicyRun;
use crate::schedule::{Scheduled, Step};
use crate::stats::{self, RequestRecord, WaitSample};
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
                max_tokens: s.max_tokens,
            }
        })
        .collect()
}

/// Per scheduled request, the cached tokens the hit-ratio bound allows.
pub fn bound(arrivals: &[Arrival], block_size: usize) -> Vec<u64> {
    fleet::hit_bound(arrivals, block_size)
        .into_iter()
        .map(|(_, cached)| cached)
        .collect()
}

/// One policy's run of the fleet model, in the report's terms.
pub fn run(
    config: &FleetConfig,
    policy: Policy,
    arrivals: &[Arrival],
    schedule: &[Scheduled],
    steps: &[Step],
    bound: &[u64],
) -> PolicyRun {
    let started = std::time::Instant::now();
    let s = fleet::run(config, policy, arrivals);
    // A large model takes minutes a policy: say how far it got.
    tracing::info!(
        policy = policy.name(),
        engines = config.engines,
        requests = arrivals.len(),
        seconds = format!("{:.1}", started.elapsed().as_secs_f64()),
        "fleet model policy done"
    );
    let records: Vec<RequestRecord> = s
        .outcomes
        .iter()
        .zip(schedule)
        .zip(bound)
        .map(|((o, sched), &bound_cached_tokens)| RequestRecord {
            step: sched.step,
            scheduled: sched.at,
            arrival: sched.at,
            ttft: o.ttft,
            end: o.end,
            prompt_tokens: o.prompt_tokens,
            cached_tokens: o.cached_tokens,
            output_tokens: o.output_tokens,
            bound_cached_tokens,
            error: None,
        })
        .collect();
    let waits: Vec<WaitSample> = s
        .waiting_samples
        .iter()
        .map(|&(at, mean_waiting)| WaitSample { at, mean_waiting })
        .collect();
    PolicyRun {
        policy: policy.name().to_string(),
        slug: policy.slug().to_string(),
        figures: stats::figures(steps, &records, &waits),
        wall_seconds: 0.0,
        routing: Vec::new(),
        lag: None,
    }
}
