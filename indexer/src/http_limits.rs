//! What one HTTP request may cost the indexer, and the layers that enforce it: the API's
//! optional shared secret, a cap on requests in flight (past it: 503 at once, tower's
//! `load_shed` over `concurrency_limit`, not a queue), a time limit per request
//! (tower-http's `TimeoutLayer`), and every error as `kvroute_api::ErrorAnswer` JSON,
//! including those axum and the layers write themselves (413 body too large, 404 no such
//! route, 405 wrong method, 408 too slow). Body limits are per route ([`crate::http::app`]);
//! the transport's limits (connections, header and idle timeouts) are
//! [`crate::http_server`]'s. Every default is in [`crate::defaults`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{from_fn, from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::{BoxError, Json, Router};
use kvroute_api::ErrorAnswer;
use sha2::{Digest, Sha256};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::ServiceBuilder;
use tower_http::timeout::TimeoutLayer;

use crate::defaults;

/// The HTTP API's limits (`kvroute serve` flags).
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct HttpLimits {
    /// A file holding the API's shared secret: every call but /healthz, /readyz and /metrics
    /// must then carry `Authorization: Bearer <secret>` (the filter's `api_token`).
    #[arg(long)]
    pub api_token_file: Option<PathBuf>,
    /// Connections open at once; at it a new one closes the connection idle the longest
    /// (never one mid-request), and waits in the kernel's backlog only if none is idle.
    #[arg(long, default_value_t = defaults::MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Connections open at once from one address; past it its new ones are closed.
    #[arg(long, default_value_t = defaults::MAX_CONNECTIONS_PER_IP)]
    pub max_connections_per_ip: usize,
    /// Time to send a request head, and to stay idle between requests, in milliseconds.
    #[arg(long, default_value_t = defaults::HEADER_TIMEOUT_MS)]
    pub header_timeout_ms: u64,
    /// Longest one request may take (body read included), in milliseconds.
    #[arg(long, default_value_t = defaults::REQUEST_TIMEOUT_MS)]
    pub request_timeout_ms: u64,
    /// Requests handled at once; past it 503.
    #[arg(long, default_value_t = defaults::MAX_IN_FLIGHT_REQUESTS)]
    pub max_in_flight_requests: usize,
    /// `/v1/route/prompt` bodies tokenized at once (on the blocking pool); past it 503.
    #[arg(long, default_value_t = defaults::MAX_TOKENIZING)]
    pub max_tokenizing: usize,
    /// `/v1/route` bodies over 64 KiB decided at once (on the blocking pool); past it 503.
    #[arg(long, default_value_t = defaults::MAX_LARGE_ROUTES)]
    pub max_large_routes: usize,
    /// Largest `/v1/route` body, in bytes.
    #[arg(long, default_value_t = defaults::ROUTE_BODY_BYTES)]
    pub route_body_bytes: usize,
    /// Largest `/v1/route/prompt` body, in bytes.
    #[arg(long, default_value_t = defaults::PROMPT_BODY_BYTES)]
    pub prompt_body_bytes: usize,
    /// Most block hashes one decision reads (a longer request is routed on its first).
    #[arg(long, default_value_t = defaults::MAX_ROUTE_BLOCKS)]
    pub max_route_blocks: usize,
    /// Decisions counted in flight at once; past it the oldest is released.
    #[arg(long, default_value_t = defaults::MAX_TICKETS)]
    pub max_tickets: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            api_token_file: None,
            max_connections: defaults::MAX_CONNECTIONS,
            max_connections_per_ip: defaults::MAX_CONNECTIONS_PER_IP,
            header_timeout_ms: defaults::HEADER_TIMEOUT_MS,
            request_timeout_ms: defaults::REQUEST_TIMEOUT_MS,
            max_in_flight_requests: defaults::MAX_IN_FLIGHT_REQUESTS,
            max_tokenizing: defaults::MAX_TOKENIZING,
            max_large_routes: defaults::MAX_LARGE_ROUTES,
            route_body_bytes: defaults::ROUTE_BODY_BYTES,
            prompt_body_bytes: defaults::PROMPT_BODY_BYTES,
            max_route_blocks: defaults::MAX_ROUTE_BLOCKS,
            max_tickets: defaults::MAX_TICKETS,
        }
    }
}

