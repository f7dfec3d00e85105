//! The routing decision: index matches (plus recent decisions), pod loads, scoring.
//!
//! Shared by `/v1/route` (block hashes from the filter) and `/v1/route/prompt` (a raw body
//! tokenized here). Every decision is counted as in flight on its pod and remembered as
//! provisional holdings of its keys (see `route_memory`).

use std::sync::Arc;
use std::time::Instant;

use crate::index::PodIndex;
use crate::load::InFlight;
use crate::metrics::{Metrics, ReasonLabel};
use crate::pods::PodRegistry;
use crate::route_memory::{merge_matches, RouteMemory};
use crate::scoring::{Candidate, Reason, ScoringWeights};

/// Where precise knowledge comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteMode {
    /// KV events from the engines, plus recent decisions for the blind spot.
    Precise,
    /// No events: recent decisions only (engines that publish nothing).
    Estimate,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RouteAnswer {
    pub endpoint: String,
    pub dp_rank: u32,
    pub matched_blocks: usize,
    pub ticket: u64,
    pub reason: Reason,
    pub candidates: Vec<Candidate>,
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("unknown model {0:?}")]
    UnknownModel(String),
    #[error("no live pod serves model {0:?}")]
    NoLivePod(String),
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
    pub fn route(&self, model: &str, keys: &[u64]) -> Result<RouteAnswer, RouteError> {
        let started = Instant::now();
        let pods = self.registry.pods_for_model(model);
        if pods.is_empty() {
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
        let remembered = self.memory.match_prefix(keys);
        let matches = match self.mode {
            RouteMode::Precise => merge_matches(self.index.match_prefix(keys), remembered),
            RouteMode::Estimate => remembered,
        };
        let block_size = self
            .registry
            .block_size(model)
            .unwrap_or(self.default_block_size);
        let decision = self
            .weights
            .choose(&pods, &matches, block_size, keys.first().copied())
            .ok_or_else(|| RouteError::NoLivePod(model.to_owned()))?;
        let ticket = self.in_flight.start(&decision.pod, &self.registry);
        self.memory.record(&decision.pod, keys);
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
            ticket,
            reason: decision.reason,
            candidates: decision.candidates,
        })
    }

    fn count_error(&self, err: &RouteError) {
        let reason = match err {
            RouteError::UnknownModel(_) => "unknown_model",
            RouteError::NoLivePod(_) => "no_live_pod",
        };
        self.metrics
            .route_errors
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }

    pub fn complete(&self, ticket: u64) -> bool {
        self.in_flight.complete(ticket, &self.registry)
    }
}
