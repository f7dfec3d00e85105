//! One request through the filter. The flow is the one Envoy 1.40 allows: headers
//! `Continue` (pausing there would starve the body callback); the body is paused until
//! the end of stream (the buffer filter after this one raises the buffer limit); the
//! block hashes go to the indexer; its answer becomes the `ORIGINAL_DST` filter state,
//! and the request resumes. Any failure resumes the request with no state set, which
//! the route table sends to the fallback cluster: fail open, never fail closed.

use std::rc::Rc;
use std::time::SystemTime;

use kvroute_api::{prompt_route_uri, CompleteRequest, RouteAnswer, RouteRequest, TICKET_HEADER};
use kvroute_blockhash::{Endpoint, Request, RequestExtras, RequestKeys};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, LogLevel};

use crate::config::TokenizeIn;
use crate::fail_open::FailOpenReason;
use crate::filter_state::DESTINATION_HEADER;
use crate::host;
use crate::request_gate::{gate, Gate, RequestHead};
use crate::route_api::classify_answer;
use crate::vm_state::VmState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not ours, or already decided: everything continues.
    Pass,
    /// Buffering the body of a request we route.
    Buffering(Endpoint),
    /// Waiting for the indexer's answer to a call in `calls`.
    AwaitingIndexer,
}

/// A route call in flight: Envoy's token for it, and the ticket it named for its decision
/// (`kvroute_api::TICKET_HEADER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RouteCall {
    token: u32,
    ticket: u64,
}

pub struct KvRouteStream {
    context_id: u32,
    vm: Option<Rc<VmState>>,
    phase: Phase,
    decision_started: Option<SystemTime>,
    /// Bytes of request body buffered so far.
    buffered: usize,
    answer: Option<RouteAnswer>,
    /// The route call's path and body, kept for one retry when the indexer replica Envoy
    /// picked refused the connection; `None` once retried.
    retry: Option<(String, Vec<u8>)>,
    /// Route calls whose answer is awaited: one, or the retry's two (see `retry_route`).
    /// Every other call's decision is released by the ticket it named, whether or not its
    /// answer ever comes (see `release`).
    calls: Vec<RouteCall>,
    /// Calls released that may still answer: an indexer that did not use the named ticket
    /// (one older than the header) answers with its own, released on arrival.
    released: Vec<RouteCall>,
}

impl KvRouteStream {
    pub fn new(context_id: u32, vm: Option<Rc<VmState>>) -> Self {
        Self {
            context_id,
            vm,
            phase: Phase::Pass,
            decision_started: None,
            buffered: 0,
            answer: None,
            retry: None,
            calls: Vec::new(),
            released: Vec::new(),
        }
    }

    fn fail_open(&mut self, reason: FailOpenReason) {
        if let Some(vm) = &self.vm {
            vm.metrics.fail_open(reason);
            if self.decision_started.is_some() {
                vm.metrics
                    .decision_time(host::micros_since(self.decision_started));
            }
        }
        self.phase = Phase::Pass;
    }

