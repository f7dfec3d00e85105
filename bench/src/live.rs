//! One policy, live: a fresh deployment (simulated engines with empty caches, Envoy, and the
//! filter plus `kvroute serve` for kvroute's modes), the schedule sent through Envoy at the
//! engines' time scale while their waiting queues are sampled, then torn down. Fresh per
//! policy so no policy inherits another's warm caches.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::config::Plan;
use crate::deploy;
use crate::loadgen::{self, Clock};
use crate::policy::{Deployment, Policy};
use crate::report::PolicyRun;
use crate::schedule::Scheduled;
use crate::scrape;
use crate::stats;
use crate::workload::Workload;

pub fn run_policy(
    plan: &Plan,
    policy: Policy,
    workload: &Arc<Workload>,
    schedule: &[Scheduled],
    bound: &[u64],
) -> anyhow::Result<PolicyRun> {
    let started = Instant::now();
    let deployment =
        deploy::start(plan, policy).with_context(|| format!("deploying {policy:?}"))?;
    let target = deployment.target();
    tracing::info!(
        policy = policy.name(),
        url = %target.url,
        deploy_s = started.elapsed().as_secs_f64(),
        "deployed; sending the schedule"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let load_started = Instant::now();
    let (records, waits) = runtime.block_on(async {
        let client = loadgen::client()?;
        let clock = Clock {
            start: Instant::now(),
            time_scale: plan.time_scale,
        };
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        // Half a second of engine time between samples, never faster than 20 per second.
        let period = Duration::from_secs_f64((0.5 / plan.time_scale).max(0.05));
        let sampler = tokio::spawn(scrape::sample_waiting(
            client.clone(),
            target.engines.clone(),
            period,
            clock,
            stop_rx,
        ));
        let records = loadgen::run(
            client,
            target.url.clone(),
            workload.clone(),
            schedule,
            clock,
        )
        .await;
        let _ = stop_tx.send(true);
        let waits = sampler.await.unwrap_or_default();
        anyhow::Ok((records, waits))
    })?;
    let routing = deployment.routing_counters(policy);
    let health = deployment.health(
        &routing,
        load_started.elapsed().as_secs_f64(),
        stats::mean_ttft(&records),
    );
    for (name, value) in &routing {
        tracing::info!(policy = policy.name(), counter = %name, value, "routing");
    }
    drop(deployment);
    let errors: Vec<&String> = records.iter().filter_map(|r| r.error.as_ref()).collect();
    if let Some(first) = errors.first() {
        tracing::warn!(policy = policy.name(), errors = errors.len(), first = %first, "requests failed");
    }
    let records: Vec<_> = records
        .into_iter()
        .zip(bound)
        .map(|(mut r, &b)| {
            r.bound_cached_tokens = b;
            r
        })
        .collect();
    let figures = stats::figures(&plan.steps, &records, &waits);
    tracing::info!(
        policy = policy.name(),
        throughput = figures.overall.output_tokens_per_s,
        p90_ttft = figures.overall.p90_ttft,
        hit_ratio = figures.overall.hit_ratio,
        hit_bound = figures.overall.hit_bound,
        engine_dilation = health.engine_dilation,
        wall_s = started.elapsed().as_secs_f64(),
        "done"
    );
    let variant = match crate::policy::deployment(policy) {
        Some(Deployment::Kvroute(_)) if !plan.indexer_args.is_empty() => {
            format!("{} ({})", policy.name(), plan.indexer_args.join(" "))
        }
        _ => policy.name().to_string(),
    };
    Ok(PolicyRun {
        policy: variant,
        slug: policy.slug().to_string(),
        figures,
        wall_seconds: started.elapsed().as_secs_f64(),
        routing,
        lag: Some(health),
    })
}
