//! The routing decision: index matches (plus recent decisions), pod loads, scoring.
//!
//! Shared by `/v1/route` (block hashes from the filter) and `/v1/route/prompt` (a raw body
//! tokenized here). Every decision goes into the ledger of decisions in flight (see `load`):
//! its uncached tokens are pending prefill on its pod until the pod stores its last block,
//! and its keys count as held there until the request ends, which covers the moments before
//! the engine's events arrive. Estimate mode adds its long memory of routes (`route_memory`).

use std::sync::Arc;
use std::time::Instant;

use crate::index::PodIndex;
use crate::index::PodMatch;
use crate::load::ledger_matches;
use crate::load::{Caller, InFlight};
use crate::metrics::{Metrics, ReasonLabel};
use crate::pods::PodRegistry;
use crate::route_memory::{merge_matches, RouteMemory};
use crate::scoring::{decide, Inputs, ScoringWeights};
use crate::types::{PodId, PodSlot};
use kvroute_scoring::CONFIRM_PER_DECISION;

/// Where precise knowledge comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteMode {
    /// KV events from the engines, plus recent decisions for the blind spot.
    Precise,
    /// No events: recent decisions only (engines that publish nothing).
    Estimate,
}

pub use kvroute_api::RouteAnswer;

thread_local! {
    /// Each thread's decision columns, reused (see [`Inputs`]).
    static INPUTS: std::cell::RefCell<Inputs> = std::cell::RefCell::default();
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("unknown model {0:?}")]
    UnknownModel(String),
    #[error("no live pod serves model {0:?}")]
    NoLivePod(String),
    /// The caller restricted the choice (the GIE subset hint) and no live pod is in it.
    #[error("no live pod of model {0:?} is among the allowed endpoints")]
    NoEligiblePod(String),
}

pub struct Router {
    pub index: Arc<dyn PodIndex>,
    pub registry: Arc<PodRegistry>,
    pub memory: RouteMemory,
    pub in_flight: Arc<InFlight>,
    pub weights: ScoringWeights,
    pub mode: RouteMode,
    pub metrics: Arc<Metrics>,
    /// Block size until the engines' events say otherwise.
    pub default_block_size: usize,
    /// Models configured with tokenizers (known even before any engine speaks).
    pub configured_models: Vec<String>,
}

impl Router {
    /// A decision for an in-process caller (its ticket completes from anywhere).
    pub fn route(&self, model: &str, keys: &[u64]) -> Result<RouteAnswer, RouteError> {
        self.route_as(Caller::default(), model, keys)
    }

    /// A decision for `caller`: only the same address may complete its ticket.
    pub fn route_as(
        &self,
        caller: Caller,
        model: &str,
        keys: &[u64],
    ) -> Result<RouteAnswer, RouteError> {
        self.route_among(caller, model, keys, None)
    }

