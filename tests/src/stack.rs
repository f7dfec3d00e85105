//! `Stack`: a whole kvroute deployment on loopback for one test or benchmark. Envoy (with
//! or without the filter), N backends, and an indexer (the real `kvroute serve`, a scripted
//! stand-in, or one the caller runs), all on free ports, all stopped on drop.
//!
//! ```no_run
//! # use kvroute_tests::stack::{Stack, IndexerSpec};
//! # use kvroute_tests::scripted_indexer::RouteScript;
//! let stack = Stack::builder()
//!     .backends(3)
//!     .qwen3()
//!     .indexer(IndexerSpec::Scripted(RouteScript::Hang))
//!     .start()?;
//! let r = stack.chat(&serde_json::json!({"model": "Qwen3-32B", "messages": []}))?;
//! # anyhow::Ok(())
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use std::sync::Arc;

use anyhow::{bail, Context};
use kvroute_blockhash::HashConfig;

use crate::backend::Backend;
use crate::envoy::{Envoy, EnvoyConfig};
use crate::http::{self, Response};
use crate::kv_engine::{KvModel, KvPublisher};
use crate::paths;
use crate::ports::free_port;
use crate::process::{wait_until, ManagedProcess};
use crate::scripted_indexer::{RouteScript, ScriptedIndexer};

/// The model name the seed uses, served with the real Qwen3 tokenizer.
pub const QWEN3_MODEL: &str = "Qwen3-32B";

/// Ports and peers handed to the function that builds `kvroute serve`'s arguments.
#[derive(Debug, Clone)]
pub struct IndexerPorts {
    pub http: SocketAddr,
    pub zmq: u16,
    pub backends: Vec<SocketAddr>,
    /// Model name -> tokenizer directory.
    pub models: BTreeMap<String, PathBuf>,
}

/// Builds `kvroute serve`'s command line for a stack.
pub type IndexerArgs = Box<dyn Fn(&IndexerPorts) -> Vec<String>>;

/// `kvroute serve` arguments for a stack: its HTTP and ZeroMQ (bind) addresses, every
/// backend as a known engine (by IP, serving port common to all), the stack's models, and
/// `extra` flags.
pub fn kvroute_serve(extra: &[&str]) -> IndexerArgs {
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    Box::new(move |p: &IndexerPorts| {
        let mut args = vec![
            "serve".to_string(),
            "--listen".into(),
            p.http.to_string(),
            "--zmq-bind".into(),
            format!("tcp://127.0.0.1:{}", p.zmq),
            "--scrape-interval-ms".into(),
            "60000".into(),
        ];
        if let Some(port) = p.backends.first().map(|b| b.port()) {
            args.extend(["--engine-port".to_string(), port.to_string()]);
        }
        for b in &p.backends {
            args.extend(["--engine".to_string(), b.ip().to_string()]);
        }
        for (name, dir) in &p.models {
            args.extend(["--model".to_string(), format!("{name}={}", dir.display())]);
        }
        args.extend(extra.iter().cloned());
        args
    })
}

/// Which indexer the stack's `kvroute_indexer` cluster points at.
pub enum IndexerSpec {
    /// A stand-in that serves the tokenizers and answers route calls as scripted
    /// ([`RouteScript::CycleBackends`] cycles through this stack's backends).
    Scripted(RouteScript),
    /// The real `kvroute serve`, started with these arguments.
    Kvroute(IndexerArgs),
    /// An indexer the caller runs.
    External(SocketAddr),
}

pub struct StackBuilder {
    backends: usize,
    concurrency: usize,
    filter: bool,
    plugin: serde_json::Map<String, serde_json::Value>,
    models: BTreeMap<String, PathBuf>,
    indexer: IndexerSpec,
    wait_tokenizers: bool,
    buffer_max_bytes: usize,
    kv_engines: bool,
}

impl StackBuilder {
    pub fn backends(mut self, n: usize) -> Self {
        self.backends = n;
        self
    }

    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// The same Envoy without the wasm and buffer filters (baseline for benchmarks).
    pub fn without_filter(mut self) -> Self {
        self.filter = false;
        self
    }

    /// Merge these keys into the plugin configuration.
    pub fn plugin(mut self, config: serde_json::Value) -> Self {
        if let serde_json::Value::Object(map) = config {
            self.plugin.extend(map);
        }
        self
    }

