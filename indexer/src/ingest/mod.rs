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
//! `health` (what the engines' HTTP side says: up, down, load, restarted).
//!
//! An engine that restarted lost its cache: whichever sign comes first (its sequence
//! going backwards, the indexer reconnecting to it, its `process_start_time_seconds`
//! changing) empties its index entry before it is routed to again. When engines offer
//! replay, every (re)connection, and the start, re-learns what the engine still buffers:
//! the replay runs in its own task while the engine's live messages wait in a bounded
//! queue, so history and live stream apply in order and nothing else waits.

mod claims;
mod config;
mod discovery;
pub mod engines;
mod health;
mod peers;
mod receive;
mod replay;
pub mod sequence;
pub mod transport;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use kvroute_blockhash::{ExtraKeysStyle, HashConfig};
use kvroute_kvevents::{decode_message, KvEvent, KvMessage};
use parking_lot::Mutex;
use tokio::sync::watch;

pub use config::IngestConfig;
pub use engines::{EngineSpec, SpecError};

use crate::event_keys::EngineKeyer;
use crate::index::{IndexOp, Medium, PodIndex};
use crate::load::InFlight;
use crate::metrics::Metrics;
use crate::pods::PodRegistry;
use crate::types::{Health, KeyMode, PodId};
use claims::{Claims, Verdict};
use engines::{AllowList, TopicPattern};
use peers::PeerAddresses;
use sequence::{Arrival, Sequences, Step};
use transport::Frames;

/// Live messages of one engine held while its history is replayed (count and bytes); past
/// this its live messages apply at once and the replay fills in what they did not say.
const MAX_QUEUED: usize = 10_000;
const MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;

/// Why ingestion cannot start.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("cannot build the engines' HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
}

/// Where a message came from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// From the engine the indexer dialed (its endpoint).
    Dialed(&'a str),
    /// From the bound socket: the topic says who, and the connection's remote address
    /// (`peer`) must be that engine's.
    Bound { peer: Option<IpAddr> },
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
    /// Held until the engine's history has been replayed.
    Queued,
    /// A claim (new rank, other model, sequence restart) waiting for the pod's next
    /// message to confirm it.
    Held,
    Dropped(DropReason),
}

/// How a message reached [`Ingest::handle_as`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Through {
    /// Off the live stream.
    Live,
    /// Off the live stream, after its gap was replayed (or could not be).
    LiveForced,
    /// From the engine's replay buffer.
    Replayed,
    /// Held while the engine was re-learned, now applied.
    Dequeued,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    Malformed,
    UnknownPublisher,
    /// A known engine named by a message from another address (bound socket).
    AddressMismatch,
    /// A data-parallel rank at or past `--max-dp-ranks`.
    RankLimit,
}

/// Per-engine ingestion state, changed together under one lock.
#[derive(Default)]
struct State {
    keyers: HashMap<PodId, EngineKeyer>,
    sequences: Sequences,
    /// Engines being re-learned from their replay buffer, with their live messages held.
    relearning: HashMap<Arc<str>, Held>,
    /// The model each pod last confirmed.
    models: HashMap<PodId, String>,
    /// Live messages claiming a change, held until the pod's next message confirms it.
    claims: Claims<(KvMessage, Option<String>)>,
}

/// Live messages of one engine held while its history is replayed.
#[derive(Default)]
struct Held {
    frames: Vec<Frames>,
    bytes: usize,
}

