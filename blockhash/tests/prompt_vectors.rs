//! Rendering and tokenization against transformers, on the whole corpus and four real
//! templates (tests/vectors/prompts.json, from scripts/gen_prompt_vectors.py): byte-identical
//! prompt text, identical token ids, the same refusals; and the segment cache never changes
//! an id compared with the uncached path.

use kvroute_blockhash::request::{Endpoint, Prompt};
use kvroute_blockhash::{PromptEncoder, Request};
use serde_json::Value;

fn encoder(model: &str, cache_bytes: usize) -> PromptEncoder {
    let dir = kvroute_testdata::tokenizer_dir(model);
    PromptEncoder::with_cache_bytes(
        &std::fs::read(dir.join("tokenizer.json")).expect("run scripts/setup.sh"),
        &std::fs::read(dir.join("tokenizer_config.json")).unwrap(),
        None,
        cache_bytes,
    )
    .unwrap()
}

fn load(path: &str) -> Value {
    kvroute_testdata::read_json(&kvroute_testdata::repo_root().join(path))
}

/// The corpus body with the corpus' fixed template kwargs (a fixed date) merged in.
fn request_of(conv: &Value, fixed: &Value) -> Request {
    let mut body = conv["body"].clone();
    let mut kwargs = fixed.as_object().unwrap().clone();
    if let Some(own) = body.get("chat_template_kwargs").and_then(Value::as_object) {
        kwargs.extend(own.clone());
    }
    body["chat_template_kwargs"] = Value::Object(kwargs);
    Request::parse(body.to_string().as_bytes(), Some(Endpoint::ChatCompletions)).unwrap()
}

fn check_model(model: &str) {
    let corpus = load("tests/corpus/conversations.json");
    let vectors = load("tests/vectors/prompts.json");
    let fixed = &corpus["fixed_template_kwargs"];
    let expected = vectors["models"][model]["conversations"]
        .as_array()
        .unwrap();
    let cached = encoder(model, 8 << 20);
    let uncached = encoder(model, 0);
    let mut rendered = 0;
    for (conv, want) in corpus["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .zip(expected)
    {
        let name = conv["name"].as_str().unwrap();
        assert_eq!(want["name"], name);
        let request = request_of(conv, fixed);
        let Prompt::Chat(chat) = &request.prompt else {
            unreachable!()
        };
        let text = cached.render_chat(chat);
        if want.get("error").is_some() {
            assert!(
                text.is_err(),
                "{model}/{name}: transformers refused, we rendered"
            );
            continue;
        }
        let text = text.unwrap_or_else(|e| panic!("{model}/{name}: {e}"));
        assert_eq!(
            text,
            want["text"].as_str().unwrap(),
            "{model}/{name}: rendering"
        );
        let want_ids: Vec<u32> = want["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        // Twice through the cache (cold, then warm) and once without it.
        for _ in 0..2 {
            assert_eq!(
                cached.prompt_tokens(&request).unwrap(),
                want_ids,
                "{model}/{name}: ids"
            );
        }
        assert_eq!(
            uncached.prompt_tokens(&request).unwrap(),
            want_ids,
            "{model}/{name}"
        );
        rendered += 1;
    }
    assert!(
        rendered >= 30,
        "{model}: only {rendered} conversations rendered"
    );
    // The comparison above proves something only if the cut was taken: DeepSeek V3 has
    // added tokens matched after normalization, so it alone takes the uncached path.
    assert_eq!(
        cached.tokenizer().uses_segment_cache(),
        model != "deepseek_v3",
        "{model}"
    );
    if cached.tokenizer().uses_segment_cache() {
        let stats = cached.tokenizer().cache_stats();
        assert!(stats.hits > 0 && stats.entries > 0, "{model}: {stats:?}");
    }
    for c in vectors["models"][model]["completions"].as_array().unwrap() {
        let body = serde_json::json!({"prompt": c["prompt"]});
        let request = Request::parse(body.to_string().as_bytes(), None).unwrap();
        let ids: Vec<u64> = cached
            .prompt_tokens(&request)
            .unwrap()
            .into_iter()
            .map(u64::from)
            .collect();
        let want: Vec<u64> = c["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(ids, want, "{model}: completion {}", c["prompt"]);
    }
}

#[test]
fn qwen3_matches_transformers() {
    check_model("qwen3");
}

#[test]
fn llama3_matches_transformers() {
    check_model("llama3");
}

#[test]
fn deepseek_v3_matches_transformers() {
    check_model("deepseek_v3");
}

#[test]
fn gemma3_matches_transformers() {
    check_model("gemma3");
}

/// The corpus conversations an Anthropic `/v1/messages` body can express (one leading
/// system prompt, then user/assistant turns of plain text), sent as that API's body with
/// content blocks: vLLM converts them to the same chat messages, so the ids must equal
/// transformers' ids for the chat form.
#[test]
fn anthropic_bodies_give_the_chat_forms_ids() {
    let corpus = load("tests/corpus/conversations.json");
    let vectors = load("tests/vectors/prompts.json");
    let fixed = corpus["fixed_template_kwargs"].as_object().unwrap().clone();
    for model in ["qwen3", "llama3", "deepseek_v3", "gemma3"] {
        let enc = encoder(model, 8 << 20);
        let expected = vectors["models"][model]["conversations"]
            .as_array()
            .unwrap();
        let mut checked = 0;
        for (conv, want) in corpus["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .zip(expected)
        {
            let body = &conv["body"];
            let plain = body
                .as_object()
                .unwrap()
                .keys()
                .all(|k| k == "messages" || k == "model")
                && body["messages"].as_array().unwrap().iter().all(|m| {
                    m.as_object()
                        .unwrap()
                        .keys()
                        .all(|k| k == "role" || k == "content")
                        && m["content"].is_string()
                });
            if !plain || want.get("ids").is_none() {
                continue;
            }
            let mut messages: Vec<Value> = body["messages"].as_array().unwrap().clone();
            let system = match messages.first() {
                Some(m) if m["role"] == "system" => Some(messages.remove(0)["content"].clone()),
                _ => None,
            };
            if messages.iter().any(|m| m["role"] == "system") {
                continue;
            }
            let messages: Vec<Value> = messages
                .iter()
                .map(|m| {
                    serde_json::json!({"role": m["role"],
                        "content": [{"type": "text", "text": m["content"]}]})
                })
                .collect();
            let mut anthropic =
                serde_json::json!({"model": "m", "max_tokens": 16, "messages": messages});
            if let Some(s) = system {
                anthropic["system"] = s;
            }
            // Explicitly the Anthropic route: without a top-level system, a body of text
            // blocks is also a valid OpenAI chat body, and detection may call it that.
            let mut request = Request::parse(
                anthropic.to_string().as_bytes(),
                Some(Endpoint::AnthropicMessages),
            )
            .unwrap_or_else(|e| panic!("{model}/{}: {e}", conv["name"]));
            if let Prompt::Chat(chat) = &mut request.prompt {
                chat.template_kwargs.extend(fixed.clone());
            }
            let ids: Vec<u64> = enc
                .prompt_tokens(&request)
                .unwrap()
                .into_iter()
                .map(u64::from)
                .collect();
            let want_ids: Vec<u64> = want["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            assert_eq!(ids, want_ids, "{model}/{}", conv["name"]);
            checked += 1;
        }
        assert!(
            checked >= 10,
            "{model}: only {checked} conversations checked"
        );
    }
}
