//! The filter's proxy-wasm metrics, which Envoy exports in `/stats/prometheus`: routed,
//! fail-open by reason, matched blocks, decision time, tokenizer loads. A metric that
//! cannot be defined or recorded is skipped: observability must never break routing.

use proxy_wasm::types::MetricType;

use crate::abi;
use crate::fail_open::FailOpenReason;

/// Metric ids of one VM (ids are per VM; Envoy aggregates same-named metrics).
#[derive(Debug, Default)]
pub struct FilterMetrics {
    routed: Option<u32>,
    fail_open: Vec<Option<u32>>,
    matched_blocks: Option<u32>,
    decision_us: Option<u32>,
    hash_us: Option<u32>,
    tokenizer_loads: Option<u32>,
    tokenizer_fetch_failures: Option<u32>,
    completions_sent: Option<u32>,
    indexer_retries: Option<u32>,
}

fn define(kind: MetricType, name: &str) -> Option<u32> {
    abi::define_metric(kind, name)
}

fn bump(id: Option<u32>) {
    if let Some(id) = id {
        abi::increment_metric(id, 1);
    }
}

fn record(id: Option<u32>, value: u64) {
    if let Some(id) = id {
        abi::record_metric(id, value);
    }
}

impl FilterMetrics {
    pub fn define_all() -> Self {
        Self {
            routed: define(MetricType::Counter, "kvroute_routed"),
            fail_open: FailOpenReason::ALL
                .iter()
                .map(|r| {
                    define(
                        MetricType::Counter,
                        &format!("kvroute_fail_open_{}", r.label()),
                    )
                })
                .collect(),
            matched_blocks: define(MetricType::Histogram, "kvroute_matched_blocks"),
            decision_us: define(MetricType::Histogram, "kvroute_decision_us"),
            hash_us: define(MetricType::Histogram, "kvroute_hash_us"),
            tokenizer_loads: define(MetricType::Counter, "kvroute_tokenizer_loads"),
            tokenizer_fetch_failures: define(
                MetricType::Counter,
                "kvroute_tokenizer_fetch_failures",
            ),
            completions_sent: define(MetricType::Counter, "kvroute_completions_sent"),
            indexer_retries: define(MetricType::Counter, "kvroute_indexer_retries"),
        }
    }

    pub fn routed(&self, matched_blocks: u64) {
        bump(self.routed);
        record(self.matched_blocks, matched_blocks);
    }

    pub fn fail_open(&self, reason: FailOpenReason) {
        bump(self.fail_open.get(reason.index()).copied().flatten());
    }

    pub fn decision_time(&self, micros: u64) {
        record(self.decision_us, micros);
    }

    /// A route call asked again after the first indexer replica could not be reached.
    pub fn indexer_retry(&self) {
        bump(self.indexer_retries);
    }

    pub fn hash_time(&self, micros: u64) {
        record(self.hash_us, micros);
    }

    pub fn tokenizer_loaded(&self) {
        bump(self.tokenizer_loads);
    }

    pub fn tokenizer_fetch_failed(&self) {
        bump(self.tokenizer_fetch_failures);
    }

    pub fn completion_sent(&self) {
        bump(self.completions_sent);
    }
}
