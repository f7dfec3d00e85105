//! The hot path of every routed request, measured as the issue states its targets: a
//! 7,200-token chat request (a 6,000-token context plus a 1,200-token question, Qwen3's real
//! tokenizer and template) through render + tokenize + hash, cold (nothing cached) and warm
//! (a second request sharing the context, so only the new question is tokenized).
//!
//! `KVROUTE_BENCH_PROMPT=<file>` writes the cold request's rendered prompt there, so
//! `scripts/bench_core.sh` can time Python `tokenizers` on the very same text in the same run.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use kvroute_blockhash::request::Prompt;
use kvroute_blockhash::{
    BlockHasher, HashConfig, HashScheme, PromptEncoder, Request, RequestExtras, RequestKeys,
};
use serde_json::json;

const CONTEXT_TOKENS: usize = 6_000;
const QUESTION_TOKENS: usize = 1_200;

fn tokenizer_dir() -> PathBuf {
    kvroute_testdata::tokenizer_dir("qwen3")
}

/// Varied prose (words, numbers, punctuation, a little code and unicode) from a
/// deterministic generator, so the tokenizer does realistic work rather than one repeated
/// word the pre-tokenizer would treat trivially.
fn prose(seed: u64, approx_tokens: usize) -> String {
    const WORDS: &[&str] = &[
        "the",
        "customer",
        "account",
        "invoice",
        "shipment",
        "delayed",
        "because",
        "warehouse",
        "inventory",
        "reconciliation",
        "policy",
        "refund",
        "escalation",
        "priority",
        "ticket",
        "région",
        "naïve",
        "façade",
        "Grüße",
        "東京",
        "注文",
        "données",
        "latency",
        "p99",
        "fn",
        "main()",
        "{",
        "}",
        "=>",
        "SELECT",
        "*",
        "FROM",
        "orders",
        "WHERE",
        "id",
        "=",
    ];
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut out = String::new();
    // ~1.6 Qwen3 tokens a word for this mix (measured); the bench prints the exact count.
    let words = approx_tokens * 5 / 8;
    for i in 0..words {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = (state >> 33) as usize;
        match r % 11 {
            0 => out.push_str(&format!(" {}", r % 10_000)),
            1 => out.push(','),
            _ => {
                out.push(' ');
                out.push_str(WORDS[r % WORDS.len()]);
            }
        }
        if i % 23 == 22 {
            out.push_str(".\n");
        }
    }
    out
}

fn chat(context: &str, question: &str) -> Request {
    let body = json!({
        "model": "Qwen3-32B",
        "messages": [
            {"role": "system", "content": format!("You answer from this customer record.\n{context}")},
            {"role": "user", "content": question},
        ],
    });
    Request::parse(body.to_string().as_bytes(), None).expect("bench request parses")
}

fn bench_prompt(c: &mut Criterion) {
    let dir = tokenizer_dir();
    let tokenizer_json = std::fs::read(dir.join("tokenizer.json")).expect("qwen3 tokenizer.json");
    let config_json = std::fs::read(dir.join("tokenizer_config.json")).expect("qwen3 config");
    let encoder = PromptEncoder::from_files(&tokenizer_json, &config_json, None).expect("encoder");
    let hasher = BlockHasher::new(HashConfig {
        scheme: HashScheme::Sha256Cbor,
        block_size: 64,
        seed: None,
    });
    let extras = RequestExtras::default();

    let context = prose(1, CONTEXT_TOKENS);
    let first = chat(&context, &prose(2, QUESTION_TOKENS));
    let keys = RequestKeys::compute(&encoder, &hasher, &first, &extras).expect("keys");
    eprintln!(
        "bench request: {} prompt tokens, {} full blocks",
        keys.prompt_tokens,
        keys.block_hashes.len()
    );
    assert!(
        (7_000..7_400).contains(&keys.prompt_tokens),
        "the bench request drifted from 7,200 tokens: {}",
        keys.prompt_tokens
    );
    if let (Some(path), Prompt::Chat(c)) = (std::env::var_os("KVROUTE_BENCH_PROMPT"), &first.prompt)
    {
        std::fs::write(path, encoder.render_chat(c).expect("render")).expect("write prompt");
    }

    let mut group = c.benchmark_group("prompt_7200_tokens");
    group.measurement_time(Duration::from_secs(4));
    group.sample_size(30);

    // Cold: every iteration's context and question are new to the cache (a fresh number at
    // the start of each), so the whole prompt is rendered, tokenized and hashed, and its
    // segments inserted.
    let nonce = AtomicU64::new(1_000);
    let question = prose(2, QUESTION_TOKENS);
    group.bench_function("cold", |b| {
        b.iter_batched(
            || {
                let n = nonce.fetch_add(1, Ordering::Relaxed);
                chat(
                    &format!("Record {n}.{context}"),
                    &format!("Question {n}. {question}"),
                )
            },
            |req| RequestKeys::compute(&encoder, &hasher, black_box(&req), &extras),
            BatchSize::LargeInput,
        )
    });

    // Warm: the context is cached; each iteration asks a new 1,200-token question about it.
    let question_seed = AtomicU64::new(10_000);
    group.bench_function("warm_new_question", |b| {
        b.iter_batched(
            || {
                chat(
                    &context,
                    &prose(
                        question_seed.fetch_add(1, Ordering::Relaxed),
                        QUESTION_TOKENS,
                    ),
                )
            },
            |req| RequestKeys::compute(&encoder, &hasher, black_box(&req), &extras),
            BatchSize::LargeInput,
        )
    });

    // Warm, identical request (a retry, or the router and the indexer keying the same body).
    group.bench_function("warm_repeat", |b| {
        b.iter(|| RequestKeys::compute(&encoder, &hasher, black_box(&first), &extras))
    });

    // Tokenization alone, uncached: the number to set beside Python `tokenizers`.
    if let Prompt::Chat(c) = &first.prompt {
        let text = encoder.render_chat(c).expect("render");
        group.bench_function("tokenize_uncached", |b| {
            b.iter(|| encoder.tokenizer().encode_uncached(black_box(&text), false))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_prompt);
criterion_main!(benches);
