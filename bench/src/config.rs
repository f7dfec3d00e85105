//! The command line and the two presets it resolves to: the full run (the seed's workload,
//! time-scaled to fit the machine, plus the fleet model at the seed's full scale over seeds,
//! engine profiles and output lengths) and `--quick` (fewer customers, shorter steps,
//! shorter answers: the CI smoke run). Every preset value can be overridden by a flag.

use std::path::PathBuf;

use kvroute_engine_sim::Profile;

use crate::policy::{live_policies, Policy};
use crate::schedule::Step;
use crate::workload::WorkloadSpec;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "kvroute-bench",
    about = "The seed's shared-prefix benchmark through the real Envoy: kvroute precise and \
             estimate, Envoy's random / round robin / least request, load only, and the \
             hit-ratio bound of the schedule, and the virtual-time fleet model at full scale"
)]
pub struct Args {
    /// The CI smoke run: fewer customers and steps, short answers.
    #[arg(long)]
    pub quick: bool,
    /// Where results.json, results.md and the PNGs go (default: docs/benchmarks for the
    /// full run, target/bench-quick for --quick).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Policies to run live, comma-separated (default: all six live ones).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub policies: Vec<Policy>,
    /// Engines' --time-scale: engine time runs this many times faster than the wall clock.
    #[arg(long)]
    pub time_scale: Option<f64>,
    /// Offered QPS steps (engine time), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub qps: Vec<f64>,
    /// Engine seconds each QPS step lasts.
    #[arg(long)]
    pub step_seconds: Option<f64>,
    #[arg(long)]
    pub groups: Option<usize>,
    #[arg(long)]
    pub users_per_group: Option<usize>,
    #[arg(long)]
    pub system_tokens: Option<usize>,
    #[arg(long)]
    pub question_tokens: Option<usize>,
    /// Mean output tokens per request (exponential; default 200, --quick 50).
    #[arg(long)]
    pub output_mean: Option<f64>,
    /// vLLM's --max-model-len, given to the engines (they refuse longer with a 400).
    #[arg(long, default_value_t = 8192)]
    pub max_model_len: usize,
    /// The engines' timing profile (docs/engine-sim.md).
    #[arg(long, value_enum, default_value_t = Profile::default())]
    pub profile: Profile,
    /// Engine seconds of warm-up at the first QPS before the steps (left out of the
    /// whole-run figures; default 60, --quick 0).
    #[arg(long)]
    pub warmup_seconds: Option<f64>,
    /// The full-scale fleet model: seeds, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1u64, 2, 3])]
    pub model_seeds: Vec<u64>,
    /// The full-scale fleet model: engine profiles, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Profile::Qwen3_32bTp2H100, Profile::SeedSingleInstance])]
    pub model_profiles: Vec<Profile>,
    /// The full-scale fleet model: output means, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [200.0, 150.0, 250.0, 400.0])]
    pub model_output_means: Vec<f64>,
    /// Engine seconds each full-scale model step lasts (the seed: 60).
    #[arg(long, default_value_t = 60.0)]
    pub model_step_seconds: f64,
    /// Seed of the text, the arrivals and the prompts drawn.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, default_value_t = 8)]
    pub engines: usize,
    #[arg(long, default_value_t = 307_328)]
    pub kv_capacity_tokens: usize,
    /// Envoy worker threads.
    #[arg(long)]
    pub envoy_concurrency: Option<usize>,
    /// Where the filter tokenizes: `filter` (in the wasm VM) or `indexer`.
    #[arg(long)]
    pub tokenize_in: Option<String>,
    /// The filter's `call_timeout_ms` (see BENCH_FILTER_CALL_TIMEOUT_MS).
    #[arg(long, default_value_t = BENCH_FILTER_CALL_TIMEOUT_MS)]
    pub filter_call_timeout_ms: u64,
    /// Skip the fleet model's full-scale cross-check table.
    #[arg(long)]
    pub no_full_model: bool,
    /// Skip the PNGs.
    #[arg(long)]
    pub no_plots: bool,
    /// One more `kvroute serve` flag for kvroute's policies (repeatable, e.g.
    /// `--indexer-arg=--fleet-work-weight --indexer-arg=0`); the report names the variant.
    #[arg(long, allow_hyphen_values = true)]
    pub indexer_arg: Vec<String>,
    /// Redraw the PNGs and results.md of an earlier run from its results.json (beside it).
    #[arg(long, value_name = "RESULTS_JSON")]
    pub replot: Option<PathBuf>,
    /// Only the fleet model (virtual time): no Envoy, no engines.
    #[arg(long)]
    pub no_live: bool,
    /// Exit non-zero unless precise's live hit ratio reaches this fraction of the
    /// schedule's hit-ratio bound.
    #[arg(long)]
    pub require_hit_vs_bound: Option<f64>,
}

/// Everything a run needs, presets resolved.
#[derive(Debug, Clone)]
pub struct Plan {
    pub mode: &'static str,
    pub out: PathBuf,
    pub policies: Vec<Policy>,
    pub workload: WorkloadSpec,
    pub profile: Profile,
    pub steps: Vec<Step>,
    pub engines: usize,
    pub kv_capacity_tokens: usize,
    pub time_scale: f64,
    pub envoy_concurrency: usize,
    pub tokenize_in: String,
    pub filter_call_timeout_ms: u64,
    pub full_model: bool,
    pub model_seeds: Vec<u64>,
    pub model_profiles: Vec<Profile>,
    pub model_output_means: Vec<f64>,
    pub model_step_seconds: f64,
    pub plots: bool,
    pub require_hit_vs_bound: Option<f64>,
    pub indexer_args: Vec<String>,
}

