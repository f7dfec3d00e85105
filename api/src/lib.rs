//! kvroute-api: the HTTP contract between the Envoy filter and the indexer, defined once.
//!
//! The filter (wasm) serializes what the indexer (native) deserializes and the other way
//! round, so both read these types: a field added here is sent and read, a field removed
//! here is neither. Serde only, no I/O, so it builds for `wasm32-wasip1` and native.
//!
//! - `POST` [`ROUTE_PATH`] [`RouteRequest`] -> [`RouteAnswer`]
//! - `POST` [`PROMPT_ROUTE_PATH`]`?path=<request path>` the client's raw body ->
//!   [`RouteAnswer`] with `prompt_tokens` (see [`prompt_route_uri`])
//! - `POST` [`COMPLETE_PATH`] [`CompleteRequest`] -> [`CompleteAnswer`]
//! - both route calls may carry [`TICKET_HEADER`]: the caller's own ticket for the decision
//! - `GET` [`TOKENIZERS_PATH`]`/<model>/<file>`: a model's tokenizer files
//! - every refusal: [`ErrorAnswer`] with 400 (malformed), 404 (unknown model or file) or
//!   503 (no live pod)

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// Route a request from its block hashes.
pub const ROUTE_PATH: &str = "/v1/route";
/// Route a request from its raw OpenAI/Anthropic body (tokenized by the indexer).
pub const PROMPT_ROUTE_PATH: &str = "/v1/route/prompt";
/// The routed request finished: release its in-flight ticket.
pub const COMPLETE_PATH: &str = "/v1/route/complete";
/// Request header of both route calls: the caller's own ticket for the decision (a random,
/// non-zero `u64` in decimal). A caller that gives up on a call (its timeout, a broken
/// connection) releases that ticket with [`CompleteRequest`] at once, even though no answer
/// told it (`abandoned: true`): the indexer remembers such a release that comes before its
/// decision for a while, and does not count a decision made for a caller already gone as
/// load. Without the header
/// (or when the ticket is taken) the indexer draws one; the answer's ticket is the one used.
pub const TICKET_HEADER: &str = "x-kvroute-ticket";
/// Tokenizer files for the filter, under `<TOKENIZERS_PATH>/<model>/<file>`.
pub const TOKENIZERS_PATH: &str = "/v1/tokenizers";
/// The query parameter of [`PROMPT_ROUTE_PATH`] naming the client's request path, which
/// decides how the body is read (chat, completions, messages).
pub const PROMPT_PATH_QUERY: &str = "path";

/// The URI of a prompt route call for a client request sent to `request_path`.
/// Request paths are `/`-separated ASCII words, which a query value carries unescaped.
pub fn prompt_route_uri(prompt_route_path: &str, request_path: &str) -> String {
    format!("{prompt_route_path}?{PROMPT_PATH_QUERY}={request_path}")
}

/// `POST /v1/route` body: the model and the prompt's block hashes, in order.
/// Read tolerantly (unknown fields ignored) so a filter and an indexer of neighbouring
/// releases keep routing during a rolling upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteRequest<'a> {
    /// The model (or LoRA adapter) the request names; the indexer resolves adapters.
    pub model: Cow<'a, str>,
    /// vLLM's block hashes of the prompt, as 64-bit keys (see `kvroute-blockhash`).
    pub block_hashes: Cow<'a, [u64]>,
}

/// The query of `POST /v1/route/prompt`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptQuery {
    /// The path the client sent the body to (`/v1/chat/completions`, ...); detected from
    /// the body's shape when absent.
    #[serde(default)]
    pub path: Option<String>,
}

/// Why a pod was chosen. The JSON value and the `reason` label of the indexer's
/// `kvroute_route_decisions_total` are both [`Reason::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Most prefill saved net of load.
    CacheHit,
    /// The best cached pod was overloaded.
    Spill,
    /// Nothing cached anywhere: least loaded.
    LeastLoaded,
}

impl Reason {
    pub const ALL: [Reason; 3] = [Reason::CacheHit, Reason::Spill, Reason::LeastLoaded];

