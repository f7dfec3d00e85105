//! An indexer that fails on purpose, for the fail-open tests: it serves the tokenizer
//! files exactly as `kvroute serve` does (`GET /v1/tokenizers/{model}/{file}`), so the
//! filter loads its real tokenizer, but every route call either hangs forever (so the
//! filter's call timeout alone bounds the delay) or gets a chosen error status. `kill()`
//! drops its runtime: listener and open connections close, like a killed process.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;

/// What route calls get.
#[derive(Debug, Clone)]
pub enum RouteFailure {
    /// Never answer.
    Hang,
    /// Answer this status and body.
    Status(u16, String),
}

struct Shared {
    models: BTreeMap<String, PathBuf>,
    failure: RouteFailure,
}

pub struct FailingIndexer {
    pub addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FailingIndexer {
    /// `models`: model name -> directory with tokenizer.json and tokenizer_config.json.
    pub fn start(models: BTreeMap<String, PathBuf>, failure: RouteFailure) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared { models, failure });
        let app = Router::new()
            .route("/v1/tokenizers/{model}/{file}", get(tokenizer_file))
            .route("/v1/route", post(route))
            .route("/v1/route/prompt", post(route))
            .route("/v1/route/complete", post(|| async { "{}" }))
            .with_state(shared);
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            addr,
            runtime: Some(runtime),
        })
    }

    /// Stop answering anything: the port closes and held connections are reset.
    pub fn kill(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for FailingIndexer {
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

async fn route(State(s): State<Arc<Shared>>) -> (StatusCode, String) {
    match &s.failure {
        RouteFailure::Hang => {
            std::future::pending::<()>().await;
            (StatusCode::OK, String::new())
        }
        RouteFailure::Status(code, body) => (
            StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body.clone(),
        ),
    }
}