    /// Serve `name` with the tokenizer files in `dir`.
    pub fn model(mut self, name: &str, dir: PathBuf) -> Self {
        self.models.insert(name.to_string(), dir);
        self
    }

    /// The seed's model with the real Qwen3 tokenizer.
    pub fn qwen3(self) -> Self {
        let dir = paths::tokenizers_dir().join("qwen3");
        self.model(QWEN3_MODEL, dir)
    }

    pub fn indexer(mut self, spec: IndexerSpec) -> Self {
        self.indexer = spec;
        self
    }

    /// Do not wait for the filter's tokenizers before returning from `start`.
    pub fn no_tokenizer_wait(mut self) -> Self {
        self.wait_tokenizers = false;
        self
    }

    /// Backends publish KV events of every prompt to the indexer (which must be
    /// [`IndexerSpec::Kvroute`], e.g. with [`kvroute_serve`] arguments).
    pub fn kv_engines(mut self) -> Self {
        self.kv_engines = true;
        self
    }

    pub fn buffer_max_bytes(mut self, n: usize) -> Self {
        self.buffer_max_bytes = n;
        self
    }

    pub fn start(self) -> anyhow::Result<Stack> {
        static STACKS: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "kvroute-e2e-{}-{}",
            std::process::id(),
            STACKS.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        // KV-event engines get one loopback IP each (127.0.0.2, .3, ...) and a common port,
        // as pods do in a cluster: the indexer names an engine by its IP plus the serving
        // port. They start after the indexer, whose SUB socket they connect to.
        let kv_port = if self.kv_engines { free_port()? } else { 0 };
        let mut backends = if self.kv_engines {
            Vec::new()
        } else {
            (0..self.backends)
                .map(|i| Backend::start(&runtime, &format!("backend-{i}")))
                .collect::<anyhow::Result<Vec<_>>>()?
        };
        let pods: Vec<SocketAddr> = if self.kv_engines {
            (0..self.backends)
                .map(|i| SocketAddr::from(([127, 0, 0, 2 + i as u8], kv_port)))
                .collect()
        } else {
            backends.iter().map(|b| b.addr).collect()
        };
        let mut zmq_port = 0;

        let mut scripted = None;
        let mut indexer_process = None;
        let indexer_addr = match self.indexer {
            IndexerSpec::Scripted(script) => {
                let script = match script {
                    RouteScript::CycleBackends => RouteScript::Cycle(pods.clone()),
                    other => other,
                };
                let f = ScriptedIndexer::start(self.models.clone(), script)?;
                let addr = f.addr;
                scripted = Some(f);
                addr
            }
            IndexerSpec::External(addr) => addr,
            IndexerSpec::Kvroute(args) => {
                zmq_port = free_port()?;
                let ports = IndexerPorts {
                    http: SocketAddr::from(([127, 0, 0, 1], free_port()?)),
                    zmq: zmq_port,
                    backends: pods.clone(),
                    models: self.models.clone(),
                };
                let proc = ManagedProcess::spawn(
                    "kvroute serve",
                    &paths::kvroute_bin()?,
                    &args(&ports),
                    dir.join("indexer.log"),
                )?;
                let ready = wait_until(Duration::from_secs(20), || {
                    http::send(ports.http, "GET", "/readyz", &[], b"")
                        .is_ok_and(|r| r.status == 200)
                });
                if !ready {
                    bail!(
                        "kvroute serve did not become ready\n{}",
                        proc.log_tail(4000)
                    );
                }
                indexer_process = Some(proc);
                ports.http
            }
        };

        if self.kv_engines {
            let (name, dir) = self
                .models
                .iter()
                .next()
                .context("kv engines need a model")?;
            let model = Arc::new(KvModel::load(name, dir, HashConfig::default())?);
            for (i, pod) in pods.iter().enumerate() {
                let ip = pod.ip().to_string();
                let zmq = format!("tcp://127.0.0.1:{zmq_port}");
                let publisher = runtime.block_on(KvPublisher::connect(model.clone(), &ip, &zmq))?;
                backends.push(Backend::start_with(
                    &runtime,
                    &format!("backend-{i}"),
                    *pod,
                    Some(Arc::new(publisher)),
                )?);
            }
            // A PUB socket drops messages until the subscription reaches it.
            std::thread::sleep(Duration::from_millis(500));
        }

        let mut plugin = self.plugin;
        if !plugin.contains_key("models") {
            let models: serde_json::Map<String, serde_json::Value> = self
                .models
                .keys()
                .map(|m| (m.clone(), serde_json::json!({})))
                .collect();
            plugin.insert("models".into(), serde_json::Value::Object(models));
        }
        let filter_tokenizes = plugin
            .get("tokenize_in")
            .and_then(|v| v.as_str())
            .unwrap_or("filter")
            == "filter";
        let plugin_config = serde_json::Value::Object(plugin).to_string();
        let (listen_port, admin_port) = Envoy::free_ports()?;
        let config = EnvoyConfig {
            listen_address: "127.0.0.1".into(),
            listen_port,
            admin_port,
            wasm_path: if self.filter {
                Some(paths::filter_wasm()?)
            } else {
                None
            },
            plugin_config,
            pods,
            indexer: indexer_addr,
            buffer_max_bytes: self.buffer_max_bytes,
        };
        let mut envoy = Envoy::start(&config, self.concurrency, &dir)?;
        if self.filter && self.wait_tokenizers && filter_tokenizes && !self.models.is_empty() {
            let loads = (self.concurrency * self.models.len()) as u64;
            envoy.wait_tokenizers(loads, Duration::from_secs(60))?;
        }
        Ok(Stack {
            envoy,
            backends,
            indexer_addr,
            scripted,
            indexer_process,
            dir,
            _runtime: runtime,
        })
    }
}

