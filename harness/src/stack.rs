//! `Stack`: a whole kvroute deployment on loopback for one test or benchmark. Envoy (with
//! or without the filter), N engines, and an indexer (the real `kvroute serve`, a scripted
//! stand-in, or one the caller runs), all on free ports, all stopped on drop.
//!
//! Engines are one of: minimal in-process [`Backend`]s (default; with [`StackBuilder::kv_engines`]
//! they publish each prompt's blocks), simulated vLLM engines ([`StackBuilder::sim_engines`]:
//! `kvroute-engine-sim` processes with a real prefix cache, timing and KV events), or real
//! engines the caller runs ([`StackBuilder::external_engines`], e.g. vLLM pods).
//!
//! ```no_run
//! # use kvroute_harness::stack::{Stack, IndexerSpec};
//! # use kvroute_harness::scripted_indexer::RouteScript;
//! let stack = Stack::builder()
//!     .backends(3)
//!     .qwen3()
//!     .indexer(IndexerSpec::Scripted(RouteScript::Hang))
//!     .start()?;
//! let r = stack.chat(&serde_json::json!({"model": "Qwen3-32B", "messages": []}))?;
//! # anyhow::Ok(())
//! ```

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use std::sync::Arc;

use anyhow::{bail, Context};
use kvroute_blockhash::HashConfig;

use crate::backend::Backend;
use crate::envoy::{Envoy, EnvoyConfig, EppBodyMode, PodsLbPolicy};
use crate::http::{self, Response};
use crate::kv_engine::{KvModel, KvPublisher};
use crate::paths;
use crate::ports::free_port;
use crate::process::{wait_until, ManagedProcess};
use crate::scripted_indexer::{RouteScript, ScriptedIndexer};
use crate::sim_engine::{KvLink, SimEngine, SimEngineArgs};

/// The model name the seed uses, served with the real Qwen3 tokenizer.
pub const QWEN3_MODEL: &str = "Qwen3-32B";

/// Ports and peers handed to the function that builds `kvroute serve`'s arguments.
#[derive(Debug, Clone)]
pub struct IndexerPorts {
    pub http: SocketAddr,
    pub zmq: u16,
    /// The IP the ZeroMQ SUB socket binds ([`IndexerKv::Bind`]).
    pub zmq_ip: std::net::IpAddr,
    pub backends: Vec<SocketAddr>,
    /// Model name -> tokenizer directory.
    pub models: BTreeMap<String, PathBuf>,
    /// How KV events reach the indexer.
    pub kv: IndexerKv,
}

/// The indexer's side of the KV-event wiring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexerKv {
    /// Bind a SUB socket on `zmq_ip`:`zmq` (`--zmq-bind`); engines connect, and offer
    /// replay on this port when they do.
    Bind { replay_port: Option<u16> },
    /// Connect to each engine's PUB socket: `--engine` specs `HOST:ZMQ_PORT[=HTTP_PORT]`,
    /// and the engines' replay port when they offer one.
    Connect {
        engines: Vec<String>,
        replay_port: Option<u16>,
    },
}

/// Builds `kvroute serve`'s command line for a stack.
pub type IndexerArgs = Box<dyn Fn(&IndexerPorts) -> Vec<String>>;

/// `kvroute serve` arguments for a stack: its HTTP and ZeroMQ (bind) addresses, every
/// backend as a known engine (by IP, serving port common to all), the stack's models, and
/// `extra` flags. Load scrapes are slowed to once a minute, so a test's routing depends on
/// what it sends, not on when a scrape lands.
pub fn kvroute_serve(extra: &[&str]) -> IndexerArgs {
    let mut all = vec!["--scrape-interval-ms", "60000"];
    all.extend_from_slice(extra);
    kvroute_serve_defaults(&all)
}

