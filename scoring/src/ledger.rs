//! The router's own decisions, from routing to the end of the request: the prefill work it
//! queued on each pod, and the keys each pod will hold.
//!
//! A pod's metrics lag and say nothing about size: a scrape a second old does not show the
//! requests just sent, and "40 waiting" does not say whether they are 40 cache hits or 40
//! cold prompts. The router knows both for its own traffic, since it priced every decision.
//! A decision's uncached tokens count as pending prefill until the pod has prefilled it:
//! known when the pod stores the request's last prompt block (its KV events, [`Ledger::confirm`])
//! or when the pod's FIFO queue, as scraped, no longer holds it ([`Ledger::observe_queue`]).
//! Its keys count as held by the pod until the request ends (a running request's blocks
//! cannot be evicted; after that the engine's events say what stays), not for a fixed time.
//! Times are the caller's seconds; nothing here reads a clock.

use std::collections::VecDeque;

// Every decision looks up the request's keys in the books: SipHash was a fifth of a
// decision's CPU at 1,024 engines. foldhash is seeded per map, as SipHash is.
use foldhash::{HashMap, HashMapExt};

/// Pending decisions a router checks for their last block stored on each decision, round
/// robin ([`Ledger::confirm_some`]): the ledger's lock is held for a bounded time however
/// many decisions are in flight (checking all of them made each decision O(pending): 65
/// decisions a second at 30,000 held). The indexer's router and the fleet model both use it.
pub const CONFIRM_PER_DECISION: usize = 256;

/// What the ledger keeps its books by: a pod's dense number (the indexer's engine slot, the
/// fleet model's engine index). Every decision reads every pod's pending work, so a book is
/// found by its place in an array, not by hashing the pod (a quarter of a decision's CPU at
/// 1,024 engines). The numbers should be small and dense: the books span the largest seen.
pub trait BookIndex: Copy + Eq {
    fn book_index(self) -> usize;
}

macro_rules! book_index_for_integers {
    ($($t:ty),*) => {$(
        impl BookIndex for $t {
            fn book_index(self) -> usize {
                self as usize
            }
        }
    )*};
}
book_index_for_integers!(u8, u16, u32, usize);

/// The work one pod has pending from this router.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pending {
    /// Decisions not yet prefilled.
    pub requests: u32,
    /// Their uncached prompt tokens, as priced when routed.
    pub tokens: f64,
    /// Decisions not yet ended (prefilled or not).
    pub in_flight: u32,
}

#[derive(Debug, Clone)]
struct Ticket<P> {
    pod: P,
    keys: Vec<u64>,
    tokens: f64,
    prefilled: bool,
    started: f64,
}

/// Decisions in flight, by ticket.
#[derive(Debug, Clone)]
pub struct Ledger<P> {
    next: u64,
    tickets: HashMap<u64, Ticket<P>>,
    /// Tickets not yet prefilled, oldest first (FIFO order of routing). May still name
    /// tickets since prefilled or ended: they leave lazily, so that ending a decision costs
    /// no scan (a flood of decisions never completed made every scan a long one).
    unprefilled: VecDeque<u64>,
    /// How many of `unprefilled` are still unprefilled.
    live_unprefilled: usize,
    /// Where [`Ledger::confirm_some`] takes up in `unprefilled`.
    cursor: usize,
    /// The same tickets by pod, by [`BookIndex`], each in routing order, also left lazily:
    /// a scrape of one engine's queue looks at that engine's decisions only, not at every
    /// pending one (a fleet's scrapes each second were engines x pending decisions).
    queued: Vec<VecDeque<u64>>,
    /// Each pod's pending work, by [`BookIndex`] (a pod never seen has none), apart from
    /// its holdings so that the column every decision reads is dense.
    pending: Vec<Pending>,
    /// Each pod's key -> how many in-flight decisions on it carry the key, by [`BookIndex`].
    holdings: Vec<HashMap<u64, u32>>,
    /// First key of a decision -> the pods with decisions in flight starting with it, and
    /// how many each. A request's keys are chained from its first block, so only decisions
    /// with the same first key can share its prefix: a match looks at those pods alone,
    /// not at every pod's book (a tenth of a decision's CPU at 1,024 engines).
    roots: HashMap<u64, Vec<(P, u32)>>,
}

