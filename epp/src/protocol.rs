//! The endpoint picker protocol's wire contract (Gateway API Inference Extension,
//! `docs/proposals/004-endpoint-picker-protocol`, v1.0.0), defined once: header and
//! metadata names, and the ext_proc messages kvroute answers with. Pure: builds and reads
//! protobuf values, no I/O.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption, Metadata};
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::BodySendMode;
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::ProcessingMode;
use envoy_types::pb::envoy::r#type::v3::{HttpStatus, StatusCode};
use envoy_types::pb::envoy::service::ext_proc::v3::{
    body_mutation, processing_response, BodyMutation, BodyResponse, CommonResponse, HeaderMutation,
    HeadersResponse, HttpHeaders, ImmediateResponse, ProcessingResponse, StreamedBodyResponse,
    TrailersResponse,
};
use envoy_types::pb::google::protobuf::{value, Struct, Value};

/// The protocol version implemented (docs/proposals/004-endpoint-picker-protocol).
pub const PROTOCOL_VERSION: &str = "v1.0.0";
/// Header (to the data plane) naming the picked endpoints, `ip:port[,ip:port...]`.
pub const DESTINATION_HEADER: &str = "x-gateway-destination-endpoint";
/// Dynamic metadata namespace of the picked endpoints (and of the served one).
pub const LB_NAMESPACE: &str = "envoy.lb";
/// Key of the picked endpoints in [`LB_NAMESPACE`] (same value as the header).
pub const DESTINATION_KEY: &str = "x-gateway-destination-endpoint";
/// Key of the endpoint that served the request, sent back by the data plane.
pub const SERVED_KEY: &str = "x-gateway-destination-endpoint-served";
/// Filter metadata namespace of the subset hint (data plane -> picker).
pub const SUBSET_NAMESPACE: &str = "envoy.lb.subset_hint";
/// Key of the subset hint: the endpoints the picker must choose among.
pub const SUBSET_KEY: &str = "x-gateway-destination-endpoint-subset";

/// A request header by name (lowercase), from `value` or, as Envoy sends it, `raw_value`.
pub fn header(headers: &HttpHeaders, name: &str) -> Option<String> {
    let map = headers.headers.as_ref()?;
    let h = map
        .headers
        .iter()
        .find(|h| h.key.eq_ignore_ascii_case(name))?;
    if h.raw_value.is_empty() {
        Some(h.value.clone())
    } else {
        Some(String::from_utf8_lossy(&h.raw_value).into_owned())
    }
}