/// A running deployment; everything stops when it is dropped.
pub struct Stack {
    pub envoy: Envoy,
    pub backends: Vec<Backend>,
    pub indexer_addr: SocketAddr,
    scripted: Option<ScriptedIndexer>,
    indexer_process: Option<ManagedProcess>,
    dir: PathBuf,
    _runtime: tokio::runtime::Runtime,
}

impl Stack {
    pub fn builder() -> StackBuilder {
        StackBuilder {
            backends: 3,
            concurrency: 1,
            filter: true,
            plugin: serde_json::Map::from_iter([
                ("call_timeout_ms".to_string(), serde_json::json!(50)),
                ("debug_headers".to_string(), serde_json::json!(true)),
            ]),
            models: BTreeMap::new(),
            indexer: IndexerSpec::Scripted(RouteScript::Hang),
            wait_tokenizers: true,
            buffer_max_bytes: 16 << 20,
            kv_engines: false,
        }
    }

    /// Where clients send requests.
    pub fn listen(&self) -> SocketAddr {
        self.envoy.listen
    }

    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> anyhow::Result<Response> {
        http::send(self.listen(), method, path, headers, body)
    }

    /// POST a chat completion body through Envoy.
    pub fn chat(&self, body: &serde_json::Value) -> anyhow::Result<Response> {
        http::post_json(
            self.listen(),
            "/v1/chat/completions",
            body.to_string().as_bytes(),
        )
    }

    /// Which backend served a response (its `x-served-by` header).
    pub fn served_by(response: &Response) -> anyhow::Result<String> {
        response
            .header("x-served-by")
            .map(str::to_string)
            .with_context(|| {
                format!(
                    "no x-served-by (status {}): {}",
                    response.status,
                    String::from_utf8_lossy(&response.body)
                )
            })
    }

    /// The scripted indexer stand-in, when the stack runs one.
    pub fn scripted_indexer(&self) -> Option<&ScriptedIndexer> {
        self.scripted.as_ref()
    }

    /// Kill the indexer (real or stand-in): its port closes.
    pub fn kill_indexer(&mut self) {
        if let Some(f) = self.scripted.as_mut() {
            f.kill();
        }
        if let Some(p) = self.indexer_process.as_mut() {
            p.kill();
        }
    }

    /// Logs of every process, for assertion messages.
    pub fn logs(&self) -> String {
        let mut out = self.envoy.log_tail();
        if let Some(p) = &self.indexer_process {
            out.push('\n');
            out.push_str(&p.log_tail(4000));
        }
        out
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::env::var_os("KVROUTE_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
