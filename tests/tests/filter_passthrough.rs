//! Requests the filter must not route reach a backend unchanged, through the real Envoy
//! with the real filter: malformed JSON, garbage bytes, a non-chat path, a GET, a 2 MB
//! body, a streaming request. Each untouched or unroutable request takes the fallback
//! route, and each fail-open reason is counted in the filter's metrics.

use kvroute_harness::scripted_indexer::RouteScript;
use kvroute_harness::stack::{IndexerSpec, Stack, QWEN3_MODEL};

fn stack() -> Stack {
    Stack::builder()
        .backends(3)
        .qwen3()
        // The indexer tokenizes in this stack, so these checks do not depend on the VM's
        // tokenizer; it answers 500 to anything routed, so a routed request would show up
        // as a fail-open count, not as a pod choice.
        .plugin(serde_json::json!({"tokenize_in": "indexer", "max_body_bytes": 1 << 20}))
        .indexer(IndexerSpec::Scripted(RouteScript::Status(
            500,
            "{\"error\":\"test\"}".into(),
        )))
        .start()
        .expect("stack")
}

#[test]
fn unroutable_and_foreign_requests_are_served_unchanged() {
    let stack = stack();
    let big = {
        // A 2 MB chat body: valid JSON, larger than max_body_bytes.
        let text = "lorem ipsum ".repeat(2 * 1024 * 1024 / 12);
        serde_json::json!({"model": QWEN3_MODEL, "messages": [{"role": "user", "content": text}]})
            .to_string()
    };
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let cases: Vec<(&str, &str, &str, Vec<u8>)> = vec![
        (
            "malformed json",
            "POST",
            "/v1/chat/completions",
            br#"{"model": "Qwen3-32B", "messages": [{"#.to_vec(),
        ),
        ("garbage bytes", "POST", "/v1/chat/completions", garbage),
        ("json array", "POST", "/v1/completions", b"[1,2,3]".to_vec()),
        (
            "non-chat path",
            "POST",
            "/v1/embeddings",
            br#"{"model":"Qwen3-32B","input":"hi"}"#.to_vec(),
        ),
        ("GET", "GET", "/v1/models", Vec::new()),
        (
            "2 MB body",
            "POST",
            "/v1/chat/completions",
            big.into_bytes(),
        ),
        (
            "unknown model",
            "POST",
            "/v1/chat/completions",
            br#"{"model":"nope","messages":[]}"#.to_vec(),
        ),
    ];
    for (name, method, path, body) in &cases {
        let before: Vec<usize> = stack.backends.iter().map(|b| b.hit_count()).collect();
        let r = stack
            .send(method, path, &[("content-type", "application/json")], body)
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", stack.logs()));
        assert_eq!(
            r.status,
            200,
            "{name}: {}\n{}",
            String::from_utf8_lossy(&r.body),
            stack.logs()
        );
        let served_by = Stack::served_by(&r).expect(name);
        assert!(
            r.header("x-kvroute-endpoint").is_none(),
            "{name} was routed"
        );
        let grew: Vec<_> = stack
            .backends
            .iter()
            .zip(&before)
            .filter(|(b, n)| b.hit_count() > **n)
            .collect();
        assert_eq!(grew.len(), 1, "{name}: served exactly once");
        let (backend, n) = grew[0];
        assert_eq!(backend.name, served_by);
        let hits = backend.hits();
        assert_eq!(hits.len(), n + 1, "{name}: served exactly once");
        let hit = &hits[*n];
        assert_eq!(
            (hit.method.as_str(), hit.path.as_str()),
            (*method, *path),
            "{name}"
        );
        assert!(
            hit.body == *body,
            "{name}: body changed ({} bytes sent, {} received)",
            body.len(),
            hit.body.len()
        );
    }
    let count = |n: &str| {
        stack
            .envoy
            .filter_stat(&format!("kvroute_fail_open_{n}"))
            .expect("stat")
    };
    assert_eq!(
        count("malformed_request"),
        3,
        "malformed json, garbage, json array"
    );
    assert_eq!(count("body_too_large"), 1);
    assert_eq!(count("unknown_model"), 1);
    assert_eq!(stack.envoy.filter_stat("kvroute_routed").expect("stat"), 0);
}

#[test]
fn streaming_requests_stream_through() {
    let stack = stack();
    let body = serde_json::json!({
        "model": QWEN3_MODEL, "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "hello"}],
    });
    let r = stack.chat(&body).expect("request");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let text = String::from_utf8_lossy(&r.body);
    assert_eq!(text.matches("data: ").count(), 6, "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    // The indexer answered 500: counted, and the request still streamed from a pod.
    assert_eq!(
        stack
            .envoy
            .filter_stat("kvroute_fail_open_indexer_error")
            .expect("stat"),
        1
    );
}