/// The subset hint in a request's metadata context: `None` when absent (choose among all),
/// `Some(list)` when present (possibly empty: nothing is eligible). Entries that are not
/// strings are ignored.
pub fn subset_hint(metadata: Option<&Metadata>) -> Option<Vec<String>> {
    let ns = metadata?.filter_metadata.get(SUBSET_NAMESPACE)?;
    let v = ns.fields.get(SUBSET_KEY)?;
    Some(match &v.kind {
        Some(value::Kind::ListValue(list)) => list
            .values
            .iter()
            .filter_map(|v| match &v.kind {
                Some(value::Kind::StringValue(s)) => Some(s.trim().to_owned()),
                _ => None,
            })
            .collect(),
        // A comma-separated string is what the header form looks like; accept it too.
        Some(value::Kind::StringValue(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    })
}

/// The endpoint that served the request, when the data plane reports it.
pub fn served_endpoint(metadata: Option<&Metadata>) -> Option<String> {
    let ns = metadata?.filter_metadata.get(LB_NAMESPACE)?;
    match &ns.fields.get(SERVED_KEY)?.kind {
        Some(value::Kind::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

fn string_value(s: &str) -> Value {
    Value {
        kind: Some(value::Kind::StringValue(s.to_owned())),
    }
}

/// What the picker tells the data plane about one request's destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// These endpoints, best first (the data plane tries the next on retry).
    Endpoints(Vec<String>),
    /// No routing header: the data plane balances as it would without a picker.
    FailOpen,
}

/// The header mutation and dynamic metadata of a destination. Failing open also removes
/// a header the client may have sent itself: only the picker names the pod.
pub fn destination_mutation(dest: &Destination) -> (HeaderMutation, Option<Struct>) {
    match dest {
        Destination::Endpoints(endpoints) => {
            let joined = endpoints.join(",");
            let mutation = HeaderMutation {
                set_headers: vec![HeaderValueOption {
                    header: Some(HeaderValue {
                        key: DESTINATION_HEADER.to_owned(),
                        value: String::new(),
                        raw_value: joined.clone().into_bytes(),
                    }),
                    append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
                    ..Default::default()
                }],
                remove_headers: Vec::new(),
            };
            let inner = Struct {
                fields: HashMap::from([(DESTINATION_KEY.to_owned(), string_value(&joined))]),
            };
            let metadata = Struct {
                fields: HashMap::from([(
                    LB_NAMESPACE.to_owned(),
                    Value {
                        kind: Some(value::Kind::StructValue(inner)),
                    },
                )]),
            };
            (mutation, Some(metadata))
        }
        Destination::FailOpen => (
            HeaderMutation {
                set_headers: Vec::new(),
                remove_headers: vec![DESTINATION_HEADER.to_owned()],
            },
            None,
        ),
    }
}

fn common(mutation: Option<HeaderMutation>, body: Option<BodyMutation>) -> CommonResponse {
    CommonResponse {
        header_mutation: mutation,
        body_mutation: body,
        // The route may depend on the header just set (GIE gateways match on it).
        clear_route_cache: true,
        ..Default::default()
    }
}

/// A response of the given phase, nothing else set.
fn answer(response: processing_response::Response) -> ProcessingResponse {
    ProcessingResponse {
        response: Some(response),
        ..Default::default()
    }
}

/// A body answer for the request's or the response's phase.
fn body_answer(request: bool, body: BodyResponse) -> ProcessingResponse {
    answer(if request {
        processing_response::Response::RequestBody(body)
    } else {
        processing_response::Response::ResponseBody(body)
    })
}

/// The answer to `request_headers` carrying the destination (full-duplex mode, or a
/// request without a body).
pub fn request_headers_answer(dest: &Destination) -> ProcessingResponse {
    with_destination(dest, |common| {
        processing_response::Response::RequestHeaders(HeadersResponse {
            response: Some(common),
        })
    })
}

/// `answer` (to `request_headers`) telling Envoy not to send the body (`mode_override`,
/// honoured with the filter's `allow_mode_override`): for a body already known to be past
/// the limit. In `BUFFERED_PARTIAL`, Envoy 1.40 otherwise buffers to its limit and sends a
/// partial body; when the end of the stream arrives while that answer is pending, the
/// request hangs.
pub fn without_body(answer: ProcessingResponse) -> ProcessingResponse {
    ProcessingResponse {
        mode_override: Some(ProcessingMode {
            request_body_mode: BodySendMode::None as i32,
            ..Default::default()
        }),
        ..answer
    }
}

/// The answer to a buffered `request_body` carrying the destination (buffered modes: the
/// headers are still held, so they can change here).
pub fn request_body_answer(dest: &Destination) -> ProcessingResponse {
    with_destination(dest, |common| {
        processing_response::Response::RequestBody(BodyResponse {
            response: Some(common),
        })
    })
}

/// A phase's answer setting the destination header, with its dynamic metadata.
fn with_destination(
    dest: &Destination,
    phase: impl FnOnce(CommonResponse) -> processing_response::Response,
) -> ProcessingResponse {
    let (mutation, metadata) = destination_mutation(dest);
    ProcessingResponse {
        dynamic_metadata: metadata,
        ..answer(phase(common(Some(mutation), None)))
    }
}

/// Headers answered unchanged (continue).
pub fn headers_continue(request: bool) -> ProcessingResponse {
    let unchanged = HeadersResponse { response: None };
    answer(if request {
        processing_response::Response::RequestHeaders(unchanged)
    } else {
        processing_response::Response::ResponseHeaders(unchanged)
    })
}

/// A body chunk answered unchanged (buffered and streamed modes).
pub fn body_continue(request: bool) -> ProcessingResponse {
    body_answer(request, BodyResponse { response: None })
}

/// Body bytes handed back in full-duplex mode (where the picker holds the body and must
/// return every byte of it).
pub fn body_streamed(request: bool, body: Vec<u8>, end_of_stream: bool) -> ProcessingResponse {
    let streamed = BodyResponse {
        response: Some(CommonResponse {
            body_mutation: Some(BodyMutation {
                mutation: Some(body_mutation::Mutation::StreamedResponse(
                    StreamedBodyResponse {
                        body,
                        end_of_stream,
                        ..Default::default()
                    },
                )),
            }),
            ..Default::default()
        }),
    };
    body_answer(request, streamed)
}

/// Trailers answered unchanged.
pub fn trailers_continue(request: bool) -> ProcessingResponse {
    let unchanged = TrailersResponse {
        header_mutation: None,
    };
    answer(if request {
        processing_response::Response::RequestTrailers(unchanged)
    } else {
        processing_response::Response::ResponseTrailers(unchanged)
    })
}

/// The protocol's answer when the subset hint leaves no eligible endpoint: 503.
pub fn unavailable(details: &str) -> ProcessingResponse {
    answer(processing_response::Response::ImmediateResponse(
        ImmediateResponse {
            status: Some(HttpStatus {
                code: StatusCode::ServiceUnavailable as i32,
            }),
            body: format!("{{\"error\":{details:?}}}").into_bytes(),
            details: "kvroute_no_eligible_endpoint".to_owned(),
            ..Default::default()
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::ListValue;

    fn subset_metadata(v: Value) -> Metadata {
        Metadata {
            filter_metadata: HashMap::from([(
                SUBSET_NAMESPACE.to_owned(),
                Struct {
                    fields: HashMap::from([(SUBSET_KEY.to_owned(), v)]),
                },
            )]),
            ..Default::default()
        }
    }

    #[test]
    fn the_subset_hint_is_read_as_a_list_or_a_comma_string() {
        assert_eq!(subset_hint(None), None);
        assert_eq!(subset_hint(Some(&Metadata::default())), None);
        let list = subset_metadata(Value {
            kind: Some(value::Kind::ListValue(ListValue {
                values: vec![
                    string_value("10.0.0.1:8000"),
                    string_value(" 10.0.0.2:8000 "),
                ],
            })),
        });
        assert_eq!(
            subset_hint(Some(&list)),
            Some(vec!["10.0.0.1:8000".to_owned(), "10.0.0.2:8000".to_owned()])
        );
        let joined = subset_metadata(string_value("10.0.0.1:8000, 10.0.0.3:8000"));
        assert_eq!(
            subset_hint(Some(&joined)),
            Some(vec!["10.0.0.1:8000".to_owned(), "10.0.0.3:8000".to_owned()])
        );
        // Present but empty: nothing is eligible (the protocol's 503), not "no hint".
        let empty = subset_metadata(Value {
            kind: Some(value::Kind::ListValue(ListValue { values: vec![] })),
        });
        assert_eq!(subset_hint(Some(&empty)), Some(vec![]));
    }

    #[test]
    fn header_and_metadata_carry_the_same_endpoints() {
        let dest = Destination::Endpoints(vec!["10.0.0.1:8000".into(), "10.0.0.2:8000".into()]);
        let (mutation, metadata) = destination_mutation(&dest);
        let h = mutation.set_headers[0].header.as_ref().expect("header");
        assert_eq!(h.key, DESTINATION_HEADER);
        assert_eq!(h.raw_value, b"10.0.0.1:8000,10.0.0.2:8000");
        let lb = &metadata.expect("metadata").fields[LB_NAMESPACE];
        let Some(value::Kind::StructValue(inner)) = &lb.kind else {
            panic!("namespace is a struct")
        };
        assert_eq!(
            inner.fields[DESTINATION_KEY].kind,
            Some(value::Kind::StringValue(
                "10.0.0.1:8000,10.0.0.2:8000".into()
            ))
        );
        let (open, none) = destination_mutation(&Destination::FailOpen);
        assert!(open.set_headers.is_empty() && none.is_none());
        assert_eq!(open.remove_headers, vec![DESTINATION_HEADER.to_owned()]);
    }
}
