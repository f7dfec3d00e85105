//! Who the engines are. A pod's identity is what routing answers with (its serving
//! `ip:port`) plus its data-parallel rank, so ranks never share index entries.
//!
//! The registry is the allow-list too: events from a publisher that is not a known engine
//! (static list or DNS discovery) are dropped, so nobody else in the cluster can poison the
//! index. It also keeps what `/v1/pods` shows per engine: how its keys are made, its last
//! sequence number, when it last spoke, its load, and its health. With health checks on
//! (`with_health_checks`), only engines whose last check passed are routed to.

use std::collections::BTreeMap;
use std::time::Instant;

use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::types::{Health, KeyMode, PodId, PodLoad};

/// What `/v1/pods` reports for one engine.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PodStatus {
    pub endpoint: String,
    pub dp_rank: u32,
    pub model: Option<String>,
    pub key_mode: KeyMode,
    pub last_seq: Option<u64>,
    pub seconds_since_last_event: Option<f64>,
    pub block_size: Option<usize>,
    pub gpu_blocks: usize,
    pub lower_tier_blocks: usize,
    pub orphans_dropped: u64,
    pub stale: bool,
    pub load: PodLoad,
    pub health: Health,
    /// Why the last check failed, while it is down.
    pub down_because: Option<String>,
    /// vLLM's `process_start_time_seconds`, when its metrics show it.
    pub process_start_time: Option<f64>,
}

#[derive(Debug, Clone)]
struct PodState {
    model: Option<String>,
    key_mode: KeyMode,
    last_seq: Option<u64>,
    last_event: Option<Instant>,
    block_size: Option<usize>,
    orphans: u64,
    stale: bool,
    load: PodLoad,
    health: Health,
    down_because: Option<String>,
    process_start_time: Option<f64>,
}

impl Default for PodState {
    fn default() -> Self {
        Self {
            model: None,
            key_mode: KeyMode::Probing,
            last_seq: None,
            last_event: None,
            block_size: None,
            orphans: 0,
            stale: false,
            load: PodLoad::default(),
            health: Health::Unknown,
            down_because: None,
            process_start_time: None,
        }
    }
}

/// Known engines and their state.
#[derive(Debug, Default)]
pub struct PodRegistry {
    pods: RwLock<BTreeMap<PodId, PodState>>,
    /// The model assumed for engines that have not said theirs (single-model fleets).
    default_model: Option<String>,
    /// Route only to engines whose last health check passed.
    health_checked: bool,
}

impl PodRegistry {
    pub fn new(default_model: Option<String>) -> Self {
        Self {
            pods: RwLock::new(BTreeMap::new()),
            default_model,
            health_checked: false,
        }
    }

    /// Route only to engines whose last health check passed (`Up`); without this every
    /// known engine is routed to.
    pub fn with_health_checks(mut self) -> Self {
        self.health_checked = true;
        self
    }