impl HttpLimits {
    /// The secret of `--api-token-file` (surrounding whitespace trimmed); an unreadable or
    /// empty file stops the start rather than leave the API open.
    pub fn api_token(&self) -> anyhow::Result<Option<ApiToken>> {
        let Some(path) = &self.api_token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("--api-token-file {}: {e}", path.display()))?;
        let secret = text.trim();
        if secret.is_empty() {
            anyhow::bail!("--api-token-file {}: the file is empty", path.display());
        }
        Ok(Some(ApiToken::new(secret)))
    }
}

/// Paths open without the secret: the kubelet's probes and Prometheus.
pub const OPEN_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The API's shared secret, kept and compared as a SHA-256 digest: the comparison's time
/// depends on the digest of what was presented, which says nothing about the secret.
#[derive(Clone)]
pub struct ApiToken(Arc<[u8; 32]>);

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(..)")
    }
}

impl ApiToken {
    pub fn new(secret: &str) -> Self {
        ApiToken(Arc::new(Sha256::digest(secret.as_bytes()).into()))
    }

    /// Whether an `Authorization` header carries the secret as a bearer token.
    pub fn admits(&self, presented: Option<&HeaderValue>) -> bool {
        let Some(secret) = presented
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(secret.trim().as_bytes()).into();
        digest == *self.0
    }
}

/// Wraps the API's routes in the limits (outermost first: JSON errors, secret, in-flight
/// cap, time limit).
pub fn harden(app: Router, limits: &HttpLimits, token: Option<ApiToken>) -> Router {
    let in_flight = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(|e: BoxError| async move {
            if e.is::<tower::load_shed::error::Overloaded>() {
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many requests in flight",
                )
            } else {
                error(StatusCode::INTERNAL_SERVER_ERROR, e)
            }
        }))
        .load_shed()
        // Global: axum layers each route on its own, and the cap is over all of them.
        .layer(GlobalConcurrencyLimitLayer::new(
            limits.max_in_flight_requests.max(1),
        ));
    app.layer(TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        Duration::from_millis(limits.request_timeout_ms.max(1)),
    ))
    .layer(in_flight)
    .layer(from_fn_with_state(token, require_token))
    .layer(from_fn(json_errors))
}

async fn require_token(
    State(token): State<Option<ApiToken>>,
    req: Request,
    next: Next,
) -> Response {
    match &token {
        Some(t)
            if !OPEN_PATHS.contains(&req.uri().path())
                && !t.admits(req.headers().get(header::AUTHORIZATION)) =>
        {
            let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong API token");
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
        _ => next.run(req).await,
    }
}

/// `ErrorAnswer` with `status`: the API's one error shape.
pub fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    let body = ErrorAnswer {
        error: message.to_string(),
    };
    (status, Json(body)).into_response()
}

/// Longest error text kept from a layer's own error body.
const MAX_ERROR_TEXT: usize = 1024;

/// Rewrites an error answer that is not JSON yet (axum's rejections, the layers' answers,
/// an empty 404 or 405) into the API's error shape, keeping its status and text.
async fn json_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_ERROR_TEXT)
        .await
        .ok()
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_lowercase());
    let mut rewritten = error(status, text);
    // Keep what the client needs to act on (Allow on 405, WWW-Authenticate on 401).
    for name in [header::ALLOW, header::WWW_AUTHENTICATE, header::RETRY_AFTER] {
        if let Some(v) = parts.headers.get(&name) {
            rewritten.headers_mut().insert(name, v.clone());
        }
    }
    rewritten
}
