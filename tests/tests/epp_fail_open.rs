//! The endpoint picker's fail-open answers through the real Envoy: malformed or empty
//! bodies, unknown models, bodies over Envoy's buffer limit or the picker's own, requests
//! that are not completions, a client's own destination header, and a picker that stops
//! answering each get a served request without a routing header, in both body modes
//! (BUFFERED_PARTIAL as shipped, FULL_DUPLEX_STREAMED as GIE gateways configure), never a
//! broken or hung request.

use std::time::{Duration, Instant};

use kvroute_harness::envoy::EppBodyMode;
use kvroute_harness::stack::{kvroute_serve, EppOptions, IndexerSpec, Stack, QWEN3_MODEL};

const DESTINATION: &str = "x-gateway-destination-endpoint";
/// Envoy's buffer limit on the picker path in this test.
const BUFFER_LIMIT: usize = 64 << 10;

/// `kvroute_epp_requests_total{reason="<outcome>"}` from the indexer's /metrics.
fn epp_count(stack: &Stack, outcome: &str) -> u64 {
    stack
        .indexer_metric(&format!(
            "kvroute_epp_requests_total{{reason=\"{outcome}\"}}"
        ))
        .expect("metrics")
}

/// In full-duplex mode Envoy buffers nothing: the picker's own limit decides.
const PICKER_LIMIT: &str = "65536";

fn stack(mode: EppBodyMode) -> Stack {
    Stack::builder()
        .backends(3)
        .qwen3()
        .kv_engines()
        .buffer_max_bytes(BUFFER_LIMIT)
        .indexer(IndexerSpec::Kvroute(kvroute_serve(&[
            "--epp-max-body-bytes",
            PICKER_LIMIT,
        ])))
        .epp(EppOptions {
            body_mode: mode,
            ..EppOptions::default()
        })
        .start()
        .expect("stack")
}

/// Requests each backend has received so far.
fn hit_counts(stack: &Stack) -> Vec<usize> {
    stack.backends.iter().map(|b| b.hit_count()).collect()
}

/// The one request received since `before` (counts), and which backend got it.
fn new_hit(stack: &Stack, before: &[usize]) -> (String, kvroute_harness::backend::Hit) {
    let mut got = Vec::new();
    for (b, &n) in stack.backends.iter().zip(before) {
        for h in b.hits().into_iter().skip(n) {
            got.push((b.name.clone(), h));
        }
    }
    assert_eq!(
        got.len(),
        1,
        "expected exactly one new request at the backends"
    );
    got.remove(0)
}

fn header<'a>(hit: &'a kvroute_harness::backend::Hit, name: &str) -> Option<&'a str> {
    hit.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn chat_body(content: &str) -> Vec<u8> {
    serde_json::json!({"model": QWEN3_MODEL, "max_tokens": 4,
        "messages": [{"role": "user", "content": content}]})
    .to_string()
    .into_bytes()
}

/// Name, path, body, extra request headers, the outcome the picker must count.
type Case<'a> = (&'a str, &'a str, Vec<u8>, Vec<(&'a str, &'a str)>, &'a str);

fn fail_open_cases(mode: EppBodyMode) {
    let stack = stack(mode);
    let chat = "/v1/chat/completions";
    let spoof = stack.backends[2].addr.to_string();
    let big = "lorem ipsum dolor sit amet ".repeat(BUFFER_LIMIT / 20);
    let cases: Vec<Case> = vec![
        (
            "malformed",
            chat,
            b"{\"model\": \"Qwen3-32B\", \"messages\": [".to_vec(),
            vec![],
            "fail_open_malformed",
        ),
        ("empty", chat, Vec::new(), vec![], "fail_open_empty_body"),
        (
            "unknown model",
            chat,
            br#"{"model":"no-such-model","messages":[{"role":"user","content":"hi"}]}"#.to_vec(),
            vec![],
            "fail_open_unknown_model",
        ),
        (
            "oversized",
            chat,
            chat_body(&big),
            vec![],
            "fail_open_oversized",
        ),
        (
            "not a completion",
            "/v1/embeddings",
            chat_body("hi"),
            vec![],
            "fail_open_not_routable",
        ),
        // A client naming the pod itself is not obeyed, nor is its header passed on.
        (
            "spoofed header",
            chat,
            b"not json".to_vec(),
            vec![(DESTINATION, spoof.as_str())],
            "fail_open_malformed",
        ),
    ];
    for (name, path, body, headers, outcome) in cases {
        let before = epp_count(&stack, outcome);
        let hits = hit_counts(&stack);
        let mut all_headers = vec![("content-type", "application/json")];
        all_headers.extend(headers);
        let started = Instant::now();
        let r = stack
            .send("POST", path, &all_headers, &body)
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", stack.logs()));
        assert_eq!(
            r.status,
            200,
            "{name}: {}\n{}",
            String::from_utf8_lossy(&r.body),
            stack.logs()
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{name}: {:?}",
            started.elapsed()
        );
        let (_, hit) = new_hit(&stack, &hits);
        assert_eq!(hit.path, path, "{name}");
        assert_eq!(hit.body, body, "{name}: body changed on the way");
        assert_eq!(header(&hit, DESTINATION), None, "{name}: routed");
        assert_eq!(
            epp_count(&stack, outcome),
            before + 1,
            "{name}: {mode:?}\n{}",
            stack.logs()
        );
    }
    // And a body it can route is routed, in the same mode.
    let hits = hit_counts(&stack);
    let r = stack
        .send("POST", chat, &[], &chat_body("route me"))
        .expect("routed");
    assert_eq!(r.status, 200);
    let (served_by, hit) = new_hit(&stack, &hits);
    let named = header(&hit, DESTINATION).expect("routed request carries the header");
    let addr = stack
        .backends
        .iter()
        .find(|b| b.name == served_by)
        .unwrap()
        .addr
        .to_string();
    assert_eq!(named.split(',').next(), Some(addr.as_str()));
}

#[test]
fn what_cannot_be_routed_is_served_unrouted_buffered_partial() {
    fail_open_cases(EppBodyMode::BufferedPartial);
}

#[test]
fn what_cannot_be_routed_is_served_unrouted_full_duplex() {
    fail_open_cases(EppBodyMode::FullDuplexStreamed);
}

#[test]
fn a_picker_that_stops_answering_costs_at_most_the_message_timeout() {
    let stack = stack(EppBodyMode::BufferedPartial);
    let r = stack
        .send("POST", "/v1/chat/completions", &[], &chat_body("warm"))
        .expect("warm");
    assert_eq!(r.status, 200);
    assert!(stack.signal_indexer(libc::SIGSTOP));
    let mut worst = Duration::ZERO;
    for i in 0..4 {
        let hits = hit_counts(&stack);
        let started = Instant::now();
        let r = stack.send(
            "POST",
            "/v1/chat/completions",
            &[],
            &chat_body(&format!("frozen {i}")),
        );
        let took = started.elapsed();
        worst = worst.max(took);
        let r = r.expect("served");
        assert_eq!(r.status, 200, "{}", stack.logs());
        let (_, hit) = new_hit(&stack, &hits);
        assert_eq!(header(&hit, DESTINATION), None);
    }
    stack.signal_indexer(libc::SIGCONT);
    let bound = kvroute_harness::envoy::EPP_MESSAGE_TIMEOUT + Duration::from_millis(300);
    assert!(worst < bound, "a request took {worst:?} (bound {bound:?})");
}
