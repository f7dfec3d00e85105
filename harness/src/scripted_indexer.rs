//! An indexer stand-in with scripted answers, for tests of the filter's mechanics rather
//! than of the index: it serves the tokenizer files exactly as `kvroute serve` does
//! (`GET /v1/tokenizers/{model}/{file}`), so the filter loads its real tokenizer, and
//! answers every route call as scripted: hang forever (the filter's call timeout alone
//! bounds the delay), a chosen status, or pods in turn (to prove the destination is set
//! per request). It records the route calls it received. `kill()` drops its runtime:
//! listener and open connections close, like a killed process.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::Uri;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use kvroute_api::{
    CompleteAnswer, RouteAnswer, COMPLETE_PATH, PROMPT_ROUTE_PATH, ROUTE_PATH, TICKET_HEADER,
    TOKENIZERS_PATH,
};

/// What route calls get.
#[derive(Debug, Clone)]
pub enum RouteScript {
    /// Never answer.
    Hang,
    /// Answer this status and body.
    Status(u16, String),
    /// Answer 200 with these pods in turn (ticket: the one the call named, else the call
    /// number).
    Cycle(Vec<SocketAddr>),
    /// `Cycle` over the stack's own backends (resolved by the stack builder).
    CycleBackends,
}

struct Shared {
    models: BTreeMap<String, PathBuf>,
    failure: RouteScript,
    calls: Mutex<Vec<RouteCall>>,
}

/// One route call as received.
#[derive(Debug, Clone)]
pub struct RouteCall {
    pub path: String,
    /// The query string, if any (`path=/v1/chat/completions` on prompt routes).
    pub query: Option<String>,
    pub body: Vec<u8>,
    /// The ticket the call named for its decision (`kvroute_api::TICKET_HEADER`).
    pub ticket: Option<u64>,
}

pub struct ScriptedIndexer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl ScriptedIndexer {
    /// `models`: model name -> directory with tokenizer.json and tokenizer_config.json.
    pub fn start(models: BTreeMap<String, PathBuf>, failure: RouteScript) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            models,
            failure,
            calls: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route(
                &format!("{TOKENIZERS_PATH}/{{model}}/{{file}}"),
                get(tokenizer_file),
            )
            .route(ROUTE_PATH, post(route))
            .route(PROMPT_ROUTE_PATH, post(route))
            .route(COMPLETE_PATH, post(route))
            // Envoy's active health check of the indexer cluster.
            .route("/readyz", get(|| async { "ready" }))
            .with_state(shared.clone());
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            addr,
            shared,
            runtime: Some(runtime),
        })
    }

    /// Route and completion calls received so far.
    pub fn calls(&self) -> Vec<RouteCall> {
        self.shared
            .calls
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    /// Stop answering anything: the port closes and held connections are reset.
    pub fn kill(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for ScriptedIndexer {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn tokenizer_file(
    State(s): State<Arc<Shared>>,
    Path((model, file)): Path<(String, String)>,
) -> Result<Vec<u8>, (StatusCode, String)> {
    let not_found = |what: &str| (StatusCode::NOT_FOUND, format!("{{\"error\":\"{what}\"}}"));
    let dir = s
        .models
        .get(&model)
        .ok_or_else(|| not_found("unknown model"))?;
    if ![
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    ]
    .contains(&file.as_str())
    {
        return Err(not_found("unknown file"));
    }
    tokio::fs::read(dir.join(&file))
        .await
        .map_err(|_| not_found("no such file"))
}

async fn route(
    State(s): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let named = headers
        .get(TICKET_HEADER)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let n = match s.calls.lock() {
        Ok(mut calls) => {
            calls.push(RouteCall {
                path: uri.path().to_string(),
                query: uri.query().map(str::to_string),
                body: body.to_vec(),
                ticket: named,
            });
            calls.iter().filter(|c| c.path != COMPLETE_PATH).count()
        }
        Err(_) => 0,
    };
    if uri.path() == COMPLETE_PATH {
        let answer = CompleteAnswer { released: true };
        return (StatusCode::OK, json(&answer));
    }
    match &s.failure {
        RouteScript::Cycle(pods) if !pods.is_empty() => {
            let pod = pods[(n - 1) % pods.len()];
            let answer = RouteAnswer {
                endpoint: pod.to_string(),
                dp_rank: 0,
                matched_blocks: n,
                // The named one, as `kvroute serve` answers; else the call number.
                ticket: named.unwrap_or(n as u64),
                reason: kvroute_api::Reason::CacheHit,
                candidates: Vec::new(),
                prompt_tokens: None,
            };
            (StatusCode::OK, json(&answer))
        }
        RouteScript::Cycle(_) | RouteScript::CycleBackends => (
            StatusCode::SERVICE_UNAVAILABLE,
            "{\"error\":\"no pods\"}".into(),
        ),
        RouteScript::Hang => {
            std::future::pending::<()>().await;
            (StatusCode::OK, String::new())
        }
        RouteScript::Status(code, body) => (
            StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body.clone(),
        ),
    }
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}
