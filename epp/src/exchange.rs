//! One ext_proc stream (one HTTP request) as a state machine: Envoy's messages in, the
//! picker's answers out, with the pick itself behind the [`Picker`] trait. Pure (no I/O,
//! no clock), so every branch is unit-tested; `service` drives it from the gRPC stream.
//!
//! Body modes (Envoy's `processing_mode.request_body_mode`, told by `protocol_config`):
//! - `BUFFERED` / `BUFFERED_PARTIAL` (kvroute's own Envoy configuration): headers are
//!   answered at once, Envoy holds them and sends the whole body; the body's answer
//!   carries the destination. A partial body (over Envoy's buffer limit) fails open.
//! - `FULL_DUPLEX_STREAMED` (what GIE gateways configure): the picker holds the headers'
//!   answer until the body is complete, then answers the headers with the destination and
//!   hands every body byte back. Past `max_body_bytes` it stops holding: headers answered
//!   without a destination, body streamed through.
//! - `STREAMED` / `NONE`: the headers leave before the body is seen; nothing to route on,
//!   every message is answered unchanged.
//!
//! Whatever the body is (empty, not JSON, an unknown model, too large), the answer is the
//! protocol's fail-open one: no destination header, the request continues.

use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::BodySendMode;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    processing_request, ProcessingRequest, ProcessingResponse,
};
use kvroute_blockhash::request::Endpoint;

use crate::protocol::{self, Destination};

/// Why a request was not routed (metric label and log field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOpen {
    /// Not a POST to an endpoint kvroute hashes (`/v1/chat/completions`, ...).
    NotRoutable,
    /// No body.
    EmptyBody,
    /// More than the picker holds (or Envoy buffered only part of it).
    Oversized,
    /// The body cannot be hashed (not JSON, no prompt, no model).
    Malformed,
    /// A model the indexer has no tokenizer for.
    UnknownModel,
    /// The indexer knows no live engine of the model.
    NoLivePod,
    /// The body mode sends headers upstream before the body (`STREAMED`, `NONE`).
    BodyNotHeld,
}

impl FailOpen {
    pub fn label(self) -> &'static str {
        match self {
            FailOpen::NotRoutable => "fail_open_not_routable",
            FailOpen::EmptyBody => "fail_open_empty_body",
            FailOpen::Oversized => "fail_open_oversized",
            FailOpen::Malformed => "fail_open_malformed",
            FailOpen::UnknownModel => "fail_open_unknown_model",
            FailOpen::NoLivePod => "fail_open_no_live_pod",
            FailOpen::BodyNotHeld => "fail_open_body_not_held",
        }
    }
}

/// The picker's decision for one body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    /// Endpoints best first; `ticket` counts the request in flight until completed.
    Routed {
        endpoints: Vec<String>,
        ticket: u64,
    },
    FailOpen(FailOpen),
    /// The subset hint left no eligible endpoint: the protocol's 503.
    NoEligible,
}

/// The decision behind the protocol.
pub trait Picker {
    /// Choose for `body` sent to `path`, among `subset` when the data plane restricts it.
    fn pick(&self, path: &str, body: &[u8], subset: Option<&[String]>) -> Pick;
    /// The request behind `ticket` finished.
    fn complete(&self, ticket: u64);
}

/// What the stream's outcome was, for metrics and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Routed(Vec<String>),
    FailOpen(FailOpen),
    NoEligible,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for request headers.
    Start,
    /// Holding the body until complete (buffered modes: headers already answered).
    Collecting,
    /// The destination is decided (or fail-open): answer everything else unchanged.
    Done,
}

pub struct Exchange {
    max_body_bytes: usize,
    request_mode: BodySendMode,
    response_mode: BodySendMode,
    phase: Phase,
    path: String,
    body: Vec<u8>,
    subset: Option<Vec<String>>,
    ticket: Option<u64>,
    outcome: Option<Outcome>,
    served: Option<String>,
}

fn mode(raw: i32) -> BodySendMode {
    BodySendMode::try_from(raw).unwrap_or(BodySendMode::None)
}

