//! vLLM KV events in: ZeroMQ sockets, sequence numbers, engine identity, index updates.
//!
//! vLLM can be wired either way, and both are supported: the indexer binds a SUB socket that
//! engines connect to (`--zmq-bind`, the seed's setup), or it connects to each engine's PUB
//! socket (static `--engine` list or DNS discovery of a headless Service), so several
//! indexer replicas each hold the full index with no shared state. When the indexer dialed,
//! the engine is who it dialed; when it bound, the topic names the engine, and only known
//! engines are believed. [`Ingest::handle`] is the synchronous heart (decode, sequence
//! check, keys, index), so tests drive it with real frames without sockets.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvroute_blockhash::{ExtraKeysStyle, HashConfig};
use kvroute_kvevents::{decode_message, KvEvent, KvMessage};
use tokio::sync::watch;
use zeromq::{Socket, SocketRecv, SocketSend, ZmqMessage};

use crate::event_keys::EngineKeyer;
use crate::index::{IndexOp, Medium, PodIndex};
use crate::metrics::Metrics;
use crate::pods::{KeyMode, PodId, PodRegistry};

/// How the indexer meets the engines' event streams.
#[derive(Debug, Clone, clap::Args)]
pub struct IngestConfig {
    /// Bind a SUB socket here for engines to connect to (e.g. tcp://0.0.0.0:5557).
    /// Without it the indexer connects to each engine's PUB socket.
    #[arg(long)]
    pub zmq_bind: Option<String>,
    /// A known engine, HOST[:ZMQ_PORT][=HTTP_PORT] (repeatable). The HTTP port defaults to
    /// --engine-port; give it when engines share a host (local stacks).
    #[arg(long = "engine", value_name = "HOST[:ZMQ_PORT][=HTTP_PORT]")]
    pub engines: Vec<String>,
    /// Discover engines by resolving this name (a headless Service), NAME:ZMQ_PORT.
    #[arg(long, value_name = "NAME:ZMQ_PORT")]
    pub engine_dns: Option<String>,
    /// How often discovery re-resolves.
    #[arg(long, default_value_t = 10)]
    pub dns_interval_secs: u64,
    /// ZeroMQ port of engines listed without one.
    #[arg(long, default_value_t = 5557)]
    pub zmq_port: u16,
    /// The engines' OpenAI server port: what routing answers with.
    #[arg(long, default_value_t = 8000)]
    pub engine_port: u16,
    /// The engines' replay (ROUTER) port, when they offer one.
    #[arg(long)]
    pub replay_port: Option<u16>,
    /// Topic layout; `{host}` is the engine (IP, optionally :port) and `{model}` its model.
    #[arg(long, default_value = "kv@{host}@{model}")]
    pub topic_pattern: String,
    /// An engine silent this long is health-checked, and dropped if it does not answer.
    #[arg(long, default_value_t = 60)]
    pub silence_timeout_secs: u64,
}

impl IngestConfig {
    /// The command line's defaults with these engines, so that code embedding the ingestion
    /// (tests, benches) does not restate the defaults the `#[arg]` attributes hold.
    pub fn with_engines<S: Into<String>>(engines: impl IntoIterator<Item = S>) -> Self {
        let command = <Self as clap::Args>::augment_args(clap::Command::new("ingest"));
        let mut config =
            <Self as clap::FromArgMatches>::from_arg_matches(&command.get_matches_from(["ingest"]))
                .expect("IngestConfig's defaults parse");
        config.engines = engines.into_iter().map(Into::into).collect();
        config
    }
}

/// One engine as configured: where its events come from, where its requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineSpec {
    pub host: String,
    pub zmq_port: u16,
    /// The engine's OpenAI server, `host:port`: its identity.
    pub endpoint: Arc<str>,
}

