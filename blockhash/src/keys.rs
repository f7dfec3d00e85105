//! The whole chain: request body -> prompt tokens -> block hashes.
//!
//! SKELETON: the contract other crates compile against.

use crate::{BlockHasher, Request};

/// A model's tokenizer and chat template, loaded from file contents (no I/O here).
pub struct PromptEncoder {
    // owner fills in: template, tokenizer, segment cache
}

impl PromptEncoder {
    /// `tokenizer_json`: tokenizer.json; `tokenizer_config_json`: tokenizer_config.json
    /// (with `chat_template`, bos/eos); `chat_template`: an override (`chat_template.jinja`).
    pub fn from_files(
        tokenizer_json: &[u8],
        tokenizer_config_json: &[u8],
        chat_template: Option<&str>,
    ) -> crate::Result<Self> {
        let _ = (tokenizer_json, tokenizer_config_json, chat_template);
        todo!()
    }

    /// Prompt token ids exactly as vLLM computes them for this request.
    pub fn prompt_tokens(&self, request: &Request) -> crate::Result<Vec<u32>> {
        let _ = request;
        todo!()
    }
}

/// What `kvroute keys` prints and what the filter sends to the indexer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RequestKeys {
    pub prompt_tokens: usize,
    pub token_ids: Vec<u32>,
    pub block_hashes: Vec<u64>,
}

impl RequestKeys {
    /// Tokens -> event values of each full block, with the request's extra keys.
    pub fn compute(
        encoder: &PromptEncoder,
        hasher: &BlockHasher,
        request: &Request,
        extras: &crate::RequestExtras,
    ) -> crate::Result<Self> {
        let _ = (encoder, hasher, request, extras);
        todo!()
    }
}
