//! `local-stack`: the README's main job on one machine. Starts `kvroute serve`, N simulated
//! vLLM engines (or points at real ones) and a real Envoy with the kvroute filter (or, with
//! `--epp`, with its ext_proc filter asking kvroute's endpoint picker), sends the
//! seed's `round1` and `round2` through Envoy, prints which engine served each and how many
//! prompt tokens came from its cache, then keeps the stack up for your own requests until
//! Ctrl-C (or exits with `--exit`). `scripts/demo.sh` runs it after setting up.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Parser;
use kvroute_harness::http;
use kvroute_harness::paths;
use kvroute_harness::sim_engine::{cached_tokens, seed_requests};
use kvroute_harness::stack::{
    kvroute_serve_defaults, EppOptions, ExternalEngine, IndexerSpec, KvWiring, SimEngineOptions,
    Stack,
};
use serde_json::{json, Value};

#[derive(Debug, Parser)]
#[command(
    name = "local-stack",
    about = "kvroute on one machine: indexer, engines, Envoy with the filter"
)]
struct Args {
    /// Simulated engines to start (on 127.0.0.2, 127.0.0.3, ...); ignored with --vllm.
    #[arg(long, default_value_t = 3)]
    engines: usize,
    /// Simulated time runs this many times faster than real time.
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// A real vLLM engine's OpenAI server, http://IP:PORT (repeatable); replaces the
    /// simulated engines. Without --vllm-kv the engines publish to the indexer's bound
    /// socket (--zmq-listen): start vLLM with --kv-events-config endpoint
    /// "tcp://INDEXER_IP:5557" and topic "kv@ENGINE_IP@MODEL".
    #[arg(long = "vllm", value_name = "URL")]
    vllm: Vec<String>,
    /// The KV-event PUB socket of the --vllm at the same position, tcp://IP:PORT (vLLM's
    /// --kv-events-config endpoint "tcp://*:PORT"); the indexer connects to it. Give one
    /// for every --vllm, or none.
    #[arg(long = "vllm-kv", value_name = "ENDPOINT")]
    vllm_kv: Vec<String>,
    /// The served model name.
    #[arg(long, default_value = "Qwen3-32B")]
    model: String,
    /// Its tokenizer directory (tokenizer.json, tokenizer_config.json).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// The engines' PYTHONHASHSEED (the seed's pods run 42), given to the indexer, the
    /// filter and the simulated engines; unset, all of them use vLLM's default.
    #[arg(long)]
    hash_seed: Option<String>,
    /// Envoy's listener, where clients send OpenAI requests (0.0.0.0:8080: the network).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Envoy's admin API.
    #[arg(long, default_value = "127.0.0.1:9901")]
    admin: SocketAddr,
    /// `kvroute serve`'s HTTP API (the filter's indexer).
    #[arg(long, default_value = "127.0.0.1:8081")]
    indexer_listen: SocketAddr,
    /// The indexer's ZeroMQ SUB socket, which engines publishing to it connect to.
    #[arg(long, default_value = "127.0.0.1:5557")]
    zmq_listen: SocketAddr,
    /// The simulated engines' serving port (each on its own IP).
    #[arg(long, default_value_t = 8000)]
    engine_port: u16,
    /// An indexer already running (`kvroute serve` started by you, e.g. to restart it under
    /// load): its HTTP address. local-stack then starts no indexer of its own, and
    /// --hash-seed, --zmq-listen and --vllm-kv are the running indexer's business.
    #[arg(long, value_name = "ADDR")]
    indexer: Option<SocketAddr>,
    /// A prebuilt filter module (e.g. target/kvroute_filter.wasm) instead of building it.
    #[arg(long, value_name = "WASM")]
    filter: Option<PathBuf>,
    /// Route through the endpoint picker (Envoy ext_proc to `kvroute serve --epp-listen`,
    /// envoy/epp.yaml.tmpl) instead of the wasm filter.
    #[arg(long)]
    epp: bool,
    /// The endpoint picker's gRPC port on 127.0.0.1 (with --epp).
    #[arg(long, default_value_t = 9002)]
    epp_port: u16,
    /// Exit after the example requests (status 1 if round2 did not follow round1).
    #[arg(long)]
    exit: bool,
    /// Write the example's results as JSON here.
    #[arg(long)]
    summary: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("local-stack: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

/// `http://10.0.0.5:8000` -> its socket address (a name is resolved once: Envoy's
/// original-destination routing and the indexer both name engines by IP).
fn engine_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let host_port = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    host_port
        .to_socket_addrs()
        .with_context(|| format!("--vllm {url}: expected http://IP:PORT"))?
        .find(SocketAddr::is_ipv4)
        .with_context(|| format!("--vllm {url}: no IPv4 address"))
}

fn start_stack(args: &Args) -> anyhow::Result<Stack> {
    let tokenizer = args
        .tokenizer
        .clone()
        .unwrap_or_else(|| paths::tokenizers_dir().join("qwen3"));
    let seed_args: Vec<&str> = match &args.hash_seed {
        Some(seed) => vec!["--hash-seed", seed],
        None => Vec::new(),
    };
    let mut builder = Stack::builder()
        .model(&args.model, tokenizer)
        .envoy_addrs(args.listen, args.admin)
        .indexer_listen(args.indexer_listen)
        .zmq_listen(args.zmq_listen)
        .indexer(match args.indexer {
            Some(addr) => IndexerSpec::External(addr),
            None => IndexerSpec::Kvroute(kvroute_serve_defaults(&seed_args)),
        });
    if let Some(seed) = &args.hash_seed {
        builder = builder.plugin(json!({ "hash_seed": seed }));
    }
    if let Some(wasm) = &args.filter {
        if !wasm.is_file() {
            bail!("--filter {}: no such file", wasm.display());
        }
        builder = builder.filter_wasm(wasm.clone());
    }
    if args.epp {
        builder = builder.epp(EppOptions {
            port: Some(args.epp_port),
            ..EppOptions::default()
        });
    }
    if args.vllm.is_empty() {
        let mut sim = SimEngineOptions::new(args.engines);
        sim.port = Some(args.engine_port);
        sim.zmq_port = Some(args.zmq_listen.port());
        sim.time_scale = args.time_scale;
        sim.wiring = KvWiring::EnginesConnect;
        sim.hash_seed = args.hash_seed.clone();
        builder = builder.sim_engines(sim);
    } else {
        if !args.vllm_kv.is_empty() && args.vllm_kv.len() != args.vllm.len() {
            bail!(
                "give every --vllm its --vllm-kv tcp://IP:PORT (vLLM binds: --kv-events-config \
                 endpoint \"tcp://*:5557\"), or none (vLLM connects to the indexer: endpoint \
                 \"tcp://{}\")",
                args.zmq_listen
            );
        }
        let engines = args
            .vllm
            .iter()
            .enumerate()
            .map(|(i, url)| {
                Ok(ExternalEngine {
                    http: engine_addr(url)?,
                    kv: args.vllm_kv.get(i).cloned(),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        builder = builder.external_engines(engines);
    }
    builder.start()
}

/// One example request's outcome.
struct Outcome {
    name: String,
    served_by: Option<String>,
    routed_to: Option<String>,
    matched_blocks: u64,
    prompt_tokens: Option<u64>,
    cached_tokens: Option<u64>,
}

impl Outcome {
    fn engine(&self) -> Option<&str> {
        self.served_by.as_deref().or(self.routed_to.as_deref())
    }

    fn json(&self) -> Value {
        json!({
            "name": self.name, "served_by": self.engine(), "routed_to": self.routed_to,
            "matched_blocks": self.matched_blocks, "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
        })
    }
}

fn send_example(stack: &Stack, entry: &Value) -> anyhow::Result<Outcome> {
    let name = entry["name"].as_str().unwrap_or("?").to_string();
    let path = entry["endpoint"]
        .as_str()
        .context("request without endpoint")?;
    let r = http::post_json(
        stack.listen(),
        path,
        entry["request"].to_string().as_bytes(),
    )?;
    if r.status != 200 {
        bail!(
            "{name}: status {} {}\n{}",
            r.status,
            String::from_utf8_lossy(&r.body),
            stack.logs()
        );
    }
    let answer = r.json()?;
    Ok(Outcome {
        name,
        served_by: r.header("x-served-by").map(str::to_string),
        routed_to: r.header("x-kvroute-endpoint").map(str::to_string),
        matched_blocks: r
            .header("x-kvroute-matched-blocks")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        prompt_tokens: answer["usage"]["prompt_tokens"].as_u64(),
        cached_tokens: cached_tokens(&answer),
    })
}

/// `epp`: the picker path, whose answers carry no debug headers (the filter's do).
fn print_outcome(o: &Outcome, epp: bool) {
    let show = |v: Option<u64>| v.map_or("n/a".to_string(), |n| n.to_string());
    let how = if epp {
        "(endpoint picker)".to_string()
    } else {
        format!("(filter matched {} blocks)", o.matched_blocks)
    };
    println!(
        "{:<7} served by {:<18} prompt tokens {:>4}, from cache {:>4} {how}",
        o.name,
        o.engine().unwrap_or("? (fail-open)"),
        show(o.prompt_tokens),
        show(o.cached_tokens),
    );
}

/// Ctrl-C and SIGTERM, caught from the start: the stack's processes run in their own
/// sessions, so only dropping the stack stops them, and an interrupted start must not
/// leave them behind (the stack is dropped as soon as it is up).
fn stop_signal() -> anyhow::Result<std::sync::mpsc::Receiver<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut interrupt, mut terminate) = {
        let _entered = runtime.enter();
        (
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        )
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        runtime.block_on(async {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        });
        let _ = tx.send(());
    });
    Ok(rx)
}

fn run(args: &Args) -> anyhow::Result<bool> {
    let stop = stop_signal()?;
    eprintln!("starting kvroute serve, engines and Envoy (first run builds the filter)...");
    let stack = start_stack(args)?;
    if stop.try_recv().is_ok() {
        eprintln!("stopping");
        return Ok(false);
    }
    let engines: Vec<String> = stack.pods.iter().map(|p| p.to_string()).collect();
    let picker = stack
        .epp_addr
        .map(|a| format!("  endpoint picker grpc://{a}"))
        .unwrap_or_default();
    println!(
        "stack up: Envoy http://{}  kvroute serve http://{}{picker}  engines {}",
        stack.listen(),
        stack.indexer_addr,
        engines.join(" ")
    );
    if !args.vllm.is_empty() && args.vllm_kv.is_empty() && args.indexer.is_none() {
        println!(
            "engines publish to the indexer: vLLM --kv-events-config endpoint \"tcp://{}\", topic \"kv@<engine IP>@{}\"",
            args.zmq_listen, args.model
        );
    }
    let requests = seed_requests()?;
    let mut outcomes = Vec::new();
    for name in ["round1", "round2"] {
        let entry = requests
            .iter()
            .find(|r| r["name"] == name)
            .with_context(|| format!("no {name} in requests.json"))?;
        let outcome = send_example(&stack, entry)?;
        print_outcome(&outcome, args.epp);
        if let Some(engine) = outcome.engine() {
            stack.wait_for_blocks(engine);
        }
        outcomes.push(outcome);
    }
    let (first, second) = (&outcomes[0], &outcomes[1]);
    let followed = first.engine().is_some()
        && first.engine() == second.engine()
        && second.cached_tokens.unwrap_or(0) > 0;
    if followed {
        println!(
            "round2 went to round1's engine and reused {} cached prompt tokens: precise prefix-cache routing works",
            second.cached_tokens.unwrap_or(0)
        );
    } else {
        println!(
            "round2 did NOT reuse round1's cache (engines {:?} then {:?}); logs in {}",
            first.engine(),
            second.engine(),
            stack.log_dir().display()
        );
    }
    if let Some(path) = &args.summary {
        let summary = json!({
            "engines": engines,
            "requests": outcomes.iter().map(Outcome::json).collect::<Vec<_>>(),
            "round2_followed_round1": followed,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.exit {
        return Ok(followed);
    }
    println!();
    println!("The stack keeps running; send your own requests through Envoy, e.g.:");
    println!(
        "  curl -s -D - http://{}/v1/chat/completions -H 'content-type: application/json' \\\n    -d '{{\"model\":\"{}\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hello!\"}}],\"max_tokens\":16}}'",
        stack.listen(),
        args.model
    );
    println!(
        "  (x-kvroute-endpoint: the engine the filter picked, x-kvroute-matched-blocks: the\n  \
         cached blocks it held; simulated engines also answer x-served-by)\n  \
         indexer: curl -s http://{}/v1/pods    logs: {}",
        stack.indexer_addr,
        stack.log_dir().display()
    );
    println!("Ctrl-C stops everything.");
    // A closed channel (the signal thread gone) also means stop.
    let _ = stop.recv();
    eprintln!("stopping");
    drop(stack);
    Ok(followed)
}
