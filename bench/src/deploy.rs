//! A policy's deployment on loopback, through the shared test `Stack`: simulated engines
//! (`kvroute-engine-sim`, time-scaled, the seed's KV capacity, the chosen timing profile and
//! `--max-model-len`) and the real Envoy; for kvroute's modes also the filter and
//! `kvroute serve`, whose clocks (metric scrapes, estimate memory, in-flight TTL) are scaled
//! with the engines' so the indexer sees the same engine-time behaviour it would see at full
//! speed. What a running deployment is addressed by (`Target`) is defined here, where it is
//! built.

use std::net::SocketAddr;

use kvroute_harness::stack::{
    kvroute_serve, IndexerPorts, IndexerSpec, KvWiring, SimEngineOptions, Stack,
};

use crate::config::Plan;
use crate::policy::{deployment, Deployment as Kind, Policy};
use crate::report::LiveHealth;
use crate::scrape::Histogram;

/// Where the load goes and whom to scrape.
pub struct Target {
    pub url: String,
    pub engines: Vec<SocketAddr>,
}

pub struct Deployment {
    stack: Stack,
}

impl Deployment {
    /// What the filter and the indexer did (kvroute's modes): routed vs failed open, and
    /// the indexer's decisions by reason. Empty without the filter.
    pub fn routing_counters(&self, policy: Policy) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        if !matches!(deployment(policy), Some(Kind::Kvroute(_))) {
            return out;
        }
        if let Ok(text) = self.stack.envoy.prometheus() {
            for line in text.lines() {
                if line.starts_with(FILTER_ROUTED) || line.starts_with(FILTER_FAIL_OPEN) {
                    if let Some((k, v)) = line.rsplit_once(' ') {
                        out.push((k.to_string(), v.parse().unwrap_or(0.0)));
                    }
                }
            }
        }
        let indexer = self.stack.indexer_addr;
        if let Ok(r) = kvroute_harness::http::send(indexer, "GET", "/metrics", &[], b"") {
            for line in String::from_utf8_lossy(&r.body).lines() {
                if line.starts_with("kvroute_route_decisions_total")
                    || line.starts_with("kvroute_tickets_abandoned_total")
                    || line.starts_with("kvroute_route_matched_blocks")
                    || line.starts_with("kvroute_route_requested_blocks")
                {
                    if let Some((k, v)) = line.rsplit_once(' ') {
                        out.push((k.to_string(), v.parse().unwrap_or(0.0)));
                    }
                }
            }
        }
        out
    }

    /// The engines' CPU dilation over `wall_seconds`, the filter's counters in `routing`,
    /// and where a first token's time went (`client_ttft_mean`: what the load generator saw).
    pub fn health(
        &self,
        routing: &[(String, f64)],
        wall_seconds: f64,
        client_ttft_mean: Option<f64>,
    ) -> LiveHealth {
        let mut dilation = 0.0;
        let mut engine_ttft: Option<Histogram> = None;
        for e in &self.stack.pods {
            if let Ok(r) = kvroute_harness::http::send(*e, "GET", "/metrics", &[], b"") {
                let text = String::from_utf8_lossy(&r.body);
                dilation += crate::scrape::gauge(&text, ENGINE_DILATION_METRIC).unwrap_or(0.0);
                if let Some(h) = Histogram::parse(&text, ENGINE_TTFT_METRIC) {
                    engine_ttft.get_or_insert_with(Histogram::default).add(&h);
                }
            }
        }
        // Only kvroute's deployments run the filter; its histograms are microseconds.
        let envoy_page = (!routing.is_empty())
            .then(|| self.stack.envoy.prometheus().ok())
            .flatten();
        let filter = |name: &str| {
            envoy_page
                .as_deref()
                .and_then(|text| Histogram::parse(text, name))
        };
        let decision = filter(FILTER_DECISION_US);
        let hash = filter(FILTER_HASH_US);
        let ms = |v: Option<f64>| v.map(|us| us / 1000.0);
        let sum = |prefix: &str| {
            let found: Vec<f64> = routing
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(_, v)| *v)
                .collect();
            (!found.is_empty()).then(|| found.iter().sum())
        };
        LiveHealth {
            engine_dilation: dilation
                / self.stack.pods.len().max(1) as f64
                / wall_seconds.max(1e-9),
            filter_routed: sum(FILTER_ROUTED),
            filter_fail_open: sum(FILTER_FAIL_OPEN),
            client_ttft_mean,
            engine_ttft_mean: engine_ttft.as_ref().and_then(Histogram::mean),
            engine_ttft_p90: engine_ttft.as_ref().and_then(|h| h.quantile(0.9)),
            filter_decision_ms_mean: ms(decision.as_ref().and_then(Histogram::mean)),
            filter_decision_ms_p90: ms(decision.as_ref().and_then(|h| h.quantile(0.9))),
            filter_hash_ms_mean: ms(hash.as_ref().and_then(Histogram::mean)),
        }
    }

    pub fn target(&self) -> Target {
        Target {
            url: format!("http://{}/v1/chat/completions", self.stack.listen()),
            engines: self.stack.pods.clone(),
        }
    }
}

