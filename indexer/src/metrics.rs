//! The indexer's Prometheus metrics, one registry for routing and ingestion.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

/// Every counter the daemon exposes on `/metrics`.
pub struct Metrics {
    pub events: Family<TypeLabel, Counter>,
    pub decode_errors: Counter,
    pub unknown_events: Counter,
    pub invalid_events: Counter,
    pub unknown_publishers: Counter,
    pub spoofed_messages: Counter,
    pub rank_limit_messages: Counter,
    pub unconfirmed_claims: Counter,
    pub oversized_messages: Counter,
    pub seq_gaps: Counter,
    pub seq_restarts: Counter,
    pub replays: Counter,
    pub relearns: Counter,
    pub engine_restarts: Counter,
    pub engines_down: Counter,
    pub orphans: Counter,
    pub rekey_evictions: Counter,
    pub tickets_evicted: Counter,
    pub tickets_abandoned: Counter,
    pub http_connections_evicted: Counter,
    pub index_entries: Gauge,
    pub route_decisions: Family<ReasonLabel, Counter>,
    pub route_errors: Family<ReasonLabel, Counter>,
    pub route_seconds: Histogram,
    pub matched_blocks: Counter,
    pub requested_blocks: Counter,
    /// Endpoint picker (ext_proc) requests, by outcome (`routed`, `fail_open_<why>`, ...).
    pub epp_requests: Family<ReasonLabel, Counter>,
    pub registry: Registry,
}

impl Metrics {
    pub fn new() -> Self {
        let events = Family::<TypeLabel, Counter>::default();
        let decode_errors = Counter::default();
        let unknown_events = Counter::default();
        let invalid_events = Counter::default();
        let unknown_publishers = Counter::default();
        let spoofed_messages = Counter::default();
        let rank_limit_messages = Counter::default();
        let unconfirmed_claims = Counter::default();
        let oversized_messages = Counter::default();
        let seq_gaps = Counter::default();
        let seq_restarts = Counter::default();
        let replays = Counter::default();
        let relearns = Counter::default();
        let engine_restarts = Counter::default();
        let engines_down = Counter::default();
        let orphans = Counter::default();
        let rekey_evictions = Counter::default();
        let tickets_evicted = Counter::default();
        let tickets_abandoned = Counter::default();
        let http_connections_evicted = Counter::default();
        let index_entries = Gauge::default();
        let route_decisions = Family::<ReasonLabel, Counter>::default();
        let route_errors = Family::<ReasonLabel, Counter>::default();
        let route_seconds = Histogram::new([1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 5e-3, 1e-2]);
        let matched_blocks = Counter::default();
        let requested_blocks = Counter::default();
        let epp_requests = Family::<ReasonLabel, Counter>::default();
        let mut registry = Registry::with_prefix("kvroute");
        registry.register("kv_events", "KV events applied, by type", events.clone());
        registry.register(
            "kv_decode_errors",
            "Malformed KV-event messages skipped",
            decode_errors.clone(),
        );
        registry.register(
            "kv_unknown_events",
            "KV events of unknown type skipped",
            unknown_events.clone(),
        );
        registry.register(
            "kv_invalid_events",
            "KV events skipped because vLLM could not have sent them (bad block_size, counts, fields)",
            invalid_events.clone(),
        );
        registry.register(
            "kv_unknown_publishers",
            "KV-event messages from publishers that are not known engines, dropped",
            unknown_publishers.clone(),
        );
        registry.register(
            "kv_spoofed_messages",
            "KV-event messages on the bound socket naming a known engine from another address, dropped",
            spoofed_messages.clone(),
        );
        registry.register(
            "kv_rank_limit_messages",
            "KV-event messages for a data-parallel rank at or past --max-dp-ranks, dropped",
            rank_limit_messages.clone(),
        );
        registry.register(
            "kv_unconfirmed_claims",
            "Messages claiming a new rank, another model or a restart that the pod's next message did not confirm, discarded",
            unconfirmed_claims.clone(),
        );
        registry.register(
            "kv_oversized_messages",
            "KV-event peers that declared a message over the size limit, disconnected",
            oversized_messages.clone(),
        );
        registry.register("kv_seq_gaps", "Sequence gaps seen", seq_gaps.clone());
        registry.register(
            "kv_seq_restarts",
            "Publisher sequence restarts (engine restarted)",
            seq_restarts.clone(),
        );
        registry.register("kv_replays", "Replay requests sent", replays.clone());
        registry.register(
            "kv_relearns",
            "Engines re-learned from their replay buffer (start, reconnection, return)",
            relearns.clone(),
        );
        registry.register(
            "engine_restarts",
            "Engine restarts seen (sequence restart, reconnection, new process start time): index entry emptied",
            engine_restarts.clone(),
        );
        registry.register(
            "engines_down",
            "Engines taken out of routing (health check, metrics scrape or event stream failed)",
            engines_down.clone(),
        );
        registry.register(
            "kv_orphan_blocks",
            "Re-keyed blocks dropped because their parent was unknown",
            orphans.clone(),
        );
        registry.register(
            "kv_rekey_evictions",
            "Engine-hash -> key entries forgotten because the engine's re-key map was at its share of --max-entries",
            rekey_evictions.clone(),
        );
        registry.register(
            "tickets_evicted",
            "In-flight decisions released early because the ticket bounds (--max-tickets, keys held) were reached",
            tickets_evicted.clone(),
        );
        registry.register(
            "tickets_abandoned",
            "Decisions released as soon as made: their caller had given up on the route call and released the ticket it named",
            tickets_abandoned.clone(),
        );
        registry.register(
            "http_connections_evicted",
            "Idle HTTP connections closed to make room for a new one at --max-connections",
            http_connections_evicted.clone(),
        );
        registry.register(
            "index_entries",
            "Keys in the block index",
            index_entries.clone(),
        );
        registry.register(
            "route_decisions",
            "Routing decisions, by reason",
            route_decisions.clone(),
        );
        registry.register(
            "route_errors",
            "Routing requests refused, by reason",
            route_errors.clone(),
        );
        registry.register(
            "route_duration_seconds",
            "Time to decide a route",
            route_seconds.clone(),
        );
        registry.register(
            "route_matched_blocks",
            "Blocks matched on the chosen pod",
            matched_blocks.clone(),
        );
        registry.register(
            "route_requested_blocks",
            "Blocks in routed requests",
            requested_blocks.clone(),
        );
        registry.register(
            "epp_requests",
            "Endpoint picker (ext_proc) requests, by outcome",
            epp_requests.clone(),
        );
        Self {
            events,
            decode_errors,
            unknown_events,
            invalid_events,
            unknown_publishers,
            spoofed_messages,
            rank_limit_messages,
            unconfirmed_claims,
            oversized_messages,
            seq_gaps,
            seq_restarts,
            replays,
            relearns,
            engine_restarts,
            engines_down,
            orphans,
            rekey_evictions,
            tickets_evicted,
            tickets_abandoned,
            http_connections_evicted,
            index_entries,
            route_decisions,
            route_errors,
            route_seconds,
            matched_blocks,
            requested_blocks,
            epp_requests,
            registry,
        }
    }

    pub fn event(&self, kind: &str) {
        self.events
            .get_or_create(&TypeLabel {
                r#type: kind.to_owned(),
            })
            .inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
