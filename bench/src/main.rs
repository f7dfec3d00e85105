//! `kvroute-bench`: the seed's shared-prefix benchmark (issues 5 and 12). Wires the parts:
//! workload, schedule and its hit-ratio bound, the fleet model (same schedule, and the seed's
//! full scale over seeds, profiles and output lengths), each policy live through the real
//! Envoy, the report and the plots. See docs/benchmarks.md.

mod config;
mod deploy;
mod error;
mod live;
mod loadgen;
mod plot;
mod policy;
mod report;
mod schedule;
mod scrape;
mod sse;
mod stats;
mod virtual_fleet;
mod workload;

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Parser;
use kvroute_blockhash::HashConfig;
use kvroute_engine_sim::fleet::{FleetConfig, Policy};

use crate::report::{Results, Sweep};
use crate::schedule::{Outputs, Scheduled, Step};

fn main() -> anyhow::Result<()> {
    kvroute_runtime::init_logging();
    let started = Instant::now();
    let args = config::Args::parse();
    if let Some(json) = &args.replot {
        let results: Results = serde_json::from_slice(&std::fs::read(json)?)?;
        let dir = json.parent().unwrap_or(std::path::Path::new("."));
        std::fs::write(dir.join("results.md"), results.markdown())?;
        let paths = plot::draw_all(&results, dir)?;
        tracing::info!(?paths, "redrawn");
        return Ok(());
    }
    let plan = args.plan(&kvroute_harness::paths::repo_root());
    tracing::info!(mode = plan.mode, out = %plan.out.display(), "kvroute-bench");

    let encoder = workload::load_encoder(&kvroute_harness::paths::tokenizers_dir().join("qwen3"))
        .context("loading the Qwen3 tokenizer (scripts/setup.sh fetches it)")?;
    let hash = HashConfig::default();
    let workload = Arc::new(workload::Workload::build(
        plan.workload.clone(),
        &encoder,
        &hash,
    )?);
    let outputs = Outputs {
        mean: plan.workload.output_mean,
        max_model_len: plan.workload.max_model_len,
    };
    let schedule = build_schedule(&workload, &plan.steps, outputs, plan.workload.seed);
    tracing::info!(
        prompts = workload.prompts.len(),
        requests = schedule.len(),
        "workload ready"
    );

    let fleet = FleetConfig {
        engines: plan.engines,
        kv_tokens: plan.kv_capacity_tokens,
        timing: plan.profile.timing(),
        seed: plan.workload.seed,
        ..FleetConfig::default()
    };
    let arrivals = virtual_fleet::arrivals(&workload, &schedule);
    let bound = virtual_fleet::bound(&arrivals, fleet.block_size);
    let model_same = Policy::ALL
        .iter()
        .map(|&p| virtual_fleet::run(&fleet, p, &arrivals, &schedule, &plan.steps, &bound))
        .collect();
    let sweeps = if plan.full_model {
        full_scale_model(&plan, &workload, &encoder, &hash)?
    } else {
        Vec::new()
    };

    let mut live = Vec::new();
    for &policy in &plan.policies {
        live.push(live::run_policy(
            &plan, policy, &workload, &schedule, &bound,
        )?);
    }

    let results = Results {
        mode: plan.mode.to_string(),
        workload: plan.workload.clone(),
        profile: plan.profile,
        steps: plan.steps.clone(),
        engines: plan.engines,
        kv_capacity_tokens: plan.kv_capacity_tokens,
        time_scale: plan.time_scale,
        envoy_concurrency: plan.envoy_concurrency,
        tokenize_in: plan.tokenize_in.clone(),
        filter_call_timeout_ms: plan.filter_call_timeout_ms,
        live,
        model_same,
        sweeps,
        total_wall_seconds: started.elapsed().as_secs_f64(),
    };
    std::fs::create_dir_all(&plan.out)?;
    std::fs::write(
        plan.out.join("results.json"),
        serde_json::to_vec_pretty(&results)?,
    )?;
    let md = results.markdown();
    std::fs::write(plan.out.join("results.md"), &md)?;
    println!("{md}");
    if plan.plots {
        match plot::draw_all(&results, &plan.out) {
            Ok(paths) => tracing::info!(?paths, "plots written"),
            Err(e) => tracing::warn!("no plots: {e}"),
        }
    }
    if let Some(min) = plan.require_hit_vs_bound {
        match results.live.iter().find(|p| p.slug == "precise") {
            Some(p) if p.figures.overall.hit_bound > 0.0 => {
                let o = &p.figures.overall;
                let r = o.hit_vs_bound();
                if r < min {
                    bail!(
                        "precise hit ratio {:.3} is {r:.3} of the bound {:.3}, below {min}",
                        o.hit_ratio,
                        o.hit_bound
                    );
                }
                tracing::info!(ratio = r, "precise hit ratio vs the bound: ok");
            }
            _ => bail!("--require-hit-vs-bound needs the precise policy and a non-zero bound"),
        }
    }
    Ok(())
}