/// [`kvroute_serve`] with `kvroute serve`'s own defaults for everything else (what a user
/// running it gets: `local-stack`, the demo).
pub fn kvroute_serve_defaults(extra: &[&str]) -> IndexerArgs {
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    Box::new(move |p: &IndexerPorts| {
        let mut args = vec!["serve".to_string(), "--listen".into(), p.http.to_string()];
        if let Some(port) = p.backends.first().map(|b| b.port()) {
            args.extend(["--engine-port".to_string(), port.to_string()]);
        }
        match &p.kv {
            IndexerKv::Bind { replay_port } => {
                args.extend([
                    "--zmq-bind".to_string(),
                    format!("tcp://{}", SocketAddr::new(p.zmq_ip, p.zmq)),
                ]);
                for b in &p.backends {
                    args.extend(["--engine".to_string(), b.ip().to_string()]);
                }
                if let Some(port) = replay_port {
                    args.extend(["--replay-port".to_string(), port.to_string()]);
                }
            }
            IndexerKv::Connect {
                engines,
                replay_port,
            } => {
                for e in engines {
                    args.extend(["--engine".to_string(), e.clone()]);
                }
                if let Some(port) = replay_port {
                    args.extend(["--replay-port".to_string(), port.to_string()]);
                }
            }
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

/// How simulated engines' KV events meet the indexer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvWiring {
    /// Engines connect to the indexer's bound socket (the seed's vLLM configuration).
    EnginesConnect,
    /// Each engine binds its PUB (and replay ROUTER) socket; the indexer connects.
    IndexerConnects,
}

/// Simulated engines for a stack: `kvroute-engine-sim` processes on 127.0.0.2, .3, ...
/// sharing one serving port.
#[derive(Debug, Clone)]
pub struct SimEngineOptions {
    pub count: usize,
    /// The serving port common to all engines; `None`: a free one.
    pub port: Option<u16>,
    /// 10: simulated time runs ten times faster than real time.
    pub time_scale: f64,
    /// `0.3x` or `0.10`.
    pub kv_wire: String,
    pub wiring: KvWiring,
    /// ZeroMQ port of the engines' PUB sockets ([`KvWiring::IndexerConnects`]) or of the
    /// indexer's SUB ([`KvWiring::EnginesConnect`]); `None`: a free one.
    pub zmq_port: Option<u16>,
    /// Engines offer a replay socket (and the indexer is told its port).
    pub replay: bool,
    /// The engines' PYTHONHASHSEED; give the indexer the same `--hash-seed` to index
    /// natively, or not, and it re-keys.
    pub hash_seed: Option<String>,
    /// More `kvroute-engine-sim` flags for every engine.
    pub extra_args: Vec<String>,
}

impl SimEngineOptions {
    pub fn new(count: usize) -> Self {
        Self {
            count,
            port: None,
            time_scale: 20.0,
            kv_wire: "0.3x".into(),
            wiring: KvWiring::EnginesConnect,
            zmq_port: None,
            replay: false,
            hash_seed: None,
            extra_args: Vec::new(),
        }
    }
}

/// An engine the caller runs (a real vLLM): its OpenAI server and, when the indexer should
/// connect to it, its KV-event PUB endpoint `tcp://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalEngine {
    pub http: SocketAddr,
    pub kv: Option<String>,
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
    pods_lb_policy: PodsLbPolicy,
    kv_engines: bool,
    sim: Option<SimEngineOptions>,
    external: Vec<ExternalEngine>,
    envoy_addrs: Option<(SocketAddr, SocketAddr)>,
    filter_wasm: Option<PathBuf>,
    indexer_listen: Option<SocketAddr>,
    zmq_listen: Option<SocketAddr>,
    indexer_replicas: usize,
    epp: Option<EppOptions>,
}

/// The endpoint picker path: `kvroute serve --epp-listen` and Envoy's ext_proc filter
/// (`envoy/epp.yaml.tmpl`) instead of the wasm filter.
#[derive(Debug, Clone)]
pub struct EppOptions {
    /// The picker's port on 127.0.0.1; `None`: a free one.
    pub port: Option<u16>,
    /// ext_proc's `message_timeout`.
    pub message_timeout: Duration,
    pub body_mode: EppBodyMode,
}

impl Default for EppOptions {
    fn default() -> Self {
        Self {
            port: None,
            message_timeout: crate::envoy::EPP_MESSAGE_TIMEOUT,
            body_mode: EppBodyMode::default(),
        }
    }
}

impl StackBuilder {
    /// Run `n` replicas of [`IndexerSpec::Kvroute`], each with the same arguments on its
    /// own HTTP port, all in Envoy's indexer cluster (several replicas fit the wiring where
    /// the indexer dials the engines: [`KvWiring::IndexerConnects`]); the filter is told
    /// `indexer_replicas: n`.
    pub fn indexer_replicas(mut self, n: usize) -> Self {
        self.indexer_replicas = n.max(1);
        // Each completion goes to every replica (only the deciding one knows its ticket).
        self.plugin.insert(
            "indexer_replicas".to_string(),
            serde_json::json!(self.indexer_replicas),
        );
        self
    }

    /// Route through the endpoint picker (ext_proc) instead of the wasm filter; the
    /// indexer must be [`IndexerSpec::Kvroute`] (it serves the picker).
    pub fn epp(mut self, options: EppOptions) -> Self {
        self.epp = Some(options);
        self
    }

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

    /// Envoy's load balancer on the cluster of every pod (default least request).
    pub fn pods_lb_policy(mut self, policy: PodsLbPolicy) -> Self {
        self.pods_lb_policy = policy;
        self
    }

    pub fn buffer_max_bytes(mut self, n: usize) -> Self {
        self.buffer_max_bytes = n;
        self
    }

    /// Simulated vLLM engines instead of minimal backends (the stack's model must be set,
    /// e.g. [`StackBuilder::qwen3`]; the indexer is usually [`IndexerSpec::Kvroute`]).
    pub fn sim_engines(mut self, options: SimEngineOptions) -> Self {
        self.sim = Some(options);
        self
    }

    /// Engines the caller runs (real vLLM) instead of minimal backends. If any has a KV
    /// endpoint the indexer connects to those; otherwise it binds its ZeroMQ socket
    /// ([`Stack::zmq_port`]) for the engines to connect to.
    pub fn external_engines(mut self, engines: Vec<ExternalEngine>) -> Self {
        self.external = engines;
        self
    }

    /// Load this prebuilt filter module instead of building it (scripts/build_filter.sh).
    pub fn filter_wasm(mut self, path: PathBuf) -> Self {
        self.filter_wasm = Some(path);
        self
    }

    /// Envoy's listener and admin ports (on 127.0.0.1) instead of free ones.
    pub fn envoy_ports(mut self, listen: u16, admin: u16) -> Self {
        self.envoy_addrs = Some((
            SocketAddr::from(([127, 0, 0, 1], listen)),
            SocketAddr::from(([127, 0, 0, 1], admin)),
        ));
        self
    }

    /// Envoy's listener and admin addresses (any IP, e.g. 0.0.0.0 to serve the network).
    pub fn envoy_addrs(mut self, listen: SocketAddr, admin: SocketAddr) -> Self {
        self.envoy_addrs = Some((listen, admin));
        self
    }

    /// The indexer's HTTP port (on 127.0.0.1) instead of a free one.
    pub fn indexer_port(mut self, port: u16) -> Self {
        self.indexer_listen = Some(SocketAddr::from(([127, 0, 0, 1], port)));
        self
    }

    /// The indexer's HTTP address instead of 127.0.0.1 and a free port.
    pub fn indexer_listen(mut self, addr: SocketAddr) -> Self {
        self.indexer_listen = Some(addr);
        self
    }

    /// Where the indexer binds its ZeroMQ SUB socket when engines connect to it, instead of
    /// 127.0.0.1 and a free port (simulated engines use its port).
    pub fn zmq_listen(mut self, addr: SocketAddr) -> Self {
        self.zmq_listen = Some(addr);
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
        let own_backends = !self.kv_engines && self.sim.is_none() && self.external.is_empty();
        let mut backends = if own_backends {
            (0..self.backends)
                .map(|i| Backend::start(&runtime, &format!("backend-{i}")))
                .collect::<anyhow::Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        let sim_port = match &self.sim {
            Some(sim) => sim.port.map_or_else(free_port, Ok)?,
            None => 0,
        };
        let sim_zmq_port = match &self.sim {
            Some(sim) => match (sim.zmq_port, self.zmq_listen) {
                (Some(port), _) => port,
                (None, Some(addr)) => addr.port(),
                (None, None) => free_port()?,
            },
            None => 0,
        };
        let sim_replay_port = match &self.sim {
            Some(sim) if sim.replay => free_port()?,
            _ => 0,
        };
        let pods: Vec<SocketAddr> = if let Some(sim) = &self.sim {
            (0..sim.count)
                .map(|i| SocketAddr::from((sim_engine_ip(i), sim_port)))
                .collect()
        } else if !self.external.is_empty() {
            self.external.iter().map(|e| e.http).collect()
        } else if self.kv_engines {
            (0..self.backends)
                .map(|i| SocketAddr::from(([127, 0, 0, 2 + i as u8], kv_port)))
                .collect()
        } else {
            backends.iter().map(|b| b.addr).collect()
        };
        let indexer_kv = match (&self.sim, self.external.iter().any(|e| e.kv.is_some())) {
            (Some(sim), _) if sim.wiring == KvWiring::IndexerConnects => IndexerKv::Connect {
                engines: pods
                    .iter()
                    .map(|p| format!("{}:{sim_zmq_port}", p.ip()))
                    .collect(),
                replay_port: sim.replay.then_some(sim_replay_port),
            },
            (None, true) => IndexerKv::Connect {
                engines: self
                    .external
                    .iter()
                    .filter_map(|e| {
                        let kv = e.kv.as_deref()?;
                        let host_port = kv.trim_start_matches("tcp://");
                        Some(format!("{host_port}={}", e.http.port()))
                    })
                    .collect(),
                replay_port: None,
            },
            (Some(sim), _) => IndexerKv::Bind {
                replay_port: sim.replay.then_some(sim_replay_port),
            },
            _ => IndexerKv::Bind { replay_port: None },
        };
        let mut zmq_port = 0;
        let zmq_ip = self
            .zmq_listen
            .map_or(Ipv4Addr::LOCALHOST.into(), |a| a.ip());
        let epp_addr = match &self.epp {
            Some(epp) => Some(SocketAddr::from((
                [127, 0, 0, 1],
                epp.port.map_or_else(free_port, Ok)?,
            ))),
            None => None,
        };

        let mut scripted = None;
        let mut indexer_process = None;
        let mut indexer_command = None;
        let mut replicas: Vec<(SocketAddr, ManagedProcess)> = Vec::new();
        let indexer_addr = match self.indexer {
            IndexerSpec::Scripted(_) | IndexerSpec::External(_) if epp_addr.is_some() => {
                bail!("the endpoint picker path needs IndexerSpec::Kvroute")
            }
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
                zmq_port = match (&self.sim, self.zmq_listen) {
                    (Some(sim), _) if sim.wiring == KvWiring::EnginesConnect => sim_zmq_port,
                    (None, Some(addr)) => addr.port(),
                    _ => free_port()?,
                };
                let http = match self.indexer_listen {
                    Some(addr) => addr,
                    None => SocketAddr::from(([127, 0, 0, 1], free_port()?)),
                };
                let ports = IndexerPorts {
                    http,
                    zmq: zmq_port,
                    zmq_ip,
                    backends: pods.clone(),
                    models: self.models.clone(),
                    kv: indexer_kv.clone(),
                };
                let mut command = args(&ports);
                if let Some(addr) = epp_addr {
                    command.extend(["--epp-listen".to_string(), addr.to_string()]);
                }
                indexer_process = Some(start_indexer(
                    &command,
                    ports.http,
                    epp_addr,
                    dir.join("indexer.log"),
                )?);
                indexer_command = Some(command);
                for i in 1..self.indexer_replicas {
                    let mut more = ports.clone();
                    more.http = SocketAddr::new(ports.http.ip(), free_port()?);
                    let log = dir.join(format!("indexer-{i}.log"));
                    let replica = start_indexer(&args(&more), more.http, None, log)?;
                    replicas.push((reachable(more.http), replica));
                }
                reachable(ports.http)
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
                let zmq = format!("tcp://{}", reachable(SocketAddr::new(zmq_ip, zmq_port)));
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

        let mut sim_engines = Vec::new();
        if let Some(sim) = &self.sim {
            let (model, tokenizer) = self
                .models
                .iter()
                .next()
                .context("simulated engines need a model")?;
            for pod in &pods {
                let SocketAddr::V4(v4) = pod else {
                    bail!("simulated engines live on IPv4 loopback");
                };
                let ip = *v4.ip();
                let kv = match sim.wiring {
                    KvWiring::EnginesConnect => KvLink::Connect(format!(
                        "tcp://{}",
                        reachable(SocketAddr::new(zmq_ip, sim_zmq_port))
                    )),
                    KvWiring::IndexerConnects => KvLink::Bind(format!("tcp://{ip}:{sim_zmq_port}")),
                };
                let mut args = SimEngineArgs::qwen3(ip, pod.port())
                    .kv(kv)
                    .time_scale(sim.time_scale)
                    .kv_wire(&sim.kv_wire);
                args.model = model.clone();
                args.tokenizer = tokenizer.clone();
                args.hash_seed = sim.hash_seed.clone();
                if sim.replay {
                    args = args.replay_port(sim_replay_port);
                }
                args.extra = sim.extra_args.clone();
                sim_engines.push(SimEngine::start(&args, &dir)?);
            }
            if let (KvWiring::IndexerConnects, Some(indexer)) = (sim.wiring, &indexer_process) {
                // The indexer dials each engine (retrying every 500 ms): wait until every
                // subscription is made, or events published now would be lost.
                let subscribed = wait_until(Duration::from_secs(30), || {
                    std::iter::once(indexer)
                        .chain(replicas.iter().map(|(_, p)| p))
                        .all(|p| {
                            p.log_tail(1 << 20).matches("subscribed to engine").count() >= sim.count
                        })
                });
                if !subscribed {
                    bail!(
                        "the indexer did not subscribe to every engine\n{}",
                        indexer.log_tail(4000)
                    );
                }
            }
            // A PUB socket drops messages until the subscription reaches it.
            std::thread::sleep(Duration::from_millis(500));
        }

        if let (Some(command), Some(indexer)) = (&indexer_command, &indexer_process) {
            wait_engines_up(command, indexer_addr, &pods, indexer)?;
            for (addr, replica) in &replicas {
                wait_engines_up(command, *addr, &pods, replica)?;
            }
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
        let (listen, admin) = match self.envoy_addrs {
            Some(addrs) => addrs,
            None => {
                let (listen, admin) = Envoy::free_ports()?;
                (
                    SocketAddr::from(([127, 0, 0, 1], listen)),
                    SocketAddr::from(([127, 0, 0, 1], admin)),
                )
            }
        };
        let config = EnvoyConfig {
            listen_address: listen.ip().to_string(),
            listen_port: listen.port(),
            admin_address: admin.ip().to_string(),
            admin_port: admin.port(),
            wasm_path: match (self.filter, self.filter_wasm) {
                (false, _) => None,
                (true, _) if epp_addr.is_some() => None,
                (true, Some(path)) => Some(path),
                (true, None) => Some(paths::filter_wasm()?),
            },
            plugin_config,
            pods,
            indexer: indexer_addr,
            indexer_replicas: replicas.iter().map(|(addr, _)| *addr).collect(),
            buffer_max_bytes: self.buffer_max_bytes,
            pods_lb_policy: self.pods_lb_policy,
            epp: epp_addr,
            epp_message_timeout: self
                .epp
                .as_ref()
                .map_or(crate::envoy::EPP_MESSAGE_TIMEOUT, |e| e.message_timeout),
            epp_body_mode: self.epp.as_ref().map(|e| e.body_mode).unwrap_or_default(),
        };
        let mut envoy = Envoy::start(&config, self.concurrency, &dir)?;
        if config.wasm_path.is_some()
            && self.wait_tokenizers
            && filter_tokenizes
            && !self.models.is_empty()
        {
            let loads = (self.concurrency * self.models.len()) as u64;
            envoy.wait_tokenizers(loads, Duration::from_secs(60))?;
        }
        Ok(Stack {
            envoy,
            backends,
            sim_engines,
            pods: config.pods.clone(),
            zmq_port,
            indexer_addr,
            epp_addr,
            scripted,
            indexer_process,
            indexer_command,
            replicas,
            dir,
            _runtime: runtime,
        })
    }
}

/// Where this host reaches a listener bound on `addr` (a wildcard bind through loopback).
fn reachable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    }
}

/// `kvroute serve` with `command`, logging to `log`, ready (`/readyz`) on return.
fn start_indexer(
    command: &[String],
    http: SocketAddr,
    epp: Option<SocketAddr>,
    log: PathBuf,
) -> anyhow::Result<ManagedProcess> {
    let proc = ManagedProcess::spawn("kvroute serve", &paths::kvroute_bin()?, command, log)?;
    let reach = reachable(http);
    let ready = wait_until(Duration::from_secs(20), || {
        http::send(reach, "GET", "/readyz", &[], b"").is_ok_and(|r| r.status == 200)
            && epp.is_none_or(|a| std::net::TcpStream::connect(a).is_ok())
    });
    if !ready {
        bail!(
            "kvroute serve did not become ready\n{}",
            proc.log_tail(4000)
        );
    }
    Ok(proc)
}

/// With health checks on (`kvroute serve`'s default), an engine is routed to once its
/// first check passed: wait until every pod's is, so the stack routes from its first
/// request.
fn wait_engines_up(
    command: &[String],
    indexer: SocketAddr,
    pods: &[SocketAddr],
    process: &ManagedProcess,
) -> anyhow::Result<()> {
    let checks_off = command
        .windows(2)
        .any(|w| w[0] == "--health-interval-ms" && w[1] == "0");
    if checks_off || pods.is_empty() {
        return Ok(());
    }
    let all_up = || {
        let Ok(status) = http::send(indexer, "GET", "/v1/pods", &[], b"").and_then(|r| r.json())
        else {
            return false;
        };
        let up: Vec<&str> = status["pods"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["health"] == "up")
            .filter_map(|p| p["endpoint"].as_str())
            .collect();
        pods.iter()
            .all(|pod| up.contains(&pod.to_string().as_str()))
    };
    if !wait_until(Duration::from_secs(10), all_up) {
        bail!(
            "the indexer never saw every engine answer its health check\n{}",
            process.log_tail(4000)
        );
    }
    Ok(())
}

/// The loopback IP of simulated engine `i`: 127.0.0.2, 127.0.0.3, ... (then 127.0.1.x:
/// all of 127/8 is loopback).
pub fn sim_engine_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 2)) + i as u32)
}