    /// The one spelling, in answers and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::CacheHit => "cache_hit",
            Reason::Spill => "spill",
            Reason::LeastLoaded => "least_loaded",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Load of one pod as the indexer sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PodLoad {
    /// Decisions sent to this pod and not yet reported complete (nor timed out).
    pub in_flight: u32,
    /// vLLM's `vllm:num_requests_waiting` (last scrape).
    pub waiting: f64,
    /// vLLM's `vllm:num_requests_running` (last scrape).
    pub running: f64,
    /// vLLM's `vllm:kv_cache_usage_perc` (0..1, last scrape).
    pub kv_usage: f64,
}

/// Candidates a route answer lists at most: enough for the picker's fallbacks and for a
/// person reading a decision, few enough that the answer stays small in any fleet (the
/// whole list of 1,024 engines was 0.3 MB of JSON a decision).
pub const ANSWER_CANDIDATES: usize = 8;

/// One candidate as scored, for humans and logs (the filter uses only the choice).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub endpoint: String,
    pub dp_rank: u32,
    pub matched_blocks: usize,
    /// Prompt tokens the pod's cache saves.
    pub saved_tokens: f64,
    /// Prefill tokens queued before this request (the router's pending + the scraped rest).
    pub queued_tokens: f64,
    /// Predicted time to first token, in prefill tokens.
    pub ttft_tokens: f64,
    /// What the choice minimized (predicted TTFT plus the work the request adds).
    pub load_cost: f64,
    /// The router's decisions on the pod not yet prefilled, and their uncached tokens.
    pub pending_requests: u32,
    pub pending_tokens: f64,
    pub load: PodLoad,
}

/// A 200 answer of `/v1/route` and `/v1/route/prompt`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteAnswer {
    /// The chosen pod's `ip:port`.
    pub endpoint: String,
    pub dp_rank: u32,
    /// Leading blocks of the prompt the chosen pod holds.
    pub matched_blocks: usize,
    /// In-flight ticket, released by [`CompleteRequest`] when the response ends.
    pub ticket: u64,
    pub reason: Reason,
    /// The chosen pod first, then the next best by what the choice minimized
    /// (`load_cost`), at most [`ANSWER_CANDIDATES`] in all.
    pub candidates: Vec<Candidate>,
    /// Prompt tokens, when the indexer tokenized the body (`/v1/route/prompt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<usize>,
}

/// `POST /v1/route/complete` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompleteRequest {
    pub ticket: u64,
    /// The caller gave up on the route call that named `ticket` (see [`TICKET_HEADER`]):
    /// its decision may not be made yet, so the indexer remembers this release for a while.
    /// A plain completion (`false`) of a ticket the indexer does not hold is forgotten.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub abandoned: bool,
}

/// `POST /v1/route/complete` answer: whether the ticket was still in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompleteAnswer {
    pub released: bool,
}

/// Every non-200 answer of the indexer's API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorAnswer {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_has_one_spelling_in_json_and_metrics() {
        for r in Reason::ALL {
            let json = serde_json::to_string(&r).expect("json");
            assert_eq!(json, format!("\"{}\"", r.as_str()));
            let back: Reason = serde_json::from_str(&json).expect("read back");
            assert_eq!(back, r);
        }
        assert_eq!(Reason::CacheHit.as_str(), "cache_hit");
    }

    #[test]
    fn route_request_is_the_documented_json_and_reads_back() {
        let r = RouteRequest {
            model: "m".into(),
            block_hashes: Cow::Borrowed(&[1, u64::MAX]),
        };
        let json = serde_json::to_string(&r).expect("json");
        assert_eq!(
            json,
            r#"{"model":"m","block_hashes":[1,18446744073709551615]}"#
        );
        let back: RouteRequest<'static> = serde_json::from_str(&json).expect("read back");
        assert_eq!(back, r);
    }

    #[test]
    fn answer_round_trips_with_and_without_prompt_tokens() {
        let mut a = RouteAnswer {
            endpoint: "10.0.0.5:8000".into(),
            dp_rank: 0,
            matched_blocks: 3,
            ticket: 7,
            reason: Reason::CacheHit,
            candidates: vec![Candidate {
                endpoint: "10.0.0.5:8000".into(),
                dp_rank: 0,
                matched_blocks: 3,
                saved_tokens: 192.0,
                queued_tokens: 0.0,
                ttft_tokens: 0.0,
                load_cost: 0.0,
                pending_requests: 0,
                pending_tokens: 0.0,
                load: PodLoad::default(),
            }],
            prompt_tokens: None,
        };
        let json = serde_json::to_string(&a).expect("json");
        assert!(!json.contains("prompt_tokens"));
        assert!(json.contains(r#""reason":"cache_hit""#));
        assert_eq!(serde_json::from_str::<RouteAnswer>(&json).expect("back"), a);
        a.prompt_tokens = Some(200);
        let json = serde_json::to_string(&a).expect("json");
        assert_eq!(serde_json::from_str::<RouteAnswer>(&json).expect("back"), a);
    }

    #[test]
    fn prompt_route_uri_carries_the_request_path() {
        assert_eq!(
            prompt_route_uri(PROMPT_ROUTE_PATH, "/v1/chat/completions"),
            "/v1/route/prompt?path=/v1/chat/completions"
        );
    }
}
