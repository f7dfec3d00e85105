//! Every reason a touched request goes unrouted. The filter never blocks or fails a
//! request: it leaves the destination unset and Envoy's fallback route (all pods, normal
//! load balancing) serves it. Each reason has its own counter so an operator can tell
//! "indexer down" from "clients send garbage" from "tokenizer still loading".

/// Why a request the filter looked at was passed on without a chosen pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailOpenReason {
    /// The body grew past `max_body_bytes` (hashing it would cost more than it saves).
    BodyTooLarge,
    /// Not JSON, or not a request shape the shared crate understands (no messages, images...).
    MalformedRequest,
    /// The request's `model` is not configured in the filter, or the indexer answered 404.
    UnknownModel,
    /// The model's tokenizer is still being fetched or failed to load in this VM.
    TokenizerNotLoaded,
    /// Rendering or tokenizing failed (template error and the like).
    HashError,
    /// `dispatch_http_call` was refused (unknown cluster, VM shutting down).
    DispatchFailed,
    /// The indexer could not be reached (connection refused/reset, no healthy host).
    IndexerUnavailable,
    /// The indexer did not answer within `call_timeout_ms`.
    Timeout,
    /// The indexer answered 503: no live pod for the model.
    NoPod,
    /// Any other non-200 answer.
    IndexerError,
    /// A 200 whose body is not the documented answer (or an endpoint that is not ip:port).
    BadAnswer,
    /// Envoy refused the filter state (e.g. an address its factory cannot parse).
    FilterStateRefused,
    /// The indexer named an `ip:port` outside `allowed_endpoints`: not a pod this filter
    /// may send requests to.
    EndpointNotAllowed,
    /// The plugin configuration is unusable (the reason is logged at start): the plugin
    /// loaded inert and routes nothing.
    ConfigInvalid,
}

impl FailOpenReason {
    pub const ALL: [FailOpenReason; 14] = [
        FailOpenReason::BodyTooLarge,
        FailOpenReason::MalformedRequest,
        FailOpenReason::UnknownModel,
        FailOpenReason::TokenizerNotLoaded,
        FailOpenReason::HashError,
        FailOpenReason::DispatchFailed,
        FailOpenReason::IndexerUnavailable,
        FailOpenReason::Timeout,
        FailOpenReason::NoPod,
        FailOpenReason::IndexerError,
        FailOpenReason::BadAnswer,
        FailOpenReason::FilterStateRefused,
        FailOpenReason::EndpointNotAllowed,
        FailOpenReason::ConfigInvalid,
    ];

    /// The label used in the metric name `kvroute_fail_open_<label>`.
    pub fn label(self) -> &'static str {
        match self {
            FailOpenReason::BodyTooLarge => "body_too_large",
            FailOpenReason::MalformedRequest => "malformed_request",
            FailOpenReason::UnknownModel => "unknown_model",
            FailOpenReason::TokenizerNotLoaded => "tokenizer_not_loaded",
            FailOpenReason::HashError => "hash_error",
            FailOpenReason::DispatchFailed => "dispatch_failed",
            FailOpenReason::IndexerUnavailable => "indexer_unavailable",
            FailOpenReason::Timeout => "timeout",
            FailOpenReason::NoPod => "no_pod",
            FailOpenReason::IndexerError => "indexer_error",
            FailOpenReason::BadAnswer => "bad_answer",
            FailOpenReason::FilterStateRefused => "filter_state_refused",
            FailOpenReason::EndpointNotAllowed => "endpoint_not_allowed",
            FailOpenReason::ConfigInvalid => "config_invalid",
        }
    }

    /// Whether a route call that ended in this failure may have left a decision in the
    /// indexer, to be released (`kvroute_api::TICKET_HEADER`): a timeout or a broken
    /// connection says nothing of what the indexer did, and an answer the filter refused
    /// was a decision; the indexer's own refusals (no pod, unknown model) made none, and
    /// the other reasons come before any call.
    pub fn may_leave_a_decision(self) -> bool {
        match self {
            FailOpenReason::IndexerUnavailable
            | FailOpenReason::Timeout
            | FailOpenReason::IndexerError
            | FailOpenReason::BadAnswer
            | FailOpenReason::FilterStateRefused
            | FailOpenReason::EndpointNotAllowed => true,
            FailOpenReason::UnknownModel
            | FailOpenReason::NoPod
            | FailOpenReason::BodyTooLarge
            | FailOpenReason::MalformedRequest
            | FailOpenReason::TokenizerNotLoaded
            | FailOpenReason::HashError
            | FailOpenReason::DispatchFailed
            | FailOpenReason::ConfigInvalid => false,
        }
    }

    pub fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }

    /// What a shared-crate error means for the request.
    pub fn from_blockhash(err: &kvroute_blockhash::Error) -> Self {
        use kvroute_blockhash::Error;
        match err {
            Error::Json(_) | Error::Unsupported(_) | Error::Malformed(_) => {
                FailOpenReason::MalformedRequest
            }
            Error::Template(_) | Error::Tokenizer(_) | Error::Config(_) => {
                FailOpenReason::HashError
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_distinct_and_indices_round_trip() {
        let mut labels: Vec<_> = FailOpenReason::ALL.iter().map(|r| r.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), FailOpenReason::ALL.len());
        for (i, r) in FailOpenReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }
}
