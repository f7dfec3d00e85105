//! Why requests fail open on the call timeout under CPU pressure (scripts/bench_filter_burst.sh
//! runs this; the table is in docs/filter.md): a burst of N concurrent chat requests, each
//! with its own ~1,000-token prompt, through the real Envoy and filter, against the scripted
//! indexer (which answers at once, as `kvroute serve` does in < 0.2 ms). One run per
//! variant, side by side: routed, failed open on the timeout, the filter's own hashing time
//! (`kvroute_hash_us`) and its whole decision (`kvroute_decision_us`), and the client's
//! latency, so the 50 ms can be attributed.

use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use anyhow::{bail, Context};
use kvroute_harness::http;
use kvroute_harness::scripted_indexer::RouteScript;
use kvroute_harness::stack::{IndexerSpec, Stack, QWEN3_MODEL};

struct Variant {
    name: &'static str,
    concurrency: usize,
    burst: usize,
    plugin: serde_json::Value,
}

fn prompt(i: usize) -> String {
    // ~1,000 Qwen3 tokens of words that differ per request, so each is hashed cold.
    (0..700)
        .map(|w| format!("w{}x{}", i, (w * 7919 + i * 31) % 10_007))
        .collect::<Vec<_>>()
        .join(" ")
}

fn burst(addr: SocketAddr, n: usize, offset: usize) -> anyhow::Result<Vec<f64>> {
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let barrier = barrier.clone();
            let body = serde_json::json!({
                "model": QWEN3_MODEL, "max_tokens": 8,
                "messages": [{"role": "user", "content": prompt(offset + i)}],
            })
            .to_string();
            std::thread::spawn(move || -> anyhow::Result<f64> {
                barrier.wait();
                let r = http::post_json(addr, "/v1/chat/completions", body.as_bytes())?;
                if r.status != 200 {
                    bail!("status {}", r.status);
                }
                Ok(r.elapsed.as_secs_f64() * 1e3)
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| {
            h.join()
                .map_err(|_| anyhow::anyhow!("client thread panicked"))?
        })
        .collect()
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples.get(i).copied().unwrap_or(f64::NAN)
}

/// `P50` and `P99` of an Envoy histogram from `/stats` (cumulative quantiles).
fn quantiles(stack: &Stack, name: &str) -> anyhow::Result<(String, String)> {
    let r = http::send(
        stack.envoy.admin,
        "GET",
        &format!("/stats?filter=^wasmcustom\\.{name}$"),
        &[],
        b"",
    )?;
    let text = String::from_utf8_lossy(&r.body).into_owned();
    let cumulative = text
        .split("cumulative:")
        .nth(1)
        .with_context(|| format!("no {name} histogram: {text}"))?;
    let pick = |q: &str| {
        cumulative
            .split_whitespace()
            .find_map(|t| t.strip_prefix(&format!("{q}(")))
            .and_then(|t| t.split(',').next())
            .unwrap_or("?")
            .to_string()
    };
    Ok((pick("P50"), pick("P99")))
}

fn run(v: &Variant) -> anyhow::Result<()> {
    let stack = Stack::builder()
        .backends(3)
        .qwen3()
        .concurrency(v.concurrency)
        .plugin(v.plugin.clone())
        .indexer(IndexerSpec::Scripted(RouteScript::CycleBackends))
        .start()?;
    // Warm-up: each worker's connections to the indexer and the pods are open.
    burst(stack.listen(), 8, 1_000_000)?;
    let before_routed = stack.envoy.filter_stat("kvroute_routed")?;
    let before_timeout = stack.envoy.filter_stat("kvroute_fail_open_timeout")?;
    let mut latency = burst(stack.listen(), v.burst, 0)?;
    let routed = stack.envoy.filter_stat("kvroute_routed")? - before_routed;
    let timeout = stack.envoy.filter_stat("kvroute_fail_open_timeout")? - before_timeout;
    // Envoy folds histogram samples into /stats on its stats flush (every 5 s).
    std::thread::sleep(Duration::from_millis(5500));
    let (h50, h99) = quantiles(&stack, "kvroute_hash_us")?;
    let (d50, d99) = quantiles(&stack, "kvroute_decision_us")?;
    let (l50, l99) = (
        percentile(&mut latency, 0.5),
        percentile(&mut latency, 0.99),
    );
    println!(
        "| {} | {} | {} | {routed} | {timeout} ({:.0}%) | {h50} / {h99} | {d50} / {d99} | {l50:.0} / {l99:.0} |",
        v.name,
        v.concurrency,
        v.burst,
        100.0 * timeout as f64 / v.burst as f64
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let burst_size: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(200);
    let default = serde_json::json!({});
    let variants = [
        Variant {
            name: "default (call_timeout_ms 50)",
            concurrency: 2,
            burst: burst_size,
            plugin: default.clone(),
        },
        Variant {
            name: "burst / 4",
            concurrency: 2,
            burst: burst_size / 4,
            plugin: default.clone(),
        },
        Variant {
            name: "call_timeout_ms 250",
            concurrency: 2,
            burst: burst_size,
            plugin: serde_json::json!({"call_timeout_ms": 250}),
        },
        Variant {
            name: "one Envoy worker",
            concurrency: 1,
            burst: burst_size,
            plugin: default,
        },
    ];
    println!("| variant | Envoy workers | concurrent requests | routed | failed open: timeout | hash_us p50 / p99 | decision_us p50 / p99 | client ms p50 / p99 |");
    println!("|---|---|---|---|---|---|---|---|");
    for v in &variants {
        run(v)?;
    }
    Ok(())
}
