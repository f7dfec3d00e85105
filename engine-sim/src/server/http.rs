//! The engine's HTTP face, as vLLM's OpenAI server shows it: `/v1/chat/completions` and
//! `/v1/completions` (streamed as server-sent events or whole), `/v1/models`, `/health`,
//! `/metrics` and `/reset_prefix_cache`. A handler tokenizes the body (off the async
//! threads: long prompts take milliseconds), hands the prompt to the engine core and turns
//! the tokens it hears back into OpenAI bodies. A client's mistake is a 400 in OpenAI's
//! error form, never a panic.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use kvroute_blockhash::Endpoint;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::server::engine_loop::{EngineHandle, TokenEvent};
use crate::server::metrics::EngineMetrics;
use crate::server::model::{output_token, PromptBlocks, ServedModel};
use crate::server::openai::{usage, AnswerMeta, ApiError, Options};

/// Prompts can be megabytes (axum's default limit is 2 MB).
const MAX_BODY_BYTES: usize = 64 << 20;

/// Header naming the engine that answered (its `ip:port`, as the indexer names engines),
/// so a client behind a router can see where its request went.
pub const SERVED_BY_HEADER: &str = "x-served-by";

pub struct AppState {
    pub model: Arc<ServedModel>,
    pub engine: EngineHandle,
    pub metrics: Arc<EngineMetrics>,
    pub default_max_tokens: usize,
    pub max_model_len: usize,
    /// Real seconds added before each first token (the API server's share of TTFT).
    pub first_token_delay: Duration,
    /// Engine seconds per wall second (the TTFT histogram is in engine seconds).
    pub time_scale: f64,
    pub served_by: String,
    pub started: u64,
    pub next_id: AtomicU64,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/health", get(|| async { StatusCode::OK }))
        .route("/metrics", get(metrics))
        .route("/reset_prefix_cache", post(reset_prefix_cache))
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn chat(State(s): State<Arc<AppState>>, body: Bytes) -> Response {
    generate(s, Endpoint::ChatCompletions, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn completions(State(s): State<Arc<AppState>>, body: Bytes) -> Response {
    generate(s, Endpoint::Completions, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn models(State(s): State<Arc<AppState>>) -> Response {
    axum::Json(json!({
        "object": "list",
        "data": [{
            "id": s.model.name, "object": "model", "created": s.started, "owned_by": "vllm",
            "root": s.model.name, "parent": null, "max_model_len": s.max_model_len,
        }],
    }))
    .into_response()
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

async fn reset_prefix_cache(State(s): State<Arc<AppState>>) -> Response {
    match s.engine.reset_prefix_cache().await {
        Ok(cleared) => axum::Json(json!({"cleared": cleared})).into_response(),
        Err(e) => ApiError::unavailable(e.to_string()).into_response(),
    }
}

/// Observes a request's time to first token, from its arrival at the HTTP server, once.
struct FirstTokenClock {
    arrived: Instant,
    time_scale: f64,
    metrics: Arc<EngineMetrics>,
    observed: bool,
}

impl FirstTokenClock {
    fn first_token(&mut self) {
        if !std::mem::replace(&mut self.observed, true) {
            self.metrics.observe_time_to_first_token(
                self.arrived.elapsed().as_secs_f64() * self.time_scale,
            );
        }
    }
}

async fn generate(s: Arc<AppState>, endpoint: Endpoint, body: Bytes) -> Result<Response, ApiError> {
    let clock = FirstTokenClock {
        arrived: Instant::now(),
        time_scale: s.time_scale,
        metrics: s.metrics.clone(),
        observed: false,
    };
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    let options = Options::parse(&value, s.default_max_tokens)?;
    if !options.model.is_empty() && options.model != s.model.name {
        return Err(ApiError::not_found(format!(
            "The model `{}` does not exist.",
            options.model
        )));
    }
    let model = s.model.clone();
    let mut prompt = tokio::task::spawn_blocking(move || model.prompt(endpoint, &body))
        .await
        .map_err(|e| ApiError::unavailable(format!("tokenizer task failed: {e}")))?
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if prompt.token_ids.is_empty() {
        return Err(ApiError::bad_request("the prompt is empty"));
    }
    let requested = prompt.token_ids.len().saturating_add(options.max_tokens);
    if requested > s.max_model_len {
        return Err(ApiError::bad_request(format!(
            "This model's maximum context length is {} tokens. However, you requested {} tokens ({} in the messages, {} in the completion).",
            s.max_model_len,
            requested,
            prompt.token_ids.len(),
            options.max_tokens
        )));
    }
    prompt.session_id = options.session_id.clone();
    let prompt = Arc::new(prompt);
    let events = s
        .engine
        .submit(prompt.clone(), options.max_tokens)
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    let n = s.next_id.fetch_add(1, Ordering::Relaxed);
    let meta = AnswerMeta {
        endpoint,
        id: match endpoint {
            Endpoint::Completions => format!("cmpl-{n}"),
            _ => format!("chatcmpl-{n}"),
        },
        created: unix_now(),
        model: s.model.name.clone(),
    };
    let builder = Response::builder().header(SERVED_BY_HEADER, s.served_by.as_str());
    let response = if options.stream {
        let (tx, rx) = mpsc::unbounded_channel::<Result<Bytes, Infallible>>();
        tokio::spawn(stream_answer(
            events,
            meta,
            options,
            s.first_token_delay,
            clock,
            tx,
        ));
        let body = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk, rx))
        });
        builder
            .header(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")
            .header(header::CACHE_CONTROL, "no-cache")
            .body(Body::from_stream(body))
    } else {
        let answer =
            whole_answer(events, &meta, &options, &prompt, s.first_token_delay, clock).await?;
        builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(answer.to_string()))
    };
    response.map_err(|e| ApiError::unavailable(format!("building the response: {e}")))
}

/// Waits for every token, then writes one body.
async fn whole_answer(
    mut events: mpsc::UnboundedReceiver<TokenEvent>,
    meta: &AnswerMeta,
    options: &Options,
    prompt: &PromptBlocks,
    first_token_delay: Duration,
    mut clock: FirstTokenClock,
) -> Result<Value, ApiError> {
    let mut text = String::new();
    let mut ids = Vec::new();
    while let Some(event) = events.recv().await {
        match event {
            TokenEvent::Token { first } => {
                if first.is_some() {
                    tokio::time::sleep(first_token_delay).await;
                    clock.first_token();
                }
                let (word, id) = output_token(ids.len());
                text.push_str(word);
                ids.push(id);
            }
            TokenEvent::Finished {
                prompt_tokens,
                cached_tokens,
                output_tokens,
            } => {
                let prompt_ids = options
                    .return_token_ids
                    .then_some(prompt.token_ids.as_slice());
                return Ok(meta.complete(
                    &text,
                    &ids,
                    prompt_ids,
                    usage(prompt_tokens, cached_tokens, output_tokens),
                ));
            }
        }
    }
    Err(ApiError::unavailable("the engine stopped"))
}

fn sse(value: &Value) -> Result<Bytes, Infallible> {
    Ok(Bytes::from(format!("data: {value}\n\n")))
}

/// Writes each token as a server-sent event as it comes; a client that went away ends it.
async fn stream_answer(
    mut events: mpsc::UnboundedReceiver<TokenEvent>,
    meta: AnswerMeta,
    options: Options,
    first_token_delay: Duration,
    mut clock: FirstTokenClock,
    out: mpsc::UnboundedSender<Result<Bytes, Infallible>>,
) {
    let mut sent = 0usize;
    while let Some(event) = events.recv().await {
        let chunk = match event {
            TokenEvent::Token { first } => {
                if first.is_some() {
                    tokio::time::sleep(first_token_delay).await;
                    clock.first_token();
                    if let Some(role) = meta.role_chunk() {
                        if out.send(sse(&role)).is_err() {
                            return;
                        }
                    }
                }
                let (word, id) = output_token(sent);
                sent += 1;
                meta.token_chunk(
                    word,
                    id,
                    sent == options.max_tokens,
                    options.return_token_ids,
                )
            }
            TokenEvent::Finished {
                prompt_tokens,
                cached_tokens,
                output_tokens,
            } => {
                if options.include_usage {
                    let usage = usage(prompt_tokens, cached_tokens, output_tokens);
                    if out.send(sse(&meta.usage_chunk(usage))).is_err() {
                        return;
                    }
                }
                let _ = out.send(Ok(Bytes::from_static(b"data: [DONE]\n\n")));
                return;
            }
        };
        if out.send(sse(&chunk)).is_err() {
            return;
        }
    }
}
