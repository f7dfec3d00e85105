//! The indexer's HTTP API (axum). The routes the filter calls, and their bodies, are the
//! contract in `kvroute-api` (one definition for both sides); every error is its
//! `ErrorAnswer` with a status that says whose fault it is: 400 malformed, 404 unknown
//! model or file, 503 no live pod.
//!
//! - `POST /v1/route` `RouteRequest` -> `RouteAnswer`
//! - `POST /v1/route/prompt?path=<request path>` raw OpenAI/Anthropic body -> the same,
//!   tokenized here, with `prompt_tokens`
//! - `POST /v1/route/complete` `CompleteRequest` -> `CompleteAnswer`
//! - `GET /v1/tokenizers/{model}/{file}`: tokenizer files for the filter
//! - `GET /v1/pods`, `GET /metrics`, `GET /healthz`, `GET /readyz`

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router as Axum};
use kvroute_api::{
    CompleteAnswer, CompleteRequest, ErrorAnswer, PromptQuery, RouteRequest, COMPLETE_PATH,
    PROMPT_ROUTE_PATH, ROUTE_PATH, TOKENIZERS_PATH,
};
use kvroute_blockhash::request::Endpoint;
use kvroute_blockhash::{BlockHasher, HashConfig, Request, RequestExtras, RequestKeys};
use serde_json::json;

use crate::models::Models;
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
    /// LoRA adapter name -> base model it runs on.
    /// Adapter name -> its base model and path.
    pub lora_bases: std::collections::HashMap<String, LoraAdapter>,
}

pub fn app(state: Arc<AppState>) -> Axum {
    Axum::new()
        .route(ROUTE_PATH, post(route))
        .route(PROMPT_ROUTE_PATH, post(route_prompt))
        .route(COMPLETE_PATH, post(complete))
        .route(
            &format!("{TOKENIZERS_PATH}/{{model}}/{{file}}"),
            get(tokenizer_file),
        )
        .route("/v1/pods", get(pods))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(state)
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    let body = ErrorAnswer {
        error: message.to_string(),
    };
    (status, Json(body)).into_response()
}

fn route_error(e: RouteError) -> Response {
    let status = match e {
        RouteError::UnknownModel(_) => StatusCode::NOT_FOUND,
        RouteError::NoLivePod(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, e)
}

async fn route(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let req: RouteRequest<'static> = match serde_json::from_slice(&body) {
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
    match st.router.route(&model, &req.block_hashes) {
        Ok(answer) => Json(answer).into_response(),
        Err(e) => route_error(e),
    }
}

async fn route_prompt(
    State(st): State<Arc<AppState>>,
    Query(q): Query<PromptQuery>,
    body: Bytes,
) -> Response {
    let endpoint = q.path.as_deref().and_then(Endpoint::from_path);
    let request = match Request::parse(&body, endpoint) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let Some(requested) = request.model.clone() else {
        return error(StatusCode::BAD_REQUEST, "the body names no model");
    };
    let (model, lora_name, lora_path) = match st.lora_bases.get(&requested) {
        Some(adapter) => (
            adapter.base.clone(),
            Some(requested.clone()),
            adapter.path.clone(),
        ),
        None => (requested.clone(), None, None),
    };
    let Some(m) = st.models.get(&model) else {
        return route_error(RouteError::UnknownModel(model));
    };
    let block_size = st
        .router
        .registry
        .block_size(&model)
        .unwrap_or(st.hash.block_size);
    let hasher = BlockHasher::new(HashConfig {
        block_size,
        ..st.hash.clone()
    });
    let extras = RequestExtras {
        cache_salt: request.cache_salt.clone(),
        lora_name,
        lora_path,
    };
    let keys = match RequestKeys::compute_with_style(
        &m.encoder,
        &hasher,
        &request,
        &extras,
        st.extra_keys,
    ) {
        Ok(k) => k,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match st.router.route(&model, &keys.block_hashes) {
        Ok(mut answer) => {
            answer.prompt_tokens = Some(keys.prompt_tokens);
            Json(answer).into_response()
        }
        Err(e) => route_error(e),
    }
}

async fn complete(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    match serde_json::from_slice::<CompleteRequest>(&body) {
        Ok(c) => Json(CompleteAnswer {
            released: st.router.complete(c.ticket),
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
            (headers, Bytes::from(bytes.to_vec())).into_response()
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