/// A running deployment; everything stops when it is dropped.
pub struct Stack {
    pub envoy: Envoy,
    pub backends: Vec<Backend>,
    /// Simulated engines, in pod order (empty unless [`StackBuilder::sim_engines`]).
    pub sim_engines: Vec<SimEngine>,
    /// Every engine's OpenAI server, as Envoy and the indexer know it.
    pub pods: Vec<SocketAddr>,
    /// The indexer's ZeroMQ SUB port when it binds one (0 otherwise).
    pub zmq_port: u16,
    pub indexer_addr: SocketAddr,
    /// The endpoint picker's gRPC address, on the picker path.
    pub epp_addr: Option<SocketAddr>,
    scripted: Option<ScriptedIndexer>,
    indexer_process: Option<ManagedProcess>,
    /// `kvroute serve`'s command line, to start it again.
    indexer_command: Option<Vec<String>>,
    /// Indexer replicas past the first ([`StackBuilder::indexer_replicas`]): address, process.
    replicas: Vec<(SocketAddr, ManagedProcess)>,
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
            pods_lb_policy: PodsLbPolicy::default(),
            kv_engines: false,
            sim: None,
            external: Vec::new(),
            envoy_addrs: None,
            indexer_listen: None,
            zmq_listen: None,
            filter_wasm: None,
            indexer_replicas: 1,
            epp: None,
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

