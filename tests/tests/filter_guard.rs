//! What the filter refuses to do, in the real Envoy: send a request to an address that is
//! not a pod (whatever the indexer answers), or let a client's own destination header
//! reach a pod. Each refusal still serves the request (unrouted, through the fallback
//! route) and is counted.

use std::net::SocketAddr;

use kvroute_harness::backend::Backend;
use kvroute_harness::scripted_indexer::RouteScript;
use kvroute_harness::stack::{IndexerSpec, Stack, QWEN3_MODEL};

const DESTINATION_HEADER: &str = "x-gateway-destination-endpoint";

fn chat(i: usize) -> serde_json::Value {
    serde_json::json!({"model": QWEN3_MODEL, "messages": [{"role": "user", "content": format!("question {i}")}]})
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A server outside the pods' cluster, on its own loopback address.
fn outsider(rt: &tokio::runtime::Runtime, name: &str, last_octet: u8) -> Backend {
    Backend::start_with(
        rt,
        name,
        SocketAddr::from(([127, 0, 0, last_octet], 0)),
        None,
    )
    .expect("outsider")
}

#[test]
fn an_answer_naming_an_address_outside_the_allow_list_is_not_followed() {
    let rt = runtime();
    let rogue = outsider(&rt, "rogue", 99);
    let listed = outsider(&rt, "listed", 98);
    // The pods are on 127.0.0.1; `listed` is allowed by its exact ip:port, `rogue` by nothing.
    // The filter routes to `listed` (allowed) and refuses `rogue`; Envoy's override_host
    // policy then honours only hosts of the pods' cluster, so `listed`, not a pod, is not
    // reached either: both kinds of answer end on a pod.
    let stack = Stack::builder()
        .backends(2)
        .qwen3()
        .plugin(serde_json::json!({
            "tokenize_in": "indexer",
            "allowed_endpoints": ["127.0.0.1/32", listed.addr.to_string()],
        }))
        .indexer(IndexerSpec::Scripted(RouteScript::Cycle(vec![
            rogue.addr,
            listed.addr,
        ])))
        .start()
        .expect("stack");
    let n = 6;
    for i in 0..n {
        let r = stack.chat(&chat(i)).expect("request");
        assert_eq!(r.status, 200, "{}", stack.logs());
        let served = Stack::served_by(&r).expect("served");
        assert!(served.starts_with("backend-"), "request {i}: {served}");
        if i % 2 == 0 {
            // The indexer named the rogue: the request is served unrouted.
            assert!(r.header("x-kvroute-endpoint").is_none());
        }
    }
    assert_eq!(rogue.hit_count(), 0, "a request reached the rogue address");
    assert_eq!(
        listed.hit_count(),
        0,
        "a request reached a host outside the pods' cluster"
    );
    let refused = stack
        .envoy
        .filter_stat("kvroute_fail_open_endpoint_not_allowed")
        .expect("stat");
    assert_eq!(refused, (n / 2) as u64, "{}", stack.logs());
    assert_eq!(
        stack.envoy.filter_stat("kvroute_routed").expect("stat"),
        (n / 2) as u64
    );
    assert!(
        stack.envoy.log_tail().contains("outside allowed_endpoints"),
        "the refusal is logged"
    );
}

#[test]
fn without_an_allow_list_public_and_link_local_addresses_are_refused() {
    // The cloud metadata service and a public address: the default (private and loopback
    // ranges) refuses both, so nothing waits on a connection to them either.
    let stack = Stack::builder()
        .backends(2)
        .qwen3()
        .plugin(serde_json::json!({"tokenize_in": "indexer"}))
        .indexer(IndexerSpec::Scripted(RouteScript::Cycle(vec![
            SocketAddr::from(([169, 254, 169, 254], 80)),
            SocketAddr::from(([8, 8, 8, 8], 443)),
        ])))
        .start()
        .expect("stack");
    for i in 0..4 {
        let r = stack.chat(&chat(i)).expect("request");
        assert_eq!(r.status, 200, "{}", stack.logs());
        assert!(Stack::served_by(&r)
            .expect("served")
            .starts_with("backend-"));
    }
    assert_eq!(
        stack
            .envoy
            .filter_stat("kvroute_fail_open_endpoint_not_allowed")
            .expect("stat"),
        4
    );
}

#[test]
fn a_client_destination_header_never_reaches_a_pod() {
    let stack = Stack::builder()
        .backends(3)
        .qwen3()
        .plugin(serde_json::json!({"tokenize_in": "indexer"}))
        .indexer(IndexerSpec::Scripted(RouteScript::CycleBackends))
        .start()
        .expect("stack");
    let forged = "10.9.9.9:8000";
    let forge = [
        ("content-type", "application/json"),
        (DESTINATION_HEADER, forged),
    ];
    let unknown_model = serde_json::json!({"model": "not-configured", "messages": [{"role": "user", "content": "hi"}]});
    let cases: [(&str, &str, Vec<u8>, bool); 4] = [
        // Routed: the route table sets the header to the filter's choice.
        (
            "POST",
            "/v1/chat/completions",
            chat(0).to_string().into_bytes(),
            true,
        ),
        // Touched, then failed open (model not configured).
        (
            "POST",
            "/v1/chat/completions",
            unknown_model.to_string().into_bytes(),
            false,
        ),
        // Never touched: another path, and a GET.
        ("POST", "/v1/embeddings", b"{}".to_vec(), false),
        ("GET", "/v1/models", Vec::new(), false),
    ];
    for (method, path, body, routed) in cases {
        let r = stack.send(method, path, &forge, &body).expect("request");
        assert_eq!(r.status, 200, "{method} {path}: {}", stack.logs());
        let served = Stack::served_by(&r).expect("served");
        let backend = stack
            .backends
            .iter()
            .find(|b| b.name == served)
            .expect("a pod served it");
        let hit = backend
            .hits()
            .into_iter()
            .rfind(|h| h.path == path)
            .expect("hit");
        let seen: Vec<&str> = hit
            .headers
            .iter()
            .filter(|(k, _)| k == DESTINATION_HEADER)
            .map(|(_, v)| v.as_str())
            .collect();
        if routed {
            assert_eq!(seen, vec![backend.addr.to_string().as_str()], "{path}");
        } else {
            assert!(seen.is_empty(), "{method} {path}: the pod saw {seen:?}");
        }
    }
}
