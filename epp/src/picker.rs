//! The [`Picker`] over the indexer: the body's keys from `AppState::prompt_keys` (the same
//! tokenize-and-hash path as `POST /v1/route/prompt`), the pod from `Router::route_among`
//! (the same router as `POST /v1/route`), the answer's fallbacks from its other candidates.

use std::sync::Arc;

use kvroute_indexer::http::AppState;
use kvroute_indexer::prompt::PromptError;
use kvroute_indexer::router::{RouteAnswer, RouteError};

use crate::exchange::{FailOpen, Pick, Picker};

pub struct IndexerPicker {
    pub state: Arc<AppState>,
    /// Endpoints named after the chosen one, for the data plane's retries.
    pub fallback_endpoints: usize,
}

/// The chosen endpoint, then up to `fallbacks` others by net score (prefill saved minus
/// load), best first, each once.
pub fn endpoint_list(answer: &RouteAnswer, fallbacks: usize) -> Vec<String> {
    let mut others: Vec<_> = answer
        .candidates
        .iter()
        .filter(|c| c.endpoint != answer.endpoint)
        .collect();
    others.sort_by(|a, b| {
        (b.saved_tokens - b.load_cost)
            .partial_cmp(&(a.saved_tokens - a.load_cost))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut list = vec![answer.endpoint.clone()];
    for c in others {
        if list.len() > fallbacks {
            break;
        }
        if !list.contains(&c.endpoint) {
            list.push(c.endpoint.clone());
        }
    }
    list
}

impl Picker for IndexerPicker {
    fn pick(&self, path: &str, body: &[u8], subset: Option<&[String]>) -> Pick {
        let keys = match self.state.prompt_keys(body, Some(path)) {
            Ok(k) => k,
            Err(PromptError::Malformed(e)) => {
                tracing::debug!(error = %e, "epp: body not hashable, failing open");
                return Pick::FailOpen(FailOpen::Malformed);
            }
            Err(PromptError::Route(_)) => return Pick::FailOpen(FailOpen::UnknownModel),
        };
        match self.state.router.route_among(
            Default::default(),
            &keys.model,
            &keys.block_hashes,
            subset,
        ) {
            Ok(answer) => Pick::Routed {
                endpoints: endpoint_list(&answer, self.fallback_endpoints),
                ticket: answer.ticket,
            },
            Err(RouteError::NoEligiblePod(_)) => Pick::NoEligible,
            // No engine known at all: the data plane's own balancing still serves.
            Err(RouteError::NoLivePod(_)) => Pick::FailOpen(FailOpen::NoLivePod),
            Err(RouteError::UnknownModel(_)) => Pick::FailOpen(FailOpen::UnknownModel),
        }
    }

    fn complete(&self, ticket: u64) {
        self.state.router.complete(ticket, None, false);
    }
}
