//! vLLM KV events in: from the engines' ZeroMQ streams to index updates.
//!
//! vLLM can be wired either way, and both are supported: the indexer binds a SUB socket that
//! engines connect to (`--zmq-bind`, the seed's setup), or it connects to each engine's PUB
//! socket (static `--engine` list or DNS discovery of a headless Service), so several
//! indexer replicas each hold the full index with no shared state. When the indexer dialed,
//! the engine is who it dialed; when it bound, the topic names the engine, and only known
//! engines are believed.
//!
//! [`Ingest::handle`] is the synchronous heart (decode, sequence check, keys, index), so
//! tests drive it with real frames without sockets. Around it, one module a concern:
//! `config` (flags), `engines` (specs, topics, allow-list), `sequence` (restart and gap
//! state machine), `transport` (the ZeroMQ sockets), `receive` (the one receive path of
//! both wirings), `replay` (asking an engine for missed messages), `discovery` (DNS) and
//! `health` (silent engines).

mod config;
mod discovery;
pub mod engines;
mod health;
mod receive;
mod replay;
pub mod sequence;
pub mod transport;

use std::collections::HashMap;
use std::sync::Arc;

use kvroute_blockhash::{ExtraKeysStyle, HashConfig};
use kvroute_kvevents::{decode_message, KvEvent, KvMessage};
use parking_lot::Mutex;
use tokio::sync::watch;

pub use config::IngestConfig;
pub use engines::{EngineSpec, SpecError};

use crate::event_keys::EngineKeyer;
use crate::index::{IndexOp, Medium, PodIndex};
use crate::metrics::Metrics;
use crate::pods::PodRegistry;
use crate::types::{KeyMode, PodId};
use engines::{AllowList, TopicPattern};
use sequence::{Sequences, Step};

/// Why ingestion cannot start.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("cannot build the health-check HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
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

/// Per-engine ingestion state, changed together under one lock.
#[derive(Default)]
struct State {
    keyers: HashMap<PodId, EngineKeyer>,
    sequences: Sequences,
}

/// Decoded events into the index.
pub struct Ingest {
    pub config: IngestConfig,
    index: Arc<dyn PodIndex>,
    registry: Arc<PodRegistry>,
    metrics: Arc<Metrics>,
    hash: HashConfig,
    style: ExtraKeysStyle,
    topics: TopicPattern,
    /// `--engine` as parsed.
    engines: Vec<EngineSpec>,
    /// `--engine-dns` as parsed: the name and the engines' ZeroMQ port.
    dns: Option<(String, u16)>,
    health_client: reqwest::Client,
    /// Engines allowed to publish (static list + discovery).
    allowed: Mutex<AllowList>,
    state: Mutex<State>,
}

impl Ingest {
    /// Ingestion per `config`; every engine spec, DNS name and topic pattern is checked.
    pub fn new(
        config: IngestConfig,
        index: Arc<dyn PodIndex>,
        registry: Arc<PodRegistry>,
        metrics: Arc<Metrics>,
        hash: HashConfig,
        style: ExtraKeysStyle,
    ) -> Result<Self, IngestError> {
        let engines = config
            .engines
            .iter()
            .map(|e| EngineSpec::parse(e, config.zmq_port, config.engine_port))
            .collect::<Result<Vec<_>, _>>()?;
        let dns = config
            .engine_dns
            .as_deref()
            .map(|d| engines::parse_dns(d, config.zmq_port))
            .transpose()?;
        let ingest = Self {
            topics: TopicPattern::new(&config.topic_pattern)?,
            health_client: health::client()?,
            config,
            index,
            registry,
            metrics,
            hash,
            style,
            engines,
            dns,
            allowed: Mutex::new(AllowList::default()),
            state: Mutex::new(State::default()),
        };
        for spec in ingest.engines.clone() {
            ingest.allow(spec);
        }
        Ok(ingest)
    }

    /// Accept events from this engine and route to it.
    pub fn allow(&self, spec: EngineSpec) {
        self.registry.add(PodId::new(spec.endpoint.clone()));
        self.allowed.lock().allow(spec);
    }

    /// Stop believing `host`: drop its engines and their blocks.
    pub fn disallow(&self, host: &str) {
        let gone = self.allowed.lock().remove_host(host);
        for spec in gone {
            self.drop_endpoint(&spec.endpoint);
        }
    }

    /// Forget every rank of `endpoint`: its blocks, keys and sequence.
    fn drop_endpoint(&self, endpoint: &str) {
        let mut st = self.state.lock();
        for pod in self
            .registry
            .all()
            .into_iter()
            .filter(|p| &*p.endpoint == endpoint)
        {
            self.index.drop_pod(&pod);
            self.registry.remove(&pod);
            st.keyers.remove(&pod);
            st.sequences.forget(&pod);
        }
    }

    fn is_allowed_endpoint(&self, endpoint: &str) -> bool {
        self.allowed.lock().contains_endpoint(endpoint)
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
        let topic = self.topics.parse(&msg.topic);
        let endpoint: Arc<str> = match source {
            Source::Dialed(e) => e.into(),
            Source::Bound => match topic
                .as_ref()
                .and_then(|t| self.allowed.lock().endpoint_for_topic(&t.host, t.port))
            {
                Some(e) => e,
                None => {
                    self.metrics.unknown_publishers.inc();
                    return Outcome::Dropped(DropReason::UnknownPublisher);
                }
            },
        };
        let model = topic.and_then(|t| t.model);
        let pod = PodId {
            endpoint,
            dp_rank: msg.batch.data_parallel_rank.unwrap_or(0),
        };
        self.registry.add(pod.clone());
        let mut st = self.state.lock();
        let can_replay = self.config.replay_port.is_some() && !force;
        match st.sequences.step(&pod, msg.seq, can_replay) {
            Step::Apply => {}
            Step::Restarted { last } => {
                // A publisher's sequence only restarts when its engine restarted: whatever
                // it held is gone.
                self.metrics.seq_restarts.inc();
                tracing::info!(%pod, last, seq = msg.seq, "sequence restart: engine restarted, clearing");
                self.clear(&mut st, &pod);
            }
            Step::Replay { from, to } => {
                let host = pod
                    .endpoint
                    .rsplit_once(':')
                    .map_or(&*pod.endpoint, |(h, _)| h)
                    .to_owned();
                return Outcome::NeedsReplay {
                    endpoint: pod.endpoint.to_string(),
                    host,
                    from,
                    to,
                };
            }
            Step::Unrepaired { last } => {
                self.metrics.seq_gaps.inc();
                tracing::warn!(%pod, last, seq = msg.seq, "sequence gap without replay: re-learning");
                self.clear(&mut st, &pod);
                self.registry.set_stale(&pod, true);
            }
        }
        st.sequences.record(&pod, msg.seq);
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
        self.metrics
            .invalid_events
            .inc_by(u64::from(msg.batch.skipped_invalid));
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
            tasks.spawn(receive::bind_loop(self.clone(), addr, shutdown.clone()));
        } else {
            for spec in self.engines.clone() {
                tasks.spawn(receive::connect_loop(self.clone(), spec, shutdown.clone()));
            }
        }
        if let Some((name, port)) = self.dns.clone() {
            tasks.spawn(discovery::discovery_loop(
                self.clone(),
                name,
                port,
                shutdown.clone(),
            ));
        }
        tasks.spawn(health::health_loop(
            self.clone(),
            self.health_client.clone(),
            shutdown.clone(),
        ));
        while tasks.join_next().await.is_some() {}
    }
}