impl<P> Default for Ledger<P> {
    fn default() -> Self {
        Self {
            next: 1,
            tickets: HashMap::new(),
            unprefilled: VecDeque::new(),
            live_unprefilled: 0,
            cursor: 0,
            queued: Vec::new(),
            pending: Vec::new(),
            holdings: Vec::new(),
            roots: HashMap::new(),
        }
    }
}

impl<P: BookIndex> Ledger<P> {
    pub fn new() -> Self {
        Self::default()
    }

    /// A request with `keys` was sent to `pod`, `tokens` of its prompt not cached there.
    pub fn start(&mut self, pod: &P, keys: &[u64], tokens: f64, now: f64) -> u64 {
        let ticket = self.next;
        self.next += 1;
        let at = pod.book_index();
        if self.pending.len() <= at {
            self.pending.resize(at + 1, Pending::default());
            self.holdings.resize_with(at + 1, HashMap::new);
            self.queued.resize_with(at + 1, VecDeque::new);
        }
        let pending = &mut self.pending[at];
        pending.requests += 1;
        pending.tokens += tokens;
        pending.in_flight += 1;
        let holdings = &mut self.holdings[at];
        for &k in keys {
            *holdings.entry(k).or_default() += 1;
        }
        if let Some(&first) = keys.first() {
            let pods = self.roots.entry(first).or_default();
            match pods.iter_mut().find(|(p, _)| p == pod) {
                Some((_, n)) => *n += 1,
                None => pods.push((*pod, 1)),
            }
        }
        self.tickets.insert(
            ticket,
            Ticket {
                pod: *pod,
                keys: keys.to_vec(),
                tokens,
                prefilled: false,
                started: now,
            },
        );
        self.unprefilled.push_back(ticket);
        self.live_unprefilled += 1;
        self.queue_for(at, ticket);
        ticket
    }

    /// Queues `ticket` on the pod at `at`. Its queue is also compacted here once stale
    /// entries outnumber its pending decisions (amortized: each is dropped once), so a pod
    /// whose queue is never observed (no scrapes) does not keep every ticket it was sent.
    fn queue_for(&mut self, at: usize, ticket: u64) {
        let queue = &mut self.queued[at];
        queue.push_back(ticket);
        if queue.len() > 2 * self.pending[at].requests as usize + 64 {
            let tickets = &self.tickets;
            queue.retain(|t| tickets.get(t).is_some_and(|t| !t.prefilled));
        }
    }

    fn mark_prefilled(&mut self, ticket: u64) {
        if let Some(t) = self.tickets.get_mut(&ticket) {
            if !t.prefilled {
                t.prefilled = true;
                self.live_unprefilled = self.live_unprefilled.saturating_sub(1);
                if let Some(pending) = self.pending.get_mut(t.pod.book_index()) {
                    pending.requests = pending.requests.saturating_sub(1);
                    pending.tokens = (pending.tokens - t.tokens).max(0.0);
                }
            }
        }
    }

    /// Drops the tickets no longer unprefilled from `unprefilled` once they outnumber the
    /// rest (amortized: each is dropped once).
    fn sweep_unprefilled(&mut self) {
        if self.unprefilled.len() <= 2 * self.live_unprefilled + 64 {
            return;
        }
        let tickets = &self.tickets;
        self.unprefilled
            .retain(|t| tickets.get(t).is_some_and(|t| !t.prefilled));
        self.cursor = 0;
    }

