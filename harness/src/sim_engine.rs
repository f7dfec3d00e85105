//! Simulated vLLM engines as real processes (`kvroute-engine-sim`) for tests, benchmarks and
//! the local stack: each on its own loopback IP (the indexer names engines by IP and a
//! serving port common to all, as pods in a cluster), publishing vLLM-format KV events over
//! real ZeroMQ, either connecting to the indexer's bound socket or binding their own.
//!
//! ```no_run
//! # use kvroute_harness::sim_engine::{SimEngine, SimEngineArgs, KvLink};
//! let args = SimEngineArgs::qwen3([127, 0, 0, 2].into(), 18000)
//!     .kv(KvLink::Connect("tcp://127.0.0.1:5557".into()))
//!     .time_scale(20.0);
//! let engine = SimEngine::start(&args, std::env::temp_dir().as_path())?;
//! let answer = engine.post("/v1/chat/completions", &serde_json::json!({
//!     "model": "Qwen3-32B", "messages": [{"role": "user", "content": "hi"}]}))?;
//! # anyhow::Ok(())
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::http::{self, Response};
use crate::paths;
use crate::process::{wait_until, ManagedProcess};
use crate::stack::QWEN3_MODEL;

/// How an engine's KV events reach the indexer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvLink {
    /// No KV events (vLLM's default).
    None,
    /// The engine's PUB connects to the indexer's bound SUB (`--kv-connect`).
    Connect(String),
    /// The engine's PUB binds here (`--kv-bind`); the indexer connects.
    Bind(String),
}

/// One engine's command line.
#[derive(Debug, Clone)]
pub struct SimEngineArgs {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub model: String,
    pub tokenizer: PathBuf,
    pub time_scale: f64,
    pub kv: KvLink,
    /// `0.3x` (maps, the default) or `0.10` (arrays).
    pub kv_wire: String,
    /// Bind the replay ROUTER on this port of the engine's IP.
    pub replay_port: Option<u16>,
    /// The engines' PYTHONHASHSEED (the seed's pods run 42).
    pub hash_seed: Option<String>,
    /// Any other `kvroute-engine-sim` flags (`--kv-capacity-tokens`, ...).
    pub extra: Vec<String>,
}

impl SimEngineArgs {
    /// The seed's model with the real Qwen3 tokenizer, real time, no KV events.
    pub fn qwen3(ip: Ipv4Addr, port: u16) -> Self {
        Self {
            ip,
            port,
            model: QWEN3_MODEL.to_string(),
            tokenizer: paths::tokenizers_dir().join("qwen3"),
            time_scale: 1.0,
            kv: KvLink::None,
            kv_wire: "0.3x".into(),
            replay_port: None,
            hash_seed: None,
            extra: Vec::new(),
        }
    }

    pub fn kv(mut self, link: KvLink) -> Self {
        self.kv = link;
        self
    }

    pub fn time_scale(mut self, scale: f64) -> Self {
        self.time_scale = scale;
        self
    }

    pub fn kv_wire(mut self, wire: &str) -> Self {
        self.kv_wire = wire.to_string();
        self
    }

    pub fn hash_seed(mut self, seed: &str) -> Self {
        self.hash_seed = Some(seed.to_string());
        self
    }

    pub fn replay_port(mut self, port: u16) -> Self {
        self.replay_port = Some(port);
        self
    }

    pub fn arg(mut self, flag: &str, value: &str) -> Self {
        self.extra.extend([flag.to_string(), value.to_string()]);
        self
    }

    /// The `kvroute-engine-sim` command line.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "--host".to_string(),
            self.ip.to_string(),
            "--port".into(),
            self.port.to_string(),
            "--model".into(),
            self.model.clone(),
            "--tokenizer".into(),
            self.tokenizer.display().to_string(),
            "--time-scale".into(),
            self.time_scale.to_string(),
            "--kv-wire".into(),
            self.kv_wire.clone(),
        ];
        match &self.kv {
            KvLink::None => {}
            KvLink::Connect(addr) => args.extend(["--kv-connect".to_string(), addr.clone()]),
            KvLink::Bind(addr) => args.extend(["--kv-bind".to_string(), addr.clone()]),
        }
        if let Some(port) = self.replay_port {
            args.extend([
                "--kv-replay-bind".to_string(),
                format!("tcp://{}:{port}", self.ip),
            ]);
        }
        if let Some(seed) = &self.hash_seed {
            args.extend(["--hash-seed".to_string(), seed.clone()]);
        }
        args.extend(self.extra.iter().cloned());
        args
    }
}

