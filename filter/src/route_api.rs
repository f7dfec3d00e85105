//! The indexer's answers as the filter classifies them: a route, or the fail-open reason.
//! The bodies themselves are the contract in `kvroute-api`, which the indexer uses too.
//! Pure, so every status/body combination is unit-tested natively.

use std::net::SocketAddr;

use kvroute_api::{ErrorAnswer, RouteAnswer};

use crate::allow_list::AllowList;
use crate::fail_open::FailOpenReason;

/// Turn the indexer's status and body into an answer or a fail-open reason.
/// `status` is `None` when Envoy delivered no response headers at all (call failed). An
/// endpoint outside `allowed` is refused: the filter never sends a request elsewhere.
pub fn classify_answer(
    status: Option<u16>,
    body: &[u8],
    allowed: &AllowList,
) -> Result<RouteAnswer, FailOpenReason> {
    let from_indexer = serde_json::from_slice::<ErrorAnswer>(body).is_ok();
    match status {
        None => Err(FailOpenReason::IndexerUnavailable),
        Some(200) => {
            let answer: RouteAnswer =
                serde_json::from_slice(body).map_err(|_| FailOpenReason::BadAnswer)?;
            if answer.endpoint.parse::<SocketAddr>().is_err() {
                return Err(FailOpenReason::BadAnswer);
            }
            if !allowed.allows(&answer.endpoint) {
                return Err(FailOpenReason::EndpointNotAllowed);
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

    fn any() -> AllowList {
        AllowList::parse(&["0.0.0.0/0", "::/0"]).expect("everything")
    }

    #[test]
    fn an_endpoint_outside_the_allow_list_is_refused() {
        let body = br#"{"endpoint":"169.254.169.254:80","dp_rank":0,"matched_blocks":1,"ticket":1,"reason":"cache_hit","candidates":[]}"#;
        assert_eq!(
            classify_answer(Some(200), body, &AllowList::default_ranges()),
            Err(FailOpenReason::EndpointNotAllowed)
        );
        assert!(classify_answer(Some(200), body, &any()).is_ok());
    }

    #[test]
    fn a_200_with_an_ip_port_endpoint_is_an_answer() {
        let a = classify_answer(
            Some(200),
            br#"{"endpoint":"10.0.0.5:8000","dp_rank":0,"matched_blocks":93,"ticket":7,"reason":"cache_hit","candidates":[]}"#,
            &any()
        )
        .expect("answer");
        assert_eq!(a.endpoint, "10.0.0.5:8000");
        assert_eq!(a.matched_blocks, 93);
        assert_eq!(a.ticket, 7);
    }

    #[test]
    fn every_failure_maps_to_its_reason() {
        use FailOpenReason::*;
        assert_eq!(classify_answer(None, b"", &any()), Err(IndexerUnavailable));
        assert_eq!(classify_answer(Some(200), b"{", &any()), Err(BadAnswer));
        assert_eq!(
            classify_answer(
                Some(200),
                br#"{"endpoint":"pod-a","dp_rank":0,"matched_blocks":0,"ticket":1,"reason":"spill","candidates":[]}"#,
                &any()
            ),
            Err(BadAnswer)
        );
        assert_eq!(
            classify_answer(Some(404), br#"{"error":"unknown model"}"#, &any()),
            Err(UnknownModel)
        );
        assert_eq!(
            classify_answer(Some(503), br#"{"error":"no live pod"}"#, &any()),
            Err(NoPod)
        );
        assert_eq!(
            classify_answer(Some(503), b"no healthy upstream", &any()),
            Err(IndexerUnavailable)
        );
        assert_eq!(
            classify_answer(Some(504), b"upstream request timeout", &any()),
            Err(Timeout)
        );
        assert_eq!(
            classify_answer(Some(400), br#"{"error":"bad"}"#, &any()),
            Err(IndexerError)
        );
        assert_eq!(
            classify_answer(Some(404), b"not found", &any()),
            Err(IndexerError)
        );
    }
}