/// Where a message came from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// From the engine the indexer dialed (its endpoint).
    Dialed(&'a str),
    /// From the bound socket: the topic says who.
    Bound,
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Applied {
        events: usize,
    },
    /// Not applied: events `from..to` were missed and a replay should be tried first.
    NeedsReplay {
        endpoint: String,
        host: String,
        from: u64,
        to: u64,
    },
    Dropped(DropReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    Malformed,
    UnknownPublisher,
}

#[derive(Default)]
struct State {
    keyers: HashMap<PodId, EngineKeyer>,
    last_seq: HashMap<PodId, u64>,
}

/// Decoded events into the index.
pub struct Ingest {
    pub config: IngestConfig,
    index: Arc<dyn PodIndex>,
    registry: Arc<PodRegistry>,
    metrics: Arc<Metrics>,
    hash: HashConfig,
    style: ExtraKeysStyle,
    /// Engines allowed to publish (static list + discovery).
    allowed: Mutex<Vec<EngineSpec>>,
    state: Mutex<State>,
}

impl Ingest {
    pub fn new(
        config: IngestConfig,
        index: Arc<dyn PodIndex>,
        registry: Arc<PodRegistry>,
        metrics: Arc<Metrics>,
        hash: HashConfig,
        style: ExtraKeysStyle,
    ) -> Self {
        let ingest = Self {
            config,
            index,
            registry,
            metrics,
            hash,
            style,
            allowed: Mutex::new(Vec::new()),
            state: Mutex::new(State::default()),
        };
        for engine in ingest.config.engines.clone() {
            let spec = ingest.parse_engine(&engine);
            ingest.allow(spec);
        }
        ingest
    }

    /// `HOST[:ZMQ_PORT][=HTTP_PORT]`.
    pub fn parse_engine(&self, spec: &str) -> EngineSpec {
        let (zmq, http) = match spec.split_once('=') {
            Some((z, h)) => (z, h.parse::<u16>().ok()),
            None => (spec, None),
        };
        let (host, zmq_port) = match zmq.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && !h.contains(':') => {
                (h.to_owned(), p.parse().unwrap_or(self.config.zmq_port))
            }
            _ => (zmq.to_owned(), self.config.zmq_port),
        };
        let endpoint = format!("{host}:{}", http.unwrap_or(self.config.engine_port)).into();
        EngineSpec {
            host,
            zmq_port,
            endpoint,
        }
    }

    /// Accept events from this engine and route to it.
    pub fn allow(&self, spec: EngineSpec) {
        self.registry.add(PodId {
            endpoint: spec.endpoint.clone(),
            dp_rank: 0,
        });
        let mut allowed = self.allowed.lock().unwrap_or_else(|p| p.into_inner());
        if !allowed.contains(&spec) {
            allowed.push(spec);
        }
    }

    /// Stop believing `host`: drop its engines and their blocks.
    pub fn disallow(&self, host: &str) {
        let gone: Vec<EngineSpec> = {
            let mut allowed = self.allowed.lock().unwrap_or_else(|p| p.into_inner());
            let (gone, kept) = allowed.drain(..).partition(|s| s.host == host);
            *allowed = kept;
            gone
        };
        for spec in gone {
            self.drop_endpoint(&spec.endpoint);
        }
    }

    fn drop_endpoint(&self, endpoint: &str) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for pod in self
            .registry
            .all()
            .into_iter()
            .filter(|p| &*p.endpoint == endpoint)
        {
            self.index.drop_pod(&pod);
            self.registry.remove(&pod);
            st.keyers.remove(&pod);
            st.last_seq.remove(&pod);
        }
    }

    /// The endpoint of the known engine a topic names: by host, and by port when the
    /// topic carries one and several engines share the host.
    fn endpoint_for_topic(&self, host: &str, port: Option<u16>) -> Option<Arc<str>> {
        let allowed = self.allowed.lock().unwrap_or_else(|p| p.into_inner());
        let on_host: Vec<&EngineSpec> = allowed.iter().filter(|s| s.host == host).collect();
        let by_port = port.and_then(|p| {
            on_host.iter().find(|s| {
                s.zmq_port == p || s.endpoint.rsplit(':').next() == Some(p.to_string().as_str())
            })
        });
        by_port.or(on_host.first()).map(|s| s.endpoint.clone())
    }

    fn is_allowed_endpoint(&self, endpoint: &str) -> bool {
        self.allowed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|s| &*s.endpoint == endpoint)
    }

    /// (host, port if any, model) from a topic, per the configured pattern.
    pub fn parse_topic(&self, topic: &str) -> Option<(String, Option<u16>, Option<String>)> {
        let pattern = &self.config.topic_pattern;
        let h = pattern.find("{host}")?;
        let prefix = &pattern[..h];
        let rest_pat = &pattern[h + "{host}".len()..];
        let rest = topic.strip_prefix(prefix)?;
        let (host, model) = match rest_pat.find("{model}") {
            Some(m) => {
                let sep = &rest_pat[..m];
                let (host, model) = if sep.is_empty() {
                    (rest, "")
                } else {
                    rest.split_once(sep)?
                };
                (host, (!model.is_empty()).then(|| model.to_owned()))
            }
            None => (rest.strip_suffix(rest_pat).unwrap_or(rest), None),
        };
        // `kv@10.0.0.5:5557@model`: the host and its port.
        let (host, port) = match host.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => match p.parse::<u16>() {
                Ok(p) => (h, Some(p)),
                Err(_) => (host, None),
            },
            _ => (host, None),
        };
        Some((host.to_owned(), port, model))
    }

    /// Decode one message and apply it. `force` applies past a sequence gap (replay failed
    /// or not configured: the engine is then re-learned from scratch).
    pub fn handle(&self, source: Source<'_>, frames: &[&[u8]], force: bool) -> Outcome {
        let msg = match decode_message(frames) {
            Ok(m) => m,
            Err(e) => {
                self.metrics.decode_errors.inc();
                tracing::debug!("malformed KV-event message skipped: {e}");
                return Outcome::Dropped(DropReason::Malformed);
            }
        };
        let topic = self.parse_topic(&msg.topic);
        let endpoint: Arc<str> = match source {
            Source::Dialed(e) => e.into(),
            Source::Bound => match topic
                .as_ref()
                .and_then(|(h, p, _)| self.endpoint_for_topic(h, *p))
            {
                Some(e) => e,
                None => {
                    self.metrics.unknown_publishers.inc();
                    return Outcome::Dropped(DropReason::UnknownPublisher);
                }
            },
        };
        let host = endpoint
            .rsplit_once(':')
            .map(|(h, _)| h.to_owned())
            .unwrap_or_else(|| endpoint.to_string());
        let model = topic.and_then(|(_, _, m)| m);
        let pod = PodId {
            endpoint,
            dp_rank: msg.batch.data_parallel_rank.unwrap_or(0),
        };
        self.registry.add(pod.clone());
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(last) = st.last_seq.get(&pod).copied() {
            if msg.seq <= last {
                // A publisher's sequence only restarts when its engine restarted: whatever
                // it held is gone.
                self.metrics.seq_restarts.inc();
                tracing::info!(%pod, last, seq = msg.seq, "sequence restart: engine restarted, clearing");
                self.clear(&mut st, &pod);
            } else if msg.seq > last + 1 {
                if self.config.replay_port.is_some() && !force {
                    return Outcome::NeedsReplay {
                        endpoint: pod.endpoint.to_string(),
                        host,
                        from: last + 1,
                        to: msg.seq,
                    };
                }
                self.metrics.seq_gaps.inc();
                tracing::warn!(%pod, last, seq = msg.seq, "sequence gap without replay: re-learning");
                self.clear(&mut st, &pod);
                self.registry.set_stale(&pod, true);
            }
        }
        st.last_seq.insert(pod.clone(), msg.seq);
        let applied = self.apply(&mut st, &pod, &msg);
        let block_size = msg.batch.events.iter().find_map(|e| match e {
            KvEvent::BlockStored(s) => Some(s.block_size as usize),
            _ => None,
        });
        self.registry
            .record_event(&pod, model.as_deref(), msg.seq, block_size);
        Outcome::Applied { events: applied }
    }

    fn clear(&self, st: &mut State, pod: &PodId) {
        self.index.apply(pod, IndexOp::ClearPod);
        if let Some(k) = st.keyers.get_mut(pod) {
            k.reset();
        }
    }

    fn apply(&self, st: &mut State, pod: &PodId, msg: &KvMessage) -> usize {
        if msg.batch.skipped_unknown > 0 {
            self.metrics
                .unknown_events
                .inc_by(u64::from(msg.batch.skipped_unknown));
        }
        let (hash, style) = (self.hash.clone(), self.style);
        for event in &msg.batch.events {
            match event {
                KvEvent::BlockStored(stored) => {
                    self.metrics.event("block_stored");
                    let keyer = st
                        .keyers
                        .entry(pod.clone())
                        .or_insert_with(|| EngineKeyer::new(hash.clone(), style));
                    let out = keyer.on_stored(stored);
                    if let Some(mode) = out.mode_decided {
                        tracing::info!(%pod, ?mode, "key mode decided");
                        self.registry.set_key_mode(pod, mode);
                        if mode == KeyMode::Rekey {
                            // Blocks indexed natively while probing are not our keys.
                            self.index.apply(pod, IndexOp::ClearPod);
                        }
                    }
                    if out.orphans > 0 {
                        self.metrics.orphans.inc_by(out.orphans);
                        self.registry.add_orphans(pod, out.orphans);
                    }
                    if !out.keys.is_empty() {
                        self.index.apply(
                            pod,
                            IndexOp::Store {
                                keys: out.keys,
                                medium: stored.medium.unwrap_or(Medium::Gpu),
                            },
                        );
                    }
                }
                KvEvent::BlockRemoved(removed) => {
                    self.metrics.event("block_removed");
                    let keys = match st.keyers.get_mut(pod) {
                        Some(k) => k.on_removed(&removed.block_hashes),
                        None => removed.block_hashes.iter().map(|h| h.as_u64()).collect(),
                    };
                    self.index.apply(
                        pod,
                        IndexOp::Remove {
                            keys,
                            medium: removed.medium,
                        },
                    );
                }
                KvEvent::AllBlocksCleared => {
                    self.metrics.event("all_blocks_cleared");
                    self.clear(st, pod);
                    self.registry.set_stale(pod, false);
                }
            }
        }
        msg.batch.events.len()
    }

    /// Run every ingestion task until `shutdown` fires.
    pub async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        let mut tasks = tokio::task::JoinSet::new();
        if let Some(addr) = self.config.zmq_bind.clone() {
            tasks.spawn(bind_loop(self.clone(), addr, shutdown.clone()));
        } else {
            for engine in self.config.engines.clone() {
                let spec = self.parse_engine(&engine);
                tasks.spawn(connect_loop(self.clone(), spec, shutdown.clone()));
            }
        }
        if let Some(name) = self.config.engine_dns.clone() {
            tasks.spawn(discovery_loop(self.clone(), name, shutdown.clone()));
        }
        tasks.spawn(health_loop(self.clone(), shutdown.clone()));
        while tasks.join_next().await.is_some() {}
    }

    /// Feed a message from a socket, replaying a gap first when the engine offers it.
    async fn feed(&self, source: Source<'_>, frames: &[&[u8]]) {
        if let Outcome::NeedsReplay {
            endpoint,
            host,
            from,
            to,
        } = self.handle(source, frames, false)
        {
            self.metrics.replays.inc();
            let replayed = match self.config.replay_port {
                Some(port) => replay(self, &endpoint, &host, port, from, to).await,
                None => Ok(()),
            };
            if let Err(e) = replayed {
                tracing::warn!(%host, "replay failed: {e}");
            }
            self.handle(source, frames, true);
        }
    }
}