    /// Start the real indexer again, same command line and port, after
    /// [`Stack::kill_indexer`]; ready on return.
    pub fn restart_indexer(&mut self) -> anyhow::Result<()> {
        let command = self
            .indexer_command
            .clone()
            .context("the stack does not run kvroute serve")?;
        self.kill_indexer();
        let log = self.dir.join("indexer-restarted.log");
        self.indexer_process = Some(start_indexer(
            &command,
            self.indexer_addr,
            self.epp_addr,
            log,
        )?);
        Ok(())
    }

    /// Kill indexer replica `i` (0: the first, [`Stack::indexer_addr`]): its port closes.
    pub fn kill_indexer_replica(&mut self, i: usize) {
        if i == 0 {
            if let Some(p) = self.indexer_process.as_mut() {
                p.kill();
            }
        } else if let Some((_, p)) = self.replicas.get_mut(i - 1) {
            p.kill();
        }
    }

    /// Every indexer replica's HTTP address, the first one ([`Stack::indexer_addr`]) first.
    pub fn indexer_addrs(&self) -> Vec<SocketAddr> {
        std::iter::once(self.indexer_addr)
            .chain(self.replicas.iter().map(|(addr, _)| *addr))
            .collect()
    }

    /// The pid of the real `kvroute serve`, when the stack runs it.
    pub fn indexer_pid(&self) -> Option<u32> {
        self.indexer_process.as_ref().map(ManagedProcess::pid)
    }