/// The filter's call timeout in the benchmark, not the production 50 ms: here the simulated
/// fleet, the load generator, Envoy and the indexer share the machine's cores, and at 50 ms
/// most route calls of the quick run on 2 busy cores timed out (149 of ~210; the indexer
/// decided each in < 1 ms, the Envoy worker was busy tokenizing other requests), so kvroute
/// failed open to the balancer and the run measured the machine, not the routing. What
/// the filter adds per request is measured apart (docs/filter.md); the report lists the
/// filter's fail-open counters of every run.
pub const BENCH_FILTER_CALL_TIMEOUT_MS: u64 = 500;

/// The seed's QPS range (3 to 60), in the steps the full run takes.
pub const FULL_QPS: [f64; 7] = [3.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0];
/// The seed's steps. The backlog under cache-blind policies (drained to the last request)
/// adds to the wall time.
const FULL_STEP_SECONDS: f64 = 60.0;
/// Warm-up before the steps: long enough for most of the 150 groups to be seen once.
const FULL_WARMUP_SECONDS: f64 = 60.0;
const FULL_OUTPUT_MEAN: f64 = 200.0;
const QUICK_OUTPUT_MEAN: f64 = 50.0;
/// Real time. What Envoy, the filter and the engines' HTTP servers spend per request
/// (tokenizing a 7,200-token prompt among it) is real CPU time that no time scale shrinks:
/// at 4x the seed's 60 QPS is 240 requests a wall second, more than 2 cores tokenize, and
/// the filter timed out on 40% of requests (docs/benchmarks.md, "Time scale").
const FULL_TIME_SCALE: f64 = 1.0;
const QUICK_QPS: [f64; 2] = [2.0, 5.0];
const QUICK_STEP_SECONDS: f64 = 30.0;
const QUICK_TIME_SCALE: f64 = 10.0;

impl Args {
    pub fn plan(&self, repo_root: &std::path::Path) -> Plan {
        let quick = self.quick;
        let qps: Vec<f64> = if !self.qps.is_empty() {
            self.qps.clone()
        } else if quick {
            QUICK_QPS.to_vec()
        } else {
            FULL_QPS.to_vec()
        };
        let seconds = self.step_seconds.unwrap_or(if quick {
            QUICK_STEP_SECONDS
        } else {
            FULL_STEP_SECONDS
        });
        let warmup = self
            .warmup_seconds
            .unwrap_or(if quick { 0.0 } else { FULL_WARMUP_SECONDS });
        let workload = WorkloadSpec {
            model: kvroute_harness::stack::QWEN3_MODEL.to_string(),
            groups: self.groups.unwrap_or(if quick { 16 } else { 150 }),
            users_per_group: self.users_per_group.unwrap_or(5),
            system_tokens: self.system_tokens.unwrap_or(6_000),
            question_tokens: self.question_tokens.unwrap_or(1_200),
            output_mean: self.output_mean.unwrap_or(if quick {
                QUICK_OUTPUT_MEAN
            } else {
                FULL_OUTPUT_MEAN
            }),
            max_model_len: self.max_model_len,
            seed: self.seed,
        };
        Plan {
            mode: if quick { "quick" } else { "full" },
            out: self.out.clone().unwrap_or_else(|| {
                if quick {
                    repo_root.join("target/bench-quick")
                } else {
                    repo_root.join("docs/benchmarks")
                }
            }),
            policies: if self.no_live {
                Vec::new()
            } else if self.policies.is_empty() {
                live_policies()
            } else {
                self.policies
                    .iter()
                    .copied()
                    .filter(Policy::is_live)
                    .collect()
            },
            workload,
            profile: self.profile,
            steps: with_warmup(&qps, seconds, warmup),
            engines: self.engines,
            kv_capacity_tokens: self.kv_capacity_tokens,
            time_scale: self.time_scale.unwrap_or(if quick {
                QUICK_TIME_SCALE
            } else {
                FULL_TIME_SCALE
            }),
            envoy_concurrency: self.envoy_concurrency.unwrap_or(2),
            tokenize_in: self.tokenize_in.clone().unwrap_or_else(|| "filter".into()),
            filter_call_timeout_ms: self.filter_call_timeout_ms,
            full_model: !self.no_full_model && !quick,
            model_seeds: self.model_seeds.clone(),
            model_profiles: self.model_profiles.clone(),
            model_output_means: self.model_output_means.clone(),
            model_step_seconds: self.model_step_seconds,
            plots: !self.no_plots,
            require_hit_vs_bound: self.require_hit_vs_bound,
            indexer_args: self.indexer_arg.clone(),
        }
    }
}

/// The QPS steps, after a warm-up step at the first QPS when `warmup` > 0.
pub fn with_warmup(qps: &[f64], seconds: f64, warmup: f64) -> Vec<Step> {
    let first = qps.first().copied().unwrap_or(1.0);
    (warmup > 0.0)
        .then_some(Step {
            qps: first,
            seconds: warmup,
            warmup: true,
        })
        .into_iter()
        .chain(qps.iter().map(|&qps| Step {
            qps,
            seconds,
            warmup: false,
        }))
        .collect()
}
