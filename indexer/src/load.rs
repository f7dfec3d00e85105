//! Load per pod: the indexer's own decisions in flight and each pod's vLLM metrics (read
//! from a scraped page here; the scraping itself is `ingest::health`'s, which also learns
//! from a failed scrape that the engine is gone).
//!
//! Metrics lag and do not say how much work a queued request is; the indexer's own
//! decisions say both. They live in a `kvroute_scoring::Ledger` (shared with the simulator's
//! fleet model): each decision's uncached tokens count as pending prefill until the pod
//! stores its last block or the scraped FIFO queue shows it admitted, and its keys count as
//! held until the filter reports the request complete, or after a TTL in case that report
//! is lost.
//!
//! The ledger numbers its decisions in order; callers never see those numbers. A caller
//! gets a random 64-bit ticket tied to its address: another caller can neither guess it nor
//! release it. Tickets are bounded in number and in the keys they hold: past either bound
//! the oldest decision is released early (counted in `kvroute_tickets_evicted_total`).
//!
//! A caller may name its own ticket (`kvroute_api::TICKET_HEADER`), so that it can release
//! a decision whose answer it never read: a route call that timed out still reaches the
//! indexer, which decides later for a request already sent elsewhere. Such a completion
//! comes before its decision; it is remembered for a while (bounded), and the decision it
//! names is released as soon as it is made (counted in `kvroute_tickets_abandoned_total`).
//! Otherwise that phantom request would count as load and hold its keys until the TTL.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use kvroute_scoring::{Ledger, Pending};
use parking_lot::{Mutex, MutexGuard};

use crate::index::PodMatch;
use crate::pods::{PodRegistry, Slots};
use crate::types::PodSlot;

/// Who asks for a decision: its ticket is tied to `addr`, and may be one it named.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Caller {
    pub addr: Option<IpAddr>,
    /// The caller's own ticket for the decision (non-zero), if it named one.
    pub ticket: Option<u64>,
}

/// What [`InFlight::issue`] did with a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Issued {
    pub ticket: u64,
    /// Older decisions released to stay within the bounds.
    pub evicted: usize,
    /// The caller had already released the ticket it named: the decision was released at
    /// once and counts as nothing.
    pub abandoned: bool,
}

/// In-flight decisions, by ticket.
#[derive(Debug)]
pub struct InFlight {
    ttl: Duration,
    /// Origin of the ledger's seconds.
    epoch: Instant,
    /// Kept by engine slot: a decision reads every engine's book.
    ledger: Mutex<Ledger<PodSlot>>,
    tickets: Mutex<Tickets>,
    max_tickets: usize,
    max_keys: usize,
    /// How long, and how many, completions that came before their decision are remembered.
    early_keep: Duration,
    max_early: usize,
}

/// What a caller's ticket stands for.
#[derive(Debug)]
struct Held {
    /// The ledger's own number for the decision.
    entry: u64,
    owner: Option<IpAddr>,
    keys: usize,
}

/// The tickets handed out, oldest first.
#[derive(Debug, Default)]
struct Tickets {
    by_ticket: HashMap<u64, Held>,
    /// Issue order; may still name tickets already completed (dropped lazily).
    order: VecDeque<(u64, Instant)>,
    keys: usize,
    /// Completions of tickets not held, by owner and ticket: a caller's own ticket released
    /// before its decision was made. Oldest first in `early_order` (may name entries since
    /// taken).
    early: HashMap<(Option<IpAddr>, u64), Instant>,
    early_order: VecDeque<((Option<IpAddr>, u64), Instant)>,
}

/// Drops from `queue` the entries that `live` no longer names, once they outnumber the `live`
/// ones: each stale entry is dropped once, so leaving lazily costs no scan per removal.
fn compact_lazily<T>(queue: &mut VecDeque<T>, live: usize, is_live: impl FnMut(&T) -> bool) {
    if queue.len() > 2 * live + 64 {
        queue.retain(is_live);
    }
}