    /// Whether `ticket` is pending and its last key `held(pod, key)` says stored.
    fn stored(&self, ticket: u64, held: &impl Fn(&P, u64) -> bool) -> bool {
        self.tickets
            .get(&ticket)
            .is_some_and(|t| !t.prefilled && t.keys.last().is_some_and(|&k| held(&t.pod, k)))
    }

    /// Marks prefilled every pending decision whose last key `held(pod, key)` says the pod
    /// now stores (its `BlockStored` arrived). Returns how many.
    pub fn confirm(&mut self, held: impl Fn(&P, u64) -> bool) -> usize {
        let done: Vec<u64> = self
            .unprefilled
            .iter()
            .copied()
            .filter(|&t| self.stored(t, &held))
            .collect();
        for &t in &done {
            self.mark_prefilled(t);
        }
        self.sweep_unprefilled();
        done.len()
    }

    /// [`Ledger::confirm`] over at most `max` pending decisions, taking up where the last
    /// call stopped (round robin, oldest first): the work per call is bounded however many
    /// decisions are pending, and a stored one is seen within `pending / max` calls (at once
    /// while fewer than `max` are pending). Returns how many were marked prefilled.
    pub fn confirm_some(&mut self, held: impl Fn(&P, u64) -> bool, max: usize) -> usize {
        let mut done = 0;
        for _ in 0..max.min(self.unprefilled.len()) {
            if self.cursor >= self.unprefilled.len() {
                self.cursor = 0;
            }
            let t = self.unprefilled[self.cursor];
            self.cursor += 1;
            if self.stored(t, &held) {
                self.mark_prefilled(t);
                done += 1;
            }
        }
        self.sweep_unprefilled();
        done
    }

    /// A scrape sent at `at` found `waiting` requests queued on `pod`. vLLM's queue is FIFO,
    /// so of our decisions routed there before `at`, all but the newest `waiting` were
    /// admitted, and admission prefills in the next step (chunked prefill). Returns how many
    /// were marked prefilled.
    pub fn observe_queue(&mut self, pod: &P, waiting: f64, at: f64) -> usize {
        let Some(queue) = self.queued.get_mut(pod.book_index()) else {
            return 0;
        };
        let tickets = &self.tickets;
        queue.retain(|t| tickets.get(t).is_some_and(|t| !t.prefilled));
        let before: Vec<u64> = queue
            .iter()
            .copied()
            .filter(|t| tickets.get(t).is_some_and(|t| t.started <= at))
            .collect();
        let still_queued = waiting.max(0.0).ceil() as usize;
        let admitted = before.len().saturating_sub(still_queued);
        for &t in &before[..admitted] {
            self.mark_prefilled(t);
        }
        // Marked prefilled: the next observation's `retain` drops them from the queue.
        self.sweep_unprefilled();
        admitted
    }

    /// The request behind `ticket` ended: its pod, or None if unknown (already ended).
    pub fn complete(&mut self, ticket: u64) -> Option<P> {
        self.mark_prefilled(ticket);
        let t = self.tickets.remove(&ticket)?;
        self.sweep_unprefilled();
        let at = t.pod.book_index();
        if let Some(pending) = self.pending.get_mut(at) {
            pending.in_flight = pending.in_flight.saturating_sub(1);
        }
        if let Some(holdings) = self.holdings.get_mut(at) {
            for k in &t.keys {
                if let Some(n) = holdings.get_mut(k) {
                    *n -= 1;
                    if *n == 0 {
                        holdings.remove(k);
                    }
                }
            }
        }
        if let Some(first) = t.keys.first() {
            if let Some(pods) = self.roots.get_mut(first) {
                if let Some(i) = pods.iter().position(|(p, _)| *p == t.pod) {
                    pods[i].1 -= 1;
                    if pods[i].1 == 0 {
                        pods.swap_remove(i);
                    }
                }
                if pods.is_empty() {
                    self.roots.remove(first);
                }
            }
        }
        Some(t.pod)
    }

