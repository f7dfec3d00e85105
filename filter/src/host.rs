//! Thin wrappers over the proxy-wasm host calls the filter uses. The SDK's trait methods
//! `unwrap()` host errors, and a wasm panic kills the VM (and every request on that
//! worker), so the filter calls either the raw ABI (`abi.rs`, for calls whose SDK wrappers
//! would panic on a status they do not expect) or `hostcalls` functions whose status arms
//! cover everything Envoy returns for them, and turns every error into "not available".

use std::time::{Duration, SystemTime};

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType, Status};

use crate::abi;
use crate::filter_state::{set_filter_state_arguments, ORIGINAL_DST_KEY};

pub fn now() -> Option<SystemTime> {
    abi::now()
}

/// Microseconds since `start`, 0 when the clock is unavailable.
pub fn micros_since(start: Option<SystemTime>) -> u64 {
    match (start, now()) {
        (Some(s), Some(n)) => n.duration_since(s).unwrap_or(Duration::ZERO).as_micros() as u64,
        _ => 0,
    }
}

pub fn log(level: LogLevel, message: &str) {
    abi::log(level, message);
}

pub fn set_tick_period(period: Duration) {
    abi::set_tick_period(period);
}

pub fn request_header(name: &str) -> Option<String> {
    abi::get_header(MapType::HttpRequestHeaders, name)
}

pub fn remove_request_header(name: &str) -> bool {
    abi::remove_header(MapType::HttpRequestHeaders, name)
}

pub fn add_response_header(name: &str, value: &str) -> bool {
    abi::add_header(MapType::HttpResponseHeaders, name, value)
}

pub fn buffer(kind: BufferType, size: usize) -> Option<Vec<u8>> {
    if size == 0 {
        return Some(Vec::new());
    }
    abi::get_buffer(kind, 0, size)
}

pub fn call_response_status() -> Option<u16> {
    abi::get_header(MapType::HttpCallResponseHeaders, ":status").and_then(|s| s.parse().ok())
}

pub fn set_effective_context(context_id: u32) -> bool {
    abi::set_effective_context(context_id)
}

/// A POST with a JSON body to `cluster` (with `authorization`, the indexer's shared
/// secret, when configured); the token of the call. (Dispatch must go through the SDK so
/// that its dispatcher routes the answer back to this context.)
pub fn post_json(
    cluster: &str,
    authority: &str,
    path: &str,
    body: &[u8],
    authorization: Option<&str>,
    extra_headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<u32, Status> {
    let mut headers = vec![
        (":method", "POST"),
        (":path", path),
        (":authority", authority),
        ("content-type", "application/json"),
    ];
    if let Some(value) = authorization {
        headers.push(("authorization", value));
    }
    headers.extend_from_slice(extra_headers);
    hostcalls::dispatch_http_call(cluster, headers, Some(body), vec![], timeout)
}

pub fn get(
    cluster: &str,
    authority: &str,
    path: &str,
    authorization: Option<&str>,
    timeout: Duration,
) -> Result<u32, Status> {
    let mut headers = vec![
        (":method", "GET"),
        (":path", path),
        (":authority", authority),
    ];
    if let Some(value) = authorization {
        headers.push(("authorization", value));
    }
    hostcalls::dispatch_http_call(cluster, headers, None, vec![], timeout)
}

/// Set the `ORIGINAL_DST` destination of the current request, then make Envoy re-match
/// the route: the route table sends requests carrying this filter state to the
/// `ORIGINAL_DST` cluster and all others to the fallback cluster, and the route was first
/// matched before the state existed. `Err` carries the host's status.
pub fn set_original_dst(endpoint: &str) -> Result<(), u32> {
    let args = set_filter_state_arguments(ORIGINAL_DST_KEY, endpoint);
    abi::call_foreign_function("set_envoy_filter_state", &args)?;
    abi::call_foreign_function("clear_route_cache", &[])?;
    Ok(())
}

pub fn resume_request() {
    abi::resume_request();
}
