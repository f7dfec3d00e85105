//! The indexer's HTTP API (axum). The routes the filter calls, and their bodies, are the
//! contract in `kvroute-api` (one definition for both sides); every error is its
//! `ErrorAnswer` with a status that says whose fault it is: 400 malformed, 404 unknown
//! model, file or path, 503 no live pod. What a request may cost (body sizes per route,
//! requests in flight, time, the optional shared secret: 401, 405, 408, 413, 503 too busy)
//! is [`crate::http_limits`]'s; the transport's limits [`crate::http_server`]'s.
//!
//! - `POST /v1/route` `RouteRequest` -> `RouteAnswer`
//! - `POST /v1/route/prompt?path=<request path>` raw OpenAI/Anthropic body -> the same,
//!   tokenized here, with `prompt_tokens`
//! - `POST /v1/route/complete` `CompleteRequest` -> `CompleteAnswer`
//! - `GET /v1/tokenizers/{model}/{file}`: tokenizer files for the filter
//! - `GET /v1/pods`, `GET /metrics`, `GET /healthz`, `GET /readyz`

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router as Axum};
use kvroute_api::{
    CompleteAnswer, CompleteRequest, PromptQuery, RouteRequest, COMPLETE_PATH, PROMPT_ROUTE_PATH,
    ROUTE_PATH, TICKET_HEADER, TOKENIZERS_PATH,
};
use kvroute_blockhash::HashConfig;
use serde_json::json;
use tokio::sync::Semaphore;
use tower_http::limit::RequestBodyLimitLayer;

use crate::defaults;
use crate::http_limits::{error, harden, HttpLimits};
use crate::http_server::Peer;
use crate::load::Caller;
use crate::models::Models;
use crate::prompt::PromptError;
use crate::router::{RouteError, Router};

/// A LoRA adapter the engines serve on a base model: it routes on the base model's engines,
/// and its name (and, for vLLM >= 0.31's tagged key, its path) enter the block keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoraAdapter {
    pub base: String,
    pub path: Option<String>,
}

/// What the handlers share.
pub struct AppState {
    pub router: Router,
    pub models: Models,
    /// Scheme and seed for `/v1/route/prompt` (block size comes from the engines).
    pub hash: HashConfig,
    pub extra_keys: kvroute_blockhash::ExtraKeysStyle,
    /// Adapter name -> its base model and path.
    pub lora_bases: std::collections::HashMap<String, LoraAdapter>,
    /// What a request may cost.
    pub limits: HttpLimits,
    /// The API's shared secret, if one is configured.
    pub api_token: Option<crate::http_limits::ApiToken>,
    /// Tokenizations running at once on the blocking pool; past it `/v1/route/prompt`
    /// answers 503 rather than queue CPU work behind the routes.
    pub tokenizing: Arc<Semaphore>,
    /// Large `/v1/route` bodies decided at once on the blocking pool; past it 503, so a
    /// flood of them leaves the other cores to the small routes.
    pub large_routes: Arc<Semaphore>,
}

pub fn app(state: Arc<AppState>) -> Axum {
    let limits = state.limits.clone();
    let token = state.api_token.clone();
    let api = Axum::new()
        .route(
            ROUTE_PATH,
            post(route).layer(body_limit(limits.route_body_bytes)),
        )
        .route(
            PROMPT_ROUTE_PATH,
            post(route_prompt).layer(body_limit(limits.prompt_body_bytes)),
        )
        .route(
            COMPLETE_PATH,
            post(complete).layer(body_limit(defaults::SMALL_BODY_BYTES)),
        )
        .route(
            &format!("{TOKENIZERS_PATH}/{{model}}/{{file}}"),
            get(tokenizer_file),
        )
        .route("/v1/pods", get(pods))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such path") })
        .method_not_allowed_fallback(|| async {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here")
        })
        .with_state(state);
    harden(api, &limits, token)
}

/// A route's body limit: tower-http's layer refuses a declared length over it before
/// reading a byte, and cuts a chunked body where it passes it (413 either way); axum's own
/// default limit is lifted so that this one is the only one.
fn body_limit(bytes: usize) -> tower::layer::util::Stack<DefaultBodyLimit, RequestBodyLimitLayer> {
    tower::layer::util::Stack::new(
        DefaultBodyLimit::disable(),
        RequestBodyLimitLayer::new(bytes),
    )
}

/// The caller's address, when the transport knows it (tickets are tied to it).
fn caller_addr(peer: Option<Extension<Peer>>) -> Option<std::net::IpAddr> {
    peer.map(|Extension(Peer(addr))| addr.ip())
}

/// The ticket a route call named ([`TICKET_HEADER`]); a value that is not a non-zero decimal
/// `u64` names none. Read alone: extracting a `HeaderMap` would copy every header of every
/// route call.
struct NamedTicket(Option<u64>);

impl<S: Send + Sync> FromRequestParts<S> for NamedTicket {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let named = parts
            .headers
            .get(TICKET_HEADER)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .filter(|&t| t != 0);
        Ok(Self(named))
    }
}

/// Who asks for a route: its address and the ticket it named.
fn caller(peer: Option<Extension<Peer>>, NamedTicket(ticket): NamedTicket) -> Caller {
    Caller {
        addr: caller_addr(peer),
        ticket,
    }
}