    /// Send `signal` to the indexer process (`libc::SIGSTOP` makes it a picker that never
    /// answers, `SIGCONT` resumes it); false without one.
    pub fn signal_indexer(&self, signal: i32) -> bool {
        let Some(p) = &self.indexer_process else {
            return false;
        };
        let pid = p.pid();
        // SAFETY: kill(2) on a pid this stack spawned and still owns.
        if unsafe { libc::kill(pid as i32, signal) } != 0 {
            return false;
        }
        if signal == libc::SIGSTOP {
            // kill(2) returns before every thread has stopped: wait until the kernel says
            // the process is stopped, so that what follows meets a picker that cannot answer.
            return wait_until(Duration::from_secs(2), || process_state(pid) == Some('T'));
        }
        true
    }

    /// Waits (up to 5 s) until the indexer has learned blocks of `engine` (`ip:port`) from
    /// its KV events, so a follow-up request can find them; false if it has not.
    pub fn wait_for_blocks(&self, engine: &str) -> bool {
        wait_until(Duration::from_secs(5), || {
            http::send(self.indexer_addr, "GET", "/v1/pods", &[], b"")
                .and_then(|r| r.json())
                .is_ok_and(|pods| {
                    pods["pods"].as_array().is_some_and(|all| {
                        all.iter()
                            .any(|p| p["endpoint"] == engine && p["gpu_blocks"].as_u64() > Some(0))
                    })
                })
        })
    }