impl Exchange {
    pub fn new(max_body_bytes: usize) -> Self {
        Self {
            max_body_bytes,
            // Envoy's default processing mode, until `protocol_config` says otherwise.
            request_mode: BodySendMode::None,
            response_mode: BodySendMode::None,
            phase: Phase::Start,
            path: String::new(),
            body: Vec::new(),
            subset: None,
            ticket: None,
            outcome: None,
            served: None,
        }
    }

    /// How the request ended up (once decided).
    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    /// The endpoint the data plane reported as serving the request, if it did.
    pub fn served(&self) -> Option<&str> {
        self.served.as_deref()
    }

    fn duplex(&self) -> bool {
        self.request_mode == BodySendMode::FullDuplexStreamed
    }

    /// Answers to one message from Envoy (zero, one or several, in order).
    pub fn on_message(
        &mut self,
        msg: ProcessingRequest,
        picker: &dyn Picker,
    ) -> Vec<ProcessingResponse> {
        if let Some(pc) = &msg.protocol_config {
            self.request_mode = mode(pc.request_body_mode);
            self.response_mode = mode(pc.response_body_mode);
        }
        if let Some(served) = protocol::served_endpoint(msg.metadata_context.as_ref()) {
            self.served = Some(served);
        }
        use processing_request::Request as R;
        match msg.request {
            Some(R::RequestHeaders(h)) => {
                self.subset = protocol::subset_hint(msg.metadata_context.as_ref());
                self.path = protocol::header(&h, ":path").unwrap_or_default();
                let method = protocol::header(&h, ":method").unwrap_or_default();
                let routable = method.eq_ignore_ascii_case("POST")
                    && Endpoint::from_path(&self.path).is_some();
                if !routable {
                    return vec![self.fail_open(FailOpen::NotRoutable, true)];
                }
                if h.end_of_stream {
                    return vec![self.fail_open(FailOpen::EmptyBody, true)];
                }
                let declared = protocol::header(&h, "content-length")
                    .and_then(|v| v.trim().parse::<usize>().ok());
                match self.request_mode {
                    BodySendMode::Buffered | BodySendMode::BufferedPartial
                        if declared.is_some_and(|n| n > self.max_body_bytes) =>
                    {
                        // Known too big before a byte of it: never held, never sent here.
                        vec![protocol::without_body(
                            self.fail_open(FailOpen::Oversized, true),
                        )]
                    }
                    BodySendMode::Buffered | BodySendMode::BufferedPartial => {
                        self.phase = Phase::Collecting;
                        vec![protocol::headers_continue(true)]
                    }
                    BodySendMode::FullDuplexStreamed => {
                        // The headers' answer waits for the body.
                        self.phase = Phase::Collecting;
                        Vec::new()
                    }
                    _ => vec![self.fail_open(FailOpen::BodyNotHeld, true)],
                }
            }
            Some(R::RequestBody(b)) => self.on_request_body(b.body, b.end_of_stream, picker),
            Some(R::RequestTrailers(_)) => {
                let mut out = Vec::new();
                if self.duplex() && self.phase == Phase::Collecting {
                    // Trailers end the body: decide on what came, hand it back.
                    out.push(self.decide(picker, true));
                    out.push(protocol::body_streamed(
                        true,
                        std::mem::take(&mut self.body),
                        false,
                    ));
                }
                out.push(protocol::trailers_continue(true));
                out
            }
            Some(R::ResponseHeaders(h)) => {
                if h.end_of_stream {
                    self.complete(picker);
                }
                vec![protocol::headers_continue(false)]
            }
            Some(R::ResponseBody(b)) => {
                if b.end_of_stream {
                    self.complete(picker);
                }
                if self.response_mode == BodySendMode::FullDuplexStreamed {
                    vec![protocol::body_streamed(false, b.body, b.end_of_stream)]
                } else {
                    vec![protocol::body_continue(false)]
                }
            }
            Some(R::ResponseTrailers(_)) => {
                self.complete(picker);
                vec![protocol::trailers_continue(false)]
            }
            None => Vec::new(),
        }
    }