    /// Hash the body (or hand it to the indexer) and dispatch the route call.
    /// `Ok(())` when a call is in flight.
    fn dispatch_route(
        &mut self,
        vm: &VmState,
        kind: Endpoint,
        body: &[u8],
    ) -> Result<(), FailOpenReason> {
        let config = &vm.config;
        // The model decides everything else (tokenizer, where to tokenize), so it is read
        // first with a shallow parse that does not build the prompt.
        let head: BodyHead =
            serde_json::from_slice(body).map_err(|_| FailOpenReason::MalformedRequest)?;
        let model_name = head.model.ok_or(FailOpenReason::MalformedRequest)?;
        let model = config
            .resolve_model(&model_name)
            .ok_or(FailOpenReason::UnknownModel)?;
        let timeout = config.call_timeout;
        if model.tokenize_in == TokenizeIn::Indexer {
            // The indexer reads the model (and resolves LoRA adapters) from the body itself;
            // the API travels as the standard path of the configured kind.
            let uri = prompt_route_uri(&config.prompt_route_path, kind.path());
            let call = call_route(vm, &uri, body, timeout).ok_or(FailOpenReason::DispatchFailed)?;
            self.calls.push(call);
            self.retry = Some((uri, body.to_vec()));
            return Ok(());
        }
        let encoder = vm
            .encoder(model.base)
            .ok_or(FailOpenReason::TokenizerNotLoaded)?;
        let request =
            Request::parse(body, Some(kind)).map_err(|e| FailOpenReason::from_blockhash(&e))?;
        let extras = RequestExtras {
            cache_salt: request.cache_salt.clone(),
            lora_name: model.lora_name.map(str::to_string),
            lora_path: model.lora_path.map(str::to_string),
        };
        let hash_started = host::now();
        let keys = RequestKeys::compute(&encoder, &vm.hasher, &request, &extras)
            .map_err(|e| FailOpenReason::from_blockhash(&e))?;
        vm.metrics.hash_time(host::micros_since(hash_started));
        let route = RouteRequest {
            model: model.base.into(),
            block_hashes: keys.block_hashes.as_slice().into(),
        };
        let json = serde_json::to_vec(&route).map_err(|_| FailOpenReason::HashError)?;
        let call = call_route(vm, &config.route_path, &json, timeout)
            .ok_or(FailOpenReason::DispatchFailed)?;
        self.calls.push(call);
        self.retry = Some((config.route_path.clone(), json));
        Ok(())
    }

    /// The indexer replica Envoy picked could not be reached, well before the call timeout
    /// (Envoy's own 503 or no answer at all: a refused or reset connection, as when a
    /// replica has just died and neither the health check nor outlier detection has taken
    /// it out yet; the indexer's own 503, no live pod, is not retried).
    /// Ask again once, within what is left of the call timeout, with two calls sent back
    /// to back: Envoy picks each call's replica as it is sent, so under round robin the two
    /// go to two different replicas whatever other requests were picked in between the
    /// first call and its failure (a single retry lands on the dead replica again about
    /// half of the time under load, until Envoy has ejected it). The first answer routes;
    /// the other one's decision is released (see `release`). True when the retry is in
    /// flight.
    fn retry_route(&mut self, vm: &VmState) -> bool {
        let Some((path, body)) = self.retry.take() else {
            return false;
        };
        let elapsed = host::micros_since(self.decision_started);
        let Some(left) = (vm.config.call_timeout.as_micros() as u64).checked_sub(elapsed) else {
            return false;
        };
        if left < MIN_RETRY_MICROS {
            return false;
        }
        let left = std::time::Duration::from_micros(left);
        self.calls
            .extend((0..2).filter_map(|_| call_route(vm, &path, &body, left)));
        !self.calls.is_empty()
    }

    /// Releases the decision a route call may have made that will not route this request:
    /// its answer was refused or never came (the call timed out, the connection broke
    /// after the indexer read it), or another call's answer routed. The indexer may not
    /// have decided yet; it remembers the release and drops the decision when made, so a
    /// request sent elsewhere never counts as load on the pod it was not sent to.
    fn release(&mut self, vm: &VmState, call: RouteCall) {
        if vm.config.report_completion {
            self.send_completion(vm, call.ticket, true);
            self.released.push(call);
        }
    }

    /// Releases every call still awaited; none is awaited after.
    fn release_all(&mut self, vm: &VmState) {
        for call in std::mem::take(&mut self.calls) {
            self.release(vm, call);
        }
    }

    /// The answer to a call already released: if it carries another ticket than the one
    /// the call named, that decision is released too.
    fn release_answered(&mut self, vm: &VmState, call: RouteCall, body_size: usize) {
        let body = host::buffer(BufferType::HttpCallResponseBody, body_size).unwrap_or_default();
        let status = host::call_response_status();
        if let Ok(answer) = classify_answer(status, &body, &vm.config.allowed_endpoints) {
            if answer.ticket != call.ticket {
                self.send_completion(vm, answer.ticket, false);
            }
        }
    }