impl Tickets {
    /// Remembers that `owner` released `ticket` before any decision held it; forgets what
    /// is older than `keep` or past `max` entries.
    fn remember_early(&mut self, owner: Option<IpAddr>, ticket: u64, keep: Duration, max: usize) {
        let now = Instant::now();
        // The same release again (copies sent to every replica) takes no new room.
        let new = !self.early.contains_key(&(owner, ticket));
        while let Some(&(key, at)) = self.early_order.front() {
            if now.duration_since(at) < keep && (!new || self.early.len() < max) {
                break;
            }
            self.early_order.pop_front();
            if self.early.get(&key) == Some(&at) {
                self.early.remove(&key);
            }
        }
        self.early.insert((owner, ticket), now);
        self.early_order.push_back(((owner, ticket), now));
        // Entries taken by their decision leave the order lazily.
        let live = &self.early;
        compact_lazily(&mut self.early_order, live.len(), |(key, at)| {
            live.get(key) == Some(at)
        });
    }

    /// Whether `owner` released `ticket` early, within `keep`; forgets it either way.
    fn take_early(&mut self, owner: Option<IpAddr>, ticket: u64, keep: Duration) -> bool {
        self.early
            .remove(&(owner, ticket))
            .is_some_and(|at| at.elapsed() < keep)
    }

    fn remove(&mut self, ticket: u64) -> Option<Held> {
        let held = self.by_ticket.remove(&ticket)?;
        self.keys -= held.keys;
        // Completed tickets leave the order lazily.
        let live = &self.by_ticket;
        compact_lazily(&mut self.order, live.len(), |(t, _)| live.contains_key(t));
        Some(held)
    }

    /// The oldest ticket still held, taken out.
    fn pop_oldest(&mut self) -> Option<Held> {
        while let Some((t, _)) = self.order.pop_front() {
            if let Some(held) = self.by_ticket.remove(&t) {
                self.keys -= held.keys;
                return Some(held);
            }
        }
        None
    }
}

impl InFlight {
    pub fn new(ttl: Duration) -> Self {
        Self::bounded(
            ttl,
            crate::defaults::MAX_TICKETS,
            crate::defaults::MAX_TICKET_KEYS,
        )
    }

    /// At most `max_tickets` decisions and `max_keys` keys over them.
    pub fn bounded(ttl: Duration, max_tickets: usize, max_keys: usize) -> Self {
        Self {
            ttl,
            epoch: Instant::now(),
            ledger: Mutex::new(Ledger::new()),
            tickets: Mutex::new(Tickets::default()),
            max_tickets: max_tickets.max(1),
            max_keys: max_keys.max(1),
            early_keep: Duration::from_secs(crate::defaults::EARLY_COMPLETION_SECS),
            max_early: crate::defaults::MAX_EARLY_COMPLETIONS,
        }
    }

    /// A ticket for the ledger's decision `entry` (holding `keys` keys) for `caller`: the
    /// one it named if free, else random and unused. A decision whose named ticket the
    /// caller already released is ended at once.
    pub fn issue(&self, entry: u64, keys: usize, caller: Caller, registry: &PodRegistry) -> Issued {
        let owner = caller.addr;
        let mut ended = Vec::new();
        let (ticket, abandoned) = {
            let mut t = self.tickets.lock();
            let named = caller.ticket.filter(|&n| n != 0);
            match named {
                Some(n) if t.take_early(owner, n, self.early_keep) => {
                    ended.push(entry);
                    (n, true)
                }
                _ => {
                    while !t.by_ticket.is_empty()
                        && (t.by_ticket.len() >= self.max_tickets || t.keys + keys > self.max_keys)
                    {
                        match t.pop_oldest() {
                            Some(held) => ended.push(held.entry),
                            None => break,
                        }
                    }
                    let ticket = match named {
                        Some(n) if !t.by_ticket.contains_key(&n) => n,
                        _ => loop {
                            let candidate: u64 = rand::random();
                            if candidate != 0 && !t.by_ticket.contains_key(&candidate) {
                                break candidate;
                            }
                        },
                    };
                    t.by_ticket.insert(ticket, Held { entry, owner, keys });
                    t.order.push_back((ticket, Instant::now()));
                    t.keys += keys;
                    (ticket, false)
                }
            }
        };
        let evicted = ended.len() - usize::from(abandoned);
        for entry in ended {
            self.end(entry, registry);
        }
        Issued {
            ticket,
            evicted,
            abandoned,
        }
    }