    fn on_request_body(
        &mut self,
        chunk: Vec<u8>,
        end: bool,
        picker: &dyn Picker,
    ) -> Vec<ProcessingResponse> {
        let duplex = self.duplex();
        if self.phase != Phase::Collecting {
            // Decided already (or never routable): pass through.
            return vec![if duplex {
                protocol::body_streamed(true, chunk, end)
            } else {
                protocol::body_continue(true)
            }];
        }
        if !duplex {
            // Buffered: this is the whole body, unless Envoy's buffer overflowed
            // (BUFFERED_PARTIAL sends what it holds without end of stream).
            if !end || chunk.len() > self.max_body_bytes {
                return vec![self.fail_open(FailOpen::Oversized, false)];
            }
            self.body = chunk;
            return vec![self.decide(picker, false)];
        }
        if self.body.len() + chunk.len() > self.max_body_bytes {
            // Stop holding: no destination, and every byte held so far goes on.
            let mut held = std::mem::take(&mut self.body);
            held.extend_from_slice(&chunk);
            return vec![
                self.fail_open(FailOpen::Oversized, true),
                protocol::body_streamed(true, held, end),
            ];
        }
        self.body.extend_from_slice(&chunk);
        if !end {
            return Vec::new();
        }
        let headers = self.decide(picker, true);
        vec![
            headers,
            protocol::body_streamed(true, std::mem::take(&mut self.body), true),
        ]
    }

    /// Pick for the held body; the answer goes on the headers (duplex) or the body.
    fn decide(&mut self, picker: &dyn Picker, on_headers: bool) -> ProcessingResponse {
        if self.body.is_empty() {
            return self.fail_open(FailOpen::EmptyBody, on_headers);
        }
        match picker.pick(&self.path, &self.body, self.subset.as_deref()) {
            Pick::Routed { endpoints, ticket } => {
                self.phase = Phase::Done;
                self.ticket = Some(ticket);
                self.outcome = Some(Outcome::Routed(endpoints.clone()));
                let dest = Destination::Endpoints(endpoints);
                if on_headers {
                    protocol::request_headers_answer(&dest)
                } else {
                    protocol::request_body_answer(&dest)
                }
            }
            Pick::FailOpen(why) => self.fail_open(why, on_headers),
            Pick::NoEligible => {
                self.phase = Phase::Done;
                self.outcome = Some(Outcome::NoEligible);
                protocol::unavailable("no endpoint of the subset hint is eligible")
            }
        }
    }

    fn fail_open(&mut self, why: FailOpen, on_headers: bool) -> ProcessingResponse {
        self.phase = Phase::Done;
        self.outcome = Some(Outcome::FailOpen(why));
        if on_headers {
            protocol::request_headers_answer(&Destination::FailOpen)
        } else {
            protocol::request_body_answer(&Destination::FailOpen)
        }
    }

    /// The response ended: the decision stops counting as load.
    fn complete(&mut self, picker: &dyn Picker) {
        if let Some(ticket) = self.ticket.take() {
            picker.complete(ticket);
        }
    }

