//! The latency and CPU each routing path adds, side by side in one run through the same
//! Envoy build (scripts/bench_paths.sh runs this and prints the table recorded in
//! docs/filter.md): no routing (the same Envoy without kvroute), the wasm filter
//! (tokenizing in the VM, the real `kvroute serve` answering `/v1/route`), and the endpoint
//! picker (Envoy's ext_proc to `kvroute serve --epp-listen`, tokenizing natively). Requests
//! are ~7,200-token chats (a ~6,000-token context plus a ~1,200-token question), cold (every
//! context new) and warm (the context seen before); each request goes to the three stacks in
//! turn so machine noise hits all alike. CPU per request is the user+system time Envoy and
//! `kvroute serve` spent during a phase (from /proc), divided by its requests.

use anyhow::{bail, Context};
use kvroute_harness::bench_requests::{chat, contexts_and_questions, percentile, post};
use kvroute_harness::paths;
use kvroute_harness::stack::{kvroute_serve, EppOptions, IndexerSpec, Stack};

/// `--requests N` (default 30).
fn requests_arg() -> anyhow::Result<usize> {
    let mut it = std::env::args().skip(1);
    let mut n = 30;
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--requests" => n = it.next().context("--requests N")?.parse()?,
            other => bail!("unknown argument {other} (--requests N)"),
        }
    }
    Ok(n)
}

/// Clock ticks of user + system time a process has used.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').context("stat format")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Ok(f.get(11).context("utime")?.parse::<u64>()? + f.get(12).context("stime")?.parse::<u64>()?)
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// One path under test.
struct Path {
    name: &'static str,
    stack: Stack,
    ms: Vec<f64>,
    envoy_ticks: u64,
    indexer_ticks: u64,
}

impl Path {
    fn new(name: &'static str, stack: Stack) -> Self {
        Self {
            name,
            stack,
            ms: Vec::new(),
            envoy_ticks: 0,
            indexer_ticks: 0,
        }
    }

    fn ticks(&self) -> anyhow::Result<(u64, u64)> {
        let envoy = cpu_ticks(self.stack.envoy.pid())?;
        let indexer = match self.stack.indexer_pid() {
            Some(pid) => cpu_ticks(pid)?,
            None => 0,
        };
        Ok((envoy, indexer))
    }
}

fn routed_stack(epp: bool) -> anyhow::Result<Stack> {
    // Engines that publish KV events, as vLLM does: the indexer knows them, checks their
    // health and routes on what they cache.
    let mut b = Stack::builder()
        .backends(3)
        .qwen3()
        .kv_engines()
        .indexer(IndexerSpec::Kvroute(kvroute_serve(&[])));
    if epp {
        b = b.epp(EppOptions::default());
    }
    b.start()
}

fn epp_routed(stack: &Stack) -> u64 {
    stack
        .indexer_metric("kvroute_epp_requests_total{reason=\"routed\"}")
        .unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    let n = requests_arg()?;
    let tok =
        tokenizers::Tokenizer::from_file(paths::tokenizers_dir().join("qwen3/tokenizer.json"))
            .map_err(anyhow::Error::msg)?;
    eprintln!("[bench] building {} contexts and questions", n + 2);
    let (contexts, questions) = contexts_and_questions(&tok, n)?;
    let sample = chat(&contexts[0], &questions[0]);

    let none = Stack::builder()
        .backends(3)
        .qwen3()
        .without_filter()
        .start()?;
    let mut paths = [
        Path::new("no routing", none),
        Path::new("wasm filter", routed_stack(false)?),
        Path::new("endpoint picker (ext_proc)", routed_stack(true)?),
    ];
    // First request of each Envoy opens its connections (and loads nothing cold twice).
    let warmup = chat(&contexts[n + 1], &questions[n + 1]);
    for p in &paths {
        post(p.stack.listen(), &warmup)?;
    }
    let hz = ticks_per_second();
    println!(
        "Request: {} body bytes (~7,200 prompt tokens); {n} requests per phase; Envoy --concurrency 1.",
        sample.len()
    );
    println!();
    println!("| phase | path | p50 (ms) | p99 (ms) | added p50 (ms) | added p99 (ms) | Envoy CPU / request (ms) | indexer CPU / request (ms) |");
    println!("|---|---|---|---|---|---|---|---|");
    for (phase, warm) in [("cold", false), ("warm", true)] {
        if warm {
            let prime = chat(&contexts[0], &questions[n + 1]);
            for p in &paths {
                post(p.stack.listen(), &prime)?;
            }
        }
        for p in paths.iter_mut() {
            p.ms.clear();
            let (e, i) = p.ticks()?;
            p.envoy_ticks = e;
            p.indexer_ticks = i;
        }
        for i in 0..n {
            let context = if warm { &contexts[0] } else { &contexts[i + 1] };
            let body = chat(context, &questions[i + 1]);
            for p in paths.iter_mut() {
                let r = post(p.stack.listen(), &body)?;
                p.ms.push(r.elapsed.as_secs_f64() * 1e3);
            }
        }
        let mut base = (0.0, 0.0);
        for (k, p) in paths.iter_mut().enumerate() {
            let (e, i) = p.ticks()?;
            let per = |ticks: u64| ticks as f64 / hz * 1e3 / n as f64;
            let (p50, p99) = (percentile(&mut p.ms, 0.5), percentile(&mut p.ms, 0.99));
            if k == 0 {
                base = (p50, p99);
            }
            println!(
                "| {phase} | {} | {p50:.2} | {p99:.2} | {:.2} | {:.2} | {:.2} | {} |",
                p.name,
                p50 - base.0,
                p99 - base.1,
                per(e - p.envoy_ticks),
                if p.stack.indexer_pid().is_some() {
                    format!("{:.2}", per(i - p.indexer_ticks))
                } else {
                    "-".into()
                }
            );
        }
    }
    let wasm_routed = paths[1].stack.envoy.filter_stat("kvroute_routed")?;
    let epp = epp_routed(&paths[2].stack);
    eprintln!("[bench] routed: wasm filter {wasm_routed}, endpoint picker {epp}");
    if wasm_routed < 2 * n as u64 || epp < 2 * n as u64 {
        bail!("a path did not route every measured request (wasm {wasm_routed}, picker {epp})");
    }
    Ok(())
}