    /// Like [`Router::route_as`], choosing only among pods whose endpoint (`ip:port`) is in
    /// `allowed` when given (the endpoint picker protocol's subset hint).
    pub fn route_among(
        &self,
        caller: Caller,
        model: &str,
        keys: &[u64],
        allowed: Option<&[String]>,
    ) -> Result<RouteAnswer, RouteError> {
        let started = Instant::now();
        let roster = self.registry.pods_for_model(model);
        let eligible = |pod: &PodId| allowed.is_none_or(|a| a.iter().any(|e| **e == *pod.endpoint));
        if roster.is_empty() {
            let known = self.configured_models.iter().any(|m| m == model)
                || self.registry.models().iter().any(|m| m == model);
            let err = if known {
                RouteError::NoLivePod(model.to_owned())
            } else {
                RouteError::UnknownModel(model.to_owned())
            };
            self.count_error(&err);
            return Err(err);
        }
        if allowed.is_some() && !roster.pods.iter().any(|(pod, _)| eligible(pod)) {
            let err = RouteError::NoEligiblePod(model.to_owned());
            self.count_error(&err);
            return Err(err);
        }
        let block_size = roster.block_size.unwrap_or(self.default_block_size);
        let indexed = match self.mode {
            RouteMode::Precise => self.index.match_prefix(keys),
            RouteMode::Estimate => self.memory.match_prefix(keys),
        };
        // One lock over read-decide-record, so concurrent decisions see each other's work.
        let (decision, slot, entry) = self
            .in_flight
            .with_ledger(|ledger, now| {
                let slots = self.registry.slots();
                if self.mode == RouteMode::Precise {
                    ledger.confirm_some(
                        |&slot, key| slots.id(slot).is_some_and(|pod| self.index.holds(pod, key)),
                        CONFIRM_PER_DECISION,
                    );
                }
                let matches = merge_matches(indexed, ledger_matches(ledger, &slots, keys));
                // A handful of pods hold a prefix: found by slot, not by comparing every
                // pod's endpoint with theirs.
                let held: Vec<(PodSlot, &PodMatch)> = matches
                    .iter()
                    .filter_map(|m| Some((slots.slot_of(&m.pod)?, m)))
                    .collect();
                let decision = INPUTS.with_borrow_mut(|inputs| {
                    inputs.clear();
                    for (member, (pod, slot)) in roster.pods.iter().enumerate() {
                        if !eligible(pod) {
                            continue;
                        }
                        let holds = held.iter().find(|(s, _)| s == slot).map(|(_, m)| *m);
                        let (load, pending) = (slots.load(*slot), ledger.pending(slot));
                        inputs.push(member, &load, &pending, holds);
                    }
                    let detail = |slot| (slots.load(slot), ledger.pending(&slot));
                    decide(
                        &self.weights,
                        inputs,
                        &roster.pods,
                        keys,
                        block_size,
                        detail,
                    )
                })?;
                drop(slots);
                let slot = roster.pods[decision.index].1;
                let ticket = ledger.start(&slot, keys, decision.uncached_tokens, now);
                Some((decision, slot, ticket))
            })
            .ok_or_else(|| RouteError::NoLivePod(model.to_owned()))?;
        self.in_flight.started(slot, &self.registry);
        let issued = self
            .in_flight
            .issue(entry, keys.len(), caller, &self.registry);
        self.metrics.tickets_evicted.inc_by(issued.evicted as u64);
        if issued.abandoned {
            self.metrics.tickets_abandoned.inc();
        } else if self.mode == RouteMode::Estimate {
            self.memory.record(&decision.pod, keys);
        }
        self.metrics
            .route_decisions
            .get_or_create(&ReasonLabel {
                reason: decision.reason.as_str().into(),
            })
            .inc();
        self.metrics
            .matched_blocks
            .inc_by(decision.matched_blocks as u64);
        self.metrics.requested_blocks.inc_by(keys.len() as u64);
        self.metrics
            .route_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(RouteAnswer {
            endpoint: decision.pod.endpoint.to_string(),
            dp_rank: decision.pod.dp_rank,
            matched_blocks: decision.matched_blocks,
            ticket: issued.ticket,
            reason: decision.reason,
            candidates: decision.candidates,
            prompt_tokens: None,
        })
    }

    fn count_error(&self, err: &RouteError) {
        let reason = match err {
            RouteError::UnknownModel(_) => "unknown_model",
            RouteError::NoLivePod(_) => "no_live_pod",
            RouteError::NoEligiblePod(_) => "no_eligible_pod",
        };
        self.metrics
            .route_errors
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }

    /// `caller`'s request behind `ticket` finished.
    /// `abandoned`: the caller gave up on the call that named `ticket` (it may not be
    /// decided yet).
    pub fn complete(&self, ticket: u64, caller: Option<std::net::IpAddr>, abandoned: bool) -> bool {
        self.in_flight
            .complete(ticket, caller, abandoned, &self.registry)
    }
}