    /// The whole body is buffered: start the decision, or fail open at once.
    fn decide(&mut self, vm: &VmState, kind: Endpoint) -> Action {
        self.decision_started = host::now();
        let Some(body) = host::buffer(BufferType::HttpRequestBody, self.buffered) else {
            self.fail_open(FailOpenReason::MalformedRequest);
            return Action::Continue;
        };
        match self.dispatch_route(vm, kind, &body) {
            Ok(()) => {
                self.phase = Phase::AwaitingIndexer;
                Action::Pause
            }
            Err(reason) => {
                self.fail_open(reason);
                Action::Continue
            }
        }
    }

    /// `abandoned`: the call that named `ticket` was given up on (see `release`).
    fn send_completion(&self, vm: &VmState, ticket: u64, abandoned: bool) {
        let Ok(body) = serde_json::to_vec(&CompleteRequest { ticket, abandoned }) else {
            return;
        };
        // Sent on the root context's behalf: a call owned by this request context would be
        // cancelled by Envoy when the context is destroyed, right after this log callback.
        if !host::set_effective_context(vm.root_context_id) {
            return;
        }
        let config = &vm.config;
        // To every replica: only the one that decided knows the ticket (the others
        // remember it briefly as released, see `kvroute_api::TICKET_HEADER`).
        for _ in 0..config.indexer_replicas {
            if host::post_json(
                &config.indexer_cluster,
                &config.indexer_authority,
                &config.complete_path,
                &body,
                config.indexer_authorization.as_deref(),
                &[],
                config
                    .call_timeout
                    .max(std::time::Duration::from_millis(1000)),
            )
            .is_ok()
            {
                vm.metrics.completion_sent();
            }
        }
        let _ = host::set_effective_context(self.context_id);
    }
}

/// The only field read before deciding how to route: unknown fields are ignored.
#[derive(serde::Deserialize)]
struct BodyHead {
    #[serde(default)]
    model: Option<String>,
}

/// Below this much of the call timeout left, a second route call is not worth making.
const MIN_RETRY_MICROS: u64 = 5_000;

fn timeout_micros(vm: &VmState) -> u64 {
    (vm.config.call_timeout.as_micros() as u64).saturating_sub(1000)
}

impl Context for KvRouteStream {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some(vm) = self.vm.clone() else {
            self.calls.clear();
            self.phase = Phase::Pass;
            host::resume_request();
            return;
        };
        // A call no longer awaited was released when it stopped being awaited.
        let Some(at) = self.calls.iter().position(|c| c.token == token_id) else {
            if let Some(at) = self.released.iter().position(|c| c.token == token_id) {
                let call = self.released.swap_remove(at);
                self.release_answered(&vm, call, body_size);
            }
            return;
        };
        let call = self.calls.swap_remove(at);
        if self.phase != Phase::AwaitingIndexer {
            self.release(&vm, call);
            return;
        }
        let status = host::call_response_status();
        let body = host::buffer(BufferType::HttpCallResponseBody, body_size).unwrap_or_default();
        let outcome = classify_answer(status, &body, &vm.config.allowed_endpoints);
        if outcome
            .as_ref()
            .is_err_and(|reason| reason.may_leave_a_decision())
        {
            self.release(&vm, call);
        }
        match outcome {
            Ok(answer) => match host::set_original_dst(&answer.endpoint) {
                Ok(()) => {
                    vm.metrics.routed(answer.matched_blocks as u64);
                    vm.metrics
                        .decision_time(host::micros_since(self.decision_started));
                    self.answer = Some(answer);
                    self.phase = Phase::Pass;
                }
                Err(status) => {
                    host::log(
                        LogLevel::Warn,
                        &format!(
                            "kvroute: filter state refused for {:?}: {status:?}",
                            answer.endpoint
                        ),
                    );
                    self.send_completion(&vm, answer.ticket, false);
                    self.fail_open(FailOpenReason::FilterStateRefused);
                }
            },
            Err(FailOpenReason::EndpointNotAllowed) => {
                host::log(
                    LogLevel::Warn,
                    &format!(
                        "kvroute: not routed, the indexer's answer names an endpoint outside allowed_endpoints: {:?}",
                        String::from_utf8_lossy(&body[..body.len().min(200)])
                    ),
                );
                self.fail_open(FailOpenReason::EndpointNotAllowed)
            }
            Err(FailOpenReason::IndexerUnavailable)
                if status.is_none()
                    && host::micros_since(self.decision_started) >= timeout_micros(&vm) =>
            {
                // Envoy reports its own call timeout as a response without headers.
                self.fail_open(FailOpenReason::Timeout)
            }
            Err(FailOpenReason::IndexerUnavailable) => {
                if !self.calls.is_empty() {
                    // The retry's other call may still reach a live replica.
                    return;
                }
                if self.retry_route(&vm) {
                    vm.metrics.indexer_retry();
                    return;
                }
                self.fail_open(FailOpenReason::IndexerUnavailable)
            }
            Err(reason) => self.fail_open(reason),
        }
        // Routed or failed open: any other call's decision is for nothing.
        self.release_all(&vm);
        host::resume_request();
    }
}