fn route_error(e: RouteError) -> Response {
    let status = match e {
        RouteError::UnknownModel(_) => StatusCode::NOT_FOUND,
        RouteError::NoLivePod(_) | RouteError::NoEligiblePod(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, e)
}

async fn route(
    State(st): State<Arc<AppState>>,
    peer: Option<Extension<Peer>>,
    named: NamedTicket,
    body: Bytes,
) -> Response {
    let caller = caller(peer, named);
    // Parsing tens of thousands of hashes is CPU work: large bodies are decided on the
    // blocking pool, a bounded number at a time, so the async workers keep answering small
    // routes meanwhile.
    if body.len() > defaults::INLINE_ROUTE_BODY_BYTES {
        let Ok(slot) = st.large_routes.clone().try_acquire_owned() else {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many large routes being decided",
            );
        };
        let state = st.clone();
        return tokio::task::spawn_blocking(move || {
            let _slot = slot;
            decide_route(&state, caller, &body)
        })
        .await
        .unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e));
    }
    decide_route(&st, caller, &body)
}

fn decide_route(st: &AppState, caller: Caller, body: &[u8]) -> Response {
    let req: RouteRequest<'static> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("malformed route request: {e}"),
            )
        }
    };
    let model = st
        .lora_bases
        .get(req.model.as_ref())
        .map(|a| a.base.clone())
        .unwrap_or_else(|| req.model.into_owned());
    let keys = &req.block_hashes[..req.block_hashes.len().min(st.limits.max_route_blocks)];
    match st.router.route_as(caller, &model, keys) {
        Ok(answer) => Json(answer).into_response(),
        Err(e) => route_error(e),
    }
}

async fn route_prompt(
    State(st): State<Arc<AppState>>,
    peer: Option<Extension<Peer>>,
    named: NamedTicket,
    Query(q): Query<PromptQuery>,
    body: Bytes,
) -> Response {
    // Parsing, templating and tokenizing a large body takes milliseconds of CPU: on the
    // blocking pool, a bounded number at a time, so the async routes never wait behind it.
    let Ok(slot) = st.tokenizing.clone().try_acquire_owned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many prompts tokenizing",
        );
    };
    let state = st.clone();
    let computed = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        state.prompt_keys(&body, q.path.as_deref())
    })
    .await;
    let keys = match computed {
        Ok(Ok(k)) => k,
        Ok(Err(PromptError::Route(e))) => return route_error(e),
        Ok(Err(e)) => return error(StatusCode::BAD_REQUEST, e),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let hashes = &keys.block_hashes[..keys.block_hashes.len().min(st.limits.max_route_blocks)];
    match st.router.route_as(caller(peer, named), &keys.model, hashes) {
        Ok(mut answer) => {
            answer.prompt_tokens = Some(keys.prompt_tokens);
            Json(answer).into_response()
        }
        Err(e) => route_error(e),
    }
}

async fn complete(
    State(st): State<Arc<AppState>>,
    peer: Option<Extension<Peer>>,
    body: Bytes,
) -> Response {
    match serde_json::from_slice::<CompleteRequest>(&body) {
        Ok(c) => Json(CompleteAnswer {
            released: st.router.complete(c.ticket, caller_addr(peer), c.abandoned),
        })
        .into_response(),
        Err(e) => error(
            StatusCode::BAD_REQUEST,
            format!("malformed completion: {e}"),
        ),
    }
}

async fn tokenizer_file(
    State(st): State<Arc<AppState>>,
    Path((model, file)): Path<(String, String)>,
) -> Response {
    let model = st
        .lora_bases
        .get(&model)
        .map(|a| a.base.clone())
        .unwrap_or(model);
    let Some(m) = st.models.get(&model) else {
        return error(StatusCode::NOT_FOUND, format!("unknown model {model:?}"));
    };
    match m.files.get(&file) {
        Some(bytes) => {
            let mut headers = HeaderMap::new();
            let kind = if file.ends_with(".json") {
                "application/json"
            } else {
                "text/plain; charset=utf-8"
            };
            if let Ok(v) = kind.parse() {
                headers.insert(header::CONTENT_TYPE, v);
            }
            // Shared, not copied: slow readers of a large tokenizer.json cost no memory.
            (headers, Bytes::from_owner(bytes.clone())).into_response()
        }
        None => error(
            StatusCode::NOT_FOUND,
            format!("model {model:?} has no {file:?}"),
        ),
    }
}

async fn pods(State(st): State<Arc<AppState>>) -> Response {
    let blocks = st.router.index.blocks_per_pod();
    Json(json!({
        "mode": st.router.mode,
        "index_entries": st.router.index.entries(),
        "pods": st.router.registry.snapshot(&blocks),
    }))
    .into_response()
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    st.router
        .metrics
        .index_entries
        .set(st.router.index.entries() as i64);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        st.router.metrics.encode(),
    )
        .into_response()
}

async fn ready(State(st): State<Arc<AppState>>) -> Response {
    if st.router.registry.all().is_empty() {
        error(StatusCode::SERVICE_UNAVAILABLE, "no engine known yet")
    } else {
        "ready".into_response()
    }
}