/// A running `kvroute-engine-sim`; killed when dropped.
pub struct SimEngine {
    /// `ip:port`: what the engine puts in `x-served-by` and the indexer routes to.
    pub name: String,
    pub addr: SocketAddr,
    process: ManagedProcess,
    args: SimEngineArgs,
    dir: PathBuf,
}

impl SimEngine {
    /// Starts the engine (log in `dir`) and waits until `/health` answers.
    pub fn start(args: &SimEngineArgs, dir: &Path) -> anyhow::Result<Self> {
        let addr = SocketAddr::from((args.ip, args.port));
        let process = ManagedProcess::spawn(
            &format!("engine {addr}"),
            &engine_sim_bin()?,
            &args.to_args(),
            dir.join(format!("engine-{}-{}.log", args.ip, args.port)),
        )?;
        let mut engine = Self {
            name: addr.to_string(),
            addr,
            process,
            args: args.clone(),
            dir: dir.to_path_buf(),
        };
        let ready = wait_until(Duration::from_secs(30), || {
            http::send(addr, "GET", "/health", &[], b"").is_ok_and(|r| r.status == 200)
        });
        if !ready {
            let log = engine.log_tail(4000);
            engine.process.kill();
            bail!("engine {addr} did not become healthy\n{log}");
        }
        Ok(engine)
    }

    pub fn log_tail(&self, max_bytes: usize) -> String {
        self.process.log_tail(max_bytes)
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// SIGKILL, as a crashed or evicted pod: no goodbye on any socket.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Start the same engine again (killing it first if it runs), with an empty cache, and
    /// wait until `/health` answers.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        *self = Self::start(&self.args.clone(), &self.dir.clone())?;
        Ok(())
    }

    /// POST a JSON body to the engine itself (not through Envoy).
    pub fn post(&self, path: &str, body: &serde_json::Value) -> anyhow::Result<Response> {
        http::post_json(self.addr, path, body.to_string().as_bytes())
    }

    /// The engine's Prometheus page.
    pub fn metrics(&self) -> anyhow::Result<String> {
        let r = http::send(self.addr, "GET", "/metrics", &[], b"")?;
        Ok(String::from_utf8_lossy(&r.body).into_owned())
    }
}

/// `usage.prompt_tokens_details.cached_tokens` of a whole answer or a stream's usage chunk.
pub fn cached_tokens(answer: &serde_json::Value) -> Option<u64> {
    answer
        .pointer("/usage/prompt_tokens_details/cached_tokens")
        .and_then(serde_json::Value::as_u64)
}

/// The JSON events of a server-sent-events body, up to `data: [DONE]` (whether it came
/// is the second value).
pub fn sse_events(body: &[u8]) -> anyhow::Result<(Vec<serde_json::Value>, bool)> {
    let text = std::str::from_utf8(body).context("SSE body is not UTF-8")?;
    let mut events = Vec::new();
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            return Ok((events, true));
        }
        events.push(serde_json::from_str(data).with_context(|| format!("SSE data {data:?}"))?);
    }
    Ok((events, false))
}

/// The `kvroute-engine-sim` binary, built (or found up to date) by cargo once per process.
/// `KVROUTE_ENGINE_SIM_BIN` overrides it.
pub fn engine_sim_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("KVROUTE_ENGINE_SIM_BIN") {
        return Ok(PathBuf::from(p));
    }
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = paths::repo_root();
            let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
                .args([
                    "build",
                    "-q",
                    "-p",
                    "kvroute-engine-sim",
                    "--bin",
                    "kvroute-engine-sim",
                ])
                .current_dir(&root)
                .status()
                .map_err(|e| format!("cannot run cargo: {e}"))?;
            if !status.success() {
                return Err("cargo build -p kvroute-engine-sim failed".into());
            }
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("target"));
            Ok(target.join("debug").join("kvroute-engine-sim"))
        })
        .clone()
        .map_err(anyhow::Error::msg)
        .context("building kvroute-engine-sim")
}

/// The seed's captured requests (`testdata/vllm-0.32/requests.json`), in the order real
/// vLLM 0.32 served them, each with the prompt and cached tokens vLLM reported.
pub fn seed_requests() -> anyhow::Result<Vec<serde_json::Value>> {
    kvroute_testdata::vllm_requests()["requests"]
        .as_array()
        .cloned()
        .context("requests.json has no requests array")
}

/// One seed request's body by name (`round1`, `round2`, ...).
pub fn seed_request(name: &str) -> anyhow::Result<serde_json::Value> {
    seed_requests()?
        .into_iter()
        .find(|r| r["name"] == name)
        .map(|r| r["request"].clone())
        .with_context(|| format!("no seed request {name}"))
}