    fn routable(&self, s: &PodState) -> bool {
        !self.health_checked || s.health == Health::Up
    }

    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<PodId, PodState>> {
        self.pods.read()
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<PodId, PodState>> {
        self.pods.write()
    }

    /// Add an engine (static list, discovery, or a new DP rank of a known endpoint: it
    /// shares its endpoint's health).
    pub fn add(&self, pod: PodId) {
        let mut pods = self.write();
        if pods.contains_key(&pod) {
            return;
        }
        let sibling = pods
            .iter()
            .find(|(p, _)| p.endpoint == pod.endpoint)
            .map(|(_, s)| (s.health, s.down_because.clone(), s.process_start_time));
        let state = pods.entry(pod).or_default();
        if let Some((health, why, start)) = sibling {
            state.health = health;
            state.down_because = why;
            state.process_start_time = start;
        }
    }

    /// Whether `pod` is known (listed, discovered, or a rank that published).
    pub fn knows(&self, pod: &PodId) -> bool {
        self.read().contains_key(pod)
    }

    /// Forget an engine; returns whether it was known.
    pub fn remove(&self, pod: &PodId) -> bool {
        self.write().remove(pod).is_some()
    }

    /// Whether `endpoint` (any DP rank) is a known engine.
    pub fn knows_endpoint(&self, endpoint: &str) -> bool {
        self.read().keys().any(|p| &*p.endpoint == endpoint)
    }

    pub fn all(&self) -> Vec<PodId> {
        self.read().keys().cloned().collect()
    }

    /// The known data-parallel ranks of `endpoint` (one engine process, one address).
    pub fn ranks_of(&self, endpoint: &str) -> Vec<PodId> {
        self.read()
            .keys()
            .filter(|p| &*p.endpoint == endpoint)
            .cloned()
            .collect()
    }

    /// Every known endpoint, once (ranks share theirs).
    pub fn endpoints(&self) -> Vec<std::sync::Arc<str>> {
        let mut endpoints: Vec<_> = self.read().keys().map(|p| p.endpoint.clone()).collect();
        endpoints.dedup();
        endpoints
    }

    /// Whether some engine can be routed to.
    pub fn any_routable(&self) -> bool {
        self.read().values().any(|s| self.routable(s))
    }

    /// Record a health check of `endpoint` (every rank); returns the health it had.
    pub fn set_health(&self, endpoint: &str, health: Health, why: Option<String>) -> Health {
        let mut previous = Health::Unknown;
        for (_, s) in self
            .write()
            .iter_mut()
            .filter(|(p, _)| &*p.endpoint == endpoint)
        {
            previous = s.health;
            s.health = health;
            s.down_because = why.clone();
        }
        previous
    }

    pub fn health(&self, endpoint: &str) -> Health {
        self.read()
            .iter()
            .find(|(p, _)| &*p.endpoint == endpoint)
            .map_or(Health::Unknown, |(_, s)| s.health)
    }

    /// Record `endpoint`'s `process_start_time_seconds`; returns the one it had before,
    /// when it differs (the engine restarted).
    pub fn set_process_start_time(&self, endpoint: &str, start: f64) -> Option<f64> {
        let mut changed = None;
        for (_, s) in self
            .write()
            .iter_mut()
            .filter(|(p, _)| &*p.endpoint == endpoint)
        {
            if let Some(before) = s.process_start_time.filter(|b| *b != start) {
                changed = Some(before);
            }
            s.process_start_time = Some(start);
        }
        changed
    }

    /// Routable engines serving `model`, with their load.
    pub fn pods_for_model(&self, model: &str) -> Vec<(PodId, PodLoad)> {
        self.read()
            .iter()
            .filter(|(_, s)| self.routable(s))
            .filter(|(_, s)| s.model.as_deref().or(self.default_model.as_deref()) == Some(model))
            .map(|(p, s)| (p.clone(), s.load))
            .collect()
    }

    /// Models some engine serves.
    pub fn models(&self) -> Vec<String> {
        let mut models: Vec<String> = self
            .read()
            .values()
            .filter_map(|s| s.model.clone().or_else(|| self.default_model.clone()))
            .collect();
        models.sort();
        models.dedup();
        models
    }

    /// Apply `f` to an engine's state, if known.
    fn update(&self, pod: &PodId, f: impl FnOnce(&mut PodState)) {
        if let Some(s) = self.write().get_mut(pod) {
            f(s);
        }
    }

    pub fn record_event(
        &self,
        pod: &PodId,
        model: Option<&str>,
        seq: u64,
        block_size: Option<usize>,
    ) {
        self.update(pod, |s| {
            if let Some(m) = model {
                if s.model.as_deref() != Some(m) {
                    s.model = Some(m.to_owned());
                }
            }
            s.last_seq = Some(seq);
            s.last_event = Some(Instant::now());
            if block_size.is_some() {
                s.block_size = block_size;
            }
        });
    }

    pub fn set_key_mode(&self, pod: &PodId, mode: KeyMode) {
        self.update(pod, |s| s.key_mode = mode);
    }

    pub fn key_mode(&self, pod: &PodId) -> KeyMode {
        self.read()
            .get(pod)
            .map(|s| s.key_mode)
            .unwrap_or(KeyMode::Probing)
    }

    pub fn add_orphans(&self, pod: &PodId, n: u64) {
        self.update(pod, |s| s.orphans += n);
    }

    pub fn set_stale(&self, pod: &PodId, stale: bool) {
        self.update(pod, |s| s.stale = stale);
    }

    pub fn block_size(&self, model: &str) -> Option<usize> {
        self.read()
            .values()
            .filter(|s| s.model.as_deref().or(self.default_model.as_deref()) == Some(model))
            .find_map(|s| s.block_size)
    }

    pub fn set_load(&self, pod: &PodId, f: impl FnOnce(&mut PodLoad)) {
        self.update(pod, |s| f(&mut s.load));
    }

    /// Per-engine status; `blocks` gives (GPU, lower-tier) block counts from the index.
    pub fn snapshot(
        &self,
        blocks: &std::collections::HashMap<PodId, (usize, usize)>,
    ) -> Vec<PodStatus> {
        self.read()
            .iter()
            .map(|(p, s)| {
                let (gpu, lower) = blocks.get(p).copied().unwrap_or_default();
                PodStatus {
                    endpoint: p.endpoint.to_string(),
                    dp_rank: p.dp_rank,
                    model: s.model.clone().or_else(|| self.default_model.clone()),
                    key_mode: s.key_mode,
                    last_seq: s.last_seq,
                    seconds_since_last_event: s.last_event.map(|t| t.elapsed().as_secs_f64()),
                    block_size: s.block_size,
                    gpu_blocks: gpu,
                    lower_tier_blocks: lower,
                    orphans_dropped: s.orphans,
                    stale: s.stale,
                    load: s.load,
                    health: s.health,
                    down_because: s.down_because.clone(),
                    process_start_time: s.process_start_time,
                }
            })
            .collect()
    }
}
