//! The command line and the two presets it resolves to: the full run (the seed's workload,
//! time-scaled to fit ~30 minutes on 2 cores) and `--quick` (fewer customers, shorter steps,
//! shorter answers: the CI smoke run). Every preset value can be overridden by a flag.

use std::path::PathBuf;

use crate::policy::LivePolicy;
use crate::schedule::Step;
use crate::workload::WorkloadSpec;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "kvroute-bench",
    about = "The seed's shared-prefix benchmark through the real Envoy: kvroute precise and \
             estimate, Envoy's random / round robin / least request, load only, and the \
             offline oracle bound from the virtual-time fleet model"
)]
pub struct Args {
    /// The CI smoke run: fewer customers and steps, short answers.
    #[arg(long)]
    pub quick: bool,
    /// Where results.json, results.md and the PNGs go (default: docs/benchmarks for the
    /// full run, target/bench-quick for --quick).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Policies to run live, comma-separated (default: all six).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub policies: Vec<LivePolicy>,
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
    #[arg(long)]
    pub max_tokens: Option<usize>,
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
    /// Skip the fleet model's full-scale cross-check table.
    #[arg(long)]
    pub no_full_model: bool,
    /// Skip the PNGs.
    #[arg(long)]
    pub no_plots: bool,
    /// One more `kvroute serve` flag for kvroute's policies (repeatable, e.g.
    /// `--indexer-arg=--running-cost --indexer-arg=4`); the report names the variant.
    #[arg(long, allow_hyphen_values = true)]
    pub indexer_arg: Vec<String>,
    /// Redraw the PNGs and results.md of an earlier run from its results.json (beside it).
    #[arg(long, value_name = "RESULTS_JSON")]
    pub replot: Option<PathBuf>,
    /// Only the fleet model (virtual time): no Envoy, no engines.
    #[arg(long)]
    pub no_live: bool,
    /// Exit non-zero unless precise's live hit ratio reaches this fraction of the oracle's.
    #[arg(long)]
    pub require_hit_vs_oracle: Option<f64>,
}

/// Everything a run needs, presets resolved.
#[derive(Debug, Clone)]
pub struct Plan {
    pub mode: &'static str,
    pub out: PathBuf,
    pub policies: Vec<LivePolicy>,
    pub workload: WorkloadSpec,
    pub steps: Vec<Step>,
    pub engines: usize,
    pub kv_capacity_tokens: usize,
    pub time_scale: f64,
    pub envoy_concurrency: usize,
    pub tokenize_in: String,
    pub full_model: bool,
    pub plots: bool,
    pub require_hit_vs_oracle: Option<f64>,
    pub indexer_args: Vec<String>,
}

/// The seed's QPS range (3 to 60), in the steps the full run takes.
pub const FULL_QPS: [f64; 7] = [3.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0];
/// Short steps: past ~10 QPS this engine model is overloaded under every policy, and the
/// backlog (drained to the last request, ~1,100 engine seconds for random) sets the wall time.
const FULL_STEP_SECONDS: f64 = 15.0;
/// Fast enough to fit ~30 minutes; slow enough that 8 engines, Envoy and the filter keep
/// pace with the clock on 2 cores (docs/benchmarks.md).
const FULL_TIME_SCALE: f64 = 4.0;
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
        let workload = WorkloadSpec {
            model: kvroute_tests::stack::QWEN3_MODEL.to_string(),
            groups: self.groups.unwrap_or(if quick { 16 } else { 150 }),
            users_per_group: self.users_per_group.unwrap_or(5),
            system_tokens: self.system_tokens.unwrap_or(6_000),
            question_tokens: self.question_tokens.unwrap_or(1_200),
            max_tokens: self.max_tokens.unwrap_or(if quick { 50 } else { 1_000 }),
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
                LivePolicy::ALL.to_vec()
            } else {
                self.policies.clone()
            },
            workload,
            steps: qps.iter().map(|&qps| Step { qps, seconds }).collect(),
            engines: self.engines,
            kv_capacity_tokens: self.kv_capacity_tokens,
            time_scale: self.time_scale.unwrap_or(if quick {
                QUICK_TIME_SCALE
            } else {
                FULL_TIME_SCALE
            }),
            envoy_concurrency: self.envoy_concurrency.unwrap_or(2),
            tokenize_in: self.tokenize_in.clone().unwrap_or_else(|| "filter".into()),
            full_model: !self.no_full_model && !quick,
            plots: !self.no_plots,
            require_hit_vs_oracle: self.require_hit_vs_oracle,
            indexer_args: self.indexer_arg.clone(),
        }
    }
}
