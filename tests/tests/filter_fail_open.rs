//! Fail open, proven in the real Envoy: when the indexer hangs, is killed, or answers an
//! error, every request is still served by a healthy pod, and no request waits longer
//! than the call timeout (50 ms) for the filter's decision; a call it gave up on has its
//! decision released by the ticket it named, and so has one whose client left while it
//! waited (the indexer's side: `http_hardening.rs`).

use std::time::Duration;

use kvroute_api::{CompleteRequest, COMPLETE_PATH};
use kvroute_harness::scripted_indexer::RouteScript;
use kvroute_harness::stack::{IndexerSpec, Stack, QWEN3_MODEL};

const CALL_TIMEOUT_MS: u64 = 50;

fn request(i: usize) -> serde_json::Value {
    serde_json::json!({
        "model": QWEN3_MODEL, "max_tokens": 8,
        "messages": [{"role": "user", "content": format!("request {i}: {}", "tell me about prefix caching ".repeat(40))}],
    })
}

/// Median time of `n` direct requests to a backend, without Envoy: the floor to subtract.
fn served_within_timeout(stack: &Stack, n: usize, reason: &str) {
    // Slack for Envoy, the loopback round trip and a busy 2-core CI machine; the point is
    // that the delay is bounded by the call timeout, not by the indexer.
    let bound = Duration::from_millis(CALL_TIMEOUT_MS + 150);
    let mut worst = Duration::ZERO;
    for i in 0..n {
        let r = stack.chat(&request(i)).expect("request");
        assert_eq!(
            r.status,
            200,
            "{}\n{}",
            String::from_utf8_lossy(&r.body),
            stack.logs()
        );
        Stack::served_by(&r).expect("served by a backend");
        assert!(r.header("x-kvroute-endpoint").is_none());
        worst = worst.max(r.elapsed);
    }
    assert!(
        worst <= bound,
        "slowest request took {worst:?} (> {bound:?}) with reason {reason}"
    );
    let counted = stack
        .envoy
        .filter_stat(&format!("kvroute_fail_open_{reason}"))
        .expect("stat");
    assert_eq!(
        counted,
        n as u64,
        "fail-open {reason} count\n{}",
        stack.logs()
    );
}

fn stack_with(failure: RouteScript, tokenize_in: &str) -> Stack {
    Stack::builder()
        .backends(3)
        .qwen3()
        .plugin(serde_json::json!({"call_timeout_ms": CALL_TIMEOUT_MS, "tokenize_in": tokenize_in}))
        .indexer(IndexerSpec::Scripted(failure))
        .start()
        .expect("stack")
}

#[test]
fn hung_indexer_costs_at_most_the_call_timeout() {
    let stack = stack_with(RouteScript::Hang, "indexer");
    served_within_timeout(&stack, 10, "timeout");
    // Each call named its decision's ticket, and the filter released that ticket when it
    // gave up: a decision the indexer makes late is not counted as load.
    let indexer = stack.scripted_indexer().expect("scripted indexer");
    let named: Vec<u64> = indexer
        .calls()
        .iter()
        .filter(|c| c.path != COMPLETE_PATH)
        .map(|c| c.ticket.expect("a route call names its ticket"))
        .collect();
    assert_eq!(named.len(), 10);
    let released = || -> Vec<u64> {
        indexer
            .calls()
            .iter()
            .filter(|c| c.path == COMPLETE_PATH)
            .filter_map(|c| serde_json::from_slice::<CompleteRequest>(&c.body).ok())
            .inspect(|c| assert!(c.abandoned, "a given-up call is released as abandoned"))
            .map(|c| c.ticket)
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while released().len() < named.len() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut released = released();
    released.sort_unstable();
    let mut expected = named.clone();
    expected.sort_unstable();
    assert_eq!(
        released, expected,
        "every timed-out call's ticket released once"
    );
    let hist = stack.envoy.prometheus().expect("prometheus");
    assert!(
        hist.contains("kvroute_decision_us"),
        "decision time histogram exported"
    );
}

#[test]
fn killed_indexer_still_serves_every_request() {
    let mut stack = stack_with(
        RouteScript::Status(503, "{\"error\":\"no live pod\"}".into()),
        "indexer",
    );
    served_within_timeout(&stack, 3, "no_pod");
    stack.kill_indexer();
    std::thread::sleep(Duration::from_millis(100));
    let before = stack
        .envoy
        .filter_stat("kvroute_fail_open_indexer_unavailable")
        .expect("stat");
    assert_eq!(before, 0);
    served_within_timeout(&stack, 10, "indexer_unavailable");
}

#[test]
fn error_answers_are_counted_by_reason() {
    let stack = stack_with(
        RouteScript::Status(404, "{\"error\":\"unknown model\"}".into()),
        "indexer",
    );
    served_within_timeout(&stack, 2, "unknown_model");
    let stack = stack_with(
        RouteScript::Status(200, "{\"endpoint\":\"not-an-address\"}".into()),
        "indexer",
    );
    served_within_timeout(&stack, 2, "bad_answer");
}

/// A client that leaves while the filter waits for the indexer: the call it was waiting on
/// is released (named ticket, `abandoned`) when Envoy ends the stream, so its decision,
/// made later, never counts as load.
#[test]
fn a_client_leaving_mid_call_releases_the_decision() {
    use std::io::Write;
    let stack = Stack::builder()
        .backends(3)
        .qwen3()
        // Longer than the client stays: the client leaves first.
        .plugin(serde_json::json!({"call_timeout_ms": 5000}))
        .indexer(IndexerSpec::Scripted(RouteScript::Hang))
        .start()
        .expect("stack");
    let body = request(0).to_string();
    let mut client = std::net::TcpStream::connect(stack.listen()).expect("connect");
    write!(
        client,
        "POST /v1/chat/completions HTTP/1.1\r\nhost: kvroute\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let indexer = stack.scripted_indexer().expect("scripted indexer");
    let calls_of = |path_is_complete: bool| {
        indexer
            .calls()
            .into_iter()
            .filter(|c| (c.path == COMPLETE_PATH) == path_is_complete)
            .collect::<Vec<_>>()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while calls_of(false).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no route call\n{}",
            stack.logs()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let named = calls_of(false)[0]
        .ticket
        .expect("a route call names its ticket");
    assert!(calls_of(true).is_empty(), "released while still waiting");
    drop(client);
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let released: Vec<CompleteRequest> = calls_of(true)
            .iter()
            .filter_map(|c| serde_json::from_slice(&c.body).ok())
            .collect();
        if !released.is_empty() {
            assert_eq!(released.len(), 1, "{released:?}");
            assert_eq!(released[0].ticket, named);
            assert!(released[0].abandoned);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the call was not released after the client left\n{}",
            stack.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