impl Held {
    /// Hold `frames`, unless the queue is full.
    fn push(&mut self, frames: Frames) -> bool {
        let size: usize = frames.iter().map(Vec::len).sum();
        if self.frames.len() >= MAX_QUEUED || self.bytes + size > MAX_QUEUED_BYTES {
            return false;
        }
        self.bytes += size;
        self.frames.push(frames);
        true
    }
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
    /// For `/health` and `/metrics` of the engines.
    http: reqwest::Client,
    /// Engines allowed to publish (static list + discovery).
    allowed: Mutex<AllowList>,
    /// The addresses engines may publish from on the bound socket.
    peers: PeerAddresses,
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
            http: health::client(Duration::from_millis(config.health_timeout_ms.max(1)))?,
            config,
            index,
            registry,
            metrics,
            hash,
            style,
            engines,
            dns,
            allowed: Mutex::new(AllowList::default()),
            peers: PeerAddresses::default(),
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
        for pod in self.registry.ranks_of(endpoint) {
            self.index.drop_pod(&pod);
            self.registry.remove(&pod);
            st.keyers.remove(&pod);
            st.sequences.forget(&pod);
            st.models.remove(&pod);
            st.claims.forget(&pod);
        }
    }

    fn is_allowed_endpoint(&self, endpoint: &str) -> bool {
        self.allowed.lock().contains_endpoint(endpoint)
    }

    /// Decode one message and apply it. `force` applies past a sequence gap (replay failed
    /// or not configured: the engine is then re-learned from scratch).
    pub fn handle(&self, source: Source<'_>, frames: &[&[u8]], force: bool) -> Outcome {
        let through = if force {
            Through::LiveForced
        } else {
            Through::Live
        };
        self.handle_as(source, frames, through)
    }

    fn handle_as(&self, source: Source<'_>, frames: &[&[u8]], through: Through) -> Outcome {
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
            Source::Bound { peer } => {
                let named = topic.as_ref().and_then(|t| {
                    self.allowed
                        .lock()
                        .spec_for_topic(&t.host, t.port)
                        .map(|s| (s.host.clone(), s.endpoint.clone()))
                });
                match named {
                    Some((host, endpoint)) if self.peers.admits(&host, peer) => endpoint,
                    Some((_, endpoint)) => {
                        self.metrics.spoofed_messages.inc();
                        tracing::debug!(%endpoint, ?peer, "topic names an engine at another address: dropped");
                        return Outcome::Dropped(DropReason::AddressMismatch);
                    }
                    None => {
                        self.metrics.unknown_publishers.inc();
                        return Outcome::Dropped(DropReason::UnknownPublisher);
                    }
                }
            }
        };
        let rank = msg.batch.data_parallel_rank.unwrap_or(0);
        if rank >= self.config.max_dp_ranks {
            self.metrics.rank_limit_messages.inc();
            return Outcome::Dropped(DropReason::RankLimit);
        }
        let model = topic.and_then(|t| t.model);
        let pod = PodId {
            endpoint,
            dp_rank: rank,
        };
        let mut st = self.state.lock();
        if matches!(through, Through::Live | Through::LiveForced) {
            if let Some(queue) = st.relearning.get_mut(&pod.endpoint) {
                if queue.push(frames.iter().map(|f| f.to_vec()).collect()) {
                    return Outcome::Queued;
                }
            }
        }
        if through == Through::Replayed {
            // The engine's replay socket, dialed at its own address, speaks for it.
            return self.apply_message(&mut st, &pod, model, &msg, through);
        }
        // A new rank, another model or a sequence going back changes what is known of the
        // engine: one message's word is not enough, the pod's next one must continue it.
        let last = st.sequences.last(&pod);
        let claims = (last.is_none() && rank != 0 && !self.registry.knows(&pod))
            || last.is_some_and(|l| msg.seq <= l)
            || matches!((&model, st.models.get(&pod)), (Some(m), Some(k)) if m != k);
        let seq = msg.seq;
        let named = model.clone();
        let checked = st
            .claims
            .check(&pod, seq, named.as_deref(), claims, (msg, model));
        if checked.discarded {
            self.metrics.unconfirmed_claims.inc();
            tracing::info!(%pod, seq, "a claim (rank, model or restart) the next message did not confirm: discarded");
        }
        match checked.verdict {
            Verdict::Hold => Outcome::Held,
            Verdict::Apply((msg, model)) => self.apply_message(&mut st, &pod, model, &msg, through),
            Verdict::Confirmed {
                held: (held, held_model),
                current: (msg, model),
            } => {
                // The held message is the engine's word now, gap or not.
                self.apply_message(&mut st, &pod, held_model, &held, Through::LiveForced);
                self.apply_message(&mut st, &pod, model, &msg, through)
            }
        }
    }

    /// The sequence step and the events of one message whose sender and claims are
    /// settled.
    fn apply_message(
        &self,
        st: &mut State,
        pod: &PodId,
        model: Option<String>,
        msg: &KvMessage,
        through: Through,
    ) -> Outcome {
        self.registry.add(pod.clone());
        let arrival = match through {
            Through::Live => Arrival::Live {
                can_replay: self.config.replay_port.is_some(),
            },
            Through::LiveForced | Through::Dequeued => Arrival::Live { can_replay: false },
            Through::Replayed => Arrival::Replayed,
        };
        match st.sequences.step(pod, msg.seq, arrival) {
            Step::Apply => {}
            Step::Duplicate => return Outcome::Applied { events: 0 },
            Step::Restarted { last } => {
                // A publisher's sequence only restarts when its engine restarted: whatever
                // it held is gone.
                self.metrics.seq_restarts.inc();
                tracing::info!(%pod, last, seq = msg.seq, "sequence restart: engine restarted, clearing");
                self.clear(st, pod);
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
                self.clear(st, pod);
                self.registry.set_stale(pod, true);
            }
        }
        st.sequences.record(pod, msg.seq);
        if let Some(m) = &model {
            st.models.insert(pod.clone(), m.clone());
        }
        let applied = self.apply(st, pod, msg);
        let block_size = msg.batch.events.iter().find_map(|e| match e {
            KvEvent::BlockStored(s) => Some(s.block_size as usize),
            _ => None,
        });
        self.registry
            .record_event(pod, model.as_deref(), msg.seq, block_size);
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
                    // The re-key map keeps no more than the engine's share of the index.
                    let engines = st.keyers.len() + usize::from(!st.keyers.contains_key(pod));
                    let share = (self.index.max_entries() / engines.max(1)).max(1);
                    let keyer = st
                        .keyers
                        .entry(pod.clone())
                        .or_insert_with(|| EngineKeyer::new(hash.clone(), style));
                    let out = keyer.on_stored(stored, share);
                    if out.evicted > 0 {
                        self.metrics.rekey_evictions.inc_by(out.evicted);
                    }
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

    /// Forget what `endpoint` (every rank) held: it restarted, or may have.
    fn clear_endpoint(&self, endpoint: &str) {
        let mut st = self.state.lock();
        for pod in self.registry.ranks_of(endpoint) {
            self.index.apply(&pod, IndexOp::ClearPod);
            st.keyers.remove(&pod);
            st.sequences.forget(&pod);
            st.models.remove(&pod);
            st.claims.forget(&pod);
            self.registry.set_stale(&pod, false);
        }
    }

    /// `endpoint` restarted (or the indexer cannot tell it did not): empty its index entry
    /// and re-learn what it still buffers.
    fn engine_restarted(self: &Arc<Self>, endpoint: &Arc<str>, why: &str) {
        tracing::info!(%endpoint, "engine restarted ({why}): its index entry is emptied");
        self.metrics.engine_restarts.inc();
        self.clear_endpoint(endpoint);
    }

    /// A health check of `endpoint` failed: out of routing until it answers again.
    fn engine_failed(&self, endpoint: &str, why: String) {
        if self
            .registry
            .set_health(endpoint, Health::Down, Some(why.clone()))
            != Health::Down
        {
            tracing::warn!(%endpoint, "engine out of routing: {why}");
            self.metrics.engines_down.inc();
        }
    }

    /// A health check of `endpoint` passed; `start_time` is its `process_start_time_seconds`
    /// when known. A restart empties the engine's entry before it is routed to again.
    fn engine_answered(self: &Arc<Self>, endpoint: &Arc<str>, start_time: Option<f64>) {
        if let Some(start) = start_time {
            self.observe_start_time(endpoint, start);
        }
        let before = self.registry.set_health(endpoint, Health::Up, None);
        if before == Health::Down {
            tracing::info!(%endpoint, "engine answers again: back in routing");
            // Bound engines reconnect to us on their own: ask what they buffered meanwhile.
            // Dialed ones are re-learned when their stream is dialed again.
            if self.config.zmq_bind.is_some() {
                self.relearn(endpoint.clone());
            }
        }
    }

    /// A scrape told `endpoint`'s process start time.
    fn observe_start_time(self: &Arc<Self>, endpoint: &Arc<str>, start: f64) {
        if let Some(before) = self.registry.set_process_start_time(endpoint, start) {
            self.engine_restarted(
                endpoint,
                &format!("process_start_time_seconds {before} -> {start}"),
            );
            if self.config.zmq_bind.is_some() {
                self.relearn(endpoint.clone());
            }
        }
    }

    /// Re-learn `endpoint` from its replay socket (when engines offer one): everything it
    /// still buffers, in its own task, its live messages held meanwhile.
    fn relearn(self: &Arc<Self>, endpoint: Arc<str>) {
        if self.start_replay(endpoint, 0, None) {
            self.metrics.relearns.inc();
        }
    }

    /// A live message (`frames`) showed that `endpoint` missed messages from `from` on: ask
    /// its replay socket for them in their own task, this message held until they applied.
    pub fn replay_gap(self: &Arc<Self>, endpoint: Arc<str>, from: u64, frames: &[&[u8]]) {
        self.metrics.replays.inc();
        let held: Frames = frames.iter().map(|f| f.to_vec()).collect();
        if !self.start_replay(endpoint.clone(), from, Some(held)) {
            // No replay socket: apply past the gap (the engine is re-learned from scratch).
            self.handle(Source::Dialed(&endpoint), frames, true);
        }
    }

    /// Replay `endpoint`'s buffer from `from` on in its own task, `held` (and the live
    /// messages that follow) applied after it. False when engines offer no replay or one
    /// is already running for `endpoint`.
    fn start_replay(self: &Arc<Self>, endpoint: Arc<str>, from: u64, held: Option<Frames>) -> bool {
        let Some(port) = self.config.replay_port else {
            return false;
        };
        {
            let mut st = self.state.lock();
            if st.relearning.contains_key(&endpoint) {
                return false;
            }
            let mut queue = Held::default();
            if let Some(frames) = held {
                queue.push(frames);
            }
            st.relearning.insert(endpoint.clone(), queue);
        }
        let host = endpoint
            .rsplit_once(':')
            .map_or(&*endpoint, |(h, _)| h)
            .to_owned();
        let ingest = self.clone();
        tokio::spawn(async move {
            let history = replay::fetch_with_retries(&host, port, from, None, |e| {
                if let Some(e) = e.downcast_ref::<transport::TransportError>() {
                    receive::count_oversized(&ingest, e);
                }
            })
            .await;
            ingest.finish_relearn(&endpoint, history);
        });
        true
    }

    /// Apply messages replayed by `endpoint`, skipping those already applied; returns how
    /// many applied something.
    fn apply_replayed(&self, endpoint: &str, messages: &[Frames]) -> usize {
        let mut applied = 0;
        for frames in messages {
            let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
            if matches!(
                self.handle_as(Source::Dialed(endpoint), &refs, Through::Replayed),
                Outcome::Applied { events } if events > 0
            ) {
                applied += 1;
            }
        }
        applied
    }

    /// Apply `endpoint`'s history (what precedes its first held live message), then its
    /// held live messages, then let the live stream through again.
    fn finish_relearn(&self, endpoint: &Arc<str>, history: Vec<Frames>) {
        let first_live = self
            .state
            .lock()
            .relearning
            .get(endpoint)
            .and_then(|q| q.frames.first())
            .and_then(replay::seq_of);
        let older = |f: &&Frames| match (replay::seq_of(f), first_live) {
            (Some(seq), Some(live)) => seq < live,
            (seq, None) => seq.is_some(),
            _ => false,
        };
        let history: Vec<Frames> = history.into_iter().filter(|f| older(&f)).collect();
        let replayed = self.apply_replayed(endpoint, &history);
        tracing::info!(%endpoint, replayed, "re-learned from the replay buffer");
        loop {
            let held = {
                let mut st = self.state.lock();
                let held = st
                    .relearning
                    .get_mut(endpoint)
                    .map(|q| std::mem::take(q).frames)
                    .unwrap_or_default();
                if held.is_empty() {
                    st.relearning.remove(endpoint);
                }
                held
            };
            if held.is_empty() {
                return;
            }
            for frames in held {
                let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
                self.handle_as(Source::Dialed(endpoint), &refs, Through::Dequeued);
            }
        }
    }

    /// Resolve the allowed engines' host names for the bound socket's address check, at
    /// start and every `--dns-interval-secs` (IP literals need none), until shutdown.
    async fn peers_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let every = Duration::from_secs(self.config.dns_interval_secs.max(1));
        loop {
            let hosts = self.allowed.lock().hosts();
            self.peers.refresh(hosts.iter().map(String::as_str)).await;
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    /// Scrape every engine's metrics until `shutdown` fires (load, restarts, and a failed
    /// scrape as a failed health check); expired in-flight decisions are released as it goes.
    pub async fn scrape(
        self: Arc<Self>,
        in_flight: Arc<InFlight>,
        shutdown: watch::Receiver<bool>,
    ) {
        let interval = Duration::from_millis(self.config.scrape_interval_ms.max(50));
        health::scrape_loop(self, in_flight, interval, shutdown).await;
    }

    /// Run every ingestion task until `shutdown` fires: the event streams, discovery and
    /// health checks.
    pub async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        let mut tasks = tokio::task::JoinSet::new();
        if let Some(addr) = self.config.zmq_bind.clone() {
            // Engines that publish to us may hold what they published before we started.
            for spec in &self.engines {
                self.relearn(spec.endpoint.clone());
            }
            tasks.spawn(receive::bind_loop(self.clone(), addr, shutdown.clone()));
            tasks.spawn(self.clone().peers_loop(shutdown.clone()));
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
        if self.config.health_checked() {
            tasks.spawn(health::health_loop(
                self.clone(),
                Duration::from_millis(self.config.health_interval_ms),
                shutdown.clone(),
            ));
        }
        while tasks.join_next().await.is_some() {}
    }
}