/// The filter's counters as Envoy's Prometheus output names them: stats of the wasm
/// `wasmcustom` namespace appear without Envoy's `envoy_` prefix and the namespace.
const FILTER_ROUTED: &str = "kvroute_routed";
/// Prefix of the filter's fail-open counters, one per reason (`kvroute_fail_open_timeout`).
const FILTER_FAIL_OPEN: &str = "kvroute_fail_open";

/// The filter's histograms (microseconds): its whole decision, and tokenizing plus hashing.
const FILTER_DECISION_US: &str = "kvroute_decision_us";
const FILTER_HASH_US: &str = "kvroute_hash_us";
/// vLLM's (and the simulated engine's) time-to-first-token histogram.
const ENGINE_TTFT_METRIC: &str = "vllm:time_to_first_token_seconds";

/// The simulated engine's counter of wall seconds its clock fell behind for good.
const ENGINE_DILATION_METRIC: &str = "kvroute_sim_dilation_seconds_total";

/// `kvroute serve`'s flags whose values are engine-time durations, scaled to wall time.
fn scaled_indexer_flags(plan: &Plan) -> Vec<(&'static str, String)> {
    let s = plan.time_scale;
    let ms = |engine_ms: f64| format!("{}", (engine_ms / s).round().max(10.0) as u64);
    let secs = |engine_s: f64| format!("{}", (engine_s / s).ceil().max(1.0) as u64);
    vec![
        // vLLM-style scrape every second of engine time.
        ("--scrape-interval-ms", ms(1000.0)),
        ("--estimate-ttl-secs", secs(600.0)),
        ("--in-flight-ttl-secs", secs(600.0)),
    ]
}

pub fn start(plan: &Plan, policy: Policy) -> anyhow::Result<Deployment> {
    let mut sim = SimEngineOptions::new(plan.engines);
    sim.time_scale = plan.time_scale;
    sim.wiring = KvWiring::EnginesConnect;
    sim.extra_args = vec![
        "--kv-capacity-tokens".into(),
        plan.kv_capacity_tokens.to_string(),
        "--profile".into(),
        plan.profile.name().into(),
        "--max-model-len".into(),
        plan.workload.max_model_len.to_string(),
    ];
    let builder = Stack::builder()
        .qwen3()
        .concurrency(plan.envoy_concurrency)
        .sim_engines(sim);
    let builder = match deployment(policy) {
        None => anyhow::bail!("{} runs in the fleet model only", policy.name()),
        Some(Kind::Kvroute(mut extra)) => {
            extra.extend(plan.indexer_args.iter().cloned());
            let flags = scaled_indexer_flags(plan);
            let base = kvroute_serve(&[]);
            let args = Box::new(move |p: &IndexerPorts| {
                let mut args = base(p);
                // The stack's defaults first, then ours: replace a flag's value in place
                // (clap refuses a flag given twice).
                for (flag, value) in &flags {
                    match args.iter().position(|a| a == flag) {
                        Some(i) if i + 1 < args.len() => args[i + 1] = value.clone(),
                        _ => args.extend([flag.to_string(), value.clone()]),
                    }
                }
                args.extend(extra.iter().cloned());
                args
            });
            builder
                .indexer(IndexerSpec::Kvroute(args))
                .plugin(serde_json::json!({
                    "tokenize_in": plan.tokenize_in,
                    "debug_headers": false,
                    "call_timeout_ms": plan.filter_call_timeout_ms,
                }))
        }
        Some(Kind::Envoy(lb)) => builder.without_filter().pods_lb_policy(lb),
    };
    Ok(Deployment {
        stack: builder.start()?,
    })
}
