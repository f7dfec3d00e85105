//! Fuzzing the request parser (chat, completions and Anthropic messages bodies) and what
//! follows it, templating and tokenizing with a real tokenizer (Qwen3's, whose template
//! walks every message field): any bytes, and any JSON in the three bodies' shapes, give a
//! request or a clear error, never a panic. The suite runs a few hundred cases
//! (seconds); `scripts/fuzz.sh` runs many more (`KVROUTE_FUZZ_CASES`).

use std::sync::OnceLock;

use kvroute_blockhash::{
    BlockHasher, Endpoint, ExtraKeysStyle, HashConfig, HashScheme, PromptEncoder, Request,
    RequestExtras, RequestKeys,
};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

fn encoder() -> &'static PromptEncoder {
    static ENCODER: OnceLock<PromptEncoder> = OnceLock::new();
    ENCODER.get_or_init(|| {
        let dir = kvroute_testdata::tokenizer_dir("qwen3");
        PromptEncoder::with_cache_bytes(
            &std::fs::read(dir.join("tokenizer.json")).expect("run scripts/setup.sh"),
            &std::fs::read(dir.join("tokenizer_config.json")).unwrap(),
            None,
            0,
        )
        .unwrap()
    })
}

fn cases() -> u32 {
    std::env::var("KVROUTE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128)
}

/// Parse, then template, tokenize and hash: errors are fine, panics are not.
fn exercise(body: &[u8], endpoint: Option<Endpoint>) {
    let Ok(request) = Request::parse(body, endpoint) else {
        return;
    };
    let hasher = BlockHasher::new(HashConfig {
        scheme: HashScheme::Sha256Cbor,
        block_size: 16,
        seed: None,
    });
    let extras = RequestExtras {
        cache_salt: request.cache_salt.clone(),
        ..Default::default()
    };
    let _ = RequestKeys::compute_with_style(
        encoder(),
        &hasher,
        &request,
        &extras,
        ExtraKeysStyle::Tagged,
    );
}

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,24}".prop_map(Value::String),
        Just(json!("<|im_start|>user\n<think></think>")),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(field(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Field names the parser and the templates read, and others.
fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("role".to_owned()),
        Just("content".to_owned()),
        Just("type".to_owned()),
        Just("text".to_owned()),
        Just("tool_calls".to_owned()),
        Just("function".to_owned()),
        Just("arguments".to_owned()),
        Just("name".to_owned()),
        Just("reasoning_content".to_owned()),
        Just("tool_use".to_owned()),
        Just("image_url".to_owned()),
        "[a-z_]{1,10}",
    ]
}

/// A message: often well formed, sometimes anything.
fn message() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => (prop_oneof![Just("system"), Just("user"), Just("assistant"), Just("tool"), Just("developer"), Just("x")], ".{0,40}")
            .prop_map(|(role, content)| json!({"role": role, "content": content})),
        1 => any_json(),
        1 => (Just("user"), prop::collection::vec(any_json(), 0..3))
            .prop_map(|(role, parts)| json!({"role": role, "content": parts})),
    ]
}

/// A body in one of the three shapes, with fields of any type mixed in.
fn body() -> impl Strategy<Value = (Value, Option<Endpoint>)> {
    let endpoint = prop_oneof![
        Just(None),
        Just(Some(Endpoint::ChatCompletions)),
        Just(Some(Endpoint::Completions)),
        Just(Some(Endpoint::AnthropicMessages)),
    ];
    let shape = prop_oneof![
        prop::collection::vec(message(), 0..6).prop_map(|m| json!({"model": "m", "messages": m})),
        any_json().prop_map(|p| json!({"model": "m", "prompt": p})),
        ".{0,60}".prop_map(|p| json!({"model": "m", "prompt": p})),
        prop::collection::vec(any::<u32>(), 0..40).prop_map(|p| json!({"model": "m", "prompt": p})),
        (prop::collection::vec(message(), 0..4), any_json()).prop_map(
            |(m, s)| json!({"model": "claude", "system": s, "messages": m, "max_tokens": 16})
        ),
    ];
    let extra = prop::collection::btree_map(
        prop_oneof![
            Just("model".to_owned()),
            Just("cache_salt".to_owned()),
            Just("tools".to_owned()),
            Just("add_generation_prompt".to_owned()),
            Just("continue_final_message".to_owned()),
            Just("chat_template_kwargs".to_owned()),
            Just("chat_template".to_owned()),
            Just("system".to_owned()),
            "[a-z_]{1,12}",
        ],
        any_json(),
        0..3,
    );
    (shape, extra, endpoint).prop_map(|(mut body, extra, endpoint)| {
        if let Value::Object(obj) = &mut body {
            for (k, v) in extra {
                // A per-request template is arbitrary code for the engine too; keep it
                // a string that renders.
                let v = if k == "chat_template" {
                    json!("{{ messages }}")
                } else {
                    v
                };
                obj.insert(k, v);
            }
        }
        (body, endpoint)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_parse_or_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        for endpoint in [None, Some(Endpoint::ChatCompletions), Some(Endpoint::Completions), Some(Endpoint::AnthropicMessages)] {
            exercise(&bytes, endpoint);
        }
    }

    #[test]
    fn any_body_in_the_three_shapes_parses_templates_and_tokenizes_or_fails_cleanly(
        (body, endpoint) in body()
    ) {
        let bytes = serde_json::to_vec(&body).unwrap();
        exercise(&bytes, endpoint);
        // Damaged: cut short and one byte flipped.
        exercise(&bytes[..bytes.len() / 2], endpoint);
        let mut flipped = bytes.clone();
        let at = flipped.len() / 3;
        flipped[at] ^= 0x20;
        exercise(&flipped, endpoint);
    }

    #[test]
    fn a_well_formed_chat_body_parses(contents in prop::collection::vec(".{0,40}", 1..5)) {
        let messages: Vec<Value> = contents
            .iter()
            .enumerate()
            .map(|(i, c)| json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": c}))
            .collect();
        let body = serde_json::to_vec(&json!({"model": "m", "messages": messages})).unwrap();
        let request = Request::parse(&body, Some(Endpoint::ChatCompletions));
        prop_assert!(request.is_ok(), "{request:?}");
        let model = request.unwrap().model;
        prop_assert_eq!(model.as_deref(), Some("m"));
    }
}
