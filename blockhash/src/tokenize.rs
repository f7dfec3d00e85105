//! Tokenization as vLLM does it, with the segment cache on the hot path.
//!
//! vLLM tokenizes a rendered chat prompt with `add_special_tokens=False` (the template
//! already wrote the special tokens) and a completions prompt with `add_special_tokens=True`.
//! `tokenizers` first cuts the text at added tokens (leftmost-longest over their exact
//! strings) and encodes each piece independently; [`PromptTokenizer`] makes the same cut
//! itself so that each piece's ids can come from the [`SegmentCache`]. The cut is only
//! taken when it is provably the tokenizer's own: every added token matched on raw text
//! (not normalized) with no lstrip/rstrip/single-word rule. Otherwise (e.g. DeepSeek V3's
//! normalized added tokens) the whole text goes through `tokenizers` unchanged.

use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use tokenizers::Tokenizer;

use crate::pretokenize::{fast_tokenizer, FastTokenizer};
use crate::segment_cache::{SegmentCache, SegmentCacheStats};
use crate::{Error, Result};

/// Default bound of the segment cache: room for a few hundred long contexts.
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

enum Engine {
    /// The exact fast pre-tokenizer path (Qwen2/3, Llama 3 patterns).
    Fast(Box<FastTokenizer>),
    Plain(Box<Tokenizer>),
}

impl Engine {
    fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = match self {
            Engine::Fast(t) => t.encode_fast(text, add_special_tokens),
            Engine::Plain(t) => t.encode_fast(text, add_special_tokens),
        };
        enc.map(|e| e.get_ids().to_vec())
            .map_err(|e| Error::Tokenizer(e.to_string()))
    }
}

/// How the prompt is cut at added tokens, when that cut is exact.
struct AddedTokenSplit {
    matcher: AhoCorasick,
    ids: Vec<u32>,
}

/// A model's tokenizer plus the segment cache.
pub struct PromptTokenizer {
    engine: Engine,
    split: Option<AddedTokenSplit>,
    cache: SegmentCache,
}

impl std::fmt::Debug for PromptTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptTokenizer")
            .field("fast", &matches!(self.engine, Engine::Fast(_)))
            .field("segment_cache", &self.split.is_some())
            .finish()
    }
}

impl PromptTokenizer {
    /// Load tokenizer.json; `cache_bytes` = 0 disables the segment cache.
    pub fn from_json(tokenizer_json: &[u8], cache_bytes: usize) -> Result<Self> {
        let engine = match fast_tokenizer(tokenizer_json) {
            Some(t) => Engine::Fast(Box::new(t)),
            None => Engine::Plain(Box::new(
                Tokenizer::from_bytes(tokenizer_json)
                    .map_err(|e| Error::Tokenizer(e.to_string()))?,
            )),
        };
        let split = if cache_bytes > 0 {
            added_token_split(tokenizer_json)?
        } else {
            None
        };
        Ok(Self {
            engine,
            split,
            cache: SegmentCache::new(cache_bytes),
        })
    }

    /// Ids of a rendered chat prompt (`add_special_tokens=False`), through the cache.
    pub fn encode_chat(&self, text: &str) -> Result<Vec<u32>> {
        let Some(split) = &self.split else {
            return self.engine.encode(text, false);
        };
        let mut ids = Vec::with_capacity(text.len() / 3);
        let mut start = 0;
        for m in split.matcher.find_iter(text) {
            self.encode_segment(&text[start..m.start()], &mut ids)?;
            ids.push(split.ids[m.pattern().as_usize()]);
            start = m.end();
        }
        self.encode_segment(&text[start..], &mut ids)?;
        Ok(ids)
    }

    fn encode_segment(&self, segment: &str, ids: &mut Vec<u32>) -> Result<()> {
        if segment.is_empty() {
            return Ok(());
        }
        let got = self
            .cache
            .get_or_encode(segment, |s| self.engine.encode(s, false))?;
        ids.extend_from_slice(&got);
        Ok(())
    }

    /// Ids without the cache: the reference path.
    pub fn encode_uncached(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        self.engine.encode(text, add_special_tokens)
    }