    /// Ends decisions started before `cutoff` (their completion report was lost); returns
    /// their pods, one per decision.
    pub fn expire(&mut self, cutoff: f64) -> Vec<P> {
        let old: Vec<u64> = self
            .tickets
            .iter()
            .filter(|(_, t)| t.started < cutoff)
            .map(|(&id, _)| id)
            .collect();
        old.into_iter().filter_map(|t| self.complete(t)).collect()
    }

    /// Forget a pod (dropped from the fleet): its decisions end.
    pub fn forget_pod(&mut self, pod: &P) {
        let gone: Vec<u64> = self
            .tickets
            .iter()
            .filter(|(_, t)| &t.pod == pod)
            .map(|(&id, _)| id)
            .collect();
        for t in gone {
            self.complete(t);
        }
        let at = pod.book_index();
        if let Some(pending) = self.pending.get_mut(at) {
            *pending = Pending::default();
        }
        if let Some(holdings) = self.holdings.get_mut(at) {
            *holdings = HashMap::new();
        }
        if let Some(queue) = self.queued.get_mut(at) {
            *queue = VecDeque::new();
        }
    }

    pub fn pending(&self, pod: &P) -> Pending {
        self.pending
            .get(pod.book_index())
            .copied()
            .unwrap_or_default()
    }

    /// For each pod with decisions in flight that start with `keys[0]`: its run of `keys`
    /// from the first, held by any of its decisions.
    pub fn match_prefix(&self, keys: &[u64]) -> Vec<(P, usize)> {
        let Some(first) = keys.first() else {
            return Vec::new();
        };
        let Some(pods) = self.roots.get(first) else {
            return Vec::new();
        };
        pods.iter()
            .filter_map(|(pod, _)| {
                let holdings = self.holdings.get(pod.book_index())?;
                let run = keys.iter().take_while(|k| holdings.contains_key(k)).count();
                Some((*pod, run))
            })
            .collect()
    }

