//! A minimal OpenAI-shaped engine for tests that only need to know *which* backend served
//! a request and *what* it received: it answers every request, records it, and names
//! itself in the `x-served-by` header and the JSON body. Streaming requests get a
//! server-sent-events answer like vLLM's. (Engines that keep a KV cache and publish real
//! KV events are the simulator's job; this one only observes.) The indexer's health checks
//! and metrics scrapes (`GET /health`, `GET /metrics`) are answered and not recorded: no
//! client sent them.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, Response, StatusCode, Uri};
use axum::Router;

use crate::kv_engine::KvPublisher;

/// One request as the backend received it.
#[derive(Debug, Clone)]
pub struct Hit {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Clone)]
struct Shared {
    name: String,
    hits: Arc<Mutex<Vec<Hit>>>,
    kv: Option<Arc<KvPublisher>>,
}

/// A running backend; it stops when the runtime that serves it is dropped.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl Backend {
    /// Bind 127.0.0.1:0 and serve on `runtime`.
    pub fn start(runtime: &tokio::runtime::Runtime, name: &str) -> anyhow::Result<Self> {
        Self::start_with(runtime, name, SocketAddr::from(([127, 0, 0, 1], 0)), None)
    }

    /// Bind `bind` and serve on `runtime`; with `kv`, publish each prompt's blocks.
    pub fn start_with(
        runtime: &tokio::runtime::Runtime,
        name: &str,
        bind: SocketAddr,
        kv: Option<Arc<KvPublisher>>,
    ) -> anyhow::Result<Self> {
        let listener = runtime.block_on(tokio::net::TcpListener::bind(bind))?;
        let addr = listener.local_addr()?;
        let hits = Arc::new(Mutex::new(Vec::new()));
        let shared = Shared {
            name: name.to_string(),
            hits: hits.clone(),
            kv,
        };
        // Prompts can be megabytes: no body limit (axum's default is 2 MB).
        let app = Router::new()
            .fallback(answer)
            .layer(DefaultBodyLimit::disable())
            .with_state(shared);
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            name: name.to_string(),
            addr,
            hits,
        })
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().map(|h| h.clone()).unwrap_or_default()
    }

    pub fn hit_count(&self) -> usize {
        self.hits.lock().map(|h| h.len()).unwrap_or(0)
    }
}

async fn answer(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    if method == Method::GET && matches!(uri.path(), "/health" | "/metrics") {
        return Response::new(Body::empty());
    }
    let hit = Hit {
        method: method.to_string(),
        path: uri.path().to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
    };
    if let Ok(mut hits) = s.hits.lock() {
        hits.push(hit);
    }
    if let (Some(kv), true) = (&s.kv, method == Method::POST) {
        kv.publish_request(uri.path(), &body).await;
    }
    let request: serde_json::Value =
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let streaming = request
        .get("stream")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let model = request
        .get("model")
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    let builder = Response::builder()
        .status(StatusCode::OK)
        .header("x-served-by", s.name.as_str());
    let built = if streaming {
        let mut sse = String::new();
        for word in ["Hello", " from", " the", " test", " engine"] {
            let chunk = serde_json::json!({
                "object": "chat.completion.chunk", "model": model, "served_by": s.name,
                "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": null}],
            });
            sse.push_str(&format!("data: {chunk}\n\n"));
        }
        sse.push_str("data: [DONE]\n\n");
        builder
            .header("content-type", "text/event-stream")
            .body(Body::from(sse))
    } else {
        let out = serde_json::json!({
            "object": "chat.completion", "model": model, "served_by": s.name,
            "received_bytes": body.len(),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        });
        builder
            .header("content-type", "application/json")
            .body(Body::from(out.to_string()))
    };
    built.unwrap_or_else(|_| Response::new(Body::empty()))
}
