//! `kvroute-bench`: the seed's shared-prefix benchmark (issue 5). Wires the parts: workload,
//! schedule, the fleet model (oracle bound, cross-check), each policy live through the real
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

use crate::report::{Results, VirtualRow};

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
    let plan = args.plan(&kvroute_tests::paths::repo_root());
    tracing::info!(mode = plan.mode, out = %plan.out.display(), "kvroute-bench");

    let encoder = workload::load_encoder(&kvroute_tests::paths::tokenizers_dir().join("qwen3"))
        .context("loading the Qwen3 tokenizer (scripts/setup.sh fetches it)")?;
    let hash = HashConfig::default();
    let workload = Arc::new(workload::Workload::build(
        plan.workload.clone(),
        &encoder,
        &hash,
    )?);
    let schedule = schedule::build(&plan.steps, workload.prompts.len(), plan.workload.seed);
    tracing::info!(
        prompts = workload.prompts.len(),
        requests = schedule.len(),
        "workload ready"
    );

    let fleet = FleetConfig {
        engines: plan.engines,
        kv_tokens: plan.kv_capacity_tokens,
        seed: plan.workload.seed,
        ..FleetConfig::default()
    };
    let arrivals = virtual_fleet::arrivals(&workload, &schedule);
    let virtual_same: Vec<VirtualRow> = Policy::ALL
        .iter()
        .map(|&p| VirtualRow {
            policy: p.name().to_string(),
            summary: virtual_fleet::run(&fleet, p, &arrivals),
        })
        .collect();
    let virtual_full = if plan.full_model {
        Some(full_scale_model(&plan, &workload, &encoder, &hash)?)
    } else {
        None
    };

    let mut live = Vec::new();
    for &policy in &plan.policies {
        live.push(live::run_policy(&plan, policy, &workload, &schedule)?);
    }

    let results = Results {
        mode: plan.mode.to_string(),
        workload: plan.workload.clone(),
        steps: plan.steps.clone(),
        engines: plan.engines,
        kv_capacity_tokens: plan.kv_capacity_tokens,
        time_scale: plan.time_scale,
        envoy_concurrency: plan.envoy_concurrency,
        tokenize_in: plan.tokenize_in.clone(),
        live,
        virtual_same,
        virtual_full,
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
    if let Some(min) = plan.require_hit_vs_oracle {
        let precise = results.live.iter().find(|p| p.slug == "precise");
        let oracle = results.oracle_same_schedule();
        match (precise, oracle) {
            (Some(p), Some(o)) if o.hit_ratio > 0.0 => {
                let r = p.overall.hit_ratio / o.hit_ratio;
                if r < min {
                    bail!(
                        "precise hit ratio {:.3} is {r:.3} of the oracle's {:.3}, below {min}",
                        p.overall.hit_ratio,
                        o.hit_ratio
                    );
                }
                tracing::info!(ratio = r, "precise hit ratio vs oracle: ok");
            }
            _ => bail!("--require-hit-vs-oracle needs the precise policy and a non-zero oracle"),
        }
    }
    Ok(())
}

/// The seed's full scale in the fleet model alone (virtual time, seconds of CPU). Reuses the
/// live run's prompts when they already are the seed's sizes.
fn full_scale_model(
    plan: &config::Plan,
    live_workload: &workload::Workload,
    encoder: &kvroute_blockhash::PromptEncoder,
    hash: &HashConfig,
) -> anyhow::Result<(Vec<schedule::Step>, Vec<VirtualRow>)> {
    let spec = workload::WorkloadSpec {
        groups: 150,
        users_per_group: 5,
        system_tokens: 6_000,
        question_tokens: 1_200,
        max_tokens: 1_000,
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
    let steps: Vec<schedule::Step> = config::FULL_QPS
        .iter()
        .map(|&qps| schedule::Step { qps, seconds: 60.0 })
        .collect();
    let schedule = schedule::build(&steps, w.prompts.len(), w.spec.seed);
    let arrivals = virtual_fleet::arrivals(&w, &schedule);
    let fleet = FleetConfig {
        seed: w.spec.seed,
        ..FleetConfig::default()
    };
    let rows = Policy::ALL
        .iter()
        .map(|&p| VirtualRow {
            policy: p.name().to_string(),
            summary: virtual_fleet::run(&fleet, p, &arrivals),
        })
        .collect();
    Ok((steps, rows))
}