    /// Decisions not yet ended.
    pub fn len(&self) -> usize {
        self.tickets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tickets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_work_ends_when_the_last_block_is_stored() {
        let mut l: Ledger<u8> = Ledger::new();
        let a = l.start(&1, &[10, 11, 12], 1_000.0, 0.0);
        l.start(&1, &[20, 21], 500.0, 0.1);
        assert_eq!(
            l.pending(&1),
            Pending {
                requests: 2,
                tokens: 1_500.0,
                in_flight: 2
            }
        );
        // Block 11 stored: not the last, still pending. Block 12: prefilled.
        assert_eq!(l.confirm(|_, k| k == 11), 0);
        assert_eq!(l.confirm(|p, k| *p == 1 && k == 12), 1);
        assert_eq!(l.pending(&1).tokens, 500.0);
        assert_eq!(l.pending(&1).in_flight, 2);
        // Holdings last until the request ends, not until a timer fires.
        assert_eq!(l.match_prefix(&[10, 11, 99]), vec![(1, 2)]);
        assert_eq!(l.complete(a), Some(1));
        assert_eq!(l.complete(a), None);
        assert!(l.match_prefix(&[10, 11]).is_empty());
        assert_eq!(l.pending(&1).in_flight, 1);
    }

    #[test]
    fn a_scraped_fifo_queue_admits_the_oldest_first() {
        let mut l: Ledger<u8> = Ledger::new();
        for i in 0..5 {
            l.start(&1, &[i], 100.0, f64::from(i as u8));
        }
        l.start(&2, &[50], 100.0, 0.5);
        // Scrape sent at t=3.5 saw 1 waiting: of the 4 routed before, 3 were admitted; the
        // one routed at t=4 is not in that scrape at all.
        assert_eq!(l.observe_queue(&1, 1.0, 3.5), 3);
        assert_eq!(l.pending(&1).requests, 2);
        assert_eq!(l.pending(&1).tokens, 200.0);
        assert_eq!(l.pending(&2).requests, 1, "other pods untouched");
        assert_eq!(l.observe_queue(&1, 0.0, 10.0), 2);
        assert_eq!(l.pending(&1).tokens, 0.0);
        // A pod's queue keeps no decision that ended or was seen admitted.
        for i in 0..1000 {
            let t = l.start(&3, &[i], 1.0, 20.0);
            l.complete(t);
        }
        let last = l.start(&3, &[7], 1.0, 21.0);
        assert_eq!(l.observe_queue(&3, 1.0, 30.0), 0);
        assert_eq!(l.queued[3].iter().copied().collect::<Vec<_>>(), vec![last]);
        assert_eq!(l.observe_queue(&3, 0.0, 30.0), 1);
        assert_eq!(l.observe_queue(&3, 0.0, 30.0), 0);
        assert!(l.queued[3].is_empty());
        // Never observed, a pod's queue still stays near its pending decisions.
        for i in 0..10_000 {
            let t = l.start(&4, &[i], 1.0, 40.0);
            l.complete(t);
        }
        assert!(l.queued[4].len() <= 65, "{} queued", l.queued[4].len());
    }

    #[test]
    fn a_bounded_confirm_takes_up_where_it_stopped() {
        let mut l: Ledger<u8> = Ledger::new();
        let tickets: Vec<u64> = (0..10).map(|i| l.start(&1, &[i], 10.0, 0.0)).collect();
        // Ending decisions costs no scan; the ended ones are skipped, not confirmed.
        for &t in &tickets[..4] {
            l.complete(t);
        }
        // Keys 4..10 all stored: 3 of the 10 queued looked at per call, round robin.
        let held = |_: &u8, k: u64| k >= 4;
        let mut calls = 0;
        while l.pending(&1).requests > 0 {
            assert!(l.confirm_some(held, 3) <= 3);
            calls += 1;
            assert!(calls <= 4, "not all seen in 4 calls of 3");
        }
        assert_eq!(l.pending(&1).in_flight, 6);
        assert_eq!(l.confirm_some(held, 3), 0);
        // Many decisions ended out of order leave the queue compact.
        for i in 0..1000 {
            let t = l.start(&2, &[1000 + i], 1.0, 0.0);
            l.complete(t);
        }
        assert!(l.unprefilled.len() <= 2 * l.live_unprefilled + 64);
    }

    #[test]
    fn lost_completions_expire() {
        let mut l: Ledger<u8> = Ledger::new();
        l.start(&1, &[1], 10.0, 0.0);
        l.start(&1, &[1], 10.0, 5.0);
        assert_eq!(l.expire(1.0), vec![1]);
        assert_eq!(l.len(), 1);
        assert_eq!(l.match_prefix(&[1]), vec![(1, 1)]);
        l.forget_pod(&1);
        assert!(l.is_empty());
        assert_eq!(l.pending(&1), Pending::default());
    }

    #[test]
    fn a_match_sees_only_pods_with_the_same_first_key_and_ends_with_them() {
        let mut l: Ledger<u8> = Ledger::new();
        let a = l.start(&1, &[10, 11, 12], 192.0, 0.0);
        let b = l.start(&2, &[10, 11], 128.0, 0.0);
        let _other = l.start(&3, &[20, 10, 11], 192.0, 0.0);
        let mut got = l.match_prefix(&[10, 11, 12, 13]);
        got.sort();
        assert_eq!(got, vec![(1, 3), (2, 2)]);
        l.complete(a);
        assert_eq!(l.match_prefix(&[10, 11, 12]), vec![(2, 2)]);
        l.complete(b);
        assert!(l.match_prefix(&[10]).is_empty());
        // Nothing is left behind for a first key no decision carries any more.
        assert_eq!(l.roots.len(), 1);
    }
}
