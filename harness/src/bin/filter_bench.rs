//! The filter's cost, measured through the real Envoy side by side with the same Envoy
//! without the filter (scripts/bench_filter.sh runs this and prints the table recorded in
//! docs/filter.md):
//!
//! * added latency for a ~7,200-token chat request (a ~6,000-token context plus a
//!   ~1,200-token question), p50 and p99, cold (every context new) and warm (the context
//!   seen before, only the question new); requests alternate between the two Envoys so
//!   machine noise hits both alike;
//! * Envoy's resident memory with the Qwen3 tokenizer loaded, at --concurrency 1 and 2.
//!
//! The indexer is the scripted stand-in (answers at once) unless `--indexer-addr` points at
//! a running `kvroute serve`, so the numbers are the filter's own work plus one loopback call.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use kvroute_harness::bench_requests::{chat, contexts_and_questions, percentile, post};
use kvroute_harness::paths;
use kvroute_harness::scripted_indexer::RouteScript;
use kvroute_harness::stack::{IndexerSpec, Stack};

struct Args {
    requests: usize,
    indexer_addr: Option<SocketAddr>,
    tokenize_in: String,
    skip_memory: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        requests: 40,
        indexer_addr: None,
        tokenize_in: "filter".into(),
        skip_memory: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--requests" => a.requests = it.next().context("--requests N")?.parse()?,
            "--indexer-addr" => a.indexer_addr = Some(it.next().context("--indexer-addr IP:PORT")?.parse()?),
            "--tokenize-in" => a.tokenize_in = it.next().context("--tokenize-in filter|indexer")?,
            "--skip-memory" => a.skip_memory = true,
            other => bail!("unknown argument {other} (--requests N, --indexer-addr IP:PORT, --tokenize-in filter|indexer, --skip-memory)"),
        }
    }
    Ok(a)
}

struct Phase {
    name: &'static str,
    base_ms: Vec<f64>,
    filter_ms: Vec<f64>,
}

fn filter_stack(args: &Args, concurrency: usize) -> anyhow::Result<Stack> {
    let indexer = match args.indexer_addr {
        Some(addr) => IndexerSpec::External(addr),
        None => IndexerSpec::Scripted(RouteScript::CycleBackends),
    };
    Stack::builder()
        .backends(3)
        .qwen3()
        .concurrency(concurrency)
        .plugin(serde_json::json!({"tokenize_in": args.tokenize_in, "debug_headers": true}))
        .indexer(indexer)
        .start()
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?)
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let tok =
        tokenizers::Tokenizer::from_file(paths::tokenizers_dir().join("qwen3/tokenizer.json"))
            .map_err(anyhow::Error::msg)?;
    let n = args.requests;
    eprintln!("[bench] building {} contexts and questions", n + 2);
    let (contexts, questions) = contexts_and_questions(&tok, n)?;
    let sample = chat(&contexts[0], &questions[0]);
    let sample_tokens = tok
        .encode(format!("{}\n{}", contexts[0], questions[0]), false)
        .map_err(anyhow::Error::msg)?
        .len();

    let base = Stack::builder()
        .backends(3)
        .qwen3()
        .without_filter()
        .start()?;
    let filt = filter_stack(&args, 1)?;
    // First request of each Envoy opens its upstream connections.
    post(base.listen(), &sample)?;
    post(filt.listen(), &chat(&contexts[n + 1], &questions[n + 1]))?;

    let mut phases = Vec::new();
    for (name, warm) in [("cold", false), ("warm", true)] {
        let mut phase = Phase {
            name,
            base_ms: Vec::new(),
            filter_ms: Vec::new(),
        };
        if warm {
            // Prime: the shared context is seen once before the measured requests.
            post(filt.listen(), &chat(&contexts[0], &questions[n + 1]))?;
        }
        for i in 0..n {
            let context = if warm { &contexts[0] } else { &contexts[i + 1] };
            let body = chat(context, &questions[i + 1]);
            let b = post(base.listen(), &body)?;
            let f = post(filt.listen(), &body)?;
            if f.header("x-kvroute-endpoint").is_none() {
                bail!(
                    "the filter did not route a request (is the tokenizer loaded?)\n{}",
                    filt.logs()
                );
            }
            phase.base_ms.push(b.elapsed.as_secs_f64() * 1e3);
            phase.filter_ms.push(f.elapsed.as_secs_f64() * 1e3);
        }
        phases.push(phase);
    }
    let hash_note = filt.envoy.prometheus().unwrap_or_default();
    let hash_us: Vec<&str> = hash_note
        .lines()
        .filter(|l| l.starts_with("kvroute_hash_us_sum") || l.starts_with("kvroute_hash_us_count"))
        .collect();
    drop(filt);
    drop(base);

    println!("Request: {} body bytes, ~{} prompt tokens (context + question); {} requests per phase; tokenize in {}.",
        sample.len(), sample_tokens, args.requests, args.tokenize_in);
    println!();
    println!("| phase | without filter p50 / p99 (ms) | with filter p50 / p99 (ms) | added p50 (ms) | added p99 (ms) |");
    println!("|---|---|---|---|---|");
    for mut p in phases {
        let (b50, b99) = (
            percentile(&mut p.base_ms, 0.5),
            percentile(&mut p.base_ms, 0.99),
        );
        let (f50, f99) = (
            percentile(&mut p.filter_ms, 0.5),
            percentile(&mut p.filter_ms, 0.99),
        );
        println!(
            "| {} | {b50:.2} / {b99:.2} | {f50:.2} / {f99:.2} | {:.2} | {:.2} |",
            p.name,
            f50 - b50,
            f99 - b99
        );
    }
    eprintln!("[bench] filter hash histogram: {hash_us:?}");

    if !args.skip_memory {
        println!();
        println!("| Envoy --concurrency | RSS without filter (MiB) | RSS with filter, Qwen3 loaded (MiB) | filter's share (MiB) |");
        println!("|---|---|---|---|");
        for c in [1usize, 2] {
            let bare = Stack::builder()
                .backends(1)
                .qwen3()
                .concurrency(c)
                .without_filter()
                .start()?;
            let with = filter_stack(&args, c)?;
            // Let each worker VM tokenize a request so the measurement includes a used encoder.
            for i in 0..4 {
                post(with.listen(), &chat(&contexts[i], &questions[i]))?;
                post(bare.listen(), &chat(&contexts[i], &questions[i]))?;
            }
            std::thread::sleep(Duration::from_millis(500));
            let (b, w) = (
                rss_kib(bare.envoy.pid())? as f64 / 1024.0,
                rss_kib(with.envoy.pid())? as f64 / 1024.0,
            );
            println!("| {c} | {b:.0} | {w:.0} | {:.0} |", w - b);
        }
    }
    Ok(())
}