fn frames_of(msg: &ZmqMessage) -> Vec<Vec<u8>> {
    msg.iter().map(|f| f.to_vec()).collect()
}

async fn bind_loop(ingest: Arc<Ingest>, addr: String, mut shutdown: watch::Receiver<bool>) {
    let mut socket = zeromq::SubSocket::new();
    if let Err(e) = socket.bind(&addr).await {
        tracing::error!(%addr, "cannot bind the KV-event socket: {e}");
        return;
    }
    if let Err(e) = socket.subscribe("").await {
        tracing::error!("cannot subscribe: {e}");
        return;
    }
    tracing::info!(%addr, "listening for KV events");
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            msg = socket.recv() => match msg {
                Ok(m) => {
                    let frames = frames_of(&m);
                    let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
                    ingest.feed(Source::Bound, &refs).await;
                }
                Err(e) => tracing::warn!("KV-event receive error: {e}"),
            }
        }
    }
}

async fn connect_loop(ingest: Arc<Ingest>, spec: EngineSpec, mut shutdown: watch::Receiver<bool>) {
    let addr = format!("tcp://{}:{}", spec.host, spec.zmq_port);
    loop {
        let mut socket = zeromq::SubSocket::new();
        let connected = async {
            socket.connect(&addr).await?;
            socket.subscribe("").await
        };
        tokio::select! {
            _ = shutdown.changed() => return,
            r = connected => if let Err(e) = r {
                tracing::debug!(%addr, "engine not reachable yet: {e}");
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                }
            }
        }
        tracing::info!(%addr, "subscribed to engine");
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                msg = socket.recv() => match msg {
                    Ok(m) => {
                        let frames = frames_of(&m);
                        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
                        ingest.feed(Source::Dialed(&spec.endpoint), &refs).await;
                    }
                    Err(e) => {
                        tracing::warn!(%addr, "engine stream broken, reconnecting: {e}");
                        break;
                    }
                }
            }
        }
        if !ingest.is_allowed_endpoint(&spec.endpoint) {
            return;
        }
    }
}

