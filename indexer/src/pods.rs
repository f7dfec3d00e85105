//! Who the engines are. A pod's identity is what routing answers with (its serving
//! `ip:port`) plus its data-parallel rank, so ranks never share index entries.
//!
//! The registry is the allow-list too: events from a publisher that is not a known engine
//! (static list or DNS discovery) are dropped, so nobody else in the cluster can poison the
//! index. It also keeps what `/v1/pods` shows per engine: how its keys are made, its last
//! sequence number, when it last spoke, its load, and its health. With health checks on
//! (`with_health_checks`), only engines whose last check passed are routed to.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::types::{Health, KeyMode, PodId, PodLoad, PodSlot};

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

/// The routable engines of one model, as a decision needs them. Cached until who is
/// routable changes (an engine added, removed, found up or down, or naming its model or
/// block size), not rebuilt per decision: at 1,024 engines walking the registry and cloning
/// every engine's identity was a quarter of a decision's CPU.
#[derive(Debug, Default)]
pub struct Roster {
    pub pods: Vec<(PodId, PodSlot)>,
    /// The model's block size as its engines' events say it, if any has.
    pub block_size: Option<usize>,
}

impl Roster {
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    pub fn len(&self) -> usize {
        self.pods.len()
    }
}

#[derive(Debug)]
struct PodState {
    model: Option<String>,
    key_mode: KeyMode,
    last_seq: Option<u64>,
    last_event: Option<Instant>,
    block_size: Option<usize>,
    orphans: u64,
    stale: bool,
    slot: PodSlot,
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
            slot: PodSlot(u32::MAX),
            health: Health::Unknown,
            down_because: None,
            process_start_time: None,
        }
    }
}

/// Every engine ever known, by slot: its identity and its load. Append-only (a slot is
/// never reused), so it grows with the distinct engines a process has seen, 48 bytes each
/// plus the endpoint.
#[derive(Debug, Default)]
pub struct Slots {
    of: HashMap<PodId, PodSlot>,
    ids: Vec<PodId>,
    loads: Vec<PodLoad>,
}

impl Slots {
    /// The engine of `slot`.
    pub fn id(&self, slot: PodSlot) -> Option<&PodId> {
        self.ids.get(slot.0 as usize)
    }

    /// The slot of `pod`, if it was ever known.
    pub fn slot_of(&self, pod: &PodId) -> Option<PodSlot> {
        self.of.get(pod).copied()
    }

    /// The load of the engine of `slot` (an unknown slot has none).
    pub fn load(&self, slot: PodSlot) -> PodLoad {
        self.loads.get(slot.0 as usize).copied().unwrap_or_default()
    }

    /// `pod`'s slot, numbered now if it is new. An engine that comes back keeps its slot
    /// and its decisions in flight, not the gauges scraped before it left.
    fn slot(&mut self, pod: &PodId) -> PodSlot {
        if let Some(&slot) = self.of.get(pod) {
            if let Some(load) = self.load_mut(slot) {
                *load = PodLoad {
                    in_flight: load.in_flight,
                    ..PodLoad::default()
                };
            }
            return slot;
        }
        let slot = PodSlot(u32::try_from(self.ids.len()).unwrap_or(u32::MAX));
        self.of.insert(pod.clone(), slot);
        self.ids.push(pod.clone());
        self.loads.push(PodLoad::default());
        slot
    }

    fn load_mut(&mut self, slot: PodSlot) -> Option<&mut PodLoad> {
        self.loads.get_mut(slot.0 as usize)
    }
}

/// Rosters cached at most (one per model; past it they are built per decision).
const MAX_CACHED_ROSTERS: usize = 1024;

/// Known engines and their state.
#[derive(Debug, Default)]
pub struct PodRegistry {
    pods: RwLock<BTreeMap<PodId, PodState>>,
    /// Per model, its roster while nothing that decides routability has changed. Lock
    /// order: this, then `pods`; a change to `pods` clears it after releasing `pods`.
    rosters: Mutex<HashMap<String, Arc<Roster>>>,
    /// Per-engine state by slot. Lock order: after `pods` when both are held.
    slots: RwLock<Slots>,
    /// The model assumed for engines that have not said theirs (single-model fleets).
    default_model: Option<String>,
    /// Route only to engines whose last health check passed.
    health_checked: bool,
}