/// Sends a route call naming a fresh random ticket for its decision; `None` if Envoy
/// refused to dispatch it (or no randomness: then the call is not worth a decision that
/// could not be released).
fn call_route(
    vm: &VmState,
    path: &str,
    body: &[u8],
    timeout: std::time::Duration,
) -> Option<RouteCall> {
    let ticket = getrandom::u64().ok().filter(|&t| t != 0)?;
    let config = &vm.config;
    let token = host::post_json(
        &config.indexer_cluster,
        &config.indexer_authority,
        path,
        body,
        config.indexer_authorization.as_deref(),
        &[(TICKET_HEADER, &ticket.to_string())],
        timeout,
    )
    .ok()?;
    Some(RouteCall { token, ticket })
}

impl HttpContext for KvRouteStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        // Whatever happens next (routed, fail open, not ours), a client's own destination
        // header never reaches a pod: only the route the filter picked sets it.
        host::remove_request_header(DESTINATION_HEADER);
        let Some(vm) = self.vm.clone() else {
            return Action::Continue;
        };
        let method = host::request_header(":method");
        let path = host::request_header(":path");
        let content_type = host::request_header("content-type");
        let content_length = host::request_header("content-length");
        let head = RequestHead {
            method: method.as_deref(),
            path: path.as_deref(),
            content_type: content_type.as_deref(),
            content_length: content_length.as_deref(),
            end_of_stream,
        };
        self.phase = match gate(&vm.config, &head) {
            Gate::Touch(_) if vm.unusable.is_some() => {
                vm.metrics.fail_open(FailOpenReason::ConfigInvalid);
                Phase::Pass
            }
            Gate::Touch(kind) => Phase::Buffering(kind),
            Gate::TooLarge => {
                vm.metrics.fail_open(FailOpenReason::BodyTooLarge);
                Phase::Pass
            }
            Gate::Pass => Phase::Pass,
        };
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Phase::Buffering(kind) = self.phase else {
            return Action::Continue;
        };
        let Some(vm) = self.vm.clone() else {
            return Action::Continue;
        };
        if body_size > vm.config.max_body_bytes {
            self.fail_open(FailOpenReason::BodyTooLarge);
            return Action::Continue;
        }
        self.buffered = body_size;
        if !end_of_stream {
            return Action::Pause;
        }
        self.decide(&vm, kind)
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        // A body followed by trailers (gRPC-style, HTTP/2) ends here, not in the body callback.
        let Phase::Buffering(kind) = self.phase else {
            return Action::Continue;
        };
        let Some(vm) = self.vm.clone() else {
            return Action::Continue;
        };
        self.decide(&vm, kind)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(vm) = &self.vm else {
            return Action::Continue;
        };
        if vm.config.debug_headers {
            if let Some(answer) = &self.answer {
                host::add_response_header("x-kvroute-endpoint", &answer.endpoint);
                let _ = host::add_response_header(
                    "x-kvroute-matched-blocks",
                    &answer.matched_blocks.to_string(),
                );
            }
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        let Some(vm) = self.vm.clone() else { return };
        if !vm.config.report_completion {
            return;
        }
        if let Some(ticket) = self.answer.as_ref().map(|a| a.ticket) {
            self.send_completion(&vm, ticket, false);
        }
        // The client left while the indexer was deciding.
        self.release_all(&vm);
    }
}