/// Ask the engine's replay socket for `from..to`; vLLM answers each with `[seq, payload]`
/// and ends with seq -1.
async fn replay(
    ingest: &Ingest,
    endpoint: &str,
    host: &str,
    port: u16,
    from: u64,
    to: u64,
) -> anyhow::Result<()> {
    let mut socket = zeromq::DealerSocket::new();
    let addr = format!("tcp://{host}:{port}");
    tokio::time::timeout(Duration::from_secs(2), socket.connect(&addr)).await??;
    let mut request = ZmqMessage::from(Vec::<u8>::new());
    request.push_back(from.to_be_bytes().to_vec().into());
    socket.send(request).await?;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(2), socket.recv()).await??;
        let frames = frames_of(&msg);
        let mut frames: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        // The ROUTER's empty delimiter frame, if the socket left it in.
        if frames.len() > 3 && frames[0].is_empty() {
            frames.remove(0);
        }
        // vLLM 0.3x replays [topic, seq, payload] (end: [b"", -1, b""]); 0.10/0.11
        // replayed [seq, payload] (end: [-1, b""]).
        let (topic, seq, payload) = match frames.as_slice() {
            [topic, seq, payload] => (*topic, *seq, *payload),
            // No topic: the model stays what the live stream said.
            [seq, payload] => (&[][..], *seq, *payload),
            _ => anyhow::bail!("replay message of {} frames", frames.len()),
        };
        if seq == (-1i64).to_be_bytes() {
            return Ok(());
        }
        let n = u64::from_be_bytes(seq.try_into().unwrap_or([0xff; 8]));
        if n >= to {
            return Ok(());
        }
        ingest.handle(Source::Dialed(endpoint), &[topic, seq, payload], true);
    }
}

