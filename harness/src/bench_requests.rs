//! The requests and statistics the latency benchmarks share (`kvroute-filter-bench`,
//! `kvroute-paths-bench`): ~7,200-token chats (a ~6,000-token context plus a ~1,200-token
//! question) of varied vocabulary, posted through a stack, and their percentiles.

use std::net::SocketAddr;

use anyhow::bail;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::http::{self, Response};
use crate::stack::QWEN3_MODEL;

/// Tokens of a benchmark request's context (shared in the warm phase).
pub const CONTEXT_TOKENS: usize = 6_000;
/// Tokens of a benchmark request's question (new in every request).
pub const QUESTION_TOKENS: usize = 1_200;

/// Words mixing ASCII, accented and CJK text, so the tokenizer does real work.
const WORDS: &[&str] = &[
    "account",
    "balance",
    "customer",
    "invoice",
    "shipment",
    "warehouse",
    "policy",
    "refund",
    "order",
    "support",
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "is",
    "for",
    "with",
    "on",
    "that",
    "by",
    "this",
    "from",
    "at",
    "as",
    "network",
    "latency",
    "cluster",
    "replica",
    "memory",
    "cache",
    "prefix",
    "token",
    "model",
    "request",
    "quarterly",
    "report",
    "revenue",
    "growth",
    "margin",
    "forecast",
    "region",
    "market",
    "product",
    "team",
    "résumé",
    "naïve",
    "café",
    "北京",
    "東京",
    "データ",
    "模型",
    "缓存",
    "Zürich",
    "São",
    "Paulo",
    "≤",
    "→",
    "function",
    "return",
    "value",
    "error",
    "string",
    "number",
    "list",
    "map",
    "key",
    "index",
    "table",
];

/// Text of about `tokens` Qwen3 tokens, different for every seed.
pub fn text(tok: &tokenizers::Tokenizer, seed: u64, tokens: usize) -> anyhow::Result<String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut words: Vec<String> = Vec::new();
    let count = |w: &[String]| -> anyhow::Result<usize> {
        Ok(tok
            .encode(w.join(" "), false)
            .map_err(anyhow::Error::msg)?
            .len())
    };
    while count(&words)? < tokens {
        for _ in 0..200 {
            let w = WORDS[rng.random_range(0..WORDS.len())];
            words.push(if rng.random_bool(0.1) {
                format!("{w}{}", rng.random_range(0..10_000))
            } else {
                w.to_string()
            });
        }
    }
    while words.len() > 1 && count(&words)? > tokens {
        words.pop();
    }
    Ok(words.join(" "))
}

/// `n + 2` contexts and questions: `[0]` the warm phase's shared context, `[1..=n]` one per
/// cold request, `[n + 1]` the warm-up.
pub fn contexts_and_questions(
    tok: &tokenizers::Tokenizer,
    n: usize,
) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let contexts = (0..n as u64 + 2)
        .map(|i| text(tok, 1000 + i, CONTEXT_TOKENS))
        .collect::<Result<_, _>>()?;
    let questions = (0..n as u64 + 2)
        .map(|i| text(tok, 9000 + i, QUESTION_TOKENS))
        .collect::<Result<_, _>>()?;
    Ok((contexts, questions))
}

/// The chat completion body of one request.
pub fn chat(context: &str, question: &str) -> Vec<u8> {
    serde_json::json!({
        "model": QWEN3_MODEL, "max_tokens": 16,
        "messages": [
            {"role": "system", "content": context},
            {"role": "user", "content": question},
        ],
    })
    .to_string()
    .into_bytes()
}

/// POST a chat body; anything but 200 is an error.
pub fn post(addr: SocketAddr, body: &[u8]) -> anyhow::Result<Response> {
    let r = http::post_json(addr, "/v1/chat/completions", body)?;
    if r.status != 200 {
        bail!("status {}: {}", r.status, String::from_utf8_lossy(&r.body));
    }
    Ok(r)
}

/// The `p` quantile (0..=1) by nearest rank; sorts `samples`.
pub fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples.get(i).copied().unwrap_or(f64::NAN)
}