    /// One series of the indexer's /metrics as Prometheus prints it (`name{labels}`), 0 when
    /// it is absent.
    pub fn indexer_metric(&self, series: &str) -> anyhow::Result<u64> {
        let r = http::send(self.indexer_addr, "GET", "/metrics", &[], b"")?;
        let text = String::from_utf8_lossy(&r.body);
        let prefix = format!("{series} ");
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0))
    }

    /// Logs of every process, for assertion messages.
    pub fn logs(&self) -> String {
        let mut out = self.envoy.log_tail();
        if let Some(p) = &self.indexer_process {
            out.push('\n');
            out.push_str(&p.log_tail(4000));
        }
        for (_, p) in &self.replicas {
            out.push('\n');
            out.push_str(&p.log_tail(4000));
        }
        for e in &self.sim_engines {
            out.push('\n');
            out.push_str(&e.log_tail(2000));
        }
        out
    }

    /// POST a completions body through Envoy.
    pub fn completions(&self, body: &serde_json::Value) -> anyhow::Result<Response> {
        http::post_json(
            self.listen(),
            "/v1/completions",
            body.to_string().as_bytes(),
        )
    }

    /// The directory holding every process's log.
    pub fn log_dir(&self) -> &std::path::Path {
        &self.dir
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::env::var_os("KVROUTE_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A process's state letter from `/proc/<pid>/stat` (`T`: stopped), if readable.
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name is in parentheses and may hold spaces: the state follows the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}