    /// Ends the ledger's decision `entry` and its load.
    fn end(&self, entry: u64, registry: &PodRegistry) -> bool {
        let done = self.lock().complete(entry);
        match done {
            Some(slot) => {
                registry.set_load_at(slot, |l| l.in_flight = l.in_flight.saturating_sub(1));
                true
            }
            None => false,
        }
    }

    /// Tickets held.
    pub fn tickets(&self) -> usize {
        self.tickets.lock().by_ticket.len()
    }

    fn lock(&self) -> MutexGuard<'_, Ledger<PodSlot>> {
        self.ledger.lock()
    }

    fn seconds(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.epoch).as_secs_f64()
    }

    /// Runs `decide` with the ledger locked, so concurrent decisions see each other's
    /// pending work; `decide` gets the ledger and the current time in its seconds.
    pub fn with_ledger<R>(&self, decide: impl FnOnce(&mut Ledger<PodSlot>, f64) -> R) -> R {
        let now = self.seconds(Instant::now());
        decide(&mut self.lock(), now)
    }

    /// A decision was sent to the engine of `slot`: count it on its load.
    pub fn started(&self, slot: PodSlot, registry: &PodRegistry) {
        registry.set_load_at(slot, |l| l.in_flight += 1);
    }

    /// `caller`'s request behind `ticket` finished, or (`abandoned`) the caller gave up on
    /// the call that named it; false if unknown (never issued, expired, done, or, when
    /// abandoned, not decided yet: then remembered for a while, see the module) or another
    /// caller's. Only abandoned calls are remembered: a plain completion of an unknown
    /// ticket (another replica's decision, a late duplicate) would only crowd them out.
    pub fn complete(
        &self,
        ticket: u64,
        caller: Option<IpAddr>,
        abandoned: bool,
        registry: &PodRegistry,
    ) -> bool {
        let held = {
            let mut t = self.tickets.lock();
            match t.by_ticket.get(&ticket) {
                Some(held) if held.owner.is_none() || held.owner == caller => t.remove(ticket),
                Some(_) => None,
                None if abandoned => {
                    t.remember_early(caller, ticket, self.early_keep, self.max_early);
                    None
                }
                None => None,
            }
        };
        held.is_some_and(|h| self.end(h.entry, registry))
    }

    /// Release decisions older than the TTL; returns how many.
    pub fn expire(&self, registry: &PodRegistry) -> usize {
        {
            let mut t = self.tickets.lock();
            while let Some(&(ticket, at)) = t.order.front() {
                if at.elapsed() < self.ttl {
                    break;
                }
                t.order.pop_front();
                if let Some(held) = t.by_ticket.remove(&ticket) {
                    t.keys -= held.keys;
                }
            }
        }
        let now = self.seconds(Instant::now());
        let expired = self.lock().expire(now - self.ttl.as_secs_f64());
        for &slot in &expired {
            registry.set_load_at(slot, |l| l.in_flight = l.in_flight.saturating_sub(1));
        }
        expired.len()
    }

    /// A scrape of the engine of `slot`, sent at `at`, saw `waiting` queued.
    pub fn observe_queue(&self, slot: PodSlot, waiting: f64, at: Instant) {
        let at = self.seconds(at);
        self.lock().observe_queue(&slot, waiting, at);
    }

    pub fn pending(&self, slot: PodSlot) -> Pending {
        self.lock().pending(&slot)
    }
}

