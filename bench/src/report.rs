//! The run's results as data (results.json) and as the markdown tables docs/benchmarks.md
//! quotes: the seed's table layout with the seed's published numbers beside ours, the target
//! ratios computed from this run's side-by-side measurements, per-step tables, and the
//! virtual-time fleet model's tables (same schedule, and the seed's full scale).

use std::fmt::Write as _;

use crate::policy::LivePolicy;
use crate::schedule::Step;
use crate::stats::Summary;
use crate::workload::WorkloadSpec;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PolicyRun {
    pub policy: String,
    pub slug: String,
    pub steps: Vec<Summary>,
    pub overall: Summary,
    pub wall_seconds: f64,
    /// The filter's and the indexer's counters after the run (kvroute's modes).
    pub routing: Vec<(String, f64)>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct VirtualRow {
    pub policy: String,
    pub summary: Summary,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Results {
    pub mode: String,
    pub workload: WorkloadSpec,
    pub steps: Vec<Step>,
    pub engines: usize,
    pub kv_capacity_tokens: usize,
    pub time_scale: f64,
    pub envoy_concurrency: usize,
    pub tokenize_in: String,
    pub live: Vec<PolicyRun>,
    /// The fleet model on exactly the live run's schedule (oracle included).
    pub virtual_same: Vec<VirtualRow>,
    /// The fleet model on the seed's full-scale workload, when run.
    pub virtual_full: Option<(Vec<Step>, Vec<VirtualRow>)>,
    pub total_wall_seconds: f64,
}

/// The seed's published figures (llm-d `73-capacity`, as the seed write-up quotes them):
/// output tokens/s, P90 TTFT, mean TTFT, mean waiting queue. Quoted for comparison only.
pub fn seed_row(policy: LivePolicy) -> Option<(f64, f64, Option<f64>, Option<f64>)> {
    match policy {
        LivePolicy::Precise => Some((8730.0, 0.542, Some(0.298), Some(0.1))),
        LivePolicy::Estimate => Some((6944.4, 31.083, Some(13.316), Some(8.1))),
        LivePolicy::Random => Some((4428.7, 92.551, Some(46.987), Some(27.3))),
        LivePolicy::LoadOnly => Some((4266.0, 94.9, None, None)),
        _ => None,
    }
}

/// A target ratio as measured in this run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Target {
    pub what: String,
    pub goal: String,
    pub measured: Option<f64>,
    pub met: Option<bool>,
}

impl Results {
    fn live(&self, slug: &str) -> Option<&PolicyRun> {
        self.live.iter().find(|p| p.slug == slug)
    }

    pub fn oracle_same_schedule(&self) -> Option<&Summary> {
        self.virtual_same
            .iter()
            .find(|r| r.policy.starts_with("oracle"))
            .map(|r| &r.summary)
    }

    pub fn targets(&self) -> Vec<Target> {
        let precise = self.live("precise").map(|p| &p.overall);
        let random = self.live("random").map(|p| &p.overall);
        let estimate = self.live("estimate").map(|p| &p.overall);
        let oracle = self.oracle_same_schedule();
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        let p90_gain = ratio(random.map(|s| s.p90_ttft), precise.map(|s| s.p90_ttft));
        let thr_gain = ratio(
            precise.map(|s| s.output_tokens_per_s),
            random.map(|s| s.output_tokens_per_s),
        );
        let hit_vs_oracle = ratio(precise.map(|s| s.hit_ratio), oracle.map(|s| s.hit_ratio));
        let est_vs_precise = ratio(estimate.map(|s| s.p90_ttft), precise.map(|s| s.p90_ttft));
        vec![
            Target {
                what: "random P90 TTFT / precise P90 TTFT".into(),
                goal: ">= 170x".into(),
                measured: p90_gain,
                met: p90_gain.map(|r| r >= 170.0),
            },
            Target {
                what: "precise / random output tokens/s".into(),
                goal: ">= 1.97x".into(),
                measured: thr_gain,
                met: thr_gain.map(|r| r >= 1.97),
            },
            Target {
                what: "precise hit ratio / oracle hit ratio".into(),
                goal: ">= 0.95".into(),
                measured: hit_vs_oracle,
                met: hit_vs_oracle.map(|r| r >= 0.95),
            },
            Target {
                what: "estimate P90 TTFT / precise P90 TTFT".into(),
                goal: "<= 10x".into(),
                measured: est_vs_precise,
                met: est_vs_precise.map(|r| r <= 10.0),
            },
        ]
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let w = &self.workload;
        let _ = writeln!(
            md,
            "Mode `{}`: {} engines x {} KV tokens, {} groups x {} users, ~{}-token system prompts, \
             ~{}-token questions, max_tokens {}, seed {}; QPS steps {} ({} s of engine time each); \
             engine time scale {}x; Envoy --concurrency {}; filter tokenize_in `{}`. \
             Wall time {:.0} s.\n",
            self.mode,
            self.engines,
            self.kv_capacity_tokens,
            w.groups,
            w.users_per_group,
            w.system_tokens,
            w.question_tokens,
            w.max_tokens,
            w.seed,
            self.steps
                .iter()
                .map(|s| format!("{}", s.qps))
                .collect::<Vec<_>>()
                .join(", "),
            self.steps.first().map(|s| s.seconds).unwrap_or(0.0),
            self.time_scale,
            self.envoy_concurrency,
            self.tokenize_in,
            self.total_wall_seconds,
        );
        md.push_str("### Whole run, live (real Envoy, simulated engines), seed's layout\n\n");
        md.push_str(
            "| Scheduling strategy | Output throughput (tokens/s) | P90 TTFT (s) | Avg TTFT (s) | Avg wait queue | Prompt hit ratio | Requests (errors) | Seed: tokens/s | Seed: P90 TTFT (s) | Seed: Avg TTFT (s) | Seed: Avg wait queue |\n",
        );
        md.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for p in &self.live {
            let s = &p.overall;
            let seed = LivePolicy::ALL
                .iter()
                .find(|l| l.slug() == p.slug)
                .and_then(|l| seed_row(*l));
            let opt = |v: Option<f64>, digits: usize| {
                v.map(|v| format!("{v:.digits$}"))
                    .unwrap_or_else(|| "—".into())
            };
            let _ = writeln!(
                md,
                "| {} | {:.1} | {:.3} | {:.3} | {:.1} | {:.1}% | {} ({}) | {} | {} | {} | {} |",
                p.policy,
                s.output_tokens_per_s,
                s.p90_ttft,
                s.mean_ttft,
                s.mean_waiting,
                s.hit_ratio * 100.0,
                s.requests,
                s.errors,
                opt(seed.map(|r| r.0), 1),
                opt(seed.map(|r| r.1), 3),
                opt(seed.and_then(|r| r.2), 3),
                opt(seed.and_then(|r| r.3), 1),
            );
        }
        if let Some(o) = self.oracle_same_schedule() {
            let _ = writeln!(
                md,
                "| oracle (offline bound, fleet model) | {:.1} | {:.3} | {:.3} | {:.1} | {:.1}% | {} | — | — | — | — |",
                o.output_tokens_per_s,
                o.p90_ttft,
                o.mean_ttft,
                o.mean_waiting,
                o.hit_ratio * 100.0,
                o.requests
            );
        }
        md.push_str("\n### Targets, from this run's side-by-side measurements\n\n");
        md.push_str("| ratio | goal | measured | met |\n|---|---|---:|---|\n");
        for t in self.targets() {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                t.what,
                t.goal,
                t.measured
                    .map(|m| format!("{m:.2}"))
                    .unwrap_or_else(|| "not run".into()),
                match t.met {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "—",
                }
            );
        }
        md.push_str("\n### Per QPS step, live\n\n");
        md.push_str("Requests and TTFT by the step they arrived in; throughput and queue over the step's window.\n\n");
        md.push_str("| policy | QPS | requests | output tokens/s | P90 TTFT (s) | mean TTFT (s) | mean wait queue | hit ratio |\n");
        md.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
        for p in &self.live {
            for s in &p.steps {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {:.1} | {:.3} | {:.3} | {:.1} | {:.1}% |",
                    p.policy,
                    s.qps.unwrap_or(0.0),
                    s.requests,
                    s.output_tokens_per_s,
                    s.p90_ttft,
                    s.mean_ttft,
                    s.mean_waiting,
                    s.hit_ratio * 100.0
                );
            }
        }
        if self.live.iter().any(|p| !p.routing.is_empty()) {
            md.push_str("\n### Routing counters after each kvroute run (filter and indexer)\n\n");
            md.push_str("| policy | counter | value |\n|---|---|---:|\n");
            for p in &self.live {
                for (name, value) in &p.routing {
                    let _ = writeln!(md, "| {} | `{}` | {} |", p.policy, name, value);
                }
            }
        }
        md.push_str("\n### Fleet model (virtual time), the live run's exact schedule\n\n");
        virtual_table(&mut md, &self.virtual_same);
        if let Some((steps, rows)) = &self.virtual_full {
            let _ = writeln!(
                md,
                "\n### Fleet model (virtual time), the seed's full scale: 8 engines x 307,328 tokens, 150 x 5 prompts, QPS {} ({} s each)\n",
                steps
                    .iter()
                    .map(|s| format!("{}", s.qps))
                    .collect::<Vec<_>>()
                    .join(", "),
                steps.first().map(|s| s.seconds).unwrap_or(0.0)
            );
            virtual_table(&mut md, rows);
        }
        md
    }
}

fn virtual_table(md: &mut String, rows: &[VirtualRow]) {
    md.push_str("| policy | output tokens/s | P90 TTFT (s) | mean TTFT (s) | mean wait queue | hit ratio |\n");
    md.push_str("|---|---:|---:|---:|---:|---:|\n");
    for r in rows {
        let s = &r.summary;
        let _ = writeln!(
            md,
            "| {} | {:.1} | {:.3} | {:.3} | {:.1} | {:.1}% |",
            r.policy,
            s.output_tokens_per_s,
            s.p90_ttft,
            s.mean_ttft,
            s.mean_waiting,
            s.hit_ratio * 100.0
        );
    }
}
