//! `/metrics` with vLLM's names and labels, because the indexer's load scraper (and any
//! dashboard built for vLLM) reads an engine by them: the queue gauges, KV-cache usage and
//! the prefix-cache counters, labelled `engine` and `model_name` as vLLM's V1 engine does,
//! and Python's `process_start_time_seconds` (the indexer learns from it that an engine
//! restarted and lost its cache).
//! `vllm:time_to_first_token_seconds` is vLLM's histogram with vLLM's buckets, in engine
//! seconds from the request's arrival at the HTTP server: a benchmark tells from it what
//! of a client's TTFT the engine spent and what the path to it (Envoy, the filter) added.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// vLLM 0.32's `time_to_first_token_seconds` buckets, as its page shows them
/// (testdata/vllm-0.32/metrics.txt).
const TTFT_BUCKETS: [f64; 22] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];

type HistogramFamily = Family<EngineLabels, Histogram, fn() -> Histogram>;

fn ttft_histogram() -> Histogram {
    Histogram::new(TTFT_BUCKETS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EngineLabels {
    pub engine: String,
    pub model_name: String,
}

pub struct EngineMetrics {
    labels: EngineLabels,
    running: Family<EngineLabels, Gauge>,
    waiting: Family<EngineLabels, Gauge>,
    kv_usage: Family<EngineLabels, Gauge<f64, AtomicU64>>,
    prefix_queries: Family<EngineLabels, Counter>,
    prefix_hits: Family<EngineLabels, Counter>,
    prompt_tokens: Family<EngineLabels, Counter>,
    generation_tokens: Family<EngineLabels, Counter>,
    request_success: Family<EngineLabels, Counter>,
    time_to_first_token: HistogramFamily,
    /// Not vLLM's: wall seconds the simulated clock fell behind and never made up (the
    /// machine starved the engine), so a benchmark can tell a dilated run.
    dilation: Counter<f64, AtomicU64>,
    registry: Registry,
}

impl EngineMetrics {
    pub fn new(model: &str) -> Self {
        let labels = EngineLabels {
            engine: "0".into(),
            model_name: model.to_string(),
        };
        let running = Family::<EngineLabels, Gauge>::default();
        let waiting = Family::<EngineLabels, Gauge>::default();
        let kv_usage = Family::<EngineLabels, Gauge<f64, AtomicU64>>::default();
        let prefix_queries = Family::<EngineLabels, Counter>::default();
        let prefix_hits = Family::<EngineLabels, Counter>::default();
        let prompt_tokens = Family::<EngineLabels, Counter>::default();
        let generation_tokens = Family::<EngineLabels, Counter>::default();
        let request_success = Family::<EngineLabels, Counter>::default();
        let time_to_first_token: HistogramFamily = Family::new_with_constructor(ttft_histogram);
        let mut registry = Registry::default();
        let start_time = Gauge::<f64, AtomicU64>::default();
        start_time.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        registry.register(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds",
            start_time,
        );
        registry.register(
            "vllm:num_requests_running",
            "Number of requests in model execution batches",
            running.clone(),
        );
        registry.register(
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed",
            waiting.clone(),
        );
        registry.register(
            "vllm:kv_cache_usage_perc",
            "KV-cache usage. 1 means 100 percent usage",
            kv_usage.clone(),
        );
        // Counters: the text encoding appends `_total`, as Python's client does for vLLM.
        registry.register(
            "vllm:prefix_cache_queries",
            "Prefix cache queries, in terms of number of queried tokens",
            prefix_queries.clone(),
        );
        registry.register(
            "vllm:prefix_cache_hits",
            "Prefix cache hits, in terms of number of cached tokens",
            prefix_hits.clone(),
        );
        registry.register(
            "vllm:prompt_tokens",
            "Number of prefill tokens processed",
            prompt_tokens.clone(),
        );
        registry.register(
            "vllm:generation_tokens",
            "Number of generation tokens processed",
            generation_tokens.clone(),
        );
        registry.register(
            "vllm:request_success",
            "Count of successfully processed requests",
            request_success.clone(),
        );
        registry.register(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            time_to_first_token.clone(),
        );
        let dilation = Counter::<f64, AtomicU64>::default();
        registry.register(
            "kvroute_sim_dilation_seconds",
            "Wall seconds the simulated clock fell behind real time and did not make up",
            dilation.clone(),
        );
        // Every series exists from the start (vLLM exports zeros before the first request).
        let m = Self {
            labels,
            running,
            waiting,
            kv_usage,
            prefix_queries,
            prefix_hits,
            prompt_tokens,
            generation_tokens,
            request_success,
            time_to_first_token,
            dilation,
            registry,
        };
        m.set_queues(0, 0, 0.0);
        let _ = m.prefix_queries.get_or_create(&m.labels);
        let _ = m.prefix_hits.get_or_create(&m.labels);
        let _ = m.prompt_tokens.get_or_create(&m.labels);
        let _ = m.generation_tokens.get_or_create(&m.labels);
        let _ = m.request_success.get_or_create(&m.labels);
        let _ = m.time_to_first_token.get_or_create(&m.labels);
        m
    }

    /// One request's first token, `engine_seconds` after it reached the HTTP server.
    pub fn observe_time_to_first_token(&self, engine_seconds: f64) {
        self.time_to_first_token
            .get_or_create(&self.labels)
            .observe(engine_seconds);
    }

    pub fn set_queues(&self, running: usize, waiting: usize, kv_usage: f64) {
        self.running
            .get_or_create(&self.labels)
            .set(i64::try_from(running).unwrap_or(i64::MAX));
        self.waiting
            .get_or_create(&self.labels)
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
        self.kv_usage.get_or_create(&self.labels).set(kv_usage);
    }

    /// Adds one admitted request's prefix-cache lookup (tokens queried, tokens hit).
    pub fn add_prefix_lookup(&self, queried: u64, hit: u64) {
        self.prefix_queries
            .get_or_create(&self.labels)
            .inc_by(queried);
        self.prefix_hits.get_or_create(&self.labels).inc_by(hit);
    }

    pub fn add_finished(&self, prompt_tokens: u64, output_tokens: u64) {
        self.prompt_tokens
            .get_or_create(&self.labels)
            .inc_by(prompt_tokens);
        self.generation_tokens
            .get_or_create(&self.labels)
            .inc_by(output_tokens);
        self.request_success.get_or_create(&self.labels).inc();
    }

    /// The engine loop fell `seconds` of wall time behind its simulated clock for good.
    pub fn add_dilation(&self, seconds: f64) {
        self.dilation.inc_by(seconds);
    }

    /// The Prometheus text page.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