impl PodRegistry {
    pub fn new(default_model: Option<String>) -> Self {
        Self {
            pods: RwLock::new(BTreeMap::new()),
            rosters: Mutex::new(HashMap::new()),
            slots: RwLock::new(Slots::default()),
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

    /// Who is routable changed: rosters are rebuilt on next use. Called after the change,
    /// with `pods` released.
    fn rosters_changed(&self) {
        self.rosters.lock().clear();
    }

    fn serves(&self, s: &PodState, model: &str) -> bool {
        s.model.as_deref().or(self.default_model.as_deref()) == Some(model)
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
        let slot = self.slots.write().slot(&pod);
        let state = pods.entry(pod).or_default();
        state.slot = slot;
        if let Some((health, why, start)) = sibling {
            state.health = health;
            state.down_because = why;
            state.process_start_time = start;
        }
        drop(pods);
        self.rosters_changed();
    }

    /// Whether `pod` is known (listed, discovered, or a rank that published).
    pub fn knows(&self, pod: &PodId) -> bool {
        self.read().contains_key(pod)
    }

    /// Forget an engine; returns whether it was known.
    pub fn remove(&self, pod: &PodId) -> bool {
        let removed = self.write().remove(pod).is_some();
        if removed {
            self.rosters_changed();
        }
        removed
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
        let mut changed = false;
        for (_, s) in self
            .write()
            .iter_mut()
            .filter(|(p, _)| &*p.endpoint == endpoint)
        {
            previous = s.health;
            changed |= s.health != health;
            s.health = health;
            s.down_because = why.clone();
        }
        if changed {
            self.rosters_changed();
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

    /// Routable engines serving `model`, with their slots (loads are read by slot).
    pub fn pods_for_model(&self, model: &str) -> Arc<Roster> {
        let mut rosters = self.rosters.lock();
        if let Some(roster) = rosters.get(model) {
            return roster.clone();
        }
        let pods = self.read();
        let roster = Arc::new(Roster {
            pods: pods
                .iter()
                .filter(|(_, s)| self.routable(s) && self.serves(s, model))
                .map(|(p, s)| (p.clone(), s.slot))
                .collect(),
            block_size: pods
                .values()
                .filter(|s| self.serves(s, model))
                .find_map(|s| s.block_size),
        });
        drop(pods);
        // Only models some engine serves, so a client naming made-up models fills nothing.
        if !roster.is_empty() && rosters.len() < MAX_CACHED_ROSTERS {
            rosters.insert(model.to_owned(), roster.clone());
        }
        roster
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

    /// Apply `f` to an engine's state, if known; `f` says whether it changed who is
    /// routable or the model's block size.
    fn update_routing(&self, pod: &PodId, f: impl FnOnce(&mut PodState) -> bool) {
        let changed = self.write().get_mut(pod).is_some_and(f);
        if changed {
            self.rosters_changed();
        }
    }

    /// Apply `f` to an engine's state, if known (nothing routing reads).
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
        self.update_routing(pod, |s| {
            let mut changed = false;
            if let Some(m) = model {
                if s.model.as_deref() != Some(m) {
                    s.model = Some(m.to_owned());
                    changed = true;
                }
            }
            s.last_seq = Some(seq);
            s.last_event = Some(Instant::now());
            if block_size.is_some() && s.block_size != block_size {
                s.block_size = block_size;
                changed = true;
            }
            changed
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
        self.pods_for_model(model).block_size
    }

    pub fn set_load(&self, pod: &PodId, f: impl FnOnce(&mut PodLoad)) {
        let mut slots = self.slots.write();
        if let Some(load) = slots.slot_of(pod).and_then(|slot| slots.load_mut(slot)) {
            f(load);
        }
    }

    pub fn set_load_at(&self, slot: PodSlot, f: impl FnOnce(&mut PodLoad)) {
        if let Some(load) = self.slots.write().load_mut(slot) {
            f(load);
        }
    }

    /// `pod`'s load, if known.
    pub fn load(&self, pod: &PodId) -> Option<PodLoad> {
        let slots = self.slots.read();
        Some(slots.load(slots.slot_of(pod)?))
    }

    /// `pod`'s slot, if it was ever known.
    pub fn slot_of(&self, pod: &PodId) -> Option<PodSlot> {
        self.slots.read().slot_of(pod)
    }

    /// The slot table (engines by slot), read-locked: hold it briefly and never while
    /// calling back into the registry.
    pub fn slots(&self) -> RwLockReadGuard<'_, Slots> {
        self.slots.read()
    }

    /// Per-engine status; `blocks` gives (GPU, lower-tier) block counts from the index.
    pub fn snapshot(
        &self,
        blocks: &std::collections::HashMap<PodId, (usize, usize)>,
    ) -> Vec<PodStatus> {
        let pods = self.read();
        let slots = self.slots.read();
        pods.iter()
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
                    load: slots.load(s.slot),
                    health: s.health,
                    down_because: s.down_because.clone(),
                    process_start_time: s.process_start_time,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(roster: &Roster) -> Vec<String> {
        roster.pods.iter().map(|(p, _)| p.to_string()).collect()
    }

    #[test]
    fn a_cached_roster_follows_loads_and_is_rebuilt_when_routability_changes() {
        let reg = PodRegistry::new(Some("m".into())).with_health_checks();
        let (a, b) = (PodId::new("10.0.0.1:8000"), PodId::new("10.0.0.2:8000"));
        reg.add(a.clone());
        reg.add(b.clone());
        // Unchecked engines are not routable.
        assert!(reg.pods_for_model("m").is_empty());
        reg.set_health("10.0.0.1:8000", Health::Up, None);
        reg.set_health("10.0.0.2:8000", Health::Up, None);
        let roster = reg.pods_for_model("m");
        assert_eq!(names(&roster), ["10.0.0.1:8000", "10.0.0.2:8000"]);
        // Cached: the same roster until something routing reads changes...
        assert!(Arc::ptr_eq(&roster, &reg.pods_for_model("m")));
        // ...and loads set since are read through it.
        reg.set_load(&b, |l| l.waiting = 7.0);
        let slots = reg.slots();
        let waiting: Vec<f64> = roster
            .pods
            .iter()
            .map(|(_, s)| slots.load(*s).waiting)
            .collect();
        drop(slots);
        assert_eq!(waiting, [0.0, 7.0]);
        // An event that says nothing new keeps it.
        reg.record_event(&a, None, 1, None);
        assert!(Arc::ptr_eq(&roster, &reg.pods_for_model("m")));
        // Down, another model, a block size, a new rank, removal: each rebuilds it.
        reg.set_health("10.0.0.1:8000", Health::Down, Some("refused".into()));
        assert_eq!(names(&reg.pods_for_model("m")), ["10.0.0.2:8000"]);
        reg.set_health("10.0.0.1:8000", Health::Up, None);
        reg.record_event(&b, Some("other"), 2, None);
        assert_eq!(names(&reg.pods_for_model("m")), ["10.0.0.1:8000"]);
        assert_eq!(names(&reg.pods_for_model("other")), ["10.0.0.2:8000"]);
        assert_eq!(reg.block_size("m"), None);
        reg.record_event(&a, None, 3, Some(16));
        assert_eq!(reg.block_size("m"), Some(16));
        let rank = PodId {
            endpoint: "10.0.0.1:8000".into(),
            dp_rank: 1,
        };
        reg.add(rank.clone());
        assert_eq!(
            names(&reg.pods_for_model("m")),
            ["10.0.0.1:8000", "10.0.0.1:8000#dp1"]
        );
        assert!(reg.remove(&a));
        assert_eq!(names(&reg.pods_for_model("m")), ["10.0.0.1:8000#dp1"]);
        // An engine keeps its slot and its decisions in flight when it comes back, not its
        // old gauges; slots are not reused.
        let slot_a = reg.slot_of(&a).unwrap();
        reg.set_load(&a, |l| (l.in_flight, l.waiting) = (3, 9.0));
        reg.add(a.clone());
        assert_eq!(reg.slot_of(&a), Some(slot_a));
        let load = reg.load(&a).unwrap();
        assert_eq!((load.in_flight, load.waiting), (3, 0.0));
        assert_eq!(reg.slots().id(slot_a), Some(&a));
        assert_eq!(reg.slot_of(&rank), Some(PodSlot(2)));
        // A model nobody serves is answered, not cached.
        assert!(reg.pods_for_model("made-up").is_empty());
        assert!(!reg.rosters.lock().contains_key("made-up"));
    }
}
