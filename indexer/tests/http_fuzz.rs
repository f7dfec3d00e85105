//! Fuzzing the HTTP API's bodies (proptest): any bytes, and any JSON near the shapes the
//! routes read, posted to every route through the real router and its layers. Every answer
//! is a success or the API's JSON error with a client-fault or busy status; never a 5xx
//! other than 503, never a panic. The suite runs a few hundred cases; `scripts/fuzz.sh`
//! runs many more (`KVROUTE_FUZZ_CASES`).

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::Request;
use kvroute_api::ErrorAnswer;
use kvroute_indexer::http::{app, AppState};
use kvroute_indexer::ingest::IngestConfig;
use kvroute_indexer::serve::{build, ServeConfig};
use proptest::prelude::*;
use serde_json::{json, Value};
use tower::ServiceExt;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

fn state() -> Arc<AppState> {
    static STATE: OnceLock<Arc<AppState>> = OnceLock::new();
    STATE
        .get_or_init(|| {
            let qwen3 = kvroute_testdata::tokenizer_dir("qwen3");
            let config = ServeConfig {
                models: vec![format!("Qwen3-32B={}", qwen3.display())],
                ingest: IngestConfig {
                    health_interval_ms: 0,
                    ..IngestConfig::with_engines(["127.0.0.1:1=9"])
                },
                ..ServeConfig::default()
            };
            build(&config).unwrap().state
        })
        .clone()
}

fn cases() -> u32 {
    std::env::var("KVROUTE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(96)
}

/// POST `body` to `uri`; panics unless the answer is a success or a JSON error with an
/// acceptable status.
fn post(uri: &str, body: Vec<u8>) {
    let request = Request::post(uri)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    runtime().block_on(async {
        let response = app(state()).oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 16 << 20)
            .await
            .unwrap();
        assert!(
            [200, 400, 404, 413, 503].contains(&status),
            "{uri}: {status} {}",
            String::from_utf8_lossy(&bytes)
        );
        if status != 200 {
            let error: Result<ErrorAnswer, _> = serde_json::from_slice(&bytes);
            assert!(
                error.is_ok(),
                "{uri}: {status} not JSON: {:?}",
                String::from_utf8_lossy(&bytes)
            );
        }
    });
}

const ROUTES: [&str; 6] = [
    "/v1/route",
    "/v1/route/prompt?path=/v1/chat/completions",
    "/v1/route/prompt?path=/v1/completions",
    "/v1/route/prompt?path=/v1/messages",
    "/v1/route/prompt",
    "/v1/route/complete",
];

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        ".{0,16}".prop_map(Value::String),
        Just(json!("Qwen3-32B")),
    ];
    leaf.prop_recursive(3, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("model".to_owned()),
                    Just("block_hashes".to_owned()),
                    Just("ticket".to_owned()),
                    Just("messages".to_owned()),
                    Just("prompt".to_owned()),
                    Just("role".to_owned()),
                    Just("content".to_owned()),
                    "[a-z_]{1,8}",
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Bodies close to what each route reads, with wrong types mixed in.
fn near_valid() -> impl Strategy<Value = Value> {
    prop_oneof![
        (any_json(), prop::collection::vec(any::<u64>(), 0..64))
            .prop_map(|(m, h)| json!({"model": m, "block_hashes": h})),
        prop::collection::vec(any::<u64>(), 0..64)
            .prop_map(|h| json!({"model": "Qwen3-32B", "block_hashes": h})),
        any::<u64>().prop_map(|t| json!({ "ticket": t })),
        any_json().prop_map(|t| json!({ "ticket": t })),
        (".{0,64}", any_json())
            .prop_map(|(c, extra)| json!({"model": "Qwen3-32B", "messages": [{"role": "user", "content": c}], "x": extra})),
        any_json().prop_map(|p| json!({"model": "Qwen3-32B", "prompt": p})),
        any_json(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_on_any_route_get_an_answer(route in 0..ROUTES.len(), bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        post(ROUTES[route], bytes);
    }

    #[test]
    fn near_valid_bodies_on_any_route_get_an_answer(route in 0..ROUTES.len(), body in near_valid()) {
        post(ROUTES[route], serde_json::to_vec(&body).unwrap());
    }

    #[test]
    fn any_query_gets_an_answer(query in ".{0,40}") {
        let uri = format!("/v1/route/prompt?path={}", query.replace(|c: char| !c.is_ascii_alphanumeric() && c != '/', ""));
        post(&uri, br#"{"model":"Qwen3-32B","prompt":"hi"}"#.to_vec());
    }
}