    /// The stream closed (request done, reset or cancelled): release what is still held.
    pub fn finish(&mut self, picker: &dyn Picker) {
        self.complete(picker);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
    use envoy_types::pb::envoy::service::ext_proc::v3::{
        processing_response::Response as Out, HttpBody, HttpHeaders, HttpTrailers,
        ProtocolConfiguration,
    };

    /// A pick as called: path, body, subset.
    type PickCall = (String, Vec<u8>, Option<Vec<String>>);

    /// Records calls; routes any body containing "route" to two endpoints.
    #[derive(Default)]
    struct Recorder {
        picks: RefCell<Vec<PickCall>>,
        completed: RefCell<Vec<u64>>,
    }

    impl Picker for Recorder {
        fn pick(&self, path: &str, body: &[u8], subset: Option<&[String]>) -> Pick {
            self.picks.borrow_mut().push((
                path.to_owned(),
                body.to_vec(),
                subset.map(<[String]>::to_vec),
            ));
            match subset {
                Some([]) => Pick::NoEligible,
                _ if body.windows(5).any(|w| w == b"route") => Pick::Routed {
                    endpoints: vec!["10.0.0.1:8000".into(), "10.0.0.2:8000".into()],
                    ticket: 7,
                },
                _ => Pick::FailOpen(FailOpen::Malformed),
            }
        }
        fn complete(&self, ticket: u64) {
            self.completed.borrow_mut().push(ticket);
        }
    }

    fn cfg(mode: BodySendMode) -> ProtocolConfiguration {
        ProtocolConfiguration {
            request_body_mode: mode as i32,
            response_body_mode: BodySendMode::None as i32,
            ..Default::default()
        }
    }

    fn headers(
        method: &str,
        path: &str,
        end: bool,
        mode: Option<BodySendMode>,
    ) -> ProcessingRequest {
        let hv = |k: &str, v: &str| HeaderValue {
            key: k.into(),
            raw_value: v.as_bytes().to_vec(),
            ..Default::default()
        };
        ProcessingRequest {
            protocol_config: mode.map(cfg),
            request: Some(processing_request::Request::RequestHeaders(HttpHeaders {
                headers: Some(HeaderMap {
                    headers: vec![hv(":method", method), hv(":path", path)],
                }),
                end_of_stream: end,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn body(bytes: &[u8], end: bool) -> ProcessingRequest {
        ProcessingRequest {
            request: Some(processing_request::Request::RequestBody(HttpBody {
                body: bytes.to_vec(),
                end_of_stream: end,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn response_body(end: bool) -> ProcessingRequest {
        ProcessingRequest {
            request: Some(processing_request::Request::ResponseBody(HttpBody {
                body: b"data: x\n\n".to_vec(),
                end_of_stream: end,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    /// The destination header an answer sets, "" when it removes it (fail-open).
    fn destination(r: &ProcessingResponse) -> Option<String> {
        let common = match r.response.as_ref()? {
            Out::RequestHeaders(h) => h.response.as_ref()?,
            Out::RequestBody(b) => b.response.as_ref()?,
            _ => return None,
        };
        let m = common.header_mutation.as_ref()?;
        if m.remove_headers
            .iter()
            .any(|h| h == protocol::DESTINATION_HEADER)
        {
            return Some(String::new());
        }
        m.set_headers
            .iter()
            .filter_map(|o| o.header.as_ref())
            .find(|h| h.key == protocol::DESTINATION_HEADER)
            .map(|h| String::from_utf8_lossy(&h.raw_value).into_owned())
    }

    fn streamed_body(r: &ProcessingResponse) -> Option<(Vec<u8>, bool)> {
        let Some(Out::RequestBody(b)) = r.response.as_ref() else {
            return None;
        };
        match b.response.as_ref()?.body_mutation.as_ref()?.mutation.as_ref()? {
            envoy_types::pb::envoy::service::ext_proc::v3::body_mutation::Mutation::StreamedResponse(s) => {
                Some((s.body.clone(), s.end_of_stream))
            }
            _ => None,
        }
    }

    const CHAT: &str = "/v1/chat/completions";

    #[test]
    fn buffered_body_routes_on_the_body_answer_and_completes_at_the_response_end() {
        let p = Recorder::default();
        let mut x = Exchange::new(1 << 20);
        let out = x.on_message(
            headers("POST", CHAT, false, Some(BodySendMode::Buffered)),
            &p,
        );
        assert_eq!(out.len(), 1);
        assert!(matches!(out[0].response, Some(Out::RequestHeaders(_))));
        assert_eq!(destination(&out[0]), None, "headers pass unchanged");
        let out = x.on_message(body(b"{\"route\":1}", true), &p);
        assert_eq!(out.len(), 1);
        assert!(matches!(out[0].response, Some(Out::RequestBody(_))));
        assert_eq!(
            destination(&out[0]).as_deref(),
            Some("10.0.0.1:8000,10.0.0.2:8000")
        );
        assert!(out[0].dynamic_metadata.is_some());
        assert_eq!(p.picks.borrow()[0].0, CHAT);
        assert!(
            p.completed.borrow().is_empty(),
            "in flight until the response ends"
        );
        x.on_message(response_body(false), &p);
        assert!(p.completed.borrow().is_empty());
        x.on_message(response_body(true), &p);
        assert_eq!(*p.completed.borrow(), vec![7]);
        x.finish(&p);
        assert_eq!(*p.completed.borrow(), vec![7], "completed once");
    }

    #[test]
    fn a_stream_closed_before_the_response_ends_releases_the_ticket() {
        let p = Recorder::default();
        let mut x = Exchange::new(1 << 20);
        x.on_message(
            headers("POST", CHAT, false, Some(BodySendMode::Buffered)),
            &p,
        );
        x.on_message(body(b"route", true), &p);
        x.finish(&p);
        assert_eq!(*p.completed.borrow(), vec![7]);
    }

    #[test]
    fn full_duplex_holds_the_headers_then_hands_every_byte_back() {
        let p = Recorder::default();
        let mut x = Exchange::new(1 << 20);
        let out = x.on_message(
            headers("POST", CHAT, false, Some(BodySendMode::FullDuplexStreamed)),
            &p,
        );
        assert!(out.is_empty(), "headers' answer waits for the body");
        assert!(x.on_message(body(b"{\"ro", false), &p).is_empty());
        let out = x.on_message(body(b"ute\":1}", true), &p);
        assert_eq!(out.len(), 2);
        assert!(matches!(out[0].response, Some(Out::RequestHeaders(_))));
        assert_eq!(
            destination(&out[0]).as_deref(),
            Some("10.0.0.1:8000,10.0.0.2:8000")
        );
        assert_eq!(
            streamed_body(&out[1]),
            Some((b"{\"route\":1}".to_vec(), true))
        );
        assert_eq!(p.picks.borrow()[0].1, b"{\"route\":1}");
    }

    #[test]
    fn full_duplex_body_ended_by_trailers_is_decided_there() {
        let p = Recorder::default();
        let mut x = Exchange::new(1 << 20);
        x.on_message(
            headers("POST", CHAT, false, Some(BodySendMode::FullDuplexStreamed)),
            &p,
        );
        assert!(x.on_message(body(b"route", false), &p).is_empty());
        let trailers = ProcessingRequest {
            request: Some(processing_request::Request::RequestTrailers(
                HttpTrailers::default(),
            )),
            ..Default::default()
        };
        let out = x.on_message(trailers, &p);
        assert_eq!(out.len(), 3);
        assert!(destination(&out[0]).is_some_and(|d| !d.is_empty()));
        assert_eq!(streamed_body(&out[1]), Some((b"route".to_vec(), false)));
        assert!(matches!(out[2].response, Some(Out::RequestTrailers(_))));
    }

    #[test]
    fn oversized_bodies_fail_open_and_lose_no_byte() {
        let p = Recorder::default();
        // Full duplex: past the limit, headers go on without destination, bytes follow.
        let mut x = Exchange::new(8);
        x.on_message(
            headers("POST", CHAT, false, Some(BodySendMode::FullDuplexStreamed)),
            &p,
        );
        assert!(x.on_message(body(b"route", false), &p).is_empty());
        let out = x.on_message(body(b"route", false), &p);
        assert_eq!(destination(&out[0]).as_deref(), Some(""));
        assert_eq!(
            streamed_body(&out[1]),
            Some((b"routeroute".to_vec(), false))
        );
        let out = x.on_message(body(b"tail", true), &p);
        assert_eq!(streamed_body(&out[0]), Some((b"tail".to_vec(), true)));
        assert_eq!(x.outcome(), Some(&Outcome::FailOpen(FailOpen::Oversized)));
        // Buffered partial: Envoy's buffer overflowed (no end of stream).
        let mut x = Exchange::new(1 << 20);
        x.on_message(
            headers("POST", CHAT, false, Some(BodySendMode::BufferedPartial)),
            &p,
        );
        let out = x.on_message(body(b"route", false), &p);
        assert_eq!(destination(&out[0]).as_deref(), Some(""));
        // Buffered over the picker's own limit.
        let mut x = Exchange::new(4);
        x.on_message(
            headers("POST", CHAT, false, Some(BodySendMode::Buffered)),
            &p,
        );
        let out = x.on_message(body(b"route", true), &p);
        assert_eq!(destination(&out[0]).as_deref(), Some(""));
        assert!(p.picks.borrow().is_empty(), "never hashed");
    }

    #[test]
    fn a_declared_length_past_the_limit_fails_open_at_the_headers_without_the_body() {
        let p = Recorder::default();
        for (length, held) in [("9", false), ("8", true)] {
            let mut x = Exchange::new(8);
            let mut msg = headers("POST", CHAT, false, Some(BodySendMode::BufferedPartial));
            if let Some(processing_request::Request::RequestHeaders(h)) = &mut msg.request {
                h.headers.as_mut().unwrap().headers.push(HeaderValue {
                    key: "content-length".into(),
                    raw_value: length.as_bytes().to_vec(),
                    ..Default::default()
                });
            }
            let out = x.on_message(msg, &p);
            let body_mode = out[0].mode_override.as_ref().map(|m| m.request_body_mode);
            if held {
                assert_eq!(body_mode, None, "a body within the limit is asked for");
                assert_eq!(x.outcome(), None);
            } else {
                assert_eq!(body_mode, Some(BodySendMode::None as i32));
                assert_eq!(destination(&out[0]).as_deref(), Some(""));
                assert_eq!(x.outcome(), Some(&Outcome::FailOpen(FailOpen::Oversized)));
            }
        }
    }

    #[test]
    fn what_cannot_be_routed_fails_open_with_one_answer_per_message() {
        let p = Recorder::default();
        for (method, path, end, mode, why) in [
            (
                "GET",
                "/v1/models",
                true,
                BodySendMode::Buffered,
                FailOpen::NotRoutable,
            ),
            (
                "POST",
                "/healthz",
                false,
                BodySendMode::Buffered,
                FailOpen::NotRoutable,
            ),
            (
                "POST",
                CHAT,
                true,
                BodySendMode::Buffered,
                FailOpen::EmptyBody,
            ),
            (
                "POST",
                CHAT,
                false,
                BodySendMode::Streamed,
                FailOpen::BodyNotHeld,
            ),
            (
                "POST",
                CHAT,
                false,
                BodySendMode::None,
                FailOpen::BodyNotHeld,
            ),
        ] {
            let mut x = Exchange::new(1 << 20);
            let out = x.on_message(headers(method, path, end, Some(mode)), &p);
            assert_eq!(out.len(), 1, "{path} {mode:?}");
            assert_eq!(destination(&out[0]).as_deref(), Some(""), "{path} {mode:?}");
            assert_eq!(x.outcome(), Some(&Outcome::FailOpen(why)));
            if !end {
                let out = x.on_message(body(b"route", true), &p);
                assert_eq!(out.len(), 1);
                assert!(matches!(out[0].response, Some(Out::RequestBody(_))));
                assert_eq!(destination(&out[0]), None, "passes unchanged");
            }
        }
        // An empty final body in buffered mode; a malformed one (picker says so).
        for bytes in [&b""[..], b"{not json"] {
            let mut x = Exchange::new(1 << 20);
            x.on_message(
                headers("POST", CHAT, false, Some(BodySendMode::Buffered)),
                &p,
            );
            let out = x.on_message(body(bytes, true), &p);
            assert_eq!(destination(&out[0]).as_deref(), Some(""));
        }
        assert!(p.completed.borrow().is_empty());
    }

    #[test]
    fn an_empty_subset_is_the_protocols_503() {
        let p = Recorder::default();
        let mut x = Exchange::new(1 << 20);
        let mut h = headers("POST", CHAT, false, Some(BodySendMode::Buffered));
        h.metadata_context = Some(envoy_types::pb::envoy::config::core::v3::Metadata {
            filter_metadata: std::collections::HashMap::from([(
                protocol::SUBSET_NAMESPACE.to_owned(),
                envoy_types::pb::google::protobuf::Struct {
                    fields: std::collections::HashMap::from([(
                        protocol::SUBSET_KEY.to_owned(),
                        envoy_types::pb::google::protobuf::Value {
                            kind: Some(envoy_types::pb::google::protobuf::value::Kind::ListValue(
                                Default::default(),
                            )),
                        },
                    )]),
                },
            )]),
            ..Default::default()
        });
        x.on_message(h, &p);
        let out = x.on_message(body(b"route", true), &p);
        assert!(matches!(out[0].response, Some(Out::ImmediateResponse(_))));
        assert_eq!(p.picks.borrow()[0].2, Some(vec![]));
    }
}
