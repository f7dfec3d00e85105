//! The indexer's HTTP API as the filter speaks it: the route request it sends and the
//! classification of whatever comes back (an answer, or the fail-open reason). Pure, so
//! every status/body combination is unit-tested natively.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::fail_open::FailOpenReason;

/// `POST /v1/route` body.
#[derive(Debug, Serialize)]
pub struct RouteRequest<'a> {
    pub model: &'a str,
    pub block_hashes: &'a [u64],
    /// Only sent in estimate mode; the indexer then scores from its routing history.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<&'a str>,
}

/// `POST /v1/route/complete` body.
#[derive(Debug, Serialize)]
pub struct CompleteRequest {
    pub ticket: u64,
}

/// The parts of a 200 answer the filter uses (candidates are for humans and logs).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RouteAnswer {
    pub endpoint: String,
    #[serde(default)]
    pub matched_blocks: u64,
    #[serde(default)]
    pub ticket: Option<u64>,
}

/// Turn the indexer's status and body into an answer or a fail-open reason.
/// `status` is `None` when Envoy delivered no response headers at all (call failed).
pub fn classify_answer(status: Option<u16>, body: &[u8]) -> Result<RouteAnswer, FailOpenReason> {
    let from_indexer = serde_json::from_slice::<serde_json::Value>(body)
        .map(|v| v.get("error").is_some())
        .unwrap_or(false);
    match status {
        None => Err(FailOpenReason::IndexerUnavailable),
        Some(200) => {
            let answer: RouteAnswer =
                serde_json::from_slice(body).map_err(|_| FailOpenReason::BadAnswer)?;
            if answer.endpoint.parse::<SocketAddr>().is_err() {
                return Err(FailOpenReason::BadAnswer);
            }
            Ok(answer)
        }
        Some(404) if from_indexer => Err(FailOpenReason::UnknownModel),
        Some(503) if from_indexer => Err(FailOpenReason::NoPod),
        // Envoy's own local replies: upstream request timeout, and no healthy upstream /
        // connection failure (no JSON error body from the indexer).
        Some(504) => Err(FailOpenReason::Timeout),
        Some(503) => Err(FailOpenReason::IndexerUnavailable),
        Some(_) => Err(FailOpenReason::IndexerError),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_200_with_an_ip_port_endpoint_is_an_answer() {
        let a = classify_answer(
            Some(200),
            br#"{"endpoint":"10.0.0.5:8000","matched_blocks":93,"ticket":7,"candidates":[]}"#,
        )
        .expect("answer");
        assert_eq!(a.endpoint, "10.0.0.5:8000");
        assert_eq!(a.matched_blocks, 93);
        assert_eq!(a.ticket, Some(7));
    }

    #[test]
    fn every_failure_maps_to_its_reason() {
        use FailOpenReason::*;
        assert_eq!(classify_answer(None, b""), Err(IndexerUnavailable));
        assert_eq!(classify_answer(Some(200), b"{"), Err(BadAnswer));
        assert_eq!(
            classify_answer(Some(200), br#"{"endpoint":"pod-a"}"#),
            Err(BadAnswer)
        );
        assert_eq!(
            classify_answer(Some(404), br#"{"error":"unknown model"}"#),
            Err(UnknownModel)
        );
        assert_eq!(
            classify_answer(Some(503), br#"{"error":"no live pod"}"#),
            Err(NoPod)
        );
        assert_eq!(
            classify_answer(Some(503), b"no healthy upstream"),
            Err(IndexerUnavailable)
        );
        assert_eq!(
            classify_answer(Some(504), b"upstream request timeout"),
            Err(Timeout)
        );
        assert_eq!(
            classify_answer(Some(400), br#"{"error":"bad"}"#),
            Err(IndexerError)
        );
        assert_eq!(classify_answer(Some(404), b"not found"), Err(IndexerError));
    }

    #[test]
    fn route_request_serializes_as_the_documented_json() {
        let r = RouteRequest {
            model: "m",
            block_hashes: &[1, u64::MAX],
            mode: None,
        };
        assert_eq!(
            serde_json::to_string(&r).expect("json"),
            r#"{"model":"m","block_hashes":[1,18446744073709551615]}"#
        );
    }
}