/// The ledger's holdings as index matches (on the GPU: a running request's blocks are).
pub fn ledger_matches(ledger: &Ledger<PodSlot>, slots: &Slots, keys: &[u64]) -> Vec<PodMatch> {
    ledger
        .match_prefix(keys)
        .into_iter()
        .filter_map(|(slot, n)| {
            Some(PodMatch {
                pod: slots.id(slot)?.clone(),
                gpu_blocks: n,
                any_tier_blocks: n,
            })
        })
        .collect()
}

/// The vLLM gauges that load is made of, from a Prometheus text page, and when the
/// engine's process started (a new start time: the engine restarted, its cache is empty).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EngineGauges {
    pub waiting: f64,
    pub running: f64,
    pub kv_usage: f64,
    pub process_start_time: Option<f64>,
}

/// Sum each gauge over its label sets (one per model/engine in the page).
pub fn parse_vllm_metrics(text: &str) -> EngineGauges {
    let mut g = EngineGauges::default();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        let Some(value) = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.trim().parse::<f64>().ok())
        else {
            continue;
        };
        match name {
            "vllm:num_requests_waiting" => g.waiting += value,
            "vllm:num_requests_running" => g.running += value,
            // Renamed from gpu_cache_usage_perc in newer vLLM; accept both.
            "vllm:kv_cache_usage_perc" | "vllm:gpu_cache_usage_perc" => {
                g.kv_usage = g.kv_usage.max(value)
            }
            "process_start_time_seconds" => g.process_start_time = Some(value),
            _ => {}
        }
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::PodId;

    /// A registry of one engine.
    fn one_engine() -> (PodRegistry, PodId) {
        let reg = PodRegistry::new(Some("m".into()));
        let pod = PodId {
            endpoint: "10.0.0.1:8000".into(),
            dp_rank: 0,
        };
        reg.add(pod.clone());
        (reg, pod)
    }

    /// A decision sent to `pod` queuing `uncached_tokens` of prefill, for `caller`: the
    /// steps the router takes within its decision.
    fn start_for(
        f: &InFlight,
        pod: &PodId,
        keys: &[u64],
        uncached_tokens: f64,
        caller: Caller,
        registry: &PodRegistry,
    ) -> Issued {
        let slot = registry.slot_of(pod).expect("a known engine");
        let entry = f.with_ledger(|l, now| l.start(&slot, keys, uncached_tokens, now));
        f.started(slot, registry);
        f.issue(entry, keys.len(), caller, registry)
    }

    /// [`start_for`] a caller at `owner` that names no ticket; the ticket drawn.
    fn start(
        f: &InFlight,
        pod: &PodId,
        keys: &[u64],
        uncached_tokens: f64,
        owner: Option<IpAddr>,
        registry: &PodRegistry,
    ) -> u64 {
        let caller = Caller {
            addr: owner,
            ticket: None,
        };
        start_for(f, pod, keys, uncached_tokens, caller, registry).ticket
    }

    #[test]
    fn a_ticket_released_before_its_decision_ends_the_decision_when_made() {
        let (reg, pod) = one_engine();
        let slot = reg.slot_of(&pod).unwrap();
        let f = InFlight::new(Duration::from_secs(300));
        let me: Option<IpAddr> = "10.1.0.1".parse().ok();
        let other: Option<IpAddr> = "10.1.0.2".parse().ok();
        let decide = |ticket: u64, addr: Option<IpAddr>| {
            let caller = Caller {
                addr,
                ticket: Some(ticket),
            };
            start_for(&f, &pod, &[1, 2], 640.0, caller, &reg)
        };
        // The caller named 7 and gave up before the decision: released when made.
        assert!(!f.complete(7, me, true, &reg));
        let issued = decide(7, me);
        assert_eq!((issued.ticket, issued.abandoned), (7, true));
        assert_eq!(reg.load(&pod).unwrap().in_flight, 0);
        assert_eq!(f.pending(slot), Pending::default());
        assert_eq!(f.tickets(), 0);
        // Remembered once: the same ticket named again is a live decision.
        let issued = decide(7, me);
        assert_eq!((issued.ticket, issued.abandoned), (7, false));
        assert_eq!(f.pending(slot).in_flight, 1);
        // Another caller's early completion of 8 does not release my decision 8.
        assert!(!f.complete(8, other, true, &reg));
        let issued = decide(8, me);
        assert_eq!((issued.ticket, issued.abandoned), (8, false));
        // A named ticket already held is not shared: the indexer draws another.
        let issued = decide(8, me);
        assert!(!issued.abandoned);
        assert_ne!(issued.ticket, 8);
        assert_eq!(f.tickets(), 3);
        assert!(f.complete(7, me, false, &reg));
        assert!(
            !f.complete(8, other, false, &reg),
            "another caller's ticket"
        );
        assert!(f.complete(8, me, false, &reg));
    }

    #[test]
    fn early_completions_are_bounded_and_forgotten() {
        let (reg, pod) = one_engine();
        let mut f = InFlight::new(Duration::from_secs(300));
        f.max_early = 100;
        let me: Option<IpAddr> = "10.1.0.1".parse().ok();
        // A flood of completions for tickets never issued keeps at most 100.
        for t in 1..=10_000u64 {
            f.complete(t, me, true, &reg);
        }
        {
            let t = f.tickets.lock();
            assert_eq!(t.early.len(), 100);
            assert!(t.early_order.len() <= 2 * 100 + 64 + 1);
        }
        let named = |f: &InFlight, ticket| {
            let caller = Caller {
                addr: me,
                ticket: Some(ticket),
            };
            start_for(f, &pod, &[1], 64.0, caller, &reg).abandoned
        };
        assert!(named(&f, 10_000), "the newest is remembered");
        // A plain completion of a ticket not held (another replica's decision) is not.
        assert!(!f.complete(30_000, me, false, &reg));
        assert!(!named(&f, 30_000));
        // Releases taken by their decisions leave the order too (compacted lazily), and
        // the same release twice (a copy per replica) takes one place.
        for t in 40_000..40_500u64 {
            f.complete(t, me, true, &reg);
            f.complete(t, me, true, &reg);
            assert!(named(&f, t));
        }
        {
            let t = f.tickets.lock();
            assert!(t.early.len() <= 100);
            assert!(
                t.early_order.len() <= 2 * t.early.len() + 64 + 2,
                "{}",
                t.early_order.len()
            );
        }
        assert!(!named(&f, 1), "the oldest was forgotten");
        // And forgotten after the time.
        f.early_keep = Duration::from_millis(20);
        f.complete(20_000, me, true, &reg);
        std::thread::sleep(Duration::from_millis(30));
        assert!(!named(&f, 20_000));
    }

    #[test]
    fn parses_vllm_gauges() {
        let page = "# HELP vllm:num_requests_waiting x\n\
            vllm:num_requests_waiting{model_name=\"Qwen3-32B\",engine=\"0\"} 3.0\n\
            vllm:num_requests_running{model_name=\"Qwen3-32B\",engine=\"0\"} 5.0\n\
            vllm:kv_cache_usage_perc{model_name=\"Qwen3-32B\"} 0.42\n\
            vllm:prefix_cache_hits_total{model_name=\"Qwen3-32B\"} 100.0\n\
            process_start_time_seconds 1.7649e+09\n";
        assert_eq!(
            parse_vllm_metrics(page),
            EngineGauges {
                waiting: 3.0,
                running: 5.0,
                kv_usage: 0.42,
                process_start_time: Some(1.7649e9),
            }
        );
    }

    #[test]
    fn reads_a_real_vllm_page() {
        // Idle: every gauge 0. The `_by_reason` siblings of the waiting gauge are not it.
        let page = kvroute_testdata::vllm_metrics_page();
        assert_eq!(
            parse_vllm_metrics(&page),
            EngineGauges {
                waiting: 0.0,
                running: 0.0,
                kv_usage: 0.0,
                process_start_time: Some(1.79611738928e9),
            }
        );
        // The same page with a queue: the value is read, not defaulted.
        let busy = page.replace(
            "vllm:num_requests_waiting{engine=\"0\",model_name=\"Qwen3-32B\"} 0.0",
            "vllm:num_requests_waiting{engine=\"0\",model_name=\"Qwen3-32B\"} 7.0",
        );
        assert_eq!(parse_vllm_metrics(&busy).waiting, 7.0);
    }

    #[test]
    fn tickets_count_until_complete_or_expired() {
        let (reg, pod) = one_engine();
        let f = InFlight::new(Duration::from_millis(30));
        let t = start(&f, &pod, &[1, 2], 640.0, None, &reg);
        start(&f, &pod, &[1], 64.0, None, &reg);
        assert_eq!(reg.load(&pod).unwrap().in_flight, 2);
        assert_eq!(f.pending(reg.slot_of(&pod).unwrap()).tokens, 704.0);
        let held = f.with_ledger(|l, _| ledger_matches(l, &reg.slots(), &[1, 2]));
        assert_eq!((held[0].pod.clone(), held[0].gpu_blocks), (pod.clone(), 2));
        assert!(f.complete(t, None, false, &reg));
        assert!(!f.complete(t, None, false, &reg));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(f.expire(&reg), 1);
        assert_eq!(reg.load(&pod).unwrap().in_flight, 0);
    }

    #[test]
    fn tickets_are_random_owned_and_bounded() {
        let (reg, pod) = one_engine();
        let f = InFlight::bounded(Duration::from_secs(300), 100, 1_000_000);
        let me: Option<IpAddr> = "10.1.0.1".parse().ok();
        let other: Option<IpAddr> = "10.1.0.2".parse().ok();
        let tickets: Vec<u64> = (0..1000)
            .map(|i| start(&f, &pod, &[i], 64.0, me, &reg))
            .collect();
        // Bounded: the oldest were released to make room, and their load with them.
        assert_eq!(f.tickets(), 100);
        assert_eq!(reg.load(&pod).unwrap().in_flight, 100);
        assert_eq!(f.pending(reg.slot_of(&pod).unwrap()).in_flight, 100);
        // Not sequential: no ticket is its predecessor plus one.
        assert!(tickets.windows(2).all(|w| w[1] != w[0].wrapping_add(1)));
        let last = tickets[999];
        assert!(
            !f.complete(last, other, false, &reg),
            "another caller's ticket"
        );
        assert!(
            !f.complete(last.wrapping_add(1), me, false, &reg),
            "a guessed ticket"
        );
        assert!(
            !f.complete(tickets[0], me, false, &reg),
            "released to make room"
        );
        assert!(f.complete(last, me, false, &reg));
        assert_eq!(reg.load(&pod).unwrap().in_flight, 99);
    }

    #[test]
    fn tickets_are_bounded_in_the_keys_they_hold() {
        let (reg, pod) = one_engine();
        let f = InFlight::bounded(Duration::from_secs(300), 1000, 10_000);
        let keys: Vec<u64> = (0..4000).collect();
        for _ in 0..10 {
            start(&f, &pod, &keys, 64.0, None, &reg);
        }
        // Two decisions of 4,000 keys fit in 10,000; the third pushes out the oldest.
        assert_eq!(f.tickets(), 2);
        assert_eq!(f.pending(reg.slot_of(&pod).unwrap()).in_flight, 2);
    }
}
