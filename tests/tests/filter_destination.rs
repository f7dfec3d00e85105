//! The destination mechanics in the real Envoy: the filter's answer becomes the
//! `ORIGINAL_DST` filter state of *that request*, so requests sent one after another on a
//! single kept-alive client connection each reach the pod chosen for them; the chosen pod
//! is visible to the client (debug headers) and to the engine (the GIE header); the
//! indexer hears about every completed request (fire and forget).

use std::time::Duration;

use kvroute_harness::http::Connection;
use kvroute_harness::process::wait_until;
use kvroute_harness::scripted_indexer::RouteScript;
use kvroute_harness::stack::{IndexerSpec, Stack, QWEN3_MODEL};

#[test]
fn each_request_on_one_keep_alive_connection_goes_to_its_own_pod() {
    let stack = Stack::builder()
        .backends(3)
        .qwen3()
        .plugin(serde_json::json!({"tokenize_in": "indexer"}))
        .indexer(IndexerSpec::Scripted(RouteScript::CycleBackends))
        .start()
        .expect("stack");
    let mut conn = Connection::open(stack.listen()).expect("connect");
    let n = 9;
    for i in 0..n {
        let body = serde_json::json!({"model": QWEN3_MODEL, "messages": [{"role": "user", "content": format!("q{i}")}]});
        let r = conn
            .send(
                "POST",
                "/v1/chat/completions",
                &[("content-type", "application/json")],
                body.to_string().as_bytes(),
            )
            .expect("request");
        assert_eq!(r.status, 200, "{}", stack.logs());
        let expected = &stack.backends[i % 3];
        assert_eq!(
            Stack::served_by(&r).expect("served"),
            expected.name,
            "request {i}"
        );
        assert_eq!(
            r.header("x-kvroute-endpoint"),
            Some(expected.addr.to_string().as_str())
        );
        assert_eq!(
            r.header("x-kvroute-matched-blocks"),
            Some((i + 1).to_string().as_str())
        );
        let hit = expected.hits().pop().expect("hit");
        let gie = hit
            .headers
            .iter()
            .find(|(k, _)| k == "x-gateway-destination-endpoint")
            .map(|(_, v)| v.clone());
        assert_eq!(
            gie.as_deref(),
            Some(expected.addr.to_string().as_str()),
            "GIE header upstream"
        );
    }
    assert_eq!(
        stack.envoy.filter_stat("kvroute_routed").expect("stat"),
        n as u64
    );
    // One completion per routed request, carrying its ticket.
    let indexer = stack.scripted_indexer().expect("scripted indexer");
    let completed = || {
        indexer
            .calls()
            .iter()
            .filter(|c| c.path == "/v1/route/complete")
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(5), || completed() == n),
        "completions: {}",
        completed()
    );
    let mut tickets: Vec<u64> = indexer
        .calls()
        .iter()
        .filter(|c| c.path == "/v1/route/complete")
        .filter_map(|c| {
            let body = serde_json::from_slice::<serde_json::Value>(&c.body).ok()?;
            // A request that ran to its end is a plain completion, not a given-up call.
            assert!(body.get("abandoned").is_none(), "{body}");
            body.get("ticket")?.as_u64()
        })
        .collect();
    tickets.sort_unstable();
    // Each route call named its own ticket, and the answer's (that one) is released.
    let mut named: Vec<u64> = indexer
        .calls()
        .iter()
        .filter(|c| c.path != "/v1/route/complete")
        .map(|c| c.ticket.expect("a route call names its ticket"))
        .collect();
    named.sort_unstable();
    named.dedup();
    assert_eq!(named.len(), n, "distinct tickets");
    assert_eq!(tickets, named);
}