    /// Ids of a completions prompt (`add_special_tokens=True`).
    pub fn encode_completion(&self, text: &str) -> Result<Vec<u32>> {
        self.engine.encode(text, true)
    }

    pub fn cache_stats(&self) -> SegmentCacheStats {
        self.cache.stats()
    }

    pub fn uses_segment_cache(&self) -> bool {
        self.split.is_some()
    }
}

/// The added-token cut, or None when some added token has a rule that makes a raw
/// string match differ from the tokenizer's own.
fn added_token_split(tokenizer_json: &[u8]) -> Result<Option<AddedTokenSplit>> {
    #[derive(serde::Deserialize)]
    struct Added {
        id: u32,
        content: String,
        #[serde(default)]
        single_word: bool,
        #[serde(default)]
        lstrip: bool,
        #[serde(default)]
        rstrip: bool,
        #[serde(default)]
        normalized: bool,
    }
    #[derive(serde::Deserialize)]
    struct File {
        #[serde(default)]
        added_tokens: Vec<Added>,
        #[serde(default)]
        pre_tokenizer: serde_json::Value,
    }
    let file: File =
        serde_json::from_slice(tokenizer_json).map_err(|e| Error::Tokenizer(e.to_string()))?;
    // The tokenizer cuts at added tokens first and normalizes and pre-tokenizes each piece
    // on its own, which is what makes our cut exact. One rule looks past its piece:
    // Metaspace's prepend_scheme "first" prepends only to the piece at offset 0 of the
    // whole text, so encoding pieces separately would prepend to every one.
    if file.added_tokens.is_empty()
        || prepends_first_only(&file.pre_tokenizer)
        || file
            .added_tokens
            .iter()
            .any(|a| a.single_word || a.lstrip || a.rstrip || a.normalized || a.content.is_empty())
    {
        return Ok(None);
    }
    let matcher = AhoCorasickBuilder::new()
        .match_kind(MatchKind::LeftmostLongest)
        .build(file.added_tokens.iter().map(|a| a.content.as_str()))
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
    Ok(Some(AddedTokenSplit {
        matcher,
        ids: file.added_tokens.iter().map(|a| a.id).collect(),
    }))
}

/// Whether a pre-tokenizer (or one inside a Sequence) is Metaspace with
/// `prepend_scheme: "first"`.
fn prepends_first_only(pre_tokenizer: &serde_json::Value) -> bool {
    match pre_tokenizer {
        serde_json::Value::Object(o) => {
            (o.get("type").and_then(|t| t.as_str()) == Some("Metaspace")
                && o.get("prepend_scheme").and_then(|p| p.as_str()) == Some("first"))
                || o.get("pretokenizers").is_some_and(prepends_first_only)
        }
        serde_json::Value::Array(items) => items.iter().any(prepends_first_only),
        _ => false,
    }
}

/// Shared across requests and threads.
pub type SharedTokenizer = Arc<PromptTokenizer>;

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer_json(pre_tokenizer: serde_json::Value) -> Vec<u8> {
        serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": [{"id": 0, "content": "<s>", "single_word": false, "lstrip": false,
                              "rstrip": false, "normalized": false, "special": true}],
            "normalizer": null, "pre_tokenizer": pre_tokenizer, "post_processor": null,
            "decoder": null,
            "model": {"type": "WordLevel", "vocab": {"<s>": 0, "▁a": 1, "a": 2, "<unk>": 3},
                      "unk_token": "<unk>"}
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn metaspace_first_only_disables_the_cut_and_is_needed() {
        let first = serde_json::json!({"type": "Sequence", "pretokenizers": [
            {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": true}]});
        let tok = PromptTokenizer::from_json(&tokenizer_json(first), 1 << 20).unwrap();
        assert!(!tok.uses_segment_cache());
        // The whole-text encode prepends only before the first piece: cutting would not.
        assert_eq!(tok.encode_chat("a<s>a").unwrap(), vec![1, 0, 2]);

        let always = serde_json::json!(
            {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true});
        let tok = PromptTokenizer::from_json(&tokenizer_json(always), 1 << 20).unwrap();
        assert!(tok.uses_segment_cache());
        assert_eq!(
            tok.encode_chat("a<s>a").unwrap(),
            tok.encode_uncached("a<s>a", false).unwrap()
        );
    }
}