async fn discovery_loop(ingest: Arc<Ingest>, name: String, mut shutdown: watch::Receiver<bool>) {
    let (dns, port) = match name.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), p.parse().unwrap_or(ingest.config.zmq_port)),
        None => (name.clone(), ingest.config.zmq_port),
    };
    let mut known: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    let mut tick =
        tokio::time::interval(Duration::from_secs(ingest.config.dns_interval_secs.max(1)));
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tick.tick() => {}
        }
        let found: BTreeSet<String> = match tokio::net::lookup_host((dns.as_str(), port)).await {
            Ok(addrs) => addrs.map(|a| a.ip().to_string()).collect(),
            Err(e) => {
                tracing::warn!(%dns, "discovery lookup failed: {e}");
                continue;
            }
        };
        for host in &found {
            if !known.contains_key(host) {
                tracing::info!(%host, "engine discovered");
                let spec = EngineSpec {
                    host: host.clone(),
                    zmq_port: port,
                    endpoint: format!("{host}:{}", ingest.config.engine_port).into(),
                };
                ingest.allow(spec.clone());
                let task = if ingest.config.zmq_bind.is_none() {
                    tokio::spawn(connect_loop(ingest.clone(), spec, shutdown.clone()))
                } else {
                    tokio::spawn(async {})
                };
                known.insert(host.clone(), task);
            }
        }
        let vanished: Vec<String> = known
            .keys()
            .filter(|h| !found.contains(*h))
            .cloned()
            .collect();
        for host in vanished {
            tracing::info!(%host, "engine vanished: dropping it and its blocks");
            if let Some(task) = known.remove(&host) {
                task.abort();
            }
            ingest.disallow(&host);
        }
    }
    for (_, task) in known {
        task.abort();
    }
}

async fn health_loop(ingest: Arc<Ingest>, mut shutdown: watch::Receiver<bool>) {
    let timeout = Duration::from_secs(ingest.config.silence_timeout_secs.max(1));
    let Ok(client) = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
    else {
        return;
    };
    let mut tick = tokio::time::interval(timeout / 2);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        for pod in ingest.registry.silent_for(timeout) {
            let url = format!("http://{}/health", pod.endpoint);
            let healthy = matches!(client.get(&url).send().await, Ok(r) if r.status().is_success());
            if !healthy {
                tracing::warn!(%pod, "silent and not healthy: dropped");
                ingest.drop_endpoint(&pod.endpoint);
            }
        }
    }
}