/// The schedule of `steps` over `workload`'s prompts.
fn build_schedule(
    workload: &workload::Workload,
    steps: &[Step],
    outputs: Outputs,
    seed: u64,
) -> Vec<Scheduled> {
    let prompt_tokens: Vec<usize> = workload.prompts.iter().map(|p| p.prompt_tokens).collect();
    schedule::build(steps, &prompt_tokens, outputs, seed)
}

/// The seed's full scale in the fleet model alone (virtual time, seconds of CPU), for every
/// profile, output mean and seed asked for. Reuses the live run's prompts when they already
/// are the seed's sizes; seeds vary the schedule (arrivals, prompts drawn, output lengths).
fn full_scale_model(
    plan: &config::Plan,
    live_workload: &workload::Workload,
    encoder: &kvroute_blockhash::PromptEncoder,
    hash: &HashConfig,
) -> anyhow::Result<Vec<Sweep>> {
    let spec = workload::WorkloadSpec {
        groups: 150,
        users_per_group: 5,
        system_tokens: 6_000,
        question_tokens: 1_200,
        ..plan.workload.clone()
    };
    let same_prompts = live_workload.spec.groups == spec.groups
        && live_workload.spec.users_per_group == spec.users_per_group
        && live_workload.spec.system_tokens == spec.system_tokens
        && live_workload.spec.question_tokens == spec.question_tokens;
    let w = if same_prompts {
        workload::Workload {
            spec,
            prompts: live_workload.prompts.clone(),
        }
    } else {
        workload::Workload::build(spec, encoder, hash)?
    };
    let warmup = plan.steps.iter().find(|s| s.warmup).map(|s| s.seconds);
    let steps = config::with_warmup(
        &config::FULL_QPS,
        plan.model_step_seconds,
        warmup.unwrap_or(0.0),
    );
    let mut sweeps = Vec::new();
    for &profile in &plan.model_profiles {
        for &mean in &plan.model_output_means {
            for &seed in &plan.model_seeds {
                let t0 = Instant::now();
                let outputs = Outputs {
                    mean,
                    max_model_len: plan.workload.max_model_len,
                };
                let schedule = build_schedule(&w, &steps, outputs, seed);
                let arrivals = virtual_fleet::arrivals(&w, &schedule);
                let fleet = FleetConfig {
                    engines: plan.engines,
                    kv_tokens: plan.kv_capacity_tokens,
                    timing: profile.timing(),
                    seed,
                    ..FleetConfig::default()
                };
                let bound = virtual_fleet::bound(&arrivals, fleet.block_size);
                let runs = Policy::ALL
                    .iter()
                    .map(|&p| virtual_fleet::run(&fleet, p, &arrivals, &schedule, &steps, &bound))
                    .collect::<Vec<_>>();
                tracing::info!(
                    profile = profile.name(),
                    mean,
                    seed,
                    requests = schedule.len(),
                    seconds = t0.elapsed().as_secs_f64(),
                    "full-scale model"
                );
                sweeps.push(Sweep {
                    profile,
                    output_mean: mean,
                    seed,
                    steps: steps.clone(),
                    runs,
                });
            }
        }
    }
    Ok(sweeps)
}
